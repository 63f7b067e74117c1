//! The config file: every option, its default and its validation, in one place.
//!
//! One TOML file (`--config PATH`), every key optional. Unknown keys and bad values are refused
//! at start with the file, the key and why. Only `[thresholds]` is read again while running (see
//! `reload`).
//! `config/hatchet-run-metrics.toml` documents every option with its default and must say the same
//! as the doc comments below.

use crate::aggregate::label_value::{self, MIN_LABEL_VALUE_BYTES};
use crate::aggregate::lifecycle::LifecycleLimits;
use crate::aggregate::metadata_labels::MAX_METADATA_LABELS;
use crate::aggregate::native_histogram::{NativeSettings, MAX_SCHEMA};
use crate::aggregate::{outcome_memory::OutcomeMemoryLimits, AggregateSettings, TimestampLimits};
use crate::ids::Uuid128;
use crate::model::V1TaskStatus;
use crate::setting::{nanos, parse_duration};
use crate::thresholds::{OverrideSpec, ThresholdSet, Thresholds, ThresholdsFile, TrackedWindows};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::setting::ConfigError;

pub mod kafka;
pub mod web;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub outcomes: OutcomesConfig,
    pub runs: RunsConfig,
    pub state: StateConfig,
    /// `workflowId` -> the `workflow` label to use for it, instead of the name taken from
    /// `displayName`. Default: empty.
    pub workflow_names: BTreeMap<String, String>,
    pub thresholds: ThresholdsConfig,
    pub log: LogConfig,
    /// The file this config was read from (none for the defaults), to name it in errors.
    #[serde(skip)]
    pub loaded_from: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`. Default `"127.0.0.1:9092"`. Env: `HATCHET_RUN_METRICS_BROKERS`.
    pub brokers: String,
    /// Topics to consume. Default `["hatchet-workflow-runs"]`. Env: `HATCHET_RUN_METRICS_TOPICS`
    /// (comma-separated).
    pub topics: Vec<String>,
    /// Consumer group. Default `"hatchet-run-metrics"`. Env: `HATCHET_RUN_METRICS_GROUP_ID`.
    pub group_id: String,
    /// `group.instance.id`: static membership. A member that restarts with the same id (a pod
    /// restarted after a crash or an OOM kill keeps its name) gets its partitions back at once,
    /// without waiting for its old session to time out and without a rebalance of the others.
    /// Unique per member; set it from the pod name. A member with an id leaves the group only when
    /// its session times out (`session.timeout.ms`, 30s unless `properties` say otherwise), so
    /// its partitions wait that long when it goes for good. Default: none (dynamic membership).
    /// Env: `HATCHET_RUN_METRICS_GROUP_INSTANCE_ID`.
    pub group_instance_id: Option<String>,
    /// Offsets are committed right after (within 100 ms) a scrape of `/metrics` delivered their
    /// messages' effects; when none has for this long, what was processed is committed anyway (a member
    /// nobody scrapes). Keep it well above Prometheus's scrape interval: a commit ahead of what
    /// Prometheus saw makes a crash lose those outcomes from its view. Also committed: on
    /// rebalance (what was processed of the partitions that leave) and at shutdown (what scrapes
    /// delivered). 100ms to 24h. Default `"2m"`.
    #[serde(deserialize_with = "human_duration")]
    pub commit_interval: Duration,
    /// How often librdkafka reports statistics (consumer lag, broker state), 100ms to 24h.
    /// Default `"5s"`.
    #[serde(deserialize_with = "human_duration")]
    pub statistics_interval: Duration,
    /// Larger messages are rejected as `too_large` without being parsed. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Threads that decode the messages of a batch together, 1 to 64; counting stays on one
    /// thread, in order, so the figures are the same either way. More than one pays when the
    /// sidecar has cores to spare (decoding is most of its work); beside a broker on the same
    /// cores it gains nothing. With more than one, batches grow to 1,024 messages per thread.
    /// Default 1.
    pub decode_threads: usize,
    /// Any librdkafka property, passed through as is (SASL, TLS, fetch tuning...). Default: empty;
    /// unless set here, the service uses `auto.offset.reset = "earliest"` and
    /// `fetch.queue.backoff.ms = "5"`. The keys this service manages itself are refused, and so is
    /// any name or value librdkafka refuses (checked at validation, without connecting). The value
    /// of a secret (see `config::kafka::is_secret`) is never printed.
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`. Default `"0.0.0.0:9477"`: every interface,
    /// as a sidecar is scraped from outside its pod; narrow it to the one address Prometheus
    /// reaches where you can. Env: `HATCHET_RUN_METRICS_LISTEN`.
    pub listen: SocketAddr,
    /// At most this many connections are served at once; a further one is answered 503 and
    /// closed (`hatchet_run_metrics_http_connections_refused_total`). The probes count too. Default 64.
    pub max_connections: usize,
    /// A client that has not sent complete request headers this long after connecting, or after
    /// its previous response, is disconnected. Default `"10s"`.
    #[serde(deserialize_with = "human_duration")]
    pub header_read_timeout: Duration,
    /// A response that makes no progress this long (the client does not read) is abandoned and
    /// its connection closed. Default `"30s"`.
    #[serde(deserialize_with = "human_duration")]
    pub write_timeout: Duration,
    /// Scrapes within this long of a `/metrics` render share its page instead of rendering again
    /// (a Prometheus pair scraping together). `"0s"`: only scrapes during a render share it.
    /// Default `"1s"`.
    #[serde(deserialize_with = "human_duration")]
    pub page_max_age: Duration,
    /// At most this many distinct `/metrics` pages are in memory at once, the one being rendered
    /// included; when slow clients still hold that many, a scrape gets the newest of them
    /// (`hatchet_run_metrics_http_stale_pages_served_total`). At least 2. Default 3.
    pub max_pages: usize,
    /// Protobuf scrapes get the duration and queue-wait histograms' classic buckets beside their
    /// native ones, for dashboards built on `_bucket` series during a migration (the text
    /// formats always get the classic buckets, and only them). Default `true`.
    pub protobuf_classic_buckets: bool,
    /// A web config file in the format of Prometheus's exporter toolkit (`--web.config.file`):
    /// `tls_server_config` (certificate and key, reloaded when they change; a client CA for
    /// mutual TLS), `basic_auth_users` (bcrypt hashes) and `http_server_config.headers`. Basic
    /// auth guards `/metrics`; `/healthz` and `/readyz` answer without it, for probes. A relative
    /// path is taken from the working directory, paths inside the file from its folder. Default:
    /// none (plain HTTP, no authentication).
    pub web_config_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Upper bounds of `hatchet_workflow_run_duration_seconds`, strictly increasing. Default: 5 ms to
    /// one day (22 buckets).
    pub duration_buckets_seconds: Vec<f64>,
    /// Upper bounds of `hatchet_workflow_run_queue_seconds`, strictly increasing. Default: the same
    /// 5 ms to one day as the durations.
    pub queue_buckets_seconds: Vec<f64>,
    /// At most this many workflow ids (all tenants together) get series of their own; updates of
    /// workflows beyond it are counted in their tenant's `workflow="__overflow__"` series (in
    /// `tenant_id="__overflow__"` for a tenant without any series yet), and in
    /// `hatchet_run_metrics_overflow_updates_total`. Default 10000.
    pub max_workflows: usize,
    /// A workflow without any update for this long drops out of the exposition and frees its
    /// memory (its counters restart from zero if it comes back). Default `"48h"`: a workflow that
    /// runs once a day, even with a day skipped, stays.
    #[serde(deserialize_with = "human_duration")]
    pub idle_expiry: Duration,
    /// `additionalMetadata` keys that become extra labels of `hatchet_workflow_runs_total` and
    /// `hatchet_workflow_run_duration_seconds` (an absent key gives an empty value). At most 4, each
    /// a valid Prometheus label name. Default: none.
    pub metadata_labels: Vec<String>,
    /// Distinct values per metadata label; further values fold into `__overflow__`. Default 100.
    pub metadata_label_max_values: usize,
    /// Quantiles of `hatchet_workflow_run_duration_window_seconds`, each in 0..=1. Default
    /// `[0.5, 0.9, 0.95, 0.99]`.
    pub quantiles: Vec<f64>,
    /// Windows of `hatchet_workflow_run_duration_window_seconds`, each also its `window` label.
    /// Default: the same as `failure_ratio_windows`.
    pub quantile_windows: Option<Vec<String>>,
    /// Outcome statuses that get windowed duration quantiles. Default `["COMPLETED"]`.
    pub quantile_statuses: Vec<String>,
    /// Queue-wait quantiles over `quantile_windows` too (all outcomes together), as
    /// `hatchet_workflow_run_queue_window_seconds`; `queue_wait_quantile` thresholds need them.
    /// They cost about as much memory as one more quantile status. Default `false`.
    pub queue_wait_quantiles: bool,
    /// Windows of `hatchet_workflow_failure_ratio`, each also its `window` label. Default
    /// `["5m", "1h"]`.
    pub failure_ratio_windows: Vec<String>,
    /// Longest label value taken from a message (the workflow name from `displayName`, metadata
    /// values), in bytes, 32 to 4096. A longer value keeps its first bytes and ends in `~` and 16
    /// hexadecimal digits of a hash of the whole value, so distinct values stay distinct; counted
    /// in `hatchet_run_metrics_label_values_altered_total{why="too_long"}`. Control characters
    /// and U+2028/U+2029 in such values become U+FFFD (`why="control_characters"`). Default 128.
    pub max_label_value_bytes: usize,
    /// A `startedAt`, `finishedAt` or `createdAt` later than the wall clock by more than this is
    /// not believed: taken as absent and counted in
    /// `hatchet_run_metrics_implausible_values_total{field}`. Default `"10m"`.
    #[serde(deserialize_with = "human_duration")]
    pub timestamp_max_ahead: Duration,
    /// The same for a timestamp earlier than the wall clock by more than this (not applied by
    /// `replay`, whose files may be old). Durations from `startedAt` to `finishedAt` over a year
    /// are not believed either (`field="duration"`). Default `"3650d"`.
    #[serde(deserialize_with = "human_duration")]
    pub timestamp_max_age: Duration,
    /// Native (exponential) buckets of `hatchet_workflow_run_duration_seconds` and
    /// `_queue_seconds`, served to protobuf scrapes (Prometheus with native histograms on):
    /// each bucket `2^(2^-schema)` wide, 0.54% at 7, 1.09% at 6. 0 to 8; `-1` turns them off.
    /// Default 7.
    pub native_histogram_schema: i8,
    /// At most this many native buckets per histogram: past it, the histogram's schema is
    /// lowered by one (its buckets merge in pairs), as Prometheus's client libraries do. 8 to
    /// 10000. Default 320 (2.5 octaves of durations at schema 7, 5 at 6).
    pub native_histogram_max_buckets: usize,
    /// Each bucket of `hatchet_workflow_run_duration_seconds` keeps the run id (`metadata.id`) of
    /// its latest observation, served as an exemplar (`run_id`) to OpenMetrics and protobuf
    /// scrapes, so that a dashboard goes from a slow bucket to the run. About 32 bytes per bucket
    /// of each status. Default `true`.
    pub exemplars: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutcomesConfig {
    /// How many counted outcomes are remembered to recognise redeliveries; at the cap the oldest is
    /// forgotten (and counted in `hatchet_run_metrics_outcomes_forgotten_total{why="cap"}`).
    /// Default 1000000 (about 93 MB resident at the cap, measured by `cargo bench --bench memory`).
    pub max_remembered: usize,
    /// How long a counted outcome is remembered. Default `"6h"`.
    #[serde(deserialize_with = "human_duration")]
    pub max_age: Duration,
}

