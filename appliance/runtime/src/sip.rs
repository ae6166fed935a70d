//! The SIP endpoint in the daemon: `telecart-sip` registered with the PBX,
//! fed by the same pipeline (H.264 access units, microphone blocks, key-frame
//! requests) as WebRTC calls, playing the caller through the same speaker path (jitter
//! buffer, loss concealment, echo-canceller reference) as WebRTC calls. Its
//! calls go through the cart's state machine (LEDs, call and hang-up buttons,
//! privacy) and into the session log like browser calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use telecart_audio::JitterSettings;
use telecart_cart::machine::{CallId, RejectReason};
use telecart_core::Config;
use telecart_core::config::{AudioConfig, BoardConfig, SipConfig};
use telecart_core::media::AudioCodec;
use telecart_core::{AudioFrame, EncodedVideo};
use telecart_sip::{
    CallDirection, CallRecord, CartPort, MediaPort, RemoteAudioSink, RingVerdict, SipEndpoint,
    WebRtcAnswering, WebRtcLeg, WebRtcRequest,
};
use telecart_store::{RecordBody, SessionId};
use telecart_transcribe::Side;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::bus::Subscriber;
use crate::captions::Captioner;
use crate::cart::CartController;
use crate::metrics::{SipJitterPublisher, SipMetrics};
use crate::overlay::{BurnInGuard, CaptionOverlay};
use crate::webrtc::call::Calls;
use crate::webrtc::speaker::{SpeakerOptions, SpeakerOutput};
use crate::{Pipeline, SessionLog};

/// The pipeline as a SIP call sees it.
pub struct SipMedia {
    pipeline: Arc<Pipeline>,
    cart: Arc<CartController>,
    audio: AudioConfig,
    /// Captions of what the caller says (their audio's 16 kHz tap).
    captions: Option<Arc<Captioner>>,
    /// `[audio_processing]`'s jitter-buffer limits, as for browser calls.
    jitter: JitterSettings,
    /// Where the call's jitter-buffer counters go for `/metrics`.
    metrics: SipMetrics,
}

/// One SIP call's audio on the speaker: the same [`SpeakerOutput`] (adaptive jitter buffer,
/// Opus PLC/FEC or G.711 PLC, resampling to the device, echo-canceller reference) as a
/// WebRTC call, fed the RTP packets as they arrive. Dropping it ends the speaker thread and
/// frees the device.
pub struct SipSpeaker {
    output: SpeakerOutput,
    /// The jitter buffer's counters for `/metrics`, while the call lasts.
    metrics: Option<SipJitterPublisher>,
}

impl SipSpeaker {
    /// Opens `speaker` for packets in `codec` through a jitter buffer held within `jitter`;
    /// `far_end` is the microphone's echo-canceller reference.
    pub fn start(
        speaker: Box<dyn telecart_devices::AudioPlayback>,
        audio: &AudioConfig,
        codec: AudioCodec,
        far_end: Option<telecart_audio::FarEndReference>,
        jitter: JitterSettings,
    ) -> std::io::Result<Self> {
        let options = SpeakerOptions {
            sample_rate: audio.sample_rate,
            channels: audio.channels,
            codec,
            jitter,
            far_end,
        };
        Ok(Self {
            output: SpeakerOutput::start_with(speaker, options)?,
            metrics: None,
        })
    }

    /// Publishes the jitter buffer's counters to `/metrics` as packets arrive.
    pub fn with_metrics(mut self, publisher: SipJitterPublisher) -> Self {
        self.metrics = Some(publisher);
        self
    }

    /// The speaker thread's handle (jitter counters, the remote party's 16 kHz tap).
    pub fn output(&self) -> &SpeakerOutput {
        &self.output
    }
}

impl RemoteAudioSink for SipSpeaker {
    fn packet(&mut self, sequence: u16, timestamp: u32, payload: &[u8]) {
        // A full queue drops the packet (counted by the output): the call must not wait.
        let _ = self.output.packet(sequence, timestamp, payload.to_vec());
        if let Some(m) = &self.metrics {
            m.publish(self.output.jitter_stats());
        }
    }
}

