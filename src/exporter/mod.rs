//! The Prometheus exposition: the workflow metrics rendered from the aggregation, followed by the
//! service's own metrics from its registry.
//!
//! A scrape copies what it needs under the aggregation's lock ([`Snapshot::take`]) and formats
//! outside it, so consumption is held up only for the copy.

pub mod format;
pub mod gzip;
pub mod http;
pub mod page;
pub mod protobuf;
pub mod text;
mod thresholds;
pub mod web;
pub mod writer;

use crate::aggregate::label_value::AlterationCounts;
use crate::aggregate::lifecycle::InFlight;
use crate::aggregate::quantile_window::WindowSummary;
use crate::aggregate::{
    tenant_label, Aggregator, DurationHistogram, ImplausibleCounts, LabelledOutcome, OutcomeStats, OUTCOME_STATUSES,
};
use crate::events::Telemetry;
use crate::ids::Positions;
use crate::service::Service;
use format::Format;
use protobuf::ProtobufWriter;
use std::fmt::Write;
use text::{escape_label, TextWriter};
use writer::{Kind, Writer};

/// Where the failure-ratio windows end.
#[derive(Debug, Clone, Copy)]
pub enum WindowEnd {
    /// At this wall-clock time (unix nanoseconds): the service.
    At(i64),
    /// At the latest counted outcome's `finishedAt`: replaying a file.
    LatestFinished,
}

struct SeriesSnapshot {
    tenant: String,
    workflow: String,
    /// In the order of `OUTCOME_STATUSES`.
    outcomes: [OutcomeStats; 3],
    /// With metadata labels: the rendered extra labels (`,customer_tier="gold"`) of each
    /// combination, sorted, and its outcomes.
    by_metadata: Vec<(String, [LabelledOutcome; 3])>,
    /// Per configured window: the failure ratio, `None` when the window is empty.
    ratios: Vec<Option<f64>>,
    /// Per quantile status and window with outcomes: the labels (`,status=..,window=..`) and summary.
    duration_summaries: Vec<(String, WindowSummary)>,
    /// Per quantile window with outcomes (only with `queue_wait_quantiles`): `,window=..` and summary.
    queue_summaries: Vec<(String, WindowSummary)>,
    in_flight: InFlight,
    /// Seconds since the oldest RUNNING run started, when one runs.
    oldest_running_age: Option<f64>,
    retries: u64,
    replays: u64,
    /// When the series' counters started from zero (unix seconds; the service only).
    created: Option<f64>,
}

/// What one scrape shows, copied out of the aggregation.
pub struct Snapshot {
    with_metadata_labels: bool,
    queue_wait_quantiles: bool,
    quantiles: Vec<f64>,
    duration_bounds: Vec<f64>,
    queue_bounds: Vec<f64>,
    windows: Vec<String>,
    series: Vec<SeriesSnapshot>,
    remembered: usize,
    runs_tracked: usize,
    runs_forgotten_by_age: u64,
    runs_forgotten_at_cap: u64,
    runs_changed_partition: u64,
    tracked_workflows: usize,
    overflow_updates: u64,
    metadata_values_folded: u64,
    /// `(label, altered values)`: `workflow`, then each metadata label.
    label_values_altered: Vec<(String, AlterationCounts)>,
    implausible: ImplausibleCounts,
    expired_workflows: u64,
    forgotten_at_cap: u64,
    forgotten_by_age: u64,
    /// How far each partition's messages are counted in what this snapshot shows.
    positions: Positions,
}

impl Snapshot {
    /// Everything, for any format.
    pub fn take(aggregator: &Aggregator, end: WindowEnd) -> Snapshot {
        Snapshot::take_for(aggregator, end, Format::Protobuf)
    }

