//! The playback path to a real ALSA PCM: Opus packets through the jitter buffer, decoder and
//! resampler to the `alsa` crate's playback, with alsa-lib's userspace `file` plugin standing
//! in for the sound card (no kernel driver needed): the bytes written are exactly the decoded
//! frames the chain handed out. And the capture chain reading a real ALSA capture PCM whose
//! data comes from a file.
//!
//! alsa-lib reads `ALSA_CONFIG_PATH` once, before the first ALSA call; this test binary is its
//! own process and sets it first.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use telecart_audio::jitter::JitterSettings;
use telecart_audio::{
    CaptureChain, CaptureSettings, MuteControl, OpusPayloadDecoder, PlaybackChain,
};
use telecart_codec::{AudioEncoder, OpusEncoder};
use telecart_core::media::{AudioFrame, CaptureTime};
use telecart_devices::{AlsaCapture, AlsaPlayback, AlsaSettings, AudioCapture, AudioPlayback};

fn tone(rate: u32, seconds: u32) -> Vec<i16> {
    (0..rate * seconds)
        .map(|i| {
            (9000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / f64::from(rate)).sin())
                as i16
        })
        .collect()
}

fn alsa_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("audio-alsa-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mic: Vec<u8> = tone(44_100, 3)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        std::fs::write(dir.join("mic44k.raw"), mic).unwrap();
        let system = "/usr/share/alsa/alsa.conf";
        assert!(
            Path::new(system).exists(),
            "{system} is missing: install libasound2 (alsa-lib)"
        );
        let d = dir.display();
        let config = format!(
            r#"<{system}>
pcm.audio_speaker {{
    type file
    slave.pcm null
    file "{d}/played.raw"
    format raw
}}
pcm.audio_mic {{
    type file
    slave.pcm null
    file "/dev/null"
    infile "{d}/mic44k.raw"
    format raw
}}
"#
        );
        let path = dir.join("asound.conf");
        std::fs::write(&path, config).unwrap();
        // SAFETY: once, before any ALSA call of this binary, which has no other threads yet
        // reading the environment (every test calls `alsa_dir()` first).
        unsafe { std::env::set_var("ALSA_CONFIG_PATH", &path) };
        dir
    })
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
fn decoded_remote_audio_reaches_the_alsa_device_byte_for_byte() {
    let dir = alsa_dir();
    let mut encoder = OpusEncoder::new(1, 32_000).unwrap();
    let pcm = tone(48_000, 2);
    let mut packets = Vec::new();
    for (k, block) in pcm.chunks_exact(480).enumerate() {
        let frame = AudioFrame {
            sample_rate: 48_000,
            channels: 1,
            samples: block.to_vec(),
            sequence: k as u64,
            capture_time: CaptureTime(0),
        };
        packets.extend(encoder.encode(&frame).unwrap());
    }
    let mut chain = PlaybackChain::new(
        Box::new(OpusPayloadDecoder::new().unwrap()),
        JitterSettings::default(),
        44_100, // the speaker runs at another rate than the codec
        2,
        None,
        true,
    )
    .unwrap();
    let start = Instant::now();
    let mut played = Vec::new();
    {
        let mut speaker = AlsaPlayback::open(&settings("audio_speaker", 44_100, 2)).unwrap();
        for k in 0..200usize {
            // One packet every 20 ms, every fifth packet missing.
            if k % 2 == 0 && k / 2 < packets.len() && (k / 2) % 5 != 3 {
                let p = &packets[k / 2];
                chain.insert(
                    (k / 2) as u16,
                    (k / 2 * 960) as u32,
                    start + Duration::from_millis(k as u64 * 10),
                    &p.data,
                );
            }
            let frame = chain.pull(CaptureTime(k as u64 * 10_000)).unwrap();
            assert_eq!(
                (frame.sample_rate, frame.channels, frame.samples.len()),
                (44_100, 2, 882)
            );
            speaker.write(&frame).unwrap();
            played.extend(frame.samples);
        }
        assert_eq!(speaker.xruns(), 0);
    }
    let written = std::fs::read(dir.join("played.raw")).unwrap();
    let expect: Vec<u8> = played.iter().flat_map(|s| s.to_le_bytes()).collect();
    assert_eq!(written.len(), expect.len());
    assert!(
        written == expect,
        "bytes written differ from the decoded frames"
    );
    let s = chain.stats();
    println!("ALSA playback: {} bytes, {s:?}", written.len());
    assert!(s.lost >= 15, "every fifth packet was missing: {s:?}");
    assert!(s.fec_recovered + s.concealed_samples / 960 >= 15);
    // Both channels carry the tone, at its level, once playing.
    let loud = played[played.len() / 2..]
        .iter()
        .map(|&s| i32::from(s).abs())
        .max()
        .unwrap();
    assert!(loud > 6000, "peak {loud}");
    assert_eq!(chain.take_tap().len(), 200);
}

#[test]
fn the_capture_chain_reads_a_real_alsa_capture_at_another_rate() {
    alsa_dir();
    let mut mic = AlsaCapture::open(&settings("audio_mic", 44_100, 1)).unwrap();
    let settings = CaptureSettings {
        device_rate: 48_000,
        ..CaptureSettings::default()
    };
    let mut chain = CaptureChain::new(settings, MuteControl::default()).unwrap();
    let mut frames = 0;
    let mut tap = 0;
    for _ in 0..200 {
        // Two seconds: less than the file holds (the plugin repeats stale data past its end).
        let block = mic.read().unwrap();
        let out = chain.process(&block).unwrap();
        frames += out.frames.len();
        tap += out.transcription.len();
    }
    let s = chain.stats();
    assert_eq!(s.rate_changes, 1, "{s:?}");
    assert_eq!(s.rate_mismatch_blocks, 200);
    assert!((195..=200).contains(&frames), "{frames}");
    assert!(tap >= 190, "{tap}");
}
