use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const S: i64 = 1_000_000_000;
const P0: Partition = Partition(0);
const Q: V1TaskStatus = V1TaskStatus::Queued;
const R: V1TaskStatus = V1TaskStatus::Running;
const C: V1TaskStatus = V1TaskStatus::Completed;
const F: V1TaskStatus = V1TaskStatus::Failed;
const X: V1TaskStatus = V1TaskStatus::Cancelled;

const QUIET: Observed = Observed {
    retry: false,
    replay: false,
};
const RETRY: Observed = Observed {
    retry: true,
    replay: false,
};
const REPLAY: Observed = Observed {
    retry: false,
    replay: true,
};

fn lifecycle(max_runs: usize, max_age_nanos: i64) -> RunLifecycle {
    RunLifecycle::new(LifecycleLimits {
        max_runs,
        max_age_nanos,
    })
}

fn roomy() -> RunLifecycle {
    lifecycle(1000, 3600 * S)
}

/// Feeds one run's updates, as `(status, startedAt, finishedAt)` in seconds, one second apart
/// after the latest `now`; returns what each meant.
fn feed(
    lc: &mut RunLifecycle,
    run: u128,
    series: u32,
    updates: &[(V1TaskStatus, Option<i64>, Option<i64>)],
) -> Vec<Observed> {
    updates
        .iter()
        .map(|&(status, started, finished)| {
            let now = lc.now.max(0) + S;
            lc.observe(
                RunKey(run),
                series,
                P0,
                status,
                started.map(|s| s * S),
                finished.map(|s| s * S),
                now,
            )
        })
        .collect()
}

fn counts(lc: &RunLifecycle, series: u32) -> (u64, u64) {
    lc.in_flight()
        .get(series as usize)
        .map_or((0, 0), |c| (c.queued, c.running))
}

fn phase(lc: &RunLifecycle, run: u128) -> Option<Phase> {
    lc.slot_of
        .get(&key_of(RunKey(run)))
        .map(|&at| lc.slots[at as usize].phase)
}

/// The in-flight counts equal a recount of the tracked runs, the lists hold every tracked run
/// once in the order they were seen, and the limits hold.
fn check(lc: &RunLifecycle) {
    let mut recount: Vec<InFlight> = Vec::new();
    let mut live = 0;
    for slot in &lc.slots {
        if slot.phase == Phase::Free {
            continue;
        }
        live += 1;
        assert_eq!(
            lc.slot_of.get(&slot.run).map(|&at| lc.slots[at as usize].run),
            Some(slot.run)
        );
        let series = slot.series as usize;
        if recount.len() <= series {
            recount.resize(series + 1, InFlight::default());
        }
        match slot.phase {
            Phase::Queued => recount[series].queued += 1,
            Phase::Running => recount[series].running += 1,
            _ => {}
        }
    }
    let mut counted = lc.in_flight().to_vec();
    let len = counted.len().max(recount.len());
    counted.resize(len, InFlight::default());
    recount.resize(len, InFlight::default());
    assert_eq!(counted, recount);
    assert_eq!(live, lc.len());
    assert!(lc.len() <= lc.limits.max_runs);
    let mut listed = 0;
    for (order, finished) in [(lc.in_flight_order, false), (lc.finished_order, true)] {
        let (mut at, mut prev, mut seen) = (order.head, NIL, i64::MIN);
        while at != NIL {
            let slot = lc.slots[at as usize];
            assert_eq!(slot.prev, prev);
            assert_ne!(slot.phase, Phase::Free);
            assert_eq!(slot.phase == Phase::Finished, finished);
            assert!(slot.seen >= seen, "oldest seen first");
            (prev, seen, at) = (at, slot.seen, slot.next);
            listed += 1;
        }
        assert_eq!(order.tail, prev);
    }
    assert_eq!(listed, live);
}

#[test]
fn records_are_as_small_as_the_doc_says() {
    assert_eq!(std::mem::size_of::<Slot>(), 48);
    assert_eq!(std::mem::size_of::<([u32; 4], u32)>(), 20);
}

