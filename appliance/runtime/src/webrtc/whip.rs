//! WHIP client (RFC 9725): POST the offer with a Bearer token, follow
//! redirects, retry with backoff while the endpoint is down, apply the
//! answer, run the session, DELETE the resource on hang-up. The response
//! rules (status codes, `Location`, `ETag`, `Link` ICE servers, HTML where
//! SDP was expected) are the pure functions of `telecart_webrtc::whip`.

use super::session::{MediaSources, SessionOptions, rtc_config, run_session};
use super::stats::{CallStats, SharedStats};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use str0m::Candidate;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use telecart_webrtc::datachannel;
use telecart_webrtc::whip::{self as rules, Response, WhipError, WhipSession};
use tokio::sync::watch;
use tracing::{info, warn};
use url::Url;

/// What to publish where.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The WHIP endpoint.
    pub url: String,
    /// Bearer token, if the endpoint wants one.
    pub token: Option<String>,
    /// Publish this long, then hang up (None: until `stop`).
    pub duration: Option<Duration>,
    /// Address for the host candidate; None picks the one that routes to the endpoint.
    pub bind: Option<IpAddr>,
    /// Give up when ICE and DTLS are not up this long after the answer.
    pub connect_timeout: Duration,
    /// Retries of the POST while the endpoint is unreachable or answers 5xx/429.
    pub retries: u32,
    /// Open the `telecart` data channel.
    pub datachannel: bool,
    /// Allocate a relay on this TURN server and offer it as a `relay` candidate.
    pub turn: Option<TurnServer>,
    /// Offer only the relay candidate (no host candidate): proves the relay path.
    pub relay_only: bool,
    /// Local UDP port range for the media socket (inclusive).
    pub port_range: Option<(u16, u16)>,
    /// STUN server for a server-reflexive candidate.
    pub stun: Option<SocketAddr>,
    /// Extra CA certificates (PEM) for an HTTPS endpoint, besides the system store.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A TURN server to allocate a relay on.
#[derive(Clone)]
pub struct TurnServer {
    /// Server address.
    pub server: SocketAddr,
    /// UDP, TCP or TLS to the server.
    pub transport: telecart_turn::TurnTransport,
    /// Long-term credential user name.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
    /// TLS client configuration and server name, for TLS.
    pub tls: Option<telecart_turn::TlsOptions>,
}

impl PublishOptions {
    /// Defaults for `url`: no token, until stopped, 10 s connect timeout, 5 retries, data channel on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            duration: None,
            bind: None,
            connect_timeout: Duration::from_secs(10),
            retries: 5,
            datachannel: true,
            turn: None,
            relay_only: false,
            port_range: None,
            stun: None,
            ca_file: None,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// The endpoint the offer finally went to (after redirects).
    pub endpoint: String,
    /// The session resource (`Location`).
    pub resource: String,
    /// ETag of the session, if given.
    pub etag: Option<String>,
    /// ICE servers the endpoint announced in `Link` headers.
    pub ice_servers: Vec<String>,
    /// Our host candidate.
    pub local_candidate: String,
    /// Our relay candidate, when a TURN server was given.
    pub relay_candidate: Option<String>,
    /// POST attempts (1 when the endpoint answered at once).
    pub post_attempts: u32,
    /// Wall clock (µs since the Unix epoch) when the first POST was sent.
    pub post_unix_us: u64,
    /// Seconds the session lasted.
    pub duration_s: f64,
    /// How the DELETE went (`ok` or the error).
    pub delete: String,
    /// The call's counters and quality.
    pub stats: CallStats,
}

impl TurnServer {
    /// Whether the server is reached over TLS (`turns:`), which needs [`TurnServer::tls`].
    pub fn is_tls(&self) -> bool {
        self.transport == telecart_turn::TurnTransport::Tls
    }

