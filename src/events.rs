//! Every observable event of the service itself, in one place: each logs through `tracing` and
//! bumps its self-metric in the same `emit`, so logs and metrics never disagree.
//!
//! The self-metrics live in a `prometheus::Registry` owned by [`Telemetry`]; the workflow metrics
//! are rendered by `exporter` from the aggregation and appended to them on scrape.

use crate::decode::{DecodeError, RejectReason};
use crate::log_limit::{LogRateLimit, LogRateLimits};
use crate::setting::ConfigError;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a message came from, for logs: Kafka coordinates, or a line of a replayed file.
#[derive(Debug, Clone, Copy)]
pub enum MessageOrigin<'a> {
    Kafka {
        topic: &'a str,
        partition: i32,
        offset: i64,
    },
    File {
        path: &'a str,
        line: u64,
    },
}

impl fmt::Display for MessageOrigin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            MessageOrigin::Kafka {
                topic,
                partition,
                offset,
            } => {
                write!(f, "topic={topic} partition={partition} offset={offset}")
            }
            MessageOrigin::File { path, line } => write!(f, "file={path} line={line}"),
        }
    }
}

/// The service's own metrics, registered once.
pub struct Telemetry {
    pub registry: Registry,
    consumed: IntCounterVec,
    rejected: IntCounterVec,
    duplicates: IntCounter,
    last_message: Gauge,
    lag: IntGaugeVec,
    commits: IntCounterVec,
    rebalances: IntCounterVec,
    assigned_partitions: IntGauge,
    restored_messages: IntCounterVec,
    restore_seconds: GaugeVec,
    revoked_state_dropped: IntCounterVec,
    kafka_errors: IntCounterVec,
    commit_requests: IntCounterVec,
    threshold_transitions: IntCounterVec,
    threshold_evaluation_seconds: Gauge,
    reload_successful: IntGauge,
    reload_success_timestamp: Gauge,
    reloads: IntCounterVec,
    http_connections_open: IntGauge,
    http_connections_refused: IntCounter,
    http_connections_timed_out: IntCounterVec,
    http_pages_rendered: IntCounter,
    http_stale_pages_served: IntCounter,
    rejected_log: LogRateLimit,
    /// One warning a second for each of the HTTP limits: a flood of clients repeats them.
    http_refused_log: LogRateLimit,
    http_timed_out_log: LogRateLimit,
    http_stale_page_log: LogRateLimit,
    http_accept_log: LogRateLimit,
    /// One warning a second per error code: a broker outage repeats the same error many times.
    kafka_error_log: LogRateLimits,
}

