//! The thresholds validated into rules (the default, then each override), each field at the key
//! that set it; and which rule applies to a workflow for each kind.

use super::glob::Glob;
use super::spec::{Limit, ThresholdSet, ThresholdSpec, ThresholdsFile};
use super::ThresholdKind;
use crate::ids::Uuid128;
use crate::model::V1TaskStatus;
use crate::setting::{nanos, parse_duration, ConfigError};
use std::fmt::Write;
use std::time::Duration;

/// What the thresholds need to know of the `[metrics]` section: the windows and statuses tracked.
#[derive(Debug, Clone)]
pub struct TrackedWindows {
    pub failure_ratio_windows: Vec<(String, i64)>,
    pub quantile_windows: Vec<(String, i64)>,
    pub quantile_statuses: Vec<V1TaskStatus>,
    /// Whether queue-wait quantiles are tracked (`metrics.queue_wait_quantiles`).
    pub queue_wait_quantiles: bool,
}

/// A window of a threshold: its label (one of the configured windows) and length.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub label: String,
    pub nanos: i64,
}

/// One threshold, resolved: every field known and valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub kind: ThresholdKind,
    /// The highest healthy value, in seconds for durations.
    pub max: f64,
    pub window: Option<Window>,
    pub quantile: Option<f64>,
    /// `duration_quantile`: whose durations.
    pub status: Option<V1TaskStatus>,
    pub min_outcomes: u64,
    pub hold: Duration,
    pub severity: String,
}

/// What one rule (the default or an override) says about one kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Active(Threshold),
    Disabled,
}

/// The default (index 0) or an override, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `"default"`, or the override's `name`, else `"overrides[N]"`.
    pub name: String,
    /// Where it is in the config (`thresholds.overrides[2]`), for messages.
    pub key: String,
    pub tenant: Option<Uuid128>,
    /// `None`: every workflow.
    pub workflow: Option<Glob>,
    /// Per kind (in [`ThresholdKind::ALL`] order): `None` when this rule does not set it.
    pub settings: [Option<Setting>; 5],
    /// As written, for `explain`.
    pub written: ThresholdSet,
}

impl Rule {
    pub fn is_default(&self) -> bool {
        self.workflow.is_none() && self.tenant.is_none()
    }

    pub fn setting(&self, kind: ThresholdKind) -> Option<&Setting> {
        self.settings[kind.index()].as_ref()
    }

    /// Whether this rule's match covers the workflow (`tenant` `None`: no tenant given, so only
    /// rules for every tenant match).
    pub fn matches(&self, tenant: Option<Uuid128>, workflow: &str) -> bool {
        let tenant_ok = match self.tenant {
            None => true,
            Some(wanted) => tenant == Some(wanted),
        };
        tenant_ok && self.workflow.as_ref().is_none_or(|g| g.matches(workflow))
    }

    /// How specific the match is: an exact name beats a glob, then a tenant beats none, then more
    /// literal characters beat fewer. Equal precedence: the earlier override wins.
    pub fn precedence(&self) -> (bool, bool, usize) {
        match &self.workflow {
            Some(glob) => (glob.is_exact(), self.tenant.is_some(), glob.literal_chars()),
            None => (false, self.tenant.is_some(), 0),
        }
    }

    /// The match, in words: `workflow "billing-*", tenant 0b7e...`.
    pub fn describe_match(&self) -> String {
        let mut text = match &self.workflow {
            Some(glob) if glob.is_exact() => format!("workflow {:?}", glob.as_str()),
            Some(glob) => format!("workflow glob {:?}", glob.as_str()),
            None => "every workflow".to_string(),
        };
        match self.tenant {
            Some(tenant) => {
                let _ = write!(text, " of tenant {}", tenant);
            }
            None => text.push_str(" of every tenant"),
        }
        text
    }
}

/// Every threshold rule, validated, in config order (the default first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Thresholds {
    pub rules: Vec<Rule>,
}

/// The rule that applies to a workflow for one kind, and the rules it won over.
#[derive(Debug)]
pub struct Resolution<'a> {
    /// Index in [`Thresholds::rules`] of the winner, `None` when no rule sets this kind.
    pub winner: Option<usize>,
    pub threshold: Option<&'a Threshold>,
    /// Matching rules that set this kind but lost, most specific first.
    pub outranked: Vec<usize>,
}

