//! Run lifecycle and per-workflow statistics: pure, synchronous, no I/O.
//!
//! [`Aggregator::apply`] takes one validated update and decides what it means: a new outcome
//! (counted once, with its duration and its place in the failure-ratio windows), a duplicate of an
//! outcome already counted, or a run still in progress. Everything here is plain data so that it
//! can be unit-tested and benchmarked without Kafka or HTTP; the exporter reads it to render.

pub mod failure_window;
pub mod label_value;
pub mod lifecycle;
pub mod metadata_labels;
pub mod native_histogram;
pub mod outcome_memory;
pub mod partitioned;
pub mod quantile_window;

use crate::decode::RunUpdate;
use crate::ids::{Partition, Positions, SeriesId, Uuid128};
use crate::model::{Timestamp, V1TaskStatus, V1WorkflowRun};
use failure_window::FailureRatioWindow;
use label_value::AlterationCounts;
use lifecycle::{InFlight, LifecycleLimits, RunLifecycle};
use metadata_labels::{MetadataKey, MetadataLabels, ALL_OVERFLOW};
use native_histogram::{NativeBuckets, NativeSettings};
use outcome_memory::{OutcomeKey, OutcomeMemory, OutcomeMemoryLimits, NOT_FINISHED};
use partitioned::PartitionedWindow;
use quantile_window::QuantileWindow;
use rustc_hash::FxHashMap;
use std::collections::HashMap;

/// Durations from Hatchet's `duration` field are trusted up to a year; its saturated
/// `±9223372036854` values (a missing timestamp on one side) never reach a histogram.
const MAX_TRUSTED_DURATION_MS: i64 = 31_536_000_000;

/// The statuses that are outcomes, in the order their statistics are stored.
pub const OUTCOME_STATUSES: [V1TaskStatus; 3] =
    [V1TaskStatus::Completed, V1TaskStatus::Failed, V1TaskStatus::Cancelled];

/// What the aggregation needs from the config.
#[derive(Debug, Clone)]
pub struct AggregateSettings {
    /// Upper bounds of the duration histogram, strictly increasing, in seconds.
    pub duration_buckets_seconds: Vec<f64>,
    /// Upper bounds of the queue-wait histogram, strictly increasing, in seconds.
    pub queue_buckets_seconds: Vec<f64>,
    /// Failure-ratio window lengths with their label (`"5m"`), in nanoseconds.
    pub failure_ratio_windows: Vec<(String, i64)>,
    /// Quantiles (0..=1, ascending) of the windowed duration summaries.
    pub quantiles: Vec<f64>,
    /// Windows of the duration summaries, with their label, in nanoseconds.
    pub quantile_windows: Vec<(String, i64)>,
    /// Outcome statuses that get windowed duration summaries.
    pub quantile_statuses: Vec<V1TaskStatus>,
    /// Whether queue waits get windowed summaries too (over `quantile_windows`, all outcomes).
    pub queue_wait_quantiles: bool,
    /// Names that override the name derived from `displayName`.
    pub workflow_names: HashMap<Uuid128, String>,
    pub outcome_memory: OutcomeMemoryLimits,
    /// Limits of the per-run lifecycle tracking (in flight, retries, replays).
    pub lifecycle: LifecycleLimits,
    /// At most this many workflow series (all tenants together); new workflows beyond it are
    /// folded into their tenant's [`OVERFLOW_WORKFLOW`] series.
    pub max_workflows: usize,
    /// A series without any update for this long is dropped (nanoseconds).
    pub idle_expiry_nanos: i64,
    /// `additionalMetadata` keys that become labels of the outcome counter and duration histogram.
    pub metadata_labels: Vec<String>,
    /// Distinct values per metadata label before new ones fold into `__overflow__`.
    pub metadata_label_max_values: usize,
    /// Label values from messages (workflow names, metadata values) longer than this are cut
    /// (see [`label_value`]).
    pub max_label_value_bytes: usize,
    /// How far from the wall clock a timestamp may lie and still be believed.
    pub timestamps: TimestampLimits,
    /// Native buckets of the duration and queue-wait histograms; `None`: off.
    pub native_histograms: Option<NativeSettings>,
    /// Each duration bucket keeps the run id of its latest observation (an exemplar).
    pub exemplars: bool,
}

/// How far from the wall clock a message's timestamp may lie before it is taken as absent (and
/// counted): a `finishedAt` of 9999-12-31 or a `startedAt` of 0000-01-01 must not put
/// thousands of years into a histogram's `_sum` or pin a windowed quantile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampLimits {
    /// Later than the wall clock by more than this: not believed (live and replay).
    pub max_ahead_nanos: i64,
    /// Earlier than the wall clock by more than this: not believed (live only: a replayed file
    /// may be old).
    pub max_age_nanos: i64,
}

