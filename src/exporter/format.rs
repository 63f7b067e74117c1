//! Which exposition format a scrape gets, from its `Accept` header, as Prometheus's client
//! libraries decide it: the acceptable type with the highest `q` (the first of equals), and the
//! text format 0.0.4 when nothing better is asked for (curl, `promtool`, an empty header).

/// The formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// Prometheus protobuf, length-delimited `MetricFamily` messages; the only one with native
    /// histograms.
    Protobuf,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Text, Format::OpenMetrics, Format::Protobuf];

    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best: Option<(Format, f64)> = None;
        for entry in accept.unwrap_or_default().split(',') {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut q = 1.0;
            let (mut proto, mut encoding, mut version) = (None, None, None);
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "proto" => proto = Some(value.to_string()),
                    "encoding" => encoding = Some(value.to_string()),
                    "version" => version = Some(value.to_string()),
                    _ => {}
                }
            }
            let format = match media.as_str() {
                "application/vnd.google.protobuf"
                    if proto.as_deref() == Some("io.prometheus.client.MetricFamily")
                        && encoding.as_deref() == Some("delimited") =>
                {
                    Format::Protobuf
                }
                "application/openmetrics-text" if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) => {
                    Format::OpenMetrics
                }
                "text/plain" if matches!(version.as_deref(), None | Some("0.0.4")) => Format::Text,
                "*/*" | "text/*" => Format::Text,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((format, q));
            }
        }
        best.map_or(Format::Text, |(format, _)| format)
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_acceptable_format_wins() {
        // Prometheus 2.42 with native histograms on, then without, then 3.x's default.
        let cases = [
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", Format::Protobuf),
            ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", Format::OpenMetrics),
            ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1", Format::OpenMetrics),
            ("text/plain;version=0.0.4;q=0.2,application/openmetrics-text;version=1.0.0;q=0.9", Format::OpenMetrics),
            ("*/*", Format::Text),
            ("", Format::Text),
            ("application/json", Format::Text),
            ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text", Format::Text),
            ("application/openmetrics-text;version=2.0.0", Format::Text),
            ("application/openmetrics-text;version=1.0.0;q=0,text/plain", Format::Text),
        ];
        for (accept, expected) in cases {
            assert_eq!(Format::negotiate(Some(accept)), expected, "{accept}");
        }
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
