//! Live captions in the daemon: the 16 kHz taps of the cart's cleaned
//! microphone and of each caller go to the offline transcriber while a call
//! is up; its captions go to every call's data channel (the call page shows
//! them) and, when final, into the encrypted session log under the call's
//! session. Transcription never holds up media: the transcriber drops and
//! counts when behind, and a missing or corrupt model leaves calls running
//! without captions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use telecart_core::AudioFrame;
use telecart_core::config::{CaptionsConfig, FinalWindow};
use telecart_store::RecordBody;
use telecart_transcribe::{
    AudioInput, MIN_FITTED_WINDOW, Side, Transcriber, TranscriberConfig, TranscriberStats,
    WhisperModel, Window,
};
use tracing::{info, warn};

use crate::SessionLog;
use crate::bus::Bus;
use crate::overlay::CaptionOverlay;
use crate::webrtc::call::Calls;

/// What the console shows about captions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptionStatus {
    /// Captions are being made (the model loaded).
    pub running: bool,
    /// Why not, when they are not.
    pub error: Option<String>,
    /// Captions sent (partial and final).
    pub sent: u64,
    /// Final captions recorded in the session log.
    pub recorded: u64,
    /// What the transcriber did and dropped (utterances cut, partials given up, finals
    /// dropped when behind, decode errors).
    pub transcriber: Option<TranscriberStats>,
}

/// The running captioner. Dropping it ends the transcriber once the feeders stop.
pub struct Captioner {
    input: AudioInput,
    calls: Arc<Calls>,
    sent: Arc<AtomicU64>,
    recorded: Arc<AtomicU64>,
}

impl std::fmt::Debug for Captioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captioner").finish_non_exhaustive()
    }
}

/// Loads the model and starts the transcriber (blocking: call it off the async
/// workers). `Err` says why there are no captions.
pub fn start(
    config: &CaptionsConfig,
    cart_audio: &Bus<AudioFrame>,
    calls: Arc<Calls>,
    log: Option<Arc<SessionLog>>,
    overlay: Option<Arc<CaptionOverlay>>,
) -> Result<Captioner, String> {
    if !config.enabled {
        return Err("captions.enabled = false".into());
    }
    let path = config
        .model
        .clone()
        .unwrap_or_else(telecart_transcribe::default_model_path);
    let model = WhisperModel::load(&path, config.model_sha256.as_deref())
        .map_err(|e| format!("model {}: {e}", path.display()))?;
    let mut transcriber = TranscriberConfig::default();
    transcriber.decode.final_window = match config.finals {
        FinalWindow::Full => Window::Full,
        FinalWindow::Fitted => Window::Fitted(MIN_FITTED_WINDOW),
    };
    let (input, captions) = Transcriber::start(&model, transcriber).map_err(|e| e.to_string())?;
    info!(model = %path.display(), "captions ready");
    let sent = Arc::new(AtomicU64::new(0));
    let recorded = Arc::new(AtomicU64::new(0));
    let captioner = Captioner {
        input,
        calls: calls.clone(),
        sent: sent.clone(),
        recorded: recorded.clone(),
    };
    captioner.feed(Side::Cart, cart_audio);
    std::thread::Builder::new()
        .name("captions-out".into())
        .spawn(move || {
            while let Some(caption) = captions.recv() {
                calls.broadcast(&caption.to_message());
                if let Some(overlay) = &overlay {
                    overlay.show(&caption, std::time::Instant::now());
                }
                sent.fetch_add(1, Ordering::Relaxed);
                if !caption.is_final {
                    continue;
                }
                let (Some(log), Some(session)) = (&log, calls.current_session()) else {
                    continue;
                };
                let body = RecordBody::TranscriptSegment {
                    speaker: caption.side.label().to_string(),
                    start_ms: caption.start_ms,
                    end_ms: caption.end_ms,
                    text: caption.text.clone(),
                };
                match log.append(session, body) {
                    Ok(_) => {
                        recorded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => warn!(error = %e, "caption not recorded"),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(captioner)
}

impl Captioner {
    /// Transcribes `tap` as `side` while calls are up (a call's remote tap
    /// ends with the call; the cart's with the pipeline).
    pub fn feed(&self, side: Side, tap: &Bus<AudioFrame>) {
        let Some(mut blocks) = tap.subscribe() else {
            return;
        };
        let input = self.input.clone();
        let calls = self.calls.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("captions-{}", side.label()))
            .spawn(move || {
                while let Some(delivery) = blocks.blocking_recv() {
                    // Nobody to caption for: the room is not transcribed between calls.
                    if side == Side::Cart && calls.active() == 0 {
                        continue;
                    }
                    input.push(side, (*delivery.item).clone());
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "captions: no feeder thread");
        }
    }

    /// Counters for the console.
    pub fn status(&self) -> CaptionStatus {
        CaptionStatus {
            running: true,
            error: None,
            sent: self.sent.load(Ordering::Relaxed),
            recorded: self.recorded.load(Ordering::Relaxed),
            transcriber: Some(self.input.stats()),
        }
    }
}
