//! `bench transcribe`: our captioning pipeline against whisper.cpp's own C API on the same
//! speech, same model, same decoding settings, same thread count.
//!
//! The clinical sentence set is spoken by espeak-ng and joined into one passage with pauses.
//! 1. Recording: ours (`transcribe_samples`: VAD cuts, one whisper_full per utterance) and
//!    the peer (`whisper_peer batch`: one whisper_full over the passage, as whisper-cli does
//!    on a file): wall time, real-time factor, CPU, peak memory, word error rate.
//! 2. Per utterance: each sentence decoded alone by our `Decoder` and by the peer
//!    (`whisper_peer utterance`): the decode time that follows the end of speech.
//! 3. Live (ours; the peer has no streaming mode): the passage pushed in real time, 20 ms
//!    blocks at 22.05 kHz (converted inside), through `Transcriber`; latency from pushing a
//!    sentence's last spoken sample to receiving its final caption, and CPU while live.
//!
//! The peer is built by tests/setup.d/transcribe.sh from the whisper.cpp source whisper-rs-sys
//! vendors (1.8.3), so both sides run the same C++ code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telecart_core::{AudioFrame, CaptureTime};
use telecart_transcribe::segmenter::CutterConfig;
use telecart_transcribe::{
    DecodeConfig, Decoder, Side, Transcriber, TranscriberConfig, WhisperModel, default_model_path,
    read_wav_16k, transcribe_samples,
};

use crate::measure::{children_cpu, self_cpu, stats};

const SENTENCES: &str = include_str!("../../transcribe/tests/data/clinical_sentences.tsv");
const RATE: usize = 16_000;

/// Options of `bench transcribe`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The ggml model (default: as `cartctl transcribe` finds it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// whisper.cpp threads, ours and the peer's.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// The peer binary (default: $TELECART_WHISPER_PEER or .work/whisper-peer/whisper_peer).
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Pause between sentences in the passage, ms.
    #[arg(long, default_value_t = 900)]
    pause_ms: u64,
    /// Use only the first N sentences of the set (all 15 by default).
    #[arg(long)]
    sentences: Option<usize>,
    /// Skip the live run (it takes as long as the passage).
    #[arg(long)]
    no_live: bool,
}

fn peak_rss_kib(who: libc::c_int) -> u64 {
    // SAFETY: `rusage` is plain old data and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live rusage.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss.max(0) as u64
}

fn find_peer(arg: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(p) = arg {
        return Some(p.clone());
    }
    if let Some(p) = std::env::var_os("TELECART_WHISPER_PEER") {
        return Some(PathBuf::from(p));
    }
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let candidate = dir.join(".work/whisper-peer/whisper_peer");
        if candidate.is_file() {
            return Some(candidate);
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn normalize(text: &str) -> Vec<String> {
    const NUMBERS: [&str; 11] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    text.to_lowercase()
        .replace(['-', '/'], " ")
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .map(|w| match w.parse::<usize>() {
            Ok(n) if n <= 10 => NUMBERS[n].to_string(),
            _ => w,
        })
        .collect()
}

fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = normalize(reference);
    strsim::generic_levenshtein(&r, &normalize(hypothesis)) as f64 / r.len().max(1) as f64
}

fn write_f32(path: &Path, samples: &[f32]) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for s in samples {
        file.write_all(&s.to_le_bytes())?;
    }
    file.flush()?;
    Ok(())
}

/// One sentence's audio and where its speech ends.
struct Clip {
    text: String,
    samples: Vec<f32>,
    /// Index just past the last sample above the noise.
    speech_end: usize,
}

