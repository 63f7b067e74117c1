//! The most resident memory a config lets the service reach: what `check-config` prints, term
//! by term, each with the measured figure behind it, so that a memory limit can be set from the
//! caps rather than found by being OOM-killed.
//!
//! Every term is a cap of the config times a cost per item. The costs per item are measured by
//! `cargo bench --bench memory` (its `sizing` phase floods an aggregation until every cap is full,
//! renders the pages the HTTP layer may hold at once, and compares the resident size with this
//! estimate); the figures below are from that benchmark on a 64-bit Linux build.
//!
//! What the estimate assumes, where the caps alone do not bound the memory:
//! - every workflow name and metadata value is as long as `metrics.max_label_value_bytes`;
//! - every series exists that the caps allow: `metrics.max_workflows` workflows, each in a tenant
//!   of its own and so with an overflow series of its own once the cap is reached;
//! - every quantile window is full: each of its slots holds durations in every octave the
//!   aggregation trusts (1 ns to a year), many of each (real traffic, with its narrower spread,
//!   fills a window to 10 to 46 KiB);
//! - windows are kept per input partition, so each series has its windows once in every one of
//!   the `partitions` the member may hold (`check-config --partitions`): a workflow whose runs
//!   arrive on every partition fills them all;
//! - the outcome memory and run tracking are full, their tables just grown (a hash table and a
//!   ring grow by doubling, so they cost between one and two times their entries);
//! - the Kafka client holds as much prefetched data as `queued.max.messages.kbytes` allows, plus
//!   one fetch response of `fetch.max.bytes`;
//! - `http.max_pages` rendered pages are alive at once (the HTTP layer shares pages between
//!   clients and bounds how many distinct ones live), each shrunk to its length once rendered, plus
//!   one response's worth of the service's own metrics per connection (`http.max_connections`).
//!
//! Pure arithmetic: no I/O, nothing measured at run time.

use crate::aggregate::{lifecycle, outcome_memory};
use crate::config::Config;
use crate::thresholds::ThresholdKind;

/// Resident size of the running service with no workflow, outcome or run yet: the binary, the
/// async runtime, the Kafka client's threads and buffers at rest, the HTTP server (measured by
/// the benchmark: 9.9 MiB with no broker to talk to; connected, its buffers add a few MiB).
pub const BASE_BYTES: u64 = 16 << 20;
/// One series without its windows, metadata rows or histogram buckets: the maps that find it,
/// its name, its counters and the lifecycle's per-series counts.
pub const SERIES_BYTES: u64 = 1_400;
/// One histogram bucket of one status of one series (a `u64` per bucket, 3 statuses).
pub const BUCKET_BYTES: u64 = 3 * 8;
/// One exemplar: a run id, a value and a time.
pub const EXEMPLAR_BYTES: u64 = 32;
/// One native histogram bucket: its index and count (`(i32, u64)`, padded).
pub const NATIVE_BUCKET_BYTES: u64 = 16;
/// One failure-ratio window of one series: 60 slots.
pub const FAILURE_WINDOW_BYTES: u64 = 1_000;
/// One quantile window (a status × window, or a queue-wait window) of one series, full: every one
/// of its 12 slots holding every octave of durations from 1 ns to a year, each as bytes. Its
/// chunks take 90,176 bytes; resident, with the allocator's headers and the smaller chunks each
/// outgrew left free, about 131,000 (both measured by the benchmark's flood).
pub const QUANTILE_WINDOW_BYTES: u64 = 131_000;
/// One metadata-label combination of one series, besides its histogram buckets.
pub const METADATA_ROW_BYTES: u64 = 120;
/// One threshold state of one series (a kind judged for a workflow), besides its label text.
pub const THRESHOLD_STATE_BYTES: u64 = 160;
/// One line of the exposition, besides the workflow name and metadata values in it: the metric
/// name, the tenant id and the other labels, the value (measured by the benchmark's flood: 203
/// bytes a line on average with the default buckets and 128-byte names).
pub const LINE_BYTES: u64 = 76;
/// The service's own metrics as rendered for one response (a few dozen families).
pub const SELF_METRICS_BYTES: u64 = 32 << 10;
/// librdkafka's defaults for what the consumer may hold: `queued.max.messages.kbytes` (KiB) and
/// `fetch.max.bytes`.
const DEFAULT_QUEUED_KBYTES: u64 = 65_536;
const DEFAULT_FETCH_MAX_BYTES: u64 = 52_428_800;

/// One term of the estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub what: &'static str,
    pub bytes: u64,
    /// How it is computed, with the figures behind it.
    pub how: String,
}

