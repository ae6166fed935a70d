//! Exercises the real device paths on a machine (or VM) that has them.
//!
//! ```text
//! devices-probe camera [DEVICE|auto] [WIDTHxHEIGHT@FPS] [FRAMES] [FORMAT]
//! devices-probe reconnect DEVICE SECONDS
//! devices-probe audio CAPTURE_PCM PLAYBACK_PCM
//! ```
//!
//! `camera` lists the V4L2 capture devices, opens one, prints the mode chosen
//! and the controls, captures frames and reports their rate, sequence and age
//! (FORMAT, such as `NV12`, restricts the formats considered).
//! `reconnect` reads frames through a [`ReconnectingCamera`] for SECONDS,
//! printing every status change: unplug the camera (or unbind its driver)
//! meanwhile.
//! `audio` plays a tone on one PCM while capturing from another (with
//! snd-aloop: `hw:Loopback,0,0` and `hw:Loopback,1,0`), then stalls the
//! capture for longer than its buffer to force an overrun and checks that
//! reading goes on.

use std::error::Error;
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use telecart_devices::mode::WantedMode;

use telecart_devices::{
    AlsaCapture, AlsaPlayback, AlsaSettings, AudioCapture, AudioPlayback, Backoff, CameraControl,
    CameraStatus, PixelFormat, ReconnectingCamera, SourceSettings, ToneSource, V4l2Camera,
    VideoCapture, scan_cameras,
};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("camera") => camera(&args[1..]),
        Some("audio") => audio(&args[1..]),
        Some("reconnect") => reconnect(&args[1..]),
        _ => {
            eprintln!("usage: devices-probe camera [DEVICE|auto] [WxH@FPS] [FRAMES] [FORMAT]");
            eprintln!("       devices-probe reconnect DEVICE SECONDS");
            eprintln!("       devices-probe audio CAPTURE_PCM PLAYBACK_PCM");
            std::process::exit(2);
        }
    }
}

fn parse_mode(text: &str) -> Option<WantedMode> {
    let (size, fps) = text.split_once('@')?;
    let (w, h) = size.split_once('x')?;
    Some(WantedMode {
        width: w.parse().ok()?,
        height: h.parse().ok()?,
        fps: fps.parse().ok()?,
    })
}

