//! The cart's local console: a status page, JSON status, Prometheus metrics,
//! a camera snapshot and the live H.264 stream, over plain HTTP on loopback
//! by default (a bearer token is required for any other address).

use crate::metrics;
use crate::pipeline::Pipeline;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use telecart_core::{Config, VideoFrame};
use tokio::net::TcpListener;
use tracing::{debug, info};

/// What every handler can see.
#[derive(Debug)]
pub struct ConsoleState {
    /// The running configuration.
    pub config: Config,
    /// The media pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The encrypted session log.
    pub log: Arc<crate::SessionLog>,
    /// When the daemon started.
    pub started: Instant,
    /// Browser calls answered by the console.
    pub calls: Arc<crate::webrtc::call::Calls>,
    /// The board, the state machine and privacy.
    pub cart: Arc<crate::cart::CartController>,
    /// Live captions (None: disabled, or no usable model; see the log).
    pub captions: Option<Arc<crate::captions::Captioner>>,
    /// The SIP endpoint's numbers for `/metrics` (empty while SIP is off).
    pub sip: crate::metrics::SipMetrics,
}

/// The console's routes, with the token check when a token is configured.
pub fn router(state: Arc<ConsoleState>) -> Router {
    let token = state.config.console.access_token.clone();
    let routes = Router::new()
        .route("/", get(index))
        .route("/api/status", get(status))
        .route("/api/snapshot.jpg", get(snapshot))
        .route("/api/stream.h264", get(stream_h264))
        .route("/metrics", get(metrics_text))
        .route("/call", get(call_page))
        .route("/api/call", axum::routing::post(call_offer))
        .route(
            "/api/call/{id}",
            axum::routing::delete(call_hang_up)
                .get(call_stats)
                .patch(call_renegotiate),
        )
        .route("/api/calls", get(calls_list))
        .route("/api/cart", get(cart_view))
        .route("/api/cart/button", axum::routing::post(cart_button))
        .route("/api/cart/privacy", axum::routing::post(cart_privacy))
        .route("/api/cart/mute", axum::routing::post(cart_mute))
        .route("/api/cart/dtmf", axum::routing::post(cart_dtmf))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state);
    match token {
        Some(token) => routes.layer(middleware::from_fn(move |req, next| {
            require_token(token.clone(), req, next)
        })),
        None => routes,
    }
}

/// Binds the configured address and serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ConsoleState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "console listening");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn require_token(token: String, req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Browsers cannot set headers on <img> or a typed URL, so the status page
    // carries the token in the query string instead.
    let query = req.uri().query().unwrap_or("");
    let in_query = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("token="))
        .next();
    let given = bearer.or(in_query).unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        let mut res = (StatusCode::UNAUTHORIZED, "access token required\n").into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"telecart\""),
        );
        res
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../assets/console.html"))
}

/// The JSON the status page polls.
#[derive(Debug, Serialize)]
struct StatusBody<'a> {
    cart: &'a str,
    version: &'static str,
    uptime_s: u64,
    pipeline: crate::pipeline::PipelineStatus,
    video: VideoSummary,
    session_log: SessionLogSummary,
    board: crate::cart::CartView,
    captions: crate::captions::CaptionStatus,
}

#[derive(Debug, Serialize)]
struct SessionLogSummary {
    durable_upto: u64,
    synced_upto: u64,
    upload_failures: u32,
    alarms: Vec<String>,
}

#[derive(Debug, Serialize)]
struct VideoSummary {
    width: u32,
    height: u32,
    fps: u32,
    target_bitrate_bps: u32,
}

async fn status(State(state): State<Arc<ConsoleState>>) -> Response {
    let v = &state.config.video;
    axum::Json(StatusBody {
        cart: &state.config.cart.name,
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs(),
        pipeline: state.pipeline.status(),
        video: VideoSummary {
            width: v.width,
            height: v.height,
            fps: v.fps,
            target_bitrate_bps: state.pipeline.encoder.target_bitrate(),
        },
        session_log: {
            let s = state.log.status();
            SessionLogSummary {
                durable_upto: s.durable_upto,
                synced_upto: s.synced_upto,
                upload_failures: s.failures,
                alarms: s.alarms.iter().map(|a| format!("{a:?}")).collect(),
            }
        },
        board: state.cart.view(),
        captions: state
            .captions
            .as_ref()
            .map(|c| c.status())
            .unwrap_or_default(),
    })
    .into_response()
}

