//! Clinical sentences spoken by espeak-ng, transcribed by the whole pipeline (conversion to
//! 16 kHz, VAD, whisper.cpp with the converted tiny.en model, vocabulary): word error rate
//! within the measured bound, and the medical terms highlighted.
#![allow(clippy::unwrap_used)]

mod common;

use telecart_transcribe::segmenter::CutterConfig;
use telecart_transcribe::{DecodeConfig, Side, read_wav_16k, transcribe_samples};

/// Measured on this set with tiny.en and the vocabulary prompt: 18.8 % (22 of 117 words), nearly
/// all of it in drug names as espeak-ng pronounces them ("aspirin and nitroglycerin" came out
/// as "a drink and I truly see"); the ten sentences without a rare drug name come out exact.
/// The bound leaves room for whisper.cpp builds that round differently (SIMD paths differ
/// between machines), not for a broken pipeline: a wrong model, a bad resampler or a cut in
/// the middle of words pushes it far above (each of those was seen above 60 %).
const MAX_WER: f64 = 0.25;
/// Measured: 24 of 31 listed terms highlighted (the misses are the misrecognised drugs).
const MIN_TERMS_FOUND: f64 = 0.70;

#[test]
fn clinical_sentences_are_transcribed_and_terms_highlighted() {
    let model = common::model();
    let dir = tempfile::tempdir().unwrap();
    let mut errors = 0;
    let mut words = 0;
    let mut terms_expected = 0;
    let mut terms_found = 0;
    for (n, sentence) in common::sentences().iter().enumerate() {
        let wav = common::speak(dir.path(), &format!("s{n}"), &sentence.text);
        let recording = read_wav_16k(&wav).unwrap();
        assert!(
            recording.original.starts_with("22050 Hz 1 ch"),
            "{}",
            recording.original
        );
        let captions = transcribe_samples(
            &model,
            &recording.samples,
            Side::Remote,
            CutterConfig::default(),
            DecodeConfig::default(),
        )
        .unwrap();
        assert!(!captions.is_empty(), "no caption for {:?}", sentence.text);
        let text: Vec<&str> = captions.iter().map(|c| c.text.as_str()).collect();
        let text = text.join(" ");
        let (e, w) = common::word_errors(&sentence.text, &text);
        errors += e;
        words += w;
        let highlighted: Vec<&str> = captions
            .iter()
            .flat_map(|c| c.highlights.iter().map(|h| h.term.as_str()))
            .collect();
        for term in &sentence.terms {
            terms_expected += 1;
            if highlighted.contains(&term.as_str()) {
                terms_found += 1;
            }
        }
        for c in &captions {
            assert!(c.is_final && c.side == Side::Remote);
            assert!(c.end_ms > c.start_ms);
            for h in &c.highlights {
                assert!(c.text.is_char_boundary(h.start) && c.text.is_char_boundary(h.end));
            }
        }
        println!(
            "{e}/{w} errors  ref: {}\n             got: {}",
            sentence.text,
            captions
                .iter()
                .map(|c| c.marked("[", "]"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let wer = errors as f64 / words as f64;
    println!(
        "WER {:.1} % ({errors}/{words} words); terms highlighted {terms_found}/{terms_expected}",
        wer * 100.0
    );
    assert!(
        wer <= MAX_WER,
        "WER {:.1} % over the {:.0} % bound",
        wer * 100.0,
        MAX_WER * 100.0
    );
    assert!(
        terms_found as f64 >= terms_expected as f64 * MIN_TERMS_FOUND,
        "only {terms_found} of {terms_expected} medical terms highlighted"
    );
}
