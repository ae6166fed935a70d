//! The M2M sequencing against a fake device that "encodes" real x264 pictures.

use super::*;
use crate::h264::{self, split_access_units};
use crate::synthetic::moving_frame;

/// x264 output with three slices per picture and access-unit delimiters.
const X264: &[u8] = include_bytes!("../../tests/data/x264-320x240-3slices-aud.h264");

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Formats(Queue),
    SetFormat(Queue, [u8; 4]),
    FrameRate(u32),
    Control(u32, i64),
    Allocate(Queue, u32),
    Queue(Queue, u32, u32, u64),
    Stream(Queue, bool),
}

/// What the fake does with a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One CAPTURE buffer per picture.
    Whole,
    /// Parameter sets in a buffer of their own, then the picture.
    SeparateHeaders,
    /// Pictures come out only once two frames are queued (a pipelining encoder).
    Pipelined,
    /// Nothing ever comes out.
    Silent,
}

struct Fake {
    calls: Vec<Call>,
    output_formats: Vec<FourCC>,
    bytesperline_pad: u32,
    height_align: u32,
    mode: Mode,
    pictures: VecDeque<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
    captures: Vec<Vec<u8>>,
    queued_captures: VecDeque<u32>,
    /// Frames queued on OUTPUT: (index, timestamp).
    pending: VecDeque<(u32, u64)>,
    /// Finished CAPTURE buffers ready to dequeue.
    done_captures: VecDeque<Dequeued>,
    done_outputs: VecDeque<u32>,
    /// Copies of what the encoder wrote into OUTPUT buffers.
    written: Vec<Vec<u8>>,
    refuse_level: bool,
}

impl Fake {
    fn new(mode: Mode) -> Self {
        Self {
            calls: Vec::new(),
            output_formats: vec![FourCC::new(b"RGBP"), FourCC::new(&YU12), FourCC::new(&NV12)],
            bytesperline_pad: 0,
            height_align: 1,
            mode,
            pictures: split_access_units(X264)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect(),
            outputs: Vec::new(),
            captures: Vec::new(),
            queued_captures: VecDeque::new(),
            pending: VecDeque::new(),
            done_captures: VecDeque::new(),
            done_outputs: VecDeque::new(),
            written: Vec::new(),
            refuse_level: false,
        }
    }

    fn finish_one(&mut self) {
        let Some((out_index, ts)) = self.pending.pop_front() else {
            return;
        };
        self.written.push(self.outputs[out_index as usize].clone());
        self.done_outputs.push_back(out_index);
        let Some(picture) = self.pictures.pop_front() else {
            return;
        };
        let keyframe = h264::contains_idr(&picture);
        let chunks: Vec<Vec<u8>> = if self.mode == Mode::SeparateHeaders && keyframe {
            // Split off everything before the first slice.
            let first_slice = h264::nal_units(&picture)
                .find(|n| n.is_vcl())
                .map_or(0, |n| n.start_code_offset);
            vec![
                picture[..first_slice].to_vec(),
                picture[first_slice..].to_vec(),
            ]
        } else {
            vec![picture]
        };
        for chunk in chunks {
            let Some(index) = self.queued_captures.pop_front() else {
                panic!("encoder ran out of CAPTURE buffers");
            };
            let buf = &mut self.captures[index as usize];
            // Payload after a 16-byte data_offset, like some drivers do.
            buf[16..16 + chunk.len()].copy_from_slice(&chunk);
            self.done_captures.push_back(Dequeued {
                index,
                bytesused: 16 + chunk.len() as u32,
                data_offset: 16,
                flags: if keyframe {
                    v4l_sys::V4L2_BUF_FLAG_KEYFRAME
                } else {
                    0
                },
                timestamp_us: ts,
            });
        }
    }

    fn run(&mut self) {
        match self.mode {
            Mode::Silent => {}
            Mode::Pipelined => {
                while self.pending.len() >= 2 {
                    self.finish_one();
                }
            }
            Mode::Whole | Mode::SeparateHeaders => {
                while !self.pending.is_empty() {
                    self.finish_one();
                }
            }
        }
    }

    fn controls(&self, id: u32) -> Vec<i64> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Control(i, v) if *i == id => Some(*v),
                _ => None,
            })
            .collect()
    }
}

impl M2mDevice for Fake {
    fn path(&self) -> &str {
        "/dev/video11"
    }

    fn driver(&self) -> &str {
        "fake-codec"
    }

