//! Per-run lifecycle: which runs are in flight, which come back for a retry or a replay, in
//! bounded memory.
//!
//! [`RunLifecycle::observe`] takes every accepted update of a run and keeps one small record per
//! run: its phase (queued, running, finished), one instant that orders its updates, and its series
//! (the aggregator's index of the workflow; workflows are unknown here). From those records it
//! answers how many runs of a series are `QUEUED` or `RUNNING` now, when the oldest `RUNNING` run
//! of a series started, and whether an update was a retry or a replay (the caller keeps those
//! counters). Outcomes are counted by the outcome memory, not here. Pure and synchronous: the
//! caller passes the clock, nothing here reads one.
//!
//! # Telling a transition from a stale copy
//!
//! Updates arrive at least once, out of order, with intermediate states skipped, and they carry no
//! version (`metadata.updatedAt` equals `createdAt`). What orders them is the run's own timestamps:
//! `startedAt` is the start of the latest attempt and only moves forward, and a terminal update's
//! finish (its `finishedAt`, or `startedAt` when that is absent) is later than anything of the
//! attempt it ends. Each record keeps one such instant, its *mark*: the latest attempt's
//! `startedAt` while the run is in flight (none before a start is known), the finish once it is
//! finished. The mark never goes back.
//!
//! The principle: **the latest update received is the run's state, unless its timestamps prove it
//! older than the mark.** An update without the timestamp it would be judged by proves nothing and
//! is taken as the latest, with one exception (`QUEUED` after a finish). Below, `s` is the
//! update's `startedAt` and `F` a terminal update's finish; `finishedAt` of a `QUEUED` or `RUNNING`
//! update is ignored (a DAG sets it while still running).
//!
//! - **Not tracked**: the update's state is taken as it is; a first update that is `RUNNING` or
//!   terminal is normal (skipped states). Nothing is counted, the run's past being unknown.
//! - **Stale**: `QUEUED` or `RUNNING` with `s` before the mark, or a terminal with `F` before the
//!   mark of an in-flight run, belongs to an earlier attempt: ignored.
//! - **Duplicate**: the current state again (same `s`, or none) changes nothing.
//! - **Retry**: `RUNNING` then `QUEUED` (without `s`, or with the same `s`) is a retry, counted
//!   once per attempt: a second `QUEUED`, or `QUEUED` again after a copy of the `RUNNING`, is not
//!   another retry.
//! - **Retry, `QUEUED` skipped**: while `RUNNING`, a `RUNNING` (or a terminal) whose `s` is later
//!   than the running attempt's starts a new attempt: a retry, unless that attempt's `QUEUED` was
//!   already counted.
//! - **Retry, `RUNNING` skipped**: a `QUEUED` whose `s` is later than the mark: an attempt we never
//!   saw started and went back to the queue.
//! - **Start**: while `QUEUED`, a `RUNNING` with a later `s` (or the same, or none) is the attempt
//!   starting; nothing is counted (the retry, if any, was counted when it was queued again).
//! - **Finish**: a terminal update takes the run out of flight; the run is remembered, finished,
//!   with the later of `F` and the old mark as its mark, so that a replay is recognised.
//! - **Replay**: after a finish, `RUNNING` with `s` later than the mark is a replay; at or before
//!   the mark (or without `s`) it is a copy of the finished attempt or an earlier one: stale. A terminal with a later `F` is a replay
//!   whose reopening was skipped; with the same or an earlier `F` it is a duplicate.
//! - **`QUEUED` after a finish** is ignored, unless its `s` is later than the mark (then it is a
//!   replay). A replay's `QUEUED` has no `startedAt`, exactly like a redelivered copy of the run's
//!   first `QUEUED`, so the two cannot be told apart. Taking it would let every stale copy reopen a
//!   finished run: a false replay and a phantom `QUEUED` run in flight until the run is seen again,
//!   which for a finished run may be never (then until it expires). Ignoring it costs less: a
//!   replayed run waiting in the queue is not shown as `QUEUED`, and its replay is counted when it
//!   starts (or finishes again, if cancelled in the queue), not when it is queued.
//!
//! `QUEUED` after `RUNNING` has the same ambiguity and is taken, as the issue defines a retry as a
//! run going from `RUNNING` back to `QUEUED`: real retries are frequent and are then counted when
//! they happen, with the run shown `QUEUED` while it waits. The cost: a copy of the first `QUEUED`
//! delivered after the `RUNNING` (a reordered redelivery) counts one false retry (at most one per
//! attempt) and shows the run `QUEUED` until it is seen again; the next copy of its `RUNNING` puts
//! it back. Kafka usually redelivers an in-order suffix of a partition, which ends in the true state.
//!
//! # Memory and expiry
//!
//! A record is 48 bytes in a slab plus 20 bytes (and a control byte) in the hash table from run to
//! slot. Finished runs and runs in flight are each kept in a list ordered by when they were last
//! seen. Every update of a tracked run, stale or duplicate included, counts as seeing it again.
//!
//! - A run not seen for `max_age` is forgotten (`expired_by_age`). A run stuck in `RUNNING` that is
//!   never seen again leaves the oldest-running figure after `max_age`: that age reads at most
//!   `max_age`, so choose it longer than the longest run worth noticing.
//! - At `max_runs`, finished runs are forgotten first, oldest seen first, then runs in flight
//!   (`forgotten_at_cap`). Forgetting a finished run only loses the recognition of a later replay;
//!   forgetting a run in flight loses its in-flight count and its age.
//! - A forgotten run that is seen again is tracked as new; a forgotten run in flight leaves the
//!   in-flight counts when it is forgotten.
//!
//! `now` never goes back here: an earlier `now` than already seen is taken as the latest one, so
//! the lists stay in the order runs were seen.
//!
//! Measured (`cargo bench --bench memory`,
//! x86-64): 1,000,000 runs in flight take 88 MiB resident, 92 bytes per run (46 MiB
//! of slab, 42 MiB of hash table, which has 2^21 slots at that count);
//! [`RunLifecycle::oldest_running`] scans them in 1.5 to 2 ms; an update of one of them takes about
//! 105 ns (cache misses: the table, the slot and its neighbours in the list), a new run about
//! 120 ns.

