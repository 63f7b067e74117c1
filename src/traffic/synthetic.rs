//! Synthetic Hatchet traffic: a deterministic, event-driven simulation of many workflows' runs that
//! yields the `V1WorkflowRun` JSON documents a Hatchet server would put on the topic, one per message.
//!
//! It exists for the live demo (the caller sleeps until each message's [`SyntheticMessage::at`]) and
//! for the benchmarks (the caller ignores `at` and consumes as fast as it can). The documents copy the
//! server's traps on purpose: Go zero times for missing timestamps,
//! the blind `duration` of ±9223372036854 ms, `-05:00` offsets for one tenant, DAG runs that carry a
//! `finishedAt` while still `RUNNING`, automatic retries, manual replays, skipped intermediate updates
//! and redelivered duplicates. Optionally it mixes in malformed messages.
//!
//! The same [`TrafficProfile`] (seed included) and start time always give byte-identical output on a
//! given platform. This module does no I/O at all: no clock reads, no sleeping, no network, no files;
//! simulated time only advances as the iterator is consumed.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::f64::consts::TAU;

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// What traffic to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficProfile {
    /// Number of distinct workflows (at least one is simulated).
    pub workflows: usize,
    /// Number of tenants (at least one). With two or more, the last tenant's timestamps are written
    /// with a `-05:00` offset, the others with `Z`.
    pub tenants: usize,
    /// Seed of every random choice: same profile and start time, same messages.
    pub seed: u64,
    /// Probability, per emitted message, that it is a malformed message (key `None`) instead of the
    /// next run update. Clamped to `[0, 1]`; NaN counts as 0.
    pub bad_message_ratio: f64,
    /// Mean number of new runs per simulated second, all workflows together (Poisson arrivals).
    /// Values that are not positive (or NaN) become 0.001; values above 1e9 become 1e9.
    pub runs_per_second: f64,
}

impl Default for TrafficProfile {
    fn default() -> Self {
        Self {
            workflows: 12,
            tenants: 2,
            seed: 1,
            bad_message_ratio: 0.0,
            runs_per_second: 20.0,
        }
    }
}

/// One Kafka message as the simulation would have produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticMessage {
    /// The run's `metadata.id`, so that all updates of one run go to one partition in order;
    /// `None` for malformed messages.
    pub key: Option<String>,
    /// The compact JSON document (or the malformed bytes).
    pub payload: Vec<u8>,
    /// Simulated time at which the message is emitted; non-decreasing along the iterator and never
    /// earlier than any timestamp inside the payload.
    pub at: DateTime<Utc>,
}

/// Endless, deterministic stream of synthetic Hatchet run updates; see the module documentation.
#[derive(Debug)]
pub struct SyntheticTraffic {
    model: Model,
    /// Drives the simulation itself.
    rng: SmallRng,
    /// Drives the malformed messages only, so that the stream of good messages does not depend on
    /// `bad_message_ratio`.
    bad_rng: SmallRng,
    bad_ratio: f64,
    mean_gap_us: f64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    start: DateTime<Utc>,
    start_us: i64,
    now_us: i64,
}

impl SyntheticTraffic {
    /// Builds the workflows and tenants from `profile.seed`. Simulated time starts at `start`: the
    /// first run arrives shortly after it.
    pub fn new(profile: &TrafficProfile, start: DateTime<Utc>) -> Self {
        let mut rng = SmallRng::seed_from_u64(profile.seed);
        let bad_rng = SmallRng::seed_from_u64(profile.seed ^ 0x9e37_79b9_7f4a_7c15);
        let model = Model::build(&mut rng, profile.workflows.max(1), profile.tenants.max(1));
        let rate = if profile.runs_per_second.is_nan() || profile.runs_per_second <= 0.0 {
            MIN_RUNS_PER_SECOND
        } else {
            profile.runs_per_second.clamp(MIN_RUNS_PER_SECOND, MAX_RUNS_PER_SECOND)
        };
        let bad_ratio = if profile.bad_message_ratio.is_nan() {
            0.0
        } else {
            profile.bad_message_ratio.clamp(0.0, 1.0)
        };
        let start_us = start.timestamp_micros();
        let mut traffic = Self {
            model,
            rng,
            bad_rng,
            bad_ratio,
            mean_gap_us: US_PER_SEC as f64 / rate,
            queue: BinaryHeap::new(),
            next_seq: 0,
            start,
            start_us,
            now_us: start_us,
        };
        let first = start_us.saturating_add(traffic.arrival_gap_us());
        traffic.schedule(first, Event::Arrival);
        traffic
    }