    fn formats(&mut self, queue: Queue) -> Result<Vec<FourCC>, CodecError> {
        self.calls.push(Call::Formats(queue));
        Ok(match queue {
            Queue::Capture => vec![FourCC::new(b"JPEG"), FourCC::new(&H264)],
            Queue::Output => self.output_formats.clone(),
        })
    }

    fn set_format(
        &mut self,
        queue: Queue,
        fourcc: FourCC,
        width: u32,
        height: u32,
        sizeimage: u32,
    ) -> Result<Format, CodecError> {
        self.calls.push(Call::SetFormat(queue, fourcc.repr));
        Ok(match queue {
            Queue::Capture => Format {
                fourcc,
                width,
                height,
                bytesperline: 0,
                sizeimage,
                planes: 1,
            },
            Queue::Output => {
                let bpl = width.next_multiple_of(32) + self.bytesperline_pad;
                let rows = height.next_multiple_of(self.height_align);
                Format {
                    fourcc,
                    width,
                    height,
                    bytesperline: bpl,
                    sizeimage: bpl * rows * 3 / 2,
                    planes: 1,
                }
            }
        })
    }

    fn set_frame_rate(&mut self, fps: u32) -> Result<(), CodecError> {
        self.calls.push(Call::FrameRate(fps));
        Ok(())
    }

    fn set_control(&mut self, id: u32, value: i64) -> Result<(), CodecError> {
        if self.refuse_level && id == v4l_sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL {
            return Err(CodecError::Device {
                device: self.path().to_owned(),
                operation: "VIDIOC_S_EXT_CTRLS".to_owned(),
                message: "Invalid argument".to_owned(),
            });
        }
        self.calls.push(Call::Control(id, value));
        Ok(())
    }

    fn allocate(&mut self, queue: Queue, count: u32) -> Result<u32, CodecError> {
        self.calls.push(Call::Allocate(queue, count));
        let given = count - 1; // drivers may give fewer
        match queue {
            Queue::Output => self.outputs = vec![vec![0; 320 * 240 * 2]; given as usize],
            Queue::Capture => self.captures = vec![vec![0; 512 * 1024]; given as usize],
        }
        Ok(given)
    }

    fn buffer(&mut self, queue: Queue, index: u32) -> Result<&mut [u8], CodecError> {
        Ok(match queue {
            Queue::Output => &mut self.outputs[index as usize],
            Queue::Capture => &mut self.captures[index as usize],
        })
    }

    fn queue(
        &mut self,
        queue: Queue,
        index: u32,
        bytesused: u32,
        timestamp_us: u64,
    ) -> Result<(), CodecError> {
        self.calls
            .push(Call::Queue(queue, index, bytesused, timestamp_us));
        match queue {
            Queue::Output => {
                assert!(
                    !self.pending.iter().any(|(i, _)| *i == index),
                    "OUTPUT buffer {index} queued twice"
                );
                self.pending.push_back((index, timestamp_us));
                self.run();
            }
            Queue::Capture => {
                assert!(!self.queued_captures.contains(&index));
                self.queued_captures.push_back(index);
            }
        }
        Ok(())
    }

    fn dequeue(&mut self, queue: Queue) -> Result<Option<Dequeued>, CodecError> {
        Ok(match queue {
            Queue::Capture => self.done_captures.pop_front(),
            Queue::Output => self.done_outputs.pop_front().map(|index| Dequeued {
                index,
                bytesused: 0,
                data_offset: 0,
                flags: 0,
                timestamp_us: 0,
            }),
        })
    }

    fn stream(&mut self, queue: Queue, on: bool) -> Result<(), CodecError> {
        self.calls.push(Call::Stream(queue, on));
        Ok(())
    }

    fn wait(&mut self, queue: Queue, _timeout_ms: u32) -> Result<bool, CodecError> {
        Ok(match queue {
            Queue::Capture => !self.done_captures.is_empty(),
            Queue::Output => !self.done_outputs.is_empty(),
        })
    }
}

fn settings() -> EncoderSettings {
    EncoderSettings {
        width: 320,
        height: 240,
        fps: 30,
        bitrate_bps: 800_000,
        keyframe_interval_frames: 15,
        profile: H264Profile::ConstrainedBaseline,
    }
}