    /// What `format` shows: native buckets for protobuf, exemplars for it and OpenMetrics (the
    /// copy under the lock is then cheaper for the text format).
    pub fn take_for(aggregator: &Aggregator, end: WindowEnd, format: Format) -> Snapshot {
        let (native, exemplars) = (format == Format::Protobuf, format != Format::Text);
        let copy = |o: &OutcomeStats| OutcomeStats {
            runs: o.runs,
            duration: o.duration.copy(native, exemplars),
            queue: o.queue.copy(native, false),
        };
        let copy_labelled = |o: &LabelledOutcome| LabelledOutcome {
            runs: o.runs,
            duration: o.duration.copy(native, exemplars),
        };
        let settings = aggregator.settings();
        let end_nanos = match end {
            WindowEnd::At(nanos) => Some(nanos),
            WindowEnd::LatestFinished => aggregator.latest_finished_nanos(),
        };
        let oldest_running = aggregator.lifecycle().oldest_running();
        let mut series: Vec<SeriesSnapshot> = (aggregator.series_with_ids())
            .map(|(at, s)| SeriesSnapshot {
                in_flight: aggregator.in_flight(at),
                oldest_running_age: oldest_running
                    .get(at.index())
                    .copied()
                    .flatten()
                    .zip(end_nanos)
                    .map(|(started, end)| end.saturating_sub(started).max(0) as f64 / 1e9),
                duration_summaries: (aggregator.duration_windows(s))
                    .filter_map(|(status, label, w)| {
                        let summary = end_nanos.and_then(|end| w.summary(end, &settings.quantiles))?;
                        let labels = format!(",status=\"{}\",window=\"{}\"", status.as_str(), escape_label(label));
                        Some((labels, summary))
                    })
                    .collect(),
                queue_summaries: (aggregator.queue_windows(s))
                    .filter_map(|(label, w)| {
                        let summary = end_nanos.and_then(|end| w.summary(end, &settings.quantiles))?;
                        Some((format!(",window=\"{}\"", escape_label(label)), summary))
                    })
                    .collect(),
                retries: s.retries,
                replays: s.replays,
                created: (matches!(end, WindowEnd::At(_)) && s.created_nanos != i64::MIN)
                    .then(|| s.created_nanos as f64 / 1e9),
                tenant: tenant_label(s.tenant),
                workflow: s.workflow.clone(),
                outcomes: [copy(&s.outcomes[0]), copy(&s.outcomes[1]), copy(&s.outcomes[2])],
                by_metadata: {
                    let labels = aggregator.metadata_labels();
                    let mut rows: Vec<_> = (s.by_metadata.iter())
                        .map(|(key, outcomes)| {
                            let mut text = String::new();
                            for (i, name) in labels.names().iter().enumerate() {
                                let _ = write!(text, ",{name}=\"{}\"", escape_label(labels.value(i, key[i])));
                            }
                            (
                                text,
                                [
                                    copy_labelled(&outcomes[0]),
                                    copy_labelled(&outcomes[1]),
                                    copy_labelled(&outcomes[2]),
                                ],
                            )
                        })
                        .collect();
                    rows.sort_by(|a, b| a.0.cmp(&b.0));
                    rows
                },
                ratios: (s.failure_windows.iter())
                    .map(|w| end_nanos.and_then(|end| w.ratio(end)))
                    .collect(),
            })
            .collect();
        series.sort_by(|a, b| (&a.tenant, &a.workflow).cmp(&(&b.tenant, &b.workflow)));
        let memory = aggregator.outcome_memory();
        Snapshot {
            with_metadata_labels: !aggregator.metadata_labels().is_empty(),
            queue_wait_quantiles: settings.queue_wait_quantiles,
            quantiles: settings.quantiles.clone(),
            duration_bounds: settings.duration_buckets_seconds.clone(),
            queue_bounds: settings.queue_buckets_seconds.clone(),
            windows: settings
                .failure_ratio_windows
                .iter()
                .map(|(label, _)| label.clone())
                .collect(),
            series,
            remembered: memory.len(),
            runs_tracked: aggregator.lifecycle().len(),
            runs_forgotten_by_age: aggregator.lifecycle().expired_by_age(),
            runs_forgotten_at_cap: aggregator.lifecycle().forgotten_at_cap(),
            runs_changed_partition: aggregator.lifecycle().changed_partition(),
            tracked_workflows: aggregator.tracked_workflows(),
            overflow_updates: aggregator.folded_updates,
            metadata_values_folded: aggregator.metadata_labels().folded,
            label_values_altered: std::iter::once(("workflow".to_string(), aggregator.workflow_names_altered))
                .chain(
                    (aggregator.metadata_labels().names().iter().cloned())
                        .zip(aggregator.metadata_labels().altered.iter().copied()),
                )
                .collect(),
            implausible: aggregator.implausible,
            expired_workflows: aggregator.expired_series,
            forgotten_at_cap: memory.forgotten_at_cap,
            forgotten_by_age: memory.forgotten_by_age,
            positions: aggregator.positions().clone(),
        }
    }

