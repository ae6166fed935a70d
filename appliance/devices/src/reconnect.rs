//! A camera that survives being unplugged.
//!
//! [`ReconnectingCamera`] wraps an opener closure. When a frame cannot be
//! read, it reports the loss, drops the camera and reopens it with exponential
//! backoff, for as long as it takes: the caller only ever sees frames, or
//! [`DeviceError::Stopped`] once the stop flag is raised.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use telecart_core::VideoFrame;
use telecart_core::config::VideoConfig;

use crate::controls::CameraControls;
use crate::{DeviceError, VideoCapture};

/// What a [`ReconnectingCamera`] reports to its status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CameraStatus {
    /// A camera is open and delivering frames.
    Streaming {
        /// What it is, such as `/dev/video0 (uvcvideo) MJPG 1280x720 @ 30 fps`.
        description: String,
    },
    /// The camera went away or could not be opened (reported once an outage).
    Lost {
        /// Why.
        error: DeviceError,
    },
    /// About to wait `delay`, then try to open the camera again.
    Reopening {
        /// 1 for the first attempt after the loss.
        attempt: u32,
        /// Wait before the attempt.
        delay: Duration,
        /// Why the previous attempt (or the stream) failed.
        last_error: DeviceError,
    },
}

/// Exponential backoff: `base`, `2 base`, `4 base`... capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first reopen attempt.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The appliance's schedule: 250 ms doubling up to `reopen_backoff_max_s`.
    pub fn from_config(config: &VideoConfig) -> Self {
        Self {
            base: Duration::from_millis(250),
            max: Duration::from_secs(config.reopen_backoff_max_s.max(1) as u64),
        }
    }

    /// Delay before reopen attempt `attempt` (1-based; 0 is treated as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(62);
        let factor = 1u64 << doublings;
        let nanos = (self.base.as_nanos()).saturating_mul(factor as u128);
        let capped = nanos.min(self.max.as_nanos());
        Duration::from_nanos(capped.min(u64::MAX as u128) as u64)
    }
}

/// Opens a camera; called again after every loss.
pub type CameraOpener = Box<dyn FnMut() -> Result<Box<dyn VideoCapture>, DeviceError> + Send>;

/// Receives every [`CameraStatus`] change.
pub type StatusCallback = Box<dyn FnMut(&CameraStatus) + Send>;

/// How often a wait checks the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// A camera that reopens itself after failures; see the module docs.
///
/// Sequence numbers are its own and keep increasing across reopens.
pub struct ReconnectingCamera {
    opener: CameraOpener,
    status: StatusCallback,
    stop: Arc<AtomicBool>,
    backoff: Backoff,
    current: Option<Box<dyn VideoCapture>>,
    /// Consecutive failures since the last good frame.
    failures: u32,
    last_error: Option<DeviceError>,
    /// An outage was reported and no frame has come since.
    in_outage: bool,
    next_sequence: u64,
    controls: CameraControls,
    description: String,
}

impl std::fmt::Debug for ReconnectingCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingCamera")
            .field("description", &self.description)
            .field("failures", &self.failures)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

impl ReconnectingCamera {
    /// Wraps `opener`. Nothing is opened until the first
    /// [`VideoCapture::next_frame`].
    pub fn new<O, S>(opener: O, backoff: Backoff, status: S, stop: Arc<AtomicBool>) -> Self
    where
        O: FnMut() -> Result<Box<dyn VideoCapture>, DeviceError> + Send + 'static,
        S: FnMut(&CameraStatus) + Send + 'static,
    {
        Self {
            opener: Box::new(opener),
            status: Box::new(status),
            stop,
            backoff,
            current: None,
            failures: 0,
            last_error: None,
            in_outage: false,
            next_sequence: 0,
            controls: CameraControls::detached(),
            description: "camera (not opened yet)".into(),
        }
    }

