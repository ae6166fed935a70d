//! V4L2 cameras: enumeration, mode negotiation and mmap streaming.
//!
//! Built on the `v4l` crate (format, size and interval enumeration, the mmap
//! stream). A few ioctls are issued directly through `v4l::v4l2::ioctl`
//! because the crate's wrappers for them panic on unusual driver answers
//! (a card name cut in the middle of a UTF-8 character, an unknown colorspace):
//! `VIDIOC_QUERYCAP`, `VIDIOC_S_FMT`/`VIDIOC_TRY_FMT` and the controls.
//!
//! Only single-planar capture nodes (`V4L2_CAP_VIDEO_CAPTURE`) are used; this
//! covers UVC webcams, vivid and the Raspberry Pi's unicam/bcm2835 nodes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use telecart_core::{CaptureTime, VideoFrame};
use v4l::buffer::{Flags as BufferFlags, Type as BufferType};
use v4l::device::{Device, Handle};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::v4l_sys;
use v4l::video::Capture;
use v4l::video::capture::Parameters;

use crate::controls::{self, CameraControls, ControlInfo};
use crate::convert::{self, PixelFormat};
use crate::mode::{
    self, FpsDisplay, Fraction, FrameIntervals, FrameSizes, ModeChoice, ModeOffer, WantedMode,
};
use crate::pacing::wall_clock_now;
use crate::{CameraControl, DeviceError, VideoCapture};

/// Buffers in the mmap ring.
const BUFFERS: u32 = 4;
/// Bad frames (driver error flag, short buffer, undecodable JPEG) tolerated in
/// a row before `next_frame` gives up with the last error.
const MAX_BAD_FRAMES_IN_A_ROW: u32 = 30;

/// Drivers whose capture nodes are not cameras (memory-to-memory codecs,
/// image signal processors, test converters): `device = "auto"` passes them by.
pub const NOT_CAMERAS: &[&str] = &[
    "bcm2835-codec",
    "bcm2835-isp",
    "pispbe",
    "rpivid",
    "rpi-hevc-dec",
    "hantro-vpu",
    "vicodec",
    "vim2m",
];

/// A capture device found by [`list_cameras`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// Device node, such as `/dev/video0`.
    pub path: String,
    /// Kernel driver, such as `uvcvideo` or `vivid`.
    pub driver: String,
    /// Card name, such as `HD Pro Webcam C920`.
    pub card: String,
    /// Bus, such as `usb-0000:01:00.0-1.2`.
    pub bus: String,
    /// Every capture format the device lists, usable or not.
    pub formats: Vec<FormatInfo>,
}

impl CameraInfo {
    /// True when at least one format can be converted to I420.
    pub fn is_usable(&self) -> bool {
        self.formats.iter().any(|f| f.pixel_format.is_some())
    }
}

impl fmt::Display for CameraInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}, {}, {})",
            self.path, self.card, self.driver, self.bus
        )?;
        for format in &self.formats {
            let usable = if format.pixel_format.is_some() {
                ""
            } else {
                " (not used)"
            };
            writeln!(f, "  {} {}{usable}", format.fourcc, format.description)?;
            for size in &format.sizes {
                let rates: Vec<String> = size.intervals.iter().map(|i| i.to_string()).collect();
                writeln!(f, "    {}: {}", size.sizes, rates.join(", "))?;
            }
        }
        Ok(())
    }
}

/// One format of a [`CameraInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatInfo {
    /// Four-character code, such as `YUYV`.
    pub fourcc: String,
    /// The driver's description.
    pub description: String,
    /// The format is compressed.
    pub compressed: bool,
    /// The format as the appliance knows it; `None` when it cannot be converted.
    pub pixel_format: Option<PixelFormat>,
    /// Sizes offered.
    pub sizes: Vec<SizeInfo>,
}

/// One size entry of a [`FormatInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeInfo {
    /// The size (or range of sizes).
    pub sizes: FrameSizes,
    /// Rates at this size (for a range: at its largest size).
    pub intervals: Vec<FrameIntervals>,
}

