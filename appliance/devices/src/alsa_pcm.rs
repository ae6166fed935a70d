//! ALSA capture and playback (16-bit interleaved, blocking).
//!
//! The device is opened by PCM name, the configured rate, channels, period and
//! buffer are asked for with the `*_near` calls, and what the device granted is
//! kept and reported: frames carry the granted rate and channel count. Xruns
//! (EPIPE) and suspends (ESTRPIPE) are recovered in place, without closing the
//! stream, and counted. A capture stream that fails otherwise (EIO when a driver stops
//! it, as snd-aloop does when its playback side reopens with other parameters) is
//! restarted for the next read.

use std::ffi::CString;

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use telecart_core::config::AudioConfig;
use telecart_core::{AudioFrame, CaptureTime};

use crate::pacing::wall_clock_now;
use crate::{AudioCapture, AudioPlayback, DeviceError};

/// Recoveries in a row without moving a single frame before giving up.
const MAX_RECOVERIES_WITHOUT_PROGRESS: u32 = 100;

/// What to ask an ALSA device for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlsaSettings {
    /// PCM name, such as `default`, `hw:1,0` or `plughw:CARD=Speakerphone`.
    pub device: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Period (one [`AudioCapture::read`]) in milliseconds.
    pub period_ms: u32,
    /// Device buffer in milliseconds.
    pub buffer_ms: u32,
}

impl AlsaSettings {
    /// The microphone settings of the configuration.
    pub fn capture_from(config: &AudioConfig) -> Self {
        Self {
            device: config.capture_device.clone(),
            sample_rate: config.sample_rate,
            channels: config.channels,
            period_ms: config.period_ms,
            buffer_ms: config.buffer_ms,
        }
    }

    /// The speaker settings of the configuration.
    pub fn playback_from(config: &AudioConfig) -> Self {
        Self {
            device: config.playback_device.clone(),
            ..Self::capture_from(config)
        }
    }
}

/// What the device granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Frames per period.
    pub period_frames: usize,
    /// Frames in the device buffer.
    pub buffer_frames: usize,
}

/// Differences between what was asked and what was granted, in words.
pub(crate) fn grant_differences(asked: &AlsaSettings, granted: &Granted) -> Option<String> {
    let mut parts = Vec::new();
    if granted.sample_rate != asked.sample_rate {
        parts.push(format!(
            "rate {} Hz instead of {} Hz",
            granted.sample_rate, asked.sample_rate
        ));
    }
    if granted.channels != asked.channels {
        parts.push(format!(
            "{} channels instead of {}",
            granted.channels, asked.channels
        ));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(", "))
    }
}

fn setup_error(device: &str, what: impl Into<String>, err: &alsa::Error) -> DeviceError {
    DeviceError::AudioSetup {
        device: device.into(),
        what: what.into(),
        message: std::io::Error::from_raw_os_error(err.errno()).to_string(),
    }
}