use crate::ids::{Partition, RunKey};
use crate::model::V1TaskStatus;
use rustc_hash::FxHashMap;

/// No timestamp; below every real one.
const NONE: i64 = i64::MIN;
/// No slot: the end of a list.
const NIL: u32 = u32::MAX;

/// Limits of the lifecycle memory.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleLimits {
    /// At most this many runs are tracked (at most `u32::MAX`); at the cap finished runs are
    /// forgotten first, then runs in flight, oldest seen first.
    pub max_runs: usize,
    /// A run not seen for this many nanoseconds is forgotten.
    pub max_age_nanos: i64,
}

/// What one update meant beyond the run's new state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// The run went back to the queue for another attempt.
    pub retry: bool,
    /// A finished run came back.
    pub replay: bool,
}

/// Runs of one series whose latest update is `QUEUED` or `RUNNING`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    pub queued: u64,
    pub running: u64,
}

/// Bytes of one tracked run's slot (its map entry aside), for the memory estimate (`sizing`).
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();
/// Bytes of one map entry from a run key to its slot.
pub const MAP_ENTRY_BYTES: usize = std::mem::size_of::<([u32; 4], u32)>();

/// Per-run state of every run seen recently, in bounded memory.
#[derive(Debug)]
pub struct RunLifecycle {
    limits: LifecycleLimits,
    /// The run key as four `u32`s: 16 bytes, 4-byte aligned, so an entry is 20 bytes.
    slot_of: FxHashMap<[u32; 4], u32>,
    slots: Vec<Slot>,
    /// First free slot; free slots are chained through `next`.
    free: u32,
    in_flight_order: Order,
    finished_order: Order,
    /// Indexed by series.
    in_flight: Vec<InFlight>,
    now: i64,
    expired_by_age: u64,
    forgotten_at_cap: u64,
    changed_partition: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    Queued,
    Running,
    Finished,
}

/// What the rules decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    phase: Phase,
    /// In flight: `startedAt` of the latest attempt known ([`NONE`] before one). Finished: the
    /// finish ([`NONE`] when nothing was known).
    mark: i64,
    /// In flight: the attempt at `mark` went back to the queue and its retry was counted.
    requeued: bool,
}

