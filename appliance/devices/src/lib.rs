//! Cameras, microphones and speakers of the telecart appliance.
//!
//! Everything that produces or consumes raw media sits behind three small
//! traits, [`VideoCapture`], [`AudioCapture`] and [`AudioPlayback`], with one
//! Linux implementation each (V4L2, ALSA) and simulated ones for development
//! and tests:
//!
//! | area | real device | simulated |
//! |---|---|---|
//! | camera | [`V4l2Camera`], wrapped in [`ReconnectingCamera`] | [`PatternCamera`] (paced, renderer supplied by the caller) |
//! | microphone | [`AlsaCapture`] | [`ToneSource`], [`WavSource`] (bundled demo speech), [`SilenceSource`] |
//! | speaker | [`AlsaPlayback`] | none (`speaker = "none"`) |
//!
//! [`open_camera`], [`open_microphone`] and [`open_speaker`] build the right
//! one from the configuration. Every frame leaves this crate as I420 video or
//! interleaved 16-bit PCM, numbered and stamped with its wall-clock capture time.
//!
//! The pure parts (pixel conversion in [`convert`], camera mode choice in
//! [`mode`], control ranges, backoff, pacing) are unit-tested without
//! hardware; the ALSA code path is tested end to end through alsa-lib's
//! userspace `file` plugin (`tests/alsa_file_plugin.rs`).
#![warn(missing_docs, unreachable_pub)]

mod alsa_pcm;
mod controls;
pub mod convert;
mod error;
pub mod mode;
mod open;
mod pacing;
mod pattern;
mod reconnect;
mod sources;
mod v4l2;

use telecart_core::{AudioFrame, VideoFrame};

pub use alsa_pcm::{AlsaCapture, AlsaPlayback, AlsaSettings, Granted, PcmInfo, list_pcms};
pub use controls::{CameraControl, CameraControls, ControlInfo, OutOfRange};
pub use convert::{ConvertError, PixelFormat};
pub use error::DeviceError;
pub use open::{open_camera, open_microphone, open_speaker};
pub use pattern::PatternCamera;
pub use reconnect::{Backoff, CameraOpener, CameraStatus, ReconnectingCamera, StatusCallback};
pub use sources::{SilenceSource, SourceSettings, ToneSource, WavSource};
pub use v4l2::{
    CameraInfo, CameraScan, FormatInfo, NOT_CAMERAS, SizeInfo, V4l2Camera, list_cameras,
    scan_cameras,
};

/// A source of video frames.
pub trait VideoCapture: Send {
    /// Blocks until the next frame (I420, sequence and capture time set).
    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError>;

    /// What the source is, such as `/dev/video0 (vivid) YUYV 1280x720 @ 30 fps`.
    fn description(&self) -> String;

    /// A handle on the camera's controls (focus, zoom, pan...), usable from
    /// another thread while this one captures; `None` for sources without controls.
    fn control_handle(&self) -> Option<CameraControls> {
        None
    }
}

/// A source of audio: one period of interleaved 16-bit samples per call.
pub trait AudioCapture: Send {
    /// Blocks until the next period.
    fn read(&mut self) -> Result<AudioFrame, DeviceError>;

    /// What the source is, such as `ALSA hw:1,0 48000 Hz 1 ch, 10 ms periods`.
    fn description(&self) -> String;
}

/// A sink for audio.
pub trait AudioPlayback: Send {
    /// Queues one block for playback, blocking while the device buffer is full.
    fn write(&mut self, frame: &AudioFrame) -> Result<(), DeviceError>;

    /// What the sink is.
    fn description(&self) -> String;
}
