//! One Kafka message's bytes -> one validated update, or a typed reason why not.
//!
//! The hot path is a single borrowing `serde_json` pass into the model (no `Value` tree, the opaque
//! `input`/`output`/`additionalMetadata` kept as raw text) followed by cheap checks. Only when that
//! pass fails do we re-read the message slowly to say *why* ([`classify`]): rejections are rare, so
//! their cost does not matter, while the error type on the hot path stays a small `Copy` value plus
//! a detail string built only for rejected messages.

use crate::model::{V1TaskStatus, V1WorkflowRun};
use serde_json::Value;
use std::fmt;

/// Why a message was rejected. A small fixed set: each is a value of the `reason` label of
/// `hatchet_run_metrics_rejected_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// A message without payload (a tombstone) or with an empty one.
    Empty,
    /// Larger than `kafka.max_message_bytes`; not parsed at all.
    TooLarge,
    /// Not valid JSON (including invalid UTF-8).
    InvalidJson,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A required field is absent.
    MissingField,
    /// A field is present with the wrong type or an invalid value.
    InvalidField,
    /// `status` is a string but not one of the five `V1TaskStatus` values.
    UnknownStatus,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Empty,
        RejectReason::TooLarge,
        RejectReason::InvalidJson,
        RejectReason::NotAnObject,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::UnknownStatus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Empty => "empty",
            RejectReason::TooLarge => "too_large",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::UnknownStatus => "unknown_status",
        }
    }
}

/// A rejected message: the reason (a metric label) and a human detail (a log field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct DecodeError {
    pub reason: RejectReason,
    pub detail: String,
}

impl DecodeError {
    fn new(reason: RejectReason, detail: impl fmt::Display) -> DecodeError {
        DecodeError {
            reason,
            detail: detail.to_string(),
        }
    }
}

/// Hexadecimal digit values; `0x80` marks a byte that is not one.
const HEX: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// A UUID as 128 bits: the cheap, allocation-free key for tenants and workflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid128(pub u128);

impl Uuid128 {
    /// Parses the canonical 8-4-4-4-12 hexadecimal form (either case).
    pub fn parse(text: &str) -> Option<Uuid128> {
        let b = text.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        let mut value: u128 = 0;
        let mut invalid = 0u8;
        for &c in b[0..8]
            .iter()
            .chain(&b[9..13])
            .chain(&b[14..18])
            .chain(&b[19..23])
            .chain(&b[24..36])
        {
            let nibble = HEX[usize::from(c)];
            invalid |= nibble;
            value = (value << 4) | u128::from(nibble & 0x0f);
        }
        (invalid & 0x80 == 0).then_some(Uuid128(value))
    }
}

/// A run's identity for remembering outcomes: the UUID's bits when `metadata.id` is a UUID (it
/// always is from Hatchet), else a 128-bit hash of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunKey(pub u128);

impl RunKey {
    pub fn of(id: &str) -> RunKey {
        match Uuid128::parse(id) {
            Some(uuid) => RunKey(uuid.0),
            None => {
                use std::hash::{BuildHasher, Hasher};
                // Fixed keys: one id gives one key for the life of the process (nothing is persisted).
                let hash = |seed: u64| {
                    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                        .build_hasher();
                    h.write_u64(seed);
                    h.write(id.as_bytes());
                    h.finish()
                };
                RunKey((u128::from(hash(0x68617463)) << 64) | u128::from(hash(0x72756e73)))
            }
        }
    }
}

/// A message that passed validation, with the keys the aggregation needs already extracted.
#[derive(Debug, Clone)]
pub struct RunUpdate<'a> {
    pub run: V1WorkflowRun<'a>,
    pub tenant: Uuid128,
    pub workflow: Uuid128,
    pub run_key: RunKey,
}

