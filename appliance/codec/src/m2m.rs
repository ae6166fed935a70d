//! The board's hardware H.264 encoder through the V4L2 stateful
//! memory-to-memory interface (Raspberry Pi's bcm2835-codec at
//! `/dev/video11`, Rockchip/i.MX hantro, i.MX8 amphion): raw pictures are
//! queued on the OUTPUT queue, H.264 comes back on the CAPTURE queue.
//!
//! These drivers expose the multi-planar API, which the `v4l` crate's safe
//! layer does not cover, so this module speaks the ioctls through `v4l`'s raw
//! layer (`v4l::v4l2` and its `v4l_sys` bindings). Discovery and format
//! selection are plain functions tested without a device; the streaming
//! path needs a board (see docs/interop.md for where it was run).

use crate::{CodecError, EncoderSettings, VideoEncoder, h264};
use std::collections::VecDeque;
use std::os::raw::{c_int, c_void};
use std::path::{Path, PathBuf};
use telecart_core::config::H264Profile;
use telecart_core::{CaptureTime, EncodedVideo, VideoFrame};
use v4l::v4l_sys::*;
use v4l::v4l2;
use v4l::v4l2::vidioc;

const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | ((code[1] as u32) << 8) | ((code[2] as u32) << 16) | ((code[3] as u32) << 24)
}

const FOURCC_H264: u32 = fourcc(b"H264");
const FOURCC_YU12: u32 = fourcc(b"YU12");
const FOURCC_NV12: u32 = fourcc(b"NV12");
const OUTPUT_MPLANE: u32 = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE;
const CAPTURE_MPLANE: u32 = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
const MEMORY_MMAP: u32 = v4l2_memory_V4L2_MEMORY_MMAP;
const BUFFERS: u32 = 4;
/// How long a picture may take in the encoder before we call it stuck.
const ENCODE_TIMEOUT_MS: c_int = 1000;

/// A hardware encoder found on this board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct M2mDevice {
    /// Device node.
    pub path: PathBuf,
    /// Driver name (`bcm2835-codec`, `hantro-vpu`, …).
    pub driver: String,
    /// Raw formats its OUTPUT queue takes, in the driver's order.
    pub raw_formats: Vec<u32>,
}

/// Which raw layout to feed: I420 as is when the encoder takes it, else NV12.
pub fn choose_raw_format(offered: &[u32]) -> Option<u32> {
    [FOURCC_YU12, FOURCC_NV12]
        .into_iter()
        .find(|f| offered.contains(f))
}

/// V4L2's `V4L2_MPEG_VIDEO_H264_PROFILE_*` menu value for a profile.
pub fn profile_menu_value(profile: H264Profile) -> i32 {
    match profile {
        // V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE
        H264Profile::ConstrainedBaseline => 1,
        // V4L2_MPEG_VIDEO_H264_PROFILE_HIGH
        H264Profile::High => 4,
    }
}

/// The lowest H.264 level (as V4L2's `V4L2_MPEG_VIDEO_H264_LEVEL_*` menu
/// value) whose macroblock rate covers the size and rate (Table A-1).
pub fn level_menu_value(width: u32, height: u32, fps: u32) -> i32 {
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let mbps = mbs * u64::from(fps);
    // (max frame size in MBs, max MB/s, V4L2 menu index)
    const LEVELS: [(u64, u64, i32); 11] = [
        (396, 11_880, 4),      // 2.0
        (792, 19_800, 5),      // 2.1
        (1_620, 20_250, 6),    // 2.2
        (1_620, 40_500, 7),    // 3.0
        (3_600, 108_000, 8),   // 3.1
        (5_120, 216_000, 9),   // 3.2
        (8_192, 245_760, 10),  // 4.0
        (8_192, 245_760, 11),  // 4.1
        (8_704, 522_240, 12),  // 4.2
        (22_080, 589_824, 13), // 5.0
        (36_864, 983_040, 14), // 5.1
    ];
    LEVELS
        .iter()
        .find(|(frame, rate, _)| mbs <= *frame && mbps <= *rate)
        .map_or(15, |(_, _, v)| *v)
}

fn hw(device: &Path, message: impl Into<String>) -> CodecError {
    CodecError::Hardware {
        device: device.display().to_string(),
        message: message.into(),
    }
}

/// An open file descriptor, closed on drop.
#[derive(Debug)]
struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = v4l2::close(self.0);
    }
}

