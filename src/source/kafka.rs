//! The Kafka consumer-group member.
//!
//! At-least-once without loss: `enable.auto.offset.store=false`, and a message's offset is stored
//! only after [`crate::pipeline::Pipeline::process`] returned, i.e. once its effect is in the metrics. Stored
//! offsets are committed every `kafka.commit_interval` by librdkafka, synchronously before
//! partitions are revoked, and at shutdown. A broker that is down or restarts is librdkafka's to
//! reconnect to; we count and log its errors and keep consuming.
//!
//! The librdkafka configuration it runs with, and which of its values are secrets, are
//! [`crate::config::kafka`]'s. What the client reports about the brokers goes to the service's
//! [`Readiness`].

use crate::config::kafka::{client_config, redacted, scrub_secrets, secret_values};
use crate::config::KafkaConfig;
use crate::events::{
    ConsumedCounters, KafkaClientError, LagReported, MessageOrigin, MessageProcessed, OffsetStoreFailed,
    OffsetsCommitted, Rebalanced, Telemetry,
};
use crate::pipeline::now_nanos;
use crate::service::{Readiness, Service};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use std::future::Future;
use std::sync::Arc;

/// What a Kafka client error says about readiness.
fn tell_readiness(readiness: &Readiness, code: Option<RDKafkaErrorCode>, reason: &str) {
    match code {
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            readiness.brokers_refused(reason)
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => readiness.access_denied(reason),
        Some(RDKafkaErrorCode::AllBrokersDown) => readiness.all_brokers_down(reason),
        Some(RDKafkaErrorCode::Resolve | RDKafkaErrorCode::SSL | RDKafkaErrorCode::BrokerTransportFailure) => {
            readiness.connection_failed(reason)
        }
        _ => {}
    }
}

/// librdkafka's callbacks, turned into events.
struct SourceContext {
    telemetry: Arc<Telemetry>,
    readiness: Arc<Readiness>,
    /// The values of the secret properties, kept out of every message of the client's.
    secrets: Vec<String>,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let message = scrub_secrets(message, &self.secrets);
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        match statistics.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP") {
            true => self.readiness.broker_connected(),
            false => self.readiness.no_broker_connected(),
        }
        let partitions = (statistics.topics.iter())
            .flat_map(|(topic, t)| {
                t.partitions
                    .values()
                    // `consumer_lag_stored`: behind what was processed, not what was committed.
                    .filter(|p| p.partition >= 0 && p.consumer_lag_stored >= 0)
                    .map(move |p| (topic.clone(), p.partition, p.consumer_lag_stored))
            })
            .collect();
        LagReported { partitions }.emit(&self.telemetry);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error
            .rdkafka_error_code()
            .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
        // Served on /readyz and logged: never with a secret in it.
        let reason = scrub_secrets(reason, &self.secrets);
        tell_readiness(&self.readiness, error.rdkafka_error_code(), &reason);
        KafkaClientError {
            code: &code,
            reason: &reason,
        }
        .emit(&self.telemetry);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            // Everything received so far was processed (processing is synchronous), so commit it
            // now, before another member takes the partitions over.
            commit(consumer, &self.telemetry);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let now_assigned = consumer.assignment().map_or(0, |a| a.count());
        self.readiness.partitions_assigned(now_assigned);
        let (kind, list) = match rebalance {
            Rebalance::Assign(tpl) => {
                // Only the group coordinator assigns: a broker answered.
                self.readiness.broker_answered();
                ("assign", partitions_of(tpl))
            }
            Rebalance::Revoke(tpl) => ("revoke", partitions_of(tpl)),
            Rebalance::Error(error) => {
                KafkaClientError {
                    code: "rebalance",
                    reason: &error.to_string(),
                }
                .emit(&self.telemetry);
                ("error", Vec::new())
            }
        };
        Rebalanced {
            kind,
            partitions: &list,
            now_assigned,
        }
        .emit(&self.telemetry);
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        emit_commit(result, &self.telemetry);
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn commit<C: Consumer<SourceContext>>(consumer: &C, telemetry: &Telemetry) {
    emit_commit(consumer.commit_consumer_state(CommitMode::Sync), telemetry);
}

fn emit_commit(result: KafkaResult<()>, telemetry: &Telemetry) {
    match result {
        Ok(()) => OffsetsCommitted { result: Ok(()) }.emit(telemetry),
        // Nothing new was stored since the last commit: nothing to do, nothing failed.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => OffsetsCommitted { result: Err(&error) }.emit(telemetry),
    }
}

/// Consumes until `shutdown` resolves, then commits what was processed and leaves the group.
pub async fn consume(config: &KafkaConfig, service: &Service, shutdown: impl Future<Output = ()>) -> KafkaResult<()> {
    let pipeline = service.pipeline();
    let readiness = service.readiness();
    let telemetry = pipeline.telemetry().clone();
    let context = SourceContext {
        telemetry: telemetry.clone(),
        readiness: readiness.clone(),
        secrets: secret_values(config),
    };
    let client = client_config(config);
    let consumer: StreamConsumer<SourceContext> = client
        .create_with_context(context)
        .map_err(|error| redacted(error, &client))?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(brokers = %config.brokers, topics = %topics.join(","), group = %config.group_id, "consuming");

    let mut counters = ConsumedCounters::default();
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            biased;
            () = &mut shutdown => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                let code = error
                    .rdkafka_error_code()
                    .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
                KafkaClientError {
                    code: &code,
                    reason: &error.to_string(),
                }
                .emit(&telemetry);
                continue;
            }
        };
        readiness.broker_answered();
        let (topic, partition) = (message.topic(), message.partition());
        let origin = MessageOrigin::Kafka {
            topic,
            partition,
            offset: message.offset(),
        };
        // A rejected message is counted and logged by the pipeline; its offset is stored like any
        // other so that it never stalls the partition.
        let now = now_nanos();
        let _ = pipeline.process(message.payload(), &origin, now);
        let counter = counters.get(&telemetry, topic, partition);
        MessageProcessed {
            counter,
            now_nanos: now,
        }
        .emit(&telemetry);
        if let Err(error) = consumer.store_offset_from_message(&message) {
            OffsetStoreFailed {
                origin: &origin,
                error: &error,
            }
            .emit(&telemetry);
        }
    }
    tracing::info!("shutting down: committing processed offsets");
    commit(&consumer, &telemetry);
    consumer.unsubscribe();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_tell_readiness_what_they_mean() {
        let readiness = Readiness::default();
        tell_readiness(&readiness, Some(RDKafkaErrorCode::MessageTimedOut), "unrelated");
        tell_readiness(&readiness, None, "unrelated");
        assert!(readiness
            .not_ready_because()
            .unwrap_or_default()
            .contains("none has answered yet"));
        tell_readiness(
            &readiness,
            Some(RDKafkaErrorCode::Resolve),
            "kafka-0: Failed to resolve",
        );
        assert!(readiness
            .not_ready_because()
            .unwrap_or_default()
            .contains("Failed to resolve"));
        tell_readiness(&readiness, Some(RDKafkaErrorCode::Authentication), "wrong password");
        tell_readiness(
            &readiness,
            Some(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        let said = readiness.not_ready_because().unwrap_or_default();
        assert!(
            said.contains("credentials") && said.contains("wrong password"),
            "{said}"
        );
    }
}
