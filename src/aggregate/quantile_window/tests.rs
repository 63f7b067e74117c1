use super::*;

const S: i64 = 1_000_000_000;
const QUANTILES: [f64; 6] = [0.0, 0.5, 0.9, 0.95, 0.99, 1.0];

/// xorshift64*: deterministic, and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: i64) -> i64 {
        (self.next() % n as u64) as i64
    }

    fn log_uniform(&mut self, low: f64, high: f64) -> f64 {
        (low.ln() + self.unit() * (high.ln() - low.ln())).exp()
    }

    fn log_normal(&mut self, sigma: f64) -> f64 {
        let u = 1.0 - self.unit();
        (sigma * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()).exp()
    }

    /// Heavy tails in one window: half milliseconds, then seconds, minutes, and a few hours.
    fn heavy_tailed_seconds(&mut self) -> f64 {
        match self.below(100) {
            0..50 => self.log_uniform(0.001, 0.1),
            50..90 => self.log_uniform(0.1, 30.0),
            90..97 => self.log_uniform(30.0, 3600.0),
            _ => self.log_uniform(3600.0, 12.0 * 3600.0),
        }
    }
}

/// Exact nearest-rank quantiles of `values`: rank `ceil(q·n)`, the minimum for `q = 0`.
fn exact(values: &[f64], quantiles: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    (quantiles.iter())
        .map(|&q| sorted[((q * n).ceil() as usize).clamp(1, sorted.len()) - 1])
        .collect()
}

/// The sum as documented: the durations rounded to nanoseconds, added exactly.
fn exact_sum(values: &[f64]) -> f64 {
    values.iter().map(|&v| (v * 1e9 + 0.5) as u128).sum::<u128>() as f64 / 1e9
}

fn assert_within(got: &[f64], want: &[f64], relative: f64, context: &str) {
    assert_eq!(got.len(), want.len(), "{context}");
    for (i, (&got, &want)) in got.iter().zip(want).enumerate() {
        let error = if want == 0.0 {
            got.abs()
        } else {
            (got - want).abs() / want
        };
        assert!(
            error <= relative,
            "{context}: quantile #{i}: got {got}, want {want} (error {error:.5})"
        );
    }
}

/// Checks the window ending at `end` (no earlier than any recorded time) against the outcomes
/// that the module documentation says are in it.
fn check(window: &QuantileWindow, end: i64, recorded: &[(i64, f64)], length: i64) {
    let slot = length / SLOTS as i64;
    let from = (end.div_euclid(slot) - SLOTS as i64 + 1) * slot;
    let until = (end.div_euclid(slot) + 1) * slot;
    let values: Vec<f64> = (recorded.iter())
        .filter(|&&(at, _)| at >= from && at < until)
        .map(|&(_, v)| v)
        .collect();
    match window.summary(end, &QUANTILES) {
        None => assert!(values.is_empty(), "end {end}: None, but {} outcomes", values.len()),
        Some(summary) => {
            assert_eq!(summary.count, values.len() as u64, "end {end}");
            assert_eq!(summary.sum, exact_sum(&values), "end {end}");
            assert_within(
                &summary.quantiles,
                &exact(&values, &QUANTILES),
                0.01,
                &format!("end {end}"),
            );
        }
    }
}

#[test]
fn quantiles_within_one_percent_with_heavy_tails() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for n in [1, 2, 3, 7, 10, 100, 1000, 50_000] {
        let mut window = QuantileWindow::new(300 * S);
        let end = 10_000 * S;
        let mut values = Vec::new();
        for _ in 0..n {
            let v = rng.heavy_tailed_seconds();
            window.record(end - rng.below(275 * S), v); // any order, all in the window
            values.push(v);
        }
        let summary = window.summary(end, &QUANTILES).expect("outcomes in the window");
        assert_eq!(summary.count, n);
        assert_within(&summary.quantiles, &exact(&values, &QUANTILES), 0.01, &format!("n={n}"));
    }
}