#[test]
fn raw_format_prefers_i420_then_nv12() {
    let f = |s: &[u8; 4]| FourCC::new(s);
    assert_eq!(
        choose_raw_format(&[f(b"NV12"), f(b"YU12")]),
        Some(RawFormat::Yu12)
    );
    assert_eq!(
        choose_raw_format(&[f(b"RGB3"), f(b"NV12")]),
        Some(RawFormat::Nv12)
    );
    assert_eq!(choose_raw_format(&[f(b"YUYV"), f(b"RGB3")]), None);
}

#[test]
fn levels_follow_table_a1() {
    assert_eq!(h264_level(1280, 720, 30, 2_000_000).1, "3.1");
    assert_eq!(h264_level(1920, 1080, 30, 4_000_000).1, "4.0");
    assert_eq!(h264_level(1920, 1080, 30, 30_000_000).1, "4.1");
    assert_eq!(h264_level(640, 480, 30, 1_000_000).1, "3.0");
    assert_eq!(h264_level(320, 240, 30, 300_000).1, "1.3");
    assert_eq!(h264_level(320, 240, 30, 1_000_000).1, "2.0");
    assert_eq!(h264_level(1920, 1080, 60, 8_000_000).1, "4.2");
    assert_eq!(h264_level(3840, 2160, 30, 20_000_000), (15, "5.1"));
}

#[test]
fn controls_for_the_settings() {
    let controls = encoder_controls(&settings());
    let get = |id| {
        controls
            .iter()
            .find(|c| c.id == id)
            .map(|c| (c.value, c.required))
    };
    assert_eq!(
        get(v4l_sys::V4L2_CID_MPEG_VIDEO_BITRATE),
        Some((800_000, true))
    );
    assert_eq!(
        get(v4l_sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE),
        Some((1, false))
    );
    // 320x240@30 at 800 kbit/s: level 2.0.
    assert_eq!(
        get(v4l_sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL),
        Some((5, false))
    );
    assert_eq!(
        get(v4l_sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD),
        Some((15, false))
    );
    assert_eq!(
        get(v4l_sys::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER),
        Some((1, false))
    );
    assert_eq!(get(v4l_sys::V4L2_CID_MPEG_VIDEO_B_FRAMES), Some((0, false)));
    let high = encoder_controls(&EncoderSettings {
        profile: H264Profile::High,
        keyframe_interval_frames: 0,
        ..settings()
    });
    assert!(
        high.iter()
            .any(|c| c.id == v4l_sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE && c.value == 4)
    );
    assert!(
        !high
            .iter()
            .any(|c| c.id == v4l_sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD)
    );
}

#[test]
fn open_follows_the_stateful_encoder_sequence() {
    let mut fake = Fake::new(Mode::Whole);
    fake.refuse_level = true; // an optional control a driver refuses does not stop us
    let enc = V4l2M2mEncoder::with_device(fake, settings()).unwrap();
    assert_eq!(enc.name(), "v4l2-m2m /dev/video11 (fake-codec)");
    let calls = &enc.device().calls;
    let pos = |c: &Call| calls.iter().position(|x| x == c).unwrap();
    let capture_fmt = pos(&Call::SetFormat(Queue::Capture, H264));
    let output_fmt = pos(&Call::SetFormat(Queue::Output, YU12));
    let rate = pos(&Call::FrameRate(30));
    let bitrate = pos(&Call::Control(
        v4l_sys::V4L2_CID_MPEG_VIDEO_BITRATE,
        800_000,
    ));
    let alloc_out = pos(&Call::Allocate(Queue::Output, 4));
    let alloc_cap = pos(&Call::Allocate(Queue::Capture, 4));
    let first_cap_q = pos(&Call::Queue(Queue::Capture, 0, 0, 0));
    let on_out = pos(&Call::Stream(Queue::Output, true));
    let on_cap = pos(&Call::Stream(Queue::Capture, true));
    assert!(capture_fmt < output_fmt, "CAPTURE format first");
    assert!(output_fmt < rate && rate < bitrate && bitrate < alloc_out);
    assert!(alloc_out < alloc_cap && alloc_cap < first_cap_q);
    // All three CAPTURE buffers the driver gave are queued before streaming.
    for i in 0..3 {
        assert!(pos(&Call::Queue(Queue::Capture, i, 0, 0)) < on_out);
    }
    assert!(on_out < on_cap);
    drop(enc);
}

