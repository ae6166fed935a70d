//! The appliance's one TOML configuration file.
//!
//! Parsing is strict (`deny_unknown_fields`: a misspelt key is an error, not a
//! silently ignored default) and every problem is reported with the file, the
//! key and what is wrong, all at once rather than one per run.
//! [`Config::from_toml`] is pure; [`Config::load`] only adds reading the file.

mod audio_processing;
mod board;
mod captions;
mod sip;
mod store;

pub use audio_processing::{AudioProcessingConfig, NoiseSuppressorChoice};
pub use board::{BoardConfig, BoardKind, MAX_PRESETS, PresetPosition, PtzSection};
pub use captions::{BurnIn, CaptionsConfig, FinalWindow};
pub use sip::{OtherCallers, SipConfig, SipPolicyConfig, SipSrtp, SipSrtpKeying, SipTransport};
pub use store::{StoreConfig, SyncConfig, valid_device_id};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole configuration of one cart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity of this cart.
    pub cart: CartConfig,
    /// Logging.
    pub log: LogConfig,
    /// The local console (status page, call page, metrics).
    pub console: ConsoleConfig,
    /// Camera and video encoding.
    pub video: VideoConfig,
    /// Microphone, speaker and audio encoding.
    pub audio: AudioConfig,
    /// Queues between capture, encoders and senders.
    pub pipeline: PipelineConfig,
    /// The encrypted session log and its upload.
    pub store: StoreConfig,
    /// WebRTC: addresses, ports, STUN and TURN servers.
    pub webrtc: WebRtcConfig,
    /// The cart's buttons, privacy switch, LEDs, battery and PTZ policy.
    pub board: BoardConfig,
    /// SIP registration and call policy.
    pub sip: SipConfig,
    /// Live captions during calls.
    pub captions: CaptionsConfig,
    /// Echo cancellation, noise suppression, gain control, jitter buffer.
    pub audio_processing: AudioProcessingConfig,
}

/// Identity of this cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartConfig {
    /// Name shown to callers, on the console and in logs.
    pub name: String,
    /// Where the cart keeps its state (session store, keys, model).
    pub data_dir: PathBuf,
    /// The A/B update configuration `cartctl image` uses (`[update]`, see docs/update.md); when
    /// it exists, `cartd run` reports a healthy boot through it, committing a new slot on trial.
    pub update_config: PathBuf,
}

impl Default for CartConfig {
    fn default() -> Self {
        Self {
            name: "telecart".into(),
            data_dir: PathBuf::from("/var/lib/telecart"),
            update_config: PathBuf::from("/etc/telecart/update.toml"),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter such as `info,telecart_devices=debug`.
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for journald/log shippers.
    Json,
}

/// The local console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Address the console's HTTP server binds.
    pub listen: SocketAddr,
    /// Bearer token required by every request; mandatory unless `listen` is a loopback address.
    pub access_token: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            access_token: None,
        }
    }
}

/// Where pictures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VideoSource {
    /// A V4L2 camera.
    Camera,
    /// The moving, stamped test pattern.
    TestPattern,
}

/// Which H.264 encoder to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderChoice {
    /// The hardware encoder if the board has one, else software.
    Auto,
    /// Only the V4L2 memory-to-memory hardware encoder; fail if absent.
    Hardware,
    /// Only the openh264 software encoder.
    Software,
}

/// H.264 profile to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum H264Profile {
    /// Constrained baseline: every WebRTC peer decodes it.
    ConstrainedBaseline,
    /// High profile, used only when the peer accepts it.
    High,
}

