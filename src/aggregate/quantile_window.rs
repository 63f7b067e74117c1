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
//! Several windows of one length are read as one by [`summary_of`] (the aggregation keeps one
//! per input partition and workflow).
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

/// The slots of one ring that lie in a window, with their positions, in its first places.
type HeldSlots<'a> = [(usize, &'a Slot); SLOTS];

/// Fills the unused places of `summary_of`'s lists of slots.
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
        summary_of([self], end_nanos, quantiles)
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

/// Count, sum and quantiles of the outcomes in `windows` (all of one length) ending at
/// `end_nanos`, read as one window: exactly what one window would say had it recorded all their
/// outcomes. `None` when they hold none. See [`QuantileWindow::summary`].
pub fn summary_of<'a>(
    windows: impl IntoIterator<Item = &'a QuantileWindow>,
    end_nanos: i64,
    quantiles: &[f64],
) -> Option<WindowSummary> {
    // The slots of each ring that lie in the window, with their positions (in a fixed array: one
    // allocation per call, not one per window).
    let mut rings: Vec<(&Ring, HeldSlots<'_>, usize)> = Vec::new();
    for window in windows {
        let Some(ring) = window.ring.as_deref() else { continue };
        let last = end_nanos.div_euclid(window.slot_nanos);
        let first = last.saturating_sub(SLOTS as i64 - 1);
        let mut held = [(0, &EMPTY_SLOT); SLOTS];
        let mut len = 0;
        for (position, slot) in ring.slots.iter().enumerate() {
            if slot.present != 0 && slot.index >= first && slot.index <= last {
                held[len] = (position, slot);
                len += 1;
            }
        }
        if len > 0 {
            rings.push((ring, held, len));
        }
    }
    let mut chunk_totals = [0u64; CHUNKS];
    for (_, held, len) in &rings {
        for (_, slot) in &held[..*len] {
            for chunk in &slot.chunks {
                chunk_totals[chunk.id()] += chunk.total();
            }
        }
    }
    let count: u64 = chunk_totals.iter().sum();
    if count == 0 {
        return None;
    }
    let sum_nanos = (rings.iter().flat_map(|(_, held, len)| &held[..*len]))
        .fold(0u128, |sum, (_, s)| sum.saturating_add(s.sum_nanos));

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
        .flat_map(|&(id, ..)| {
            (rings.iter().flat_map(|(_, held, len)| &held[..*len])).filter_map(move |(_, slot)| slot.counts(id))
        })
        .fold(0, |x, counts| x ^ counts.touch());
    std::hint::black_box(lines);

    let mut values = vec![0.0; quantiles.len()];
    let mut pending = ranks.iter().peekable();
    for &(id, below, here) in &targets {
        let mut bins = [0u64; CHUNK_BINS];
        for (ring, held, len) in &rings {
            for (total, add) in bins.iter_mut().zip(ring.bins(&held[..*len], id)) {
                *total += add;
            }
        }
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
mod tests;