#[test]
fn pictures_come_out_whole_with_their_frame() {
    for mode in [Mode::Whole, Mode::SeparateHeaders] {
        let mut enc = V4l2M2mEncoder::with_device(Fake::new(mode), settings()).unwrap();
        let expected = split_access_units(X264);
        for i in 0..30u64 {
            let frame = moving_frame(320, 240, i, 30);
            let unit = enc.encode(&frame).unwrap().expect("one picture per frame");
            assert_eq!(unit.sequence, i);
            assert_eq!(unit.capture_time, frame.capture_time);
            assert_eq!(h264::split_access_units(&unit.data).len(), 1);
            assert_eq!(unit.keyframe, h264::contains_idr(&unit.data));
            // Same NAL units as x264 made (start codes normalised to four bytes).
            let got: Vec<&[u8]> = h264::nal_units(&unit.data).map(|n| n.data).collect();
            let want: Vec<&[u8]> = h264::nal_units(expected[i as usize])
                .map(|n| n.data)
                .collect();
            assert_eq!(got, want, "{mode:?} frame {i}");
        }
        // OUTPUT buffers were recycled among the three the driver gave.
        let outputs_used: std::collections::BTreeSet<u32> = enc
            .device()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Queue(Queue::Output, i, ..) => Some(*i),
                _ => None,
            })
            .collect();
        assert!(outputs_used.iter().all(|&i| i < 3), "{outputs_used:?}");
    }
}

#[test]
fn a_pipelining_encoder_may_hold_one_frame_back() {
    let mut enc = V4l2M2mEncoder::with_device(Fake::new(Mode::Pipelined), settings()).unwrap();
    assert_eq!(enc.encode(&moving_frame(320, 240, 0, 30)).unwrap(), None);
    for i in 1..10u64 {
        let unit = enc.encode(&moving_frame(320, 240, i, 30)).unwrap().unwrap();
        assert_eq!(unit.sequence, i - 1);
    }
}

#[test]
fn a_silent_encoder_times_out_instead_of_hanging() {
    let mut enc = V4l2M2mEncoder::with_device(Fake::new(Mode::Silent), settings()).unwrap();
    let mut result = Ok(None);
    for i in 0..4u64 {
        result = enc.encode(&moving_frame(320, 240, i, 30));
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(result, Err(CodecError::DeviceTimeout { .. })),
        "{result:?}"
    );
}

#[test]
fn keyframe_requests_and_bitrate_become_controls() {
    let mut enc = V4l2M2mEncoder::with_device(Fake::new(Mode::Whole), settings()).unwrap();
    let force = v4l_sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME;
    for i in 0..5u64 {
        enc.encode(&moving_frame(320, 240, i, 30)).unwrap();
    }
    assert!(enc.device().controls(force).is_empty());
    enc.request_keyframe();
    enc.encode(&moving_frame(320, 240, 5, 30)).unwrap();
    let calls = &enc.device().calls;
    let forced = calls
        .iter()
        .rposition(|c| *c == Call::Control(force, 1))
        .unwrap();
    let queued = calls
        .iter()
        .rposition(|c| matches!(c, Call::Queue(Queue::Output, ..)))
        .unwrap();
    assert!(
        forced < queued,
        "FORCE_KEY_FRAME is set before the frame is queued"
    );
    assert_eq!(enc.device().controls(force).len(), 1);

    enc.set_bitrate(300_000).unwrap();
    assert_eq!(enc.settings().bitrate_bps, 300_000);
    assert_eq!(
        enc.device().controls(v4l_sys::V4L2_CID_MPEG_VIDEO_BITRATE),
        vec![800_000, 300_000]
    );
    assert!(enc.set_bitrate(0).is_err());
}

#[test]
fn periodic_keyframes_are_forced_if_the_driver_does_not_make_them() {
    // The fixture has IDRs at 0 and 15 only; with an interval of 10 the encoder must force
    // one at frame 10, and count again from the driver's own IDR at 15.
    let mut enc = V4l2M2mEncoder::with_device(
        Fake::new(Mode::Whole),
        EncoderSettings {
            keyframe_interval_frames: 10,
            ..settings()
        },
    )
    .unwrap();
    let force = v4l_sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME;
    let mut forced_at = Vec::new();
    for i in 0..30u64 {
        let before = enc.device().controls(force).len();
        enc.encode(&moving_frame(320, 240, i, 30)).unwrap();
        if enc.device().controls(force).len() > before {
            forced_at.push(i);
        }
    }
    assert_eq!(forced_at, vec![10, 25]);
}

