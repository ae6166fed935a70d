//! The real ALSA code path (alsa-lib through the `alsa` crate, hardware and
//! software parameters, `snd_pcm_readi`/`snd_pcm_writei`) without a sound
//! card: alsa-lib's userspace `file` plugin reads capture data from a file and
//! writes playback data to one, over the `null` PCM.
//!
//! alsa-lib reads its configuration from `ALSA_CONFIG_PATH` when it first
//! loads it, so the variable is set once, before any ALSA call, for this whole
//! test binary (its own process: tests in other files never see it). The
//! file includes the system's `alsa.conf` and then defines the test PCMs.
//!
//! Caveats of the plugin: no real-time pacing (seconds of audio move in
//! milliseconds), and reading past the end of `infile` returns stale data
//! rather than an error, so every test reads less than its input holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use telecart_core::{AudioFrame, CaptureTime};
use telecart_devices::{
    AlsaCapture, AlsaPlayback, AlsaSettings, AudioCapture, AudioPlayback, DeviceError,
};

/// The temporary directory holding the configuration and the data files.
fn alsa_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under the target directory, one folder a run; folders of earlier
        // runs are removed (a test binary cannot clean up after itself at exit).
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let prefix = "alsa-file-plugin-";
        if let Ok(entries) = std::fs::read_dir(base) {
            for entry in entries.flatten() {
                let old = entry.file_name().to_string_lossy().starts_with(prefix)
                    && entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().unwrap_or_default().as_secs() > 600);
                if old {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mono16k.raw"), to_bytes(&pattern(16_000, 1))).unwrap();
        std::fs::write(dir.join("stereo48k.raw"), to_bytes(&pattern(48_000, 2))).unwrap();
        let system = "/usr/share/alsa/alsa.conf";
        assert!(
            Path::new(system).exists(),
            "{system} is missing: install libasound2 (alsa-lib)"
        );
        let d = dir.display();
        let config = format!(
            r#"<{system}>
pcm.tc_cap_mono {{
    type file
    slave.pcm null
    file "/dev/null"
    infile "{d}/mono16k.raw"
    format raw
}}
pcm.tc_cap_stereo {{
    type file
    slave.pcm null
    file "/dev/null"
    infile "{d}/stereo48k.raw"
    format raw
}}
pcm.tc_play_stereo {{
    type file
    slave.pcm null
    file "{d}/played-stereo.raw"
    format raw
}}
pcm.tc_play_mono {{
    type file
    slave.pcm null
    file "{d}/played-mono.raw"
    format raw
}}
pcm.tc_mono_only {{
    type multi
    slaves.a {{ pcm "tc_cap_mono"; channels 1 }}
    bindings.0 {{ slave a; channel 0 }}
}}
"#
        );
        let path = dir.join("asound.conf");
        std::fs::write(&path, config).unwrap();
        // SAFETY: runs once, inside this OnceLock, before any test of this
        // binary touches ALSA or reads the environment; every test calls
        // `alsa_dir()` first, so no other thread is reading the environment.
        unsafe { std::env::set_var("ALSA_CONFIG_PATH", &path) };
        dir
    })
}

/// `seconds` of a recognisable pattern: every sample differs from its neighbours.
fn pattern(rate: u32, channels: u16) -> Vec<i16> {
    let n = rate as usize * channels as usize * 2; // two seconds
    (0..n)
        .map(|i| ((i as i64 * 7919 + (i as i64 / 3) * 13) % 65_536 - 32_768) as i16)
        .collect()
}

fn to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn settings(device: &str, rate: u32, channels: u16) -> AlsaSettings {
    AlsaSettings {
        device: device.into(),
        sample_rate: rate,
        channels,
        period_ms: 10,
        buffer_ms: 40,
    }
}