async fn metrics_text(State(state): State<Arc<ConsoleState>>) -> Response {
    match metrics::render(
        &state.config.cart.name,
        &state.pipeline,
        &state.log,
        &state.cart.view(),
        state.started,
        &state.sip,
    ) {
        Ok(text) => {
            let calls =
                crate::webrtc::stats::render_metrics(&state.config.cart.name, &state.calls.list());
            let text = match text.strip_suffix("# EOF\n") {
                Some(head) => format!("{head}{calls}# EOF\n"),
                None => format!("{text}{calls}"),
            };
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn call_page() -> Html<&'static str> {
    Html(include_str!("../assets/call.html"))
}

/// WHEP-style: the browser's SDP offer in, `201` with the answer and a `Location` out.
async fn call_offer(
    State(state): State<Arc<ConsoleState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/sdp") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST an SDP offer with Content-Type: application/sdp\n",
        )
            .into_response();
    }
    let listen = state.config.console.listen.ip();
    let w = &state.config.webrtc;
    let ports = (w.port_min != 0).then_some((w.port_min, w.port_max));
    let bind = if let Some(ip) = w.bind_address {
        ip
    } else if listen.is_unspecified() {
        crate::webrtc::call::local_ip_towards(peer.ip()).unwrap_or(listen)
    } else {
        listen
    };
    let media = crate::webrtc::session::MediaSources {
        video: state.pipeline.video.clone(),
        audio: state.pipeline.audio.clone(),
        encoder: state.pipeline.encoder.clone(),
        max_bitrate_bps: state.config.video.max_bitrate_kbps * 1000,
    };
    if let Err(e) = str0m::change::SdpOffer::from_sdp_string(&body) {
        return (
            StatusCode::BAD_REQUEST,
            format!("malformed SDP offer: {e}\n"),
        )
            .into_response();
    }
    // The cart's state machine decides: answered at once, or ringing until
    // the call button (privacy on), or turned away (busy, declined, no answer).
    let call = match state.cart.ring(&format!("browser {}", peer.ip())).await {
        Ok(call) => call,
        Err(reason) => return refused_call(reason),
    };
    let (incoming, mut far_end) = tokio::sync::mpsc::channel(16);
    let cart = state.cart.clone();
    tokio::spawn(async move {
        while let Some(message) = far_end.recv().await {
            cart.remote(message);
        }
    });
    let hooks = crate::webrtc::call::CallHooks {
        incoming: Some(incoming),
        on_end: Some(Box::new({
            let cart = state.cart.clone();
            move || cart.ended(call)
        })),
        // Only a media address the cart picked itself may move with the network.
        follow_network_towards: (w.bind_address.is_none() && listen.is_unspecified())
            .then_some(peer.ip()),
    };
    let speaker = call_speaker(&state.config, &state.pipeline);
    if let (Some(captions), Some(speaker)) = (&state.captions, &speaker) {
        captions.feed(telecart_transcribe::Side::Remote, &speaker.remote_tap());
    }
    let answered = state
        .calls
        .answer(media, &body, bind, ports, speaker, hooks)
        .await;
    if let Ok((id, _)) = &answered {
        state.cart.connected(call, id);
    } else {
        state.cart.ended(call);
    }
    match answered {
        Ok((id, answer)) => (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/sdp".to_string()),
                (header::LOCATION, format!("/api/call/{id}")),
            ],
            answer,
        )
            .into_response(),
        Err(e) => {
            let status = match e {
                crate::webrtc::call::CallError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                crate::webrtc::call::CallError::Local(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, format!("{e}\n")).into_response()
        }
    }
}