/// Camera and video encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// Camera or test pattern.
    pub source: VideoSource,
    /// `auto` (the first device that captures) or a device path such as `/dev/video0`.
    pub device: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Encoder selection.
    pub encoder: EncoderChoice,
    /// Preferred H.264 profile.
    pub profile: H264Profile,
    /// Starting bitrate.
    pub bitrate_kbps: u32,
    /// Floor that bandwidth estimation may lower the bitrate to.
    pub min_bitrate_kbps: u32,
    /// Ceiling that bandwidth estimation may raise the bitrate to.
    pub max_bitrate_kbps: u32,
    /// Seconds between periodic key frames (key frames on request come on top).
    pub keyframe_interval_s: u32,
    /// Longest wait between attempts to reopen a camera that went away.
    pub reopen_backoff_max_s: u32,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            source: VideoSource::TestPattern,
            device: "auto".into(),
            width: 1280,
            height: 720,
            fps: 30,
            encoder: EncoderChoice::Auto,
            profile: H264Profile::ConstrainedBaseline,
            bitrate_kbps: 1500,
            min_bitrate_kbps: 100,
            max_bitrate_kbps: 4000,
            keyframe_interval_s: 2,
            reopen_backoff_max_s: 10,
        }
    }
}

/// Where the microphone signal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MicrophoneSource {
    /// An ALSA capture device.
    Alsa,
    /// A sine tone.
    Tone,
    /// A WAV file, looped (the bundled speech when no path is given).
    Wav,
    /// Digital silence.
    Silence,
}

/// Where the remote party's audio goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpeakerSink {
    /// An ALSA playback device.
    Alsa,
    /// Nowhere (decoded and dropped).
    None,
}

/// Microphone, speaker and audio encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Microphone source.
    pub microphone: MicrophoneSource,
    /// Speaker sink.
    pub speaker: SpeakerSink,
    /// ALSA PCM name to capture from.
    pub capture_device: String,
    /// ALSA PCM name to play to.
    pub playback_device: String,
    /// Device sample rate.
    pub sample_rate: u32,
    /// Device channels (1 or 2).
    pub channels: u16,
    /// ALSA period in milliseconds.
    pub period_ms: u32,
    /// ALSA buffer in milliseconds (at least two periods).
    pub buffer_ms: u32,
    /// Frequency of the `tone` source.
    pub tone_hz: u32,
    /// WAV file of the `wav` source; the bundled speech when absent.
    pub wav_path: Option<PathBuf>,
    /// Opus bitrate.
    pub opus_bitrate_kbps: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            microphone: MicrophoneSource::Wav,
            speaker: SpeakerSink::None,
            capture_device: "default".into(),
            playback_device: "default".into(),
            sample_rate: 48_000,
            channels: 1,
            period_ms: 10,
            buffer_ms: 40,
            tone_hz: 440,
            wav_path: None,
            opus_bitrate_kbps: 32,
        }
    }
}

/// Queues between capture, encoders and senders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Raw frames a slow consumer may fall behind before the oldest are dropped.
    pub video_queue_frames: usize,
    /// Audio blocks a slow consumer may fall behind before the oldest are dropped.
    pub audio_queue_blocks: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            video_queue_frames: 4,
            audio_queue_blocks: 50,
        }
    }
}

/// WebRTC transport settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Address for media sockets (the host candidate); unset: the address that routes to the peer.
    pub bind_address: Option<std::net::IpAddr>,
    /// Lowest local UDP port for media (0 with `port_max = 0`: any port).
    pub port_min: u16,
    /// Highest local UDP port for media.
    pub port_max: u16,
    /// STUN servers, `stun:host[:port]`.
    pub stun_servers: Vec<String>,
    /// TURN servers to allocate relays on.
    pub turn_servers: Vec<TurnServerConfig>,
    /// Offer only relay candidates (networks where nothing but the TURN server is reachable).
    pub relay_only: bool,
    /// Extra CA certificates (PEM) trusted for the WHIP endpoint and `turns:` servers, besides
    /// the system store: a hospital's own CA or its TLS-inspection proxy.
    pub ca_file: Option<PathBuf>,
}

