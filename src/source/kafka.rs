//! The Kafka consumer-group member.
//!
//! # Commits follow scrapes
//!
//! Prometheus sees only what a scrape returned. So the offsets committed are those whose effects
//! a delivered `/metrics` page showed: the aggregation records each partition's position with what
//! it counts ([`crate::ids::Positions`]), a page carries the positions it shows, and once a
//! scrape's last byte is written the service is told ([`Service::delivered_scrapes`]) and this
//! member stores them, for librdkafka to commit within
//! [`COMMIT_DELAY`](crate::config::kafka::COMMIT_DELAY). After a crash, the messages processed
//! since the last delivered scrape are read again and counted by the new process: Prometheus saw
//! them from neither, so each outcome counts once in what it stores. No offset is stored but
//! these (`enable.auto.offset.store=false`). Other commits:
//!
//! - no scrape delivered for `kafka.commit_interval`: what was processed (the bounded fallback
//!   for a member nobody scrapes);
//! - partitions revoked: what was processed of them, synchronously, before another member takes
//!   them over (this process keeps their counts and its next scrape shows them);
//! - shutdown: what scrapes delivered, and nothing more (the next process counts the rest).
//!
//! An offset is never committed backwards, nor for a partition not assigned. A broker that is
//! down or restarts is librdkafka's to reconnect to; we count and log its errors and keep
//! consuming.
//!
//! The librdkafka configuration it runs with, and which of its values are secrets, are
//! [`crate::config::kafka`]'s. What the client reports about the brokers goes to the service's
//! [`Readiness`].
//!
//! # Handing a partition's state over
//!
//! Each assigned partition gets a [`Partition`] number, and the aggregation keeps its runs,
//! remembered outcomes and window contributions apart. When a partition is revoked, they are
//! dropped (after the commit), so that two members never both report a run. When one is
//! assigned, at start and at every rebalance, the rebalance callback looks up the group's
//! committed offset and the offset for `now - [state] restore_lookback`, and starts the
//! partition at the earlier: the messages before the committed offset are
//! [restored](crate::pipeline::Pipeline::restore) (state rebuilt, nothing counted, offsets not
//! stored), the rest processed as usual. Each partition switches at its own offset, so one that
//! is restored is processed while others are still restoring; `/readyz` answers 503 with the
//! progress until all are done. A broker that cannot answer the lookups leaves the partition
//! unrestored (logged), never stuck.

use crate::config::kafka::{client_config, redacted, scrub_secrets, secret_values};
use crate::config::KafkaConfig;
use crate::events::{
    CommitTrigger, KafkaClientError, LagReported, MessageOrigin, MessageProcessed, OffsetCommitRequested,
    OffsetsCommitted, Rebalanced, RestoreFinished, RestoreSkipped, RestoreStarted, RevokedStateDropped, Telemetry,
};
use crate::ids::{Partition, Positions};
use crate::pipeline::{now_nanos, Input, Pipeline, RestoreInput};
use crate::service::{Readiness, RestoreProgress, Service};
use futures_core::Stream;
use prometheus::IntCounter;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long the rebalance callback waits for each lookup of a restore (committed offsets,
/// offsets for a time, watermarks) before it gives the restore up.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

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
    pipeline: Pipeline,
    /// The values of the secret properties, kept out of every message of the client's.
    secrets: Vec<String>,
    /// Zero: restoring is off.
    restore_lookback: Duration,
    assignment: Arc<SharedAssignment>,
    /// The service is stopping: a revoke now commits nothing more than scrapes delivered.
    leaving: AtomicBool,
}

/// The [`Assignment`], shared by the rebalance callback and the consuming loop, with the number of
/// restores in progress readable without the lock: the loop takes the lock for a message only
/// while some partition is being restored.
#[derive(Debug, Default)]
struct SharedAssignment {
    state: Mutex<Assignment>,
    restoring: AtomicUsize,
}