#[test]
fn a_normal_run_goes_through_the_phases() {
    let mut lc = roomy();
    let seen = feed(&mut lc, 1, 0, &[(Q, None, None)]);
    assert_eq!((seen[0], counts(&lc, 0)), (QUIET, (1, 0)));
    feed(&mut lc, 1, 0, &[(R, Some(10), None)]);
    assert_eq!(counts(&lc, 0), (0, 1));
    assert_eq!(lc.oldest_running(), vec![Some(10 * S)]);
    let seen = feed(&mut lc, 1, 0, &[(C, Some(10), Some(20))]);
    assert_eq!((seen[0], counts(&lc, 0)), (QUIET, (0, 0)));
    assert_eq!(phase(&lc, 1), Some(Phase::Finished), "remembered for replays");
    assert_eq!(lc.oldest_running(), vec![None]);
    check(&lc);
}

#[test]
fn duplicates_change_nothing() {
    let mut lc = roomy();
    let seen = feed(
        &mut lc,
        1,
        0,
        &[
            (Q, None, None),
            (Q, None, None),
            (R, Some(10), None),
            (R, Some(10), None),
        ],
    );
    assert_eq!(seen, vec![QUIET; 4]);
    assert_eq!(counts(&lc, 0), (0, 1));
    // A DAG: finishedAt set while still running; the same attempt.
    assert_eq!(feed(&mut lc, 1, 0, &[(R, Some(10), Some(15))]), vec![QUIET]);
    assert_eq!(counts(&lc, 0), (0, 1));
    let seen = feed(&mut lc, 1, 0, &[(F, Some(10), Some(20)), (F, Some(10), Some(20))]);
    assert_eq!(seen, vec![QUIET; 2]);
    assert_eq!(counts(&lc, 0), (0, 0));
    check(&lc);
}

#[test]
fn running_back_to_queued_is_one_retry_per_attempt() {
    let mut lc = roomy();
    let seen = feed(
        &mut lc,
        1,
        0,
        &[
            (Q, None, None),
            (R, Some(10), None),
            (Q, None, None),
            (Q, None, None),
            // A copy of the RUNNING, then of the QUEUED: the same attempt, no second retry.
            (R, Some(10), None),
            (Q, None, None),
        ],
    );
    assert_eq!(seen, vec![QUIET, QUIET, RETRY, QUIET, QUIET, QUIET]);
    assert_eq!(counts(&lc, 0), (1, 0));
    // The retried attempt starts: not counted again; then it is retried in turn.
    let seen = feed(
        &mut lc,
        1,
        0,
        &[(R, Some(30), None), (Q, None, None), (R, Some(50), None)],
    );
    assert_eq!(seen, vec![QUIET, RETRY, QUIET]);
    assert_eq!(counts(&lc, 0), (0, 1));
    assert_eq!(lc.oldest_running(), vec![Some(50 * S)], "the latest attempt's start");
    check(&lc);
}

#[test]
fn a_queued_carrying_the_attempts_start_is_the_same_retry() {
    let mut lc = roomy();
    let seen = feed(
        &mut lc,
        1,
        0,
        &[(R, Some(10), None), (Q, Some(10), None), (Q, Some(10), None)],
    );
    assert_eq!(seen, vec![QUIET, RETRY, QUIET]);
    assert_eq!(counts(&lc, 0), (1, 0));
}

#[test]
fn skipped_states_still_show_retries() {
    let mut lc = roomy();
    // QUEUED of the second attempt skipped: its start is later than the running attempt's.
    let seen = feed(&mut lc, 1, 0, &[(R, Some(10), None), (R, Some(30), None)]);
    assert_eq!(seen, vec![QUIET, RETRY]);
    // RUNNING and QUEUED of the third attempt skipped: the terminal started later.
    let seen = feed(&mut lc, 1, 0, &[(C, Some(50), Some(60))]);
    assert_eq!(seen, vec![RETRY]);
    // RUNNING skipped: a QUEUED carrying a start we never saw.
    let seen = feed(
        &mut lc,
        2,
        0,
        &[(Q, None, None), (Q, Some(10), None), (R, Some(30), None)],
    );
    assert_eq!(seen, vec![QUIET, RETRY, QUIET]);
    // A retry's QUEUED seen, its RUNNING skipped, then the terminal: one retry only.
    let seen = feed(
        &mut lc,
        3,
        0,
        &[(R, Some(10), None), (Q, None, None), (F, Some(30), Some(40))],
    );
    assert_eq!(seen, vec![QUIET, RETRY, QUIET]);
    // A start that was never known cannot show a retry.
    let seen = feed(&mut lc, 4, 0, &[(R, None, None), (R, Some(10), None)]);
    assert_eq!(seen, vec![QUIET, QUIET]);
    assert_eq!(counts(&lc, 0), (0, 2));
    assert_eq!(lc.oldest_running(), vec![Some(10 * S)]);
    check(&lc);
}

