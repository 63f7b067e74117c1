//! A sliding window kept per input partition and read as one.
//!
//! A consumer that loses a partition must take that partition's outcomes out of its windows, or
//! two members of the group would both show them; the member that gains it rebuilds them from the
//! topic. Outcomes cannot be taken out of a window one at a time (its counters are per slot, not
//! per outcome), so each series keeps one window per partition its outcomes came from, and a read
//! adds them up: the same count, sum, ratio and quantiles one window would give had it recorded
//! them all (see [`summary_of`]).
//!
//! The cost is memory: a window's memory grows with its slots and the spread of its durations
//! much more than with its outcomes, so a workflow whose runs arrive on `P` partitions keeps about
//! `P` times the memory of one window. Partitions that never carried the workflow cost nothing.

use super::failure_window::FailureRatioWindow;
use super::quantile_window::{summary_of, QuantileWindow, WindowSummary};
use crate::ids::Partition;

/// A window that can be made empty for a given length.
pub trait Window {
    fn empty(length_nanos: i64) -> Self;
}

impl Window for FailureRatioWindow {
    fn empty(length_nanos: i64) -> Self {
        FailureRatioWindow::new(length_nanos)
    }
}

impl Window for QuantileWindow {
    fn empty(length_nanos: i64) -> Self {
        QuantileWindow::new(length_nanos)
    }
}

/// One window's outcomes, by the partition they came from.
#[derive(Debug, Clone)]
pub struct PartitionedWindow<W> {
    length_nanos: i64,
    /// Few (the partitions one member holds), hence a list.
    by_partition: Vec<(Partition, W)>,
}

impl<W: Window> PartitionedWindow<W> {
    pub fn new(length_nanos: i64) -> PartitionedWindow<W> {
        PartitionedWindow {
            length_nanos,
            by_partition: Vec::new(),
        }
    }

    /// The window of `partition`'s outcomes, made on first use.
    pub fn of(&mut self, partition: Partition) -> &mut W {
        let at = match self.by_partition.iter().position(|(p, _)| *p == partition) {
            Some(at) => at,
            None => {
                self.by_partition.push((partition, W::empty(self.length_nanos)));
                self.by_partition.len() - 1
            }
        };
        &mut self.by_partition[at].1
    }

    /// Forgets `partition`'s outcomes.
    pub fn drop_partition(&mut self, partition: Partition) {
        self.by_partition.retain(|(p, _)| *p != partition);
    }

    /// The windows, one per partition that contributed.
    pub fn windows(&self) -> impl Iterator<Item = &W> {
        self.by_partition.iter().map(|(_, w)| w)
    }
}

impl PartitionedWindow<FailureRatioWindow> {
    /// `(failed, total)` of the window ending at `end_nanos`.
    pub fn counts(&self, end_nanos: i64) -> (u64, u64) {
        (self.windows())
            .map(|w| w.counts(end_nanos))
            .fold((0, 0), |(f, t), (wf, wt)| (f + wf, t + wt))
    }

    /// `FAILED / all` over the window, `None` for an empty window.
    pub fn ratio(&self, end_nanos: i64) -> Option<f64> {
        let (failed, total) = self.counts(end_nanos);
        (total > 0).then(|| failed as f64 / total as f64)
    }
}

impl PartitionedWindow<QuantileWindow> {
    /// Count, sum and quantiles of the window ending at `end_nanos`; `None` when it holds none.
    pub fn summary(&self, end_nanos: i64, quantiles: &[f64]) -> Option<WindowSummary> {
        summary_of(self.windows(), end_nanos, quantiles)
    }

    /// Heap bytes of every partition's window.
    pub fn heap_bytes(&self) -> usize {
        self.by_partition.capacity() * size_of::<(Partition, QuantileWindow)>()
            + self.windows().map(QuantileWindow::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn partitions_read_as_one_window_and_leave_alone() {
        let mut ratio = PartitionedWindow::<FailureRatioWindow>::new(300 * S);
        let mut durations = PartitionedWindow::<QuantileWindow>::new(300 * S);
        let mut reference = QuantileWindow::new(300 * S);
        for (i, p) in [0u16, 1, 1, 2, 0, 1].into_iter().enumerate() {
            let at = 1000 * S + i as i64 * S;
            ratio.of(Partition(p)).record(at, p == 1);
            durations.of(Partition(p)).record(at, i as f64);
            reference.record(at, i as f64);
        }
        assert_eq!(ratio.counts(1010 * S), (3, 6));
        let q = [0.5, 0.99];
        assert_eq!(durations.summary(1010 * S, &q), reference.summary(1010 * S, &q));

        ratio.drop_partition(Partition(1));
        durations.drop_partition(Partition(1));
        assert_eq!(ratio.counts(1010 * S), (0, 3));
        let left = durations.summary(1010 * S, &q).map(|s| (s.count, s.sum));
        assert_eq!(left, Some((3, 0.0 + 3.0 + 4.0)));
        durations.drop_partition(Partition(0));
        durations.drop_partition(Partition(2));
        assert_eq!(durations.summary(1010 * S, &q), None);
        assert_eq!(ratio.ratio(5000 * S), None);
    }
}
