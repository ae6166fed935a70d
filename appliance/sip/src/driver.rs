//! The tokio side: rsipstack for transports, transactions, dialogs and digest authentication;
//! our sans-IO machines ([`Registrar`], [`CallPolicy`], [`PendingCall`], [`MediaSession`]) for
//! every decision; UDP sockets for RTP.
//!
//! One call at a time (a cart has one camera and one speaker): a second INVITE gets 486.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsipstack::EndpointBuilder;
use rsipstack::dialog::DialogId;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, DialogStateSender};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::registration::Registration;
use rsipstack::sip::prelude::HeadersExt as _;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transport::TransportLayer;
use rsipstack::transport::udp::UdpConnection;

use crate::guard::ALLOW;
use crate::screened_udp::ScreenedUdpSocket;
use telecart_core::config::{SipConfig, SipTransport};
use telecart_core::media::{AudioCodec, AudioFrame, EncodedVideo};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audio::{AudioReceive, AudioSend};
use crate::media::{
    AudioSetup, MediaEvent, MediaSession, MediaSetup, MediaStats, RemoteAudioSink, StreamKind,
    VideoSetup,
};
use crate::policy::{CallPolicy, Caller, Decision, PendingAction, PendingCall};
use crate::registration::{
    RegisterOutcome, Registrar, RegistrarAction, RegistrarConfig, RegistrationStatus,
};
use crate::sdp::{self, Capabilities, LocalMedia, SessionDescription};
use crate::session_timer::{self, Refresher, SessionTimer, TimerAction, TimerAnswer, TimerRequest};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SipError {
    /// The configuration cannot be used (a registrar URI the stack refuses, a missing secret).
    #[error("sip config: {0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("sip: cannot bind {addr}: {message}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        message: String,
    },
    /// The SIP stack failed.
    #[error("sip stack: {0}")]
    Stack(String),
}

/// The cart's media as a SIP call uses it: the pipeline implements this (see docs/sip.md).
pub trait MediaPort: Send + Sync + 'static {
    /// H.264 access units (Annex B, one per frame) from the pipeline's encoder for as long as
    /// the receiver is held; `None` when the cart has no video.
    fn video(&self) -> Option<mpsc::Receiver<Arc<EncodedVideo>>>;
    /// Microphone PCM blocks for as long as the receiver is held.
    fn microphone(&self) -> Option<mpsc::Receiver<Arc<AudioFrame>>>;
    /// The peer asked for a key frame (PLI, FIR, SIP INFO picture_fast_update).
    fn request_keyframe(&self);
    /// The peer's audio, decoded (mono, at the codec's rate), for a port without a
    /// [`Self::speaker`].
    fn play(&self, _frame: AudioFrame) {}
    /// A jitter-buffered player for one call's audio packets in `codec`; `None` (the default)
    /// and the driver decodes each packet as it comes and hands it to [`Self::play`].
    fn speaker(&self, _codec: AudioCodec) -> Option<Box<dyn RemoteAudioSink>> {
        None
    }
    /// Whether the cart is busy elsewhere (a WebRTC call, privacy on): incoming calls get 486.
    fn busy(&self) -> bool {
        false
    }
}

/// Which way a call went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallDirection {
    /// A caller reached the cart.
    Inbound,
    /// The cart called out (the call button).
    Outbound,
}

/// A SIP call as the cart's state machine and session log see it.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// Which way.
    pub direction: CallDirection,
    /// The peer: the caller's From, or the URI dialled.
    pub remote: String,
    /// From the 200 OK to the end; zero if it was never answered.
    pub duration: Duration,
    /// Why it ended: `hangup` (the cart), `bye` (the peer), `cancelled`, or the final status
    /// (`486`) of a call that never came up.
    pub reason: String,
    /// The media counters at the end (zero before the answer).
    pub media: MediaStats,
}

/// The verdict of the cart on a ringing call: `Ok` when answered, the SIP status to refuse
/// with otherwise.
pub type RingVerdict = Pin<Box<dyn Future<Output = Result<(), u16>> + Send>>;

/// The cart around SIP calls: its state machine (LEDs, call button, privacy, busy) and its
/// session log. Without one ([`start`]) the SIP policy decides alone.
pub trait CartPort: Send + Sync + 'static {
    /// An INVITE the SIP policy lets through rings the cart (`auto_answer`: the policy would
    /// answer it alone). Returns the cart's id for the call and its verdict.
    fn ring(&self, caller: &str, auto_answer: bool) -> (u64, RingVerdict);
    /// The call is up: an incoming one under the id [`ring`](Self::ring) gave, or the cart's
    /// own outgoing call (`None`), which the cart numbers now and returns.
    fn connected(&self, call: Option<u64>, record: &CallRecord) -> u64;
    /// The call ended, or never came up (`None`: the outgoing call before its answer).
    fn ended(&self, call: Option<u64>, record: &CallRecord);
    /// Answers an incoming call whose offer is WebRTC media (ICE + DTLS-SRTP, a browser
    /// softphone) on the cart's WebRTC stack, when the cart has decided to answer call `call`.
    /// The default has no WebRTC stack and refuses with 488.
    fn answer_webrtc(&self, _call: Option<u64>, _request: WebRtcRequest) -> WebRtcAnswering {
        Box::pin(async { Err((488, "this endpoint has no WebRTC media".to_string())) })
    }
}

// ---- Browser softphones: WebRTC media answered by the cart's WebRTC stack ----

/// How long the cart waits for the caller's BYE after its WebRTC media ended before it sends
/// its own.
const WEBRTC_BYE_GRACE: Duration = Duration::from_secs(2);

/// The key-press length the cart's DTMF INFO states (the RFC 4733 path's default too).
const DTMF_INFO_DURATION_MS: u32 = 160;

/// An incoming call's WebRTC offer, for [`CartPort::answer_webrtc`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebRtcRequest {
    /// The offer, as the INVITE carried it.
    pub offer: String,
    /// The caller (From, without tags).
    pub remote: String,
    /// The address the SIP endpoint uses towards the registrar: where to offer media when the
    /// cart's WebRTC configuration names none.
    pub local_ip: IpAddr,
}

/// A WebRTC call the cart's WebRTC stack answered for a SIP dialog.
pub struct WebRtcLeg {
    /// The SDP answer for the 200 OK, with its ICE candidates (SIP phones do not trickle).
    pub answer: String,
    /// Resolves with the reason when the WebRTC call ends by itself (ICE or DTLS failure,
    /// consent lost); the driver then sends BYE.
    pub ended: Pin<Box<dyn Future<Output = String> + Send>>,
    /// Ends the WebRTC call (BYE from the caller, the cart hanging up).
    pub hang_up: Box<dyn FnOnce() + Send>,
    /// Mutes (`true`) or unmutes the cart's microphone in this call: `[sip] mute_on_answer`,
    /// then [`SipCommand::Mute`]; the driver unmutes when the call ends.
    pub set_muted: Box<dyn Fn(bool) + Send + Sync>,
}

impl std::fmt::Debug for WebRtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcLeg")
            .field("answer", &self.answer)
            .finish_non_exhaustive()
    }
}

/// [`CartPort::answer_webrtc`]'s outcome: the leg, or the SIP status and reason to refuse with.
pub type WebRtcAnswering = Pin<Box<dyn Future<Output = Result<WebRtcLeg, (u16, String)>> + Send>>;

/// What a status page shows about SIP.
#[derive(Clone, Debug, PartialEq)]
pub struct SipStatus {
    /// `registering`, `registered`, `failed`, `stopped`.
    pub registration: &'static str,
    /// The registrar URI in use.
    pub registrar: Option<String>,
    /// Last failure, for the technician.
    pub last_error: Option<String>,
    /// Successful registrations since start.
    pub registrations: u64,
    /// Time from sending the first REGISTER to its 200 OK (digest round trip included).
    pub last_register_ms: Option<f64>,
    /// The call in progress: caller and state (`ringing`, `answered`, `held`).
    pub call: Option<(String, &'static str)>,
    /// Calls answered since start.
    pub calls_answered: u64,
    /// Calls refused (policy, busy, no common codec).
    pub calls_rejected: u64,
    /// Requests over UDP the stack cannot parse, answered 400 Bad Request.
    pub bad_requests: u64,
    /// Requests over UDP with a method the cart does not implement, answered 501.
    pub unknown_methods: u64,
    /// INVITE received to 200 OK sent, last call.
    pub last_answer_ms: Option<f64>,
    /// DTMF digits received in the current or last call.
    pub dtmf_received: String,
    /// Media counters of the current or last call.
    pub media: crate::media::MediaStats,
}

impl Default for SipStatus {
    fn default() -> Self {
        Self {
            registration: "registering",
            registrar: None,
            last_error: None,
            registrations: 0,
            last_register_ms: None,
            call: None,
            calls_answered: 0,
            calls_rejected: 0,
            bad_requests: 0,
            unknown_methods: 0,
            last_answer_ms: None,
            dtmf_received: String::new(),
            media: crate::media::MediaStats::default(),
        }
    }
}

/// Commands from the cart (buttons, console) to the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipCommand {
    /// Answer the ringing call.
    Answer,
    /// End the call (BYE, or 480 while ringing).
    HangUp,
    /// Send a DTMF digit (RFC 4733).
    Dtmf(char),
    /// Mute or unmute the microphone in the call.
    Mute(bool),
    /// Call this URI (the call button): INVITE through the registrar with our offer.
    Call(String),
}