impl SharedAssignment {
    fn lock(&self) -> MutexGuard<'_, Assignment> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn restoring(&self) -> bool {
        self.restoring.load(Ordering::Relaxed) > 0
    }

    /// After the restores changed (or progressed): tells the loop and readiness.
    fn restores_changed(&self, assignment: &Assignment, readiness: &Readiness) {
        self.restoring.store(assignment.restores.len(), Ordering::Relaxed);
        readiness.restoring(assignment.progress());
    }
}

/// The partitions known, and the restores in progress.
#[derive(Debug, Default)]
struct Assignment {
    /// Every partition seen (kept after a revoke: its number is the same if it comes back). Few,
    /// hence a list.
    partitions: Vec<KnownPartition>,
    restores: Vec<Restore>,
}

#[derive(Debug)]
struct KnownPartition {
    topic: String,
    partition: i32,
    number: Partition,
    assigned: bool,
    /// The furthest offset known to be committed: the group's when it was assigned, or this
    /// member's own commits (asked for; a failed one is retried by a later commit). A page
    /// rendered before a revoke never shows more than what the revoke committed, so nothing
    /// it shows can move a later owner's commits back.
    committed: Option<i64>,
}

/// A partition being read again up to the group's committed offset.
#[derive(Debug)]
struct Restore {
    topic: String,
    partition: i32,
    from: i64,
    /// The committed offset: messages before it are restored, from it on processed.
    until: i64,
    /// The offset of the latest message restored.
    at: i64,
    applied: u64,
    rejected: u64,
    started: Instant,
}

impl Assignment {
    fn known(&mut self, topic: &str, partition: i32) -> &mut KnownPartition {
        let at = match (self.partitions.iter()).position(|k| k.partition == partition && k.topic == topic) {
            Some(at) => at,
            None => {
                self.partitions.push(KnownPartition {
                    topic: topic.to_string(),
                    partition,
                    number: Partition(u16::try_from(self.partitions.len()).unwrap_or(u16::MAX)),
                    assigned: false,
                    committed: None,
                });
                self.partitions.len() - 1
            }
        };
        &mut self.partitions[at]
    }

    fn number(&mut self, topic: &str, partition: i32) -> Partition {
        self.known(topic, partition).number
    }

    fn set_assigned(&mut self, tpl: &TopicPartitionList, assigned: bool) {
        for e in tpl.elements() {
            self.known(e.topic(), e.partition()).assigned = assigned;
        }
    }

    /// The offsets to commit for `positions`: each assigned partition's (of `only`, when given)
    /// that is past what is known to be committed.
    fn commit_further(&self, positions: &Positions, only: Option<&TopicPartitionList>) -> Vec<(String, i32, i64)> {
        let wanted = |k: &&KnownPartition| {
            k.assigned && only.is_none_or(|only| only.find_partition(&k.topic, k.partition).is_some())
        };
        (self.partitions.iter().filter(wanted))
            .filter_map(|k| {
                let next = positions.get(k.number)?;
                (k.committed.is_none_or(|committed| committed < next)).then(|| (k.topic.clone(), k.partition, next))
            })
            .collect()
    }

    /// The broker confirmed these offsets committed.
    fn confirmed(&mut self, offsets: &TopicPartitionList) {
        for e in offsets.elements() {
            if let (Offset::Offset(next), Ok(())) = (e.offset(), e.error()) {
                let known = self.known(e.topic(), e.partition());
                known.committed = known.committed.max(Some(next));
            }
        }
    }

    /// Where in `restores` the restore of this partition is, if `offset` lies before its end.
    fn restore_of(&self, topic: &str, partition: i32, offset: i64) -> Option<usize> {
        (self.restores.iter()).position(|r| r.partition == partition && r.topic == topic && offset < r.until)
    }

    fn progress(&self) -> RestoreProgress {
        RestoreProgress {
            partitions: self.restores.len(),
            read: self.restores.iter().map(|r| (r.at + 1 - r.from).max(0) as u64).sum(),
            total: self.restores.iter().map(|r| (r.until - r.from).max(0) as u64).sum(),
        }
    }
}

impl Restore {
    fn report(&self, telemetry: &Telemetry) {
        RestoreFinished {
            topic: &self.topic,
            partition: self.partition,
            applied: self.applied,
            rejected: self.rejected,
            seconds: self.started.elapsed().as_secs_f64(),
        }
        .emit(telemetry);
    }
}

