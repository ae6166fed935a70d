//! The privacy gate: what the pipeline calls on every frame and audio block.
//!
//! The state machine's [`Action::MuteCameraAndMic`](crate::machine::Action)
//! and [`Action::Unmute`](crate::machine::Action) flip a [`PrivacySwitch`];
//! the capture threads hold a [`PrivacyGate`] sharing the same flag and pass
//! every frame through it. The flag is read per frame, so the first frame
//! captured after the toggle is already the slate: privacy takes effect within
//! one frame period. The slate carries no pixel of the camera picture (it is
//! built from scratch, not blurred), keeps the frame's size, sequence number
//! and capture time so encoders and receivers see no gap, and is cached per
//! size so the per-frame cost is one copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use telecart_core::media::{AudioFrame, VideoFrame};

/// The writable side of the privacy flag, held by whoever carries out the machine's actions.
#[derive(Debug, Clone, Default)]
pub struct PrivacySwitch(Arc<AtomicBool>);

impl PrivacySwitch {
    /// A switch, privacy off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets privacy on or off; every gate sharing it sees the change on its next frame.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }

    /// Privacy is on.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A gate for one pipeline thread.
    pub fn gate(&self) -> PrivacyGate {
        PrivacyGate {
            flag: self.0.clone(),
            slate: None,
        }
    }
}

/// Applies privacy to frames; one per capture thread. See the [module docs](self).
#[derive(Debug)]
pub struct PrivacyGate {
    flag: Arc<AtomicBool>,
    slate: Option<VideoFrame>,
}