/// A running endpoint.
#[derive(Debug)]
pub struct SipEndpoint {
    /// Send commands here.
    pub commands: mpsc::Sender<SipCommand>,
    /// Watch the status here.
    pub status: watch::Receiver<SipStatus>,
    /// The SIP address bound.
    pub local_addr: SocketAddr,
    quit: CancellationToken,
    stack: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SipEndpoint {
    /// Unregisters, ends the call and stops.
    pub async fn shutdown(self) {
        self.quit.cancel();
        let mut task = self.task;
        // An unreachable registrar must not hold the daemon's exit for a whole transaction.
        if tokio::time::timeout(Duration::from_secs(3), &mut task)
            .await
            .is_err()
        {
            self.stack.cancel();
            let _ = task.await;
        }
    }
}

/// Runs the endpoint until `shutdown` resolves (for `cartd run`).
pub async fn run(
    config: SipConfig,
    password: String,
    media: Arc<dyn MediaPort>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SipError> {
    let endpoint = start(config, password, media).await?;
    shutdown.await;
    endpoint.shutdown().await;
    Ok(())
}

/// The address the kernel would use to reach `target`: the one to put in Contact and SDP.
fn local_ip_towards(target: IpAddr) -> IpAddr {
    let probe = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    std::net::UdpSocket::bind(probe)
        .and_then(|s| {
            s.connect(SocketAddr::new(target, 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(target)
}

fn registrar_uri(uri: &str, transport: SipTransport) -> String {
    match transport_param(transport) {
        Some(param) if !uri.contains(";transport=") => format!("{uri};transport={param}"),
        _ => uri.to_string(),
    }
}

/// The URI of a name-addr (`"Dr" <sip:dr@h>;tag=x` gives `sip:dr@h`), for the session log.
fn addr_spec(header: &str) -> String {
    match (header.find('<'), header.rfind('>')) {
        (Some(a), Some(b)) if a < b => header[a + 1..b].to_string(),
        _ => header
            .split(';')
            .next()
            .unwrap_or(header)
            .trim()
            .to_string(),
    }
}

fn host_of(uri: &str) -> Option<String> {
    Caller::from_uri(uri).map(|c| c.host)
}

/// Starts the endpoint: binds SIP, starts registering, answers calls per policy.
pub async fn start(
    config: SipConfig,
    password: String,
    media: Arc<dyn MediaPort>,
) -> Result<SipEndpoint, SipError> {
    start_with(config, password, media, None).await
}

/// [`start`], with calls going through the cart's state machine and session log.
pub async fn start_with(
    config: SipConfig,
    password: String,
    media: Arc<dyn MediaPort>,
    cart: Option<Arc<dyn CartPort>>,
) -> Result<SipEndpoint, SipError> {
    // The process's DTLS-SRTP certificate, made now rather than inside the first call's answer.
    if let Err(e) = crate::dtls::local_identity() {
        warn!(error = %e, "sip: no DTLS-SRTP certificate: DTLS-SRTP calls will be refused");
    }
    let primary = config
        .registrars
        .first()
        .ok_or_else(|| SipError::Config("no registrar".into()))?;
    let registrar_host = host_of(primary)
        .ok_or_else(|| SipError::Config(format!("registrar {primary:?} has no host")))?;
    let registrar_ip: IpAddr = registrar_host
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(registrar_host.as_str(), 5060))
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
                .ok_or(())
        })
        .map_err(|_| SipError::Config(format!("cannot resolve {registrar_host}")))?;
    let local_ip = if config.listen.ip().is_unspecified() {
        local_ip_towards(registrar_ip)
    } else {
        config.listen.ip()
    };

    let stop = CancellationToken::new();
    let transport_layer = TransportLayer::new(stop.child_token());
    let (status_tx, status_rx) = watch::channel(SipStatus::default());
    let bind_error = |e: std::io::Error| SipError::Bind {
        addr: config.listen,
        message: e.to_string(),
    };
    let socket = ScreenedUdpSocket::bind(config.listen, status_tx.clone())
        .await
        .map_err(bind_error)?;
    let port = socket.local_addr().map_err(bind_error)?.port();
    let local_addr = SocketAddr::new(local_ip, port);
    // The stack advertises the bound address in Via and Contact; with a wildcard bind that is
    // useless to the registrar, so it advertises the address the registrar will see.
    let external = config.listen.ip().is_unspecified().then_some(local_addr);
    let udp = UdpConnection::from_socket(Arc::new(socket), external, Some(stop.child_token()))
        .await
        .map_err(|e| SipError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
    transport_layer.add_transport(udp.into());
    if matches!(config.transport, SipTransport::Tls | SipTransport::Wss) {
        // cartd may link several rustls backends; the stack needs one chosen process-wide.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let read = |p: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>, SipError> {
            p.as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|e| SipError::Config(format!("{}: {e}", p.display())))
                })
                .transpose()
        };
        transport_layer.set_tls_config(rsipstack::transport::tls::TlsConfig {
            ca_certs: read(&config.ca_cert)?,
            client_cert: read(&config.client_cert)?,
            client_key: read(&config.client_key)?,
            ..Default::default()
        });
    }
    let endpoint = EndpointBuilder::new()
        // Call-IDs are bare random UUIDs: the stack's default suffix names its vendor's domain.
        .with_option(rsipstack::transaction::endpoint::EndpointOption {
            callid_format: rsipstack::transaction::CallIdFormat::Uuid,
            ..Default::default()
        })
        .with_cancel_token(stop.child_token())
        .with_transport_layer(transport_layer)
        .with_user_agent(concat!("telecart/", env!("CARGO_PKG_VERSION")))
        .build();
    let incoming = endpoint
        .incoming_transactions()
        .map_err(|e| SipError::Stack(e.to_string()))?;
    let inner = endpoint.inner.clone();
    let dialogs = Arc::new(DialogLayer::new(inner.clone()));
    let (state_tx, state_rx) = dialogs.new_dialog_state_channel();

    let (command_tx, command_rx) = mpsc::channel(16);
    let domain = if config.domain.is_empty() {
        registrar_host.clone()
    } else {
        config.domain.clone()
    };
    let contact: rsipstack::sip::Uri = format!("sip:{}@{}", config.user, local_addr)
        .as_str()
        .try_into()
        .map_err(|e: rsipstack::sip::Error| SipError::Config(format!("contact: {e}")))?;
    let credential = Credential {
        username: config.user.clone(),
        password,
        realm: None,
        auth_username: (!config.auth_user.is_empty()).then(|| config.auth_user.clone()),
    };
    let registrars: Vec<rsipstack::sip::Uri> = config
        .registrars
        .iter()
        .map(|r| {
            registrar_uri(r, config.transport)
                .as_str()
                .try_into()
                .map_err(|e: rsipstack::sip::Error| SipError::Config(format!("{r}: {e}")))
        })
        .collect::<Result<_, _>>()?;

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        cart,
        events: events_tx,
        credential: credential.clone(),
        registrars: registrars.clone(),
        current_registrar: AtomicUsize::new(0),
        config: config.clone(),
        policy: CallPolicy::new(&config.policy),
        media,
        local_ip,
        contact: std::sync::Mutex::new(contact),
        dialogs: dialogs.clone(),
        state_tx,
        status: status_tx,
        aor_domain: domain,
        webrtc_offers: std::sync::Mutex::default(),
    });
    info!(%local_addr, registrar = %primary, "sip: endpoint up");

    // `quit` ends our loops (BYE the call, unregister); the stack under them stops after,
    // so those last requests still go out.
    let quit = CancellationToken::new();
    let task_quit = quit.clone();
    let stack = stop.clone();
    let task = tokio::spawn(async move {
        let serve = endpoint.serve();
        let reg = register_loop(
            inner,
            registrars,
            credential,
            ctx.clone(),
            task_quit.clone(),
        );
        let calls = call_loop(
            ctx.clone(),
            incoming,
            state_rx,
            command_rx,
            events_rx,
            task_quit.clone(),
        );
        tokio::select! {
            _ = serve => warn!("sip: endpoint stopped"),
            _ = async { tokio::join!(reg, calls) } => {},
        }
        endpoint.shutdown();
        stack.cancel();
    });
    Ok(SipEndpoint {
        commands: command_tx,
        status: status_rx,
        local_addr,
        quit,
        stack: stop,
        task,
    })
}

/// What tasks of the call loop report back to it.
enum LoopEvent {
    /// The cart's verdict on the ringing call with this Call-ID.
    Verdict {
        call_id: String,
        verdict: Result<(), u16>,
    },
    /// A session refresh we sent for this Call-ID was answered 2xx.
    Refreshed { call_id: String },
    /// The WebRTC media of the call with this Call-ID ended by itself (ICE, DTLS).
    WebRtcEnded { call_id: String, why: String },
    /// The RTP media of the call with this Call-ID cannot go on (DTLS-SRTP failed).
    MediaFailed { call_id: String, why: String },
    /// Our INVITE with this Call-ID got its final response (or failed).
    Dialed {
        call_id: String,
        result: Result<(DialogId, Option<rsipstack::sip::Response>), String>,
        dialing: Box<Dialing>,
    },
}

/// The cart's own INVITE in flight: what to send again when it is challenged, and the SRTP
/// keys its offer carried (the answer's `a=crypto` picks one of them).
struct Dialing {
    option: InviteOption,
    keys: crate::outgoing::OfferedKeys,
    /// Challenges answered so far: one, and one more for a stale nonce.
    challenges: u8,
    /// The session interval asked for (RFC 4028), raised once by a 422.
    session_expires: Duration,
}

impl Dialing {
    /// Sets (or replaces) one header of the INVITE; the retries keep everything else.
    fn set_header(&mut self, header: Header) {
        let headers = self.option.headers.get_or_insert_with(Vec::new);
        headers.retain(|h| !h.name().eq_ignore_ascii_case(header.name()));
        headers.push(header);
    }

    /// The INVITE's session-timer headers (RFC 4028 §7.1): the interval asked for, the
    /// refresher left to the answerer, and the lowest interval we accept (after a 422, the
    /// answerer's, §7.3).
    fn ask_session_timer(&mut self, interval: Duration, min_se: Duration) {
        self.session_expires = interval;
        self.set_header(Header::Other("Supported".into(), "timer".into()));
        self.set_header(Header::Other(
            "Session-Expires".into(),
            interval.as_secs().to_string(),
        ));
        self.set_header(Header::Other("Min-SE".into(), min_se.as_secs().to_string()));
    }
}

struct Context {
    cart: Option<Arc<dyn CartPort>>,
    events: mpsc::UnboundedSender<LoopEvent>,
    credential: Credential,
    registrars: Vec<rsipstack::sip::Uri>,
    /// The registrar in use: our own calls go out through it.
    current_registrar: AtomicUsize,
    config: SipConfig,
    policy: CallPolicy,
    media: Arc<dyn MediaPort>,
    local_ip: IpAddr,
    /// Where the registrar reaches us: the UDP address, or for a stream transport the local
    /// end of the registered connection (so the proxy sends INVITEs down that flow).
    contact: std::sync::Mutex<rsipstack::sip::Uri>,
    dialogs: Arc<DialogLayer>,
    state_tx: DialogStateSender,
    status: watch::Sender<SipStatus>,
    aor_domain: String,
    /// WebRTC offers of ringing calls by Call-ID, answered by the cart's WebRTC stack.
    webrtc_offers: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Context {
    fn contact(&self) -> rsipstack::sip::Uri {
        self.contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_contact(&self, uri: rsipstack::sip::Uri) {
        *self.contact.lock().unwrap_or_else(|p| p.into_inner()) = uri;
    }
}

/// The `transport=` parameter a Contact carries for a stream transport (RFC 3261 §19.1.1,
/// RFC 7118 §5); UDP has none.
fn transport_param(transport: SipTransport) -> Option<&'static str> {
    match transport {
        SipTransport::Udp => None,
        SipTransport::Tcp => Some("tcp"),
        SipTransport::Tls => Some("tls"),
        SipTransport::Ws => Some("ws"),
        SipTransport::Wss => Some("wss"),
    }
}

/// For a stream transport, the Contact naming the local end of the connection to `registrar`
/// (dialled now if needed): a proxy such as Kamailio then finds that connection by the
/// Contact's address and sends INVITEs down it, which is the only way back to a cart behind
/// NAT or over WebSocket (RFC 7118 §5: the proxy cannot open a WebSocket to the cart).
async fn flow_contact(
    endpoint: &EndpointInnerRef,
    registrar: &rsipstack::sip::Uri,
    config: &SipConfig,
) -> Option<rsipstack::sip::Uri> {
    let (user, transport) = (&config.user, config.transport);
    let param = transport_param(transport)?;
    let dest = rsipstack::transport::SipAddr::try_from(registrar).ok()?;
    let connection = match endpoint.transport_layer.lookup(&dest, None).await {
        Ok((connection, _)) => connection,
        // The stack cannot dial `wss` with our CA (crate::wss): no live flow, so open one.
        Err(_) if transport == SipTransport::Wss => {
            let dialled = match crate::wss::client_config(config) {
                Ok(tls) => crate::wss::dial(&dest, tls, CancellationToken::new()).await,
                Err(e) => Err(e),
            };
            match dialled {
                Ok(connection) => {
                    endpoint.transport_layer.add_connection(connection.clone());
                    connection
                }
                Err(e) => {
                    warn!(registrar = %registrar, "sip: {e}");
                    return None;
                }
            }
        }
        Err(_) => return None,
    };
    let local = connection.get_addr().addr.clone();
    format!("sip:{user}@{local};transport={param}")
        .as_str()
        .try_into()
        .ok()
}

fn outcome_of(
    result: &Result<rsipstack::sip::Response, rsipstack::Error>,
    registration: &Registration,
    asked: u32,
) -> RegisterOutcome {
    match result {
        Ok(resp) if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
            RegisterOutcome::Registered {
                granted_secs: registration
                    .granted_expires
                    .filter(|g| *g > 0)
                    .unwrap_or(asked),
            }
        }
        Ok(resp) if u16::from(resp.status_code.clone()) == 423 => {
            RegisterOutcome::IntervalTooBrief {
                min_expires_secs: resp
                    .header_value("Min-Expires")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            }
        }
        Ok(resp) => RegisterOutcome::Rejected {
            status: u16::from(resp.status_code.clone()),
        },
        Err(_) => RegisterOutcome::Unreachable,
    }
}

