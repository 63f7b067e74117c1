//! The command line: a thin edge over the library. Errors get their context here.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hatchet_run_metrics::aggregate::Clock;
use hatchet_run_metrics::config::{self, Config};
use hatchet_run_metrics::exporter::web::WebSecurity;
use hatchet_run_metrics::exporter::{self, http, WindowEnd};
use hatchet_run_metrics::ids::Uuid128;
use hatchet_run_metrics::pipeline::now_nanos;
use hatchet_run_metrics::reload::{self, ConfigWatch};
use hatchet_run_metrics::service::Service;
use hatchet_run_metrics::sizing;
use hatchet_run_metrics::source::{file, kafka};
use hatchet_run_metrics::thresholds;
use hatchet_run_metrics::traffic::produce::{self, ProduceTarget};
use hatchet_run_metrics::traffic::synthetic::TrafficProfile;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "hatchet-run-metrics",
    version,
    about = "Prometheus metrics per Hatchet workflow, from V1WorkflowRun updates on Kafka"
)]
struct Cli {
    /// The TOML config file (see config/hatchet-run-metrics.toml). Without it: the defaults.
    #[arg(long, global = true, env = "HATCHET_RUN_METRICS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the topic and serve /metrics, /healthz and /readyz until SIGTERM or SIGINT.
    Run,
    /// Validate the config and print what it resolves to, and the most memory its caps allow.
    CheckConfig {
        /// Partitions this member may hold at once (a topic's partition count, for a lone
        /// member): windows are kept per partition, so the worst case grows with them.
        #[arg(long, default_value_t = 1)]
        partitions: u64,
    },
    /// Process a file of newline-delimited V1WorkflowRun JSON exactly as the Kafka path would and
    /// print the resulting exposition. Rejected lines are counted and logged, not fatal.
    Replay { file: PathBuf },
    /// Send updates to the topic: each non-blank line of FILE, or simulated traffic.
    Produce(ProduceArgs),
    /// Write Prometheus alerting rules for the configured thresholds (to stdout, or --output).
    Rules {
        /// Write the rules here instead of to stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Inspect the configured thresholds.
    Thresholds {
        #[command(subcommand)]
        command: ThresholdsCommand,
    },
}

#[derive(Subcommand)]
enum ThresholdsCommand {
    /// Which rule applies to a workflow for each kind of threshold, and why.
    Explain {
        /// The workflow name (the `workflow` label).
        workflow: String,
        /// The tenant id; without it, overrides for one tenant are not considered.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Args)]
struct ProduceArgs {
    /// A file of newline-delimited documents, each sent unchanged, keyed by its metadata.id.
    #[arg(required_unless_present = "synthetic", conflicts_with = "synthetic")]
    file: Option<PathBuf>,
    /// Simulate realistic runs of many workflows instead (lifecycles, retries, replays, failures).
    #[arg(long)]
    synthetic: bool,
    /// Brokers (default: the config's kafka.brokers).
    #[arg(long)]
    brokers: Option<String>,
    /// Topic (default: the config's first kafka.topics entry).
    #[arg(long)]
    topic: Option<String>,
    /// Synthetic: stop after this many messages (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
    /// Synthetic: send as fast as the broker takes them instead of at the simulation's pace.
    #[arg(long)]
    fast: bool,
    /// Synthetic: new runs per second of simulated time (each run is about 3 to 4 messages).
    #[arg(long, default_value_t = TrafficProfile::default().runs_per_second)]
    runs_per_second: f64,
    /// Synthetic: number of workflows.
    #[arg(long, default_value_t = TrafficProfile::default().workflows)]
    workflows: usize,
    /// Synthetic: number of tenants.
    #[arg(long, default_value_t = TrafficProfile::default().tenants)]
    tenants: usize,
    /// Synthetic: share of deliberately invalid messages, 0 to 1.
    #[arg(long, default_value_t = TrafficProfile::default().bad_message_ratio)]
    bad_ratio: f64,
    /// Synthetic: random seed (the same seed gives the same traffic).
    #[arg(long, default_value_t = TrafficProfile::default().seed)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let path = (cli.config.clone()).or_else(|| std::env::var_os("HATCHET_RUN_METRICS_CONFIG").map(PathBuf::from));
    let config = config::load(path.as_ref())?;
    init_tracing(&config.log.level);
    match cli.command {
        Command::Run => serve(config, path),
        Command::CheckConfig { partitions } => {
            let mut shown = config.clone();
            for (key, value) in &mut shown.kafka.properties {
                if config::kafka::is_secret(key) {
                    *value = config::kafka::REDACTED.into();
                }
            }
            let thresholds = config.load_thresholds()?;
            web_security(&config)?;
            // What librdkafka checks only as `run` creates its consumer.
            if let Some(why) = config::kafka::refused_by_client(&config.kafka) {
                let why = format!("librdkafka cannot create a consumer with them: {why}");
                return Err(config::ConfigError::at("kafka.properties", why)
                    .in_source(config.source_name())
                    .into());
            }
            println!("config OK");
            println!("{shown:#?}");
            println!(
                "thresholds: {} rules ({}), `thresholds explain WORKFLOW` shows which applies",
                thresholds.rules.len(),
                match &config.thresholds.file {
                    Some(file) => format!("from {}", file.display()),
                    None => "from [thresholds]".to_string(),
                }
            );
            print!("{}", sizing::worst_case(&config, partitions).render());
            Ok(())
        }
        Command::Rules { output } => {
            let thresholds = config.load_thresholds()?;
            if thresholds.is_empty() {
                tracing::warn!("no thresholds are configured: the rules file has no rules");
            }
            for (rule, threshold, why) in thresholds::rules::quantile_limit_problems(
                &thresholds,
                &config.metrics.duration_buckets_seconds,
                &config.metrics.queue_buckets_seconds,
            ) {
                tracing::warn!(rule = %rule, threshold = threshold.kind.as_str(), max = threshold.max, "{why}");
            }
            let text = thresholds::rules::alerting_rules(&thresholds);
            match output {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?
                }
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            Ok(())
        }
        Command::Thresholds {
            command: ThresholdsCommand::Explain { workflow, tenant },
        } => {
            let thresholds = config.load_thresholds()?;
            let tenant = match tenant {
                None => None,
                Some(text) => Some(Uuid128::parse(&text).with_context(|| format!("--tenant {text:?} is not a UUID"))?),
            };
            print!("{}", thresholds.explain(&workflow, tenant));
            Ok(())
        }
        Command::Replay { file } => replay(&config, &file),
        Command::Produce(args) => produce(&config, args),
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let service = Service::new(&config, Clock::Wall)?;
        let security = web_security(&config)?;
        tracing::info!(
            rules = service.thresholds().thresholds().rules.len(),
            evaluation_interval = ?config.thresholds.evaluation_interval,
            "thresholds loaded"
        );
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
        tracing::info!(listen = %config.http.listen, "serving /metrics, /healthz, /readyz");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        // The consumer stops once /metrics is no longer served, so that its last commit includes
        // every scrape delivered.
        let (served, serving_ended) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let serving = http::serve(
                listener,
                config.http.clone(),
                security,
                service.clone(),
                until_stopped(stopped.clone()),
            );
            async move {
                serving.await;
                drop(served);
            }
        });
        tokio::spawn(evaluate_thresholds(service.clone(), until_stopped(stopped.clone())));
        match path {
            Some(path) => {
                let watch = ConfigWatch::new(path, config.clone());
                tokio::spawn(reload::watch(watch, service.clone(), until_stopped(stopped.clone())));
            }
            None => {
                tokio::spawn(ignore_hangups());
            }
        }
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        kafka::consume(&config.kafka, config.restore_lookback(), &service, async move {
            let _ = serving_ended.await;
        })
        .await
        .context("kafka consumer")?;
        server.await.context("http server task")?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// What `http.web_config_file` asks of the endpoints, refused at start with the file, the key
/// and why.
fn web_security(config: &Config) -> anyhow::Result<WebSecurity> {
    let web = config.load_web_config()?;
    if let Some(tls) = web.as_ref().and_then(|w| w.tls.as_ref()) {
        tracing::info!(cert_file = %tls.cert_file.display(), client_auth = ?tls.client_auth, "serving over TLS");
    }
    WebSecurity::new(web.as_ref()).map_err(|why| {
        let file = (config.http.web_config_file.as_ref()).map_or_else(String::new, |f| f.display().to_string());
        config::ConfigError::at("tls_server_config", why).in_source(file).into()
    })
}

/// Evaluates the thresholds every `thresholds.evaluation_interval` (which a reload may change),
/// and as soon as partitions' state has been restored. Not while a restore is in progress: the
/// windows are only partly rebuilt then, and a breach would seem to end.
async fn evaluate_thresholds(service: Service, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let interval = service.thresholds().interval();
        let restored = tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => false,
            () = service.readiness().restores_finished() => true,
        };
        if service.readiness().restoring_now() {
            continue;
        }
        let service = service.clone();
        let evaluated = tokio::task::spawn_blocking(move || service.evaluate_thresholds(now_nanos(), restored)).await;
        if let Err(error) = evaluated {
            tracing::error!(%error, "evaluating the thresholds failed");
        }
    }
}

/// Without a config file there is nothing to reload, but SIGHUP must not end the service.
async fn ignore_hangups() {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut hangup) = signal(SignalKind::hangup()) {
        while hangup.recv().await.is_some() {
            tracing::warn!("SIGHUP received, but no config file was given: nothing to reload");
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn replay(config: &Config, path: &PathBuf) -> anyhow::Result<()> {
    let service = Service::new(config, Clock::Replay)?;
    let reader = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let name = path.display().to_string();
    let summary = file::replay(BufReader::new(reader), &name, service.pipeline())
        .with_context(|| format!("cannot read {}", path.display()))?;
    tracing::info!(
        messages = summary.messages,
        rejected = summary.rejected,
        "replayed {name}"
    );
    let text = exporter::exposition(&service, WindowEnd::LatestFinished);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn produce(config: &Config, args: ProduceArgs) -> anyhow::Result<()> {
    let brokers = args.brokers.unwrap_or_else(|| config.kafka.brokers.clone());
    let topic = args
        .topic
        .or_else(|| config.kafka.topics.first().cloned())
        .context("no topic")?;
    let properties = (config.kafka.properties.iter())
        .filter(|(k, _)| k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let target = ProduceTarget {
        brokers: &brokers,
        topic: &topic,
        properties,
    };
    let summary = match args.file {
        Some(path) => {
            let reader = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            produce::produce_lines(&target, BufReader::new(reader))?
        }
        None => {
            let profile = TrafficProfile {
                workflows: args.workflows,
                tenants: args.tenants,
                seed: args.seed,
                bad_message_ratio: args.bad_ratio,
                runs_per_second: args.runs_per_second,
            };
            // A background runtime only watches for SIGINT/SIGTERM; producing stays synchronous.
            let interrupted = Arc::new(AtomicBool::new(false));
            let signals = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let flag = interrupted.clone();
            signals.spawn(async move {
                wait_for_signal().await;
                flag.store(true, Ordering::Relaxed);
            });
            let stop = || interrupted.load(Ordering::Relaxed);
            tracing::info!(%brokers, %topic, "producing synthetic traffic");
            produce::produce_synthetic(&target, &profile, args.count, !args.fast, &stop)?
        }
    };
    let seconds = summary.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "produced {} messages ({} bytes) to {topic} in {:.2}s: {:.0} messages/s",
        summary.messages,
        summary.bytes,
        seconds,
        summary.messages as f64 / seconds
    );
    Ok(())
}