#[test]
fn first_update_may_be_any_state() {
    let mut lc = roomy();
    assert_eq!(feed(&mut lc, 1, 0, &[(R, Some(10), None)]), vec![QUIET]);
    assert_eq!(
        feed(&mut lc, 2, 0, &[(X, None, Some(10))]),
        vec![QUIET],
        "cancelled while queued"
    );
    assert_eq!(
        feed(&mut lc, 3, 0, &[(Q, Some(10), None)]),
        vec![QUIET],
        "its past is unknown"
    );
    assert_eq!(counts(&lc, 0), (1, 1));
    assert_eq!(phase(&lc, 2), Some(Phase::Finished));
    // The retried run 3 starts its attempt: not a second retry, and a copy of the old attempt is stale.
    assert_eq!(
        feed(&mut lc, 3, 0, &[(R, Some(5), None), (R, Some(20), None)]),
        vec![QUIET; 2]
    );
    assert_eq!(counts(&lc, 0), (0, 2));
    check(&lc);
}

#[test]
fn stale_copies_are_ignored() {
    let mut lc = roomy();
    feed(&mut lc, 1, 0, &[(R, Some(10), None), (R, Some(30), None)]);
    // A copy of the first attempt's RUNNING, and of its retry QUEUED with its start.
    let seen = feed(&mut lc, 1, 0, &[(R, Some(10), None), (Q, Some(10), None)]);
    assert_eq!(seen, vec![QUIET; 2]);
    assert_eq!((counts(&lc, 0), lc.oldest_running()), ((0, 1), vec![Some(30 * S)]));
    // A terminal that finished before the running attempt started ended an earlier one.
    assert_eq!(feed(&mut lc, 1, 0, &[(F, Some(10), Some(20))]), vec![QUIET]);
    assert_eq!(counts(&lc, 0), (0, 1));
    feed(&mut lc, 1, 0, &[(C, Some(30), Some(40))]);
    // Copies of the finished attempt's RUNNING (plain and DAG) and an earlier finish.
    let seen = feed(
        &mut lc,
        1,
        0,
        &[
            (R, Some(30), None),
            (R, Some(30), Some(35)),
            (F, Some(10), Some(20)),
            (C, Some(30), Some(40)),
        ],
    );
    assert_eq!(seen, vec![QUIET; 4]);
    assert_eq!(counts(&lc, 0), (0, 0));
    check(&lc);
}

#[test]
fn a_finished_run_coming_back_is_a_replay() {
    let mut lc = roomy();
    feed(
        &mut lc,
        1,
        0,
        &[(Q, None, None), (R, Some(10), None), (F, Some(10), Some(20))],
    );
    // The replay's QUEUED cannot be told from a stale copy: ignored; its RUNNING is the replay.
    let seen = feed(
        &mut lc,
        1,
        0,
        &[(Q, None, None), (R, Some(30), None), (R, Some(30), None)],
    );
    assert_eq!(seen, vec![QUIET, REPLAY, QUIET]);
    assert_eq!(counts(&lc, 0), (0, 1));
    // A redelivered finish of the first attempt does not end the replay.
    assert_eq!(feed(&mut lc, 1, 0, &[(F, Some(10), Some(20))]), vec![QUIET]);
    assert_eq!(counts(&lc, 0), (0, 1));
    assert_eq!(feed(&mut lc, 1, 0, &[(C, Some(30), Some(40))]), vec![QUIET]);
    // A replay whose QUEUED and RUNNING were skipped: a new finish.
    assert_eq!(
        feed(&mut lc, 1, 0, &[(X, None, Some(50)), (X, None, Some(50))]),
        vec![REPLAY, QUIET]
    );
    // A replay's QUEUED that carries a start later than the finish is one.
    assert_eq!(feed(&mut lc, 1, 0, &[(Q, Some(60), None)]), vec![REPLAY]);
    assert_eq!(counts(&lc, 0), (1, 0));
    check(&lc);
}

