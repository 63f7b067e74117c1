//! Run durations over a sliding event-time window: count, sum and quantiles, for the
//! `hatchet_workflow_run_duration_window_seconds` summaries.
//!
//! Pure data like the rest of `aggregate`: no clock reads, no I/O. [`QuantileWindow::record`] is on
//! the hot path and allocates only when a slot first uses an octave of the histogram or outgrows
//! its counters there; [`QuantileWindow::summary`] runs at scrape time.
//!
//! # Which outcomes are in the window
//!
//! Event time is cut into slots of `w = length_nanos / SLOTS` nanoseconds (integer division):
//! slot `k` holds the event times `k·w ..= k·w + w - 1`, `k = at.div_euclid(w)`. The window ending
//! at `end` holds the outcomes of the slot holding `end` and of the [`SLOTS`]` - 1` slots before
//! it, i.e. the event times in `[(e - SLOTS + 1)·w, (e + 1)·w)` with `e = end.div_euclid(w)`:
//! the last `length`, rounded to whole slots (between `length - w` and `length` of history up to
//! `end`). The window slides in steps of `w`.
//!
//! `record` drops an outcome only when it is older than the window ending at the latest event
//! time recorded so far. The aggregation never records a time later than its clock and asks for
//! windows ending at its clock, so a dropped outcome is older than every window it can still ask
//! for: for any `end` not earlier than every recorded event time, the window holds exactly the
//! outcomes above, out-of-order ones included. (A window ending earlier than recorded data holds
//! what is left of them.)
//!
//! # Accuracy
//!
//! Durations are rounded to whole nanoseconds and counted in the bins of an hdrhistogram with
//! 2 significant digits from 1 ns to 2^55 - 1 ns (about 417 days, more than the year the
//! aggregation trusts a duration for): one bin per nanosecond below 256 ns, then 128 bins per
//! octave, each at most 1/128 of its lowest value wide. A quantile is the nearest-rank one (rank
//! `ceil(q·n)` in ascending order, rank 1 for `q = 0`) read off the bins and reported as the
//! middle of its bin (hdrhistogram's `median_equivalent`): within 0.4% of the exact nearest-rank
//! duration, plus the rounding to a nanosecond; so within 1% for every duration of 50 ns or more,
//! and exact for 0. Durations above the range are counted at its top (a quantile landing on one
//! reports about 417 days) but summed at their value. The count is exact, and so is the sum of
//! the durations rounded to nanoseconds (kept as integers, converted to seconds once).
//!
//! # Memory
//!
//! An exact sliding window has to forget each outcome at the step its slot leaves the window, so
//! every slot keeps its own counts: the memory is the slots'. hdrhistogram's own counters are
//! dense (6,272 bins over this range: 24.5 KiB per slot as `u32`) and cannot be decremented one
//! value at a time, so the histogram above only defines the bins, and each slot keeps just the
//! octaves (chunks of 128 bins) its outcomes fell in: four-bit counters, turned into bytes when
//! one would pass 15; a byte passing 255 starts over and carries 256 into a short per-window list.
//! There is no running total: `summary` adds up the chunk totals of the slots in the window, then
//! the counters of only the chunks holding a requested quantile. Slots that leave the window are
//! freed when a later outcome moves the window past them (`summary` only reads: a workflow that
//! stops keeps its last outcomes' memory until its next outcome or until it is dropped as idle).
//!
//! Memory grows with the number of slots much more than with the number of outcomes, hence
//! [`SLOTS`] is 12 (a 5-minute window slides in 25 s steps, an hour in 5 minutes) rather than
//! the failure-ratio window's 60. `heap_bytes` of a 1-hour window, from the `memory` test
//! (the allocator adds 8 to 16 bytes per chunk):
//!
//! | outcomes in the window | 12 slots | (60 slots) |
//! |---|---|---|
//! | none (never used) | 0 | 0 |
//! | 5 | 1,240 | 4,312 |
//! | 100,000, log-normal durations, sigma 0.5 | 10,384 | 37,408 |
//! | 100,000, log-normal, sigma 1.5 | 22,680 | 84,392 |
//! | 100,000, half 1-100 ms, the rest up to 12 hours | 29,568 | 146,432 |
//! | 100,000, log-uniform from 1 µs to 4 weeks | 46,208 | 229,856 |
//! | 100,000, all equal | 2,752 | 13,504 |
//! | any, once a later outcome has moved the window past them | 888 | 3,960 |
//!
//! Speed (release build, the `timing` test on a 2-core machine): `record` 12 ns into a busy
//! window, 70 to 110 ns when spread over 20,000 windows (cache misses); `summary` with 4 quantiles
//! 0.7 µs for a busy window in cache, 35 to 50 ms for 20,000 windows of 1,000 outcomes each.

