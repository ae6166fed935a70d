//! Camera controls: brightness, contrast, focus, zoom, pan and tilt.
//!
//! [`CameraControl`] names the controls the appliance steers and maps them to
//! V4L2 control ids (the absolute variants for PTZ). The range arithmetic
//! ([`ControlInfo::validate`], [`ControlInfo::clamp`]) is pure. A
//! [`CameraControls`] handle talks to the device; it stays valid across camera
//! reconnects when it comes from a [`crate::ReconnectingCamera`].

use std::fmt;
use std::os::raw::c_void;
use std::sync::{Arc, Mutex, PoisonError};

use v4l::device::Handle;
use v4l::v4l_sys;

use crate::DeviceError;

/// A camera control the appliance knows how to steer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CameraControl {
    /// `V4L2_CID_BRIGHTNESS`.
    Brightness,
    /// `V4L2_CID_CONTRAST`.
    Contrast,
    /// `V4L2_CID_FOCUS_ABSOLUTE`.
    Focus,
    /// `V4L2_CID_FOCUS_AUTO` (0 or 1).
    AutoFocus,
    /// `V4L2_CID_ZOOM_ABSOLUTE`.
    Zoom,
    /// `V4L2_CID_PAN_ABSOLUTE` (arc seconds).
    Pan,
    /// `V4L2_CID_TILT_ABSOLUTE` (arc seconds).
    Tilt,
}

impl CameraControl {
    /// Every control, in display order.
    pub const ALL: [CameraControl; 7] = [
        CameraControl::Brightness,
        CameraControl::Contrast,
        CameraControl::Focus,
        CameraControl::AutoFocus,
        CameraControl::Zoom,
        CameraControl::Pan,
        CameraControl::Tilt,
    ];

    /// The V4L2 control id.
    pub fn cid(self) -> u32 {
        match self {
            CameraControl::Brightness => v4l_sys::V4L2_CID_BRIGHTNESS,
            CameraControl::Contrast => v4l_sys::V4L2_CID_CONTRAST,
            CameraControl::Focus => v4l_sys::V4L2_CID_FOCUS_ABSOLUTE,
            CameraControl::AutoFocus => v4l_sys::V4L2_CID_FOCUS_AUTO,
            CameraControl::Zoom => v4l_sys::V4L2_CID_ZOOM_ABSOLUTE,
            CameraControl::Pan => v4l_sys::V4L2_CID_PAN_ABSOLUTE,
            CameraControl::Tilt => v4l_sys::V4L2_CID_TILT_ABSOLUTE,
        }
    }

    /// Lower-case name, as used in logs and on the data channel.
    pub fn name(self) -> &'static str {
        match self {
            CameraControl::Brightness => "brightness",
            CameraControl::Contrast => "contrast",
            CameraControl::Focus => "focus",
            CameraControl::AutoFocus => "auto-focus",
            CameraControl::Zoom => "zoom",
            CameraControl::Pan => "pan",
            CameraControl::Tilt => "tilt",
        }
    }

    /// The control with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        CameraControl::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for CameraControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A control a camera has, its range and its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlInfo {
    /// Which control.
    pub control: CameraControl,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Values are `min + k * step`.
    pub step: u64,
    /// Value at power-on.
    pub default: i64,
    /// Current value.
    pub value: i64,
    /// The control can be read but not set.
    pub read_only: bool,
    /// Setting it has no effect now (such as focus while auto-focus is on).
    pub inactive: bool,
}

/// A value outside a control's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// The value asked for.
    pub value: i64,
    /// Smallest accepted value.
    pub min: i64,
    /// Largest accepted value.
    pub max: i64,
}

impl ControlInfo {
    /// `value` rounded to the nearest step inside the range; values outside
    /// the range are an error.
    pub fn validate(&self, value: i64) -> Result<i64, OutOfRange> {
        if value < self.min || value > self.max {
            return Err(OutOfRange {
                value,
                min: self.min,
                max: self.max,
            });
        }
        Ok(round_to_step(value, self.min, self.max, self.step))
    }

    /// `value` brought into the range and rounded to the nearest step: what a
    /// joystick or a slider wants.
    pub fn clamp(&self, value: i64) -> i64 {
        if self.max < self.min {
            return self.min;
        }
        round_to_step(
            value.clamp(self.min, self.max),
            self.min,
            self.max,
            self.step,
        )
    }
}

/// Rounds `value` (inside `min..=max`) to the nearest `min + k * step`, ties
/// away from `min`, never past `max`.
fn round_to_step(value: i64, min: i64, max: i64, step: u64) -> i64 {
    if step <= 1 {
        return value;
    }
    let step = step as i128;
    let offset = value as i128 - min as i128;
    let k = (offset + step / 2) / step;
    let mut rounded = min as i128 + k * step;
    if rounded > max as i128 {
        rounded -= step;
    }
    rounded.clamp(min as i128, max as i128) as i64
}

/// Where a [`CameraControls`] handle points.
struct Target {
    device: String,
    handle: Arc<Handle>,
}

