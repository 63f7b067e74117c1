//! What every exposition format is written through: the workflow families, the thresholds'
//! gauges and the service's own registry call a [`Writer`], and each format has one
//! implementation of it ([`super::text`] for the text formats, [`super::protobuf`] for
//! Prometheus's protobuf). The callers never see a format.

use crate::aggregate::DurationHistogram;
use crate::events::Telemetry;
use prometheus::proto::MetricType;

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Its name ends in `_total`.
    Counter,
    Gauge,
    Summary,
    Histogram,
}

/// One family at a time: [`Writer::family`], then its samples. Label sets are given as escaped
/// text (`a="x",b="y"`, or empty), as the text formats write them; the protobuf writer reads
/// them back into pairs.
pub trait Writer {
    /// Starts a family: every sample until the next call is of it.
    fn family(&mut self, name: &str, kind: Kind, help: &str);

    /// A counter's or a gauge's sample. `created`: when a counter started from zero (unix
    /// seconds), for the formats that carry it.
    fn value(&mut self, labels: &str, value: f64, created: Option<f64>);

    /// A histogram's sample: its classic buckets (upper `bounds`, without `+Inf`) and, in the
    /// formats that have them, its native buckets.
    fn histogram(&mut self, labels: &str, bounds: &[f64], histogram: &DurationHistogram, created: Option<f64>);

    /// A summary's sample: `values[i]` is the quantile `quantiles[i]`.
    fn summary(&mut self, labels: &str, quantiles: &[f64], values: &[f64], sum: f64, count: u64);
}

/// The service's own metrics, from its registry (counters and gauges, all of them).
pub fn registry(w: &mut dyn Writer, telemetry: &Telemetry) {
    for family in telemetry.registry.gather() {
        let kind = match family.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            _ => Kind::Gauge,
        };
        w.family(family.name(), kind, family.help());
        for metric in family.get_metric() {
            let labels = (metric.get_label().iter())
                .map(|pair| format!("{}=\"{}\"", pair.name(), super::text::escape_label(pair.value())))
                .collect::<Vec<_>>()
                .join(",");
            let value = match kind {
                Kind::Counter => metric.get_counter().get_value(),
                _ => metric.get_gauge().get_value(),
            };
            w.value(&labels, value, None);
        }
    }
}

/// Passes on only the families `wanted` says yes to (by the name given to [`Writer::family`]).
pub struct Only<'a> {
    pub inner: &'a mut dyn Writer,
    pub wanted: &'a dyn Fn(&str) -> bool,
    on: bool,
}

impl<'a> Only<'a> {
    pub fn new(inner: &'a mut dyn Writer, wanted: &'a dyn Fn(&str) -> bool) -> Only<'a> {
        Only {
            inner,
            wanted,
            on: false,
        }
    }
}

impl Writer for Only<'_> {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.on = (self.wanted)(name);
        if self.on {
            self.inner.family(name, kind, help);
        }
    }

    fn value(&mut self, labels: &str, value: f64, created: Option<f64>) {
        if self.on {
            self.inner.value(labels, value, created);
        }
    }

    fn histogram(&mut self, labels: &str, bounds: &[f64], histogram: &DurationHistogram, created: Option<f64>) {
        if self.on {
            self.inner.histogram(labels, bounds, histogram, created);
        }
    }

    fn summary(&mut self, labels: &str, quantiles: &[f64], values: &[f64], sum: f64, count: u64) {
        if self.on {
            self.inner.summary(labels, quantiles, values, sum, count);
        }
    }
}