use hdrhistogram::Histogram;
use std::sync::LazyLock;

/// Slots per window: the window slides in steps of 1/12 of its length.
pub const SLOTS: usize = 12;

/// The largest duration the bins tell apart, in nanoseconds (about 417 days); longer ones are
/// counted here.
const MAX_NANOS: u64 = (1 << 55) - 1;

/// 2 significant digits: bins at most 1/128 of their lowest value wide, so the middle of a bin is
/// within 1/256 of any value in it.
const SIGNIFICANT_DIGITS: u8 = 2;

/// Bins per chunk: hdrhistogram's sub-bucket half count at 2 significant digits, one octave.
const CHUNK_BINS: usize = 128;

/// Bytes of a chunk with four-bit counters.
const NIBBLES: usize = CHUNK_BINS / 2;

/// Chunks covering the bins up to [`MAX_NANOS`].
const CHUNKS: usize = 49;

/// Where a chunk's id starts in [`Chunk::key`].
const CHUNK_ID_SHIFT: u32 = 56;

/// A carry is kept as `position << 56 | bin << 40 | n`: `256·n` more outcomes in `bin` of the slot
/// at `position` than its counter says.
const CARRY_POSITION_SHIFT: u32 = 56;
const CARRY_BIN_SHIFT: u32 = 40;
const CARRY_BIN_MASK: u64 = 0xffff;
const CARRY_COUNT_MASK: u64 = (1 << CARRY_BIN_SHIFT) - 1;

// A window's counters of one bin add up in a `u16`; chunk ids fit `Slot::present`; carries can
// name every position and bin.
const _: () = assert!(SLOTS <= 256 && CHUNKS <= 64 && CHUNKS * CHUNK_BINS <= 1 << 16);

/// The bins: hdrhistogram's, for values from 1 ns to [`MAX_NANOS`] at [`SIGNIFICANT_DIGITS`].
/// It never records anything; it maps durations to bins and bins back to durations.
static BINS: LazyLock<Histogram<u8>> =
    LazyLock::new(|| Histogram::new_with_bounds(1, MAX_NANOS, SIGNIFICANT_DIGITS).expect("constant bounds are valid"));

/// Count, sum and quantiles of the outcomes in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSummary {
    pub count: u64,
    /// Seconds.
    pub sum: f64,
    /// Seconds, in the order the quantiles were asked for.
    pub quantiles: Vec<f64>,
}

/// Durations of the outcomes in a sliding event-time window; see the module documentation.
#[derive(Debug, Clone)]
pub struct QuantileWindow {
    slot_nanos: i64,
    /// `None` until the first outcome, so that a window never used costs no heap.
    ring: Option<Box<Ring>>,
}

#[derive(Debug, Clone)]
struct Ring {
    /// The latest slot recorded into; the ring holds no slot older than `newest - SLOTS + 1`.
    newest: i64,
    /// Slot `k` at position `k.rem_euclid(SLOTS)`.
    slots: [Slot; SLOTS],
    /// Counters of any slot that went past 255 (rare, hence not one list per slot).
    carries: Vec<u64>,
}

/// One slot of event time: one cache line, its bins behind it.
#[derive(Debug, Clone)]
struct Slot {
    /// Which slot of time this is (event time / slot width); meaningless while `present` is 0.
    index: i64,
    /// Bit `id` set when chunk `id` is in `chunks`.
    present: u64,
    /// Sum of the durations rounded to nanoseconds.
    sum_nanos: u128,
    /// By id.
    chunks: Vec<Chunk>,
}

#[derive(Debug, Clone)]
struct Chunk {
    /// `id << 56 | total`: the chunk holds bins `id·128 .. id·128 + 128` and `total` outcomes,
    /// carries included (one field rather than two makes a chunk 24 bytes instead of 32).
    key: u64,
    counts: Counts,
}

