//! The Prometheus text format, version 0.0.4: the one writer of it. The workflow families, the
//! thresholds' gauges and the service's own registry all go through here.

use crate::aggregate::DurationHistogram;
use crate::events::Telemetry;
use prometheus::{Encoder, TextEncoder};
use std::fmt::Write;

/// `# HELP` and `# TYPE` of a family.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample; `labels` already escaped (`a="x",b="y"`), or empty.
pub fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {}", format_float(value));
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {}", format_float(value));
    }
}

/// A histogram family: each row's labels (escaped) and its buckets, then `_sum` and `_count`.
pub fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    rows: impl Iterator<Item = (&'a String, &'a DurationHistogram)>,
) {
    header(out, name, "histogram", help);
    let les: Vec<String> = (bounds.iter().map(|b| format_float(*b)))
        .chain(["+Inf".to_string()])
        .collect();
    // Bucket lines are most of a large exposition: written straight into `out`, no temporaries.
    let bucket = format!("{name}_bucket");
    for (base, h) in rows {
        let mut cumulative: u64 = 0;
        for (n, le) in h.bucket_counts.iter().zip(&les) {
            cumulative += n;
            let _ = writeln!(out, "{bucket}{{{base},le=\"{le}\"}} {cumulative}");
        }
        sample(out, &format!("{name}_sum"), base, h.sum);
        sample(out, &format!("{name}_count"), base, h.count as f64);
    }
}

/// The service's own metrics, from its registry (the `prometheus` crate's encoder writes them).
pub fn registry(out: &mut String, telemetry: &Telemetry) {
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&telemetry.registry.gather(), &mut buffer) {
        tracing::error!(%error, "could not encode the service's own metrics");
    }
    out.push_str(&String::from_utf8_lossy(&buffer));
}

/// Label values escape backslash, double quote and line feed; everything else (any UTF-8) is kept.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: `NaN`, `+Inf`, `-Inf`, or the shortest text that reads back the same.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}