#[test]
fn quantiles_within_one_percent_over_the_whole_range() {
    let mut rng = Rng(7);
    let mut window = QuantileWindow::new(3600 * S);
    let mut values = Vec::new();
    for _ in 0..20_000 {
        // 50 ns to 400 days, and some zeros.
        let v = if rng.below(50) == 0 {
            0.0
        } else {
            rng.log_uniform(50e-9, 400.0 * 86400.0)
        };
        window.record(rng.below(3000 * S), v);
        values.push(v);
    }
    let quantiles: Vec<f64> = (0..=1000).map(|i| f64::from(i) / 1000.0).collect();
    let summary = window.summary(3000 * S, &quantiles).expect("outcomes in the window");
    assert_within(&summary.quantiles, &exact(&values, &quantiles), 0.01, "whole range");
    // Every value is within 0.4% of its bin's middle once rounding no longer counts.
    let above_a_microsecond: Vec<f64> = values.iter().map(|v| v.max(1e-6)).collect();
    let mut window = QuantileWindow::new(3600 * S);
    above_a_microsecond.iter().for_each(|&v| window.record(0, v));
    let summary = window.summary(0, &quantiles).expect("outcomes in the window");
    assert_within(
        &summary.quantiles,
        &exact(&above_a_microsecond, &quantiles),
        0.0045,
        "bins",
    );
}

#[test]
fn bins_are_hdrhistograms() {
    let bins = &*BINS;
    assert_eq!(bins.distinct_values(), CHUNKS * CHUNK_BINS);
    let mut rng = Rng(3);
    let powers = (0..56).flat_map(|p| {
        let v = 1u64 << p;
        [v - 1, v, v + 1, v + v / 2]
    });
    let random: Vec<u64> = (0..100_000).map(|_| rng.next() >> (rng.next() % 64)).collect();
    for v in powers.chain(random).map(|v| v.min(MAX_NANOS)) {
        let bin = bin_of(v);
        assert!(bin < CHUNKS * CHUNK_BINS, "{v}");
        assert_eq!(lowest_of_bin(bin), bins.lowest_equivalent(v), "{v}");
        assert_eq!(bin_of(bins.highest_equivalent(v)), bin, "{v}");
        if bin > 0 {
            assert_eq!(bin_of(lowest_of_bin(bin) - 1), bin - 1, "{v}");
        }
    }
    assert_eq!(bin_of(MAX_NANOS), CHUNKS * CHUNK_BINS - 1);
}

#[test]
fn outcomes_leave_at_the_documented_step() {
    let mut window = QuantileWindow::new(300 * S); // 25 s slots
    window.record(1000 * S, 1.0); // slot 40: 1000 s ..= 1025 s - 1 ns
    window.record(1025 * S - 1, 2.0);
    window.record(1025 * S, 4.0); // slot 41
    window.record(1299 * S, 8.0); // slot 51
    let count = |end| window.summary(end, &[]).map_or(0, |s| s.count);
    assert_eq!(count(1299 * S), 4); // slots 40..=51
    assert_eq!(count(1300 * S - 1), 4);
    assert_eq!(count(1300 * S), 2); // slots 41..=52
    assert_eq!(count(1325 * S - 1), 2);
    assert_eq!(count(1325 * S), 1);
    assert_eq!(count(1575 * S - 1), 1);
    assert_eq!(count(1575 * S), 0);
    assert_eq!(window.summary(1575 * S, &QUANTILES), None);
    let summary = window.summary(1300 * S, &[0.0, 1.0]).expect("two outcomes");
    assert_eq!(summary.sum, 12.0);
    assert_within(&summary.quantiles, &[4.0, 8.0], 0.004, "after the step");
}