async fn register_loop(
    endpoint: EndpointInnerRef,
    registrars: Vec<rsipstack::sip::Uri>,
    credential: Credential,
    ctx: Arc<Context>,
    stop: CancellationToken,
) {
    let config = RegistrarConfig {
        registrars: registrars.len(),
        expires: Duration::from_secs(u64::from(ctx.config.expires_secs)),
        keepalive: (ctx.config.keepalive_secs > 0)
            .then(|| Duration::from_secs(u64::from(ctx.config.keepalive_secs))),
        ..RegistrarConfig::default()
    };
    let mut machine = Registrar::new(config, Instant::now());
    // One Registration per registrar keeps its Call-ID and CSeq across refreshes (RFC 3261 §10.2.4).
    let mut sessions: Vec<Registration> = registrars
        .iter()
        .map(|_| {
            let mut r = Registration::new(endpoint.clone(), Some(credential.clone()));
            r.contact = Some(rsipstack::sip::typed::Contact {
                display_name: None,
                uri: ctx.contact(),
                params: vec![],
            });
            r
        })
        .collect();
    // Registrars whose challenge rsipstack cannot parse; answered with crate::digest.
    let mut own_digest = vec![false; registrars.len()];
    let mut stopping = false;
    loop {
        let now = Instant::now();
        while let Some(action) = machine.poll_action(now) {
            match action {
                RegistrarAction::Register { registrar, expires } => {
                    let Some(session) = sessions.get_mut(registrar) else {
                        break;
                    };
                    let started = Instant::now();
                    ctx.current_registrar.store(registrar, Ordering::Relaxed);
                    let flow = tokio::time::timeout(
                        Duration::from_secs(5),
                        flow_contact(&endpoint, &registrars[registrar], &ctx.config),
                    )
                    .await
                    .ok()
                    .flatten();
                    // A stream transport with no connection to the registrar (refused, or no
                    // answer in 5 s): the REGISTER cannot go out, and waiting for its
                    // transaction to time out (32 s) would only delay failover.
                    let unreachable = flow.is_none()
                        && expires > 0
                        && transport_param(ctx.config.transport).is_some();
                    if let Some(uri) = flow {
                        if ctx.contact() != uri {
                            debug!(contact = %uri, "sip: contact follows the registered flow");
                        }
                        session.contact = Some(rsipstack::sip::typed::Contact {
                            display_name: None,
                            uri: uri.clone(),
                            params: vec![],
                        });
                        ctx.set_contact(uri);
                    }
                    let mut result = if unreachable {
                        Err(rsipstack::Error::EndpointError(
                            "no connection to the registrar".into(),
                        ))
                    } else if own_digest[registrar] {
                        register_own_digest(session, &registrars[registrar], expires, &credential)
                            .await
                    } else {
                        session
                            .register(registrars[registrar].clone(), Some(expires))
                            .await
                    };
                    if !own_digest[registrar]
                        && matches!(&result, Err(e) if e.to_string().contains("invalid Algorithm"))
                    {
                        info!(registrar = %registrars[registrar], "sip: digest algorithm the stack cannot parse (RFC 8760 SHA-256): answering it ourselves");
                        own_digest[registrar] = true;
                        result = register_own_digest(
                            session,
                            &registrars[registrar],
                            expires,
                            &credential,
                        )
                        .await;
                    }
                    let outcome = if expires == 0 {
                        RegisterOutcome::Registered { granted_secs: 0 }
                    } else {
                        outcome_of(&result, session, expires)
                    };
                    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                    info!(registrar = %registrars[registrar], expires, ?outcome, ms = elapsed, "sip: REGISTER");
                    machine.handle_outcome(Instant::now(), outcome.clone());
                    ctx.status.send_modify(|s| {
                        s.registrar = Some(registrars[registrar].to_string());
                        match &outcome {
                            RegisterOutcome::Registered { .. } if expires > 0 => {
                                s.registrations += 1;
                                s.last_register_ms = Some(elapsed);
                                s.last_error = None;
                            }
                            RegisterOutcome::Registered { .. } => {}
                            other => {
                                s.last_error = Some(match &result {
                                    Err(e) => format!("{other:?}: {e}"),
                                    Ok(_) => format!("{other:?}"),
                                })
                            }
                        }
                        s.registration = match machine.status(Instant::now()) {
                            RegistrationStatus::Registered { .. } => "registered",
                            RegistrationStatus::Registering { .. } => "registering",
                            RegistrationStatus::Failed { .. } => "failed",
                            RegistrationStatus::Stopped => "stopped",
                        };
                    });
                }
                RegistrarAction::KeepAlive { registrar }
                    if transport_param(ctx.config.transport).is_some() =>
                {
                    // A stream flow is kept open by the stack; what the keep-alive checks is
                    // that it is still the flow the binding names (RFC 5626 §4.4.1). The
                    // registrar gone (connection refused) or a new connection: register again.
                    let flow = tokio::time::timeout(
                        Duration::from_secs(5),
                        flow_contact(&endpoint, &registrars[registrar], &ctx.config),
                    )
                    .await
                    .ok()
                    .flatten();
                    if flow.as_ref() != Some(&ctx.contact()) {
                        info!(registrar = %registrars[registrar], "sip: the flow to the registrar is gone: registering again");
                        machine.flow_lost(Instant::now());
                    }
                }
                RegistrarAction::KeepAlive { registrar } => {
                    // Over UDP a CRLF ping has no answer, so a registrar that died would only
                    // be noticed when a refresh times out; an OPTIONS probe keeps the NAT
                    // binding open and is answered by any live SIP server.
                    let aor = format!("sip:{}@{}", ctx.config.user, ctx.aor_domain);
                    if let Some(uri) = registrars.get(registrar)
                        && let Ok(aor) = rsipstack::sip::Uri::try_from(aor.as_str())
                        && !registrar_answers(&endpoint, uri, &aor).await
                    {
                        info!(registrar = %uri, "sip: the registrar does not answer OPTIONS: registering elsewhere");
                        machine.registrar_silent(Instant::now());
                    }
                }
            }
        }
        if stopping && machine.poll_timeout().is_none() {
            return;
        }
        let wait = machine
            .poll_timeout()
            .map(|(at, _)| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                machine.stop();
            }
        }
    }
}

