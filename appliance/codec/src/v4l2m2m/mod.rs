//! The board's hardware H.264 encoder through the V4L2 stateful memory-to-memory interface
//! (Raspberry Pi's `bcm2835-codec` on `/dev/video11`, Rockchip/i.MX Hantro, …).
//!
//! Raw frames go into the device's OUTPUT queue, H.264 comes out of its CAPTURE queue. The
//! ioctl sequence follows the kernel's stateful encoder interface (`dev-encoder.rst`): coded
//! format on CAPTURE first, raw format on OUTPUT, frame interval, controls, buffers on both
//! queues, all CAPTURE buffers queued, stream on.
//!
//! The sequencing lives in [`V4l2M2mEncoder`], generic over [`M2mDevice`], the handful of
//! ioctls it needs; [`LinuxM2m`] does them on a device node (the `v4l` crate for opening,
//! polling and controls, its raw `v4l2` ioctl layer for the multi-planar calls it lacks). The
//! unit tests drive the sequencing against a fake device that "encodes" real x264 pictures.

mod linux;

use std::collections::VecDeque;

use telecart_core::config::H264Profile;
use telecart_core::media::{CaptureTime, EncodedVideo, VideoFrame};
pub use v4l::FourCC;
use v4l::v4l_sys;

use crate::h264::AccessUnitAssembler;
use crate::{CodecError, EncoderSettings, VideoEncoder, check_bitrate};
pub use linux::{LinuxM2m, find_encoder_device};

/// The two queues of a memory-to-memory device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Raw pictures into the encoder (V4L2 "OUTPUT").
    Output,
    /// H.264 out of the encoder (V4L2 "CAPTURE").
    Capture,
}

/// FourCC of H.264 with start codes.
pub const H264: [u8; 4] = *b"H264";
/// FourCC of planar I420 (`V4L2_PIX_FMT_YUV420`).
pub const YU12: [u8; 4] = *b"YU12";
/// FourCC of semi-planar NV12.
pub const NV12: [u8; 4] = *b"NV12";

/// Raw layouts we can feed the encoder from I420.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// I420 as is (only the strides may differ).
    Yu12,
    /// NV12: chroma interleaved.
    Nv12,
}

impl RawFormat {
    /// The FourCC of the layout.
    pub fn fourcc(self) -> FourCC {
        FourCC::new(match self {
            Self::Yu12 => &YU12,
            Self::Nv12 => &NV12,
        })
    }
}

/// Picks the raw format among those the OUTPUT queue offers: I420 if offered (a plain
/// copy), else NV12 (chroma interleaved on the way).
pub fn choose_raw_format(offered: &[FourCC]) -> Option<RawFormat> {
    if offered.iter().any(|f| f.repr == YU12) {
        Some(RawFormat::Yu12)
    } else if offered.iter().any(|f| f.repr == NV12) {
        Some(RawFormat::Nv12)
    } else {
        None
    }
}

/// What the driver made of a format request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Pixel format it accepted.
    pub fourcc: FourCC,
    /// Width it will use.
    pub width: u32,
    /// Height it will use (some drivers round it up to 16).
    pub height: u32,
    /// Bytes per luma row (first plane).
    pub bytesperline: u32,
    /// Bytes of one buffer.
    pub sizeimage: u32,
    /// Planes per buffer (1 for the contiguous layouts we use).
    pub planes: u32,
}

/// Where each plane of a raw picture goes in an OUTPUT buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLayout {
    /// Layout.
    pub format: RawFormat,
    /// Visible width.
    pub width: u32,
    /// Visible height.
    pub height: u32,
    /// Bytes per luma row.
    pub bytesperline: u32,
    /// Luma rows in the buffer (visible height, or more if the driver aligns it).
    pub luma_rows: u32,
    /// Bytes in a buffer.
    pub sizeimage: u32,
}