/// One tracked run: 48 bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    run: [u32; 4],
    mark: i64,
    /// The `now` of its latest update.
    seen: i64,
    series: u32,
    /// The partition of its latest update: the run leaves with it.
    partition: Partition,
    /// Neighbours in the list of its phase (in flight or finished); a free slot's `next` is the
    /// next free slot.
    prev: u32,
    next: u32,
    phase: Phase,
    requeued: bool,
}

/// A list of slots, oldest seen first.
#[derive(Debug, Clone, Copy)]
struct Order {
    head: u32,
    tail: u32,
}

/// The parts of an update the rules look at; timestamps are [`NONE`] when absent.
#[derive(Debug, Clone, Copy)]
struct Update {
    status: V1TaskStatus,
    started: i64,
    finished: i64,
}

/// The state of a run not tracked: the update's, nothing counted.
fn first_state(update: Update) -> State {
    let s = update.started;
    let (phase, mark) = match update.status {
        V1TaskStatus::Queued => (Phase::Queued, s),
        V1TaskStatus::Running => (Phase::Running, s),
        _ => (Phase::Finished, s.max(update.finished)),
    };
    // A QUEUED with a start: that attempt went back to the queue.
    let requeued = phase == Phase::Queued && s != NONE;
    State { phase, mark, requeued }
}

/// The new state of a tracked run after `update`, and what it meant; `None` when nothing changes
/// (a duplicate or a stale copy). The module doc states the rules.
fn transition(state: State, update: Update) -> Option<(State, Observed)> {
    let State { phase, mark, requeued } = state;
    let s = update.started;
    let state_of = |phase, mark, requeued| State { phase, mark, requeued };
    let quiet = Observed::default();
    let retry = Observed {
        retry: true,
        replay: false,
    };
    let replay = Observed {
        retry: false,
        replay: true,
    };
    // Before the mark, proven by a timestamp the update has.
    let stale = s != NONE && s < mark;
    match (phase, update.status) {
        // Free slots are not in the table, so never looked up.
        (Phase::Free, _) => None,
        (Phase::Queued, V1TaskStatus::Queued) => (s > mark).then_some((state_of(Phase::Queued, s, true), retry)),
        (Phase::Queued, V1TaskStatus::Running) if stale => None,
        (Phase::Queued, V1TaskStatus::Running) if s > mark => Some((state_of(Phase::Running, s, false), quiet)),
        (Phase::Queued, V1TaskStatus::Running) => Some((state_of(Phase::Running, mark, requeued), quiet)),
        (Phase::Running, V1TaskStatus::Running) if s > mark => {
            let counted = if requeued || mark == NONE { quiet } else { retry };
            Some((state_of(Phase::Running, s, false), counted))
        }
        (Phase::Running, V1TaskStatus::Running) => None,
        (Phase::Running, V1TaskStatus::Queued) if stale => None,
        (Phase::Running, V1TaskStatus::Queued) if s > mark => Some((state_of(Phase::Queued, s, true), retry)),
        (Phase::Running, V1TaskStatus::Queued) => {
            let counted = if requeued { quiet } else { retry };
            Some((state_of(Phase::Queued, mark, true), counted))
        }
        (Phase::Queued | Phase::Running, _) => {
            let finish = s.max(update.finished);
            if finish != NONE && finish < mark {
                return None;
            }
            let skipped_retry = phase == Phase::Running && !requeued && mark != NONE && s > mark;
            let counted = if skipped_retry { retry } else { quiet };
            Some((state_of(Phase::Finished, finish.max(mark), false), counted))
        }
        (Phase::Finished, V1TaskStatus::Queued | V1TaskStatus::Running) if s > mark => {
            let requeued = update.status == V1TaskStatus::Queued;
            let phase = if requeued { Phase::Queued } else { Phase::Running };
            Some((state_of(phase, s, requeued), replay))
        }
        (Phase::Finished, V1TaskStatus::Queued | V1TaskStatus::Running) => None,
        (Phase::Finished, _) => {
            let finish = s.max(update.finished);
            (finish > mark).then_some((state_of(Phase::Finished, finish, false), replay))
        }
    }
}

