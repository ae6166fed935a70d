//! Any bytes from a TURN server: STUN messages, ChannelData and the stream
//! framer take them without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_turn::codec::{ChannelData, Message, StreamFramer};

fuzz_target!(|data: &[u8]| {
    let _ = Message::decode(data);
    let _ = ChannelData::decode(data);
    let mut framer = StreamFramer::default();
    framer.push(data);
    while let Ok(Some(_)) = framer.next_frame() {}
});