fn camera(args: &[String]) -> Result<(), Box<dyn Error>> {
    let scan = scan_cameras();
    println!("{} capture device(s)", scan.cameras.len());
    for camera in &scan.cameras {
        print!("{camera}");
    }
    for problem in &scan.problems {
        println!("unreadable: {problem}");
    }
    let device = args.first().map(String::as_str).unwrap_or("auto");
    let want = args
        .get(1)
        .and_then(|m| parse_mode(m))
        .unwrap_or(WantedMode {
            width: 1280,
            height: 720,
            fps: 30,
        });
    let frames: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(60);
    let formats: Vec<PixelFormat> = match args.get(3) {
        Some(code) => {
            let bytes: [u8; 4] = code
                .as_bytes()
                .try_into()
                .map_err(|_| format!("{code:?} is not a four-character code"))?;
            vec![PixelFormat::from_fourcc(bytes).ok_or(format!("{code} is not supported"))?]
        }
        None => PixelFormat::ALL.to_vec(),
    };
    let mut cam = if device == "auto" {
        V4l2Camera::open_first(want)?
    } else {
        V4l2Camera::open_with_formats(device, want, &formats)?
    };
    println!("opened: {}", cam.description());
    println!(
        "asked {want}: {}",
        cam.mismatch().unwrap_or("got exactly that")
    );
    for info in cam.controls() {
        println!(
            "control {}: {} (range {}..={} step {}, default {}{}{})",
            info.control,
            info.value,
            info.min,
            info.max,
            info.step,
            info.default,
            if info.read_only { ", read-only" } else { "" },
            if info.inactive { ", inactive" } else { "" }
        );
    }
    if let Some(brightness) = cam
        .controls()
        .into_iter()
        .find(|c| c.control == CameraControl::Brightness)
    {
        let target = brightness.clamp(brightness.value + 3 * brightness.step.max(1) as i64);
        let set = cam.set_control(CameraControl::Brightness, target)?;
        let now = cam
            .controls()
            .into_iter()
            .find(|c| c.control == CameraControl::Brightness)
            .map(|c| c.value);
        println!("brightness set to {set}, reads back {now:?}");
        match cam.set_control(CameraControl::Brightness, brightness.max + 1) {
            Err(e) => println!("out of range refused: {e}"),
            Ok(v) => println!("UNEXPECTED: out of range accepted as {v}"),
        }
        cam.set_control(CameraControl::Brightness, brightness.value)?;
    }
    let started = Instant::now();
    let mut worst_age = 0u64;
    for n in 0..frames {
        let frame = cam.next_frame()?;
        if frame.sequence != n {
            return Err(format!("frame {n} has sequence {}", frame.sequence).into());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros() as u64;
        worst_age = worst_age.max(now.saturating_sub(frame.capture_time.as_micros()));
        if n == 0 {
            let (y, u, v) = frame.planes();
            println!(
                "first frame {}x{}: Y[0..4]={:?} U[0]={} V[0]={}",
                frame.width,
                frame.height,
                &y[..4],
                u[0],
                v[0]
            );
            // The lower half of the picture (below any on-screen text): the
            // same scene captured in different formats must convert alike.
            let w = frame.width as usize;
            let h = frame.height as usize;
            let digest = fnv1a(
                y[w * h / 2..]
                    .iter()
                    .chain(&u[w * h / 8..])
                    .chain(&v[w * h / 8..]),
            );
            println!("lower-half digest {digest:016x}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{frames} frames in {elapsed:.2} s ({:.2} fps), {} bad frames, oldest frame at delivery {:.1} ms",
        frames as f64 / elapsed,
        cam.bad_frames(),
        worst_age as f64 / 1000.0
    );
    Ok(())
}

/// FNV-1a over bytes: a digest to compare pictures across runs.
fn fnv1a<'a>(bytes: impl Iterator<Item = &'a u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn audio(args: &[String]) -> Result<(), Box<dyn Error>> {
    let (Some(capture), Some(playback)) = (args.first(), args.get(1)) else {
        return Err("audio needs CAPTURE_PCM PLAYBACK_PCM".into());
    };
    let settings = |device: &str| AlsaSettings {
        device: device.into(),
        sample_rate: 48_000,
        channels: 2,
        period_ms: 10,
        buffer_ms: 40,
    };
    let mut speaker = AlsaPlayback::open(&settings(playback))?;
    let mut mic = AlsaCapture::open(&settings(capture))?;
    println!("{}", speaker.description());
    println!("{}", mic.description());
    let player = std::thread::spawn(move || -> Result<u64, String> {
        let tone_settings = SourceSettings {
            sample_rate: 48_000,
            channels: 2,
            period_ms: 10,
            paced: false,
        };
        let mut tone = ToneSource::new(tone_settings, 1000).map_err(|e| e.to_string())?;
        for _ in 0..300 {
            let frame = tone.read().map_err(|e| e.to_string())?;
            speaker.write(&frame).map_err(|e| e.to_string())?;
        }
        speaker.drain().map_err(|e| e.to_string())?;
        Ok(speaker.xruns())
    });
    let mut loud = 0usize;
    let mut total = 0usize;
    for n in 0..200 {
        let frame = mic.read()?;
        if n == 100 {
            // Stall far longer than the 40 ms buffer: the driver overruns.
            std::thread::sleep(Duration::from_millis(300));
        }
        total += frame.samples.len();
        loud += frame
            .samples
            .iter()
            .filter(|s| s.unsigned_abs() > 4000)
            .count();
    }
    let played_xruns = player.join().map_err(|_| "player panicked")??;
    println!(
        "captured {total} samples, {loud} above 4000 (tone present: {}), capture xruns {}, playback xruns {played_xruns}",
        loud > total / 10,
        mic.xruns()
    );
    if mic.xruns() == 0 {
        return Err("the forced overrun was not seen".into());
    }
    Ok(())
}

fn reconnect(args: &[String]) -> Result<(), Box<dyn Error>> {
    let device = args
        .first()
        .cloned()
        .unwrap_or_else(|| "/dev/video0".into());
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let want = WantedMode {
        width: 640,
        height: 480,
        fps: 25,
    };
    let opener = move || -> Result<Box<dyn VideoCapture>, telecart_devices::DeviceError> {
        Ok(Box::new(V4l2Camera::open(&device, want)?))
    };
    let started = Instant::now();
    let mut cam = ReconnectingCamera::new(
        opener,
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(800),
        },
        move |status: &CameraStatus| {
            println!("[{:6.2} s] {status:?}", started.elapsed().as_secs_f64());
        },
        Arc::new(AtomicBool::new(false)),
    );
    let mut last = None;
    let mut count = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let frame = cam.next_frame()?;
        if let Some(prev) = last
            && frame.sequence != prev + 1
        {
            return Err(format!("sequence jumped from {prev} to {}", frame.sequence).into());
        }
        last = Some(frame.sequence);
        count += 1;
    }
    println!("{count} frames, sequence 0..={}", last.unwrap_or(0));
    Ok(())
}
