//! Fast fault injection with librdkafka's in-process mock cluster: failed offset commits are
//! counted and retried by the next commit. (Every behaviour that matters is also shown against the
//! real broker in the other tests; this adds a fault a real broker will not produce on demand.)

mod common;

use common::Metrics;
use hatchet_run_metrics::aggregate::Clock;
use hatchet_run_metrics::config::{Config, KafkaConfig};
use hatchet_run_metrics::exporter::{exposition, WindowEnd};
use hatchet_run_metrics::service::Service;
use hatchet_run_metrics::source::kafka::consume;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const DOC: &str = r#"{"metadata":{"id":"ID","createdAt":"2026-08-22T14:00:00Z","updatedAt":"2026-08-22T14:00:00Z"},
"status":"COMPLETED","tenantId":"707d0855-80ab-4e1f-a156-f1c4546cbf52","workflowId":"0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77",
"displayName":"mocked-1","startedAt":"2026-08-22T14:00:01Z","finishedAt":"2026-08-22T14:00:02Z","duration":1000}"#;

async fn wait_for(what: &str, service: &Service, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let start = Instant::now();
    loop {
        let m = Metrics::parse(&exposition(service, WindowEnd::LatestFinished));
        if check(&m) {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting until {what}: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commits_are_counted_and_retried() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = "mocked";
    mock.create_topic(topic, 1, 1).expect("topic");
    let brokers = mock.bootstrap_servers();

    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for i in 0..10 {
        let payload = DOC.replace("ID", &format!("run-{i}"));
        producer
            .send(
                FutureRecord::<str, str>::to(topic).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let kafka = KafkaConfig {
        brokers: brokers.clone(),
        topics: vec![topic.into()],
        group_id: "mock-group".into(),
        commit_interval: Duration::from_millis(200),
        statistics_interval: Duration::from_millis(200),
        ..Config::default().kafka
    };
    let service = Service::new(&Config::default(), Clock::Wall).expect("the defaults are valid");
    // Every offset commit fails until the errors are cleared.
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 50],
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = {
        let service = service.clone();
        tokio::spawn(async move {
            consume(&kafka, Duration::ZERO, &service, async move {
                let _ = stopped.await;
            })
            .await
        })
    };

    wait_for("10 outcomes and a failed commit", &service, |m| {
        m.sum("hatchet_workflow_runs_total", &[]) == 10.0
            && m.sum("hatchet_run_metrics_offset_commits_total", &[("result", "failed")]) >= 1.0
    })
    .await;
    mock.clear_request_errors(RDKafkaApiKey::OffsetCommit);
    wait_for("a commit succeeds", &service, |m| {
        m.sum("hatchet_run_metrics_offset_commits_total", &[("result", "ok")]) >= 1.0
    })
    .await;

    let checker: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "mock-group")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let committed = checker.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        committed.elements()[0].offset(),
        Offset::Offset(10),
        "the next commit carried the failed one's offsets"
    );

    stop.send(()).unwrap();
    consumer.await.unwrap().unwrap();
}