fn forward<T: Send + Sync + 'static>(sub: Option<Subscriber<T>>) -> Option<mpsc::Receiver<Arc<T>>> {
    let mut sub = sub?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(delivery) = sub.recv().await {
            if tx.send(delivery.item).await.is_err() {
                return;
            }
        }
    });
    Some(rx)
}

impl MediaPort for SipMedia {
    fn video(&self) -> Option<mpsc::Receiver<Arc<EncodedVideo>>> {
        forward(self.pipeline.video.subscribe())
    }

    fn microphone(&self) -> Option<mpsc::Receiver<Arc<AudioFrame>>> {
        forward(self.pipeline.raw_audio.subscribe())
    }

    fn request_keyframe(&self) {
        self.pipeline.encoder.request_keyframe();
    }

    fn speaker(&self, codec: AudioCodec) -> Option<Box<dyn RemoteAudioSink>> {
        let device = match telecart_devices::open_speaker(&self.audio) {
            Ok(Some(d)) => d,
            Ok(None) => return None,
            Err(e) => {
                warn!(error = %e, "SIP call: cannot open the speaker; the caller is not heard");
                return None;
            }
        };
        let far_end = Some(self.pipeline.far_end.clone());
        match SipSpeaker::start(device, &self.audio, codec, far_end, self.jitter) {
            Ok(s) => {
                let s = s.with_metrics(self.metrics.jitter());
                if let Some(captions) = &self.captions {
                    captions.feed(Side::Remote, &s.output().remote_tap());
                }
                Some(Box::new(s))
            }
            Err(e) => {
                warn!(error = %e, "SIP call: speaker thread");
                None
            }
        }
    }

    fn busy(&self) -> bool {
        // One call at a time on a cart, and none while privacy is on.
        self.cart.privacy().is_on() || self.cart.view().call != "idle"
    }
}

/// The SIP status a cart's refusal is sent as (RFC 3261 §21).
fn sip_status(reason: RejectReason) -> u16 {
    match reason {
        RejectReason::Busy => 486,
        RejectReason::Unavailable | RejectReason::NoAnswer => 480,
        RejectReason::Declined => 603,
    }
}

/// The board section the cart's state machine runs on: the call button dials
/// `sip.call_uri` when the board names no outgoing URI of its own.
pub fn board_with_sip_call(board: &BoardConfig, sip: &SipConfig) -> BoardConfig {
    let mut board = board.clone();
    if board.outgoing_uri.is_none() && sip.enabled && !sip.call_uri.is_empty() {
        board.outgoing_uri = Some(sip.call_uri.clone());
    }
    board
}

/// SIP calls as the cart sees them: rung through its state machine, and
/// recorded in the session log (start, call quality, end) like browser calls.
pub struct SipCart {
    cart: Arc<CartController>,
    log: Option<Arc<SessionLog>>,
    /// Where captions learn that a call is up and under which session to record them.
    calls: Option<Arc<Calls>>,
    /// Burned-in captions, the SIP caller's only way to see them.
    overlay: Option<Arc<CaptionOverlay>>,
    /// Answered calls by the cart's call id.
    sessions: Mutex<BTreeMap<u64, AnsweredCall>>,
    /// The WebRTC stack for browser softphones (None: their offers get 488).
    webrtc: Option<Arc<SipWebRtc>>,
    /// WebRTC legs by the cart's call id: their session and the WebRTC call's id.
    webrtc_legs: Arc<Mutex<BTreeMap<u64, (SessionId, String)>>>,
}

/// What a SIP call with WebRTC media (a browser softphone) is answered with: the same
/// pipeline, WebRTC settings, speaker path and captions as the console's browser calls.
pub struct SipWebRtc {
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// `[webrtc]`, `[video]`, `[audio]`, `[audio_processing]` as configured.
    pub config: Config,
    /// Captions of what the caller says.
    pub captions: Option<Arc<Captioner>>,
}

