//! The text formats, Prometheus's 0.0.4 and OpenMetrics 1.0: the one writer of each. The workflow
//! families, the thresholds' gauges and the service's own registry all go through here.

use super::writer::{Kind, Writer};
use crate::aggregate::DurationHistogram;
use std::fmt::Write;

/// The Prometheus text format 0.0.4 or, with `open_metrics`, OpenMetrics 1.0 text: the two differ
/// in a counter's family name (without `_total` in OpenMetrics), the `_created` samples, the
/// escaping of `HELP` and the closing `# EOF`, which [`TextWriter::finish`] writes.
pub struct TextWriter<'a> {
    out: &'a mut String,
    open_metrics: bool,
    /// The family being written, and its kind.
    name: String,
    kind: Kind,
    /// A histogram family's sample names and `le` values, made once per family: bucket lines are
    /// most of a large exposition.
    histogram: Option<HistogramNames>,
}

struct HistogramNames {
    bucket: String,
    sum: String,
    count: String,
    bounds: Vec<f64>,
    les: Vec<String>,
}

impl<'a> TextWriter<'a> {
    pub fn new(out: &'a mut String, open_metrics: bool) -> TextWriter<'a> {
        TextWriter {
            out,
            open_metrics,
            name: String::new(),
            kind: Kind::Gauge,
            histogram: None,
        }
    }

    /// Ends the exposition (OpenMetrics: `# EOF`).
    pub fn finish(self) {
        if self.open_metrics {
            self.out.push_str("# EOF\n");
        }
    }

    /// `_created` of the current family's sample, in OpenMetrics.
    fn created(&mut self, base: &str, labels: &str, created: Option<f64>) {
        if let (true, Some(created)) = (self.open_metrics, created) {
            line(self.out, &format!("{base}_created"), labels, created);
        }
    }
}

impl Writer for TextWriter<'_> {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.name.clear();
        self.name.push_str(name);
        self.kind = kind;
        self.histogram = None;
        let (family, kind_text) = match kind {
            Kind::Counter if self.open_metrics => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            Kind::Counter => (name, "counter"),
            Kind::Gauge => (name, "gauge"),
            Kind::Summary => (name, "summary"),
            Kind::Histogram => (name, "histogram"),
        };
        let mut help = help.replace('\\', "\\\\").replace('\n', "\\n");
        if self.open_metrics {
            help = help.replace('"', "\\\"");
        }
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind_text}");
    }

    fn value(&mut self, labels: &str, value: f64, created: Option<f64>) {
        line(self.out, &self.name, labels, value);
        if self.kind == Kind::Counter {
            let name = std::mem::take(&mut self.name);
            self.created(name.strip_suffix("_total").unwrap_or(&name), labels, created);
            self.name = name;
        }
    }

    fn histogram(&mut self, labels: &str, bounds: &[f64], h: &DurationHistogram, created: Option<f64>) {
        // Bucket lines are most of a large exposition: written straight into `out`, no temporaries.
        if self.histogram.as_ref().is_none_or(|names| names.bounds != bounds) {
            self.histogram = Some(HistogramNames {
                bucket: format!("{}_bucket", self.name),
                sum: format!("{}_sum", self.name),
                count: format!("{}_count", self.name),
                bounds: bounds.to_vec(),
                les: (bounds.iter().map(|b| format_float(*b)))
                    .chain(["+Inf".to_string()])
                    .collect(),
            });
        }
        let Some(names) = &self.histogram else { return };
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative: u64 = 0;
        let exemplars = h.exemplars.as_deref().filter(|_| self.open_metrics);
        for (i, (n, le)) in h.bucket_counts.iter().zip(&names.les).enumerate() {
            cumulative += n;
            let bucket = &names.bucket;
            let _ = write!(self.out, "{bucket}{{{labels}{separator}le=\"{le}\"}} {cumulative}");
            // OpenMetrics: the bucket's latest run, for a click from a slow bucket to the run.
            if let Some(e) = exemplars.and_then(|e| e.get(i)).filter(|e| e.run.0 != 0) {
                let _ = write!(
                    self.out,
                    " # {{run_id=\"{}\"}} {} {}",
                    e.run,
                    format_float(e.value),
                    format_float(e.at_nanos as f64 / 1e9)
                );
            }
            self.out.push('\n');
        }
        line(self.out, &names.sum, labels, h.sum);
        line(self.out, &names.count, labels, h.count as f64);
        let name = std::mem::take(&mut self.name);
        self.created(&name, labels, created);
        self.name = name;
    }

    fn summary(&mut self, labels: &str, quantiles: &[f64], values: &[f64], sum: f64, count: u64) {
        let separator = if labels.is_empty() { "" } else { "," };
        for (q, v) in quantiles.iter().zip(values) {
            let _ = writeln!(
                self.out,
                "{}{{{labels}{separator}quantile=\"{}\"}} {}",
                self.name,
                format_float(*q),
                format_float(*v)
            );
        }
        line(self.out, &format!("{}_sum", self.name), labels, sum);
        line(self.out, &format!("{}_count", self.name), labels, count as f64);
    }
}

/// One sample line; `labels` already escaped (`a="x",b="y"`), or empty.
fn line(out: &mut String, name: &str, labels: &str, value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {}", format_float(value));
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {}", format_float(value));
    }
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
