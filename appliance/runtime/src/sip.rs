//! The SIP endpoint in the daemon: `telecart-sip` registered with the PBX,
//! fed by the same pipeline (H.264 access units, microphone blocks, key-frame
//! requests) as WebRTC calls, playing the caller through the speaker. Its
//! calls go through the cart's state machine (LEDs, call and hang-up buttons,
//! privacy) and into the session log like browser calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use telecart_audio::StreamResampler;
use telecart_cart::machine::{CallId, RejectReason};
use telecart_core::config::{AudioConfig, BoardConfig, SipConfig};
use telecart_core::{AudioFrame, EncodedVideo};
use telecart_sip::{CallDirection, CallRecord, CartPort, MediaPort, RingVerdict, SipEndpoint};
use telecart_store::{RecordBody, SessionId};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::bus::Subscriber;
use crate::cart::CartController;
use crate::webrtc::speaker::SpeakerOutput;
use crate::{Pipeline, SessionLog};

/// The pipeline as a SIP call sees it.
pub struct SipMedia {
    pipeline: Arc<Pipeline>,
    cart: Arc<CartController>,
    audio: AudioConfig,
    speaker: Mutex<Option<Playback>>,
}

/// The speaker opened on the first decoded block of a call, with a converter
/// from the codec's rate (8 kHz G.711, 48 kHz Opus) to the device's.
struct Playback {
    output: SpeakerOutput,
    resampler: StreamResampler,
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

    fn play(&self, frame: AudioFrame) {
        let mut slot = self.speaker.lock().unwrap_or_else(|p| p.into_inner());
        let device_rate = self.audio.sample_rate;
        let stale = slot
            .as_ref()
            .is_some_and(|p| p.resampler.from_rate() != frame.sample_rate);
        if slot.is_none() || stale {
            *slot = open_playback(&self.audio, frame.sample_rate);
        }
        let Some(playback) = slot.as_mut() else {
            return;
        };
        let mono: Vec<f32> = frame
            .samples
            .chunks(usize::from(frame.channels.max(1)))
            .map(|c| f32::from(c[0]) / 32768.0)
            .collect();
        if playback.resampler.push(&mono).is_err() {
            return;
        }
        let ready = playback.resampler.available();
        let Some(converted) = playback.resampler.pop(ready).filter(|c| !c.is_empty()) else {
            return;
        };
        let channels = self.audio.channels.max(1);
        let samples = converted
            .iter()
            .flat_map(|s| {
                let v = (s.clamp(-1.0, 1.0) * 32767.0) as i16;
                std::iter::repeat_n(v, usize::from(channels))
            })
            .collect();
        playback.output.play(AudioFrame {
            sample_rate: device_rate,
            channels,
            samples,
            sequence: frame.sequence,
            capture_time: frame.capture_time,
        });
    }

    fn busy(&self) -> bool {
        // One call at a time on a cart, and none while privacy is on.
        self.cart.privacy().is_on() || self.cart.view().call != "idle"
    }
}

fn open_playback(audio: &AudioConfig, codec_rate: u32) -> Option<Playback> {
    let speaker = match telecart_devices::open_speaker(audio) {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            warn!(error = %e, "SIP call: cannot open the speaker; the caller is not heard");
            return None;
        }
    };
    let output = SpeakerOutput::start(speaker, audio.sample_rate, audio.channels)
        .map_err(|e| warn!(error = %e, "SIP call: speaker thread"))
        .ok()?;
    let resampler = StreamResampler::new(codec_rate, audio.sample_rate)
        .map_err(|e| warn!(error = %e, codec_rate, "SIP call: no resampler"))
        .ok()?;
    Some(Playback { output, resampler })
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
    /// Answered calls: their session and when they came up.
    sessions: Mutex<BTreeMap<u64, (SessionId, Instant)>>,
}

impl SipCart {
    /// Calls through `cart`, recorded in its session log.
    pub fn new(cart: Arc<CartController>) -> Self {
        Self {
            log: cart.session_log(),
            cart,
            sessions: Mutex::new(BTreeMap::new()),
        }
    }
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

    fn connected(&self, call: Option<u64>, record: &CallRecord) -> u64 {
        let call = call.map_or_else(|| self.cart.new_call_id(), CallId);
        self.cart.sip_connected(call);
        let session = SessionId::random().unwrap_or(SessionId::NONE);
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
        lock(&self.sessions).insert(call.0, (session, Instant::now()));
        call.0
    }

    fn ended(&self, call: Option<u64>, record: &CallRecord) {
        // `None`: the outgoing call the machine is still dialling.
        self.cart.ended(CallId(call.unwrap_or(0)));
        if call.is_none() {
            let why = format!("the call to {} ended: {}", record.remote, record.reason);
            info!(%why, "SIP call not answered");
        }
        let Some((session, started)) = call.and_then(|c| lock(&self.sessions).remove(&c)) else {
            return;
        };
        let Some(log) = self.log.clone() else {
            return;
        };
        let quality = quality(record);
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
pub async fn start(
    config: &SipConfig,
    audio: &AudioConfig,
    pipeline: Arc<Pipeline>,
    cart: Arc<CartController>,
) -> Option<SipEndpoint> {
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
    let media = Arc::new(SipMedia {
        pipeline,
        cart: cart.clone(),
        audio: audio.clone(),
        speaker: Mutex::new(None),
    });
    let port: Arc<dyn CartPort> = Arc::new(SipCart::new(cart.clone()));
    match telecart_sip::start_with(config.clone(), password, media, Some(port)).await {
        Ok(endpoint) => {
            info!("SIP endpoint started");
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
        let cart = Arc::new(
            CartController::start(
                &BoardConfig::default(),
                Wiring {
                    calls: Arc::new(Calls::default()),
                    log: None,
                },
            )
            .expect("simulated board"),
        );
        cart.input(Input::BootComplete);
        let port = SipCart::new(cart.clone());

        // An auto-answer caller is answered by the machine at once.
        let (call, verdict) = port.ring("<sip:dr.jones@hospital.example>", true);
        assert_eq!(verdict.await, Ok(()));
        assert_eq!(port.connected(Some(call), &record()), call);
        assert!(phase(&cart, "active").await, "{:?}", cart.view());
        // A second caller while the first is up is busy.
        let (_, second) = port.ring("<sip:other@hospital.example>", true);
        assert_eq!(second.await, Err(486));
        port.ended(Some(call), &record());
        assert!(phase(&cart, "idle").await, "{:?}", cart.view());

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
