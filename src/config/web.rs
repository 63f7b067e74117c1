//! `http.web_config_file`: the web config file of Prometheus's exporter toolkit, the one every
//! exporter built on it accepts (`--web.config.file`): TLS for the endpoints (with client
//! certificates), basic auth with bcrypt hashes, and security headers. Read and checked whole at
//! start, so that a bad file is refused with the file, the key and why; the certificate files
//! it names are read again by the exporter when they change.
//!
//! What this service does not do of the toolkit's format is refused rather than ignored where
//! ignoring it would let in more than the file says: `client_allowed_sans`, and client
//! certificates that are not verified (`RequestClientCert`, `RequireAnyClientCert`). Cipher
//! suites and curves are rustls's (TLS 1.2 and 1.3, its safe defaults); choosing them is refused.

use crate::setting::ConfigError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpServerFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerFile {
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The headers the exporter toolkit lets a web config set, and the values it allows (`None`:
/// any).
const HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// Who may be asked for a client certificate, as the toolkit's `client_auth_type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default).
    None,
    /// `VerifyClientCertIfGiven`.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`.
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// TLS for the endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

/// A web config file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name -> bcrypt hash. Empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Headers added to every response.
    pub headers: Vec<(String, String)>,
}

impl WebConfig {
    /// Reads and checks `path`. Relative paths in it are taken from its folder, as the toolkit does.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::at("http.web_config_file", format!("cannot read {source}: {e}")))?;
        WebConfig::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|e| e.in_source(source))
    }

    fn parse(text: &str, folder: &Path) -> Result<WebConfig, ConfigError> {
        let file: WebConfigFile = match text.trim() {
            "" => WebConfigFile::default(),
            _ => serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::at(
                    if key == "." { "(top level)".into() } else { key },
                    e.inner().to_string(),
                )
            })?,
        };
        let tls = file
            .tls_server_config
            .map(|tls| tls_settings(tls, folder))
            .transpose()?;
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') {
                return Err(ConfigError::at(
                    format!("basic_auth_users.{user}"),
                    "a user name cannot contain `:` (basic auth could not send it)",
                ));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(ConfigError::at(
                    format!("basic_auth_users.{user}"),
                    "is not a bcrypt hash (`$2y$10$...`; `htpasswd -nBC 10 \"\" | tr -d ':\\n'` makes one)",
                ));
            }
        }
        let mut headers = Vec::new();
        // `http2` is taken and has no effect: the endpoints speak HTTP/1.1, as Prometheus scrapes.
        let http = file.http_server_config.unwrap_or_default();
        for (name, value) in http.headers.unwrap_or_default() {
            let key = format!("http_server_config.headers.{name}");
            let Some((canonical, allowed)) = HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(&name)) else {
                let names: Vec<&str> = HEADERS.iter().map(|(h, _)| *h).collect();
                return Err(ConfigError::at(
                    key,
                    format!("is not a header a web config may set ({})", names.join(", ")),
                ));
            };
            if let Some(allowed) = allowed {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
                    return Err(ConfigError::at(key, format!("must be one of {}", allowed.join(", "))));
                }
            }
            if axum::http::HeaderValue::from_str(&value).is_err() {
                return Err(ConfigError::at(key, "is not a valid header value".to_string()));
            }
            headers.push((canonical.to_string(), value));
        }
        Ok(WebConfig { tls, users, headers })
    }
}