/// One TURN server.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TurnServerConfig {
    /// `turn:host[:port][?transport=udp|tcp]` or `turns:host[:port]` (TLS).
    pub url: String,
    /// Long-term credential user name.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
}

impl std::fmt::Debug for TurnServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("TurnServerConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key, such as `video.width`; empty when the problem is the file as a whole.
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: PathBuf,
    /// Every problem found, in file order where known.
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match issue.line {
                Some(line) => write!(f, "{file}:{line}: ")?,
                None => write!(f, "{file}: ")?,
            }
            if !issue.key.is_empty() {
                write!(f, "{}: ", issue.key)?;
            }
            write!(f, "{}", issue.message)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            issues: vec![ConfigIssue {
                key: String::new(),
                line: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates configuration text; `file` only names it in errors.
    pub fn from_toml(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            issues: vec![issue_from_parse_error(text, &e)],
        })?;
        let mut issues = config.validate();
        for issue in &mut issues {
            issue.line = line_of_key(text, &issue.key);
        }
        if issues.is_empty() {
            Ok(config)
        } else {
            issues.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
            Err(ConfigError {
                file: file.to_owned(),
                issues,
            })
        }
    }

    /// Every rule the types alone cannot express; empty when the config is good.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(ConfigIssue {
                key: key.into(),
                line: None,
                message,
            })
        };

        if self.cart.name.trim().is_empty() || self.cart.name.len() > 64 {
            bad("cart.name", "must be 1 to 64 characters".into());
        }
        if !self.cart.data_dir.is_absolute() {
            bad(
                "cart.data_dir",
                format!(
                    "must be an absolute path, got {:?}",
                    self.cart.data_dir.display().to_string()
                ),
            );
        }

        let level = self.log.level.trim();
        let plain = ["error", "warn", "info", "debug", "trace", "off"];
        if level.is_empty()
            || !(plain.contains(&level)
                || level
                    .split(',')
                    .all(|d| plain.contains(&d) || d.contains('=')))
        {
            bad(
                "log.level",
                format!(
                    "{level:?} is not a level (error, warn, info, debug, trace) or a filter like \"info,telecart_devices=debug\""
                ),
            );
        }

        if !self.console.listen.ip().is_loopback() {
            match &self.console.access_token {
                None => bad(
                    "console.access_token",
                    format!(
                        "is required because console.listen ({}) is reachable from other hosts",
                        self.console.listen
                    ),
                ),
                Some(t) if t.len() < 16 => bad(
                    "console.access_token",
                    "must be at least 16 characters".into(),
                ),
                Some(_) => {}
            }
        }

        let v = &self.video;
        if v.source == VideoSource::Camera && v.device != "auto" && !v.device.starts_with("/dev/") {
            bad(
                "video.device",
                format!("must be \"auto\" or a path under /dev, got {:?}", v.device),
            );
        }
        if !(160..=3840).contains(&v.width) || !v.width.is_multiple_of(2) {
            bad(
                "video.width",
                format!("must be an even number from 160 to 3840, got {}", v.width),
            );
        }
        if !(120..=2160).contains(&v.height) || !v.height.is_multiple_of(2) {
            bad(
                "video.height",
                format!("must be an even number from 120 to 2160, got {}", v.height),
            );
        }
        if !(1..=60).contains(&v.fps) {
            bad("video.fps", format!("must be 1 to 60, got {}", v.fps));
        }
        if v.min_bitrate_kbps < 50 {
            bad(
                "video.min_bitrate_kbps",
                format!("must be at least 50, got {}", v.min_bitrate_kbps),
            );
        }
        if v.max_bitrate_kbps > 50_000 {
            bad(
                "video.max_bitrate_kbps",
                format!("must be at most 50000, got {}", v.max_bitrate_kbps),
            );
        }
        if v.min_bitrate_kbps > v.max_bitrate_kbps {
            bad(
                "video.min_bitrate_kbps",
                format!(
                    "({}) must not exceed video.max_bitrate_kbps ({})",
                    v.min_bitrate_kbps, v.max_bitrate_kbps
                ),
            );
        } else if !(v.min_bitrate_kbps..=v.max_bitrate_kbps).contains(&v.bitrate_kbps) {
            bad(
                "video.bitrate_kbps",
                format!(
                    "must lie between video.min_bitrate_kbps ({}) and video.max_bitrate_kbps ({}), got {}",
                    v.min_bitrate_kbps, v.max_bitrate_kbps, v.bitrate_kbps
                ),
            );
        }
        if !(1..=60).contains(&v.keyframe_interval_s) {
            bad(
                "video.keyframe_interval_s",
                format!("must be 1 to 60, got {}", v.keyframe_interval_s),
            );
        }
        if !(1..=300).contains(&v.reopen_backoff_max_s) {
            bad(
                "video.reopen_backoff_max_s",
                format!("must be 1 to 300, got {}", v.reopen_backoff_max_s),
            );
        }

        let a = &self.audio;
        if ![8_000, 16_000, 24_000, 32_000, 44_100, 48_000].contains(&a.sample_rate) {
            bad(
                "audio.sample_rate",
                format!(
                    "must be one of 8000, 16000, 24000, 32000, 44100, 48000, got {}",
                    a.sample_rate
                ),
            );
        }
        if !(1..=2).contains(&a.channels) {
            bad(
                "audio.channels",
                format!("must be 1 or 2, got {}", a.channels),
            );
        }
        if !(2..=100).contains(&a.period_ms) {
            bad(
                "audio.period_ms",
                format!("must be 2 to 100, got {}", a.period_ms),
            );
        } else if a.buffer_ms < 2 * a.period_ms || a.buffer_ms > 1000 {
            bad(
                "audio.buffer_ms",
                format!(
                    "must be at least two periods ({} ms) and at most 1000, got {}",
                    2 * a.period_ms,
                    a.buffer_ms
                ),
            );
        }
        if !(20..=20_000).contains(&a.tone_hz) {
            bad(
                "audio.tone_hz",
                format!("must be 20 to 20000, got {}", a.tone_hz),
            );
        }
        if !(6..=510).contains(&a.opus_bitrate_kbps) {
            bad(
                "audio.opus_bitrate_kbps",
                format!("must be 6 to 510, got {}", a.opus_bitrate_kbps),
            );
        }
        if a.microphone != MicrophoneSource::Wav && a.wav_path.is_some() {
            bad(
                "audio.wav_path",
                "is only used when audio.microphone = \"wav\"; remove it or change the source"
                    .into(),
            );
        }

        for (key, message) in self
            .store
            .validate()
            .into_iter()
            .chain(self.board.validate())
            .chain(self.sip.validate())
            .chain(self.captions.validate())
        {
            bad(&key, message);
        }
        for (key, message) in self.audio_processing.validate() {
            bad(&key, message);
        }

        let w = &self.webrtc;
        if let Some(ca) = &w.ca_file
            && !ca.is_absolute()
        {
            bad("webrtc.ca_file", "must be an absolute path".into());
        }
        if (w.port_min == 0) != (w.port_max == 0) {
            bad(
                "webrtc.port_min",
                "set both webrtc.port_min and webrtc.port_max, or neither".into(),
            );
        } else if w.port_min != 0 && (w.port_min < 1024 || w.port_min > w.port_max) {
            bad(
                "webrtc.port_min",
                format!(
                    "({}) must be at least 1024 and not exceed webrtc.port_max ({})",
                    w.port_min, w.port_max
                ),
            );
        }
        for url in &w.stun_servers {
            if !url.starts_with("stun:") || url.len() <= "stun:".len() {
                bad(
                    "webrtc.stun_servers",
                    format!("{url:?} is not a stun:host[:port] URI"),
                );
            }
        }
        for t in &w.turn_servers {
            let rest = t
                .url
                .strip_prefix("turns:")
                .or_else(|| t.url.strip_prefix("turn:"));
            if rest.is_none_or(str::is_empty) {
                bad(
                    "webrtc.turn_servers",
                    format!("{:?} is not a turn: or turns: URI", t.url),
                );
            }
            if t.username.is_empty() || t.password.is_empty() {
                bad(
                    "webrtc.turn_servers",
                    format!("{:?} needs a username and a password", t.url),
                );
            }
        }
        if w.relay_only && w.turn_servers.is_empty() {
            bad(
                "webrtc.relay_only",
                "needs at least one entry in webrtc.turn_servers".into(),
            );
        }

        let p = &self.pipeline;
        if !(1..=256).contains(&p.video_queue_frames) {
            bad(
                "pipeline.video_queue_frames",
                format!("must be 1 to 256, got {}", p.video_queue_frames),
            );
        }
        if !(1..=1024).contains(&p.audio_queue_blocks) {
            bad(
                "pipeline.audio_queue_blocks",
                format!("must be 1 to 1024, got {}", p.audio_queue_blocks),
            );
        }
        out
    }
}

