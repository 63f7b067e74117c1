//! `produce`: sends updates to a topic, from a file (bytes unchanged) or simulated, for the demo,
//! the tests and the benchmarks. Not part of the service's pipeline.

use crate::log_limit::LogRateLimits;
use crate::traffic::synthetic::{SyntheticTraffic, TrafficProfile};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use serde::Deserialize;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Where and how fast to send.
pub struct ProduceTarget<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    /// Extra librdkafka properties (SASL, TLS), from the config's `kafka.properties`.
    pub properties: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ProduceSummary {
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// The producer's errors, logged at most once a second per code (a broker outage repeats them many
/// times a second), with the count of those left out since.
struct ProducerLog {
    /// Per error code.
    warned: LogRateLimits,
    undelivered: std::sync::atomic::AtomicU64,
}

impl ProducerLog {
    fn warn(&self, error: &KafkaError, reason: &str) {
        let code = error
            .rdkafka_error_code()
            .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
        if let Some(suppressed) = self.warned.admit(&code) {
            tracing::warn!(
                code = code.as_str(),
                reason = reason,
                suppressed_since_last_warning = suppressed,
                "kafka client error"
            );
        }
    }
}

impl ClientContext for ProducerLog {
    fn error(&self, error: KafkaError, reason: &str) {
        self.warn(&error, reason);
    }
}

impl ProducerContext for ProducerLog {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.undelivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.warn(error, "delivery failed");
        }
    }
}

struct Sender {
    producer: ThreadedProducer<ProducerLog>,
    topic: String,
    summary: ProduceSummary,
    started: Instant,
}

impl Sender {
    fn new(target: &ProduceTarget<'_>) -> Result<Sender, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", target.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "200000");
        for (key, value) in &target.properties {
            config.set(key, value);
        }
        let context = ProducerLog {
            warned: Default::default(),
            undelivered: Default::default(),
        };
        Ok(Sender {
            producer: (config.create_with_context(context))
                .map_err(|error| crate::config::kafka::redacted(error, &config))?,
            topic: target.topic.to_string(),
            summary: ProduceSummary::default(),
            started: Instant::now(),
        })
    }

    fn send(&mut self, key: Option<&str>, payload: &[u8]) -> Result<(), KafkaError> {
        loop {
            let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => break,
                // The local queue is full: wait for deliveries to drain it.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err((error, _)) => return Err(error),
            }
        }
        self.summary.messages += 1;
        self.summary.bytes += payload.len() as u64;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<ProduceSummary> {
        self.producer.flush(Duration::from_secs(60))?;
        let undelivered = self
            .producer
            .context()
            .undelivered
            .load(std::sync::atomic::Ordering::Relaxed);
        anyhow::ensure!(
            undelivered == 0,
            "{undelivered} of {} messages could not be delivered",
            self.summary.messages
        );
        Ok(ProduceSummary {
            elapsed: self.started.elapsed(),
            ..self.summary
        })
    }
}

#[derive(Deserialize)]
struct RunId<'a> {
    #[serde(borrow)]
    metadata: Option<MetaId<'a>>,
}

#[derive(Deserialize)]
struct MetaId<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
}

/// The message key of a line: its `metadata.id` when it has one, so one run's updates share a
/// partition and stay in order.
pub fn key_of(line: &[u8]) -> Option<String> {
    let parsed: RunId<'_> = serde_json::from_slice(line).ok()?;
    parsed.metadata?.id.map(|id| id.into_owned())
}

/// Sends each non-blank line of `reader` as one message, bytes unchanged (without the newline).
pub fn produce_lines(target: &ProduceTarget<'_>, reader: impl BufRead) -> anyhow::Result<ProduceSummary> {
    let mut sender = Sender::new(target)?;
    for line in reader.split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        sender.send(key_of(&line).as_deref(), &line)?;
    }
    sender.finish()
}

/// Sends simulated traffic: `count` messages (`None`: until `stop` says so), paced at the
/// simulation's own clock when `live`, else as fast as the broker takes them.
pub fn produce_synthetic(
    target: &ProduceTarget<'_>,
    profile: &TrafficProfile,
    count: Option<u64>,
    live: bool,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<ProduceSummary> {
    let mut sender = Sender::new(target)?;
    let start = chrono::Utc::now();
    let wall = Instant::now();
    for message in SyntheticTraffic::new(profile, start) {
        if count.is_some_and(|n| sender.summary.messages >= n) || stop() {
            break;
        }
        if live {
            let due = (message.at - start).to_std().unwrap_or_default();
            if let Some(wait) = due.checked_sub(wall.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        sender.send(message.key.as_deref(), &message.payload)?;
    }
    sender.finish()
}

#[cfg(test)]
mod tests {
    use super::{key_of, ProducerLog};

    #[test]
    fn keys_come_from_metadata_id() {
        assert_eq!(
            key_of(br#"{"metadata":{"id":"r-1"},"status":"QUEUED"}"#).as_deref(),
            Some("r-1")
        );
        assert_eq!(key_of(br#"{"metadata":{"id":"caf\u00e9"}}"#).as_deref(), Some("café"));
        assert_eq!(key_of(br#"{"status":"QUEUED"}"#), None);
        assert_eq!(key_of(br#"{"metadata":{"id":5}}"#), None);
        assert_eq!(key_of(b"not json"), None);
        assert_eq!(key_of(b"[1]"), None);
    }

    #[test]
    fn errors_are_logged_once_a_second_per_code() {
        let log = ProducerLog {
            warned: Default::default(),
            undelivered: Default::default(),
        };
        let first: Vec<_> = (0..4).map(|_| log.warned.admit_at("AllBrokersDown", 100)).collect();
        assert_eq!(first, [Some(0), None, None, None]);
        assert_eq!(
            log.warned.admit_at("MessageTimedOut", 100),
            Some(0),
            "each code has its own limit"
        );
        assert_eq!(
            log.warned.admit_at("AllBrokersDown", 101),
            Some(3),
            "the next warning counts the 3 left out"
        );
        assert_eq!(log.warned.admit_at("AllBrokersDown", 101), None);
    }
}