fn open_pcm(settings: &AlsaSettings, direction: Direction) -> Result<(PCM, Granted), DeviceError> {
    let device = settings.device.as_str();
    if settings.sample_rate == 0 || settings.channels == 0 || settings.period_ms == 0 {
        return Err(DeviceError::InvalidSetting {
            device: device.into(),
            message: format!(
                "rate {} Hz, {} channels, {} ms periods is not a usable setting",
                settings.sample_rate, settings.channels, settings.period_ms
            ),
        });
    }
    let name = CString::new(device).map_err(|_| DeviceError::InvalidSetting {
        device: device.escape_debug().to_string(),
        message: "PCM name contains a NUL byte".into(),
    })?;
    let pcm = PCM::open(&name, direction, false).map_err(|e| DeviceError::alsa(device, &e))?;
    {
        let hwp = HwParams::any(&pcm).map_err(|e| DeviceError::alsa(device, &e))?;
        hwp.set_access(Access::RWInterleaved)
            .map_err(|e| setup_error(device, "interleaved read/write access", &e))?;
        hwp.set_format(Format::S16LE)
            .map_err(|e| setup_error(device, "16-bit little-endian samples (S16_LE)", &e))?;
        hwp.set_channels_near(settings.channels as u32)
            .map_err(|e| {
                let range = match (hwp.get_channels_min(), hwp.get_channels_max()) {
                    (Ok(lo), Ok(hi)) => format!(" (it takes {lo} to {hi})"),
                    _ => String::new(),
                };
                setup_error(device, format!("{} channels{range}", settings.channels), &e)
            })?;
        let rate = hwp
            .set_rate_near(settings.sample_rate, ValueOr::Nearest)
            .map_err(|e| setup_error(device, format!("{} Hz", settings.sample_rate), &e))?;
        let period = (rate as u64 * settings.period_ms as u64 / 1000).max(1);
        hwp.set_period_size_near(period as alsa::pcm::Frames, ValueOr::Nearest)
            .map_err(|e| setup_error(device, format!("a period of {period} frames"), &e))?;
        let buffer = (rate as u64 * settings.buffer_ms as u64 / 1000).max(2 * period);
        hwp.set_buffer_size_near(buffer as alsa::pcm::Frames)
            .map_err(|e| setup_error(device, format!("a buffer of {buffer} frames"), &e))?;
        pcm.hw_params(&hwp)
            .map_err(|e| setup_error(device, "the hardware parameters", &e))?;
    }
    let granted = {
        let hwp = pcm
            .hw_params_current()
            .map_err(|e| DeviceError::alsa(device, &e))?;
        let get = |r: alsa::Result<u32>| r.map_err(|e| DeviceError::alsa(device, &e));
        let get_frames = |r: alsa::Result<alsa::pcm::Frames>| {
            r.map(|f| f.max(0) as usize)
                .map_err(|e| DeviceError::alsa(device, &e))
        };
        Granted {
            sample_rate: get(hwp.get_rate())?,
            channels: get(hwp.get_channels())?.min(u16::MAX as u32) as u16,
            period_frames: get_frames(hwp.get_period_size())?.max(1),
            buffer_frames: get_frames(hwp.get_buffer_size())?,
        }
    };
    {
        let swp = pcm
            .sw_params_current()
            .map_err(|e| DeviceError::alsa(device, &e))?;
        if direction == Direction::Playback {
            // Start once two periods are queued: a little slack against jitter.
            let start = (2 * granted.period_frames).min(granted.buffer_frames.max(1));
            swp.set_start_threshold(start as alsa::pcm::Frames)
                .map_err(|e| setup_error(device, "the start threshold", &e))?;
        }
        swp.set_avail_min(granted.period_frames as alsa::pcm::Frames)
            .map_err(|e| setup_error(device, "the wake-up threshold", &e))?;
        pcm.sw_params(&swp)
            .map_err(|e| setup_error(device, "the software parameters", &e))?;
    }
    if let Some(diff) = grant_differences(settings, &granted) {
        tracing::warn!(device, "the audio device granted {diff}");
    }
    Ok((pcm, granted))
}

fn describe(kind: &str, settings: &AlsaSettings, granted: &Granted) -> String {
    let period_ms = granted.period_frames as f64 * 1000.0 / granted.sample_rate.max(1) as f64;
    let mut text = format!(
        "ALSA {kind} {} {} Hz {} ch, {} frames a period ({period_ms:.1} ms), {} in the buffer",
        settings.device,
        granted.sample_rate,
        granted.channels,
        granted.period_frames,
        granted.buffer_frames
    );
    if let Some(diff) = grant_differences(settings, granted) {
        text.push_str(&format!(" [granted {diff}]"));
    }
    text
}

