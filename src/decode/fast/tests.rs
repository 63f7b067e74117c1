//! The fast path reads exactly what serde's path reads, or leaves the message to it.

use super::run;
use crate::ids::Uuid128;
use crate::model::V1WorkflowRun;
use crate::traffic::synthetic::{SyntheticTraffic, TrafficProfile};
use std::path::PathBuf;

/// What serde's path makes of a message (as `decode` calls it: objects only).
fn by_serde(text: &str) -> Option<String> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<V1WorkflowRun>(text)
        .ok()
        .map(|run| format!("{run:?}"))
}

/// Fails when the fast path accepts what serde refuses or reads it differently; says whether it
/// took the message.
fn agrees(text: &str) -> bool {
    let Some((fast, ids)) = run(text) else {
        return false;
    };
    assert_eq!(
        Some(format!("{fast:?}")),
        by_serde(text),
        "the paths differ on {text:?}"
    );
    // An id read as a UUID on the way is what parsing its text gives.
    for (known, text) in [
        (ids.run_id, &fast.metadata.id),
        (ids.tenant, &fast.tenant_id),
        (ids.workflow, &fast.workflow_id),
    ] {
        if known.is_some() {
            assert_eq!(known, Uuid128::parse(text), "{text:?}");
        }
    }
    true
}

fn examples() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/examples");
    let mut docs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|x| x == "json"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    docs.sort();
    docs
}

fn synthetic(n: usize, bad_ratio: f64) -> Vec<String> {
    let profile = TrafficProfile {
        workflows: 10,
        bad_message_ratio: bad_ratio,
        runs_per_second: 200.0,
        ..TrafficProfile::default()
    };
    let start = chrono::DateTime::from_timestamp(1_787_407_391, 0).unwrap();
    (SyntheticTraffic::new(&profile, start).take(n))
        .filter_map(|m| String::from_utf8(m.payload).ok())
        .collect()
}

#[test]
fn takes_every_valid_document_hatchet_writes_and_reads_it_as_serde_does() {
    let docs: Vec<String> = examples().into_iter().chain(synthetic(5_000, 0.0)).collect();
    for doc in &docs {
        assert!(agrees(doc), "the fast path refused a valid document: {doc}");
    }
    // Their tenant and workflow ids are UUIDs, read as such on the way.
    let read_as_uuids = |doc: &String| run(doc).is_some_and(|(_, ids)| ids.tenant.is_some() && ids.workflow.is_some());
    assert!(docs.iter().all(read_as_uuids));
}

#[test]
fn never_accepts_what_serde_refuses_in_bad_traffic() {
    let mut taken = 0;
    let docs = synthetic(5_000, 0.3);
    for doc in &docs {
        taken += usize::from(agrees(doc));
    }
    let valid = docs.iter().filter(|d| by_serde(d).is_some()).count();
    assert_eq!(taken, valid, "every valid one taken");
    assert!(valid < docs.len(), "the stream has bad messages");
}

/// Every document cut short, and with bytes replaced by JSON's structural characters, escapes,
/// control characters and digits: never accepted unless serde accepts it the same way.
#[test]
fn corrupted_documents_are_refused_or_read_as_serde_reads_them() {
    let replacements: [&[u8]; 14] = [
        b"\"", b"\\", b"{", b"}", b"[", b"]", b",", b":", b" ", b"0", b"n", b"\x01", b"\\u00e9", b"-",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    };
    let (mut tried, mut taken) = (0, 0);
    for doc in examples().into_iter().chain(synthetic(300, 0.0)) {
        let bytes = doc.as_bytes();
        for cut in (0..bytes.len()).step_by(7) {
            if let Ok(text) = std::str::from_utf8(&bytes[..cut]) {
                assert!(!agrees(text), "a cut document was taken: {text:?}");
            }
        }
        for _ in 0..200 {
            let at = next(bytes.len());
            let with = replacements[next(replacements.len())];
            let mut changed = bytes[..at].to_vec();
            changed.extend_from_slice(with);
            changed.extend_from_slice(&bytes[at + 1..]);
            if let Ok(text) = String::from_utf8(changed) {
                tried += 1;
                taken += usize::from(agrees(&text));
            }
        }
    }
    assert!(tried > 10_000 && taken > 0 && taken < tried, "{taken} of {tried}");
}