impl Thresholds {
    /// Validates the thresholds as written. `key_prefix` is `"thresholds."` in the main config and
    /// empty in a file of their own. The error names the key at fault.
    pub fn from_file(
        file: &ThresholdsFile,
        key_prefix: &str,
        tracked: &TrackedWindows,
    ) -> Result<Thresholds, ConfigError> {
        let default_key = format!("{key_prefix}default");
        let mut rules = vec![Rule {
            name: "default".into(),
            key: default_key.clone(),
            tenant: None,
            workflow: None,
            settings: Default::default(),
            written: file.default.clone(),
        }];
        for kind in ThresholdKind::ALL {
            if let Some(spec) = file.default.get(kind) {
                let setting = resolve_spec(kind, spec, None, &format!("{default_key}.{kind}"), "", tracked)?;
                rules[0].settings[kind.index()] = Some(setting);
            }
        }
        for (i, spec) in file.overrides.iter().enumerate() {
            let key = format!("{key_prefix}overrides[{i}]");
            let tenant = match &spec.tenant_id {
                None => None,
                Some(text) => Some(Uuid128::parse(text).ok_or_else(|| {
                    ConfigError::at(
                        format!("{key}.tenant_id"),
                        format!("{text:?} is not a tenant id (a UUID), so it can never match"),
                    )
                })?),
            };
            let workflow = match &spec.workflow {
                None => None,
                Some(text) => {
                    let glob = Glob::parse(text).map_err(|why| ConfigError::at(format!("{key}.workflow"), why))?;
                    if glob.matches(crate::aggregate::OVERFLOW_WORKFLOW) && glob.is_exact() {
                        return Err(ConfigError::at(
                            format!("{key}.workflow"),
                            "the overflow series is never evaluated, so this can never match",
                        ));
                    }
                    Some(glob)
                }
            };
            if workflow.is_none() && tenant.is_none() {
                return Err(ConfigError::at(
                    key,
                    "an override needs `workflow` or `tenant_id` (thresholds for every workflow go in `default`)",
                ));
            }
            let name = match &spec.name {
                Some(name) if name.trim().is_empty() => {
                    return Err(ConfigError::at(format!("{key}.name"), "must not be empty"));
                }
                Some(name) => name.clone(),
                None => format!("overrides[{i}]"),
            };
            // "default" is the default's: the alerts' threshold_rule label must tell rules apart.
            if let Some(earlier) = rules.iter().find(|r| r.name == name) {
                return Err(ConfigError::at(
                    format!("{key}.name"),
                    format!("{name:?} is already the name of {}", earlier.key),
                ));
            }
            let same_glob = |other: &Option<Glob>| match (other, &workflow) {
                (Some(a), Some(b)) => a.same_match(b),
                (None, None) => true,
                _ => false,
            };
            if let Some(earlier) = (rules.iter().skip(1)).find(|r| r.tenant == tenant && same_glob(&r.workflow)) {
                return Err(ConfigError::at(
                    key,
                    format!(
                        "matches exactly what {} matches, so one of them could never apply: merge them",
                        earlier.key
                    ),
                ));
            }
            let written = spec.set();
            let mut settings: [Option<Setting>; 5] = Default::default();
            for kind in ThresholdKind::ALL {
                if let Some(own) = written.get(kind) {
                    let setting = resolve_spec(
                        kind,
                        own,
                        file.default.get(kind),
                        &format!("{key}.{kind}"),
                        &format!("{default_key}.{kind}"),
                        tracked,
                    )?;
                    settings[kind.index()] = Some(setting);
                }
            }
            if settings.iter().all(Option::is_none) {
                return Err(ConfigError::at(
                    key,
                    format!(
                        "sets no threshold: add one of {}",
                        ThresholdKind::ALL.map(ThresholdKind::as_str).join(", ")
                    ),
                ));
            }
            rules.push(Rule {
                name,
                key,
                tenant,
                workflow,
                settings,
                written,
            });
        }
        Ok(Thresholds { rules })
    }