impl Telemetry {
    /// `rejected_per_second` limits the "rejected message" warnings (config `log.rejected_messages_per_second`).
    pub fn new(rejected_per_second: u32) -> Telemetry {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        let consumed = counter_vec(
            "hatchet_run_metrics_messages_consumed_total",
            "Messages read from Kafka (or a replayed file), accepted or not.",
            &["topic", "partition"],
        );
        let rejected = counter_vec(
            "hatchet_run_metrics_rejected_messages_total",
            "Messages that were not a valid V1WorkflowRun, by reason; their offsets are committed all the same.",
            &["reason"],
        );
        for reason in RejectReason::ALL {
            rejected.with_label_values(&[reason.as_str()]);
        }
        let commit_requests = counter_vec(
            "hatchet_run_metrics_offset_commit_requests_total",
            "Offset commits asked for, by what asked: scrape (a delivered scrape showed newer offsets), unscraped (none did for kafka.commit_interval), revoke, shutdown.",
            &["trigger"],
        );
        for trigger in CommitTrigger::ALL {
            commit_requests.with_label_values(&[trigger.as_str()]);
        }
        let commits = counter_vec(
            "hatchet_run_metrics_offset_commits_total",
            "Offset commits by result (ok, failed); a failed commit is retried by the next one.",
            &["result"],
        );
        for result in ["ok", "failed"] {
            commits.with_label_values(&[result]);
        }
        let rebalances = counter_vec(
            "hatchet_run_metrics_rebalances_total",
            "Consumer-group rebalances seen by this member, by kind (assign, revoke, error).",
            &["kind"],
        );
        let restored_messages = counter_vec(
            "hatchet_run_metrics_restored_messages_total",
            "Messages read again from before the group's committed offset to rebuild a partition's runs, outcome memory and windows when it was assigned (not counted in any workflow metric), by partition and result (applied, rejected).",
            &["topic", "partition", "result"],
        );
        let revoked_state_dropped = counter_vec(
            "hatchet_run_metrics_revoked_state_dropped_total",
            "Runs and remembered outcomes forgotten because their partition was revoked (the member that takes it over rebuilds them), by kind (runs, outcomes).",
            &["kind"],
        );
        for kind in ["runs", "outcomes"] {
            revoked_state_dropped.with_label_values(&[kind]);
        }
        let kafka_errors = counter_vec(
            "hatchet_run_metrics_kafka_errors_total",
            "Errors reported by the Kafka client (broker down, transport...), by librdkafka error code.",
            &["code"],
        );
        let threshold_transitions = counter_vec(
            "hatchet_run_metrics_threshold_transitions_total",
            "Workflows going into (to=\"breached\") or out of (to=\"normal\") breach of a threshold, by threshold.",
            &["threshold", "to"],
        );
        let reloads = counter_vec(
            "hatchet_run_metrics_config_reloads_total",
            "Config reloads (SIGHUP or a changed file) by result (ok, failed); a failed one leaves the previous thresholds in force.",
            &["result"],
        );
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        let http_connections_timed_out = counter_vec(
            "hatchet_run_metrics_http_connections_timed_out_total",
            "HTTP connections the service closed, by timeout: header_read (no complete request headers within http.header_read_timeout, counting from the connection or from the previous response) or write (a response that made no progress for http.write_timeout).",
            &["timeout"],
        );
        for timeout in [HttpTimeout::HeaderRead, HttpTimeout::Write] {
            http_connections_timed_out.with_label_values(&[timeout.as_str()]);
        }
        let http_connections_open = IntGauge::new(
            "hatchet_run_metrics_http_connections_open",
            "HTTP connections being served (http.max_connections caps it).",
        )
        .expect("static metric definition");
        let http_connections_refused = IntCounter::new(
            "hatchet_run_metrics_http_connections_refused_total",
            "HTTP connections answered 503 and closed at once because http.max_connections were open.",
        )
        .expect("static metric definition");
        let http_pages_rendered = IntCounter::new(
            "hatchet_run_metrics_http_pages_rendered_total",
            "/metrics pages rendered; scrapes at about the same time share one.",
        )
        .expect("static metric definition");
        let http_stale_pages_served = IntCounter::new(
            "hatchet_run_metrics_http_stale_pages_served_total",
            "Scrapes answered with an older page instead of a new render, because slow clients still held http.max_pages pages.",
        )
        .expect("static metric definition");
        let threshold_evaluation_seconds = Gauge::new(
            "hatchet_run_metrics_threshold_evaluation_seconds",
            "How long the last evaluation of the thresholds took (the aggregation is locked for part of it).",
        )
        .expect("static metric definition");
        let reload_successful = IntGauge::new(
            "hatchet_run_metrics_config_last_reload_successful",
            "Whether the last config reload succeeded (1) or was refused (0); the start counts as a successful load.",
        )
        .expect("static metric definition");
        reload_successful.set(1);
        let reload_success_timestamp = Gauge::new(
            "hatchet_run_metrics_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (the start, or a reload).",
        )
        .expect("static metric definition");
        reload_success_timestamp.set(unix_seconds());
        let duplicates = IntCounter::new(
            "hatchet_run_metrics_duplicate_outcomes_total",
            "Terminal updates ignored because the same outcome (run id and finishedAt) was already counted.",
        )
        .expect("static metric definition");
        let last_message = Gauge::new(
            "hatchet_run_metrics_last_message_timestamp_seconds",
            "Unix time at which the last message was processed.",
        )
        .expect("static metric definition");
        let lag = IntGaugeVec::new(
            Opts::new(
                "hatchet_run_metrics_consumer_lag_messages",
                "Messages between the last processed offset and the partition's high watermark, from librdkafka's statistics.",
            ),
            &["topic", "partition"],
        )
        .expect("static metric definition");
        let restore_seconds = GaugeVec::new(
            Opts::new(
                "hatchet_run_metrics_restore_seconds",
                "How long the latest restore of a partition's state took, from its assignment to its committed offset.",
            ),
            &["topic", "partition"],
        )
        .expect("static metric definition");
        let assigned_partitions = IntGauge::new(
            "hatchet_run_metrics_assigned_partitions",
            "Partitions currently assigned to this consumer-group member.",
        )
        .expect("static metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new("hatchet_run_metrics_build_info", "Always 1; labels describe the build."),
            &["version"],
        )
        .expect("static metric definition");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for metric in [
            Box::new(duplicates.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(last_message.clone()),
            Box::new(lag.clone()),
            Box::new(assigned_partitions.clone()),
            Box::new(restore_seconds.clone()),
            Box::new(build_info),
            Box::new(threshold_evaluation_seconds.clone()),
            Box::new(reload_successful.clone()),
            Box::new(reload_success_timestamp.clone()),
            Box::new(http_connections_open.clone()),
            Box::new(http_connections_refused.clone()),
            Box::new(http_pages_rendered.clone()),
            Box::new(http_stale_pages_served.clone()),
        ] {
            registry.register(metric).expect("registered once");
        }
        Telemetry {
            registry,
            consumed,
            rejected,
            duplicates,
            last_message,
            lag,
            commits,
            rebalances,
            assigned_partitions,
            restored_messages,
            restore_seconds,
            revoked_state_dropped,
            kafka_errors,
            commit_requests,
            threshold_transitions,
            threshold_evaluation_seconds,
            reload_successful,
            reload_success_timestamp,
            reloads,
            http_connections_open,
            http_connections_refused,
            http_connections_timed_out,
            http_pages_rendered,
            http_stale_pages_served,
            rejected_log: LogRateLimit::new(rejected_per_second),
            http_refused_log: LogRateLimit::new(1),
            http_timed_out_log: LogRateLimit::new(1),
            http_stale_page_log: LogRateLimit::new(1),
            http_accept_log: LogRateLimit::new(1),
            kafka_error_log: LogRateLimits::default(),
        }
    }

    /// The per-partition consumed counter, looked up once per partition by the source, not per message.
    pub fn consumed_counter(&self, topic: &str, partition: i32) -> IntCounter {
        self.consumed.with_label_values(&[topic, &partition.to_string()])
    }
}

/// `messages` messages of one partition were read and processed (accepted or rejected) at `now_nanos`.
pub struct MessageProcessed<'a> {
    pub counter: &'a IntCounter,
    pub messages: u64,
    pub now_nanos: i64,
}