impl TimestampLimits {
    /// Every timestamp believed (for tests on a clock of their own).
    pub const UNLIMITED: TimestampLimits = TimestampLimits {
        max_ahead_nanos: i64::MAX,
        max_age_nanos: i64::MAX,
    };

    fn believes(&self, t: Timestamp, wall_nanos: i64, clock: Clock) -> bool {
        // Beyond what i64 nanoseconds hold (before 1677, after 2262): never plausible.
        let Some(nanos) = t.timestamp_nanos_opt() else {
            return false;
        };
        nanos <= wall_nanos.saturating_add(self.max_ahead_nanos)
            && (clock == Clock::Replay || nanos >= wall_nanos.saturating_sub(self.max_age_nanos))
    }
}

/// Values not believed, by field: the timestamps [`TimestampLimits`] refuses, and durations
/// from `startedAt` to `finishedAt` longer than a year.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImplausibleCounts {
    pub started_at: u64,
    pub finished_at: u64,
    pub created_at: u64,
    pub duration: u64,
}

impl ImplausibleCounts {
    /// `(field, count)` with the field as the message spells it.
    pub fn by_field(&self) -> [(&'static str, u64); 4] {
        [
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
            ("createdAt", self.created_at),
            ("duration", self.duration),
        ]
    }
}

/// The timestamps of one update that the aggregation uses: absent when the message has none, or
/// when [`TimestampLimits`] does not believe it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunTimes {
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    /// `createdAt`, else `metadata.createdAt`.
    pub created: Option<Timestamp>,
    /// Hatchet's own `duration` (ms), used when a timestamp is absent.
    pub duration_ms: Option<i64>,
}

impl RunTimes {
    /// The run's timestamps as sent.
    pub fn of(run: &V1WorkflowRun<'_>) -> RunTimes {
        RunTimes {
            started: run.started_at,
            finished: run.finished_at,
            created: Some(run.created_at.unwrap_or(run.metadata.created_at)),
            duration_ms: run.duration,
        }
    }
}

/// The `workflow` label of the series that takes in workflows beyond `max_workflows`.
pub const OVERFLOW_WORKFLOW: &str = "__overflow__";

/// The tenant of updates beyond `max_workflows` whose tenant has no series yet (a flood of tenant
/// ids must not create overflow series without end); shown as `tenant_id="__overflow__"`.
pub const OVERFLOW_TENANT: Uuid128 = Uuid128(u128::MAX);

/// A tenant as the `tenant_id` label: its canonical UUID, or `__overflow__` for
/// [`OVERFLOW_TENANT`].
pub fn tenant_label(tenant: Uuid128) -> String {
    match tenant == OVERFLOW_TENANT {
        true => OVERFLOW_WORKFLOW.to_string(),
        false => tenant.to_string(),
    }
}

/// How often (on the aggregator's clock) idle series are looked for.
const IDLE_SWEEP_NANOS: i64 = 60_000_000_000;

/// Which clock the windows and the outcome memory run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The service: the wall clock. A `finishedAt` later than the wall clock (clock skew, a bogus
    /// date) is placed at the wall clock, so it cannot claim a window slot ahead of time.
    Wall,
    /// Replaying a file: time is the latest `finishedAt` seen so far; the wall clock plays no part.
    Replay,
}

/// Whether an update is counted, or only rebuilds the state a restart or a rebalance lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Counted: counters, histograms and self-metrics, and the state below.
    Live,
    /// An update some consumer already counted (the history before the group's committed offset,
    /// read again when a partition is taken over): it rebuilds the run lifecycle, the outcome
    /// memory and the windows, and counts nothing, or the counters would show a false burst.
    Restore,
}

/// What one update meant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Applied {
    /// A new outcome was counted; `duration_seconds` when one could be trusted.
    Outcome {
        status: V1TaskStatus,
        duration_seconds: Option<f64>,
    },
    /// This outcome was already counted (a redelivery or a stale copy).
    Duplicate,
    /// `QUEUED` or `RUNNING`: nothing to count.
    InProgress,
}

/// Observations of one histogram: per-bucket counts (the last is `+Inf`), their sum and count,
/// the same observations in native buckets when those are on, and per bucket the latest run
/// observed in it when exemplars are on (allocated with the first).
#[derive(Debug, Clone)]
pub struct DurationHistogram {
    pub bucket_counts: Box<[u64]>,
    pub sum: f64,
    pub count: u64,
    pub native: NativeBuckets,
    pub exemplars: Option<Box<[Exemplar]>>,
}

/// The latest observation of a bucket: which run, its value, and when it finished.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exemplar {
    /// `Uuid128(0)`: none yet.
    pub run: Uuid128,
    pub value: f64,
    /// Unix nanoseconds.
    pub at_nanos: i64,
}