    /// No threshold at all: nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.rules.iter().all(|r| r.settings.iter().all(Option::is_none))
    }

    /// Which rule applies to `workflow` (of `tenant`, when known) for `kind`.
    pub fn resolve(&self, kind: ThresholdKind, tenant: Option<Uuid128>, workflow: &str) -> Resolution<'_> {
        let mut candidates: Vec<usize> = (1..self.rules.len())
            .filter(|&i| self.rules[i].setting(kind).is_some() && self.rules[i].matches(tenant, workflow))
            .collect();
        // Most specific first; the sort is stable, so the earlier override wins a tie.
        candidates.sort_by_key(|&i| std::cmp::Reverse(self.rules[i].precedence()));
        if self.rules.first().is_some_and(|d| d.setting(kind).is_some()) {
            candidates.push(0);
        }
        let winner = candidates.first().copied();
        let threshold = winner.and_then(|i| match self.rules[i].setting(kind) {
            Some(Setting::Active(threshold)) => Some(threshold),
            _ => None,
        });
        Resolution {
            winner,
            threshold,
            outranked: candidates.into_iter().skip(1).collect(),
        }
    }

    /// Every kind's threshold for one workflow series: `(rule index, threshold)` per kind.
    pub fn for_series(&self, tenant: Uuid128, workflow: &str) -> [Option<(usize, &Threshold)>; 5] {
        ThresholdKind::ALL.map(|kind| {
            let resolution = self.resolve(kind, Some(tenant), workflow);
            resolution.winner.zip(resolution.threshold)
        })
    }
}

const DEFAULT_QUANTILE: f64 = 0.95;
const DEFAULT_MIN_OUTCOMES: u64 = 10;
const DEFAULT_SEVERITY: &str = "warning";

/// One kind of one rule: `own` merged over `default` (for an override), validated field by field
/// at the key that set it.
fn resolve_spec(
    kind: ThresholdKind,
    own: &ThresholdSpec,
    default: Option<&ThresholdSpec>,
    key: &str,
    default_key: &str,
    tracked: &TrackedWindows,
) -> Result<Setting, ConfigError> {
    let fail = |field: &str, why: String| Err(ConfigError::at(format!("{key}.{field}"), why));
    // Fields this kind does not have are refused where they are written.
    let unused: &[(&str, bool)] = &[
        ("window", !kind.windowed()),
        ("min_outcomes", !kind.windowed()),
        ("quantile", !kind.quantiled()),
        ("status", kind != ThresholdKind::DurationQuantile),
    ];
    for (field, refused) in unused {
        if *refused && own.has(field) {
            return fail(field, format!("{kind} has no `{field}`"));
        }
    }
    // Each field: its own value, else the default's (validated at the default's key), else built in.
    let pick = |get: fn(&ThresholdSpec) -> bool| -> (Option<&ThresholdSpec>, String) {
        if get(own) {
            (Some(own), key.to_string())
        } else if let Some(d) = default.filter(|d| get(d)) {
            (Some(d), default_key.to_string())
        } else {
            (None, key.to_string())
        }
    };
    // `enabled` is inherited like every other field: a default switched off stays off in an
    // override that does not switch it on.
    let enabled = own.enabled.or(default.and_then(|d| d.enabled)).unwrap_or(true);
    let (from, at) = pick(|s| s.max.is_some());
    let max = match from.and_then(|s| s.max.as_ref()) {
        None if !enabled => None,
        None => {
            let inherit = if default.is_some() || default_key.is_empty() {
                String::new()
            } else {
                format!(" (nor in {default_key})")
            };
            return Err(ConfigError::at(format!("{key}.max"), format!("is required{inherit}")));
        }
        Some(limit) => Some(limit_value(kind, limit).map_err(|why| ConfigError::at(format!("{at}.max"), why))?),
    };
    let (from, at) = pick(|s| s.window.is_some());
    let window = match kind.windowed() {
        false => None,
        true => {
            let tracked_windows = match kind {
                ThresholdKind::FailureRatio => (&tracked.failure_ratio_windows, "metrics.failure_ratio_windows"),
                _ => (&tracked.quantile_windows, "metrics.quantile_windows"),
            };
            Some(match from.and_then(|s| s.window.as_ref()) {
                None => tracked_windows.0.first().map(window_of).unwrap_or(Window {
                    label: String::new(),
                    nanos: 0,
                }),
                Some(text) => {
                    find_window(text, tracked_windows).map_err(|why| ConfigError::at(format!("{at}.window"), why))?
                }
            })
        }
    };
    let (from, at) = pick(|s| s.quantile.is_some());
    let quantile = match kind.quantiled() {
        false => None,
        true => {
            let q = from.and_then(|s| s.quantile).unwrap_or(DEFAULT_QUANTILE);
            if !(0.0..=1.0).contains(&q) {
                return Err(ConfigError::at(
                    format!("{at}.quantile"),
                    format!("{q} is not a quantile between 0 and 1"),
                ));
            }
            Some(q)
        }
    };
    let (from, at) = pick(|s| s.status.is_some());
    let status = match kind {
        ThresholdKind::DurationQuantile => {
            let text = from.and_then(|s| s.status.as_deref()).unwrap_or("COMPLETED");
            let status = V1TaskStatus::from_wire(text)
                .filter(|s| tracked.quantile_statuses.contains(s))
                .ok_or_else(|| {
                    let listed: Vec<&str> = tracked.quantile_statuses.iter().map(|s| s.as_str()).collect();
                    ConfigError::at(
                        format!("{at}.status"),
                        format!("{text:?} is not one of metrics.quantile_statuses {listed:?}, whose quantiles are the only ones tracked"),
                    )
                })?;
            Some(status)
        }
        _ => None,
    };
    if kind == ThresholdKind::QueueWaitQuantile && !tracked.queue_wait_quantiles && enabled {
        return Err(ConfigError::at(
            key,
            "queue-wait quantiles are not tracked: set metrics.queue_wait_quantiles = true",
        ));
    }
    let min_outcomes = pick(|s| s.min_outcomes.is_some())
        .0
        .and_then(|s| s.min_outcomes)
        .unwrap_or(DEFAULT_MIN_OUTCOMES);
    let (from, at) = pick(|s| s.hold.is_some());
    let hold = match from.and_then(|s| s.hold.as_deref()) {
        None => Duration::ZERO,
        Some(text) => parse_duration(text).map_err(|why| ConfigError::at(format!("{at}.for"), why))?,
    };
    let (from, at) = pick(|s| s.severity.is_some());
    let severity = from
        .and_then(|s| s.severity.clone())
        .unwrap_or_else(|| DEFAULT_SEVERITY.into());
    if severity.trim().is_empty() {
        return Err(ConfigError::at(format!("{at}.severity"), "must not be empty"));
    }
    match (enabled, max) {
        (false, _) | (_, None) => Ok(Setting::Disabled),
        (true, Some(max)) => Ok(Setting::Active(Threshold {
            kind,
            max,
            window,
            quantile,
            status,
            min_outcomes,
            hold,
            severity,
        })),
    }
}

