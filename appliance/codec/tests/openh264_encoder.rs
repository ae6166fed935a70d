//! The software encoder's promises, checked by decoding what it produces.

// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use openh264::decoder::Decoder;
use telecart_codec::h264::{self, nal_type};
use telecart_codec::{EncoderSettings, OpenH264Encoder, VideoEncoder};
use telecart_core::config::H264Profile;
use telecart_core::{CaptureTime, VideoFrame};

/// A picture with detail and motion: a scrolling diagonal gradient with
/// pseudo-random texture, so the encoder has real work at every frame.
fn moving_frame(width: u32, height: u32, n: u64) -> VideoFrame {
    let (w, h) = (width as usize, height as usize);
    let mut data = vec![0u8; VideoFrame::i420_len(width, height)];
    let shift = n as usize * 2;
    for y in 0..h {
        for x in 0..w {
            let noise = ((x * 7919 + y * 104_729 + shift * 31) % 97) as u8;
            data[y * w + x] = (((x + y + shift) % 200) as u8).wrapping_add(noise / 12);
        }
    }
    let chroma = &mut data[w * h..];
    for (i, c) in chroma.iter_mut().enumerate() {
        *c = (128 + ((i + shift) % 64) as i32 - 32) as u8;
    }
    VideoFrame::from_i420(width, height, data, n, CaptureTime(1_000_000 + n * 33_333)).unwrap()
}

fn settings(bitrate_bps: u32, profile: H264Profile) -> EncoderSettings {
    EncoderSettings {
        width: 640,
        height: 360,
        fps: 30,
        bitrate_bps,
        keyframe_interval_frames: 60,
        profile,
    }
}

#[test]
fn every_unit_is_one_whole_decodable_picture() {
    let mut enc =
        OpenH264Encoder::new(settings(800_000, H264Profile::ConstrainedBaseline)).unwrap();
    let mut dec = Decoder::new().unwrap();
    for n in 0..45 {
        let unit = enc
            .encode(&moving_frame(640, 360, n))
            .unwrap()
            .expect("no frame skipped");
        assert_eq!(unit.sequence, n);
        assert_eq!(
            h264::split_access_units(&unit.data).len(),
            1,
            "frame {n} is one access unit"
        );
        let picture = dec.decode(&unit.data).unwrap();
        assert!(
            picture.is_some(),
            "frame {n} decodes to a picture on its own"
        );
    }
}

#[test]
fn first_frame_and_forced_frames_are_idrs_with_parameter_sets() {
    let mut enc =
        OpenH264Encoder::new(settings(800_000, H264Profile::ConstrainedBaseline)).unwrap();
    let first = enc.encode(&moving_frame(640, 360, 0)).unwrap().unwrap();
    assert!(first.keyframe);
    let types: Vec<u8> = h264::nal_units(&first.data)
        .filter_map(h264::unit_type)
        .collect();
    assert_eq!(&types[..2], &[nal_type::SPS, nal_type::PPS]);
    for n in 1..10 {
        assert!(
            !enc.encode(&moving_frame(640, 360, n))
                .unwrap()
                .unwrap()
                .keyframe
        );
    }
    enc.request_keyframe();
    let forced = enc.encode(&moving_frame(640, 360, 10)).unwrap().unwrap();
    assert!(
        forced.keyframe,
        "the very next frame after a request is an IDR"
    );
    assert!(
        h264::sps_profile(&forced.data).is_some(),
        "SPS repeated with the IDR"
    );
    assert!(
        !enc.encode(&moving_frame(640, 360, 11))
            .unwrap()
            .unwrap()
            .keyframe
    );
}

#[test]
fn periodic_idr_at_the_interval() {
    let mut s = settings(600_000, H264Profile::ConstrainedBaseline);
    s.keyframe_interval_frames = 15;
    let mut enc = OpenH264Encoder::new(s).unwrap();
    let keyframes: Vec<u64> = (0..61)
        .filter(|&n| {
            enc.encode(&moving_frame(640, 360, n))
                .unwrap()
                .unwrap()
                .keyframe
        })
        .collect();
    assert_eq!(keyframes, vec![0, 15, 30, 45, 60]);
}

#[test]
fn bitrate_change_takes_effect_without_a_restart() {
    let mut enc =
        OpenH264Encoder::new(settings(2_000_000, H264Profile::ConstrainedBaseline)).unwrap();
    let mean_bytes = |enc: &mut OpenH264Encoder, from: u64| -> f64 {
        // Skip the first second after a change while rate control settles.
        let sizes: Vec<usize> = (from..from + 90)
            .map(|n| enc.encode(&moving_frame(640, 360, n)).unwrap().unwrap())
            .filter(|u| !u.keyframe)
            .map(|u| u.data.len())
            .collect();
        sizes[30..].iter().sum::<usize>() as f64 / (sizes.len() - 30) as f64
    };
    let high = mean_bytes(&mut enc, 0);
    enc.set_bitrate(300_000).unwrap();
    assert_eq!(enc.settings().bitrate_bps, 300_000);
    let low = mean_bytes(&mut enc, 90);
    let ratio = high / low;
    // 2 Mbps / 300 kbps = 6.7; rate control lands near it on moving content.
    assert!(
        ratio > 3.0,
        "bytes per frame {high:.0} -> {low:.0} (x{ratio:.1})"
    );
    // ~300 kbps at 30 fps is ~1250 bytes/frame.
    assert!(low < 2500.0, "{low:.0} bytes per frame at 300 kbps");
    // And back up again.
    enc.set_bitrate(1_500_000).unwrap();
    let up = mean_bytes(&mut enc, 180);
    assert!(up > 2.0 * low, "raising the bitrate: {low:.0} -> {up:.0}");
}

#[test]
fn profile_in_the_sps_matches_the_request() {
    for (profile, idc) in [
        (H264Profile::ConstrainedBaseline, 66),
        (H264Profile::High, 100),
    ] {
        let mut enc = OpenH264Encoder::new(settings(800_000, profile)).unwrap();
        let unit = enc.encode(&moving_frame(640, 360, 0)).unwrap().unwrap();
        let (profile_idc, constraints, _level) = h264::sps_profile(&unit.data).unwrap();
        assert_eq!(profile_idc, idc, "{profile:?}");
        if profile == H264Profile::ConstrainedBaseline {
            assert!(
                constraints & 0x40 != 0,
                "constraint_set1_flag marks constrained baseline"
            );
        }
    }
}

#[test]
fn frames_of_the_wrong_size_are_refused() {
    let mut enc =
        OpenH264Encoder::new(settings(800_000, H264Profile::ConstrainedBaseline)).unwrap();
    let frame = VideoFrame::black(320, 240, 0, CaptureTime(0)).unwrap();
    assert!(enc.encode(&frame).is_err());
    assert!(enc.set_bitrate(5).is_err());
}
