//! The remote party's voice to the cart's speaker: decoded blocks go over a
//! small bounded queue to a thread that owns the (blocking) ALSA playback, so
//! the session task never waits on the sound card. When the queue is full
//! the block is dropped and counted (the call must not fall behind).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use telecart_core::AudioFrame;
use telecart_devices::AudioPlayback;
use tracing::{debug, warn};

/// Blocks queued for the speaker at most (20 ms each: 200 ms).
const QUEUE_BLOCKS: usize = 10;

/// Where a session sends decoded remote audio.
#[derive(Debug, Clone)]
pub struct SpeakerOutput {
    tx: SyncSender<AudioFrame>,
    /// Rate the decoder must produce.
    pub sample_rate: u32,
    /// Channels the decoder must produce.
    pub channels: u16,
    dropped: Arc<AtomicU64>,
}

impl SpeakerOutput {
    /// Starts a playback thread on `speaker`; it ends when every `SpeakerOutput` clone is dropped.
    pub fn start(
        mut speaker: Box<dyn AudioPlayback>,
        sample_rate: u32,
        channels: u16,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<AudioFrame>(QUEUE_BLOCKS);
        std::thread::Builder::new()
            .name("speaker".into())
            .spawn(move || {
                let mut errors = 0u32;
                while let Ok(frame) = rx.recv() {
                    if let Err(e) = speaker.write(&frame) {
                        errors += 1;
                        if errors <= 3 {
                            warn!(error = %e, "speaker: playback failed");
                        }
                    }
                }
                debug!("speaker: call audio ended");
            })?;
        Ok(Self {
            tx,
            sample_rate,
            channels,
            dropped: Arc::default(),
        })
    }

    /// Queues a block without waiting; false if it was dropped.
    pub fn play(&self, frame: AudioFrame) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Blocks dropped because the speaker fell behind or failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<AudioFrame>>>);

    impl AudioPlayback for Recorder {
        fn write(&mut self, frame: &AudioFrame) -> Result<(), telecart_devices::DeviceError> {
            self.0.lock().unwrap().push(frame.clone());
            Ok(())
        }
        fn description(&self) -> String {
            "recorder".into()
        }
    }

    #[test]
    fn blocks_reach_the_speaker_in_order() {
        let rec = Recorder::default();
        let out = SpeakerOutput::start(Box::new(rec.clone()), 48_000, 1).unwrap();
        for i in 0..5 {
            assert!(out.play(AudioFrame {
                sample_rate: 48_000,
                channels: 1,
                samples: vec![i as i16; 960],
                sequence: i,
                capture_time: telecart_core::CaptureTime(0),
            }));
        }
        drop(out);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while rec.0.lock().unwrap().len() < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let got: Vec<u64> = rec.0.lock().unwrap().iter().map(|f| f.sequence).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }
}