/// A handle on a camera's controls that can be used from any thread while
/// another thread captures.
///
/// A handle from a [`crate::ReconnectingCamera`] follows the camera through
/// reconnects; while the camera is away, reads return nothing and writes fail
/// with [`DeviceError::NoCamera`].
#[derive(Clone, Default)]
pub struct CameraControls {
    target: Arc<Mutex<Option<Target>>>,
}

impl fmt::Debug for CameraControls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = self.device();
        f.debug_struct("CameraControls")
            .field("device", &device)
            .finish()
    }
}

impl CameraControls {
    /// A handle pointing nowhere.
    pub fn detached() -> Self {
        Self::default()
    }

    pub(crate) fn for_device(device: &str, handle: Arc<Handle>) -> Self {
        Self {
            target: Arc::new(Mutex::new(Some(Target {
                device: device.to_string(),
                handle,
            }))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Target>> {
        self.target.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Points this handle (and its clones) where `other` points.
    pub(crate) fn attach_to(&self, other: &CameraControls) {
        if Arc::ptr_eq(&self.target, &other.target) {
            return;
        }
        let new = other.lock().as_ref().map(|t| Target {
            device: t.device.clone(),
            handle: t.handle.clone(),
        });
        *self.lock() = new;
    }

    /// Points this handle (and its clones) nowhere.
    pub(crate) fn detach(&self) {
        *self.lock() = None;
    }

    /// The device the handle points at.
    pub fn device(&self) -> Option<String> {
        self.lock().as_ref().map(|t| t.device.clone())
    }

    /// The controls the camera has, among [`CameraControl::ALL`].
    pub fn list(&self) -> Vec<ControlInfo> {
        let guard = self.lock();
        let Some(target) = guard.as_ref() else {
            return Vec::new();
        };
        CameraControl::ALL
            .into_iter()
            .filter_map(|c| query(target, c).ok().flatten())
            .collect()
    }

    /// One control, or an error naming the device when it lacks it.
    pub fn get(&self, control: CameraControl) -> Result<ControlInfo, DeviceError> {
        let guard = self.lock();
        let target = guard.as_ref().ok_or_else(not_attached)?;
        query(target, control)?.ok_or_else(|| DeviceError::ControlUnsupported {
            device: target.device.clone(),
            control: control.name().into(),
        })
    }

    /// Sets a control, rounding to its step; values outside its range are an
    /// error. Returns the value set.
    pub fn set(&self, control: CameraControl, value: i64) -> Result<i64, DeviceError> {
        let guard = self.lock();
        let target = guard.as_ref().ok_or_else(not_attached)?;
        let info = query(target, control)?.ok_or_else(|| DeviceError::ControlUnsupported {
            device: target.device.clone(),
            control: control.name().into(),
        })?;
        if info.read_only {
            return Err(DeviceError::ControlNotWritable {
                device: target.device.clone(),
                control: control.name().into(),
                reason: "the control is read-only".into(),
            });
        }
        let value = info
            .validate(value)
            .map_err(|e| DeviceError::ControlOutOfRange {
                device: target.device.clone(),
                control: control.name().into(),
                value: e.value,
                min: e.min,
                max: e.max,
            })?;
        let raw = i32::try_from(value).map_err(|_| DeviceError::ControlOutOfRange {
            device: target.device.clone(),
            control: control.name().into(),
            value,
            min: i32::MIN as i64,
            max: i32::MAX as i64,
        })?;
        let mut ctrl = v4l_sys::v4l2_control {
            id: control.cid(),
            value: raw,
        };
        ioctl(&target.handle, v4l::v4l2::vidioc::VIDIOC_S_CTRL, &mut ctrl).map_err(|e| {
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EBUSY) {
                DeviceError::ControlNotWritable {
                    device: target.device.clone(),
                    control: control.name().into(),
                    reason: e.to_string(),
                }
            } else {
                DeviceError::io(&target.device, format!("setting {control}"), &e)
            }
        })?;
        Ok(value)
    }
}

fn not_attached() -> DeviceError {
    DeviceError::NoCamera {
        detail: "the camera is not streaming (unplugged or reconnecting)".into(),
    }
}

/// An ioctl on a V4L2 handle, retried on EINTR.
pub(crate) fn ioctl<T>(
    handle: &Handle,
    request: v4l::v4l2::vidioc::_IOC_TYPE,
    arg: &mut T,
) -> std::io::Result<()> {
    loop {
        // SAFETY: `arg` is a live, exclusively borrowed value of the type the
        // request expects (callers pair each request with its kernel struct),
        // and the fd stays open as long as `handle` lives.
        let result =
            unsafe { v4l::v4l2::ioctl(handle.fd(), request, arg as *mut T as *mut c_void) };
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// Queries one control: `Ok(None)` when the device does not have it.
fn query(target: &Target, control: CameraControl) -> Result<Option<ControlInfo>, DeviceError> {
    // SAFETY: v4l2_query_ext_ctrl is a plain C struct; all-zero is valid.
    let mut q: v4l_sys::v4l2_query_ext_ctrl = unsafe { std::mem::zeroed() };
    q.id = control.cid();
    match ioctl(
        &target.handle,
        v4l::v4l2::vidioc::VIDIOC_QUERY_EXT_CTRL,
        &mut q,
    ) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => {
            return Err(DeviceError::io(
                &target.device,
                format!("querying {control}"),
                &e,
            ));
        }
    }
    if q.flags & v4l_sys::V4L2_CTRL_FLAG_DISABLED != 0 {
        return Ok(None);
    }
    let integer_like = [
        v4l_sys::v4l2_ctrl_type_V4L2_CTRL_TYPE_INTEGER,
        v4l_sys::v4l2_ctrl_type_V4L2_CTRL_TYPE_BOOLEAN,
        v4l_sys::v4l2_ctrl_type_V4L2_CTRL_TYPE_MENU,
    ];
    if !integer_like.contains(&q.type_) {
        return Ok(None);
    }
    let write_only = q.flags & v4l_sys::V4L2_CTRL_FLAG_WRITE_ONLY != 0;
    let value = if write_only {
        q.default_value
    } else {
        let mut ctrl = v4l_sys::v4l2_control {
            id: control.cid(),
            value: 0,
        };
        ioctl(&target.handle, v4l::v4l2::vidioc::VIDIOC_G_CTRL, &mut ctrl)
            .map_err(|e| DeviceError::io(&target.device, format!("reading {control}"), &e))?;
        ctrl.value as i64
    };
    Ok(Some(ControlInfo {
        control,
        min: q.minimum,
        max: q.maximum,
        step: q.step,
        default: q.default_value,
        value,
        read_only: q.flags & v4l_sys::V4L2_CTRL_FLAG_READ_ONLY != 0,
        inactive: q.flags & v4l_sys::V4L2_CTRL_FLAG_INACTIVE != 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(min: i64, max: i64, step: u64) -> ControlInfo {
        ControlInfo {
            control: CameraControl::Pan,
            min,
            max,
            step,
            default: 0,
            value: 0,
            read_only: false,
            inactive: false,
        }
    }

    #[test]
    fn control_ids_are_the_v4l2_absolute_ones() {
        // Values from linux/v4l2-controls.h.
        let table = [
            (CameraControl::Brightness, 0x0098_0900),
            (CameraControl::Contrast, 0x0098_0901),
            (CameraControl::Pan, 0x009a_0908),
            (CameraControl::Tilt, 0x009a_0909),
            (CameraControl::Focus, 0x009a_090a),
            (CameraControl::AutoFocus, 0x009a_090c),
            (CameraControl::Zoom, 0x009a_090d),
        ];
        for (control, cid) in table {
            assert_eq!(control.cid(), cid, "{control}");
            assert_eq!(CameraControl::from_name(control.name()), Some(control));
        }
    }

    #[test]
    fn validation_rounds_to_the_step_and_refuses_out_of_range() {
        // A PTZ camera: pan -36000..=36000 arc seconds in steps of 3600.
        let pan = info(-36000, 36000, 3600);
        let table: &[(i64, Result<i64, OutOfRange>)] = &[
            (0, Ok(0)),
            (3600, Ok(3600)),
            (5000, Ok(3600)),
            (5400, Ok(7200)), // half a step rounds away from min
            (-5000, Ok(-3600)),
            (36000, Ok(36000)),
            (
                36001,
                Err(OutOfRange {
                    value: 36001,
                    min: -36000,
                    max: 36000,
                }),
            ),
            (
                -40000,
                Err(OutOfRange {
                    value: -40000,
                    min: -36000,
                    max: 36000,
                }),
            ),
        ];
        for &(value, want) in table {
            assert_eq!(pan.validate(value), want, "pan {value}");
        }
        // A range whose max is not on the grid: never round past max.
        let zoom = info(100, 505, 10);
        assert_eq!(zoom.validate(504), Ok(500));
        assert_eq!(zoom.validate(505), Ok(500));
        // Step 0 or 1: values pass unchanged.
        assert_eq!(info(0, 255, 0).validate(17), Ok(17));
        assert_eq!(info(0, 255, 1).validate(17), Ok(17));
    }

    #[test]
    fn clamping_brings_values_into_range_on_the_grid() {
        let zoom = info(100, 500, 50);
        assert_eq!(zoom.clamp(0), 100);
        assert_eq!(zoom.clamp(1000), 500);
        assert_eq!(zoom.clamp(320), 300);
        assert_eq!(zoom.clamp(330), 350);
        assert_eq!(info(0, 1, 1).clamp(7), 1);
        // Extreme values do not overflow.
        assert_eq!(info(i64::MIN, i64::MAX, 2).clamp(i64::MAX), i64::MAX - 1);
        assert_eq!(info(i64::MIN, i64::MAX, 3).clamp(i64::MAX), i64::MAX);
        assert_eq!(info(10, 0, 1).clamp(5), 10);
    }

    #[test]
    fn a_detached_handle_lists_nothing_and_refuses_to_set() {
        let controls = CameraControls::detached();
        assert!(controls.list().is_empty());
        assert!(matches!(
            controls.set(CameraControl::Zoom, 100),
            Err(DeviceError::NoCamera { .. })
        ));
        assert_eq!(controls.device(), None);
    }
}
