//! One Kafka message's bytes -> one validated update, or a typed reason why not.
//!
//! The hot path is a single borrowing pass into the model (no `Value` tree, the opaque
//! `input`/`output`/`additionalMetadata` kept as raw text) followed by cheap checks: a scanner
//! made for this one document shape (`fast`), with `serde_json` reading whatever it is unsure of. Only when that
//! pass fails do we read the message a second time to say *why* (`classify`): rejections are
//! rare, so that time does not matter, but their memory does (anyone who can produce to the topic
//! chooses them), so the second look streams too and keeps nothing but a verdict per field. The
//! error type on the hot path stays a small `Copy` value plus a detail string built only for
//! rejected messages, short whatever the message holds: a detail quotes at most the start of a
//! value and never exceeds [`MAX_DETAIL_BYTES`].

use crate::ids::{RunKey, Uuid128};
use crate::model::{V1TaskStatus, V1WorkflowRun};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

mod fast;

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
    /// The detail is cut at [`MAX_DETAIL_BYTES`] as it is written: whatever it quotes (serde_json's
    /// own messages quote values too), a rejection's log line stays short.
    fn new(reason: RejectReason, detail: impl fmt::Display) -> DecodeError {
        let mut capped = CappedText(String::new());
        if fmt::write(&mut capped, format_args!("{detail}")).is_err() {
            capped.0.push_str(CUT_MARK);
        }
        DecodeError {
            reason,
            detail: capped.0,
        }
    }
}

/// The most a rejection's detail holds, in bytes (a log field: the log's rate limit counts lines).
pub const MAX_DETAIL_BYTES: usize = 512;

/// How many characters of a message's own text a detail quotes.
const QUOTED_CHARS: usize = 64;

/// Ends a detail that was cut at [`MAX_DETAIL_BYTES`].
const CUT_MARK: &str = "... (cut)";

/// Text that refuses to grow past [`MAX_DETAIL_BYTES`] (less room for [`CUT_MARK`]): the write
/// that would pass it is cut at a char boundary and fails, which ends the formatting early.
struct CappedText(String);

impl fmt::Write for CappedText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = (MAX_DETAIL_BYTES - CUT_MARK.len()).saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.0.push_str(&s[..cut]);
        Err(fmt::Error)
    }
}

/// Message text as a detail quotes it: in quotes and escaped like `{:?}`, and past
/// [`QUOTED_CHARS`] characters only its start, with its full length.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0.char_indices().nth(QUOTED_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// A message that passed validation, with the keys the aggregation needs already extracted.
#[derive(Debug, Clone)]
pub struct RunUpdate<'a> {
    pub run: V1WorkflowRun<'a>,
    pub tenant: Uuid128,
    pub workflow: Uuid128,
    /// `metadata.id` as a UUID (as Hatchet writes it); `None` for any other text.
    pub run_id: Option<Uuid128>,
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
    // borrows from a byte slice (and, measured on these sizes, than simdutf8's).
    let text = std::str::from_utf8(bytes)
        .map_err(|e| DecodeError::new(RejectReason::InvalidJson, format_args!("not UTF-8: {e}")))?;
    // Serde would also read a struct from a JSON array, by position: only objects are runs.
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(classify(bytes, None));
    }
    // The fast path reads what Hatchet writes; whatever it is unsure of, serde reads (and
    // explains when it refuses).
    if let Some((run, ids)) = fast::run(text) {
        return validate(run, ids);
    }
    match serde_json::from_str(text) {
        Ok(run) => validate(run, fast::KnownIds::default()),
        Err(error) => Err(classify(bytes, Some(&error))),
    }
}

