//! `hatchet-run-metrics`: Hatchet workflow-run updates from Kafka, turned into Prometheus metrics
//! per workflow.
//!
//! # Layout
//!
//! Data flows one way, and the modules follow it:
//!
//! - [`source`]: where messages come from: the Kafka consumer group ([`source::kafka`]: offsets,
//!   commits, rebalances, consumer health; the librdkafka configuration, checked without a client,
//!   and which of its values are secrets) or a replayed file ([`source::file`]).
//! - [`pipeline`]: one message through the stages below; both sources call it.
//! - [`decode`]: bytes -> a validated [`decode::RunUpdate`], or a typed [`decode::RejectReason`].
//! - [`model`]: Hatchet's `V1WorkflowRun`, `V1TaskStatus` and `APIResourceMeta`, faithful to the
//!   contract and nothing else.
//! - [`aggregate`]: per workflow, outcomes (counted once), duration and queue-wait histograms,
//!   failure-ratio windows, windowed duration quantiles, metadata labels, and per-run lifecycle (in flight, retries, replays),
//!   all in bounded memory. Pure and synchronous. It decides which of a message's timestamps to
//!   believe, and makes label values from messages safe and bounded
//!   ([`aggregate::label_value`]) once, where a series or value is created.
//! - [`thresholds`]: what healthy means per workflow, from the config: default and overrides
//!   resolved per workflow, evaluated against the aggregation on an interval
//!   ([`thresholds::evaluate`]), and written as Prometheus alerting rules ([`thresholds::rules`]).
//! - [`exporter`]: the Prometheus exposition rendered from the aggregation, and the HTTP
//!   endpoints (`/metrics`, `/healthz`, `/readyz`) with their limits on connections and
//!   timeouts ([`exporter::http`]); one `/metrics` page shared by concurrent scrapes, with a
//!   bounded number of pages alive ([`exporter::page`]).
//! - [`events`]: every observable event of the service itself, logging and counting together.
//! - [`config`]: the TOML config, its defaults and validation.
//! - [`sizing`]: the worst-case resident size the config's caps allow (`check-config` prints it).
//! - [`reload`]: the thresholds applied again on SIGHUP or a changed file, without a restart.
//! - [`traffic`]: sending a file or simulated traffic to a topic ([`traffic::produce`],
//!   [`traffic::synthetic`]), for the demo, the tests and the benchmarks; the service never uses it.
//!
//! `main.rs` is the command line (`run`, `check-config`, `replay`, `produce`, `rules`,
//! `thresholds explain`).

pub mod aggregate;
pub mod config;
pub mod decode;
pub mod events;
pub mod exporter;
pub mod ids;
pub mod model;
pub mod pipeline;
pub mod reload;
pub mod service;
pub mod setting;
pub mod sizing;
pub mod source;
pub mod thresholds;
pub mod traffic;
