//! HTTP routes and the TLS accept loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use deadpool_postgres::Pool;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use telecart_store::config::valid_device_id;
use telecart_store::wire::{Ack, ApiError, UploadBatch, idempotency_key};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::IngestError;
use crate::db::{self, Stored};
use crate::faults::Faults;
use crate::tls::common_name;

/// Largest batch accepted, in records.
pub const MAX_BATCH: usize = 10_000;
/// Largest request body accepted.
pub const MAX_BODY: usize = 64 << 20;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// PostgreSQL connections.
    pub pool: Pool,
    /// Fault injection (inactive unless a plan is set).
    pub faults: Arc<Faults>,
}

/// The authenticated device of a connection: its client certificate's common name.
#[derive(Clone, Debug)]
struct PeerDevice(Arc<str>);

fn error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    expected_seq: Option<u64>,
) -> Response {
    (
        status,
        axum::Json(ApiError {
            error: code.into(),
            message: message.into(),
            expected_seq,
        }),
    )
        .into_response()
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/devices/{device}/records", post(upload))
        .route("/v1/devices/{device}/ack", get(ack))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// `Some(answer)` if the connection's certificate may not act for `device`.
fn refuse(peer: &PeerDevice, device: &str) -> Option<Response> {
    if !valid_device_id(device) {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid device id",
            None,
        ));
    }
    if &*peer.0 != device {
        return Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "client certificate is not this device's",
            None,
        ));
    }
    None
}

async fn ack(
    State(st): State<AppState>,
    Extension(peer): Extension<PeerDevice>,
    Path(device): Path<String>,
) -> Response {
    if let Some(r) = refuse(&peer, &device) {
        return r;
    }
    match db::acked_upto(&st.pool, &device).await {
        Ok(acked_upto) => axum::Json(Ack { acked_upto }).into_response(),
        Err(e) => {
            tracing::error!(%device, error = %e, "ack query failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal",
                "database unavailable",
                None,
            )
        }
    }
}

fn validate(device: &str, batch: &UploadBatch) -> Result<(), String> {
    if batch.records.is_empty() {
        return Err("no records".into());
    }
    if batch.records.len() > MAX_BATCH {
        return Err(format!("more than {MAX_BATCH} records"));
    }
    let first = batch.records[0].seq;
    if first == 0 || first > i64::MAX as u64 - MAX_BATCH as u64 {
        return Err("sequence out of range".into());
    }
    for (i, r) in batch.records.iter().enumerate() {
        if r.seq != first + i as u64 {
            return Err(format!(
                "sequences must be ascending and contiguous (record {i})"
            ));
        }
        if r.idempotency_key != idempotency_key(device, r.seq) {
            return Err(format!(
                "record {}: idempotency_key must be \"{device}:{}\"",
                r.seq, r.seq
            ));
        }
        if r.digest.len() != 64 || !r.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("record {}: digest must be 64 hex digits", r.seq));
        }
        if r.session_id.len() != 32 || !r.session_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "record {}: session_id must be 32 hex digits",
                r.seq
            ));
        }
        if r.recorded_at_ms > i64::MAX as u64 {
            return Err(format!("record {}: recorded_at_ms out of range", r.seq));
        }
        match (&r.body, &r.unreadable) {
            (Some(serde_json::Value::Object(_)), None)
                if !r.kind.is_empty() && r.kind.len() <= 64 => {}
            (None, Some(_)) if r.kind == "unreadable" => {}
            _ => {
                return Err(format!(
                    "record {}: needs a kind and an object body, or kind \"unreadable\" with a reason",
                    r.seq
                ));
            }
        }
    }
    Ok(())
}

async fn upload(
    State(st): State<AppState>,
    Extension(peer): Extension<PeerDevice>,
    Path(device): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = refuse(&peer, &device) {
        return r;
    }
    let batch: UploadBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                // Position and category only: serde's message may quote values, which can be PHI.
                format!(
                    "body is not a valid batch ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
                None,
            );
        }
    };
    if let Err(m) = validate(&device, &batch) {
        return error(StatusCode::BAD_REQUEST, "bad_request", m, None);
    }
    let draw = st.faults.draw();
    if let Some(d) = draw.delay {
        tokio::time::sleep(d).await;
    }
    if draw.error_before {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "injected fault before commit",
            None,
        );
    }
    let first = batch.records[0].seq;
    match db::store_batch(&st.pool, &device, &batch.records).await {
        Ok(Stored::Acked {
            acked_upto,
            inserted,
        }) => {
            tracing::info!(%device, first, n = batch.records.len(), inserted, acked_upto, "batch stored");
            if draw.error_after_commit {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "injected fault after commit",
                    None,
                );
            }
            let acked_upto = if draw.stale_ack {
                first.saturating_sub(1).min(acked_upto)
            } else {
                acked_upto
            };
            axum::Json(Ack { acked_upto }).into_response()
        }
        Ok(Stored::Gap { expected_seq }) => {
            tracing::warn!(%device, first, expected_seq, "gap");
            error(
                StatusCode::CONFLICT,
                "gap",
                format!("batch starts at {first}, expected {expected_seq} or earlier"),
                Some(expected_seq),
            )
        }
        Ok(Stored::Conflict { seq }) => {
            tracing::error!(%device, seq, "conflicting content for a stored sequence");
            error(
                StatusCode::CONFLICT,
                "conflict",
                format!("record {seq} is already stored with different content"),
                None,
            )
        }
        Err(e) => {
            tracing::error!(%device, error = %e, "store failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal",
                "database unavailable",
                None,
            )
        }
    }
}

/// Serves the API over TLS on `listener` until `shutdown` completes; then drops every connection.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IngestError> {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(state);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, addr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                conns.spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(%addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let Some(device) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c)) else {
                        tracing::info!(%addr, "client certificate without a common name");
                        return;
                    };
                    let peer = PeerDevice(device.into());
                    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        app.clone().oneshot(req)
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await {
                        tracing::debug!(%addr, error = %e, "connection ended");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
    Ok(())
}
