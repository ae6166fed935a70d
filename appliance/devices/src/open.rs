//! Building the devices the configuration names.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use telecart_core::config::{AudioConfig, MicrophoneSource, SpeakerSink, VideoConfig, VideoSource};
use telecart_core::{CaptureTime, VideoFrame};

use crate::alsa_pcm::{AlsaCapture, AlsaPlayback, AlsaSettings};
use crate::controls::CameraControls;
use crate::mode::WantedMode;
use crate::pattern::PatternCamera;
use crate::reconnect::{Backoff, CameraStatus, ReconnectingCamera};
use crate::sources::{SilenceSource, SourceSettings, ToneSource, WavSource};
use crate::v4l2::V4l2Camera;
use crate::{AudioCapture, AudioPlayback, DeviceError, VideoCapture};

/// The microphone of the configuration: an ALSA device, or a simulated source
/// (tone, WAV file or the bundled speech, silence) paced to real time.
pub fn open_microphone(config: &AudioConfig) -> Result<Box<dyn AudioCapture>, DeviceError> {
    let settings = SourceSettings::from_config(config);
    let source: Box<dyn AudioCapture> = match config.microphone {
        MicrophoneSource::Alsa => Box::new(AlsaCapture::open(&AlsaSettings::capture_from(config))?),
        MicrophoneSource::Tone => Box::new(ToneSource::new(settings, config.tone_hz)?),
        MicrophoneSource::Wav => match &config.wav_path {
            Some(path) => Box::new(WavSource::open(path, settings)?),
            None => Box::new(WavSource::bundled(settings)?),
        },
        MicrophoneSource::Silence => Box::new(SilenceSource::new(settings)?),
    };
    tracing::info!(microphone = %source.description(), "microphone opened");
    Ok(source)
}

/// The speaker of the configuration; `None` when it is `none`.
pub fn open_speaker(config: &AudioConfig) -> Result<Option<Box<dyn AudioPlayback>>, DeviceError> {
    match config.speaker {
        SpeakerSink::Alsa => {
            let speaker = AlsaPlayback::open(&AlsaSettings::playback_from(config))?;
            tracing::info!(speaker = %speaker.description(), "speaker opened");
            Ok(Some(Box::new(speaker)))
        }
        SpeakerSink::None => Ok(None),
    }
}

/// The camera of the configuration.
///
/// * `test-pattern`: a [`PatternCamera`] drawing with `renderer` at the
///   configured size and rate.
/// * `camera`: a [`ReconnectingCamera`] over [`V4l2Camera`] (`device = "auto"`
///   takes the first capture device that can stream). Nothing is opened
///   here: the first `next_frame` opens the camera, and a missing or
///   unplugged camera is waited for, reported through `status`.
///
/// Either way, `next_frame` returns [`DeviceError::Stopped`] once `stop` is
/// raised. Only invalid settings are an error here.
pub fn open_camera<R, S>(
    config: &VideoConfig,
    renderer: R,
    mut status: S,
    stop: Arc<AtomicBool>,
) -> Result<Box<dyn VideoCapture>, DeviceError>
where
    R: FnMut(u64, CaptureTime) -> VideoFrame + Send + 'static,
    S: FnMut(&CameraStatus) + Send + 'static,
{
    match config.source {
        VideoSource::TestPattern => {
            let camera = PatternCamera::new(config.width, config.height, config.fps, renderer)?;
            status(&CameraStatus::Streaming {
                description: camera.description(),
            });
            Ok(Box::new(Stoppable {
                inner: camera,
                stop,
            }))
        }
        VideoSource::Camera => {
            let want = WantedMode {
                width: config.width,
                height: config.height,
                fps: config.fps,
            };
            let device = config.device.clone();
            let opener = move || -> Result<Box<dyn VideoCapture>, DeviceError> {
                let camera = if device == "auto" {
                    V4l2Camera::open_first(want)?
                } else {
                    V4l2Camera::open(&device, want)?
                };
                Ok(Box::new(camera))
            };
            Ok(Box::new(ReconnectingCamera::new(
                opener,
                Backoff::from_config(config),
                status,
                stop,
            )))
        }
    }
}

/// A capture that ends with [`DeviceError::Stopped`] once `stop` is raised.
struct Stoppable<C> {
    inner: C,
    stop: Arc<AtomicBool>,
}

