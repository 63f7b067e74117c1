//! Reading one setting, wherever it is written (the config file, the thresholds file, the
//! environment): the one error for a setting that cannot be used, and the one duration parser.
//! A leaf: imports nothing of the crate.

use std::time::Duration;

/// A setting that cannot be used: where it is (the file or the environment variable, and the
/// key) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: key `{key}`: {why}")]
pub struct ConfigError {
    /// The file, or the environment variable, the value came from (empty until known).
    pub source_name: String,
    pub key: String,
    pub why: String,
}

impl ConfigError {
    /// `key` refused, before it is known which file it came from.
    pub fn at(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
        ConfigError {
            source_name: String::new(),
            key: key.into(),
            why: why.into(),
        }
    }

    /// The same refusal, in `source_name`.
    pub fn in_source(self, source_name: impl Into<String>) -> ConfigError {
        ConfigError {
            source_name: source_name.into(),
            ..self
        }
    }
}

/// A duration as settings write it (`"30s"`, `"5m"`, `"1h 30m"`), never negative.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!("{text:?} is negative; a duration cannot be"));
    }
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like \"30s\", \"5m\" or \"1h\" ({e})"))
}

/// A duration as i64 nanoseconds, the aggregation's unit; saturating (past 292 years).
pub fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_refuse_with_why() {
        assert_eq!(parse_duration(" 5m "), Ok(Duration::from_secs(300)));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("-5m").unwrap_err().contains("negative"));
        assert_eq!(nanos(Duration::from_secs(2)), 2_000_000_000);
        assert_eq!(nanos(Duration::MAX), i64::MAX);
    }

    #[test]
    fn an_error_names_its_source_once_known() {
        let error = ConfigError::at("metrics.quantiles[1]", "must increase").in_source("a.toml");
        assert_eq!(error.to_string(), "a.toml: key `metrics.quantiles[1]`: must increase");
    }
}