/// What the loop keeps of each partition, looked up once per partition: a short list compared by
/// partition then topic is cheaper per message than hashing the topic name.
#[derive(Default)]
struct PartitionCache {
    entries: Vec<(i32, String, Partition, IntCounter)>,
}

impl PartitionCache {
    /// The partition's number (its consumed counter made on first sight: see [`Self::counter`]).
    fn get(&mut self, topic: &str, partition: i32, telemetry: &Telemetry, shared: &SharedAssignment) -> Partition {
        let at = match (self.entries.iter()).position(|(p, t, ..)| *p == partition && t == topic) {
            Some(at) => at,
            None => {
                let number = shared.lock().number(topic, partition);
                let counter = telemetry.consumed_counter(topic, partition);
                self.entries.push((partition, topic.to_string(), number, counter));
                self.entries.len() - 1
            }
        };
        self.entries[at].2
    }

    /// The consumed counter of a partition [`Self::get`] has seen.
    fn counter(&self, number: Partition) -> Option<&IntCounter> {
        (self.entries.iter()).find_map(|(.., n, counter)| (*n == number).then_some(counter))
    }
}

impl SourceContext {
    /// Sets where each newly assigned partition of `tpl` starts: before its committed offset
    /// when there is history to restore. Runs in the rebalance callback, before the assignment.
    fn plan_restores(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        if self.restore_lookback.is_zero() || tpl.count() == 0 {
            return;
        }
        let skip_all = |why: &str| {
            for e in tpl.elements() {
                RestoreSkipped {
                    topic: e.topic(),
                    partition: e.partition(),
                    why,
                }
                .emit();
            }
        };
        let committed = match consumer.committed_offsets(tpl.clone(), Timeout::After(LOOKUP_TIMEOUT)) {
            Ok(committed) => committed,
            Err(error) => return skip_all(&format!("the committed offsets could not be read: {error}")),
        };
        let since = (now_nanos() / 1_000_000).saturating_sub(self.restore_lookback.as_millis() as i64);
        let mut wanted = TopicPartitionList::new();
        for e in committed.elements() {
            if let Offset::Offset(_) = e.offset() {
                let _ = wanted.add_partition_offset(e.topic(), e.partition(), Offset::Offset(since));
            }
        }
        if wanted.count() == 0 {
            return; // a new group: nothing was processed before, nothing to restore
        }
        let starts = match consumer.offsets_for_times(wanted, Timeout::After(LOOKUP_TIMEOUT)) {
            Ok(starts) => starts,
            Err(error) => return skip_all(&format!("the offsets for the lookback could not be read: {error}")),
        };
        let mut assignment = self.assignment.lock();
        for e in committed.elements() {
            let (topic, partition) = (e.topic(), e.partition());
            let Offset::Offset(until) = e.offset() else { continue };
            let known = assignment.known(topic, partition);
            known.committed = known.committed.max(Some(until));
            let from = match starts.find_partition(topic, partition).map(|s| s.offset()) {
                Some(Offset::Offset(from)) if from < until => from,
                _ => continue, // nothing before the committed offset is recent enough
            };
            let retention_shorter = consumer
                .fetch_watermarks(topic, partition, Timeout::After(LOOKUP_TIMEOUT))
                .is_ok_and(|(low, _)| low > 0 && from <= low);
            if tpl
                .set_partition_offset(topic, partition, Offset::Offset(from))
                .is_err()
            {
                continue;
            }
            RestoreStarted {
                topic,
                partition,
                from,
                until,
                retention_shorter,
            }
            .emit();
            assignment.number(topic, partition);
            assignment
                .restores
                .retain(|r| !(r.partition == partition && r.topic == topic));
            assignment.restores.push(Restore {
                topic: topic.to_string(),
                partition,
                from,
                until,
                at: from - 1,
                applied: 0,
                rejected: 0,
                started: Instant::now(),
            });
        }
        self.assignment.restores_changed(&assignment, &self.readiness);
    }

