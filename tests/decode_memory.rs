//! What a rejected message costs in memory: finding why a large message is refused must cost about
//! what decoding it does, not a tree of the whole document (which once took a 16 MB message to
//! hundreds of MiB and got the service OOM-killed).
//!
//! A binary of its own because it counts every allocation of the process through a
//! `#[global_allocator]`; its one test runs the cases one after another so that nothing else
//! allocates meanwhile.

use hatchet_run_metrics::decode::{decode, RejectReason};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    /// Counted as a new block then the old one freed: a moving realloc holds both for a moment.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(ptr, layout, new_size);
        if !moved.is_null() {
            grew(new_size);
            shrank(layout.size());
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most memory `decode` held at once beyond what was live before it, and its rejection reason.
fn peak_extra_bytes(message: &[u8]) -> (usize, Option<RejectReason>) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let reason = decode(Some(message), usize::MAX).err().map(|e| e.reason);
    (PEAK.load(Ordering::Relaxed) - before, reason)
}

const TARGET_BYTES: usize = 16 << 20;

/// An `input` of many small objects, about `TARGET_BYTES` long: cheap as text, dear as a tree.
fn huge_input() -> String {
    let mut input = String::with_capacity(TARGET_BYTES + 256);
    input.push_str("{\"user_id\":42,\"items\":[");
    let mut k = 0;
    while input.len() < TARGET_BYTES {
        if k > 0 {
            input.push(',');
        }
        input.push_str(&format!(
            "{{\"id\":{k},\"name\":\"item-{k:07}\",\"tags\":[\"a\",\"b\"],\"ok\":true,\"score\":0.5}}"
        ));
        k += 1;
    }
    input.push_str("]}");
    input
}

const META: &str = r#"{"id":"5f0a9c6e-2a51-4b8e-9a57-3c1d2f7b8e01","createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11Z"}"#;
const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";

/// A run with `input` first, then `status` (when given), `extra` fields, `metadata`, and `tail`
/// verbatim (the document's last bytes).
fn run_with(input: &str, status: Option<&str>, extra: &str, metadata: &str, tail: &str) -> Vec<u8> {
    let status = status.map_or(String::new(), |s| format!("\"status\":\"{s}\","));
    format!(
        "{{\"input\":{input},{status}\"tenantId\":\"{TENANT}\",\"workflowId\":\"{TENANT}\",\
         \"displayName\":\"big-1787407391482\"{extra},\"metadata\":{metadata}{tail}"
    )
    .into_bytes()
}

#[test]
fn rejecting_a_huge_message_costs_about_the_message_at_most() {
    let input = huge_input();
    let wrong_meta = r#"{"id":"r","createdAt":5,"updatedAt":"2026-08-22T14:03:11Z"}"#;
    let cases = [
        (
            "without status",
            run_with(&input, None, "", META, "}"),
            RejectReason::MissingField,
        ),
        (
            "a wrong type after the huge input",
            run_with(&input, Some("RUNNING"), ",\"duration\":\"30005\"", META, "}"),
            RejectReason::InvalidField,
        ),
        (
            "a wrong type inside metadata after the huge input",
            run_with(&input, Some("RUNNING"), "", wrong_meta, "}"),
            RejectReason::InvalidField,
        ),
        (
            "invalid JSON at the very end",
            run_with(&input, Some("RUNNING"), "", META, ""),
            RejectReason::InvalidJson,
        ),
        (
            "an unknown status",
            run_with(&input, Some("PAUSED"), "", META, "}"),
            RejectReason::UnknownStatus,
        ),
        ("an array", format!("[{input}]").into_bytes(), RejectReason::NotAnObject),
    ];
    drop(input);
    for (what, message, expected) in cases {
        let (extra, reason) = peak_extra_bytes(&message);
        assert_eq!(reason, Some(expected), "{what}");
        let bound = message.len() / 5 * 6 + (1 << 20);
        assert!(
            extra < bound,
            "{what}: rejecting {} bytes took {extra} bytes more at the peak (bound {bound})",
            message.len()
        );
        println!("{what}: {} bytes, peak extra {extra} bytes", message.len());
    }
}