#[test]
fn a_queued_after_a_finish_is_not_in_flight() {
    let mut lc = roomy();
    feed(&mut lc, 1, 0, &[(R, Some(10), None), (C, Some(10), Some(20))]);
    // A redelivered copy of the first QUEUED after the finish.
    assert_eq!(feed(&mut lc, 1, 0, &[(Q, None, None)]), vec![QUIET]);
    assert_eq!(counts(&lc, 0), (0, 0));
    assert_eq!(phase(&lc, 1), Some(Phase::Finished));
}

#[test]
fn a_run_moved_to_another_series_takes_its_count_along() {
    let mut lc = roomy();
    feed(&mut lc, 1, 0, &[(R, Some(10), None)]);
    feed(&mut lc, 1, 2, &[(R, Some(10), None)]);
    assert_eq!((counts(&lc, 0), counts(&lc, 2)), ((0, 0), (0, 1)));
    assert_eq!(lc.oldest_running(), vec![None, None, Some(10 * S)]);
    check(&lc);
}

#[test]
fn runs_not_seen_for_max_age_are_forgotten() {
    let mut lc = lifecycle(100, 10 * S);
    lc.observe(RunKey(1), 0, P0, R, Some(S), None, 0);
    lc.observe(RunKey(2), 0, P0, Q, None, None, 5 * S);
    lc.observe(RunKey(3), 1, P0, C, Some(S), Some(2 * S), 5 * S);
    // Any update, a duplicate included, is a sighting.
    lc.observe(RunKey(1), 0, P0, R, Some(S), None, 8 * S);
    lc.expire(15 * S);
    assert_eq!((lc.len(), lc.expired_by_age()), (3, 0), "exactly max_age is still kept");
    lc.expire(15 * S + 1);
    assert_eq!((lc.len(), lc.expired_by_age()), (1, 2));
    assert_eq!((counts(&lc, 0), counts(&lc, 1)), ((0, 1), (0, 0)));
    check(&lc);
    lc.expire(100 * S);
    assert_eq!((counts(&lc, 0), lc.oldest_running()), ((0, 0), vec![None, None]));
    // Seen again after being forgotten: a new run, nothing counted.
    assert_eq!(lc.observe(RunKey(1), 0, P0, Q, None, None, 101 * S), QUIET);
    assert_eq!(counts(&lc, 0), (1, 0));
    check(&lc);
}

#[test]
fn a_clock_going_back_is_held() {
    let mut lc = lifecycle(100, 10 * S);
    lc.observe(RunKey(1), 0, P0, R, Some(S), None, 100 * S);
    lc.observe(RunKey(2), 0, P0, R, Some(S), None, 50 * S);
    check(&lc);
    lc.expire(110 * S);
    assert_eq!(lc.len(), 2, "both were seen at 100 s");
    lc.expire(110 * S + 1);
    assert_eq!(lc.len(), 0);
}

#[test]
fn the_cap_forgets_finished_runs_first_then_the_oldest_seen() {
    let mut lc = lifecycle(3, i64::MAX);
    lc.observe(RunKey(1), 0, P0, R, Some(S), None, 1);
    lc.observe(RunKey(2), 0, P0, C, Some(S), Some(2 * S), 2);
    lc.observe(RunKey(3), 0, P0, Q, None, None, 3);
    lc.observe(RunKey(4), 0, P0, Q, None, None, 4);
    assert_eq!((lc.len(), lc.forgotten_at_cap()), (3, 1));
    assert_eq!(phase(&lc, 2), None, "the finished run went first");
    assert_eq!(counts(&lc, 0), (2, 1));
    // Seen again, run 1 is no longer the oldest seen: run 3 goes.
    lc.observe(RunKey(1), 0, P0, R, Some(S), None, 5);
    lc.observe(RunKey(5), 0, P0, R, Some(2 * S), None, 6);
    assert_eq!(phase(&lc, 3), None);
    assert_eq!((counts(&lc, 0), lc.forgotten_at_cap()), ((1, 2), 2));
    assert_eq!(lc.oldest_running(), vec![Some(S)]);
    check(&lc);
    let mut none = lifecycle(0, i64::MAX);
    assert_eq!(none.observe(RunKey(1), 0, P0, R, Some(S), None, 1), QUIET);
    assert_eq!((none.len(), none.forgotten_at_cap(), none.in_flight().len()), (0, 1, 0));
}