impl DurationHistogram {
    fn new(bounds: usize, native: Option<NativeSettings>) -> DurationHistogram {
        DurationHistogram {
            bucket_counts: vec![0; bounds + 1].into_boxed_slice(),
            sum: 0.0,
            count: 0,
            native: NativeBuckets::new(native),
            exemplars: None,
        }
    }

    /// A copy with only the parts a reader needs: without native buckets or exemplars, a copy
    /// allocates nothing but the classic buckets.
    pub fn copy(&self, native: bool, exemplars: bool) -> DurationHistogram {
        DurationHistogram {
            bucket_counts: self.bucket_counts.clone(),
            sum: self.sum,
            count: self.count,
            native: match native {
                true => self.native.clone(),
                false => NativeBuckets::default(),
            },
            exemplars: self.exemplars.clone().filter(|_| exemplars),
        }
    }

    /// Counts `seconds`; `exemplar`: the run it came from, and when it finished.
    fn observe(
        &mut self,
        bounds: &[f64],
        seconds: f64,
        native: Option<NativeSettings>,
        exemplar: Option<(Uuid128, i64)>,
    ) {
        let at = bounds.partition_point(|&le| le < seconds);
        self.bucket_counts[at] += 1;
        self.sum += seconds;
        self.count += 1;
        self.native.observe(seconds, native);
        if let Some((run, at_nanos)) = exemplar {
            let exemplars =
                (self.exemplars).get_or_insert_with(|| vec![Exemplar::default(); bounds.len() + 1].into_boxed_slice());
            exemplars[at] = Exemplar {
                run,
                value: seconds,
                at_nanos,
            };
        }
    }
}

/// The outcomes of one status for one workflow.
#[derive(Debug, Clone)]
pub struct OutcomeStats {
    pub runs: u64,
    pub duration: DurationHistogram,
    /// From `createdAt` to `startedAt`, for outcomes that started.
    pub queue: DurationHistogram,
}

/// Outcome count and durations of one metadata-label combination.
#[derive(Debug, Clone)]
pub struct LabelledOutcome {
    pub runs: u64,
    pub duration: DurationHistogram,
}

/// Everything kept for one series of a workflow (`tenant_id`, `workflow` labels).
#[derive(Debug, Clone)]
pub struct WorkflowStats {
    pub tenant: Uuid128,
    pub workflow: String,
    /// In the order of [`OUTCOME_STATUSES`].
    pub outcomes: [OutcomeStats; 3],
    /// In the order of `AggregateSettings::failure_ratio_windows`. Windows are kept by partition
    /// (see [`partitioned`]).
    pub failure_windows: Vec<PartitionedWindow<FailureRatioWindow>>,
    /// Per quantile status (in settings order), per quantile window: `[status][window]` flattened.
    pub duration_windows: Vec<PartitionedWindow<QuantileWindow>>,
    /// Queue waits of all outcomes, per quantile window (empty unless `queue_wait_quantiles`).
    pub queue_windows: Vec<PartitionedWindow<QuantileWindow>>,
    /// Per combination of metadata-label values (only with `metadata_labels` configured), in the
    /// order of [`OUTCOME_STATUSES`].
    pub by_metadata: FxHashMap<MetadataKey, [LabelledOutcome; 3]>,
    /// Runs going from RUNNING back to QUEUED, and finished runs coming back.
    pub retries: u64,
    pub replays: u64,
    /// When the series last had an update (the aggregator's clock).
    pub last_update_nanos: i64,
    /// When the series was created, its counters all zero (the aggregator's clock).
    pub created_nanos: i64,
    /// The workflow ids that map to this series (to forget them with it).
    workflow_ids: Vec<Uuid128>,
}

/// Per-workflow statistics of every run seen, plus the memory of counted outcomes.
#[derive(Debug)]
pub struct Aggregator {
    settings: AggregateSettings,
    /// (tenant, workflowId) -> index in `series`. Two workflow ids with the same name in a tenant
    /// (a workflow deleted and created again) share one series, as the labels cannot tell them apart.
    workflows: FxHashMap<(Uuid128, Uuid128), usize>,
    series_by_label: HashMap<(Uuid128, String), usize>,
    /// Indexed by series id. A dropped series leaves `None`: ids are never reused, so nothing
    /// that still holds an old id can count into another workflow.
    series: Vec<Option<WorkflowStats>>,
    /// Series per tenant: a tenant without any gets no overflow series of its own.
    tenant_series: FxHashMap<Uuid128, u32>,
    /// Updates of workflows folded into an overflow series, and series dropped as idle.
    pub folded_updates: u64,
    pub expired_series: u64,
    /// Workflow names altered to be label values (distinct names, counted when first seen).
    pub workflow_names_altered: AlterationCounts,
    /// Values of updates not believed.
    pub implausible: ImplausibleCounts,
    last_sweep_nanos: i64,
    outcomes: OutcomeMemory,
    lifecycle: RunLifecycle,
    metadata_labels: MetadataLabels,
    clock: Clock,
    /// Latest `finishedAt` of a counted outcome: the end of the windows when replaying a file.
    latest_finished_nanos: Option<i64>,
    /// How far each partition's messages are counted in all of the above.
    positions: Positions,
}