#[test]
fn frames_land_in_the_buffer_with_the_drivers_strides() {
    let frame = moving_frame(320, 240, 3, 30);
    let (y, u, v) = frame.planes();
    for (formats, pad, align) in [
        (vec![FourCC::new(&YU12)], 64, 16),
        (vec![FourCC::new(&NV12)], 0, 32),
    ] {
        let mut fake = Fake::new(Mode::Whole);
        fake.output_formats = formats;
        fake.bytesperline_pad = pad;
        fake.height_align = align;
        let mut enc = V4l2M2mEncoder::with_device(fake, settings()).unwrap();
        enc.encode(&frame).unwrap();
        let layout = enc.layout;
        let bpl = layout.bytesperline as usize;
        assert_eq!(bpl, 320 + pad as usize);
        assert_eq!(
            layout.luma_rows as usize,
            240usize.next_multiple_of(align as usize)
        );
        let buf = &enc.device().written[0];
        for row in [0usize, 100, 239] {
            assert_eq!(
                &buf[row * bpl..row * bpl + 320],
                &y[row * 320..row * 320 + 320]
            );
        }
        // Alignment rows repeat the last picture row.
        let last = layout.luma_rows as usize - 1;
        assert_eq!(&buf[last * bpl..last * bpl + 320], &y[239 * 320..240 * 320]);
        let chroma = bpl * layout.luma_rows as usize;
        match layout.format {
            RawFormat::Yu12 => {
                let cbpl = bpl / 2;
                let v_start = chroma + cbpl * (layout.luma_rows as usize / 2);
                for row in [0usize, 60, 119] {
                    assert_eq!(
                        &buf[chroma + row * cbpl..chroma + row * cbpl + 160],
                        &u[row * 160..row * 160 + 160]
                    );
                    assert_eq!(
                        &buf[v_start + row * cbpl..v_start + row * cbpl + 160],
                        &v[row * 160..row * 160 + 160]
                    );
                }
            }
            RawFormat::Nv12 => {
                for row in [0usize, 119] {
                    for x in [0usize, 1, 159] {
                        assert_eq!(buf[chroma + row * bpl + 2 * x], u[row * 160 + x]);
                        assert_eq!(buf[chroma + row * bpl + 2 * x + 1], v[row * 160 + x]);
                    }
                }
            }
        }
    }
}

#[test]
fn bad_devices_and_frames_are_refused() {
    let mut fake = Fake::new(Mode::Whole);
    fake.output_formats = vec![FourCC::new(b"YUYV")];
    let err = V4l2M2mEncoder::with_device(fake, settings()).unwrap_err();
    assert!(err.to_string().contains("neither YU12 nor NV12"), "{err}");

    let mut enc = V4l2M2mEncoder::with_device(Fake::new(Mode::Whole), settings()).unwrap();
    assert!(matches!(
        enc.encode(&moving_frame(160, 120, 0, 30)),
        Err(CodecError::FrameSize { .. })
    ));

    // A format the driver shrank cannot be filled.
    let got = Format {
        fourcc: FourCC::new(&YU12),
        width: 320,
        height: 240,
        bytesperline: 100,
        sizeimage: 100,
        planes: 1,
    };
    assert_eq!(
        RawLayout::from_format(RawFormat::Yu12, 320, 240, &got),
        None
    );
    let two_planes = Format {
        bytesperline: 320,
        sizeimage: 320 * 240 * 3 / 2,
        planes: 2,
        ..got
    };
    assert_eq!(
        RawLayout::from_format(RawFormat::Yu12, 320, 240, &two_planes),
        None
    );
}

#[test]
fn aligned_rows_are_taken_only_when_sizeimage_says_so() {
    let reported = |sizeimage| Format {
        fourcc: FourCC::new(&YU12),
        width: 1920,
        height: 1080,
        bytesperline: 1920,
        sizeimage,
        planes: 1,
    };
    // bcm2835-codec style: rows aligned to 16 inside the buffer.
    let aligned =
        RawLayout::from_format(RawFormat::Yu12, 1920, 1080, &reported(1920 * 1088 * 3 / 2));
    assert_eq!(aligned.map(|l| l.luma_rows), Some(1088));
    // Exact size, or extra padding at the end: the reported height.
    let exact = RawLayout::from_format(RawFormat::Yu12, 1920, 1080, &reported(1920 * 1080 * 3 / 2));
    assert_eq!(exact.map(|l| l.luma_rows), Some(1080));
    let padded = RawLayout::from_format(RawFormat::Yu12, 1920, 1080, &reported(4_000_000));
    assert_eq!(padded.map(|l| l.luma_rows), Some(1080));
}