const META: &str = r#""metadata":{"id":"r1","createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11Z"}"#;

fn doc(fields: &str) -> String {
    format!(r#"{{{META},"status":"RUNNING","tenantId":"t","displayName":"x-1","workflowId":"w"{fields}}}"#)
}

#[test]
fn escapes_numbers_nesting_and_whitespace() {
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let taken = [
        doc(r#","errorMessage":"line one\nline \"two\" \u00e9 \ud83d\ude00 \/""#),
        doc(r#","input":{"a":[1,-2.5e-3,true,false,null,"\u0000",{"b":{}}],"c":[]},"x":-0"#),
        doc(r#","duration":-9223372036854775808"#),
        doc(r#","duration":0,"payloadsRestricted":true,"output":null,"errorMessage":null"#),
        doc(&format!(r#","unknown":{}"#, deep(128))),
        format!(" \n\t{} \r\n", doc(r#" , "startedAt" : "0001-01-01T00:00:00Z" "#)),
        doc(r#","startedAt":"2026-08-22T14:03:11.123456789-05:00","finishedAt":null"#),
    ];
    for text in taken {
        assert!(agrees(&text), "refused: {text}");
    }
    let left_to_serde = [
        doc(r#","duration":9223372036854775808"#),
        doc(r#","duration":1.0"#),
        doc(r#","duration":01"#),
        doc(r#","errorMessage":"\ud83d""#),
        doc(r#","errorMessage":"\q""#),
        doc(r#","tenantId":"again""#),
        doc(r#","input":{"a":1,}"#),
        doc(r#","input":[1 2]"#),
        doc(r#","input":"tab	inside""#),
        doc(&format!(r#","unknown":{}"#, deep(129))),
        doc(r#","status":"RUNN\u0049NG""#),
        doc(r#","startedAt":"2026-02-30T00:00:00Z""#),
        format!("{} x", doc("")),
        doc(r#","input":{"a":nul}"#),
    ];
    for text in left_to_serde {
        assert!(!agrees(&text), "taken: {text}");
    }
}

#[test]
fn timestamps_are_read_in_place_or_left_to_serde() {
    let with_meta = |meta: &str, fields: &str| {
        format!(
            r#"{{"metadata":{{{meta}}},"status":"RUNNING","tenantId":"t","displayName":"x","workflowId":"w"{fields}}}"#
        )
    };
    let taken = [
        // updatedAt differs from createdAt, in length too; and comes first.
        with_meta(
            r#""id":"r1","createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11.5+02:00""#,
            "",
        ),
        with_meta(
            r#""id":"r1","createdAt":"2026-08-22T14:03:11.5Z","updatedAt":"2026-08-22T14:03:11Z""#,
            "",
        ),
        with_meta(
            r#""updatedAt":"2026-08-22T14:03:12Z","id":"r1","createdAt":"2026-08-22T14:03:11Z""#,
            "",
        ),
        doc(r#","createdAt":"2026-08-22t14:03:11z","finishedAt":"0001-01-01T00:00:00+00:00""#),
    ];
    for text in taken {
        assert!(agrees(&text), "refused: {text}");
    }
    let left_to_serde = [
        // An escape in a timestamp: serde unescapes it (and then takes it).
        doc(r#","startedAt":"2026-08-22T14:03:11\u002e5Z""#),
        with_meta(
            r#""id":"r1","createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11\u005a""#,
            "",
        ),
        // More than a timestamp between the quotes.
        doc(r#","startedAt":"2026-08-22T14:03:11Zx""#),
        with_meta(
            r#""id":"r1","createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11Z ""#,
            "",
        ),
        doc(r#","startedAt":"2026-08-22T14:03:11+05:00:00""#),
        doc(r#","startedAt":"2026-08-22T14:03:11+05""#),
    ];
    for text in left_to_serde {
        assert!(!agrees(&text), "taken: {text}");
    }
}