impl Aggregator {
    pub fn new(settings: AggregateSettings, clock: Clock) -> Aggregator {
        Aggregator {
            outcomes: OutcomeMemory::new(settings.outcome_memory),
            lifecycle: RunLifecycle::new(settings.lifecycle),
            metadata_labels: MetadataLabels::new(
                settings.metadata_labels.clone(),
                settings.metadata_label_max_values,
                settings.max_label_value_bytes,
            ),
            settings,
            workflows: FxHashMap::default(),
            series_by_label: HashMap::new(),
            series: Vec::new(),
            tenant_series: FxHashMap::default(),
            folded_updates: 0,
            expired_series: 0,
            workflow_names_altered: AlterationCounts::default(),
            implausible: ImplausibleCounts::default(),
            last_sweep_nanos: i64::MIN,
            clock,
            latest_finished_nanos: None,
            positions: Positions::default(),
        }
    }

    pub fn settings(&self) -> &AggregateSettings {
        &self.settings
    }

    /// Applies one update from `partition`, processed at `wall_nanos` (unix nanoseconds, the wall
    /// clock).
    pub fn apply(&mut self, update: &RunUpdate<'_>, partition: Partition, wall_nanos: i64) -> Applied {
        self.apply_as(update, partition, wall_nanos, wall_nanos, Mode::Live)
    }

    /// Rebuilds the state an update from `partition` left, without counting it (see
    /// [`Mode::Restore`]): its run's lifecycle, its outcome in the memory of counted outcomes and
    /// in the windows. `message_nanos` is when the update was first processed, as far as is known
    /// (the message's timestamp): an outcome without `finishedAt` is placed in the windows then.
    /// Restoring only makes sense on the wall clock.
    pub fn restore(
        &mut self,
        update: &RunUpdate<'_>,
        partition: Partition,
        wall_nanos: i64,
        message_nanos: i64,
    ) -> Applied {
        self.apply_as(
            update,
            partition,
            wall_nanos,
            message_nanos.min(wall_nanos),
            Mode::Restore,
        )
    }

    /// Forgets what `partition` contributed (it went to another consumer, which rebuilds it from
    /// the topic): its runs, its remembered outcomes and its share of every window. The counters
    /// and histograms keep what was counted. Returns the runs and the outcomes forgotten.
    pub fn drop_partition(&mut self, partition: Partition) -> (usize, usize) {
        for stats in self.series.iter_mut().flatten() {
            stats
                .failure_windows
                .iter_mut()
                .for_each(|w| w.drop_partition(partition));
            stats
                .duration_windows
                .iter_mut()
                .for_each(|w| w.drop_partition(partition));
            stats.queue_windows.iter_mut().for_each(|w| w.drop_partition(partition));
        }
        self.positions.forget(partition);
        (
            self.lifecycle.drop_partition(partition),
            self.outcomes.drop_partition(partition),
        )
    }

    /// Records that the messages of `partition` before `next` (a source position) have their
    /// effect in the statistics: applied, or rejected and counted as such.
    pub fn processed(&mut self, partition: Partition, next: i64) {
        self.positions.advance(partition, next);
    }

