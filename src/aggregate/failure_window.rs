//! Failed and total outcomes over a sliding event-time window.

/// Slots per window: the window slides in steps of 1/60 of its length.
pub const SLOTS: usize = 60;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which slot of time (event time / slot width) the counts belong to.
    index: i64,
    failed: u32,
    total: u32,
}

/// Counts of outcomes by event time in [`SLOTS`] ring slots, so memory is fixed per workflow
/// whatever the rate.
///
/// A window ending at `end` covers the slot holding `end` and the `SLOTS - 1` slots before it: the
/// outcomes of the last `length` (rounded to whole slots), never older. Outcomes older than the
/// ring are not counted in the window (they are in the counters). A later outcome advances the
/// ring, which is why the aggregation never records one later than its clock (see
/// `aggregate::Clock`): a bogus future date must not take the slot that current outcomes need.
#[derive(Debug, Clone)]
pub struct FailureRatioWindow {
    slot_nanos: i64,
    slots: Box<[Slot; SLOTS]>,
}

impl FailureRatioWindow {
    /// `length_nanos` must be at least [`SLOTS`] nanoseconds (config validation ensures seconds).
    pub fn new(length_nanos: i64) -> FailureRatioWindow {
        FailureRatioWindow {
            slot_nanos: (length_nanos / SLOTS as i64).max(1),
            slots: Box::new(
                [Slot {
                    index: i64::MIN,
                    failed: 0,
                    total: 0,
                }; SLOTS],
            ),
        }
    }

    fn position(&self, at_nanos: i64) -> (i64, usize) {
        let index = at_nanos.div_euclid(self.slot_nanos);
        (index, index.rem_euclid(SLOTS as i64) as usize)
    }

    pub fn record(&mut self, at_nanos: i64, failed: bool) {
        let (index, at) = self.position(at_nanos);
        let slot = &mut self.slots[at];
        if slot.index < index {
            *slot = Slot {
                index,
                failed: 0,
                total: 0,
            };
        } else if slot.index > index {
            return; // older than the ring reaches: a slot this old was already reused
        }
        slot.total = slot.total.saturating_add(1);
        slot.failed = slot.failed.saturating_add(u32::from(failed));
    }

    /// `(failed, total)` of the window ending at `end_nanos`.
    pub fn counts(&self, end_nanos: i64) -> (u64, u64) {
        let (newest, _) = self.position(end_nanos);
        let oldest = newest - (SLOTS as i64 - 1);
        self.slots
            .iter()
            .filter(|s| s.index >= oldest && s.index <= newest)
            .fold((0, 0), |(f, t), s| (f + u64::from(s.failed), t + u64::from(s.total)))
    }

    /// `FAILED / all` over the window, `None` for an empty window.
    pub fn ratio(&self, end_nanos: i64) -> Option<f64> {
        let (failed, total) = self.counts(end_nanos);
        (total > 0).then(|| failed as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn counts_within_the_window_only() {
        let mut w = FailureRatioWindow::new(300 * S); // 5m, 5 s slots
        w.record(1000 * S, true);
        w.record(1001 * S, false);
        w.record(1200 * S, false);
        assert_eq!(w.counts(1200 * S), (1, 3));
        assert_eq!(w.ratio(1200 * S), Some(1.0 / 3.0));
        // 1000 s falls out once the window's oldest slot starts after it.
        assert_eq!(w.counts(1299 * S), (1, 3));
        assert_eq!(w.counts(1305 * S), (0, 1));
        assert_eq!(w.ratio(1600 * S), None);
    }

    #[test]
    fn out_of_order_within_the_ring_is_counted() {
        let mut w = FailureRatioWindow::new(60 * S);
        w.record(200 * S, false);
        w.record(150 * S, true);
        assert_eq!(w.counts(200 * S), (1, 2));
        // Older than the ring: its slot holds newer data, so it is not counted.
        w.record(140 * S, true);
        assert_eq!(w.counts(200 * S), (1, 2));
        // Inside the ring, in a slot not used yet: counted.
        w.record(145 * S, true);
        assert_eq!(w.counts(200 * S), (2, 3));
    }

    #[test]
    fn reused_slots_start_from_zero() {
        let mut w = FailureRatioWindow::new(60 * S);
        for t in 0..600 {
            w.record(t * S, t % 2 == 0);
        }
        assert_eq!(w.counts(599 * S), (30, 60));
    }

    #[test]
    fn negative_times_do_not_panic() {
        let mut w = FailureRatioWindow::new(60 * S);
        w.record(-5 * S, true);
        assert_eq!(w.counts(0), (1, 1));
    }
}