fn speak(dir: &Path, n: usize, text: &str) -> anyhow::Result<Clip> {
    let wav = dir.join(format!("s{n}.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .context("espeak-ng is needed (apt-get install espeak-ng)")?;
    if !status.success() {
        bail!("espeak-ng failed on {text:?}");
    }
    let samples = read_wav_16k(&wav)?.samples;
    let speech_end = samples
        .iter()
        .rposition(|x| x.abs() > 0.01)
        .map_or(0, |i| i + 1);
    Ok(Clip {
        text: text.to_string(),
        samples,
        speech_end,
    })
}

/// Runs the peer and returns (per-file ms, per-file text, wall time, child CPU, child peak RSS).
struct PeerRun {
    ms: Vec<f64>,
    texts: Vec<String>,
    wall: Duration,
    cpu: Duration,
    peak_kib: u64,
}

fn run_peer(
    peer: &Path,
    model: &Path,
    threads: u32,
    prompt: &str,
    mode: &str,
    files: &[PathBuf],
) -> anyhow::Result<PeerRun> {
    let cpu0 = children_cpu();
    let started = Instant::now();
    let out = Command::new(peer)
        .arg(model)
        .arg(threads.to_string())
        .arg(prompt)
        .arg(mode)
        .args(files)
        .output()
        .with_context(|| format!("running {}", peer.display()))?;
    let wall = started.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            peer.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut ms = Vec::new();
    let mut texts = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (t, text) = line.split_once('\t').unwrap_or((line, ""));
        ms.push(t.parse().unwrap_or(0.0));
        texts.push(text.trim().to_string());
    }
    Ok(PeerRun {
        ms,
        texts,
        wall,
        cpu: children_cpu().saturating_sub(cpu0),
        peak_kib: peak_rss_kib(libc::RUSAGE_CHILDREN),
    })
}

/// The passage: sentences with pauses of low noise; returns samples and each sentence's
/// speech-end index.
fn passage(clips: &[Clip], pause: usize) -> (Vec<f32>, Vec<usize>, String) {
    let mut samples = vec![0.0005f32; pause];
    let mut ends = Vec::new();
    let mut text = Vec::new();
    for clip in clips {
        let start = samples.len();
        samples.extend_from_slice(&clip.samples);
        ends.push(start + clip.speech_end);
        samples.extend(std::iter::repeat_n(0.0005f32, pause));
        text.push(clip.text.as_str());
    }
    (samples, ends, text.join(" "))
}

fn ratio(ours: f64, peer: f64) -> String {
    if peer > 0.0 {
        format!("{:.2}", ours / peer)
    } else {
        "-".into()
    }
}

/// Runs the benchmark.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let model_path = args.model.clone().unwrap_or_else(default_model_path);
    let dir = tempfile::tempdir()?;
    let load_started = Instant::now();
    let model = WhisperModel::load(&model_path, None)?;
    let load_time = load_started.elapsed();
    let decode = DecodeConfig {
        threads: args.threads,
        ..DecodeConfig::default()
    };
    let clips: Vec<Clip> = SENTENCES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(args.sentences.unwrap_or(usize::MAX).max(1))
        .enumerate()
        .map(|(n, l)| speak(dir.path(), n, l.split('\t').next().unwrap_or(l)))
        .collect::<anyhow::Result<_>>()?;
    let pause = (args.pause_ms as usize * RATE / 1000).max(RATE / 10);
    let (audio, ends, reference) = passage(&clips, pause);
    let seconds = audio.len() as f64 / RATE as f64;
    println!(
        "model {} ({}), {} threads; passage: {} espeak-ng sentences, {:.1} s; model load {:.0} ms",
        model_path.display(),
        model.info().kind(),
        args.threads,
        clips.len(),
        seconds,
        load_time.as_secs_f64() * 1e3
    );

    // 1. The recording.
    let cpu0 = self_cpu();
    let started = Instant::now();
    let captions = transcribe_samples(
        &model,
        &audio,
        Side::Remote,
        CutterConfig::default(),
        decode.clone(),
    )?;
    let ours_wall = started.elapsed();
    let ours_cpu = self_cpu().saturating_sub(cpu0);
    let ours_text: Vec<&str> = captions.iter().map(|c| c.text.as_str()).collect();
    let ours_wer = wer(&reference, &ours_text.join(" "));
    let ours_peak = peak_rss_kib(libc::RUSAGE_SELF);

    let peer = find_peer(args.peer.as_ref());
    let passage_file = dir.path().join("passage.f32");
    write_f32(&passage_file, &audio)?;
    let peer_batch = match &peer {
        Some(p) => Some(run_peer(
            p,
            &model_path,
            args.threads,
            &decode.prompt,
            "batch",
            &[passage_file],
        )?),
        None => {
            println!("whisper_peer not found (run tests/setup.sh): the peer is skipped");
            None
        }
    };
    println!();
    println!("recording ({seconds:.1} s)          wall ms   RTF    CPU ms  peak MiB  WER %");
    println!(
        "  ours (VAD + per utterance) {:>8.0} {:>6.3} {:>8.0} {:>8.0} {:>6.1}",
        ours_wall.as_secs_f64() * 1e3,
        ours_wall.as_secs_f64() / seconds,
        ours_cpu.as_secs_f64() * 1e3,
        ours_peak as f64 / 1024.0,
        ours_wer * 100.0
    );
    if let Some(p) = &peer_batch {
        let decode_ms = p.ms.first().copied().unwrap_or(0.0);
        let peer_wer = wer(&reference, &p.texts.join(" "));
        println!(
            "  whisper.cpp (one pass)     {:>8.0} {:>6.3} {:>8.0} {:>8.0} {:>6.1}   (process wall {:.0} ms incl. model load)",
            decode_ms,
            decode_ms / 1e3 / seconds,
            p.cpu.as_secs_f64() * 1e3,
            p.peak_kib as f64 / 1024.0,
            peer_wer * 100.0,
            p.wall.as_secs_f64() * 1e3
        );
        println!(
            "  ratio ours/peer            {:>8} {:>6} {:>8} {:>8}",
            ratio(ours_wall.as_secs_f64() * 1e3, decode_ms),
            "",
            ratio(ours_cpu.as_secs_f64(), p.cpu.as_secs_f64()),
            ratio(ours_peak as f64, p.peak_kib as f64)
        );
    }

    // 2. Per utterance.
    let stop = Arc::new(AtomicBool::new(false));
    let mut decoder = Decoder::new(&model, decode.clone(), stop)?;
    let mut ours_ms = Vec::new();
    let mut partial_ms = Vec::new();
    let mut files = Vec::new();
    let mut utterance_errors = 0.0;
    let mut partial_errors = 0.0;
    for (n, clip) in clips.iter().enumerate() {
        let started = Instant::now();
        let text = decoder.transcribe(&clip.samples)?;
        ours_ms.push(started.elapsed());
        utterance_errors += wer(&clip.text, &text);
        let started = Instant::now();
        let partial = decoder.transcribe_partial(&clip.samples)?;
        partial_ms.push(started.elapsed());
        partial_errors += wer(&clip.text, &partial);
        let file = dir.path().join(format!("s{n}.f32"));
        write_f32(&file, &clip.samples)?;
        files.push(file);
    }
    let ours_stats = stats(&ours_ms);
    println!();
    println!(
        "per utterance ({} sentences)   mean ms   p50 ms   p95 ms  WER %",
        clips.len()
    );
    println!(
        "  ours, final (full window)  {:>8.0} {:>8.0} {:>8.0} {:>6.1}",
        ours_stats.mean,
        ours_stats.p50,
        ours_stats.p95,
        utterance_errors / clips.len() as f64 * 100.0
    );
    let partial_stats = stats(&partial_ms);
    println!(
        "  ours, partial (fitted)     {:>8.0} {:>8.0} {:>8.0} {:>6.1}   (window: the audio + 1 s, at least {:?})",
        partial_stats.mean,
        partial_stats.p50,
        partial_stats.p95,
        partial_errors / clips.len() as f64 * 100.0,
        decode.partial_window.unwrap_or(Duration::from_secs(30))
    );
    if let Some(p) = &peer {
        let run = run_peer(
            p,
            &model_path,
            args.threads,
            &decode.prompt,
            "utterance",
            &files,
        )?;
        let peer_durations: Vec<Duration> = run
            .ms
            .iter()
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
            .collect();
        let peer_stats = stats(&peer_durations);
        let peer_wer: f64 = clips
            .iter()
            .zip(&run.texts)
            .map(|(c, t)| wer(&c.text, t))
            .sum::<f64>()
            / clips.len() as f64;
        println!(
            "  whisper.cpp                {:>8.0} {:>8.0} {:>8.0} {:>6.1}",
            peer_stats.mean,
            peer_stats.p50,
            peer_stats.p95,
            peer_wer * 100.0
        );
        println!(
            "  ratio ours final/peer      {:>8} {:>8} {:>8}",
            ratio(ours_stats.mean, peer_stats.mean),
            ratio(ours_stats.p50, peer_stats.p50),
            ratio(ours_stats.p95, peer_stats.p95)
        );
        println!(
            "  ratio ours partial/peer    {:>8} {:>8} {:>8}",
            ratio(partial_stats.mean, peer_stats.mean),
            ratio(partial_stats.p50, peer_stats.p50),
            ratio(partial_stats.p95, peer_stats.p95)
        );
    }

    // 3. Live.
    if !args.no_live {
        live(&model, decode, &audio, &ends)?;
    }
    Ok(())
}