impl MessageProcessed<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        self.counter.inc_by(self.messages);
        telemetry.last_message.set(self.now_nanos as f64 / 1e9);
    }
}

/// A message was not a valid `V1WorkflowRun`. Counted always, logged at most
/// `log.rejected_messages_per_second` times a second.
pub struct MessageRejected<'a> {
    pub origin: &'a MessageOrigin<'a>,
    pub error: &'a DecodeError,
}

impl MessageRejected<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry
            .rejected
            .with_label_values(&[self.error.reason.as_str()])
            .inc();
        if let Some(suppressed) = telemetry.rejected_log.admit() {
            tracing::warn!(
                origin = %self.origin,
                reason = self.error.reason.as_str(),
                detail = %self.error.detail,
                suppressed_since_last_warning = suppressed,
                "rejected message"
            );
        }
    }
}

/// A terminal update whose outcome was already counted.
pub struct DuplicateOutcome<'a> {
    pub origin: &'a MessageOrigin<'a>,
    pub run_id: &'a str,
}

impl DuplicateOutcome<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.duplicates.inc();
        tracing::debug!(origin = %self.origin, run_id = self.run_id, "outcome already counted");
    }
}

/// The result of one offset commit (interval, revoke or shutdown).
pub struct OffsetsCommitted<'a> {
    pub result: Result<(), &'a dyn fmt::Display>,
}

