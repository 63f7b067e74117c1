//! The librdkafka configuration the consumer runs with ([`client_config`]), checked here without
//! a client ([`refused_setting`], called by config validation, and [`refused_by_client`]); and
//! which property values are secrets that no output or error may show ([`is_secret`]).

use super::{ConfigError, KafkaConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;

/// Properties set unless `kafka.properties` says otherwise.
///
/// - `auto.offset.reset=earliest`: a new consumer group starts from the oldest retained update
///   rather than losing what was produced before it joined.
/// - `fetch.queue.backoff.ms=5`: librdkafka's default (1000 ms) stalls fetching for a second each
///   time the consumer falls behind.
/// - `partition.assignment.strategy=cooperative-sticky`: a rebalance moves only the partitions
///   that change owner, so the others keep their state and are not restored again (the eager
///   strategies revoke everything at every rebalance). Every member of a group must use the same
///   strategy.
/// - `session.timeout.ms=30000`: how long a member that stopped answering keeps its partitions.
///   With `kafka.group_instance_id`, a restart within it gets the same partitions back at once;
///   a member gone for good hands its partitions over after it.
pub const DEFAULT_PROPERTIES: [(&str, &str); 4] = [
    ("auto.offset.reset", "earliest"),
    ("fetch.queue.backoff.ms", "5"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("session.timeout.ms", "30000"),
];

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

/// The values of `config`'s secret properties, for [`scrub_secrets`].
pub fn secret_values(config: &KafkaConfig) -> Vec<String> {
    (config.properties.iter())
        .filter(|(name, value)| is_secret(name) && !value.trim().is_empty())
        .map(|(_, value)| value.clone())
        .collect()
}

/// `text` (a message of the Kafka client's, about to be logged or served on `/readyz`) without
/// any of `secrets`, whole or as a tail of 8 characters or more: librdkafka quotes the rest of
/// a value it cannot parse ("... beginning at: <the tail>").
pub fn scrub_secrets(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        text = scrub(&text, secret);
        let tail = (secret.char_indices().map(|(at, _)| at))
            .filter(|&at| secret.len() - at >= 8)
            .find(|&at| text.contains(&secret[at..]));
        if let Some(at) = tail {
            text = text.replace(&secret[at..], REDACTED);
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

/// Whether librdkafka takes the configuration the consumer would be given: the refusal if not,
/// its key being this service's (`kafka.statistics_interval`, `kafka.properties."name"`). Each
/// property is set on a configuration of its own, in name order (so the first refusal named is
/// always the same), then all together as the source does; no client is created, nothing connects.
pub fn refused_setting(config: &KafkaConfig) -> Option<ConfigError> {
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
/// TLS file it cannot read...), in words safe to print. Creates the consumer the source would,
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
fn refusal(config: &KafkaConfig, error: KafkaError) -> ConfigError {
    let KafkaError::ClientConfig(code, desc, name, value) = error else {
        return ConfigError::at(
            "kafka.properties",
            format!("librdkafka refuses the configuration: {error}"),
        );
    };
    let key = match name.as_str() {
        _ if config.properties.contains_key(&name) => format!("kafka.properties.{name:?}"),
        "bootstrap.servers" => "kafka.brokers".into(),
        "group.id" => "kafka.group_id".into(),
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
    ConfigError::at(key, why)
}

/// How soon offsets the source stored are committed (`auto.commit.interval.ms`). librdkafka sends
/// a commit only when a stored offset moved, which happens when a scrape was delivered, so a short
/// delay costs nothing and keeps the window between a scrape and its commit short.
pub const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

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
        // Commits only what the source stores (see `source::kafka`), soon after it does.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", COMMIT_DELAY.as_millis().to_string())
        .set(
            "statistics.interval.ms",
            config.statistics_interval.as_millis().to_string(),
        );
    if let Some(id) = &config.group_instance_id {
        client.set("group.instance.id", id);
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            statistics_interval: Duration::from_secs(100_000_000 * 3600),
            ..KafkaConfig::default()
        };
        let ConfigError { key, why, .. } = refused_setting(&config).expect("out of librdkafka's range");
        assert_eq!(key, "kafka.statistics_interval");
        assert!(why.contains("statistics.interval.ms"), "{why}");
        config.statistics_interval = Duration::from_secs(5);
        assert_eq!(refused_setting(&config), None);
        config
            .properties
            .insert("sasl.oauthbearer.method".into(), "hunter2-secret".into());
        let ConfigError { key, why, .. } = refused_setting(&config).expect("refused");
        assert_eq!(key, "kafka.properties.\"sasl.oauthbearer.method\"");
        assert!(!why.contains("hunter2"), "{why}");
        config.properties.clear();
        config.properties.insert("fetch.wait.max.ms".into(), "never".into());
        let ConfigError { key, why, .. } = refused_setting(&config).expect("refused");
        assert_eq!(key, "kafka.properties.\"fetch.wait.max.ms\"");
        assert!(why.contains("never"), "a value that is no secret is shown: {why}");
    }

    #[test]
    fn client_messages_lose_secrets_whole_or_as_a_tail() {
        let secrets = vec!["principal=admin secret=hunter2-long".to_string()];
        let whole = scrub_secrets("config principal=admin secret=hunter2-long refused", &secrets);
        assert!(!whole.contains("hunter2"), "{whole}");
        let tail = scrub_secrets(
            "Unrecognized sasl.oauthbearer.config beginning at: secret=hunter2-long",
            &secrets,
        );
        assert!(!tail.contains("hunter2"), "{tail}");
        assert_eq!(scrub_secrets("Connection refused", &secrets), "Connection refused");
    }
}
