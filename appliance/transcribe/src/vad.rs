//! Energy-based voice activity detection with an adaptive noise floor and a hangover.
//!
//! Pure: fed 10 ms frames of 16 kHz audio, it says when speech starts and ends. Energy
//! against a tracked noise floor is enough to cut utterances for Whisper (which itself ignores
//! non-speech inside an utterance); a neural VAD would need ONNX Runtime, which cannot be
//! fetched at build time here, and `webrtc-vad` 0.4 has been unmaintained since 2019.

/// Samples per VAD frame (10 ms at 16 kHz).
pub const FRAME_SAMPLES: usize = 160;

/// VAD tuning; the defaults suit a cart's microphone and the remote party's decoded audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// A frame is speech when its energy is this many dB above the noise floor...
    pub threshold_db: f32,
    /// ...and above this absolute level (dBFS), so that near-digital silence never triggers.
    pub min_level_dbfs: f32,
    /// Consecutive speech frames that start an utterance.
    pub onset_frames: u32,
    /// Consecutive non-speech frames that end it (the hangover: a pause shorter than this
    /// stays inside the utterance).
    pub hangover_frames: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold_db: 12.0,
            min_level_dbfs: -55.0,
            onset_frames: 3,
            hangover_frames: 50,
        }
    }
}

/// What a frame changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Nothing changed.
    None,
    /// Speech started `onset_frames` frames ago (those frames belong to the utterance).
    SpeechStart,
    /// Speech ended `hangover_frames` frames ago (those trailing frames were silence).
    SpeechEnd,
}

/// The detector's state.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    noise_floor_db: Option<f32>,
    in_speech: bool,
    run: u32,
}

/// Energy of a frame in dBFS (full scale = 0 dB).
pub fn frame_energy_dbfs(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let mean_square = frame.iter().map(|x| x * x).sum::<f32>() / frame.len() as f32;
    if !mean_square.is_finite() {
        return -120.0;
    }
    10.0 * (mean_square + 1e-12).log10()
}

impl Vad {
    /// A detector that has heard nothing yet.
    pub fn new(config: VadConfig) -> Self {
        Self {
            config,
            noise_floor_db: None,
            in_speech: false,
            run: 0,
        }
    }

    /// Whether speech is going on.
    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// The tracked noise floor in dBFS.
    pub fn noise_floor_dbfs(&self) -> Option<f32> {
        self.noise_floor_db
    }

    /// Feeds one frame ([`FRAME_SAMPLES`] samples).
    pub fn push_frame(&mut self, frame: &[f32]) -> VadEvent {
        let energy = frame_energy_dbfs(frame);
        let floor = *self.noise_floor_db.get_or_insert(energy.max(-90.0));
        let speech =
            energy > floor + self.config.threshold_db && energy > self.config.min_level_dbfs;
        // The floor follows quiet frames quickly downward and slowly upward; during speech it
        // creeps up (0.5 dB/s) so that a lasting louder background (a fan switched on) is
        // eventually taken as the new floor instead of as endless speech.
        let next = if !speech {
            if energy < floor {
                floor + (energy - floor) * 0.3
            } else {
                floor + (energy - floor) * 0.02
            }
        } else {
            floor + 0.005
        };
        self.noise_floor_db = Some(next.clamp(-90.0, 0.0));

        if self.in_speech {
            if speech {
                self.run = 0;
                VadEvent::None
            } else {
                self.run += 1;
                if self.run >= self.config.hangover_frames {
                    self.in_speech = false;
                    self.run = 0;
                    VadEvent::SpeechEnd
                } else {
                    VadEvent::None
                }
            }
        } else if speech {
            self.run += 1;
            if self.run >= self.config.onset_frames {
                self.in_speech = true;
                self.run = 0;
                VadEvent::SpeechStart
            } else {
                VadEvent::None
            }
        } else {
            self.run = 0;
            VadEvent::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f32, frames: usize) -> Vec<Vec<f32>> {
        (0..frames)
            .map(|f| {
                (0..FRAME_SAMPLES)
                    .map(|i| {
                        let t = (f * FRAME_SAMPLES + i) as f32 / 16_000.0;
                        amplitude * (t * 440.0 * std::f32::consts::TAU).sin()
                    })
                    .collect()
            })
            .collect()
    }

    fn noise(amplitude: f32, frames: usize, seed: u32) -> Vec<Vec<f32>> {
        let mut state = seed.max(1);
        (0..frames)
            .map(|_| {
                (0..FRAME_SAMPLES)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        amplitude * ((state as f32 / u32::MAX as f32) * 2.0 - 1.0)
                    })
                    .collect()
            })
            .collect()
    }

    fn events(vad: &mut Vad, frames: &[Vec<f32>]) -> Vec<(usize, VadEvent)> {
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i, vad.push_frame(f)))
            .filter(|(_, e)| *e != VadEvent::None)
            .collect()
    }

    #[test]
    fn speech_between_quiet_noise_starts_and_ends_once() {
        let mut vad = Vad::new(VadConfig::default());
        let mut frames = noise(0.001, 100, 7);
        frames.extend(tone(0.3, 150));
        frames.extend(noise(0.001, 100, 9));
        let got = events(&mut vad, &frames);
        assert_eq!(
            got,
            vec![(102, VadEvent::SpeechStart), (299, VadEvent::SpeechEnd)]
        );
    }

    #[test]
    fn pauses_shorter_than_the_hangover_stay_inside() {
        let mut vad = Vad::new(VadConfig::default());
        let mut frames = noise(0.001, 50, 3);
        frames.extend(tone(0.3, 50));
        frames.extend(noise(0.001, 30, 4));
        frames.extend(tone(0.3, 50));
        frames.extend(noise(0.001, 60, 5));
        let got: Vec<VadEvent> = events(&mut vad, &frames).into_iter().map(|e| e.1).collect();
        assert_eq!(got, vec![VadEvent::SpeechStart, VadEvent::SpeechEnd]);
    }

    #[test]
    fn digital_silence_and_steady_noise_are_not_speech() {
        let mut vad = Vad::new(VadConfig::default());
        assert!(events(&mut vad, &vec![vec![0.0; FRAME_SAMPLES]; 1000]).is_empty());
        let mut vad = Vad::new(VadConfig::default());
        assert!(events(&mut vad, &noise(0.05, 1000, 11)).is_empty());
        // NaN from a broken source counts as silence, not as speech.
        let mut vad = Vad::new(VadConfig::default());
        assert!(events(&mut vad, &vec![vec![f32::NAN; FRAME_SAMPLES]; 10]).is_empty());
    }

    #[test]
    fn a_lasting_louder_background_becomes_the_floor() {
        let mut vad = Vad::new(VadConfig::default());
        let mut frames = noise(0.001, 100, 3);
        // A fan 30 dB louder switches on and stays on for five minutes.
        frames.extend(noise(0.03, 30_000, 4));
        let got: Vec<VadEvent> = events(&mut vad, &frames).into_iter().map(|e| e.1).collect();
        assert_eq!(got, vec![VadEvent::SpeechStart, VadEvent::SpeechEnd]);
    }
}