/// The run key as the hash table holds it.
fn key_of(run: RunKey) -> [u32; 4] {
    let k = run.0;
    [(k >> 96) as u32, (k >> 64) as u32, (k >> 32) as u32, k as u32]
}

impl RunLifecycle {
    pub fn new(limits: LifecycleLimits) -> RunLifecycle {
        RunLifecycle {
            limits: LifecycleLimits {
                max_runs: limits.max_runs.min(NIL as usize),
                ..limits
            },
            slot_of: FxHashMap::default(),
            slots: Vec::new(),
            free: NIL,
            in_flight_order: Order { head: NIL, tail: NIL },
            finished_order: Order { head: NIL, tail: NIL },
            in_flight: Vec::new(),
            now: i64::MIN,
            expired_by_age: 0,
            forgotten_at_cap: 0,
            changed_partition: 0,
        }
    }

    /// One accepted update of `run`, whose workflow is `series` (a dense index: the aggregator's),
    /// from `partition`, processed at `now` (unix nanoseconds, the aggregator's clock). Timestamps are unix
    /// nanoseconds, `None` when absent (Go's zero time included). A run moved to another series
    /// (its workflow folded, say) takes its in-flight count along.
    // The hot path's plain values, rather than a struct built per update to carry them.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        run: RunKey,
        series: u32,
        partition: Partition,
        status: V1TaskStatus,
        started_nanos: Option<i64>,
        finished_nanos: Option<i64>,
        now: i64,
    ) -> Observed {
        self.expire(now);
        let now = self.now;
        let update = Update {
            status,
            started: started_nanos.unwrap_or(NONE),
            finished: finished_nanos.unwrap_or(NONE),
        };
        let key = key_of(run);
        let (at, observed) = match self.slot_of.get(&key) {
            Some(&at) => {
                let slot = self.slots[at as usize];
                let state = State {
                    phase: slot.phase,
                    mark: slot.mark,
                    requeued: slot.requeued,
                };
                let (next, observed) = transition(state, update).unwrap_or((state, Observed::default()));
                self.unlink(at);
                self.count(slot.series, slot.phase, false);
                let slot = &mut self.slots[at as usize];
                slot.phase = next.phase;
                slot.mark = next.mark;
                slot.requeued = next.requeued;
                (at, observed)
            }
            None => {
                let state = first_state(update);
                while self.slot_of.len() >= self.limits.max_runs && self.forget_one_at_cap() {}
                if self.slot_of.len() >= self.limits.max_runs {
                    // Only with `max_runs` 0: nothing can be tracked.
                    self.forgotten_at_cap += 1;
                    return Observed::default();
                }
                let slot = Slot {
                    run: key,
                    mark: state.mark,
                    seen: now,
                    series,
                    partition,
                    prev: NIL,
                    next: NIL,
                    phase: state.phase,
                    requeued: state.requeued,
                };
                let at = if self.free == NIL {
                    self.slots.push(slot);
                    (self.slots.len() - 1) as u32
                } else {
                    let at = self.free;
                    self.free = self.slots[at as usize].next;
                    self.slots[at as usize] = slot;
                    at
                };
                self.slot_of.insert(key, at);
                (at, Observed::default())
            }
        };
        let slot = &mut self.slots[at as usize];
        // A producer that does not key by run id: the run follows its latest update.
        self.changed_partition += u64::from(slot.partition != partition);
        slot.partition = partition;
        slot.series = series;
        slot.seen = now;
        let phase = slot.phase;
        self.push_back(at);
        self.count(series, phase, true);
        observed
    }

    /// Forgets the runs not seen for `max_age` before `now`. [`RunLifecycle::observe`] calls it;
    /// call it before reading the counts when updates may have stopped.
    pub fn expire(&mut self, now: i64) {
        self.now = self.now.max(now);
        let horizon = self.now.saturating_sub(self.limits.max_age_nanos);
        for finished in [false, true] {
            loop {
                let head = self.order(finished).head;
                if head == NIL || self.slots[head as usize].seen >= horizon {
                    break;
                }
                self.forget(head);
                self.expired_by_age += 1;
            }
        }
    }

    /// Runs in flight by series: index `i` is series `i`; series past the end have none.
    pub fn in_flight(&self) -> &[InFlight] {
        &self.in_flight
    }

    /// The earliest `startedAt` (unix nanoseconds) of the runs whose latest update is `RUNNING`, by
    /// series (same indices as [`RunLifecycle::in_flight`]); `None` when no such run has a known
    /// `startedAt`. Scans every tracked run: meant for a scrape, not for every update.
    pub fn oldest_running(&self) -> Vec<Option<i64>> {
        let mut oldest = vec![None; self.in_flight.len()];
        for slot in &self.slots {
            if slot.phase != Phase::Running || slot.mark == NONE {
                continue;
            }
            if let Some(at) = oldest.get_mut(slot.series as usize) {
                *at = Some(at.map_or(slot.mark, |o: i64| o.min(slot.mark)));
            }
        }
        oldest
    }

    /// Runs tracked, finished ones included.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Forgets the runs whose latest update came from `partition` (it went to another consumer,
    /// which takes them over); returns how many.
    pub fn drop_partition(&mut self, partition: Partition) -> usize {
        let leaving: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&at| {
                let slot = &self.slots[at as usize];
                slot.phase != Phase::Free && slot.partition == partition
            })
            .collect();
        for &at in &leaving {
            self.forget(at);
        }
        leaving.len()
    }

    /// Updates of a tracked run that came from another partition than its previous one: its
    /// producer does not key messages by run id, so two consumers may each hold a copy of it.
    pub fn changed_partition(&self) -> u64 {
        self.changed_partition
    }

    /// Runs forgotten because they were not seen for `max_age`.
    pub fn expired_by_age(&self) -> u64 {
        self.expired_by_age
    }

    /// Runs forgotten (or never tracked) because `max_runs` were tracked; more than none means the
    /// cap is too small for the traffic.
    pub fn forgotten_at_cap(&self) -> u64 {
        self.forgotten_at_cap
    }

    /// Finished runs first: forgetting one only loses the recognition of a later replay. `false`
    /// when nothing is tracked.
    fn forget_one_at_cap(&mut self) -> bool {
        let head = match self.finished_order.head {
            NIL => self.in_flight_order.head,
            head => head,
        };
        if head == NIL {
            return false;
        }
        self.forget(head);
        self.forgotten_at_cap += 1;
        true
    }

    fn forget(&mut self, at: u32) {
        self.unlink(at);
        let slot = self.slots[at as usize];
        self.count(slot.series, slot.phase, false);
        self.slot_of.remove(&slot.run);
        let slot = &mut self.slots[at as usize];
        slot.phase = Phase::Free;
        slot.next = self.free;
        self.free = at;
    }

    fn count(&mut self, series: u32, phase: Phase, add: bool) {
        let series = series as usize;
        if series >= self.in_flight.len() {
            if !add {
                return;
            }
            self.in_flight.resize(series + 1, InFlight::default());
        }
        let counts = &mut self.in_flight[series];
        let count = match phase {
            Phase::Queued => &mut counts.queued,
            Phase::Running => &mut counts.running,
            Phase::Free | Phase::Finished => return,
        };
        *count = if add { *count + 1 } else { count.saturating_sub(1) };
    }

    fn order(&mut self, finished: bool) -> &mut Order {
        if finished {
            &mut self.finished_order
        } else {
            &mut self.in_flight_order
        }
    }

    fn unlink(&mut self, at: u32) {
        let Slot { prev, next, phase, .. } = self.slots[at as usize];
        if prev == NIL {
            self.order(phase == Phase::Finished).head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.order(phase == Phase::Finished).tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    /// Appends the slot to the list of its phase.
    fn push_back(&mut self, at: u32) {
        let finished = self.slots[at as usize].phase == Phase::Finished;
        let tail = self.order(finished).tail;
        let slot = &mut self.slots[at as usize];
        slot.prev = tail;
        slot.next = NIL;
        if tail == NIL {
            self.order(finished).head = at;
        } else {
            self.slots[tail as usize].next = at;
        }
        self.order(finished).tail = at;
    }
}

#[cfg(test)]
mod tests;
