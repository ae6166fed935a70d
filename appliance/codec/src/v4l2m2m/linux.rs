//! [`M2mDevice`] on a real device node.
//!
//! Opening, polling and controls go through the `v4l` crate's safe API; the calls it has no
//! safe form for on memory-to-memory devices (formats, buffers and streaming on the
//! multi-planar OUTPUT/CAPTURE buffer types) use its raw ioctl layer (`v4l::v4l2`) with the
//! kernel structures from `v4l::v4l_sys`. `VIDIOC_QUERYCAP` is raw too, because the crate's
//! `Capabilities` conversion panics on a driver name that is not UTF-8.

use std::ffi::c_void;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};

use v4l::control::{Control, Value};
use v4l::v4l_sys::{self, v4l2_buffer, v4l2_capability, v4l2_fmtdesc, v4l2_format, v4l2_plane};
use v4l::v4l2::{self, vidioc};
use v4l::{Device, FourCC};

use super::{Dequeued, Format, H264, M2mDevice, Queue};
use crate::CodecError;

/// One mmap'ed buffer, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value alone; it is only reached through
// `&mut LinuxM2m`.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and nothing refers to it now.
        if let Err(e) = unsafe { v4l2::munmap(self.ptr.cast(), self.len) } {
            tracing::warn!(error = %e, "munmap of a V4L2 buffer failed");
        }
    }
}

/// A V4L2 memory-to-memory device node.
pub struct LinuxM2m {
    device: Device,
    path: String,
    driver: String,
    mplane: bool,
    output: Vec<Mapping>,
    capture: Vec<Mapping>,
}

impl std::fmt::Debug for LinuxM2m {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxM2m")
            .field("path", &self.path)
            .field("driver", &self.driver)
            .field("mplane", &self.mplane)
            .finish_non_exhaustive()
    }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `VIDIOC_*` request numbers in the type the raw layer takes.
type Request = vidioc::_IOC_TYPE;

impl LinuxM2m {
    /// Opens a device node and checks that it is a memory-to-memory device.
    pub fn open(path: &Path) -> Result<Self, CodecError> {
        let shown = path.display().to_string();
        let device = Device::with_path(path).map_err(|e| CodecError::Device {
            device: shown.clone(),
            operation: "open".to_owned(),
            message: e.to_string(),
        })?;
        let mut this = Self {
            device,
            path: shown,
            driver: String::new(),
            mplane: false,
            output: Vec::new(),
            capture: Vec::new(),
        };
        // SAFETY: v4l2_capability is plain old data; all-zero is a valid value.
        let mut caps: v4l2_capability = unsafe { std::mem::zeroed() };
        this.ioctl(vidioc::VIDIOC_QUERYCAP, &mut caps, "VIDIOC_QUERYCAP")?;
        let flags = if caps.capabilities & v4l_sys::V4L2_CAP_DEVICE_CAPS != 0 {
            caps.device_caps
        } else {
            caps.capabilities
        };
        this.driver = cstr(&caps.driver);
        if flags & v4l_sys::V4L2_CAP_VIDEO_M2M_MPLANE != 0 {
            this.mplane = true;
        } else if flags & v4l_sys::V4L2_CAP_VIDEO_M2M == 0 {
            return Err(this.error(
                "VIDIOC_QUERYCAP",
                format!(
                    "{} ({}) is not a memory-to-memory device",
                    this.driver,
                    cstr(&caps.card)
                ),
            ));
        }
        Ok(this)
    }

    fn error(&self, operation: &str, message: impl Into<String>) -> CodecError {
        CodecError::Device {
            device: self.path.clone(),
            operation: operation.to_owned(),
            message: message.into(),
        }
    }

    fn ioctl<T>(&self, request: Request, arg: &mut T, operation: &str) -> Result<(), CodecError> {
        // SAFETY: every caller passes the kernel structure that `request` is defined with
        // (`_IOWR!(b'V', n, T)` in v4l's vidioc table), fully initialised.
        unsafe {
            v4l2::ioctl(
                self.device.handle().fd(),
                request,
                (arg as *mut T).cast::<c_void>(),
            )
        }
        .map_err(|e| self.error(operation, e.to_string()))
    }