/// Decodes and validates one message payload. `max_bytes` is the size limit (`too_large` above it).
pub fn decode(payload: Option<&[u8]>, max_bytes: usize) -> Result<RunUpdate<'_>, DecodeError> {
    let bytes = match payload {
        None | Some([]) => return Err(DecodeError::new(RejectReason::Empty, "message has no payload")),
        Some(b) => b,
    };
    if bytes.len() > max_bytes {
        return Err(DecodeError::new(
            RejectReason::TooLarge,
            format_args!("{} bytes, limit {max_bytes}", bytes.len()),
        ));
    }
    // One UTF-8 check of the whole message is cheaper than serde_json's check of every string it
    // borrows from a byte slice.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| DecodeError::new(RejectReason::InvalidJson, format_args!("not UTF-8: {e}")))?;
    // Serde would also read a struct from a JSON array, by position: only objects are runs.
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(classify(bytes, None));
    }
    let run: V1WorkflowRun = match serde_json::from_str(text) {
        Ok(run) => run,
        Err(error) => return Err(classify(bytes, Some(&error))),
    };
    validate(run)
}

/// Checks the rules the contract states beyond JSON types.
fn validate(run: V1WorkflowRun<'_>) -> Result<RunUpdate<'_>, DecodeError> {
    if run.metadata.id.is_empty() {
        return Err(DecodeError::new(RejectReason::InvalidField, "metadata.id is empty"));
    }
    let tenant = Uuid128::parse(&run.tenant_id).ok_or_else(|| {
        DecodeError::new(
            RejectReason::InvalidField,
            format_args!("tenantId {:?} is not a UUID", run.tenant_id),
        )
    })?;
    let workflow = Uuid128::parse(&run.workflow_id).ok_or_else(|| {
        DecodeError::new(
            RejectReason::InvalidField,
            format_args!("workflowId {:?} is not a UUID", run.workflow_id),
        )
    })?;
    for (name, raw) in [
        ("input", run.input),
        ("output", run.output),
        ("additionalMetadata", run.additional_metadata),
    ] {
        if raw.is_some_and(|raw| !raw.get().starts_with('{')) {
            return Err(DecodeError::new(
                RejectReason::InvalidField,
                format_args!("{name} is not an object"),
            ));
        }
    }
    let run_key = RunKey::of(&run.metadata.id);
    Ok(RunUpdate {
        run,
        tenant,
        workflow,
        run_key,
    })
}

/// What a field must hold, for the slow second look at a message the fast pass refused.
#[derive(Clone, Copy)]
enum Expect {
    String,
    Timestamp,
    Integer,
    Bool,
    /// An object; `null` allowed (meaning `{}`).
    Object,
    Status,
    Meta,
}

/// Every field of the contract, in the order a rejection reports them. `true` marks required ones.
const FIELDS: [(&str, Expect, bool); 16] = [
    ("metadata", Expect::Meta, true),
    ("status", Expect::Status, true),
    ("tenantId", Expect::String, true),
    ("workflowId", Expect::String, true),
    ("displayName", Expect::String, true),
    ("startedAt", Expect::Timestamp, false),
    ("finishedAt", Expect::Timestamp, false),
    ("createdAt", Expect::Timestamp, false),
    ("duration", Expect::Integer, false),
    ("input", Expect::Object, false),
    ("output", Expect::Object, false),
    ("additionalMetadata", Expect::Object, false),
    ("errorMessage", Expect::String, false),
    ("workflowVersionId", Expect::String, false),
    ("parentTaskExternalId", Expect::String, false),
    ("payloadsRestricted", Expect::Bool, false),
];

/// Finds why the fast pass refused a message. Cold path: builds a `Value` tree on purpose.
fn classify(bytes: &[u8], fast_error: Option<&serde_json::Error>) -> DecodeError {
    let doc: Value = match serde_json::from_slice(bytes) {
        Ok(doc) => doc,
        Err(e) => return DecodeError::new(RejectReason::InvalidJson, e),
    };
    let Some(object) = doc.as_object() else {
        return DecodeError::new(RejectReason::NotAnObject, format_args!("top level is {}", kind(&doc)));
    };
    for (name, expect, required) in FIELDS {
        let problem = match object.get(name) {
            None if required => Some(DecodeError::new(
                RejectReason::MissingField,
                format_args!("{name} is missing"),
            )),
            None => None,
            Some(Value::Null) if !required => None,
            Some(value) => check(name, expect, value),
        };
        if let Some(problem) = problem {
            return problem;
        }
    }
    // Serde refused something this table does not describe (a duplicate key, say): say what it said.
    match fast_error {
        Some(error) => DecodeError::new(RejectReason::InvalidField, error),
        None => DecodeError::new(RejectReason::InvalidField, "refused"),
    }
}

fn check(name: &str, expect: Expect, value: &Value) -> Option<DecodeError> {
    let wrong = |what: &str| {
        Some(DecodeError::new(
            RejectReason::InvalidField,
            format_args!("{name} must be {what}, found {}", kind(value)),
        ))
    };
    match expect {
        Expect::String => (!value.is_string()).then(|| wrong("a string")).flatten(),
        Expect::Bool => (!value.is_boolean()).then(|| wrong("a boolean")).flatten(),
        Expect::Integer => (value.as_i64().is_none()).then(|| wrong("an integer")).flatten(),
        Expect::Object => (!value.is_object()).then(|| wrong("an object")).flatten(),
        Expect::Timestamp => match value.as_str() {
            None => wrong("an RFC 3339 timestamp"),
            Some(text) => crate::model::timestamp::parse_rfc3339(text).is_none().then(|| {
                DecodeError::new(
                    RejectReason::InvalidField,
                    format_args!("{name} {text:?} is not an RFC 3339 timestamp"),
                )
            }),
        },
        Expect::Status => match value.as_str() {
            None => wrong("a string"),
            Some(text) => V1TaskStatus::from_wire(text).is_none().then(|| {
                DecodeError::new(
                    RejectReason::UnknownStatus,
                    format_args!("status {text:?} is not a V1TaskStatus"),
                )
            }),
        },
        Expect::Meta => {
            let Some(meta) = value.as_object() else {
                return wrong("an object");
            };
            for (key, expect) in [
                ("id", Expect::String),
                ("createdAt", Expect::Timestamp),
                ("updatedAt", Expect::Timestamp),
            ] {
                let problem = match meta.get(key) {
                    None => Some(DecodeError::new(
                        RejectReason::MissingField,
                        format_args!("metadata.{key} is missing"),
                    )),
                    Some(v) => check(key, expect, v).map(|mut e| {
                        e.detail = format!("metadata.{}", e.detail);
                        e
                    }),
                };
                if problem.is_some() {
                    return problem;
                }
            }
            None
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn base() -> Value {
        serde_json::from_str(include_str!("../tests/data/examples/failed-task-run.json")).unwrap()
    }

    fn decode_value(doc: &Value) -> Result<RunUpdate<'static>, DecodeError> {
        let bytes: &'static [u8] = Box::leak(serde_json::to_vec(doc).unwrap().into_boxed_slice());
        decode(Some(bytes), LIMIT)
    }

    fn reason_of(doc: &Value) -> RejectReason {
        decode_value(doc).expect_err("should be rejected").reason
    }

    fn with(key: &str, value: Value) -> Value {
        let mut doc = base();
        doc[key] = value;
        doc
    }

    fn without(path: &[&str]) -> Value {
        let mut doc = base();
        let (last, parents) = path.split_last().unwrap();
        let mut cursor = &mut doc;
        for p in parents {
            cursor = &mut cursor[*p];
        }
        cursor.as_object_mut().unwrap().remove(*last);
        doc
    }

    #[test]
    fn accepts_every_example() {
        for name in [
            "cancelled-while-queued-run",
            "completed-dag-run",
            "failed-task-run",
            "queued-dag-run",
            "running-dag-run",
        ] {
            let text = std::fs::read(format!(
                "{}/tests/data/examples/{name}.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            let update = decode(Some(&text), LIMIT).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                update.tenant,
                Uuid128::parse("707d0855-80ab-4e1f-a156-f1c4546cbf52").unwrap()
            );
        }
    }

    #[test]
    fn payload_level_rejections() {
        assert_eq!(decode(None, LIMIT).unwrap_err().reason, RejectReason::Empty);
        assert_eq!(decode(Some(b""), LIMIT).unwrap_err().reason, RejectReason::Empty);
        assert_eq!(decode(Some(b"{}"), 1).unwrap_err().reason, RejectReason::TooLarge);
        for bad in [
            &b"{"[..],
            b"not json",
            b"{\"metadata\": }",
            b"\xff\xfe",
            b"{\"status\":\"RUNNING\"} trailing",
        ] {
            assert_eq!(
                decode(Some(bad), LIMIT).unwrap_err().reason,
                RejectReason::InvalidJson,
                "{bad:?}"
            );
        }
        let as_array = br#"[{"id":"r1","createdAt":"2026-08-22T14:00:00Z","updatedAt":"2026-08-22T14:00:00Z"},
            "FAILED",null,"2026-08-22T14:00:05Z",null,"707d0855-80ab-4e1f-a156-f1c4546cbf52",null,"x-1",
            "707d0855-80ab-4e1f-a156-f1c4546cbf52"]"#;
        for bad in [&b"[1,2]"[..], b"\"text\"", b"42", b"null", b"true", b"  [] ", as_array] {
            assert_eq!(
                decode(Some(bad), LIMIT).unwrap_err().reason,
                RejectReason::NotAnObject,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_required_fields() {
        for path in [
            &["metadata"][..],
            &["status"],
            &["tenantId"],
            &["workflowId"],
            &["displayName"],
            &["metadata", "id"],
            &["metadata", "createdAt"],
            &["metadata", "updatedAt"],
        ] {
            let err = decode_value(&without(path)).expect_err("rejected");
            assert_eq!(err.reason, RejectReason::MissingField, "{path:?}: {err}");
            assert!(err.detail.contains(path.last().unwrap()), "{path:?}: {err}");
        }
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        for key in [
            "startedAt",
            "finishedAt",
            "createdAt",
            "duration",
            "input",
            "output",
            "additionalMetadata",
            "errorMessage",
            "workflowVersionId",
        ] {
            decode_value(&without(&[key])).unwrap_or_else(|e| panic!("without {key}: {e}"));
            decode_value(&with(key, Value::Null)).unwrap_or_else(|e| panic!("{key} null: {e}"));
        }
    }

    #[test]
    fn wrongly_typed_fields() {
        use serde_json::json;
        for (key, value) in [
            ("status", json!(3)),
            ("status", json!({"COMPLETED": null})),
            ("status", json!(["COMPLETED"])),
            ("tenantId", json!(42)),
            ("tenantId", json!("not-a-uuid")),
            ("workflowId", json!("3e9d1f70-8a2b-4c6d-9e0f-1a2b3c4d5e6")),
            ("workflowId", json!("3e9d1f70-8a2b-4c6d-9e0f-1a2b3c4d5e6g")),
            ("displayName", json!(["x"])),
            ("startedAt", json!("yesterday")),
            ("startedAt", json!(1787407391482_i64)),
            ("finishedAt", json!("2026-08-22 14:11:03Z")),
            ("createdAt", json!("2026-08-22T14:10:32")),
            ("duration", json!("30005")),
            ("duration", json!(1.5)),
            ("duration", json!(1e30)),
            ("input", json!([1])),
            ("output", json!("done")),
            ("additionalMetadata", json!("k=v")),
            ("errorMessage", json!(false)),
            ("payloadsRestricted", json!("yes")),
            ("metadata", json!("r1")),
            (
                "metadata",
                json!({"id": 1, "createdAt": "2026-08-22T14:10:02Z", "updatedAt": "2026-08-22T14:10:02Z"}),
            ),
            (
                "metadata",
                json!({"id": "", "createdAt": "2026-08-22T14:10:02Z", "updatedAt": "2026-08-22T14:10:02Z"}),
            ),
            (
                "metadata",
                json!({"id": "r", "createdAt": "soon", "updatedAt": "2026-08-22T14:10:02Z"}),
            ),
        ] {
            let err = decode_value(&with(key, value.clone())).expect_err("rejected");
            assert_eq!(err.reason, RejectReason::InvalidField, "{key}={value}: {err}");
        }
    }

    #[test]
    fn unknown_status_is_its_own_reason() {
        for status in ["PAUSED", "CANCELED", "completed", ""] {
            assert_eq!(
                reason_of(&with("status", Value::from(status))),
                RejectReason::UnknownStatus,
                "{status}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_any_offset_accepted() {
        let mut doc = with("somethingAdded", serde_json::json!({"nested": [1, {"a": null}]}));
        doc["finishedAt"] = Value::from("2026-08-22T09:11:03.219873-05:00");
        doc["startedAt"] = Value::from("2026-08-22T19:40:33.2143+05:30");
        doc["payloadsRestricted"] = Value::from(true);
        let update = decode_value(&doc).unwrap();
        assert_eq!(update.run.status, V1TaskStatus::Failed);
    }

    #[test]
    fn escaped_strings_are_read() {
        let doc = with("displayName", Value::from("caf\u{e9} \"quoted\"\\-1787407802117"));
        let update = decode_value(&doc).unwrap();
        assert_eq!(update.run.display_name, "caf\u{e9} \"quoted\"\\-1787407802117");
    }

    #[test]
    fn non_uuid_run_ids_get_stable_distinct_keys() {
        assert_eq!(RunKey::of("run-a"), RunKey::of("run-a"));
        assert_ne!(RunKey::of("run-a"), RunKey::of("run-b"));
        assert_eq!(
            RunKey::of("5f0a9c6e-2a51-4b8e-9a57-3c1d2f7b8e01"),
            RunKey::of("5F0A9C6E-2A51-4B8E-9A57-3C1D2F7B8E01")
        );
    }

    /// Random byte edits of real documents: decoding never panics, and whatever it accepts really
    /// is an object with the required fields, of the right types.
    #[test]
    fn mutated_documents_never_panic_and_acceptance_is_sound() {
        let docs: Vec<Vec<u8>> = ["completed-dag-run", "failed-task-run", "cancelled-while-queued-run"]
            .iter()
            .map(|n| std::fs::read(format!("{}/tests/data/examples/{n}.json", env!("CARGO_MANIFEST_DIR"))).unwrap())
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}[]\":,0123456789-.eEtrufalsn TZ+\\u\xff";
        let (mut accepted, mut rejected) = (0, 0);
        for i in 0..30_000 {
            let mut doc = docs[i % docs.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % doc.len();
                match next() % 3 {
                    0 => doc[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        doc.remove(at);
                    }
                    _ => doc.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            match decode(Some(&doc), LIMIT) {
                Ok(update) => {
                    accepted += 1;
                    let value: Value = serde_json::from_slice(&doc).expect("accepted means valid JSON");
                    assert!(value.is_object());
                    for key in ["metadata", "status", "tenantId", "workflowId", "displayName"] {
                        assert!(
                            value.get(key).is_some(),
                            "accepted without {key}: {}",
                            String::from_utf8_lossy(&doc)
                        );
                    }
                    assert!(V1TaskStatus::from_wire(value["status"].as_str().unwrap()).is_some());
                    assert!(Uuid128::parse(value["tenantId"].as_str().unwrap()) == Some(update.tenant));
                }
                Err(error) => {
                    rejected += 1;
                    assert!(!error.detail.is_empty());
                    // The reason agrees with what the bytes are.
                    let fits = match serde_json::from_slice::<Value>(&doc) {
                        Err(_) => error.reason == RejectReason::InvalidJson,
                        Ok(Value::Object(_)) => matches!(
                            error.reason,
                            RejectReason::MissingField | RejectReason::InvalidField | RejectReason::UnknownStatus
                        ),
                        Ok(_) => error.reason == RejectReason::NotAnObject,
                    };
                    assert!(fits, "{error}: {}", String::from_utf8_lossy(&doc));
                }
            }
        }
        assert!(
            accepted > 1000 && rejected > 1000,
            "accepted {accepted}, rejected {rejected}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_a_reason() {
        let text = br#"{"metadata":{"id":"r","createdAt":"2026-08-22T14:10:02Z","updatedAt":"2026-08-22T14:10:02Z"},
            "status":"FAILED","status":"COMPLETED","tenantId":"707d0855-80ab-4e1f-a156-f1c4546cbf52",
            "workflowId":"707d0855-80ab-4e1f-a156-f1c4546cbf52","displayName":"x"}"#;
        let err = decode(Some(text), LIMIT).unwrap_err();
        assert_eq!(err.reason, RejectReason::InvalidField);
        assert!(err.detail.contains("duplicate"), "{err}");
    }
}
