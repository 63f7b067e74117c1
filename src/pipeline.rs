//! One message through the stages: decode -> aggregate -> self-metrics. The Kafka source and the
//! file replay both call [`Pipeline::process`], so a replayed file is counted exactly as Kafka is.
//! The per-message path and nothing else: the running service's shared state around it (the
//! thresholds, readiness, `/metrics`) is the `service` module's.

use crate::aggregate::{Aggregator, Applied};
use crate::decode::{decode, DecodeError, RejectReason, RunUpdate};
use crate::events::{DuplicateOutcome, MessageOrigin, MessageRejected, Telemetry};
use crate::ids::Partition;
use rayon::prelude::*;
use std::sync::{Arc, Mutex, MutexGuard};

/// One message for [`Pipeline::process_batch`]: its bytes, where it came from, its partition.
pub struct Input<'a> {
    pub payload: Option<&'a [u8]>,
    pub origin: MessageOrigin<'a>,
    pub partition: Partition,
}

/// A message to restore from (see [`Pipeline::restore_batch`]).
pub struct RestoreInput<'a> {
    pub payload: Option<&'a [u8]>,
    pub partition: Partition,
    /// When the message was written (its Kafka timestamp), in nanoseconds since the epoch.
    pub message_nanos: i64,
}

#[derive(Clone)]
pub struct Pipeline {
    aggregator: Arc<Mutex<Aggregator>>,
    telemetry: Arc<Telemetry>,
    max_message_bytes: usize,
    /// The threads that decode batches, when there are more than one.
    decoders: Option<Arc<rayon::ThreadPool>>,
}

/// The fewest messages a decoding thread is given: below this, handing a part to another thread
/// costs more than decoding it.
const MIN_MESSAGES_PER_THREAD: usize = 32;

impl Pipeline {
    pub fn new(aggregator: Aggregator, telemetry: Arc<Telemetry>, max_message_bytes: usize) -> Pipeline {
        Pipeline {
            aggregator: Arc::new(Mutex::new(aggregator)),
            telemetry,
            max_message_bytes,
            decoders: None,
        }
    }

    /// Decodes a batch's messages on `threads` threads of their own (1: on the calling thread);
    /// they are counted in order on the calling thread either way. Should the threads not start,
    /// it says so and decodes on the calling thread.
    pub fn with_decode_threads(mut self, threads: usize) -> Pipeline {
        self.decoders = None;
        if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("decode-{i}"))
                .build();
            match pool {
                Ok(pool) => self.decoders = Some(Arc::new(pool)),
                Err(error) => tracing::warn!(%error, threads, "decoding threads did not start: decoding on one"),
            }
        }
        self
    }

    /// The threads [`Pipeline::process_batch`] decodes on (1: the calling one alone).
    pub fn decode_threads(&self) -> usize {
        self.decoders.as_ref().map_or(1, |pool| pool.current_num_threads())
    }

    /// Processes one message from `partition`. When this returns, the message's effect is in the
    /// metrics (or it was rejected and counted), and a Kafka message's position is recorded with
    /// it (see [`Aggregator::positions`]): the next snapshot shows both or neither.
    pub fn process(
        &self,
        payload: Option<&[u8]>,
        origin: &MessageOrigin<'_>,
        partition: Partition,
        now_nanos: i64,
    ) -> Result<Applied, RejectReason> {
        let input = Input {
            payload,
            origin: *origin,
            partition,
        };
        let update = decode(payload, self.max_message_bytes);
        let result = count(&mut self.aggregator(), &input, &update, now_nanos);
        self.tell(&input, &update, result);
        result
    }

    /// Processes messages in their order, as [`Pipeline::process`] does each, with one result per
    /// message in `results` (cleared first). They are decoded before the aggregation is locked,
    /// and it is locked once for all of them: consumption and scrapes wait only for the counting.
    pub fn process_batch(
        &self,
        inputs: &[Input<'_>],
        now_nanos: i64,
        results: &mut Vec<Result<Applied, RejectReason>>,
    ) {
        let decoded = self.decode_all(inputs, |input| input.payload);
        results.clear();
        {
            let mut aggregator = self.aggregator();
            results.extend(
                (inputs.iter().zip(&decoded)).map(|(input, update)| count(&mut aggregator, input, update, now_nanos)),
            );
        }
        for ((input, update), result) in inputs.iter().zip(&decoded).zip(results.iter()) {
            self.tell(input, update, *result);
        }
    }

    /// The payloads of a batch's `items` decoded, in order: spread over the decoding threads
    /// when there are several and the batch is large enough.
    fn decode_all<'a, T: Sync>(
        &self,
        items: &[T],
        payload: impl Fn(&T) -> Option<&'a [u8]> + Sync,
    ) -> Vec<Result<RunUpdate<'a>, DecodeError>> {
        let max_bytes = self.max_message_bytes;
        let one = |item: &T| decode(payload(item), max_bytes);
        match &self.decoders {
            Some(pool) if items.len() >= 2 * MIN_MESSAGES_PER_THREAD => pool.install(|| {
                items
                    .par_iter()
                    .with_min_len(MIN_MESSAGES_PER_THREAD)
                    .map(one)
                    .collect()
            }),
            _ => items.iter().map(one).collect(),
        }
    }

    /// Logs and counts, outside the lock, what a message's result calls for: a rejection or a
    /// duplicate outcome.
    fn tell(
        &self,
        input: &Input<'_>,
        update: &Result<RunUpdate<'_>, DecodeError>,
        result: Result<Applied, RejectReason>,
    ) {
        match (update, result) {
            (Err(error), _) => MessageRejected {
                origin: &input.origin,
                error,
            }
            .emit(&self.telemetry),
            (Ok(update), Ok(Applied::Duplicate)) => DuplicateOutcome {
                origin: &input.origin,
                run_id: &update.run.metadata.id,
            }
            .emit(&self.telemetry),
            _ => {}
        }
    }

    /// Rebuilds the state messages that were already processed left (see
    /// [`Aggregator::restore`]), decoded as a batch and applied in order under one lock. Each was
    /// counted, rejected or not, when it was first processed, so nothing is counted or logged here
    /// again; the source counts what it restores. `results` gets one result per message.
    pub fn restore_batch(
        &self,
        inputs: &[RestoreInput<'_>],
        now_nanos: i64,
        results: &mut Vec<Result<Applied, RejectReason>>,
    ) {
        let decoded = self.decode_all(inputs, |input| input.payload);
        results.clear();
        let mut aggregator = self.aggregator();
        results.extend(inputs.iter().zip(&decoded).map(|(input, update)| match update {
            Ok(update) => Ok(aggregator.restore(update, input.partition, now_nanos, input.message_nanos)),
            Err(error) => Err(error.reason),
        }));
    }

    /// The aggregation, locked. Hold it briefly: consumption waits meanwhile.
    pub fn aggregator(&self) -> MutexGuard<'_, Aggregator> {
        // A panic while holding the lock cannot leave the statistics half-updated in a way that
        // matters more than stopping the exporter would, so keep serving.
        self.aggregator.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }
}

