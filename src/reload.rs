//! Thresholds applied without a restart: on SIGHUP, and when the config file (or the thresholds
//! file it names) changes.
//!
//! A reload reads and validates the whole config again. If anything is wrong the running
//! thresholds stay in force and the error is logged with the file, the key and why;
//! `hatchet_run_metrics_config_last_reload_successful` shows it, as Prometheus does for its own
//! config. Only `[thresholds]` is applied: the other sections need a restart, and a reload that
//! changes them says so.

use crate::config::{Config, ConfigError};
use crate::events::{ConfigReloadFailed, ConfigReloaded};
use crate::pipeline::now_nanos;
use crate::service::Service;
use crate::thresholds::Thresholds;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the files are looked at. A change is applied once two looks in a row agree, so a
/// file caught half-written is not reported as an error.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The config in force and the files it came from.
pub struct ConfigWatch {
    path: PathBuf,
    running: Config,
    /// The fingerprint of the files when last applied or refused.
    seen: u64,
    /// A changed fingerprint seen once, applied when the next look agrees.
    settling: Option<u64>,
}

impl ConfigWatch {
    pub fn new(path: PathBuf, running: Config) -> ConfigWatch {
        let mut watch = ConfigWatch {
            path,
            running,
            seen: 0,
            settling: None,
        };
        watch.seen = watch.fingerprint();
        watch
    }

