//! The Kafka consumer-group member.
//!
//! At-least-once without loss: `enable.auto.offset.store=false`, and a message's offset is stored
//! only after [`Pipeline::process`] returned, i.e. once its effect is in the metrics. Stored
//! offsets are committed every `kafka.commit_interval` by librdkafka, synchronously before
//! partitions are revoked, and at shutdown. A broker that is down or restarts is librdkafka's to
//! reconnect to; we count and log its errors and keep consuming.
//!
//! The librdkafka configuration is built here ([`client_config`]) and checked here without a
//! client ([`refused_setting`], called by config validation), and here is decided which property
//! values are secrets that no output or error may show ([`is_secret`]).

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
use rdkafka::types::RDKafkaConfRes;
use rdkafka::TopicPartitionList;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    brokers: Mutex<BrokerState>,
}

#[derive(Debug, Default)]
struct BrokerState {
    /// Why no broker can be used, when known: cleared once the statistics show a connection up.
    problem: BrokerProblem,
    /// The latest connection error of any broker (one broker's trouble is not an outage), told
    /// along with an outage.
    last_error: Option<String>,
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
    /// The brokers refused this client's credentials or permissions.
    Refused(String),
}

impl ConsumerHealth {
    /// `None` when ready: partitions assigned and a broker connection up.
    pub fn not_ready_because(&self) -> Option<String> {
        if !self.broker_up.load(Ordering::Relaxed) {
            let state = self.state();
            let why = match &state.problem {
                BrokerProblem::Refused(reason) => {
                    return Some(format!(
                        "the brokers refused this client's credentials or permissions: {reason}"
                    ))
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
        None
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BrokerState> {
        self.brokers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The Kafka client's statistics show a broker connection up: the authority.
    fn broker_connected(&self) {
        let mut state = self.state();
        *state = BrokerState::default();
        self.broker_up.store(true, Ordering::Relaxed);
    }

    /// The statistics show no broker connection up; a reason already known stays.
    fn no_broker_connected(&self) {
        let mut state = self.state();
        if state.problem == BrokerProblem::None {
            state.problem = BrokerProblem::NoConnection;
        }
        self.broker_up.store(false, Ordering::Relaxed);
    }

    /// A message or an assignment arrived: a broker answered, which is enough before the first
    /// statistics, but not against a problem reported since (a message may come from the local
    /// queue after the brokers went away). Cheap: runs for every message.
    fn broker_answered(&self) {
        if self.broker_up.load(Ordering::Relaxed) {
            return;
        }
        if self.state().problem == BrokerProblem::None {
            self.broker_up.store(true, Ordering::Relaxed);
        }
    }

    /// What a Kafka client error says about the brokers.
    fn client_error(&self, code: Option<RDKafkaErrorCode>, reason: &str) {
        let Some(code) = code else { return };
        let mut state = self.state();
        match code {
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed => {
                state.problem = BrokerProblem::Refused(reason.to_string());
                self.broker_up.store(false, Ordering::Relaxed);
            }
            RDKafkaErrorCode::AllBrokersDown => {
                if !matches!(state.problem, BrokerProblem::Refused(_)) {
                    state.problem = BrokerProblem::AllDown(reason.to_string());
                }
                self.broker_up.store(false, Ordering::Relaxed);
            }
            RDKafkaErrorCode::Resolve | RDKafkaErrorCode::SSL | RDKafkaErrorCode::BrokerTransportFailure => {
                state.last_error = Some(reason.to_string());
            }
            _ => {}
        }
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
        match statistics.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP") {
            true => self.health.broker_connected(),
            false => self.health.no_broker_connected(),
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
        self.health.client_error(error.rdkafka_error_code(), reason);
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
            Rebalance::Assign(tpl) => {
                // Only the group coordinator assigns: a broker answered.
                self.health.broker_answered();
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

/// What a secret's value is shown as.
pub const REDACTED: &str = "<redacted>";

/// The properties librdkafka itself marks sensitive (`_RK_SENSITIVE` in its `rdkafka_conf.c`, as
/// bundled: 2.12) and redacts from its own dumps.
const SENSITIVE_PROPERTIES: [&str; 13] = [
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.password",
];

/// Words in a property's name that suggest its value is a secret (compared in lower case).
const SECRET_WORDS: [&str; 10] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "key",
    "jaas",
    "oauth",
    "private",
];

/// Whether the value of the librdkafka property `name` must never be shown, in any output or
/// error: librdkafka's sensitive properties, any name that suggests a secret, and any name
/// librdkafka does not know (a typo of a secret's name still holds the secret).
pub fn is_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SENSITIVE_PROPERTIES.contains(&name)
        || SECRET_WORDS.iter().any(|word| lower.contains(word))
        || !librdkafka_knows(name)
}

/// Asks librdkafka, without creating a client: setting an unknown name is refused as unknown,
/// whatever the value (an empty value sets nothing for the names that act when set).
fn librdkafka_knows(name: &str) -> bool {
    !matches!(
        ClientConfig::new().set(name, "").create_native_config(),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..) | KafkaError::Nul(_))
    )
}

/// `text` with every occurrence of `secret` replaced (librdkafka's messages quote the value they
/// refuse, left-trimmed).
fn scrub(text: &str, secret: &str) -> String {
    let mut text = text.to_string();
    for form in [secret, secret.trim_start()] {
        if !form.is_empty() {
            text = text.replace(form, REDACTED);
        }
    }
    text
}

/// `error`, from creating a client with `client`, made safe to print: librdkafka's words (and
/// rdkafka's `Display`) quote the value of the property they refuse, and a client's creation
/// error may quote any value.
pub fn redacted(error: KafkaError, client: &ClientConfig) -> KafkaError {
    match error {
        KafkaError::ClientConfig(code, desc, name, value) if is_secret(&name) => {
            KafkaError::ClientConfig(code, scrub(&desc, &value), name, REDACTED.into())
        }
        KafkaError::ClientCreation(mut text) => {
            for name in client.config_map().into_keys().filter(|name| is_secret(name)) {
                text = scrub(&text, client.get(name).unwrap_or_default());
            }
            KafkaError::ClientCreation(text)
        }
        other => other,
    }
}

/// Whether librdkafka takes the configuration [`consume`] would give it: `(key, why)` if not,
/// the key being this service's (`kafka.commit_interval`, `kafka.properties."name"`). Each
/// property is set on a configuration of its own, in name order (so the first refusal named is
/// always the same), then all together as [`consume`] does; no client is created, nothing connects.
pub fn refused_setting(config: &KafkaConfig) -> Option<(String, String)> {
    let client = client_config(config);
    let names: Vec<&str> = client.config_map().into_keys().collect();
    for name in names {
        let value = client.get(name).unwrap_or_default();
        if let Err(error) = ClientConfig::new().set(name, value).create_native_config() {
            return Some(refusal(config, error));
        }
    }
    client.create_native_config().err().map(|error| refusal(config, error))
}

/// What librdkafka refuses only as a client is created (a SASL mechanism it was built without, a
/// TLS file it cannot read...), in words safe to print. Creates the consumer [`consume`] would,
/// less `bootstrap.servers` so that it has nowhere to connect, and drops it.
pub fn refused_by_client(config: &KafkaConfig) -> Option<String> {
    let mut client = client_config(config);
    client.remove("bootstrap.servers");
    match client.create::<BaseConsumer>() {
        Ok(_) => None,
        Err(error) => Some(redacted(error, &client).to_string()),
    }
}

/// A refusal of librdkafka's, in the config's words, never quoting a secret.
fn refusal(config: &KafkaConfig, error: KafkaError) -> (String, String) {
    let KafkaError::ClientConfig(code, desc, name, value) = error else {
        return (
            "kafka.properties".into(),
            format!("librdkafka refuses the configuration: {error}"),
        );
    };
    let key = match name.as_str() {
        _ if config.properties.contains_key(&name) => format!("kafka.properties.{name:?}"),
        "bootstrap.servers" => "kafka.brokers".into(),
        "group.id" => "kafka.group_id".into(),
        "auto.commit.interval.ms" => "kafka.commit_interval".into(),
        "statistics.interval.ms" => "kafka.statistics_interval".into(),
        _ => format!("kafka.properties.{name:?}"),
    };
    let why = match code {
        RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => {
            "librdkafka has no such property (misspelt?); its value is not shown".to_string()
        }
        _ if is_secret(&name) => format!(
            "librdkafka refuses it (its value is not shown): {}",
            scrub(desc.trim(), &value)
        ),
        _ => format!("librdkafka refuses {value:?}: {}", desc.trim()),
    };
    (key, why)
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
        health: health.clone(),
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
        health.broker_answered();
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
    use rdkafka::consumer::BaseConsumer;
    use std::time::Duration;

    fn reason(health: &ConsumerHealth) -> String {
        health.not_ready_because().unwrap_or_default()
    }

    #[test]
    fn the_first_message_proves_a_broker_before_any_statistics() {
        let health = ConsumerHealth::default();
        assert!(reason(&health).contains("none has answered yet"));
        health.broker_answered();
        assert!(reason(&health).contains("no partitions are assigned"));
        health.assigned_partitions.store(3, Ordering::Relaxed);
        assert_eq!(health.not_ready_because(), None);
    }

    #[test]
    fn refused_credentials_stay_the_reason_until_a_connection_is_up() {
        let health = ConsumerHealth::default();
        health.client_error(Some(RDKafkaErrorCode::Authentication), "SASL authentication error");
        health.client_error(Some(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down");
        health.no_broker_connected();
        health.broker_answered();
        assert!(
            reason(&health).contains("credentials") && reason(&health).contains("SASL authentication error"),
            "{}",
            reason(&health)
        );
        health.broker_connected();
        health.assigned_partitions.store(1, Ordering::Relaxed);
        assert_eq!(health.not_ready_because(), None);
    }

    #[test]
    fn an_outage_gives_the_last_connection_error_and_survives_queued_messages() {
        let health = ConsumerHealth::default();
        health.broker_connected();
        health.assigned_partitions.store(1, Ordering::Relaxed);
        health.client_error(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "one broker is restarting",
        );
        assert_eq!(
            health.not_ready_because(),
            None,
            "one broker's trouble is not an outage"
        );
        health.client_error(Some(RDKafkaErrorCode::AllBrokersDown), "2/2 brokers are down");
        health.client_error(Some(RDKafkaErrorCode::BrokerTransportFailure), "Connection refused");
        health.broker_answered();
        let said = reason(&health);
        assert!(
            said.contains("2/2 brokers are down") && said.contains("Connection refused"),
            "{said}"
        );
        health.no_broker_connected();
        assert_eq!(reason(&health), said, "the statistics do not blur the reason");
        health.broker_connected();
        assert_eq!(health.not_ready_because(), None);
    }

    #[test]
    fn before_any_answer_a_connection_error_is_the_reason() {
        let health = ConsumerHealth::default();
        health.client_error(Some(RDKafkaErrorCode::Resolve), "kafka-0: Failed to resolve");
        assert!(
            reason(&health).contains("none has answered yet") && reason(&health).contains("Failed to resolve"),
            "{}",
            reason(&health)
        );
        health.client_error(Some(RDKafkaErrorCode::MessageTimedOut), "unrelated");
        assert!(reason(&health).contains("Failed to resolve"));
        health.broker_answered();
        assert!(
            reason(&health).contains("no partitions"),
            "another broker answered: one broker's trouble is not an outage"
        );
    }

    #[test]
    fn secrets_are_sensitive_properties_secret_words_and_unknown_names() {
        for name in [
            "sasl.password",
            "sasl.username",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "ssl.ca.pem",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "sasl.pasword",
            "ssl.truststore.password",
            "vendor.api.token",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in [
            "client.id",
            "fetch.wait.max.ms",
            "auto.offset.reset",
            "security.protocol",
            "sasl.mechanisms",
            "ssl.ca.location",
        ] {
            assert!(!is_secret(name), "{name}");
        }
    }

    #[test]
    fn client_errors_never_show_a_secret() {
        let mut client = ClientConfig::new();
        client.set("sasl.pasword", "hunter2-secret");
        let error = client
            .create::<BaseConsumer>()
            .err()
            .expect("an unknown property is refused");
        assert!(
            error.to_string().contains("hunter2-secret"),
            "rdkafka quotes it: {error}"
        );
        let shown = redacted(error, &client).to_string();
        assert!(shown.contains("sasl.pasword") && !shown.contains("hunter2"), "{shown}");

        client.set("sasl.password", "s3cr3t-value").set("client.id", "visible");
        let creation = KafkaError::ClientCreation("failed to use s3cr3t-value as visible".into());
        let shown = redacted(creation, &client).to_string();
        assert!(!shown.contains("s3cr3t") && shown.contains("visible"), "{shown}");
    }

    #[test]
    fn refusals_name_the_services_own_key_and_hide_secrets() {
        let mut config = KafkaConfig {
            commit_interval: Duration::from_secs(100_000_000 * 3600),
            ..KafkaConfig::default()
        };
        let (key, why) = refused_setting(&config).expect("out of librdkafka's range");
        assert_eq!(key, "kafka.commit_interval");
        assert!(why.contains("auto.commit.interval.ms"), "{why}");
        config.commit_interval = Duration::from_secs(5);
        assert_eq!(refused_setting(&config), None);
        config
            .properties
            .insert("sasl.oauthbearer.method".into(), "hunter2-secret".into());
        let (key, why) = refused_setting(&config).expect("refused");
        assert_eq!(key, "kafka.properties.\"sasl.oauthbearer.method\"");
        assert!(!why.contains("hunter2"), "{why}");
        config.properties.clear();
        config.properties.insert("fetch.wait.max.ms".into(), "never".into());
        let (key, why) = refused_setting(&config).expect("refused");
        assert_eq!(key, "kafka.properties.\"fetch.wait.max.ms\"");
        assert!(why.contains("never"), "a value that is no secret is shown: {why}");
    }
}
