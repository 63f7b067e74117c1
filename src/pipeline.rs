//! One message through the stages: decode -> aggregate -> self-metrics. The Kafka source and the
//! file replay both call [`Pipeline::process`], so a replayed file is counted exactly as Kafka is.

use crate::aggregate::{Aggregator, Applied};
use crate::decode::{decode, RejectReason};
use crate::events::{
    DuplicateOutcome, MessageOrigin, MessageRejected, Telemetry, ThresholdTransitioned, ThresholdsEvaluated,
};
use crate::thresholds::evaluate::ThresholdEvaluator;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone)]
pub struct Pipeline {
    aggregator: Arc<Mutex<Aggregator>>,
    telemetry: Arc<Telemetry>,
    /// The thresholds' states, read from the aggregation on an interval (none until set).
    thresholds: Arc<Mutex<ThresholdEvaluator>>,
    max_message_bytes: usize,
    /// The last rendered page's length: the next page is allocated at about that size at once,
    /// rather than grown by doubling (which leaves up to half of it unused, and resident).
    page_bytes: Arc<AtomicUsize>,
}

impl Pipeline {
    pub fn new(aggregator: Aggregator, telemetry: Arc<Telemetry>, max_message_bytes: usize) -> Pipeline {
        Pipeline {
            aggregator: Arc::new(Mutex::new(aggregator)),
            telemetry,
            thresholds: Arc::default(),
            max_message_bytes,
            page_bytes: Arc::default(),
        }
    }

    /// Processes one message. When this returns, the message's effect is in the metrics (or it was
    /// rejected and counted), so its offset may be stored.
    pub fn process(
        &self,
        payload: Option<&[u8]>,
        origin: &MessageOrigin<'_>,
        now_nanos: i64,
    ) -> Result<Applied, RejectReason> {
        let update = match decode(payload, self.max_message_bytes) {
            Ok(update) => update,
            Err(error) => {
                MessageRejected { origin, error: &error }.emit(&self.telemetry);
                return Err(error.reason);
            }
        };
        let applied = self.aggregator().apply(&update, now_nanos);
        if applied == Applied::Duplicate {
            DuplicateOutcome {
                origin,
                run_id: &update.run.metadata.id,
            }
            .emit(&self.telemetry);
        }
        Ok(applied)
    }

    /// The aggregation, locked. Hold it briefly: consumption waits meanwhile.
    pub fn aggregator(&self) -> MutexGuard<'_, Aggregator> {
        // A panic while holding the lock cannot leave the statistics half-updated in a way that
        // matters more than stopping the exporter would, so keep serving.
        self.aggregator.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Evaluates the thresholds at `now_nanos` (the wall clock): observes under the aggregation's
    /// lock, briefly, then moves the states and reports each transition.
    pub fn evaluate_thresholds(&self, now_nanos: i64) {
        let started = std::time::Instant::now();
        let mut evaluator = self.thresholds();
        let observed = {
            let aggregator = self.aggregator();
            evaluator.observe(&aggregator, now_nanos)
        };
        for transition in evaluator.update(observed, now_nanos) {
            ThresholdTransitioned {
                transition: &transition,
            }
            .emit(&self.telemetry);
        }
        ThresholdsEvaluated {
            seconds: started.elapsed().as_secs_f64(),
        }
        .emit(&self.telemetry);
    }

    /// The thresholds' evaluation, locked. Lock order: this, then [`Pipeline::aggregator`], never
    /// the other way round.
    pub fn thresholds(&self) -> MutexGuard<'_, ThresholdEvaluator> {
        self.thresholds.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How much to allocate for the next page: the last page's length and a sixteenth more.
    pub fn page_capacity(&self) -> usize {
        let last = self.page_bytes.load(Ordering::Relaxed);
        (last + last / 16).max(64 * 1024)
    }

    /// Records a rendered page's length for [`Pipeline::page_capacity`].
    pub fn page_rendered(&self, bytes: usize) {
        self.page_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }
}

/// The wall clock as unix nanoseconds.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}
