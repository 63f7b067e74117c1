//! `http.web_config_file` (the exporter toolkit's format) against Debian's real Prometheus: a
//! scrape over TLS with the right basic-auth credentials is up; wrong credentials and plain HTTP
//! are refused and `up` says so. The probes answer without credentials, a renewed certificate
//! is served without a restart, and a bad file is refused at start with the file, the key and why.

mod common;

use common::prometheus::PrometheusServer;
use common::*;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// `openssl` with `args`, run in `dir`; it must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// `openssl req` arguments for a new P-256 key, unencrypted.
const NEW_EC_KEY: [&str; 6] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-batch",
];

/// A self-signed certificate for 127.0.0.1 (`name` tells renewals apart), as `cert.pem` and
/// `key.pem` in `dir`.
fn self_signed(dir: &Path, name: &str) {
    let subject = format!("/CN={name}");
    let mut args = vec!["req", "-x509", "-days", "2"];
    args.extend(NEW_EC_KEY);
    args.extend(["-subj", &subject, "-addext", "subjectAltName=IP:127.0.0.1"]);
    args.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
    args.extend(["-addext", "extendedKeyUsage=serverAuth"]);
    args.extend(["-keyout", "key.pem.new", "-out", "cert.pem.new"]);
    openssl(dir, &args);
    // Both files replaced at once, as a certificate manager renews them.
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem")).unwrap();
}

