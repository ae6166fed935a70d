//! The remote party's audio from packets to the speaker: jitter buffer and decoder, then
//! resampling to the device rate, the far-end reference for the echo canceller (what the
//! speaker is about to play) and a 16 kHz tap for transcription. WebRTC and SIP calls use
//! the same chain with their codec's [`PayloadDecoder`].

use std::time::Instant;

use telecart_core::media::{AudioFrame, CaptureTime};

use crate::capture::FarEndReference;
use crate::decoder::PayloadDecoder;
use crate::jitter::{FrameKind, Inserted, JitterBuffer, JitterSettings, JitterStats};
use crate::resample::StreamResampler;
use crate::{AudioError, PROCESSING_RATE, TAP_RATE, to_f32, to_i16};

/// Jitter buffer, decoder and the conversions around them (see the module docs).
pub struct PlaybackChain {
    jitter: JitterBuffer,
    device_rate: u32,
    device_channels: u16,
    to_device: StreamResampler,
    to_reference: Option<StreamResampler>,
    to_tap: Option<StreamResampler>,
    far_end: Option<FarEndReference>,
    tap: Vec<AudioFrame>,
    sequence: u64,
    tap_sequence: u64,
    last_kind: FrameKind,
}

impl std::fmt::Debug for PlaybackChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackChain")
            .field("jitter", &self.jitter)
            .field("device_rate", &self.device_rate)
            .finish_non_exhaustive()
    }
}

impl PlaybackChain {
    /// A chain playing to a device at `device_rate` Hz with `device_channels` channels.
    /// `far_end` (from the capture chain) receives what is played, for echo cancellation;
    /// `transcription_tap` keeps a 16 kHz copy to take with [`PlaybackChain::take_tap`].
    pub fn new(
        decoder: Box<dyn PayloadDecoder>,
        settings: JitterSettings,
        device_rate: u32,
        device_channels: u16,
        far_end: Option<FarEndReference>,
        transcription_tap: bool,
    ) -> Result<Self, AudioError> {
        if device_channels == 0 || device_channels > 8 {
            return Err(AudioError::Malformed {
                channels: device_channels,
                samples: 0,
            });
        }
        let rate = decoder.clock_rate();
        Ok(Self {
            jitter: JitterBuffer::new(decoder, settings),
            device_rate,
            device_channels,
            to_device: StreamResampler::new(rate, device_rate)?,
            to_reference: match far_end {
                Some(_) => Some(StreamResampler::new(rate, PROCESSING_RATE)?),
                None => None,
            },
            to_tap: if transcription_tap {
                Some(StreamResampler::new(rate, TAP_RATE)?)
            } else {
                None
            },
            far_end,
            tap: Vec::new(),
            sequence: 0,
            tap_sequence: 0,
            last_kind: FrameKind::Waiting,
        })
    }

    /// Offers one received packet (see [`JitterBuffer::insert`]).
    pub fn insert(
        &mut self,
        sequence: u16,
        timestamp: u32,
        arrival: Instant,
        payload: &[u8],
    ) -> Inserted {
        self.jitter.insert(sequence, timestamp, arrival, payload)
    }

    /// The next 10 ms for the speaker, at the device's rate and channel count. Call once per
    /// 10 ms of the device's clock (a blocking ALSA write paces it).
    pub fn pull(&mut self, capture_time: CaptureTime) -> Result<AudioFrame, AudioError> {
        let out = self.jitter.pull();
        self.last_kind = out.kind;
        let pcm: Vec<f32> = out.samples.iter().map(|&s| to_f32(s)).collect();
        self.to_device.push(&pcm)?;
        let need = self.device_rate as usize / 100;
        let mut mono = self.to_device.pop(need).unwrap_or_default();
        mono.resize(need, 0.0);
        if let (Some(r), Some(far)) = (self.to_reference.as_mut(), self.far_end.as_ref()) {
            r.push(&pcm)?;
            let n = r.available();
            if let Some(reference) = r.pop(n) {
                far.push(&reference);
            }
        }
        if let Some(t) = self.to_tap.as_mut() {
            t.push(&pcm)?;
            while let Some(frame) = t.pop(TAP_RATE as usize / 100) {
                self.tap.push(AudioFrame {
                    sample_rate: TAP_RATE,
                    channels: 1,
                    samples: frame.iter().map(|&x| to_i16(x)).collect(),
                    sequence: self.tap_sequence,
                    capture_time,
                });
                self.tap_sequence += 1;
            }
        }
        let channels = usize::from(self.device_channels);
        let mut samples = Vec::with_capacity(need * channels);
        for x in mono {
            let s = to_i16(x);
            samples.extend(std::iter::repeat_n(s, channels));
        }
        let frame = AudioFrame {
            sample_rate: self.device_rate,
            channels: self.device_channels,
            samples,
            sequence: self.sequence,
            capture_time,
        };
        self.sequence += 1;
        Ok(frame)
    }

    /// Takes the 16 kHz mono frames of the remote party gathered so far.
    pub fn take_tap(&mut self) -> Vec<AudioFrame> {
        std::mem::take(&mut self.tap)
    }

    /// What the last pulled frame was made of.
    pub fn last_kind(&self) -> FrameKind {
        self.last_kind
    }

    /// Jitter-buffer counters.
    pub fn stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// The codec played.
    pub fn codec(&self) -> &'static str {
        self.jitter.codec()
    }
}
