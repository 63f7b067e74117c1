use super::*;
use std::collections::{HashMap, HashSet};

const STATUSES: [&str; 5] = ["QUEUED", "RUNNING", "COMPLETED", "CANCELLED", "FAILED"];
const ALWAYS_PRESENT: [&str; 14] = [
    "metadata",
    "status",
    "tenantId",
    "displayName",
    "workflowId",
    "workflowVersionId",
    "input",
    "output",
    "additionalMetadata",
    "errorMessage",
    "startedAt",
    "finishedAt",
    "createdAt",
    "duration",
];
const NEVER_STARTED: i64 = 9_223_372_036_854;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-08-22T14:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn traffic(seed: u64, bad_message_ratio: f64) -> SyntheticTraffic {
    let profile = TrafficProfile {
        seed,
        bad_message_ratio,
        ..TrafficProfile::default()
    };
    SyntheticTraffic::new(&profile, start())
}

fn parse(message: &SyntheticMessage) -> Value {
    serde_json::from_slice(&message.payload).unwrap()
}

/// Microseconds since the epoch, `None` for Go's zero time.
fn micros(doc: &Value, field: &str) -> Option<i64> {
    let text = doc[field].as_str().unwrap();
    if text == GO_ZERO_TIME {
        return None;
    }
    Some(
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{field}={text}: {e}"))
            .timestamp_micros(),
    )
}

fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[test]
fn timestamps_and_durations_match_go() {
    assert_eq!(
        format_timestamp(Some(1_787_407_391_482_913), 0),
        "2026-08-22T14:03:11.482913Z"
    );
    assert_eq!(
        format_timestamp(Some(1_787_407_391_501_370), 0),
        "2026-08-22T14:03:11.50137Z"
    );
    assert_eq!(format_timestamp(Some(1_787_407_391_000_000), 0), "2026-08-22T14:03:11Z");
    assert_eq!(
        format_timestamp(Some(1_787_426_340_000_001), OFFSET_TENANT_SECS),
        "2026-08-22T14:19:00.000001-05:00"
    );
    assert_eq!(format_timestamp(None, OFFSET_TENANT_SECS), GO_ZERO_TIME);
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-719_162), (1, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    let started = Some(1_787_407_391_690_241);
    let finished = Some(1_787_407_394_127_006);
    assert_eq!(go_duration_ms(started, finished), 2436);
    assert_eq!(go_duration_ms(None, None), 0);
    assert_eq!(go_duration_ms(started, None), -NEVER_STARTED);
    assert_eq!(go_duration_ms(None, finished), NEVER_STARTED);
    assert_eq!(
        GO_ZERO_TIME_US,
        DateTime::parse_from_rfc3339(GO_ZERO_TIME).unwrap().timestamp_micros()
    );
}

#[test]
fn same_seed_same_bytes() {
    let a: Vec<_> = traffic(7, 0.05).take(1_000).collect();
    let b: Vec<_> = traffic(7, 0.05).take(1_000).collect();
    assert_eq!(a, b);
    let c: Vec<_> = traffic(8, 0.05).take(1_000).collect();
    assert_ne!(a, c);
}

#[test]
fn good_messages_do_not_depend_on_the_bad_ratio() {
    let clean: Vec<_> = traffic(3, 0.0).take(500).collect();
    let noisy: Vec<_> = traffic(3, 0.2).filter(|m| m.key.is_some()).take(500).collect();
    assert_eq!(clean, noisy);
}

#[test]
fn at_is_non_decreasing_and_after_start() {
    let mut previous = start();
    for message in traffic(2, 0.1).take(5_000) {
        assert!(message.at >= previous);
        previous = message.at;
    }
}