/// Result of [`scan_cameras`]: the cameras, and the nodes that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CameraScan {
    /// Capture devices.
    pub cameras: Vec<CameraInfo>,
    /// Video nodes that could not be opened or queried (permissions, busy...).
    pub problems: Vec<DeviceError>,
}

/// Every V4L2 capture device (`/dev/video*` with the video capture capability),
/// with its formats, sizes and rates. Nodes that cannot be read are left out
/// (see [`scan_cameras`] for why); no camera at all is an empty list.
pub fn list_cameras() -> Vec<CameraInfo> {
    scan_cameras().cameras
}

/// Like [`list_cameras`], also reporting the nodes that could not be read.
pub fn scan_cameras() -> CameraScan {
    let mut scan = CameraScan::default();
    for node in video_nodes(Path::new("/dev")) {
        let path = node.display().to_string();
        let device = match open_device(&path) {
            Ok(d) => d,
            Err(e) => {
                scan.problems.push(e);
                continue;
            }
        };
        let caps = match query_caps(&path, &device.handle()) {
            Ok(c) => c,
            Err(e) => {
                scan.problems.push(e);
                continue;
            }
        };
        if !caps.can_capture() {
            continue;
        }
        scan.cameras.push(CameraInfo {
            path,
            driver: caps.driver,
            card: caps.card,
            bus: caps.bus,
            formats: enumerate_formats(&device),
        });
    }
    scan
}

