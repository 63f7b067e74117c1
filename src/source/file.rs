//! Replaying a file of newline-delimited `V1WorkflowRun` documents through the same pipeline as
//! Kafka: one line, one message; blank lines are skipped.

use crate::events::{MessageOrigin, MessageProcessed};
use crate::ids::Partition;
use crate::pipeline::{now_nanos, Pipeline};
use std::io::BufRead;

/// Lines read, and how many of them were rejected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub messages: u64,
    pub rejected: u64,
}

/// Processes every non-blank line of `reader`; `name` stands for the file in logs and in the
/// `topic` label of the consumed counter (partition `0`).
pub fn replay(reader: impl BufRead, name: &str, pipeline: &Pipeline) -> std::io::Result<ReplaySummary> {
    let counter = pipeline.telemetry().consumed_counter(name, 0);
    let mut summary = ReplaySummary::default();
    let mut reader = reader;
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let origin = MessageOrigin::File {
            path: name,
            line: number,
        };
        summary.messages += 1;
        let now = now_nanos();
        if pipeline.process(Some(&line), &origin, Partition(0), now).is_err() {
            summary.rejected += 1;
        }
        MessageProcessed {
            counter: &counter,
            messages: 1,
            now_nanos: now,
        }
        .emit(pipeline.telemetry());
    }
    Ok(summary)
}
