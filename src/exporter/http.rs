//! `/metrics`, `/healthz` and `/readyz`, served so that nothing a client does can make the
//! service hold more than the `[http]` limits allow.
//!
//! - The `/metrics` page (the workflow metrics, nearly all of it) is rendered once and shared by
//!   the scrapes of about the same time, and at most `http.max_pages` pages are held however many
//!   clients there are ([`super::page`]). The service's own metrics, a few kilobytes, follow it
//!   fresh in every response: they stay current even while slow clients hold the pages.
//! - At most `http.max_connections` connections are served; a further one is answered 503 and
//!   closed at once, never queued.
//! - A client that has not sent complete request headers within `http.header_read_timeout`
//!   (counted from the connection, or from the end of the previous response) is disconnected, and
//!   so is one whose response makes no progress for `http.write_timeout`.
//!
//! - A `/metrics` response counts as delivered once its last byte has been written to the
//!   client's socket (a flush after hyper was handed the whole body succeeded); only then is the
//!   service told the positions its page shows ([`Service::scrape_delivered`]), so that the
//!   source commits exactly what a scrape saw.
//!
//! axum routes the requests; hyper's connections are driven here because `axum::serve` has none
//! of these limits.

use super::format::Format;
use super::gzip;
use super::page::{PageBudget, PageLimits, RenderFailed, Served, SharedPages};
use super::web::{Access, WebSecurity};
use super::{service_exposition, workflow_exposition, WindowEnd, WorkflowPage};
use crate::config::HttpConfig;
use crate::events::{
    HttpAcceptFailed, HttpConnectionClosed, HttpConnectionOpened, HttpConnectionRefused, HttpTimeout,
    MetricsPageRendered, StaleMetricsPageServed,
};
use crate::ids::Positions;
use crate::pipeline::now_nanos;
use crate::service::Service;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

/// Requests with larger headers are answered 431.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Credentials checked at once, at most (see `Endpoints::auth_checks`).
const AUTH_CHECKS: usize = 2;

/// At shutdown, responses still being written get this long before their connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The answer to a connection beyond `http.max_connections`; its body ends where the connection does.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
connection: close\r\n\
\r\n\
too many connections (http.max_connections)\n";

#[derive(Clone)]
struct Endpoints {
    service: Service,
    /// One set of shared pages per format, plain and gzipped.
    pages: Arc<Vec<(Variant, SharedPages<Shown>)>>,
    max_pages: usize,
    /// Protobuf histograms keep their classic buckets (`http.protobuf_classic_buckets`).
    classic: bool,
    /// One filtered scrape (`?name[]=`) renders at a time: each is a render of its own.
    filtered: Arc<Semaphore>,
    /// Basic auth for `/metrics` (`http.web_config_file`).
    access: Arc<Access>,
    /// At most this many credentials are checked at once: a bcrypt check costs tens of
    /// milliseconds of CPU, and a flood of wrong passwords must not take every core.
    auth_checks: Arc<Semaphore>,
}

/// A page's format, and whether it is gzipped.
type Variant = (Format, bool);

/// What a shared page shows besides its bytes.
#[derive(Clone)]
struct Shown {
    positions: Positions,
    /// For a gzipped page: what its scrapes' own parts continue from.
    gzip: Option<gzip::SharedPart>,
}

impl Endpoints {
    fn pages(&self, format: Format, gzip: bool) -> &SharedPages<Shown> {
        let at = (self.pages.iter())
            .position(|(variant, _)| *variant == (format, gzip))
            .unwrap_or(0);
        &self.pages[at].1
    }
}

