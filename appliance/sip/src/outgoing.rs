//! The cart's own calls (the call button): the SDP offer it sends and what the answer settles,
//! both pure.
//!
//! With SDES-SRTP (RFC 4568) the offer carries one `a=crypto` line per suite in
//! [`OFFERED_SUITES`], each with a fresh key of ours, and the answer's line (its tag names ours)
//! gives the peer's key: [`settle`] pairs them into the streams' [`SdesKeys`].
//!
//! With DTLS-SRTP (`[sip] srtp_keying = "dtls"`, RFC 5763) the offer carries
//! `UDP/TLS/RTP/SAVPF`, our certificate's fingerprint and `a=setup:actpass`; the answer's
//! fingerprint and setup decide the handshake ([`crate::dtls::offerer_role`]).

use std::fmt::Write as _;

pub use telecart_core::config::{SipSrtp, SipSrtpKeying};

use crate::dtls::{self, DtlsParams, Fingerprint, Setup};
use crate::sdp::{self, Answer, Capabilities, LocalMedia, SdpError, SessionDescription};
use crate::srtp::{CryptoAttribute, CryptoSuite, MasterKey, SdesKeys, SrtpError};

/// Payload types of the offer (dynamic ones in the range most phones use).
const PT_OPUS: u8 = 111;
const PT_PCMU: u8 = 0;
const PT_PCMA: u8 = 8;
const PT_EVENT_48K: u8 = 110;
const PT_EVENT_8K: u8 = 101;
const PT_H264: u8 = 96;

/// The suites offered, in order of preference, tagged 1, 2, … AES_CM_128_HMAC_SHA1_80 first
/// because every SDES endpoint has it; two lines per stream keep an INVITE with audio and
/// video under the UDP size where RFC 3261 §18.1.1 would want TCP.
pub const OFFERED_SUITES: [CryptoSuite; 2] =
    [CryptoSuite::AesCm128HmacSha1_80, CryptoSuite::AeadAes128Gcm];

/// Our keys in an offer, per stream: (tag, key). Empty without SRTP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferedKeys {
    /// How SRTP was asked for.
    pub mode: Option<SipSrtp>,
    audio: Vec<(u32, MasterKey)>,
    video: Vec<(u32, MasterKey)>,
    /// DTLS-SRTP instead of SDES: our certificate's fingerprint.
    dtls: Option<Fingerprint>,
}

impl OfferedKeys {
    /// Fresh keys for every offered suite and stream (none when `mode` is `off`).
    pub fn generate(mode: SipSrtp) -> Result<Self, SrtpError> {
        let make = || -> Result<Vec<(u32, MasterKey)>, SrtpError> {
            if mode == SipSrtp::Off {
                return Ok(Vec::new());
            }
            OFFERED_SUITES
                .iter()
                .zip(1u32..)
                .map(|(suite, tag)| Ok((tag, MasterKey::generate(*suite)?)))
                .collect()
        };
        Ok(Self {
            mode: Some(mode),
            audio: make()?,
            video: make()?,
            dtls: None,
        })
    }

    /// What `[sip] srtp` and `srtp_keying` ask for: [`Self::generate`] for SDES, our DTLS
    /// fingerprint for DTLS-SRTP (nothing when `mode` is `off`).
    pub fn for_config(mode: SipSrtp, keying: SipSrtpKeying) -> Result<Self, String> {
        match (mode, keying) {
            (SipSrtp::Off, _) | (_, SipSrtpKeying::Sdes) => {
                Self::generate(mode).map_err(|e| e.to_string())
            }
            (_, SipSrtpKeying::Dtls) => {
                let identity = dtls::local_identity().map_err(|e| e.to_string())?;
                Ok(Self {
                    mode: Some(mode),
                    audio: Vec::new(),
                    video: Vec::new(),
                    dtls: Some(identity.fingerprint().clone()),
                })
            }
        }
    }

    fn mandatory(&self) -> bool {
        self.mode == Some(SipSrtp::Mandatory)
    }

    fn for_kind(&self, kind: &str) -> &[(u32, MasterKey)] {
        match kind {
            "audio" => &self.audio,
            "video" => &self.video,
            _ => &[],
        }
    }

    fn lines(keys: &[(u32, MasterKey)]) -> String {
        let mut s = String::new();
        for (tag, key) in keys {
            let _ = write!(
                s,
                "a=crypto:{tag} {} {}\r\n",
                key.suite(),
                key.inline().as_str()
            );
        }
        s
    }
}

