//! `bench audio`: CPU per 10 ms frame of our capture chain (high-pass + AEC3 + noise
//! suppression + AGC2 + Opus encode) and playback chain (jitter buffer + Opus decode + speaker
//! format), against GStreamer's `webrtcdsp` (Debian's WebRTC audio processing 0.3) doing the
//! same capture processing on the same audio in the same run.
//!
//! The audio: far-end speech (the bundled espeak-ng clip, looped) played into a synthetic room
//! (100 ms delay, reflections, -6 dB) and picked up with near-end speech (the same clip,
//! offset and reversed so it differs) and pink noise, all at 48 kHz mono. Ours runs frame by
//! frame in this process (CPU from `RUSAGE_SELF` around the chain, wall time per frame);
//! GStreamer runs as `gst-launch-1.0` (CPU from `RUSAGE_CHILDREN`), with a reference pipeline
//! that only reads, converts and Opus-encodes, so its DSP cost is the difference.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telecart_audio::capture::NoiseSuppressor;
use telecart_audio::jitter::JitterSettings;
use telecart_audio::{
    CaptureChain, CaptureSettings, FRAME_SAMPLES, MuteControl, OpusPayloadDecoder, PlaybackChain,
};
use telecart_codec::{AudioEncoder, OpusEncoder};
use telecart_core::media::{AudioFrame, CaptureTime};
use telecart_devices::{AudioCapture, SourceSettings, WavSource};

use crate::measure::{Stats, children_cpu, self_cpu, stats};

/// Options of `bench audio`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds of audio to process.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Opus bitrate, bit/s, for ours and GStreamer's opusenc.
    #[arg(long, default_value_t = 32_000)]
    bitrate: u32,
}

const RATE: u32 = 48_000;

struct Signals {
    far: Vec<i16>,
    mic: Vec<i16>,
}

fn signals(seconds: u32) -> anyhow::Result<Signals> {
    let settings = SourceSettings {
        sample_rate: RATE,
        channels: 1,
        period_ms: 10,
        paced: false,
    };
    let mut speech = WavSource::bundled(settings)?;
    let n = (RATE * seconds) as usize;
    let mut far = Vec::with_capacity(n);
    while far.len() < n {
        far.extend(speech.read()?.samples);
    }
    far.truncate(n);
    let delay = RATE as usize / 10;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut mic = Vec::with_capacity(n);
    let mut pink = 0f32;
    for i in 0..n {
        let tap = |d: usize, g: f32| {
            i.checked_sub(delay + d)
                .map_or(0.0, |j| f32::from(far[j]) * g)
        };
        let echo = tap(0, 0.5) + tap(150, 0.2) + tap(340, -0.1);
        let near = f32::from(far[(n - 1 - i + n / 3) % n]) * 0.4;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let white = ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
        pink = 0.97 * pink + 0.03 * white;
        mic.push((echo + near + pink * 3000.0).clamp(-32768.0, 32767.0) as i16);
    }
    Ok(Signals { far, mic })
}

fn write_wav(path: &Path, samples: &[i16]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for &s in samples {
        w.write_sample(s)?;
    }
    w.finalize()?;
    Ok(())
}

struct Row {
    name: String,
    frames: usize,
    cpu: Duration,
    wall: Duration,
    per_frame: Option<Stats>,
}

fn frame(samples: &[i16], k: usize) -> AudioFrame {
    AudioFrame {
        sample_rate: RATE,
        channels: 1,
        samples: samples.to_vec(),
        sequence: k as u64,
        capture_time: CaptureTime(k as u64 * 10_000),
    }
}