/// A chunk's counters: four bits each until one of them would pass 15, then a byte each.
#[derive(Debug, Clone)]
enum Counts {
    /// Bin `b` in the low (`b < 64`) or high half of byte `b % 64`.
    Nibbles(Box<[u8; NIBBLES]>),
    Bytes(Box<[u8; CHUNK_BINS]>),
}

/// Fills the unused places of `summary`'s list of slots.
static EMPTY_SLOT: Slot = Slot::empty(i64::MIN);

impl QuantileWindow {
    /// `length_nanos` ≥ 1 s (shorter lengths work too, down to slots of 1 ns).
    pub fn new(length_nanos: i64) -> QuantileWindow {
        QuantileWindow {
            slot_nanos: (length_nanos / SLOTS as i64).max(1),
            ring: None,
        }
    }

    /// One outcome of `seconds` at event time `at_nanos`. An outcome older than the window ending
    /// at the latest event time recorded so far is dropped.
    pub fn record(&mut self, at_nanos: i64, seconds: f64) {
        let step = at_nanos.div_euclid(self.slot_nanos);
        let ring = match &mut self.ring {
            Some(ring) => ring,
            None => self.ring.insert(Box::new(Ring::new(step))),
        };
        if step > ring.newest {
            ring.advance(step);
        } else if ring.newest.checked_sub(SLOTS as i64).is_some_and(|limit| step <= limit) {
            return;
        }
        // `as` saturates: NaN and negatives count as 0.
        let nanos = seconds * 1e9 + 0.5;
        ring.add(step, bin_of((nanos as u64).min(MAX_NANOS)), nanos as u128);
    }

    /// Count, sum and the requested quantiles of the outcomes in the window ending at `end_nanos`;
    /// `None` when it holds none. Quantiles are clamped to `0..=1` (NaN counts as 0) and may come
    /// in any order, though ascending is what the exposition asks for.
    pub fn summary(&self, end_nanos: i64, quantiles: &[f64]) -> Option<WindowSummary> {
        let ring = self.ring.as_deref()?;
        let last = end_nanos.div_euclid(self.slot_nanos);
        let first = last.saturating_sub(SLOTS as i64 - 1);
        let mut held = [(0, &EMPTY_SLOT); SLOTS];
        let mut held_len = 0;
        for (position, slot) in ring.slots.iter().enumerate() {
            if slot.present != 0 && slot.index >= first && slot.index <= last {
                held[held_len] = (position, slot);
                held_len += 1;
            }
        }
        let held = &held[..held_len];
        let mut chunk_totals = [0u64; CHUNKS];
        for (_, slot) in held {
            for chunk in &slot.chunks {
                chunk_totals[chunk.id()] += chunk.total();
            }
        }
        let count: u64 = chunk_totals.iter().sum();
        if count == 0 {
            return None;
        }
        let sum_nanos = held.iter().fold(0u128, |sum, (_, s)| sum.saturating_add(s.sum_nanos));

        // (rank, place in `quantiles`) by rank, so that one pass over the chunks serves them all.
        let mut ranks: Vec<(u64, usize)> = (quantiles.iter().enumerate())
            .map(|(at, &q)| (nearest_rank(q, count), at))
            .collect();
        ranks.sort_unstable();
        // The chunks holding a rank: (id, outcomes in the chunks before it, outcomes in it).
        let mut targets: Vec<(usize, u64, u64)> = Vec::with_capacity(ranks.len());
        let (mut pending, mut below) = (ranks.iter().peekable(), 0);
        for (id, &here) in chunk_totals.iter().enumerate() {
            if pending.next_if(|&&(rank, _)| rank <= below + here).is_some() {
                targets.push((id, below, here));
                while pending.next_if(|&&(rank, _)| rank <= below + here).is_some() {}
            }
            below += here;
        }
        // A byte of each cache line of their counters first, so that the cache misses (the
        // windows are cold at scrape time) overlap rather than wait for the additions between.
        let lines = (targets.iter())
            .flat_map(|&(id, ..)| held.iter().filter_map(move |(_, slot)| slot.counts(id)))
            .fold(0, |x, counts| x ^ counts.touch());
        std::hint::black_box(lines);

        let mut values = vec![0.0; quantiles.len()];
        let mut pending = ranks.iter().peekable();
        for &(id, below, here) in &targets {
            let bins = ring.bins(held, id);
            let (mut bin, mut through) = (0, below + bins[0]);
            while let Some(&(rank, at)) = pending.next_if(|&&(rank, _)| rank <= below + here) {
                while through < rank && bin + 1 < CHUNK_BINS {
                    bin += 1;
                    through += bins[bin];
                }
                values[at] = seconds_of_bin(id * CHUNK_BINS + bin);
            }
        }
        Some(WindowSummary {
            count,
            sum: sum_nanos as f64 / 1e9,
            quantiles: values,
        })
    }

