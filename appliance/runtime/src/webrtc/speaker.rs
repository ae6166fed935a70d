//! The remote party's voice to the cart's speaker. The session task hands over received
//! packets without waiting ([`SpeakerOutput::packet`]); a thread that owns the (blocking) ALSA
//! playback runs them through the audio crate's [`PlaybackChain`]: adaptive jitter buffer,
//! decoder with loss concealment (Opus PLC/FEC, G.711 PLC), resampling to the speaker's rate,
//! the far-end reference for the microphone's echo canceller and a 16 kHz tap of the remote
//! party. The thread pulls one 10 ms frame per 10 ms of the sound card's clock (the blocking
//! write paces it), so network jitter and clock drift are the jitter buffer's business.
//!
//! Already-decoded audio can still be played with [`SpeakerOutput::play`] (it goes straight
//! to the device while no packet has come). When the queue is full an input is dropped and
//! counted (the call must not fall behind).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use telecart_audio::jitter::{JitterSettings, JitterStats};
use telecart_audio::{
    FarEndReference, G711PayloadDecoder, OpusPayloadDecoder, PayloadDecoder, PlaybackChain,
};
use telecart_core::AudioFrame;
use telecart_core::media::AudioCodec;
use telecart_devices::AudioPlayback;
use tracing::{debug, warn};

use crate::bus::{Bus, bus};

/// Inputs queued for the speaker thread at most (packets or blocks).
const QUEUE_INPUTS: usize = 64;
/// How far a sink that does not block (a file, a null device) may run ahead of real time
/// before the thread paces it by the wall clock instead.
const UNPACED_AHEAD: Duration = Duration::from_millis(100);

/// What the speaker thread plays.
#[derive(Debug, Clone)]
pub struct SpeakerOptions {
    /// Rate the device runs at.
    pub sample_rate: u32,
    /// Channels the device takes.
    pub channels: u16,
    /// Codec of the packets given to [`SpeakerOutput::packet`].
    pub codec: AudioCodec,
    /// Jitter-buffer limits.
    pub jitter: JitterSettings,
    /// The microphone's echo-canceller reference ([`crate::pipeline::Pipeline::far_end`]).
    pub far_end: Option<FarEndReference>,
}

enum SpeakerInput {
    Packet {
        sequence: u16,
        timestamp: u32,
        arrival: Instant,
        payload: Vec<u8>,
    },
    Pcm(AudioFrame),
}

/// Where a session sends the remote party's audio.
#[derive(Debug, Clone)]
pub struct SpeakerOutput {
    tx: SyncSender<SpeakerInput>,
    /// Rate of the device.
    pub sample_rate: u32,
    /// Channels of the device.
    pub channels: u16,
    dropped: Arc<AtomicU64>,
    stats: Arc<Mutex<JitterStats>>,
    remote_tap: Bus<AudioFrame>,
}

impl std::fmt::Debug for SpeakerInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Packet { sequence, .. } => write!(f, "Packet({sequence})"),
            Self::Pcm(frame) => write!(f, "Pcm({})", frame.sequence),
        }
    }
}

impl SpeakerOutput {
    /// Starts a playback thread on `speaker` for Opus packets, without an echo-canceller
    /// reference; it ends when every `SpeakerOutput` clone is dropped.
    pub fn start(
        speaker: Box<dyn AudioPlayback>,
        sample_rate: u32,
        channels: u16,
    ) -> std::io::Result<Self> {
        Self::start_with(
            speaker,
            SpeakerOptions {
                sample_rate,
                channels,
                codec: AudioCodec::Opus,
                jitter: JitterSettings::default(),
                far_end: None,
            },
        )
    }

    /// Starts a playback thread on `speaker` as `options` say.
    pub fn start_with(
        speaker: Box<dyn AudioPlayback>,
        options: SpeakerOptions,
    ) -> std::io::Result<Self> {
        let decoder: Box<dyn PayloadDecoder> = match options.codec {
            AudioCodec::Opus => Box::new(OpusPayloadDecoder::new().map_err(std::io::Error::other)?),
            other => Box::new(G711PayloadDecoder::new(other).map_err(std::io::Error::other)?),
        };
        let chain = PlaybackChain::new(
            decoder,
            options.jitter,
            options.sample_rate,
            options.channels,
            options.far_end.clone(),
            true,
        )
        .map_err(std::io::Error::other)?;
        let (tx, rx) = sync_channel::<SpeakerInput>(QUEUE_INPUTS);
        let stats = Arc::new(Mutex::new(JitterStats::default()));
        let (tap_tx, remote_tap) = bus(64);
        let thread_stats = stats.clone();
        let far_end = options.far_end.clone();
        std::thread::Builder::new()
            .name("speaker".into())
            .spawn(move || {
                speaker_loop(
                    speaker,
                    chain,
                    &rx,
                    &thread_stats,
                    far_end.as_ref(),
                    |frames| {
                        for f in frames {
                            tap_tx.publish(f);
                        }
                    },
                );
                debug!("speaker: call audio ended");
            })?;
        Ok(Self {
            tx,
            sample_rate: options.sample_rate,
            channels: options.channels,
            dropped: Arc::default(),
            stats,
            remote_tap,
        })
    }