    /// Forgets what the revoked partitions of `tpl` contributed, and their restores.
    fn drop_revoked(&self, tpl: &TopicPartitionList) {
        let mut assignment = self.assignment.lock();
        for e in tpl.elements() {
            let (topic, partition) = (e.topic(), e.partition());
            assignment
                .restores
                .retain(|r| !(r.partition == partition && r.topic == topic));
            let number = assignment.number(topic, partition);
            let (runs, outcomes) = self.pipeline.aggregator().drop_partition(number);
            RevokedStateDropped {
                topic,
                partition,
                runs,
                outcomes,
            }
            .emit(&self.telemetry);
        }
        self.assignment.restores_changed(&assignment, &self.readiness);
    }
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
                    // Behind what was handed to the service (and so processed), not what was
                    // committed: commits follow scrapes.
                    .filter(|p| p.partition >= 0 && p.app_offset >= 0 && p.hi_offset >= 0)
                    .map(move |p| (topic.clone(), p.partition, (p.hi_offset - p.app_offset).max(0)))
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
    /// librdkafka's rebalance, as rdkafka's default does it, with the restores planned before an
    /// assignment and the revoked partitions' state dropped after their commit.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assignment.lock().set_assigned(tpl, true);
                self.plan_restores(consumer, tpl);
                let result = match cooperative {
                    true => consumer.incremental_assign(tpl),
                    false => consumer.assign(tpl),
                };
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
                result
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Everything received so far was processed (processing is synchronous), and this
                // process keeps counting it: commit it now, before another member takes the
                // partitions over. Unless the service is stopping: then the next process counts
                // what no scrape delivered.
                if !self.leaving.load(Ordering::Relaxed) {
                    let processed = self.pipeline.aggregator().positions().clone();
                    let offsets = self.assignment.lock().commit_further(&processed, Some(tpl));
                    let (assignment, telemetry) = (&self.assignment, &self.telemetry);
                    commit(
                        consumer,
                        &offsets,
                        CommitMode::Sync,
                        CommitTrigger::Revoke,
                        assignment,
                        telemetry,
                    );
                }
                self.assignment.lock().set_assigned(tpl, false);
                self.drop_revoked(tpl);
                let result = match cooperative {
                    true => consumer.incremental_unassign(tpl),
                    false => consumer.unassign(),
                };
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
                result
            }
            other => {
                let mut assignment = self.assignment.lock();
                assignment.partitions.iter_mut().for_each(|k| k.assigned = false);
                drop(assignment);
                let error = KafkaError::Rebalance(other.into());
                self.post_rebalance(consumer, &Rebalance::Error(error));
                match cooperative {
                    true => consumer.incremental_unassign(tpl),
                    false => consumer.unassign(),
                }
            }
        };
        if let Err(error) = result {
            KafkaClientError {
                code: "rebalance",
                reason: &error.to_string(),
            }
            .emit(&self.telemetry);
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

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if result.is_ok() {
            self.assignment.lock().confirmed(offsets);
        }
        emit_commit(result, &self.telemetry);
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Commits `offsets` (none: nothing to do): at once (`Sync`), or within `COMMIT_DELAY`
/// (`Async`). What the broker confirms becomes the partitions' known committed offsets.
fn commit<C: Consumer<SourceContext>>(
    consumer: &C,
    offsets: &[(String, i32, i64)],
    mode: CommitMode,
    trigger: CommitTrigger,
    assignment: &SharedAssignment,
    telemetry: &Telemetry,
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
    }
    OffsetCommitRequested { trigger, offsets }.emit(telemetry);
    match mode {
        // Stored, for librdkafka to commit within `COMMIT_DELAY` (its auto commit reports to
        // `commit_callback`; an application's asynchronous commit would report to nobody). A
        // partition revoked meanwhile refuses the store: its revoke committed what was processed.
        CommitMode::Async => {
            if let Err(error) = consumer.store_offsets(&tpl) {
                tracing::debug!(%error, "offsets not stored for commit");
            }
        }
        CommitMode::Sync => {
            let result = consumer.commit(&tpl, CommitMode::Sync);
            if result.is_ok() {
                assignment.lock().confirmed(&tpl);
            }
            emit_commit(result, telemetry)
        }
    }
}