/// The calls the read/write loops make, so that recovery can be tested
/// without a device.
pub(crate) trait PcmIo {
    fn readi(&self, buf: &mut [i16]) -> alsa::Result<usize>;
    fn writei(&self, buf: &[i16]) -> alsa::Result<usize>;
    fn recover(&self, err: alsa::Error) -> alsa::Result<()>;
    /// Stops the stream, discarding what it holds, and starts it again.
    fn restart(&self) -> alsa::Result<()>;
}

impl PcmIo for PCM {
    fn readi(&self, buf: &mut [i16]) -> alsa::Result<usize> {
        self.io_i16()?.readi(buf)
    }

    fn writei(&self, buf: &[i16]) -> alsa::Result<usize> {
        self.io_i16()?.writei(buf)
    }

    fn recover(&self, err: alsa::Error) -> alsa::Result<()> {
        self.try_recover(err, true)
    }

    fn restart(&self) -> alsa::Result<()> {
        // Dropping an already stopped stream fails harmlessly; prepare is what matters.
        let _ = self.drop();
        self.prepare()?;
        self.start()
    }
}

/// Xrun, suspend and restart counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) xruns: u64,
    pub(crate) suspends: u64,
    pub(crate) restarts: u64,
}

/// Fills `buf` like [`read_full`]; when that fails, the stream is restarted so that the
/// next call can succeed, and the failure is returned (this period is lost).
pub(crate) fn read_or_restart<P: PcmIo>(
    pcm: &P,
    buf: &mut [i16],
    channels: usize,
    counters: &mut Counters,
) -> alsa::Result<()> {
    let failure = match read_full(pcm, buf, channels, counters) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    match pcm.restart() {
        Ok(()) => {
            counters.restarts += 1;
            tracing::warn!(error = %failure, restarts = counters.restarts, "ALSA capture restarted");
        }
        Err(e) => tracing::debug!(error = %e, "ALSA capture could not be restarted"),
    }
    Err(failure)
}

/// Handles an error of a transfer: recovers from xruns (EPIPE) and suspends
/// (ESTRPIPE), retries after EINTR/EAGAIN, and passes anything else on.
fn recover<P: PcmIo>(pcm: &P, err: alsa::Error, counters: &mut Counters) -> alsa::Result<()> {
    match err.errno() {
        libc::EPIPE => {
            counters.xruns += 1;
            pcm.recover(err)
        }
        libc::ESTRPIPE => {
            counters.suspends += 1;
            pcm.recover(err)
        }
        libc::EINTR | libc::EAGAIN => Ok(()),
        _ => Err(err),
    }
}

/// Fills `buf` (whole frames of `channels`) from the device, recovering on the way.
pub(crate) fn read_full<P: PcmIo>(
    pcm: &P,
    buf: &mut [i16],
    channels: usize,
    counters: &mut Counters,
) -> alsa::Result<()> {
    let channels = channels.max(1);
    let mut filled = 0;
    let mut idle = 0;
    while filled < buf.len() {
        match pcm.readi(&mut buf[filled..]) {
            Ok(0) => idle_check(&mut idle)?,
            Ok(frames) => {
                filled = (filled + frames * channels).min(buf.len());
                idle = 0;
            }
            Err(e) => {
                recover(pcm, e, counters)?;
                idle_check(&mut idle)?;
            }
        }
    }
    Ok(())
}

/// Writes all of `buf` to the device, recovering on the way.
pub(crate) fn write_full<P: PcmIo>(
    pcm: &P,
    buf: &[i16],
    channels: usize,
    counters: &mut Counters,
) -> alsa::Result<()> {
    let channels = channels.max(1);
    let mut done = 0;
    let mut idle = 0;
    while done < buf.len() {
        match pcm.writei(&buf[done..]) {
            Ok(0) => idle_check(&mut idle)?,
            Ok(frames) => {
                done = (done + frames * channels).min(buf.len());
                idle = 0;
            }
            Err(e) => {
                recover(pcm, e, counters)?;
                idle_check(&mut idle)?;
            }
        }
    }
    Ok(())
}

