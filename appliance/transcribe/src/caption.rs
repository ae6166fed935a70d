//! A caption as the transcriber produces it, and its data-channel form.

use std::time::Duration;

use telecart_core::CaptureTime;
use telecart_webrtc::datachannel::{Highlight, Message, Speaker};

/// Who spoke: the person at the cart (its microphone) or the remote party (their audio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The cart's microphone.
    Cart,
    /// The remote party's decoded audio.
    Remote,
}

impl Side {
    /// The data channel's name for it.
    pub fn speaker(self) -> Speaker {
        match self {
            Side::Cart => Speaker::Cart,
            Side::Remote => Speaker::Remote,
        }
    }

    /// `cart` or `remote`.
    pub fn label(self) -> &'static str {
        match self {
            Side::Cart => "cart",
            Side::Remote => "remote",
        }
    }

    /// Lowest bit of the side's utterance ids (ids of the two sides never collide).
    pub(crate) fn id_bit(self) -> u64 {
        match self {
            Side::Cart => 0,
            Side::Remote => 1,
        }
    }
}

/// A caption: partial while the person speaks, final at the end of the utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    /// Utterance id; the partials and the final of one utterance share it.
    pub id: u64,
    /// Who spoke.
    pub side: Side,
    /// The words.
    pub text: String,
    /// Whether this is the utterance's last word.
    pub is_final: bool,
    /// Capture time of the utterance's first sample.
    pub start: CaptureTime,
    /// Capture time where the speech (heard so far) ends.
    pub end: CaptureTime,
    /// Milliseconds from the call's start to `start`.
    pub start_ms: u64,
    /// Milliseconds from the call's start to `end`.
    pub end_ms: u64,
    /// Medical terms in `text` (byte spans).
    pub highlights: Vec<Highlight>,
    /// How long whisper.cpp took on it.
    pub decode_time: Duration,
}

impl Caption {
    /// The `caption` message of the `telecart` data channel.
    pub fn to_message(&self) -> Message {
        Message::Caption {
            id: self.id,
            speaker: self.side.speaker(),
            text: self.text.clone(),
            is_final: self.is_final,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            highlights: self.highlights.clone(),
        }
    }

    /// `text` with each highlighted term between `open` and `close`.
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + 8 * self.highlights.len());
        let mut at = 0;
        for h in &self.highlights {
            if h.start < at || h.end > self.text.len() {
                continue;
            }
            out.push_str(&self.text[at..h.start]);
            out.push_str(open);
            out.push_str(&self.text[h.start..h.end]);
            out.push_str(close);
            at = h.end;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vocabulary;

    #[test]
    fn caption_goes_on_the_data_channel_and_parses_back() {
        let text = "Chest pain since yesterday, took aspirin.".to_string();
        let caption = Caption {
            id: 4,
            side: Side::Remote,
            highlights: Vocabulary::bundled().highlight(&text),
            text,
            is_final: true,
            start: CaptureTime(1_000_000),
            end: CaptureTime(3_000_000),
            start_ms: 1000,
            end_ms: 3000,
            decode_time: Duration::from_millis(200),
        };
        let json = caption.to_message().to_json();
        assert!(
            json.starts_with(r#"{"v":1,"type":"caption","id":4,"speaker":"remote""#),
            "{json}"
        );
        assert_eq!(Message::parse(json.as_bytes()), Ok(caption.to_message()));
        assert_eq!(
            caption.marked("[", "]"),
            "[Chest pain] since yesterday, took [aspirin]."
        );
    }
}