/// The offer of an outgoing call (RFC 3264 §5): audio Opus, PCMU, PCMA with telephone-event at
/// both clocks, and H.264 packetization-mode 1 constrained baseline level 3.1 when `video`.
/// Video is offered on `RTP/AVP` (`RTP/SAVP`) with `a=rtcp-fb` lines, not on `RTP/AVPF`:
/// baresip 1.0 answers an `RTP/SAVPF` video stream with port 0, and most desk phones speak AVP
/// only; the cart honours PLI and FIR either way.
/// RTCP goes on the port above RTP unless the answer accepts `rtcp-mux`. With `keys` from
/// [`OfferedKeys::generate`], each stream carries its `a=crypto` lines, on `RTP/SAVP(F)` when
/// SRTP is mandatory and `RTP/AVP(F)` when it is optional (best-effort SRTP, which peers that
/// cannot encrypt answer in the clear).
pub fn render_offer(local: &LocalMedia, video: bool, keys: &OfferedKeys) -> String {
    let secure = if keys.mandatory() { "S" } else { "" };
    let (transport, dtls_lines) = match &keys.dtls {
        // SAVPF: what baresip 1.0's dtls_srtp offers and expects on both streams.
        Some(f) => (
            "UDP/TLS/RTP/SAVPF".to_string(),
            format!("a=setup:actpass\r\na=fingerprint:{f}\r\n"),
        ),
        None => (format!("RTP/{secure}AVP"), String::new()),
    };
    let mut s = crate::sdp::session_header(local);
    let _ = write!(
        s,
        "m=audio {} {transport} {PT_OPUS} {PT_PCMU} {PT_PCMA} {PT_EVENT_48K} {PT_EVENT_8K}\r\n\
         a=rtpmap:{PT_OPUS} opus/48000/2\r\na=fmtp:{PT_OPUS} useinbandfec=1;stereo=0;sprop-stereo=0\r\n\
         a=rtpmap:{PT_PCMU} PCMU/8000\r\na=rtpmap:{PT_PCMA} PCMA/8000\r\n\
         a=rtpmap:{PT_EVENT_48K} telephone-event/48000\r\na=fmtp:{PT_EVENT_48K} 0-16\r\n\
         a=rtpmap:{PT_EVENT_8K} telephone-event/8000\r\na=fmtp:{PT_EVENT_8K} 0-16\r\n\
         a=ptime:20\r\na=rtcp-mux\r\n{}{dtls_lines}a=sendrecv\r\n",
        local.audio_port,
        OfferedKeys::lines(&keys.audio),
    );
    if video {
        let _ = write!(
            s,
            "m=video {} {transport} {PT_H264}\r\na=rtpmap:{PT_H264} H264/90000\r\n\
             a=fmtp:{PT_H264} packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtcp-fb:{PT_H264} nack pli\r\na=rtcp-fb:{PT_H264} ccm fir\r\n\
             a=rtcp-mux\r\n{}{dtls_lines}a=sendrecv\r\n",
            local.video_port,
            OfferedKeys::lines(&keys.video),
        );
    }
    s
}

/// The peer's key for one answered stream: the answer's first `a=crypto` line whose tag is one
/// of ours with the same suite (RFC 4568 §5.1.2: the answer echoes the tag it accepted).
fn answered_keys(crypto: &[String], ours: &[(u32, MasterKey)]) -> Option<SdesKeys> {
    crypto.iter().find_map(|line| {
        let theirs = CryptoAttribute::parse(line).ok()?;
        let (tag, local) = ours
            .iter()
            .find(|(tag, key)| *tag == theirs.tag && key.suite() == theirs.suite)?;
        Some(SdesKeys {
            tag: *tag,
            local: local.clone(),
            remote: theirs.key,
        })
    })
}

fn is_secure(proto: &str) -> bool {
    matches!(proto, "RTP/SAVP" | "RTP/SAVPF")
}

