//! The cart's own calls (the call button): the SDP offer it sends and what the answer settles,
//! both pure.

use std::fmt::Write as _;

use crate::sdp::{self, Answer, Capabilities, LocalMedia, SdpError, SessionDescription};

/// Payload types of the offer (dynamic ones in the range most phones use).
const PT_OPUS: u8 = 111;
const PT_PCMU: u8 = 0;
const PT_PCMA: u8 = 8;
const PT_EVENT_48K: u8 = 110;
const PT_EVENT_8K: u8 = 101;
const PT_H264: u8 = 96;

/// The offer of an outgoing call (RFC 3264 §5): audio Opus, PCMU, PCMA with telephone-event at
/// both clocks, and H.264 packetization-mode 1 constrained baseline level 3.1 when `video`.
/// RTCP goes on the port above RTP unless the answer accepts `rtcp-mux`.
pub fn render_offer(local: &LocalMedia, video: bool) -> String {
    let mut s = crate::sdp::session_header(local);
    let _ = write!(
        s,
        "m=audio {} RTP/AVP {PT_OPUS} {PT_PCMU} {PT_PCMA} {PT_EVENT_48K} {PT_EVENT_8K}\r\n\
         a=rtpmap:{PT_OPUS} opus/48000/2\r\na=fmtp:{PT_OPUS} useinbandfec=1;stereo=0;sprop-stereo=0\r\n\
         a=rtpmap:{PT_PCMU} PCMU/8000\r\na=rtpmap:{PT_PCMA} PCMA/8000\r\n\
         a=rtpmap:{PT_EVENT_48K} telephone-event/48000\r\na=fmtp:{PT_EVENT_48K} 0-16\r\n\
         a=rtpmap:{PT_EVENT_8K} telephone-event/8000\r\na=fmtp:{PT_EVENT_8K} 0-16\r\n\
         a=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n",
        local.audio_port
    );
    if video {
        let _ = write!(
            s,
            "m=video {} RTP/AVPF {PT_H264}\r\na=rtpmap:{PT_H264} H264/90000\r\n\
             a=fmtp:{PT_H264} packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtcp-fb:{PT_H264} nack pli\r\na=rtcp-fb:{PT_H264} ccm fir\r\n\
             a=rtcp-mux\r\na=sendrecv\r\n",
            local.video_port
        );
    }
    s
}

/// What the peer's answer to [`render_offer`] settles: the same negotiated streams an incoming
/// call gets (codec, payload type, where to send, rtcp-mux, direction), read off the answer the
/// way [`sdp::answer`] reads an offer (an answer's payload types are the offer's, RFC 3264 §6.1).
pub fn settle(answer_sdp: &str, video: bool) -> Result<Answer, SdpError> {
    let answer = SessionDescription::parse(answer_sdp)?;
    let caps = Capabilities { video, srtp: false };
    sdp::answer(&answer, &caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_core::media::AudioCodec;

    fn local() -> LocalMedia {
        LocalMedia {
            address: "192.0.2.10".parse().unwrap(),
            audio_port: 40000,
            video_port: 40002,
            session_id: 7,
            version: 1,
            on_hold: false,
        }
    }

    #[test]
    fn the_offer_parses_and_answers_like_a_phone_would() {
        let offer = render_offer(&local(), true);
        let parsed = SessionDescription::parse(&offer).unwrap();
        assert_eq!(parsed.media.len(), 2);
        // What a phone answering our offer would choose is what we offered.
        let as_peer = sdp::answer(
            &parsed,
            &Capabilities {
                video: true,
                srtp: false,
            },
        )
        .unwrap();
        assert_eq!(
            as_peer.audio.as_ref().unwrap().choice.codec,
            AudioCodec::Opus
        );
        assert_eq!(as_peer.video.as_ref().unwrap().choice.pt, PT_H264);
        assert!(!render_offer(&local(), false).contains("m=video"));
    }

    #[test]
    fn a_pcmu_answer_without_video_settles_on_pcmu_to_the_answerers_address() {
        let answer = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
                      m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                      a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n\
                      m=video 0 RTP/AVPF 96\r\n";
        let settled = settle(answer, true).unwrap();
        let audio = settled.audio.unwrap();
        assert_eq!(audio.choice.codec, AudioCodec::Pcmu);
        assert_eq!(audio.choice.dtmf_pt, Some(101));
        assert_eq!(audio.remote, "198.51.100.7:5004".parse().unwrap());
        assert!(!audio.rtcp_mux);
        assert!(settled.video.is_none());
    }

    #[test]
    fn an_answer_with_nothing_usable_is_an_error() {
        let answer = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
                      m=audio 0 RTP/AVP 0\r\n";
        assert!(settle(answer, true).is_err());
        assert!(settle("not sdp", true).is_err());
    }
}
