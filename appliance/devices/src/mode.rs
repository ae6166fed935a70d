//! Choosing a camera mode (format, size, frame rate): pure functions over what
//! a device reports, so every rule is tested with tables and no device.
//!
//! The rules, in order:
//! 1. the exact size asked for, when any format offers it;
//! 2. a rate that reaches the one asked for (exactly, or faster), else the fastest;
//! 3. among formats that tie, the uncompressed ones (cheapest conversion first:
//!    YU12, NV12, YUYV), MJPEG only when it alone reaches the rate at that size
//!    (typical of USB webcams at 720p30, whose YUYV stops at 10 fps);
//! 4. without the exact size, the nearest size that covers it (downscaling
//!    later loses nothing), else the largest smaller one (never upscale when
//!    avoidable); the mismatch is reported.

use std::cmp::Ordering;
use std::fmt;

use crate::convert::PixelFormat;

/// A V4L2 frame interval: `numerator / denominator` seconds a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fraction {
    /// Numerator (seconds).
    pub numerator: u32,
    /// Denominator.
    pub denominator: u32,
}

impl Fraction {
    /// `numerator / denominator` seconds a frame.
    pub const fn new(numerator: u32, denominator: u32) -> Self {
        Self {
            numerator,
            denominator,
        }
    }

    /// The interval of `fps` frames a second.
    pub const fn per_second(fps: u32) -> Self {
        Self::new(1, fps)
    }

    /// Frames per second; 0 for a degenerate fraction.
    pub fn fps(self) -> f64 {
        if self.numerator == 0 || self.denominator == 0 {
            0.0
        } else {
            self.denominator as f64 / self.numerator as f64
        }
    }

    /// Compares the rates of two intervals exactly (a faster rate is greater).
    fn cmp_rate(self, other: Fraction) -> Ordering {
        // fps = den/num: compare den_a * num_b with den_b * num_a.
        let a = self.denominator as u64 * other.numerator as u64;
        let b = other.denominator as u64 * self.numerator as u64;
        a.cmp(&b)
    }

    fn is_valid(self) -> bool {
        self.numerator != 0 && self.denominator != 0
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", FpsDisplay(self.fps()))
    }
}

/// Frames per second printed as `30`, `12.5` or `29.97`.
pub(crate) struct FpsDisplay(pub(crate) f64);

impl fmt::Display for FpsDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:.2}", self.0);
        let text = text.trim_end_matches('0').trim_end_matches('.');
        f.write_str(text)
    }
}

/// Frame sizes a device reports for a format (`VIDIOC_ENUM_FRAMESIZES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSizes {
    /// One size.
    Discrete {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// Any size on a grid (continuous when the steps are 1).
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width step.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height step.
        step_height: u32,
    },
}

impl fmt::Display for FrameSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameSizes::Discrete { width, height } => write!(f, "{width}x{height}"),
            FrameSizes::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => write!(
                f,
                "{min_width}x{min_height} to {max_width}x{max_height} in steps of {step_width}x{step_height}"
            ),
        }
    }
}

/// Frame intervals a device reports for a format and size (`VIDIOC_ENUM_FRAMEINTERVALS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameIntervals {
    /// One interval.
    Discrete(Fraction),
    /// Any interval from `min` (fastest) to `max` (slowest) on a grid.
    Stepwise {
        /// Shortest interval (highest rate).
        min: Fraction,
        /// Longest interval (lowest rate).
        max: Fraction,
        /// Step.
        step: Fraction,
    },
}

impl fmt::Display for FrameIntervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameIntervals::Discrete(i) => write!(f, "{i} fps"),
            FrameIntervals::Stepwise { min, max, .. } => write!(f, "{max} to {min} fps"),
        }
    }
}

/// One size of one format, and the rates the device offers at that size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeOffer {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Rates at this size; empty when the driver does not enumerate them.
    pub intervals: Vec<FrameIntervals>,
}

/// What the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WantedMode {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl fmt::Display for WantedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{} @ {} fps", self.width, self.height, self.fps)
    }
}