    /// Heap bytes held by this window (the allocator's own overhead aside).
    pub fn heap_bytes(&self) -> usize {
        self.ring.as_deref().map_or(0, |ring| {
            size_of::<Ring>()
                + ring.carries.capacity() * size_of::<u64>()
                + ring.slots.iter().map(Slot::heap_bytes).sum::<usize>()
        })
    }
}

impl Ring {
    fn new(newest: i64) -> Ring {
        Ring {
            newest,
            slots: std::array::from_fn(|_| Slot::empty(i64::MIN)),
            carries: Vec::new(),
        }
    }

    /// Makes `step` (later than `newest`) the newest slot, emptying the slots that leave the
    /// window so that their memory goes now.
    fn advance(&mut self, step: i64) {
        if step.abs_diff(self.newest) >= SLOTS as u64 {
            self.slots.iter_mut().for_each(|s| *s = Slot::empty(i64::MIN));
            self.carries = Vec::new();
        } else {
            for k in self.newest + 1..=step {
                self.empty(k);
            }
        }
        self.newest = step;
    }

    /// Gives the position of slot `step` to that slot, empty.
    fn empty(&mut self, step: i64) {
        let position = step.rem_euclid(SLOTS as i64) as u64;
        self.slots[position as usize] = Slot::empty(step);
        if !self.carries.is_empty() {
            self.carries.retain(|c| c >> CARRY_POSITION_SHIFT != position);
        }
    }

    /// One outcome `nanos` long in bin `bin` of slot `step`, which is in the window of `newest`.
    fn add(&mut self, step: i64, bin: usize, nanos: u128) {
        let position = step.rem_euclid(SLOTS as i64) as usize;
        if self.slots[position].index != step {
            self.empty(step);
        }
        if self.slots[position].add(bin, nanos) {
            let key = (position as u64) << CARRY_POSITION_SHIFT | (bin as u64) << CARRY_BIN_SHIFT;
            match self.carries.iter_mut().find(|c| **c & !CARRY_COUNT_MASK == key) {
                Some(carry) => *carry += 1,
                None => self.carries.push(key | 1),
            }
        }
    }

    /// The counts of chunk `id` over the slots `held` (with their positions).
    fn bins(&self, held: &[(usize, &Slot)], id: usize) -> [u64; CHUNK_BINS] {
        let mut narrow = [0u16; CHUNK_BINS];
        for counts in held.iter().filter_map(|(_, slot)| slot.counts(id)) {
            counts.add_to(&mut narrow);
        }
        let mut bins = narrow.map(u64::from);
        for &carry in &self.carries {
            let position = (carry >> CARRY_POSITION_SHIFT) as usize;
            let bin = ((carry >> CARRY_BIN_SHIFT) & CARRY_BIN_MASK) as usize;
            if bin / CHUNK_BINS == id && held.iter().any(|&(p, _)| p == position) {
                bins[bin % CHUNK_BINS] += (carry & CARRY_COUNT_MASK) << 8;
            }
        }
        bins
    }
}

impl Slot {
    const fn empty(index: i64) -> Slot {
        Slot {
            index,
            present: 0,
            sum_nanos: 0,
            chunks: Vec::new(),
        }
    }