/// What the peer's answer to [`render_offer`] settles: the same negotiated streams an incoming
/// call gets (codec, payload type, where to send, rtcp-mux, direction), read off the answer the
/// way [`sdp::answer`] reads an offer (an answer's payload types are the offer's, RFC 3264 §6.1),
/// and each stream's SRTP keys: ours for the suite the answer picked, and the peer's.
///
/// Refused: an answer with nothing usable, and a stream left unencrypted (no `a=crypto` line
/// matching one of ours) when SRTP is mandatory or the answer says `RTP/SAVP(F)`. A key line
/// that names no offered tag and suite is as good as none.
pub fn settle(answer_sdp: &str, video: bool, keys: &OfferedKeys) -> Result<Answer, SdpError> {
    let answer = SessionDescription::parse(answer_sdp)?;
    // Codecs, addresses and directions are negotiated on the answer read as plain RTP; the
    // keys are paired below, since ours were sent in the offer, not made now.
    let mut plain = answer.clone();
    for m in &mut plain.media {
        if let Some(avp) = m
            .proto
            .strip_prefix("RTP/S")
            .or_else(|| m.proto.strip_prefix("UDP/TLS/RTP/S"))
        {
            m.proto = format!("RTP/{avp}");
        }
        m.crypto.clear();
        m.fingerprints.clear();
    }
    let caps = Capabilities {
        video,
        srtp: false,
        require_srtp: false,
    };
    let mut settled = sdp::answer(&plain, &caps)?;
    let pair = |index: usize,
                proto: &mut String,
                srtp: &mut Option<SdesKeys>,
                dtls_params: &mut Option<DtlsParams>| {
        let Some(m) = answer.media.get(index) else {
            return Err(SdpError::NoUsableKey("answer stream missing"));
        };
        proto.clone_from(&m.proto);
        if let Some(local) = &keys.dtls {
            *dtls_params = Some(answered_dtls(m, local)?);
            return Ok(());
        }
        *srtp = answered_keys(&m.crypto, keys.for_kind(&m.kind));
        if srtp.is_none() && (keys.mandatory() || is_secure(&m.proto)) {
            return Err(SdpError::NoUsableKey(if m.crypto.is_empty() {
                "the answer has no a=crypto line and SRTP is required"
            } else {
                "the answer's a=crypto matches no offered tag and suite"
            }));
        }
        Ok(())
    };
    if let Some(a) = settled.audio.as_mut() {
        pair(a.index, &mut a.proto, &mut a.srtp, &mut a.dtls)?;
    }
    if let Some(v) = settled.video.as_mut() {
        pair(v.index, &mut v.proto, &mut v.srtp, &mut v.dtls)?;
    }
    Ok(settled)
}