/// `[state]`: rebuilding a partition's runs, outcome memory and windows from the topic when the
/// partition is assigned (at start and at every rebalance).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// How far back before the group's committed offset a newly assigned partition is read again
    /// (from the offset for `now - restore_lookback`, or the oldest message the topic retains),
    /// to rebuild its state without counting anything again. `"0s"` turns restoring off. Default:
    /// the longer of `runs.max_age` and the longest window, so that a restart loses no run still
    /// tracked and no outcome still in a window; at high rates that is a lot of history to read
    /// (`scripts/bench-e2e` restored about 400,000 messages a second on 2 cores), so shorten
    /// `runs.max_age` or this.
    #[serde(deserialize_with = "human_duration_option")]
    pub restore_lookback: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// Runs tracked for `hatchet_workflow_runs_in_flight`, the oldest running run, retries and
    /// replays; at the cap finished runs are forgotten first, then the longest unseen in flight
    /// (`hatchet_run_metrics_runs_forgotten_total{why="cap"}`). About 92 bytes each: the default
    /// 1000000 costs about 90 MB when full.
    pub max_tracked: usize,
    /// A run not seen for this long is forgotten (`why="age"`): a run stuck RUNNING shows in the
    /// oldest-running age until then (or until its workflow drops out after
    /// `metrics.idle_expiry`, when that is shorter). Default `"24h"`.
    #[serde(deserialize_with = "human_duration")]
    pub max_age: Duration,
}

