//! Hatchet's `V1WorkflowRun` contract, as the server emits it, and nothing else.
//!
//! Faithful to `openapi/components/schemas/v1/workflow_run.yaml` (camelCase, the same field names,
//! serializing back to the same shape). The types borrow from the message they were read from:
//! strings are `Cow` (owned only when JSON escapes force it) and the opaque `input`, `output` and
//! `additionalMetadata` stay raw JSON text, never a `serde_json::Value` tree.
//!
//! Hatchet's "no value" conventions are folded here, once: Go's zero time and `null` read as
//! `None`. What the values *mean* (durations, outcomes) is for `decode` and `aggregate`.
//! No Kafka, no metrics in this module.

pub mod timestamp;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

pub use timestamp::Timestamp;

/// `APIResourceMeta`: the run's identity. `metadata.id` *is* the run id (the contract's top-level
/// `id` is never sent). `updatedAt` always equals `createdAt` in Hatchet, so it cannot order updates.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct APIResourceMeta<'a> {
    pub id: Cow<'a, str>,
    #[serde(with = "timestamp::required")]
    pub created_at: Timestamp,
    #[serde(with = "timestamp::required")]
    pub updated_at: Timestamp,
}

/// Written by hand for one reason: `updatedAt` is always the same text as `createdAt`, so it is
/// parsed once (this runs for every message).
impl<'de: 'a, 'a> Deserialize<'de> for APIResourceMeta<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};

        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "camelCase")]
        enum Field {
            Id,
            CreatedAt,
            UpdatedAt,
            #[serde(other)]
            Other,
        }

        struct MetaVisitor;
        impl<'de> Visitor<'de> for MetaVisitor {
            type Value = APIResourceMeta<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an APIResourceMeta object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut id, mut created, mut updated) = (None, None, None);
                let mut created_text: Option<Cow<'de, str>> = None;
                let timestamp = |text: &str| {
                    timestamp::parse_rfc3339(text).ok_or_else(|| {
                        A::Error::invalid_value(serde::de::Unexpected::Str(text), &"an RFC 3339 date-time")
                    })
                };
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Id if id.is_some() => return Err(A::Error::duplicate_field("id")),
                        Field::CreatedAt if created.is_some() => return Err(A::Error::duplicate_field("createdAt")),
                        Field::UpdatedAt if updated.is_some() => return Err(A::Error::duplicate_field("updatedAt")),
                        Field::Id => id = Some(map.next_value::<BorrowedCow<'de>>()?.0),
                        Field::CreatedAt => {
                            let text = map.next_value::<BorrowedCow<'de>>()?.0;
                            created = Some(timestamp(&text)?);
                            created_text = Some(text);
                        }
                        Field::UpdatedAt => {
                            let text = map.next_value::<BorrowedCow<'de>>()?.0;
                            updated = Some(match (&created_text, created) {
                                (Some(same), Some(parsed)) if *same == text => parsed,
                                _ => timestamp(&text)?,
                            });
                        }
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(APIResourceMeta {
                    id: id.ok_or_else(|| A::Error::missing_field("id"))?,
                    created_at: created.ok_or_else(|| A::Error::missing_field("createdAt"))?,
                    updated_at: updated.ok_or_else(|| A::Error::missing_field("updatedAt"))?,
                })
            }
        }
        d.deserialize_struct("APIResourceMeta", &["id", "createdAt", "updatedAt"], MetaVisitor)
    }
}

/// A string borrowed from the message unless escapes force a copy.
struct BorrowedCow<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for BorrowedCow<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match optional_cow(d)? {
            Some(text) => Ok(BorrowedCow(text)),
            None => Err(serde::de::Error::invalid_type(serde::de::Unexpected::Unit, &"a string")),
        }
    }
}

/// `V1TaskStatus`, spelled exactly as on the wire (`CANCELLED` with two Ls). Read only from a
/// string (serde's derive would also take `{"COMPLETED": null}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum V1TaskStatus {
    Queued,
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl<'de> Deserialize<'de> for V1TaskStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl serde::de::Visitor<'_> for StatusVisitor {
            type Value = V1TaskStatus;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a V1TaskStatus string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<V1TaskStatus, E> {
                V1TaskStatus::from_wire(v).ok_or_else(|| E::unknown_variant(v, &WIRE_NAMES))
            }
        }
        d.deserialize_str(StatusVisitor)
    }
}

