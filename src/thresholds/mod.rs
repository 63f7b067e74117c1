//! Thresholds: what healthy means per workflow, read from the config and evaluated against the
//! statistics.
//!
//! A default set plus overrides matched by workflow name (exact or glob) and optionally tenant. For
//! each kind of threshold the most specific matching override that sets that kind wins; the fields
//! it leaves out come from the default, then from the built-in defaults. The same resolved rules
//! drive the sidecar's own evaluation ([`evaluate`]) and the Prometheus alerting rules ([`rules`]).
//!
//! No I/O: the config's text comes in, numbers and rules go out; the exporter renders them.
//!
//! - [`spec`]: the thresholds as written (every field optional), read from TOML.
//! - [`resolve`]: validated into rules, and which rule applies to a workflow.
//! - [`explain`]: `thresholds explain`, and thresholds in words.
//! - [`evaluate`]: the sidecar's own evaluation against the aggregation, into numbers.
//! - [`rules`]: the Prometheus alerting rules.

pub mod evaluate;
pub mod explain;
pub mod glob;
pub mod resolve;
pub mod rules;
pub mod spec;

pub use resolve::{Resolution, Rule, Setting, Threshold, Thresholds, TrackedWindows, Window};
pub use spec::{Limit, OverrideSpec, ThresholdSet, ThresholdSpec, ThresholdsFile};

use std::fmt;

/// The kinds of threshold, in the order they are shown and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThresholdKind {
    FailureRatio,
    DurationQuantile,
    QueueWaitQuantile,
    OldestRunningAge,
    RunsInFlight,
}

impl ThresholdKind {
    pub const ALL: [ThresholdKind; 5] = [
        ThresholdKind::FailureRatio,
        ThresholdKind::DurationQuantile,
        ThresholdKind::QueueWaitQuantile,
        ThresholdKind::OldestRunningAge,
        ThresholdKind::RunsInFlight,
    ];

    /// The config key, and the `threshold` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdKind::FailureRatio => "failure_ratio",
            ThresholdKind::DurationQuantile => "duration_quantile",
            ThresholdKind::QueueWaitQuantile => "queue_wait_quantile",
            ThresholdKind::OldestRunningAge => "oldest_running_age",
            ThresholdKind::RunsInFlight => "runs_in_flight",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether `max` (and the observed value) is a number of seconds.
    pub fn is_seconds(self) -> bool {
        matches!(
            self,
            ThresholdKind::DurationQuantile | ThresholdKind::QueueWaitQuantile | ThresholdKind::OldestRunningAge
        )
    }

    fn windowed(self) -> bool {
        matches!(
            self,
            ThresholdKind::FailureRatio | ThresholdKind::DurationQuantile | ThresholdKind::QueueWaitQuantile
        )
    }

    fn quantiled(self) -> bool {
        matches!(self, ThresholdKind::DurationQuantile | ThresholdKind::QueueWaitQuantile)
    }
}

impl fmt::Display for ThresholdKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