/// How a chosen rate relates to the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RateFit {
    /// The rate asked for.
    Exact,
    /// Faster than asked (the slowest such rate the device offers).
    Faster,
    /// The driver lists no rates; the rate asked for will be requested.
    Unknown,
    /// Slower than asked (the fastest rate the device offers).
    Slower,
}

/// The mode picked by [`choose_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeChoice {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Interval to request.
    pub interval: Fraction,
    /// How the rate relates to the one asked for.
    pub rate_fit: RateFit,
    /// The size is the one asked for.
    pub size_exact: bool,
}

impl ModeChoice {
    /// Differences from what was asked, in words; `None` when there are none.
    pub fn mismatch(&self, want: &WantedMode) -> Option<String> {
        let mut parts = Vec::new();
        if !self.size_exact {
            let how = if self.width >= want.width && self.height >= want.height {
                "the nearest larger size"
            } else {
                "the largest smaller size (nothing larger is offered)"
            };
            parts.push(format!(
                "size {}x{} instead of {}x{}: {how}",
                self.width, self.height, want.width, want.height
            ));
        }
        match self.rate_fit {
            RateFit::Exact | RateFit::Unknown => {}
            RateFit::Faster => parts.push(format!(
                "{} fps instead of {} (the device has no {} fps mode at this size)",
                self.interval, want.fps, want.fps
            )),
            RateFit::Slower => parts.push(format!(
                "{} fps instead of {}: the fastest this size allows",
                self.interval, want.fps
            )),
        }
        if parts.is_empty() {
            None
        } else {
            Some(parts.join("; "))
        }
    }
}

impl fmt::Display for ModeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{} @ {} fps",
            self.format, self.width, self.height, self.interval
        )
    }
}

/// The sizes worth trying from one [`FrameSizes`] entry for the wanted size:
/// the size itself when it is on the grid, else the nearest grid sizes around
/// it. Only even sizes are returned (I420 needs them).
pub fn fit_sizes(sizes: &FrameSizes, want_width: u32, want_height: u32) -> Vec<(u32, u32)> {
    match *sizes {
        FrameSizes::Discrete { width, height } => {
            if width > 0 && height > 0 && width.is_multiple_of(2) && height.is_multiple_of(2) {
                vec![(width, height)]
            } else {
                Vec::new()
            }
        }
        FrameSizes::Stepwise {
            min_width,
            max_width,
            step_width,
            min_height,
            max_height,
            step_height,
        } => {
            let ws = grid_points(want_width, min_width, max_width, step_width);
            let hs = grid_points(want_height, min_height, max_height, step_height);
            let mut out = Vec::new();
            for &w in &ws {
                for &h in &hs {
                    out.push((w, h));
                }
            }
            out
        }
    }
}

/// The even points of `min, min+step, ..., <= max` nearest to `want`: `want`
/// itself if on the grid, else the ones just below and above it.
fn grid_points(want: u32, min: u32, max: u32, step: u32) -> Vec<u32> {
    let step = step.max(1) as u64;
    let (min64, max64, want64) = (min as u64, max as u64, want as u64);
    if max64 < min64 || max64 == 0 {
        return Vec::new();
    }
    let on_grid = |v: u64| v >= min64 && v <= max64 && (v - min64).is_multiple_of(step);
    let mut out = Vec::new();
    if on_grid(want64) && want64.is_multiple_of(2) && want64 > 0 {
        out.push(want);
        return out;
    }
    // Walk down and up from `want` to the nearest even grid points.
    let clamped = want64.clamp(min64, max64);
    let below = min64 + (clamped - min64) / step * step;
    let mut candidates = Vec::new();
    let mut v = below;
    for _ in 0..4 {
        candidates.push(v);
        if v < min64 + step {
            break;
        }
        v -= step;
    }
    let mut v = below + step;
    for _ in 0..4 {
        if v > max64 {
            break;
        }
        candidates.push(v);
        v += step;
    }
    let even: Vec<u64> = candidates
        .into_iter()
        .filter(|&v| v > 0 && v.is_multiple_of(2) && on_grid(v))
        .collect();
    if let Some(&lo) = even.iter().filter(|&&v| v <= want64).max() {
        out.push(lo as u32);
    }
    if let Some(&hi) = even.iter().filter(|&&v| v > want64).min() {
        out.push(hi as u32);
    }
    out
}