const WIRE_NAMES: [&str; 5] = ["QUEUED", "RUNNING", "COMPLETED", "CANCELLED", "FAILED"];

impl V1TaskStatus {
    pub const ALL: [V1TaskStatus; 5] = [
        V1TaskStatus::Queued,
        V1TaskStatus::Running,
        V1TaskStatus::Completed,
        V1TaskStatus::Cancelled,
        V1TaskStatus::Failed,
    ];

    /// The wire spelling, also used as the `status` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            V1TaskStatus::Queued => "QUEUED",
            V1TaskStatus::Running => "RUNNING",
            V1TaskStatus::Completed => "COMPLETED",
            V1TaskStatus::Cancelled => "CANCELLED",
            V1TaskStatus::Failed => "FAILED",
        }
    }

    pub fn from_wire(text: &str) -> Option<V1TaskStatus> {
        V1TaskStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// `COMPLETED`, `FAILED` and `CANCELLED` end an attempt. A manual replay can still reopen the run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            V1TaskStatus::Completed | V1TaskStatus::Cancelled | V1TaskStatus::Failed
        )
    }
}

/// `V1WorkflowRun`: one workflow run as `GET /api/v1/stable/workflow-runs/{id}` returns it in `run`.
///
/// Optional timestamps are `None` when absent, `null` or Go's zero time. `input` and `output` are
/// required by the contract but real producers omit them or send `null`; both read as `None`
/// (meaning `{}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V1WorkflowRun<'a> {
    #[serde(borrow)]
    pub metadata: APIResourceMeta<'a>,
    pub status: V1TaskStatus,
    #[serde(default, with = "timestamp::optional", skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, with = "timestamp::optional", skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Milliseconds, computed by the server as `finishedAt - startedAt` even when one is zero time:
    /// see `decode` for the values that must never be trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    #[serde(borrow)]
    pub tenant_id: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<RawJson<'a>>,
    #[serde(borrow)]
    pub display_name: Cow<'a, str>,
    #[serde(borrow)]
    pub workflow_id: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub output: Option<RawJson<'a>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "optional_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_message: Option<Cow<'a, str>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "optional_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub workflow_version_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub input: Option<RawJson<'a>>,
    #[serde(default, with = "timestamp::optional", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    #[serde(
        default,
        borrow,
        deserialize_with = "optional_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_task_external_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payloads_restricted: Option<bool>,
}

/// One JSON value kept as its text, borrowed from the message: what `input`, `output` and
/// `additionalMetadata` are to this service (their content is the workflow's own business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    /// `text` must be exactly one JSON value, without surrounding whitespace, as a parser that
    /// checked it found it (serde_json's `RawValue`, or `decode`'s fast path).
    pub fn from_checked(text: &'a str) -> RawJson<'a> {
        RawJson(text)
    }

    pub fn get(&self) -> &'a str {
        self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawJson<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        Ok(RawJson(raw.get()))
    }
}