/// The worst-case resident size of a config, term by term.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    pub terms: Vec<Term>,
}

impl MemoryEstimate {
    pub fn total_bytes(&self) -> u64 {
        self.terms.iter().fold(0u64, |sum, t| sum.saturating_add(t.bytes))
    }

    /// For `check-config`: one line a term, then the total.
    pub fn render(&self) -> String {
        let mut out = String::from("worst-case resident memory the configured caps allow:\n");
        for term in &self.terms {
            out.push_str(&format!("  {:>9}  {:<24} {}\n", mib(term.bytes), term.what, term.how));
        }
        out.push_str(&format!(
            "  {:>9}  in all: set the container's memory limit at least this high (or lower the caps)\n",
            mib(self.total_bytes())
        ));
        out
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Lines a series can have on the page, and the workflow-name and metadata-value bytes in each.
struct SeriesLines {
    lines: u64,
    /// Lines that carry the metadata labels (the outcome counter and duration histogram).
    metadata_lines: u64,
}

fn series_lines(config: &Config, threshold_kinds: u64) -> SeriesLines {
    let m = &config.metrics;
    let rows = 3 * metadata_rows(config);
    let buckets = m.duration_buckets_seconds.len() as u64 + 1;
    let queue_buckets = m.queue_buckets_seconds.len() as u64 + 1;
    let quantile_windows = quantile_windows(config);
    let per_summary = m.quantiles.len() as u64 + 2;
    let metadata_lines = rows + rows * (buckets + 2);
    let lines = metadata_lines
        + 3 * (queue_buckets + 2)
        + m.quantile_statuses.len() as u64 * quantile_windows * per_summary
        + u64::from(m.queue_wait_quantiles) * quantile_windows * per_summary
        + m.failure_ratio_windows.len() as u64
        + 2 // in flight, QUEUED and RUNNING
        + 3 // oldest running, retries, replays
        + 3 * threshold_kinds;
    SeriesLines { lines, metadata_lines }
}

/// Metadata combinations a series may hold (1 without metadata labels).
fn metadata_rows(config: &Config) -> u64 {
    match config.metrics.metadata_labels.is_empty() {
        true => 1,
        false => config.metrics.metadata_label_max_values as u64 + 2,
    }
}

fn quantile_windows(config: &Config) -> u64 {
    (config.metrics.quantile_windows.as_ref())
        .unwrap_or(&config.metrics.failure_ratio_windows)
        .len() as u64
}

/// Kinds of threshold some rule judges: each adds a state and three lines per series.
fn threshold_kinds(config: &Config) -> u64 {
    let Ok(thresholds) = config.load_thresholds() else {
        return 0;
    };
    ThresholdKind::ALL
        .iter()
        .filter(|kind| thresholds.rules.iter().any(|rule| rule.setting(**kind).is_some()))
        .count() as u64
}

/// A librdkafka property as set in `kafka.properties`, else its default.
fn kafka_property(config: &Config, key: &str, default: u64) -> u64 {
    (config.kafka.properties.get(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A hash table (`hashbrown`, behind std's and rustc-hash's maps) of `entries` entries at most,
/// just grown: its buckets are a power of two at least 8/7 of the entries, each with a control
/// byte.
fn hash_table_bytes(entries: u64, entry_bytes: u64) -> u64 {
    let buckets = match entries {
        0..4 => 4,
        4..8 => 8,
        n => (n.saturating_mul(8) / 7)
            .checked_next_power_of_two()
            .unwrap_or(u64::MAX),
    };
    buckets.saturating_mul(entry_bytes + 1).saturating_add(16)
}

/// A `Vec` or `VecDeque` of `entries` at most, grown by doubling.
fn ring_bytes(entries: u64, entry_bytes: u64) -> u64 {
    (entries.checked_next_power_of_two().unwrap_or(u64::MAX)).saturating_mul(entry_bytes)
}

/// The estimate for `config` (valid: `Config::load` accepted it).
pub fn worst_case(config: &Config, partitions: u64) -> MemoryEstimate {
    let partitions = partitions.max(1);
    let m = &config.metrics;
    let label = m.max_label_value_bytes as u64;
    let workflows = m.max_workflows as u64;
    // Each workflow in a tenant of its own, each tenant with an overflow series, and the one
    // overflow tenant.
    // Saturating: the caps have no upper bound, and a wrapped total would be an unsafe limit.
    let series = workflows.saturating_mul(2).saturating_add(1);
    let kinds = threshold_kinds(config);
    let rows = metadata_rows(config);
    let buckets = (m.duration_buckets_seconds.len() + m.queue_buckets_seconds.len() + 2) as u64;
    let windows = (m.quantile_statuses.len() as u64 + u64::from(m.queue_wait_quantiles)) * quantile_windows(config);
    let metadata_labels = m.metadata_labels.len() as u64;
    // Native buckets: a sorted vector per histogram, at most `native_histogram_max_buckets`
    // entries in a capacity grown by doubling.
    let native_histogram = match m.native_histogram_schema {
        s if s < 0 => 0,
        _ => (m.native_histogram_max_buckets as u64 + 1).next_power_of_two() * NATIVE_BUCKET_BYTES,
    };
    let native_histograms = 6 + if m.metadata_labels.is_empty() { 0 } else { 3 * rows };
    // Exemplars: a run per classic bucket of each duration histogram.
    let exemplars = match m.exemplars {
        true => {
            (3 + if m.metadata_labels.is_empty() { 0 } else { 3 * rows })
                * (m.duration_buckets_seconds.len() as u64 + 1)
                * EXEMPLAR_BYTES
        }
        false => 0,
    };
    let per_series = SERIES_BYTES
        + label
        + BUCKET_BYTES * buckets
        + native_histogram * native_histograms
        + exemplars
        + (FAILURE_WINDOW_BYTES * m.failure_ratio_windows.len() as u64 + QUANTILE_WINDOW_BYTES * windows)
            .saturating_mul(partitions)
        + match metadata_labels {
            0 => 0,
            _ => rows * (METADATA_ROW_BYTES + BUCKET_BYTES * (m.duration_buckets_seconds.len() as u64 + 1)),
        }
        + kinds * (THRESHOLD_STATE_BYTES + label);
    let lines = series_lines(config, kinds);
    let pages = config.http.max_pages as u64;
    let page = series
        .saturating_mul(lines.lines * (LINE_BYTES + label) + lines.metadata_lines * metadata_labels * (label + 16));
    // A render copies the histograms (not the windows) into a snapshot besides the page.
    let snapshot = series.saturating_mul(BUCKET_BYTES * buckets * rows + SERIES_BYTES);
    let queued = kafka_property(config, "queued.max.messages.kbytes", DEFAULT_QUEUED_KBYTES).saturating_mul(1024);
    let fetch = kafka_property(config, "fetch.max.bytes", DEFAULT_FETCH_MAX_BYTES);
    let message = config.kafka.max_message_bytes as u64;
    let decoders = config.kafka.decode_threads as u64;
    let outcomes = hash_table_bytes(
        config.outcomes.max_remembered as u64,
        outcome_memory::SET_ENTRY_BYTES as u64,
    )
    .saturating_add(ring_bytes(
        (config.outcomes.max_remembered as u64).saturating_add(1),
        outcome_memory::ORDER_ENTRY_BYTES as u64,
    ));
    let runs = hash_table_bytes(config.runs.max_tracked as u64, lifecycle::MAP_ENTRY_BYTES as u64)
        .saturating_add(ring_bytes(config.runs.max_tracked as u64, lifecycle::SLOT_BYTES as u64));
    let terms = vec![
        Term {
            what: "process at rest",
            bytes: BASE_BYTES,
            how: "runtime, Kafka client and HTTP server with nothing tracked (measured)".into(),
        },
        Term {
            what: "Kafka client buffers",
            bytes: queued + fetch,
            how: format!(
                "queued.max.messages.kbytes ({} KiB) + fetch.max.bytes ({} B) of prefetched messages",
                queued / 1024,
                fetch
            ),
        },
        Term {
            what: "messages being decoded",
            bytes: 2u64.saturating_mul(decoders).saturating_mul(message),
            how: format!(
                "2 x kafka.decode_threads ({decoders}) x kafka.max_message_bytes ({message}): on each decoding \
                 thread, a message and the second look that explains its rejection"
            ),
        },
        Term {
            what: "remembered outcomes",
            bytes: outcomes,
            how: format!(
                "outcomes.max_remembered ({}): a hash set and a ring of them, {} B each at most",
                config.outcomes.max_remembered,
                outcomes / (config.outcomes.max_remembered as u64).max(1)
            ),
        },
        Term {
            what: "tracked runs",
            bytes: runs,
            how: format!(
                "runs.max_tracked ({}): a hash map and a slab of them, {} B each at most",
                config.runs.max_tracked,
                runs / (config.runs.max_tracked as u64).max(1)
            ),
        },
        Term {
            what: "workflow series",
            bytes: series.saturating_mul(per_series),
            how: format!(
                "{series} series (2 x metrics.max_workflows + 1: each workflow's and its tenant's overflow) x {per_series} B \
                 ({windows} quantile windows x {QUANTILE_WINDOW_BYTES} B in each of {partitions} partition(s), {buckets} buckets, \
                 {native_histograms} native histograms x {native_histogram} B, names of {label} B{})",
                match kinds {
                    0 => String::new(),
                    k => format!(", {k} threshold kinds"),
                }
            ),
        },
        Term {
            what: "metadata label values",
            bytes: (metadata_labels * m.metadata_label_max_values as u64).saturating_mul(2 * label + 64),
            how: format!(
                "{metadata_labels} labels x metrics.metadata_label_max_values ({}) x (2 x {label} + 64) B",
                m.metadata_label_max_values
            ),
        },
        Term {
            what: "/metrics pages",
            bytes: pages
                .saturating_mul(page)
                .saturating_add(snapshot)
                .saturating_add(config.http.max_connections as u64 * SELF_METRICS_BYTES),
            how: format!(
                "http.max_pages ({pages}) x {} MiB ({} lines of {} B or more per series), one snapshot, and the service's own metrics per connection",
                page >> 20,
                lines.lines,
                LINE_BYTES + label
            ),
        },
    ];
    MemoryEstimate { terms }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(text: &str) -> u64 {
        worst_case(&Config::parse(text, "test").expect("valid config"), 1).total_bytes()
    }

    #[test]
    fn every_cap_moves_the_estimate_the_way_it_should() {
        let base = total("");
        for (text, what) in [
            ("[metrics]\nmax_workflows = 20000", "more workflows"),
            ("[outcomes]\nmax_remembered = 2000000", "more outcomes"),
            ("[runs]\nmax_tracked = 2000000", "more runs"),
            ("[metrics]\nmax_label_value_bytes = 1024", "longer names"),
            ("[metrics]\nnative_histogram_max_buckets = 2000", "more native buckets"),
            ("[metrics]\nqueue_wait_quantiles = true", "queue-wait windows"),
            (
                "[metrics]\nquantile_statuses = [\"COMPLETED\", \"FAILED\"]",
                "more quantile statuses",
            ),
            ("[metrics]\nmetadata_labels = [\"tier\"]", "metadata labels"),
            ("[kafka]\nmax_message_bytes = 104857600", "larger messages"),
            (
                "[kafka.properties]\n\"queued.max.messages.kbytes\" = \"1000000\"",
                "a larger prefetch queue",
            ),
            ("[thresholds.default.runs_in_flight]\nmax = 10", "a threshold kind"),
        ] {
            assert!(total(text) > base, "{what} should cost more");
        }
        assert!(total("[metrics]\nmax_workflows = 100") < base);
        assert!(total("[metrics]\nnative_histogram_schema = -1") < base);
        assert!(total("[metrics]\nexemplars = false") < base);
        let config = Config::default();
        let windows = |p| {
            worst_case(&config, p)
                .terms
                .iter()
                .find(|t| t.what == "workflow series")
                .map_or(0, |t| t.bytes)
        };
        assert!(windows(4) > 3 * windows(1), "windows are kept per partition");
        assert!(total("[kafka.properties]\n\"queued.max.messages.kbytes\" = \"1024\"") < base);
    }

    #[test]
    fn the_workflow_terms_scale_with_the_workflow_cap() {
        let series = |text: &str| {
            let estimate = worst_case(&Config::parse(text, "test").expect("valid config"), 1);
            let term = |what: &str| estimate.terms.iter().find(|t| t.what == what).map_or(0, |t| t.bytes);
            term("workflow series") + term("/metrics pages")
        };
        let one = series("[metrics]\nmax_workflows = 1000");
        let ten = series("[metrics]\nmax_workflows = 10000");
        let ratio = ten as f64 / one as f64;
        assert!((9.9..10.1).contains(&ratio), "{ratio}");
    }

    #[test]
    fn the_printout_names_every_term_and_the_total() {
        let text = worst_case(&Config::default(), 1).render();
        for what in [
            "process at rest",
            "Kafka client buffers",
            "remembered outcomes",
            "tracked runs",
            "workflow series",
            "/metrics pages",
            "in all",
        ] {
            assert!(text.contains(what), "{what} missing from:\n{text}");
        }
    }

    #[test]
    fn absurd_caps_saturate_instead_of_wrapping() {
        let text = "[metrics]\nmax_workflows = 9000000000000000000\n[outcomes]\nmax_remembered = 9000000000000000000\n";
        let estimate = worst_case(&Config::parse(text, "test").expect("valid config"), 1);
        assert_eq!(estimate.total_bytes(), u64::MAX, "{}", estimate.render());
    }
}