fn window_of((label, nanos): &(String, i64)) -> Window {
    Window {
        label: label.clone(),
        nanos: *nanos,
    }
}

fn find_window(text: &str, (windows, key): (&Vec<(String, i64)>, &str)) -> Result<Window, String> {
    let length = nanos(parse_duration(text)?);
    let labels: Vec<&str> = windows.iter().map(|(l, _)| l.as_str()).collect();
    windows
        .iter()
        .find(|(_, n)| *n == length)
        .map(window_of)
        .ok_or_else(|| format!("{text:?} is not one of {key} {labels:?}: only those windows are tracked"))
}

/// `max` in the kind's unit: a ratio, seconds, or a count.
fn limit_value(kind: ThresholdKind, limit: &Limit) -> Result<f64, String> {
    match (kind, limit) {
        (ThresholdKind::FailureRatio, Limit::Number(ratio)) => match (0.0..=1.0).contains(ratio) {
            true => Ok(*ratio),
            false => Err(format!("{ratio} is not a ratio between 0 and 1 (0.05 is 5%)")),
        },
        (ThresholdKind::FailureRatio, Limit::Text(text)) => Err(format!("{text:?} is not a ratio like 0.05")),
        (ThresholdKind::RunsInFlight, Limit::Number(count)) => match *count >= 0.0 && count.fract() == 0.0 {
            true => Ok(*count),
            false => Err(format!("{count} is not a number of runs (a whole number, 0 or more)")),
        },
        (ThresholdKind::RunsInFlight, Limit::Text(text)) => Err(format!("{text:?} is not a number of runs")),
        (_, Limit::Number(seconds)) if !seconds.is_finite() => Err(format!("{seconds} is not a number of seconds")),
        (_, Limit::Number(seconds)) => match *seconds >= 0.0 {
            true => Ok(*seconds),
            false => Err(format!("{seconds} is negative; a duration cannot be")),
        },
        (_, Limit::Text(text)) => parse_duration(text).map(|d| d.as_secs_f64()),
    }
}