impl PrivacyGate {
    /// Privacy is on now.
    pub fn is_on(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The frame to send: `frame` itself with privacy off, else the slate with
    /// `frame`'s size, sequence number and capture time.
    pub fn video(&mut self, frame: VideoFrame) -> VideoFrame {
        if !self.is_on() {
            return frame;
        }
        let cached = self
            .slate
            .as_ref()
            .is_some_and(|s| s.width == frame.width && s.height == frame.height);
        if !cached {
            self.slate = Some(slate(frame.width, frame.height));
        }
        let mut out = frame;
        if let Some(s) = &self.slate {
            // clear + extend rather than copy_from_slice: a frame whose buffer
            // does not match its size still leaves as a whole slate, never a panic.
            out.data.clear();
            out.data.extend_from_slice(&s.data);
        }
        out
    }

    /// Silences `block` in place with privacy on; returns whether it did.
    pub fn audio(&self, block: &mut AudioFrame) -> bool {
        if !self.is_on() {
            return false;
        }
        block.samples.fill(0);
        true
    }
}

/// Slate colours (video-range BT.601 YUV).
const BACKGROUND: (u8, u8, u8) = (41, 150, 120); // dark slate blue
const MARK: (u8, u8, u8) = (200, 128, 128); // light grey

/// The privacy slate at `width`×`height` (both even, as every I420 frame is):
/// a dark background with a light "camera off" mark, a ring crossed by a bar.
///
/// Sizes that are not a valid I420 frame get a buffer of the right length
/// anyway (the gate only calls this with the size of a real frame).
pub fn slate(width: u32, height: u32) -> VideoFrame {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w / 2, h / 2);
    let mut data = Vec::with_capacity(VideoFrame::i420_len(width, height));
    let (cx, cy) = (w as i64 / 2, h as i64 / 2);
    let r = (w.min(h) as i64 / 6).max(2);
    let thick = (r / 5).max(1);
    let mark = |x: i64, y: i64| -> bool {
        let (dx, dy) = (x - cx, y - cy);
        let d2 = dx * dx + dy * dy;
        let ring = d2 <= r * r && d2 >= (r - thick) * (r - thick);
        // The bar: a diagonal through the ring, |dx - dy| small, inside the ring's box.
        let bar = (dx - dy).abs() <= thick && dx.abs() <= r && dy.abs() <= r;
        ring || bar
    };
    for y in 0..h {
        for x in 0..w {
            data.push(if mark(x as i64, y as i64) {
                MARK.0
            } else {
                BACKGROUND.0
            });
        }
    }
    for plane in [1, 2] {
        for y in 0..ch {
            for x in 0..cw {
                let on = mark(2 * x as i64, 2 * y as i64);
                let (m, b) = if plane == 1 {
                    (MARK.1, BACKGROUND.1)
                } else {
                    (MARK.2, BACKGROUND.2)
                };
                data.push(if on { m } else { b });
            }
        }
    }
    VideoFrame {
        width,
        height,
        data,
        sequence: 0,
        capture_time: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_core::media::CaptureTime;

    fn camera_frame(seq: u64) -> VideoFrame {
        let (w, h) = (64, 48);
        let data = (0..VideoFrame::i420_len(w, h))
            .map(|i| (i * 7 + seq as usize) as u8)
            .collect();
        VideoFrame::from_i420(w, h, data, seq, CaptureTime(1_000 + seq)).unwrap()
    }

    #[test]
    fn frames_pass_untouched_with_privacy_off() {
        let switch = PrivacySwitch::new();
        let mut gate = switch.gate();
        let f = camera_frame(3);
        assert_eq!(gate.video(f.clone()), f);
    }

    #[test]
    fn first_frame_after_the_toggle_is_the_slate() {
        let switch = PrivacySwitch::new();
        let mut gate = switch.gate();
        let expected = slate(64, 48);
        let mut sent = Vec::new();
        for seq in 0..10 {
            if seq == 4 {
                switch.set(true); // the toggle lands between frame 3 and frame 4
            }
            sent.push(gate.video(camera_frame(seq)));
        }
        for f in &sent[..4] {
            assert_eq!(f.data, camera_frame(f.sequence).data);
        }
        for f in &sent[4..] {
            assert_eq!(f.data, expected.data, "frame {} leaked", f.sequence);
        }
    }

    #[test]
    fn slate_keeps_sequence_and_capture_time() {
        let switch = PrivacySwitch::new();
        switch.set(true);
        let out = switch.gate().video(camera_frame(7));
        assert_eq!(out.sequence, 7);
        assert_eq!(out.capture_time, CaptureTime(1_007));
        assert_eq!((out.width, out.height), (64, 48));
    }

    #[test]
    fn slate_follows_a_change_of_size() {
        let switch = PrivacySwitch::new();
        switch.set(true);
        let mut gate = switch.gate();
        gate.video(camera_frame(0));
        let big = VideoFrame::black(128, 96, 1, CaptureTime(0)).unwrap();
        let out = gate.video(big);
        assert_eq!(out.data, slate(128, 96).data);
    }

    #[test]
    fn slate_is_a_valid_i420_frame_with_a_mark() {
        for (w, h) in [(2, 2), (64, 48), (1280, 720)] {
            let s = slate(w, h);
            assert_eq!(s.data.len(), VideoFrame::i420_len(w, h));
            assert!(VideoFrame::from_i420(w, h, s.data.clone(), 0, CaptureTime(0)).is_ok());
        }
        let s = slate(64, 48);
        let (y, _, _) = s.planes();
        assert!(y.contains(&MARK.0) && y.contains(&BACKGROUND.0));
    }

    #[test]
    fn audio_is_silenced_from_the_toggle_and_restored_after() {
        let switch = PrivacySwitch::new();
        let gate = switch.gate();
        let block = || AudioFrame {
            sample_rate: 48_000,
            channels: 1,
            samples: vec![1000; 480],
            sequence: 0,
            capture_time: CaptureTime(0),
        };
        let mut b = block();
        assert!(!gate.audio(&mut b));
        assert_eq!(b.samples[0], 1000);
        switch.set(true);
        let mut b = block();
        assert!(gate.audio(&mut b));
        assert!(b.samples.iter().all(|&s| s == 0));
        switch.set(false);
        let mut b = block();
        assert!(!gate.audio(&mut b));
        assert_eq!(b.samples, vec![1000; 480]);
    }
}