    /// The workflow metrics, in whichever format `out` writes.
    pub fn render(&self, out: &mut dyn Writer) {
        let outcomes = self.outcome_rows();
        out.family("hatchet_workflow_runs_total", Kind::Counter, "Workflow runs that reached an outcome (COMPLETED, FAILED, CANCELLED); a replayed run that finishes again counts again.");
        for (labels, runs, _, created) in &outcomes {
            out.value(labels, *runs as f64, *created);
        }
        out.family(
            "hatchet_workflow_run_duration_seconds",
            Kind::Histogram,
            "Duration of workflow runs from startedAt to finishedAt, by outcome; runs without a trustworthy duration are counted in hatchet_workflow_runs_total only.",
        );
        for (labels, _, h, created) in &outcomes {
            out.histogram(labels, &self.duration_bounds, h, *created);
        }
        let queue_rows: Vec<(String, &DurationHistogram, Option<f64>)> = (self.series.iter())
            .flat_map(|s| {
                (OUTCOME_STATUSES.iter().zip(&s.outcomes))
                    .map(|(status, o)| (labels(s, Some(status.as_str()), None), &o.queue, s.created))
            })
            .collect();
        out.family(
            "hatchet_workflow_run_queue_seconds",
            Kind::Histogram,
            "Time workflow runs waited from createdAt to startedAt (of the latest attempt), by outcome; runs that never started are not observed.",
        );
        for (labels, h, created) in &queue_rows {
            out.histogram(labels, &self.queue_bounds, h, *created);
        }
        self.render_summary(
            out,
            "hatchet_workflow_run_duration_window_seconds",
            "Quantiles of workflow run durations (seconds) over each sliding window (by finishedAt), within 1% of the exact nearest-rank value; absent while the window holds no outcome.",
            |s| &s.duration_summaries,
        );
        if self.queue_wait_quantiles {
            self.render_summary(
                out,
                "hatchet_workflow_run_queue_window_seconds",
                "Quantiles of the queue wait (createdAt to startedAt, seconds) of runs that reached an outcome, over each sliding window (by finishedAt), within 1% of the exact value; absent while the window holds no outcome.",
                |s| &s.queue_summaries,
            );
        }
        out.family("hatchet_workflow_failure_ratio", Kind::Gauge, "FAILED outcomes over all outcomes whose finishedAt lies in the window; absent while the window holds no outcome.");
        for s in &self.series {
            for (window, ratio) in self.windows.iter().zip(&s.ratios) {
                if let Some(ratio) = ratio {
                    out.value(&labels(s, None, Some(window)), *ratio, None);
                }
            }
        }
        out.family(
            "hatchet_workflow_runs_in_flight",
            Kind::Gauge,
            "Runs whose latest update is QUEUED or RUNNING.",
        );
        for s in &self.series {
            for (status, count) in [("QUEUED", s.in_flight.queued), ("RUNNING", s.in_flight.running)] {
                out.value(&labels(s, Some(status), None), count as f64, None);
            }
        }
        out.family(
            "hatchet_workflow_oldest_running_run_age_seconds",
            Kind::Gauge,
            "Seconds since the startedAt of the oldest run still RUNNING; absent when none runs.",
        );
        for s in &self.series {
            if let Some(age) = s.oldest_running_age {
                out.value(&labels(s, None, None), age, None);
            }
        }
        out.family(
            "hatchet_workflow_run_retries_total",
            Kind::Counter,
            "Runs going from RUNNING back to QUEUED (automatic retries).",
        );
        for s in &self.series {
            out.value(&labels(s, None, None), s.retries as f64, s.created);
        }
        out.family(
            "hatchet_workflow_run_replays_total",
            Kind::Counter,
            "Finished runs coming back (manual replays).",
        );
        for s in &self.series {
            out.value(&labels(s, None, None), s.replays as f64, s.created);
        }
        out.family(
            "hatchet_run_metrics_runs_tracked",
            Kind::Gauge,
            "Runs tracked for in-flight, retries and replays (runs.max_tracked caps it).",
        );
        out.value("", self.runs_tracked as f64, None);
        out.family(
            "hatchet_run_metrics_runs_forgotten_total",
            Kind::Counter,
            "Tracked runs forgotten, by why: age (runs.max_age without an update) or cap (runs.max_tracked).",
        );
        out.value("why=\"age\"", self.runs_forgotten_by_age as f64, None);
        out.value("why=\"cap\"", self.runs_forgotten_at_cap as f64, None);
        out.family("hatchet_run_metrics_runs_changed_partition_total", Kind::Counter, "Updates of a tracked run that arrived on another partition than its previous one: its producer does not key messages by run id, so two members may each show the run.");
        out.value("", self.runs_changed_partition as f64, None);
        out.family("hatchet_run_metrics_metadata_values_folded_total", Kind::Counter, "Outcomes whose value of a metadata label was folded into __overflow__ (metrics.metadata_label_max_values).");
        out.value("", self.metadata_values_folded as f64, None);
        out.family("hatchet_run_metrics_label_values_altered_total", Kind::Counter, "Distinct label values from messages altered to be label values, by label and why: too_long (cut to metrics.max_label_value_bytes, with a hash) or control_characters (replaced by U+FFFD).");
        for (label, counts) in &self.label_values_altered {
            for (why, count) in [("too_long", counts.cut), ("control_characters", counts.replaced)] {
                out.value(
                    &format!("label=\"{}\",why=\"{why}\"", escape_label(label)),
                    count as f64,
                    None,
                );
            }
        }
        out.family("hatchet_run_metrics_implausible_values_total", Kind::Counter, "Values of updates not believed, by field: timestamps beyond metrics.timestamp_max_ahead or timestamp_max_age of the wall clock (taken as absent), durations over a year (not observed).");
        for (field, count) in self.implausible.by_field() {
            out.value(&format!("field=\"{field}\""), count as f64, None);
        }
        out.family(
            "hatchet_run_metrics_workflows_tracked",
            Kind::Gauge,
            "Workflows with series of their own (metrics.max_workflows caps it; overflow series excluded).",
        );
        out.value("", self.tracked_workflows as f64, None);
        out.family("hatchet_run_metrics_overflow_updates_total", Kind::Counter, "Updates of workflows beyond metrics.max_workflows, counted in their tenant's workflow=\"__overflow__\" series.");
        out.value("", self.overflow_updates as f64, None);
        out.family(
            "hatchet_run_metrics_workflows_expired_total",
            Kind::Counter,
            "Workflow series dropped after metrics.idle_expiry without an update.",
        );
        out.value("", self.expired_workflows as f64, None);
        out.family(
            "hatchet_run_metrics_outcomes_remembered",
            Kind::Gauge,
            "Counted outcomes remembered to recognise redeliveries (config outcomes.max_remembered caps it).",
        );
        out.value("", self.remembered as f64, None);
        out.family("hatchet_run_metrics_outcomes_forgotten_total", Kind::Counter, "Remembered outcomes forgotten, by why: age (outcomes.max_age) or cap (outcomes.max_remembered; a redelivery after that counts again).");
        out.value("why=\"age\"", self.forgotten_by_age as f64, None);
        out.value("why=\"cap\"", self.forgotten_at_cap as f64, None);
    }
}