fn tls_settings(tls: TlsFile, folder: &Path) -> Result<TlsSettings, ConfigError> {
    let at = |key: &str, why: String| ConfigError::at(format!("tls_server_config.{key}"), why);
    for (key, set) in [
        ("cipher_suites", tls.cipher_suites.is_some()),
        ("curve_preferences", tls.curve_preferences.is_some()),
        ("prefer_server_cipher_suites", tls.prefer_server_cipher_suites.is_some()),
    ] {
        if set {
            return Err(at(
                key,
                "is not supported: the service uses rustls's cipher suites and curves for TLS 1.2 and 1.3".into(),
            ));
        }
    }
    if tls.client_allowed_sans.is_some() {
        return Err(at(
            "client_allowed_sans",
            "is not supported: every client certificate the client CA signed is accepted".into(),
        ));
    }
    let path = |value: Option<String>| value.map(|v| folder.join(v));
    let cert_file = path(tls.cert_file).ok_or_else(|| at("cert_file", "is required for TLS".into()))?;
    let key_file = path(tls.key_file).ok_or_else(|| at("key_file", "is required for TLS".into()))?;
    read_certificates(&cert_file).map_err(|why| at("cert_file", why))?;
    read_private_key(&key_file).map_err(|why| at("key_file", why))?;
    let client_auth = match tls.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::Require,
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(at(
                "client_auth_type",
                "is not supported: client certificates are always verified against client_ca_file".into(),
            ))
        }
        other => {
            return Err(at(
                "client_auth_type",
                format!("{other:?} is not one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"),
            ))
        }
    };
    let client_ca_file = path(tls.client_ca_file);
    match (&client_ca_file, client_auth) {
        (Some(ca), _) => {
            read_certificates(ca).map_err(|why| at("client_ca_file", why))?;
        }
        (None, ClientAuth::None) => {}
        (None, _) => return Err(at("client_ca_file", "is required to verify client certificates".into())),
    }
    let version = |key: &str, value: Option<String>, default: TlsVersion| match value.as_deref() {
        None => Ok(default),
        // Older versions are never served: rustls speaks 1.2 and 1.3 only.
        Some("TLS10" | "TLS11" | "TLS12") if key == "min_version" => Ok(TlsVersion::Tls12),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(other) => Err(at(key, format!("{other:?} is not one of TLS12, TLS13"))),
    };
    let min_version = version("min_version", tls.min_version, TlsVersion::Tls12)?;
    let max_version = version("max_version", tls.max_version, TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err(at("min_version", "is above max_version".into()));
    }
    Ok(TlsSettings {
        cert_file,
        key_file,
        client_auth,
        client_ca_file,
        min_version,
        max_version,
    })
}

/// The certificates of a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certificates: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    match certificates.is_empty() {
        true => Err(format!("{} holds no certificate", path.display())),
        false => Ok(certificates),
    }
}

/// The private key of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut &bytes[..])
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{} holds no private key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> ConfigError {
        WebConfig::parse(text, Path::new("/nonexistent")).expect_err("refused")
    }

    #[test]
    fn a_file_with_users_and_headers_reads() {
        let config = WebConfig::parse(
            "basic_auth_users:\n  prometheus: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze\n\
             http_server_config:\n  headers:\n    x-frame-options: deny\n",
            Path::new("."),
        )
        .unwrap();
        assert!(config.tls.is_none());
        assert!(config.users.contains_key("prometheus"));
        assert_eq!(config.headers, [("X-Frame-Options".to_string(), "deny".to_string())]);
        assert_eq!(WebConfig::parse("", Path::new(".")).unwrap().users.len(), 0);
    }

    #[test]
    fn a_bad_file_is_refused_with_the_key_and_why() {
        for (text, key, why) in [
            (
                "basic_auth_users:\n  alice: hunter2\n",
                "basic_auth_users.alice",
                "bcrypt",
            ),
            (
                "tls_server_config:\n  cert_file: a.crt\n",
                "tls_server_config.key_file",
                "required",
            ),
            (
                "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n",
                "tls_server_config.cert_file",
                "cannot read",
            ),
            (
                "tls_server_config:\n  client_allowed_sans: [a]\n",
                "tls_server_config.client_allowed_sans",
                "not supported",
            ),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "http_server_config.headers.Server",
                "not a header",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "http_server_config.headers.X-Frame-Options",
                "one of",
            ),
            ("basic_auth_user:\n  a: b\n", "basic_auth_user", "unknown field"),
            (
                "tls_server_config:\n  cert_fil: a\n",
                "tls_server_config.cert_fil",
                "unknown field",
            ),
        ] {
            let error = refused(text);
            assert_eq!(error.key, key, "{text}: {error}");
            assert!(error.why.contains(why), "{text}: {error}");
        }
    }
}