fn emit_commit(result: KafkaResult<()>, telemetry: &Telemetry) {
    match result {
        Ok(()) => OffsetsCommitted { result: Ok(()) }.emit(telemetry),
        // Nothing new was stored since the last commit: nothing to do, nothing failed.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => OffsetsCommitted { result: Err(&error) }.emit(telemetry),
    }
}

/// The most messages processed together (those the client already holds when one arrives), per
/// decoding thread: with one, 256; with more, 1,024 each, so that handing the parts over (tens of
/// microseconds) stays small beside decoding them.
fn max_batch(decode_threads: usize) -> usize {
    match decode_threads {
        0 | 1 => 256,
        n => 1024 * n,
    }
}

/// The next message if the client already holds one, without waiting.
fn ready_now<S: Stream + Unpin>(messages: &mut S) -> Option<S::Item> {
    let mut context = Context::from_waker(Waker::noop());
    match Pin::new(messages).poll_next(&mut context) {
        Poll::Ready(message) => message,
        Poll::Pending => None,
    }
}

fn client_error(error: &KafkaError, telemetry: &Telemetry) {
    let code = error
        .rdkafka_error_code()
        .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
    KafkaClientError {
        code: &code,
        reason: &error.to_string(),
    }
    .emit(telemetry);
}

