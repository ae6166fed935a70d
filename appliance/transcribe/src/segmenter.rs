//! Cuts one speaker's 16 kHz stream into utterances: pure, fed samples and their capture
//! times, returns the audio to transcribe (partials while the person speaks, one final per
//! utterance).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use telecart_core::CaptureTime;

use crate::vad::{FRAME_SAMPLES, Vad, VadConfig, VadEvent};
use crate::{SAMPLE_RATE, Side};

/// How utterances are cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CutterConfig {
    /// The voice activity detector.
    pub vad: VadConfig,
    /// Audio before the detected onset kept in the utterance (the onset is detected late).
    pub preroll: Duration,
    /// An utterance longer than this is cut (Whisper sees at most 30 s at once; shorter
    /// cuts bound the caption delay during a monologue).
    pub max_utterance: Duration,
    /// Utterances with less speech than this are dropped (coughs, clicks, door slams).
    pub min_speech: Duration,
    /// A partial result each time the utterance has grown by this much; `None`: finals only.
    pub partial_every: Option<Duration>,
}

impl Default for CutterConfig {
    fn default() -> Self {
        Self {
            vad: VadConfig::default(),
            preroll: Duration::from_millis(200),
            max_utterance: Duration::from_secs(20),
            min_speech: Duration::from_millis(250),
            partial_every: Some(Duration::from_millis(1000)),
        }
    }
}

/// Audio to transcribe.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Utterance id, unique in the transcriber; a partial and its final share it.
    pub id: u64,
    /// Who spoke.
    pub side: Side,
    /// Whether the utterance is over (else more audio will follow under the same id).
    pub is_final: bool,
    /// 16 kHz mono samples from the utterance's start.
    pub samples: Arc<[f32]>,
    /// Capture time of the first sample.
    pub start: CaptureTime,
    /// Capture time just past the last sample of speech (for a final: where speech ended).
    pub end: CaptureTime,
}

#[derive(Debug)]
struct Utterance {
    id: u64,
    samples: Vec<f32>,
    start_sample: u64,
    speech_frames: u32,
    /// Length at the last partial.
    reported: usize,
}

/// The cutter of one side.
#[derive(Debug)]
pub struct UtteranceCutter {
    side: Side,
    config: CutterConfig,
    vad: Vad,
    /// Samples not yet making a whole VAD frame.
    pending: Vec<f32>,
    /// The last frames before speech, for the preroll.
    recent: VecDeque<Vec<f32>>,
    current: Option<Utterance>,
    /// Samples fed so far (the stream's clock).
    samples_seen: u64,
    /// The latest (sample index, capture time) pair the caller gave.
    anchor: (u64, CaptureTime),
    utterances: u64,
}

/// Capture time of sample `sample`, given that sample `anchor.0` was captured at `anchor.1`.
fn time_at((anchor_sample, anchor_time): (u64, CaptureTime), sample: u64) -> CaptureTime {
    let micros = |n: u64| n * 1_000_000 / SAMPLE_RATE as u64;
    if sample >= anchor_sample {
        CaptureTime(anchor_time.0 + micros(sample - anchor_sample))
    } else {
        CaptureTime(anchor_time.0.saturating_sub(micros(anchor_sample - sample)))
    }
}

fn samples_for(duration: Duration) -> usize {
    (duration.as_micros() * SAMPLE_RATE as u128 / 1_000_000) as usize
}

impl UtteranceCutter {
    /// A cutter for `side`.
    pub fn new(side: Side, config: CutterConfig) -> Self {
        Self {
            side,
            config,
            vad: Vad::new(config.vad),
            pending: Vec::with_capacity(FRAME_SAMPLES),
            recent: VecDeque::new(),
            current: None,
            samples_seen: 0,
            anchor: (0, CaptureTime(0)),
            utterances: 0,
        }
    }

    /// Capture time of the sample with this index in the stream.
    fn time_of(&self, sample: u64) -> CaptureTime {
        time_at(self.anchor, sample)
    }

    /// Whether an utterance is open.
    pub fn in_utterance(&self) -> bool {
        self.current.is_some()
    }

    /// Feeds 16 kHz mono samples whose first was captured at `capture_time`; returns the
    /// segments they completed (in order).
    pub fn push(&mut self, samples: &[f32], capture_time: CaptureTime) -> Vec<Segment> {
        let first_index = self.samples_seen + self.pending.len() as u64;
        self.anchor = (first_index, capture_time);
        let mut out = Vec::new();
        for &sample in samples {
            // Non-finite input (a broken source) is treated as silence.
            self.pending.push(if sample.is_finite() {
                sample.clamp(-1.0, 1.0)
            } else {
                0.0
            });
            if self.pending.len() == FRAME_SAMPLES {
                let frame = std::mem::replace(&mut self.pending, Vec::with_capacity(FRAME_SAMPLES));
                self.push_frame(frame, &mut out);
            }
        }
        out
    }