    fn buf_type(&self, queue: Queue) -> u32 {
        match (queue, self.mplane) {
            (Queue::Output, true) => v4l_sys::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
            (Queue::Capture, true) => v4l_sys::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
            (Queue::Output, false) => v4l_sys::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT,
            (Queue::Capture, false) => v4l_sys::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE,
        }
    }

    fn mappings(&mut self, queue: Queue) -> &mut Vec<Mapping> {
        match queue {
            Queue::Output => &mut self.output,
            Queue::Capture => &mut self.capture,
        }
    }

    /// A `v4l2_buffer` for `queue`/`index` with MMAP memory, pointing at `planes` when the
    /// device is multi-planar.
    fn buffer_struct(&self, queue: Queue, index: u32, planes: &mut [v4l2_plane]) -> v4l2_buffer {
        // SAFETY: v4l2_buffer is plain old data; all-zero is a valid value.
        let mut buf: v4l2_buffer = unsafe { std::mem::zeroed() };
        buf.index = index;
        buf.type_ = self.buf_type(queue);
        buf.memory = v4l_sys::v4l2_memory_V4L2_MEMORY_MMAP;
        if self.mplane {
            buf.m.planes = planes.as_mut_ptr();
            buf.length = planes.len() as u32;
        }
        buf
    }
}