#[test]
fn oldest_running_is_per_series_and_ignores_queued_and_unknown_starts() {
    let mut lc = roomy();
    lc.observe(RunKey(1), 0, P0, R, Some(30 * S), None, 1);
    lc.observe(RunKey(2), 0, P0, R, Some(20 * S), None, 2);
    lc.observe(RunKey(3), 0, P0, R, None, None, 3);
    lc.observe(RunKey(4), 1, P0, Q, Some(5 * S), None, 4);
    lc.observe(RunKey(5), 3, P0, R, Some(40 * S), None, 5);
    lc.observe(RunKey(6), 3, P0, C, Some(S), Some(2 * S), 6);
    assert_eq!(lc.oldest_running(), vec![Some(20 * S), None, None, Some(40 * S)]);
    lc.observe(RunKey(2), 0, P0, F, Some(20 * S), Some(25 * S), 7);
    assert_eq!(lc.oldest_running()[0], Some(30 * S));
}

/// One run's true updates, in the order Hatchet produced them, with the retries and replays
/// among them. Episodes (the first run and each replay) end with a terminal, or, rarely, stay
/// RUNNING for ever.
fn true_lifecycle(rng: &mut SmallRng, t0: i64) -> (Vec<Update>, u64, u64) {
    let mut t = t0;
    let (mut updates, mut retries, mut replays) = (Vec::new(), 0, 0);
    let at = |status, started, finished| Update {
        status,
        started,
        finished,
    };
    loop {
        updates.push(at(Q, NONE, NONE));
        let mut attempts = 0;
        let stuck = loop {
            t += rng.random_range(1..5 * S);
            if rng.random_bool(0.05) {
                updates.push(at(X, NONE, t));
                break false;
            }
            let started = t;
            attempts += 1;
            updates.push(at(R, started, NONE));
            t += rng.random_range(1..10 * S);
            if rng.random_bool(0.2) {
                // A DAG's first task is done.
                updates.push(at(R, started, t));
                t += rng.random_range(1..10 * S);
            }
            if attempts < 3 && rng.random_bool(0.3) {
                updates.push(at(Q, NONE, NONE));
                retries += 1;
                continue;
            }
            if rng.random_bool(0.03) {
                break true;
            }
            let status = [C, F, X][rng.random_range(0..3)];
            updates.push(at(status, started, t));
            break false;
        };
        if stuck || !rng.random_bool(0.2) {
            return (updates, retries, replays);
        }
        replays += 1;
        t += rng.random_range(1..60 * S);
    }
}

#[test]
fn in_order_with_adjacent_duplicates_counts_exactly() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut lc = lifecycle(10_000, i64::MAX);
    let (mut true_retries, mut true_replays, mut retries, mut replays) = (0, 0, 0, 0);
    let mut oldest: Vec<Option<i64>> = vec![None; 5];
    let mut now = 0;
    for run in 0..2_000u128 {
        let series = (run % 5) as u32;
        let t0 = rng.random_range(0..1000 * S);
        let (updates, r, p) = true_lifecycle(&mut rng, t0);
        true_retries += r;
        true_replays += p;
        for update in &updates {
            for _ in 0..rng.random_range(1..=2) {
                now += 1;
                let started = (update.started != NONE).then_some(update.started);
                let finished = (update.finished != NONE).then_some(update.finished);
                let seen = lc.observe(RunKey(run), series, P0, update.status, started, finished, now);
                retries += u64::from(seen.retry);
                replays += u64::from(seen.replay);
            }
        }
        let last = updates[updates.len() - 1];
        let expected = if last.status == R {
            Phase::Running
        } else {
            Phase::Finished
        };
        assert_eq!(phase(&lc, run), Some(expected), "run {run}: {updates:?}");
        if last.status == R {
            let o = &mut oldest[series as usize];
            *o = Some(o.map_or(last.started, |o| o.min(last.started)));
        }
    }
    assert_eq!((retries, replays), (true_retries, true_replays));
    assert!(true_retries > 100 && true_replays > 100);
    assert_eq!(lc.oldest_running(), oldest);
    check(&lc);
}

