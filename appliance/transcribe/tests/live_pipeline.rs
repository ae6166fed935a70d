//! The live transcriber on real speech from two sides: 22.05 kHz PCM blocks in (converted
//! inside), partials while speaking, labelled finals with capture times, counters; and the
//! bad inputs a call can throw at it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use telecart_core::{AudioFrame, CaptureTime};
use telecart_transcribe::{
    Caption, Side, TranscribeError, Transcriber, TranscriberConfig, WhisperModel,
};

const T0: u64 = 1_773_000_000_000_000;
const RATE: u32 = 22_050;
const BLOCK: usize = 441; // 20 ms

fn speech(dir: &std::path::Path, name: &str, text: &str) -> Vec<i16> {
    let wav = common::speak(dir, name, text);
    hound::WavReader::open(wav)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

fn frame(samples: &[i16], block: u64) -> AudioFrame {
    AudioFrame {
        sample_rate: RATE,
        channels: 1,
        samples: samples.to_vec(),
        sequence: block,
        capture_time: CaptureTime(T0 + block * 20_000),
    }
}

fn collect(captions: &telecart_transcribe::Captions) -> Vec<Caption> {
    let mut out = Vec::new();
    while let Some(c) = captions.recv() {
        out.push(c);
    }
    out
}

#[test]
fn two_sides_take_turns_and_each_gets_labelled_timed_captions() {
    let model = common::model();
    let dir = tempfile::tempdir().unwrap();
    let sentences = common::sentences();
    // Cart, remote, cart, remote: each side's stream is silent while the other speaks.
    let turns = [
        (Side::Cart, &sentences[0]),
        (Side::Remote, &sentences[2]),
        (Side::Cart, &sentences[6]),
        (Side::Remote, &sentences[11]),
    ];
    let gap = vec![0i16; RATE as usize];
    let mut cart = gap.clone();
    let mut remote = gap.clone();
    let mut spoken = Vec::new();
    for (n, (side, sentence)) in turns.iter().enumerate() {
        let pcm = speech(dir.path(), &format!("t{n}"), &sentence.text);
        let start_ms = cart.len() as u64 * 1000 / RATE as u64;
        let (talker, listener) = match side {
            Side::Cart => (&mut cart, &mut remote),
            Side::Remote => (&mut remote, &mut cart),
        };
        talker.extend_from_slice(&pcm);
        listener.extend(std::iter::repeat_n(0, pcm.len()));
        let end_ms = cart.len() as u64 * 1000 / RATE as u64;
        spoken.push((*side, sentence.text.clone(), start_ms, end_ms));
        cart.extend_from_slice(&gap);
        remote.extend_from_slice(&gap);
    }
    let config = TranscriberConfig {
        call_start: CaptureTime(T0),
        input_queue_blocks: 4096,
        ..TranscriberConfig::default()
    };
    let (input, captions) = Transcriber::start(&model, config).unwrap();
    for (block, (c, r)) in cart.chunks(BLOCK).zip(remote.chunks(BLOCK)).enumerate() {
        assert!(input.push(Side::Cart, frame(c, block as u64)));
        assert!(input.push(Side::Remote, frame(r, block as u64)));
    }
    drop(input);
    let all = collect(&captions);
    let finals: Vec<&Caption> = all.iter().filter(|c| c.is_final).collect();
    for c in &all {
        println!(
            "{:>6} ms – {:>6} ms {:>6} {} {}",
            c.start_ms,
            c.end_ms,
            c.side.label(),
            if c.is_final { "final  " } else { "partial" },
            c.marked("[", "]")
        );
    }
    assert_eq!(finals.len(), turns.len(), "one final per turn");
    for ((side, text, start_ms, end_ms), caption) in spoken.iter().zip(&finals) {
        assert_eq!(caption.side, *side, "{text}");
        let (errors, words) = common::word_errors(text, &caption.text);
        assert!(
            errors * 4 <= words,
            "{text:?} came out as {:?}",
            caption.text
        );
        // espeak leaves ~100 ms of quiet at each end; the cut is within half a second.
        assert!(caption.start_ms + 500 >= *start_ms && caption.start_ms <= start_ms + 500);
        assert!(caption.end_ms + 500 >= *end_ms && caption.end_ms <= end_ms + 500);
        assert!(!caption.highlights.is_empty(), "{:?}", caption.text);
    }
    // Partials never come after their utterance's final.
    for (i, c) in all.iter().enumerate() {
        if !c.is_final {
            assert!(
                all[i..]
                    .iter()
                    .any(|f| f.is_final && f.id == c.id && f.side == c.side)
            );
        }
    }
    let stats = captions.stats();
    assert_eq!(stats.blocks_refused, 0);
    assert_eq!(stats.utterances, turns.len() as u64);
    captions.join();
}

#[test]
fn partial_captions_arrive_while_the_person_is_still_speaking() {
    let model = common::model();
    let dir = tempfile::tempdir().unwrap();
    let pcm = speech(
        dir.path(),
        "long",
        "The patient reports chest pain since yesterday morning, and she feels dizziness and nausea after every meal.",
    );
    let (input, captions) = Transcriber::start(&model, TranscriberConfig::default()).unwrap();
    let mut lead = vec![0i16; RATE as usize / 2];
    lead.extend_from_slice(&pcm[..RATE as usize * 5 / 2]);
    let mut block = 0;
    for chunk in lead.chunks(BLOCK) {
        assert!(input.push(Side::Cart, frame(chunk, block)));
        block += 1;
    }
    // The speaker has not finished: whatever comes now is a partial.
    let partial = captions
        .recv_timeout(Duration::from_secs(120))
        .unwrap()
        .expect("a partial caption");
    println!("partial: {}", partial.marked("[", "]"));
    assert!(!partial.is_final);
    assert_eq!(partial.side, Side::Cart);
    assert!(
        common::normalize(&partial.text)
            .iter()
            .any(|w| w == "patient" || w == "reports")
    );
    let mut rest = pcm[RATE as usize * 5 / 2..].to_vec();
    rest.extend(vec![0i16; RATE as usize]);
    for chunk in rest.chunks(BLOCK) {
        input.push(Side::Cart, frame(chunk, block));
        block += 1;
    }
    drop(input);
    let later = collect(&captions);
    let last = later.last().unwrap();
    assert!(last.is_final && last.id == partial.id);
    println!("final: {}", last.marked("[", "]"));
    let terms: Vec<&str> = last.highlights.iter().map(|h| h.term.as_str()).collect();
    for term in ["chest pain", "dizziness", "nausea"] {
        assert!(terms.contains(&term), "{term} not in {terms:?}");
    }
}

#[test]
fn hours_of_silence_and_malformed_blocks_produce_no_captions() {
    let model = common::model();
    let (input, captions) = Transcriber::start(&model, TranscriberConfig::default()).unwrap();
    // Three hours of a quiet room in one-second blocks; a caller that is told "dropped" may
    // retry, which this one does so that all of it goes through.
    let second: Vec<f32> = (0..16_000)
        .map(|i| ((i * 7919) % 200) as f32 * 1e-5)
        .collect();
    for s in 0..3 * 3600u64 {
        while !input.push_16k(
            Side::Remote,
            second.clone(),
            CaptureTime(T0 + s * 1_000_000),
        ) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for (rate, channels, len) in [
        (0, 1, 160),
        (16_000, 0, 160),
        (48_000, 2, 961),
        (10_000_000, 1, 160),
    ] {
        let block = AudioFrame {
            sample_rate: rate,
            channels,
            samples: vec![1000; len],
            sequence: 0,
            capture_time: CaptureTime(T0),
        };
        // The queue may still be full of the silence above on a loaded machine.
        while !input.push(Side::Cart, block.clone()) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(input);
    assert!(collect(&captions).is_empty());
    let stats = captions.stats();
    assert_eq!(stats.blocks_refused, 4);
    assert_eq!(stats.utterances, 0);
}

#[test]
fn a_missing_truncated_or_wrong_model_is_a_clear_error() {
    let real = common::model_path();
    assert!(real.is_file(), "run tests/setup.sh first");
    let dir = tempfile::tempdir().unwrap();
    // Truncated past the header checks: whisper.cpp itself must refuse it, without crashing.
    let bytes = std::fs::read(&real).unwrap();
    let truncated = dir.path().join("truncated.bin");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = WhisperModel::load(&truncated, None).unwrap_err();
    assert!(matches!(err, TranscribeError::ModelCorrupt { .. }), "{err}");
    println!("{err}");
    // A model that loads but is not the pinned one.
    let err = WhisperModel::load(&real, Some(&"0".repeat(64))).unwrap_err();
    assert!(
        matches!(err, TranscribeError::ModelChecksum { .. }),
        "{err}"
    );
    println!("{err}");
    let missing = dir.path().join("none.bin");
    let err = WhisperModel::load(&missing, None).unwrap_err();
    assert!(err.to_string().contains("tests/setup.sh"), "{err}");
}