/// # Safety
/// `arg` must be the structure `request` expects, valid for the call.
unsafe fn ioctl<T>(fd: c_int, request: vidioc::_IOC_TYPE, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: forwarded to the caller's contract.
    unsafe { v4l2::ioctl(fd, request, (arg as *mut T).cast::<c_void>()) }
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the kernel's plain-old-data structures, for which
    // all-zero is the documented initial state.
    unsafe { std::mem::zeroed() }
}

fn enum_formats(fd: c_int, buf_type: u32) -> Vec<u32> {
    let mut formats = Vec::new();
    for index in 0..64 {
        let mut desc: v4l2_fmtdesc = zeroed();
        desc.index = index;
        desc.type_ = buf_type;
        // SAFETY: VIDIOC_ENUM_FMT takes a v4l2_fmtdesc.
        if unsafe { ioctl(fd, vidioc::VIDIOC_ENUM_FMT, &mut desc) }.is_err() {
            break;
        }
        formats.push(desc.pixelformat);
    }
    formats
}

fn probe(path: &Path) -> Result<M2mDevice, String> {
    let fd = Fd(v4l2::open(path, libc::O_RDWR | libc::O_NONBLOCK).map_err(|e| e.to_string())?);
    let mut caps: v4l2_capability = zeroed();
    // SAFETY: VIDIOC_QUERYCAP takes a v4l2_capability.
    unsafe { ioctl(fd.0, vidioc::VIDIOC_QUERYCAP, &mut caps) }.map_err(|e| e.to_string())?;
    let device_caps = if caps.capabilities & V4L2_CAP_DEVICE_CAPS != 0 {
        caps.device_caps
    } else {
        caps.capabilities
    };
    if device_caps & V4L2_CAP_VIDEO_M2M_MPLANE == 0 {
        return Err("not a multi-planar memory-to-memory device".into());
    }
    if !enum_formats(fd.0, CAPTURE_MPLANE).contains(&FOURCC_H264) {
        return Err("does not produce H.264".into());
    }
    let raw_formats = enum_formats(fd.0, OUTPUT_MPLANE);
    if choose_raw_format(&raw_formats).is_none() {
        return Err("takes neither I420 nor NV12".into());
    }
    let driver_len = caps
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(caps.driver.len());
    Ok(M2mDevice {
        path: path.to_owned(),
        driver: String::from_utf8_lossy(&caps.driver[..driver_len]).into_owned(),
        raw_formats,
    })
}

/// Every hardware H.264 encoder on this board, and what was wrong with each
/// other video device (for the log when none is found).
pub fn find_encoders() -> (Vec<M2mDevice>, Vec<(PathBuf, String)>) {
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("video") && n[5..].parse::<u32>().is_ok())
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n[5..].parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        match probe(&path) {
            Ok(d) => found.push(d),
            Err(why) => skipped.push((path, why)),
        }
    }
    (found, skipped)
}

/// One mmap'd plane.
#[derive(Debug)]
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and are unmapped once.
        unsafe {
            let _ = v4l2::munmap(self.ptr.cast::<c_void>(), self.len);
        }
    }
}

/// The V4L2 M2M encoder.
#[derive(Debug)]
pub struct M2mEncoder {
    device: M2mDevice,
    settings: EncoderSettings,
    raw_format: u32,
    bytesperline: usize,
    output_plane_size: usize,
    output: Vec<Mapping>,
    output_free: VecDeque<u32>,
    capture: Vec<Mapping>,
    /// Frames queued and not yet returned: (sequence, capture time).
    in_flight: VecDeque<(u64, CaptureTime)>,
    keyframe_requested: bool,
    // Last: the fd closes after the mappings are gone.
    fd: Fd,
}

// SAFETY: the raw pointers are private mmap'd regions owned by this value and
// only touched through `&mut self`.
unsafe impl Send for M2mEncoder {}