impl Serialize for RawJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// `Option<Cow<str>>` that borrows from the message when the string has no escapes (serde's own
/// impl always allocates inside an `Option`).
fn optional_cow<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct CowVisitor;
    impl<'de> serde::de::Visitor<'de> for CowVisitor {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(CowVisitor)
        }
    }
    d.deserialize_option(CowVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn examples() -> Vec<(String, String)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/examples");
        let mut docs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        docs.sort();
        assert!(docs.len() >= 5, "examples missing in {}", dir.display());
        docs
    }

    #[test]
    fn every_example_deserializes() {
        for (name, text) in examples() {
            let run: V1WorkflowRun = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!run.metadata.id.is_empty(), "{name}");
        }
    }

    #[test]
    fn traps_read_as_absent() {
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/examples/queued-dag-run.json"),
        )
        .unwrap();
        let run: V1WorkflowRun = serde_json::from_str(&text).unwrap();
        assert_eq!(run.status, V1TaskStatus::Queued);
        assert_eq!(run.started_at, None);
        assert_eq!(run.finished_at, None);
        assert_eq!(run.duration, Some(0));
    }

    #[test]
    fn serializes_back_to_the_same_shape() {
        for (name, text) in examples() {
            let run: V1WorkflowRun = serde_json::from_str(&text).unwrap();
            let again = serde_json::to_string(&run).unwrap();
            let reread: V1WorkflowRun = serde_json::from_str(&again).unwrap();
            assert_eq!(serde_json::to_string(&reread).unwrap(), again, "{name}");
            let original: serde_json::Value = serde_json::from_str(&text).unwrap();
            let written: serde_json::Value = serde_json::from_str(&again).unwrap();
            for (key, value) in original.as_object().unwrap() {
                let zero_time = value.as_str() == Some("0001-01-01T00:00:00Z");
                match written.get(key) {
                    None => assert!(zero_time, "{name}: {key} lost"),
                    Some(w) if value.is_string() && key.ends_with("At") => {
                        let a = timestamp::parse_rfc3339(value.as_str().unwrap()).unwrap();
                        let b = timestamp::parse_rfc3339(w.as_str().unwrap()).unwrap();
                        assert_eq!(a, b, "{name}: {key}");
                        assert_eq!(a.offset(), b.offset(), "{name}: {key}");
                    }
                    Some(w) if key == "metadata" => {
                        let (a_text, b_text) = (value.to_string(), w.to_string());
                        let a: APIResourceMeta = serde_json::from_str(&a_text).unwrap();
                        let b: APIResourceMeta = serde_json::from_str(&b_text).unwrap();
                        assert_eq!(a, b, "{name}");
                        assert_eq!(w.as_object().unwrap().len(), 3, "{name}");
                    }
                    Some(w) => assert_eq!(w, value, "{name}: {key}"),
                }
            }
        }
    }

    #[test]
    fn null_and_absent_payloads_and_unknown_fields() {
        let text = r#"{"metadata":{"id":"r1","createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11Z"},
            "status":"RUNNING","tenantId":"t","displayName":"x-1","workflowId":"w","input":null,
            "somethingNew":{"deep":[1,2,3]},"payloadsRestricted":true}"#;
        let run: V1WorkflowRun = serde_json::from_str(text).unwrap();
        assert!(run.input.is_none() && run.output.is_none());
        assert_eq!(run.payloads_restricted, Some(true));
    }

    #[test]
    fn optional_strings_borrow_unless_escaped() {
        let text = r#"{"metadata":{"id":"r1","createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11Z"},
            "status":"FAILED","tenantId":"t","displayName":"x-1","workflowId":"w",
            "errorMessage":"line one\nline two","workflowVersionId":"v1","parentTaskExternalId":null}"#;
        let run: V1WorkflowRun = serde_json::from_str(text).unwrap();
        assert_eq!(run.error_message.as_deref(), Some("line one\nline two"));
        assert!(matches!(run.error_message, Some(Cow::Owned(_))));
        assert!(matches!(run.workflow_version_id, Some(Cow::Borrowed("v1"))));
        assert_eq!(run.parent_task_external_id, None);
    }

    #[test]
    fn metadata_timestamps_are_read_even_when_they_differ() {
        let text =
            r#"{"createdAt":"2026-08-22T14:03:11Z","id":"r\u0031","updatedAt":"2026-08-22T15:03:11-05:00","x":[1]}"#;
        let meta: APIResourceMeta = serde_json::from_str(text).unwrap();
        assert_eq!(meta.id, "r1");
        assert_eq!((meta.updated_at - meta.created_at).num_hours(), 6);
        let same = r#"{"id":"r","updatedAt":"2026-08-22T14:03:11Z","createdAt":"2026-08-22T14:03:11Z"}"#;
        let meta: APIResourceMeta = serde_json::from_str(same).unwrap();
        assert_eq!(meta.created_at, meta.updated_at);
        for bad in [
            r#"{"id":"r","createdAt":"2026-08-22T14:03:11Z"}"#,
            r#"{"id":"r","createdAt":"x","updatedAt":"x"}"#,
            r#"{"id":"r","createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11Z","id":"s"}"#,
            r#"{"id":null,"createdAt":"2026-08-22T14:03:11Z","updatedAt":"2026-08-22T14:03:11Z"}"#,
        ] {
            assert!(serde_json::from_str::<APIResourceMeta>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_spelling_is_exact() {
        for s in V1TaskStatus::ALL {
            let json = format!("\"{}\"", s.as_str());
            assert_eq!(serde_json::from_str::<V1TaskStatus>(&json).unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), json);
        }
        assert!(serde_json::from_str::<V1TaskStatus>("\"CANCELED\"").is_err());
        assert!(serde_json::from_str::<V1TaskStatus>("\"completed\"").is_err());
        assert!(serde_json::from_str::<V1TaskStatus>(r#"{"COMPLETED": null}"#).is_err());
    }
}