    /// Waits `delay` in short slices; `Err(Stopped)` as soon as stop is raised.
    fn sleep(&self, delay: Duration) -> Result<(), DeviceError> {
        let until = Instant::now() + delay;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(DeviceError::Stopped);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(STOP_POLL));
        }
    }

    fn fail(&mut self, error: DeviceError) {
        if !self.in_outage {
            (self.status)(&CameraStatus::Lost {
                error: error.clone(),
            });
            self.in_outage = true;
        }
        self.controls.detach();
        self.current = None;
        self.failures = self.failures.saturating_add(1);
        self.description = format!("camera lost: {error}");
        self.last_error = Some(error);
    }
}

impl VideoCapture for ReconnectingCamera {
    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(DeviceError::Stopped);
            }
            let Some(camera) = self.current.as_mut() else {
                if self.failures > 0 {
                    let delay = self.backoff.delay(self.failures);
                    let last_error = self.last_error.clone().unwrap_or(DeviceError::NoCamera {
                        detail: "unknown".into(),
                    });
                    (self.status)(&CameraStatus::Reopening {
                        attempt: self.failures,
                        delay,
                        last_error,
                    });
                    self.sleep(delay)?;
                }
                match (self.opener)() {
                    Ok(camera) => {
                        self.description = camera.description();
                        if let Some(controls) = camera.control_handle() {
                            self.controls.attach_to(&controls);
                        }
                        (self.status)(&CameraStatus::Streaming {
                            description: self.description.clone(),
                        });
                        self.current = Some(camera);
                    }
                    Err(DeviceError::Stopped) => return Err(DeviceError::Stopped),
                    Err(e) => self.fail(e),
                }
                continue;
            };
            match camera.next_frame() {
                Ok(mut frame) => {
                    self.failures = 0;
                    self.in_outage = false;
                    frame.sequence = self.next_sequence;
                    self.next_sequence += 1;
                    return Ok(frame);
                }
                Err(DeviceError::Stopped) => return Err(DeviceError::Stopped),
                Err(e) => {
                    tracing::warn!(camera = %self.description, error = %e, "camera lost");
                    self.fail(e);
                }
            }
        }
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn control_handle(&self) -> Option<CameraControls> {
        Some(self.controls.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use telecart_core::CaptureTime;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let b = Backoff {
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
        };
        let got: Vec<u64> = (1..=8).map(|a| b.delay(a).as_millis() as u64).collect();
        assert_eq!(got, vec![250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
        assert_eq!(b.delay(0), Duration::from_millis(250));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(10));
        let config = VideoConfig {
            reopen_backoff_max_s: 3,
            ..VideoConfig::default()
        };
        assert_eq!(
            Backoff::from_config(&config).delay(10),
            Duration::from_secs(3)
        );
    }

    /// A camera that delivers `frames` frames and then fails as if unplugged.
    struct FakeCamera {
        name: String,
        frames_left: u32,
        sequence: u64,
    }

    impl VideoCapture for FakeCamera {
        fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
            if self.frames_left == 0 {
                return Err(DeviceError::Io {
                    device: self.name.clone(),
                    action: "VIDIOC_DQBUF".into(),
                    errno: Some(libc::ENODEV),
                    message: "No such device".into(),
                });
            }
            self.frames_left -= 1;
            self.sequence += 1;
            // The wrapped camera numbers from 0 on every open.
            Ok(VideoFrame::black(4, 2, self.sequence - 1, CaptureTime(1)).unwrap())
        }

        fn description(&self) -> String {
            self.name.clone()
        }
    }

    fn unplugged() -> DeviceError {
        DeviceError::Io {
            device: "/dev/video0".into(),
            action: "open".into(),
            errno: Some(libc::ENOENT),
            message: "No such file or directory".into(),
        }
    }

    #[test]
    fn reopens_with_backoff_reports_status_and_keeps_numbering() {
        // Script: open ok (3 frames, then unplugged), open fails twice, open ok (5 frames).
        let opens = Arc::new(Mutex::new(0u32));
        let opens_in = opens.clone();
        let opener = move || {
            let mut n = opens_in.lock().unwrap();
            *n += 1;
            match *n {
                1 => Ok(Box::new(FakeCamera {
                    name: "cam#1".into(),
                    frames_left: 3,
                    sequence: 0,
                }) as Box<dyn VideoCapture>),
                2 | 3 => Err(unplugged()),
                _ => Ok(Box::new(FakeCamera {
                    name: "cam#2".into(),
                    frames_left: 5,
                    sequence: 0,
                }) as Box<dyn VideoCapture>),
            }
        };
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let statuses_in = statuses.clone();
        let backoff = Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(3),
        };
        let mut cam = ReconnectingCamera::new(
            opener,
            backoff,
            move |s: &CameraStatus| statuses_in.lock().unwrap().push(s.clone()),
            Arc::new(AtomicBool::new(false)),
        );
        let seqs: Vec<u64> = (0..8).map(|_| cam.next_frame().unwrap().sequence).collect();
        assert_eq!(seqs, (0..8).collect::<Vec<_>>());
        assert_eq!(*opens.lock().unwrap(), 4);
        assert_eq!(cam.description(), "cam#2");

        let gone = DeviceError::Io {
            device: "cam#1".into(),
            action: "VIDIOC_DQBUF".into(),
            errno: Some(libc::ENODEV),
            message: "No such device".into(),
        };
        let ms = Duration::from_millis;
        assert_eq!(
            *statuses.lock().unwrap(),
            vec![
                CameraStatus::Streaming {
                    description: "cam#1".into()
                },
                CameraStatus::Lost {
                    error: gone.clone()
                },
                CameraStatus::Reopening {
                    attempt: 1,
                    delay: ms(1),
                    last_error: gone
                },
                CameraStatus::Reopening {
                    attempt: 2,
                    delay: ms(2),
                    last_error: unplugged()
                },
                CameraStatus::Reopening {
                    attempt: 3,
                    delay: ms(3),
                    last_error: unplugged()
                },
                CameraStatus::Streaming {
                    description: "cam#2".into()
                },
            ]
        );
    }

    #[test]
    fn a_camera_absent_at_start_is_waited_for() {
        let mut left = 4;
        let opener = move || {
            if left > 0 {
                left -= 1;
                Err(unplugged())
            } else {
                Ok(Box::new(FakeCamera {
                    name: "late".into(),
                    frames_left: 1,
                    sequence: 0,
                }) as Box<dyn VideoCapture>)
            }
        };
        let lost = Arc::new(Mutex::new(0));
        let lost_in = lost.clone();
        let mut cam = ReconnectingCamera::new(
            opener,
            Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            move |s: &CameraStatus| {
                if matches!(s, CameraStatus::Lost { .. }) {
                    *lost_in.lock().unwrap() += 1;
                }
            },
            Arc::new(AtomicBool::new(false)),
        );
        assert_eq!(cam.next_frame().unwrap().sequence, 0);
        // One outage, reported once however many attempts it took.
        assert_eq!(*lost.lock().unwrap(), 1);
    }

    #[test]
    fn stop_ends_a_long_backoff_promptly() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut cam = ReconnectingCamera::new(
            || Err(unplugged()),
            Backoff {
                base: Duration::from_secs(60),
                max: Duration::from_secs(60),
            },
            |_: &CameraStatus| {},
            stop.clone(),
        );
        let raiser = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                stop.store(true, Ordering::Relaxed);
            })
        };
        let started = Instant::now();
        assert_eq!(cam.next_frame(), Err(DeviceError::Stopped));
        // Far less than the 60 s backoff: stop is checked every few ms.
        assert!(started.elapsed() < Duration::from_secs(30));
        raiser.join().unwrap();
        assert!(cam.control_handle().unwrap().device().is_none());
    }
}
