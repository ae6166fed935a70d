//! The SIP endpoint in the daemon: `telecart-sip` registered with the PBX,
//! fed by the same pipeline (H.264 access units, microphone blocks, key-frame
//! requests) as WebRTC calls, playing the caller through the speaker.

use std::sync::{Arc, Mutex};

use telecart_audio::StreamResampler;
use telecart_core::config::{AudioConfig, SipConfig};
use telecart_core::{AudioFrame, EncodedVideo};
use telecart_sip::{MediaPort, SipEndpoint};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::Pipeline;
use crate::bus::Subscriber;
use crate::cart::CartController;
use crate::webrtc::speaker::SpeakerOutput;

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
        cart,
        audio: audio.clone(),
        speaker: Mutex::new(None),
    });
    match telecart_sip::start(config.clone(), password, media).await {
        Ok(endpoint) => {
            info!("SIP endpoint started");
            Some(endpoint)
        }
        Err(e) => {
            warn!(error = %e, "SIP endpoint did not start: calls through the PBX are off");
            None
        }
    }
}