/// A GET over TLS trusting only `ca` (a PEM file): the status line's code, and the
/// certificate's subject common name the server presented.
fn https_get(port: u16, path: &str, ca: &Path, auth: Option<&str>) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).map_err(|e| e.to_string())?;
    for certificate in rustls_pemfile::certs(&mut &pem[..]) {
        roots
            .add(certificate.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), server).map_err(|e| e.to_string())?;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
    let authorization = auth.map_or_else(String::new, |a| format!("Authorization: Basic {a}\r\n"));
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{authorization}\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let subject = (connection.peer_certificates())
        .and_then(|chain| chain.first())
        .map(|c| String::from_utf8_lossy(c.as_ref()).into_owned())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no answer: {text}"))?;
    Ok((status, subject))
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("web-config"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The service on a topic of its own, with `dir/web.yml` as its web config file.
fn start_with_web_config(dir: &Path, topic_prefix: &str) -> Service {
    let brokers = shared_brokers();
    let topic = unique_name(topic_prefix);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create_topic(&brokers, &topic, 1));
    Service::start_tls(
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{}\"\n",
            unique_name("group")
        ),
        &format!("web_config_file = {:?}", dir.join("web.yml").display().to_string()),
    )
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_is_refused_without() {
    let dir = temp_dir();
    self_signed(&dir, "first-certificate");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n\
             basic_auth_users:\n  prometheus: {hash}\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        ),
    )
    .unwrap();
    let service = start_with_web_config(&dir, "tls");
    let ca = dir.join("cert.pem");
    // "prometheus:s3cret" and "prometheus:wrong".
    let (good, wrong) = ("cHJvbWV0aGV1czpzM2NyZXQ=", "cHJvbWV0aGV1czp3cm9uZw==");
    assert_eq!(https_get(service.port, "/metrics", &ca, Some(good)).unwrap().0, 200);
    assert_eq!(https_get(service.port, "/metrics", &ca, Some(wrong)).unwrap().0, 401);
    assert_eq!(https_get(service.port, "/metrics", &ca, None).unwrap().0, 401);
    assert_eq!(
        https_get(service.port, "/healthz", &ca, None).unwrap().0,
        200,
        "probes need no credentials"
    );
    assert!(
        matches!(service.get("/healthz"), Err(_) | Ok((0 | 400.., _))),
        "plain HTTP is not served"
    );

    let target = format!("127.0.0.1:{}", service.port);
    let job = |name: &str, scheme: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: {scheme}\n    tls_config:\n      ca_file: {ca:?}\n    \
             basic_auth:\n      username: prometheus\n      password: {password}\n    static_configs:\n      - targets: [{target:?}]\n",
            ca = ca.display().to_string()
        )
    };
    let scrape = [
        job("good", "https", "s3cret"),
        job("wrong", "https", "nope"),
        job("plain", "http", "s3cret"),
    ]
    .concat();
    let prometheus = PrometheusServer::start_scraping(&target, &scrape, &[], Duration::from_secs(1), &[]);
    let up = |job: &str| {
        prometheus
            .query(&format!("up{{job=\"{job}\"}}"))
            .first()
            .map(|(_, v)| *v)
    };
    service.wait_until("Prometheus has scraped all three jobs", Duration::from_secs(60), || {
        ["good", "wrong", "plain"].iter().all(|job| up(job).is_some())
    });
    assert_eq!(up("good"), Some(1.0), "TLS with the right credentials");
    assert_eq!(up("wrong"), Some(0.0), "wrong credentials");
    assert_eq!(up("plain"), Some(0.0), "plain HTTP");
    let scraped = prometheus.query("hatchet_run_metrics_build_info{job=\"good\"}");
    assert_eq!(scraped.len(), 1, "the good job stored what it scraped");

    // A renewed certificate is served without a restart.
    self_signed(&dir, "renewed-certificate");
    service.wait_until("the renewed certificate is served", Duration::from_secs(30), || {
        https_get(service.port, "/healthz", &ca, None).is_ok_and(|(_, subject)| subject.contains("renewed-certificate"))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_web_config_is_refused_at_start_with_the_file_the_key_and_why() {
    let dir = temp_dir();
    std::fs::write(dir.join("web.yml"), "basic_auth_users:\n  prometheus: hunter2\n").unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nweb_config_file = {:?}\n",
            dir.join("web.yml").display().to_string()
        ),
    )
    .unwrap();
    for command in ["check-config", "run"] {
        let output = binary(&["--config", config.to_str().unwrap(), command]);
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: {said}");
        assert!(
            said.contains("web.yml") && said.contains("basic_auth_users.prometheus") && said.contains("bcrypt"),
            "{command}: {said}"
        );
        assert!(!said.contains("hunter2"), "{command} printed the bad value: {said}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA (`ca.pem`, `ca.key`) and a client certificate it signed (`client.pem`, `client.key`).
fn client_ca_and_certificate(dir: &Path) {
    let mut ca = vec!["req", "-x509", "-days", "2"];
    ca.extend(NEW_EC_KEY);
    ca.extend(["-subj", "/CN=test-client-ca", "-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut request = vec!["req"];
    request.extend(NEW_EC_KEY);
    request.extend(["-subj", "/CN=prometheus", "-keyout", "client.key", "-out", "client.csr"]);
    openssl(dir, &request);
    std::fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.ext",
            "-out",
            "client.pem",
        ],
    );
}

#[test]
fn mutual_tls_lets_in_only_the_clients_the_client_ca_signed() {
    let dir = temp_dir();
    self_signed(&dir, "server");
    client_ca_and_certificate(&dir);
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    )
    .unwrap();
    let service = start_with_web_config(&dir, "mtls");
    let target = format!("127.0.0.1:{}", service.port);
    let path = |name: &str| dir.join(name).display().to_string();
    let scrape = format!(
        "  - job_name: with_certificate\n    scheme: https\n    tls_config:\n      ca_file: {server:?}\n      cert_file: {cert:?}\n      key_file: {key:?}\n    static_configs:\n      - targets: [{target:?}]\n\
         \x20 - job_name: without\n    scheme: https\n    tls_config:\n      ca_file: {server:?}\n    static_configs:\n      - targets: [{target:?}]\n",
        server = path("cert.pem"),
        cert = path("client.pem"),
        key = path("client.key"),
    );
    let prometheus = PrometheusServer::start_scraping(&target, &scrape, &[], Duration::from_secs(1), &[]);
    let up = |job: &str| {
        prometheus
            .query(&format!("up{{job=\"{job}\"}}"))
            .first()
            .map(|(_, v)| *v)
    };
    service.wait_until("Prometheus has scraped both jobs", Duration::from_secs(60), || {
        up("with_certificate").is_some() && up("without").is_some()
    });
    assert_eq!(up("with_certificate"), Some(1.0), "{}", prometheus.log_text());
    assert_eq!(up("without"), Some(0.0));
    let _ = std::fs::remove_dir_all(&dir);
}