impl RawLayout {
    /// The layout for a negotiated OUTPUT format; `None` if the driver gave something we
    /// cannot fill (other pixel format, several planes, a smaller size, strides too small).
    pub fn from_format(format: RawFormat, width: u32, height: u32, got: &Format) -> Option<Self> {
        if got.fourcc != format.fourcc() || got.planes != 1 {
            return None;
        }
        if got.width < width || got.height < height || got.bytesperline < width {
            return None;
        }
        // Some drivers (bcm2835-codec) align the rows of the buffer to 16 or 32 and say so
        // only through sizeimage: take an aligned height when it accounts for sizeimage
        // exactly, else the height the driver reported.
        let bpl = u64::from(got.bytesperline);
        let luma_rows = [
            got.height,
            height.next_multiple_of(16),
            height.next_multiple_of(32),
        ]
        .into_iter()
        .find(|&rows| bpl * u64::from(rows) * 3 / 2 == u64::from(got.sizeimage))
        .unwrap_or(got.height);
        let layout = Self {
            format,
            width,
            height,
            bytesperline: got.bytesperline,
            luma_rows,
            sizeimage: got.sizeimage,
        };
        (layout.needed() <= got.sizeimage as usize).then_some(layout)
    }

    /// Bytes the layout really uses.
    pub fn needed(&self) -> usize {
        let bpl = self.bytesperline as usize;
        let rows = self.luma_rows as usize;
        bpl * rows + bpl * (rows / 2)
    }

    /// Copies an I420 frame into `dst` in this layout, repeating the last row into any
    /// alignment rows below the picture.
    pub fn fill(&self, frame: &VideoFrame, dst: &mut [u8]) -> Result<(), CodecError> {
        let (w, h) = (self.width as usize, self.height as usize);
        if frame.width as usize != w
            || frame.height as usize != h
            || frame.data.len() != VideoFrame::i420_len(self.width, self.height)
        {
            return Err(CodecError::FrameSize {
                width: self.width,
                height: self.height,
                got_width: frame.width,
                got_height: frame.height,
            });
        }
        if dst.len() < self.needed() {
            return Err(CodecError::InvalidSettings(format!(
                "OUTPUT buffer holds {} bytes, the layout needs {}",
                dst.len(),
                self.needed()
            )));
        }
        let bpl = self.bytesperline as usize;
        let rows = self.luma_rows as usize;
        let (y, u, v) = frame.planes();
        let (luma, chroma) = dst.split_at_mut(bpl * rows);
        for (r, row) in luma.chunks_exact_mut(bpl).enumerate().take(rows) {
            let src = r.min(h - 1) * w;
            row[..w].copy_from_slice(&y[src..src + w]);
        }
        let (cw, ch, crows) = (w / 2, h / 2, rows / 2);
        match self.format {
            RawFormat::Yu12 => {
                let cbpl = bpl / 2;
                let (dst_u, dst_v) = chroma.split_at_mut(cbpl * crows);
                for (plane, dst_plane) in [(u, dst_u), (v, dst_v)] {
                    for (r, row) in dst_plane.chunks_exact_mut(cbpl).enumerate().take(crows) {
                        let src = r.min(ch - 1) * cw;
                        row[..cw].copy_from_slice(&plane[src..src + cw]);
                    }
                }
            }
            RawFormat::Nv12 => {
                for (r, row) in chroma.chunks_exact_mut(bpl).enumerate().take(crows) {
                    let src = r.min(ch - 1) * cw;
                    for (x, pair) in row[..w].chunks_exact_mut(2).enumerate() {
                        pair[0] = u[src + x];
                        pair[1] = v[src + x];
                    }
                }
            }
        }
        Ok(())
    }
}

/// One control to set, and whether encoding can go on without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlSetting {
    /// `V4L2_CID_*`.
    pub id: u32,
    /// Value.
    pub value: i64,
    /// Name for logs.
    pub name: &'static str,
    /// Fail the open if the driver refuses it.
    pub required: bool,
}