    /// How far each partition's messages are counted: what a snapshot taken now shows.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// `event_fallback_nanos`: when an outcome without `finishedAt` happened (the wall clock when
    /// live).
    fn apply_as(
        &mut self,
        update: &RunUpdate<'_>,
        partition: Partition,
        wall_nanos: i64,
        event_fallback_nanos: i64,
        mode: Mode,
    ) -> Applied {
        let run = &update.run;
        let terminal = run.status.is_terminal();
        let live = mode == Mode::Live;
        let times = self.believed_times(RunTimes::of(run), wall_nanos, live);
        // Believed timestamps fit in i64 nanoseconds.
        let nanos = |t: Option<Timestamp>| t.and_then(|t| t.timestamp_nanos_opt());
        let finished_at = nanos(times.finished);
        // A DAG's finishedAt while still RUNNING is not a finish.
        let finished = finished_at.filter(|_| terminal);
        let now = match self.clock {
            Clock::Wall => wall_nanos,
            // The file's own time, this outcome included. Before any finishedAt, an outcome
            // without one belongs to no window.
            Clock::Replay => self.latest_finished_nanos.max(finished).unwrap_or(i64::MIN),
        };
        let at = self.series_for(update, now, live);
        if now.saturating_sub(self.last_sweep_nanos) >= IDLE_SWEEP_NANOS {
            self.drop_idle_series(now);
        }
        let observed = (self.lifecycle).observe(
            update.run_key,
            u32::try_from(at).unwrap_or(u32::MAX),
            partition,
            run.status,
            nanos(times.started),
            finished_at,
            now,
        );
        if let Some(stats) = self.series[at].as_mut().filter(|_| live) {
            stats.retries += u64::from(observed.retry);
            stats.replays += u64::from(observed.replay);
        }
        if !terminal {
            return Applied::InProgress;
        }
        // An outcome's identity is its finishedAt as sent, believed or not: whether it is believed
        // depends on the wall clock when it is processed, and a redelivery must be the same
        // outcome, a replay's new finish a new one. (An instant beyond i64 nanoseconds is keyed by
        // its seconds, so that two absurd finishes stay two.)
        let sent_finish = (run.finished_at).map(|t| t.timestamp_nanos_opt().unwrap_or_else(|| t.timestamp()));
        let key = OutcomeKey::new(update.run_key, sent_finish.unwrap_or(NOT_FINISHED));
        if !self.outcomes.remember(key, partition, now) {
            return Applied::Duplicate;
        }
        let duration_seconds = match trusted_duration_seconds(&times) {
            Ok(seconds) => seconds,
            Err(Implausible) => {
                self.implausible.duration += u64::from(live);
                None
            }
        };
        if let Some(finished) = finished {
            self.latest_finished_nanos = Some(self.latest_finished_nanos.map_or(finished, |l| l.max(finished)));
        }
        let event_nanos = match (finished, self.clock) {
            (Some(finished), Clock::Wall) => finished.min(now),
            (Some(finished), Clock::Replay) => finished,
            (None, Clock::Wall) => event_fallback_nanos,
            (None, Clock::Replay) => now,
        };
        let queue_seconds = queue_wait_seconds(&times);
        let Some(stats) = self.series[at].as_mut() else {
            return Applied::InProgress; // unreachable: series_for returns a live series
        };
        if live {
            count_outcome(
                stats,
                &self.settings,
                &mut self.metadata_labels,
                update,
                event_nanos,
                duration_seconds,
                queue_seconds,
            );
        }
        record_in_windows(
            stats,
            &self.settings,
            partition,
            event_nanos,
            queue_seconds,
            run.status,
            duration_seconds,
        );
        Applied::Outcome {
            status: run.status,
            duration_seconds,
        }
    }

    /// `times` less what [`TimestampLimits`] does not believe at `wall_nanos`, counted by field
    /// when `count`.
    fn believed_times(&mut self, mut times: RunTimes, wall_nanos: i64, count: bool) -> RunTimes {
        let limits = self.settings.timestamps;
        let clock = self.clock;
        let (run_started, run_finished) = (times.started.is_some(), times.finished.is_some());
        for (slot, counted) in [
            (&mut times.started, &mut self.implausible.started_at),
            (&mut times.finished, &mut self.implausible.finished_at),
            (&mut times.created, &mut self.implausible.created_at),
        ] {
            if slot.is_some_and(|t| !limits.believes(t, wall_nanos, clock)) {
                *slot = None;
                *counted += u64::from(count);
            }
        }
        // Hatchet computes `duration` from the same two timestamps: no better than they are.
        if (run_started, run_finished) != (times.started.is_some(), times.finished.is_some()) {
            times.duration_ms = None;
        }
        times
    }

    /// The series of the update's workflow, created on first sight (or the tenant's overflow
    /// series at the cap); `now` marks it as updated. A fold into the overflow series is counted
    /// when `count`.
    fn series_for(&mut self, update: &RunUpdate<'_>, now: i64, count: bool) -> usize {
        let key = (update.tenant, update.workflow);
        let at = match self.workflows.get(&key) {
            Some(&at) => at,
            // At the cap, before any label is built: a flood of new workflow ids (or tenant ids)
            // costs no memory. A tenant with series of its own gets its own overflow series; an
            // unknown tenant goes to the one overflow tenant.
            None if self.workflows.len() >= self.settings.max_workflows => {
                self.folded_updates += u64::from(count);
                let tenant = match self.tenant_series.contains_key(&update.tenant) {
                    true => update.tenant,
                    false => OVERFLOW_TENANT,
                };
                match self.series_by_label.get(&(tenant, OVERFLOW_WORKFLOW.to_string())) {
                    Some(&at) => at,
                    None => self.new_series(tenant, OVERFLOW_WORKFLOW.to_string(), None),
                }
            }
            None => {
                let (name, altered) = match self.settings.workflow_names.get(&update.workflow) {
                    Some(name) => (name.clone(), Default::default()),
                    None => {
                        let derived = workflow_name_from_display_name(&update.run.display_name);
                        let (name, altered) = match derived {
                            Some(name) => label_value::sanitize(name, self.settings.max_label_value_bytes),
                            None => (update.run.workflow_id.to_ascii_lowercase().into(), Default::default()),
                        };
                        (name.into_owned(), altered)
                    }
                };
                let at = match self.series_by_label.get(&(update.tenant, name.clone())) {
                    Some(&at) => at,
                    None => {
                        // Counted per series created: a name shared by two workflow ids once.
                        self.workflow_names_altered.add(altered);
                        self.new_series(update.tenant, name, Some(update.workflow))
                    }
                };
                if let Some(stats) = self.series[at].as_mut() {
                    if !stats.workflow_ids.contains(&update.workflow) {
                        stats.workflow_ids.push(update.workflow);
                    }
                }
                self.workflows.insert(key, at);
                at
            }
        };
        if let Some(stats) = self.series[at].as_mut() {
            stats.last_update_nanos = stats.last_update_nanos.max(now);
            if stats.created_nanos == i64::MIN {
                stats.created_nanos = now;
            }
        }
        at
    }

