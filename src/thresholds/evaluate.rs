//! The sidecar's own evaluation of the thresholds: on an interval, each workflow series' observed
//! value against its resolved threshold, with Prometheus's `for` semantics (pending until the limit
//! has been passed for the hold time, then breached).
//!
//! [`ThresholdEvaluator::observe`] copies what it needs out of the aggregation (under its lock);
//! [`ThresholdEvaluator::update`] moves the states and returns the transitions, outside the lock.

use super::{ThresholdKind, Thresholds};
use crate::aggregate::{Aggregator, OVERFLOW_WORKFLOW};
use crate::exporter::{escape_label, format_uuid};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

/// Which value of a state a gauge shows.
type GaugeOf = fn(&State) -> Option<f64>;

/// What one series showed for one kind at one evaluation.
#[derive(Debug, Clone)]
pub struct Observation {
    pub series: usize,
    pub kind: ThresholdKind,
    /// Index of the rule in force.
    pub rule: usize,
    pub limit: f64,
    /// `None`: nothing to observe (an empty window, no run RUNNING).
    pub observed: Option<f64>,
    /// Whether the limit is passed now (`observed > limit`, with enough outcomes).
    pub passed: bool,
}

/// A series' state for one kind.
#[derive(Debug, Clone)]
struct State {
    tenant: String,
    workflow: String,
    rule: usize,
    limit: f64,
    observed: Option<f64>,
    pending_since: Option<i64>,
    breached: bool,
}

/// What one evaluation saw, copied out of the aggregation.
#[derive(Debug, Default)]
pub struct Observed {
    pub observations: Vec<Observation>,
    /// The labels of every series observed.
    labels: HashMap<usize, (String, String)>,
    /// Every live series (evaluated or not).
    live: HashSet<usize>,
}

/// A move into or out of breach, to be logged once.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub tenant: String,
    pub workflow: String,
    pub kind: ThresholdKind,
    /// The rule's name (`default`, an override's name).
    pub rule: String,
    pub breached: bool,
    pub observed: Option<f64>,
    pub limit: f64,
    /// The condition in words.
    pub condition: String,
    /// Why it ended, when not because the value came back under the limit.
    pub cause: Option<&'static str>,
}

/// The thresholds in force and every series' state.
#[derive(Debug, Default)]
pub struct ThresholdEvaluator {
    thresholds: Arc<Thresholds>,
    interval: Duration,
    states: BTreeMap<(usize, ThresholdKind), State>,
    /// Per series: the rule in force per kind and the labels, resolved once per rules version.
    resolved: HashMap<usize, [Option<usize>; 5]>,
}