/// `V4L2_MPEG_VIDEO_H264_LEVEL_*` of the lowest level that carries the size, rate and bitrate
/// (H.264 Table A-1: max macroblocks per second, max frame size, max baseline bitrate).
pub fn h264_level(width: u32, height: u32, fps: u32, bitrate_bps: u32) -> (u32, &'static str) {
    const LEVELS: [(u32, &str, u64, u64, u64); 16] = [
        (0, "1.0", 1_485, 99, 64),
        (2, "1.1", 3_000, 396, 192),
        (3, "1.2", 6_000, 396, 384),
        (4, "1.3", 11_880, 396, 768),
        (5, "2.0", 11_880, 396, 2_000),
        (6, "2.1", 19_800, 792, 4_000),
        (7, "2.2", 20_250, 1_620, 4_000),
        (8, "3.0", 40_500, 1_620, 10_000),
        (9, "3.1", 108_000, 3_600, 14_000),
        (10, "3.2", 216_000, 5_120, 20_000),
        (11, "4.0", 245_760, 8_192, 20_000),
        (12, "4.1", 245_760, 8_192, 50_000),
        (13, "4.2", 522_240, 8_704, 50_000),
        (14, "5.0", 589_824, 22_080, 135_000),
        (15, "5.1", 983_040, 36_864, 240_000),
        (16, "5.2", 2_073_600, 36_864, 240_000),
    ];
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let mbps = mbs * u64::from(fps);
    let kbps = u64::from(bitrate_bps).div_ceil(1000);
    LEVELS
        .iter()
        .find(|(_, _, max_mbps, max_fs, max_kbps)| {
            mbps <= *max_mbps && mbs <= *max_fs && kbps <= *max_kbps
        })
        .map_or((16, "5.2"), |(v, name, ..)| (*v, *name))
}

/// The controls an encoder is opened with: bitrate (required), constant bitrate mode,
/// profile, level, IDR period, SPS/PPS before every IDR and joined with the first picture,
/// no B-frames.
pub fn encoder_controls(settings: &EncoderSettings) -> Vec<ControlSetting> {
    let profile = match settings.profile {
        H264Profile::ConstrainedBaseline => {
            v4l_sys::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE
        }
        H264Profile::High => {
            v4l_sys::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_HIGH
        }
    };
    let (level, _) = h264_level(
        settings.width,
        settings.height,
        settings.fps,
        settings.bitrate_bps,
    );
    let optional = |id, value: u32, name| ControlSetting {
        id,
        value: i64::from(value),
        name,
        required: false,
    };
    let mut controls =
        vec![
        optional(
            v4l_sys::V4L2_CID_MPEG_VIDEO_BITRATE_MODE,
            v4l_sys::v4l2_mpeg_video_bitrate_mode_V4L2_MPEG_VIDEO_BITRATE_MODE_CBR,
            "bitrate mode CBR",
        ),
        ControlSetting {
            id: v4l_sys::V4L2_CID_MPEG_VIDEO_BITRATE,
            value: i64::from(settings.bitrate_bps),
            name: "bitrate",
            required: true,
        },
        optional(v4l_sys::V4L2_CID_MPEG_VIDEO_H264_PROFILE, profile, "H.264 profile"),
        optional(v4l_sys::V4L2_CID_MPEG_VIDEO_H264_LEVEL, level, "H.264 level"),
        optional(v4l_sys::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1, "repeat SPS/PPS"),
        optional(
            v4l_sys::V4L2_CID_MPEG_VIDEO_HEADER_MODE,
            v4l_sys::v4l2_mpeg_video_header_mode_V4L2_MPEG_VIDEO_HEADER_MODE_JOINED_WITH_1ST_FRAME,
            "headers joined with the first frame",
        ),
        optional(v4l_sys::V4L2_CID_MPEG_VIDEO_B_FRAMES, 0, "no B-frames"),
    ];
    if settings.keyframe_interval_frames > 0 {
        controls.push(optional(
            v4l_sys::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            settings.keyframe_interval_frames,
            "H.264 IDR period",
        ));
        controls.push(optional(
            v4l_sys::V4L2_CID_MPEG_VIDEO_GOP_SIZE,
            settings.keyframe_interval_frames,
            "GOP size",
        ));
    }
    controls
}

/// A buffer taken back from a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dequeued {
    /// Buffer index.
    pub index: u32,
    /// Bytes of payload (from the start of the buffer, `data_offset` included).
    pub bytesused: u32,
    /// Where the payload starts.
    pub data_offset: u32,
    /// `V4L2_BUF_FLAG_*`.
    pub flags: u32,
    /// Timestamp in microseconds (copied from OUTPUT to CAPTURE by the driver).
    pub timestamp_us: u64,
}