impl OffsetsCommitted<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        match self.result {
            Ok(()) => {
                telemetry.commits.with_label_values(&["ok"]).inc();
                tracing::trace!("offsets committed");
            }
            Err(error) => {
                telemetry.commits.with_label_values(&["failed"]).inc();
                tracing::warn!(%error, "offset commit failed; the next commit retries");
            }
        }
    }
}

/// Why offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitTrigger {
    /// A delivered scrape showed messages past the committed offsets: exactly those are committed.
    Scrape,
    /// No scrape was delivered for `kafka.commit_interval`: what was processed is committed.
    Unscraped,
    /// Partitions go to another member: what was processed of them is committed first.
    Revoke,
    /// The service stops: what scrapes delivered is committed, and nothing more.
    Shutdown,
}

impl CommitTrigger {
    pub const ALL: [CommitTrigger; 4] = [
        CommitTrigger::Scrape,
        CommitTrigger::Unscraped,
        CommitTrigger::Revoke,
        CommitTrigger::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommitTrigger::Scrape => "scrape",
            CommitTrigger::Unscraped => "unscraped",
            CommitTrigger::Revoke => "revoke",
            CommitTrigger::Shutdown => "shutdown",
        }
    }
}

/// Offsets of these partitions are about to be committed.
pub struct OffsetCommitRequested<'a> {
    pub trigger: CommitTrigger,
    /// `(topic, partition, offset)`: the next offset to read, as committed.
    pub offsets: &'a [(String, i32, i64)],
}

impl OffsetCommitRequested<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry
            .commit_requests
            .with_label_values(&[self.trigger.as_str()])
            .inc();
        tracing::debug!(trigger = self.trigger.as_str(), offsets = ?self.offsets, "committing offsets");
    }
}

/// Partitions were assigned to or revoked from this member.
pub struct Rebalanced<'a> {
    pub kind: &'static str,
    pub partitions: &'a [(String, i32)],
    pub now_assigned: usize,
}

impl Rebalanced<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.rebalances.with_label_values(&[self.kind]).inc();
        telemetry.assigned_partitions.set(self.now_assigned as i64);
        let list: Vec<String> = self.partitions.iter().map(|(t, p)| format!("{t}[{p}]")).collect();
        tracing::info!(kind = self.kind, partitions = %list.join(","), assigned = self.now_assigned, "rebalance");
        if self.kind == "revoke" {
            for (topic, partition) in self.partitions {
                let _ = telemetry.lag.remove_label_values(&[topic, &partition.to_string()]);
            }
        }
    }
}

/// A partition was assigned with history to read again: from `from` (the offset for
/// `now - lookback`) to `until` (the group's committed offset).
pub struct RestoreStarted<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub from: i64,
    pub until: i64,
    /// The topic no longer holds all of the lookback: the restore starts at its oldest message.
    pub retention_shorter: bool,
}

impl RestoreStarted<'_> {
    pub fn emit(self) {
        let (topic, partition, from, until) = (self.topic, self.partition, self.from, self.until);
        tracing::info!(
            topic,
            partition,
            from,
            until,
            messages = until - from,
            "restoring the partition's state from the topic"
        );
        if self.retention_shorter {
            tracing::warn!(
                topic,
                partition,
                oldest = from,
                "the topic retains less than [state] restore_lookback: the restore starts at its oldest message"
            );
        }
    }
}

/// A partition's state could not be restored; it is processed from its committed offset with
/// what this member knows.
pub struct RestoreSkipped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub why: &'a str,
}

impl RestoreSkipped<'_> {
    pub fn emit(self) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            why = self.why,
            "not restoring the partition's state"
        );
    }
}