/// Counts one decoded message under the lock: its effect, and a Kafka message's position with it
/// (see [`Aggregator::positions`]), so that the next snapshot shows both or neither.
fn count(
    aggregator: &mut Aggregator,
    input: &Input<'_>,
    update: &Result<RunUpdate<'_>, DecodeError>,
    now_nanos: i64,
) -> Result<Applied, RejectReason> {
    let result = match update {
        Ok(update) => Ok(aggregator.apply(update, input.partition, now_nanos)),
        Err(error) => Err(error.reason),
    };
    if let MessageOrigin::Kafka { offset, .. } = input.origin {
        aggregator.processed(input.partition, offset + 1);
    }
    result
}

/// The wall clock as unix nanoseconds.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Clock;
    use crate::config::Config;
    use crate::traffic::synthetic::{SyntheticTraffic, TrafficProfile};

    fn pipeline() -> Pipeline {
        let settings = Config::default().aggregate_settings();
        Pipeline::new(
            Aggregator::new(settings, Clock::Wall),
            Arc::new(Telemetry::new(0)),
            1 << 20,
        )
    }

    /// The workflow metrics as OpenMetrics text (exemplars included).
    fn workflow_text(pipeline: &Pipeline) -> String {
        use crate::exporter::{text::TextWriter, Snapshot, WindowEnd};
        let snapshot = Snapshot::take(&pipeline.aggregator(), WindowEnd::At(1_787_407_400_000_000_000));
        let mut text = String::new();
        let mut writer = TextWriter::new(&mut text, true);
        snapshot.render(&mut writer);
        writer.finish();
        text
    }

    fn telemetry_text(pipeline: &Pipeline) -> String {
        let families = pipeline.telemetry().registry.gather();
        let text = prometheus::TextEncoder::new().encode_to_string(&families).unwrap();
        // Not the time each was made at.
        (text.lines())
            .filter(|line| !line.starts_with("hatchet_run_metrics_config_last_reload_success"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `n` synthetic updates, a tenth of them bad.
    fn payloads(n: usize) -> Vec<Vec<u8>> {
        let profile = TrafficProfile {
            bad_message_ratio: 0.1,
            runs_per_second: 200.0,
            ..TrafficProfile::default()
        };
        let start = chrono::DateTime::from_timestamp(1_787_407_391, 0).unwrap();
        (SyntheticTraffic::new(&profile, start).take(n))
            .map(|m| m.payload)
            .collect()
    }

    /// The payloads as Kafka messages of two partitions, in turn.
    fn kafka_inputs(payloads: &[Vec<u8>]) -> Vec<Input<'_>> {
        (payloads.iter().enumerate())
            .map(|(i, payload)| Input {
                payload: Some(payload),
                origin: MessageOrigin::Kafka {
                    topic: "runs",
                    partition: (i % 2) as i32,
                    offset: (i / 2) as i64,
                },
                partition: Partition((i % 2) as u16),
            })
            .collect()
    }

    /// What `run` gives for `items` in batches of `size`, one result per item, in order.
    fn in_batches<T>(
        items: &[T],
        size: usize,
        mut run: impl FnMut(&[T], &mut Vec<Result<Applied, RejectReason>>),
    ) -> Vec<Result<Applied, RejectReason>> {
        let (mut results, mut all) = (Vec::new(), Vec::new());
        for chunk in items.chunks(size) {
            run(chunk, &mut results);
            all.extend(results.iter().copied());
        }
        all
    }

    /// A batch leaves exactly what its messages processed one at a time leave: the same results,
    /// the same aggregation (positions included) and the same self-metrics, with bad messages,
    /// redeliveries and two partitions among them.
    #[test]
    fn a_batch_counts_as_its_messages_one_by_one() {
        let mut payloads = payloads(1_000);
        // Redeliveries: the same updates again.
        payloads.extend(payloads[300..600].to_vec());
        let inputs = kafka_inputs(&payloads);
        let now = 1_787_407_391_000_000_000;
        let single = pipeline();
        let one_by_one: Vec<_> = (inputs.iter())
            .map(|input| single.process(input.payload, &input.origin, input.partition, now))
            .collect();
        assert!(one_by_one.iter().any(Result::is_err), "bad messages among them");
        assert!(one_by_one.contains(&Ok(Applied::Duplicate)), "redeliveries among them");
        // On one decoding thread as the source batches then (256), and on several (a batch split
        // in parts decoded together; an odd count leaves unequal parts).
        for (threads, size) in [(1, 256), (2, 1024), (3, 1000)] {
            let batched = pipeline().with_decode_threads(threads);
            assert_eq!(batched.decode_threads(), threads);
            let all = in_batches(&inputs, size, |chunk, results| {
                batched.process_batch(chunk, now, results)
            });
            assert_eq!(all, one_by_one, "{threads} decoding threads");
            assert_eq!(workflow_text(&batched), workflow_text(&single));
            assert_eq!(batched.aggregator().positions(), single.aggregator().positions());
            assert_eq!(telemetry_text(&batched), telemetry_text(&single));
        }
    }

    /// Restoring a batch rebuilds what restoring its messages one at a time rebuilds, on one
    /// decoding thread or several: the same results, the same windows, and the same outcomes
    /// remembered (their redelivery afterwards is told a duplicate alike).
    #[test]
    fn a_restored_batch_rebuilds_what_its_messages_one_by_one_rebuild() {
        let payloads = payloads(1_200);
        let now = 1_787_407_391_000_000_000;
        let inputs: Vec<RestoreInput> = (payloads.iter().enumerate())
            .map(|(i, payload)| RestoreInput {
                payload: Some(payload),
                partition: Partition((i % 2) as u16),
                message_nanos: now - 1_000_000_000 + i as i64,
            })
            .collect();
        let redelivered = kafka_inputs(&payloads);
        let single = pipeline();
        let one_by_one: Vec<_> = (inputs.iter())
            .map(|input| {
                let update = decode(input.payload, 1 << 20).map_err(|error| error.reason)?;
                Ok(single
                    .aggregator()
                    .restore(&update, input.partition, now, input.message_nanos))
            })
            .collect();
        assert!(one_by_one.iter().any(Result::is_err), "bad messages among them");
        let mut single_again = Vec::new();
        single.process_batch(&redelivered, now, &mut single_again);
        assert!(
            single_again.contains(&Ok(Applied::Duplicate)),
            "restored outcomes among them"
        );
        for (threads, size) in [(1, 256), (2, 1024)] {
            let batched = pipeline().with_decode_threads(threads);
            let all = in_batches(&inputs, size, |chunk, results| {
                batched.restore_batch(chunk, now, results)
            });
            assert_eq!(all, one_by_one, "{threads} decoding threads");
            let mut again = Vec::new();
            batched.process_batch(&redelivered, now, &mut again);
            assert_eq!(again, single_again, "{threads} decoding threads");
            assert_eq!(workflow_text(&batched), workflow_text(&single));
        }
    }
}