fn run_capture(
    name: &str,
    s: &Signals,
    settings: CaptureSettings,
    bitrate: Option<u32>,
) -> anyhow::Result<(Row, Vec<Vec<u8>>)> {
    let mut chain = CaptureChain::new(settings, MuteControl::default())?;
    let far_end = chain.far_end();
    let mut encoder = bitrate.map(|b| OpusEncoder::new(1, b)).transpose()?;
    let mut packets = Vec::new();
    let mut times = Vec::new();
    let mut cpu = Duration::ZERO;
    for (k, (f, m)) in s
        .far
        .chunks_exact(FRAME_SAMPLES)
        .zip(s.mic.chunks_exact(FRAME_SAMPLES))
        .enumerate()
    {
        let input = frame(m, k);
        let cpu0 = self_cpu();
        let t0 = Instant::now();
        far_end.push_i16(f);
        let out = chain.process(&input)?;
        if let Some(enc) = encoder.as_mut() {
            for f in &out.frames {
                packets.extend(enc.encode(f)?.into_iter().map(|p| p.data));
            }
        }
        times.push(t0.elapsed());
        cpu += self_cpu() - cpu0;
    }
    let st = chain.stats();
    println!(
        "  {name}: AEC3 reports ERLE {:?} dB, echo delay {:?} ms",
        st.erle_db.map(|e| e.round()),
        st.echo_delay_ms
    );
    Ok((
        Row {
            name: name.into(),
            frames: times.len(),
            cpu,
            wall: times.iter().sum(),
            per_frame: Some(stats(&times)),
        },
        packets,
    ))
}

fn run_playback(packets: &[Vec<u8>]) -> anyhow::Result<Row> {
    let mut chain = PlaybackChain::new(
        Box::new(OpusPayloadDecoder::new()?),
        JitterSettings::default(),
        RATE,
        2,
        None,
        true,
    )?;
    let start = Instant::now();
    let mut times = Vec::new();
    let mut cpu = Duration::ZERO;
    for k in 0..packets.len() * 2 {
        let cpu0 = self_cpu();
        let t0 = Instant::now();
        if k % 2 == 0 {
            let i = k / 2;
            chain.insert(
                i as u16,
                (i * 960) as u32,
                start + Duration::from_millis(k as u64 * 10),
                &packets[i],
            );
        }
        let out = chain.pull(CaptureTime(k as u64 * 10_000))?;
        std::hint::black_box(&out);
        let _ = chain.take_tap();
        times.push(t0.elapsed());
        cpu += self_cpu() - cpu0;
    }
    Ok(Row {
        name: "ours playback (jitter buffer + Opus decode + 16 kHz tap, 48k stereo out)".into(),
        frames: times.len(),
        cpu,
        wall: times.iter().sum(),
        per_frame: Some(stats(&times)),
    })
}