    fn schedule(&mut self, t: i64, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        // Events are never scheduled in the past: `at` stays non-decreasing.
        let t = t.max(self.now_us);
        self.queue.push(Reverse(Scheduled { t, seq, event }));
    }

    fn arrival_gap_us(&mut self) -> i64 {
        let u: f64 = self.rng.random();
        // Exponential inter-arrival time; `as` saturates, which only matters for absurd rates.
        (-(1.0 - u).ln() * self.mean_gap_us).round() as i64
    }

    fn at(&self, t: i64) -> DateTime<Utc> {
        self.start
            .checked_add_signed(TimeDelta::microseconds(t.saturating_sub(self.start_us)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn message(&self, t: i64, key: Option<String>, payload: Vec<u8>) -> SyntheticMessage {
        SyntheticMessage {
            key,
            payload,
            at: self.at(t),
        }
    }

    /// Handles one event; returns the message it emits, if any.
    fn process(&mut self, t: i64, event: Event) -> Option<SyntheticMessage> {
        match event {
            Event::Arrival => {
                let workflow = self.model.pick_workflow(&mut self.rng);
                let run = new_run(&self.model, &mut self.rng, workflow, t);
                let created = run.created_us;
                self.schedule(created, Event::Step(Box::new(run), Step::Enqueue));
                let next = t.saturating_add(self.arrival_gap_us());
                self.schedule(next, Event::Arrival);
                None
            }
            Event::Duplicate { key, payload } => Some(self.message(t, Some(key), payload)),
            Event::Step(run, step) => self.step(t, run, step),
        }
    }

    fn step(&mut self, t: i64, mut run: Box<Run>, step: Step) -> Option<SyntheticMessage> {
        let wf = &self.model.workflows[run.workflow];
        let rng = &mut self.rng;
        let (next, emit) = match step {
            Step::Enqueue => {
                run.reset(Status::Queued);
                run.attempts = 0;
                let u: f64 = rng.random();
                let next = if u < P_CANCEL_WHILE_QUEUED {
                    let wait = uniform(rng, 0.5, 60.0) * US_PER_SEC as f64;
                    Some((t + wait as i64, Step::Finish(Outcome::Cancelled)))
                } else if u < P_CANCEL_WHILE_QUEUED + P_SCHEDULING_TIMEOUT {
                    let jitter = rng.random_range(0..50_000);
                    let when = t + SCHEDULING_TIMEOUT_US + jitter;
                    Some((when, Step::Finish(Outcome::SchedulingTimeout)))
                } else {
                    Some((t + wf.queue_wait_us(rng), Step::Start))
                };
                (next, rng.random::<f64>() >= P_SKIP_UPDATE)
            }
            Step::Requeue => {
                run.reset(Status::Queued);
                let backoff = (uniform(rng, 0.0, 2.0) * US_PER_SEC as f64) as i64;
                let next = Some((t + backoff + wf.queue_wait_us(rng), Step::Start));
                (next, rng.random::<f64>() >= P_SKIP_UPDATE)
            }
            Step::Start => {
                run.reset(Status::Running);
                run.started_us = Some(t);
                run.attempts += 1;
                let next = if rng.random::<f64>() < P_STUCK {
                    None // Stays RUNNING for ever, as some real runs do.
                } else {
                    let duration = wf.duration_us(rng);
                    if run.attempts < MAX_ATTEMPTS && rng.random::<f64>() < P_RETRY {
                        let attempt = (duration as f64 * uniform(rng, 0.05, 1.0)) as i64;
                        Some((t + attempt, Step::Requeue))
                    } else {
                        let u: f64 = rng.random();
                        let (end, outcome) = if u < P_CANCEL_WHILE_RUNNING {
                            let ran = (duration as f64 * rng.random::<f64>()) as i64;
                            (t + ran, Outcome::Cancelled)
                        } else if u < P_CANCEL_WHILE_RUNNING + wf.failure_probability {
                            if rng.random::<f64>() < P_TIMEOUT_AMONG_FAILURES {
                                let jitter = rng.random_range(1_000..15_000);
                                (t + wf.timeout.0 + jitter, Outcome::TimedOut)
                            } else {
                                let ran = (duration as f64 * uniform(rng, 0.1, 1.0)) as i64;
                                (t + ran, Outcome::Failed)
                            }
                        } else {
                            (t + duration, Outcome::Completed)
                        };
                        if wf.dag && outcome != Outcome::Cancelled {
                            // The first task finishes before the whole DAG does.
                            run.pending = Some((end, outcome));
                            let first = t + ((end - t) as f64 * uniform(rng, 0.2, 0.7)) as i64;
                            Some((first, Step::FirstTaskDone))
                        } else {
                            Some((end, Step::Finish(outcome)))
                        }
                    }
                };
                (next, rng.random::<f64>() >= P_SKIP_UPDATE)
            }
            Step::FirstTaskDone => {
                // Still RUNNING, but finishedAt already set.
                run.finished_us = Some(t);
                let next = run.pending.take().map(|(end, outcome)| (end, Step::Finish(outcome)));
                (next, rng.random::<f64>() >= P_SKIP_UPDATE)
            }
            Step::Finish(outcome) => {
                run.finished_us = Some(t);
                run.status = outcome.status();
                match outcome {
                    Outcome::Completed => run.output = Some(completed_output(wf.base, rng).to_string()),
                    Outcome::Failed => run.error_message = failure_message(wf, rng),
                    Outcome::TimedOut => run.error_message = wf.timeout.1,
                    Outcome::SchedulingTimeout => run.error_message = SCHEDULING_TIMEOUT_MESSAGE,
                    Outcome::Cancelled => {}
                }
                let payload = render(&self.model, &run);
                let rng = &mut self.rng;
                let duplicate_after = (rng.random::<f64>() < P_DUPLICATE).then(|| rng.random_range(0..300_000_i64));
                let replay_after =
                    (rng.random::<f64>() < P_REPLAY).then(|| (uniform(rng, 5.0, 120.0) * US_PER_SEC as f64) as i64);
                let key = run.id.clone();
                if let Some(after) = duplicate_after {
                    let duplicate = Event::Duplicate {
                        key: key.clone(),
                        payload: payload.clone(),
                    };
                    self.schedule(t + after, duplicate);
                }
                if let Some(after) = replay_after {
                    // Replays come seconds later, after any redelivered duplicate.
                    self.schedule(t + after, Event::Step(run, Step::Enqueue));
                }
                return Some(self.message(t, Some(key), payload));
            }
        };
        let message = if emit {
            let payload = render(&self.model, &run);
            Some(self.message(t, Some(run.id.clone()), payload))
        } else {
            None // Batching swallowed this intermediate update.
        };
        if let Some((when, step)) = next {
            self.schedule(when, Event::Step(run, step));
        }
        message
    }

    fn bad_message(&mut self, t: i64) -> SyntheticMessage {
        let rng = &mut self.bad_rng;
        let workflow = rng.random_range(0..self.model.workflows.len());
        let mut run = new_run(&self.model, rng, workflow, t - 3 * US_PER_SEC);
        run.status = Status::Completed;
        run.started_us = Some(run.created_us + rng.random_range(1_000..900_000));
        run.finished_us = Some(t);
        run.output = Some(completed_output(self.model.workflows[workflow].base, rng).to_string());
        let payload = match rng.random_range(0..7) {
            0 => {
                // Not JSON: a document cut short.
                let mut bytes = render(&self.model, &run);
                let len = rng.random_range(1..bytes.len().max(2));
                bytes.truncate(len);
                bytes
            }
            1 => Value::Array(vec![document(&self.model, &run)]).to_string().into_bytes(),
            2 => edited(&self.model, &run, |doc| {
                doc.remove("status");
            }),
            3 => edited(&self.model, &run, |doc| {
                doc.insert("status".into(), Value::from("PAUSED"));
            }),
            4 => edited(&self.model, &run, |doc| {
                let duration = doc.get("duration").map(ToString::to_string).unwrap_or_default();
                doc.insert("duration".into(), Value::from(duration));
            }),
            5 => edited(&self.model, &run, |doc| {
                doc.insert("tenantId".into(), Value::from("acme-corp"));
            }),
            _ => Vec::new(),
        };
        self.message(t, None, payload)
    }
}

impl Iterator for SyntheticTraffic {
    type Item = SyntheticMessage;

    /// Never returns `None`.
    fn next(&mut self) -> Option<SyntheticMessage> {
        if self.bad_ratio > 0.0 && self.bad_rng.random::<f64>() < self.bad_ratio {
            let t = self
                .queue
                .peek()
                .map_or(self.now_us, |Reverse(next)| next.t)
                .max(self.now_us);
            self.now_us = t;
            return Some(self.bad_message(t));
        }
        loop {
            // An arrival is always scheduled, so the queue never runs dry.
            let Reverse(Scheduled { t, event, .. }) = self.queue.pop()?;
            self.now_us = t;
            if let Some(message) = self.process(t, event) {
                return Some(message);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tuning: shares of the lifecycle variants.

const MIN_RUNS_PER_SECOND: f64 = 1e-3;
const MAX_RUNS_PER_SECOND: f64 = 1e9;
/// Runs cancelled while still queued (they never start).
const P_CANCEL_WHILE_QUEUED: f64 = 0.01;
/// Runs failed because no worker picked them up in time (they never start).
const P_SCHEDULING_TIMEOUT: f64 = 0.01;
/// Attempts that fail and are retried automatically.
const P_RETRY: f64 = 0.03;
/// Attempts per run at most (so at most two automatic retries).
const MAX_ATTEMPTS: u32 = 3;
/// Runs cancelled while running.
const P_CANCEL_WHILE_RUNNING: f64 = 0.005;
/// Started runs whose terminal update never comes.
const P_STUCK: f64 = 0.001;
/// Failures that are execution timeouts rather than errors raised by the task.
const P_TIMEOUT_AMONG_FAILURES: f64 = 0.1;
/// Intermediate updates (QUEUED, RUNNING) swallowed by batching.
const P_SKIP_UPDATE: f64 = 0.02;
/// Terminal updates delivered twice.
const P_DUPLICATE: f64 = 0.01;
/// Finished runs replayed by hand.
const P_REPLAY: f64 = 0.01;

const US_PER_MS: i64 = 1_000;
const US_PER_SEC: i64 = 1_000_000;
const US_PER_DAY: i64 = 86_400 * US_PER_SEC;
const SCHEDULING_TIMEOUT_US: i64 = 300 * US_PER_SEC;
const MAX_DURATION_US: f64 = 2.0 * 3600.0 * US_PER_SEC as f64;
const MAX_QUEUE_WAIT_US: f64 = 600.0 * US_PER_SEC as f64;
/// `-05:00`, the offset of the last tenant when there are several.
const OFFSET_TENANT_SECS: i32 = -5 * 3600;

/// Go's zero `time.Time`, as the server writes a missing timestamp.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// 0001-01-01T00:00:00Z in microseconds since the Unix epoch.
const GO_ZERO_TIME_US: i64 = -62_135_596_800 * US_PER_SEC;

const SCHEDULING_TIMEOUT_MESSAGE: &str =
    "task was not scheduled within its schedule timeout of 5m0s: no worker picked it up";
/// Execution timeouts a workflow may have, with the error of a run that exceeds it. A workflow gets
/// the first one at least ten times its median duration (Hatchet's default is 60s).
const EXECUTION_TIMEOUTS: [(i64, &str); 5] = [
    (60 * US_PER_SEC, "task exceeded its execution timeout of 60s"),
    (300 * US_PER_SEC, "task exceeded its execution timeout of 5m"),
    (900 * US_PER_SEC, "task exceeded its execution timeout of 15m"),
    (3_600 * US_PER_SEC, "task exceeded its execution timeout of 1h"),
    (7_200 * US_PER_SEC, "task exceeded its execution timeout of 2h"),
];

const WORKFLOW_NAMES: [&str; 16] = [
    "send-welcome-email",
    "DAGWorkflow",
    "nightly-report",
    "resize-image",
    "charge-card",
    "sync-crm",
    "generate-invoice",
    "index-document",
    "process-refund",
    "transcode-video",
    "score-lead",
    "ingest-webhook",
    "export-csv",
    "cleanup-sessions",
    "summarize-ticket",
    "embed-chunks",
];

const GENERIC_ERRORS: [&str; 7] = [
    "Error: connect ECONNREFUSED 10.0.3.17:5432",
    "KeyError: 'customer_id'\nTraceback (most recent call last): ...",
    "context deadline exceeded",
    "TypeError: Cannot read properties of undefined (reading 'email')",
    "psycopg.errors.UniqueViolation: duplicate key value violates unique constraint \"invoices_pkey\"",
    "RuntimeError: worker lost: no heartbeat for 30s",
    "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='internal-api', port=443): Max retries exceeded",
];

// ---------------------------------------------------------------------------------------------
// The simulated world.

#[derive(Debug)]
struct Tenant {
    id: String,
    offset_secs: i32,
}

#[derive(Debug)]
struct Workflow {
    name: String,
    /// Entry of `WORKFLOW_NAMES` the name derives from; selects inputs, outputs and errors.
    base: &'static str,
    failure_probability: f64,
    duration_median_us: f64,
    duration_sigma: f64,
    queue_median_us: f64,
    queue_sigma: f64,
    dag: bool,
    source: &'static str,
    primary_error: &'static str,
    /// Execution timeout (µs) and the error of a run that exceeds it.
    timeout: (i64, &'static str),
    /// The tenant's UTC offset, in seconds.
    offset_secs: i32,
    /// The end of every document of this workflow, from `,"tenantId":`.
    tail: String,
}

impl Workflow {
    fn duration_us(&self, rng: &mut SmallRng) -> i64 {
        log_normal_us(rng, self.duration_median_us, self.duration_sigma, MAX_DURATION_US)
    }

    fn queue_wait_us(&self, rng: &mut SmallRng) -> i64 {
        log_normal_us(rng, self.queue_median_us, self.queue_sigma, MAX_QUEUE_WAIT_US)
    }
}

#[derive(Debug)]
struct Model {
    workflows: Vec<Workflow>,
    /// Cumulative arrival shares, same order as `workflows`; the last one is the total.
    cumulative_share: Vec<f64>,
}

impl Model {
    fn build(rng: &mut SmallRng, workflow_count: usize, tenant_count: usize) -> Self {
        let tenants: Vec<Tenant> = (0..tenant_count)
            .map(|i| Tenant {
                id: uuid(rng),
                offset_secs: if tenant_count > 1 && i == tenant_count - 1 {
                    OFFSET_TENANT_SECS
                } else {
                    0
                },
            })
            .collect();

        let mut names = WORKFLOW_NAMES;
        for i in (1..names.len()).rev() {
            names.swap(i, rng.random_range(0..=i));
        }
        let bad_count = match workflow_count {
            0..=2 => 0,
            3..=7 => 1,
            _ => 2,
        };
        let mut bad = Vec::with_capacity(bad_count);
        while bad.len() < bad_count {
            let candidate = rng.random_range(0..workflow_count);
            if !bad.contains(&candidate) {
                bad.push(candidate);
            }
        }

        let mut workflows = Vec::with_capacity(workflow_count);
        let mut cumulative_share = Vec::with_capacity(workflow_count);
        let mut total_share = 0.0;
        for i in 0..workflow_count {
            let base = names[i % names.len()];
            let name = match i / names.len() {
                0 => base.to_owned(),
                round => format!("{base}-{}", round + 1),
            };
            // Every tenant gets a workflow first; after that the first tenant is favoured.
            let tenant = if i < tenant_count {
                i
            } else if rng.random::<f64>() < 0.5 {
                0
            } else {
                rng.random_range(0..tenant_count)
            };
            let failure_probability = if bad.contains(&i) {
                uniform(rng, 0.20, 0.30)
            } else {
                log_uniform(rng, 0.005, 0.05)
            };
            let duration_sigma = if rng.random::<f64>() < 0.2 {
                uniform(rng, 1.2, 1.6) // heavy tail
            } else {
                uniform(rng, 0.25, 0.7)
            };
            let dag =
                matches!(base, "DAGWorkflow" | "nightly-report" | "transcode-video") || rng.random::<f64>() < 0.15;
            let source = match base {
                "nightly-report" | "cleanup-sessions" | "export-csv" => "cron",
                "send-welcome-email" | "ingest-webhook" | "index-document" => "event",
                _ => "api",
            };
            let primary_error = primary_error(base, rng);
            total_share += log_uniform(rng, 0.02, 1.0);
            cumulative_share.push(total_share);
            let workflow_id = uuid(rng);
            let version_id = uuid(rng);
            let tenant = &tenants[tenant];
            let tail = format!(
                r#","tenantId":"{}","workflowId":"{workflow_id}","workflowVersionId":"{version_id}"}}"#,
                tenant.id
            );
            let duration_median_us = log_uniform(rng, 50.0, 60_000.0) * US_PER_MS as f64;
            let timeout = EXECUTION_TIMEOUTS
                .into_iter()
                .find(|&(limit, _)| limit as f64 >= 10.0 * duration_median_us)
                .unwrap_or(EXECUTION_TIMEOUTS[EXECUTION_TIMEOUTS.len() - 1]);
            workflows.push(Workflow {
                name,
                base,
                failure_probability,
                duration_median_us,
                duration_sigma,
                queue_median_us: log_uniform(rng, 3.0, 3_000.0) * US_PER_MS as f64,
                queue_sigma: uniform(rng, 0.4, 1.0),
                dag,
                source,
                primary_error,
                timeout,
                offset_secs: tenant.offset_secs,
                tail,
            });
        }
        Self {
            workflows,
            cumulative_share,
        }
    }

    fn pick_workflow(&self, rng: &mut SmallRng) -> usize {
        let total = self.cumulative_share.last().copied().unwrap_or(0.0);
        let target = rng.random::<f64>() * total;
        self.cumulative_share
            .partition_point(|&c| c <= target)
            .min(self.workflows.len() - 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Queued,
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Cancelled => "CANCELLED",
            Self::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Failed,
    TimedOut,
    Cancelled,
    SchedulingTimeout,
}

impl Outcome {
    fn status(self) -> Status {
        match self {
            Self::Completed => Status::Completed,
            Self::Failed | Self::TimedOut | Self::SchedulingTimeout => Status::Failed,
            Self::Cancelled => Status::Cancelled,
        }
    }
}

/// State of one run; it travels inside its next scheduled event, so finished runs cost nothing.
#[derive(Debug)]
struct Run {
    workflow: usize,
    id: String,
    /// The document up to `"duration":`, the same in every update of the run.
    head: String,
    /// The document from `,"input":` to `"output":`, the same in every update of the run.
    middle: String,
    created_us: i64,
    status: Status,
    started_us: Option<i64>,
    finished_us: Option<i64>,
    /// Serialized output; `None` is `{}`.
    output: Option<String>,
    error_message: &'static str,
    attempts: u32,
    /// DAG runs: the terminal update that follows the first task's completion.
    pending: Option<(i64, Outcome)>,
}

impl Run {
    /// Back to a non-terminal state of a (new) attempt: timestamps describe the latest attempt.
    fn reset(&mut self, status: Status) {
        self.status = status;
        self.started_us = None;
        self.finished_us = None;
        self.output = None;
        self.error_message = "";
    }
}

fn new_run(model: &Model, rng: &mut SmallRng, workflow: usize, arrival_us: i64) -> Run {
    let wf = &model.workflows[workflow];
    let offset = wf.offset_secs;
    let created_us = arrival_us + rng.random_range(1_000..30_000);
    let additional_metadata = if rng.random::<f64>() < 0.1 {
        json!({})
    } else {
        let tier = match rng.random::<f64>() {
            u if u < 0.15 => "gold",
            u if u < 0.5 => "silver",
            _ => "free",
        };
        let source = if rng.random::<f64>() < 0.9 {
            wf.source
        } else {
            pick(rng, &["api", "cron", "event"])
        };
        json!({ "customer_tier": tier, "source": source })
    };
    let id = uuid(rng);
    let input = run_input(wf.base, rng, created_us + i64::from(offset) * US_PER_SEC);
    // The constant parts of the document are serialized once (serde_json's compact `Display`).
    let display_name = Value::from(format!("{}-{}", wf.name, arrival_us.div_euclid(US_PER_MS)));
    let created = format_timestamp(Some(created_us), offset);
    let head = format!(
        r#"{{"additionalMetadata":{additional_metadata},"createdAt":"{created}","displayName":{display_name},"duration":"#
    );
    let meta_created = format_timestamp(Some(arrival_us), offset);
    let middle = format!(
        r#","input":{input},"metadata":{{"createdAt":"{meta_created}","id":"{id}","updatedAt":"{meta_created}"}},"output":"#
    );
    Run {
        workflow,
        id,
        head,
        middle,
        created_us,
        status: Status::Queued,
        started_us: None,
        finished_us: None,
        output: None,
        error_message: "",
        attempts: 0,
        pending: None,
    }
}

fn run_input(base: &str, rng: &mut SmallRng, local_us: i64) -> Value {
    match base {
        "send-welcome-email" => json!({
            "input": { "user_id": rng.random_range(1..200_000) },
            "overrides": {},
            "parents": {},
            "triggered_by": "event",
            "triggers": {},
            "user_data": {},
        }),
        "DAGWorkflow" => json!({}),
        "nightly-report" | "export-csv" => {
            let (y, m, d) = civil_from_days(local_us.div_euclid(US_PER_DAY) - 1);
            json!({ "date": format!("{y:04}-{m:02}-{d:02}") })
        }
        "resize-image" => json!({
            "height": pick(rng, &[480, 720, 1080]),
            "image_id": format!("img_{:012x}", rng.random::<u64>() >> 16),
            "width": pick(rng, &[640, 1280, 1920]),
        }),
        "charge-card" | "generate-invoice" => json!({
            "amount_cents": rng.random_range(100..250_000),
            "currency": if rng.random::<f64>() < 0.7 { "usd" } else { "eur" },
            "customer_id": format!("cus_{:010x}", rng.random::<u64>() >> 24),
        }),
        "process-refund" => json!({
            "charge_id": format!("ch_{:012x}", rng.random::<u64>() >> 16),
            "reason": "requested_by_customer",
        }),
        "sync-crm" => json!({
            "account_id": rng.random_range(1..50_000),
            "full_sync": rng.random::<f64>() < 0.05,
        }),
        "index-document" | "embed-chunks" | "summarize-ticket" => json!({
            "document_id": rng.random_range(1..5_000_000),
            "language": if rng.random::<f64>() < 0.8 { "en" } else { "de" },
        }),
        "transcode-video" => json!({
            "preset": pick(rng, &["480p", "720p", "1080p"]),
            "video_id": format!("vid_{:012x}", rng.random::<u64>() >> 16),
        }),
        _ => json!({
            "priority": if rng.random::<f64>() < 0.9 { "normal" } else { "high" },
            "request_id": rng.random_range(1..10_000_000),
        }),
    }
}

fn completed_output(base: &str, rng: &mut SmallRng) -> Value {
    match base {
        "DAGWorkflow" => json!({ "step4": "step4" }),
        "nightly-report" | "export-csv" => json!({
            "rows": rng.random_range(0..100_000),
            "url": format!("s3://reports/{:016x}.csv", rng.random::<u64>()),
        }),
        "send-welcome-email" => {
            json!({ "message_id": format!("<{:016x}@mail>", rng.random::<u64>()) })
        }
        "charge-card" | "process-refund" => json!({ "status": "succeeded" }),
        _ => json!({ "ok": true, "processed": rng.random_range(1..500) }),
    }
}

fn primary_error(base: &str, rng: &mut SmallRng) -> &'static str {
    match base {
        "send-welcome-email" => {
            "ValueError: SMTP server returned 421\nTraceback (most recent call last): ..."
        }
        "charge-card" => "stripe.error.CardError: Your card was declined.",
        "process-refund" => "stripe.error.InvalidRequestError: Charge has already been refunded.",
        "sync-crm" => "HTTPError: 429 Client Error: Too Many Requests for url: https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert",
        "resize-image" | "transcode-video" => "Error: Input buffer contains unsupported image format",
        "generate-invoice" => "jinja2.exceptions.UndefinedError: 'dict object' has no attribute 'billing_address'",
        _ => pick(rng, &GENERIC_ERRORS),
    }
}

fn failure_message(wf: &Workflow, rng: &mut SmallRng) -> &'static str {
    if rng.random::<f64>() < 0.7 {
        wf.primary_error
    } else {
        pick(rng, &GENERIC_ERRORS)
    }
}

// ---------------------------------------------------------------------------------------------
// The event queue.

#[derive(Debug)]
enum Step {
    /// QUEUED, at creation or when a finished run is replayed.
    Enqueue,
    /// RUNNING, for a new attempt.
    Start,
    /// DAG only: still RUNNING, first task done, `finishedAt` set.
    FirstTaskDone,
    /// The attempt failed and is retried automatically: QUEUED again.
    Requeue,
    /// A terminal update.
    Finish(Outcome),
}

#[derive(Debug)]
enum Event {
    /// A new run is created; schedules the next arrival.
    Arrival,
    Step(Box<Run>, Step),
    /// A terminal update delivered a second time.
    Duplicate {
        key: String,
        payload: Vec<u8>,
    },
}

#[derive(Debug)]
struct Scheduled {
    t: i64,
    /// Tie-breaker: events at the same microsecond come out in the order they were scheduled.
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.t, self.seq).cmp(&(other.t, other.seq))
    }
}

// ---------------------------------------------------------------------------------------------
// The wire format.

/// The run's current `V1WorkflowRun` document, byte for byte what `serde_json` writes (compact) for
/// the document as the Go server marshals it: keys in alphabetical order (the generated Go struct's
/// order) and the optional fields always present. Only the parts that change between updates are
/// written here; the rest was serialized once per run (`Run::head`, `Run::middle`,
/// `Workflow::tail`), which keeps the generator fast even in debug builds.
fn render(model: &Model, run: &Run) -> Vec<u8> {
    let wf = &model.workflows[run.workflow];
    let error = if run.error_message.is_empty() {
        None
    } else {
        Some(Value::from(run.error_message).to_string())
    };
    let output = run.output.as_deref().unwrap_or("{}");
    let mut out = String::with_capacity(
        run.head.len() + run.middle.len() + wf.tail.len() + output.len() + 160 + run.error_message.len(),
    );
    out.push_str(&run.head);
    out.push_str(&go_duration_ms(run.started_us, run.finished_us).to_string());
    out.push_str(r#","errorMessage":"#);
    out.push_str(error.as_deref().unwrap_or(r#""""#));
    out.push_str(r#","finishedAt":""#);
    out.push_str(&format_timestamp(run.finished_us, wf.offset_secs));
    out.push('"');
    out.push_str(&run.middle);
    out.push_str(output);
    out.push_str(r#","startedAt":""#);
    out.push_str(&format_timestamp(run.started_us, wf.offset_secs));
    out.push_str(r#"","status":""#);
    out.push_str(run.status.as_str());
    out.push('"');
    out.push_str(&wf.tail);
    out.into_bytes()
}

fn document(model: &Model, run: &Run) -> Value {
    serde_json::from_slice(&render(model, run)).unwrap_or(Value::Null)
}

/// The run's document with one field damaged by `edit`.
fn edited(model: &Model, run: &Run, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut doc = document(model, run);
    if let Value::Object(map) = &mut doc {
        edit(map);
    }
    doc.to_string().into_bytes()
}

/// What Go's `finishedAt.Sub(startedAt).Milliseconds()` gives, zero times included: the
/// difference saturates at ±(2^63 - 1) ns, hence ±9223372036854 ms.
fn go_duration_ms(started_us: Option<i64>, finished_us: Option<i64>) -> i64 {
    let started = i128::from(started_us.unwrap_or(GO_ZERO_TIME_US));
    let finished = i128::from(finished_us.unwrap_or(GO_ZERO_TIME_US));
    let nanos = ((finished - started) * 1_000).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    // Integer division truncates towards zero, like Go's Duration.Milliseconds.
    (nanos / 1_000_000) as i64
}

/// RFC 3339 as Go's `time.RFC3339Nano` writes a microsecond timestamp: trailing zeros of the
/// fraction trimmed (no dot when it is zero), `Z` for UTC, `±hh:mm` otherwise. `None` is Go's zero
/// time, which is always UTC.
fn format_timestamp(us: Option<i64>, offset_secs: i32) -> String {
    let Some(us) = us else {
        return GO_ZERO_TIME.to_owned();
    };
    let local = us + i64::from(offset_secs) * US_PER_SEC;
    let (y, mo, d) = civil_from_days(local.div_euclid(US_PER_DAY));
    let of_day = local.rem_euclid(US_PER_DAY);
    let secs = of_day / US_PER_SEC;
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    let fraction = of_day % US_PER_SEC;
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    if offset_secs == 0 {
        out.push('Z');
    } else {
        let sign = if offset_secs < 0 { '-' } else { '+' };
        let abs = offset_secs.unsigned_abs();
        out.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60));
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A random (version 4) UUID, lowercase, drawn from the simulation's rng.
fn uuid(rng: &mut SmallRng) -> String {
    let raw: u128 = rng.random();
    let v = (raw & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xffff,
        (v >> 64) & 0xffff,
        (v >> 48) & 0xffff,
        v & 0xffff_ffff_ffff
    )
}

/// A uniformly chosen element of a non-empty slice.
fn pick<T: Copy>(rng: &mut SmallRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn uniform(rng: &mut SmallRng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

fn log_uniform(rng: &mut SmallRng, low: f64, high: f64) -> f64 {
    uniform(rng, low.ln(), high.ln()).exp()
}

/// A standard normal draw (Box-Muller).
fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: the logarithm stays finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// A log-normal duration in microseconds, between 1 µs and `cap_us`.
fn log_normal_us(rng: &mut SmallRng, median_us: f64, sigma: f64, cap_us: f64) -> i64 {
    (median_us * (sigma * standard_normal(rng)).exp()).clamp(1.0, cap_us) as i64
}

#[cfg(test)]
mod tests;
