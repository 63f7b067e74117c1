//! `thresholds explain`: which rule applies to a workflow for each kind, and why; and a
//! threshold in words, for the explanation, the logs and the alerting rules.

use super::resolve::{Rule, Threshold, Thresholds};
use super::ThresholdKind;
use crate::ids::Uuid128;
use crate::model::V1TaskStatus;
use std::fmt::Write;
use std::time::Duration;

impl Thresholds {
    /// `thresholds explain`: which rule applies to the workflow for each kind, and why.
    pub fn explain(&self, workflow: &str, tenant: Option<Uuid128>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "workflow {workflow:?}{}",
            match tenant {
                Some(t) => format!(" of tenant {}", t),
                None => " (no --tenant given: overrides for one tenant are not considered)".into(),
            }
        );
        let matching: Vec<&Rule> = (self.rules.iter().skip(1))
            .filter(|r| r.matches(tenant, workflow))
            .collect();
        if matching.is_empty() {
            let _ = writeln!(out, "matching overrides: none");
        } else {
            let _ = writeln!(out, "matching overrides:");
            for rule in matching {
                let _ = writeln!(out, "  {} ({}): {}", rule.name, rule.key, rule.describe_match());
            }
        }
        if workflow == crate::aggregate::OVERFLOW_WORKFLOW {
            let _ = writeln!(out, "note: the overflow series is never evaluated");
        }
        for kind in ThresholdKind::ALL {
            let _ = writeln!(out);
            let resolution = self.resolve(kind, tenant, workflow);
            let Some(winner) = resolution.winner else {
                let _ = writeln!(
                    out,
                    "{kind}: not set (neither the default nor a matching override sets it)"
                );
                continue;
            };
            let rule = &self.rules[winner];
            let why = if rule.is_default() {
                "no matching override sets it".to_string()
            } else if resolution.outranked.iter().any(|&i| i != 0) {
                "the most specific matching override that sets it".to_string()
            } else {
                "the only matching override that sets it".to_string()
            };
            match resolution.threshold {
                None => {
                    let _ = writeln!(out, "{kind}: disabled by {} ({}): {why}", rule.name, rule.key);
                }
                Some(threshold) => {
                    let _ = writeln!(out, "{kind}: {} ({}): {why}", rule.name, rule.key);
                    let _ = writeln!(out, "  breached when {}", threshold.condition());
                    let own = rule.written.get(kind);
                    let default = self.rules[0].written.get(kind);
                    for (field, value) in threshold.fields() {
                        let from = if own.is_some_and(|s| s.has(field)) {
                            rule.key.clone()
                        } else if !rule.is_default() && default.is_some_and(|s| s.has(field)) {
                            format!("{} (inherited)", self.rules[0].key)
                        } else {
                            "built-in default".to_string()
                        };
                        let _ = writeln!(out, "  {field:<13} = {value:<12} from {from}");
                    }
                }
            }
            for &i in &resolution.outranked {
                let lost = &self.rules[i];
                let _ = writeln!(
                    out,
                    "  outranked: {} ({}): {}",
                    lost.name,
                    lost.key,
                    lost.describe_match()
                );
            }
        }
        out
    }
}

impl Threshold {
    /// The limit as written for people: `5%`, `10m`, `250`.
    pub fn format_value(&self, value: f64) -> String {
        match self.kind {
            ThresholdKind::FailureRatio | ThresholdKind::RunsInFlight => format!("{value}"),
            _ => format_seconds(value),
        }
    }

    /// The quantile as people write it: `p95`, `p99.9`.
    pub fn percentile(&self) -> String {
        let percent = (self.quantile.unwrap_or(1.0) * 100.0 * 1e6).round() / 1e6;
        format!("p{percent}")
    }

    /// The condition in words, for `explain` and logs.
    pub fn condition(&self) -> String {
        let max = self.format_value(self.max);
        let window = self.window.as_ref().map(|w| w.label.as_str()).unwrap_or("");
        let hold = match self.hold.is_zero() {
            true => String::new(),
            false => format!(" for {}", humantime::format_duration(self.hold)),
        };
        match self.kind {
            ThresholdKind::FailureRatio => format!(
                "FAILED / all outcomes over {window} > {max}, with at least {} outcomes{hold}",
                self.min_outcomes
            ),
            ThresholdKind::DurationQuantile => format!(
                "{} of {} run durations over {window} > {max}, with at least {} outcomes{hold}",
                self.percentile(),
                self.status.map_or("", V1TaskStatus::as_str),
                self.min_outcomes
            ),
            ThresholdKind::QueueWaitQuantile => format!(
                "{} of queue waits over {window} > {max}, with at least {} outcomes{hold}",
                self.percentile(),
                self.min_outcomes
            ),
            ThresholdKind::OldestRunningAge => format!("the oldest RUNNING run started more than {max} ago{hold}"),
            ThresholdKind::RunsInFlight => format!("more than {max} runs QUEUED or RUNNING{hold}"),
        }
    }

    /// `(field, value)` of every field this kind has, as they resolve.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("max", self.format_value(self.max))];
        if let Some(window) = &self.window {
            fields.push(("window", window.label.clone()));
        }
        if let Some(q) = self.quantile {
            fields.push(("quantile", format!("{q}")));
        }
        if let Some(status) = self.status {
            fields.push(("status", status.as_str().to_string()));
        }
        if self.kind.windowed() {
            fields.push(("min_outcomes", self.min_outcomes.to_string()));
        }
        fields.push(("for", humantime::format_duration(self.hold).to_string()));
        fields.push(("severity", self.severity.clone()));
        fields
    }
}

/// Seconds for people: `0.25s`, `10m`, `1h 30m`.
pub fn format_seconds(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return format!("{seconds}s");
    }
    let millis = (seconds * 1000.0).round() as u64;
    humantime::format_duration(Duration::from_millis(millis)).to_string()
}