#[test]
fn out_of_order_within_the_window_counts_and_older_is_dropped() {
    let mut window = QuantileWindow::new(60 * S); // 5 s slots
    window.record(200 * S, 1.0);
    window.record(150 * S, 2.0); // in the window ending at 200 s: 145 s ..= 205 s - 1 ns
    window.record(145 * S, 3.0);
    window.record(145 * S - 1, 100.0); // older than that window: dropped
    window.record(-5 * S, 100.0);
    window.record(i64::MIN, 100.0);
    let summary = window.summary(200 * S, &[0.0, 1.0]).expect("three outcomes");
    assert_eq!((summary.count, summary.sum), (3, 6.0));
    assert_within(&summary.quantiles, &[1.0, 3.0], 0.004, "out of order");
    // Asked for later, the window still holds them until their slots leave it.
    assert_eq!(window.summary(204 * S, &[]).map(|s| s.count), Some(3));
    assert_eq!(window.summary(205 * S, &[]).map(|s| s.count), Some(2));
    // Once a later outcome has moved the window on, slot 145 s ..= 150 s - 1 ns is gone.
    window.record(205 * S, 4.0);
    window.record(146 * S, 100.0);
    let summary = window.summary(205 * S, &[1.0]).expect("three outcomes");
    assert_eq!((summary.count, summary.sum), (3, 7.0));
    assert_within(&summary.quantiles, &[4.0], 0.004, "moved on");
}

#[test]
fn sliding_matches_the_documented_membership() {
    let mut rng = Rng(11);
    let length = 120 * S; // 10 s slots
    let mut window = QuantileWindow::new(length);
    let mut recorded: Vec<(i64, f64)> = Vec::new();
    let mut newest = i64::MIN;
    let mut clock = -500 * S;
    for round in 0..400 {
        clock += rng.below(if round % 50 == 0 { 400 * S } else { 9 * S });
        for _ in 0..rng.below(40) {
            // Mostly recent, some anywhere in the window or older than it; never after the clock.
            let reach = if rng.below(4) == 0 { length + 30 * S } else { 12 * S };
            let at = clock - rng.below(reach);
            let v = rng.heavy_tailed_seconds();
            window.record(at, v);
            newest = newest.max(at);
            let slot = length / SLOTS as i64;
            if at >= (newest.div_euclid(slot) - SLOTS as i64 + 1) * slot {
                recorded.push((at, v));
            }
        }
        check(&window, clock, &recorded, length);
    }
}

#[test]
fn empty_windows_have_no_summary() {
    let window = QuantileWindow::new(300 * S);
    assert_eq!(window.summary(0, &QUANTILES), None);
    assert_eq!(window.heap_bytes(), 0);
    let mut window = QuantileWindow::new(300 * S);
    window.record(0, 1.0);
    assert_eq!(window.summary(-1, &QUANTILES), None);
    assert_eq!(window.summary(300 * S, &QUANTILES), None);
    let summary = window.summary(0, &[]).expect("one outcome");
    assert_eq!((summary.count, summary.sum, summary.quantiles), (1, 1.0, vec![]));
}

#[test]
fn count_and_sum_are_exact() {
    let mut rng = Rng(5);
    let mut window = QuantileWindow::new(300 * S);
    let mut values = Vec::new();
    for i in 0..100_000 {
        let v = rng.heavy_tailed_seconds();
        window.record(i * 2_000_000, v); // over 200 s
        values.push(v);
    }
    // Many in one bin: counters go from four bits to a byte, then carry.
    for i in 0..100_000 {
        window.record(i * 2_000_000, 0.25);
        values.push(0.25);
    }
    let summary = window.summary(200 * S, &QUANTILES).expect("outcomes");
    assert_eq!(summary.count, 200_000);
    assert_eq!(summary.sum, exact_sum(&values));
    let naive: f64 = values.iter().sum();
    assert!((summary.sum - naive).abs() <= 200_000.0 * 0.5e-9 + naive * 1e-12);
    assert_within(&summary.quantiles, &exact(&values, &QUANTILES), 0.01, "carries");
}

#[test]
fn any_input_is_safe() {
    for length in [i64::MIN, -1, 0, 1, 11, 12, S, i64::MAX] {
        let mut window = QuantileWindow::new(length);
        for at in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            for v in [0.0, 1e-12, 1e12, f64::MAX, f64::INFINITY, f64::NAN, -1.0] {
                window.record(at, v);
            }
            for end in [i64::MIN, -1, 0, at, i64::MAX] {
                if let Some(summary) = window.summary(end, &[f64::NAN, -1.0, 2.0, 1.0, 0.5, 0.0]) {
                    assert!(summary.quantiles.iter().all(|q| q.is_finite() && *q >= 0.0));
                }
            }
        }
    }
    // Above the range: counted at the top, summed at their value.
    let mut window = QuantileWindow::new(S);
    window.record(0, 1e12);
    let summary = window.summary(0, &[0.5]).expect("one outcome");
    assert_eq!(summary.sum, 1e12);
    assert_within(&summary.quantiles, &[MAX_NANOS as f64 / 1e9], 0.004, "top");
}

