//! The `[audio_processing]` section: echo cancellation, noise suppression, gain control and
//! the remote party's jitter buffer (see docs/audio.md).

use serde::{Deserialize, Serialize};

/// Which noise suppressor cleans the microphone after the echo canceller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseSuppressorChoice {
    /// RNNoise (`nnnoiseless`), the default.
    Rnnoise,
    /// WebRTC's spectral suppressor.
    Webrtc,
    /// None.
    Off,
}

/// `[audio_processing]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioProcessingConfig {
    /// High-pass filter on the microphone (rumble, DC).
    pub high_pass: bool,
    /// AEC3 echo cancellation against what the speaker plays.
    pub echo_cancellation: bool,
    /// `rnnoise`, `webrtc` or `off`.
    pub noise_suppression: NoiseSuppressorChoice,
    /// AGC2 adaptive digital gain and limiter.
    pub automatic_gain: bool,
    /// Most gain AGC2 may apply, dB.
    pub max_gain_db: u8,
    /// 16 kHz mono copies of the cleaned microphone and of the remote party, for transcription.
    pub transcription_tap: bool,
    /// Smallest playout delay the jitter buffer aims for, ms.
    pub jitter_min_ms: u32,
    /// Largest playout delay the jitter buffer aims for, ms.
    pub jitter_max_ms: u32,
}

impl Default for AudioProcessingConfig {
    fn default() -> Self {
        Self {
            high_pass: true,
            echo_cancellation: true,
            noise_suppression: NoiseSuppressorChoice::Rnnoise,
            automatic_gain: true,
            max_gain_db: 30,
            transcription_tap: true,
            jitter_min_ms: 20,
            jitter_max_ms: 300,
        }
    }
}

impl AudioProcessingConfig {
    /// Checks ranges. Returns `(key, message)` pairs, keys as in the TOML file; empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        let mut err = |k: &str, m: String| e.push((format!("audio_processing.{k}"), m));
        if self.max_gain_db > 50 {
            err(
                "max_gain_db",
                format!("must be 0..=50, got {}", self.max_gain_db),
            );
        }
        if !(10..=500).contains(&self.jitter_min_ms) {
            err(
                "jitter_min_ms",
                format!("must be 10..=500, got {}", self.jitter_min_ms),
            );
        }
        if !(20..=1000).contains(&self.jitter_max_ms) || self.jitter_max_ms < self.jitter_min_ms {
            err(
                "jitter_max_ms",
                format!(
                    "must be 20..=1000 and at least jitter_min_ms ({}), got {}",
                    self.jitter_min_ms, self.jitter_max_ms
                ),
            );
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_line() {
        assert!(AudioProcessingConfig::default().validate().is_empty());
        let text = "[audio_processing]\nnoise_suppression = \"webrtc\"\njitter_min_ms = 5\n";
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(
            config.audio_processing.noise_suppression,
            NoiseSuppressorChoice::Webrtc
        );
        let err = Config::from_toml(std::path::Path::new("cart.toml"), text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cart.toml:3: audio_processing.jitter_min_ms: must be 10..=500, got 5"
        );
    }

    #[test]
    fn unknown_keys_and_suppressors_are_refused() {
        assert!(toml::from_str::<Config>("[audio_processing]\nnoise = true\n").is_err());
        assert!(
            toml::from_str::<Config>("[audio_processing]\nnoise_suppression = \"speex\"\n")
                .is_err()
        );
    }
}