#[test]
fn documents_have_every_field_and_valid_values() {
    let mut offsets = HashSet::new();
    for message in traffic(4, 0.0).take(5_000) {
        let doc = parse(&message);
        // Exactly serde_json's compact output for this document.
        assert_eq!(serde_json::to_vec(&doc).unwrap(), message.payload);
        let object = doc.as_object().unwrap();
        for key in ALWAYS_PRESENT {
            assert!(object.contains_key(key), "{key} missing");
        }
        assert!(!object.contains_key("id"));
        let metadata = &doc["metadata"];
        let id = metadata["id"].as_str().unwrap();
        assert_eq!(message.key.as_deref(), Some(id));
        assert_eq!(metadata["createdAt"], metadata["updatedAt"]);
        for field in ["tenantId", "workflowId", "workflowVersionId"] {
            assert!(is_uuid(doc[field].as_str().unwrap()), "{field}");
        }
        assert!(is_uuid(id));
        assert!(STATUSES.contains(&doc["status"].as_str().unwrap()));
        assert!(doc["duration"].is_i64());
        assert!(doc["errorMessage"].is_string());
        assert!(doc["input"].is_object() && doc["output"].is_object());
        assert!(doc["additionalMetadata"].is_object());
        // displayName = "<workflow name>-<unix ms of metadata.createdAt>"
        let created = DateTime::parse_from_rfc3339(metadata["createdAt"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let display = doc["displayName"].as_str().unwrap();
        let (name, suffix) = display.rsplit_once('-').unwrap();
        assert!(!name.is_empty());
        assert_eq!(suffix.parse::<i64>().unwrap(), created);
        // All of a document's real timestamps share the tenant's offset.
        let created_at = doc["createdAt"].as_str().unwrap();
        let offset = if created_at.ends_with('Z') {
            "Z"
        } else {
            &created_at[created_at.len() - 6..]
        };
        offsets.insert(offset.to_owned());
        for field in ["startedAt", "finishedAt"] {
            let text = doc[field].as_str().unwrap();
            assert!(text == GO_ZERO_TIME || text.ends_with(offset), "{text}");
        }
        assert!(metadata["createdAt"].as_str().unwrap().ends_with(offset));
    }
    assert_eq!(offsets, HashSet::from(["Z".to_owned(), "-05:00".to_owned()]));
}

/// What has been seen of one run so far.
struct Seen {
    last: Value,
    last_payload: Vec<u8>,
}

#[test]
fn runs_follow_the_lifecycle() {
    let generator = traffic(5, 0.0);
    let dag_tails: Vec<String> = generator
        .model
        .workflows
        .iter()
        .filter(|w| w.dag)
        .map(|w| w.tail.clone())
        .collect();
    let is_dag = |id: &str| dag_tails.iter().any(|tail| tail.contains(id));
    let mut runs: HashMap<String, Seen> = HashMap::new();
    let (mut retries, mut replays, mut duplicates, mut dag_progress, mut skipped_queued) = (0, 0, 0, 0, 0);
    let (mut never_started, mut running, mut queued) = (0, 0, 0);
    for message in generator.take(12_000) {
        let doc = parse(&message);
        let key = message.key.clone().unwrap();
        let status = doc["status"].as_str().unwrap();
        let meta_created = DateTime::parse_from_rfc3339(doc["metadata"]["createdAt"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
        let created = micros(&doc, "createdAt").unwrap();
        let started = micros(&doc, "startedAt");
        let finished = micros(&doc, "finishedAt");
        let duration = doc["duration"].as_i64().unwrap();
        let at = message.at.timestamp_micros();
        let error = doc["errorMessage"].as_str().unwrap();
        let output_empty = doc["output"].as_object().unwrap().is_empty();
        assert!(meta_created <= created && created <= at);
        for t in [started, finished].into_iter().flatten() {
            assert!(created <= t && t <= at);
        }
        if let (Some(s), Some(f)) = (started, finished) {
            assert!(s <= f);
            assert_eq!(duration, go_duration_ms(started, finished));
        }
        match status {
            "QUEUED" => {
                queued += 1;
                assert_eq!((started, finished, duration), (None, None, 0));
                assert!(output_empty && error.is_empty());
            }
            "RUNNING" => {
                assert!(started.is_some() && output_empty && error.is_empty());
                if finished.is_none() {
                    running += 1;
                    assert_eq!(duration, -NEVER_STARTED);
                } else {
                    dag_progress += 1;
                    assert!(is_dag(doc["workflowId"].as_str().unwrap()));
                }
            }
            "COMPLETED" => {
                assert!(started.is_some() && finished.is_some());
                assert!(!output_empty && error.is_empty());
            }
            "FAILED" | "CANCELLED" => {
                assert!(finished.is_some() && output_empty);
                assert_eq!(status == "FAILED", !error.is_empty());
                if started.is_none() {
                    never_started += 1;
                    assert_eq!(duration, NEVER_STARTED);
                }
            }
            other => panic!("status {other}"),
        }
        let terminal = matches!(status, "COMPLETED" | "FAILED" | "CANCELLED");
        match runs.get_mut(&key) {
            None => {
                if status != "QUEUED" {
                    skipped_queued += 1;
                }
                runs.insert(
                    key,
                    Seen {
                        last: doc,
                        last_payload: message.payload,
                    },
                );
            }
            Some(seen) => {
                let last = &seen.last;
                for field in [
                    "metadata",
                    "tenantId",
                    "workflowId",
                    "workflowVersionId",
                    "displayName",
                    "createdAt",
                    "input",
                    "additionalMetadata",
                ] {
                    assert_eq!(last[field], doc[field], "{field} changed");
                }
                let last_status = last["status"].as_str().unwrap();
                let last_terminal = matches!(last_status, "COMPLETED" | "FAILED" | "CANCELLED");
                let last_started = micros(last, "startedAt");
                let last_finished = micros(last, "finishedAt");
                if last_terminal {
                    if seen.last_payload == message.payload {
                        duplicates += 1;
                    } else {
                        // A manual replay, seconds after the previous finish.
                        replays += 1;
                        assert!(at >= last_finished.unwrap() + 5 * US_PER_SEC);
                        if terminal {
                            assert!(finished > last_finished);
                        }
                    }
                } else {
                    match (last_status, status) {
                        ("RUNNING", "QUEUED") => retries += 1,
                        ("RUNNING", _) if started == last_started => {
                            // Same attempt: finishedAt only ever appears.
                            assert!(last_finished.is_none() || finished.is_some());
                        }
                        ("RUNNING", _) => {
                            // A new attempt whose QUEUED update was skipped.
                            assert!(started > last_started);
                        }
                        ("QUEUED", _) => {}
                        other => panic!("transition {other:?}"),
                    }
                }
                seen.last = doc;
                seen.last_payload = message.payload;
            }
        }
    }
    assert!(runs.len() > 2_500, "{} runs", runs.len());
    for (what, count) in [
        ("retries", retries),
        ("replays", replays),
        ("duplicates", duplicates),
        ("dag progress", dag_progress),
        ("skipped QUEUED", skipped_queued),
        ("never started", never_started),
        ("running", running),
        ("queued", queued),
    ] {
        assert!(count > 5, "{what}: {count}");
    }
}

#[test]
fn failure_share_is_plausible() {
    /// The value of the top-level `"field":"…"` of a compact document, without parsing it all
    /// (50,000 documents take too long to parse in a debug build). The last occurrence is the
    /// top-level one: `status`, `tenantId` and `workflowId` come after `input` and `output`.
    fn field<'a>(text: &'a str, name: &str) -> &'a str {
        let (_, rest) = text.rsplit_once(&format!(r#""{name}":""#)).unwrap();
        rest.split('"').next().unwrap()
    }
    let generator = traffic(11, 0.0);
    // Each workflow's expected FAILED share of its runs' first outcomes, by workflowId.
    let expected_by_workflow: HashMap<String, f64> = generator
        .model
        .workflows
        .iter()
        .map(|w| {
            let expected = P_SCHEDULING_TIMEOUT + (1.0 - 0.02) * w.failure_probability;
            (field(&w.tail, "workflowId").to_owned(), expected)
        })
        .collect();
    // Outcomes of the runs created in the first minutes, which have had time to finish: a
    // window cut short would favour failures, which end sooner than successes.
    let early = start() + TimeDelta::minutes(4);
    let mut first_outcome: HashMap<String, Option<bool>> = HashMap::new();
    let mut expected_failed = 0.0;
    for message in generator.take(50_000) {
        let text = std::str::from_utf8(&message.payload).unwrap();
        let key = message.key.unwrap();
        if !first_outcome.contains_key(&key) {
            if message.at >= early {
                continue;
            }
            expected_failed += expected_by_workflow[field(text, "workflowId")];
            first_outcome.insert(key.clone(), None);
        }
        let status = field(text, "status");
        if let Some(outcome @ None) = first_outcome.get_mut(&key) {
            if matches!(status, "COMPLETED" | "FAILED" | "CANCELLED") {
                *outcome = Some(status == "FAILED");
            }
        }
    }
    let runs = first_outcome.len() as f64;
    let finished = first_outcome.values().filter(|o| o.is_some()).count() as f64;
    let failed = first_outcome.values().filter(|o| **o == Some(true)).count() as f64;
    let (share, expected) = (failed / runs, expected_failed / runs);
    assert!(
        runs > 3_000.0 && finished > 0.9 * runs,
        "{runs} runs, {finished} finished"
    );
    assert!(
        share > expected * 0.75 && share < expected * 1.33 && (0.01..0.35).contains(&share),
        "failure share {share}, expected about {expected}"
    );
}

#[test]
fn runs_arrive_at_the_configured_rate() {
    let profile = TrafficProfile {
        runs_per_second: 100.0,
        seed: 9,
        ..TrafficProfile::default()
    };
    let window = TimeDelta::seconds(100);
    let mut ids = HashSet::new();
    for message in SyntheticTraffic::new(&profile, start()) {
        if message.at >= start() + window {
            break;
        }
        // A run is created before any of its updates is emitted.
        ids.insert(message.key.unwrap());
    }
    // About 10,000 runs, minus the few whose first update comes after the window.
    assert!((9_300..10_400).contains(&ids.len()), "{}", ids.len());
}

#[test]
fn bad_messages_come_at_the_configured_ratio_in_every_shape() {
    let (mut bad, mut kinds) = (0, HashSet::new());
    let total = 4_000;
    for message in traffic(6, 0.25).take(total) {
        if message.key.is_some() {
            continue;
        }
        bad += 1;
        let kind = match serde_json::from_slice::<Value>(&message.payload) {
            _ if message.payload.is_empty() => "empty",
            Err(_) => "not json",
            Ok(Value::Array(_)) => "array",
            Ok(doc) => match (&doc["status"], &doc["duration"], &doc["tenantId"]) {
                (Value::Null, _, _) => "no status",
                (Value::String(s), _, _) if s == "PAUSED" => "unknown status",
                (_, Value::String(_), _) => "string duration",
                (_, _, Value::String(t)) if !is_uuid(t) => "bad tenant",
                _ => panic!("bad message that looks fine"),
            },
        };
        kinds.insert(kind);
    }
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    let ratio = f64::from(bad) / f64::from(total as u32);
    assert!((0.22..0.28).contains(&ratio), "{ratio}");
    assert!(traffic(6, 0.0).take(2_000).all(|m| m.key.is_some()));
}

#[test]
fn odd_profiles_still_produce_traffic() {
    let profile = TrafficProfile {
        workflows: 40,
        tenants: 0,
        runs_per_second: f64::NAN,
        bad_message_ratio: 2.0,
        seed: 0,
    };
    assert!(SyntheticTraffic::new(&profile, start())
        .take(100)
        .all(|m| m.key.is_none()));
    let profile = TrafficProfile {
        workflows: 40,
        tenants: 1,
        ..TrafficProfile::default()
    };
    let generator = SyntheticTraffic::new(&profile, start());
    let names: HashSet<&str> = generator.model.workflows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names.len(), 40);
    assert!(names.contains("DAGWorkflow") && names.contains("DAGWorkflow-2"));
    assert_eq!(names.iter().filter(|n| n.ends_with("-3")).count(), 8);
    assert_eq!(generator.take(1_000).count(), 1_000);
}