/// The figures of the module documentation.
#[test]
fn memory() {
    let length = 3600 * S;
    let idle = QuantileWindow::new(length);
    let mut few = QuantileWindow::new(length);
    let mut rng = Rng(13);
    for i in 0..5 {
        few.record(i * 600 * S, rng.heavy_tailed_seconds());
    }
    let busy = |seconds: &mut dyn FnMut(&mut Rng) -> f64| {
        let mut rng = Rng(17);
        let mut window = QuantileWindow::new(length);
        for i in 0..100_000 {
            window.record(i * (length / 100_000), seconds(&mut rng));
        }
        let full = window.heap_bytes();
        window.record(2 * length, 1.0);
        (full, window.heap_bytes())
    };
    let (narrow, moved_on) = busy(&mut |r| r.log_normal(0.5));
    let (wide, _) = busy(&mut |r| r.log_normal(1.5));
    let (heavy, _) = busy(&mut Rng::heavy_tailed_seconds);
    let (whole, _) = busy(&mut |r| r.log_uniform(1e-6, 28.0 * 86400.0));
    let (equal, _) = busy(&mut |_| 1.0);
    println!(
        "heap bytes: idle {}, 5 outcomes {}; 100,000 outcomes over the window: log-normal sigma 0.5 {narrow}, \
         sigma 1.5 {wide}, ms to hours {heavy}, 1 us to 4 weeks {whole}, all equal {equal}; \
         after the window moved past them {moved_on}",
        idle.heap_bytes(),
        few.heap_bytes(),
    );
    assert_eq!(idle.heap_bytes(), 0);
    assert!(few.heap_bytes() <= 2 * 1024);
    assert!(narrow <= 12 * 1024 && wide <= 24 * 1024 && heavy <= 32 * 1024 && equal <= 4 * 1024);
    assert!(whole <= 48 * 1024);
    assert!(moved_on <= 1024);
}

/// Figures only, no assertions: `cargo test --release --lib quantile_window::tests::timing --
/// --nocapture`.
#[test]
fn timing() {
    use std::time::Instant;
    let mut rng = Rng(19);
    let length = 300 * S;
    let quantiles = [0.5, 0.9, 0.95, 0.99];

    // A busy window, in cache.
    let mut busy = QuantileWindow::new(length);
    let outcomes: Vec<f64> = (0..1_000_000).map(|_| rng.heavy_tailed_seconds()).collect();
    let started = Instant::now();
    for (i, &v) in outcomes.iter().enumerate() {
        busy.record(i as i64 * (length / 1_000_000), v);
    }
    let busy_record = started.elapsed().as_nanos() as f64 / 1e6;
    let started = Instant::now();
    let found: usize = (0..1000)
        .map(|_| busy.summary(length - 1, &quantiles).map_or(0, |s| s.count as usize))
        .sum();
    let busy_summary = started.elapsed().as_secs_f64() * 1e6 / 1000.0;

    // 20,000 windows (10,000 workflows, two windows each), 1,000 outcomes each (50 in a debug
    // build), mostly out of cache.
    let records = if cfg!(debug_assertions) { 1_000_000 } else { 20_000_000 };
    let mut windows: Vec<QuantileWindow> = (0..20_000).map(|_| QuantileWindow::new(length)).collect();
    let inputs: Vec<(usize, i64, f64)> = (0..records)
        .map(|i| (rng.below(20_000) as usize, i * (length / records), rng.log_normal(0.7)))
        .collect();
    let started = Instant::now();
    for &(w, at, v) in &inputs {
        windows[w].record(at, v);
    }
    let spread_record = started.elapsed().as_nanos() as f64 / inputs.len() as f64;
    let started = Instant::now();
    let found = found
        + windows
            .iter()
            .map(|w| w.summary(length - 1, &quantiles).map_or(0, |s| s.quantiles.len()))
            .sum::<usize>();
    let scrape = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}: record {busy_record:.1} ns into one busy window, {spread_record:.1} ns spread over 20,000 windows; \
         summary {busy_summary:.2} us of a window of 1,000,000 outcomes; 20,000 summaries {scrape:.1} ms ({found})",
        if cfg!(debug_assertions) {
            "debug build, not representative"
        } else {
            "release"
        },
    );
}