/// The DTLS side of one answered stream of our DTLS-SRTP offer: it must stay DTLS-SRTP and
/// carry the answerer's fingerprint; its `a=setup` gives our role.
fn answered_dtls(m: &sdp::Media, local: &Fingerprint) -> Result<DtlsParams, SdpError> {
    if !sdp::dtls_rtp(&m.proto) {
        return Err(SdpError::NoUsableKey(
            "DTLS-SRTP was offered and the answer is not UDP/TLS/RTP/SAVP",
        ));
    }
    let remote: Vec<Fingerprint> = m
        .fingerprints
        .iter()
        .filter_map(|f| Fingerprint::parse(f).ok())
        .collect();
    if remote.is_empty() {
        return Err(SdpError::Dtls(dtls::DtlsError::MalformedFingerprint(
            "the answer has no usable a=fingerprint",
        )));
    }
    let answered = m
        .setup
        .as_deref()
        .map(Setup::parse)
        .transpose()
        .map_err(SdpError::Dtls)?;
    let role = dtls::offerer_role(answered).map_err(SdpError::Dtls)?;
    Ok(DtlsParams {
        setup: Setup::ActPass,
        role,
        local: local.clone(),
        remote,
    })
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
        let offer = render_offer(&local(), true, &OfferedKeys::default());
        let parsed = SessionDescription::parse(&offer).unwrap();
        assert_eq!(parsed.media.len(), 2);
        // What a phone answering our offer would choose is what we offered.
        let as_peer = sdp::answer(
            &parsed,
            &Capabilities {
                video: true,
                srtp: false,
                require_srtp: false,
            },
        )
        .unwrap();
        assert_eq!(
            as_peer.audio.as_ref().unwrap().choice.codec,
            AudioCodec::Opus
        );
        assert_eq!(as_peer.video.as_ref().unwrap().choice.pt, PT_H264);
        assert!(!render_offer(&local(), false, &OfferedKeys::default()).contains("m=video"));
    }

    #[test]
    fn a_pcmu_answer_without_video_settles_on_pcmu_to_the_answerers_address() {
        let answer = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
                      m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                      a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n\
                      m=video 0 RTP/AVPF 96\r\n";
        let settled = settle(answer, true, &OfferedKeys::default()).unwrap();
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
        assert!(settle(answer, true, &OfferedKeys::default()).is_err());
        assert!(settle("not sdp", true, &OfferedKeys::default()).is_err());
    }

    /// A peer's answer to `offer`: what a phone would put back, as `sdp::answer` makes it
    /// (first usable line, its own key), rendered.
    fn peer_answer(offer: &str) -> (String, Answer) {
        let parsed = SessionDescription::parse(offer).unwrap();
        let a = sdp::answer(
            &parsed,
            &Capabilities {
                video: true,
                srtp: true,
                require_srtp: false,
            },
        )
        .unwrap();
        let mut peer = local();
        peer.address = "198.51.100.7".parse().unwrap();
        (a.render(&peer), a)
    }

    #[test]
    fn mandatory_offers_savp_with_a_key_per_suite_and_stream() {
        let keys = OfferedKeys::generate(SipSrtp::Mandatory).unwrap();
        let offer = render_offer(&local(), true, &keys);
        assert!(
            offer.contains("m=audio 40000 RTP/SAVP 111 0 8 110 101\r\n"),
            "{offer}"
        );
        assert!(offer.contains("m=video 40002 RTP/SAVP 96\r\n"), "{offer}");
        let parsed = SessionDescription::parse(&offer).unwrap();
        let mut all = Vec::new();
        for m in &parsed.media {
            let lines: Vec<_> = m
                .crypto
                .iter()
                .map(|l| CryptoAttribute::parse(l).unwrap())
                .collect();
            assert_eq!(
                lines.iter().map(|l| (l.tag, l.suite)).collect::<Vec<_>>(),
                vec![
                    (1, CryptoSuite::AesCm128HmacSha1_80),
                    (2, CryptoSuite::AeadAes128Gcm)
                ]
            );
            all.extend(lines.into_iter().map(|l| l.key));
        }
        // Four different keys: per suite and per stream.
        for (i, k) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|o| o != k));
        }
        // Optional: the same keys on RTP/AVP(F).
        let optional = render_offer(
            &local(),
            true,
            &OfferedKeys::generate(SipSrtp::Optional).unwrap(),
        );
        assert!(optional.contains("m=audio 40000 RTP/AVP "), "{optional}");
        assert!(optional.contains("m=video 40002 RTP/AVP 96"), "{optional}");
        assert_eq!(optional.matches("a=crypto:").count(), 4);
        let off = render_offer(
            &local(),
            true,
            &OfferedKeys::generate(SipSrtp::Off).unwrap(),
        );
        assert!(!off.contains("crypto") && !off.contains("SAVP"), "{off}");
    }

    #[test]
    fn a_crypto_answer_settles_on_its_suite_with_our_key_and_theirs() {
        let keys = OfferedKeys::generate(SipSrtp::Mandatory).unwrap();
        let offer = render_offer(&local(), true, &keys);
        let (text, peer) = peer_answer(&offer);
        let settled = settle(&text, true, &keys).unwrap();
        let audio = settled.audio.as_ref().unwrap();
        let video = settled.video.as_ref().unwrap();
        assert_eq!(audio.proto, "RTP/SAVP");
        assert_eq!(video.proto, "RTP/SAVP");
        let (ours, theirs) = (
            audio.srtp.as_ref().unwrap(),
            peer.audio.as_ref().unwrap().srtp.as_ref().unwrap(),
        );
        // The peer took our first line: AES_CM_128_HMAC_SHA1_80, tag 1.
        assert_eq!(
            (ours.tag, ours.suite()),
            (1, CryptoSuite::AesCm128HmacSha1_80)
        );
        // Mirror images: what we send with, they receive with, and the other way.
        assert_eq!(ours.local, theirs.remote);
        assert_eq!(ours.remote, theirs.local);
        assert_eq!(
            video.srtp.as_ref().unwrap().local,
            peer.video.as_ref().unwrap().srtp.as_ref().unwrap().remote
        );

        // A peer preferring GCM answers tag 2: we settle on GCM with our GCM key.
        let gcm_only: String = offer
            .lines()
            .filter(|l| !l.contains("AES_CM_128"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        let (text, peer) = peer_answer(&gcm_only);
        let settled = settle(&text, true, &keys).unwrap();
        let ours = settled.audio.unwrap().srtp.unwrap();
        assert_eq!((ours.tag, ours.suite()), (2, CryptoSuite::AeadAes128Gcm));
        assert_eq!(ours.remote, peer.audio.unwrap().srtp.unwrap().local);

        // Media sessions built from both sides' keys open each other's packets.
        let mut a = crate::srtp::SrtpSession::new(&ours).unwrap();
        let theirs = SdesKeys {
            tag: ours.tag,
            local: ours.remote.clone(),
            remote: ours.local.clone(),
        };
        let mut b = crate::srtp::SrtpSession::new(&theirs).unwrap();
        let rtp = [0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4];
        let protected = a.protect_rtp(&rtp).unwrap();
        assert_eq!(b.unprotect_rtp(&protected).unwrap(), rtp);
    }

    const PLAIN_ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
                                m=audio 5004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn a_missing_or_foreign_key_fails_a_mandatory_call_and_optional_falls_back_to_rtp() {
        let mandatory = OfferedKeys::generate(SipSrtp::Mandatory).unwrap();
        assert!(matches!(
            settle(PLAIN_ANSWER, true, &mandatory),
            Err(SdpError::NoUsableKey(_))
        ));
        // Optional: a peer without SRTP answers plain RTP, and so be it.
        let optional = OfferedKeys::generate(SipSrtp::Optional).unwrap();
        let plain = settle(PLAIN_ANSWER, true, &optional).unwrap();
        assert!(plain.audio.unwrap().srtp.is_none());
        // A key for a tag we never offered, or our tag with another suite: no usable key.
        let foreign = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
        for line in [
            format!("7 AES_CM_128_HMAC_SHA1_80 {}", foreign.inline().as_str()),
            format!("2 AES_CM_128_HMAC_SHA1_80 {}", foreign.inline().as_str()),
        ] {
            let answer = format!(
                "v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 5004 RTP/SAVP 0\r\na=crypto:{line}\r\n"
            );
            assert_eq!(
                settle(&answer, true, &mandatory),
                Err(SdpError::NoUsableKey(
                    "the answer's a=crypto matches no offered tag and suite"
                ))
            );
            // RTP/SAVP in the answer demands a key even when we only hoped for one.
            assert!(settle(&answer, true, &optional).is_err());
        }
        // SAVP answered to a plain offer: nothing to pair, refused.
        let savp = "v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 5004 RTP/SAVP 0\r\n";
        assert!(settle(savp, true, &OfferedKeys::generate(SipSrtp::Off).unwrap()).is_err());
    }
    #[test]
    fn a_dtls_offer_settles_on_the_answerers_fingerprint_and_setup() {
        let keys = OfferedKeys::for_config(SipSrtp::Mandatory, SipSrtpKeying::Dtls).unwrap();
        let offer = render_offer(&local(), true, &keys);
        let ours = dtls::local_identity().unwrap().fingerprint().to_string();
        assert!(
            offer.contains("m=audio 40000 UDP/TLS/RTP/SAVPF 111"),
            "{offer}"
        );
        assert!(
            offer.contains("m=video 40002 UDP/TLS/RTP/SAVPF 96"),
            "{offer}"
        );
        assert_eq!(offer.matches("a=setup:actpass\r\n").count(), 2);
        assert_eq!(
            offer.matches(&format!("a=fingerprint:{ours}\r\n")).count(),
            2
        );
        assert!(!offer.contains("a=crypto"));
        // The peer (answering as the cart would) says active: the cart is the DTLS server.
        let (text, _) = peer_answer(&offer);
        assert!(text.contains("a=setup:active"), "{text}");
        let settled = settle(&text, true, &keys).unwrap();
        let audio = settled.audio.unwrap();
        let d = audio.dtls.unwrap();
        assert_eq!((d.role, d.setup), (dtls::DtlsRole::Server, Setup::ActPass));
        assert_eq!(d.remote, vec![Fingerprint::parse(&ours).unwrap()]);
        assert_eq!(audio.proto, "UDP/TLS/RTP/SAVPF");
        assert!(audio.srtp.is_none());
        // A passive answerer makes the cart the client.
        let passive = text.replace("a=setup:active", "a=setup:passive");
        let role = settle(&passive, true, &keys)
            .unwrap()
            .audio
            .unwrap()
            .dtls
            .unwrap()
            .role;
        assert_eq!(role, dtls::DtlsRole::Client);
        // Plain RTP back, no fingerprint, or actpass in an answer: refused.
        let plain = text.replace("UDP/TLS/RTP/SAVPF", "RTP/AVPF");
        assert!(settle(&plain, true, &keys).is_err());
        let bare: String = text
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert!(matches!(settle(&bare, true, &keys), Err(SdpError::Dtls(_))));
        let actpass = text.replace("a=setup:active", "a=setup:actpass");
        assert!(matches!(
            settle(&actpass, true, &keys),
            Err(SdpError::Dtls(_))
        ));
        // `off` wins over the keying: plain RTP.
        let off = OfferedKeys::for_config(SipSrtp::Off, SipSrtpKeying::Dtls).unwrap();
        assert!(render_offer(&local(), false, &off).contains("m=audio 40000 RTP/AVP"));
    }
}
