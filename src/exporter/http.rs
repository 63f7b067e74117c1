//! `/metrics`, `/healthz` and `/readyz`.

use super::{exposition, WindowEnd};
use crate::pipeline::{now_nanos, Pipeline};
use crate::source::kafka::ConsumerHealth;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Clone)]
struct Endpoints {
    pipeline: Pipeline,
    health: Arc<ConsumerHealth>,
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    pipeline: Pipeline,
    health: Arc<ConsumerHealth>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { pipeline, health });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn metrics(State(endpoints): State<Endpoints>) -> axum::response::Response {
    // Rendering 10,000 workflows takes milliseconds of CPU: keep it off the async workers.
    let pipeline = endpoints.pipeline.clone();
    match tokio::task::spawn_blocking(move || exposition(&pipeline, WindowEnd::At(now_nanos()))).await {
        Ok(body) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            body,
        )
            .into_response(),
        // A scrape must fail visibly rather than look like an empty target.
        Err(error) => {
            tracing::error!(%error, "rendering /metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering failed: {error}\n"),
            )
                .into_response()
        }
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    match endpoints.health.not_ready_because() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