fn idle_check(idle: &mut u32) -> alsa::Result<()> {
    *idle += 1;
    if *idle > MAX_RECOVERIES_WITHOUT_PROGRESS {
        return Err(alsa::Error::new("snd_pcm_recover", libc::EIO));
    }
    Ok(())
}

/// An ALSA microphone: one period per [`AudioCapture::read`].
pub struct AlsaCapture {
    pcm: PCM,
    settings: AlsaSettings,
    granted: Granted,
    counters: Counters,
    sequence: u64,
}

impl std::fmt::Debug for AlsaCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaCapture")
            .field("description", &self.description())
            .finish_non_exhaustive()
    }
}

impl AlsaCapture {
    /// Opens a capture PCM.
    pub fn open(settings: &AlsaSettings) -> Result<Self, DeviceError> {
        let (pcm, granted) = open_pcm(settings, Direction::Capture)?;
        Ok(Self {
            pcm,
            settings: settings.clone(),
            granted,
            counters: Counters::default(),
            sequence: 0,
        })
    }

    /// What the device granted.
    pub fn granted(&self) -> Granted {
        self.granted
    }

    /// Overruns recovered so far.
    pub fn xruns(&self) -> u64 {
        self.counters.xruns
    }

    /// Suspends (system sleep) recovered so far.
    pub fn suspends(&self) -> u64 {
        self.counters.suspends
    }

    /// Times the stream was restarted after a read failed.
    pub fn restarts(&self) -> u64 {
        self.counters.restarts
    }
}

impl AudioCapture for AlsaCapture {
    fn read(&mut self) -> Result<AudioFrame, DeviceError> {
        let channels = self.granted.channels as usize;
        let mut samples = vec![0i16; self.granted.period_frames * channels];
        read_or_restart(&self.pcm, &mut samples, channels, &mut self.counters)
            .map_err(|e| DeviceError::alsa(&self.settings.device, &e))?;
        // The first sample of the period was captured `period + still queued`
        // frames ago.
        let queued = self
            .pcm
            .avail_update()
            .map(|f| f.max(0) as u64)
            .unwrap_or(0);
        let age_us = (self.granted.period_frames as u64 + queued) * 1_000_000
            / self.granted.sample_rate.max(1) as u64;
        let capture_time = CaptureTime(wall_clock_now().0.saturating_sub(age_us));
        let frame = AudioFrame {
            sample_rate: self.granted.sample_rate,
            channels: self.granted.channels,
            samples,
            sequence: self.sequence,
            capture_time,
        };
        self.sequence += 1;
        Ok(frame)
    }

    fn description(&self) -> String {
        describe("capture", &self.settings, &self.granted)
    }
}

/// An ALSA speaker.
pub struct AlsaPlayback {
    pcm: PCM,
    settings: AlsaSettings,
    granted: Granted,
    counters: Counters,
}

impl std::fmt::Debug for AlsaPlayback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaPlayback")
            .field("description", &self.description())
            .finish_non_exhaustive()
    }
}

impl AlsaPlayback {
    /// Opens a playback PCM.
    pub fn open(settings: &AlsaSettings) -> Result<Self, DeviceError> {
        let (pcm, granted) = open_pcm(settings, Direction::Playback)?;
        Ok(Self {
            pcm,
            settings: settings.clone(),
            granted,
            counters: Counters::default(),
        })
    }

    /// What the device granted.
    pub fn granted(&self) -> Granted {
        self.granted
    }

    /// Underruns recovered so far.
    pub fn xruns(&self) -> u64 {
        self.counters.xruns
    }

    /// Suspends (system sleep) recovered so far.
    pub fn suspends(&self) -> u64 {
        self.counters.suspends
    }

    /// Plays out what is queued and waits for it (also done on drop).
    pub fn drain(&mut self) -> Result<(), DeviceError> {
        self.pcm
            .drain()
            .map_err(|e| DeviceError::alsa(&self.settings.device, &e))
    }
}

