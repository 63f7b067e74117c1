//! The running service's shared state: the message pipeline (and so the aggregation and the
//! service's telemetry), the thresholds' evaluation, and readiness. Built whole from the config
//! by [`Service::new`]; the sources, the exporter and the reload depend on it, never on each
//! other.
//!
//! Lock order: [`Service::thresholds`], then the aggregation ([`Pipeline::aggregator`]), never
//! the other way round.

use crate::aggregate::{Aggregator, Clock};
use crate::config::{Config, ConfigError};
use crate::events::{Telemetry, ThresholdTransitioned, ThresholdsEvaluated};
use crate::ids::Positions;
use crate::pipeline::Pipeline;
use crate::thresholds::evaluate::ThresholdEvaluator;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone)]
pub struct Service {
    pipeline: Pipeline,
    /// The thresholds' states, read from the aggregation on an interval.
    thresholds: Arc<Mutex<ThresholdEvaluator>>,
    readiness: Arc<Readiness>,
    /// How far each partition's messages are counted in the pages scrapes have delivered: the
    /// furthest of each, whichever page it came from.
    delivered: Arc<tokio::sync::watch::Sender<Positions>>,
}

impl Service {
    /// The service `config` describes, its thresholds loaded, on `clock`.
    pub fn new(config: &Config, clock: Clock) -> Result<Service, ConfigError> {
        let thresholds = config.load_thresholds()?;
        let telemetry = Arc::new(Telemetry::new(config.log.rejected_messages_per_second));
        let pipeline = Pipeline::new(
            Aggregator::new(config.aggregate_settings(), clock),
            telemetry,
            config.kafka.max_message_bytes,
        )
        .with_decode_threads(config.kafka.decode_threads);
        Ok(Service {
            pipeline,
            thresholds: Arc::new(Mutex::new(ThresholdEvaluator::new(
                thresholds,
                config.thresholds.evaluation_interval,
            ))),
            readiness: Arc::default(),
            delivered: Arc::new(tokio::sync::watch::Sender::new(Positions::default())),
        })
    }

    /// A scrape has delivered a page showing `positions` (its last byte was written to the
    /// client): those messages' effects reached whoever scraped.
    pub fn scrape_delivered(&self, positions: &Positions) {
        self.delivered.send_if_modified(|delivered| delivered.merge(positions));
    }

    /// The positions scrapes have delivered, told as they move forward.
    pub fn delivered_scrapes(&self) -> tokio::sync::watch::Receiver<Positions> {
        self.delivered.subscribe()
    }

    /// The per-message path the sources feed.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        self.pipeline.telemetry()
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The thresholds' evaluation, locked (see the lock order above).
    pub fn thresholds(&self) -> MutexGuard<'_, ThresholdEvaluator> {
        self.thresholds.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Evaluates the thresholds at `now_nanos` (the wall clock): observes under the aggregation's
    /// lock, briefly, then moves the states and reports each transition. `restored`: the state was
    /// just rebuilt from the topic (see [`ThresholdEvaluator::assume_held_before`]).
    pub fn evaluate_thresholds(&self, now_nanos: i64, restored: bool) {
        let started = std::time::Instant::now();
        let mut evaluator = self.thresholds();
        if restored {
            evaluator.assume_held_before();
        }
        let observed = {
            let aggregator = self.pipeline.aggregator();
            evaluator.observe(&aggregator, now_nanos)
        };
        for t in evaluator.update(observed, now_nanos) {
            ThresholdTransitioned {
                tenant: &t.tenant,
                workflow: &t.workflow,
                threshold: t.kind.as_str(),
                rule: &t.rule,
                breached: t.breached,
                observed: t.observed,
                limit: t.limit,
                condition: &t.condition,
                cause: t.cause,
            }
            .emit(self.telemetry());
        }
        ThresholdsEvaluated {
            seconds: started.elapsed().as_secs_f64(),
        }
        .emit(self.telemetry());
    }
}

/// What `/readyz` says: whether the consumer holds partitions and reaches a broker, and if not,
/// why. The source tells it what happens; it knows nothing of Kafka's types.
#[derive(Debug, Default)]
pub struct Readiness {
    assigned_partitions: AtomicUsize,
    broker_up: AtomicBool,
    brokers: Mutex<BrokerState>,
    restoring: Mutex<RestoreProgress>,
    restores_finished: tokio::sync::Notify,
}