/// How long an OPTIONS probe waits: over UDP the request has been sent four times by then
/// (RFC 3261 timer E: 0, 0.5, 1.5, 3.5 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// Whether the registrar answers an OPTIONS (RFC 3261 §11) within [`PROBE_TIMEOUT`]: any
/// response, even 404 or 405, means a live server.
async fn registrar_answers(
    endpoint: &EndpointInnerRef,
    registrar: &rsipstack::sip::Uri,
    aor: &rsipstack::sip::Uri,
) -> bool {
    use rsipstack::transaction::key::{TransactionKey, TransactionRole};
    use rsipstack::transaction::transaction::Transaction;
    let Ok(via) = endpoint.get_via(None, None) else {
        return true;
    };
    let from = rsipstack::sip::typed::From {
        display_name: None,
        uri: aor.clone(),
        params: vec![],
    }
    .with_tag(rsipstack::transaction::make_tag());
    let to = rsipstack::sip::typed::To {
        display_name: None,
        uri: registrar.clone(),
        params: vec![],
    };
    let request = endpoint.make_request(Method::Options, registrar.clone(), via, from, to, 1, None);
    let Ok(key) = TransactionKey::from_request(&request, TransactionRole::Client) else {
        return true;
    };
    let mut tx = Transaction::new_client(key, request, endpoint.clone(), None);
    if tx.send().await.is_err() {
        return false;
    }
    let answered = async {
        while let Some(message) = tx.receive().await {
            if matches!(message, rsipstack::sip::SipMessage::Response(_)) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(PROBE_TIMEOUT, answered)
        .await
        .unwrap_or(false)
}

/// REGISTER answering the digest challenge ourselves ([`crate::digest`]): rsipstack 0.7.14
/// refuses RFC 8760's `algorithm=SHA-256` (it parses only `SHA256`) and would send `SHA256`
/// back. The stack still builds and sends each REGISTER (same Call-ID, rising CSeq, Contact);
/// only the Authorization header is ours.
async fn register_own_digest(
    session: &mut Registration,
    server: &rsipstack::sip::Uri,
    expires: u32,
    credential: &Credential,
) -> Result<rsipstack::sip::Response, rsipstack::Error> {
    let stack_credential = session.credential.take();
    let ours = |h: &Header| {
        matches!(
            h,
            Header::Authorization(_) | Header::From(_) | Header::To(_)
        )
    };
    // Without a credential the stack leaves the user out of From and To: put it back.
    let mut aor = server.clone();
    aor.auth = Some(rsipstack::sip::Auth {
        user: credential.username.clone(),
        password: None,
    });
    let identity = |tagged: bool| {
        let tag = if tagged {
            format!(";tag={:08x}", rand::random::<u32>())
        } else {
            String::new()
        };
        vec![
            Header::From(format!("<{aor}>{tag}").into()),
            Header::To(format!("<{aor}>").into()),
        ]
    };
    session.extra_headers.retain(|h| !ours(h));
    session.extra_headers.extend(identity(true));
    let mut result = session.register(server.clone(), Some(expires)).await;
    // One answer, and one more for a stale nonce.
    for _ in 0..2 {
        let challenge = match &result {
            Ok(resp) if u16::from(resp.status_code.clone()) == 401 => resp
                .header_value("WWW-Authenticate")
                .map(|v| crate::digest::Challenge::parse(&v)),
            _ => None,
        };
        let challenge = match challenge {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                warn!(error = %e, "sip: registrar's challenge");
                break;
            }
            None => break,
        };
        let user = credential
            .auth_username
            .as_deref()
            .unwrap_or(&credential.username);
        let cnonce = format!("{:016x}", rand::random::<u64>());
        let value = challenge.answer(
            user,
            &credential.password,
            "REGISTER",
            &server.to_string(),
            &cnonce,
            1,
        );
        session.extra_headers.retain(|h| !ours(h));
        session.extra_headers.extend(identity(true));
        session
            .extra_headers
            .push(Header::Authorization(value.into()));
        result = session.register(server.clone(), Some(expires)).await;
    }
    session.extra_headers.retain(|h| !ours(h));
    session.credential = stack_credential;
    result
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from(code)
}

/// Commands to the task of the current call.
#[derive(Debug)]
enum CallControl {
    Reinvite(Box<MediaSetup>),
    Dtmf(char),
    Mute(bool),
    End,
}

struct ActiveCall {
    id: DialogId,
    dialog: InviteDialog,
    /// The peer's last offer (or its answer to ours).
    offer: Option<SessionDescription>,
    local: LocalMedia,
    control: Option<mpsc::Sender<CallControl>>,
    pending: Option<PendingCall>,
    /// What was negotiated; `None` while our own INVITE awaits its answer.
    answer: Option<sdp::Answer>,
    sockets: Option<CallSockets>,
    received: Instant,
    direction: CallDirection,
    remote: String,
    /// The cart's id for the call, once the cart knows it.
    cart_call: Option<u64>,
    answered: Option<Instant>,
    /// RFC 4028: what the 2xx says, then the running timer.
    timer_answer: TimerAnswer,
    timer: Option<SessionTimer>,
    /// A call whose media the WebRTC stack answered: the caller's offer and the stack's answer
    /// (what a refresh re-INVITE is answered with again).
    webrtc: Option<WebRtcSdp>,
}

/// The offer/answer of a WebRTC leg.
struct WebRtcSdp {
    offer: String,
    answer: String,
}

impl ActiveCall {
    fn dialing(&self) -> bool {
        self.direction == CallDirection::Outbound && self.answered.is_none()
    }

    fn record(&self, ctx: &Context, reason: &str) -> CallRecord {
        CallRecord {
            direction: self.direction,
            remote: self.remote.clone(),
            duration: self.answered.map(|a| a.elapsed()).unwrap_or_default(),
            reason: reason.to_string(),
            media: if self.answered.is_some() {
                ctx.status.borrow().media.clone()
            } else {
                MediaStats::default()
            },
        }
    }
}

struct CallSockets {
    audio: (UdpSocket, UdpSocket),
    video: (UdpSocket, UdpSocket),
}

async fn bind_pair(ip: IpAddr, min: u16, max: u16) -> std::io::Result<(UdpSocket, UdpSocket)> {
    if min != 0 {
        let mut p = min & !1;
        while p < max {
            if let Ok(rtp) = UdpSocket::bind(SocketAddr::new(ip, p)).await
                && let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, p + 1)).await
            {
                return Ok((rtp, rtcp));
            }
            p += 2;
        }
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free RTP port pair",
        ));
    }
    // Any even port whose successor is free too.
    for _ in 0..32 {
        let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1)).await {
            return Ok((rtp, rtcp));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free RTP port pair",
    ))
}

fn media_setup(answer: &sdp::Answer, on_hold: bool) -> MediaSetup {
    MediaSetup {
        audio: answer.audio.as_ref().map(|a| AudioSetup {
            codec: a.choice.codec,
            pt: a.choice.pt,
            clock: a.choice.clock,
            dtmf_pt: a.choice.dtmf_pt,
            dtmf_clock: a.choice.dtmf_clock,
            remote: a.remote,
            rtcp_mux: a.rtcp_mux,
            srtp: a.srtp.clone(),
        }),
        video: answer.video.as_ref().map(|v| VideoSetup {
            pt: v.choice.pt,
            remote: v.remote,
            rtcp_mux: v.rtcp_mux,
            srtp: v.srtp.clone(),
        }),
        send_paused: on_hold
            || answer
                .audio
                .as_ref()
                .is_some_and(|a| !a.direction.we_send()),
    }
}

fn sdp_header() -> Vec<Header> {
    vec![Header::ContentType("application/sdp".into())]
}

async fn call_loop(
    ctx: Arc<Context>,
    mut incoming: TransactionReceiver,
    mut states: DialogStateReceiver,
    mut commands: mpsc::Receiver<SipCommand>,
    mut events: mpsc::UnboundedReceiver<LoopEvent>,
    stop: CancellationToken,
) {
    let mut call: Option<ActiveCall> = None;
    loop {
        let pending = call
            .as_ref()
            .and_then(|c| c.pending.as_ref())
            .and_then(PendingCall::poll_timeout);
        let timer = call
            .as_ref()
            .and_then(|c| c.timer.as_ref())
            .and_then(SessionTimer::poll_timeout);
        let wake = [pending, timer]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => {
                if let Some(c) = call.take() {
                    end_call(&ctx, c, true, "hangup").await;
                }
                return;
            }
            event = events.recv() => {
                let Some(event) = event else { return };
                on_loop_event(&ctx, &mut call, event).await;
            }
            tx = incoming.recv() => {
                let Some(tx) = tx else { return };
                on_request(&ctx, &mut call, tx).await;
            }
            state = states.recv() => {
                let Some(state) = state else { return };
                on_dialog_state(&ctx, &mut call, state).await;
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { continue };
                on_command(&ctx, &mut call, cmd).await;
            }
            _ = tokio::time::sleep(wake) => {}
        }
        drive_pending(&ctx, &mut call).await;
        drive_timer(&ctx, &mut call).await;
    }
}

/// RFC 4028 during the call: refresh with a re-INVITE carrying the current SDP when we are
/// the refresher, BYE when the session expired unrefreshed.
async fn drive_timer(ctx: &Arc<Context>, call: &mut Option<ActiveCall>) {
    let Some(c) = call.as_mut() else { return };
    let Some(timer) = c.timer.as_mut() else {
        return;
    };
    let we_are = match c.direction {
        CallDirection::Inbound => Refresher::Uas,
        CallDirection::Outbound => Refresher::Uac,
    };
    let interval = timer.interval();
    let refresh_headers = || {
        session_timer::refresh_headers(interval, we_are)
            .into_iter()
            .map(|(name, value)| Header::Other(name.into(), value))
    };
    match timer.poll_action(Instant::now()) {
        None => {}
        Some(TimerAction::Refresh) if c.webrtc.is_some() => {
            // A WebRTC leg: its SDP belongs to the WebRTC stack, so refresh with UPDATE and no
            // body (RFC 4028 §7.4 prefers it anyway), which leaves the media alone.
            let headers = refresh_headers().collect();
            let dialog = c.dialog.clone();
            let events = ctx.events.clone();
            let call_id = c.id.call_id.clone();
            debug!(%call_id, "sip: session refresh (UPDATE)");
            tokio::spawn(async move {
                match dialog.update(Some(headers), None).await {
                    Ok(Some(resp))
                        if resp.status_code.kind()
                            == rsipstack::sip::StatusCodeKind::Successful =>
                    {
                        let _ = events.send(LoopEvent::Refreshed { call_id });
                    }
                    other => debug!(?other, "sip: session refresh not answered 2xx"),
                }
            });
        }
        Some(TimerAction::Refresh) => {
            let Some(answer) = c.answer.as_ref() else {
                return;
            };
            let body = answer.render(&c.local);
            let mut headers = sdp_header();
            headers.extend(refresh_headers());
            let dialog = c.dialog.clone();
            let events = ctx.events.clone();
            let call_id = c.id.call_id.clone();
            debug!(%call_id, "sip: session refresh");
            // The answer may take up to 32 s: not on the call loop.
            tokio::spawn(async move {
                match dialog
                    .reinvite(Some(headers), Some(body.into_bytes()))
                    .await
                {
                    Ok(Some(resp))
                        if resp.status_code.kind()
                            == rsipstack::sip::StatusCodeKind::Successful =>
                    {
                        let _ = events.send(LoopEvent::Refreshed { call_id });
                    }
                    other => debug!(?other, "sip: session refresh not answered 2xx"),
                }
            });
        }
        Some(TimerAction::Expire) => {
            info!(call_id = %c.id.call_id, "sip: session expired (RFC 4028): hanging up");
            if let Some(c) = call.take() {
                end_call(ctx, c, true, "session-expired").await;
            }
        }
    }
}

async fn on_command(ctx: &Arc<Context>, call: &mut Option<ActiveCall>, cmd: SipCommand) {
    if call.is_none()
        && let SipCommand::Call(uri) = &cmd
    {
        place_call(ctx, call, uri).await;
        return;
    }
    let Some(c) = call.as_mut() else { return };
    match cmd {
        SipCommand::Answer => {
            if let Some(p) = c.pending.as_mut() {
                p.answer();
            }
        }
        SipCommand::HangUp => {
            if let Some(c) = call.take() {
                end_call(ctx, c, true, "hangup").await;
            }
        }
        SipCommand::Call(uri) => {
            info!(%uri, "sip: the cart is busy: not calling");
            if let Some(cart) = &ctx.cart {
                let record = CallRecord {
                    direction: CallDirection::Outbound,
                    remote: uri,
                    duration: Duration::ZERO,
                    reason: "busy".into(),
                    media: MediaStats::default(),
                };
                cart.ended(None, &record);
            }
        }
        SipCommand::Dtmf(d) => {
            if let Some(ctl) = &c.control {
                let _ = ctl.send(CallControl::Dtmf(d)).await;
            }
        }
        SipCommand::Mute(m) => {
            if let Some(ctl) = &c.control {
                let _ = ctl.send(CallControl::Mute(m)).await;
            }
        }
    }
}

async fn on_request(
    ctx: &Arc<Context>,
    call: &mut Option<ActiveCall>,
    mut tx: rsipstack::transaction::transaction::Transaction,
) {
    let method = tx.original.method;
    let in_dialog = tx
        .original
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some();
    if in_dialog {
        match ctx.dialogs.match_dialog(&tx) {
            Some(mut d) => {
                tokio::spawn(async move {
                    if let Err(e) = d.handle(&mut tx).await {
                        debug!(error = %e, "sip: in-dialog request");
                    }
                });
            }
            None if method == Method::Ack => {}
            None => {
                let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            }
        }
        return;
    }
    match method {
        Method::Invite => on_invite(ctx, call, tx).await,
        Method::Options => {
            let headers = vec![
                Header::Other("Allow".into(), ALLOW.into()),
                Header::Other("Accept".into(), "application/sdp".into()),
            ];
            let _ = tx.reply_with(StatusCode::OK, headers, None).await;
        }
        Method::Ack => {}
        Method::Bye | Method::Cancel | Method::Info | Method::Update | Method::PRack => {
            let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
        }
        _ => {
            let headers = vec![Header::Other("Allow".into(), ALLOW.into())];
            let _ = tx
                .reply_with(StatusCode::MethodNotAllowed, headers, None)
                .await;
        }
    }
}

