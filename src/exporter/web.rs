//! What `http.web_config_file` asks of the endpoints: TLS (its certificate read again when its
//! files change, as the exporter toolkit does, so that a renewed certificate needs no restart),
//! basic auth for `/metrics`, and the headers every response carries.

use crate::config::web::{read_certificates, read_private_key, ClientAuth, TlsSettings, TlsVersion, WebConfig};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use rustls::crypto::ring::{default_provider, sign::any_supported_type};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are looked at again (a `stat` each), at most.
const RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The endpoints' protection, built from a checked [`WebConfig`].
pub struct WebSecurity {
    pub tls: Option<TlsAcceptor>,
    pub access: Access,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebSecurity {
    /// The protection `web` asks for (none: plain HTTP, open).
    pub fn new(web: Option<&WebConfig>) -> Result<WebSecurity, String> {
        let Some(web) = web else {
            return Ok(WebSecurity {
                tls: None,
                access: Access::open(),
                headers: Vec::new(),
            });
        };
        let headers = (web.headers.iter())
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        Ok(WebSecurity {
            tls: web.tls.as_ref().map(acceptor).transpose()?.map(TlsAcceptor::from),
            access: Access {
                users: web.users.clone().into_iter().collect(),
                granted: Mutex::new(HashSet::new()),
                keys: RandomState::new(),
            },
            headers,
        })
    }
}

fn acceptor(tls: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (tls.min_version..=tls.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (&tls.client_ca_file, tls.client_auth) {
        (Some(ca), auth) if auth != ClientAuth::None => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(ca)? {
                roots.add(certificate).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::VerifyIfGiven => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("{}: {e}", ca.display()))?)
        }
        _ => builder.with_no_client_auth(),
    };
    let certificate = ReloadingCertificate::new(tls.cert_file.clone(), tls.key_file.clone())?;
    let mut config = builder.with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate and key, read again when either file's modification time changes (looked at
/// once a second at most, on a handshake). A file that cannot be read keeps the last good pair.
#[derive(Debug)]
struct ReloadingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    modified: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingCertificate {
    fn new(cert_file: PathBuf, key_file: PathBuf) -> Result<ReloadingCertificate, String> {
        let modified = modified(&cert_file, &key_file);
        let key = load(&cert_file, &key_file)?;
        Ok(ReloadingCertificate {
            cert_file,
            key_file,
            current: Mutex::new(Loaded {
                key,
                modified,
                checked: Instant::now(),
            }),
        })
    }
}

fn modified(cert_file: &Path, key_file: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let of = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (of(cert_file), of(key_file))
}

fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certificates = read_certificates(cert_file)?;
    let key = read_private_key(key_file)?;
    let signing = any_supported_type(&key).map_err(|e| format!("{}: {e}", key_file.display()))?;
    Ok(Arc::new(CertifiedKey::new(certificates, signing)))
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.checked.elapsed() >= RELOAD_CHECK {
            current.checked = Instant::now();
            let now = modified(&self.cert_file, &self.key_file);
            if now != current.modified {
                match load(&self.cert_file, &self.key_file) {
                    Ok(key) => {
                        tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                        current.key = key;
                        current.modified = now;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the TLS certificate changed but cannot be used; keeping the previous one");
                    }
                }
            }
        }
        Some(current.key.clone())
    }
}

/// Basic auth for `/metrics`: users and their bcrypt hashes. Checking a hash costs tens of
/// milliseconds on purpose; a pair that passed once is remembered (by a keyed hash, never the
/// password itself) so that a scrape every few seconds costs nothing.
pub struct Access {
    users: std::collections::HashMap<String, String>,
    granted: Mutex<HashSet<u64>>,
    keys: RandomState,
}

/// At most this many granted pairs are remembered (each a changed password, or another user).
const GRANTED_CAP: usize = 1024;

impl Access {
    fn open() -> Access {
        Access {
            users: std::collections::HashMap::new(),
            granted: Mutex::new(HashSet::new()),
            keys: RandomState::new(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `headers` carry the credentials of a user. Run it on a blocking thread: a bcrypt
    /// check is slow.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.is_open() {
            return true;
        }
        let Some((user, password)) = basic_credentials(headers) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        let key = self.keys.hash_one((&user, &password, hash));
        let mut granted = self.granted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if granted.contains(&key) {
            return true;
        }
        drop(granted);
        let allowed = bcrypt::verify(&password, hash).unwrap_or(false);
        if allowed {
            granted = self.granted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if granted.len() >= GRANTED_CAP {
                granted.clear();
            }
            granted.insert(key);
        }
        allowed
    }
}

/// `Authorization: Basic base64(user:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Standard base64 with padding, as basic auth sends it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_auth_checks_the_bcrypt_hash_and_remembers_a_pass() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let access = Access {
            users: [("prometheus".to_string(), hash)].into_iter().collect(),
            ..Access::open()
        };
        // "prometheus:s3cret", "prometheus:wrong", "nobody:s3cret"
        assert!(access.allows(&with_authorization("Basic cHJvbWV0aGV1czpzM2NyZXQ=")));
        assert!(access.allows(&with_authorization("basic cHJvbWV0aGV1czpzM2NyZXQ=")));
        assert!(!access.allows(&with_authorization("Basic cHJvbWV0aGV1czp3cm9uZw==")));
        assert!(!access.allows(&with_authorization("Basic bm9ib2R5OnMzY3JldA==")));
        assert!(!access.allows(&with_authorization("Bearer cHJvbWV0aGV1czpzM2NyZXQ=")));
        assert!(!access.allows(&with_authorization("Basic !!!")));
        assert!(!access.allows(&HeaderMap::new()));
        assert_eq!(access.granted.lock().unwrap().len(), 1);
        assert!(Access::open().allows(&HeaderMap::new()));
    }

    #[test]
    fn base64_decodes_what_clients_send() {
        assert_eq!(base64_decode("YTpi").unwrap(), b"a:b");
        assert_eq!(base64_decode("YTpiYw==").unwrap(), b"a:bc");
        assert_eq!(base64_decode("YTpiYzE=").unwrap(), b"a:bc1");
        assert!(base64_decode("YTpiY").is_none());
    }
}