#[test]
fn random_redeliveries_keep_the_counts_consistent() {
    let mut rng = SmallRng::seed_from_u64(11);
    // Small limits so that both kinds of forgetting happen.
    let mut lc = lifecycle(300, 400);
    let mut pending: Vec<(u128, u32, Vec<Update>)> = Vec::new();
    let mut next_run = 0u128;
    let mut now = 0;
    for step in 0..200_000 {
        if pending.len() < 500 {
            let t0 = rng.random_range(0..1000 * S);
            let (mut updates, _, _) = true_lifecycle(&mut rng, t0);
            // Skip, duplicate, swap neighbours, and redeliver old copies later.
            let mut messy = Vec::new();
            for (i, &update) in updates.iter().enumerate() {
                if rng.random_bool(0.1) {
                    continue;
                }
                messy.push(update);
                if rng.random_bool(0.1) {
                    messy.push(update);
                }
                if i > 0 && rng.random_bool(0.1) {
                    messy.push(updates[rng.random_range(0..i)]);
                }
            }
            for i in 1..messy.len() {
                if rng.random_bool(0.15) {
                    messy.swap(i - 1, i);
                }
            }
            updates = messy;
            updates.reverse();
            pending.push((next_run, rng.random_range(0..8), updates));
            next_run += 1;
        }
        let at = rng.random_range(0..pending.len());
        let (run, series, updates) = &mut pending[at];
        if let Some(update) = updates.pop() {
            now += rng.random_range(0..3);
            let started = (update.started != NONE).then_some(update.started);
            let finished = (update.finished != NONE).then_some(update.finished);
            // Now and then a run changes series.
            if rng.random_bool(0.001) {
                *series = rng.random_range(0..8);
            }
            lc.observe(
                RunKey(*run),
                *series,
                Partition((*run % 3) as u16),
                update.status,
                started,
                finished,
                now,
            );
        } else {
            pending.swap_remove(at);
        }
        if step % 97 == 0 {
            check(&lc);
        }
    }
    check(&lc);
    assert!(lc.expired_by_age() > 0 && lc.forgotten_at_cap() > 0);
    let tracked = lc.len();
    let dropped = lc.drop_partition(Partition(1));
    assert!(dropped > 0 && lc.len() == tracked - dropped);
    check(&lc);
    lc.expire(now + 401);
    assert_eq!(lc.len(), 0);
    assert!(lc.in_flight().iter().all(|c| *c == InFlight::default()));
    check(&lc);
}

#[test]
fn a_partition_leaves_with_its_runs_and_their_counts() {
    let mut lc = RunLifecycle::new(LifecycleLimits {
        max_runs: 100,
        max_age_nanos: i64::MAX,
    });
    let (p1, p2) = (Partition(1), Partition(2));
    lc.observe(RunKey(1), 0, p1, R, Some(S), None, S);
    lc.observe(RunKey(2), 0, p2, R, Some(2 * S), None, S);
    lc.observe(RunKey(3), 0, p1, Q, None, None, S);
    lc.observe(RunKey(4), 1, p1, C, Some(S), Some(2 * S), S);
    assert_eq!(counts(&lc, 0), (1, 2));
    assert_eq!(lc.oldest_running()[0], Some(S));
    assert_eq!(lc.drop_partition(p1), 3);
    assert_eq!(counts(&lc, 0), (0, 1));
    assert_eq!(lc.oldest_running()[0], Some(2 * S), "run 1 left with its partition");
    assert_eq!(lc.len(), 1);
    // A run whose updates come from two partitions follows the latest.
    lc.observe(RunKey(2), 0, p1, R, Some(2 * S), None, 2 * S);
    assert_eq!(lc.changed_partition(), 1);
    assert_eq!(lc.drop_partition(p2), 0);
    assert_eq!(lc.drop_partition(p1), 1);
    assert!(lc.is_empty());
}
