//! `/readyz` tells the truth, and says why: ready as soon as the consumer consumes (not only
//! after the Kafka client's first statistics), and a wrong SASL password is named as such, against
//! a real broker with a SASL listener.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

fn readyz(service: &Service) -> (u16, String) {
    service.get("/readyz").unwrap_or((0, String::new()))
}

fn run_doc(id: &str) -> serde_json::Value {
    json!({
        "metadata": {"id": id, "createdAt": "2026-08-22T14:00:00Z", "updatedAt": "2026-08-22T14:00:00Z"},
        "status": "QUEUED", "tenantId": "707d0855-80ab-4e1f-a156-f1c4546cbf52",
        "workflowId": "0b7e2d3c-4f1a-4c55-8d2e-6a9f1c3b5d77", "displayName": "ready-1787407391482",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_while_consuming_before_any_statistics() {
    let brokers = shared_brokers();
    let topic = unique_name("ready");
    create_topic(&brokers, &topic, 1).await;
    // Statistics once an hour: readiness cannot wait for them.
    let service = Service::start(&format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{}\"\nstatistics_interval = \"1h\"\n",
        unique_name("group")
    ));
    send_all(&producer(&brokers), &topic, &[Outgoing::json("r1", &run_doc("r1"))]).await;
    service.wait_for_consumed(1.0);
    let (status, body) = readyz(&service);
    assert_eq!(status, 200, "consuming, so ready: {body}");
    assert_eq!(body, "ready\n");
}

/// A broker of this test's own with a SASL/PLAIN listener beside its plain one.
const PORT: u16 = 19192;
const SASL_PORT: u16 = 19194;

struct SaslBroker;

impl SaslBroker {
    fn start() -> SaslBroker {
        let extra = [
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{PORT},CONTROLLER://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{SASL_PORT}",
                PORT + 1
            ),
            format!("advertised.listeners=PLAINTEXT://127.0.0.1:{PORT},SASL_PLAINTEXT://127.0.0.1:{SASL_PORT}"),
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT".into(),
            "sasl.enabled.mechanisms=PLAIN".into(),
            "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"sidecar\" password=\"right-password\" user_sidecar=\"right-password\";".into(),
        ]
        .join("\n");
        kafka_script(PORT, &["stop"], &[]);
        kafka_script(PORT, &["start"], &[("KAFKA_EXTRA_PROPERTIES", &extra)]);
        SaslBroker
    }
}

impl Drop for SaslBroker {
    fn drop(&mut self) {
        kafka_script(PORT, &["stop"], &[]);
    }
}

fn sasl_config(topic: &str, password: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"127.0.0.1:{SASL_PORT}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{}\"\nstatistics_interval = \"1s\"\n\
         [kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanisms\" = \"PLAIN\"\n\
         \"sasl.username\" = \"sidecar\"\n\"sasl.password\" = \"{password}\"\n",
        unique_name("group")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sasl_password_is_the_reason_given() {
    let _broker = SaslBroker::start();
    let topic = unique_name("sasl");
    create_topic(&format!("127.0.0.1:{PORT}"), &topic, 1).await;

    let wrong = Service::start(&sasl_config(&topic, "wrong-password"));
    let mut last = (0, String::new());
    wrong.wait_until("readyz names the credentials", Duration::from_secs(60), || {
        last = readyz(&wrong);
        last.1.contains("credentials")
    });
    assert_eq!(last.0, 503, "{}", last.1);
    assert!(last.1.to_lowercase().contains("authentication"), "{}", last.1);
    assert!(
        !last.1.contains("wrong-password"),
        "the password is never shown: {}",
        last.1
    );
    // It stays the reason: the statistics' "no connection" does not hide it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(readyz(&wrong).1.contains("credentials"));

    // The same listener with the right password: ready, so the refusal above was the password.
    let right = Service::start(&sasl_config(&topic, "right-password"));
    right.wait_until("ready with the right password", Duration::from_secs(60), || {
        readyz(&right).0 == 200
    });
    assert!(right.stop().success());
    assert!(wrong.stop().success());
}