fn zeroed_planes() -> [v4l2_plane; 8] {
    // SAFETY: v4l2_plane is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

impl M2mDevice for LinuxM2m {
    fn path(&self) -> &str {
        &self.path
    }

    fn driver(&self) -> &str {
        &self.driver
    }

    fn formats(&mut self, queue: Queue) -> Result<Vec<FourCC>, CodecError> {
        let mut formats = Vec::new();
        for index in 0..64 {
            // SAFETY: v4l2_fmtdesc is plain old data; all-zero is a valid value.
            let mut desc: v4l2_fmtdesc = unsafe { std::mem::zeroed() };
            desc.index = index;
            desc.type_ = self.buf_type(queue);
            if self
                .ioctl(vidioc::VIDIOC_ENUM_FMT, &mut desc, "VIDIOC_ENUM_FMT")
                .is_err()
            {
                break; // EINVAL past the last format
            }
            formats.push(FourCC::from(desc.pixelformat));
        }
        Ok(formats)
    }

    fn set_format(
        &mut self,
        queue: Queue,
        fourcc: FourCC,
        width: u32,
        height: u32,
        sizeimage: u32,
    ) -> Result<Format, CodecError> {
        // SAFETY: v4l2_format is plain old data; all-zero is a valid value.
        let mut fmt: v4l2_format = unsafe { std::mem::zeroed() };
        fmt.type_ = self.buf_type(queue);
        let pixelformat = u32::from(fourcc);
        let field = v4l_sys::v4l2_field_V4L2_FIELD_NONE;
        if self.mplane {
            fmt.fmt.pix_mp.width = width;
            fmt.fmt.pix_mp.height = height;
            fmt.fmt.pix_mp.pixelformat = pixelformat;
            fmt.fmt.pix_mp.field = field;
            fmt.fmt.pix_mp.num_planes = 1;
            // SAFETY: the union is zeroed and `pix_mp` is the member this buffer type uses.
            unsafe { fmt.fmt.pix_mp.plane_fmt[0].sizeimage = sizeimage };
        } else {
            fmt.fmt.pix.width = width;
            fmt.fmt.pix.height = height;
            fmt.fmt.pix.pixelformat = pixelformat;
            fmt.fmt.pix.field = field;
            fmt.fmt.pix.sizeimage = sizeimage;
        }
        let what = match queue {
            Queue::Output => "VIDIOC_S_FMT OUTPUT",
            Queue::Capture => "VIDIOC_S_FMT CAPTURE",
        };
        self.ioctl(vidioc::VIDIOC_S_FMT, &mut fmt, what)?;
        // SAFETY: the driver filled the member of the type we asked for; packed fields are
        // copied out by value.
        let got = unsafe {
            if self.mplane {
                let p = fmt.fmt.pix_mp;
                let plane = p.plane_fmt[0];
                Format {
                    fourcc: FourCC::from(p.pixelformat),
                    width: p.width,
                    height: p.height,
                    bytesperline: plane.bytesperline,
                    sizeimage: plane.sizeimage,
                    planes: u32::from(p.num_planes),
                }
            } else {
                let p = fmt.fmt.pix;
                Format {
                    fourcc: FourCC::from(p.pixelformat),
                    width: p.width,
                    height: p.height,
                    bytesperline: p.bytesperline,
                    sizeimage: p.sizeimage,
                    planes: 1,
                }
            }
        };
        Ok(got)
    }

    fn set_frame_rate(&mut self, fps: u32) -> Result<(), CodecError> {
        // SAFETY: v4l2_streamparm is plain old data; all-zero is a valid value.
        let mut parm: v4l_sys::v4l2_streamparm = unsafe { std::mem::zeroed() };
        parm.type_ = self.buf_type(Queue::Output);
        parm.parm.output.timeperframe.numerator = 1;
        parm.parm.output.timeperframe.denominator = fps;
        self.ioctl(vidioc::VIDIOC_S_PARM, &mut parm, "VIDIOC_S_PARM")
    }

    fn set_control(&mut self, id: u32, value: i64) -> Result<(), CodecError> {
        self.device
            .set_control(Control {
                id,
                value: Value::Integer(value),
            })
            .map_err(|e| {
                self.error(
                    &format!("VIDIOC_S_EXT_CTRLS {id:#x}={value}"),
                    e.to_string(),
                )
            })
    }

    fn allocate(&mut self, queue: Queue, count: u32) -> Result<u32, CodecError> {
        self.mappings(queue).clear();
        // SAFETY: v4l2_requestbuffers is plain old data; all-zero is a valid value.
        let mut req: v4l_sys::v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        req.count = count;
        req.type_ = self.buf_type(queue);
        req.memory = v4l_sys::v4l2_memory_V4L2_MEMORY_MMAP;
        self.ioctl(vidioc::VIDIOC_REQBUFS, &mut req, "VIDIOC_REQBUFS")?;
        let fd = self.device.handle().fd();
        let mut mapped = Vec::with_capacity(req.count as usize);
        for index in 0..req.count {
            let mut planes = zeroed_planes();
            let mut buf = self.buffer_struct(queue, index, &mut planes);
            self.ioctl(vidioc::VIDIOC_QUERYBUF, &mut buf, "VIDIOC_QUERYBUF")?;
            let (len, offset) = if self.mplane {
                if buf.length != 1 {
                    return Err(self.error(
                        "VIDIOC_QUERYBUF",
                        format!("buffer has {} planes, only 1 is supported", buf.length),
                    ));
                }
                // SAFETY: the driver filled the MMAP member of plane 0.
                (planes[0].length, unsafe { planes[0].m.mem_offset })
            } else {
                // SAFETY: the driver filled the MMAP member.
                (buf.length, unsafe { buf.m.offset })
            };
            // SAFETY: mapping a buffer the driver just described, shared, at its offset.
            let ptr = unsafe {
                v4l2::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    libc::off_t::from(offset),
                )
            }
            .map_err(|e| self.error("mmap", e.to_string()))?;
            mapped.push(Mapping {
                ptr: ptr.cast(),
                len: len as usize,
            });
        }
        *self.mappings(queue) = mapped;
        Ok(req.count)
    }

    fn buffer(&mut self, queue: Queue, index: u32) -> Result<&mut [u8], CodecError> {
        let path = self.path.clone();
        let mapping = self
            .mappings(queue)
            .get_mut(index as usize)
            .ok_or_else(|| CodecError::Device {
                device: path,
                operation: "buffer".to_owned(),
                message: format!("no buffer {index}"),
            })?;
        // SAFETY: the mapping is live for as long as `self`, and `&mut self` makes this the
        // only reference to it.
        Ok(unsafe { std::slice::from_raw_parts_mut(mapping.ptr, mapping.len) })
    }

    fn queue(
        &mut self,
        queue: Queue,
        index: u32,
        bytesused: u32,
        timestamp_us: u64,
    ) -> Result<(), CodecError> {
        let length = self
            .mappings(queue)
            .get(index as usize)
            .map_or(0, |m| m.len as u32);
        let mut planes = zeroed_planes();
        planes[0].bytesused = bytesused;
        planes[0].length = length;
        let mut buf = self.buffer_struct(queue, index, &mut planes[..1]);
        buf.timestamp.tv_sec = (timestamp_us / 1_000_000) as libc::time_t;
        buf.timestamp.tv_usec = (timestamp_us % 1_000_000) as libc::suseconds_t;
        if !self.mplane {
            buf.bytesused = bytesused;
            buf.length = length;
        }
        self.ioctl(vidioc::VIDIOC_QBUF, &mut buf, "VIDIOC_QBUF")
    }

    fn dequeue(&mut self, queue: Queue) -> Result<Option<Dequeued>, CodecError> {
        let mut planes = zeroed_planes();
        let mut buf = self.buffer_struct(queue, 0, &mut planes);
        // SAFETY: see `ioctl`; the planes array outlives the call.
        let result = unsafe {
            v4l2::ioctl(
                self.device.handle().fd(),
                vidioc::VIDIOC_DQBUF,
                (&raw mut buf).cast::<c_void>(),
            )
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(self.error("VIDIOC_DQBUF", e.to_string())),
        }
        let (bytesused, data_offset) = if self.mplane {
            (planes[0].bytesused, planes[0].data_offset)
        } else {
            (buf.bytesused, 0)
        };
        let timestamp_us =
            buf.timestamp.tv_sec.max(0) as u64 * 1_000_000 + buf.timestamp.tv_usec.max(0) as u64;
        Ok(Some(Dequeued {
            index: buf.index,
            bytesused,
            data_offset,
            flags: buf.flags,
            timestamp_us,
        }))
    }

    fn stream(&mut self, queue: Queue, on: bool) -> Result<(), CodecError> {
        let mut kind = self.buf_type(queue) as c_int;
        let (request, name) = if on {
            (vidioc::VIDIOC_STREAMON, "VIDIOC_STREAMON")
        } else {
            (vidioc::VIDIOC_STREAMOFF, "VIDIOC_STREAMOFF")
        };
        self.ioctl(request, &mut kind, name)
    }

    fn wait(&mut self, queue: Queue, timeout_ms: u32) -> Result<bool, CodecError> {
        let events = match queue {
            Queue::Capture => libc::POLLIN,
            Queue::Output => libc::POLLOUT,
        };
        let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
        self.device
            .handle()
            .poll(events, timeout)
            .map(|n| n > 0)
            .map_err(|e| self.error("poll", e.to_string()))
    }
}