impl Default for RunsConfig {
    fn default() -> RunsConfig {
        RunsConfig {
            max_tracked: 1_000_000,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[thresholds]`: what healthy means per workflow. The only section applied again on reload
/// (SIGHUP, or an edit of the file); see `config/thresholds.toml` for every field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdsConfig {
    /// A file holding `default` and `overrides` instead of this section (relative to this config
    /// file's folder). Default: none, the thresholds are here.
    pub file: Option<PathBuf>,
    /// How often the sidecar evaluates the thresholds. Default `"15s"`.
    #[serde(deserialize_with = "human_duration")]
    pub evaluation_interval: Duration,
    /// The thresholds of every workflow that no override claims. Default: none.
    pub default: ThresholdSet,
    /// Thresholds per workflow name (exact or glob) and optionally tenant. Default: none.
    pub overrides: Vec<OverrideSpec>,
}

impl Default for ThresholdsConfig {
    fn default() -> ThresholdsConfig {
        ThresholdsConfig {
            file: None,
            evaluation_interval: Duration::from_secs(15),
            default: ThresholdSet::default(),
            overrides: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, overridden by `RUST_LOG`; one naming no level is refused (it would
    /// silence every warning: `"off"` says so). Default `"info"`.
    pub level: String,
    /// At most this many rejected-message warnings per second; the rest are counted and their
    /// number given in the next warning; 0 turns the warnings off (rejections are still counted in
    /// `hatchet_run_metrics_rejected_messages_total`). Default 10.
    pub rejected_messages_per_second: u32,
}

pub const DEFAULT_DURATION_BUCKETS: [f64; 22] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    7200.0, 21600.0, 43200.0, 86400.0,
];

impl Default for KafkaConfig {
    fn default() -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["hatchet-workflow-runs".into()],
            group_id: "hatchet-run-metrics".into(),
            group_instance_id: None,
            commit_interval: Duration::from_secs(120),
            statistics_interval: Duration::from_secs(5),
            max_message_bytes: 16 << 20,
            decode_threads: 1,
            properties: BTreeMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9477)),
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            page_max_age: Duration::from_secs(1),
            max_pages: 3,
            protobuf_classic_buckets: true,
            web_config_file: None,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            duration_buckets_seconds: DEFAULT_DURATION_BUCKETS.to_vec(),
            queue_buckets_seconds: DEFAULT_DURATION_BUCKETS.to_vec(),
            max_workflows: 10_000,
            quantiles: vec![0.5, 0.9, 0.95, 0.99],
            quantile_windows: None,
            quantile_statuses: vec!["COMPLETED".into()],
            queue_wait_quantiles: false,
            metadata_labels: Vec::new(),
            metadata_label_max_values: 100,
            idle_expiry: Duration::from_secs(48 * 3600),
            failure_ratio_windows: vec!["5m".into(), "1h".into()],
            max_label_value_bytes: 128,
            native_histogram_schema: 7,
            native_histogram_max_buckets: 320,
            exemplars: true,
            timestamp_max_ahead: Duration::from_secs(600),
            timestamp_max_age: Duration::from_secs(3650 * 86400),
        }
    }
}

impl Default for OutcomesConfig {
    fn default() -> OutcomesConfig {
        OutcomesConfig {
            max_remembered: 1_000_000,
            max_age: Duration::from_secs(6 * 3600),
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: "info".into(),
            rejected_messages_per_second: 10,
        }
    }
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn human_duration_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    human_duration(d).map(Some)
}

/// Window lengths must parse, lie between 1s and 31 days, and not repeat.
fn window_lengths(key: &str, windows: &[String]) -> Result<Vec<(String, i64)>, ConfigError> {
    if windows.is_empty() {
        return Err(ConfigError::at(key, "must list at least one window"));
    }
    let mut lengths: Vec<(String, i64)> = Vec::new();
    for (i, text) in windows.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let length = parse_duration(text).map_err(|why| ConfigError::at(&at, why))?;
        if length < Duration::from_secs(1) || length > Duration::from_secs(31 * 86400) {
            return Err(ConfigError::at(at, format!("{text:?} must lie between 1s and 31 days")));
        }
        let length = nanos(length);
        if lengths.iter().any(|(_, l)| *l == length) {
            return Err(ConfigError::at(at, format!("{text:?} repeats an earlier window")));
        }
        lengths.push((text.trim().to_string(), length));
    }
    Ok(lengths)
}

/// Histogram bounds must be finite, non-negative and strictly increasing: `(index, why)` if not.
fn check_buckets(buckets: &[f64]) -> Result<(), (Option<usize>, String)> {
    if buckets.is_empty() {
        return Err((None, "must list at least one bucket".into()));
    }
    for (i, le) in buckets.iter().enumerate() {
        if !le.is_finite() || *le < 0.0 {
            let why = format!("{le} is not a finite, non-negative number of seconds (+Inf is always added)");
            return Err((Some(i), why));
        }
        if i > 0 && buckets[i - 1] >= *le {
            let why = format!("buckets must be strictly increasing, {le} follows {}", buckets[i - 1]);
            return Err((Some(i), why));
        }
    }
    Ok(())
}

/// librdkafka properties that this service sets itself: overriding them would break its
/// guarantees (offsets committed only once a scrape delivered their effect) or duplicate a key
/// of its own.
const MANAGED_PROPERTIES: [(&str, &str); 7] = [
    ("bootstrap.servers", "set `kafka.brokers` instead"),
    ("group.id", "set `kafka.group_id` instead"),
    ("group.instance.id", "set `kafka.group_instance_id` instead"),
    (
        "enable.auto.offset.store",
        "offsets are committed only once a scrape delivered their effect",
    ),
    (
        "enable.auto.commit",
        "offsets are committed when a scrape has delivered their effect (see `kafka.commit_interval`)",
    ),
    ("auto.commit.interval.ms", "set `kafka.commit_interval` instead"),
    ("statistics.interval.ms", "set `kafka.statistics_interval` instead"),
];

impl Config {
    /// Reads and validates `path`, then applies environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            key: "(file)".into(),
            why: format!("cannot read it: {e}"),
        })?;
        let mut config = Config::parse(&text, &name)?;
        config.loaded_from = Some(path.to_path_buf());
        if let Some(file) = &mut config.thresholds.file {
            *file = beside(path, file);
        }
        config.apply_env(|k| std::env::var(k).ok())?;
        config.load_thresholds()?;
        Ok(config)
    }

    /// The thresholds, validated against the windows this config tracks: from
    /// `[thresholds]`, or read from the file `thresholds.file` names.
    pub fn load_thresholds(&self) -> Result<Thresholds, ConfigError> {
        let tracked = self.tracked_windows();
        match &self.thresholds.file {
            None => {
                let inline = ThresholdsFile {
                    default: self.thresholds.default.clone(),
                    overrides: self.thresholds.overrides.clone(),
                };
                Thresholds::from_file(&inline, "thresholds.", &tracked).map_err(|e| e.in_source(self.source_name()))
            }
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    source_name: name.clone(),
                    key: "(file)".into(),
                    why: format!("cannot read it (named by thresholds.file): {e}"),
                })?;
                let file: ThresholdsFile = deserialize_toml(&text, &name)?;
                Thresholds::from_file(&file, "", &tracked).map_err(|e| e.in_source(name))
            }
        }
    }

    /// The web config file `http.web_config_file` names, checked (none: plain HTTP, no auth).
    pub fn load_web_config(&self) -> Result<Option<web::WebConfig>, ConfigError> {
        (self.http.web_config_file.as_deref())
            .map(web::WebConfig::load)
            .transpose()
    }

    /// The file this config came from, as errors name it (`config` for the defaults).
    pub fn source_name(&self) -> String {
        (self.loaded_from.as_ref()).map_or_else(|| "config".into(), |p| p.display().to_string())
    }

    /// What the thresholds may refer to: the windows and statuses `[metrics]` tracks.
    pub fn tracked_windows(&self) -> TrackedWindows {
        let settings = self.aggregate_settings();
        TrackedWindows {
            failure_ratio_windows: settings.failure_ratio_windows,
            quantile_windows: settings.quantile_windows,
            quantile_statuses: settings.quantile_statuses,
            queue_wait_quantiles: self.metrics.queue_wait_quantiles,
        }
    }

    /// The defaults, with environment overrides: what runs when no file is given.
    pub fn from_env_only() -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Parses and validates TOML text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let config: Config = deserialize_toml(text, source_name)?;
        config.validate(source_name)?;
        if config.thresholds.file.is_none() {
            config.load_thresholds().map_err(|e| ConfigError {
                source_name: source_name.into(),
                ..e
            })?;
        }
        Ok(config)
    }

    /// Environment overrides for what differs between deployments of one config file.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("HATCHET_RUN_METRICS_BROKERS") {
            self.kafka.brokers = v;
        }
        if let Some(v) = var("HATCHET_RUN_METRICS_TOPICS") {
            self.kafka.topics = v
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
        }
        if let Some(v) = var("HATCHET_RUN_METRICS_GROUP_ID") {
            self.kafka.group_id = v;
        }
        if let Some(v) = var("HATCHET_RUN_METRICS_GROUP_INSTANCE_ID") {
            self.kafka.group_instance_id = Some(v);
        }
        if let Some(v) = var("HATCHET_RUN_METRICS_LISTEN") {
            self.http.listen = v.parse().map_err(|e| ConfigError {
                source_name: "environment".into(),
                key: "HATCHET_RUN_METRICS_LISTEN".into(),
                why: format!("{v:?} is not an address like 0.0.0.0:9477 ({e})"),
            })?;
        }
        self.validate("environment")
    }

    fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, why: String| Err(ConfigError::at(key, why).in_source(source_name));
        if self.kafka.brokers.trim().is_empty() {
            return fail("kafka.brokers", "must name at least one broker (host:port)".into());
        }
        if self.kafka.topics.is_empty() || self.kafka.topics.iter().any(|t| t.trim().is_empty()) {
            return fail("kafka.topics", "must list at least one topic, none empty".into());
        }
        if self.kafka.group_id.trim().is_empty() {
            return fail("kafka.group_id", "must not be empty".into());
        }
        if (self.kafka.group_instance_id.as_ref()).is_some_and(|id| id.trim().is_empty()) {
            return fail(
                "kafka.group_instance_id",
                "must not be empty (leave it out for dynamic membership)".into(),
            );
        }
        for (key, interval) in [
            ("kafka.commit_interval", self.kafka.commit_interval),
            ("kafka.statistics_interval", self.kafka.statistics_interval),
        ] {
            // librdkafka takes both in milliseconds, up to a day.
            if interval < Duration::from_millis(100) || interval > Duration::from_secs(86_400) {
                return fail(key, "must lie between 100ms and 24h".into());
            }
        }
        if self.kafka.max_message_bytes == 0 {
            return fail("kafka.max_message_bytes", "must be positive".into());
        }
        if !(1..=64).contains(&self.kafka.decode_threads) {
            return fail("kafka.decode_threads", "must lie between 1 and 64".into());
        }
        for (key, why) in MANAGED_PROPERTIES {
            if self.kafka.properties.contains_key(key) {
                return fail(
                    &format!("kafka.properties.\"{key}\""),
                    format!("managed by the service: {why}"),
                );
            }
        }
        // librdkafka takes C strings: a NUL byte would cut them, and is refused only at run time.
        let nul = "must not contain a NUL byte".to_string();
        let instance_id = self.kafka.group_instance_id.clone().unwrap_or_default();
        for (key, text) in [
            ("kafka.brokers", &self.kafka.brokers),
            ("kafka.group_id", &self.kafka.group_id),
            ("kafka.group_instance_id", &instance_id),
        ] {
            if text.contains('\0') {
                return fail(key, nul);
            }
        }
        if let Some(i) = self.kafka.topics.iter().position(|t| t.contains('\0')) {
            return fail(&format!("kafka.topics[{i}]"), nul);
        }
        for (name, value) in &self.kafka.properties {
            if name.contains('\0') || value.contains('\0') {
                return fail(
                    &format!("kafka.properties.{name:?}"),
                    format!("{nul} (in its name or its value)"),
                );
            }
        }
        if let Some(refused) = kafka::refused_setting(&self.kafka) {
            return Err(refused.in_source(source_name));
        }
        for (key, buckets) in [
            (
                "metrics.duration_buckets_seconds",
                &self.metrics.duration_buckets_seconds,
            ),
            ("metrics.queue_buckets_seconds", &self.metrics.queue_buckets_seconds),
        ] {
            if let Err((at, why)) = check_buckets(buckets) {
                return fail(&at.map_or_else(|| key.to_string(), |i| format!("{key}[{i}]")), why);
            }
        }
        if self.metrics.metadata_labels.len() > MAX_METADATA_LABELS {
            return fail(
                "metrics.metadata_labels",
                format!("at most {MAX_METADATA_LABELS} labels"),
            );
        }
        for (i, name) in self.metrics.metadata_labels.iter().enumerate() {
            let key = format!("metrics.metadata_labels[{i}]");
            let valid = name
                .chars()
                .enumerate()
                .all(|(at, c)| c == '_' || c.is_ascii_alphabetic() || (at > 0 && c.is_ascii_digit()));
            if name.is_empty() || !valid || name.starts_with("__") {
                return fail(
                    &key,
                    format!("{name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"),
                );
            }
            if ["tenant_id", "workflow", "status", "le", "window", "quantile"].contains(&name.as_str()) {
                return fail(&key, format!("{name:?} is a label of its own already"));
            }
            if self.metrics.metadata_labels[..i].contains(name) {
                return fail(&key, format!("{name:?} is listed twice"));
            }
        }
        if !(1..=10_000).contains(&self.metrics.metadata_label_max_values) {
            return fail(
                "metrics.metadata_label_max_values",
                "must lie between 1 and 10000".into(),
            );
        }
        if self.metrics.max_workflows == 0 {
            return fail("metrics.max_workflows", "must be at least 1".into());
        }
        if !(MIN_LABEL_VALUE_BYTES..=4096).contains(&self.metrics.max_label_value_bytes) {
            return fail(
                "metrics.max_label_value_bytes",
                format!("must lie between {MIN_LABEL_VALUE_BYTES} and 4096"),
            );
        }
        if !(-1..=MAX_SCHEMA).contains(&self.metrics.native_histogram_schema) {
            return fail(
                "metrics.native_histogram_schema",
                "must lie between 0 and 8 (Prometheus's schemas), or be -1 (off)".into(),
            );
        }
        if !(8..=10_000).contains(&self.metrics.native_histogram_max_buckets) {
            return fail(
                "metrics.native_histogram_max_buckets",
                "must lie between 8 and 10000".into(),
            );
        }
        if self.metrics.timestamp_max_ahead < Duration::from_secs(1) {
            return fail("metrics.timestamp_max_ahead", "must be at least 1s".into());
        }
        if self.metrics.timestamp_max_age < Duration::from_secs(86400) {
            return fail("metrics.timestamp_max_age", "must be at least 1d".into());
        }
        if self.metrics.idle_expiry < Duration::from_secs(60) {
            return fail("metrics.idle_expiry", "must be at least 1m".into());
        }
        window_lengths("metrics.failure_ratio_windows", &self.metrics.failure_ratio_windows)
            .map_err(|e| e.in_source(source_name))?;
        if let Some(windows) = &self.metrics.quantile_windows {
            window_lengths("metrics.quantile_windows", windows).map_err(|e| e.in_source(source_name))?;
        }
        for (i, q) in self.metrics.quantiles.iter().enumerate() {
            if !(0.0..=1.0).contains(q) {
                return fail(
                    &format!("metrics.quantiles[{i}]"),
                    format!("{q} is not a quantile between 0 and 1"),
                );
            }
            if i > 0 && self.metrics.quantiles[i - 1] >= *q {
                return fail(
                    &format!("metrics.quantiles[{i}]"),
                    "quantiles must be strictly increasing".into(),
                );
            }
        }
        for (i, status) in self.metrics.quantile_statuses.iter().enumerate() {
            if !V1TaskStatus::from_wire(status).is_some_and(V1TaskStatus::is_terminal) {
                return fail(
                    &format!("metrics.quantile_statuses[{i}]"),
                    format!("{status:?} is not an outcome status (COMPLETED, FAILED, CANCELLED)"),
                );
            }
            if self.metrics.quantile_statuses[..i].contains(status) {
                return fail(
                    &format!("metrics.quantile_statuses[{i}]"),
                    format!("{status:?} is listed twice"),
                );
            }
        }
        if self.outcomes.max_remembered == 0 {
            return fail("outcomes.max_remembered", "must be at least 1".into());
        }
        if self.runs.max_tracked == 0 || self.runs.max_tracked > u32::MAX as usize {
            return fail("runs.max_tracked", "must lie between 1 and 4294967295".into());
        }
        if self.runs.max_age < Duration::from_secs(1) {
            return fail("runs.max_age", "must be at least 1s".into());
        }
        if self.outcomes.max_age < Duration::from_secs(1) {
            return fail("outcomes.max_age", "must be at least 1s".into());
        }
        let mut ids = std::collections::HashSet::new();
        for (id, name) in &self.workflow_names {
            let Some(uuid) = Uuid128::parse(id) else {
                return fail(
                    &format!("workflow_names.\"{id}\""),
                    "the key must be a workflowId (a UUID)".into(),
                );
            };
            if !ids.insert(uuid) {
                return fail(
                    &format!("workflow_names.\"{id}\""),
                    "names a workflowId already named (in another case)".into(),
                );
            }
            if name.trim().is_empty() {
                return fail(&format!("workflow_names.\"{id}\""), "the name must not be empty".into());
            }
            if label_value::sanitize(name, self.metrics.max_label_value_bytes).1.any() {
                return fail(
                    &format!("workflow_names.\"{id}\""),
                    "the name must be at most metrics.max_label_value_bytes long, without control characters".into(),
                );
            }
        }
        if self.thresholds.file.is_some()
            && (self.thresholds.default != ThresholdSet::default() || !self.thresholds.overrides.is_empty())
        {
            return fail(
                "thresholds.file",
                "the thresholds come from this file, so [thresholds.default] and [[thresholds.overrides]] here would be ignored: keep them in one place".into(),
            );
        }
        if !(1..=100_000).contains(&self.http.max_connections) {
            return fail("http.max_connections", "must lie between 1 and 100000".into());
        }
        for (key, timeout) in [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.write_timeout", self.http.write_timeout),
        ] {
            if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(3600) {
                return fail(key, "must lie between 100ms and 1h".into());
            }
        }
        if self.http.page_max_age > Duration::from_secs(60) {
            return fail(
                "http.page_max_age",
                "must be at most 1m: scrapes would see metrics that old".into(),
            );
        }
        if !(2..=100).contains(&self.http.max_pages) {
            return fail(
                "http.max_pages",
                "must lie between 2 and 100 (with 1, one slow client would freeze the metrics it holds)".into(),
            );
        }
        if self.thresholds.evaluation_interval < Duration::from_millis(100) {
            return fail("thresholds.evaluation_interval", "must be at least 100ms".into());
        }
        if self.log.level.split(',').all(|directive| directive.trim().is_empty()) {
            return fail(
                "log.level",
                format!(
                    "{:?} names no level: it would silence every warning (say \"off\" for that)",
                    self.log.level
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return fail(
                "log.level",
                format!("{:?} is not a tracing filter like \"info\"", self.log.level),
            );
        }
        Ok(())
    }

    /// How far back a newly assigned partition is read again (`[state] restore_lookback`, or its
    /// default); zero when restoring is off.
    pub fn restore_lookback(&self) -> Duration {
        self.state.restore_lookback.unwrap_or_else(|| {
            let settings = self.aggregate_settings();
            let longest_window = (settings.failure_ratio_windows.iter())
                .chain(&settings.quantile_windows)
                .map(|(_, nanos)| Duration::from_nanos(u64::try_from(*nanos).unwrap_or(0)))
                .max()
                .unwrap_or_default();
            self.runs.max_age.max(longest_window)
        })
    }

    /// The aggregation's view of this config (valid by construction: `validate` ran).
    pub fn aggregate_settings(&self) -> AggregateSettings {
        AggregateSettings {
            duration_buckets_seconds: self.metrics.duration_buckets_seconds.clone(),
            queue_buckets_seconds: self.metrics.queue_buckets_seconds.clone(),
            failure_ratio_windows: window_lengths("", &self.metrics.failure_ratio_windows).unwrap_or_default(),
            quantiles: self.metrics.quantiles.clone(),
            quantile_windows: window_lengths(
                "",
                self.metrics
                    .quantile_windows
                    .as_ref()
                    .unwrap_or(&self.metrics.failure_ratio_windows),
            )
            .unwrap_or_default(),
            quantile_statuses: self
                .metrics
                .quantile_statuses
                .iter()
                .filter_map(|s| V1TaskStatus::from_wire(s))
                .collect(),
            queue_wait_quantiles: self.metrics.queue_wait_quantiles,
            workflow_names: (self.workflow_names.iter())
                .filter_map(|(id, name)| Some((Uuid128::parse(id)?, name.clone())))
                .collect(),
            outcome_memory: OutcomeMemoryLimits {
                max_entries: self.outcomes.max_remembered,
                max_age_nanos: nanos(self.outcomes.max_age),
            },
            lifecycle: LifecycleLimits {
                max_runs: self.runs.max_tracked,
                max_age_nanos: nanos(self.runs.max_age),
            },
            max_workflows: self.metrics.max_workflows,
            metadata_labels: self.metrics.metadata_labels.clone(),
            metadata_label_max_values: self.metrics.metadata_label_max_values,
            idle_expiry_nanos: nanos(self.metrics.idle_expiry),
            max_label_value_bytes: self.metrics.max_label_value_bytes,
            timestamps: TimestampLimits {
                max_ahead_nanos: nanos(self.metrics.timestamp_max_ahead),
                max_age_nanos: nanos(self.metrics.timestamp_max_age),
            },
            exemplars: self.metrics.exemplars,
            native_histograms: (self.metrics.native_histogram_schema >= 0).then_some(NativeSettings {
                schema: self.metrics.native_histogram_schema,
                max_buckets: self.metrics.native_histogram_max_buckets,
            }),
        }
    }
}

/// `file` as named in the config at `config`: a relative path is taken from the config's folder.
pub fn beside(config: &Path, file: &Path) -> PathBuf {
    match file.is_relative() {
        true => config.parent().unwrap_or(Path::new("")).join(file),
        false => file.to_path_buf(),
    }
}

/// TOML text into `T`, with the key path, line and column of the first error.
fn deserialize_toml<T: serde::de::DeserializeOwned>(text: &str, source_name: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let mut why = inner.message().trim().to_string();
        if why.is_empty() {
            // Syntax errors carry their words only in the rendered report, around a snippet.
            let report = inner.to_string();
            let words: Vec<&str> = (report.lines().map(str::trim))
                .filter(|l| !l.is_empty() && !l.contains('|') && !l.starts_with("TOML parse error"))
                .collect();
            why = words.join("; ");
        }
        if why.is_empty() {
            why = "not valid TOML: a value is missing or unfinished".into();
        }
        // One line: the error is also logged, and a reload's log line must not break in two.
        why = why.lines().map(str::trim).collect::<Vec<_>>().join("; ");
        let mut at_key = None;
        if let Some(span) = inner.span() {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            why.push_str(&format!(" (line {line}, column {column})"));
            at_key = key_at(text, before.len());
        }
        let key = match key.as_str() {
            // An error of the TOML syntax (a number beyond 64 bits, say) has no path: read it off the text.
            "." => at_key.unwrap_or_else(|| "(top level)".into()),
            _ => key,
        };
        // The TOML reader quotes the value it refused ("invalid type: integer `123456`"): never
        // that of a secret.
        let property = key.strip_prefix("kafka.properties.").map(|name| name.trim_matches('"'));
        if property.is_some_and(kafka::is_secret) {
            why = "must be a string (the value is not shown: it may be a secret)".into();
        }
        ConfigError {
            source_name: source_name.into(),
            key,
            why,
        }
    })
}

/// The key the TOML text at byte `offset` belongs to, read off the text: the key on its line (or,
/// inside a value written over several lines, the key above it began with) under the `[table]`
/// header above. `None` at the top level without a key, or on a header's own line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut lines = text[..line_end].lines().rev().map(str::trim);
    if lines.clone().next().is_some_and(|line| line.starts_with('[')) {
        return None;
    }
    let mut key = None;
    for line in lines.by_ref() {
        if line.starts_with('[') {
            let table = line.trim_start_matches('[').split(']').next().unwrap_or("").trim();
            return Some(key.map_or_else(|| table.to_string(), |key| format!("{table}.{key}")));
        }
        if key.is_none() && !line.starts_with('#') {
            key = line
                .split_once('=')
                .map(|(key, _)| key.trim())
                .filter(|key| !key.is_empty());
        }
    }
    key.map(str::to_string)
}

/// Where the config comes from: `--config`, else `HATCHET_RUN_METRICS_CONFIG`, else the defaults.
pub fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path
        .cloned()
        .or_else(|| std::env::var_os("HATCHET_RUN_METRICS_CONFIG").map(PathBuf::from))
    {
        Some(path) => Config::load(&path),
        None => Config::from_env_only(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> ConfigError {
        Config::parse(text, "test.toml").expect_err("should be refused")
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let text = include_str!("../config/hatchet-run-metrics.toml");
        let file = Config::parse(text, "example").unwrap();
        let defaults = Config::default();
        assert_eq!(
            format!("{file:?}"),
            format!("{defaults:?}"),
            "config/ example and defaults disagree"
        );
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let config = Config::parse("", "empty").unwrap();
        assert_eq!(config.metrics.failure_ratio_windows, ["5m", "1h"]);
        assert_eq!(
            config.aggregate_settings().failure_ratio_windows[1],
            ("1h".to_string(), 3_600_000_000_000)
        );
    }

    #[test]
    fn errors_name_file_key_and_why() {
        let cases = [
            ("[kafka]\nbrokerz = \"x\"", "kafka.brokerz", "unknown field"),
            ("[metrix]\n", "metrix", "unknown field"),
            (
                "[kafka]\ncommit_interval = \"soon\"",
                "kafka.commit_interval",
                "not a duration",
            ),
            ("[kafka]\ncommit_interval = 5", "kafka.commit_interval", "invalid type"),
            ("[kafka]\ntopics = []", "kafka.topics", "at least one"),
            (
                "[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"",
                "enable.auto.offset.store",
                "managed",
            ),
            (
                "[metrics]\nduration_buckets_seconds = [1.0, 0.5]",
                "duration_buckets_seconds[1]",
                "increasing",
            ),
            (
                "[metrics]\nqueue_buckets_seconds = [0.5, 0.5]",
                "metrics.queue_buckets_seconds[1]",
                "increasing",
            ),
            ("[metrics]\nqueue_buckets_seconds = []", "metrics.queue_buckets_seconds", "at least one"),
            (
                "[metrics]\nduration_buckets_seconds = [-1.0]",
                "duration_buckets_seconds[0]",
                "non-negative",
            ),
            (
                "[metrics]\nfailure_ratio_windows = [\"5m\", \"300s\"]",
                "failure_ratio_windows[1]",
                "repeats",
            ),
            (
                "[metrics]\nfailure_ratio_windows = [\"0s\"]",
                "failure_ratio_windows[0]",
                "between",
            ),
            (
                "[metrics]\nfailure_ratio_windows = [\"five\"]",
                "failure_ratio_windows[0]",
                "not a duration",
            ),
            ("[metrics]\nmax_workflows = 0", "metrics.max_workflows", "at least 1"),
            ("[metrics]\nquantiles = [0.5, 1.5]", "metrics.quantiles[1]", "between 0 and 1"),
            ("[metrics]\nquantiles = [0.9, 0.5]", "metrics.quantiles[1]", "increasing"),
            ("[metrics]\nquantile_statuses = [\"RUNNING\"]", "metrics.quantile_statuses[0]", "not an outcome status"),
            ("[metrics]\nquantile_windows = [\"1h\", \"60m\"]", "metrics.quantile_windows[1]", "repeats"),
            ("[metrics]\nmetadata_labels = [\"customer-tier\"]", "metrics.metadata_labels[0]", "label name"),
            ("[metrics]\nmetadata_labels = [\"status\"]", "metrics.metadata_labels[0]", "of its own"),
            ("[metrics]\nmetadata_labels = [\"a\", \"a\"]", "metrics.metadata_labels[1]", "twice"),
            ("[metrics]\nmetadata_labels = [\"a\", \"b\", \"c\", \"d\", \"e\"]", "metrics.metadata_labels", "at most 4"),
            ("[metrics]\nmetadata_label_max_values = 0", "metrics.metadata_label_max_values", "between"),
            ("[metrics]\nidle_expiry = \"30s\"", "metrics.idle_expiry", "at least 1m"),
            ("[metrics]\nmax_label_value_bytes = 8", "metrics.max_label_value_bytes", "between 32 and 4096"),
            ("[metrics]\ntimestamp_max_ahead = \"0s\"", "metrics.timestamp_max_ahead", "at least 1s"),
            ("[metrics]\ntimestamp_max_age = \"1h\"", "metrics.timestamp_max_age", "at least 1d"),
            (
                "[workflow_names]\n\"0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77\" = \"bad\\r\\nname\"",
                "workflow_names.",
                "control characters",
            ),
            (
                "[outcomes]\nmax_remembered = 0",
                "outcomes.max_remembered",
                "at least 1",
            ),
            (
                "[outcomes]\nmax_remembered = -3",
                "outcomes.max_remembered",
                "invalid value",
            ),
            (
                "[workflow_names]\n\"0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77\" = \"a\"\n\"0B7E2D3C-4F1A-4C55-8D2E-6A9F1C3B5D77\" = \"b\"",
                "workflow_names.",
                "already named",
            ),
            (
                "[workflow_names]\n\"billing\" = \"x\"",
                "workflow_names.\"billing\"",
                "UUID",
            ),
            ("[http]\nlisten = \"localhost\"", "http.listen", "invalid"),
            ("[http]\nmax_connections = 0", "http.max_connections", "between 1 and"),
            ("[http]\nheader_read_timeout = \"0s\"", "http.header_read_timeout", "between 100ms and 1h"),
            ("[http]\nwrite_timeout = \"100000h\"", "http.write_timeout", "between 100ms and 1h"),
            ("[http]\nwrite_timeout = 30", "http.write_timeout", "invalid type"),
            ("[http]\npage_max_age = \"5m\"", "http.page_max_age", "at most 1m"),
            ("[http]\nmax_pages = 1", "http.max_pages", "between 2 and 100"),
            ("[log]\nlevel = \"=!=\"", "log.level", "tracing filter"),
            ("[kafka.properties]\n\"sasl.password\" = 123456", "kafka.properties", "not shown"),
            ("[thresholds.default.failure_rate]\nmax = 0.1", "thresholds.default.failure_rate", "unknown field"),
            ("[thresholds.default.failure_ratio]\nmax = 1.5", "thresholds.default.failure_ratio.max", "between 0 and 1"),
            ("[thresholds.default.oldest_running_age]\nmax = \"-5m\"", "thresholds.default.oldest_running_age.max", "negative"),
            ("[thresholds.default.runs_in_flight]\nmax = 10\nfor = \"-1s\"", "thresholds.default.runs_in_flight.for", "negative"),
            (
                "[[thresholds.overrides]]\nworkflow = \"job-[z-a]\"\nruns_in_flight = { max = 3 }",
                "thresholds.overrides[0].workflow",
                "never match",
            ),
            (
                "[thresholds.default.duration_quantile]\nmax = \"1m\"\nquantile = 1.5",
                "thresholds.default.duration_quantile.quantile",
                "between 0 and 1",
            ),
            (
                "[thresholds.default.duration_quantile]\nmax = \"1m\"\nquantile = -0.1",
                "thresholds.default.duration_quantile.quantile",
                "between 0 and 1",
            ),
            (
                "[thresholds]\nfile = \"t.toml\"\n[thresholds.default.runs_in_flight]\nmax = 3",
                "thresholds.file",
                "one place",
            ),
            ("[thresholds]\nevaluation_interval = \"1ms\"", "thresholds.evaluation_interval", "at least"),
            ("[kafka]\ncommit_interval = \"100000000h\"", "kafka.commit_interval", "between 100ms and 24h"),
            ("[kafka]\nstatistics_interval = \"30d\"", "kafka.statistics_interval", "between 100ms and 24h"),
            ("[kafka]\nstatistics_interval = \"50ms\"", "kafka.statistics_interval", "between 100ms and 24h"),
            (
                "[kafka.properties]\n\"sasl.pasword\" = \"hunter2\"",
                "kafka.properties.\"sasl.pasword\"",
                "no such property",
            ),
            (
                "[kafka.properties]\n\"session.timeout.ms\" = \"soon\"",
                "kafka.properties.\"session.timeout.ms\"",
                "librdkafka refuses \"soon\": Invalid value",
            ),
            (
                "[kafka.properties]\n\"auto.offset.reset\" = \"newest\"",
                "kafka.properties.\"auto.offset.reset\"",
                "newest",
            ),
            ("[kafka]\ngroup_id = \"a\\u0000b\"", "kafka.group_id", "NUL"),
            ("[kafka]\nbrokers = \"k1:9092\\u0000\"", "kafka.brokers", "NUL"),
            ("[kafka]\ntopics = [\"a\", \"b\\u0000\"]", "kafka.topics[1]", "NUL"),
            ("[kafka.properties]\n\"client.id\" = \"x\\u0000\"", "kafka.properties.\"client.id\"", "NUL"),
            ("[kafka]\nmax_message_bytes = 99999999999999999999", "kafka.max_message_bytes", "too large"),
            ("[kafka]\ndecode_threads = 0", "kafka.decode_threads", "between 1 and 64"),
            ("[kafka]\ndecode_threads = 65", "kafka.decode_threads", "between 1 and 64"),
            ("[metrics]\nmax_workflows = -99999999999999999999", "metrics.max_workflows", "too small"),
            (
                "[kafka]\n[metrics]\n# x = 1\nquantiles = [\n  0.5,\n  # big\n  99999999999999999999,\n]",
                "metrics.quantiles",
                "line 7, column 3",
            ),
            ("[[thresholds.overrides]]\nworkflow = \"a\"\nruns_in_flight = { max = 99999999999999999999 }", "thresholds.overrides.runs_in_flight", "too large"),
            ("max_workflows = 99999999999999999999", "max_workflows", "too large"),
            ("[log]\nlevel = \"\"", "log.level", "names no level"),
            ("[log]\nlevel = \" , \"", "log.level", "names no level"),
        ];
        for (text, key, why) in cases {
            let err = refused(text);
            let message = err.to_string();
            assert!(message.starts_with("test.toml: "), "{message}");
            assert!(
                err.key.contains(key),
                "{text:?}: key {:?} should contain {key:?}",
                err.key
            );
            assert!(
                err.why.contains(why),
                "{text:?}: why {:?} should contain {why:?}",
                err.why
            );
        }
    }

    #[test]
    fn refused_kafka_properties_never_quote_a_secret() {
        for text in [
            "[kafka.properties]\n\"sasl.pasword\" = \"hunter2-secret\"",
            "[kafka.properties]\n\"sasl.oauthbearer.method\" = \"hunter2-secret\"",
        ] {
            let err = refused(text);
            assert!(err.key.starts_with("kafka.properties.\"sasl."), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_thresholds_file_is_read_beside_the_config_and_its_errors_name_it() {
        let dir = std::env::temp_dir().join(format!("hrm-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let main = dir.join("main.toml");
        std::fs::write(&main, "[thresholds]\nfile = \"thresholds.toml\"\n").unwrap();
        std::fs::write(dir.join("thresholds.toml"), "[default.failure_ratio]\nmax = 0.1\n").unwrap();
        let config = Config::load(&main).unwrap();
        let thresholds = config.load_thresholds().unwrap();
        assert!(!thresholds.is_empty());
        std::fs::write(dir.join("thresholds.toml"), "[default.failure_ratio]\nmax = 2\n").unwrap();
        let err = Config::load(&main).unwrap_err();
        assert!(err.source_name.ends_with("thresholds.toml"), "{err}");
        assert_eq!(err.key, "default.failure_ratio.max");
        assert!(err.why.contains("between 0 and 1"), "{err}");
        std::fs::write(
            dir.join("thresholds.toml"),
            "[default.failure_ratio]\nmax = 0.1\nwindow = ",
        )
        .unwrap();
        let err = Config::load(&main).unwrap_err();
        assert!(err.source_name.ends_with("thresholds.toml"), "{err}");
        assert!(
            err.why.contains("line 3") && err.why.contains("not valid TOML"),
            "{err}"
        );
        std::fs::remove_file(dir.join("thresholds.toml")).unwrap();
        let err = Config::load(&main).unwrap_err();
        assert!(err.why.contains("cannot read"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn syntax_errors_are_refused_too() {
        let err = refused("[kafka\nbrokers = ");
        assert!(err.to_string().starts_with("test.toml: key `(top level)`"), "{err}");
        assert!(err.why.contains("line 1"), "{err}");
        let err = refused("[kafka]\n\ncommit_interval = 5");
        assert!(err.why.contains("line 3, column 19"), "{err}");
    }

    #[test]
    fn environment_overrides() {
        let mut config = Config::default();
        let env = |k: &str| match k {
            "HATCHET_RUN_METRICS_BROKERS" => Some("kafka-1:9092,kafka-2:9092".to_string()),
            "HATCHET_RUN_METRICS_TOPICS" => Some("a, b".to_string()),
            "HATCHET_RUN_METRICS_LISTEN" => Some("127.0.0.1:1234".to_string()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.kafka.brokers, "kafka-1:9092,kafka-2:9092");
        assert_eq!(config.kafka.topics, ["a", "b"]);
        assert_eq!(config.http.listen.port(), 1234);
        let err = Config::default()
            .apply_env(|k| (k == "HATCHET_RUN_METRICS_LISTEN").then(|| "nope".to_string()))
            .unwrap_err();
        assert_eq!(err.key, "HATCHET_RUN_METRICS_LISTEN");
        let err = Config::default()
            .apply_env(|k| (k == "HATCHET_RUN_METRICS_TOPICS").then(|| " , ".to_string()))
            .unwrap_err();
        assert_eq!(err.key, "kafka.topics");
    }
}
