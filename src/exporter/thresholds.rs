//! The thresholds' three gauge families, from the numbers the evaluator keeps.

use super::text::escape_label;
use super::writer::{Kind, Writer};
use crate::thresholds::evaluate::{ThresholdEvaluator, ThresholdGauge};

/// Which number of a state a family shows (`None`: no sample).
type GaugeOf = fn(&ThresholdGauge<'_>) -> Option<f64>;

/// `hatchet_workflow_threshold_breached`, `_limit` and `_observed`.
pub fn render(out: &mut dyn Writer, evaluator: &ThresholdEvaluator) {
    let gauges = evaluator.gauges();
    let families: [(&str, &str, GaugeOf); 3] = [
        (
            "hatchet_workflow_threshold_breached",
            "1 while the workflow is beyond its threshold (for at least the threshold's `for`), else 0; evaluated every thresholds.evaluation_interval.",
            |g| Some(if g.breached { 1.0 } else { 0.0 }),
        ),
        (
            "hatchet_workflow_threshold_limit",
            "The threshold's max in force for the workflow (a ratio, seconds, or runs).",
            |g| Some(g.limit),
        ),
        (
            "hatchet_workflow_threshold_observed",
            "The value compared with the limit at the last evaluation; absent while there is nothing to observe.",
            |g| g.observed,
        ),
    ];
    for (name, help, value) in families {
        out.family(name, Kind::Gauge, help);
        for gauge in &gauges {
            if let Some(v) = value(gauge) {
                let labels = format!(
                    "tenant_id=\"{}\",workflow=\"{}\",threshold=\"{}\"",
                    escape_label(gauge.tenant),
                    escape_label(gauge.workflow),
                    gauge.kind.as_str()
                );
                out.value(&labels, v, None);
            }
        }
    }
}
