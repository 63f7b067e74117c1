//! Prometheus's protobuf exposition (`io.prometheus.client.MetricFamily`, length-delimited): the
//! one writer of it, and the only format with native histograms. The messages are declared here
//! with the field numbers of Prometheus's `metrics.proto`, for the fields this service writes.

use super::writer::{Kind, Writer};
use crate::aggregate::DurationHistogram;
use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub help: String,
    /// COUNTER 0, GAUGE 1, SUMMARY 2, UNTYPED 3, HISTOGRAM 4.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(message, optional, tag = "3")]
    pub created_timestamp: Option<Timestamp>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Quantile {
    #[prost(double, tag = "1")]
    pub quantile: f64,
    #[prost(double, tag = "2")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
    #[prost(message, optional, tag = "3")]
    pub exemplar: Option<Exemplar>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(message, optional, tag = "3")]
    pub timestamp: Option<Timestamp>,
}

/// A run of consecutive native buckets: `offset` from the end of the previous span (from zero
/// for the first), `length` buckets.
#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// Classic buckets, cumulative; none for `+Inf` (the count is its).
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Each bucket's count as the difference from the previous bucket's (the first: from zero).
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
    #[prost(message, optional, tag = "15")]
    pub created_timestamp: Option<Timestamp>,
    /// Exemplars of a native histogram (the classic buckets carry theirs too).
    #[prost(message, repeated, tag = "16")]
    pub exemplars: Vec<Exemplar>,
}

const COUNTER: i32 = 0;
const GAUGE: i32 = 1;
const SUMMARY: i32 = 2;
const HISTOGRAM: i32 = 4;

/// Writes each family as a length-delimited `MetricFamily` once the next one starts (or at
/// [`ProtobufWriter::finish`]).
pub struct ProtobufWriter<'a> {
    out: &'a mut Vec<u8>,
    family: Option<MetricFamily>,
    /// Classic buckets beside the native ones (`metrics.classic_histograms`).
    classic: bool,
}

impl<'a> ProtobufWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>, classic: bool) -> ProtobufWriter<'a> {
        ProtobufWriter {
            out,
            family: None,
            classic,
        }
    }

    /// Writes the last family.
    pub fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        // A family without samples is left out, as Prometheus's client libraries do.
        if let Some(family) = self.family.take().filter(|f| !f.metric.is_empty()) {
            let _ = family.encode_length_delimited(&mut *self.out);
        }
    }

    fn push(&mut self, metric: Metric) {
        if let Some(family) = &mut self.family {
            family.metric.push(metric);
        }
    }
}

fn timestamp(unix_seconds: Option<f64>) -> Option<Timestamp> {
    let seconds = unix_seconds?;
    Some(Timestamp {
        seconds: seconds.floor() as i64,
        nanos: ((seconds - seconds.floor()) * 1e9) as i32,
    })
}

impl Writer for ProtobufWriter<'_> {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.flush();
        self.family = Some(MetricFamily {
            name: name.to_string(),
            help: help.to_string(),
            r#type: match kind {
                Kind::Counter => COUNTER,
                Kind::Gauge => GAUGE,
                Kind::Summary => SUMMARY,
                Kind::Histogram => HISTOGRAM,
            },
            metric: Vec::new(),
        });
    }

    fn value(&mut self, labels: &str, value: f64, created: Option<f64>) {
        let counter = self.family.as_ref().is_some_and(|f| f.r#type == COUNTER);
        let mut metric = Metric {
            label: label_pairs(labels),
            ..Metric::default()
        };
        match counter {
            true => {
                metric.counter = Some(Counter {
                    value,
                    created_timestamp: timestamp(created),
                })
            }
            false => metric.gauge = Some(Gauge { value }),
        }
        self.push(metric);
    }

    fn histogram(&mut self, labels: &str, bounds: &[f64], h: &DurationHistogram, created: Option<f64>) {
        let mut histogram = Histogram {
            sample_count: h.count,
            sample_sum: h.sum,
            schema: h.native.schema(),
            zero_threshold: h.native.zero_threshold(),
            zero_count: h.native.zero_count(),
            created_timestamp: timestamp(created),
            ..Histogram::default()
        };
        let mut previous_index = None;
        let mut previous_count = 0i64;
        for (index, count) in h.native.buckets() {
            match previous_index {
                Some(previous) if index == previous + 1 => {
                    if let Some(span) = histogram.positive_span.last_mut() {
                        span.length += 1;
                    }
                }
                Some(previous) => histogram.positive_span.push(BucketSpan {
                    offset: index - previous - 1,
                    length: 1,
                }),
                None => histogram.positive_span.push(BucketSpan {
                    offset: index,
                    length: 1,
                }),
            }
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            histogram.positive_delta.push(count - previous_count);
            previous_count = count;
            previous_index = Some(index);
        }
        let exemplar = |i: usize| {
            let e = h.exemplars.as_deref()?.get(i).filter(|e| e.run.0 != 0)?;
            Some(Exemplar {
                label: vec![LabelPair {
                    name: "run_id".into(),
                    value: e.run.to_string(),
                }],
                value: e.value,
                timestamp: timestamp(Some(e.at_nanos as f64 / 1e9)),
            })
        };
        if h.native.is_on() {
            histogram.exemplars = (0..h.bucket_counts.len()).filter_map(exemplar).collect();
        }
        if self.classic {
            let mut cumulative = 0;
            for (i, (bound, n)) in bounds.iter().zip(&h.bucket_counts).enumerate() {
                cumulative += n;
                histogram.bucket.push(Bucket {
                    cumulative_count: cumulative,
                    upper_bound: *bound,
                    exemplar: exemplar(i),
                });
            }
        }
        self.push(Metric {
            label: label_pairs(labels),
            histogram: Some(histogram),
            ..Metric::default()
        });
    }

    fn summary(&mut self, labels: &str, quantiles: &[f64], values: &[f64], sum: f64, count: u64) {
        self.push(Metric {
            label: label_pairs(labels),
            summary: Some(Summary {
                sample_count: count,
                sample_sum: sum,
                quantile: (quantiles.iter().zip(values))
                    .map(|(q, v)| Quantile {
                        quantile: *q,
                        value: *v,
                    })
                    .collect(),
            }),
            ..Metric::default()
        });
    }
}

/// Reads back a label set as the text formats write it (`a="x",b="y\"z"`, escaped by
/// [`super::text::escape_label`]): the label text this service builds is the one form of it.
pub fn label_pairs(labels: &str) -> Vec<LabelPair> {
    let mut pairs = Vec::new();
    let mut rest = labels;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => {}
                },
                '"' => {
                    end = at + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        pairs.push(LabelPair {
            name: name.trim_start_matches(',').to_string(),
            value,
        });
        rest = &after[end..];
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_text_reads_back_into_pairs() {
        let text = format!(
            "tenant_id=\"t\",workflow=\"{}\",status=\"COMPLETED\"",
            super::super::text::escape_label("a \"quoted\" \\ name\nwith ünïcode, and = signs")
        );
        let pairs = label_pairs(&text);
        let got: Vec<(&str, &str)> = pairs.iter().map(|p| (p.name.as_str(), p.value.as_str())).collect();
        assert_eq!(
            got,
            [
                ("tenant_id", "t"),
                ("workflow", "a \"quoted\" \\ name\nwith ünïcode, and = signs"),
                ("status", "COMPLETED")
            ]
        );
        assert!(label_pairs("").is_empty());
    }
}