/// Partitions whose state is being rebuilt from the topic, and how far along.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreProgress {
    pub partitions: usize,
    /// Messages read again so far, and to read in all, over those partitions.
    pub read: u64,
    pub total: u64,
}

#[derive(Debug, Default)]
struct BrokerState {
    /// Why no broker can be used, when known: cleared once the statistics show a connection up.
    problem: BrokerProblem,
    /// The latest connection error of any broker (one broker's trouble is not an outage), told
    /// along with an outage.
    last_error: Option<String>,
    /// The brokers refused this client an operation (topic or group ACLs): the connection is up,
    /// so only an assignment clears it.
    denied: Option<String>,
}

/// Why no broker can be used, most telling first: a later, vaguer report never hides a refusal
/// of the credentials (which librdkafka follows with "all brokers are down").
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum BrokerProblem {
    #[default]
    None,
    /// The statistics show no connection up.
    NoConnection,
    /// Every broker is down or unreachable.
    AllDown(String),
    /// The brokers refused this client's credentials.
    Refused(String),
}

impl Readiness {
    /// `None` when ready: partitions assigned and a broker connection up.
    pub fn not_ready_because(&self) -> Option<String> {
        if self.assigned_partitions.load(Ordering::Relaxed) == 0 {
            if let Some(reason) = &self.state().denied {
                return Some(format!("the brokers refused this client's permissions: {reason}"));
            }
        }
        if !self.broker_up.load(Ordering::Relaxed) {
            let state = self.state();
            let why = match &state.problem {
                BrokerProblem::Refused(reason) => {
                    return Some(format!("the brokers refused this client's credentials: {reason}"))
                }
                BrokerProblem::None => "connecting to the brokers: none has answered yet".to_string(),
                BrokerProblem::NoConnection => "no broker connection is up (the Kafka client's statistics)".into(),
                BrokerProblem::AllDown(reason) => format!("all brokers are down or unreachable ({reason})"),
            };
            return Some(match &state.last_error {
                Some(last) => format!("{why}; last connection error: {last}"),
                None => why,
            });
        }
        if self.assigned_partitions.load(Ordering::Relaxed) == 0 {
            return Some(
                "connected, but no partitions are assigned (joining the consumer group, or the group has more members than the topics have partitions)"
                    .into(),
            );
        }
        let restoring = *self.restoring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if restoring.partitions > 0 {
            return Some(format!(
                "restoring: rebuilding the runs and windows of {} partition(s) from the topic, {} of {} messages read",
                restoring.partitions, restoring.read, restoring.total
            ));
        }
        None
    }

    /// How far the restore of the partitions just taken over has come (`partitions` 0: none).
    pub fn restoring(&self, progress: RestoreProgress) {
        let mut restoring = self.restoring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if restoring.partitions > 0 && progress.partitions == 0 {
            // Kept as a permit if nobody waits yet.
            self.restores_finished.notify_one();
        }
        *restoring = progress;
    }

    /// Whether some partition's state is being restored.
    pub fn restoring_now(&self) -> bool {
        self.restoring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .partitions
            > 0
    }