fn reject_count(ctx: &Context) {
    ctx.status.send_modify(|s| s.calls_rejected += 1);
}

/// Refuses an INVITE whose offer the cart cannot answer: 488 with the reason in a `Warning`
/// (RFC 3261 §20.43; `warn_code` 304 "media type not available", 399 miscellaneous).
async fn refuse_offer(
    ctx: &Context,
    tx: &mut rsipstack::transaction::transaction::Transaction,
    warn_code: u16,
    reason: &str,
) {
    reject_count(ctx);
    let _ = tx
        .reply_with(
            StatusCode::NotAcceptableHere,
            vec![Header::Other(
                "Warning".into(),
                format!("{warn_code} telecart \"{reason}\""),
            )],
            None,
        )
        .await;
}

async fn on_invite(
    ctx: &Arc<Context>,
    call: &mut Option<ActiveCall>,
    mut tx: rsipstack::transaction::transaction::Transaction,
) {
    let received = Instant::now();
    // The transaction layer absorbs retransmissions; the same INVITE on another branch (a
    // forking proxy's two paths meeting here) is a merged request (RFC 3261 §8.2.2.2).
    let merged = DialogId::try_from((
        &tx.original,
        rsipstack::transaction::key::TransactionRole::Server,
    ))
    .is_ok_and(|id| {
        call.as_ref().is_some_and(|c| {
            c.direction == CallDirection::Inbound
                && c.id.call_id == id.call_id
                && c.id.remote_tag == id.remote_tag
        })
    });
    if merged {
        info!("sip: merged INVITE (a loop): 482");
        let _ = tx.reply(StatusCode::LoopDetected).await;
        return;
    }
    let from = tx.original.header_value("From").unwrap_or_default();
    let caller = Caller::from_uri(&from);
    let busy = call.is_some() || ctx.media.busy();
    let decision = ctx.policy.decide(caller.as_ref(), busy);
    info!(from = %from, ?decision, "sip: INVITE");
    if let crate::policy::Decision::Reject { status } = decision {
        reject_count(ctx);
        let _ = tx.reply(status_code(status)).await;
        return;
    }
    let header = |long: &str, compact: &str| {
        tx.original
            .header_value(long)
            .or_else(|| tx.original.header_value(compact))
    };
    let (session_expires, min_se) = (header("Session-Expires", "x"), header("Min-SE", "Min-SE"));
    let supported = [header("Supported", "k"), header("Require", "Require")]
        .iter()
        .flatten()
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("timer")));
    let timer_answer = session_timer::answer_invite(&TimerRequest {
        session_expires: session_expires.as_deref(),
        min_se: min_se.as_deref(),
        supported,
    });
    if let TimerAnswer::TooSmall { min_se_secs } = timer_answer {
        reject_count(ctx);
        let _ = tx
            .reply_with(
                StatusCode::from(422),
                vec![Header::Other("Min-SE".into(), min_se_secs.to_string())],
                None,
            )
            .await;
        return;
    }
    let body = String::from_utf8_lossy(tx.original.body()).to_string();
    let webrtc = match crate::webrtc_offer::check(&body) {
        Ok(Some(_)) if ctx.cart.is_none() => {
            Err("WebRTC media needs the cart's WebRTC stack".into())
        }
        Ok(found) => Ok(found.is_some()),
        // DTLS-SRTP without ICE (desk phones, baresip's dtls_srtp): our own RTP path answers it.
        Err(crate::webrtc_offer::WebRtcOfferError::NoIceCredentials(_)) => Ok(false),
        Err(e) => Err(e.to_string()),
    };
    let webrtc = match webrtc {
        Ok(w) => w,
        Err(why) => {
            info!(%why, "sip: WebRTC offer refused");
            refuse_offer(ctx, &mut tx, 304, &why).await;
            return;
        }
    };
    if webrtc {
        // The WebRTC leg keeps the peer alive through ICE consent (RFC 7675); the cart sends
        // no SDP refreshes on it, so it never takes the refresher's part.
        let timer_answer = match timer_answer {
            TimerAnswer::Timer {
                refresher: session_timer::Refresher::Uas,
                ..
            } => TimerAnswer::None,
            other => other,
        };
        let media = InviteMedia::WebRtc { offer: body };
        return ring_invite(ctx, call, tx, decision, from, received, timer_answer, media).await;
    }
    let offer = match SessionDescription::parse(&body) {
        Ok(o) => o,
        Err(e) => {
            info!(error = %e, "sip: offer refused");
            refuse_offer(ctx, &mut tx, 399, &e.to_string()).await;
            return;
        }
    };
    let caps = Capabilities {
        video: true,
        srtp: true,
        require_srtp: ctx.config.srtp == telecart_core::config::SipSrtp::Mandatory,
    };
    let answer = match sdp::answer(&offer, &caps) {
        Ok(a) => a,
        Err(e) => {
            refuse_offer(ctx, &mut tx, 304, &e.to_string()).await;
            return;
        }
    };
    let (min, max) = (ctx.config.rtp_port_min, ctx.config.rtp_port_max);
    let sockets = match (
        bind_pair(ctx.local_ip, min, max).await,
        bind_pair(ctx.local_ip, min, max).await,
    ) {
        (Ok(audio), Ok(video)) => CallSockets { audio, video },
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "sip: no RTP ports");
            reject_count(ctx);
            let _ = tx.reply(StatusCode::ServerInternalError).await;
            return;
        }
    };
    let media = InviteMedia::Rtp {
        offer,
        answer,
        sockets,
    };
    ring_invite(ctx, call, tx, decision, from, received, timer_answer, media).await;
}

/// What an admitted INVITE's media is answered with.
// One per INVITE, moved once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum InviteMedia {
    /// Plain RTP or SDES-SRTP: negotiated here, sent from these sockets.
    Rtp {
        offer: SessionDescription,
        answer: sdp::Answer,
        sockets: CallSockets,
    },
    /// WebRTC media (ICE + DTLS-SRTP): the cart's WebRTC stack answers this offer.
    WebRtc { offer: String },
}

/// Creates the dialog of an INVITE the policy admitted and rings the cart (or the policy).
#[allow(clippy::too_many_arguments)]
async fn ring_invite(
    ctx: &Arc<Context>,
    call: &mut Option<ActiveCall>,
    mut tx: rsipstack::transaction::transaction::Transaction,
    decision: Decision,
    from: String,
    received: Instant,
    timer_answer: TimerAnswer,
    media: InviteMedia,
) {
    let dialog = match ctx.dialogs.get_or_create_server_invite(
        &tx,
        ctx.state_tx.clone(),
        None,
        Some(ctx.contact()),
    ) {
        Ok(d) => d,
        Err(e) => {
            debug!(error = %e, "sip: dialog");
            let _ = tx.reply(StatusCode::BadRequest).await;
            return;
        }
    };
    let id = dialog.id();
    let (pending, cart_call) = match &ctx.cart {
        Some(cart) => {
            let auto = matches!(decision, Decision::AutoAnswer { .. });
            let (cart_call, verdict) = cart.ring(&from, auto);
            let events = ctx.events.clone();
            let call_id = id.call_id.clone();
            tokio::spawn(async move {
                let verdict = verdict.await;
                let _ = events.send(LoopEvent::Verdict { call_id, verdict });
            });
            (PendingCall::gated(decision, received), Some(cart_call))
        }
        None => (PendingCall::new(decision, received), None),
    };
    let mut handler = dialog.clone();
    tokio::spawn(async move {
        if let Err(e) = handler.handle(&mut tx).await {
            debug!(error = %e, "sip: INVITE transaction");
        }
    });
    let session_id = rand::random::<u32>() as u64;
    let port = |s: &(UdpSocket, UdpSocket)| s.0.local_addr().map(|a| a.port()).unwrap_or(0);
    let (offer, answer, sockets) = match media {
        InviteMedia::Rtp {
            offer,
            answer,
            sockets,
        } => (Some(offer), Some(answer), Some(sockets)),
        InviteMedia::WebRtc { offer } => {
            lock(&ctx.webrtc_offers).insert(id.call_id.clone(), offer);
            (None, None, None)
        }
    };
    let local = LocalMedia {
        address: ctx.local_ip,
        audio_port: sockets.as_ref().map_or(0, |s| port(&s.audio)),
        video_port: sockets.as_ref().map_or(0, |s| port(&s.video)),
        session_id,
        version: 1,
        on_hold: false,
    };
    ctx.status.send_modify(|s| {
        s.call = Some((from.clone(), "ringing"));
        s.dtmf_received.clear();
    });
    *call = Some(ActiveCall {
        id,
        dialog,
        offer,
        local,
        control: None,
        pending: Some(pending),
        answer,
        sockets,
        received,
        direction: CallDirection::Inbound,
        remote: addr_spec(&from),
        cart_call,
        answered: None,
        timer_answer,
        timer: None,
        webrtc: None,
    });
}