/// A partition's history up to its committed offset has been read again.
pub struct RestoreFinished<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub applied: u64,
    pub rejected: u64,
    pub seconds: f64,
}

impl RestoreFinished<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        let partition = self.partition.to_string();
        for (result, n) in [("applied", self.applied), ("rejected", self.rejected)] {
            (telemetry.restored_messages)
                .with_label_values(&[self.topic, &partition, result])
                .inc_by(n);
        }
        (telemetry.restore_seconds)
            .with_label_values(&[self.topic, &partition])
            .set(self.seconds);
        tracing::info!(
            topic = self.topic,
            partition = self.partition,
            applied = self.applied,
            rejected = self.rejected,
            seconds = self.seconds,
            "restored the partition's state"
        );
    }
}

/// A revoked partition's runs and remembered outcomes were forgotten.
pub struct RevokedStateDropped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub runs: usize,
    pub outcomes: usize,
}

impl RevokedStateDropped<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        (telemetry.revoked_state_dropped.with_label_values(&["runs"])).inc_by(self.runs as u64);
        (telemetry.revoked_state_dropped.with_label_values(&["outcomes"])).inc_by(self.outcomes as u64);
        tracing::info!(
            topic = self.topic,
            partition = self.partition,
            runs = self.runs,
            outcomes = self.outcomes,
            "forgot the revoked partition's state"
        );
    }
}

/// librdkafka's periodic statistics: consumer lag per assigned partition.
pub struct LagReported {
    pub partitions: Vec<(String, i32, i64)>,
}

impl LagReported {
    pub fn emit(self, telemetry: &Telemetry) {
        for (topic, partition, lag) in &self.partitions {
            telemetry
                .lag
                .with_label_values(&[topic, &partition.to_string()])
                .set(*lag);
        }
        tracing::trace!(partitions = self.partitions.len(), "consumer lag reported");
    }
}

/// An error the Kafka client reported (it keeps retrying by itself). Counted always, logged at
/// most once a second per code.
pub struct KafkaClientError<'a> {
    pub code: &'a str,
    pub reason: &'a str,
}

impl KafkaClientError<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.kafka_errors.with_label_values(&[self.code]).inc();
        let admitted = telemetry.kafka_error_log.admit(self.code);
        if let Some(suppressed) = admitted {
            tracing::warn!(
                code = self.code,
                reason = self.reason,
                suppressed_since_last_warning = suppressed,
                "kafka client error"
            );
        }
    }
}

/// A workflow went into or out of breach of a threshold: one warning per transition.
pub struct ThresholdTransitioned<'a> {
    pub tenant: &'a str,
    pub workflow: &'a str,
    /// The kind of threshold (`failure_ratio`...).
    pub threshold: &'a str,
    /// The rule in force (`default`, an override's name).
    pub rule: &'a str,
    pub breached: bool,
    pub observed: Option<f64>,
    pub limit: f64,
    /// The condition in words (going into breach).
    pub condition: &'a str,
    /// Why it ended, when not because the value came back under the limit.
    pub cause: Option<&'a str>,
}

impl ThresholdTransitioned<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        let to = if self.breached { "breached" } else { "normal" };
        telemetry
            .threshold_transitions
            .with_label_values(&[self.threshold, to])
            .inc();
        let observed = self.observed.map_or_else(|| "none".to_string(), |v| format!("{v}"));
        if self.breached {
            tracing::warn!(
                tenant_id = %self.tenant,
                workflow = %self.workflow,
                threshold = self.threshold,
                rule = %self.rule,
                observed = %observed,
                limit = self.limit,
                condition = %self.condition,
                "threshold breached"
            );
        } else {
            tracing::warn!(
                tenant_id = %self.tenant,
                workflow = %self.workflow,
                threshold = self.threshold,
                rule = %self.rule,
                observed = %observed,
                limit = self.limit,
                cause = self.cause.unwrap_or("back within the limit"),
                "threshold no longer breached"
            );
        }
    }
}