fn gst(name: &str, args: &[String], frames: usize) -> anyhow::Result<Row> {
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let out = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(args)
        .stdout(Stdio::null())
        .output()
        .context("running gst-launch-1.0")?;
    let wall = t0.elapsed();
    let cpu = children_cpu() - cpu0;
    if !out.status.success() {
        bail!(
            "gst-launch-1.0 {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Row {
        name: name.into(),
        frames,
        cpu,
        wall,
        per_frame: None,
    })
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn has_element(element: &str) -> bool {
    Command::new("gst-inspect-1.0")
        .arg(element)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ms_per_frame(row: &Row) -> f64 {
    row.cpu.as_secs_f64() * 1e3 / row.frames.max(1) as f64
}

fn print_rows(title: &str, rows: &[Row], against: &[(usize, usize)]) {
    println!();
    println!("{title}");
    println!(
        "{:<78} {:>10} {:>8} {:>7} {:>7} {:>8}",
        "chain", "CPU ms/f", "core %", "p50", "p95", "wall s"
    );
    for r in rows {
        let (p50, p95) = r.per_frame.map_or(("-".into(), "-".into()), |s| {
            (format!("{:.3}", s.p50), format!("{:.3}", s.p95))
        });
        let cpu = ms_per_frame(r);
        println!(
            "{:<78} {:>10.3} {:>7.1}% {:>7} {:>7} {:>8.2}",
            r.name,
            cpu,
            cpu / 10.0 * 100.0,
            p50,
            p95,
            r.wall.as_secs_f64()
        );
    }
    for &(a, b) in against {
        println!(
            "  ratio CPU {} / {} = {:.2}",
            rows[a].name,
            rows[b].name,
            ms_per_frame(&rows[a]) / ms_per_frame(&rows[b]).max(1e-9)
        );
    }
}

/// Runs `bench audio`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.seconds == 0 {
        bail!("--seconds must be positive");
    }
    println!(
        "bench audio: {} s of 48 kHz mono speech + echo (100 ms, -6 dB) + noise, 10 ms frames, Opus {} bit/s",
        args.seconds, args.bitrate
    );
    let s = signals(args.seconds)?;
    let frames = s.mic.len() / FRAME_SAMPLES;
    let dir = tempfile::tempdir()?;
    let far_wav = dir.path().join("far.wav");
    let mic_wav = dir.path().join("mic.wav");
    write_wav(&far_wav, &s.far)?;
    write_wav(&mic_wav, &s.mic)?;

    let full = CaptureSettings::default();
    let mut rows = Vec::new();
    let (row, packets) = run_capture(
        "ours: HPF + AEC3 + RNNoise + AGC2 + Opus encode",
        &s,
        full,
        Some(args.bitrate),
    )?;
    rows.push(row);
    let webrtc_ns = CaptureSettings {
        noise_suppression: NoiseSuppressor::Webrtc,
        ..full
    };
    rows.push(
        run_capture(
            "ours: HPF + AEC3 + WebRTC NS + AGC2 + Opus encode",
            &s,
            webrtc_ns,
            Some(args.bitrate),
        )?
        .0,
    );
    rows.push(
        run_capture(
            "ours: HPF + AEC3 + WebRTC NS + AGC2 (no encode)",
            &s,
            webrtc_ns,
            None,
        )?
        .0,
    );
    let playback = run_playback(&packets)?;

    let gst_ok = has_element("webrtcdsp") && has_element("opusenc");
    if !gst_ok {
        println!(
            "GStreamer webrtcdsp/opusenc not found (Debian gstreamer1.0-plugins-bad/-base): peer skipped"
        );
        print_rows("capture chain", &rows, &[]);
        print_rows("playback chain", &[playback], &[]);
        return Ok(());
    }
    let caps = "audio/x-raw,format=S16LE,rate=48000,channels=1";
    let far_src = format!(
        "filesrc location={} ! wavparse ! audioconvert ! {caps}",
        far_wav.display()
    );
    let mic_src = format!(
        "filesrc location={} ! wavparse ! audioconvert ! {caps}",
        mic_wav.display()
    );
    let enc = format!(
        "audioconvert ! opusenc bitrate={} frame-size=20 ! fakesink",
        args.bitrate
    );
    let dsp = "webrtcdsp echo-cancel=true noise-suppression=true noise-suppression-level=high gain-control=true high-pass-filter=true";
    rows.push(gst(
        "gst webrtcdsp (HPF + AEC + NS + AGC, lib 0.3) + opusenc",
        &words(&format!(
            "{far_src} ! webrtcechoprobe ! fakesink {mic_src} ! {dsp} ! {enc}"
        )),
        frames,
    )?);
    rows.push(gst(
        "gst reference: read + convert + opusenc, no DSP",
        &words(&format!("{far_src} ! fakesink {mic_src} ! {enc}")),
        frames,
    )?);
    let dsp_only = Row {
        name: "gst webrtcdsp alone (difference of the two above)".into(),
        frames,
        cpu: rows[3].cpu.saturating_sub(rows[4].cpu),
        wall: rows[3].wall.saturating_sub(rows[4].wall),
        per_frame: None,
    };
    rows.push(dsp_only);
    print_rows(
        "capture chain (CPU per 10 ms frame; core % = share of one core in real time)",
        &rows,
        &[(0, 3), (1, 3), (2, 5)],
    );

    // Playback: GStreamer decodes the same speech Opus-encoded into Ogg by its own opusenc.
    let ogg = dir.path().join("remote.ogg");
    gst(
        "encode",
        &words(&format!(
            "{mic_src} ! opusenc bitrate={} frame-size=20 ! oggmux ! filesink location={}",
            args.bitrate,
            ogg.display()
        )),
        frames,
    )?;
    let peer = gst(
        "gst playback: oggdemux + opusdec + audioconvert (48k stereo)",
        &words(&format!(
            "filesrc location={} ! oggdemux ! opusdec plc=true ! audioconvert ! audio/x-raw,channels=2 ! fakesink",
            ogg.display()
        )),
        frames,
    )?;
    print_rows("playback chain", &[playback, peer], &[(0, 1)]);
    Ok(())
}