fn refused_call(reason: telecart_cart::machine::RejectReason) -> Response {
    use telecart_cart::machine::RejectReason;
    let (status, text) = match reason {
        RejectReason::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the cart is in another call",
        ),
        RejectReason::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the cart is starting or updating",
        ),
        RejectReason::NoAnswer => (StatusCode::REQUEST_TIMEOUT, "nobody answered at the cart"),
        RejectReason::Declined => (StatusCode::FORBIDDEN, "the call was declined at the cart"),
    };
    (status, format!("{text}\n")).into_response()
}

async fn cart_view(State(state): State<Arc<ConsoleState>>) -> Response {
    axum::Json(state.cart.view()).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ButtonRequest {
    button: crate::cart::ConsoleButton,
    #[serde(default)]
    long: bool,
}

async fn cart_button(
    State(state): State<Arc<ConsoleState>>,
    body: Result<axum::Json<ButtonRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(axum::Json(req)) => {
            state.cart.press(req.button, req.long);
            (StatusCode::ACCEPTED, "pressed\n").into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteRequest {
    on: bool,
}

/// `{"on": false}` unmutes the microphone in the SIP call (answered muted by
/// `[sip] mute_on_answer`); `{"on": true}` mutes it.
async fn cart_mute(
    State(state): State<Arc<ConsoleState>>,
    body: Result<axum::Json<MuteRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(axum::Json(req)) => {
            state.cart.mute_sip_call(req.on);
            (StatusCode::ACCEPTED, "set\n").into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DtmfRequest {
    digits: String,
}

/// `{"digits": "12#"}` sends those keys in the SIP call (0-9, *, #, A-D).
async fn cart_dtmf(
    State(state): State<Arc<ConsoleState>>,
    body: Result<axum::Json<DtmfRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(axum::Json(req)) => {
            let keys: Option<Vec<char>> = req
                .digits
                .chars()
                .map(|c| {
                    let c = c.to_ascii_uppercase();
                    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
                })
                .collect();
            match keys {
                Some(keys) if !keys.is_empty() && keys.len() <= 16 => {
                    for key in keys {
                        state.cart.send_sip_dtmf(key);
                    }
                    (StatusCode::ACCEPTED, "sent\n").into_response()
                }
                _ => (StatusCode::BAD_REQUEST, "digits: 1 to 16 of 0-9 * # A-D\n").into_response(),
            }
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivacyRequest {
    on: bool,
}

async fn cart_privacy(
    State(state): State<Arc<ConsoleState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: Result<axum::Json<PrivacyRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(axum::Json(req)) => {
            let by = telecart_cart::machine::Actor::Console {
                user: peer.ip().to_string(),
            };
            state.cart.set_privacy(req.on, by);
            (StatusCode::ACCEPTED, "set\n").into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// Opens the configured speaker for one call (None: no speaker, or it failed: logged).
/// The caller's audio goes through the jitter buffer and is the echo
/// canceller's far-end reference, so the cart's microphone does not send the
/// caller back to themselves.
fn call_speaker(
    config: &Config,
    pipeline: &crate::Pipeline,
) -> Option<crate::webrtc::speaker::SpeakerOutput> {
    let a = &config.audio;
    match telecart_devices::open_speaker(a) {
        Ok(Some(speaker)) => {
            let options = crate::webrtc::speaker::SpeakerOptions {
                sample_rate: a.sample_rate,
                channels: a.channels,
                codec: telecart_core::media::AudioCodec::Opus,
                jitter: telecart_audio::JitterSettings {
                    min_delay_ms: config.audio_processing.jitter_min_ms,
                    max_delay_ms: config.audio_processing.jitter_max_ms,
                },
                far_end: Some(pipeline.far_end.clone()),
            };
            crate::webrtc::speaker::SpeakerOutput::start_with(speaker, options)
                .map_err(|e| tracing::warn!(error = %e, "speaker thread"))
                .ok()
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "call: cannot open the speaker; remote audio is not played");
            None
        }
    }
}

async fn call_hang_up(
    State(state): State<Arc<ConsoleState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if state.calls.hang_up(&id) {
        (StatusCode::OK, "hung up\n").into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such call\n").into_response()
    }
}

/// `PATCH /api/call/<id>` with a new SDP offer (the browser restarting ICE): 200 + the answer.
async fn call_renegotiate(
    State(state): State<Arc<ConsoleState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    let sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/sdp"));
    if !sdp {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/sdp\n",
        )
            .into_response();
    }
    if state.calls.stats(&id).is_none() {
        return (StatusCode::NOT_FOUND, "no such call\n").into_response();
    }
    match state.calls.renegotiate(&id, &body).await {
        Ok(answer) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/sdp")],
            answer,
        )
            .into_response(),
        Err(crate::webrtc::call::CallError::Refused(e)) => {
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

async fn call_stats(
    State(state): State<Arc<ConsoleState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match state.calls.stats(&id) {
        Some(s) => axum::Json(s).into_response(),
        None => (StatusCode::NOT_FOUND, "no such call\n").into_response(),
    }
}

async fn calls_list(State(state): State<Arc<ConsoleState>>) -> Response {
    let list: Vec<_> = state
        .calls
        .list()
        .into_iter()
        .map(|(id, stats)| serde_json::json!({"id": id, "stats": stats}))
        .collect();
    axum::Json(list).into_response()
}

async fn snapshot(State(state): State<Arc<ConsoleState>>) -> Response {
    let Some(mut frames) = state.pipeline.raw_video.subscribe() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "pipeline stopped\n").into_response();
    };
    let frame = match tokio::time::timeout(Duration::from_secs(2), frames.recv()).await {
        Ok(Some(d)) => d.item,
        _ => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no frame from the camera\n",
            )
                .into_response();
        }
    };
    drop(frames);
    match tokio::task::spawn_blocking(move || jpeg_of(&frame)).await {
        Ok(Ok(jpeg)) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Encodes an I420 frame as a JPEG (for the console only; media goes out as H.264).
fn jpeg_of(frame: &VideoFrame) -> Result<Vec<u8>, jpeg_encoder::EncodingError> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (y, u, v) = frame.planes();
    let mut ycbcr = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        let chroma_row = (row / 2) * (w / 2);
        for col in 0..w {
            let c = chroma_row + col / 2;
            ycbcr.extend_from_slice(&[y[row * w + col], u[c], v[c]]);
        }
    }
    let mut out = Vec::new();
    let width = u16::try_from(w).unwrap_or(u16::MAX);
    let height = u16::try_from(h).unwrap_or(u16::MAX);
    jpeg_encoder::Encoder::new(&mut out, 80).encode(
        &ycbcr,
        width,
        height,
        jpeg_encoder::ColorType::Ycbcr,
    )?;
    Ok(out)
}

/// The live H.264 elementary stream (Annex-B), starting on an IDR: a field
/// tech can watch it with `ffplay http://…/api/stream.h264`, and tests decode it.
async fn stream_h264(State(state): State<Arc<ConsoleState>>) -> Response {
    let Some(units) = state.pipeline.video.subscribe() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "pipeline stopped\n").into_response();
    };
    let control = state.pipeline.encoder.clone();
    control.request_keyframe();
    let body = futures_util::stream::unfold(
        (units, control, true),
        |(mut units, control, mut need_keyframe)| async move {
            loop {
                let delivery = units.recv().await?;
                if delivery.missed > 0 {
                    // A gap breaks the reference chain: wait for a fresh IDR.
                    debug!(missed = delivery.missed, "stream viewer fell behind");
                    control.request_keyframe();
                    need_keyframe = true;
                }
                if need_keyframe && !delivery.item.keyframe {
                    continue;
                }
                need_keyframe = false;
                let bytes = Bytes::copy_from_slice(&delivery.item.data);
                return Some((
                    Ok::<_, std::io::Error>(bytes),
                    (units, control, need_keyframe),
                ));
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, "video/h264"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn snapshot_is_a_jpeg_of_the_frame_size() {
        let frame = VideoFrame::black(64, 48, 0, telecart_core::CaptureTime(0)).unwrap();
        let jpeg = jpeg_of(&frame).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        // SOF0 carries height then width.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        assert_eq!(&jpeg[sof + 5..sof + 9], &[0, 48, 0, 64]);
    }
}
