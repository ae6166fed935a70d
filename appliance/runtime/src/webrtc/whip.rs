//! WHIP client (RFC 9725): POST the offer with a Bearer token, follow
//! redirects, retry with backoff while the endpoint is down, apply the
//! answer, run the session, DELETE the resource on hang-up. The response
//! rules (status codes, `Location`, `ETag`, `Link` ICE servers, HTML where
//! SDP was expected) are the pure functions of `telecart_webrtc::whip`.

use super::session::SessionControl;
use super::session::{MediaSources, SessionOptions, rtc_config, run_session};
use super::stats::{CallStats, SharedStats};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::Candidate;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use telecart_webrtc::datachannel;
use telecart_webrtc::roam::{Roam, RoamDetector, RoamReason, Snapshot};
use telecart_webrtc::trickle::{self, Fragment, FragmentTemplate, IceCredentials, PatchKind};
use telecart_webrtc::whip::{self as rules, Response, WhipError, WhipSession};
use tokio::sync::{Notify, mpsc, oneshot, watch};
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
    /// Follow network changes (a Wi-Fi roam, a new address): rebind the media
    /// socket and restart ICE through PATCH. Only when `bind` is None (a fixed
    /// address cannot move).
    pub follow_network: bool,
    /// How long a new route must hold before the media moves to it.
    pub roam_settle: Duration,
    /// Allocate relays on the TURN servers the endpoint announces in `Link`
    /// headers (when no `turn` is configured) and trickle their candidates.
    pub link_ice_servers: bool,
    /// Each notification restarts ICE on the current address (an operator's
    /// "reconnect" button, tests).
    pub ice_restart: Option<Arc<Notify>>,
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
            follow_network: true,
            roam_settle: Duration::from_secs(2),
            link_ice_servers: true,
            ice_restart: None,
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
    /// Relay candidates allocated after the answer (TURN servers from `Link`
    /// headers) and trickled with PATCH.
    pub late_relay_candidates: Vec<String>,
    /// Candidates sent with trickle PATCHes (204), as `candidate:…` lines.
    pub trickled_candidates: Vec<String>,
    /// ICE restarts tried (requested or after a network change), in order.
    pub ice_restarts: Vec<IceRestartReport>,
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

/// One ICE restart over PATCH.
#[derive(Debug, Clone, Serialize)]
pub struct IceRestartReport {
    /// Wall clock (µs since the Unix epoch) when the PATCH was sent.
    pub at_unix_us: u64,
    /// `requested`, `address_lost` or `route_changed`.
    pub reason: String,
    /// The media address before and after (the same unless the network changed).
    pub from: String,
    /// See `from`.
    pub to: String,
    /// `ok`, or the error.
    pub result: String,
    /// The endpoint's new ICE user fragment.
    pub remote_ufrag: Option<String>,
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
    http_with(method, url, token, content_type, body, None, tls).await
}