impl M2mEncoder {
    /// Opens the first hardware encoder found.
    pub fn open_first(settings: EncoderSettings) -> Result<Self, CodecError> {
        let (found, skipped) = find_encoders();
        let Some(device) = found.into_iter().next() else {
            return Err(CodecError::NoHardware(format!(
                "scanned {} video device(s){}",
                skipped.len(),
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        skipped
                            .iter()
                            .map(|(p, why)| format!("{} {why}", p.display()))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                }
            )));
        };
        Self::open(device, settings)
    }

    /// Opens and starts one encoder.
    pub fn open(device: M2mDevice, settings: EncoderSettings) -> Result<Self, CodecError> {
        settings.check()?;
        let path = device.path.clone();
        let fd = Fd(v4l2::open(&path, libc::O_RDWR | libc::O_NONBLOCK)
            .map_err(|e| hw(&path, e.to_string()))?);
        let raw_format = choose_raw_format(&device.raw_formats)
            .ok_or_else(|| hw(&path, "no usable raw format"))?;

        // CAPTURE first: stateful encoders size their OUTPUT queue from it.
        let mut cap: v4l2_format = zeroed();
        cap.type_ = CAPTURE_MPLANE;
        // SAFETY: writing the pix_mp member of the format union for an MPLANE type.
        unsafe {
            cap.fmt.pix_mp.width = settings.width;
            cap.fmt.pix_mp.height = settings.height;
            cap.fmt.pix_mp.pixelformat = FOURCC_H264;
            cap.fmt.pix_mp.num_planes = 1;
            cap.fmt.pix_mp.plane_fmt[0].sizeimage =
                (settings.width * settings.height).max(512 * 1024);
            ioctl(fd.0, vidioc::VIDIOC_S_FMT, &mut cap)
        }
        .map_err(|e| hw(&path, format!("set H.264 capture format: {e}")))?;

        let mut out: v4l2_format = zeroed();
        out.type_ = OUTPUT_MPLANE;
        // SAFETY: as above.
        let (bytesperline, sizeimage, width, height, pixelformat) = unsafe {
            out.fmt.pix_mp.width = settings.width;
            out.fmt.pix_mp.height = settings.height;
            out.fmt.pix_mp.pixelformat = raw_format;
            out.fmt.pix_mp.num_planes = 1;
            ioctl(fd.0, vidioc::VIDIOC_S_FMT, &mut out)
                .map_err(|e| hw(&path, format!("set raw output format: {e}")))?;
            let p = out.fmt.pix_mp;
            (
                p.plane_fmt[0].bytesperline as usize,
                p.plane_fmt[0].sizeimage as usize,
                p.width,
                p.height,
                p.pixelformat,
            )
        };
        if width != settings.width || height != settings.height || pixelformat != raw_format {
            return Err(hw(
                &path,
                format!(
                    "asked for {}x{}, the driver set {width}x{height} (format {pixelformat:#x})",
                    settings.width, settings.height
                ),
            ));
        }
        let w = settings.width as usize;
        let h = settings.height as usize;
        let stride = bytesperline.max(w);
        // Chroma planes follow the luma with the driver's stride (aligned height).
        let needed = stride * h + stride * h / 2;
        if sizeimage < needed {
            return Err(hw(
                &path,
                format!(
                    "driver's raw buffer of {sizeimage} bytes is smaller than a picture ({needed})"
                ),
            ));
        }

        let mut parm: v4l2_streamparm = zeroed();
        parm.type_ = OUTPUT_MPLANE;
        // SAFETY: the output member of the parm union for an OUTPUT type.
        unsafe {
            parm.parm.output.timeperframe.numerator = 1;
            parm.parm.output.timeperframe.denominator = settings.fps;
            // Not every driver takes a frame rate; rate control then assumes its default.
            let _ = ioctl(fd.0, vidioc::VIDIOC_S_PARM, &mut parm);
        }

        let mut encoder = Self {
            device,
            raw_format,
            bytesperline: stride,
            output_plane_size: sizeimage,
            output: Vec::new(),
            output_free: VecDeque::new(),
            capture: Vec::new(),
            in_flight: VecDeque::new(),
            keyframe_requested: true,
            settings,
            fd,
        };
        encoder.set_controls()?;
        encoder.output = encoder.map_buffers(OUTPUT_MPLANE)?;
        encoder.output_free = (0..encoder.output.len() as u32).collect();
        encoder.capture = encoder.map_buffers(CAPTURE_MPLANE)?;
        for index in 0..encoder.capture.len() as u32 {
            encoder.queue_capture(index)?;
        }
        for buf_type in [OUTPUT_MPLANE, CAPTURE_MPLANE] {
            let mut t = buf_type as c_int;
            // SAFETY: VIDIOC_STREAMON takes an int buffer type.
            unsafe { ioctl(encoder.fd.0, vidioc::VIDIOC_STREAMON, &mut t) }
                .map_err(|e| hw(&path, format!("stream on: {e}")))?;
        }
        Ok(encoder)
    }

    fn set_control(&self, id: u32, value: i32) -> std::io::Result<()> {
        let mut ctrl = v4l2_control { id, value };
        // SAFETY: VIDIOC_S_CTRL takes a v4l2_control.
        unsafe { ioctl(self.fd.0, vidioc::VIDIOC_S_CTRL, &mut ctrl) }
    }

    fn set_controls(&self) -> Result<(), CodecError> {
        let s = &self.settings;
        let path = &self.device.path;
        self.set_control(
            V4L2_CID_MPEG_VIDEO_BITRATE,
            i32::try_from(s.bitrate_bps).unwrap_or(i32::MAX),
        )
        .map_err(|e| hw(path, format!("set bitrate: {e}")))?;
        // Optional controls: drivers differ; the stream still works without them.
        let _ = self.set_control(
            V4L2_CID_MPEG_VIDEO_H264_PROFILE,
            profile_menu_value(s.profile),
        );
        let _ = self.set_control(
            V4L2_CID_MPEG_VIDEO_H264_LEVEL,
            level_menu_value(s.width, s.height, s.fps),
        );
        let _ = self.set_control(
            V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            i32::try_from(s.keyframe_interval_frames).unwrap_or(i32::MAX),
        );
        // SPS/PPS before every IDR, so a late joiner can start at any key frame.
        let _ = self.set_control(V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1);
        Ok(())
    }

    fn map_buffers(&self, buf_type: u32) -> Result<Vec<Mapping>, CodecError> {
        let path = &self.device.path;
        let mut req: v4l2_requestbuffers = zeroed();
        req.count = BUFFERS;
        req.type_ = buf_type;
        req.memory = MEMORY_MMAP;
        // SAFETY: VIDIOC_REQBUFS takes a v4l2_requestbuffers.
        unsafe { ioctl(self.fd.0, vidioc::VIDIOC_REQBUFS, &mut req) }
            .map_err(|e| hw(path, format!("request buffers: {e}")))?;
        let mut maps = Vec::new();
        for index in 0..req.count {
            let mut plane: v4l2_plane = zeroed();
            let mut buf: v4l2_buffer = zeroed();
            buf.index = index;
            buf.type_ = buf_type;
            buf.memory = MEMORY_MMAP;
            buf.length = 1;
            buf.m.planes = &raw mut plane;
            // SAFETY: VIDIOC_QUERYBUF with one plane array entry that outlives the call.
            unsafe { ioctl(self.fd.0, vidioc::VIDIOC_QUERYBUF, &mut buf) }
                .map_err(|e| hw(path, format!("query buffer {index}: {e}")))?;
            let len = plane.length as usize;
            // SAFETY: reading the mem_offset member the driver filled for an MMAP buffer.
            let offset = unsafe { plane.m.mem_offset };
            // SAFETY: mapping the region the driver just described; checked before use.
            let ptr = unsafe {
                v4l2::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.fd.0,
                    libc::off_t::from(offset),
                )
            }
            .map_err(|e| hw(path, format!("map buffer {index} (offset {offset}): {e}")))?;
            maps.push(Mapping {
                ptr: ptr.cast::<u8>(),
                len,
            });
        }
        Ok(maps)
    }

    fn queue(
        &self,
        buf_type: u32,
        index: u32,
        bytesused: u32,
        timestamp_us: u64,
    ) -> std::io::Result<()> {
        let mut plane: v4l2_plane = zeroed();
        plane.bytesused = bytesused;
        plane.length = match buf_type {
            OUTPUT_MPLANE => self.output[index as usize].len as u32,
            _ => self.capture[index as usize].len as u32,
        };
        let mut buf: v4l2_buffer = zeroed();
        buf.index = index;
        buf.type_ = buf_type;
        buf.memory = MEMORY_MMAP;
        buf.length = 1;
        buf.m.planes = &raw mut plane;
        // The timestamp is copied from OUTPUT to the matching CAPTURE buffer:
        // it is how encoded pictures are matched to their frames.
        buf.timestamp.tv_sec = (timestamp_us / 1_000_000) as libc::time_t;
        buf.timestamp.tv_usec = (timestamp_us % 1_000_000) as libc::suseconds_t;
        // SAFETY: VIDIOC_QBUF with one plane entry that outlives the call.
        unsafe { ioctl(self.fd.0, vidioc::VIDIOC_QBUF, &mut buf) }
    }

    fn queue_capture(&self, index: u32) -> Result<(), CodecError> {
        self.queue(CAPTURE_MPLANE, index, 0, 0)
            .map_err(|e| hw(&self.device.path, format!("queue capture buffer: {e}")))
    }

    /// Dequeues one buffer of `buf_type`: (index, bytes used, flags, timestamp µs).
    fn dequeue(&self, buf_type: u32) -> std::io::Result<(u32, u32, u32, u64)> {
        let mut plane: v4l2_plane = zeroed();
        let mut buf: v4l2_buffer = zeroed();
        buf.type_ = buf_type;
        buf.memory = MEMORY_MMAP;
        buf.length = 1;
        buf.m.planes = &raw mut plane;
        // SAFETY: VIDIOC_DQBUF with one plane entry that outlives the call.
        unsafe { ioctl(self.fd.0, vidioc::VIDIOC_DQBUF, &mut buf) }?;
        let ts = buf.timestamp.tv_sec as u64 * 1_000_000 + buf.timestamp.tv_usec as u64;
        Ok((buf.index, plane.bytesused, buf.flags, ts))
    }

    fn wait(&self, events: i16) -> Result<bool, CodecError> {
        let mut pfd = libc::pollfd {
            fd: self.fd.0,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ENCODE_TIMEOUT_MS) };
        if n < 0 {
            return Err(hw(
                &self.device.path,
                format!("poll: {}", std::io::Error::last_os_error()),
            ));
        }
        if pfd.revents & libc::POLLERR != 0 {
            return Err(hw(&self.device.path, "device reported an error"));
        }
        Ok(n > 0)
    }

    /// Reclaims OUTPUT buffers the encoder has consumed.
    fn reclaim_output(&mut self) {
        while let Ok((index, ..)) = self.dequeue(OUTPUT_MPLANE) {
            self.output_free.push_back(index);
        }
    }

    fn fill(&mut self, index: u32, frame: &VideoFrame) -> usize {
        let w = frame.width as usize;
        let h = frame.height as usize;
        let stride = self.bytesperline;
        let map = &self.output[index as usize];
        // SAFETY: the mapping is `len` bytes, writable, and owned by us while dequeued.
        let dst = unsafe { std::slice::from_raw_parts_mut(map.ptr, map.len) };
        let (y, u, v) = frame.planes();
        for row in 0..h {
            dst[row * stride..row * stride + w].copy_from_slice(&y[row * w..(row + 1) * w]);
        }
        let chroma_base = stride * h;
        if self.raw_format == FOURCC_NV12 {
            for row in 0..h / 2 {
                let line = &mut dst[chroma_base + row * stride..chroma_base + row * stride + w];
                for col in 0..w / 2 {
                    line[2 * col] = u[row * (w / 2) + col];
                    line[2 * col + 1] = v[row * (w / 2) + col];
                }
            }
        } else {
            let cstride = stride / 2;
            let v_base = chroma_base + cstride * (h / 2);
            for row in 0..h / 2 {
                dst[chroma_base + row * cstride..chroma_base + row * cstride + w / 2]
                    .copy_from_slice(&u[row * (w / 2)..(row + 1) * (w / 2)]);
                dst[v_base + row * cstride..v_base + row * cstride + w / 2]
                    .copy_from_slice(&v[row * (w / 2)..(row + 1) * (w / 2)]);
            }
        }
        (stride * h + stride * h / 2).min(self.output_plane_size)
    }
}

