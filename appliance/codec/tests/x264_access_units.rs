//! Access-unit splitting on real multi-slice streams made by x264 (GStreamer's x264enc), judged
//! by an independent decoder (openh264's): every unit must decode to exactly one picture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openh264::decoder::Decoder;
use telecart_codec::h264::{self, AccessUnitAssembler, split_access_units};

const WITH_AUD: &[u8] = include_bytes!("data/x264-320x240-3slices-aud.h264");
const WITHOUT_AUD: &[u8] = include_bytes!("data/x264-320x240-2slices-noaud-high.h264");

fn slices_per_unit(unit: &[u8]) -> usize {
    h264::nal_units(unit).filter(|n| n.is_vcl()).count()
}

/// Decodes each unit on its own and counts pictures per unit.
fn pictures_per_unit(units: &[&[u8]]) -> Vec<usize> {
    let mut decoder = Decoder::new().unwrap();
    units
        .iter()
        .map(|u| usize::from(decoder.decode(u).unwrap().is_some()))
        .collect()
}

fn check(stream: &[u8], slices: usize, keyframes: &[usize]) {
    let units = split_access_units(stream);
    assert_eq!(units.len(), 30);
    assert_eq!(units.concat(), stream, "units tile the stream");
    for (i, unit) in units.iter().enumerate() {
        assert_eq!(slices_per_unit(unit), slices, "unit {i}");
        assert_eq!(h264::contains_idr(unit), keyframes.contains(&i), "unit {i}");
    }
    assert_eq!(pictures_per_unit(&units), vec![1; 30]);

    // The same units come out of the streaming assembler fed one NAL unit at a time, as a
    // hardware encoder that hands out slices in separate buffers would.
    let mut assembler = AccessUnitAssembler::new();
    let mut assembled = Vec::new();
    for nal in h264::nal_units(stream) {
        let mut chunk = vec![0, 0, 1];
        chunk.extend_from_slice(nal.data);
        assembled.extend(assembler.push(&chunk));
    }
    assembled.extend(assembler.end_of_picture());
    assert_eq!(assembled.len(), 30);
    for (a, u) in assembled.iter().zip(&units) {
        let a_nals: Vec<_> = h264::nal_units(&a.data).map(|n| n.data).collect();
        let u_nals: Vec<_> = h264::nal_units(u).map(|n| n.data).collect();
        assert_eq!(a_nals, u_nals);
        assert_eq!(a.keyframe, h264::contains_idr(u));
    }
}

#[test]
fn x264_with_delimiters_three_slices_per_picture() {
    check(WITH_AUD, 3, &[0, 15]);
    // x264's default for I420 input is High profile.
    let sps = h264::sps_profile(WITH_AUD).unwrap();
    assert!(sps.is_high(), "{sps:?}");
}

#[test]
fn x264_without_delimiters_split_on_first_mb() {
    // No access-unit delimiters: only first_mb_in_slice == 0 tells pictures apart.
    assert!(!h264::nal_units(WITHOUT_AUD).any(|n| n.nal_type() == Some(h264::nal_type::AUD)));
    check(WITHOUT_AUD, 2, &[0, 10, 20]);
}

#[test]
fn splitting_per_slice_would_be_wrong() {
    // What a per-slice splitter would hand a decoder: 90 "units" for 30 pictures.
    let nal_count = h264::nal_units(WITH_AUD).filter(|n| n.is_vcl()).count();
    assert_eq!(nal_count, 90);
    assert_eq!(split_access_units(WITH_AUD).len(), 30);
}

#[test]
fn fresh_x264_stream_when_gstreamer_is_installed() {
    let dir = std::env::temp_dir().join(format!("telecart-x264-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("fresh.h264");
    let status = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=20", "pattern=ball", "!"])
        .args([
            "video/x-raw,format=I420,width=640,height=480,framerate=30/1",
            "!",
        ])
        .args([
            "x264enc",
            "tune=zerolatency",
            "threads=4",
            "bitrate=800",
            "!",
        ])
        .args(["video/x-h264,stream-format=byte-stream", "!", "filesink"])
        .arg(format!("location={}", out.display()))
        .status();
    match status {
        Ok(s) if s.success() => {
            let stream = std::fs::read(&out).unwrap();
            let units = split_access_units(&stream);
            assert_eq!(units.len(), 20);
            assert!(units.iter().all(|u| slices_per_unit(u) >= 2));
            assert_eq!(pictures_per_unit(&units), vec![1; 20]);
        }
        Ok(s) => eprintln!("skipped: gst-launch-1.0 x264enc failed ({s})"),
        Err(e) => eprintln!("skipped: gst-launch-1.0 not available ({e})"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