/// One evaluation of the thresholds finished.
pub struct ThresholdsEvaluated {
    pub seconds: f64,
}

impl ThresholdsEvaluated {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.threshold_evaluation_seconds.set(self.seconds);
        tracing::trace!(seconds = self.seconds, "thresholds evaluated");
    }
}

/// A reload applied new thresholds.
pub struct ConfigReloaded<'a> {
    pub trigger: &'a str,
    pub rules: usize,
    /// Sections other than `[thresholds]` that changed: they need a restart.
    pub ignored_changes: &'a [&'a str],
}

impl ConfigReloaded<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.reload_successful.set(1);
        telemetry.reload_success_timestamp.set(unix_seconds());
        telemetry.reloads.with_label_values(&["ok"]).inc();
        tracing::info!(
            trigger = self.trigger,
            rules = self.rules,
            "config reloaded; thresholds applied"
        );
        if !self.ignored_changes.is_empty() {
            tracing::warn!(
                sections = ?self.ignored_changes,
                "only [thresholds] is applied on reload; these changed sections take effect at the next restart"
            );
        }
    }
}

/// A reload was refused: the previous config stays in force.
pub struct ConfigReloadFailed<'a> {
    pub trigger: &'a str,
    pub error: &'a ConfigError,
}

impl ConfigReloadFailed<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.reload_successful.set(0);
        telemetry.reloads.with_label_values(&["failed"]).inc();
        tracing::error!(
            trigger = self.trigger,
            file = %self.error.source_name,
            key = %self.error.key,
            why = %self.error.why,
            "config reload refused; the previous thresholds stay in force"
        );
    }
}

/// Which of the HTTP timeouts closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpTimeout {
    /// `http.header_read_timeout`: no complete request headers in time (a slowloris, or a
    /// kept-alive connection that never sends its next request).
    HeaderRead,
    /// `http.write_timeout`: a response made no progress (a client that does not read).
    Write,
}

impl HttpTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpTimeout::HeaderRead => "header_read",
            HttpTimeout::Write => "write",
        }
    }
}

/// A client's connection is being served.
pub struct HttpConnectionOpened;

impl HttpConnectionOpened {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.http_connections_open.inc();
    }
}

/// A client's connection ended: `timed_out` when one of the HTTP timeouts ended it (counted
/// always, logged at most once a second), `error` for what else went wrong (a client that left
/// mid-request, typically: logged at debug level).
pub struct HttpConnectionClosed<'a> {
    pub peer: SocketAddr,
    pub timed_out: Option<HttpTimeout>,
    pub error: Option<&'a dyn fmt::Display>,
}

impl HttpConnectionClosed<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.http_connections_open.dec();
        let Some(timeout) = self.timed_out else {
            if let Some(error) = self.error {
                tracing::debug!(peer = %self.peer, %error, "HTTP connection ended with an error");
            }
            return;
        };
        telemetry
            .http_connections_timed_out
            .with_label_values(&[timeout.as_str()])
            .inc();
        if let Some(suppressed) = telemetry.http_timed_out_log.admit() {
            tracing::warn!(
                peer = %self.peer,
                timeout = timeout.as_str(),
                suppressed_since_last_warning = suppressed,
                "closed an HTTP connection that timed out (http.{}_timeout)",
                timeout.as_str()
            );
        }
    }
}

/// `http.max_connections` were open: a new one was answered 503 and closed. Counted always,
/// logged at most once a second.
pub struct HttpConnectionRefused {
    pub peer: SocketAddr,
    pub max_connections: usize,
}

impl HttpConnectionRefused {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.http_connections_refused.inc();
        if let Some(suppressed) = telemetry.http_refused_log.admit() {
            tracing::warn!(
                peer = %self.peer,
                max_connections = self.max_connections,
                suppressed_since_last_warning = suppressed,
                "refused an HTTP connection: http.max_connections are open"
            );
        }
    }
}