/// Serves until `shutdown` resolves, then lets responses in progress finish (for
/// `SHUTDOWN_GRACE` at most).
pub async fn serve(
    listener: TcpListener,
    limits: HttpConfig,
    security: WebSecurity,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let WebSecurity { tls, access, headers } = security;
    let telemetry = service.telemetry().clone();
    let page_limits = PageLimits {
        max_age: limits.page_max_age,
        max_pages: limits.max_pages,
    };
    // One cap for the pages of every format and encoding together.
    let budget = PageBudget::default();
    let pages = (Format::ALL.iter())
        .flat_map(|format| [(*format, false), (*format, true)])
        .map(|variant| (variant, SharedPages::sharing(page_limits, budget.clone())))
        .collect();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Endpoints {
            service,
            pages: Arc::new(pages),
            max_pages: limits.max_pages,
            classic: limits.protobuf_classic_buckets,
            filtered: Arc::new(Semaphore::new(1)),
            access: Arc::new(access),
            auth_checks: Arc::new(Semaphore::new(AUTH_CHECKS)),
        });
    // The web config's headers on every response.
    let headers = Arc::new(headers);
    let router = router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            let headers = headers.clone();
            async move {
                for (name, value) in headers.iter() {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
                response
            }
        },
    ));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A scrape's request is well under 1 KiB: hyper's default of 400 KiB for a request's
        // headers would let the connections at the cap hold 25 MiB.
        .max_buf_size(MAX_REQUEST_HEAD);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // A client that gave up before being accepted is no concern; anything else
                    // (out of file descriptors) is worth a pause before trying again.
                    if !matches!(error.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        HttpAcceptFailed { error: &error }.emit(&telemetry);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream);
            HttpConnectionRefused {
                peer,
                max_connections: limits.max_connections,
            }
            .emit(&telemetry);
            continue;
        };
        let activity = Arc::new(Activity::new());
        let client = ClientStream::new(stream, limits.write_timeout, activity.clone());
        let on_connection = activity.clone();
        let routes = router
            .clone()
            .map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(on_connection.clone());
                request
            });
        let watcher = connections.watcher();
        let telemetry = telemetry.clone();
        let header_read_timeout = limits.header_read_timeout;
        let (http1, tls) = (http1.clone(), tls.clone());
        HttpConnectionOpened.emit(&telemetry);
        tokio::spawn(async move {
            let service = TowerToHyperService::new(routes);
            let (timed_out, error) = match tls {
                None => {
                    let ended = watcher
                        .watch(http1.serve_connection(TokioIo::new(client), service))
                        .await;
                    (
                        activity.timed_out(&ended, header_read_timeout),
                        ended.err().map(|e| e.to_string()),
                    )
                }
                // The handshake is bounded like a request's headers.
                Some(tls) => match tokio::time::timeout(header_read_timeout, tls.accept(client)).await {
                    Ok(Ok(stream)) => {
                        let ended = watcher
                            .watch(http1.serve_connection(TokioIo::new(stream), service))
                            .await;
                        (
                            activity.timed_out(&ended, header_read_timeout),
                            ended.err().map(|e| e.to_string()),
                        )
                    }
                    Ok(Err(error)) => (None, Some(format!("TLS handshake failed: {error}"))),
                    Err(_) => (
                        Some(HttpTimeout::HeaderRead),
                        Some("no TLS handshake within http.header_read_timeout".to_string()),
                    ),
                },
            };
            drop(slot);
            HttpConnectionClosed {
                peer,
                timed_out,
                error: error.as_ref().map(|error| error as &dyn std::fmt::Display),
            }
            .emit(&telemetry);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "HTTP responses still in progress at shutdown were cut short");
    }
}

/// Answers 503 without waiting for anything, then closes.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSAL);
    // Reading what the client already sent makes the close a plain FIN: closing with unread data
    // would send a reset, which can discard the 503 before the client reads it.
    let mut sink = [0u8; 1024];
    for _ in 0..4 {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

async fn metrics(
    State(endpoints): State<Endpoints>,
    Extension(connection): Extension<Arc<Activity>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> axum::response::Response {
    if !endpoints.access.is_open() {
        let access = endpoints.access.clone();
        let asked = headers.clone();
        let Ok(_turn) = endpoints.auth_checks.clone().acquire_owned().await else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        if !tokio::task::spawn_blocking(move || access.allows(&asked))
            .await
            .unwrap_or(false)
        {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"hatchet-run-metrics\"")],
                "unauthorized\n",
            )
                .into_response();
        }
    }
    let header_text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    let format = Format::negotiate(header_text(header::ACCEPT));
    let gzipped = accepts_gzip(header_text(header::ACCEPT_ENCODING));
    if let Some(names) = filter(query.as_deref()) {
        return filtered(endpoints, format, gzipped, names).await;
    }
    let service = endpoints.service.clone();
    let classic = endpoints.classic;
    // Rendering 10,000 workflows takes milliseconds of CPU: `SharedPages` runs it on a blocking thread.
    let page = endpoints.pages(format, gzipped).get(move || {
        let started = Instant::now();
        let WorkflowPage { body, positions } =
            workflow_exposition(&service, WindowEnd::At(now_nanos()), format, classic);
        let (body, gzip) = match gzipped {
            true => {
                let (deflated, part) = gzip::shared_part(&body);
                (deflated, Some(part))
            }
            false => (body, None),
        };
        MetricsPageRendered {
            bytes: body.len(),
            seconds: started.elapsed().as_secs_f64(),
        }
        .emit(service.telemetry());
        (body, Shown { positions, gzip })
    });
    match page.await {
        Ok(page) => {
            if let Served::AtLimit { age } = page.served {
                StaleMetricsPageServed {
                    age,
                    max_pages: endpoints.max_pages,
                }
                .emit(endpoints.service.telemetry());
            }
            let own = service_exposition(endpoints.service.telemetry(), format);
            let own = match &page.shows.gzip {
                Some(part) => gzip::own_part(part, &own),
                None => own,
            };
            let body = ScrapeBody {
                shared: Some(page.body),
                own: Some(Bytes::from(own)),
                delivery: Some((
                    connection,
                    Delivery {
                        service: endpoints.service.clone(),
                        positions: page.shows.positions,
                    },
                )),
            };
            response(format, gzipped, axum::body::Body::new(body))
        }
        Err(error @ RenderFailed::Busy(_)) => {
            tracing::debug!(%error, "a scrape was refused");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response()
        }
        // A scrape must fail visibly rather than look like an empty target.
        Err(error) => {
            tracing::error!(%error, "rendering /metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
    }
}

/// A `/metrics` answer of `format`: its exact `Content-Type`, and `Vary`, since the same URL
/// answers in several formats and encodings.
fn response(format: Format, gzipped: bool, body: axum::body::Body) -> axum::response::Response {
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::VARY,
        header::HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, header::HeaderValue::from_static("gzip"));
    }
    response
}