    fn send(&self, input: SpeakerInput) -> bool {
        match self.tx.try_send(input) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues one received packet (RTP sequence number, RTP timestamp, payload) without
    /// waiting; false if it was dropped. Its arrival time is taken now.
    pub fn packet(&self, sequence: u16, timestamp: u32, payload: Vec<u8>) -> bool {
        self.send(SpeakerInput::Packet {
            sequence,
            timestamp,
            arrival: Instant::now(),
            payload,
        })
    }

    /// Queues a block of decoded audio at the device's rate and channels (played as it is
    /// while no packet has come); false if it was dropped.
    pub fn play(&self, frame: AudioFrame) -> bool {
        self.send(SpeakerInput::Pcm(frame))
    }

    /// Inputs dropped because the speaker fell behind or failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The jitter buffer's counters (late, duplicate, lost, concealed, playout delay...).
    pub fn jitter_stats(&self) -> JitterStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// The remote party at 16 kHz mono, for transcription.
    pub fn remote_tap(&self) -> Bus<AudioFrame> {
        self.remote_tap.clone()
    }
}

fn speaker_loop(
    mut speaker: Box<dyn AudioPlayback>,
    mut chain: PlaybackChain,
    rx: &Receiver<SpeakerInput>,
    stats: &Mutex<JitterStats>,
    far_end: Option<&FarEndReference>,
    mut publish_tap: impl FnMut(Vec<AudioFrame>),
) {
    let mut errors = 0u32;
    let mut write = |speaker: &mut Box<dyn AudioPlayback>, frame: &AudioFrame| {
        if let Err(e) = speaker.write(frame) {
            errors += 1;
            if errors <= 3 {
                warn!(error = %e, "speaker: playback failed");
            }
        }
    };
    let mut pulling = false;
    let mut anchor = Instant::now();
    let mut written = Duration::ZERO;
    loop {
        // Take everything that arrived; block only while no packet stream has started.
        loop {
            let input = if pulling {
                match rx.try_recv() {
                    Ok(i) => i,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            } else {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(i) => i,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            match input {
                SpeakerInput::Packet {
                    sequence,
                    timestamp,
                    arrival,
                    payload,
                } => {
                    chain.insert(sequence, timestamp, arrival, &payload);
                    if !pulling {
                        anchor = Instant::now();
                        written = Duration::ZERO;
                    }
                    pulling = true;
                }
                SpeakerInput::Pcm(frame) => {
                    if !pulling {
                        if let Some(far) = far_end
                            && frame.sample_rate == telecart_audio::PROCESSING_RATE
                        {
                            let mono: Vec<i16> = frame
                                .samples
                                .iter()
                                .step_by(usize::from(frame.channels.max(1)))
                                .copied()
                                .collect();
                            far.push_i16(&mono);
                        }
                        write(&mut speaker, &frame);
                    }
                }
            }
        }
        if !pulling {
            continue;
        }
        let frame = match chain.pull(crate::pipeline::now()) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "speaker: playback chain failed");
                return;
            }
        };
        publish_tap(chain.take_tap());
        if let Ok(mut s) = stats.lock() {
            *s = chain.stats();
        }
        let started = Instant::now();
        write(&mut speaker, &frame);
        // A real device blocks once its buffer is full, and its clock paces us; a sink that
        // never blocks would have the jitter buffer drained at CPU speed, so pace it here.
        if started.elapsed() >= Duration::from_millis(2) {
            anchor = Instant::now();
            written = Duration::ZERO;
        } else {
            written += Duration::from_millis(10);
            let ahead = written.saturating_sub(anchor.elapsed());
            if ahead > UNPACED_AHEAD {
                std::thread::sleep(ahead - UNPACED_AHEAD);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_codec::{AudioEncoder, OpusEncoder};
    use telecart_core::CaptureTime;

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

    fn wait_for(rec: &Recorder, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while rec.0.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn decoded_blocks_reach_the_speaker_in_order() {
        let rec = Recorder::default();
        let out = SpeakerOutput::start(Box::new(rec.clone()), 48_000, 1).unwrap();
        for i in 0..5 {
            assert!(out.play(AudioFrame {
                sample_rate: 48_000,
                channels: 1,
                samples: vec![i as i16; 960],
                sequence: i,
                capture_time: CaptureTime(0),
            }));
        }
        drop(out);
        wait_for(&rec, 5);
        let got: Vec<u64> = rec.0.lock().unwrap().iter().map(|f| f.sequence).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn packets_play_through_the_jitter_buffer_at_the_devices_format() {
        let rec = Recorder::default();
        let far_end = FarEndReference::default();
        let out = SpeakerOutput::start_with(
            Box::new(rec.clone()),
            SpeakerOptions {
                sample_rate: 44_100,
                channels: 2,
                codec: AudioCodec::Opus,
                jitter: JitterSettings::default(),
                far_end: Some(far_end),
            },
        )
        .unwrap();
        let mut enc = OpusEncoder::new(1, 32_000).unwrap();
        let mut seq = 0u16;
        for k in 0..20u64 {
            let frame = AudioFrame {
                sample_rate: 48_000,
                channels: 1,
                samples: (0..480)
                    .map(|i| ((i as f32 * 0.06).sin() * 8000.0) as i16)
                    .collect(),
                sequence: k,
                capture_time: CaptureTime(0),
            };
            for p in enc.encode(&frame).unwrap() {
                assert!(out.packet(seq, u32::from(seq) * 960, p.data));
                seq += 1;
            }
        }
        wait_for(&rec, 10);
        let frames = rec.0.lock().unwrap().clone();
        assert!(frames.len() >= 10);
        assert!(
            frames
                .iter()
                .all(|f| f.sample_rate == 44_100 && f.channels == 2 && f.samples.len() == 882)
        );
        // The thread publishes its counters after each pull; give it the time to take the rest.
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.jitter_stats().packets < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.jitter_stats().packets, 10); // 200 ms in 20 ms packets
    }
}