/// An answered SIP call: its session, when it came up, and its ask for burned captions
/// (dropped with it).
struct AnsweredCall {
    session: SessionId,
    started: Instant,
    _burn_in: Option<BurnInGuard>,
}

impl SipCart {
    /// Calls through `cart`, recorded in its session log, captioned while `calls` knows them
    /// and with captions burned into the video through `overlay`.
    pub fn new(
        cart: Arc<CartController>,
        calls: Option<Arc<Calls>>,
        overlay: Option<Arc<CaptionOverlay>>,
    ) -> Self {
        Self {
            log: cart.session_log(),
            cart,
            calls,
            overlay,
            sessions: Mutex::new(BTreeMap::new()),
            webrtc: None,
            webrtc_legs: Arc::default(),
        }
    }

    /// Answers WebRTC offers (browser softphones) on the cart's WebRTC stack through `webrtc`;
    /// needs the [`Calls`] registry given to [`Self::new`].
    pub fn with_webrtc(mut self, webrtc: SipWebRtc) -> Self {
        self.webrtc = Some(Arc::new(webrtc));
        self
    }
}

/// The speaker for a WebRTC leg: Opus through the jitter buffer, as for a console call.
fn webrtc_speaker(w: &SipWebRtc) -> Option<SpeakerOutput> {
    let a = &w.config.audio;
    let device = match telecart_devices::open_speaker(a) {
        Ok(Some(d)) => d,
        Ok(None) => return None,
        Err(e) => {
            warn!(error = %e, "SIP call: cannot open the speaker; the caller is not heard");
            return None;
        }
    };
    let options = SpeakerOptions {
        sample_rate: a.sample_rate,
        channels: a.channels,
        codec: AudioCodec::Opus,
        jitter: JitterSettings {
            min_delay_ms: w.config.audio_processing.jitter_min_ms,
            max_delay_ms: w.config.audio_processing.jitter_max_ms,
        },
        far_end: Some(w.pipeline.far_end.clone()),
    };
    SpeakerOutput::start_with(device, options)
        .map_err(|e| warn!(error = %e, "SIP call: speaker thread"))
        .ok()
}

/// The SIP status for a WebRTC offer the stack would not answer.
fn webrtc_refusal(e: &crate::webrtc::call::CallError) -> u16 {
    use crate::webrtc::call::CallError;
    match e {
        CallError::Busy => 486,
        CallError::Local(_) => 500,
        _ => 488,
    }
}

/// What str0m's statistics say about the call, for the session log (as for browser calls).
fn webrtc_quality(summary: &crate::webrtc::CallStats) -> Option<RecordBody> {
    let (rtt_ms, mos) = (summary.rtt_ms?, summary.mos?);
    Some(RecordBody::CallQuality {
        rtt_ms,
        jitter_ms: summary.jitter_ms.unwrap_or(0.0),
        loss_pct: summary.loss.unwrap_or(0.0) * 100.0,
        mos,
        bitrate_kbps: summary.bwe_bps.map_or(0, |b| (b / 1000) as u32),
    })
}

fn quality(record: &CallRecord) -> Option<RecordBody> {
    let m = &record.media;
    let rtt_ms = m.rtt_ms?;
    let expected = m.audio_packets_received + m.audio_packets_lost;
    let loss = if expected == 0 {
        0.0
    } else {
        m.audio_packets_lost as f64 / expected as f64
    };
    let mos = telecart_webrtc::quality::mos(telecart_webrtc::quality::QualitySample {
        rtt_ms,
        jitter_ms: m.audio_jitter_ms,
        loss,
    });
    Some(RecordBody::CallQuality {
        rtt_ms,
        jitter_ms: m.audio_jitter_ms,
        loss_pct: loss * 100.0,
        mos,
        // What the peer's reports say we sent is not measured per call yet.
        bitrate_kbps: 0,
    })
}

impl CartPort for SipCart {
    fn ring(&self, caller: &str, auto_answer: bool) -> (u64, RingVerdict) {
        let (call, verdict) = self.cart.ring_call(caller, auto_answer);
        let verdict = async move { verdict.await.map(|_| ()).map_err(sip_status) };
        (call.0, Box::pin(verdict))
    }