    /// Ends the stream: the open utterance, if any, becomes final.
    pub fn finish(&mut self) -> Option<Segment> {
        let current = self.current.take()?;
        self.close(current, 0)
    }

    fn push_frame(&mut self, frame: Vec<f32>, out: &mut Vec<Segment>) {
        let event = self.vad.push_frame(&frame);
        let frame_start = self.samples_seen;
        self.samples_seen += frame.len() as u64;
        match (event, self.current.is_some()) {
            (VadEvent::SpeechStart, false) => {
                // The onset frames and the preroll before them are in `recent`.
                let mut samples: Vec<f32> = self.recent.drain(..).flatten().collect();
                let start_sample = frame_start.saturating_sub(samples.len() as u64);
                samples.extend_from_slice(&frame);
                self.utterances += 1;
                self.current = Some(Utterance {
                    id: self.utterances * 2 + self.side.id_bit(),
                    samples,
                    start_sample,
                    speech_frames: self.config.vad.onset_frames,
                    reported: 0,
                });
                return;
            }
            (VadEvent::SpeechEnd, true) => {
                if let Some(mut current) = self.current.take() {
                    current.samples.extend_from_slice(&frame);
                    let trailing = self.config.vad.hangover_frames as usize * FRAME_SAMPLES;
                    if let Some(segment) = self.close(current, trailing) {
                        out.push(segment);
                    }
                }
                return;
            }
            _ => {}
        }
        let speechy = self.vad.in_speech() && self.vad_frame_is_speechy(&frame);
        let anchor = self.anchor;
        let Some(current) = self.current.as_mut() else {
            self.recent.push_back(frame);
            let keep = samples_for(self.config.preroll) / FRAME_SAMPLES
                + self.config.vad.onset_frames as usize;
            while self.recent.len() > keep {
                self.recent.pop_front();
            }
            return;
        };
        current.samples.extend_from_slice(&frame);
        if speechy {
            current.speech_frames += 1;
        }
        if current.samples.len() >= samples_for(self.config.max_utterance) {
            // Cut here and go on with a new utterance under a new id: speech continues.
            if let Some(current) = self.current.take() {
                let start_sample = current.start_sample + current.samples.len() as u64;
                if let Some(segment) = self.close(current, 0) {
                    out.push(segment);
                }
                self.utterances += 1;
                self.current = Some(Utterance {
                    id: self.utterances * 2 + self.side.id_bit(),
                    samples: Vec::new(),
                    start_sample,
                    speech_frames: 0,
                    reported: 0,
                });
            }
            return;
        }
        if let Some(every) = self.config.partial_every {
            let every = samples_for(every).max(FRAME_SAMPLES);
            if current.samples.len() >= current.reported + every {
                current.reported = current.samples.len();
                let segment = Segment {
                    id: current.id,
                    side: self.side,
                    is_final: false,
                    samples: current.samples.as_slice().into(),
                    start: time_at(anchor, current.start_sample),
                    end: time_at(anchor, current.start_sample + current.samples.len() as u64),
                };
                out.push(segment);
            }
        }
    }

    /// Frames that count as speech for `min_speech` (the VAD's hangover frames do not).
    fn vad_frame_is_speechy(&self, frame: &[f32]) -> bool {
        let floor = self.vad.noise_floor_dbfs().unwrap_or(-90.0);
        crate::vad::frame_energy_dbfs(frame) > floor + self.config.vad.threshold_db
    }