impl AudioPlayback for AlsaPlayback {
    fn write(&mut self, frame: &AudioFrame) -> Result<(), DeviceError> {
        if frame.sample_rate != self.granted.sample_rate || frame.channels != self.granted.channels
        {
            return Err(DeviceError::AudioFormatMismatch {
                device: self.settings.device.clone(),
                frame_rate: frame.sample_rate,
                frame_channels: frame.channels,
                device_rate: self.granted.sample_rate,
                device_channels: self.granted.channels,
            });
        }
        let channels = self.granted.channels as usize;
        let whole = frame.samples.len() / channels * channels;
        write_full(
            &self.pcm,
            &frame.samples[..whole],
            channels,
            &mut self.counters,
        )
        .map_err(|e| DeviceError::alsa(&self.settings.device, &e))
    }

    fn description(&self) -> String {
        describe("playback", &self.settings, &self.granted)
    }
}

impl Drop for AlsaPlayback {
    fn drop(&mut self) {
        // Let queued audio (at most one buffer) play out rather than cutting it.
        if let Err(e) = self.pcm.drain() {
            tracing::debug!(device = %self.settings.device, error = %e, "drain on close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Scripted device: each call pops the next outcome.
    #[derive(Default)]
    struct FakePcm {
        script: RefCell<VecDeque<Result<usize, i32>>>,
        recovered: RefCell<Vec<i32>>,
        recover_fails: bool,
        restarted: RefCell<u32>,
    }

    impl FakePcm {
        fn new(script: &[Result<usize, i32>]) -> Self {
            Self {
                script: RefCell::new(script.iter().copied().collect()),
                ..Self::default()
            }
        }

        fn next(&self, len: usize) -> alsa::Result<usize> {
            match self.script.borrow_mut().pop_front() {
                Some(Ok(n)) => Ok(n.min(len)),
                Some(Err(errno)) => Err(alsa::Error::new("snd_pcm_readi", errno)),
                None => Ok(len),
            }
        }
    }

    impl PcmIo for FakePcm {
        fn readi(&self, buf: &mut [i16]) -> alsa::Result<usize> {
            let n = self.next(buf.len())?;
            buf[..n].fill(7);
            Ok(n)
        }

        fn writei(&self, buf: &[i16]) -> alsa::Result<usize> {
            self.next(buf.len())
        }

        fn recover(&self, err: alsa::Error) -> alsa::Result<()> {
            self.recovered.borrow_mut().push(err.errno());
            if self.recover_fails { Err(err) } else { Ok(()) }
        }

        fn restart(&self) -> alsa::Result<()> {
            *self.restarted.borrow_mut() += 1;
            Ok(())
        }
    }

    #[test]
    fn overruns_are_recovered_counted_and_the_period_completed() {
        let pcm = FakePcm::new(&[Ok(3), Err(libc::EPIPE), Ok(2), Err(libc::EINTR), Ok(5)]);
        let mut buf = vec![0i16; 10];
        let mut counters = Counters::default();
        read_full(&pcm, &mut buf, 1, &mut counters).unwrap();
        assert!(buf.iter().all(|&s| s == 7));
        assert_eq!(counters.xruns, 1);
        assert_eq!(*pcm.recovered.borrow(), vec![libc::EPIPE]);
    }

    #[test]
    fn suspends_are_resumed_and_counted() {
        let pcm = FakePcm::new(&[Err(libc::ESTRPIPE), Ok(4)]);
        let mut counters = Counters::default();
        write_full(&pcm, &[0; 8], 2, &mut counters).unwrap();
        assert_eq!(
            counters,
            Counters {
                xruns: 0,
                suspends: 1,
                restarts: 0
            }
        );
    }

    #[test]
    fn underruns_in_playback_are_recovered() {
        let pcm = FakePcm::new(&[Ok(2), Err(libc::EPIPE), Err(libc::EPIPE), Ok(100)]);
        let mut counters = Counters::default();
        write_full(&pcm, &[0; 12], 2, &mut counters).unwrap();
        assert_eq!(counters.xruns, 2);
    }

    #[test]
    fn an_unplugged_device_is_an_error_not_a_retry() {
        let pcm = FakePcm::new(&[Ok(1), Err(libc::ENODEV)]);
        let mut counters = Counters::default();
        let err = read_full(&pcm, &mut [0; 4], 1, &mut counters).unwrap_err();
        assert_eq!(err.errno(), libc::ENODEV);
        assert!(pcm.recovered.borrow().is_empty());
    }

    #[test]
    fn a_stopped_capture_stream_is_restarted_for_the_next_read() {
        // snd-aloop stops the capture side (EIO) when its playback side reopens.
        let pcm = FakePcm::new(&[Ok(1), Err(libc::EIO), Ok(4)]);
        let mut counters = Counters::default();
        let err = read_or_restart(&pcm, &mut [0; 4], 1, &mut counters).unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
        assert_eq!((*pcm.restarted.borrow(), counters.restarts), (1, 1));
        read_or_restart(&pcm, &mut [0; 4], 1, &mut counters).unwrap();
        assert_eq!(counters.restarts, 1);
    }

    #[test]
    fn a_failed_recovery_is_an_error() {
        let mut pcm = FakePcm::new(&[Err(libc::EPIPE)]);
        pcm.recover_fails = true;
        let mut counters = Counters::default();
        assert!(read_full(&pcm, &mut [0; 4], 1, &mut counters).is_err());
    }

    #[test]
    fn a_device_that_never_moves_gives_up() {
        let script: Vec<Result<usize, i32>> = vec![Ok(0); 1000];
        let pcm = FakePcm::new(&script);
        let mut counters = Counters::default();
        let err = read_full(&pcm, &mut [0; 4], 1, &mut counters).unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
    }

    #[test]
    fn granted_differences_are_spelled_out() {
        let asked = AlsaSettings {
            device: "hw:1,0".into(),
            sample_rate: 48_000,
            channels: 1,
            period_ms: 10,
            buffer_ms: 40,
        };
        let same = Granted {
            sample_rate: 48_000,
            channels: 1,
            period_frames: 480,
            buffer_frames: 1920,
        };
        assert_eq!(grant_differences(&asked, &same), None);
        assert_eq!(
            describe("capture", &asked, &same),
            "ALSA capture hw:1,0 48000 Hz 1 ch, 480 frames a period (10.0 ms), 1920 in the buffer"
        );
        let other = Granted {
            sample_rate: 44_100,
            channels: 2,
            period_frames: 441,
            buffer_frames: 1764,
        };
        assert_eq!(
            grant_differences(&asked, &other).as_deref(),
            Some("rate 44100 Hz instead of 48000 Hz, 2 channels instead of 1")
        );
        assert!(
            describe("capture", &asked, &other)
                .ends_with("[granted rate 44100 Hz instead of 48000 Hz, 2 channels instead of 1]")
        );
    }
}

/// An ALSA PCM a configuration can name (`arecord -L` / `aplay -L`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmInfo {
    /// Name to put in `audio.capture_device` / `audio.playback_device`.
    pub name: String,
    /// alsa-lib's description, one line.
    pub description: String,
    /// Can capture.
    pub capture: bool,
    /// Can play.
    pub playback: bool,
}

/// The PCMs alsa-lib knows (cards, plugins from the configuration).
pub fn list_pcms() -> Vec<PcmInfo> {
    let Ok(hints) = alsa::device_name::HintIter::new_str(None, "pcm") else {
        return Vec::new();
    };
    hints
        .filter_map(|hint| {
            let name = hint.name?;
            let (capture, playback) = match hint.direction {
                Some(alsa::Direction::Capture) => (true, false),
                Some(alsa::Direction::Playback) => (false, true),
                None => (true, true),
            };
            Some(PcmInfo {
                name,
                description: hint
                    .desc
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                capture,
                playback,
            })
        })
        .collect()
}