/// Consumes until `shutdown` resolves, then commits what scrapes delivered and leaves the group.
/// A newly assigned partition's state is rebuilt from the `restore_lookback` before its
/// committed offset (zero: not at all). Resolve `shutdown` once `/metrics` is no longer served,
/// so that the last commit includes every scrape delivered.
pub async fn consume(
    config: &KafkaConfig,
    restore_lookback: Duration,
    service: &Service,
    shutdown: impl Future<Output = ()>,
) -> KafkaResult<()> {
    let pipeline = service.pipeline();
    let readiness = service.readiness();
    let telemetry = pipeline.telemetry().clone();
    let assignment = Arc::new(SharedAssignment::default());
    let context = SourceContext {
        telemetry: telemetry.clone(),
        readiness: readiness.clone(),
        pipeline: pipeline.clone(),
        secrets: secret_values(config),
        restore_lookback,
        assignment: assignment.clone(),
        leaving: AtomicBool::new(false),
    };
    let client = client_config(config);
    let consumer: StreamConsumer<SourceContext> = client
        .create_with_context(context)
        .map_err(|error| redacted(error, &client))?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(brokers = %config.brokers, topics = %topics.join(","), group = %config.group_id, "consuming");

    let mut partitions = PartitionCache::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut delivered = service.delivered_scrapes();
    let mut last_delivery = Instant::now();
    let max_batch = max_batch(pipeline.decode_threads());
    let mut results = Vec::with_capacity(max_batch);
    // One stream for the whole run: a stream per message would register and unregister its
    // waker with the consumer (two locks) each time.
    let mut messages = consumer.stream();
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // The service holds the sender as long as this runs: `changed` fails only after.
            Ok(()) = delivered.changed() => {
                last_delivery = Instant::now();
                let positions = delivered.borrow_and_update().clone();
                let offsets = assignment.lock().commit_further(&positions, None);
                commit(&consumer, &offsets, CommitMode::Async, CommitTrigger::Scrape, &assignment, &telemetry);
                continue;
            }
            _ = tick.tick() => {
                if last_delivery.elapsed() >= config.commit_interval {
                    // Nobody scrapes: what was processed, so that a restart does not read it all again.
                    last_delivery = Instant::now();
                    let processed = pipeline.aggregator().positions().clone();
                    let offsets = assignment.lock().commit_further(&processed, None);
                    commit(&consumer, &offsets, CommitMode::Async, CommitTrigger::Unscraped, &assignment, &telemetry);
                }
                if assignment.restoring() {
                    // Progress for /readyz, and the restores whose last offsets hold no message:
                    // the consumer's position has passed their end without one.
                    let positions = consumer.position().unwrap_or_default();
                    let mut state = assignment.lock();
                    let passed = |r: &Restore| matches!(
                        positions.find_partition(&r.topic, r.partition).map(|p| p.offset()),
                        Some(Offset::Offset(position)) if position >= r.until
                    );
                    state.restores.retain(|r| {
                        let ended = passed(r);
                        if ended {
                            r.report(&telemetry);
                        }
                        !ended
                    });
                    assignment.restores_changed(&state, readiness);
                }
                continue;
            }
            message = poll_fn(|context| Pin::new(&mut messages).poll_next(context)) => match message {
                Some(message) => message,
                None => break, // a consumer's stream never ends
            },
        };
        let first = match message {
            Ok(message) => message,
            Err(error) => {
                client_error(&error, &telemetry);
                continue;
            }
        };
        // What else the client already holds, without waiting: one batch, one clock reading, one
        // lock of the aggregation.
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match ready_now(&mut messages) {
                Some(Ok(message)) => batch.push(message),
                Some(Err(error)) => {
                    client_error(&error, &telemetry);
                    break;
                }
                None => break,
            }
        }
        readiness.broker_answered();
        let now = now_nanos();
        let mut inputs = Vec::with_capacity(batch.len());
        let mut consumed: Vec<(Partition, u64)> = Vec::new();
        // Messages below a restoring partition's committed offset: already counted by whoever
        // processed them, they rebuild its state (each with its position, for the restore's
        // progress).
        let (mut restores, mut restored_at) = (Vec::new(), Vec::new());
        for message in &batch {
            let (topic, partition) = (message.topic(), message.partition());
            let number = partitions.get(topic, partition, &telemetry, &assignment);
            let offset = message.offset();
            if assignment.restoring() && assignment.lock().restore_of(topic, partition, offset).is_some() {
                let sent = (message.timestamp().to_millis()).map_or(now, |ms| ms.saturating_mul(1_000_000));
                restores.push(RestoreInput {
                    payload: message.payload(),
                    partition: number,
                    message_nanos: sent,
                });
                restored_at.push((topic, partition, offset));
                continue;
            }
            match consumed.last_mut() {
                Some((last, n)) if *last == number => *n += 1,
                _ => consumed.push((number, 1)),
            }
            inputs.push(Input {
                payload: message.payload(),
                origin: MessageOrigin::Kafka {
                    topic,
                    partition,
                    offset,
                },
                partition: number,
            });
        }
        if !restores.is_empty() {
            // Restored first: a partition's restored messages come before its others.
            pipeline.restore_batch(&restores, now, &mut results);
            let mut state = assignment.lock();
            for (&(topic, partition, offset), result) in restored_at.iter().zip(&results) {
                let Some(at) = state.restore_of(topic, partition, offset) else {
                    continue;
                };
                let restore = &mut state.restores[at];
                restore.at = offset;
                restore.applied += u64::from(result.is_ok());
                restore.rejected += u64::from(result.is_err());
                if offset + 1 >= restore.until {
                    state.restores.swap_remove(at).report(&telemetry);
                    assignment.restores_changed(&state, readiness);
                }
            }
        }
        // A rejected message is counted and logged by the pipeline, and its position recorded
        // like any other's, so that it never stalls the partition. (A partition's restored
        // messages come before its others, so doing these after them keeps each partition's order.)
        pipeline.process_batch(&inputs, now, &mut results);
        // Counted as consumed once their effect is in the metrics.
        for (number, n) in consumed.drain(..) {
            if let Some(counter) = partitions.counter(number) {
                MessageProcessed {
                    counter,
                    messages: n,
                    now_nanos: now,
                }
                .emit(&telemetry);
            }
        }
    }
    tracing::info!("shutting down: committing the offsets scrapes delivered");
    consumer.context().leaving.store(true, Ordering::Relaxed);
    // Synchronously, and again any not confirmed yet: an asynchronous commit may still be on its way.
    let offsets = assignment.lock().commit_further(&delivered.borrow(), None);
    commit(
        &consumer,
        &offsets,
        CommitMode::Sync,
        CommitTrigger::Shutdown,
        &assignment,
        &telemetry,
    );
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
