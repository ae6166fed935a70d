//! Privacy latency, end to end without IO: the switch input goes through the
//! state machine, its action flips the privacy flag, and the capture loop's
//! gate turns the very next frame into the slate and the next audio block
//! into silence. Frames are 30 fps on virtual time; the toggle lands between
//! two frames.

use telecart_cart::Timestamp;
use telecart_cart::machine::{Action, Actor, CartMachine, Input, MachineConfig, Output};
use telecart_cart::privacy::{PrivacySwitch, slate};
use telecart_core::media::{AudioFrame, CaptureTime, VideoFrame};

const FRAME_MS: u64 = 33;

fn camera(seq: u64) -> VideoFrame {
    let (w, h) = (320, 240);
    let data = (0..VideoFrame::i420_len(w, h))
        .map(|i| (i as u64 ^ seq) as u8)
        .collect();
    VideoFrame::from_i420(w, h, data, seq, CaptureTime(seq * FRAME_MS * 1000)).expect("valid frame")
}

fn mic(seq: u64) -> AudioFrame {
    AudioFrame {
        sample_rate: 48_000,
        channels: 1,
        samples: vec![3000; 480],
        sequence: seq,
        capture_time: CaptureTime(seq * 10_000),
    }
}

/// What the runtime does with the machine's actions (the part that concerns privacy).
fn carry_out(m: &mut CartMachine, switch: &PrivacySwitch) {
    while let Some(o) = m.poll_output() {
        match o {
            Output::Action(Action::MuteCameraAndMic) => switch.set(true),
            Output::Action(Action::Unmute) => switch.set(false),
            _ => {}
        }
    }
}

#[test]
fn the_first_frame_after_the_toggle_is_the_slate_and_the_mic_is_silent() {
    let mut m = CartMachine::new(MachineConfig::default());
    let switch = PrivacySwitch::new();
    let mut video = switch.gate();
    let audio = switch.gate();
    carry_out(&mut m, &switch);
    let the_slate = slate(320, 240);

    let toggle_at_ms = 10 * FRAME_MS + 17; // between frame 10 and frame 11
    let mut toggled = false;
    let mut sent = Vec::new();
    for seq in 0..30u64 {
        let t = seq * FRAME_MS;
        if !toggled && t > toggle_at_ms {
            m.handle_input(
                Timestamp(toggle_at_ms),
                Input::Privacy {
                    on: true,
                    by: Actor::PrivacySwitch,
                },
            );
            carry_out(&mut m, &switch);
            toggled = true;
        }
        sent.push(video.video(camera(seq)));
    }
    let first_private = sent
        .iter()
        .position(|f| f.data == the_slate.data)
        .expect("a slate was sent");
    assert_eq!(
        first_private, 11,
        "the first frame captured after the toggle"
    );
    assert!(sent[..11].iter().all(|f| f.data != the_slate.data));
    assert!(sent[11..].iter().all(|f| f.data == the_slate.data));
    let latency_ms = sent[first_private].capture_time.as_micros() / 1000 - toggle_at_ms;
    assert!(
        latency_ms <= FRAME_MS,
        "privacy took {latency_ms} ms, over one frame period"
    );

    let mut block = mic(0);
    assert!(audio.audio(&mut block));
    assert!(block.samples.iter().all(|&s| s == 0));
}