    fn new_series(&mut self, tenant: Uuid128, workflow: String, workflow_id: Option<Uuid128>) -> usize {
        let outcome = OutcomeStats {
            runs: 0,
            duration: DurationHistogram::new(
                self.settings.duration_buckets_seconds.len(),
                self.settings.native_histograms,
            ),
            queue: DurationHistogram::new(
                self.settings.queue_buckets_seconds.len(),
                self.settings.native_histograms,
            ),
        };
        let at = self.series.len();
        self.series_by_label.insert((tenant, workflow.clone()), at);
        self.series.push(Some(WorkflowStats {
            tenant,
            workflow,
            outcomes: [outcome.clone(), outcome.clone(), outcome],
            failure_windows: (self.settings.failure_ratio_windows.iter())
                .map(|(_, length)| PartitionedWindow::new(*length))
                .collect(),
            duration_windows: (self.settings.quantile_statuses.iter())
                .flat_map(|_| {
                    self.settings
                        .quantile_windows
                        .iter()
                        .map(|(_, length)| PartitionedWindow::new(*length))
                })
                .collect(),
            queue_windows: match self.settings.queue_wait_quantiles {
                true => (self.settings.quantile_windows.iter())
                    .map(|(_, length)| PartitionedWindow::new(*length))
                    .collect(),
                false => Vec::new(),
            },
            by_metadata: FxHashMap::default(),
            retries: 0,
            replays: 0,
            last_update_nanos: i64::MIN,
            created_nanos: i64::MIN,
            workflow_ids: workflow_id.into_iter().collect(),
        }));
        *self.tenant_series.entry(tenant).or_default() += 1;
        at
    }

    /// Drops the series without an update for `idle_expiry`: they leave the exposition and free
    /// their memory; if the workflow comes back it starts again from zero (a counter reset, which
    /// Prometheus's `rate` and `increase` handle).
    fn drop_idle_series(&mut self, now: i64) {
        self.last_sweep_nanos = now;
        let horizon = now.saturating_sub(self.settings.idle_expiry_nanos);
        for slot in &mut self.series {
            // `i64::MIN`: only seen before a replayed file's clock started; not idle.
            if slot
                .as_ref()
                .is_some_and(|s| s.last_update_nanos != i64::MIN && s.last_update_nanos < horizon)
            {
                if let Some(stats) = slot.take() {
                    for id in &stats.workflow_ids {
                        self.workflows.remove(&(stats.tenant, *id));
                    }
                    self.series_by_label.remove(&(stats.tenant, stats.workflow));
                    if let Some(count) = self.tenant_series.get_mut(&stats.tenant) {
                        *count -= 1;
                        if *count == 0 {
                            self.tenant_series.remove(&stats.tenant);
                        }
                    }
                    self.expired_series += 1;
                }
            }
        }
    }

    /// Forgets what is older than the limits allow, as a message would: called before a scrape so
    /// that a quiet topic still ages out runs and workflows.
    pub fn expire(&mut self, wall_nanos: i64) {
        if self.clock == Clock::Wall {
            self.lifecycle.expire(wall_nanos);
            if wall_nanos.saturating_sub(self.last_sweep_nanos) >= IDLE_SWEEP_NANOS {
                self.drop_idle_series(wall_nanos);
            }
        }
    }

    pub fn lifecycle(&self) -> &RunLifecycle {
        &self.lifecycle
    }

    /// Runs in flight of a series.
    pub fn in_flight(&self, series: SeriesId) -> InFlight {
        self.lifecycle
            .in_flight()
            .get(series.index())
            .copied()
            .unwrap_or_default()
    }

