//! A camera that renders pictures at a real frame rate.
//!
//! The picture itself comes from a renderer closure (the stamped moving test
//! pattern of `telecart-stamp` in the appliance, anything in tests); this
//! module only paces it, numbers the frames and stamps their capture time.

use telecart_core::{CaptureTime, VideoFrame};

use crate::pacing::{Pacer, wall_clock_now};
use crate::{DeviceError, VideoCapture};

/// A paced synthetic camera.
///
/// Frame `n` is produced at `start + n / fps` (drift-free; the clock starts at
/// the first [`VideoCapture::next_frame`]). A consumer that falls behind by
/// more than a frame gets one late frame back-to-back with the current one and
/// the older ones are skipped, counted by [`PatternCamera::skipped`].
/// Sequence numbers count the frames delivered: 0, 1, 2...
pub struct PatternCamera<R> {
    width: u32,
    height: u32,
    fps: u32,
    renderer: R,
    pacer: Pacer,
    sequence: u64,
}

impl<R> std::fmt::Debug for PatternCamera<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternCamera")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("fps", &self.fps)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl<R> PatternCamera<R>
where
    R: FnMut(u64, CaptureTime) -> VideoFrame + Send,
{
    /// A camera of `width x height` at `fps`, paced to real time.
    ///
    /// `renderer(sequence, capture_time)` draws each picture; it must return a
    /// frame of this size.
    pub fn new(width: u32, height: u32, fps: u32, renderer: R) -> Result<Self, DeviceError> {
        Self::build(width, height, fps, renderer, true)
    }

    /// The same camera without pacing: frames as fast as they are asked for
    /// (benchmarks, tests).
    pub fn unpaced(width: u32, height: u32, fps: u32, renderer: R) -> Result<Self, DeviceError> {
        Self::build(width, height, fps, renderer, false)
    }

    fn build(
        width: u32,
        height: u32,
        fps: u32,
        renderer: R,
        paced: bool,
    ) -> Result<Self, DeviceError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(DeviceError::InvalidSetting {
                device: "test pattern".into(),
                message: format!("size {width}x{height} is not a positive even size"),
            });
        }
        if fps == 0 {
            return Err(DeviceError::InvalidSetting {
                device: "test pattern".into(),
                message: "frame rate must be at least 1 fps".into(),
            });
        }
        Ok(Self {
            width,
            height,
            fps,
            renderer,
            pacer: Pacer::new(1, fps as u64, paced),
            sequence: 0,
        })
    }

    /// Frames skipped so far because the consumer was late.
    pub fn skipped(&self) -> u64 {
        self.pacer.skipped()
    }
}

impl<R> VideoCapture for PatternCamera<R>
where
    R: FnMut(u64, CaptureTime) -> VideoFrame + Send,
{
    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        self.pacer.wait_next();
        let capture_time = wall_clock_now();
        let sequence = self.sequence;
        let mut frame = (self.renderer)(sequence, capture_time);
        if frame.width != self.width
            || frame.height != self.height
            || frame.data.len() != VideoFrame::i420_len(self.width, self.height)
        {
            return Err(DeviceError::InvalidSetting {
                device: "test pattern".into(),
                message: format!(
                    "the renderer drew {}x{} ({} bytes), the camera is {}x{}",
                    frame.width,
                    frame.height,
                    frame.data.len(),
                    self.width,
                    self.height
                ),
            });
        }
        frame.sequence = sequence;
        frame.capture_time = capture_time;
        self.sequence += 1;
        Ok(frame)
    }

    fn description(&self) -> String {
        let pacing = if self.pacer.is_paced() {
            ""
        } else {
            ", unpaced"
        };
        format!(
            "test pattern {}x{} @ {} fps{pacing}",
            self.width, self.height, self.fps
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn black(w: u32, h: u32) -> impl FnMut(u64, CaptureTime) -> VideoFrame + Send {
        move |seq, t| match VideoFrame::black(w, h, seq, t) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn frames_come_numbered_stamped_and_no_faster_than_the_rate() {
        let fps = 100;
        let frames = 20u64;
        let started = Instant::now();
        let mut cam = PatternCamera::new(64, 48, fps, black(64, 48)).unwrap();
        let mut last_time = CaptureTime(0);
        let mut renders = Vec::new();
        for n in 0..frames {
            let f = cam.next_frame().unwrap();
            assert_eq!(f.sequence, n);
            assert_eq!((f.width, f.height), (64, 48));
            assert!(f.capture_time >= last_time, "capture times go forward");
            last_time = f.capture_time;
            renders.push(f.capture_time);
        }
        // Frame n is never produced before start + n/fps: a lower bound only,
        // which sleeping guarantees whatever the machine's load.
        assert!(started.elapsed() >= Duration::from_millis((frames - 1) * 1000 / fps as u64));
        // Without a slow consumer, nothing is skipped unless the machine stalled
        // for a whole frame; either way the count is consistent.
        assert!(cam.skipped() < frames);
        assert_eq!(cam.description(), "test pattern 64x48 @ 100 fps");
    }

    #[test]
    fn renderer_sees_the_sequence_and_time_the_frame_carries() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let mut cam = PatternCamera::unpaced(4, 2, 30, move |seq, t| {
            record.lock().unwrap().push((seq, t));
            // A renderer that stamps nothing: the camera sets the metadata.
            VideoFrame::black(4, 2, 999, CaptureTime(1)).unwrap()
        })
        .unwrap();
        let frames: Vec<_> = (0..3).map(|_| cam.next_frame().unwrap()).collect();
        let carried: Vec<_> = frames
            .iter()
            .map(|f| (f.sequence, f.capture_time))
            .collect();
        assert_eq!(*seen.lock().unwrap(), carried);
        assert_eq!(
            carried.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(cam.description(), "test pattern 4x2 @ 30 fps, unpaced");
    }

    #[test]
    fn a_renderer_of_the_wrong_size_is_an_error_and_bad_settings_are_refused() {
        let mut cam = PatternCamera::unpaced(64, 48, 30, black(32, 24)).unwrap();
        let err = cam.next_frame().unwrap_err();
        assert!(err.to_string().contains("drew 32x24"), "{err}");
        assert!(PatternCamera::new(63, 48, 30, black(64, 48)).is_err());
        assert!(PatternCamera::new(64, 48, 0, black(64, 48)).is_err());
    }
}