    /// From a `turn:host[:port][?transport=udp|tcp]` URI and long-term credentials.
    /// `turns:` (TLS) needs [`TurnServer::tls`] set by the caller.
    pub fn from_url(url: &str, username: &str, password: &str) -> Result<Self, PublishError> {
        use std::net::ToSocketAddrs;
        use telecart_webrtc::whip::{IceServerUrl, TurnTransport as T};
        let Some(IceServerUrl::Turn {
            host,
            port,
            transport,
        }) = IceServerUrl::parse(url)
        else {
            return Err(PublishError::Turn(format!(
                "{url:?} is not a turn: or turns: URI"
            )));
        };
        let server = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| PublishError::Turn(format!("resolving {host}: {e}")))?
            .next()
            .ok_or_else(|| PublishError::Turn(format!("{host}: no address")))?;
        Ok(Self {
            server,
            transport: match transport {
                T::Udp => telecart_turn::TurnTransport::Udp,
                T::Tcp => telecart_turn::TurnTransport::Tcp,
                T::Tls => telecart_turn::TurnTransport::Tls,
            },
            username: username.into(),
            password: password.into(),
            tls: None,
        })
    }
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("TurnServer")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PublishReport {
    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Signalling failed.
    #[error(transparent)]
    Whip(#[from] WhipError),
    /// The answer is not usable (malformed SDP, no common codec).
    #[error("WHIP answer refused: {0}")]
    Answer(String),
    /// ICE/DTLS did not come up.
    #[error("no connection {0:?} after the answer (ICE/DTLS); stats: {1}")]
    NotConnected(Duration, String),
    /// The session failed while running.
    #[error("session failed: {0}")]
    Session(String),
    /// The TURN relay could not be allocated.
    #[error("TURN: {0}")]
    Turn(String),
    /// Local trouble (socket, task).
    #[error("{0}")]
    Local(String),
}

/// One HTTP exchange as the WHIP rules see it.
struct HttpReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpReply {
    fn as_response(&self) -> Response<'_> {
        Response {
            status: self.status,
            headers: &self.headers,
            body: &self.body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The TLS trust for HTTPS endpoints, or why there is none (no CA store and
/// no `ca_file`: plain HTTP still works).
type Tls = Result<ureq::tls::TlsConfig, String>;

/// Runs one request on a blocking thread (ureq), redirects not followed.
async fn http(
    method: &'static str,
    url: Url,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Option<String>,
    tls: &Tls,
) -> Result<HttpReply, WhipError> {
    let tls = match (url.scheme(), tls) {
        ("https", Err(why)) => {
            return Err(WhipError::Transport(format!(
                "{url}: cannot use HTTPS: {why}"
            )));
        }
        (_, tls) => tls.clone().unwrap_or_default(),
    };
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(url.as_str());
        if let Some(t) = &token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let result = match body {
            Some(b) => req
                .body(b)
                .map_err(|e| WhipError::Transport(e.to_string()))
                .and_then(|r| {
                    agent
                        .run(r)
                        .map_err(|e| WhipError::Transport(e.to_string()))
                }),
            None => req
                .body(())
                .map_err(|e| WhipError::Transport(e.to_string()))
                .and_then(|r| {
                    agent
                        .run(r)
                        .map_err(|e| WhipError::Transport(e.to_string()))
                }),
        };
        let mut res = result?;
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = res
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| WhipError::Transport(format!("reading the body: {e}")))?;
        Ok(HttpReply {
            status: res.status().as_u16(),
            headers,
            body,
        })
    })
    .await
    .map_err(|e| WhipError::Transport(format!("HTTP task: {e}")))?
}

/// POSTs the offer, following up to five redirects; returns the session and the URL it ended at.
async fn post_offer(
    endpoint: &Url,
    token: Option<&str>,
    offer: &str,
    tls: &Tls,
) -> Result<(WhipSession, Url), WhipError> {
    let mut url = endpoint.clone();
    for _ in 0..=5 {
        let reply = http(
            "POST",
            url.clone(),
            token.map(str::to_string),
            Some("application/sdp"),
            Some(offer.to_string()),
            tls,
        )
        .await?;
        if matches!(reply.status, 301 | 302 | 303 | 307 | 308) {
            let location = reply
                .header("location")
                .ok_or_else(|| WhipError::NoLocation("redirect without Location".into()))?;
            url = url
                .join(location.trim())
                .map_err(|e| WhipError::NoLocation(format!("redirect to {location:?}: {e}")))?;
            info!(%url, status = reply.status, "WHIP: redirected");
            continue;
        }
        let session = rules::read_offer_response(&url, reply.as_response())?;
        return Ok((session, url));
    }
    Err(WhipError::Transport("more than 5 redirects".into()))
}

/// POSTs with retries (exponential backoff with jitter) while the error is retryable.
async fn post_with_retry(
    endpoint: &Url,
    token: Option<&str>,
    offer: &str,
    retries: u32,
    tls: &Tls,
) -> Result<(WhipSession, Url, u32), WhipError> {
    let mut attempt = 0;
    loop {
        match post_offer(endpoint, token, offer, tls).await {
            Ok((s, url)) => return Ok((s, url, attempt + 1)),
            Err(e) if e.is_retryable() && attempt < retries => {
                let retry_after = match &e {
                    WhipError::Unavailable { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let delay = rules::retry_delay(
                    attempt,
                    Duration::from_millis(500),
                    Duration::from_secs(10),
                    rand::random::<f64>(),
                    retry_after,
                );
                warn!(error = %e, attempt, ?delay, "WHIP: endpoint not available, retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The local address that routes to the endpoint (for the host candidate).
async fn route_to(endpoint: &Url) -> Result<IpAddr, PublishError> {
    let host = endpoint
        .host_str()
        .ok_or_else(|| PublishError::Local("endpoint has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = endpoint.port_or_known_default().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| PublishError::Whip(WhipError::Transport(format!("resolving {host}: {e}"))))?
        .next()
        .ok_or_else(|| PublishError::Whip(WhipError::Transport(format!("{host}: no address"))))?;
    let probe = std::net::UdpSocket::bind(SocketAddr::new(
        if addr.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    ))
    .map_err(|e| PublishError::Local(format!("UDP socket: {e}")))?;
    probe
        .connect(addr)
        .map_err(|e| PublishError::Local(format!("no route to {addr}: {e}")))?;
    Ok(probe
        .local_addr()
        .map_err(|e| PublishError::Local(e.to_string()))?
        .ip())
}

/// Publishes the pipeline's H.264 and Opus to a WHIP endpoint until
/// `opts.duration` passes, `stop` turns true or the session ends; then
/// DELETEs the resource. `stats` is updated live for the console.
pub async fn publish(
    media: MediaSources,
    opts: &PublishOptions,
    stats: SharedStats,
    mut stop: watch::Receiver<bool>,
) -> Result<PublishReport, PublishError> {
    let endpoint = rules::endpoint_url(&opts.url)?;
    let ip = match opts.bind {
        Some(ip) => ip,
        None => route_to(&endpoint).await?,
    };
    let socket = super::session::bind_media_socket(ip, opts.port_range)
        .await
        .map_err(|e| PublishError::Local(format!("binding UDP on {ip}: {e}")))?;
    let local = socket
        .local_addr()
        .map_err(|e| PublishError::Local(e.to_string()))?;

    let started = Instant::now();
    let post_unix_us = crate::pipeline::now().as_micros();
    let mut rtc = rtc_config(media.encoder.target_bitrate()).build(started);
    if !opts.relay_only {
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| PublishError::Local(format!("candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
    }
    if let Some(server) = opts.stun.filter(|_| !opts.relay_only) {
        match tokio::time::timeout(
            Duration::from_secs(3),
            telecart_turn::stun_binding(&socket, server),
        )
        .await
        {
            Ok(Ok(mapped)) if mapped != local => {
                info!(%mapped, "STUN: server-reflexive address");
                if let Ok(c) = Candidate::server_reflexive(mapped, local, "udp") {
                    rtc.add_local_candidate(c);
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, %server, "STUN binding failed"),
            Err(_) => warn!(%server, "STUN server did not answer within 3 s"),
        }
    }
    let mut relay_candidate = None;
    let turn = match &opts.turn {
        Some(t) => {
            let mut config = telecart_turn::TurnConfig::new(
                t.server,
                t.transport,
                t.username.clone(),
                t.password.clone(),
            );
            config.software = Some(format!("telecart {}", env!("CARGO_PKG_VERSION")));
            let socket = telecart_turn::TurnSocket::connect(config, t.tls.clone())
                .await
                .map_err(|e| PublishError::Turn(e.to_string()))?;
            let candidate = Candidate::relayed(socket.relayed_addr(), socket.local_addr(), "udp")
                .map_err(|e| PublishError::Local(format!("relay candidate: {e}")))?;
            rtc.add_local_candidate(candidate);
            relay_candidate = Some(format!("{} relay udp", socket.relayed_addr()));
            info!(relayed = %socket.relayed_addr(), "TURN: relay allocated");
            Some(socket)
        }
        None if opts.relay_only => {
            return Err(PublishError::Local(
                "relay_only without a TURN server".into(),
            ));
        }
        None => None,
    };
    let mut api = rtc.sdp_api();
    let video_mid = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        Some("telecart".into()),
        Some("video".into()),
        None,
    );
    let audio_mid = api.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        Some("telecart".into()),
        Some("audio".into()),
        None,
    );
    if opts.datachannel {
        api.add_channel(datachannel::LABEL.into());
    }
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| PublishError::Local("no offer to make".into()))?;
    let offer_sdp = offer.to_sdp_string();

    // Reading the CA store is file IO: off the async workers.
    let ca_file = opts.ca_file.clone();
    let tls: Tls = tokio::task::spawn_blocking(move || {
        crate::tls::ureq_tls(ca_file.as_deref()).map_err(|e| format!("{e:#}"))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let (session, endpoint, attempts) = post_with_retry(
        &endpoint,
        opts.token.as_deref(),
        &offer_sdp,
        opts.retries,
        &tls,
    )
    .await?;
    info!(resource = %session.resource, "WHIP: session created");
    let resource = session.resource.clone();
    let token = opts.token.clone();
    let delete = || async {
        match http("DELETE", resource.clone(), token.clone(), None, None, &tls).await {
            Ok(reply) => match rules::read_delete_response(reply.as_response()) {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        }
    };

    let answer = match SdpAnswer::from_sdp_string(&session.answer) {
        Ok(a) => a,
        Err(e) => {
            let _ = delete().await;
            return Err(PublishError::Answer(format!("malformed SDP: {e}")));
        }
    };
    if let Err(e) = rtc.sdp_api().accept_answer(pending, answer) {
        let _ = delete().await;
        return Err(PublishError::Answer(e.to_string()));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let session_opts = SessionOptions {
        video_mid: Some(video_mid),
        audio_mid: Some(audio_mid),
        started,
        outgoing: None,
        incoming: None,
        turn,
        speaker: None,
    };
    let task = tokio::spawn(run_session(
        rtc,
        socket,
        media,
        session_opts,
        stats.clone(),
        stop_rx,
    ));

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let connect_deadline = tokio::time::Instant::now() + opts.connect_timeout;
    let mut failure = None;
    loop {
        let tick = tokio::time::sleep(Duration::from_millis(100));
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { break; }
            }
            _ = tick => {}
        }
        if task.is_finished() {
            break;
        }
        let now = tokio::time::Instant::now();
        let connected = stats.lock().connect_ms.is_some();
        if !connected && now >= connect_deadline {
            failure = Some(PublishError::NotConnected(
                opts.connect_timeout,
                serde_json::to_string(&stats.snapshot()).unwrap_or_default(),
            ));
            break;
        }
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
    }
    let _ = stop_tx.send(true);
    let ended = task.await;
    let duration_s = started.elapsed().as_secs_f64();
    let delete = delete().await;
    info!(%delete, "WHIP: session deleted");
    if let Some(f) = failure {
        return Err(f);
    }
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(PublishError::Session(format!("{e:#}"))),
        Err(e) => return Err(PublishError::Local(format!("session task: {e}"))),
    }
    Ok(PublishReport {
        endpoint: endpoint.to_string(),
        resource: session.resource.to_string(),
        etag: session.etag.clone(),
        ice_servers: session
            .ice_servers
            .iter()
            .map(|s| format!("{s:?}"))
            .collect(),
        local_candidate: format!("{local} host udp"),
        relay_candidate,
        post_attempts: attempts,
        post_unix_us,
        duration_s,
        delete,
        stats: stats.snapshot(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_servers_from_uris() {
        let t = TurnServer::from_url("turn:127.0.0.1:3478?transport=tcp", "u", "p").unwrap();
        assert_eq!(t.server, "127.0.0.1:3478".parse().unwrap());
        assert_eq!(t.transport, telecart_turn::TurnTransport::Tcp);
        let t = TurnServer::from_url("turn:127.0.0.1", "u", "p").unwrap();
        assert_eq!(t.transport, telecart_turn::TurnTransport::Udp);
        assert!(!format!("{t:?}").contains("\"p\""), "no password in Debug");
        assert!(TurnServer::from_url("stun:127.0.0.1", "u", "p").is_err());
        assert!(TurnServer::from_url("http://x", "u", "p").is_err());
    }
}