    /// Every live series with its id, in no particular order.
    pub fn series_with_ids(&self) -> impl Iterator<Item = (SeriesId, &WorkflowStats)> {
        (self.series.iter().enumerate())
            .filter_map(|(at, s)| s.as_ref().map(|s| (SeriesId(u32::try_from(at).unwrap_or(u32::MAX)), s)))
    }

    /// The failure-ratio window of `stats` that is `window_nanos` long, if tracked.
    pub fn failure_window<'a>(
        &self,
        stats: &'a WorkflowStats,
        window_nanos: i64,
    ) -> Option<&'a PartitionedWindow<FailureRatioWindow>> {
        let at = (self.settings.failure_ratio_windows.iter()).position(|(_, n)| *n == window_nanos)?;
        stats.failure_windows.get(at)
    }

    /// The duration-quantile window of `stats` for outcomes of `status`, `window_nanos` long, if
    /// tracked.
    pub fn duration_window<'a>(
        &self,
        stats: &'a WorkflowStats,
        status: V1TaskStatus,
        window_nanos: i64,
    ) -> Option<&'a PartitionedWindow<QuantileWindow>> {
        let status = (self.settings.quantile_statuses.iter()).position(|s| *s == status)?;
        let window = (self.settings.quantile_windows.iter()).position(|(_, n)| *n == window_nanos)?;
        stats
            .duration_windows
            .get(status * self.settings.quantile_windows.len() + window)
    }

    /// The queue-wait window of `stats` that is `window_nanos` long, if tracked.
    pub fn queue_window<'a>(
        &self,
        stats: &'a WorkflowStats,
        window_nanos: i64,
    ) -> Option<&'a PartitionedWindow<QuantileWindow>> {
        let at = (self.settings.quantile_windows.iter()).position(|(_, n)| *n == window_nanos)?;
        stats.queue_windows.get(at)
    }

    /// Every duration-quantile window of `stats` with its status and window label, in the
    /// settings' order (statuses, then windows).
    pub fn duration_windows<'a>(
        &'a self,
        stats: &'a WorkflowStats,
    ) -> impl Iterator<Item = (V1TaskStatus, &'a str, &'a PartitionedWindow<QuantileWindow>)> + 'a {
        let windows = &self.settings.quantile_windows;
        (self.settings.quantile_statuses.iter())
            .flat_map(move |status| windows.iter().map(move |(label, _)| (*status, label.as_str())))
            .zip(&stats.duration_windows)
            .map(|((status, label), window)| (status, label, window))
    }

    /// Every queue-wait window of `stats` with its window label (none unless
    /// `queue_wait_quantiles`).
    pub fn queue_windows<'a>(
        &'a self,
        stats: &'a WorkflowStats,
    ) -> impl Iterator<Item = (&'a str, &'a PartitionedWindow<QuantileWindow>)> {
        (self.settings.quantile_windows.iter())
            .map(|(label, _)| label.as_str())
            .zip(&stats.queue_windows)
    }

    /// Workflow ids with a series of their own (what `max_workflows` caps).
    pub fn tracked_workflows(&self) -> usize {
        self.workflows.len()
    }

    /// Every live series, in no particular order.
    pub fn series(&self) -> impl Iterator<Item = &WorkflowStats> {
        self.series.iter().flatten()
    }

    /// The end of the failure-ratio windows when replaying: the latest `finishedAt` counted.
    pub fn latest_finished_nanos(&self) -> Option<i64> {
        self.latest_finished_nanos
    }

    pub fn metadata_labels(&self) -> &MetadataLabels {
        &self.metadata_labels
    }

    pub fn outcome_memory(&self) -> &OutcomeMemory {
        &self.outcomes
    }
}

/// Counts a new outcome (live only: a restored one was counted by whoever processed it first):
/// its run, duration and queue wait, by metadata labels too.
fn count_outcome(
    stats: &mut WorkflowStats,
    settings: &AggregateSettings,
    metadata_labels: &mut MetadataLabels,
    update: &RunUpdate<'_>,
    event_nanos: i64,
    duration_seconds: Option<f64>,
    queue_seconds: Option<f64>,
) {
    let run = &update.run;
    let metadata_key = (!metadata_labels.is_empty()).then(|| metadata_labels.key_of(run.additional_metadata));
    let bounds = &settings.duration_buckets_seconds;
    let native = settings.native_histograms;
    let exemplar = (update.run_id)
        .filter(|_| settings.exemplars)
        .map(|id| (id, event_nanos));
    let index = outcome_index(run.status);
    if let Some(mut key) = metadata_key {
        // Values are capped per label, combinations per workflow too (the cap, plus the empty
        // and the overflow value).
        if stats.by_metadata.len() >= settings.metadata_label_max_values + 2 && !stats.by_metadata.contains_key(&key) {
            key = ALL_OVERFLOW;
        }
        let labelled = stats.by_metadata.entry(key).or_insert_with(|| {
            let empty = LabelledOutcome {
                runs: 0,
                duration: DurationHistogram::new(bounds.len(), native),
            };
            [empty.clone(), empty.clone(), empty]
        });
        labelled[index].runs += 1;
        if let Some(seconds) = duration_seconds {
            labelled[index].duration.observe(bounds, seconds, native, exemplar);
        }
    }
    let outcome = &mut stats.outcomes[index];
    outcome.runs += 1;
    if let Some(seconds) = duration_seconds {
        outcome.duration.observe(bounds, seconds, native, exemplar);
    }
    if let Some(seconds) = queue_seconds {
        outcome
            .queue
            .observe(&settings.queue_buckets_seconds, seconds, native, None);
    }
}