#[test]
fn capture_returns_the_files_samples_exactly_mono_16k() {
    alsa_dir();
    let mut mic = AlsaCapture::open(&settings("tc_cap_mono", 16_000, 1)).unwrap();
    let granted = mic.granted();
    assert_eq!((granted.sample_rate, granted.channels), (16_000, 1));
    assert_eq!(granted.period_frames, 160);
    assert!(
        mic.description()
            .starts_with("ALSA capture tc_cap_mono 16000 Hz 1 ch, 160 frames a period (10.0 ms)"),
        "{}",
        mic.description()
    );
    let mut got = Vec::new();
    for n in 0..100u64 {
        // One second: half of the input file.
        let frame = mic.read().unwrap();
        assert_eq!(frame.sequence, n);
        assert_eq!(
            (frame.sample_rate, frame.channels, frame.frames()),
            (16_000, 1, 160)
        );
        assert!(frame.capture_time > CaptureTime(0));
        got.extend(frame.samples);
    }
    let want = pattern(16_000, 1);
    assert_eq!(got.len(), 16_000);
    assert!(
        got == want[..16_000],
        "captured samples differ from the file"
    );
    assert_eq!(mic.xruns(), 0);
}

#[test]
fn capture_returns_the_files_samples_exactly_stereo_48k() {
    alsa_dir();
    let mut mic = AlsaCapture::open(&settings("tc_cap_stereo", 48_000, 2)).unwrap();
    assert_eq!(mic.granted().period_frames, 480);
    let mut got = Vec::new();
    for _ in 0..50 {
        let frame = mic.read().unwrap();
        assert_eq!((frame.channels, frame.samples.len()), (2, 960));
        got.extend(frame.samples);
    }
    let want = pattern(48_000, 2);
    assert!(
        got == want[..got.len()],
        "captured samples differ from the file"
    );
}

#[test]
fn playback_writes_the_frames_samples_exactly() {
    let dir = alsa_dir();
    let out = dir.join("played-stereo.raw");
    let source = pattern(48_000, 2);
    let blocks: Vec<AudioFrame> = source
        .chunks_exact(960)
        .take(60)
        .enumerate()
        .map(|(n, s)| AudioFrame {
            sample_rate: 48_000,
            channels: 2,
            samples: s.to_vec(),
            sequence: n as u64,
            capture_time: CaptureTime(0),
        })
        .collect();
    {
        let mut speaker = AlsaPlayback::open(&settings("tc_play_stereo", 48_000, 2)).unwrap();
        assert_eq!(speaker.granted().channels, 2);
        for block in &blocks {
            speaker.write(block).unwrap();
        }
        assert_eq!(speaker.xruns(), 0);
        // Dropping drains: everything queued reaches the file.
    }
    let written = std::fs::read(&out).unwrap();
    let want = to_bytes(&source[..60 * 960]);
    assert_eq!(written.len(), want.len());
    assert!(written == want, "played bytes differ from the frames");
}

#[test]
fn playback_of_a_frame_in_another_format_is_an_error_naming_both() {
    alsa_dir();
    let mut speaker = AlsaPlayback::open(&settings("tc_play_mono", 16_000, 1)).unwrap();
    let frame = AudioFrame {
        sample_rate: 48_000,
        channels: 2,
        samples: vec![0; 960],
        sequence: 0,
        capture_time: CaptureTime(0),
    };
    let err = speaker.write(&frame).unwrap_err();
    assert!(matches!(err, DeviceError::AudioFormatMismatch { .. }));
    assert_eq!(
        err.to_string(),
        "tc_play_mono: frame is 48000 Hz 2 ch but the device plays 16000 Hz 1 ch"
    );
}

#[test]
fn a_device_granting_fewer_channels_is_reported_and_frames_carry_the_truth() {
    alsa_dir();
    // The `multi` plugin here has exactly one channel.
    let mut mic = AlsaCapture::open(&settings("tc_mono_only", 16_000, 2)).unwrap();
    assert_eq!(mic.granted().channels, 1);
    assert!(
        mic.description()
            .ends_with("[granted 1 channels instead of 2]"),
        "{}",
        mic.description()
    );
    let frame = mic.read().unwrap();
    assert_eq!((frame.channels, frame.samples.len()), (1, 160));
}

#[test]
fn an_unknown_pcm_is_an_error_naming_it() {
    alsa_dir();
    let err = AlsaCapture::open(&settings("tc_no_such_pcm", 16_000, 1)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tc_no_such_pcm: snd_pcm_open failed"),
        "{err}"
    );
}