impl ThresholdEvaluator {
    pub fn new(thresholds: Thresholds, interval: Duration) -> ThresholdEvaluator {
        ThresholdEvaluator {
            thresholds: Arc::new(thresholds),
            interval,
            states: BTreeMap::new(),
            resolved: HashMap::new(),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// New thresholds (a reload). States whose kind still applies keep their pending time; the
    /// next [`ThresholdEvaluator::update`] ends the others.
    pub fn replace(&mut self, thresholds: Thresholds, interval: Duration) {
        self.thresholds = Arc::new(thresholds);
        self.interval = interval;
        self.resolved.clear();
    }

    /// What every live series shows now, for the kinds that apply to it. Holds the aggregation
    /// only to read it: run it under the lock, then [`ThresholdEvaluator::update`] outside.
    pub fn observe(&mut self, aggregator: &Aggregator, now: i64) -> Observed {
        let mut observations = Vec::new();
        let mut labels = HashMap::new();
        let live: HashSet<usize> = aggregator.series_with_ids().map(|(at, _)| at).collect();
        if self.thresholds.is_empty() {
            return Observed {
                observations,
                labels,
                live,
            };
        }
        let settings = aggregator.settings();
        // A scan of every tracked run: only when some rule judges the oldest running run.
        let judges_oldest = (self.thresholds.rules.iter()).any(|r| {
            matches!(
                r.setting(ThresholdKind::OldestRunningAge),
                Some(super::Setting::Active(_))
            )
        });
        let oldest_running = match judges_oldest {
            true => aggregator.lifecycle().oldest_running(),
            false => Vec::new(),
        };
        for (at, stats) in aggregator.series_with_ids() {
            if stats.workflow == OVERFLOW_WORKFLOW {
                continue;
            }
            let rules = *self.resolved.entry(at).or_insert_with(|| {
                (self.thresholds.for_series(stats.tenant, &stats.workflow)).map(|found| found.map(|(rule, _)| rule))
            });
            let mut any = false;
            for (kind, rule) in ThresholdKind::ALL.into_iter().zip(rules) {
                let Some(rule) = rule else { continue };
                let Some(super::Setting::Active(threshold)) = self.thresholds.rules[rule].setting(kind) else {
                    continue;
                };
                let window_nanos = threshold.window.as_ref().map_or(0, |w| w.nanos);
                let (observed, outcomes) = match kind {
                    ThresholdKind::FailureRatio => {
                        let position = (settings.failure_ratio_windows.iter()).position(|(_, n)| *n == window_nanos);
                        let (failed, total) = position
                            .and_then(|p| stats.failure_windows.get(p))
                            .map_or((0, 0), |w| w.counts(now));
                        ((total > 0).then(|| failed as f64 / total as f64), total)
                    }
                    ThresholdKind::DurationQuantile | ThresholdKind::QueueWaitQuantile => {
                        let windows = &settings.quantile_windows;
                        let position = windows.iter().position(|(_, n)| *n == window_nanos);
                        let window = match kind {
                            ThresholdKind::DurationQuantile => {
                                let status =
                                    (settings.quantile_statuses.iter()).position(|s| Some(*s) == threshold.status);
                                status
                                    .zip(position)
                                    .and_then(|(s, p)| stats.duration_windows.get(s * windows.len() + p))
                            }
                            _ => position.and_then(|p| stats.queue_windows.get(p)),
                        };
                        let quantile = [threshold.quantile.unwrap_or(1.0)];
                        match window.and_then(|w| w.summary(now, &quantile)) {
                            Some(summary) => (summary.quantiles.first().copied(), summary.count),
                            None => (None, 0),
                        }
                    }
                    ThresholdKind::OldestRunningAge => {
                        let age = (oldest_running.get(at).copied().flatten())
                            .map(|started| now.saturating_sub(started).max(0) as f64 / 1e9);
                        (age, u64::MAX)
                    }
                    ThresholdKind::RunsInFlight => {
                        let in_flight = aggregator.in_flight(at);
                        (Some((in_flight.queued + in_flight.running) as f64), u64::MAX)
                    }
                };
                let passed = observed.is_some_and(|v| v > threshold.max) && outcomes >= threshold.min_outcomes;
                observations.push(Observation {
                    series: at,
                    kind,
                    rule,
                    limit: threshold.max,
                    observed,
                    passed,
                });
                any = true;
            }
            if any {
                labels.insert(at, (format_uuid(stats.tenant), stats.workflow.clone()));
            }
        }
        // Ids are never reused: a dropped series' resolution is never needed again.
        self.resolved.retain(|at, _| live.contains(at));
        Observed {
            observations,
            labels,
            live,
        }
    }

    /// Moves every state by the observations made at `now`; series or kinds no longer observed end
    /// (and are logged if they were breached).
    pub fn update(&mut self, observed: Observed, now: i64) -> Vec<Transition> {
        let Observed {
            observations,
            labels,
            live,
        } = observed;
        let mut transitions = Vec::new();
        let mut previous = std::mem::take(&mut self.states);
        for observation in observations {
            let key = (observation.series, observation.kind);
            let Some((tenant, workflow)) = labels.get(&observation.series) else {
                continue;
            };
            let Some(super::Setting::Active(threshold)) =
                self.thresholds.rules[observation.rule].setting(observation.kind)
            else {
                continue;
            };
            let mut state = previous.remove(&key).unwrap_or_else(|| State {
                tenant: tenant.clone(),
                workflow: workflow.clone(),
                rule: observation.rule,
                limit: observation.limit,
                observed: None,
                pending_since: None,
                breached: false,
            });
            state.rule = observation.rule;
            state.limit = observation.limit;
            state.observed = observation.observed;
            let was = state.breached;
            if observation.passed {
                let since = *state.pending_since.get_or_insert(now);
                let hold = i64::try_from(threshold.hold.as_nanos()).unwrap_or(i64::MAX);
                state.breached = now.saturating_sub(since) >= hold;
            } else {
                state.pending_since = None;
                state.breached = false;
            }
            if was != state.breached {
                transitions.push(Transition {
                    tenant: state.tenant.clone(),
                    workflow: state.workflow.clone(),
                    kind: observation.kind,
                    rule: self.thresholds.rules[observation.rule].name.clone(),
                    breached: state.breached,
                    observed: state.observed,
                    limit: state.limit,
                    condition: threshold.condition(),
                    cause: None,
                });
            }
            self.states.insert(key, state);
        }
        // What was evaluated before and is not now: the series expired, or the threshold went.
        for ((series, kind), state) in previous {
            if state.breached {
                let expired = !live.contains(&series);
                transitions.push(Transition {
                    tenant: state.tenant,
                    workflow: state.workflow,
                    kind,
                    rule: (self.thresholds.rules.get(state.rule)).map_or_else(String::new, |r| r.name.clone()),
                    breached: false,
                    observed: state.observed,
                    limit: state.limit,
                    condition: String::new(),
                    cause: Some(match expired {
                        true => "the workflow series expired",
                        false => "the threshold no longer applies",
                    }),
                });
            }
        }
        transitions
    }

    /// Breached now: `(tenant, workflow, kind)`, for tests and `/metrics`.
    pub fn breached(&self) -> impl Iterator<Item = (&str, &str, ThresholdKind)> {
        (self.states.iter())
            .filter(|(_, s)| s.breached)
            .map(|((_, kind), s)| (s.tenant.as_str(), s.workflow.as_str(), *kind))
    }

    /// The breach, limit and observed gauges.
    pub fn render(&self, out: &mut String) {
        let mut rows: Vec<(&State, ThresholdKind)> = self.states.iter().map(|((_, kind), s)| (s, *kind)).collect();
        rows.sort_by(|a, b| (&a.0.tenant, &a.0.workflow, a.1).cmp(&(&b.0.tenant, &b.0.workflow, b.1)));
        let label = |s: &State, kind: ThresholdKind| {
            format!(
                "tenant_id=\"{}\",workflow=\"{}\",threshold=\"{}\"",
                escape_label(&s.tenant),
                escape_label(&s.workflow),
                kind.as_str()
            )
        };
        let families: [(&str, &str, GaugeOf); 3] = [
            (
                "hatchet_workflow_threshold_breached",
                "1 while the workflow is beyond its threshold (for at least the threshold's `for`), else 0; evaluated every thresholds.evaluation_interval.",
                |s| Some(if s.breached { 1.0 } else { 0.0 }),
            ),
            (
                "hatchet_workflow_threshold_limit",
                "The threshold's max in force for the workflow (a ratio, seconds, or runs).",
                |s| Some(s.limit),
            ),
            (
                "hatchet_workflow_threshold_observed",
                "The value compared with the limit at the last evaluation; absent while there is nothing to observe.",
                |s| s.observed,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (state, kind) in &rows {
                if let Some(v) = value(state) {
                    let _ = writeln!(out, "{name}{{{}}} {v}", label(state, *kind));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thresholds::{Setting, Threshold, ThresholdSet, ThresholdSpec, ThresholdsFile, TrackedWindows};

    fn evaluator(hold: &str) -> ThresholdEvaluator {
        let file = ThresholdsFile {
            default: ThresholdSet {
                runs_in_flight: Some(ThresholdSpec {
                    max: Some(crate::thresholds::Limit::Number(2.0)),
                    hold: Some(hold.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            overrides: Vec::new(),
        };
        let tracked = TrackedWindows {
            failure_ratio_windows: vec![("5m".into(), 300_000_000_000)],
            quantile_windows: vec![("5m".into(), 300_000_000_000)],
            quantile_statuses: vec![crate::model::V1TaskStatus::Completed],
            queue_wait_quantiles: false,
        };
        let thresholds = Thresholds::from_file(&file, "", &tracked).unwrap();
        assert!(matches!(
            thresholds.rules[0].setting(ThresholdKind::RunsInFlight),
            Some(Setting::Active(Threshold { max, .. })) if *max == 2.0
        ));
        ThresholdEvaluator::new(thresholds, Duration::from_secs(1))
    }

    fn seen(value: f64) -> Observed {
        Observed {
            observations: vec![Observation {
                series: 7,
                kind: ThresholdKind::RunsInFlight,
                rule: 0,
                limit: 2.0,
                observed: Some(value),
                passed: value > 2.0,
            }],
            labels: HashMap::from([(7, ("t".to_string(), "w".to_string()))]),
            live: HashSet::from([7]),
        }
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_hold_delays_the_breach_and_each_transition_is_reported_once() {
        let mut e = evaluator("10s");
        assert!(e.update(seen(5.0), 0).is_empty(), "pending, not breached");
        assert!(e.update(seen(5.0), 9 * S).is_empty());
        let t = e.update(seen(5.0), 10 * S);
        assert_eq!(t.len(), 1);
        assert!(t[0].breached);
        assert_eq!(t[0].observed, Some(5.0));
        assert!(e.update(seen(6.0), 11 * S).is_empty(), "still breached: no new log");
        assert_eq!(e.breached().count(), 1);
        let t = e.update(seen(1.0), 12 * S);
        assert_eq!(t.len(), 1);
        assert!(!t[0].breached);
        assert_eq!(e.breached().count(), 0);
        // Passing again starts a new hold.
        assert!(e.update(seen(5.0), 13 * S).is_empty());
        assert!(e.update(seen(5.0), 22 * S).is_empty());
        assert_eq!(e.update(seen(5.0), 23 * S).len(), 1);
    }

    #[test]
    fn a_dip_under_the_limit_restarts_the_hold() {
        let mut e = evaluator("10s");
        e.update(seen(5.0), 0);
        e.update(seen(1.0), 5 * S);
        assert!(e.update(seen(5.0), 10 * S).is_empty());
        assert!(e.update(seen(5.0), 19 * S).is_empty());
        assert_eq!(e.update(seen(5.0), 20 * S).len(), 1);
    }

    #[test]
    fn without_a_hold_the_first_pass_breaches_and_a_vanished_series_ends_its_breach() {
        let mut e = evaluator("0s");
        assert_eq!(e.update(seen(3.0), 0).len(), 1);
        let mut out = String::new();
        e.render(&mut out);
        assert!(out.contains(
            "hatchet_workflow_threshold_breached{tenant_id=\"t\",workflow=\"w\",threshold=\"runs_in_flight\"} 1"
        ));
        assert!(out.contains(
            "hatchet_workflow_threshold_limit{tenant_id=\"t\",workflow=\"w\",threshold=\"runs_in_flight\"} 2"
        ));
        assert!(out.contains(
            "hatchet_workflow_threshold_observed{tenant_id=\"t\",workflow=\"w\",threshold=\"runs_in_flight\"} 3"
        ));
        let t = e.update(Observed::default(), S);
        assert_eq!(t.len(), 1);
        assert!(!t[0].breached);
        assert_eq!(t[0].cause, Some("the workflow series expired"));
        let mut out = String::new();
        e.render(&mut out);
        assert!(!out.contains("workflow=\"w\""));
    }
}
