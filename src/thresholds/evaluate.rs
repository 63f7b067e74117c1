//! The sidecar's own evaluation of the thresholds: on an interval, each workflow series' observed
//! value against its resolved threshold, with Prometheus's `for` semantics (pending until the limit
//! has been passed for the hold time, then breached).
//!
//! [`ThresholdEvaluator::observe`] copies what it needs out of the aggregation (under its lock);
//! [`ThresholdEvaluator::update`] moves the states and returns the transitions, outside the lock.

use super::{ThresholdKind, Thresholds};
use crate::aggregate::{tenant_label, Aggregator, OVERFLOW_WORKFLOW};
use crate::ids::SeriesId;
use crate::setting::nanos;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// What one series showed for one kind at one evaluation.
#[derive(Debug, Clone)]
pub struct Observation {
    pub series: SeriesId,
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
    labels: HashMap<SeriesId, (String, String)>,
    /// Every live series (evaluated or not).
    live: HashSet<SeriesId>,
}

/// One series' state for one kind, as numbers: the exporter renders them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdGauge<'a> {
    pub tenant: &'a str,
    pub workflow: &'a str,
    pub kind: ThresholdKind,
    pub breached: bool,
    pub limit: f64,
    /// `None`: nothing to observe at the last evaluation.
    pub observed: Option<f64>,
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
    states: BTreeMap<(SeriesId, ThresholdKind), State>,
    /// Per series: the rule in force per kind and the labels, resolved once per rules version.
    resolved: HashMap<SeriesId, [Option<usize>; 5]>,
    /// The next update takes a limit passed by a series it has no state for as passed for `for`
    /// already: see [`ThresholdEvaluator::assume_held_before`].
    assume_held: bool,
}

impl ThresholdEvaluator {
    pub fn new(thresholds: Thresholds, interval: Duration) -> ThresholdEvaluator {
        ThresholdEvaluator {
            thresholds: Arc::new(thresholds),
            interval,
            states: BTreeMap::new(),
            resolved: HashMap::new(),
            assume_held: false,
        }
    }

    /// The state was just rebuilt from the topic (a restart): a limit that the next update finds
    /// passed, for a series it has no state for, held before the restart as far as can be told,
    /// so it counts as breached at once instead of waiting out its `for` again. A breach that was
    /// firing stays firing across a restart; the price is that one that began less than `for`
    /// before the restart fires early.
    pub fn assume_held_before(&mut self) {
        self.assume_held = true;
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
        let live: HashSet<SeriesId> = aggregator.series_with_ids().map(|(at, _)| at).collect();
        if self.thresholds.is_empty() {
            return Observed {
                observations,
                labels,
                live,
            };
        }
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
                        let (failed, total) =
                            (aggregator.failure_window(stats, window_nanos)).map_or((0, 0), |w| w.counts(now));
                        ((total > 0).then(|| failed as f64 / total as f64), total)
                    }
                    ThresholdKind::DurationQuantile | ThresholdKind::QueueWaitQuantile => {
                        let window = match kind {
                            ThresholdKind::DurationQuantile => threshold
                                .status
                                .and_then(|status| aggregator.duration_window(stats, status, window_nanos)),
                            _ => aggregator.queue_window(stats, window_nanos),
                        };
                        let quantile = [threshold.quantile.unwrap_or(1.0)];
                        match window.and_then(|w| w.summary(now, &quantile)) {
                            Some(summary) => (summary.quantiles.first().copied(), summary.count),
                            None => (None, 0),
                        }
                    }
                    ThresholdKind::OldestRunningAge => {
                        let age = (oldest_running.get(at.index()).copied().flatten())
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
                labels.insert(at, (tenant_label(stats.tenant), stats.workflow.clone()));
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
            let hold = nanos(threshold.hold);
            let mut state = previous.remove(&key).unwrap_or_else(|| State {
                tenant: tenant.clone(),
                workflow: workflow.clone(),
                rule: observation.rule,
                limit: observation.limit,
                observed: None,
                pending_since: self.assume_held.then(|| now.saturating_sub(hold)),
                breached: false,
            });
            state.rule = observation.rule;
            state.limit = observation.limit;
            state.observed = observation.observed;
            let was = state.breached;
            if observation.passed {
                let since = *state.pending_since.get_or_insert(now);
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
        self.assume_held = false;
        transitions
    }

    /// Breached now: `(tenant, workflow, kind)`, for tests and `/metrics`.
    pub fn breached(&self) -> impl Iterator<Item = (&str, &str, ThresholdKind)> {
        (self.states.iter())
            .filter(|(_, s)| s.breached)
            .map(|((_, kind), s)| (s.tenant.as_str(), s.workflow.as_str(), *kind))
    }

    /// Every state's numbers, by tenant, workflow and kind: what `/metrics` shows.
    pub fn gauges(&self) -> Vec<ThresholdGauge<'_>> {
        let mut gauges: Vec<ThresholdGauge<'_>> = (self.states.iter())
            .map(|((_, kind), s)| ThresholdGauge {
                tenant: &s.tenant,
                workflow: &s.workflow,
                kind: *kind,
                breached: s.breached,
                limit: s.limit,
                observed: s.observed,
            })
            .collect();
        gauges.sort_by(|a, b| (a.tenant, a.workflow, a.kind).cmp(&(b.tenant, b.workflow, b.kind)));
        gauges
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
                series: SeriesId(7),
                kind: ThresholdKind::RunsInFlight,
                rule: 0,
                limit: 2.0,
                observed: Some(value),
                passed: value > 2.0,
            }],
            labels: HashMap::from([(SeriesId(7), ("t".to_string(), "w".to_string()))]),
            live: HashSet::from([SeriesId(7)]),
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
    fn after_a_restore_a_limit_passed_counts_as_held_once() {
        let mut e = evaluator("10s");
        e.assume_held_before();
        let t = e.update(seen(5.0), 100 * S);
        assert!(
            t.len() == 1 && t[0].breached,
            "breached at once: it held before the restart"
        );
        // Only that evaluation: a breach that ends and comes back waits out its hold again.
        e.update(seen(1.0), 101 * S);
        assert!(e.update(seen(5.0), 102 * S).is_empty());
        let mut e = evaluator("10s");
        e.assume_held_before();
        assert!(e.update(seen(1.0), 0).is_empty(), "under the limit: nothing assumed");
        assert!(e.update(seen(5.0), S).is_empty(), "the flag is spent");
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
        assert_eq!(
            e.gauges(),
            [ThresholdGauge {
                tenant: "t",
                workflow: "w",
                kind: ThresholdKind::RunsInFlight,
                breached: true,
                limit: 2.0,
                observed: Some(3.0),
            }]
        );
        let t = e.update(Observed::default(), S);
        assert_eq!(t.len(), 1);
        assert!(!t[0].breached);
        assert_eq!(t[0].cause, Some("the workflow series expired"));
        assert!(e.gauges().is_empty(), "a vanished series leaves the page");
    }
}