impl Snapshot {
    fn render_summary(
        &self,
        out: &mut dyn Writer,
        name: &str,
        help: &str,
        summaries: impl Fn(&SeriesSnapshot) -> &Vec<(String, WindowSummary)>,
    ) {
        out.family(name, Kind::Summary, help);
        for s in &self.series {
            let base = labels(s, None, None);
            for (extra, window) in summaries(s) {
                out.summary(
                    &format!("{base}{extra}"),
                    &self.quantiles,
                    &window.quantiles,
                    window.sum,
                    window.count,
                );
            }
        }
    }

    /// One row per series, status and (with metadata labels) combination of their values: the
    /// labels, the outcome count, the duration histogram and when the series was created.
    fn outcome_rows(&self) -> Vec<(String, u64, &DurationHistogram, Option<f64>)> {
        let mut rows = Vec::new();
        for s in &self.series {
            for (i, status) in OUTCOME_STATUSES.iter().enumerate() {
                let base = labels(s, Some(status.as_str()), None);
                if self.with_metadata_labels {
                    for (extra, outcomes) in &s.by_metadata {
                        rows.push((
                            format!("{base}{extra}"),
                            outcomes[i].runs,
                            &outcomes[i].duration,
                            s.created,
                        ));
                    }
                } else {
                    rows.push((base, s.outcomes[i].runs, &s.outcomes[i].duration, s.created));
                }
            }
        }
        rows
    }
}