/// Pushes the passage in real time and measures end-of-speech to final-caption latency.
fn live(
    model: &WhisperModel,
    decode: DecodeConfig,
    audio: &[f32],
    ends: &[usize],
) -> anyhow::Result<()> {
    // The transcriber converts rates itself: feed it what espeak-ng and many mics give.
    const LIVE_RATE: usize = 22_050;
    let pcm: Vec<i16> = {
        // 16 kHz -> 22.05 kHz by linear interpolation: a benchmark input, not a product path.
        let n = audio.len() * LIVE_RATE / RATE;
        (0..n)
            .map(|i| {
                let x = i as f64 * RATE as f64 / LIVE_RATE as f64;
                let (j, f) = (x as usize, x.fract() as f32);
                let a = audio[j.min(audio.len() - 1)];
                let b = audio[(j + 1).min(audio.len() - 1)];
                ((a + (b - a) * f) * 32767.0) as i16
            })
            .collect()
    };
    let config = TranscriberConfig {
        decode,
        ..TranscriberConfig::default()
    };
    let (input, captions) = Transcriber::start(model, config)?;
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        while let Some(c) = captions.recv() {
            got.push((Instant::now(), c));
        }
        (got, captions.stats())
    });
    let block = LIVE_RATE / 50;
    let started = Instant::now();
    let cpu0 = self_cpu();
    let mut end_pushed = vec![None; ends.len()];
    for (n, chunk) in pcm.chunks(block).enumerate() {
        let due = started + Duration::from_millis(n as u64 * 20);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        input.push(
            Side::Remote,
            AudioFrame {
                sample_rate: LIVE_RATE as u32,
                channels: 1,
                samples: chunk.to_vec(),
                sequence: n as u64,
                capture_time: CaptureTime(n as u64 * 20_000),
            },
        );
        let pushed_until = (n + 1) * block * RATE / LIVE_RATE;
        for (i, end) in ends.iter().enumerate() {
            if end_pushed[i].is_none() && pushed_until >= *end {
                end_pushed[i] = Some(Instant::now());
            }
        }
    }
    drop(input);
    let wall = started.elapsed();
    let (got, counters) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("caption receiver panicked"))?;
    let cpu = self_cpu().saturating_sub(cpu0);
    // Match each sentence to the first final whose end lies within a second of its end.
    let mut latencies = Vec::new();
    let mut first_partials = 0;
    for (i, end) in ends.iter().enumerate() {
        let end_ms = (*end * 1000 / RATE) as u64;
        let Some(pushed) = end_pushed[i] else {
            continue;
        };
        if let Some((at, _)) = got
            .iter()
            .find(|(_, c)| c.is_final && c.end_ms.abs_diff(end_ms) <= 1000)
        {
            latencies.push(at.saturating_duration_since(pushed));
        }
        if got
            .iter()
            .any(|(_, c)| !c.is_final && c.end_ms <= end_ms && c.end_ms + 4000 >= end_ms)
        {
            first_partials += 1;
        }
    }
    let s = stats(&latencies);
    println!();
    println!(
        "live ({:.1} s pushed in real time at 22.05 kHz; {} finals, {} partials, {} partials given up for a final; dropped: {} blocks, {} finals, {} captions)",
        wall.as_secs_f64(),
        got.iter().filter(|(_, c)| c.is_final).count(),
        got.iter().filter(|(_, c)| !c.is_final).count(),
        counters.partials_preempted,
        counters.blocks_dropped,
        counters.finals_dropped,
        counters.captions_dropped
    );
    println!(
        "  end of speech -> final caption: mean {:.0} ms, p50 {:.0} ms, p95 {:.0} ms ({} of {} sentences matched; {} had a partial while speaking)",
        s.mean,
        s.p50,
        s.p95,
        latencies.len(),
        ends.len(),
        first_partials
    );
    println!(
        "  CPU while live: {:.0} % of one core ({:.1} s CPU over {:.1} s)",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        cpu.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "  (the peer has no streaming mode; its per-utterance decode time above is the part of this latency it would share)"
    );
    Ok(())
}