    fn answer_webrtc(&self, call: Option<u64>, request: WebRtcRequest) -> WebRtcAnswering {
        let (Some(webrtc), Some(calls), Some(call)) =
            (self.webrtc.clone(), self.calls.clone(), call)
        else {
            return Box::pin(async { Err((488, "WebRTC media is not answered here".into())) });
        };
        let legs = self.webrtc_legs.clone();
        Box::pin(async move {
            let w = &webrtc.config.webrtc;
            let bind = w.bind_address.unwrap_or(request.local_ip);
            let ports = (w.port_min != 0).then_some((w.port_min, w.port_max));
            let media = crate::webrtc::session::MediaSources {
                video: webrtc.pipeline.video.clone(),
                audio: webrtc.pipeline.audio.clone(),
                encoder: webrtc.pipeline.encoder.clone(),
                max_bitrate_bps: webrtc.config.video.max_bitrate_kbps * 1000,
            };
            let speaker = webrtc_speaker(&webrtc);
            if let (Some(captions), Some(speaker)) = (&webrtc.captions, &speaker) {
                captions.feed(Side::Remote, &speaker.remote_tap());
            }
            let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
            let hooks = crate::webrtc::call::CallHooks {
                incoming: None,
                on_end: Some(Box::new(move || {
                    let _ = ended_tx.send(());
                })),
                follow_network_towards: None,
            };
            let session = SessionId::random().unwrap_or(SessionId::NONE);
            let (id, answer) = calls
                .answer_in_session(
                    media,
                    &request.offer,
                    bind,
                    ports,
                    speaker,
                    hooks,
                    Some(session),
                )
                .await
                .map_err(|e| (webrtc_refusal(&e), e.to_string()))?;
            info!(call = %id, remote = %request.remote, "SIP call: WebRTC media answered");
            lock(&legs).insert(call, (session, id.clone()));
            let ended = {
                let (calls, id) = (calls.clone(), id.clone());
                Box::pin(async move {
                    let _ = ended_rx.await;
                    calls
                        .stats(&id)
                        .map_or_else(|| "ended".to_string(), |s| s.state)
                })
            };
            let hang_up = Box::new(move || {
                calls.hang_up(&id);
            });
            // The call's microphone is the pipeline's, shared by every call (one at a time):
            // muting it for this call is the console's mute, which the driver lifts at the end.
            let mute = webrtc.pipeline.mute.clone();
            let set_muted = Box::new(move |muted: bool| {
                mute.set(telecart_audio::MuteReason::Console, muted);
            });
            Ok(WebRtcLeg {
                answer,
                ended,
                hang_up,
                set_muted,
            })
        })
    }

    fn connected(&self, call: Option<u64>, record: &CallRecord) -> u64 {
        let call = call.map_or_else(|| self.cart.new_call_id(), CallId);
        self.cart.sip_connected(call);
        let leg = lock(&self.webrtc_legs).get(&call.0).cloned();
        let session = leg
            .as_ref()
            .map(|(s, _)| *s)
            .unwrap_or_else(|| SessionId::random().unwrap_or(SessionId::NONE));
        if let Some(log) = &self.log {
            let direction = match record.direction {
                CallDirection::Inbound => "inbound",
                CallDirection::Outbound => "outbound",
            };
            let body = RecordBody::SessionStart {
                direction: direction.into(),
                protocol: "sip".into(),
                remote: record.remote.clone(),
            };
            if let Err(e) = log.append(session, body) {
                warn!(error = %e, "SIP call: session start not recorded");
            }
        }
        // A WebRTC leg is in the registry already (captions find its session there).
        if let Some(calls) = self.calls.as_ref().filter(|_| leg.is_none()) {
            calls.other_call_started(session);
        }
        let burn_in = self.overlay.as_ref().map(|o| o.require());
        let answered = AnsweredCall {
            session,
            started: Instant::now(),
            _burn_in: burn_in,
        };
        lock(&self.sessions).insert(call.0, answered);
        call.0
    }