/// The whole exposition in the text format 0.0.4: workflow metrics, then the service's own.
pub fn exposition(service: &Service, end: WindowEnd) -> String {
    let mut out = workflow_exposition(service, end, Format::Text, true).body;
    out.extend(service_exposition(service.telemetry(), Format::Text));
    String::from_utf8_lossy(&out).into_owned()
}

/// The workflow metrics and thresholds in one format, and how far each partition's messages are
/// counted in them.
pub struct WorkflowPage {
    pub body: Vec<u8>,
    pub positions: Positions,
}

/// Runs `write` with the writer of `format`; `last`: the end of the exposition (OpenMetrics
/// closes it with `# EOF`). `classic`: protobuf histograms keep their classic buckets.
fn written(format: Format, classic: bool, last: bool, write: impl FnOnce(&mut dyn Writer)) -> Vec<u8> {
    match format {
        Format::Text | Format::OpenMetrics => {
            let mut out = String::with_capacity(64 * 1024);
            let mut writer = TextWriter::new(&mut out, format == Format::OpenMetrics);
            write(&mut writer);
            if last {
                writer.finish();
            }
            out.into_bytes()
        }
        Format::Protobuf => {
            let mut out = Vec::with_capacity(64 * 1024);
            let mut writer = ProtobufWriter::new(&mut out, classic);
            write(&mut writer);
            writer.finish();
            out
        }
    }
}

/// The workflow metrics and thresholds: nearly all of a large exposition, and the part that
/// `/metrics` shares between the scrapes of about the same time. `classic`: protobuf histograms
/// keep their classic buckets.
pub fn workflow_exposition(service: &Service, end: WindowEnd, format: Format, classic: bool) -> WorkflowPage {
    let mut snapshot = {
        let mut aggregator = service.pipeline().aggregator();
        if let WindowEnd::At(now) = end {
            aggregator.expire(now);
        }
        Snapshot::take_for(&aggregator, end, format)
    };
    let body = written(format, classic, false, |out| {
        snapshot.render(out);
        thresholds::render(out, &service.thresholds());
    });
    WorkflowPage {
        body,
        positions: std::mem::take(&mut snapshot.positions),
    }
}

/// Only the families `wanted` names (workflow families, thresholds and the service's own), in
/// one format: a `/metrics?name[]=` scrape.
pub fn render_filtered(
    service: &Service,
    end: WindowEnd,
    format: Format,
    classic: bool,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<u8> {
    let snapshot = {
        let mut aggregator = service.pipeline().aggregator();
        if let WindowEnd::At(now) = end {
            aggregator.expire(now);
        }
        Snapshot::take_for(&aggregator, end, format)
    };
    written(format, classic, true, |out| {
        let mut only = writer::Only::new(out, wanted);
        snapshot.render(&mut only);
        thresholds::render(&mut only, &service.thresholds());
        writer::registry(&mut only, service.telemetry());
    })
}

/// The service's own metrics from its registry: a few kilobytes, rendered for every scrape, and
/// the end of the exposition.
pub fn service_exposition(telemetry: &Telemetry, format: Format) -> Vec<u8> {
    written(format, true, true, |out| writer::registry(out, telemetry))
}

fn labels(s: &SeriesSnapshot, status: Option<&str>, window: Option<&str>) -> String {
    let mut text = format!(
        "tenant_id=\"{}\",workflow=\"{}\"",
        escape_label(&s.tenant),
        escape_label(&s.workflow)
    );
    if let Some(status) = status {
        let _ = write!(text, ",status=\"{status}\"");
    }
    if let Some(window) = window {
        let _ = write!(text, ",window=\"{}\"", escape_label(window));
    }
    text
}

#[cfg(test)]
mod tests;