/// [`http`] with an `If-Match` header.
async fn http_with(
    method: &'static str,
    url: Url,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Option<String>,
    if_match: Option<String>,
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
        if let Some(m) = &if_match {
            req = req.header("If-Match", m.as_str());
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

/// The endpoint's address (resolved once: the roam detector asks the kernel
/// for the route to it every second).
async fn endpoint_addr(endpoint: &Url) -> Result<SocketAddr, PublishError> {
    let host = endpoint
        .host_str()
        .ok_or_else(|| PublishError::Local("endpoint has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = endpoint.port_or_known_default().unwrap_or(80);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| PublishError::Whip(WhipError::Transport(format!("resolving {host}: {e}"))))?
        .next()
        .ok_or_else(|| PublishError::Whip(WhipError::Transport(format!("{host}: no address"))))
}

/// The source address the kernel picks towards `addr` (a connected UDP
/// socket sends nothing): the host candidate's address.
fn source_towards(addr: SocketAddr) -> std::io::Result<IpAddr> {
    let any = if addr.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    let probe = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    probe.connect(addr)?;
    Ok(probe.local_addr()?.ip())
}

/// What the roam detector needs: the route's source address and every interface address.
pub(crate) fn network_snapshot(endpoint: SocketAddr) -> Snapshot {
    Snapshot {
        route: source_towards(endpoint).ok(),
        addresses: if_addrs::get_if_addrs()
            .map(|list| list.into_iter().map(|i| i.ip()).collect())
            .unwrap_or_default(),
    }
}

/// Allocates a relay on `server` (5 s at most) and makes its candidate.
async fn allocate_relay(
    server: &TurnServer,
) -> Result<(telecart_turn::TurnSocket, Candidate), String> {
    let mut config = telecart_turn::TurnConfig::new(
        server.server,
        server.transport,
        server.username.clone(),
        server.password.clone(),
    );
    config.software = Some(format!("telecart {}", env!("CARGO_PKG_VERSION")));
    let relay = tokio::time::timeout(
        Duration::from_secs(5),
        telecart_turn::TurnSocket::connect(config, server.tls.clone()),
    )
    .await
    .map_err(|_| "no allocation within 5 s".to_string())?
    .map_err(|e| e.to_string())?;
    let candidate = Candidate::relayed(relay.relayed_addr(), relay.local_addr(), "udp")
        .map_err(|e| format!("relay candidate: {e}"))?;
    Ok((relay, candidate))
}

/// The WHIP session's signalling while media flows: trickle PATCHes for
/// late candidates, ICE restarts (RFC 9725 §4.3), relays from `Link` headers.
struct Signalling<'a> {
    resource: Url,
    token: Option<String>,
    tls: &'a Tls,
    /// The session's current ETag (a restart's 200 brings a new one).
    etag: Option<String>,
    template: FragmentTemplate,
    /// The last answer: a restart's is this with the endpoint's new credentials.
    answer: String,
    control: mpsc::Sender<SessionControl>,
    /// The media socket's address.
    local: SocketAddr,
    /// The last offer we made (initial or restart): our ICE credentials.
    offer_creds: String,
    trickled: Vec<String>,
    restarts: Vec<IceRestartReport>,
    late_relays: Vec<String>,
    /// Every TURN server the session has a relay on (configured or from
    /// `Link`): after a roam each is allocated again from the new address.
    turn_servers: Vec<TurnServer>,
}

impl Signalling<'_> {
    async fn patch(&self, kind: PatchKind, body: String) -> Result<HttpReply, WhipError> {
        http_with(
            "PATCH",
            self.resource.clone(),
            self.token.clone(),
            Some(trickle::SDPFRAG),
            Some(body),
            Some(trickle::if_match(kind, self.etag.as_deref())),
            self.tls,
        )
        .await
    }

    /// Sends `candidates` (`candidate:…`) with our current credentials (from
    /// the last offer: the endpoint tells a trickle from a restart by them).
    async fn trickle(&mut self, candidates: Vec<String>) -> Result<(), String> {
        let creds: IceCredentials = Fragment::parse(&self.offer_creds)
            .ok()
            .and_then(|f| f.credentials())
            .ok_or("our offer has no ICE credentials")?;
        let body = self.template.fragment(&creds, &candidates, false);
        let reply = self
            .patch(PatchKind::Trickle, body)
            .await
            .map_err(|e| e.to_string())?;
        rules::read_patch_response(reply.as_response()).map_err(|e| e.to_string())?;
        if let Some(etag) = reply.header("etag") {
            self.etag = Some(etag.trim().to_string());
        }
        info!(count = candidates.len(), "WHIP: candidates trickled");
        self.trickled.extend(candidates);
        Ok(())
    }

    /// Allocates a relay on each TURN server the endpoint announced (at most
    /// two, 5 s each), hands it to the session and trickles its candidate.
    async fn relays_from_links(
        &mut self,
        servers: &[rules::IceServer],
        ca_file: Option<&std::path::Path>,
    ) {
        let turns = servers
            .iter()
            .filter(|s| matches!(s.url, rules::IceServerUrl::Turn { .. }))
            .take(2);
        for server in turns {
            let url = server.url.to_string();
            let (Some(user), Some(pass)) = (&server.username, &server.credential) else {
                warn!(%url, "WHIP: Link TURN server without credentials, skipped");
                continue;
            };
            match self.link_relay(&url, user, pass, ca_file).await {
                Ok(candidate) => {
                    let line = candidate.to_sdp_string();
                    if let Err(e) = self.trickle(vec![line]).await {
                        warn!(error = %e, %url, "WHIP: trickling the relay candidate failed");
                    }
                }
                Err(e) => warn!(error = %e, %url, "WHIP: no relay on the Link TURN server"),
            }
        }
    }

    async fn link_relay(
        &mut self,
        url: &str,
        user: &str,
        pass: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Candidate, String> {
        let mut server = TurnServer::from_url(url, user, pass).map_err(|e| e.to_string())?;
        if server.is_tls() {
            server.tls = Some(super::turn_tls(url, ca_file).map_err(|e| format!("{e:#}"))?);
        }
        let (relay, candidate) = allocate_relay(&server).await?;
        self.turn_servers.push(server);
        info!(relayed = %relay.relayed_addr(), %url, "TURN: relay from the Link header allocated");
        self.late_relays
            .push(format!("{} relay udp via {url}", relay.relayed_addr()));
        self.control
            .send(SessionControl::AddRelay {
                relay,
                candidate: candidate.clone(),
            })
            .await
            .map_err(|_| "the session ended".to_string())?;
        Ok(candidate)
    }

    /// Restarts ICE; with `roam`, first moves the media to a socket on the
    /// new address. True when the endpoint accepted and the session applied it.
    async fn restart(
        &mut self,
        roam: Option<Roam>,
        reason: &str,
        ports: Option<(u16, u16)>,
    ) -> bool {
        let from = self.local;
        let at_unix_us = crate::pipeline::now().as_micros();
        let outcome = self.try_restart(roam, ports).await;
        let (result, remote_ufrag) = match outcome {
            Ok(ufrag) => ("ok".to_string(), Some(ufrag)),
            Err(e) => {
                warn!(error = %e, reason, "WHIP: ICE restart failed");
                (e, None)
            }
        };
        let ok = result == "ok";
        self.restarts.push(IceRestartReport {
            at_unix_us,
            reason: reason.into(),
            from: from.to_string(),
            to: self.local.to_string(),
            result,
            remote_ufrag,
        });
        ok
    }

    async fn try_restart(
        &mut self,
        roam: Option<Roam>,
        ports: Option<(u16, u16)>,
    ) -> Result<String, String> {
        let socket = match roam {
            Some(r) => Some(
                super::session::bind_media_socket(r.to, ports)
                    .await
                    .map_err(|e| format!("binding UDP on {}: {e}", r.to))?,
            ),
            None => None,
        };
        let new_local = match &socket {
            Some(s) => Some(s.local_addr().map_err(|e| e.to_string())?),
            None => None,
        };
        let mut relays = Vec::new();
        if socket.is_some() {
            for server in &self.turn_servers {
                match allocate_relay(server).await {
                    Ok(r) => relays.push(r),
                    Err(e) => {
                        warn!(error = %e, server = %server.server, "TURN: no relay from the new address")
                    }
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        self.control
            .send(SessionControl::RestartIce {
                socket,
                relays,
                reply: tx,
            })
            .await
            .map_err(|_| "the session ended".to_string())?;
        let offer = rx.await.map_err(|_| "the session ended".to_string())??;
        if let Some(l) = new_local {
            self.local = l;
        }
        let ours = Fragment::parse(&offer).map_err(|e| e.to_string())?;
        let creds = ours
            .credentials()
            .ok_or("the restart offer has no ICE credentials")?;
        let body = self.template.fragment(&creds, &ours.candidates, false);
        let reply = self
            .patch(PatchKind::Restart, body)
            .await
            .map_err(|e| e.to_string())?;
        let (frag, etag) = rules::read_patch_response(reply.as_response())
            .map_err(|e| e.to_string())?
            .ok_or("the endpoint answered the restart with 204 (no new credentials)")?;
        let frag = Fragment::parse(&frag).map_err(|e| e.to_string())?;
        let answer = trickle::restart_answer(&self.answer, &frag).map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel();
        self.control
            .send(SessionControl::AcceptRestart {
                answer: answer.clone(),
                reply: tx,
            })
            .await
            .map_err(|_| "the session ended".to_string())?;
        rx.await.map_err(|_| "the session ended".to_string())??;
        self.answer = answer;
        self.offer_creds = offer;
        if let Some(e) = etag {
            self.etag = Some(e);
        }
        let ufrag = frag.ufrag.unwrap_or_default();
        info!(remote_ufrag = %ufrag, local = %self.local, "WHIP: ICE restarted");
        Ok(ufrag)
    }
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
    let endpoint_ip = endpoint_addr(&endpoint).await?;
    let ip = match opts.bind {
        Some(ip) => ip,
        None => source_towards(endpoint_ip)
            .map_err(|e| PublishError::Local(format!("no route to {endpoint_ip}: {e}")))?,
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
        None if opts.relay_only && !opts.link_ice_servers => {
            return Err(PublishError::Local(
                "relay_only without a TURN server".into(),
            ));
        }
        // relay_only without one: the relays come from the answer's Link headers.
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

    let template = match FragmentTemplate::from_offer(&offer_sdp) {
        Ok(t) => t,
        Err(e) => {
            let _ = delete().await;
            return Err(PublishError::Local(format!("our own offer: {e}")));
        }
    };
    let (control_tx, control_rx) = mpsc::channel(8);
    let (stop_tx, stop_rx) = watch::channel(false);
    let session_opts = SessionOptions {
        video_mid: Some(video_mid),
        audio_mid: Some(audio_mid),
        started,
        outgoing: None,
        incoming: None,
        turn,
        speaker: None,
        control: Some(control_rx),
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
    let mut sig = Signalling {
        resource: session.resource.clone(),
        token: opts.token.clone(),
        tls: &tls,
        etag: session.etag.clone(),
        template,
        answer: session.answer.clone(),
        control: control_tx,
        local,
        offer_creds: offer_sdp.clone(),
        trickled: Vec::new(),
        restarts: Vec::new(),
        late_relays: Vec::new(),
        turn_servers: opts.turn.iter().cloned().collect(),
    };
    if opts.link_ice_servers && opts.turn.is_none() {
        sig.relays_from_links(&session.ice_servers, opts.ca_file.as_deref())
            .await;
        if opts.relay_only && sig.late_relays.is_empty() {
            failure = Some(PublishError::Turn(
                "relay_only: no TURN server configured and none usable in the answer's Link headers"
                    .into(),
            ));
        }
    }
    let follow = opts.follow_network && opts.bind.is_none();
    let mut roam = RoamDetector::new(local.ip(), opts.roam_settle);
    let mut next_look = tokio::time::Instant::now() + Duration::from_secs(1);
    let no_restarts = Arc::new(Notify::new());
    let restart_requests = opts.ice_restart.clone().unwrap_or(no_restarts);
    while failure.is_none() {
        let tick = tokio::time::sleep(Duration::from_millis(100));
        let mut requested = false;
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { break; }
            }
            _ = restart_requests.notified() => requested = true,
            _ = tick => {}
        }
        if task.is_finished() {
            break;
        }
        if requested {
            sig.restart(None, "requested", opts.port_range).await;
        }
        if follow && tokio::time::Instant::now() >= next_look {
            next_look = tokio::time::Instant::now() + Duration::from_secs(1);
            let snapshot = network_snapshot(endpoint_ip);
            if let Some(change) = roam.observe(Instant::now(), &snapshot) {
                let reason = match change.reason {
                    RoamReason::AddressLost => "address_lost",
                    RoamReason::RouteChanged => "route_changed",
                };
                info!(from = %change.from, to = %change.to, reason, "network changed: moving the media");
                if sig.restart(Some(change), reason, opts.port_range).await {
                    roam.moved(change.to);
                }
            }
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
        local_candidate: format!("{} host udp", sig.local),
        relay_candidate,
        late_relay_candidates: sig.late_relays.clone(),
        trickled_candidates: sig.trickled.clone(),
        ice_restarts: sig.restarts.clone(),
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

/// The restart exchange against a second str0m standing in for the endpoint,
/// on virtual time: the offer's fragment, the endpoint's credentials-only
/// answer (as simple-whip-server sends it), `restart_answer`, `accept_answer`.
#[cfg(test)]
mod restart_tests {
    use super::*;
    use str0m::change::SdpOffer;
    use str0m::net::{Protocol, Receive};
    use str0m::{Input, Output, Rtc};

    /// Hands everything `from` sends to `to`; returns when `from` wants to wake.
    fn pump(from: &mut Rtc, to: &mut Rtc, now: Instant) -> Instant {
        loop {
            match from.poll_output().unwrap() {
                Output::Timeout(t) => return t.max(now),
                Output::Transmit(t) => {
                    let r = Receive {
                        proto: Protocol::Udp,
                        source: t.source,
                        destination: t.destination,
                        contents: (&*t.contents).try_into().unwrap(),
                    };
                    to.handle_input(Input::Receive(now, r)).unwrap();
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Moves packets both ways until both are connected (or 10 virtual seconds pass).
    fn connect(a: &mut Rtc, b: &mut Rtc, now: &mut Instant) -> bool {
        let until = *now + Duration::from_secs(10);
        while *now < until {
            let wake_a = pump(a, b, *now);
            let wake_b = pump(b, a, *now);
            if a.is_connected() && b.is_connected() {
                return true;
            }
            let next = wake_a.min(wake_b).min(*now + Duration::from_millis(50));
            *now = next.max(*now + Duration::from_millis(1));
            a.handle_input(Input::Timeout(*now)).unwrap();
            b.handle_input(Input::Timeout(*now)).unwrap();
        }
        false
    }

    #[test]
    fn a_credentials_only_restart_answer_reconnects_str0m() {
        let mut now = Instant::now();
        let mut cart = rtc_config(1_000_000).build(now);
        cart.add_local_candidate(Candidate::host("10.0.0.1:1000".parse().unwrap(), "udp").unwrap());
        let mut api = cart.sdp_api();
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        api.add_channel("telecart".into());
        let (offer, pending) = api.apply().unwrap();
        let offer_sdp = offer.to_sdp_string();

        let mut endpoint = rtc_config(1_000_000).build(now);
        endpoint
            .add_local_candidate(Candidate::host("10.0.0.2:2000".parse().unwrap(), "udp").unwrap());
        let answer = endpoint.sdp_api().accept_offer(offer).unwrap();
        let answer_sdp = answer.to_sdp_string();
        cart.sdp_api().accept_answer(pending, answer).unwrap();
        assert!(connect(&mut cart, &mut endpoint, &mut now), "first connect");

        // The cart restarts: what it PATCHes.
        let mut api = cart.sdp_api();
        api.ice_restart(true);
        let (restart_offer, pending) = api.apply().unwrap();
        let ours = Fragment::parse(&restart_offer.to_sdp_string()).unwrap();
        let new_creds = ours.credentials().unwrap();
        let old = Fragment::parse(&offer_sdp).unwrap().credentials().unwrap();
        assert_ne!(new_creds, old);
        let template = FragmentTemplate::from_offer(&offer_sdp).unwrap();
        let body = template.fragment(&new_creds, &ours.candidates, false);
        assert!(body.contains("10.0.0.1 1000 typ host"), "{body}");

        // The endpoint does what simple-whip-server does: the old offer with the
        // new credentials, answered; only its credentials come back.
        let renewed = offer_sdp
            .replace(
                &format!("a=ice-ufrag:{}", old.ufrag),
                &format!("a=ice-ufrag:{}", new_creds.ufrag),
            )
            .replace(
                &format!("a=ice-pwd:{}", old.pwd),
                &format!("a=ice-pwd:{}", new_creds.pwd),
            );
        let endpoint_answer = endpoint
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&renewed).unwrap())
            .unwrap();
        let theirs = Fragment::parse(&endpoint_answer.to_sdp_string())
            .unwrap()
            .credentials()
            .unwrap();
        let reply = format!(
            "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
            theirs.ufrag, theirs.pwd
        );
        let patched =
            trickle::restart_answer(&answer_sdp, &Fragment::parse(&reply).unwrap()).unwrap();
        cart.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&patched).unwrap())
            .unwrap();
        assert!(!cart.is_connected(), "the restart starts the checks over");
        assert!(
            connect(&mut cart, &mut endpoint, &mut now),
            "connected again"
        );
    }
}