impl<C: VideoCapture> VideoCapture for Stoppable<C> {
    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(DeviceError::Stopped);
        }
        self.inner.next_frame()
    }

    fn description(&self) -> String {
        self.inner.description()
    }

    fn control_handle(&self) -> Option<CameraControls> {
        self.inner.control_handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn black(seq: u64, t: CaptureTime) -> VideoFrame {
        match VideoFrame::black(320, 240, seq, t) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn simulated_microphones_open_from_the_config() {
        for (source, starts) in [
            (MicrophoneSource::Tone, "tone 440 Hz, 48000 Hz 1 ch"),
            (MicrophoneSource::Wav, "WAV bundled demo speech"),
            (MicrophoneSource::Silence, "silence, 48000 Hz 1 ch"),
        ] {
            let config = AudioConfig {
                microphone: source,
                ..AudioConfig::default()
            };
            let mut mic = open_microphone(&config).unwrap();
            assert!(
                mic.description().starts_with(starts),
                "{}",
                mic.description()
            );
            let frame = mic.read().unwrap();
            assert_eq!(
                (frame.sample_rate, frame.channels, frame.frames()),
                (48_000, 1, 480)
            );
        }
    }

    #[test]
    fn missing_devices_and_files_are_errors_naming_them() {
        let config = AudioConfig {
            microphone: MicrophoneSource::Alsa,
            capture_device: "no-such-pcm-telecart".into(),
            ..AudioConfig::default()
        };
        let err = open_microphone(&config).err().unwrap();
        assert!(
            err.to_string().starts_with("no-such-pcm-telecart: "),
            "{err}"
        );
        let config = AudioConfig {
            microphone: MicrophoneSource::Wav,
            wav_path: Some("/nonexistent/voice.wav".into()),
            ..AudioConfig::default()
        };
        let err = open_microphone(&config).err().unwrap();
        assert!(
            err.to_string().starts_with("/nonexistent/voice.wav: "),
            "{err}"
        );
        let config = AudioConfig {
            speaker: SpeakerSink::Alsa,
            playback_device: "no-such-pcm-telecart".into(),
            ..AudioConfig::default()
        };
        let err = open_speaker(&config).err().unwrap();
        assert!(
            err.to_string().starts_with("no-such-pcm-telecart: "),
            "{err}"
        );
    }

    #[test]
    fn no_speaker_is_none() {
        let config = AudioConfig {
            speaker: SpeakerSink::None,
            ..AudioConfig::default()
        };
        assert!(open_speaker(&config).unwrap().is_none());
    }

    #[test]
    fn test_pattern_camera_streams_and_stops() {
        let config = VideoConfig {
            source: VideoSource::TestPattern,
            width: 320,
            height: 240,
            fps: 60,
            ..VideoConfig::default()
        };
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let record = statuses.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut cam = open_camera(
            &config,
            black,
            move |s: &CameraStatus| record.lock().unwrap().push(s.clone()),
            stop.clone(),
        )
        .unwrap();
        assert_eq!(cam.next_frame().unwrap().sequence, 0);
        assert_eq!(cam.next_frame().unwrap().sequence, 1);
        assert_eq!(
            *statuses.lock().unwrap(),
            vec![CameraStatus::Streaming {
                description: "test pattern 320x240 @ 60 fps".into()
            }]
        );
        assert!(cam.control_handle().is_none());
        stop.store(true, Ordering::Relaxed);
        assert_eq!(cam.next_frame(), Err(DeviceError::Stopped));
    }

    #[test]
    fn an_absent_camera_is_waited_for_until_stop() {
        let config = VideoConfig {
            source: VideoSource::Camera,
            device: "/dev/video-telecart-none".into(),
            ..VideoConfig::default()
        };
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let record = statuses.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut cam = open_camera(
            &config,
            black,
            move |s: &CameraStatus| record.lock().unwrap().push(s.clone()),
            stop.clone(),
        )
        .unwrap();
        let controls = cam.control_handle().unwrap();
        let raiser = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(400));
                stop.store(true, Ordering::Relaxed);
            })
        };
        assert_eq!(cam.next_frame(), Err(DeviceError::Stopped));
        raiser.join().unwrap();
        let statuses = statuses.lock().unwrap();
        match &statuses[0] {
            CameraStatus::Lost { error } => assert!(
                error
                    .to_string()
                    .starts_with("/dev/video-telecart-none: open failed"),
                "{error}"
            ),
            other => panic!("first status {other:?}"),
        }
        assert!(matches!(
            statuses[1],
            CameraStatus::Reopening { attempt: 1, .. }
        ));
        assert!(controls.list().is_empty());
    }
}
