//! The Kafka consumer-group member.
//!
//! At-least-once without loss: `enable.auto.offset.store=false`, and a message's offset is stored
//! only after [`Pipeline::process`] returned, i.e. once its effect is in the metrics. Stored
//! offsets are committed every `kafka.commit_interval` by librdkafka, synchronously before
//! partitions are revoked, and at shutdown. A broker that is down or restarts is librdkafka's to
//! reconnect to; we count and log its errors and keep consuming.

use crate::config::KafkaConfig;
use crate::events::{
    ConsumedCounters, KafkaClientError, LagReported, MessageOrigin, MessageProcessed, OffsetStoreFailed,
    OffsetsCommitted, Rebalanced, Telemetry,
};
use crate::pipeline::{now_nanos, Pipeline};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Properties set unless `kafka.properties` says otherwise.
///
/// - `auto.offset.reset=earliest`: a new consumer group starts from the oldest retained update
///   rather than losing what was produced before it joined.
/// - `fetch.queue.backoff.ms=5`: librdkafka's default (1000 ms) stalls fetching for a second each
///   time the consumer falls behind.
pub const DEFAULT_PROPERTIES: [(&str, &str); 2] = [("auto.offset.reset", "earliest"), ("fetch.queue.backoff.ms", "5")];

/// What `/readyz` needs to know about the consumer.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    assigned_partitions: AtomicUsize,
    broker_up: AtomicBool,
}

impl ConsumerHealth {
    /// `None` when ready: partitions assigned and a broker connection up.
    pub fn not_ready_because(&self) -> Option<String> {
        if !self.broker_up.load(Ordering::Relaxed) {
            return Some("no broker connection is up".into());
        }
        if self.assigned_partitions.load(Ordering::Relaxed) == 0 {
            return Some("no partitions assigned".into());
        }
        None
    }
}

/// librdkafka's callbacks, turned into events.
struct SourceContext {
    telemetry: Arc<Telemetry>,
    health: Arc<ConsumerHealth>,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
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
        let up = statistics.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        self.health.broker_up.store(up, Ordering::Relaxed);
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
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.broker_up.store(false, Ordering::Relaxed);
        }
        KafkaClientError { code: &code, reason }.emit(&self.telemetry);
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
        self.health.assigned_partitions.store(now_assigned, Ordering::Relaxed);
        let (kind, list) = match rebalance {
            Rebalance::Assign(tpl) => ("assign", partitions_of(tpl)),
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

/// The librdkafka configuration for `config`.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in DEFAULT_PROPERTIES {
        client.set(key, value);
    }
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            config.commit_interval.as_millis().to_string(),
        )
        .set(
            "statistics.interval.ms",
            config.statistics_interval.as_millis().to_string(),
        );
    client
}

/// Consumes until `shutdown` resolves, then commits what was processed and leaves the group.
pub async fn consume(
    config: &KafkaConfig,
    pipeline: Pipeline,
    health: Arc<ConsumerHealth>,
    shutdown: impl Future<Output = ()>,
) -> KafkaResult<()> {
    let telemetry = pipeline.telemetry().clone();
    let context = SourceContext {
        telemetry: telemetry.clone(),
        health,
    };
    let consumer: StreamConsumer<SourceContext> = client_config(config).create_with_context(context)?;
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