    /// The final segment of an utterance, without `trailing` samples of silence beyond a
    /// short tail (Whisper likes a little silence after the last word), or `None` if the
    /// utterance had too little speech.
    fn close(&self, mut utterance: Utterance, trailing: usize) -> Option<Segment> {
        let speech_end = utterance.samples.len().saturating_sub(trailing);
        let min_frames = samples_for(self.config.min_speech) / FRAME_SAMPLES;
        if (utterance.speech_frames as usize) < min_frames || utterance.samples.is_empty() {
            return None;
        }
        let tail = samples_for(Duration::from_millis(200)).min(trailing);
        utterance.samples.truncate(speech_end + tail);
        Some(Segment {
            id: utterance.id,
            side: self.side,
            is_final: true,
            samples: utterance.samples.into(),
            start: self.time_of(utterance.start_sample),
            end: self.time_of(utterance.start_sample + speech_end as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_773_000_000_000_000;

    fn tone(seconds: f32) -> Vec<f32> {
        (0..(seconds * SAMPLE_RATE as f32) as usize)
            .map(|i| 0.3 * (i as f32 / 16_000.0 * 300.0 * std::f32::consts::TAU).sin())
            .collect()
    }

    fn silence(seconds: f32) -> Vec<f32> {
        vec![0.0005; (seconds * SAMPLE_RATE as f32) as usize]
    }

    /// Feeds `audio` in 20 ms blocks stamped with an exact clock.
    fn feed(cutter: &mut UtteranceCutter, audio: &[f32]) -> Vec<Segment> {
        let mut out = Vec::new();
        for (i, block) in audio.chunks(320).enumerate() {
            let t = CaptureTime(T0 + i as u64 * 20_000);
            out.extend(cutter.push(block, t));
        }
        out
    }

    fn ms(t: CaptureTime) -> u64 {
        (t.0 - T0) / 1000
    }

    #[test]
    fn one_utterance_with_partials_then_a_final_with_times() {
        let mut cutter = UtteranceCutter::new(Side::Cart, CutterConfig::default());
        let mut audio = silence(1.0);
        audio.extend(tone(2.5));
        audio.extend(silence(1.5));
        let segments = feed(&mut cutter, &audio);
        let finals: Vec<&Segment> = segments.iter().filter(|s| s.is_final).collect();
        let partials: Vec<&Segment> = segments.iter().filter(|s| !s.is_final).collect();
        assert_eq!(finals.len(), 1);
        // One a second while the utterance is open: 0.2 s preroll + 2.5 s speech + 0.5 s hangover.
        assert_eq!(partials.len(), 3);
        let f = finals[0];
        assert!(
            partials
                .iter()
                .all(|p| p.id == f.id && p.side == Side::Cart)
        );
        // Speech from 1000 ms to 3500 ms; the preroll reaches back ~200 ms.
        assert!((750..=1000).contains(&ms(f.start)), "start {}", ms(f.start));
        assert!((3450..=3560).contains(&ms(f.end)), "end {}", ms(f.end));
        let seconds = f.samples.len() as f32 / 16_000.0;
        assert!((2.6..3.1).contains(&seconds), "{seconds} s of audio");
        assert!(cutter.finish().is_none());
    }

    #[test]
    fn long_speech_is_cut_at_the_cap_and_goes_on() {
        let config = CutterConfig {
            partial_every: None,
            ..CutterConfig::default()
        };
        let mut cutter = UtteranceCutter::new(Side::Remote, config);
        let mut audio = silence(0.5);
        audio.extend(tone(50.0));
        audio.extend(silence(1.0));
        let segments = feed(&mut cutter, &audio);
        let lengths: Vec<f32> = segments
            .iter()
            .map(|s| s.samples.len() as f32 / 16_000.0)
            .collect();
        assert_eq!(segments.len(), 3, "{lengths:?}");
        assert!(
            segments
                .iter()
                .all(|s| s.is_final && s.side == Side::Remote)
        );
        assert!(lengths[0] <= 20.0 && lengths[1] <= 20.0);
        let ids: Vec<u64> = segments.iter().map(|s| s.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids.iter().all(|id| id % 2 == 1));
        // Consecutive pieces tile the speech: each starts where the previous ended.
        assert_eq!(segments[0].end, segments[1].start);
    }

    #[test]
    fn hours_of_silence_produce_nothing_and_hold_no_memory() {
        let mut cutter = UtteranceCutter::new(Side::Cart, CutterConfig::default());
        let block = vec![0.0f32; 16_000];
        for second in 0..3 * 3600u64 {
            assert!(
                cutter
                    .push(&block, CaptureTime(T0 + second * 1_000_000))
                    .is_empty()
            );
        }
        assert!(cutter.recent.len() <= 30);
        assert!(!cutter.in_utterance());
    }

    #[test]
    fn a_click_is_not_an_utterance_and_finish_closes_open_speech() {
        let mut cutter = UtteranceCutter::new(Side::Cart, CutterConfig::default());
        let mut audio = silence(1.0);
        audio.extend(tone(0.1));
        audio.extend(silence(1.0));
        assert!(feed(&mut cutter, &audio).is_empty());
        let mut cutter = UtteranceCutter::new(Side::Cart, CutterConfig::default());
        let mut audio = silence(1.0);
        audio.extend(tone(0.8));
        feed(&mut cutter, &audio);
        let last = cutter.finish().unwrap();
        assert!(last.is_final);
    }
}