/// An outcome of `partition` at `event_nanos` into the series' windows: the failure ratio, the
/// queue wait, and the duration when its status has windows.
fn record_in_windows(
    stats: &mut WorkflowStats,
    settings: &AggregateSettings,
    partition: Partition,
    event_nanos: i64,
    queue_seconds: Option<f64>,
    status: V1TaskStatus,
    duration_seconds: Option<f64>,
) {
    if let Some(seconds) = queue_seconds {
        for window in &mut stats.queue_windows {
            window.of(partition).record(event_nanos, seconds);
        }
    }
    let failed = status == V1TaskStatus::Failed;
    for window in &mut stats.failure_windows {
        window.of(partition).record(event_nanos, failed);
    }
    if let (Some(seconds), Some(position)) = (
        duration_seconds,
        settings.quantile_statuses.iter().position(|s| *s == status),
    ) {
        let windows = settings.quantile_windows.len();
        for window in &mut stats.duration_windows[position * windows..(position + 1) * windows] {
            window.of(partition).record(event_nanos, seconds);
        }
    }
}

fn outcome_index(status: V1TaskStatus) -> usize {
    match status {
        V1TaskStatus::Completed => 0,
        V1TaskStatus::Failed => 1,
        _ => 2,
    }
}

/// `displayName` is `<name>-<unix ms>`: the name is what precedes a trailing `-<digits>`. `None`
/// when nothing would remain.
pub fn workflow_name_from_display_name(display_name: &str) -> Option<&str> {
    let name = match display_name.rsplit_once('-') {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => display_name,
    };
    (!name.is_empty()).then_some(name)
}

/// A duration from `startedAt` to `finishedAt` longer than a year (`MAX_TRUSTED_DURATION_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Implausible;

/// The run's duration in seconds, when it can be trusted.
///
/// `finishedAt - startedAt` at full precision when both are present and in order; otherwise, when a
/// timestamp is absent, Hatchet's `duration` (ms) if it lies within a year; otherwise none.
pub fn run_duration_seconds(times: &RunTimes) -> Option<f64> {
    trusted_duration_seconds(times).ok().flatten()
}

/// As [`run_duration_seconds`], but saying when both timestamps were there and a year or more
/// apart: that is worth counting, while Hatchet's saturated `duration` is routine.
fn trusted_duration_seconds(times: &RunTimes) -> Result<Option<f64>, Implausible> {
    match (times.started, times.finished) {
        (Some(started), Some(finished)) => match seconds_between(&started, &finished) {
            Some(seconds) if seconds > MAX_TRUSTED_DURATION_MS as f64 / 1000.0 => Err(Implausible),
            seconds => Ok(seconds),
        },
        _ => Ok(times
            .duration_ms
            .filter(|ms| (0..=MAX_TRUSTED_DURATION_MS).contains(ms))
            .map(|ms| ms as f64 / 1000.0)),
    }
}

/// How long the run waited to start: from its `createdAt` (`metadata.createdAt` when absent) to
/// `startedAt` (of the latest attempt, after retries). `None` when it never started or the
/// timestamps are out of order.
pub fn queue_wait_seconds(times: &RunTimes) -> Option<f64> {
    // Trusted up to a year, like `duration`: a zero-time `metadata.createdAt` must not observe
    // two thousand years.
    seconds_between(&times.created?, &times.started?).filter(|s| *s <= MAX_TRUSTED_DURATION_MS as f64 / 1000.0)
}

fn seconds_between(started: &Timestamp, finished: &Timestamp) -> Option<f64> {
    let whole = finished.timestamp() - started.timestamp();
    let nanos = i64::from(finished.timestamp_subsec_nanos()) - i64::from(started.timestamp_subsec_nanos());
    let seconds = whole as f64 + nanos as f64 / 1e9;
    (seconds >= 0.0).then_some(seconds)
}

#[cfg(test)]
mod tests;
