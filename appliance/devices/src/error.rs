//! The crate's error type.

use crate::convert::ConvertError;

/// Everything that can go wrong with a camera, microphone or speaker.
///
/// Every variant names the device (a V4L2 node such as `/dev/video0`, an ALSA
/// PCM name such as `hw:1,0`, or a file) so that a log line or a self-test
/// report is enough to find the faulty part. The type is `Clone + PartialEq`
/// so that tests can assert on it and a status callback can keep a copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// A system call on the device failed (open, ioctl, read, write...).
    #[error("{device}: {action} failed: {message}")]
    Io {
        /// The device.
        device: String,
        /// What was being done, such as `VIDIOC_S_FMT` or `snd_pcm_readi`.
        action: String,
        /// The OS error number, when there is one.
        errno: Option<i32>,
        /// The OS's description of the error.
        message: String,
    },
    /// The device is not a video capture device, or cannot stream.
    #[error("{device}: not usable as a camera: {reason}")]
    NotACamera {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
    /// No mode of the device can be converted to I420 (no NV12, YU12, YUYV or MJPEG).
    #[error("{device}: no usable capture format: {reason}")]
    NoUsableFormat {
        /// The device.
        device: String,
        /// What the device offers.
        reason: String,
    },
    /// The driver did something other than what it reported or was asked:
    /// it set another format than the one it listed, or filled buffers of the
    /// wrong size.
    #[error("{device}: the driver misbehaves: {what}")]
    DriverMismatch {
        /// The device.
        device: String,
        /// What was expected and what happened.
        what: String,
    },
    /// A captured buffer could not be turned into an I420 frame.
    #[error("{device}: bad frame: {source}")]
    BadFrame {
        /// The device.
        device: String,
        /// The conversion problem.
        source: ConvertError,
    },
    /// No camera was found that can stream.
    #[error("no V4L2 camera that can stream was found ({detail})")]
    NoCamera {
        /// What was looked at.
        detail: String,
    },
    /// The camera has no such control.
    #[error("{device}: has no {control} control")]
    ControlUnsupported {
        /// The device.
        device: String,
        /// The control.
        control: String,
    },
    /// A control value is outside the range the camera accepts.
    #[error("{device}: {control} {value} is outside {min}..={max}")]
    ControlOutOfRange {
        /// The device.
        device: String,
        /// The control.
        control: String,
        /// The value asked for.
        value: i64,
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A control cannot be changed now (read-only, or inactive because an
    /// automatic mode is on).
    #[error("{device}: {control} cannot be set: {reason}")]
    ControlNotWritable {
        /// The device.
        device: String,
        /// The control.
        control: String,
        /// Why.
        reason: String,
    },
    /// The audio device refused the sample format, channel count or timing asked for.
    #[error("{device}: cannot configure {what}: {message}")]
    AudioSetup {
        /// The ALSA PCM name.
        device: String,
        /// What was being configured, such as `2 channels`.
        what: String,
        /// The device's answer.
        message: String,
    },
    /// A frame handed to a speaker does not match what the device plays.
    #[error(
        "{device}: frame is {frame_rate} Hz {frame_channels} ch but the device plays {device_rate} Hz {device_channels} ch"
    )]
    AudioFormatMismatch {
        /// The ALSA PCM name.
        device: String,
        /// Rate of the frame.
        frame_rate: u32,
        /// Channels of the frame.
        frame_channels: u16,
        /// Rate the device was opened with.
        device_rate: u32,
        /// Channels the device was opened with.
        device_channels: u16,
    },
    /// A WAV file cannot be used as a source.
    #[error("{path}: cannot use as audio source: {message}")]
    Wav {
        /// The file (or `bundled demo speech`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A parameter given to a constructor is out of range.
    #[error("{device}: invalid setting: {message}")]
    InvalidSetting {
        /// The device or source.
        device: String,
        /// What is wrong.
        message: String,
    },
    /// The stop flag was raised while waiting for a device.
    #[error("stopped")]
    Stopped,
}

impl DeviceError {
    /// An [`DeviceError::Io`] from an `std::io::Error`.
    pub(crate) fn io(device: &str, action: impl Into<String>, err: &std::io::Error) -> Self {
        DeviceError::Io {
            device: device.to_string(),
            action: action.into(),
            errno: err.raw_os_error(),
            message: err.to_string(),
        }
    }

    /// An [`DeviceError::Io`] from an ALSA error.
    pub(crate) fn alsa(device: &str, err: &alsa::Error) -> Self {
        DeviceError::Io {
            device: device.to_string(),
            action: err.func().to_string(),
            errno: Some(err.errno()),
            message: std::io::Error::from_raw_os_error(err.errno()).to_string(),
        }
    }

    /// The OS error number behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DeviceError::Io { errno, .. } => *errno,
            _ => None,
        }
    }

    /// True when the error means the device went away (unplugged, driver
    /// unbound): reopening later may work.
    pub fn is_device_gone(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENXIO | libc::EIO | libc::ENOENT | libc::ESHUTDOWN)
        )
    }
}