/// The ioctls the encoder needs from a memory-to-memory device.
pub trait M2mDevice: Send {
    /// Device node path.
    fn path(&self) -> &str;
    /// Driver name (`bcm2835-codec`, `hantro-vpu`).
    fn driver(&self) -> &str;
    /// `VIDIOC_ENUM_FMT` on a queue.
    fn formats(&mut self, queue: Queue) -> Result<Vec<FourCC>, CodecError>;
    /// `VIDIOC_S_FMT` on a queue; `sizeimage` is a hint (the coded buffer size on CAPTURE).
    fn set_format(
        &mut self,
        queue: Queue,
        fourcc: FourCC,
        width: u32,
        height: u32,
        sizeimage: u32,
    ) -> Result<Format, CodecError>;
    /// `VIDIOC_S_PARM` on OUTPUT: the frame interval.
    fn set_frame_rate(&mut self, fps: u32) -> Result<(), CodecError>;
    /// `VIDIOC_S_EXT_CTRLS` with one control.
    fn set_control(&mut self, id: u32, value: i64) -> Result<(), CodecError>;
    /// `VIDIOC_REQBUFS` with MMAP memory, then `VIDIOC_QUERYBUF` and `mmap` of each buffer;
    /// returns how many buffers the driver gave.
    fn allocate(&mut self, queue: Queue, count: u32) -> Result<u32, CodecError>;
    /// The mapped memory of a buffer.
    fn buffer(&mut self, queue: Queue, index: u32) -> Result<&mut [u8], CodecError>;
    /// `VIDIOC_QBUF`.
    fn queue(
        &mut self,
        queue: Queue,
        index: u32,
        bytesused: u32,
        timestamp_us: u64,
    ) -> Result<(), CodecError>;
    /// `VIDIOC_DQBUF`, non-blocking: `None` if no buffer is done.
    fn dequeue(&mut self, queue: Queue) -> Result<Option<Dequeued>, CodecError>;
    /// `VIDIOC_STREAMON` / `VIDIOC_STREAMOFF`.
    fn stream(&mut self, queue: Queue, on: bool) -> Result<(), CodecError>;
    /// `poll`: waits until a buffer of `queue` can be dequeued; `false` on timeout.
    fn wait(&mut self, queue: Queue, timeout_ms: u32) -> Result<bool, CodecError>;
}

/// Buffers asked for on each queue.
const BUFFERS: u32 = 4;

/// The hardware encoder.
pub struct V4l2M2mEncoder<D: M2mDevice = LinuxM2m> {
    device: D,
    settings: EncoderSettings,
    layout: RawLayout,
    free_outputs: Vec<u32>,
    /// Frames queued and not yet out: (V4L2 timestamp, sequence, capture time).
    in_flight: VecDeque<(u64, u64, CaptureTime)>,
    last_timestamp_us: u64,
    ready: VecDeque<EncodedVideo>,
    assembler: AccessUnitAssembler,
    keyframe_requested: bool,
    frames_since_idr: u64,
    frame_timeout_ms: u32,
    streaming: bool,
}

impl<D: M2mDevice> std::fmt::Debug for V4l2M2mEncoder<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2M2mEncoder")
            .field("device", &self.device.path())
            .field("settings", &self.settings)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl V4l2M2mEncoder<LinuxM2m> {
    /// Finds the first memory-to-memory device that encodes H.264 and opens it.
    pub fn open_first(settings: EncoderSettings) -> Result<Self, CodecError> {
        let device = find_encoder_device()?;
        Self::with_device(device, settings)
    }
}

fn device_error(
    device: &impl M2mDevice,
    operation: &str,
    message: impl Into<String>,
) -> CodecError {
    CodecError::Device {
        device: device.path().to_owned(),
        operation: operation.to_owned(),
        message: message.into(),
    }
}