    /// Counts one outcome; `true` when the counter of `bin` went from 255 back to 0, for the
    /// caller to carry 256.
    fn add(&mut self, bin: usize, nanos: u128) -> bool {
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
        let id = bin / CHUNK_BINS;
        let at = self.place(id);
        if self.present & 1 << id == 0 {
            self.present |= 1 << id;
            self.chunks.reserve_exact(1);
            let counts = Counts::Nibbles(Box::new([0; NIBBLES]));
            self.chunks.insert(
                at,
                Chunk {
                    key: (id as u64) << CHUNK_ID_SHIFT,
                    counts,
                },
            );
        }
        let chunk = &mut self.chunks[at];
        chunk.key += 1;
        let bin = bin % CHUNK_BINS;
        if let Counts::Nibbles(nibbles) = &mut chunk.counts {
            let shift = bin / NIBBLES * 4;
            let pair = &mut nibbles[bin % NIBBLES];
            if (*pair >> shift) & 15 < 15 {
                *pair += 1 << shift;
                return false;
            }
            let bytes = std::array::from_fn(|b| (nibbles[b % NIBBLES] >> (b / NIBBLES * 4)) & 15);
            chunk.counts = Counts::Bytes(Box::new(bytes));
        }
        match &mut chunk.counts {
            Counts::Bytes(bytes) => match bytes[bin].checked_add(1) {
                Some(n) => {
                    bytes[bin] = n;
                    false
                }
                None => {
                    bytes[bin] = 0;
                    true
                }
            },
            Counts::Nibbles(_) => false,
        }
    }

    /// Where chunk `id` is, or goes, in `chunks`.
    fn place(&self, id: usize) -> usize {
        (self.present & ((1 << id) - 1)).count_ones() as usize
    }

    fn counts(&self, id: usize) -> Option<&Counts> {
        (self.present & 1 << id != 0).then(|| &self.chunks[self.place(id)].counts)
    }

    fn heap_bytes(&self) -> usize {
        let counts = |c: &Chunk| match c.counts {
            Counts::Nibbles(_) => NIBBLES,
            Counts::Bytes(_) => CHUNK_BINS,
        };
        self.chunks.capacity() * size_of::<Chunk>() + self.chunks.iter().map(counts).sum::<usize>()
    }
}

impl Chunk {
    fn id(&self) -> usize {
        (self.key >> CHUNK_ID_SHIFT) as usize
    }

    fn total(&self) -> u64 {
        self.key & ((1 << CHUNK_ID_SHIFT) - 1)
    }
}

impl Counts {
    /// Adds these counters to `bins` (which stay below 2^16: at most 12 slots of 255).
    fn add_to(&self, bins: &mut [u16; CHUNK_BINS]) {
        match self {
            Counts::Nibbles(nibbles) => {
                let (low, high) = bins.split_at_mut(NIBBLES);
                for ((low, high), &pair) in low.iter_mut().zip(high).zip(nibbles.iter()) {
                    *low += u16::from(pair & 15);
                    *high += u16::from(pair >> 4);
                }
            }
            Counts::Bytes(bytes) => {
                for (sum, &n) in bins.iter_mut().zip(bytes.iter()) {
                    *sum += u16::from(n);
                }
            }
        }
    }

    /// Reads a byte of each cache line the counters may span.
    fn touch(&self) -> u8 {
        match self {
            Counts::Nibbles(n) => n[0] ^ n[NIBBLES - 1],
            Counts::Bytes(b) => b[0] ^ b[CHUNK_BINS / 2] ^ b[CHUNK_BINS - 1],
        }
    }
}

/// Rank of the nearest-rank `q` quantile among `n` outcomes (`n` ≥ 1): `ceil(q·n)`, at least 1.
fn nearest_rank(q: f64, n: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * n as f64).ceil() as u64).clamp(1, n)
}

/// hdrhistogram's index of the bin holding `nanos` (at most [`MAX_NANOS`]): bucket `k` of the
/// histogram holds values `2^k` apart, its bins following those of the buckets before it.
#[inline]
fn bin_of(nanos: u64) -> usize {
    let bins = &*BINS;
    let bucket = bins.equivalent_range(nanos).trailing_zeros();
    ((bucket as usize) << 7) + (bins.lowest_equivalent(nanos) >> bucket) as usize
}

/// The lowest value of bin `bin`: the inverse of [`bin_of`].
fn lowest_of_bin(bin: usize) -> u64 {
    let bucket = (bin >> 7).saturating_sub(1);
    ((bin - (bucket << 7)) as u64) << bucket
}

/// The middle of bin `bin`, in seconds.
fn seconds_of_bin(bin: usize) -> f64 {
    BINS.median_equivalent(lowest_of_bin(bin)) as f64 / 1e9
}

#[cfg(test)]
mod tests {
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
}
