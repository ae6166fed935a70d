//! Is an INVITE's offer WebRTC media (ICE + DTLS-SRTP, what browser softphones such as JsSIP or
//! SIP.js send over SIP/WebSocket), and can the cart's WebRTC stack answer it?
//!
//! Pure: the text of the offer in, a verdict out. The driver answers a WebRTC offer through the
//! cart's WebRTC stack (str0m in `telecart-runtime`) and refuses a broken one with 488 and the
//! reason in a `Warning` header (RFC 3261 §20.43) before anything rings.

/// Offers longer than this are refused unread (the same bound as [`crate::sdp`]).
pub const MAX_OFFER_LEN: usize = 64 * 1024;

/// What a WebRTC offer brings that the cart can use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebRtcOffer {
    /// An audio section offers Opus (the only audio codec the WebRTC stack sends).
    pub opus: bool,
    /// A video section offers H.264 packetization-mode 1 (the only video the cart sends).
    pub h264: bool,
    /// Active (port != 0) media sections.
    pub sections: usize,
    /// The sections are bundled (`a=group:BUNDLE`).
    pub bundle: bool,
}

/// Why a WebRTC offer cannot be answered; each is a 488 (RFC 3261 §21.4.26).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebRtcOfferError {
    /// Longer than [`MAX_OFFER_LEN`].
    #[error("SDP offer too large")]
    TooLarge,
    /// DTLS-SRTP needs the certificate fingerprint (RFC 8122) to authenticate the handshake.
    #[error("DTLS-SRTP offer without a=fingerprint")]
    NoFingerprint,
    /// A section without `a=ice-ufrag`/`a=ice-pwd` (RFC 8839): plain DTLS-SRTP without ICE,
    /// which the WebRTC stack cannot connect to.
    #[error("DTLS-SRTP offer without ICE credentials (a=ice-ufrag/a=ice-pwd) in section {0}")]
    NoIceCredentials(usize),
    /// Neither Opus audio nor H.264 (packetization-mode 1) video.
    #[error("no common codec (the cart sends Opus and H.264 packetization-mode 1 over WebRTC)")]
    NoCommonCodec,
}

impl WebRtcOfferError {
    /// The SIP status to refuse the INVITE with.
    pub fn status(&self) -> u16 {
        488
    }
}

/// Whether a transport protocol is DTLS-SRTP (RFC 5764 §8, RFC 8843 `UDP/TLS/RTP/SAVPF`).
fn is_dtls(proto: &str) -> bool {
    let p = proto.to_ascii_uppercase();
    p.contains("TLS/RTP/SAVP") || p.contains("DTLS/RTP/SAVP") || p.starts_with("DTLS/")
}

#[derive(Default)]
struct Section {
    kind: String,
    active: bool,
    dtls: bool,
    formats: Vec<String>,
    /// (payload type, encoding name) from `a=rtpmap`.
    rtpmap: Vec<(String, String)>,
    /// (payload type, parameters) from `a=fmtp`.
    fmtp: Vec<(String, String)>,
    ufrag: bool,
    pwd: bool,
    fingerprint: bool,
}

impl Section {
    fn offers(&self, codec: &str) -> impl Iterator<Item = &str> {
        self.rtpmap
            .iter()
            .filter(move |(pt, name)| {
                self.formats.iter().any(|f| f == pt)
                    && name
                        .split('/')
                        .next()
                        .is_some_and(|n| n.eq_ignore_ascii_case(codec))
            })
            .map(|(pt, _)| pt.as_str())
    }

