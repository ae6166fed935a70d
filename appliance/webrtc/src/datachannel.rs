//! Messages on the `telecart` data channel: one JSON object a message, with a
//! protocol version `v` and a `type`. The specialist's side sends camera
//! control; the cart sends captions, overlays and status. Every message from
//! the network is size-checked and parsed strictly; an unknown `type` or a
//! newer `v` is a clear error that the session reports and survives.

use serde::{Deserialize, Serialize};

/// The data channel's label.
pub const LABEL: &str = "telecart";
/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Messages larger than this are refused before parsing.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Who spoke a caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// Someone at the cart (the cart's microphone).
    Cart,
    /// The remote specialist.
    Remote,
}

/// A part of a caption to highlight (a medical term).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Highlight {
    /// Byte offset of the first character in `text`.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
    /// The vocabulary entry it matched.
    pub term: String,
    /// Vocabulary category (drug, symptom, anatomy, vital, unit).
    pub category: String,
}

/// Pan, tilt and zoom, each in -1.0..=1.0 (relative moves) or 0.0..=1.0 (zoom), mapped to the camera's range by the cart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PtzMove {
    /// Pan step, left negative.
    #[serde(default)]
    pub pan: f32,
    /// Tilt step, down negative.
    #[serde(default)]
    pub tilt: f32,
    /// Zoom step, out negative.
    #[serde(default)]
    pub zoom: f32,
}

/// Every message on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// A caption, partial while the person speaks and final at the end of the utterance.
    Caption {
        /// Utterance id; partials and the final share it.
        id: u64,
        /// Who spoke.
        speaker: Speaker,
        /// The words.
        text: String,
        /// Whether this is the utterance's final text.
        #[serde(rename = "final")]
        is_final: bool,
        /// Start of the utterance, ms since the call began.
        start_ms: u64,
        /// End of the utterance (so far), ms since the call began.
        end_ms: u64,
        /// Medical terms to highlight.
        #[serde(default)]
        highlights: Vec<Highlight>,
    },
    /// A short text the cart shows over the picture (or removes, with empty text).
    Overlay {
        /// Text.
        text: String,
    },
    /// The cart's state, sent on change.
    Status {
        /// `ready`, `in_call`, `privacy`, … (see the cart state machine).
        state: String,
        /// Privacy switch on: camera and microphone are off.
        privacy: bool,
    },
    /// Far-end camera control: a relative move.
    PtzMove(PtzMove),
    /// Far-end camera control: go to a stored preset.
    PtzPreset {
        /// Preset number, 1-based.
        preset: u8,
    },
    /// Ask the cart for a key frame (for receivers without RTCP feedback).
    Keyframe {},
}

/// Why a data-channel message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("data-channel message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Binary message; the protocol is text.
    #[error("data-channel message is not UTF-8 text")]
    NotText,
    /// A version this build does not speak.
    #[error("data-channel protocol version {0} is not supported (this cart speaks {VERSION})")]
    Version(u64),
    /// Bad JSON or a bad field.
    #[error("bad data-channel message: {0}")]
    Invalid(String),
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u32,
    #[serde(flatten)]
    message: &'a Message,
}

impl Message {
    /// The message as sent on the wire.
    pub fn to_json(&self) -> String {
        // Serialising plain data to a String cannot fail.
        serde_json::to_string(&Envelope {
            v: VERSION,
            message: self,
        })
        .unwrap_or_default()
    }

