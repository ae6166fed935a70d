//! Any sequence of packets (sequence numbers, timestamps, arrival gaps, payloads the network
//! chose) into the G.711 and Opus jitter buffers, interleaved with pulls: every pull gives one
//! 10 ms frame, the buffer stays bounded, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use telecart_audio::jitter::{JitterBuffer, JitterSettings};
use telecart_audio::{G711PayloadDecoder, OpusPayloadDecoder, PayloadDecoder};
use telecart_core::media::AudioCodec;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, mut rest)) = data.split_first() else { return };
    let decoder: Box<dyn PayloadDecoder> = if choice & 1 == 0 {
        Box::new(G711PayloadDecoder::new(AudioCodec::Pcmu).unwrap())
    } else {
        Box::new(OpusPayloadDecoder::new().unwrap())
    };
    let mut jb = JitterBuffer::new(decoder, JitterSettings::default());
    let start = Instant::now();
    let mut now = Duration::ZERO;
    // Records: seq (2), ts (4), arrival gap ms (1), pulls (1), payload length (1), payload.
    while rest.len() >= 9 {
        let seq = u16::from_le_bytes([rest[0], rest[1]]);
        let ts = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        now += Duration::from_millis(u64::from(rest[6]));
        let pulls = rest[7] % 8;
        let len = usize::from(rest[8]).min(rest.len() - 9);
        let payload = &rest[9..9 + len];
        jb.insert(seq, ts, start + now, payload);
        for _ in 0..pulls {
            let out = jb.pull();
            assert_eq!(out.samples.len(), jb.frame_samples());
        }
        rest = &rest[9 + len..];
    }
});