/// Whether `Accept-Encoding` takes gzip (`gzip`, `x-gzip` or `*`, with a `q` above zero).
fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.unwrap_or_default().split(',').any(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = (parts.filter_map(|p| p.strip_prefix("q=")))
            .next()
            .map_or(1.0, |q| q.trim().parse().unwrap_or(0.0));
        matches!(coding.as_str(), "gzip" | "x-gzip" | "*") && q > 0.0
    })
}

/// The families a scrape asks for with `name[]=` (as Prometheus's Go client takes them), if any.
fn filter(query: Option<&str>) -> Option<Vec<String>> {
    let names: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "name[]")
        .map(|(_, value)| value.into_owned())
        .collect();
    (!names.is_empty()).then_some(names)
}

/// A scrape of some families only: rendered for it alone, one at a time, and not a delivery
/// (it does not show every count, so no commit follows it).
async fn filtered(endpoints: Endpoints, format: Format, gzipped: bool, names: Vec<String>) -> axum::response::Response {
    let Ok(_turn) = endpoints.filtered.clone().acquire_owned().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let service = endpoints.service.clone();
    let classic = endpoints.classic;
    let rendered = tokio::task::spawn_blocking(move || {
        let end = WindowEnd::At(now_nanos());
        let mut body = super::render_filtered(&service, end, format, classic, &|name| {
            names
                .iter()
                .any(|n| n == name || name.strip_suffix("_total") == Some(n.as_str()))
        });
        if gzipped {
            let (mut deflated, part) = gzip::shared_part(&body);
            deflated.extend(gzip::own_part(&part, b""));
            body = deflated;
        }
        body
    })
    .await;
    match rendered {
        Ok(body) => response(format, gzipped, axum::body::Body::from(body)),
        Err(error) => {
            tracing::error!(%error, "rendering a filtered /metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
    }
}

/// A `/metrics` response: the shared page, then this scrape's own part, neither copied.
struct ScrapeBody {
    shared: Option<Bytes>,
    own: Option<Bytes>,
    /// Handed to its connection once hyper has taken the whole body, to be told when it is written.
    delivery: Option<(Arc<Activity>, Delivery)>,
}

/// What a `/metrics` response tells the service once its last byte is written.
struct Delivery {
    service: Service,
    positions: Positions,
}

impl Drop for ScrapeBody {
    /// hyper lets go of a body once it has queued its last chunk, or when the client went away
    /// first: only a body it took whole is delivered, at its connection's next successful flush.
    fn drop(&mut self) {
        if let Some((connection, delivery)) = self.delivery.take() {
            if self.shared.is_none() && self.own.is_none() {
                *lock(&connection.delivering) = Some(delivery);
            }
        }
    }
}

impl http_body::Body for ScrapeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(
            (this.shared.take())
                .or_else(|| this.own.take())
                .map(|chunk| Ok(Frame::data(chunk))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.shared.is_none() && self.own.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let length = [&self.shared, &self.own]
            .iter()
            .flat_map(|chunk| chunk.as_ref())
            .map(Bytes::len)
            .sum::<usize>();
        SizeHint::with_exact(length as u64)
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    match endpoints.service.readiness().not_ready_because() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a connection's stream saw, read once the connection has ended to tell why it did.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` at which data last moved either way.
    last_moved_ms: AtomicU64,
    /// The client closed its side.
    client_closed: AtomicBool,
    /// The client sent something (a request) at some point.
    client_spoke: AtomicBool,
    /// The client sent something since the service last wrote: a request in progress.
    read_since_write: AtomicBool,
    /// A write made no progress for `http.write_timeout`.
    write_stalled: AtomicBool,
    /// A `/metrics` response whose body hyper has taken whole, until a flush has written it out.
    delivering: Mutex<Option<Delivery>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_moved_ms: AtomicU64::new(0),
            client_closed: AtomicBool::new(false),
            client_spoke: AtomicBool::new(false),
            read_since_write: AtomicBool::new(false),
            write_stalled: AtomicBool::new(false),
            delivering: Mutex::new(None),
        }
    }

    /// Everything written so far has reached the client's socket: a response waiting for that is
    /// delivered.
    fn flushed(&self) {
        let delivered = lock(&self.delivering).take();
        if let Some(Delivery { service, positions }) = delivered {
            service.scrape_delivered(&positions);
        }
    }

    fn moved(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_moved_ms.store(ms, Ordering::Relaxed);
    }

    /// Which timeout, if any, ended the connection.
    ///
    /// hyper ends a connection at its header timeout either with a timeout error or, when nothing
    /// at all had arrived, as if the client had left; so what the stream saw decides. Counted: a
    /// client that started a request and did not finish it, or never sent a byte and did not
    /// close. Not counted: a kept-alive connection closed while idle after its answers (Prometheus
    /// scraping less often than the timeout), an ordinary close.
    fn timed_out(&self, ended: &Result<(), hyper::Error>, header_read_timeout: Duration) -> Option<HttpTimeout> {
        if self.write_stalled.load(Ordering::Relaxed) {
            return Some(HttpTimeout::Write);
        }
        // Answered, then quiet: a kept-alive connection hyper closed while idle.
        let idle_after_answers =
            self.client_spoke.load(Ordering::Relaxed) && !self.read_since_write.load(Ordering::Relaxed);
        match ended {
            Err(error) if error.is_timeout() => (!idle_after_answers).then_some(HttpTimeout::HeaderRead),
            Err(_) => None,
            Ok(()) => {
                let quiet = self
                    .opened
                    .elapsed()
                    .saturating_sub(Duration::from_millis(self.last_moved_ms.load(Ordering::Relaxed)));
                let silent = !self.client_closed.load(Ordering::Relaxed)
                    && !self.client_spoke.load(Ordering::Relaxed)
                    && quiet >= header_read_timeout;
                silent.then_some(HttpTimeout::HeaderRead)
            }
        }
    }
}

/// An accepted connection whose writes fail with `TimedOut` once they have made no progress for
/// `write_timeout`: hyper has no write timeout, and a client that never reads would otherwise hold
/// its connection, and the page it asked for, for as long as it likes.
struct ClientStream {
    tcp: TcpStream,
    write_timeout: Duration,
    /// Started when a write finds the client's window full; reset by any progress.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    activity: Arc<Activity>,
}

impl ClientStream {
    fn new(tcp: TcpStream, write_timeout: Duration, activity: Arc<Activity>) -> ClientStream {
        ClientStream {
            tcp,
            write_timeout,
            stall: None,
            stalled: false,
            activity,
        }
    }

    /// `attempt` as the result of a write, unless writes have been stuck for `write_timeout`.
    fn limit_stall<T>(&mut self, cx: &mut Context<'_>, attempt: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if attempt.is_ready() {
            self.stalled = false;
            if let Poll::Ready(Ok(_)) = attempt {
                self.activity.read_since_write.store(false, Ordering::Relaxed);
                self.activity.moved();
            }
            return attempt;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = tokio::time::Instant::now() + self.write_timeout;
            match &mut self.stall {
                Some(stall) => stall.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = (self.stall.as_mut()).is_some_and(|stall| stall.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        self.activity.write_stalled.store(true, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for http.write_timeout",
        )))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            if buf.filled().len() == before {
                this.activity.client_closed.store(true, Ordering::Relaxed);
            } else {
                this.activity.client_spoke.store(true, Ordering::Relaxed);
                this.activity.read_since_write.store(true, Ordering::Relaxed);
                this.activity.moved();
            }
        }
        read
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.limit_stall(cx, attempt)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.limit_stall(cx, attempt)
    }

    /// Vectored: hyper then queues the shared page instead of copying it into its own buffer.
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    /// hyper flushes once it has written all it holds: what it was handed is then written.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.tcp).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            this.activity.flushed();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut this.tcp).poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = shut {
            this.activity.flushed();
        }
        shut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;
    use tokio::io::AsyncWriteExt;

    fn activity_opened_ago(ago: Duration) -> Activity {
        Activity {
            opened: Instant::now().checked_sub(ago).unwrap_or_else(Instant::now),
            ..Activity::new()
        }
    }

    #[test]
    fn why_a_connection_ended_is_told_from_what_its_stream_saw() {
        let timeout = Duration::from_secs(5);
        // Nothing moved and the client did not leave: hyper's header timeout ended it quietly.
        assert_eq!(
            activity_opened_ago(Duration::from_secs(6)).timed_out(&Ok(()), timeout),
            Some(HttpTimeout::HeaderRead)
        );
        let left = activity_opened_ago(Duration::from_secs(6));
        left.client_closed.store(true, Ordering::Relaxed);
        assert_eq!(left.timed_out(&Ok(()), timeout), None, "the client closed it");
        let recent = activity_opened_ago(Duration::from_secs(6));
        recent.moved();
        assert_eq!(
            recent.timed_out(&Ok(()), timeout),
            None,
            "closed right after a response"
        );
        let stalled = Activity::new();
        stalled.write_stalled.store(true, Ordering::Relaxed);
        assert_eq!(stalled.timed_out(&Ok(()), timeout), Some(HttpTimeout::Write));
    }

    #[tokio::test]
    async fn a_write_the_client_never_reads_fails_after_the_write_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let activity = Arc::new(Activity::new());
        let mut stream = ClientStream::new(accepted, Duration::from_millis(200), activity.clone());
        // Far more than the socket buffers of both ends hold.
        let page = vec![b'x'; 64 << 20];
        let written = tokio::time::timeout(Duration::from_secs(30), stream.write_all(&page)).await;
        let error = written.expect("the write timeout ends the write").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(activity.write_stalled.load(Ordering::Relaxed));
        drop(client);
    }

    #[test]
    fn a_scrape_body_is_the_shared_page_then_its_own_part() {
        let mut body = ScrapeBody {
            shared: Some(Bytes::from_static(b"workflows\n")),
            own: Some(Bytes::from_static(b"own\n")),
            delivery: None,
        };
        assert_eq!(body.size_hint().exact(), Some(14));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut chunks = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            chunks.push(frame.into_data().unwrap());
        }
        assert_eq!(chunks, [&b"workflows\n"[..], &b"own\n"[..]]);
        assert!(body.is_end_stream());
    }

    fn service() -> Service {
        Service::new(&crate::config::Config::default(), crate::aggregate::Clock::Wall).unwrap()
    }

    /// A message of partition 0 at `offset`, processed (rejected, but its position is recorded).
    fn process(service: &Service, offset: i64) {
        let origin = crate::events::MessageOrigin::Kafka {
            topic: "runs",
            partition: 0,
            offset,
        };
        let _ = service
            .pipeline()
            .process(Some(b"{}"), &origin, crate::ids::Partition(0), now_nanos());
    }

    #[test]
    fn a_body_the_client_did_not_take_whole_is_not_delivered() {
        let connection = Arc::new(Activity::new());
        let mut positions = Positions::default();
        positions.advance(crate::ids::Partition(0), 7);
        let mut body = ScrapeBody {
            shared: Some(Bytes::from_static(b"workflows\n")),
            own: Some(Bytes::from_static(b"own\n")),
            delivery: Some((
                connection.clone(),
                Delivery {
                    service: service(),
                    positions,
                },
            )),
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        drop(body);
        assert!(lock(&connection.delivering).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_read_to_its_end_tells_the_service_the_positions_its_page_showed() {
        let service = service();
        let mut delivered = service.delivered_scrapes();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            crate::config::Config::default().http,
            WebSecurity::new(None).unwrap(),
            service.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        process(&service, 41);
        let scrape = |port| async move {
            let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            client
                .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut answer)
                .await
                .unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        };
        assert!(scrape(port).await.starts_with("HTTP/1.1 200"));
        tokio::time::timeout(Duration::from_secs(10), delivered.changed())
            .await
            .expect("told within 10s")
            .unwrap();
        assert_eq!(delivered.borrow_and_update().get(crate::ids::Partition(0)), Some(42));
        // Processed after the page was rendered: the next scrape shows it.
        process(&service, 42);
        assert!(!delivered.has_changed().unwrap());
        assert!(scrape(port).await.starts_with("HTTP/1.1 200"));
        tokio::time::timeout(Duration::from_secs(10), delivered.changed())
            .await
            .expect("told within 10s")
            .unwrap();
        assert_eq!(delivered.borrow().get(crate::ids::Partition(0)), Some(43));
        let _ = stop.send(());
        server.await.unwrap();
    }
}