/// The interval to request from an offer's intervals, and how it fits.
pub fn fit_interval(intervals: &[FrameIntervals], fps: u32) -> (Fraction, RateFit) {
    let want = Fraction::per_second(fps.max(1));
    let mut faster: Option<Fraction> = None; // slowest of the faster ones
    let mut slower: Option<Fraction> = None; // fastest of the slower ones
    let mut consider = |i: Fraction| {
        match i.cmp_rate(want) {
            Ordering::Equal => return Some(i),
            Ordering::Greater => {
                if faster.is_none_or(|f| i.cmp_rate(f) == Ordering::Less) {
                    faster = Some(i);
                }
            }
            Ordering::Less => {
                if slower.is_none_or(|s| i.cmp_rate(s) == Ordering::Greater) {
                    slower = Some(i);
                }
            }
        }
        None
    };
    for entry in intervals {
        match *entry {
            FrameIntervals::Discrete(i) if i.is_valid() => {
                if let Some(exact) = consider(i) {
                    return (exact, RateFit::Exact);
                }
            }
            FrameIntervals::Discrete(_) => {}
            FrameIntervals::Stepwise { min, max, .. } if min.is_valid() && max.is_valid() => {
                // `min` is the fastest rate. Inside the range the driver rounds
                // to its grid; asking for the exact rate is the best request.
                if want.cmp_rate(min) != Ordering::Greater && want.cmp_rate(max) != Ordering::Less {
                    return (want, RateFit::Exact);
                }
                consider(min);
                consider(max);
            }
            FrameIntervals::Stepwise { .. } => {}
        }
    }
    if let Some(f) = faster {
        (f, RateFit::Faster)
    } else if let Some(s) = slower {
        (s, RateFit::Slower)
    } else {
        (want, RateFit::Unknown)
    }
}

/// Picks the best mode among `offers` for `want`; `None` when no offer is usable.
pub fn choose_mode(offers: &[ModeOffer], want: &WantedMode) -> Option<ModeChoice> {
    let want_area = want.width as u64 * want.height as u64;
    let mut best: Option<(SortKey, ModeChoice)> = None;
    for offer in offers {
        if offer.width == 0
            || offer.height == 0
            || !offer.width.is_multiple_of(2)
            || !offer.height.is_multiple_of(2)
        {
            continue;
        }
        let (interval, rate_fit) = fit_interval(&offer.intervals, want.fps);
        let size_exact = offer.width == want.width && offer.height == want.height;
        let covers = offer.width >= want.width && offer.height >= want.height;
        let area = offer.width as u64 * offer.height as u64;
        let size_class = if size_exact {
            0
        } else if covers {
            1
        } else {
            2
        };
        let size_distance = area.abs_diff(want_area);
        // Millihertz short of the wanted rate (0 when reached).
        let rate_deficit = if rate_fit == RateFit::Slower {
            ((want.fps as f64 - interval.fps()) * 1000.0).max(1.0) as u64
        } else {
            0
        };
        // Millihertz above the wanted rate, to prefer the closest faster one.
        let rate_excess = if rate_fit == RateFit::Faster {
            ((interval.fps() - want.fps as f64) * 1000.0).max(0.0) as u64
        } else {
            0
        };
        let key = SortKey {
            size_class,
            rate_deficit,
            size_distance,
            format: offer.format,
            rate_fit,
            rate_excess,
            width: offer.width,
            height: offer.height,
        };
        let choice = ModeChoice {
            format: offer.format,
            width: offer.width,
            height: offer.height,
            interval,
            rate_fit,
            size_exact,
        };
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, choice));
        }
    }
    best.map(|(_, c)| c)
}