    /// Resolves once every restore in progress has finished (at once if that happened since the
    /// last call).
    pub async fn restores_finished(&self) {
        self.restores_finished.notified().await;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BrokerState> {
        self.brokers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The Kafka client's statistics show a broker connection up: the authority.
    pub fn broker_connected(&self) {
        let mut state = self.state();
        state.problem = BrokerProblem::None;
        state.last_error = None;
        self.broker_up.store(true, Ordering::Relaxed);
    }

    /// The statistics show no broker connection up; a reason already known stays.
    pub fn no_broker_connected(&self) {
        let mut state = self.state();
        if state.problem == BrokerProblem::None {
            state.problem = BrokerProblem::NoConnection;
        }
        self.broker_up.store(false, Ordering::Relaxed);
    }

    /// A message or an assignment arrived: a broker answered, which is enough before the first
    /// statistics, but not against a problem reported since (a message may come from the local
    /// queue after the brokers went away). Cheap: runs for every message.
    pub fn broker_answered(&self) {
        if self.broker_up.load(Ordering::Relaxed) {
            return;
        }
        if self.state().problem == BrokerProblem::None {
            self.broker_up.store(true, Ordering::Relaxed);
        }
    }

    /// The brokers refused this client's credentials or permissions: that stays the reason until
    /// a connection is up.
    pub fn brokers_refused(&self, reason: &str) {
        let mut state = self.state();
        state.problem = BrokerProblem::Refused(reason.to_string());
        self.broker_up.store(false, Ordering::Relaxed);
    }

    /// Every broker is down or unreachable (a refusal of the credentials, when known, stays the
    /// reason).
    pub fn all_brokers_down(&self, reason: &str) {
        let mut state = self.state();
        if !matches!(state.problem, BrokerProblem::Refused(_)) {
            state.problem = BrokerProblem::AllDown(reason.to_string());
        }
        self.broker_up.store(false, Ordering::Relaxed);
    }

    /// One broker's connection failed: not an outage, but the reason to give if one follows.
    pub fn connection_failed(&self, reason: &str) {
        self.state().last_error = Some(reason.to_string());
    }

    /// Partitions this member holds now.
    pub fn partitions_assigned(&self, count: usize) {
        if count > 0 {
            self.state().denied = None;
        }
        self.assigned_partitions.store(count, Ordering::Relaxed);
    }

    /// The brokers refused an operation (reading a topic, joining the group): the connection
    /// stays up, so this stays the reason until partitions are assigned.
    pub fn access_denied(&self, reason: &str) {
        self.state().denied = Some(reason.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(readiness: &Readiness) -> String {
        readiness.not_ready_because().unwrap_or_default()
    }

    #[test]
    fn the_first_message_proves_a_broker_before_any_statistics() {
        let readiness = Readiness::default();
        assert!(reason(&readiness).contains("none has answered yet"));
        readiness.broker_answered();
        assert!(reason(&readiness).contains("no partitions are assigned"));
        readiness.partitions_assigned(3);
        assert_eq!(readiness.not_ready_because(), None);
    }

    #[test]
    fn refused_credentials_stay_the_reason_until_a_connection_is_up() {
        let readiness = Readiness::default();
        readiness.brokers_refused("SASL authentication error");
        readiness.all_brokers_down("1/1 brokers are down");
        readiness.no_broker_connected();
        readiness.broker_answered();
        assert!(
            reason(&readiness).contains("credentials") && reason(&readiness).contains("SASL authentication error"),
            "{}",
            reason(&readiness)
        );
        readiness.broker_connected();
        readiness.partitions_assigned(1);
        assert_eq!(readiness.not_ready_because(), None);
    }

    #[test]
    fn a_refused_permission_stays_the_reason_until_an_assignment() {
        let readiness = Readiness::default();
        readiness.broker_connected();
        readiness.access_denied("Group authorization failed");
        readiness.broker_connected();
        assert!(
            reason(&readiness).contains("permissions") && reason(&readiness).contains("Group authorization"),
            "{}",
            reason(&readiness)
        );
        readiness.partitions_assigned(2);
        assert_eq!(readiness.not_ready_because(), None);
    }

    #[test]
    fn an_outage_gives_the_last_connection_error_and_survives_queued_messages() {
        let readiness = Readiness::default();
        readiness.broker_connected();
        readiness.partitions_assigned(1);
        readiness.connection_failed("one broker is restarting");
        assert_eq!(
            readiness.not_ready_because(),
            None,
            "one broker's trouble is not an outage"
        );
        readiness.all_brokers_down("2/2 brokers are down");
        readiness.connection_failed("Connection refused");
        readiness.broker_answered();
        let said = reason(&readiness);
        assert!(
            said.contains("2/2 brokers are down") && said.contains("Connection refused"),
            "{said}"
        );
        readiness.no_broker_connected();
        assert_eq!(reason(&readiness), said, "the statistics do not blur the reason");
        readiness.broker_connected();
        assert_eq!(readiness.not_ready_because(), None);
    }

    #[test]
    fn before_any_answer_a_connection_error_is_the_reason() {
        let readiness = Readiness::default();
        readiness.connection_failed("kafka-0: Failed to resolve");
        assert!(
            reason(&readiness).contains("none has answered yet") && reason(&readiness).contains("Failed to resolve"),
            "{}",
            reason(&readiness)
        );
        readiness.broker_answered();
        assert!(
            reason(&readiness).contains("no partitions"),
            "another broker answered: one broker's trouble is not an outage"
        );
    }
}