/// Turns a TOML/serde error into an issue with the line and the dotted key.
fn issue_from_parse_error(text: &str, err: &toml::de::Error) -> ConfigIssue {
    let message = err.message().trim().to_string();
    let Some(span) = err.span() else {
        return ConfigIssue {
            key: String::new(),
            line: None,
            message,
        };
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    ConfigIssue {
        key: key_at(text, start),
        line: Some(line),
        message,
    }
}

/// The dotted key whose line contains byte offset `at`: the `[table]` header
/// above it joined with the key before `=` on that line.
fn key_at(text: &str, at: usize) -> String {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = &text[line_start..line_end];
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(table_header)
        .unwrap_or_default();
    if let Some(header) = table_header(line) {
        return header;
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key.to_string(),
        (false, false) => format!("{table}.{key}"),
    }
}

fn table_header(line: &str) -> Option<String> {
    let l = line.trim();
    let inner = l.strip_prefix('[')?.split(']').next()?;
    Some(inner.trim_matches('[').trim().to_string())
}

/// 1-based line where a dotted key is set, if the text sets it explicitly.
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = dotted.rsplit_once('.')?;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(header) = table_header(line) {
            current = header;
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        if current == table && k.trim().trim_matches('"') == key {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("cart.toml"), text)
    }

    #[test]
    fn empty_file_is_the_demo_default() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert!(Config::default().validate().is_empty());
    }

    #[test]
    fn example_config_in_the_repo_is_valid() {
        let text = include_str!("../../../docs/cart.example.toml");
        let config = parse(text).unwrap();
        assert_eq!(config.video.source, VideoSource::Camera);
    }

    /// Each bad file and the message a user reads.
    #[test]
    fn bad_files_name_file_line_key_and_problem() {
        let table: &[(&str, &str)] = &[
            (
                "[video]\nwidht = 640\n",
                "cart.toml:2: video.widht: unknown field `widht`, expected one of",
            ),
            (
                "[video]\nwidth = \"big\"\n",
                "cart.toml:2: video.width: invalid type: string \"big\", expected u32",
            ),
            (
                "[video]\nwidth = 641\n",
                "cart.toml:2: video.width: must be an even number from 160 to 3840, got 641",
            ),
            (
                "[video]\nsource = \"webcam\"\n",
                "cart.toml:2: video.source: unknown variant `webcam`, expected `camera` or `test-pattern`",
            ),
            (
                "[video]\nbitrate_kbps = 9000\n",
                "cart.toml:2: video.bitrate_kbps: must lie between video.min_bitrate_kbps (100) and video.max_bitrate_kbps (4000), got 9000",
            ),
            (
                "[video]\nmin_bitrate_kbps = 5000\nmax_bitrate_kbps = 1000\n",
                "cart.toml:2: video.min_bitrate_kbps: (5000) must not exceed video.max_bitrate_kbps (1000)",
            ),
            (
                "[console]\nlisten = \"0.0.0.0:8080\"\n",
                "cart.toml: console.access_token: is required because console.listen (0.0.0.0:8080) is reachable from other hosts",
            ),
            (
                "[console]\nlisten = \"localhost:80\"\n",
                "cart.toml:2: console.listen: invalid socket address syntax",
            ),
            (
                "[audio]\nchannels = 6\nperiod_ms = 10\nbuffer_ms = 15\n",
                "cart.toml:2: audio.channels: must be 1 or 2, got 6\ncart.toml:4: audio.buffer_ms: must be at least two periods (20 ms) and at most 1000, got 15",
            ),
            (
                "[audio]\nsample_rate = -1\n",
                "cart.toml:2: audio.sample_rate: invalid value: integer `-1`, expected u32",
            ),
            (
                "[cart]\ndata_dir = \"var/lib\"\n",
                "cart.toml:2: cart.data_dir: must be an absolute path, got \"var/lib\"",
            ),
            (
                "[log]\nlevel = \"loud\"\n",
                "cart.toml:2: log.level: \"loud\" is not a level",
            ),
            (
                "[pipeline]\nvideo_queue_frames = 0\n",
                "cart.toml:2: pipeline.video_queue_frames: must be 1 to 256, got 0",
            ),
            (
                "[webrtc]\nport_min = 50000\n",
                "cart.toml:2: webrtc.port_min: set both webrtc.port_min and webrtc.port_max, or neither",
            ),
            (
                "[webrtc]\nport_min = 60000\nport_max = 50000\n",
                "cart.toml:2: webrtc.port_min: (60000) must be at least 1024 and not exceed webrtc.port_max (50000)",
            ),
            (
                "[webrtc]\nstun_servers = [\"stun.example.org\"]\n",
                "cart.toml:2: webrtc.stun_servers: \"stun.example.org\" is not a stun:host[:port] URI",
            ),
            (
                "[webrtc]\nrelay_only = true\n",
                "cart.toml:2: webrtc.relay_only: needs at least one entry in webrtc.turn_servers",
            ),
            (
                "[[webrtc.turn_servers]]\nurl = \"turn:turn.example.org\"\n",
                "cart.toml: webrtc.turn_servers: \"turn:turn.example.org\" needs a username and a password",
            ),
            (
                "[webrtc]\nbind_address = \"cart.local\"\n",
                "cart.toml:2: webrtc.bind_address: invalid",
            ),
            ("[video\nwidth = 1\n", "cart.toml:1: "),
            ("[bogus]\n", "cart.toml:1: bogus: unknown field `bogus`"),
        ];
        for (text, want) in table {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.starts_with(want),
                "for {text:?}\n got: {err}\nwant: {want}…"
            );
        }
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let err = Config::load(Path::new("/nonexistent/cart.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/cart.toml: cannot read the file:")
        );
    }

    #[test]
    fn a_webrtc_section_parses_and_hides_passwords() {
        let config = parse(
            "[webrtc]\nbind_address = \"192.0.2.7\"\nport_min = 50000\nport_max = 50100\n\
             stun_servers = [\"stun:stun.example.org\"]\nrelay_only = true\n\
             [[webrtc.turn_servers]]\nurl = \"turns:turn.example.org:443?transport=tcp\"\n\
             username = \"cart\"\npassword = \"s3cret\"\n",
        )
        .unwrap();
        assert_eq!(
            config.webrtc.bind_address,
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            (config.webrtc.port_min, config.webrtc.port_max),
            (50000, 50100)
        );
        assert_eq!(config.webrtc.turn_servers[0].username, "cart");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn config_round_trips_through_toml() {
        let config = Config::default();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse(&text).unwrap(), config);
    }
}