impl<D: M2mDevice> V4l2M2mEncoder<D> {
    /// Sets the device up for `settings` and starts streaming.
    pub fn with_device(mut device: D, settings: EncoderSettings) -> Result<Self, CodecError> {
        settings.validate()?;
        let (w, h) = (settings.width, settings.height);
        let h264 = FourCC::new(&H264);
        if !device.formats(Queue::Capture)?.contains(&h264) {
            return Err(device_error(&device, "VIDIOC_ENUM_FMT CAPTURE", "no H264"));
        }
        let coded_size = (w * h * 3 / 4).max(512 * 1024);
        let coded = device.set_format(Queue::Capture, h264, w, h, coded_size)?;
        if coded.fourcc != h264 {
            return Err(device_error(
                &device,
                "VIDIOC_S_FMT CAPTURE",
                format!("driver chose {} instead of H264", coded.fourcc),
            ));
        }
        let offered = device.formats(Queue::Output)?;
        let raw = choose_raw_format(&offered).ok_or_else(|| {
            let list: Vec<String> = offered.iter().map(ToString::to_string).collect();
            device_error(
                &device,
                "VIDIOC_ENUM_FMT OUTPUT",
                format!("neither YU12 nor NV12 offered (only {})", list.join(", ")),
            )
        })?;
        let got = device.set_format(Queue::Output, raw.fourcc(), w, h, 0)?;
        let layout = RawLayout::from_format(raw, w, h, &got).ok_or_else(|| {
            device_error(
                &device,
                "VIDIOC_S_FMT OUTPUT",
                format!("asked {} {w}x{h}, driver gave {got:?}", raw.fourcc()),
            )
        })?;
        if let Err(e) = device.set_frame_rate(settings.fps) {
            tracing::warn!(error = %e, "hardware encoder: frame interval not set");
        }
        for control in encoder_controls(&settings) {
            match device.set_control(control.id, control.value) {
                Ok(()) => {}
                Err(e) if control.required => return Err(e),
                Err(e) => {
                    tracing::warn!(control = control.name, error = %e, "hardware encoder: control not set")
                }
            }
        }
        let outputs = device.allocate(Queue::Output, BUFFERS)?;
        let captures = device.allocate(Queue::Capture, BUFFERS)?;
        if outputs == 0 || captures == 0 {
            return Err(device_error(
                &device,
                "VIDIOC_REQBUFS",
                format!("got {outputs} OUTPUT and {captures} CAPTURE buffers"),
            ));
        }
        for index in 0..captures {
            device.queue(Queue::Capture, index, 0, 0)?;
        }
        device.stream(Queue::Output, true)?;
        device.stream(Queue::Capture, true)?;
        tracing::info!(
            device = device.path(),
            driver = device.driver(),
            raw = %raw.fourcc(),
            bytesperline = layout.bytesperline,
            outputs,
            captures,
            "hardware H.264 encoder streaming"
        );
        let frame_timeout_ms = 500 + 2000 / settings.fps;
        Ok(Self {
            device,
            settings,
            layout,
            free_outputs: (0..outputs).rev().collect(),
            in_flight: VecDeque::new(),
            last_timestamp_us: 0,
            ready: VecDeque::new(),
            assembler: AccessUnitAssembler::new(),
            keyframe_requested: false,
            frames_since_idr: 0,
            frame_timeout_ms,
            streaming: true,
        })
    }

    /// The device underneath (for tests and diagnostics).
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Takes back every OUTPUT buffer the encoder has finished reading.
    fn reclaim_outputs(&mut self) -> Result<(), CodecError> {
        while let Some(done) = self.device.dequeue(Queue::Output)? {
            if !self.free_outputs.contains(&done.index) {
                self.free_outputs.push(done.index);
            }
        }
        Ok(())
    }

    /// Dequeues every finished CAPTURE buffer, turning it into access units.
    fn drain_captures(&mut self) -> Result<(), CodecError> {
        while let Some(done) = self.device.dequeue(Queue::Capture)? {
            let start = done.data_offset as usize;
            let end = done.bytesused as usize;
            let bytes = {
                let mem = self.device.buffer(Queue::Capture, done.index)?;
                mem.get(start..end.min(mem.len()))
                    .unwrap_or_default()
                    .to_vec()
            };
            self.device.queue(Queue::Capture, done.index, 0, 0)?;
            if done.flags & v4l_sys::V4L2_BUF_FLAG_ERROR != 0 {
                tracing::warn!(
                    device = self.device.path(),
                    "encoder flagged a corrupt picture; dropped"
                );
                self.assembler.clear();
                self.keyframe_requested = true;
                continue;
            }
            let mut units = self.assembler.push(&bytes);
            units.extend(self.assembler.end_of_picture());
            for unit in units {
                let (sequence, capture_time) = self.match_frame(done.timestamp_us);
                let keyframe = unit.keyframe;
                if keyframe {
                    // Count from the IDR the driver made: it and the frames queued after it.
                    self.frames_since_idr = self.in_flight.len() as u64 + 1;
                }
                self.ready.push_back(EncodedVideo {
                    data: unit.data,
                    keyframe,
                    sequence,
                    capture_time,
                });
            }
        }
        Ok(())
    }

