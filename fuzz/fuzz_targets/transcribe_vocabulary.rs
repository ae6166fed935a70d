//! Caption text and vocabulary files: any text is either a vocabulary or an error, and the
//! highlighter gives in-order, non-overlapping spans on char boundaries that the data channel
//! accepts, for any caption text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_transcribe::Vocabulary;
use telecart_webrtc::datachannel::{Message, Speaker};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Vocabulary::parse(text);
    let highlights = Vocabulary::bundled().highlight(text);
    let mut at = 0;
    for h in &highlights {
        assert!(h.start >= at && h.start < h.end && h.end <= text.len());
        assert!(text.is_char_boundary(h.start) && text.is_char_boundary(h.end));
        at = h.end;
    }
    if text.len() < 8 * 1024 {
        let caption = Message::Caption {
            id: 1,
            speaker: Speaker::Cart,
            text: text.to_string(),
            is_final: true,
            start_ms: 0,
            end_ms: 1,
            highlights,
        };
        assert_eq!(Message::parse(caption.to_json().as_bytes()), Ok(caption));
    }
});