/// Accepting a connection failed (out of file descriptors, typically); the listener retries.
/// Logged at most once a second.
pub struct HttpAcceptFailed<'a> {
    pub error: &'a std::io::Error,
}

impl HttpAcceptFailed<'_> {
    pub fn emit(self, telemetry: &Telemetry) {
        if let Some(suppressed) = telemetry.http_accept_log.admit() {
            tracing::warn!(error = %self.error, suppressed_since_last_warning = suppressed, "cannot accept an HTTP connection");
        }
    }
}

/// A `/metrics` page was rendered (it is shared by the scrapes of about the same time).
pub struct MetricsPageRendered {
    pub bytes: usize,
    pub seconds: f64,
}

impl MetricsPageRendered {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.http_pages_rendered.inc();
        tracing::debug!(bytes = self.bytes, seconds = self.seconds, "/metrics page rendered");
    }
}

/// Slow clients still held `http.max_pages` pages, so a scrape got the newest of them, `age` old,
/// instead of a new render. Counted always, logged at most once a second.
pub struct StaleMetricsPageServed {
    pub age: Duration,
    pub max_pages: usize,
}

impl StaleMetricsPageServed {
    pub fn emit(self, telemetry: &Telemetry) {
        telemetry.http_stale_pages_served.inc();
        if let Some(suppressed) = telemetry.http_stale_page_log.admit() {
            tracing::warn!(
                age = ?self.age,
                max_pages = self.max_pages,
                suppressed_since_last_warning = suppressed,
                "served an older /metrics page: slow clients still hold http.max_pages pages"
            );
        }
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_are_all_counted_though_logged_once_a_second() {
        let telemetry = Telemetry::new(10);
        for _ in 0..10 {
            KafkaClientError {
                code: "AllBrokersDown",
                reason: "2/2 brokers are down",
            }
            .emit(&telemetry);
        }
        assert_eq!(telemetry.kafka_errors.with_label_values(&["AllBrokersDown"]).get(), 10);
        let limits = &telemetry.kafka_error_log;
        assert_eq!(limits.len(), 1);
        assert!(
            limits.admit_at("AllBrokersDown", 0).is_some(),
            "a new second admits again"
        );
    }

    #[test]
    fn http_connections_are_counted_open_refused_and_timed_out_by_timeout() {
        let telemetry = Telemetry::new(0);
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        for _ in 0..3 {
            HttpConnectionOpened.emit(&telemetry);
        }
        HttpConnectionClosed {
            peer,
            timed_out: None,
            error: None,
        }
        .emit(&telemetry);
        HttpConnectionClosed {
            peer,
            timed_out: Some(HttpTimeout::Write),
            error: None,
        }
        .emit(&telemetry);
        HttpConnectionRefused {
            peer,
            max_connections: 64,
        }
        .emit(&telemetry);
        assert_eq!(telemetry.http_connections_open.get(), 1);
        assert_eq!(telemetry.http_connections_refused.get(), 1);
        assert_eq!(
            telemetry.http_connections_timed_out.with_label_values(&["write"]).get(),
            1
        );
        assert_eq!(
            telemetry
                .http_connections_timed_out
                .with_label_values(&["header_read"])
                .get(),
            0
        );
    }

    #[test]
    fn rejections_are_counted_by_reason() {
        let telemetry = Telemetry::new(0);
        let origin = MessageOrigin::Kafka {
            topic: "t",
            partition: 3,
            offset: 42,
        };
        let error = DecodeError {
            reason: RejectReason::UnknownStatus,
            detail: "PAUSED".into(),
        };
        MessageRejected {
            origin: &origin,
            error: &error,
        }
        .emit(&telemetry);
        MessageRejected {
            origin: &origin,
            error: &error,
        }
        .emit(&telemetry);
        assert_eq!(telemetry.rejected.with_label_values(&["unknown_status"]).get(), 2);
        assert_eq!(telemetry.rejected.with_label_values(&["invalid_json"]).get(), 0);
        assert_eq!(origin.to_string(), "topic=t partition=3 offset=42");
    }
}