    /// Parses a message received on the channel.
    pub fn parse(data: &[u8]) -> Result<Message, MessageError> {
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge(data.len()));
        }
        let text = std::str::from_utf8(data).map_err(|_| MessageError::NotText)?;
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| MessageError::Invalid(e.to_string()))?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| MessageError::Invalid("expected a JSON object".into()))?;
        match object.remove("v").map(|v| v.as_u64()) {
            Some(Some(v)) if v == u64::from(VERSION) => {}
            Some(Some(v)) => return Err(MessageError::Version(v)),
            Some(None) => return Err(MessageError::Invalid("\"v\" must be a number".into())),
            None => return Err(MessageError::Invalid("missing \"v\"".into())),
        }
        let message: Message =
            serde_json::from_value(value).map_err(|e| MessageError::Invalid(e.to_string()))?;
        message.check()?;
        Ok(message)
    }

    fn check(&self) -> Result<(), MessageError> {
        match self {
            Message::PtzMove(m) => {
                for (name, v) in [("pan", m.pan), ("tilt", m.tilt), ("zoom", m.zoom)] {
                    if !v.is_finite() || !(-1.0..=1.0).contains(&v) {
                        return Err(MessageError::Invalid(format!(
                            "{name} must be in -1..1, got {v}"
                        )));
                    }
                }
                Ok(())
            }
            Message::PtzPreset { preset } if *preset == 0 || *preset > 16 => Err(
                MessageError::Invalid(format!("preset must be 1 to 16, got {preset}")),
            ),
            Message::Caption {
                text, highlights, ..
            } => {
                for h in highlights {
                    if h.start >= h.end
                        || h.end > text.len()
                        || !text.is_char_boundary(h.start)
                        || !text.is_char_boundary(h.end)
                    {
                        return Err(MessageError::Invalid(format!(
                            "highlight {}..{} does not lie within the caption text",
                            h.start, h.end
                        )));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_round_trips_with_version() {
        let m = Message::Caption {
            id: 7,
            speaker: Speaker::Remote,
            text: "chest pain since yesterday".into(),
            is_final: true,
            start_ms: 1200,
            end_ms: 3400,
            highlights: vec![Highlight {
                start: 0,
                end: 10,
                term: "chest pain".into(),
                category: "symptom".into(),
            }],
        };
        let json = m.to_json();
        assert!(json.starts_with("{\"v\":1,\"type\":\"caption\""), "{json}");
        assert!(json.contains("\"final\":true"));
        assert_eq!(Message::parse(json.as_bytes()), Ok(m));
    }

    #[test]
    fn camera_control_from_the_specialist() {
        assert_eq!(
            Message::parse(br#"{"v":1,"type":"ptz_move","pan":0.5,"tilt":-0.25}"#),
            Ok(Message::PtzMove(PtzMove {
                pan: 0.5,
                tilt: -0.25,
                zoom: 0.0
            }))
        );
        assert_eq!(
            Message::parse(br#"{"v":1,"type":"ptz_preset","preset":2}"#),
            Ok(Message::PtzPreset { preset: 2 })
        );
        assert_eq!(
            Message::parse(br#"{"v":1,"type":"keyframe"}"#),
            Ok(Message::Keyframe {})
        );
    }

    #[test]
    fn bad_messages_get_clear_errors() {
        let table: &[(&[u8], &str)] = &[
            (br#"{"type":"keyframe"}"#, "bad data-channel message: missing \"v\""),
            (br#"{"v":2,"type":"keyframe"}"#, "data-channel protocol version 2 is not supported (this cart speaks 1)"),
            (br#"{"v":"1","type":"keyframe"}"#, "bad data-channel message: \"v\" must be a number"),
            (br#"[1,2]"#, "bad data-channel message: expected a JSON object"),
            (br#"{"v":1,"type":"launch"}"#, "bad data-channel message: unknown variant `launch`"),
            (br#"{"v":1,"type":"ptz_move","pan":3}"#, "bad data-channel message: pan must be in -1..1, got 3"),
            (br#"{"v":1,"type":"ptz_preset","preset":0}"#, "bad data-channel message: preset must be 1 to 16, got 0"),
            (br#"{"v":1,"type":"keyframe","extra":1}"#, "bad data-channel message: unknown field `extra`"),
            (&[0xff, 0xfe], "data-channel message is not UTF-8 text"),
            (
                br#"{"v":1,"type":"caption","id":1,"speaker":"cart","text":"ab","final":false,"start_ms":0,"end_ms":1,"highlights":[{"start":1,"end":9,"term":"x","category":"y"}]}"#,
                "bad data-channel message: highlight 1..9 does not lie within the caption text",
            ),
        ];
        for (input, want) in table {
            let got = Message::parse(input).unwrap_err().to_string();
            assert!(
                got.starts_with(want),
                "{:?}\n got: {got}\nwant: {want}",
                String::from_utf8_lossy(input)
            );
        }
        let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            Message::parse(&huge),
            Err(MessageError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
    }
}