    fn fmtp_of(&self, pt: &str) -> &str {
        self.fmtp
            .iter()
            .find(|(p, _)| p == pt)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Reads `offer`: `Ok(None)` when it is not WebRTC media (plain RTP or SDES-SRTP, answered by
/// [`crate::sdp`]), `Ok(Some(..))` when the cart's WebRTC stack can answer it, an error (488)
/// when it is DTLS-SRTP media that cannot work.
pub fn check(offer: &str) -> Result<Option<WebRtcOffer>, WebRtcOfferError> {
    if offer.len() > MAX_OFFER_LEN {
        return Err(WebRtcOfferError::TooLarge);
    }
    let mut session = Section::default();
    let mut sections: Vec<Section> = Vec::new();
    let mut bundle = false;
    for line in offer.lines() {
        let line = line.trim_end_matches('\r');
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        if kind == "m" {
            let mut words = value.split_ascii_whitespace();
            let media = words.next().unwrap_or("");
            let port = words.next().and_then(|p| p.split('/').next()).unwrap_or("");
            let proto = words.next().unwrap_or("");
            sections.push(Section {
                kind: media.to_ascii_lowercase(),
                active: port.parse::<u16>().is_ok_and(|p| p != 0),
                dtls: is_dtls(proto),
                formats: words.map(str::to_string).collect(),
                ..Section::default()
            });
            continue;
        }
        if kind != "a" {
            continue;
        }
        let (name, arg) = value.split_once(':').unwrap_or((value, ""));
        let target = sections.last_mut().unwrap_or(&mut session);
        match name.to_ascii_lowercase().as_str() {
            "ice-ufrag" if !arg.trim().is_empty() => target.ufrag = true,
            "ice-pwd" if !arg.trim().is_empty() => target.pwd = true,
            "fingerprint" if arg.split_ascii_whitespace().count() == 2 => {
                target.fingerprint = true;
            }
            "group" => bundle |= arg.to_ascii_uppercase().starts_with("BUNDLE"),
            "rtpmap" => {
                if let Some((pt, enc)) = arg.split_once(' ') {
                    target.rtpmap.push((pt.to_string(), enc.trim().to_string()));
                }
            }
            "fmtp" => {
                if let Some((pt, params)) = arg.split_once(' ') {
                    target
                        .fmtp
                        .push((pt.to_string(), params.trim().to_string()));
                }
            }
            _ => {}
        }
    }
    let active: Vec<(usize, &Section)> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active && matches!(s.kind.as_str(), "audio" | "video"))
        .collect();
    if !active.iter().any(|(_, s)| s.dtls) {
        return Ok(None);
    }
    for (i, s) in &active {
        if !(s.fingerprint || session.fingerprint) {
            return Err(WebRtcOfferError::NoFingerprint);
        }
        if !((s.ufrag || session.ufrag) && (s.pwd || session.pwd)) {
            return Err(WebRtcOfferError::NoIceCredentials(*i));
        }
    }
    let opus = active
        .iter()
        .any(|(_, s)| s.kind == "audio" && s.offers("opus").next().is_some());
    let h264 = active.iter().any(|(_, s)| {
        s.kind == "video"
            && s.offers("H264").any(|pt| {
                s.fmtp_of(pt)
                    .split(';')
                    .any(|p| p.trim().eq_ignore_ascii_case("packetization-mode=1"))
            })
    });
    if !opus && !h264 {
        return Err(WebRtcOfferError::NoCommonCodec);
    }
    Ok(Some(WebRtcOffer {
        opus,
        h264,
        sections: active.len(),
        bundle,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What JsSIP 3.13 in Chromium sends (trimmed to what matters; candidates kept).
    const CHROMIUM: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=audio 50000 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 127.0.0.1\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host generation 0\r\n\
a=ice-ufrag:Bq3f\r\n\
a=ice-pwd:7mvBK1f0ZbBxK2Gqfh0f6N6G\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 5B:2B:5E:DE:80:10:43:2F:4E:25:4C:23:43:3C:0F:28:92:19:1E:A5:37:5D:FC:33:05:B3:2B:3C:4F:25:3F:7B\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
m=video 50000 UDP/TLS/RTP/SAVPF 96 97 102 103\r\n\
c=IN IP4 127.0.0.1\r\n\
a=ice-ufrag:Bq3f\r\n\
a=ice-pwd:7mvBK1f0ZbBxK2Gqfh0f6N6G\r\n\
a=fingerprint:sha-256 5B:2B:5E:DE:80:10:43:2F:4E:25:4C:23:43:3C:0F:28:92:19:1E:A5:37:5D:FC:33:05:B3:2B:3C:4F:25:3F:7B\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\n\
a=fmtp:103 apt=102\r\n";

    const PLAIN: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
m=video 4002 RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

    #[test]
    fn a_browser_offer_is_webrtc_with_opus_and_h264() {
        let offer = check(CHROMIUM).unwrap().unwrap();
        assert_eq!(
            offer,
            WebRtcOffer {
                opus: true,
                h264: true,
                sections: 2,
                bundle: true
            }
        );
    }

    #[test]
    fn plain_rtp_and_sdes_offers_are_not_webrtc() {
        assert_eq!(check(PLAIN), Ok(None));
        assert_eq!(check(""), Ok(None));
        assert_eq!(check("not sdp at all"), Ok(None));
    }

    #[test]
    fn session_level_credentials_and_fingerprint_count_for_every_section() {
        let hoisted = CHROMIUM
            .replace("a=ice-ufrag:Bq3f\r\n", "")
            .replace("a=ice-pwd:7mvBK1f0ZbBxK2Gqfh0f6N6G\r\n", "")
            .replace(
                "a=msid-semantic: WMS\r\n",
                "a=msid-semantic: WMS\r\na=ice-ufrag:Bq3f\r\na=ice-pwd:7mvBK1f0ZbBxK2Gqfh0f6N6G\r\n",
            );
        assert!(check(&hoisted).unwrap().is_some());
    }

    #[test]
    fn no_fingerprint_is_refused_with_488() {
        let offer: String = CHROMIUM
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        let e = check(&offer).unwrap_err();
        assert_eq!(e, WebRtcOfferError::NoFingerprint);
        assert_eq!(e.status(), 488);
    }

    #[test]
    fn dtls_without_ice_credentials_is_refused() {
        let no_pwd: String = CHROMIUM
            .lines()
            .filter(|l| !l.starts_with("a=ice-pwd"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert_eq!(check(&no_pwd), Err(WebRtcOfferError::NoIceCredentials(0)));
        // baresip's dtls_srtp without its ice module: a fingerprint and no ICE at all.
        let no_ice: String = CHROMIUM
            .lines()
            .filter(|l| !l.starts_with("a=ice-"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert!(matches!(
            check(&no_ice),
            Err(WebRtcOfferError::NoIceCredentials(_))
        ));
        // An empty ufrag is no ufrag.
        let empty = CHROMIUM.replace("a=ice-ufrag:Bq3f", "a=ice-ufrag:");
        assert!(matches!(
            check(&empty),
            Err(WebRtcOfferError::NoIceCredentials(_))
        ));
    }

    #[test]
    fn only_unsupported_codecs_is_refused() {
        let vp8_pcmu = CHROMIUM
            .replace(
                "UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
                "UDP/TLS/RTP/SAVPF 0 8",
            )
            .replace("UDP/TLS/RTP/SAVPF 96 97 102 103", "UDP/TLS/RTP/SAVPF 96 97");
        assert_eq!(check(&vp8_pcmu), Err(WebRtcOfferError::NoCommonCodec));
        // H.264 only in packetization-mode 0: not what the cart's encoder packs.
        let mode0 = CHROMIUM
            .replace(
                "UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
                "UDP/TLS/RTP/SAVPF 0",
            )
            .replace("packetization-mode=1", "packetization-mode=0");
        assert_eq!(check(&mode0), Err(WebRtcOfferError::NoCommonCodec));
        // An rtpmap for a format the m-line does not list does not count.
        let unlisted = CHROMIUM.replace(
            "UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
            "UDP/TLS/RTP/SAVPF 0",
        );
        let unlisted = unlisted.replace("UDP/TLS/RTP/SAVPF 96 97 102 103", "UDP/TLS/RTP/SAVPF 96");
        assert_eq!(check(&unlisted), Err(WebRtcOfferError::NoCommonCodec));
        // Audio alone (Opus) is enough.
        let audio_only =
            CHROMIUM.replace("UDP/TLS/RTP/SAVPF 96 97 102 103", "UDP/TLS/RTP/SAVPF 96");
        let offer = check(&audio_only).unwrap().unwrap();
        assert!(offer.opus && !offer.h264);
    }

    #[test]
    fn rejected_sections_do_not_count() {
        // The video section refused (port 0) and without credentials: only audio matters.
        let offer = CHROMIUM.replace("m=video 50000", "m=video 0");
        let offer: String = offer
            .split("m=video")
            .next()
            .map(|head| format!("{head}m=video 0 UDP/TLS/RTP/SAVPF 102\r\n"))
            .unwrap();
        let verdict = check(&offer).unwrap().unwrap();
        assert_eq!(verdict.sections, 1);
        assert!(!verdict.h264);
    }

    #[test]
    fn hostile_text_is_an_answer_not_a_panic() {
        assert_eq!(
            check(&"a".repeat(MAX_OFFER_LEN + 1)),
            Err(WebRtcOfferError::TooLarge)
        );
        for junk in [
            "m=audio",
            "m=audio 1 UDP/TLS/RTP/SAVPF",
            "m=\u{1F600} 99999999 DTLS/SCTP",
            "a=rtpmap:\na=fmtp:\na=fingerprint:\nm=video 5 UDP/TLS/RTP/SAVPF 1\na=rtpmap:1 H264",
            "=\n==\na=\nm=\n",
        ] {
            let _ = check(junk);
        }
    }
}