/// `/dev/video*` nodes in numeric order.
fn video_nodes(dir: &Path) -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix("video")?.parse::<u32>().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// Scans `/dev/video*` for a memory-to-memory device whose CAPTURE queue offers H.264.
pub fn find_encoder_device() -> Result<LinuxM2m, CodecError> {
    let nodes = video_nodes(Path::new("/dev"));
    let scanned = nodes.len();
    for node in nodes {
        let mut device = match LinuxM2m::open(&node) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "not a hardware encoder");
                continue;
            }
        };
        match device.formats(Queue::Capture) {
            Ok(formats) if formats.contains(&FourCC::new(&H264)) => {
                tracing::debug!(device = %node.display(), driver = device.driver(), "H.264 M2M encoder found");
                return Ok(device);
            }
            Ok(_) => tracing::debug!(device = %node.display(), "M2M device without H.264 output"),
            Err(e) => tracing::debug!(error = %e, "M2M device did not list formats"),
        }
    }
    Err(CodecError::NoHardwareEncoder { scanned })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_nodes_are_sorted_numerically_and_filtered() {
        let dir = std::env::temp_dir().join(format!("telecart-codec-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["video10", "video2", "video11", "videox", "media0"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let names: Vec<String> = video_nodes(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["video2", "video10", "video11"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(video_nodes(Path::new("/nonexistent-telecart")).is_empty());
    }

    #[test]
    fn a_regular_file_is_not_an_encoder() {
        let file =
            std::env::temp_dir().join(format!("telecart-codec-notdev-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let err = LinuxM2m::open(&file).unwrap_err();
        assert!(matches!(err, CodecError::Device { .. }), "{err}");
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn discovery_without_hardware_says_how_many_it_scanned() {
        match find_encoder_device() {
            Err(CodecError::NoHardwareEncoder { scanned }) => {
                assert_eq!(scanned, video_nodes(Path::new("/dev")).len());
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(device) => eprintln!("this machine has a hardware encoder: {device:?}"),
        }
    }
}
