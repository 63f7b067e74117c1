//! Hostile HTTP clients against the real service: clients that ask for a large `/metrics` page and
//! never read it, slowloris clients, connections left idle, and more connections than allowed.
//! The service's resident size must not grow with the number of clients, and every limit must
//! close what it is meant to close, with a normal scrape still answered afterwards.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const TENANT: &str = "707d0855-80ab-4e1f-a156-f1c4546cbf52";
const MIB: u64 = 1 << 20;

fn config(brokers: &str, topic: &str) -> String {
    format!("[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{topic}\"\n")
}

/// A topic holding one COMPLETED run of each of `workflows` workflows: with the default 22
/// buckets, about 22 KB of `/metrics` per workflow.
async fn topic_with_workflows(brokers: &str, workflows: usize) -> String {
    let topic = unique_name("http-hostile");
    create_topic(brokers, &topic, 1).await;
    if workflows == 0 {
        return topic;
    }
    let lines: Vec<String> = (0..workflows)
        .map(|i| {
            json!({
                "metadata": {"id": format!("run-{i}"), "createdAt": "2026-08-22T14:00:00Z", "updatedAt": "2026-08-22T14:00:03Z"},
                "status": "COMPLETED", "tenantId": TENANT,
                "workflowId": format!("0b7e2d3c-4f1a-4c55-8d2e-{i:012x}"), "displayName": format!("wf-{i}-1787407391482"),
                "workflowVersionId": "c4d1e8f2-93b0-4a6e-b1d7-2f5e8a0c9d13",
                "startedAt": "2026-08-22T14:00:01Z", "finishedAt": "2026-08-22T14:00:03Z",
                "createdAt": "2026-08-22T14:00:00Z", "duration": 2000,
                "input": {}, "output": {}, "additionalMetadata": {}, "errorMessage": "",
            })
            .to_string()
        })
        .collect();
    let file = std::env::temp_dir().join(format!("{topic}.jsonl"));
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_string_lossy().to_string();
    let produced = binary(&["produce", &path, "--brokers", brokers, "--topic", &topic]);
    let _ = std::fs::remove_file(&file);
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    topic
}

/// `/metrics`, which must answer 200.
fn scrape(service: &Service) -> String {
    let (status, body) = service.get("/metrics").expect("scrape");
    assert_eq!(status, 200, "{}", &body[..body.len().min(2000)]);
    body
}

/// The value of `series` (name and labels as exposed) in a scrape; cheaper than parsing a large page.
fn sample(body: &str, series: &str) -> f64 {
    (body.lines())
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}"))
}