/// Lower is better; fields compared in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    size_class: u8,
    rate_deficit: u64,
    size_distance: u64,
    format: PixelFormat,
    rate_fit: RateFit,
    rate_excess: u64,
    width: u32,
    height: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use PixelFormat::*;

    fn fps(list: &[u32]) -> Vec<FrameIntervals> {
        list.iter()
            .map(|&f| FrameIntervals::Discrete(Fraction::per_second(f)))
            .collect()
    }

    fn offer(format: PixelFormat, width: u32, height: u32, rates: &[u32]) -> ModeOffer {
        ModeOffer {
            format,
            width,
            height,
            intervals: fps(rates),
        }
    }

    fn want(width: u32, height: u32, fps: u32) -> WantedMode {
        WantedMode { width, height, fps }
    }

    /// A typical UVC webcam: YUYV is slow above VGA, MJPEG reaches 30 fps everywhere.
    fn usb_webcam() -> Vec<ModeOffer> {
        vec![
            offer(Yuyv, 640, 480, &[30, 15]),
            offer(Yuyv, 1280, 720, &[10, 5]),
            offer(Yuyv, 1920, 1080, &[5]),
            offer(Mjpeg, 640, 480, &[30, 15]),
            offer(Mjpeg, 1280, 720, &[30, 15]),
            offer(Mjpeg, 1920, 1080, &[30, 15]),
        ]
    }

    /// vivid's webcam input: 640x480 at 25 fps and 1280x720 at 12.5 fps in many raw formats.
    fn vivid_webcam() -> Vec<ModeOffer> {
        let rates = vec![
            FrameIntervals::Discrete(Fraction::new(2, 25)),
            FrameIntervals::Discrete(Fraction::new(1, 5)),
        ];
        let mut out = Vec::new();
        for format in [Yuyv, Nv12, Yu12] {
            out.push(offer(format, 320, 180, &[50, 25]));
            out.push(offer(format, 640, 480, &[25, 12]));
            out.push(ModeOffer {
                format,
                width: 1280,
                height: 720,
                intervals: rates.clone(),
            });
        }
        out
    }

    #[test]
    fn mode_choice_table() {
        struct Case {
            name: &'static str,
            offers: Vec<ModeOffer>,
            want: WantedMode,
            got: (PixelFormat, u32, u32, Fraction, RateFit),
        }
        let f = Fraction::per_second;
        let cases = vec![
            Case {
                name: "usb webcam 720p30: only MJPEG reaches the rate",
                offers: usb_webcam(),
                want: want(1280, 720, 30),
                got: (Mjpeg, 1280, 720, f(30), RateFit::Exact),
            },
            Case {
                name: "usb webcam VGA30: uncompressed reaches it, so YUYV",
                offers: usb_webcam(),
                want: want(640, 480, 30),
                got: (Yuyv, 640, 480, f(30), RateFit::Exact),
            },
            Case {
                name: "usb webcam 720p10: YUYV reaches a low rate",
                offers: usb_webcam(),
                want: want(1280, 720, 10),
                got: (Yuyv, 1280, 720, f(10), RateFit::Exact),
            },
            Case {
                name: "usb webcam 720p12: YUYV too slow, MJPEG 15 is the closest faster",
                offers: usb_webcam(),
                want: want(1280, 720, 12),
                got: (Mjpeg, 1280, 720, f(15), RateFit::Faster),
            },
            Case {
                name: "YU12 beats NV12 beats YUYV when all reach the rate",
                offers: vec![
                    offer(Yuyv, 1280, 720, &[30]),
                    offer(Nv12, 1280, 720, &[30]),
                    offer(Yu12, 1280, 720, &[30]),
                    offer(Mjpeg, 1280, 720, &[30]),
                ],
                want: want(1280, 720, 30),
                got: (Yu12, 1280, 720, f(30), RateFit::Exact),
            },
            Case {
                name: "NV12 preferred over YUYV",
                offers: vec![offer(Yuyv, 1280, 720, &[30]), offer(Nv12, 1280, 720, &[30])],
                want: want(1280, 720, 30),
                got: (Nv12, 1280, 720, f(30), RateFit::Exact),
            },
            Case {
                name: "vivid 720p30 asked: exact size at its only rate, 12.5 fps",
                offers: vivid_webcam(),
                want: want(1280, 720, 30),
                got: (Yu12, 1280, 720, Fraction::new(2, 25), RateFit::Slower),
            },
            Case {
                name: "vivid VGA 25",
                offers: vivid_webcam(),
                want: want(640, 480, 25),
                got: (Yu12, 640, 480, f(25), RateFit::Exact),
            },
            Case {
                name: "no exact size: the nearest larger one, not a smaller one",
                offers: vec![
                    offer(Yuyv, 640, 480, &[30]),
                    offer(Yuyv, 1920, 1080, &[30]),
                    offer(Yuyv, 1600, 1200, &[30]),
                ],
                want: want(1280, 720, 30),
                got: (Yuyv, 1600, 1200, f(30), RateFit::Exact),
            },
            Case {
                name: "nothing larger: the largest smaller size",
                offers: vec![offer(Yuyv, 320, 240, &[30]), offer(Yuyv, 640, 480, &[30])],
                want: want(1280, 720, 30),
                got: (Yuyv, 640, 480, f(30), RateFit::Exact),
            },
            Case {
                name: "among larger sizes, reaching the rate wins over being closer",
                offers: vec![
                    offer(Yuyv, 1600, 1200, &[10]),
                    offer(Mjpeg, 1920, 1080, &[30]),
                ],
                want: want(1280, 720, 30),
                got: (Mjpeg, 1920, 1080, f(30), RateFit::Exact),
            },
            Case {
                name: "only faster rates: the slowest of them",
                offers: vec![offer(Nv12, 1280, 720, &[120, 60])],
                want: want(1280, 720, 30),
                got: (Nv12, 1280, 720, f(60), RateFit::Faster),
            },
            Case {
                name: "only slower rates: the fastest of them",
                offers: vec![offer(Nv12, 1280, 720, &[5, 15, 10])],
                want: want(1280, 720, 30),
                got: (Nv12, 1280, 720, f(15), RateFit::Slower),
            },
            Case {
                name: "NTSC-style 30000/1001 is faster than 29 and slower than 30",
                offers: vec![ModeOffer {
                    format: Yuyv,
                    width: 1280,
                    height: 720,
                    intervals: vec![FrameIntervals::Discrete(Fraction::new(1001, 30000))],
                }],
                want: want(1280, 720, 30),
                got: (Yuyv, 1280, 720, Fraction::new(1001, 30000), RateFit::Slower),
            },
            Case {
                name: "stepwise intervals containing the rate give the exact rate",
                offers: vec![ModeOffer {
                    format: Nv12,
                    width: 1280,
                    height: 720,
                    intervals: vec![FrameIntervals::Stepwise {
                        min: Fraction::new(1, 60),
                        max: Fraction::new(1, 1),
                        step: Fraction::new(1, 1_000_000),
                    }],
                }],
                want: want(1280, 720, 30),
                got: (Nv12, 1280, 720, f(30), RateFit::Exact),
            },
            Case {
                name: "stepwise intervals too slow give their fastest end",
                offers: vec![ModeOffer {
                    format: Nv12,
                    width: 1280,
                    height: 720,
                    intervals: vec![FrameIntervals::Stepwise {
                        min: Fraction::new(1, 20),
                        max: Fraction::new(1, 1),
                        step: Fraction::new(1, 1_000_000),
                    }],
                }],
                want: want(1280, 720, 30),
                got: (Nv12, 1280, 720, f(20), RateFit::Slower),
            },
            Case {
                name: "no rates listed: request the wanted one",
                offers: vec![offer(Yuyv, 1280, 720, &[])],
                want: want(1280, 720, 30),
                got: (Yuyv, 1280, 720, f(30), RateFit::Unknown),
            },
            Case {
                name: "odd sizes and degenerate intervals are skipped",
                offers: vec![
                    offer(Yu12, 1279, 720, &[30]),
                    ModeOffer {
                        format: Yuyv,
                        width: 640,
                        height: 480,
                        intervals: vec![
                            FrameIntervals::Discrete(Fraction::new(0, 30)),
                            FrameIntervals::Discrete(Fraction::new(1, 15)),
                        ],
                    },
                ],
                want: want(1280, 720, 30),
                got: (Yuyv, 640, 480, f(15), RateFit::Slower),
            },
        ];
        for case in cases {
            let got = choose_mode(&case.offers, &case.want)
                .unwrap_or_else(|| panic!("{}: no choice", case.name));
            assert_eq!(
                (
                    got.format,
                    got.width,
                    got.height,
                    got.interval,
                    got.rate_fit
                ),
                case.got,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn nothing_usable_is_none() {
        assert_eq!(choose_mode(&[], &want(1280, 720, 30)), None);
        assert_eq!(
            choose_mode(&[offer(Yuyv, 641, 480, &[30])], &want(640, 480, 30)),
            None
        );
    }

    #[test]
    fn mismatches_are_described() {
        let choice = choose_mode(&vivid_webcam(), &want(1280, 720, 30)).unwrap();
        assert_eq!(
            choice.mismatch(&want(1280, 720, 30)).as_deref(),
            Some("12.5 fps instead of 30: the fastest this size allows")
        );
        assert_eq!(choice.to_string(), "YU12 1280x720 @ 12.5 fps");
        let choice = choose_mode(&usb_webcam(), &want(1280, 720, 30)).unwrap();
        assert_eq!(choice.mismatch(&want(1280, 720, 30)), None);
        let choice = choose_mode(&[offer(Yuyv, 640, 480, &[30])], &want(1280, 720, 30)).unwrap();
        assert_eq!(
            choice.mismatch(&want(1280, 720, 30)).as_deref(),
            Some(
                "size 640x480 instead of 1280x720: the largest smaller size (nothing larger is offered)"
            )
        );
    }

    #[test]
    fn stepwise_sizes_fit_the_wanted_size() {
        let continuous = FrameSizes::Stepwise {
            min_width: 16,
            max_width: 4096,
            step_width: 1,
            min_height: 16,
            max_height: 2160,
            step_height: 1,
        };
        assert_eq!(fit_sizes(&continuous, 1280, 720), vec![(1280, 720)]);
        let grid = FrameSizes::Stepwise {
            min_width: 32,
            max_width: 1920,
            step_width: 96,
            min_height: 32,
            max_height: 1088,
            step_height: 16,
        };
        // Widths on the grid: 32 + 96k -> 1184 and 1280 (1280 = 32 + 13*96).
        assert_eq!(fit_sizes(&grid, 1280, 720), vec![(1280, 720)]);
        // 1300 is off-grid: 1280 below, 1376 above; 730 off-grid: 720 and 736.
        assert_eq!(
            fit_sizes(&grid, 1300, 730),
            vec![(1280, 720), (1280, 736), (1376, 720), (1376, 736)]
        );
        // Larger than the maximum: the maximum only.
        assert_eq!(fit_sizes(&grid, 4000, 3000), vec![(1856, 1088)]);
        // Odd grid (step 3 from 1): only even points are returned.
        let odd = FrameSizes::Stepwise {
            min_width: 1,
            max_width: 100,
            step_width: 3,
            min_height: 2,
            max_height: 2,
            step_height: 1,
        };
        assert_eq!(fit_sizes(&odd, 50, 2), vec![(46, 2), (52, 2)]);
        // Discrete odd sizes are unusable.
        assert!(
            fit_sizes(
                &FrameSizes::Discrete {
                    width: 175,
                    height: 144
                },
                176,
                144
            )
            .is_empty()
        );
        // Nonsense ranges give nothing rather than a panic.
        let broken = FrameSizes::Stepwise {
            min_width: 100,
            max_width: 10,
            step_width: 0,
            min_height: 0,
            max_height: 0,
            step_height: 0,
        };
        assert!(fit_sizes(&broken, 1280, 720).is_empty());
    }

    #[test]
    fn fps_prints_without_trailing_zeros() {
        assert_eq!(Fraction::new(1, 30).to_string(), "30");
        assert_eq!(Fraction::new(2, 25).to_string(), "12.5");
        assert_eq!(Fraction::new(1001, 30000).to_string(), "29.97");
        assert_eq!(Fraction::new(0, 30).to_string(), "0");
    }
}