    /// The frame a picture was made from: by the timestamp the driver copied, else the
    /// oldest in flight. Frames before it that never came out are dropped from the list.
    fn match_frame(&mut self, timestamp_us: u64) -> (u64, CaptureTime) {
        let position = self
            .in_flight
            .iter()
            .position(|(ts, ..)| *ts == timestamp_us)
            .unwrap_or(0);
        for _ in 0..position {
            if let Some((_, sequence, _)) = self.in_flight.pop_front() {
                tracing::debug!(sequence, "hardware encoder gave no picture for frame");
            }
        }
        self.in_flight
            .pop_front()
            .map_or((0, CaptureTime(timestamp_us)), |(_, s, c)| (s, c))
    }

    fn free_output(&mut self) -> Result<u32, CodecError> {
        self.reclaim_outputs()?;
        if let Some(index) = self.free_outputs.pop() {
            return Ok(index);
        }
        if self.device.wait(Queue::Output, self.frame_timeout_ms)? {
            self.reclaim_outputs()?;
        }
        self.free_outputs
            .pop()
            .ok_or_else(|| CodecError::DeviceTimeout {
                device: self.device.path().to_owned(),
                timeout_ms: self.frame_timeout_ms,
            })
    }
}

impl<D: M2mDevice> VideoEncoder for V4l2M2mEncoder<D> {
    fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, CodecError> {
        self.settings.check_frame(frame)?;
        let index = self.free_output()?;
        let layout = self.layout;
        let filled = self
            .device
            .buffer(Queue::Output, index)
            .and_then(|mem| layout.fill(frame, mem));
        if let Err(e) = filled {
            self.free_outputs.push(index);
            return Err(e);
        }
        let interval = u64::from(self.settings.keyframe_interval_frames);
        let due = interval > 0 && self.frames_since_idr >= interval;
        if self.keyframe_requested || due {
            self.device
                .set_control(v4l_sys::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1)?;
            self.keyframe_requested = false;
            self.frames_since_idr = 0;
        }
        self.frames_since_idr += 1;
        // Unique, increasing timestamps so that the copy on CAPTURE names its frame.
        let timestamp_us = frame
            .capture_time
            .as_micros()
            .max(self.last_timestamp_us + 1);
        self.last_timestamp_us = timestamp_us;
        self.device
            .queue(Queue::Output, index, self.layout.sizeimage, timestamp_us)?;
        self.in_flight
            .push_back((timestamp_us, frame.sequence, frame.capture_time));

        self.drain_captures()?;
        if self.ready.is_empty() {
            // Wait for this frame's picture; a pipelining encoder may hold it while it still
            // has OUTPUT buffers to take more frames, so only then is nothing an answer.
            let wait_ms = if self.free_outputs.is_empty() {
                self.frame_timeout_ms
            } else {
                (1500 / self.settings.fps).max(1)
            };
            if self.device.wait(Queue::Capture, wait_ms)? {
                self.drain_captures()?;
            }
            if self.ready.is_empty() && self.free_outputs.is_empty() {
                self.reclaim_outputs()?;
                if self.free_outputs.is_empty() {
                    return Err(CodecError::DeviceTimeout {
                        device: self.device.path().to_owned(),
                        timeout_ms: self.frame_timeout_ms,
                    });
                }
            }
        }
        self.reclaim_outputs()?;
        Ok(self.ready.pop_front())
    }

    fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        check_bitrate(bitrate_bps)?;
        self.device
            .set_control(v4l_sys::V4L2_CID_MPEG_VIDEO_BITRATE, i64::from(bitrate_bps))?;
        self.settings.bitrate_bps = bitrate_bps;
        Ok(())
    }

    fn name(&self) -> String {
        format!("v4l2-m2m {} ({})", self.device.path(), self.device.driver())
    }

    fn settings(&self) -> &EncoderSettings {
        &self.settings
    }
}

impl<D: M2mDevice> Drop for V4l2M2mEncoder<D> {
    fn drop(&mut self) {
        if self.streaming {
            for queue in [Queue::Output, Queue::Capture] {
                if let Err(e) = self.device.stream(queue, false) {
                    tracing::warn!(error = %e, "hardware encoder: STREAMOFF failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