/// Sends `GET /metrics` and will never read the answer. Its receive window is small, so the
/// kernel buffers little of the page and the service must hold the rest.
async fn never_reading_client(port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_share_pages_and_memory_stays_bounded() {
    const MAX_PAGES: u64 = 3;
    let brokers = shared_brokers();
    let topic = topic_with_workflows(&brokers, 1000).await;
    let service = Service::start_with_http(
        &config(&brokers, &topic),
        "max_connections = 300\nwrite_timeout = \"20s\"\npage_max_age = \"1s\"\nmax_pages = 3",
    );
    service.wait_for_consumed(1000.0);
    let page = scrape(&service).len() as u64;
    assert!(page > 15_000_000, "the page should be large, it is {page} bytes");
    let baseline = service.resident_bytes();
    // At most MAX_PAGES pages held, one more for the text and snapshot of a render in progress,
    // and some slack for the connections themselves: nothing that grows with the page count.
    let bound = baseline + (MAX_PAGES + 1) * page + 48 * MIB;

    let mut clients = Vec::new();
    let mut measured = Vec::new();
    for count in [50, 200] {
        while clients.len() < count {
            clients.push(never_reading_client(service.port).await);
        }
        service.wait_until(
            &format!("{count} clients are connected"),
            Duration::from_secs(30),
            || sample(&scrape(&service), "hatchet_run_metrics_http_connections_open") > count as f64,
        );
        // Their responses are being written (and stall): sample the resident size for a while.
        std::thread::sleep(Duration::from_secs(2));
        let mut resident = 0;
        for _ in 0..5 {
            resident = resident.max(service.resident_bytes());
            std::thread::sleep(Duration::from_millis(400));
        }
        measured.push((count, resident));
        eprintln!(
            "page {:.1} MB, baseline {} MiB, {count} never-reading clients: {} MiB resident (bound {} MiB)",
            page as f64 / 1e6,
            baseline / MIB,
            resident / MIB,
            bound / MIB
        );
    }
    let body = scrape(&service);
    assert_eq!(
        sample(
            &body,
            "hatchet_run_metrics_http_connections_timed_out_total{timeout=\"write\"}"
        ),
        0.0,
        "the clients must still have been held while measured (write_timeout is 20s)"
    );
    for (count, resident) in measured {
        assert!(
            resident <= bound,
            "{count} never-reading clients took the service to {} MiB resident, over {} MiB \
             (baseline {} MiB + {MAX_PAGES}+1 pages of {} MiB + 48 MiB)",
            resident / MIB,
            bound / MIB,
            baseline / MIB,
            page / MIB
        );
    }

    // The write timeout then frees every one of them.
    service.wait_until("the write timeout closes the clients", Duration::from_secs(90), || {
        let body = scrape(&service);
        sample(
            &body,
            "hatchet_run_metrics_http_connections_timed_out_total{timeout=\"write\"}",
        ) >= 200.0
            && sample(&body, "hatchet_run_metrics_http_connections_open") == 1.0
    });
    drop(clients);
    let body = scrape(&service);
    assert!(
        body.contains("workflow=\"wf-999\""),
        "a normal scrape still shows the workflows"
    );
}

/// What became of a connection the test kept open.
#[derive(Debug, PartialEq)]
enum Fate {
    /// The service closed it (end of stream, or a reset).
    Closed,
    /// The service answered something instead.
    Answered(String),
    /// Still open when the test stopped waiting.
    StillOpen,
}

/// Reads until the service closes the connection, for at most `limit`.
fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> Fate {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(0) => Fate::Closed,
        Ok(n) => Fate::Answered(String::from_utf8_lossy(&buf[..n]).to_string()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Fate::StillOpen,
        Err(_) => Fate::Closed,
    }
}

/// A slowloris: one more header line every 500 ms, never the blank line that ends the request,
/// for at most 30 s (a per-read timeout would never close it; hyper's 100-header limit would take
/// 50 s). How the service ended it.
fn slowloris(mut stream: TcpStream) -> Fate {
    stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 4096];
    for i in 0..60 {
        if stream.write_all(format!("x-slow-{i}: 1\r\n").as_bytes()).is_err() {
            return Fate::Closed;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Fate::Closed,
            Ok(n) => return Fate::Answered(String::from_utf8_lossy(&buf[..n]).to_string()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Fate::Closed,
        }
    }
    Fate::StillOpen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_idle_connections_and_connections_beyond_the_cap_are_closed() {
    let brokers = shared_brokers();
    let topic = topic_with_workflows(&brokers, 0).await;
    let service = Service::start_with_http(
        &config(&brokers, &topic),
        "max_connections = 8\nheader_read_timeout = \"5s\"",
    );
    let body = scrape(&service);
    assert_eq!(sample(&body, "hatchet_run_metrics_http_connections_open"), 1.0);
    // Let the connection of that scrape give its slot back.
    std::thread::sleep(Duration::from_millis(500));
    let connect = || TcpStream::connect(("127.0.0.1", service.port)).unwrap();

    // Eight connections take the eight slots: a kept-alive one that got its answer and says
    // nothing more, one that never says anything, and six that never finish their headers.
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).ends_with("\r\n\r\nok\n") {
        let n = idle.read(&mut buf).unwrap();
        assert!(n > 0, "healthz answered {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let mut silent = connect();
    let slow: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut stream = connect();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            stream
        })
        .collect();

    // A ninth is answered 503 and closed at once, well within the header timeout of the others.
    let mut ninth = connect();
    ninth.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut refusal = String::new();
    let _ = ninth.read_to_string(&mut refusal);
    assert!(
        refusal.starts_with("HTTP/1.1 503") && refusal.contains("too many connections"),
        "{refusal:?}"
    );

    // The header timeout closes all eight.
    let slowloris: Vec<_> = slow
        .into_iter()
        .map(|s| std::thread::spawn(move || slowloris(s)))
        .collect();
    assert_eq!(
        wait_for_close(&mut silent, Duration::from_secs(30)),
        Fate::Closed,
        "silent"
    );
    assert_eq!(
        wait_for_close(&mut idle, Duration::from_secs(30)),
        Fate::Closed,
        "idle keep-alive"
    );
    for fate in slowloris {
        assert_eq!(fate.join().unwrap(), Fate::Closed, "slowloris");
    }

    let body = scrape(&service);
    assert!(sample(&body, "hatchet_run_metrics_http_connections_refused_total") >= 1.0);
    // The silent one and the six slow ones; the kept-alive one closed while idle after its
    // answer is an ordinary close (Prometheus scraping less often than the timeout), not counted.
    assert_eq!(
        sample(
            &body,
            "hatchet_run_metrics_http_connections_timed_out_total{timeout=\"header_read\"}"
        ),
        7.0,
        "{}",
        body.lines()
            .filter(|l| l.contains("_http_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        sample(
            &body,
            "hatchet_run_metrics_http_connections_timed_out_total{timeout=\"write\"}"
        ),
        0.0
    );
    let (status, text) = service.get("/healthz").unwrap();
    assert_eq!((status, text.as_str()), (200, "ok\n"));
    let log = service.log_text();
    assert!(log.contains("refused an HTTP connection"), "{log}");
    assert!(log.contains("closed an HTTP connection that timed out"), "{log}");
}
