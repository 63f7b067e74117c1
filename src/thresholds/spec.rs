//! The thresholds as the config writes them: every field optional, so that an override sets only
//! what differs from the default. Read from TOML; validated by [`super::resolve`].

use super::ThresholdKind;
use serde::{Deserialize, Deserializer};
use std::fmt;

/// One kind of threshold as written in the config: every field optional, so that an override can
/// set only what differs from the default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// `false` turns this kind off where this entry applies. Default `true`; an override inherits
    /// the default's, like every field.
    pub enabled: Option<bool>,
    /// The highest healthy value: a ratio (0..=1) for `failure_ratio`, a duration (`"10m"`, or a
    /// number of seconds) for the quantiles and `oldest_running_age`, a count for `runs_in_flight`.
    pub max: Option<Limit>,
    /// The window, one of `metrics.failure_ratio_windows` (failure ratio) or of the quantile
    /// windows. Default: the first of them.
    pub window: Option<String>,
    /// The quantile (0..=1) of the quantile kinds. Default 0.95.
    pub quantile: Option<f64>,
    /// `duration_quantile` only: the outcome status whose durations count, one of
    /// `metrics.quantile_statuses`. Default `"COMPLETED"`.
    pub status: Option<String>,
    /// Windowed kinds: fewer outcomes in the window never breach. Default 10.
    pub min_outcomes: Option<u64>,
    /// How long the limit must be passed before it counts as breached (Prometheus's `for`).
    /// Default `"0s"`.
    #[serde(rename = "for")]
    pub hold: Option<String>,
    /// The `severity` label of the alert. Default `"warning"`.
    pub severity: Option<String>,
}

/// A `max` as written: a number, or a string (a duration).
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    Number(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        struct LimitVisitor;
        impl serde::de::Visitor<'_> for LimitVisitor {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, or a duration like \"10m\"")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Limit, E> {
                Ok(Limit::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Limit, E> {
                Ok(Limit::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Limit, E> {
                Ok(Limit::Number(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Limit, E> {
                Ok(Limit::Text(v.to_string()))
            }
        }
        d.deserialize_any(LimitVisitor)
    }
}

/// One entry of each kind, as written (`[thresholds.default]`, or in an override).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSet {
    pub failure_ratio: Option<ThresholdSpec>,
    pub duration_quantile: Option<ThresholdSpec>,
    pub queue_wait_quantile: Option<ThresholdSpec>,
    pub oldest_running_age: Option<ThresholdSpec>,
    pub runs_in_flight: Option<ThresholdSpec>,
}

impl ThresholdSet {
    pub(super) fn get(&self, kind: ThresholdKind) -> Option<&ThresholdSpec> {
        match kind {
            ThresholdKind::FailureRatio => self.failure_ratio.as_ref(),
            ThresholdKind::DurationQuantile => self.duration_quantile.as_ref(),
            ThresholdKind::QueueWaitQuantile => self.queue_wait_quantile.as_ref(),
            ThresholdKind::OldestRunningAge => self.oldest_running_age.as_ref(),
            ThresholdKind::RunsInFlight => self.runs_in_flight.as_ref(),
        }
    }
}

/// `[[thresholds.overrides]]`: thresholds for the workflows it matches.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSpec {
    /// Shown by `thresholds explain` and as the alert's `threshold_rule` label. Default
    /// `"overrides[N]"`.
    pub name: Option<String>,
    /// The workflow name (the `workflow` label), exact or a glob (`*`, `?`, `[a-z]`). Default: every
    /// workflow (then `tenant_id` is required).
    pub workflow: Option<String>,
    /// Only this tenant. Default: every tenant.
    pub tenant_id: Option<String>,
    pub failure_ratio: Option<ThresholdSpec>,
    pub duration_quantile: Option<ThresholdSpec>,
    pub queue_wait_quantile: Option<ThresholdSpec>,
    pub oldest_running_age: Option<ThresholdSpec>,
    pub runs_in_flight: Option<ThresholdSpec>,
}

impl OverrideSpec {
    pub(super) fn set(&self) -> ThresholdSet {
        ThresholdSet {
            failure_ratio: self.failure_ratio.clone(),
            duration_quantile: self.duration_quantile.clone(),
            queue_wait_quantile: self.queue_wait_quantile.clone(),
            oldest_running_age: self.oldest_running_age.clone(),
            runs_in_flight: self.runs_in_flight.clone(),
        }
    }
}

/// The thresholds part of a config: `[thresholds]` of the main file, or the file it names.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsFile {
    #[serde(default)]
    pub default: ThresholdSet,
    #[serde(default)]
    pub overrides: Vec<OverrideSpec>,
}

impl ThresholdSpec {
    pub(super) fn has(&self, field: &str) -> bool {
        match field {
            "max" => self.max.is_some(),
            "window" => self.window.is_some(),
            "quantile" => self.quantile.is_some(),
            "status" => self.status.is_some(),
            "min_outcomes" => self.min_outcomes.is_some(),
            "for" => self.hold.is_some(),
            "severity" => self.severity.is_some(),
            _ => false,
        }
    }
}