#[test]
fn several_windows_read_as_one_say_what_one_window_of_all_their_outcomes_says() {
    let mut rng = Rng(0x005e_ed0f_5107);
    for parts in 1..=5usize {
        let mut windows: Vec<QuantileWindow> = (0..parts).map(|_| QuantileWindow::new(600 * S)).collect();
        let mut reference = QuantileWindow::new(600 * S);
        let mut t = 10_000 * S;
        for i in 0..20_000 {
            t += rng.below(60_000_000);
            // Out of order now and then, and a bin crowded past 255 and past u16 across windows.
            let at = t - rng.below(30) * S;
            let seconds = match i % 4 {
                0 => 1.5,
                _ => rng.log_uniform(1e-6, 1e5),
            };
            windows[rng.below(parts as i64) as usize].record(at, seconds);
            reference.record(at, seconds);
        }
        // Windows ending no earlier than any outcome recorded, as the aggregation asks for.
        for end in [t, t + 30 * S, t + 200 * S, t + 700 * S] {
            assert_eq!(
                summary_of(&windows, end, &QUANTILES),
                reference.summary(end, &QUANTILES),
                "{parts} windows, end {end}"
            );
        }
    }
    let mut crowded: Vec<QuantileWindow> = (0..300).map(|_| QuantileWindow::new(600 * S)).collect();
    let mut reference = QuantileWindow::new(600 * S);
    for i in 0..70_000 {
        crowded[i % 300].record(S, 2.0);
        reference.record(S, 2.0);
    }
    crowded[0].record(S, 9.0);
    reference.record(S, 9.0);
    assert_eq!(summary_of(&crowded, S, &QUANTILES), reference.summary(S, &QUANTILES));
    let unused = [QuantileWindow::new(600 * S), QuantileWindow::new(600 * S)];
    assert_eq!(summary_of(&unused, S, &QUANTILES), None);
    assert_eq!(summary_of([], S, &QUANTILES), None);
}

#[test]
fn several_windows_carry_each_their_own() {
    let length = 120 * S; // 10 s slots: slots 0 and 12 share a position
    let (mut a, mut b, mut one) = (
        QuantileWindow::new(length),
        QuantileWindow::new(length),
        QuantileWindow::new(length),
    );
    let mut record = |window: &mut QuantileWindow, at: i64, seconds: f64, times: u32| {
        for _ in 0..times {
            window.record(at, seconds);
            one.record(at, seconds);
        }
    };
    record(&mut a, 0, 0.25, 300); // slot 0: carries 256
    record(&mut a, 50 * S, 0.26, 1); // slot 5, the same chunk as 0.25 s
    record(&mut b, 50 * S, 0.25, 700); // slot 5: carries 512
    record(&mut b, 120 * S, 0.25, 300); // slot 12: carries 256
    let carries = |w: &QuantileWindow| w.ring.as_ref().map_or(0, |r| r.carries.len());
    assert_eq!((carries(&a), carries(&b)), (1, 2));
    let summary = summary_of([&a, &b], 120 * S, &[0.0, 1.0]).expect("slots 1 to 12");
    let middle = |seconds: f64| seconds_of_bin(bin_of((seconds * 1e9) as u64));
    assert_eq!(summary.count, 1001);
    assert_eq!(summary.sum, exact_sum(&[[0.25; 1000].as_slice(), &[0.26]].concat()));
    assert_eq!(summary.quantiles, [middle(0.25), middle(0.26)]);
    for end in (120..=250).map(|seconds| seconds * S) {
        assert_eq!(
            summary_of([&a, &b], end, &QUANTILES),
            one.summary(end, &QUANTILES),
            "end {end}"
        );
    }
}
