//! `hatchet-run-metrics`: Hatchet workflow-run updates from Kafka, turned into Prometheus metrics
//! per workflow.
//!
//! # Layout
//!
//! Data flows one way: Kafka message -> [`decode`] -> [`aggregate`] -> [`exporter`], with
//! [`thresholds`] read from the aggregation. The modules are layered the same way, lowest first;
//! a module uses only the layers before its own (`tests/layout.rs` checks every `crate::` path):
//!
//! 1. [`model`]: Hatchet's `V1WorkflowRun`, `V1TaskStatus` and `APIResourceMeta`, faithful to the
//!    contract and nothing else.
//! 2. [`ids`]: tenants and workflows as 128-bit UUIDs, runs as keys, series as [`ids::SeriesId`],
//!    input partitions as [`ids::Partition`] and how far each is counted as [`ids::Positions`].
//! 3. [`setting`]: the one error for a setting that cannot be used ([`setting::ConfigError`]:
//!    file, key, why) and the one duration parser; [`log_limit`]: warnings at most N a second,
//!    for the service's events and the traffic tools alike.
//! 4. [`decode`]: bytes -> a validated [`decode::RunUpdate`], or a typed [`decode::RejectReason`]:
//!    a one-pass scanner made for the run document, with `serde_json` reading (and explaining)
//!    whatever the scanner is unsure of.
//! 5. [`events`]: every observable event of the service itself, logging and counting together.
//! 6. [`aggregate`]: per workflow, outcomes (counted once), duration and queue-wait histograms,
//!    failure-ratio windows, windowed duration quantiles, metadata labels, and per-run lifecycle
//!    (in flight, retries, replays), all in bounded memory. Pure and synchronous. It decides
//!    which of a message's timestamps to believe, and makes label values from messages safe and
//!    bounded ([`aggregate::label_value`]) once, where a series or value is created.
//! 7. [`thresholds`]: what healthy means per workflow: default and overrides resolved per
//!    workflow, evaluated against the aggregation into numbers ([`thresholds::evaluate`]), and
//!    written as Prometheus alerting rules ([`thresholds::rules`]).
//! 8. [`config`]: the TOML config, its defaults and validation, which reads every layer's
//!    settings; [`config::kafka`]: the librdkafka configuration, checked without a client, and
//!    which of its values are secrets; [`config::web`]: the exporter toolkit's web config file
//!    (TLS, basic auth, headers), checked at start.
//! 9. [`sizing`]: the worst-case resident size the config's caps allow (`check-config` prints it).
//! 10. [`pipeline`]: messages through decode and aggregate, one or a batch (decoded before the
//!     aggregation is locked, on `kafka.decode_threads` threads, then counted in order under one
//!     lock on the calling thread); both sources call it.
//! 11. [`service`]: the running service's shared state: the pipeline, the thresholds'
//!     evaluation, readiness (the lock order is there), and the positions delivered scrapes
//!     showed, which the exporter tells and the Kafka source commits.
//! 12. [`source`]: where messages come from: the Kafka consumer group ([`source::kafka`]:
//!     what the client already holds processed as one batch, commits that follow delivered scrapes, rebalances, and a partition's state restored from
//!     the topic when it is assigned; what the client reports goes to the service's readiness) or a replayed file
//!     ([`source::file`]).
//! 13. [`exporter`]: `/metrics`, `/healthz` and `/readyz` from the service: the workflow
//!     families and the thresholds' gauges written through one [`exporter::writer::Writer`],
//!     with one writer per format ([`exporter::text`] for text 0.0.4 and OpenMetrics,
//!     [`exporter::protobuf`] with native histograms), the format negotiated
//!     ([`exporter::format`]) and gzipped ([`exporter::gzip`]); the HTTP endpoints with their
//!     limits, which tell the service when a scrape was delivered ([`exporter::http`]), with TLS
//!     and basic auth ([`exporter::web`]); and one `/metrics` page shared by concurrent scrapes
//!     ([`exporter::page`]).
//! 14. [`reload`]: the thresholds applied again on SIGHUP or a changed file, without a restart.
//! 15. [`traffic`]: sending a file or simulated traffic to a topic ([`traffic::produce`],
//!     [`traffic::synthetic`]), for the demo, the tests and the benchmarks; the service never
//!     uses it.
//!
//! `main.rs` is the command line (`run`, `check-config`, `replay`, `produce`, `rules`,
//! `thresholds explain`).

pub mod aggregate;
pub mod config;
pub mod decode;
pub mod events;
pub mod exporter;
pub mod ids;
pub mod log_limit;
pub mod model;
pub mod pipeline;
pub mod reload;
pub mod service;
pub mod setting;
pub mod sizing;
pub mod source;
pub mod thresholds;
pub mod traffic;