    /// The files' contents, hashed (unreadable counts as a content of its own): the config, and
    /// the thresholds file it names now (so that fixing a newly named file that was refused is
    /// noticed too).
    fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        let main = std::fs::read(&self.path).ok();
        let named = main
            .as_deref()
            .and_then(|bytes| thresholds_file_named(&self.path, bytes))
            .or_else(|| self.running.thresholds.file.clone());
        main.hash(&mut hasher);
        if let Some(path) = named {
            std::fs::read(path).ok().hash(&mut hasher);
        }
        hasher.finish()
    }

    /// Called every [`POLL_INTERVAL`]: reloads when the files changed and have settled.
    pub fn poll(&mut self, service: &Service) {
        let now = self.fingerprint();
        if now == self.seen {
            self.settling = None;
        } else if self.settling == Some(now) {
            self.reload(service, "file change");
        } else {
            self.settling = Some(now);
        }
    }

    /// Reads, validates and applies the thresholds; on any error keeps those in force.
    pub fn reload(&mut self, service: &Service, trigger: &str) {
        // Taken before reading: an edit that lands meanwhile is seen as a change at the next look.
        let fingerprint = self.fingerprint();
        let loaded = Config::load(&self.path).and_then(|config| {
            // Validated against the windows the running aggregation tracks: a `[metrics]` edit
            // waits for a restart, so a threshold may not use a window it adds.
            let mut effective = self.running.clone();
            effective.thresholds = config.thresholds.clone();
            let thresholds = effective.load_thresholds()?;
            Ok::<(Config, Thresholds), ConfigError>((config, thresholds))
        });
        match loaded {
            Err(error) => ConfigReloadFailed { trigger, error: &error }.emit(service.telemetry()),
            Ok((config, thresholds)) => {
                let ignored = changed_sections(&self.running, &config);
                let rules = thresholds.rules.len();
                (service.thresholds()).replace(thresholds, config.thresholds.evaluation_interval);
                self.running.thresholds = config.thresholds;
                ConfigReloaded {
                    trigger,
                    rules,
                    ignored_changes: &ignored,
                }
                .emit(service.telemetry());
                service.evaluate_thresholds(now_nanos(), false);
            }
        }
        self.seen = fingerprint;
        self.settling = None;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `thresholds.file` of a config's text, resolved against the config's folder.
fn thresholds_file_named(config: &Path, bytes: &[u8]) -> Option<PathBuf> {
    let table: toml::Table = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    let file = table.get("thresholds")?.get("file")?.as_str()?;
    Some(crate::config::beside(config, Path::new(file)))
}

/// The sections other than `[thresholds]` that differ: they apply only at the next start.
fn changed_sections(running: &Config, loaded: &Config) -> Vec<&'static str> {
    let differs = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    [
        ("kafka", differs(&running.kafka, &loaded.kafka)),
        ("http", differs(&running.http, &loaded.http)),
        ("metrics", differs(&running.metrics, &loaded.metrics)),
        ("outcomes", differs(&running.outcomes, &loaded.outcomes)),
        ("runs", differs(&running.runs, &loaded.runs)),
        (
            "workflow_names",
            differs(&running.workflow_names, &loaded.workflow_names),
        ),
        ("log", differs(&running.log, &loaded.log)),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// Watches for SIGHUP and file changes until `stop` resolves. Reading the files and evaluating
/// after a reload block, so they run with `block_in_place` (a multi-threaded runtime is needed).
pub async fn watch(mut config: ConfigWatch, service: Service, stop: impl Future<Output = ()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGHUP; the config is still reloaded when its file changes");
            None
        }
    };
    tracing::info!(file = %config.path().display(), "reloading thresholds on SIGHUP and when the config changes");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                tokio::task::block_in_place(|| config.reload(&service, "SIGHUP"));
            }
            _ = tokio::time::sleep(POLL_INTERVAL) => tokio::task::block_in_place(|| config.poll(&service)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Clock;

    fn setup(text: &str) -> (PathBuf, ConfigWatch, Service) {
        let dir = std::env::temp_dir().join(format!("hrm-reload-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let service = Service::new(&config, Clock::Wall).unwrap();
        (path.clone(), ConfigWatch::new(path, config), service)
    }

    fn limit(service: &Service) -> Option<f64> {
        match service.thresholds().thresholds().rules[0].setting(crate::thresholds::ThresholdKind::FailureRatio) {
            Some(crate::thresholds::Setting::Active(t)) => Some(t.max),
            _ => None,
        }
    }

    #[test]
    fn a_threshold_may_not_use_a_window_that_only_a_restart_would_add() {
        let start = "[metrics]\nfailure_ratio_windows = [\"5m\"]\n[thresholds.default.failure_ratio]\nmax = 0.5\n";
        let (path, mut watch, service) = setup(start);
        std::fs::write(
            &path,
            "[metrics]\nfailure_ratio_windows = [\"5m\", \"10m\"]\n[thresholds.default.failure_ratio]\nmax = 0.2\nwindow = \"10m\"\n",
        )
        .unwrap();
        watch.reload(&service, "test");
        assert_eq!(
            limit(&service),
            Some(0.5),
            "refused: the running aggregation has no 10m window"
        );
        std::fs::write(
            &path,
            "[metrics]\nfailure_ratio_windows = [\"5m\", \"10m\"]\n[thresholds.default.failure_ratio]\nmax = 0.2\n",
        )
        .unwrap();
        watch.reload(&service, "test");
        assert_eq!(
            limit(&service),
            Some(0.2),
            "applied; the [metrics] change waits for a restart"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn fixing_a_newly_named_thresholds_file_is_noticed() {
        let (path, mut watch, service) = setup("[thresholds.default.failure_ratio]\nmax = 0.5\n#named\n");
        let named = path.with_file_name("new.toml");
        std::fs::write(&named, "[default.failure_ratio]\nmax = 2\n").unwrap();
        std::fs::write(&path, "[thresholds]\nfile = \"new.toml\"\n").unwrap();
        watch.poll(&service);
        watch.poll(&service);
        assert_eq!(limit(&service), Some(0.5), "refused: 2 is not a ratio");
        assert_eq!(
            service
                .telemetry()
                .registry
                .gather()
                .iter()
                .find(|m| m.name() == "hatchet_run_metrics_config_last_reload_successful")
                .map(|m| m.get_metric()[0].get_gauge().get_value()),
            Some(0.0)
        );
        std::fs::write(&named, "[default.failure_ratio]\nmax = 0.25\n").unwrap();
        watch.poll(&service);
        watch.poll(&service);
        assert_eq!(limit(&service), Some(0.25), "the fixed file applies without a SIGHUP");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_change_applies_once_two_looks_agree() {
        let (path, mut watch, service) = setup("[thresholds.default.failure_ratio]\nmax = 0.5\n");
        watch.poll(&service);
        std::fs::write(&path, "[thresholds.default.failure_ratio]\nmax = 0.3\n").unwrap();
        watch.poll(&service);
        assert_eq!(limit(&service), Some(0.5), "first look: settling");
        watch.poll(&service);
        assert_eq!(limit(&service), Some(0.3));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