/// Checks the rules the contract states beyond JSON types.
/// `ids`: those already read as UUIDs (the same as [`Uuid128::parse`] of their text).
fn validate(run: V1WorkflowRun<'_>, ids: fast::KnownIds) -> Result<RunUpdate<'_>, DecodeError> {
    if run.metadata.id.is_empty() {
        return Err(DecodeError::new(RejectReason::InvalidField, "metadata.id is empty"));
    }
    let tenant = ids.tenant.or_else(|| Uuid128::parse(&run.tenant_id)).ok_or_else(|| {
        DecodeError::new(
            RejectReason::InvalidField,
            format_args!("tenantId {} is not a UUID", Quoted(&run.tenant_id)),
        )
    })?;
    let workflow = ids
        .workflow
        .or_else(|| Uuid128::parse(&run.workflow_id))
        .ok_or_else(|| {
            DecodeError::new(
                RejectReason::InvalidField,
                format_args!("workflowId {} is not a UUID", Quoted(&run.workflow_id)),
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
    let run_id = ids.run_id.or_else(|| Uuid128::parse(&run.metadata.id));
    let run_key = run_id.map_or_else(|| RunKey::of(&run.metadata.id), |id| RunKey(id.0));
    Ok(RunUpdate {
        run,
        tenant,
        workflow,
        run_id,
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

/// The fields of `metadata`, all required, as a rejection names them.
const META_FIELDS: [(&str, &str, Expect); 3] = [
    ("id", "metadata.id", Expect::String),
    ("createdAt", "metadata.createdAt", Expect::Timestamp),
    ("updatedAt", "metadata.updatedAt", Expect::Timestamp),
];

/// Finds why the fast pass refused a message, in one streaming pass that keeps nothing of the
/// message but a verdict per known field: a rejected message must cost no more memory than an
/// accepted one (a `Value` tree of a large `input` costs many times the message).
///
/// The verdicts are those a whole-document look would give: invalid JSON anywhere wins, then the
/// first field of [`FIELDS`] at fault (the last occurrence of a repeated key counts).
fn classify(bytes: &[u8], fast_error: Option<&serde_json::Error>) -> DecodeError {
    use serde::Deserialize;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let look = Look::deserialize(&mut deserializer).and_then(|look| deserializer.end().map(|()| look));
    let fields = match look {
        Err(e) => return DecodeError::new(RejectReason::InvalidJson, e),
        Ok(Look::NotAnObject(kind)) => {
            return DecodeError::new(
                RejectReason::NotAnObject,
                format_args!("top level is {}", kind.as_str()),
            )
        }
        Ok(Look::Object(fields)) => fields,
    };
    for ((name, _, required), verdict) in FIELDS.into_iter().zip(*fields) {
        match verdict {
            Verdict::Absent if required => {
                return DecodeError::new(RejectReason::MissingField, format_args!("{name} is missing"))
            }
            Verdict::Wrong(problem) => return problem,
            Verdict::Absent | Verdict::Fine => {}
        }
    }
    // Serde refused something this table does not describe (a duplicate key, say): say what it said.
    match fast_error {
        Some(error) => DecodeError::new(RejectReason::InvalidField, error),
        None => DecodeError::new(RejectReason::InvalidField, "refused"),
    }
}

/// What the second look found at the top level.
enum Look {
    /// A verdict for each of [`FIELDS`], in its order.
    Object(Box<[Verdict; FIELDS.len()]>),
    NotAnObject(Kind),
}

/// One field, as the second look judged it.
enum Verdict {
    Absent,
    Fine,
    Wrong(DecodeError),
}

/// The kind of a JSON value, as a rejection names it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    /// A number that fits an `i64`.
    Integer,
    /// Any other number.
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Integer | Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

impl<'de> serde::Deserialize<'de> for Look {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Look, D::Error> {
        struct LookVisitor;
        impl<'de> Visitor<'de> for LookVisitor {
            type Value = Look;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Look, A::Error> {
                let names = FIELDS.map(|(name, _, _)| name);
                let mut verdicts = Box::new([const { Verdict::Absent }; FIELDS.len()]);
                while let Some(at) = map.next_key_seed(FieldName(&names))? {
                    match at {
                        Some(at) => {
                            let (name, expect, required) = FIELDS[at];
                            verdicts[at] = map.next_value_seed(Check { name, expect, required })?;
                        }
                        None => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(Look::Object(verdicts))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Look, A::Error> {
                Skip::visit_seq(Skip, seq)?;
                Ok(Look::NotAnObject(Kind::Array))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Look, E> {
                Ok(Look::NotAnObject(Kind::Null))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Look, E> {
                Ok(Look::NotAnObject(Kind::Bool))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Look, E> {
                Ok(Look::NotAnObject(Kind::Number))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Look, E> {
                Ok(Look::NotAnObject(Kind::Number))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Look, E> {
                Ok(Look::NotAnObject(Kind::Number))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Look, E> {
                Ok(Look::NotAnObject(Kind::String))
            }
        }
        d.deserialize_any(LookVisitor)
    }
}

/// A map key: its index in the given names, `None` for any other key. Never copied.
struct FieldName<'n>(&'n [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldName<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldName<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

/// Reads one field's value and judges it against what the field must hold, keeping nothing of it:
/// strings are looked at where they lie, arrays and objects skipped.
struct Check {
    name: &'static str,
    expect: Expect,
    required: bool,
}

impl Check {
    fn judge(&self, kind: Kind) -> Verdict {
        let fits = match self.expect {
            _ if kind == Kind::Null && !self.required => true,
            Expect::String | Expect::Timestamp | Expect::Status => kind == Kind::String,
            Expect::Integer => kind == Kind::Integer,
            Expect::Bool => kind == Kind::Bool,
            Expect::Object | Expect::Meta => kind == Kind::Object,
        };
        if fits {
            return Verdict::Fine;
        }
        let what = match self.expect {
            Expect::String | Expect::Status => "a string",
            Expect::Timestamp => "an RFC 3339 timestamp",
            Expect::Integer => "an integer",
            Expect::Bool => "a boolean",
            Expect::Object | Expect::Meta => "an object",
        };
        Verdict::Wrong(DecodeError::new(
            RejectReason::InvalidField,
            format_args!("{} must be {what}, found {}", self.name, kind.as_str()),
        ))
    }
}

impl<'de> DeserializeSeed<'de> for Check {
    type Value = Verdict;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Verdict, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = Verdict;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Verdict, E> {
        Ok(self.judge(Kind::Null))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Verdict, E> {
        Ok(self.judge(Kind::Bool))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Verdict, E> {
        Ok(self.judge(Kind::Integer))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Verdict, E> {
        Ok(self.judge(if i64::try_from(v).is_ok() {
            Kind::Integer
        } else {
            Kind::Number
        }))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Verdict, E> {
        Ok(self.judge(Kind::Number))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Verdict, E> {
        let name = self.name;
        Ok(match self.expect {
            Expect::Timestamp if crate::model::timestamp::parse_rfc3339(text).is_none() => {
                Verdict::Wrong(DecodeError::new(
                    RejectReason::InvalidField,
                    format_args!("{name} {} is not an RFC 3339 timestamp", Quoted(text)),
                ))
            }
            Expect::Status if V1TaskStatus::from_wire(text).is_none() => Verdict::Wrong(DecodeError::new(
                RejectReason::UnknownStatus,
                format_args!("status {} is not a V1TaskStatus", Quoted(text)),
            )),
            _ => self.judge(Kind::String),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Verdict, A::Error> {
        Skip::visit_seq(Skip, seq)?;
        Ok(self.judge(Kind::Array))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Verdict, A::Error> {
        if !matches!(self.expect, Expect::Meta) {
            Skip::visit_map(Skip, map)?;
            return Ok(self.judge(Kind::Object));
        }
        let keys = META_FIELDS.map(|(key, _, _)| key);
        let mut verdicts = [const { Verdict::Absent }; META_FIELDS.len()];
        while let Some(at) = map.next_key_seed(FieldName(&keys))? {
            match at {
                Some(at) => {
                    let (_, name, expect) = META_FIELDS[at];
                    verdicts[at] = map.next_value_seed(Check {
                        name,
                        expect,
                        required: true,
                    })?;
                }
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        for ((_, name, _), verdict) in META_FIELDS.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Absent => {
                    return Ok(Verdict::Wrong(DecodeError::new(
                        RejectReason::MissingField,
                        format_args!("{name} is missing"),
                    )))
                }
                Verdict::Wrong(problem) => return Ok(Verdict::Wrong(problem)),
                Verdict::Fine => {}
            }
        }
        Ok(Verdict::Fine)
    }
}

/// Any JSON value, read through and dropped. Unlike `IgnoredAny` it reads numbers as a `Value`
/// would (one beyond `f64` is refused), so the second look calls invalid exactly what a parse of
/// the whole document would.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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

    fn decode_huge(doc: &Value) -> DecodeError {
        let bytes = serde_json::to_vec(doc).unwrap();
        decode(Some(&bytes), usize::MAX).expect_err("rejected")
    }

    /// A rejection's detail is a log field: what it quotes of a message is cut short, whatever the
    /// message holds, and the whole detail has a ceiling.
    #[test]
    fn details_quote_little_of_a_huge_value() {
        let huge = "\u{e9}".repeat(5 << 20);
        let huge_ascii = "7".repeat(10 << 20);
        for (key, value, reason) in [
            ("tenantId", huge.as_str(), RejectReason::InvalidField),
            ("workflowId", &huge, RejectReason::InvalidField),
            ("status", &huge, RejectReason::UnknownStatus),
            ("startedAt", &huge_ascii, RejectReason::InvalidField),
            ("finishedAt", &huge, RejectReason::InvalidField),
        ] {
            let err = decode_huge(&with(key, Value::from(value)));
            assert_eq!(err.reason, reason, "{key}");
            assert!(
                err.detail.len() <= MAX_DETAIL_BYTES,
                "{key}: {} bytes",
                err.detail.len()
            );
            assert!(err.detail.starts_with(key), "{key}: {}", err.detail);
            assert!(
                err.detail.contains(&format!("({} bytes)", value.len())),
                "{key}: {}",
                err.detail
            );
        }
        let mut doc = base();
        doc["metadata"]["createdAt"] = Value::from(huge.as_str());
        let err = decode_huge(&doc);
        assert!(err.detail.starts_with("metadata.createdAt \"\u{e9}"), "{}", err.detail);
        assert!(err.detail.len() <= MAX_DETAIL_BYTES);
        // An unknown field's huge value, broken at its very end.
        let mut text = serde_json::to_string(&with("somethingNew", Value::from(huge_ascii.as_str()))).unwrap();
        let at = text.find(&huge_ascii).unwrap() + huge_ascii.len() - 1;
        text.replace_range(at..at + 1, "\\q");
        let err = decode(Some(text.as_bytes()), usize::MAX).unwrap_err();
        assert_eq!(err.reason, RejectReason::InvalidJson, "{err}");
        assert!(err.detail.len() <= MAX_DETAIL_BYTES, "{} bytes", err.detail.len());
        // serde_json's own messages quote values whole: the ceiling cuts them, at a char boundary.
        let serde_error = serde_json::from_str::<u32>(&format!("\"{huge}\"")).unwrap_err();
        assert!(serde_error.to_string().len() > huge.len());
        let err = DecodeError::new(RejectReason::InvalidField, serde_error);
        assert!(
            err.detail.len() <= MAX_DETAIL_BYTES && err.detail.ends_with("(cut)"),
            "{}",
            err.detail
        );
        assert!(
            err.detail.starts_with("invalid type: string \"\u{e9}"),
            "{}",
            err.detail
        );
        let short = decode_value(&with("tenantId", Value::from("not-a-uuid"))).unwrap_err();
        assert_eq!(short.detail, "tenantId \"not-a-uuid\" is not a UUID");
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