    fn ended(&self, call: Option<u64>, record: &CallRecord) {
        // `None`: the outgoing call the machine is still dialling.
        self.cart.ended(CallId(call.unwrap_or(0)));
        if call.is_none() {
            let why = format!("the call to {} ended: {}", record.remote, record.reason);
            info!(%why, "SIP call not answered");
        }
        let leg = call.and_then(|c| lock(&self.webrtc_legs).remove(&c));
        let Some(AnsweredCall {
            session, started, ..
        }) = call.and_then(|c| lock(&self.sessions).remove(&c))
        else {
            return;
        };
        if let Some(calls) = &self.calls {
            calls.other_call_ended(session);
        }
        let Some(log) = self.log.clone() else {
            return;
        };
        let quality = match (&leg, &self.calls) {
            (Some((_, id)), Some(calls)) => calls.stats(id).as_ref().and_then(webrtc_quality),
            _ => quality(record),
        };
        let end = RecordBody::SessionEnd {
            reason: record.reason.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        // fdatasync: off the SIP task.
        let write = move || {
            for body in quality.into_iter().chain([end]) {
                if let Err(e) = log.append(session, body) {
                    warn!(error = %e, "SIP call: session record not written");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(write);
            }
            Err(_) => write(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers with the PBX and answers calls as `[sip]` says; `None` when SIP
/// is off or cannot start (logged: WebRTC and the console go on without it).
/// Calls play through a jitter buffer held within `jitter` and report to `metrics`.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    all: &Config,
    pipeline: Arc<Pipeline>,
    cart: Arc<CartController>,
    calls: Arc<Calls>,
    captions: Option<Arc<Captioner>>,
    jitter: JitterSettings,
    metrics: SipMetrics,
) -> Option<SipEndpoint> {
    let (config, audio) = (&all.sip, &all.audio);
    if !config.enabled {
        return None;
    }
    let password = match &config.password_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(p) => p.trim_end_matches(['\r', '\n']).to_string(),
            Err(e) => {
                warn!(error = %e, path = %path.display(), "sip.password_file unreadable: SIP is off");
                return None;
            }
        },
        None => config.password.clone(),
    };
    let overlay = pipeline.captions_overlay.clone();
    let webrtc = SipWebRtc {
        pipeline: pipeline.clone(),
        config: all.clone(),
        captions: captions.clone(),
    };
    let media = Arc::new(SipMedia {
        pipeline,
        cart: cart.clone(),
        audio: audio.clone(),
        captions,
        jitter,
        metrics: metrics.clone(),
    });
    let port: Arc<dyn CartPort> =
        Arc::new(SipCart::new(cart.clone(), Some(calls), Some(overlay)).with_webrtc(webrtc));
    match telecart_sip::start_with(config.clone(), password, media, Some(port)).await {
        Ok(endpoint) => {
            info!("SIP endpoint started");
            metrics.watch(endpoint.status.clone());
            cart.attach_sip(endpoint.commands.clone());
            Some(endpoint)
        }
        Err(e) => {
            warn!(error = %e, "SIP endpoint did not start: calls through the PBX are off");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cart::Wiring;
    use crate::webrtc::call::Calls;
    use std::time::Duration;
    use telecart_cart::machine::Input;
    use telecart_sip::media::MediaStats;

    fn record() -> CallRecord {
        CallRecord {
            direction: CallDirection::Inbound,
            remote: "<sip:dr.jones@hospital.example>".into(),
            duration: Duration::ZERO,
            reason: "bye".into(),
            media: MediaStats::default(),
        }
    }

    async fn phase(cart: &CartController, want: &str) -> bool {
        for _ in 0..200 {
            if cart.view().call == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn the_call_button_dials_sip_call_uri_unless_the_board_names_its_own() {
        let mut sip = SipConfig {
            enabled: true,
            call_uri: "sip:nurse@pbx.example".into(),
            ..SipConfig::default()
        };
        let board = BoardConfig::default();
        assert_eq!(
            board_with_sip_call(&board, &sip).outgoing_uri.as_deref(),
            Some("sip:nurse@pbx.example")
        );
        let own = BoardConfig {
            outgoing_uri: Some("sip:desk@pbx.example".into()),
            ..BoardConfig::default()
        };
        assert_eq!(
            board_with_sip_call(&own, &sip).outgoing_uri.as_deref(),
            Some("sip:desk@pbx.example")
        );
        sip.enabled = false;
        assert_eq!(board_with_sip_call(&board, &sip).outgoing_uri, None);
    }

    #[test]
    fn refusals_map_to_sip_statuses() {
        assert_eq!(sip_status(RejectReason::Busy), 486);
        assert_eq!(sip_status(RejectReason::NoAnswer), 480);
        assert_eq!(sip_status(RejectReason::Unavailable), 480);
        assert_eq!(sip_status(RejectReason::Declined), 603);
    }

    #[tokio::test]
    async fn sip_calls_ring_answer_and_end_through_the_carts_state_machine() {
        let calls = Arc::new(Calls::default());
        let cart = Arc::new(
            CartController::start(
                &BoardConfig::default(),
                Wiring {
                    calls: calls.clone(),
                    log: None,
                },
            )
            .expect("simulated board"),
        );
        cart.input(Input::BootComplete);
        let overlay = CaptionOverlay::new(telecart_core::config::BurnIn::Sip);
        let port = SipCart::new(cart.clone(), Some(calls.clone()), Some(overlay.clone()));

        // An auto-answer caller is answered by the machine at once.
        let (call, verdict) = port.ring("<sip:dr.jones@hospital.example>", true);
        assert_eq!(verdict.await, Ok(()));
        assert_eq!(port.connected(Some(call), &record()), call);
        assert!(phase(&cart, "active").await, "{:?}", cart.view());
        // Up: captions run for it (and are recorded under its session), burned into the video.
        assert_eq!(calls.active(), 1);
        assert!(calls.current_session().is_some());
        assert!(overlay.active());
        // A second caller while the first is up is busy.
        let (_, second) = port.ring("<sip:other@hospital.example>", true);
        assert_eq!(second.await, Err(486));
        port.ended(Some(call), &record());
        assert!(phase(&cart, "idle").await, "{:?}", cart.view());
        assert_eq!(calls.active(), 0);
        assert!(!overlay.active());

        // A caller the SIP policy would not answer rings until the hang-up button declines.
        let (call, verdict) = port.ring("<sip:unknown@elsewhere.example>", false);
        assert!(phase(&cart, "ringing").await, "{:?}", cart.view());
        cart.press(crate::cart::ConsoleButton::HangUp, false);
        assert_eq!(verdict.await, Err(603));
        port.ended(Some(call), &record());
        assert!(phase(&cart, "idle").await);
        cart.stop();
    }
}

#[cfg(test)]
mod playback_tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    use telecart_audio::{G711PayloadDecoder, PlaybackChain};
    use telecart_codec::{AudioEncoder, G711Encoder};
    use telecart_core::CaptureTime;
    use telecart_sip::media::{AudioSetup, MediaEvent, MediaSession, MediaSetup, StreamKind};

    const PEER: &str = "10.0.0.2:4000";
    const DEVICE_RATE: u32 = 48_000;

    fn pcmu_session(t0: Instant) -> MediaSession {
        let setup = MediaSetup {
            audio: Some(AudioSetup {
                codec: AudioCodec::Pcmu,
                pt: 0,
                clock: 8000,
                dtmf_pt: None,
                dtmf_clock: 8000,
                remote: PEER.parse().unwrap(),
                rtcp_mux: true,
                srtp: None,
            }),
            video: None,
            send_paused: false,
        };
        MediaSession::new(setup, 3, t0, 0)
    }

    /// 20 ms PCMU packets of a 440 Hz tone, as RTP datagrams from a peer whose clock runs
    /// `clock_error` fast (0.002: 0.2 %), with the time each would leave it.
    fn peer_stream(seconds: u32, clock_error: f64) -> Vec<(Duration, Vec<u8>)> {
        let mut enc = G711Encoder::new(AudioCodec::Pcmu).unwrap();
        let mut out = Vec::new();
        let packets = seconds * 50;
        for i in 0..packets {
            let samples: Vec<i16> = (0..160)
                .map(|k| {
                    let n = f64::from(i * 160 + k);
                    ((n * 440.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16
                })
                .collect();
            let frame = AudioFrame {
                sample_rate: 8000,
                channels: 1,
                samples,
                sequence: u64::from(i),
                capture_time: CaptureTime(0),
            };
            for p in enc.encode(&frame).unwrap() {
                // RFC 3550 §5.1 fixed header: V=2, PT 0 (PCMU), sequence, timestamp, SSRC.
                let mut packet = vec![0x80, 0];
                packet.extend(60_000u16.wrapping_add(i as u16).to_be_bytes());
                packet.extend((7_000 + i * 160).to_be_bytes());
                packet.extend(0xfeed_u32.to_be_bytes());
                packet.extend(p.data);
                let sent = Duration::from_secs_f64(f64::from(i) * 0.020 / (1.0 + clock_error));
                out.push((sent, packet));
            }
        }
        out
    }

    fn crossings_hz(samples: &[i16], rate: u32) -> f64 {
        let c = samples
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        c as f64 / 2.0 / (samples.len() as f64 / f64::from(rate))
    }

    /// The SIP media path on virtual time: datagrams through the call's `MediaSession` into the
    /// speaker's `PlaybackChain` (what `SipSpeaker` runs on its thread), over a network that
    /// delays 40-75 ms, reorders, and loses one packet in 25, from a peer whose clock is fast.
    #[test]
    fn a_lossy_reordered_drifting_g711_call_is_concealed_counted_and_kept_in_time() {
        let t0 = Instant::now();
        let mut session = pcmu_session(t0);
        let mut chain = PlaybackChain::new(
            Box::new(G711PayloadDecoder::new(AudioCodec::Pcmu).unwrap()),
            JitterSettings::default(),
            DEVICE_RATE,
            1,
            None,
            false,
        )
        .unwrap();
        let from: SocketAddr = PEER.parse().unwrap();
        let seconds = 20;
        let mut dropped = 0u64;
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut network: Vec<(Duration, Vec<u8>)> = Vec::new();
        for (i, (sent, data)) in peer_stream(seconds, 0.002).into_iter().enumerate() {
            if i % 25 == 12 {
                dropped += 1;
                continue;
            }
            // Deterministic jitter 0..35 ms (a xorshift): neighbours often overtake each other.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let jitter = rng % 36;
            network.push((sent + Duration::from_millis(40 + jitter), data));
        }
        network.sort_by_key(|(at, _)| *at);
        let reordered = network
            .windows(2)
            .filter(|w| {
                let seq = |d: &[u8]| u16::from_be_bytes([d[2], d[3]]);
                seq(&w[1].1).wrapping_sub(seq(&w[0].1)) > 0x8000
            })
            .count();
        assert!(reordered > 50, "the trace reorders ({reordered})");

        let mut played: Vec<i16> = Vec::new();
        let mut delays = Vec::new();
        let mut next = network.into_iter().peekable();
        let pulls = (seconds as u64 + 1) * 100;
        for tick in 0..pulls {
            let now = Duration::from_millis(tick * 10);
            while let Some((at, data)) = next.next_if(|(at, _)| *at <= now) {
                session.handle_receive(t0 + at, StreamKind::Audio, false, from, &data);
                while let Some(event) = session.poll_event() {
                    if let MediaEvent::Audio {
                        payload,
                        timestamp,
                        sequence,
                        ..
                    } = event
                    {
                        chain.insert(sequence, timestamp, t0 + at, &payload);
                    }
                }
            }
            let frame = chain.pull(CaptureTime(0)).unwrap();
            assert_eq!(frame.samples.len(), DEVICE_RATE as usize / 100);
            played.extend(frame.samples);
            delays.push(chain.stats().playout_delay_ms);
        }
        let stats = chain.stats();
        let media = session.stats();
        println!("jitter buffer {stats:?}\nmedia {media:?}");
        // The RTP receiver and the jitter buffer agree on what the network took.
        assert_eq!(media.audio_packets_lost, dropped);
        assert_eq!(stats.packets, u64::from(seconds) * 50 - dropped);
        assert!(
            stats.lost >= dropped,
            "every dropped packet is missed: {stats:?}"
        );
        assert!(
            stats.concealed_samples >= dropped * 160,
            "each loss concealed by G.711 PLC: {stats:?}"
        );
        // The fast peer sent 40 ms more than 20 s of audio: the buffer dropped frames to keep
        // its delay rather than letting it grow.
        assert!(stats.accelerated >= 1, "{stats:?}");
        let second = |s: usize| delays[s * 100..(s + 1) * 100].iter().sum::<f64>() / 100.0;
        let (early, late) = (second(3), second(seconds as usize - 1));
        println!(
            "playout delay: {early:.1} ms at 3 s, {late:.1} ms at {} s",
            seconds - 1
        );
        assert!(
            late < early + 40.0 && late <= f64::from(JitterSettings::default().max_delay_ms),
            "no drift: {early:.1} -> {late:.1} ms"
        );
        // What reaches the speaker is still the tone.
        // (8 s in the middle: the stream ends a second before the pulls do.)
        let tail = &played[10 * DEVICE_RATE as usize..18 * DEVICE_RATE as usize];
        let hz = crossings_hz(tail, DEVICE_RATE);
        assert!((430.0..450.0).contains(&hz), "{hz} Hz");
    }

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<AudioFrame>>>);

    impl telecart_devices::AudioPlayback for Recorder {
        fn write(&mut self, frame: &AudioFrame) -> Result<(), telecart_devices::DeviceError> {
            self.0.lock().unwrap().push(frame.clone());
            Ok(())
        }
        fn description(&self) -> String {
            "recorder".into()
        }
    }

    /// The real thread: `SipSpeaker` (what `MediaPort::speaker` returns in cartd) plays PCMU
    /// packets at the device's format through the jitter buffer and counts a missing one.
    #[test]
    fn sip_speaker_plays_g711_packets_through_the_jitter_buffer() {
        let rec = Recorder::default();
        let audio = AudioConfig {
            sample_rate: 44_100,
            channels: 2,
            ..AudioConfig::default()
        };
        let mut speaker = SipSpeaker::start(
            Box::new(rec.clone()),
            &audio,
            AudioCodec::Pcmu,
            None,
            JitterSettings::default(),
        )
        .unwrap();
        let mut session = pcmu_session(Instant::now());
        let from: SocketAddr = PEER.parse().unwrap();
        let stream = peer_stream(1, 0.0);
        // Paced as a peer sends them (20 ms apart); a burst would be flushed, not played.
        for (i, (_, data)) in stream.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(20));
            if i == 20 {
                continue;
            }
            session.handle_receive(Instant::now(), StreamKind::Audio, false, from, data);
            while let Some(event) = session.poll_event() {
                if let MediaEvent::Audio {
                    payload,
                    timestamp,
                    sequence,
                    ..
                } = event
                {
                    speaker.packet(sequence, timestamp, &payload);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        // The thread publishes its counters after each pull: wait until it took every packet.
        while speaker.output().jitter_stats().packets < 49 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = speaker.output().jitter_stats();
        assert_eq!(stats.packets, 49, "{stats:?}");
        assert!(
            stats.lost >= 1 && stats.concealed_samples >= 160,
            "{stats:?}"
        );
        let frames = rec.0.lock().unwrap().clone();
        assert!(
            frames
                .iter()
                .all(|f| f.sample_rate == 44_100 && f.channels == 2 && f.samples.len() == 882)
        );
    }
}