/// `/dev/video<N>` nodes in `dir`, in numeric order.
fn video_nodes(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let number = name.to_str()?.strip_prefix("video")?.parse::<u32>().ok()?;
            Some((number, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

fn open_device(path: &str) -> Result<Device, DeviceError> {
    if path.contains('\0') {
        return Err(DeviceError::InvalidSetting {
            device: path.escape_debug().to_string(),
            message: "device path contains a NUL byte".into(),
        });
    }
    Device::with_path(path).map_err(|e| DeviceError::io(path, "open", &e))
}

/// What `VIDIOC_QUERYCAP` says.
struct Caps {
    driver: String,
    card: String,
    bus: String,
    /// The node's own capabilities (`device_caps` when the driver reports them).
    node_caps: u32,
}

impl Caps {
    fn can_capture(&self) -> bool {
        self.node_caps & v4l_sys::V4L2_CAP_VIDEO_CAPTURE != 0
            && self.node_caps & v4l_sys::V4L2_CAP_STREAMING != 0
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn query_caps(path: &str, handle: &Handle) -> Result<Caps, DeviceError> {
    // SAFETY: v4l2_capability is a plain C struct; all-zero is valid.
    let mut raw: v4l_sys::v4l2_capability = unsafe { std::mem::zeroed() };
    controls::ioctl(handle, v4l::v4l2::vidioc::VIDIOC_QUERYCAP, &mut raw)
        .map_err(|e| DeviceError::io(path, "VIDIOC_QUERYCAP", &e))?;
    let node_caps = if raw.capabilities & v4l_sys::V4L2_CAP_DEVICE_CAPS != 0 {
        raw.device_caps
    } else {
        raw.capabilities
    };
    Ok(Caps {
        driver: c_string(&raw.driver),
        card: c_string(&raw.card),
        bus: c_string(&raw.bus_info),
        node_caps,
    })
}

/// `YUYV`, or `Y16-BE` for the big-endian variants (high bit of the last byte).
fn fourcc_string(code: [u8; 4]) -> String {
    let big_endian = code[3] & 0x80 != 0;
    let plain = [code[0], code[1], code[2], code[3] & 0x7f];
    let mut text = String::from_utf8_lossy(&plain).trim_end().to_string();
    if big_endian {
        text.push_str("-BE");
    }
    text
}

fn sizes_of(size: FrameSizeEnum) -> FrameSizes {
    match size {
        FrameSizeEnum::Discrete(d) => FrameSizes::Discrete {
            width: d.width,
            height: d.height,
        },
        FrameSizeEnum::Stepwise(s) => FrameSizes::Stepwise {
            min_width: s.min_width,
            max_width: s.max_width,
            step_width: s.step_width,
            min_height: s.min_height,
            max_height: s.max_height,
            step_height: s.step_height,
        },
    }
}

fn fraction(f: v4l::Fraction) -> Fraction {
    Fraction::new(f.numerator, f.denominator)
}

fn intervals_at(device: &Device, fourcc: [u8; 4], width: u32, height: u32) -> Vec<FrameIntervals> {
    device
        .enum_frameintervals(v4l::FourCC::new(&fourcc), width, height)
        .map(|list| {
            list.into_iter()
                .map(|i| match i.interval {
                    FrameIntervalEnum::Discrete(f) => FrameIntervals::Discrete(fraction(f)),
                    FrameIntervalEnum::Stepwise(s) => FrameIntervals::Stepwise {
                        min: fraction(s.min),
                        max: fraction(s.max),
                        step: fraction(s.step),
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}

fn enumerate_formats(device: &Device) -> Vec<FormatInfo> {
    let Ok(descriptions) = device.enum_formats() else {
        return Vec::new();
    };
    descriptions
        .into_iter()
        .map(|d| {
            let code = d.fourcc.repr;
            let sizes = device
                .enum_framesizes(d.fourcc)
                .unwrap_or_default()
                .into_iter()
                .map(|s| {
                    let sizes = sizes_of(s.size);
                    let (w, h) = match sizes {
                        FrameSizes::Discrete { width, height } => (width, height),
                        FrameSizes::Stepwise {
                            max_width,
                            max_height,
                            ..
                        } => (max_width, max_height),
                    };
                    SizeInfo {
                        sizes,
                        intervals: intervals_at(device, code, w, h),
                    }
                })
                .collect();
            FormatInfo {
                fourcc: fourcc_string(code),
                description: d.description,
                compressed: d
                    .flags
                    .contains(v4l::format::description::Flags::COMPRESSED),
                pixel_format: PixelFormat::from_fourcc(code),
                sizes,
            }
        })
        .collect()
}

/// What the driver set with `VIDIOC_S_FMT` (or would set, with `VIDIOC_TRY_FMT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PixFormat {
    fourcc: [u8; 4],
    width: u32,
    height: u32,
    stride: u32,
    size_image: u32,
}

fn pix_format(
    path: &str,
    handle: &Handle,
    format: PixelFormat,
    width: u32,
    height: u32,
    try_only: bool,
) -> Result<PixFormat, DeviceError> {
    // SAFETY: both are plain C structs (with unions of plain data); all-zero is valid.
    let mut pix: v4l_sys::v4l2_pix_format = unsafe { std::mem::zeroed() };
    pix.width = width;
    pix.height = height;
    pix.pixelformat = u32::from_le_bytes(format.fourcc());
    pix.field = v4l_sys::v4l2_field_V4L2_FIELD_NONE;
    // SAFETY: as above.
    let mut raw: v4l_sys::v4l2_format = unsafe { std::mem::zeroed() };
    raw.type_ = v4l_sys::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
    raw.fmt = v4l_sys::v4l2_format__bindgen_ty_1 { pix };
    let (request, name) = if try_only {
        (v4l::v4l2::vidioc::VIDIOC_TRY_FMT, "VIDIOC_TRY_FMT")
    } else {
        (v4l::v4l2::vidioc::VIDIOC_S_FMT, "VIDIOC_S_FMT")
    };
    controls::ioctl(handle, request, &mut raw).map_err(|e| DeviceError::io(path, name, &e))?;
    // SAFETY: for a VIDEO_CAPTURE format the kernel fills the `pix` member.
    let pix = unsafe { raw.fmt.pix };
    Ok(PixFormat {
        fourcc: pix.pixelformat.to_le_bytes(),
        width: pix.width,
        height: pix.height,
        stride: pix.bytesperline,
        size_image: pix.sizeimage,
    })
}

/// The offers of one device for `want`: every usable format at the sizes
/// worth trying, with the rates at each.
fn device_offers(
    path: &str,
    device: &Device,
    formats: &[FormatInfo],
    want: &WantedMode,
) -> Vec<ModeOffer> {
    let mut offers = Vec::new();
    for info in formats {
        let Some(format) = info.pixel_format else {
            continue;
        };
        let code = format.fourcc();
        let entries = device
            .enum_framesizes(v4l::FourCC::new(&code))
            .unwrap_or_default();
        if entries.is_empty() {
            // No size enumeration: ask the driver what it would do with the wanted size.
            let tried = pix_format(
                path,
                &device.handle(),
                format,
                want.width,
                want.height,
                true,
            );
            if let Ok(pix) = tried
                && pix.fourcc == code
            {
                offers.push(ModeOffer {
                    format,
                    width: pix.width,
                    height: pix.height,
                    intervals: intervals_at(device, code, pix.width, pix.height),
                });
            }
            continue;
        }
        for entry in entries {
            for (width, height) in mode::fit_sizes(&sizes_of(entry.size), want.width, want.height) {
                offers.push(ModeOffer {
                    format,
                    width,
                    height,
                    intervals: intervals_at(device, code, width, height),
                });
            }
        }
    }
    offers
}

/// An open V4L2 camera streaming through mmap buffers.
pub struct V4l2Camera {
    path: String,
    driver: String,
    card: String,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
    interval: Fraction,
    mismatch: Option<String>,
    sequence: u64,
    bad_frames: u64,
    controls: CameraControls,
    // Declared before `device` so that it is dropped first.
    stream: Option<Stream<'static>>,
    device: Device,
}

impl fmt::Debug for V4l2Camera {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V4l2Camera")
            .field("description", &self.description())
            .finish_non_exhaustive()
    }
}

impl V4l2Camera {
    /// Opens `path`, picks the best mode for `want` (see [`mode`]), sets it,
    /// checks that the driver did what it said and maps the buffers.
    pub fn open(path: &str, want: WantedMode) -> Result<Self, DeviceError> {
        Self::open_with_formats(path, want, &PixelFormat::ALL)
    }

    /// Like [`V4l2Camera::open`], considering only the formats in `allowed`
    /// (to work around a camera whose format is broken, or to test one path).
    pub fn open_with_formats(
        path: &str,
        want: WantedMode,
        allowed: &[PixelFormat],
    ) -> Result<Self, DeviceError> {
        let device = open_device(path)?;
        let caps = query_caps(path, &device.handle())?;
        if !caps.can_capture() {
            return Err(DeviceError::NotACamera {
                device: path.into(),
                reason: format!(
                    "{} ({}) has no single-planar video capture with streaming",
                    caps.card, caps.driver
                ),
            });
        }
        let formats = enumerate_formats(&device);
        let mut offers = device_offers(path, &device, &formats, &want);
        offers.retain(|o| allowed.contains(&o.format));
        let Some(choice) = mode::choose_mode(&offers, &want) else {
            let listed: Vec<&str> = formats.iter().map(|f| f.fourcc.as_str()).collect();
            return Err(DeviceError::NoUsableFormat {
                device: path.into(),
                reason: format!(
                    "it offers [{}], the appliance converts {} at even sizes",
                    listed.join(", "),
                    allowed
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let set = pix_format(
            path,
            &device.handle(),
            choice.format,
            choice.width,
            choice.height,
            false,
        )?;
        check_set_format(path, &choice, &set)?;
        let interval = set_interval(path, &device, &choice);
        let mut mismatch = choice.mismatch(&want);
        if interval != choice.interval && interval.fps() > 0.0 {
            let note = format!(
                "the driver set {} fps when {} was asked",
                interval, choice.interval
            );
            mismatch = Some(match mismatch {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
        let mut stream = Stream::with_buffers(&device, BufferType::VideoCapture, BUFFERS)
            .map_err(|e| DeviceError::io(path, "mapping capture buffers (VIDIOC_REQBUFS)", &e))?;
        // A frame every interval; give up on a silent device after a few of them.
        let frame_time = Duration::from_secs_f64(1.0 / interval.fps().max(1.0));
        stream.set_timeout((frame_time * 4).max(Duration::from_secs(2)));
        let controls = CameraControls::for_device(path, device.handle());
        let camera = Self {
            path: path.into(),
            driver: caps.driver,
            card: caps.card,
            format: choice.format,
            width: set.width,
            height: set.height,
            stride: set.stride,
            interval,
            mismatch,
            sequence: 0,
            bad_frames: 0,
            controls,
            stream: Some(stream),
            device,
        };
        match &camera.mismatch {
            Some(m) => {
                tracing::warn!(camera = %camera.description(), "camera mode differs from the configuration: {m}")
            }
            None => tracing::info!(camera = %camera.description(), "camera opened"),
        }
        Ok(camera)
    }

    /// Opens the first capture device that can stream in a usable mode,
    /// skipping the capture nodes of codecs and ISPs (see [`NOT_CAMERAS`]).
    pub fn open_first(want: WantedMode) -> Result<Self, DeviceError> {
        let mut tried = Vec::new();
        for node in video_nodes(Path::new("/dev")) {
            let path = node.display().to_string();
            if let Ok(device) = open_device(&path)
                && let Ok(caps) = query_caps(&path, &device.handle())
                && NOT_CAMERAS.contains(&caps.driver.as_str())
            {
                continue;
            }
            match Self::open(&path, want) {
                Ok(camera) => return Ok(camera),
                Err(DeviceError::NotACamera { .. }) => {}
                Err(e) => tried.push(e.to_string()),
            }
        }
        Err(DeviceError::NoCamera {
            detail: if tried.is_empty() {
                "no /dev/video* capture node".into()
            } else {
                tried.join("; ")
            },
        })
    }

    /// How the mode differs from the one asked for, if it does.
    pub fn mismatch(&self) -> Option<&str> {
        self.mismatch.as_deref()
    }

    /// The card name the driver reports.
    pub fn card(&self) -> &str {
        &self.card
    }

    /// Frames dropped because the driver flagged them, they were short, or
    /// they did not decode.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames
    }

    /// The camera's controls among [`CameraControl::ALL`].
    pub fn controls(&self) -> Vec<ControlInfo> {
        self.controls.list()
    }

    /// Sets a control, rounded to its step; out-of-range values are an error.
    /// Returns the value set.
    pub fn set_control(&self, control: CameraControl, value: i64) -> Result<i64, DeviceError> {
        self.controls.set(control, value)
    }

    fn frame_error(&mut self, error: DeviceError, run: &mut u32) -> Result<(), DeviceError> {
        self.bad_frames += 1;
        *run += 1;
        if *run >= MAX_BAD_FRAMES_IN_A_ROW {
            return Err(error);
        }
        tracing::debug!(camera = %self.path, %error, "dropping a bad frame");
        Ok(())
    }
}

fn check_set_format(path: &str, choice: &ModeChoice, set: &PixFormat) -> Result<(), DeviceError> {
    if set.fourcc != choice.format.fourcc()
        || set.width != choice.width
        || set.height != choice.height
    {
        return Err(DeviceError::DriverMismatch {
            device: path.into(),
            what: format!(
                "it lists {} {}x{} but set {} {}x{}",
                choice.format,
                choice.width,
                choice.height,
                fourcc_string(set.fourcc),
                set.width,
                set.height
            ),
        });
    }
    if choice.format.is_compressed() {
        if set.size_image == 0 {
            return Err(DeviceError::DriverMismatch {
                device: path.into(),
                what: "it reports MJPG buffers of 0 bytes".into(),
            });
        }
        return Ok(());
    }
    let min_stride = choice.format.min_stride(set.width);
    if set.stride < min_stride {
        return Err(DeviceError::DriverMismatch {
            device: path.into(),
            what: format!(
                "it reports {} rows of {} bytes for {} pixels (at least {min_stride} needed)",
                choice.format, set.stride, set.width
            ),
        });
    }
    let need = choice
        .format
        .min_buffer_len(set.width, set.height, set.stride);
    if (set.size_image as usize) < need {
        return Err(DeviceError::DriverMismatch {
            device: path.into(),
            what: format!(
                "it reports {}-byte buffers for {} {}x{} (stride {}), which needs {need}",
                set.size_image, choice.format, set.width, set.height, set.stride
            ),
        });
    }
    Ok(())
}

/// Requests the chosen interval; returns the one in effect (the chosen one
/// when the driver cannot tell).
fn set_interval(path: &str, device: &Device, choice: &ModeChoice) -> Fraction {
    let wanted = v4l::Fraction::new(choice.interval.numerator, choice.interval.denominator);
    match device.set_params(&Parameters::new(wanted)) {
        Ok(params) => {
            let got = fraction(params.interval);
            if got.fps() > 0.0 {
                got
            } else {
                choice.interval
            }
        }
        Err(e) => {
            tracing::warn!(camera = %path, error = %e, "the driver does not take a frame rate");
            choice.interval
        }
    }
}

/// Wall-clock time of a buffer stamped with the monotonic clock.
fn buffer_time(meta: &v4l::buffer::Metadata) -> CaptureTime {
    let now = wall_clock_now();
    if !meta.flags.contains(BufferFlags::TIMESTAMP_MONOTONIC) {
        return now;
    }
    // SAFETY: clock_gettime writes a timespec into the struct we own.
    let mut mono: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono) } != 0 {
        return now;
    }
    let mono_now = mono.tv_sec as i128 * 1_000_000 + mono.tv_nsec as i128 / 1000;
    let stamp = meta.timestamp.sec as i128 * 1_000_000 + meta.timestamp.usec as i128;
    let age = mono_now - stamp;
    // A stamp from the future or older than a second is not believable.
    if !(0..=1_000_000).contains(&age) {
        return now;
    }
    CaptureTime(now.0.saturating_sub(age as u64))
}

impl VideoCapture for V4l2Camera {
    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        let mut run = 0u32;
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(DeviceError::NotACamera {
                    device: self.path.clone(),
                    reason: "the stream is closed".into(),
                });
            };
            let (buffer, meta) = match stream.next() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(DeviceError::Io {
                        device: self.path.clone(),
                        action: "waiting for a frame".into(),
                        errno: Some(libc::ETIMEDOUT),
                        message: "no frame within the timeout".into(),
                    });
                }
                Err(e) => return Err(DeviceError::io(&self.path, "VIDIOC_DQBUF", &e)),
            };
            let capture_time = buffer_time(meta);
            if meta.flags.contains(BufferFlags::ERROR) {
                let error = DeviceError::DriverMismatch {
                    device: self.path.clone(),
                    what: "it keeps flagging buffers as corrupt (V4L2_BUF_FLAG_ERROR)".into(),
                };
                self.frame_error(error, &mut run)?;
                continue;
            }
            let used = (meta.bytesused as usize).min(buffer.len());
            let converted = convert::to_i420(
                self.format,
                &buffer[..used],
                self.width,
                self.height,
                self.stride,
            );
            match converted {
                Ok(i420) => {
                    let frame = VideoFrame::from_i420(
                        self.width,
                        self.height,
                        i420,
                        self.sequence,
                        capture_time,
                    )
                    .map_err(|e| DeviceError::DriverMismatch {
                        device: self.path.clone(),
                        what: e.to_string(),
                    })?;
                    self.sequence += 1;
                    return Ok(frame);
                }
                Err(source) => {
                    let error = DeviceError::BadFrame {
                        device: self.path.clone(),
                        source,
                    };
                    self.frame_error(error, &mut run)?;
                }
            }
        }
    }

    fn description(&self) -> String {
        format!(
            "{} ({}) {} {}x{} @ {} fps",
            self.path,
            self.driver,
            self.format,
            self.width,
            self.height,
            FpsDisplay(self.interval.fps())
        )
    }

    fn control_handle(&self) -> Option<CameraControls> {
        Some(self.controls.clone())
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            // The v4l crate panics in its Drop when VIDIOC_STREAMOFF or the
            // buffer release fails with anything but ENODEV. A camera going
            // away must not take the appliance with it: contain that here.
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                drop(stream);
            }));
            if dropped.is_err() {
                tracing::error!(camera = %self.path, "releasing the capture buffers failed");
            }
        }
        // Keep the node open until the stream is gone.
        let _ = &self.device;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_camera_on_this_machine_is_an_empty_list_not_an_error() {
        // The development machine and CI have no /dev/video*: the list is
        // simply empty. On a machine with cameras it lists them.
        let cameras = list_cameras();
        for camera in &cameras {
            assert!(camera.path.starts_with("/dev/video"));
        }
        if !Path::new("/dev/video0").exists() {
            assert!(cameras.is_empty());
        }
    }

    #[test]
    fn video_nodes_are_sorted_numerically_and_others_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["video10", "video2", "video0", "videoX", "vbi0", "media0"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names: Vec<String> = video_nodes(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["video0", "video2", "video10"]);
        assert!(video_nodes(Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn opening_a_missing_node_names_it() {
        let want = WantedMode {
            width: 1280,
            height: 720,
            fps: 30,
        };
        let err = V4l2Camera::open("/dev/video-none", want).unwrap_err();
        assert!(
            err.to_string().starts_with("/dev/video-none: open failed"),
            "{err}"
        );
        assert!(err.is_device_gone());
        let err = V4l2Camera::open("/dev/vid\0eo0", want).unwrap_err();
        assert!(matches!(err, DeviceError::InvalidSetting { .. }));
        // A node that is not a V4L2 device at all.
        let err = V4l2Camera::open("/dev/null", want).unwrap_err();
        assert!(err.to_string().contains("VIDIOC_QUERYCAP"), "{err}");
    }

    fn choice(format: PixelFormat, width: u32, height: u32) -> ModeChoice {
        ModeChoice {
            format,
            width,
            height,
            interval: Fraction::per_second(30),
            rate_fit: mode::RateFit::Exact,
            size_exact: true,
        }
    }

    #[test]
    fn a_driver_that_sets_something_else_is_caught() {
        let c = choice(PixelFormat::Yuyv, 1280, 720);
        let good = PixFormat {
            fourcc: *b"YUYV",
            width: 1280,
            height: 720,
            stride: 2560,
            size_image: 2560 * 720,
        };
        assert_eq!(check_set_format("/dev/video0", &c, &good), Ok(()));
        let table = [
            (
                PixFormat {
                    fourcc: *b"MJPG",
                    ..good
                },
                "/dev/video0: the driver misbehaves: it lists YUYV 1280x720 but set MJPG 1280x720",
            ),
            (
                PixFormat {
                    width: 640,
                    height: 480,
                    ..good
                },
                "/dev/video0: the driver misbehaves: it lists YUYV 1280x720 but set YUYV 640x480",
            ),
            (
                PixFormat {
                    stride: 1280,
                    ..good
                },
                "/dev/video0: the driver misbehaves: it reports YUYV rows of 1280 bytes for 1280 pixels (at least 2560 needed)",
            ),
            (
                PixFormat {
                    size_image: 1000,
                    ..good
                },
                "/dev/video0: the driver misbehaves: it reports 1000-byte buffers for YUYV 1280x720 (stride 2560), which needs 1843200",
            ),
        ];
        for (set, want) in table {
            let err = check_set_format("/dev/video0", &c, &set).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
        let mjpeg = choice(PixelFormat::Mjpeg, 1280, 720);
        let set = PixFormat {
            fourcc: *b"MJPG",
            stride: 0,
            size_image: 0,
            ..good
        };
        assert!(check_set_format("/dev/video0", &mjpeg, &set).is_err());
        let set = PixFormat {
            size_image: 500_000,
            ..set
        };
        assert_eq!(check_set_format("/dev/video0", &mjpeg, &set), Ok(()));
    }

    #[test]
    fn fourccs_print_readably() {
        assert_eq!(fourcc_string(*b"YUYV"), "YUYV");
        assert_eq!(fourcc_string(*b"Y10 "), "Y10");
        assert_eq!(fourcc_string([b'Y', b'1', b'6', b' ' | 0x80]), "Y16-BE");
    }

    #[test]
    fn card_names_cut_mid_character_do_not_panic() {
        let mut raw = [0u8; 32];
        let name = "Caméra".as_bytes();
        raw[..name.len() - 1].copy_from_slice(&name[..name.len() - 1]);
        raw[3] = 0xC3; // a lone lead byte
        assert!(!c_string(&raw).is_empty());
        assert_eq!(c_string(b"vivid\0\0\0"), "vivid");
    }
}