async fn drive_pending(ctx: &Arc<Context>, call: &mut Option<ActiveCall>) {
    let Some(c) = call.as_mut() else { return };
    let Some(p) = c.pending.as_mut() else { return };
    while let Some(action) = p.poll_action(Instant::now()) {
        match action {
            PendingAction::Ring => {
                let _ = c.dialog.ringing(None, None);
            }
            PendingAction::Reject { status } => {
                let _ = c.dialog.reject(Some(status_code(status)), None);
                lock(&ctx.webrtc_offers).remove(&c.id.call_id);
                reject_count(ctx);
                if let Some(cart) = &ctx.cart {
                    cart.ended(c.cart_call, &c.record(ctx, &status.to_string()));
                }
                ctx.dialogs.remove_dialog(&c.id);
                ctx.status.send_modify(|s| s.call = None);
                *call = None;
                return;
            }
            PendingAction::Answer { muted } => {
                let webrtc_offer = lock(&ctx.webrtc_offers).remove(&c.id.call_id);
                if let Some(offer) = webrtc_offer {
                    answer_webrtc(ctx, call, offer, muted).await;
                    return;
                }
                let Some(answer) = c.answer.as_ref() else {
                    return;
                };
                let body = answer.render(&c.local);
                let mut headers = sdp_header();
                if let Some(se) = c.timer_answer.session_expires_header() {
                    headers.push(Header::Other("Session-Expires".into(), se));
                    if matches!(c.timer_answer, TimerAnswer::Timer { require: true, .. }) {
                        headers.push(Header::Other("Require".into(), "timer".into()));
                    }
                }
                if let Err(e) = c.dialog.accept(Some(headers), Some(body.into_bytes())) {
                    warn!(error = %e, "sip: cannot answer");
                    if let Some(cart) = &ctx.cart {
                        cart.ended(c.cart_call, &c.record(ctx, "failed"));
                    }
                    *call = None;
                    return;
                }
                c.answered = Some(Instant::now());
                c.timer = SessionTimer::for_answer(&c.timer_answer, Refresher::Uas, Instant::now());
                if let Some(cart) = &ctx.cart {
                    cart.connected(c.cart_call, &c.record(ctx, ""));
                }
                let ms = c.received.elapsed().as_secs_f64() * 1000.0;
                info!(ms, "sip: answered");
                ctx.status.send_modify(|s| {
                    s.calls_answered += 1;
                    s.last_answer_ms = Some(ms);
                    if let Some((_, state)) = s.call.as_mut() {
                        *state = "answered";
                    }
                });
                start_media(ctx, c, muted);
                c.pending = None;
                return;
            }
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The ringing call is answered and its offer is WebRTC: the cart's WebRTC stack answers it,
/// its SDP (candidates included) goes in the 200 OK, and a task ties the two ends together.
async fn answer_webrtc(
    ctx: &Arc<Context>,
    call: &mut Option<ActiveCall>,
    offer: String,
    muted: bool,
) {
    let Some(c) = call.as_mut() else { return };
    let Some(cart) = ctx.cart.clone() else { return };
    let request = WebRtcRequest {
        offer: offer.clone(),
        remote: c.remote.clone(),
        local_ip: ctx.local_ip,
    };
    let leg = match cart.answer_webrtc(c.cart_call, request).await {
        Ok(leg) => leg,
        Err((status, why)) => {
            info!(status, %why, "sip: the WebRTC stack refused the offer");
            // The stack's reject takes a reason phrase, not headers: the reason goes there.
            let phrase = why.replace(['\r', '\n'], " ");
            let _ = c.dialog.reject(Some(status_code(status)), Some(phrase));
            reject_count(ctx);
            cart.ended(c.cart_call, &c.record(ctx, &status.to_string()));
            ctx.dialogs.remove_dialog(&c.id);
            ctx.status.send_modify(|s| s.call = None);
            *call = None;
            return;
        }
    };
    let mut headers = sdp_header();
    if let Some(se) = c.timer_answer.session_expires_header() {
        headers.push(Header::Other("Session-Expires".into(), se));
        if matches!(c.timer_answer, TimerAnswer::Timer { require: true, .. }) {
            headers.push(Header::Other("Require".into(), "timer".into()));
        }
    }
    let WebRtcLeg {
        answer,
        ended,
        hang_up,
        set_muted,
    } = leg;
    // Muted before the 200 OK: not a frame of the room goes out unasked.
    if muted {
        set_muted(true);
    }
    if let Err(e) = c
        .dialog
        .accept(Some(headers), Some(answer.clone().into_bytes()))
    {
        set_muted(false);
        warn!(error = %e, "sip: cannot answer");
        hang_up();
        cart.ended(c.cart_call, &c.record(ctx, "failed"));
        *call = None;
        return;
    }
    c.answered = Some(Instant::now());
    c.timer = SessionTimer::for_answer(&c.timer_answer, Refresher::Uas, Instant::now());
    c.pending = None;
    c.webrtc = Some(WebRtcSdp { offer, answer });
    cart.connected(c.cart_call, &c.record(ctx, ""));
    let ms = c.received.elapsed().as_secs_f64() * 1000.0;
    info!(ms, muted, "sip: answered (WebRTC media)");
    ctx.status.send_modify(|s| {
        s.calls_answered += 1;
        s.last_answer_ms = Some(ms);
        if let Some((_, state)) = s.call.as_mut() {
            *state = "answered";
        }
    });
    let (ctl_tx, mut ctl_rx) = mpsc::channel(16);
    c.control = Some(ctl_tx);
    let events = ctx.events.clone();
    let call_id = c.id.call_id.clone();
    // The cart's DTMF goes out as SIP INFO (`application/dtmf-relay`, what softphones such as
    // JsSIP read), one key after the other, off this leg's task so a slow answer holds nothing.
    let (dtmf_tx, mut dtmf_rx) = mpsc::unbounded_channel::<char>();
    let dialog = c.dialog.clone();
    tokio::spawn(async move {
        while let Some(digit) = dtmf_rx.recv().await {
            let headers = vec![Header::ContentType("application/dtmf-relay".into())];
            let body = crate::dtmf_info::relay_body(digit, DTMF_INFO_DURATION_MS);
            match dialog.info(Some(headers), Some(body.into_bytes())).await {
                Ok(Some(resp))
                    if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => {}
                other => info!(%digit, ?other, "sip: DTMF INFO not answered 2xx"),
            }
        }
    });
    tokio::spawn(async move {
        // RFC 4733 events would ride the WebRTC audio, which the cart's WebRTC stack does not
        // send: DTMF goes as INFO. Mute acts on the cart's microphone for this call.
        let ended_here = async {
            while let Some(control) = ctl_rx.recv().await {
                match control {
                    CallControl::End => break,
                    CallControl::Mute(m) => {
                        info!(muted = m, "sip: microphone (WebRTC call)");
                        set_muted(m);
                    }
                    CallControl::Dtmf(d) => {
                        let _ = dtmf_tx.send(d);
                    }
                    CallControl::Reinvite(_) => {}
                }
            }
        };
        tokio::pin!(ended_here);
        tokio::select! {
            why = ended => {
                // A softphone hanging up closes its peer connection as it sends BYE, and the
                // close often arrives first: give that BYE a moment before sending ours.
                let bye = tokio::time::timeout(WEBRTC_BYE_GRACE, &mut ended_here).await;
                if bye.is_err() {
                    let _ = events.send(LoopEvent::WebRtcEnded { call_id, why });
                }
            }
            () = &mut ended_here => hang_up(),
        }
        set_muted(false);
    });
}

fn start_media(ctx: &Arc<Context>, c: &mut ActiveCall, muted: bool) {
    let Some(answer) = c.answer.as_ref() else {
        return;
    };
    let setup = media_setup(answer, false);
    let dtls = MediaDtls {
        call_id: c.id.call_id.clone(),
        streams: [
            (
                StreamKind::Audio,
                answer.audio.as_ref().and_then(|a| a.dtls.clone()),
            ),
            (
                StreamKind::Video,
                answer.video.as_ref().and_then(|v| v.dtls.clone()),
            ),
        ],
    };
    let (ctl_tx, ctl_rx) = mpsc::channel(16);
    if let Some(sockets) = c.sockets.take() {
        tokio::spawn(media_task(ctx.clone(), setup, sockets, ctl_rx, muted, dtls));
    }
    c.control = Some(ctl_tx);
}

/// Ends `c`: stops its media, tells the peer when `send_bye` (BYE, 480 while ringing, CANCEL
/// while dialling), and tells the cart why.
async fn end_call(ctx: &Arc<Context>, c: ActiveCall, send_bye: bool, reason: &str) {
    lock(&ctx.webrtc_offers).remove(&c.id.call_id);
    if let Some(ctl) = &c.control {
        let _ = ctl.send(CallControl::End).await;
    }
    if send_bye {
        if c.dialing() {
            // The 487 (or a 200 crossing the CANCEL, which the stack BYEs) ends the INVITE.
            let _ = c.dialog.cancel().await;
        } else if c.pending.is_some() {
            let _ = c
                .dialog
                .reject(Some(StatusCode::TemporarilyUnavailable), None);
        } else {
            let _ = c.dialog.bye().await;
        }
    }
    if let Some(cart) = &ctx.cart {
        let record = c.record(ctx, reason);
        let id = if c.dialing() { None } else { c.cart_call };
        cart.ended(id, &record);
    }
    ctx.dialogs.remove_dialog(&c.id);
    ctx.status.send_modify(|s| s.call = None);
}

fn outgoing_failed(ctx: &Context, uri: &str, reason: &str) {
    warn!(%uri, reason, "sip: cannot place the call");
    if let Some(cart) = &ctx.cart {
        let record = CallRecord {
            direction: CallDirection::Outbound,
            remote: uri.to_string(),
            duration: Duration::ZERO,
            reason: reason.to_string(),
            media: MediaStats::default(),
        };
        cart.ended(None, &record);
    }
}

/// The call button: INVITE `uri` through the registrar in use, with our offer.
async fn place_call(ctx: &Arc<Context>, call: &mut Option<ActiveCall>, uri: &str) {
    let started = Instant::now();
    let callee: rsipstack::sip::Uri = match uri.try_into() {
        Ok(u) => u,
        Err(e) => return outgoing_failed(ctx, uri, &format!("bad URI: {e}")),
    };
    let caller: rsipstack::sip::Uri = match format!("sip:{}@{}", ctx.config.user, ctx.aor_domain)
        .as_str()
        .try_into()
    {
        Ok(u) => u,
        Err(e) => return outgoing_failed(ctx, uri, &format!("bad AOR: {e}")),
    };
    let registrar = ctx
        .registrars
        .get(ctx.current_registrar.load(Ordering::Relaxed))
        .or(ctx.registrars.first());
    let destination = registrar.and_then(|r| rsipstack::transport::SipAddr::try_from(r).ok());
    // The registrar is the outbound proxy (RFC 3261 §8.1.2): a preloaded loose Route, not only
    // a transport destination, because the stack sends a CANCEL by the initial request's
    // route set and would otherwise resolve the Request-URI's host instead (§9.1: a CANCEL
    // goes where its INVITE went).
    let route_set = registrar
        .map(|r| {
            let mut uri = r.clone();
            uri.params.push(rsipstack::sip::Param::Lr);
            vec![rsipstack::sip::typed::Route::from(uri)]
        })
        .unwrap_or_default();
    let (min, max) = (ctx.config.rtp_port_min, ctx.config.rtp_port_max);
    let sockets = match (
        bind_pair(ctx.local_ip, min, max).await,
        bind_pair(ctx.local_ip, min, max).await,
    ) {
        (Ok(audio), Ok(video)) => CallSockets { audio, video },
        (Err(e), _) | (_, Err(e)) => {
            return outgoing_failed(ctx, uri, &format!("no RTP ports: {e}"));
        }
    };
    let local = LocalMedia {
        address: ctx.local_ip,
        audio_port: sockets.audio.0.local_addr().map(|a| a.port()).unwrap_or(0),
        video_port: sockets.video.0.local_addr().map(|a| a.port()).unwrap_or(0),
        session_id: u64::from(rand::random::<u32>()),
        version: 1,
        on_hold: false,
    };
    let keys =
        match crate::outgoing::OfferedKeys::for_config(ctx.config.srtp, ctx.config.srtp_keying) {
            Ok(k) => k,
            Err(e) => return outgoing_failed(ctx, uri, &format!("SRTP keys: {e}")),
        };
    let offer = crate::outgoing::render_offer(&local, true, &keys);
    // No stack credential: a 401/407 comes back to us and `crate::digest` answers it (MD5 or
    // RFC 8760 SHA-256, which rsipstack 0.7.14 cannot parse).
    let option = InviteOption {
        caller,
        callee,
        destination,
        content_type: Some("application/sdp".into()),
        offer: Some(offer.into_bytes()),
        contact: ctx.contact(),
        route_set,
        ..Default::default()
    };
    let mut dialing = Dialing {
        option,
        keys,
        challenges: 0,
        session_expires: session_timer::REQUESTED_SE,
    };
    dialing.ask_session_timer(session_timer::REQUESTED_SE, session_timer::MIN_SE);
    let (dialog, id) = match dial(ctx, dialing) {
        Ok(d) => d,
        Err(e) => return outgoing_failed(ctx, uri, &e),
    };
    info!(%uri, call_id = %id.call_id, srtp = ?ctx.config.srtp, "sip: calling");
    ctx.status.send_modify(|s| {
        s.call = Some((uri.to_string(), "dialing"));
        s.dtmf_received.clear();
    });
    *call = Some(ActiveCall {
        id,
        dialog,
        offer: None,
        local,
        control: None,
        pending: None,
        answer: None,
        sockets: Some(sockets),
        received: started,
        direction: CallDirection::Outbound,
        remote: uri.to_string(),
        cart_call: None,
        answered: None,
        timer_answer: TimerAnswer::None,
        timer: None,
        webrtc: None,
    });
}

/// Sends (or sends again) the cart's INVITE; its outcome comes back as [`LoopEvent::Dialed`].
fn dial(ctx: &Arc<Context>, dialing: Dialing) -> Result<(InviteDialog, DialogId), String> {
    let (dialog, outcome) = ctx
        .dialogs
        .do_invite_async(dialing.option.clone(), ctx.state_tx.clone())
        .map_err(|e| format!("INVITE: {e}"))?;
    let id = dialog.id();
    let events = ctx.events.clone();
    let call_id = id.call_id.clone();
    tokio::spawn(async move {
        let result = match outcome.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let _ = events.send(LoopEvent::Dialed {
            call_id,
            result,
            dialing: Box::new(dialing),
        });
    });
    Ok((dialog, id))
}

/// The credentials answering a 401 (`WWW-Authenticate` → `Authorization`) or 407
/// (`Proxy-Authenticate` → `Proxy-Authorization`) to `method uri`, with [`crate::digest`].
/// Of several challenges (RFC 8760 §2.4: one per algorithm) SHA-256 is taken before MD5.
fn answer_challenge(
    resp: &rsipstack::sip::Response,
    credential: &Credential,
    method: &str,
    uri: &str,
) -> Result<Header, String> {
    let proxy = u16::from(resp.status_code.clone()) == 407;
    let name = if proxy {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    let mut challenges: Vec<crate::digest::Challenge> = Vec::new();
    let mut last_error = format!("no {name}");
    for h in resp
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
    {
        match crate::digest::Challenge::parse(h.value().trim()) {
            Ok(c) => challenges.push(c),
            Err(e) => last_error = format!("{name}: {e}"),
        }
    }
    challenges.sort_by_key(|c| c.algorithm != crate::digest::DigestAlgorithm::Sha256);
    let challenge = challenges.into_iter().next().ok_or(last_error)?;
    let user = credential
        .auth_username
        .as_deref()
        .unwrap_or(&credential.username);
    let cnonce = format!("{:016x}", rand::random::<u64>());
    let value = challenge.answer(user, &credential.password, method, uri, &cnonce, 1);
    Ok(if proxy {
        Header::ProxyAuthorization(value.into())
    } else {
        Header::Authorization(value.into())
    })
}

async fn on_loop_event(ctx: &Arc<Context>, call: &mut Option<ActiveCall>, event: LoopEvent) {
    match event {
        LoopEvent::Verdict { call_id, verdict } => {
            let Some(p) = call
                .as_mut()
                .filter(|c| c.id.call_id == call_id)
                .and_then(|c| c.pending.as_mut())
            else {
                return;
            };
            match verdict {
                Ok(()) => p.admit(),
                Err(status) => p.refuse(status),
            }
        }
        LoopEvent::WebRtcEnded { call_id, why } => {
            let ours = call
                .as_ref()
                .is_some_and(|c| c.id.call_id == call_id && c.answered.is_some());
            if let Some(c) = call.take_if(|_| ours) {
                info!(%call_id, %why, "sip: the WebRTC media ended: BYE");
                end_call(ctx, c, true, &format!("webrtc: {why}")).await;
            }
        }
        LoopEvent::MediaFailed { call_id, why } => {
            if let Some(c) = call.take_if(|c| c.id.call_id == call_id) {
                warn!(%call_id, %why, "sip: media failed: BYE");
                end_call(ctx, c, true, &format!("media: {why}")).await;
            }
        }
        LoopEvent::Refreshed { call_id } => {
            if let Some(t) = call
                .as_mut()
                .filter(|c| c.id.call_id == call_id)
                .and_then(|c| c.timer.as_mut())
            {
                t.refreshed(Instant::now());
            }
        }
        LoopEvent::Dialed {
            call_id,
            result,
            mut dialing,
        } => {
            let ours = call
                .as_ref()
                .is_some_and(|c| c.dialing() && c.id.call_id == call_id);
            if !ours {
                return;
            }
            let Some(mut c) = call.take() else { return };
            let response = match result {
                Ok((_, Some(resp)))
                    if matches!(u16::from(resp.status_code.clone()), 401 | 407)
                        && dialing.challenges < 2 =>
                {
                    let uri = dialing.option.callee.to_string();
                    match answer_challenge(&resp, &ctx.credential, "INVITE", &uri) {
                        Ok(header) => {
                            dialing.set_header(header);
                            dialing.challenges += 1;
                            redial(ctx, call, c, *dialing, "with credentials").await;
                            return;
                        }
                        Err(e) => {
                            warn!(error = %e, "sip: cannot answer the INVITE's challenge");
                            Err(format!("{}: {e}", u16::from(resp.status_code.clone())))
                        }
                    }
                }
                Ok((_, Some(resp)))
                    if u16::from(resp.status_code.clone()) == 422 && dialing.challenges < 2 =>
                {
                    let min_se = header_value(&resp, "Min-SE", "Min-SE");
                    match session_timer::retry_after_too_small(
                        min_se.as_deref(),
                        dialing.session_expires,
                    ) {
                        Some(interval) => {
                            dialing.ask_session_timer(interval, interval);
                            dialing.challenges += 1;
                            redial(ctx, call, c, *dialing, "with the answerer's Min-SE").await;
                            return;
                        }
                        None => Err("422".to_string()),
                    }
                }
                Ok((id, Some(resp))) => {
                    let code = u16::from(resp.status_code.clone());
                    if (200..300).contains(&code) {
                        c.id = id;
                        Ok(resp)
                    } else {
                        Err(code.to_string())
                    }
                }
                Ok((_, None)) => Err("no answer".to_string()),
                Err(e) => Err(e),
            };
            let resp = match response {
                Ok(r) => r,
                Err(reason) => {
                    info!(uri = %c.remote, %reason, "sip: call not answered");
                    end_call(ctx, c, false, &reason).await;
                    return;
                }
            };
            let body = String::from_utf8_lossy(resp.body()).to_string();
            match crate::outgoing::settle(&body, true, &dialing.keys) {
                Ok(answer) => {
                    let ms = c.received.elapsed().as_secs_f64() * 1000.0;
                    info!(uri = %c.remote, ms, "sip: call answered");
                    c.offer = SessionDescription::parse(&body).ok();
                    c.answer = Some(answer);
                    c.answered = Some(Instant::now());
                    let session_expires = header_value(&resp, "Session-Expires", "x");
                    c.timer_answer = session_timer::settle_response(session_expires.as_deref());
                    c.timer =
                        SessionTimer::for_answer(&c.timer_answer, Refresher::Uac, Instant::now());
                    start_media(ctx, &mut c, false);
                    // The status first: whoever the cart's machine tells sees it answered.
                    ctx.status.send_modify(|s| {
                        s.calls_answered += 1;
                        if let Some((_, state)) = s.call.as_mut() {
                            *state = "answered";
                        }
                    });
                    if let Some(cart) = &ctx.cart {
                        c.cart_call = Some(cart.connected(None, &c.record(ctx, "")));
                    }
                    *call = Some(c);
                }
                Err(e) => {
                    // Answered with nothing we can send or play, or in the clear when SRTP
                    // is mandatory: hang up at once.
                    warn!(uri = %c.remote, error = %e, "sip: the answer is unusable: hanging up");
                    c.answered = Some(Instant::now());
                    end_call(ctx, c, true, "488").await;
                }
            }
        }
    }
}

/// Sends the cart's INVITE again, a new transaction of the same call: same Call-ID, a higher
/// CSeq (the dialog layer's sequence only rises; RFC 3261 §8.1.3.5).
async fn redial(
    ctx: &Arc<Context>,
    call: &mut Option<ActiveCall>,
    mut c: ActiveCall,
    mut dialing: Dialing,
    why: &str,
) {
    dialing.option.call_id = Some(c.id.call_id.clone());
    match dial(ctx, dialing) {
        Ok((dialog, id)) => {
            debug!(call_id = %id.call_id, why, "sip: INVITE sent again");
            c.id = id;
            c.dialog = dialog;
            *call = Some(c);
        }
        Err(e) => {
            info!(uri = %c.remote, reason = %e, "sip: call not answered");
            end_call(ctx, c, false, &e).await;
        }
    }
}

/// A response header's value by its name or compact form.
fn header_value(resp: &rsipstack::sip::Response, long: &str, compact: &str) -> Option<String> {
    resp.headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(long) || h.name().eq_ignore_ascii_case(compact))
        .map(|h| h.value().trim().to_string())
}

async fn on_dialog_state(ctx: &Arc<Context>, call: &mut Option<ActiveCall>, state: DialogState) {
    // An incoming call's local tag is chosen when we answer, so its Call-ID and the caller's
    // tag identify it; our own call keeps its Call-ID across a digest retry (RFC 3261 §8.1.3.5)
    // but the retry is a new dialog with a new From tag, so the challenged one's late end must
    // not end it.
    let matches = |id: &DialogId, call: &Option<ActiveCall>| {
        call.as_ref().is_some_and(|c| {
            c.id.call_id == id.call_id
                && match c.direction {
                    CallDirection::Inbound => c.id.remote_tag == id.remote_tag,
                    CallDirection::Outbound => c.id.local_tag == id.local_tag,
                }
        })
    };
    match state {
        DialogState::Terminated(id, reason) => {
            info!(%id, ?reason, "sip: call ended");
            // Our own INVITE's outcome arrives as `Dialed`; this is its early dialog ending.
            let dialing = call.as_ref().is_some_and(ActiveCall::dialing);
            if matches(&id, call)
                && !dialing
                && let Some(c) = call.take()
            {
                let why = match reason {
                    rsipstack::dialog::dialog::TerminatedReason::UacCancel => "cancelled",
                    _ if c.pending.is_some() => "cancelled",
                    _ => "bye",
                };
                end_call(ctx, c, false, why).await;
            } else if !dialing {
                ctx.dialogs.remove_dialog(&id);
            }
        }
        DialogState::Updated(id, req, handle) if matches(&id, call) => {
            let Some(c) = call.as_mut() else { return };
            // Any re-INVITE or UPDATE refreshes the session (RFC 4028 §10), and its 2xx
            // restates the interval and refresher.
            let mut timer_headers = Vec::new();
            if let Some(t) = c.timer.as_mut() {
                t.refreshed(Instant::now());
                if let Some(se) = c.timer_answer.session_expires_header() {
                    timer_headers.push(Header::Other("Session-Expires".into(), se));
                }
            }
            let body = String::from_utf8_lossy(req.body()).to_string();
            if req.method != Method::Invite || body.trim().is_empty() {
                // UPDATE without SDP or a session-timer refresh: nothing changes.
                let _ = handle
                    .respond(StatusCode::OK, Some(timer_headers), None)
                    .await;
                return;
            }
            if let Some(webrtc) = &c.webrtc {
                // The WebRTC stack does not renegotiate: the same session offered again (a
                // refresh) gets the same answer; anything else (an ICE restart, new media)
                // is refused and the call goes on as it was (RFC 3261 §14.2).
                if session_timer::same_webrtc_session(&webrtc.offer, &body) {
                    let _ = handle
                        .respond(
                            StatusCode::OK,
                            Some([sdp_header(), timer_headers].concat()),
                            Some(webrtc.answer.clone().into_bytes()),
                        )
                        .await;
                } else {
                    info!("sip: re-INVITE on a WebRTC call changes the session: 488");
                    let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                }
                return;
            }
            let caps = Capabilities {
                video: true,
                srtp: true,
                require_srtp: ctx.config.srtp == telecart_core::config::SipSrtp::Mandatory,
            };
            let parsed = SessionDescription::parse(&body).and_then(|offer| {
                sdp::answer_again(&offer, &caps, c.answer.as_ref()).map(|a| (offer, a))
            });
            match parsed {
                Ok((offer, answer)) => {
                    let held = sdp::is_hold_offer(&offer);
                    c.local.version += 1;
                    let text = answer.render(&c.local);
                    let setup = media_setup(&answer, held);
                    c.offer = Some(offer);
                    c.answer = Some(answer);
                    ctx.status.send_modify(|s| {
                        if let Some((_, st)) = s.call.as_mut() {
                            *st = if held { "held" } else { "answered" };
                        }
                    });
                    if let Some(ctl) = &c.control {
                        let _ = ctl.send(CallControl::Reinvite(Box::new(setup))).await;
                    }
                    let _ = handle
                        .respond(
                            StatusCode::OK,
                            Some([sdp_header(), timer_headers].concat()),
                            Some(text.into_bytes()),
                        )
                        .await;
                }
                Err(e) => {
                    info!(error = %e, "sip: re-INVITE refused");
                    let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                }
            }
        }
        DialogState::Info(id, req, handle) => {
            let body = String::from_utf8_lossy(req.body()).to_string();
            let ctype = req.header_value("Content-Type").unwrap_or_default();
            let mut status = StatusCode::OK;
            if body.contains("picture_fast_update") {
                ctx.media.request_keyframe();
            } else if crate::dtmf_info::format_of(&ctype).is_some() && matches(&id, call) {
                // A key press as SIP INFO (browser softphones): the same event as RFC 4733.
                match crate::dtmf_info::parse(&ctype, &body) {
                    Ok(press) => {
                        info!(digit = %press.digit, via = "INFO", "sip: DTMF");
                        ctx.status
                            .send_modify(|s| s.dtmf_received.push(press.digit));
                    }
                    Err(e) => {
                        info!(error = %e, "sip: DTMF INFO refused");
                        status = StatusCode::BadRequest;
                    }
                }
            }
            let _ = handle.reply(status).await;
        }
        DialogState::Options(_, _, handle) => {
            let _ = handle.reply(StatusCode::OK).await;
        }
        DialogState::Updated(_, _, handle)
        | DialogState::Message(_, _, handle)
        | DialogState::Notify(_, _, handle)
        | DialogState::Refer(_, _, handle)
        | DialogState::Publish(_, _, handle) => {
            let _ = handle.reply(StatusCode::NotImplemented).await;
        }
        other => debug!(state = %other, "sip: dialog"),
    }
}

fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

async fn recv_on(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    socket.recv_from(buf).await.ok()
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The DTLS-SRTP side of a call's media: which streams run a handshake, and the call to end
/// when one fails.
struct MediaDtls {
    call_id: String,
    streams: [(StreamKind, Option<crate::dtls::DtlsParams>); 2],
}

async fn media_task(
    ctx: Arc<Context>,
    setup: MediaSetup,
    sockets: CallSockets,
    mut control: mpsc::Receiver<CallControl>,
    mut muted: bool,
    dtls: MediaDtls,
) {
    let now = Instant::now();
    let mut session = MediaSession::new(setup.clone(), rand::random(), now, ntp_now());
    let mut dtls_pending = false;
    for (stream, params) in &dtls.streams {
        let Some(params) = params else { continue };
        let started = crate::dtls::local_identity()
            .and_then(|id| session.start_dtls(now, *stream, params, id));
        if let Err(e) = started {
            let why = format!("DTLS-SRTP: {e}");
            let _ = ctx.events.send(LoopEvent::MediaFailed {
                call_id: dtls.call_id.clone(),
                why,
            });
        }
        dtls_pending = true;
    }
    let mut audio_out = setup
        .audio
        .as_ref()
        .and_then(|a| AudioSend::new(a.codec, ctx_opus_bitrate()).ok());
    let mut audio_in = setup
        .audio
        .as_ref()
        .and_then(|a| AudioReceive::new(a.codec).ok());
    let mut speaker = setup
        .audio
        .as_ref()
        .and_then(|a| ctx.media.speaker(a.codec));
    let mut mic = setup.audio.as_ref().and_then(|_| ctx.media.microphone());
    let mut video = setup.video.as_ref().and_then(|_| ctx.media.video());
    if video.is_some() {
        ctx.media.request_keyframe();
    }
    let mut bufs = [[0u8; 2048]; 4];
    let [b0, b1, b2, b3] = &mut bufs;
    let mut played: u64 = 0;
    let mut last_status = Instant::now();
    loop {
        let wait = session
            .poll_timeout()
            .saturating_duration_since(Instant::now());
        tokio::select! {
            ctl = control.recv() => match ctl {
                None | Some(CallControl::End) => break,
                Some(CallControl::Reinvite(setup)) => {
                    let codec_changed = session.setup().audio.as_ref().map(|a| a.codec)
                        != setup.audio.as_ref().map(|a| a.codec);
                    if codec_changed {
                        audio_out = setup.audio.as_ref().and_then(|a| AudioSend::new(a.codec, ctx_opus_bitrate()).ok());
                        audio_in = setup.audio.as_ref().and_then(|a| AudioReceive::new(a.codec).ok());
                        // The old player lets go of the device before the new one opens it.
                        drop(speaker.take());
                        speaker = setup.audio.as_ref().and_then(|a| ctx.media.speaker(a.codec));
                    }
                    let resumed = session.setup().send_paused && !setup.send_paused;
                    session.update(*setup);
                    if resumed {
                        ctx.media.request_keyframe();
                    }
                }
                Some(CallControl::Dtmf(d)) => { session.send_dtmf(d); }
                Some(CallControl::Mute(m)) => muted = m,
            },
            r = recv_on(&sockets.audio.0, b0) => if let Some((n, from)) = r {
                session.handle_receive(Instant::now(), StreamKind::Audio, false, from, &b0[..n]);
            },
            r = recv_on(&sockets.audio.1, b1) => if let Some((n, from)) = r {
                session.handle_receive(Instant::now(), StreamKind::Audio, true, from, &b1[..n]);
            },
            r = recv_on(&sockets.video.0, b2) => if let Some((n, from)) = r {
                session.handle_receive(Instant::now(), StreamKind::Video, false, from, &b2[..n]);
            },
            r = recv_on(&sockets.video.1, b3) => if let Some((n, from)) = r {
                session.handle_receive(Instant::now(), StreamKind::Video, true, from, &b3[..n]);
            },
            frame = recv_opt(&mut mic) => match frame {
                Some(frame) => if let Some(enc) = audio_out.as_mut() {
                    for packet in enc.encode(&frame, muted) {
                        session.send_audio(&packet.data, packet.frames);
                    }
                },
                None => mic = None,
            },
            au = recv_opt(&mut video) => match au {
                Some(au) => session.send_video(&au.data, au.capture_time.as_micros()),
                None => video = None,
            },
            _ = tokio::time::sleep(wait) => session.handle_timeout(Instant::now()),
        }
        while let Some(event) = session.poll_event() {
            match event {
                MediaEvent::Audio {
                    payload,
                    timestamp,
                    sequence,
                    ..
                } => {
                    if let Some(s) = speaker.as_mut() {
                        s.packet(sequence, timestamp, &payload);
                    } else if let Some(dec) = audio_in.as_mut()
                        && let Some(frame) = dec.decode(&payload, played)
                    {
                        played += 1;
                        ctx.media.play(frame);
                    }
                }
                MediaEvent::Dtmf { digit } => {
                    info!(%digit, "sip: DTMF");
                    ctx.status.send_modify(|s| s.dtmf_received.push(digit));
                }
                MediaEvent::KeyFrameRequested => ctx.media.request_keyframe(),
                MediaEvent::Failed { stream, reason } => {
                    let why = format!("{stream:?}: {reason}");
                    let _ = ctx.events.send(LoopEvent::MediaFailed {
                        call_id: dtls.call_id.clone(),
                        why,
                    });
                }
            }
        }
        if dtls_pending && session.dtls_keyed() {
            dtls_pending = false;
            let ms = session.stats().dtls_handshake_ms;
            info!(?ms, "sip: DTLS-SRTP keys agreed");
            ctx.media.request_keyframe();
        }
        while let Some(t) = session.poll_transmit() {
            let socket = match (t.stream, t.rtcp_socket) {
                (StreamKind::Audio, false) => &sockets.audio.0,
                (StreamKind::Audio, true) => &sockets.audio.1,
                (StreamKind::Video, false) => &sockets.video.0,
                (StreamKind::Video, true) => &sockets.video.1,
            };
            let _ = socket.send_to(&t.data, t.to).await;
        }
        if last_status.elapsed() >= Duration::from_millis(500) {
            last_status = Instant::now();
            let stats = session.stats().clone();
            ctx.status.send_modify(|s| s.media = stats);
        }
    }
    let stats = session.stats().clone();
    ctx.status.send_modify(|s| s.media = stats);
}

fn ctx_opus_bitrate() -> u32 {
    32_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_log_gets_the_callers_uri_without_tags() {
        assert_eq!(
            addr_spec("\"Dr\" <sip:dr@h.example>;tag=abc"),
            "sip:dr@h.example"
        );
        assert_eq!(addr_spec("sip:dr@h.example;tag=abc"), "sip:dr@h.example");
        assert_eq!(addr_spec(""), "");
        assert_eq!(addr_spec(">junk<"), ">junk<");
    }

    #[test]
    fn stream_transports_carry_their_transport_in_uris() {
        assert_eq!(registrar_uri("sip:pbx", SipTransport::Udp), "sip:pbx");
        assert_eq!(
            registrar_uri("sip:pbx", SipTransport::Tcp),
            "sip:pbx;transport=tcp"
        );
        assert_eq!(
            registrar_uri("sip:pbx;transport=tls", SipTransport::Ws),
            "sip:pbx;transport=tls"
        );
        assert_eq!(transport_param(SipTransport::Wss), Some("wss"));
    }
}