impl VideoEncoder for M2mEncoder {
    fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, CodecError> {
        if frame.width != self.settings.width || frame.height != self.settings.height {
            return Err(CodecError::Input(format!(
                "frame is {}x{}, the encoder was set up for {}x{}",
                frame.width, frame.height, self.settings.width, self.settings.height
            )));
        }
        self.reclaim_output();
        if self.output_free.is_empty() {
            self.wait(libc::POLLOUT)?;
            self.reclaim_output();
        }
        let Some(index) = self.output_free.pop_front() else {
            return Err(hw(
                &self.device.path,
                "encoder holds every input buffer (stalled)",
            ));
        };
        if std::mem::take(&mut self.keyframe_requested) {
            // A button control: any write asks for an IDR on the next picture.
            let _ = self.set_control(V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1);
        }
        let used = self.fill(index, frame);
        self.queue(OUTPUT_MPLANE, index, used as u32, frame.sequence)
            .map_err(|e| hw(&self.device.path, format!("queue picture: {e}")))?;
        self.in_flight
            .push_back((frame.sequence, frame.capture_time));

        // Low latency: wait for this picture's bitstream before taking the next.
        if !self.wait(libc::POLLIN)? {
            return Err(hw(
                &self.device.path,
                format!("no bitstream within {ENCODE_TIMEOUT_MS} ms"),
            ));
        }
        let (cap_index, bytes, _flags, sequence) = self
            .dequeue(CAPTURE_MPLANE)
            .map_err(|e| hw(&self.device.path, format!("dequeue bitstream: {e}")))?;
        let map = &self.capture[cap_index as usize];
        let len = (bytes as usize).min(map.len);
        // SAFETY: the driver filled `bytes` of this mapping and returned it to us.
        let data = unsafe { std::slice::from_raw_parts(map.ptr, len) }.to_vec();
        self.queue_capture(cap_index)?;
        let capture_time = loop {
            match self.in_flight.pop_front() {
                Some((seq, time)) if seq == sequence => break time,
                Some(_) => continue, // a picture the encoder dropped
                None => break frame.capture_time,
            }
        };
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedVideo {
            keyframe: h264::is_keyframe(&data),
            data,
            sequence,
            capture_time,
        }))
    }

    fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), CodecError> {
        self.set_control(
            V4L2_CID_MPEG_VIDEO_BITRATE,
            i32::try_from(bitrate_bps).unwrap_or(i32::MAX),
        )
        .map_err(|e| hw(&self.device.path, format!("set bitrate: {e}")))?;
        self.settings.bitrate_bps = bitrate_bps;
        Ok(())
    }

    fn name(&self) -> String {
        format!(
            "v4l2-m2m {} ({})",
            self.device.path.display(),
            self.device.driver
        )
    }

    fn settings(&self) -> &EncoderSettings {
        &self.settings
    }
}

impl Drop for M2mEncoder {
    fn drop(&mut self) {
        for buf_type in [OUTPUT_MPLANE, CAPTURE_MPLANE] {
            let mut t = buf_type as c_int;
            // SAFETY: VIDIOC_STREAMOFF takes an int buffer type.
            let _ = unsafe { ioctl(self.fd.0, vidioc::VIDIOC_STREAMOFF, &mut t) };
        }
        // Mappings unmap as the vectors drop, before `fd` (declared last) closes.
        self.output.clear();
        self.capture.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_format_prefers_i420_then_nv12() {
        assert_eq!(
            choose_raw_format(&[FOURCC_NV12, FOURCC_YU12]),
            Some(FOURCC_YU12)
        );
        assert_eq!(
            choose_raw_format(&[fourcc(b"RGB3"), FOURCC_NV12]),
            Some(FOURCC_NV12)
        );
        assert_eq!(choose_raw_format(&[fourcc(b"RGB3")]), None);
    }

    #[test]
    fn levels_follow_table_a1() {
        assert_eq!(level_menu_value(640, 480, 30), 7); // 3.0
        assert_eq!(level_menu_value(1280, 720, 30), 8); // 3.1
        assert_eq!(level_menu_value(1920, 1080, 30), 10); // 4.0
        assert_eq!(level_menu_value(1920, 1080, 60), 12); // 4.2
        assert_eq!(level_menu_value(3840, 2160, 30), 14); // 5.1
    }

    #[test]
    fn profiles_map_to_v4l2_menu_values() {
        assert_eq!(profile_menu_value(H264Profile::ConstrainedBaseline), 1);
        assert_eq!(profile_menu_value(H264Profile::High), 4);
    }

    #[test]
    fn without_hardware_the_error_says_what_was_scanned() {
        let settings = EncoderSettings {
            width: 640,
            height: 480,
            fps: 30,
            bitrate_bps: 1_000_000,
            keyframe_interval_frames: 60,
            profile: H264Profile::ConstrainedBaseline,
        };
        match M2mEncoder::open_first(settings) {
            // On a board with an encoder this test has nothing to check.
            Ok(_) => {}
            Err(CodecError::NoHardware(msg)) => assert!(msg.starts_with("scanned "), "{msg}"),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}
