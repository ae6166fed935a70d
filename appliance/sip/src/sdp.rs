//! SDP offer/answer (RFC 3264) for the media the cart speaks: PCMU, PCMA, Opus, H.264
//! (packetization-mode 1) and telephone-event, over RTP/AVP(F) with optional rtcp-mux, and
//! over RTP/SAVP(F) with SDES keys (`a=crypto`, RFC 4568; see [`crate::srtp`]), and over
//! UDP/TLS/RTP/SAVP(F) with DTLS-SRTP keys (`a=fingerprint`, `a=setup`, RFC 5763/5764, without
//! ICE; see [`crate::dtls`]).
//!
//! When an offer gives the cart a choice for a stream (several m= lines of one kind), DTLS-SRTP
//! wins over SDES (its keys never travel in the SDP, which SIP over UDP or through proxies
//! exposes) and SDES over plain RTP.
//!
//! [`SessionDescription::parse`] reads only what negotiation needs and refuses what it cannot
//! read rather than guessing; [`answer`] picks the codecs; [`Answer::render`] writes the SDP.

use std::fmt::Write as _;
use std::net::IpAddr;

use telecart_core::media::AudioCodec;

use crate::dtls::{self, DtlsError, DtlsParams, Fingerprint, Setup};
use crate::srtp::SdesKeys;

/// Largest SDP body accepted.
pub const MAX_SDP_LEN: usize = 16 * 1024;
const MAX_MEDIA: usize = 8;
const MAX_FORMATS: usize = 64;

/// Why an SDP was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// Not SDP at all, or a line that breaks the grammar.
    #[error("malformed SDP, line {line}: {reason}")]
    Malformed {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Longer than [`MAX_SDP_LEN`] or with too many media/formats.
    #[error("SDP too large")]
    TooLarge,
    /// No media stream with a codec the cart speaks (488 Not Acceptable Here).
    #[error("no common codec")]
    NoCommonCodec,
    /// An answer left a stream unencrypted that had to be SRTP (the cart's own calls).
    #[error("no usable SDES key: {0}")]
    NoUsableKey(&'static str),
    /// A DTLS-SRTP stream whose `a=fingerprint` or `a=setup` the cart cannot use, and nothing
    /// else to answer.
    #[error("DTLS-SRTP: {0}")]
    Dtls(DtlsError),
    /// SRTP is mandatory (`[sip] srtp = "mandatory"`) and the offer's streams are plain RTP.
    #[error("SRTP is mandatory and the offer has no usable SRTP (a=crypto or DTLS a=fingerprint)")]
    SrtpRequired,
}

/// Media direction attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// a=sendrecv (the default).
    SendRecv,
    /// a=sendonly.
    SendOnly,
    /// a=recvonly.
    RecvOnly,
    /// a=inactive.
    Inactive,
}

impl Direction {
    /// The direction an answer gives to an offered one.
    pub fn reversed(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            d => d,
        }
    }

    /// Whether we send media in this direction (seen from our side).
    pub fn we_send(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// Whether we receive media (seen from our side).
    pub fn we_receive(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }

    fn attr(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }
}

/// One `a=rtpmap` (or a static payload type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written.
    pub name: String,
    /// Clock rate.
    pub clock: u32,
    /// Channels (audio), 1 when absent.
    pub channels: u16,
    /// The `a=fmtp` parameters, as written.
    pub fmtp: Option<String>,
}

/// One `m=` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, …
    pub kind: String,
    /// Port (0: stream refused or removed).
    pub port: u16,
    /// Transport protocol (`RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, …).
    pub proto: String,
    /// Formats in the offerer's order of preference.
    pub formats: Vec<RtpMap>,
    /// Media-level connection address.
    pub connection: Option<IpAddr>,
    /// a=rtcp-mux.
    pub rtcp_mux: bool,
    /// Direction.
    pub direction: Direction,
    /// `a=crypto` lines (SDES, RFC 4568), as written after `a=crypto:`.
    pub crypto: Vec<String>,
    /// `a=fingerprint` values (RFC 8122), media-level or else session-level, as written.
    pub fingerprints: Vec<String>,
    /// The `a=setup` value (RFC 4145), media-level or else session-level, as written.
    pub setup: Option<String>,
}

/// The parts of a session description negotiation uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    /// Session-level connection address.
    pub connection: Option<IpAddr>,
    /// Session-level direction (applies to media that set none).
    pub direction: Option<Direction>,
    /// Media sections in order.
    pub media: Vec<Media>,
}

fn static_pt(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("PCMU", 8000)),
        8 => Some(("PCMA", 8000)),
        9 => Some(("G722", 8000)),
        18 => Some(("G729", 8000)),
        _ => None,
    }
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut it = value.split_whitespace();
    if it.next()? != "IN" {
        return None;
    }
    let _family = it.next()?;
    // Multicast TTL suffixes (`/127`) are not for us; take the address.
    it.next()?.split('/').next()?.parse().ok()
}

impl SessionDescription {
    /// Parses an SDP body.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        if text.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge);
        }
        let mut sdp = SessionDescription {
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        let mut seen_version = false;
        let mut session_direction: Option<Direction> = None;
        let mut media_direction: Vec<Option<Direction>> = Vec::new();
        let mut session_fingerprints: Vec<String> = Vec::new();
        let mut session_setup: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason| SdpError::Malformed { line, reason };
            let raw = raw.trim_end_matches('\r');
            if raw.is_empty() {
                continue;
            }
            let (kind, value) = raw
                .split_once('=')
                .filter(|(k, _)| k.len() == 1)
                .ok_or(bad("not a type=value line"))?;
            if !seen_version {
                if kind != "v" || value != "0" {
                    return Err(bad("must start with v=0"));
                }
                seen_version = true;
                continue;
            }
            match kind {
                "m" => {
                    if sdp.media.len() >= MAX_MEDIA {
                        return Err(SdpError::TooLarge);
                    }
                    let mut it = value.split_whitespace();
                    let kind = it.next().ok_or(bad("m= without media"))?;
                    let port = it
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or(bad("m= port"))?;
                    let proto = it.next().ok_or(bad("m= without protocol"))?;
                    let mut formats = Vec::new();
                    for f in it {
                        if formats.len() >= MAX_FORMATS {
                            return Err(SdpError::TooLarge);
                        }
                        // Non-RTP protocols (application, webrtc-datachannel) have token formats.
                        let Ok(pt) = f.parse::<u16>() else { continue };
                        let pt = u8::try_from(pt)
                            .ok()
                            .filter(|pt| *pt <= 127)
                            .ok_or(bad("payload type above 127"))?;
                        let (name, clock) = static_pt(pt).unwrap_or(("", 0));
                        formats.push(RtpMap {
                            pt,
                            name: name.into(),
                            clock,
                            channels: 1,
                            fmtp: None,
                        });
                    }
                    sdp.media.push(Media {
                        kind: kind.into(),
                        port,
                        proto: proto.into(),
                        formats,
                        connection: None,
                        rtcp_mux: false,
                        direction: Direction::SendRecv,
                        crypto: Vec::new(),
                        fingerprints: Vec::new(),
                        setup: None,
                    });
                    media_direction.push(None);
                }
                "c" => {
                    let addr = parse_connection(value).ok_or(bad("c= address"))?;
                    match sdp.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => sdp.connection = Some(addr),
                    }
                }
                "a" => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    let dir = match name {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    let Some(m) = sdp.media.last_mut() else {
                        if dir.is_some() {
                            session_direction = dir;
                        }
                        match name {
                            "fingerprint" if session_fingerprints.len() < 4 => {
                                session_fingerprints.push(arg.trim().to_string());
                            }
                            "setup" => session_setup = Some(arg.trim().to_string()),
                            _ => {}
                        }
                        continue;
                    };
                    if let Some(d) = dir {
                        if let Some(slot) = media_direction.last_mut() {
                            *slot = Some(d);
                        }
                        continue;
                    }
                    match name {
                        "rtcp-mux" => m.rtcp_mux = true,
                        "crypto" if m.crypto.len() < 16 => m.crypto.push(arg.trim().to_string()),
                        "fingerprint" if m.fingerprints.len() < 4 => {
                            m.fingerprints.push(arg.trim().to_string());
                        }
                        "setup" => m.setup = Some(arg.trim().to_string()),
                        "rtpmap" => {
                            let (pt, desc) = arg.split_once(' ').ok_or(bad("rtpmap"))?;
                            let pt: u8 = pt.parse().map_err(|_| bad("rtpmap payload type"))?;
                            let mut parts = desc.trim().split('/');
                            let name = parts.next().filter(|n| !n.is_empty());
                            let clock = parts.next().and_then(|c| c.parse::<u32>().ok());
                            let (Some(name), Some(clock)) = (name, clock) else {
                                return Err(bad("rtpmap encoding"));
                            };
                            let channels = match parts.next() {
                                Some(c) => c.parse().map_err(|_| bad("rtpmap channels"))?,
                                None => 1,
                            };
                            if let Some(f) = m.formats.iter_mut().find(|f| f.pt == pt) {
                                f.name = name.into();
                                f.clock = clock;
                                f.channels = channels;
                            }
                        }
                        "fmtp" => {
                            let (pt, params) = arg.split_once(' ').ok_or(bad("fmtp"))?;
                            let pt: u8 = pt.parse().map_err(|_| bad("fmtp payload type"))?;
                            if let Some(f) = m.formats.iter_mut().find(|f| f.pt == pt) {
                                f.fmtp = Some(params.trim().to_string());
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !seen_version {
            return Err(SdpError::Malformed {
                line: 1,
                reason: "empty",
            });
        }
        sdp.direction = session_direction;
        for (m, d) in sdp.media.iter_mut().zip(media_direction) {
            m.direction = d.or(session_direction).unwrap_or(Direction::SendRecv);
            if m.fingerprints.is_empty() {
                m.fingerprints.clone_from(&session_fingerprints);
            }
            if m.setup.is_none() {
                m.setup.clone_from(&session_setup);
            }
        }
        Ok(sdp)
    }
}

/// Reads a parameter out of an `a=fmtp` string (`a=1;b=2`).
pub fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

/// H.264 profile-level-id (RFC 6184 §8.1): profile_idc, profile-iop, level_idc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileLevelId {
    /// profile_idc.
    pub profile_idc: u8,
    /// Constraint flags byte.
    pub profile_iop: u8,
    /// level_idc.
    pub level_idc: u8,
}

impl ProfileLevelId {
    /// What the cart's encoder produces: constrained baseline, level 3.1.
    pub const CART: Self = Self {
        profile_idc: 0x42,
        profile_iop: 0xe0,
        level_idc: 0x1f,
    };

    /// Parses six hex digits; absent means 42000A (RFC 6184 §8.1).
    pub fn parse(fmtp: Option<&str>) -> Option<Self> {
        let Some(v) = fmtp.and_then(|f| fmtp_param(f, "profile-level-id")) else {
            return Some(Self {
                profile_idc: 0x42,
                profile_iop: 0,
                level_idc: 0x0a,
            });
        };
        if v.len() != 6 || !v.is_ascii() {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&v[i..i + 2], 16).ok();
        Some(Self {
            profile_idc: byte(0)?,
            profile_iop: byte(2)?,
            level_idc: byte(4)?,
        })
    }

    /// Whether a decoder of this profile decodes the cart's constrained-baseline stream:
    /// baseline (with or without constraint_set1), main (CB is a subset via constraint_set1)
    /// and high profiles all do.
    pub fn decodes_constrained_baseline(self) -> bool {
        matches!(self.profile_idc, 0x42 | 0x4d | 0x58 | 0x64)
    }

    fn hex(self) -> String {
        format!(
            "{:02x}{:02x}{:02x}",
            self.profile_idc, self.profile_iop, self.level_idc
        )
    }
}

/// The audio stream an answer settled on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioChoice {
    /// Codec.
    pub codec: AudioCodec,
    /// Payload type (the offerer's number).
    pub pt: u8,
    /// RTP clock.
    pub clock: u32,
    /// Channels in the rtpmap (Opus says 2).
    pub channels: u16,
    /// telephone-event payload type, if offered: at the codec's clock when the offer has
    /// one, else the first offered (baresip and others put telephone-event/8000 beside Opus).
    pub dtmf_pt: Option<u8>,
    /// The telephone-event clock (RTP timestamp units of its durations).
    pub dtmf_clock: u32,
}

/// The video stream an answer settled on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoChoice {
    /// Payload type (the offerer's number).
    pub pt: u8,
    /// profile-level-id put in the answer (the offer's profile, a level we accept).
    pub profile_level_id: ProfileLevelId,
    /// The offer allowed RTCP feedback (RTP/AVPF): we honour PLI/FIR and send PLI.
    pub feedback: bool,
}

/// One negotiated stream: where to send, what, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream<C> {
    /// Index of the m= line.
    pub index: usize,
    /// The codec chosen.
    pub choice: C,
    /// Remote address for RTP.
    pub remote: std::net::SocketAddr,
    /// RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// Direction from our side.
    pub direction: Direction,
    /// Protocol echoed in the answer.
    pub proto: String,
    /// SDES-SRTP keys when the stream is protected (RTP/SAVP, or RTP/AVP offered with
    /// `a=crypto`: best-effort SRTP as baresip's `mediaenc=srtp` does).
    pub srtp: Option<SdesKeys>,
    /// DTLS-SRTP (UDP/TLS/RTP/SAVP(F)): our role and both fingerprints; the keys come from
    /// the handshake on the media path.
    pub dtls: Option<DtlsParams>,
}

impl<C> Stream<C> {
    /// Whether the stream is SRTP (by SDES keys or DTLS-SRTP).
    pub fn is_encrypted(&self) -> bool {
        self.srtp.is_some() || self.dtls.is_some()
    }

    /// Preference among offered alternatives: DTLS-SRTP, then SDES, then plain RTP.
    fn rank(&self) -> u8 {
        match (&self.dtls, &self.srtp) {
            (Some(_), _) => 2,
            (None, Some(_)) => 1,
            (None, None) => 0,
        }
    }
}

fn better<C>(current: Option<&Stream<C>>, candidate: &Stream<C>) -> bool {
    current.is_none_or(|c| candidate.rank() > c.rank())
}

/// The result of answering an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The audio stream, if one was accepted.
    pub audio: Option<Stream<AudioChoice>>,
    /// The video stream, if one was accepted.
    pub video: Option<Stream<VideoChoice>>,
    /// Every offered m= line (kind, proto) so refused ones are answered with port 0.
    offered: Vec<(String, String, String)>,
}

/// What the cart can do with media right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Send H.264 video (a camera and encoder exist).
    pub video: bool,
    /// Accept RTP/SAVP streams and answer `a=crypto` (SDES keys, RFC 4568), and accept
    /// UDP/TLS/RTP/SAVP streams (DTLS-SRTP, RFC 5764).
    pub srtp: bool,
    /// Refuse plain RTP streams (`[sip] srtp = "mandatory"`): an offer with nothing encrypted
    /// is [`SdpError::SrtpRequired`].
    pub require_srtp: bool,
}

fn audio_codec(f: &RtpMap) -> Option<AudioCodec> {
    match (f.name.to_ascii_uppercase().as_str(), f.clock) {
        ("OPUS", 48_000) => Some(AudioCodec::Opus),
        ("PCMU", 8_000) => Some(AudioCodec::Pcmu),
        ("PCMA", 8_000) => Some(AudioCodec::Pcma),
        _ => None,
    }
}

fn plain_rtp(proto: &str) -> bool {
    matches!(proto, "RTP/AVP" | "RTP/AVPF")
}

fn secure_rtp(proto: &str) -> bool {
    matches!(proto, "RTP/SAVP" | "RTP/SAVPF")
}

/// DTLS-SRTP transports (RFC 5764 §8; `UDP/TLS/RTP/SAVPF` from RFC 5764/8843).
pub fn dtls_rtp(proto: &str) -> bool {
    matches!(proto, "UDP/TLS/RTP/SAVP" | "UDP/TLS/RTP/SAVPF")
}

/// The DTLS side of answering one offered stream: its fingerprints and our setup. `previous`
/// is what an earlier answer in this dialog settled: with the same peer fingerprints our role
/// stays, so a re-INVITE (hold, resume) does not ask for a new handshake.
fn answer_dtls(m: &Media, previous: Option<&DtlsParams>) -> Result<DtlsParams, DtlsError> {
    let mut remote = Vec::new();
    let mut first_error = None;
    for text in &m.fingerprints {
        match Fingerprint::parse(text) {
            Ok(f) => remote.push(f),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if remote.is_empty() {
        return Err(first_error.unwrap_or(DtlsError::MalformedFingerprint(
            "a DTLS-SRTP stream needs a=fingerprint",
        )));
    }
    let offered = m.setup.as_deref().map(Setup::parse).transpose()?;
    if let Some(p) = previous.filter(|p| p.remote == remote) {
        return Ok(p.clone());
    }
    let (setup, role) = dtls::answer_setup(offered)?;
    let local = dtls::local_identity()?.fingerprint().clone();
    Ok(DtlsParams {
        setup,
        role,
        local,
        remote,
    })
}

/// Answers `offer`: audio prefers Opus, then PCMU, then PCMA; video takes H.264 with
/// packetization-mode 1 whose profile decodes constrained baseline. Streams the cart cannot take
/// are refused (port 0); with nothing accepted the result is [`SdpError::NoCommonCodec`].
///
/// With `caps.srtp`, a stream offered with `a=crypto` lines is answered with the first line the
/// cart can honour and a fresh key of ours; an RTP/SAVP stream without one is refused. A
/// UDP/TLS/RTP/SAVP(F) stream is answered with our fingerprint and `a=setup` (RFC 5763 §5); one
/// whose `a=fingerprint` or `a=setup` cannot be used is refused. With `caps.require_srtp` plain
/// streams are refused too.
pub fn answer(offer: &SessionDescription, caps: &Capabilities) -> Result<Answer, SdpError> {
    answer_again(offer, caps, None)
}

/// [`answer`] for a re-INVITE: where the previous answer protected a stream with the suite
/// chosen again, our key stays the same (RFC 4568 §7.1.4 lets the answerer keep it), so
/// packets in flight and the peer's SRTP context survive hold and resume.
pub fn answer_again(
    offer: &SessionDescription,
    caps: &Capabilities,
    previous: Option<&Answer>,
) -> Result<Answer, SdpError> {
    let mut result = Answer {
        audio: None,
        video: None,
        offered: Vec::new(),
    };
    let mut dtls_refusal: Option<DtlsError> = None;
    let mut plain_refused = false;
    for (index, m) in offer.media.iter().enumerate() {
        let fmts = m
            .formats
            .first()
            .map(|f| f.pt.to_string())
            .unwrap_or_else(|| "0".into());
        result.offered.push((m.kind.clone(), m.proto.clone(), fmts));
        let usable_proto =
            plain_rtp(&m.proto) || (caps.srtp && (secure_rtp(&m.proto) || dtls_rtp(&m.proto)));
        if m.port == 0 || !usable_proto {
            continue;
        }
        let dtls = if dtls_rtp(&m.proto) {
            let previous_dtls = previous.and_then(|p| match m.kind.as_str() {
                "audio" => p.audio.as_ref().and_then(|a| a.dtls.as_ref()),
                "video" => p.video.as_ref().and_then(|v| v.dtls.as_ref()),
                _ => None,
            });
            // A running call's media starts DTLS only once: a re-INVITE may keep a DTLS-SRTP
            // stream, not turn a plain or SDES one (or a new one) into DTLS-SRTP.
            if previous.is_some() && previous_dtls.is_none() {
                dtls_refusal.get_or_insert(DtlsError::Setup(
                    "a stream cannot become DTLS-SRTP in a re-INVITE",
                ));
                continue;
            }
            match answer_dtls(m, previous_dtls) {
                Ok(p) => Some(p),
                Err(e) => {
                    dtls_refusal.get_or_insert(e);
                    continue;
                }
            }
        } else {
            None
        };
        let srtp = if dtls.is_none() && caps.srtp && !m.crypto.is_empty() {
            let keep = previous.and_then(|p| match m.kind.as_str() {
                "audio" => p.audio.as_ref().and_then(|a| a.srtp.as_ref()),
                "video" => p.video.as_ref().and_then(|v| v.srtp.as_ref()),
                _ => None,
            });
            // No usable line (or no random source for our key): SAVP is refused below, AVP
            // goes on in the clear as its offerer allowed.
            SdesKeys::answer(&m.crypto, keep.map(|k| &k.local))
                .ok()
                .flatten()
        } else {
            None
        };
        if secure_rtp(&m.proto) && srtp.is_none() {
            continue;
        }
        if caps.require_srtp && srtp.is_none() && dtls.is_none() {
            plain_refused = true;
            continue;
        }
        let Some(ip) = m.connection.or(offer.connection) else {
            continue;
        };
        let remote = std::net::SocketAddr::new(ip, m.port);
        let direction = m.direction.reversed();
        match m.kind.as_str() {
            "audio" => {
                let best = [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma]
                    .into_iter()
                    .find_map(|want| {
                        m.formats
                            .iter()
                            .find(|f| audio_codec(f) == Some(want))
                            .map(|f| (want, f))
                    });
                let Some((codec, f)) = best else { continue };
                let events = || {
                    m.formats
                        .iter()
                        .filter(|t| t.name.eq_ignore_ascii_case("telephone-event") && t.clock > 0)
                };
                let dtmf = events()
                    .find(|t| t.clock == f.clock)
                    .or_else(|| events().next());
                let (dtmf_pt, dtmf_clock) = dtmf.map_or((None, f.clock), |t| (Some(t.pt), t.clock));
                let candidate = Stream {
                    index,
                    choice: AudioChoice {
                        codec,
                        pt: f.pt,
                        clock: f.clock,
                        channels: f.channels,
                        dtmf_pt,
                        dtmf_clock,
                    },
                    remote,
                    rtcp_mux: m.rtcp_mux,
                    direction,
                    proto: m.proto.clone(),
                    srtp,
                    dtls,
                };
                if better(result.audio.as_ref(), &candidate) {
                    result.audio = Some(candidate);
                }
            }
            "video" if caps.video => {
                let h264 = m.formats.iter().find_map(|f| {
                    if !f.name.eq_ignore_ascii_case("H264") || f.clock != 90_000 {
                        return None;
                    }
                    let fmtp = f.fmtp.as_deref();
                    let mode = fmtp.and_then(|p| fmtp_param(p, "packetization-mode"));
                    if mode != Some("1") {
                        return None;
                    }
                    let offered = ProfileLevelId::parse(fmtp)?;
                    if !offered.decodes_constrained_baseline() {
                        return None;
                    }
                    // RFC 6184 §8.2.2: the answer keeps the offered profile; without
                    // level-asymmetry-allowed the level is at most the offered one.
                    let asymmetric =
                        fmtp.and_then(|p| fmtp_param(p, "level-asymmetry-allowed")) == Some("1");
                    let level = if asymmetric {
                        ProfileLevelId::CART.level_idc
                    } else {
                        offered.level_idc.min(ProfileLevelId::CART.level_idc)
                    };
                    Some((
                        f.pt,
                        ProfileLevelId {
                            level_idc: level,
                            ..offered
                        },
                    ))
                });
                let Some((pt, profile_level_id)) = h264 else {
                    continue;
                };
                let candidate = Stream {
                    index,
                    choice: VideoChoice {
                        pt,
                        profile_level_id,
                        feedback: m.proto.ends_with("AVPF"),
                    },
                    remote,
                    rtcp_mux: m.rtcp_mux,
                    direction,
                    proto: m.proto.clone(),
                    srtp,
                    dtls,
                };
                if better(result.video.as_ref(), &candidate) {
                    result.video = Some(candidate);
                }
            }
            _ => {}
        }
    }
    if result.audio.is_none() && result.video.is_none() {
        return Err(match dtls_refusal {
            Some(e) => SdpError::Dtls(e),
            None if plain_refused => SdpError::SrtpRequired,
            None => SdpError::NoCommonCodec,
        });
    }
    Ok(result)
}

/// Where our media is and what we send with each accepted stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMedia {
    /// Address in o= and c=.
    pub address: IpAddr,
    /// Our audio RTP port.
    pub audio_port: u16,
    /// Our video RTP port.
    pub video_port: u16,
    /// o= session id.
    pub session_id: u64,
    /// o= version (incremented by each new offer or answer in the dialog).
    pub version: u64,
    /// Hold: we send nothing (direction becomes recvonly/inactive).
    pub on_hold: bool,
}

fn hold(d: Direction, on_hold: bool) -> Direction {
    if !on_hold {
        return d;
    }
    match d {
        Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
        _ => Direction::Inactive,
    }
}

/// The session-level lines every SDP of ours starts with (origin, connection, timing).
pub(crate) fn session_header(local: &LocalMedia) -> String {
    let family = if local.address.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    };
    format!(
        "v=0\r\no=telecart {} {} IN {family} {}\r\ns=telecart\r\nc=IN {family} {}\r\nt=0 0\r\n",
        local.session_id, local.version, local.address, local.address
    )
}

/// Our `a=setup` and `a=fingerprint` for a DTLS-SRTP stream.
pub(crate) fn render_dtls(s: &mut String, dtls: Option<&DtlsParams>) {
    if let Some(d) = dtls {
        let _ = write!(
            s,
            "a=setup:{}\r\na=fingerprint:{}\r\n",
            d.setup.attr(),
            d.local
        );
    }
}

impl Answer {
    /// Whether every accepted stream is SRTP (SDES or DTLS).
    pub fn is_encrypted(&self) -> bool {
        self.audio.as_ref().is_none_or(Stream::is_encrypted)
            && self.video.as_ref().is_none_or(Stream::is_encrypted)
    }

    /// Writes the answer SDP; refused m= lines get port 0 in the offered order.
    pub fn render(&self, local: &LocalMedia) -> String {
        let mut s = session_header(local);
        for (index, (kind, proto, fmts)) in self.offered.iter().enumerate() {
            if let Some(a) = self.audio.as_ref().filter(|a| a.index == index) {
                let c = &a.choice;
                let mut pts = c.pt.to_string();
                if let Some(d) = c.dtmf_pt {
                    let _ = write!(pts, " {d}");
                }
                let _ = write!(s, "m=audio {} {} {pts}\r\n", local.audio_port, a.proto);
                let name = match c.codec {
                    AudioCodec::Opus => "opus",
                    AudioCodec::Pcma => "PCMA",
                    _ => "PCMU",
                };
                if c.channels > 1 {
                    let _ = write!(s, "a=rtpmap:{} {name}/{}/{}\r\n", c.pt, c.clock, c.channels);
                } else {
                    let _ = write!(s, "a=rtpmap:{} {name}/{}\r\n", c.pt, c.clock);
                }
                if c.codec == AudioCodec::Opus {
                    let _ = write!(
                        s,
                        "a=fmtp:{} useinbandfec=1;stereo=0;sprop-stereo=0\r\n",
                        c.pt
                    );
                }
                if let Some(d) = c.dtmf_pt {
                    let _ = write!(
                        s,
                        "a=rtpmap:{d} telephone-event/{}\r\na=fmtp:{d} 0-16\r\n",
                        c.dtmf_clock
                    );
                }
                let _ = write!(s, "a=ptime:20\r\n");
                if a.rtcp_mux {
                    s.push_str("a=rtcp-mux\r\n");
                }
                if let Some(k) = &a.srtp {
                    let _ = write!(s, "a=crypto:{}\r\n", k.answer_line().as_str());
                }
                render_dtls(&mut s, a.dtls.as_ref());
                let _ = write!(s, "a={}\r\n", hold(a.direction, local.on_hold).attr());
            } else if let Some(v) = self.video.as_ref().filter(|v| v.index == index) {
                let pt = v.choice.pt;
                let _ = write!(s, "m=video {} {} {pt}\r\n", local.video_port, v.proto);
                let _ = write!(
                    s,
                    "a=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} packetization-mode=1;profile-level-id={}\r\n",
                    v.choice.profile_level_id.hex()
                );
                if v.choice.feedback {
                    let _ = write!(s, "a=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\n");
                }
                if v.rtcp_mux {
                    s.push_str("a=rtcp-mux\r\n");
                }
                if let Some(k) = &v.srtp {
                    let _ = write!(s, "a=crypto:{}\r\n", k.answer_line().as_str());
                }
                render_dtls(&mut s, v.dtls.as_ref());
                let _ = write!(s, "a={}\r\n", hold(v.direction, local.on_hold).attr());
            } else {
                let _ = write!(s, "m={kind} 0 {proto} {fmts}\r\n");
            }
        }
        s
    }
}

/// Whether an offer puts the call on hold (RFC 3264 §8.4 and the older c=0.0.0.0 form).
pub fn is_hold_offer(offer: &SessionDescription) -> bool {
    let zero = |ip: Option<IpAddr>| ip.is_some_and(|ip| ip.is_unspecified());
    !offer.media.is_empty()
        && offer.media.iter().filter(|m| m.port != 0).all(|m| {
            matches!(m.direction, Direction::SendOnly | Direction::Inactive)
                || zero(m.connection.or(offer.connection))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// baresip 1.0's offer (PCMU, PCMA, Opus, H.264 mode 0 and 1, VP8), trimmed.
    const BARESIP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 10000 RTP/AVP 96 0 8 101\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 stereo=1;sprop-stereo=1\r\n\
a=rtpmap:101 telephone-event/48000\r\na=fmtp:101 0-15\r\na=rtcp-mux\r\na=sendrecv\r\n\
m=video 10002 RTP/AVP 100 101 102\r\na=rtpmap:100 H264/90000\r\na=fmtp:100 packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:101 H264/90000\r\na=fmtp:101 packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:102 VP8/90000\r\na=sendrecv\r\n";

    fn caps() -> Capabilities {
        Capabilities {
            video: true,
            srtp: false,
            require_srtp: false,
        }
    }

    #[test]
    fn baresip_offer_gets_opus_and_h264_mode_1() {
        let offer = SessionDescription::parse(BARESIP).unwrap();
        let a = answer(&offer, &caps()).unwrap();
        let audio = a.audio.clone().unwrap();
        assert_eq!(audio.choice.codec, AudioCodec::Opus);
        assert_eq!((audio.choice.pt, audio.choice.dtmf_pt), (96, Some(101)));
        assert!(audio.rtcp_mux);
        assert_eq!(audio.remote, "127.0.0.1:10000".parse().unwrap());
        let video = a.video.clone().unwrap();
        assert_eq!(video.choice.pt, 101);
        assert_eq!(video.choice.profile_level_id, ProfileLevelId::CART);
        let text = a.render(&LocalMedia {
            address: "127.0.0.1".parse().unwrap(),
            audio_port: 20000,
            video_port: 20002,
            session_id: 7,
            version: 1,
            on_hold: false,
        });
        assert!(text.contains("m=audio 20000 RTP/AVP 96 101\r\n"), "{text}");
        assert!(text.contains("a=fmtp:101 packetization-mode=1;profile-level-id=42e01f"));
        assert!(text.contains("a=rtcp-mux\r\na=sendrecv\r\nm=video"));
        // Our answer parses back.
        assert_eq!(SessionDescription::parse(&text).unwrap().media.len(), 2);
    }

    #[test]
    fn telephone_event_at_the_audio_clock_is_preferred_and_8000_is_taken_beside_opus() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let a = answer(&SessionDescription::parse(sdp).unwrap(), &caps()).unwrap();
        let c = a.audio.unwrap().choice;
        assert_eq!((c.codec, c.pt, c.dtmf_pt), (AudioCodec::Pcmu, 0, Some(101)));
        // baresip 1.0's real offer: Opus/48000 with telephone-event/8000 only.
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 96 0 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
        let a = answer(&SessionDescription::parse(sdp).unwrap(), &caps()).unwrap();
        let c = a.audio.clone().unwrap().choice;
        assert_eq!(
            (c.codec, c.dtmf_pt, c.dtmf_clock),
            (AudioCodec::Opus, Some(101), 8000)
        );
        let text = a.render(&LocalMedia {
            address: "10.0.0.9".parse().unwrap(),
            audio_port: 1000,
            video_port: 1002,
            session_id: 1,
            version: 1,
            on_hold: false,
        });
        assert!(
            text.contains("a=rtpmap:101 telephone-event/8000\r\n"),
            "{text}"
        );
        // Both clocks offered: the one matching the codec wins.
        let both = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 96 100 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:100 telephone-event/8000\r\na=rtpmap:101 telephone-event/48000\r\n";
        let c = answer(&SessionDescription::parse(both).unwrap(), &caps())
            .unwrap()
            .audio
            .unwrap()
            .choice;
        assert_eq!((c.dtmf_pt, c.dtmf_clock), (Some(101), 48_000));
    }

    #[test]
    fn profile_level_id_follows_rfc_6184_8_2_2() {
        let offer = |plid: &str, extra: &str| {
            format!(
                "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 5000 RTP/AVPF 97\r\na=rtpmap:97 H264/90000\r\n\
a=fmtp:97 packetization-mode=1;profile-level-id={plid}{extra}\r\n"
            )
        };
        let chosen = |text: String| {
            answer(&SessionDescription::parse(&text).unwrap(), &caps())
                .ok()
                .and_then(|a| a.video)
                .map(|v| v.choice.profile_level_id.hex())
        };
        // Same profile kept, level lowered to what the offer can take.
        assert_eq!(chosen(offer("42e00d", "")), Some("42e00d".into()));
        // A higher offered level is answered with ours.
        assert_eq!(chosen(offer("640033", "")), Some("64001f".into()));
        assert_eq!(
            chosen(offer("4d0015", ";level-asymmetry-allowed=1")),
            Some("4d001f".into())
        );
        // Extended/high-10 and malformed ids are refused.
        assert_eq!(chosen(offer("6e001f", "")), None);
        assert_eq!(chosen(offer("zz", "")), None);
    }

    #[test]
    fn no_common_codec_and_non_rtp_streams_are_refused() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 18\r\nm=video 5000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(
            answer(&SessionDescription::parse(sdp).unwrap(), &caps()),
            Err(SdpError::NoCommonCodec)
        );
        let srtp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\nm=audio 4002 RTP/AVP 8\r\n";
        let a = answer(&SessionDescription::parse(srtp).unwrap(), &caps()).unwrap();
        let audio = a.audio.clone().unwrap();
        assert_eq!((audio.index, audio.choice.codec), (1, AudioCodec::Pcma));
        let text = a.render(&LocalMedia {
            address: "10.0.0.9".parse().unwrap(),
            audio_port: 1000,
            video_port: 1002,
            session_id: 1,
            version: 1,
            on_hold: true,
        });
        assert!(
            text.contains("m=audio 0 RTP/SAVP 0\r\nm=audio 1000 RTP/AVP 8\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("a=recvonly\r\n"),
            "on hold we only receive: {text}"
        );
    }

    #[test]
    fn hold_offers_are_recognised() {
        let held = SessionDescription::parse(
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n",
        )
        .unwrap();
        assert!(is_hold_offer(&held));
        let old =
            SessionDescription::parse("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n")
                .unwrap();
        assert!(is_hold_offer(&old));
        let resumed = SessionDescription::parse(BARESIP).unwrap();
        assert!(!is_hold_offer(&resumed));
    }

    #[test]
    fn malformed_sdp_is_an_error_not_a_panic() {
        for bad in [
            "",
            "x",
            "v=1\r\n",
            "v=0\r\nm=audio x RTP/AVP 0\r\n",
            "v=0\r\nm=audio 1 RTP/AVP 300\r\n",
            "v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0\r\n",
            "v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU/x\r\n",
            "v=0\r\nc=IN IP4 nonsense\r\n",
            "v=0\r\nmm=audio\r\n",
        ] {
            assert!(SessionDescription::parse(bad).is_err(), "{bad:?}");
        }
        let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(5000));
        assert_eq!(SessionDescription::parse(&huge), Err(SdpError::TooLarge));
    }

    fn srtp_caps() -> Capabilities {
        Capabilities {
            video: true,
            srtp: true,
            require_srtp: false,
        }
    }

    fn local() -> LocalMedia {
        LocalMedia {
            address: "10.0.0.9".parse().unwrap(),
            audio_port: 1000,
            video_port: 1002,
            session_id: 1,
            version: 1,
            on_hold: false,
        }
    }

    /// The shape of baresip 1.0's `mediaenc=srtp-mand` offer (keys replaced).
    fn savp_offer(audio_lines: &[&str], video_lines: &[&str]) -> String {
        let mut s = String::from(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 10000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\n",
        );
        for l in audio_lines {
            s.push_str(&format!("a=crypto:{l}\r\n"));
        }
        s.push_str("m=video 10002 RTP/SAVP 101\r\na=rtpmap:101 H264/90000\r\na=fmtp:101 packetization-mode=1;profile-level-id=42e01f\r\n");
        for l in video_lines {
            s.push_str(&format!("a=crypto:{l}\r\n"));
        }
        s
    }

    #[test]
    fn savp_offers_are_answered_with_the_first_usable_crypto_line_and_our_own_key() {
        use crate::srtp::{CryptoAttribute, CryptoSuite, MasterKey};
        let gcm = MasterKey::generate(CryptoSuite::AeadAes128Gcm).unwrap();
        let cm = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
        let audio = [
            "1 F8_128_HMAC_SHA1_80 inline:AAAA".to_string(),
            format!("2 AEAD_AES_128_GCM {}", gcm.inline().as_str()),
        ];
        let video = [format!(
            "1 AES_CM_128_HMAC_SHA1_80 {}|2^31",
            cm.inline().as_str()
        )];
        let text = savp_offer(
            &audio.iter().map(String::as_str).collect::<Vec<_>>(),
            &video.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let offer = SessionDescription::parse(&text).unwrap();
        // Without SRTP the cart refuses both streams.
        assert_eq!(answer(&offer, &caps()), Err(SdpError::NoCommonCodec));
        let a = answer(&offer, &srtp_caps()).unwrap();
        let audio_keys = a.audio.as_ref().unwrap().srtp.clone().unwrap();
        let video_keys = a.video.as_ref().unwrap().srtp.clone().unwrap();
        assert_eq!((audio_keys.tag, audio_keys.remote.clone()), (2, gcm));
        assert_eq!((video_keys.tag, video_keys.remote.clone()), (1, cm));
        assert_ne!(audio_keys.local, video_keys.local, "a key per stream");
        let rendered = a.render(&local());
        assert!(
            rendered.contains("m=audio 1000 RTP/SAVP 0 101\r\n"),
            "{rendered}"
        );
        assert!(
            rendered.contains("m=video 1002 RTP/SAVP 101\r\n"),
            "{rendered}"
        );
        // The answer parses back to our keys, one line per stream.
        let back = SessionDescription::parse(&rendered).unwrap();
        let line = |i: usize| {
            assert_eq!(back.media[i].crypto.len(), 1);
            CryptoAttribute::parse(&back.media[i].crypto[0]).unwrap()
        };
        assert_eq!(line(0).key, audio_keys.local);
        assert_eq!(
            (line(0).tag, line(0).suite),
            (2, CryptoSuite::AeadAes128Gcm)
        );
        assert_eq!(line(1).key, video_keys.local);
        // A re-INVITE keeps our keys; a fresh answer makes new ones.
        let again = answer_again(&offer, &srtp_caps(), Some(&a)).unwrap();
        assert_eq!(again.audio.unwrap().srtp.unwrap().local, audio_keys.local);
        let fresh = answer(&offer, &srtp_caps()).unwrap();
        assert_ne!(fresh.audio.unwrap().srtp.unwrap().local, audio_keys.local);
    }

    #[test]
    fn savp_without_a_usable_key_is_refused_and_avp_with_crypto_gets_best_effort_srtp() {
        let bad = savp_offer(&["1 AES_CM_128_HMAC_SHA1_80 inline:AAAA|1:4"], &[]);
        let offer = SessionDescription::parse(&bad).unwrap();
        assert_eq!(answer(&offer, &srtp_caps()), Err(SdpError::NoCommonCodec));
        // baresip's optional mode: RTP/AVP with a=crypto, answered with a key when we can.
        let key = crate::srtp::MasterKey::generate(crate::srtp::CryptoSuite::AesCm128HmacSha1_80)
            .unwrap();
        let avp = format!(
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 8\r\na=crypto:5 AES_CM_128_HMAC_SHA1_80 {}\r\n",
            key.inline().as_str()
        );
        let offer = SessionDescription::parse(&avp).unwrap();
        let a = answer(&offer, &srtp_caps()).unwrap();
        let audio = a.audio.clone().unwrap();
        assert_eq!(
            (audio.proto.as_str(), audio.srtp.unwrap().tag),
            ("RTP/AVP", 5)
        );
        assert!(
            a.render(&local())
                .contains("a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:")
        );
        // Without SRTP the same offer is plain RTP with no key in the answer.
        let plain = answer(&offer, &caps()).unwrap();
        assert!(plain.audio.as_ref().unwrap().srtp.is_none());
        assert!(!plain.render(&local()).contains("crypto"));
    }
    /// baresip 1.0's `mediaenc=dtls_srtp` offer shape: UDP/TLS/RTP/SAVP, the fingerprint at
    /// session level, `a=setup:actpass` per stream, no ICE.
    fn dtls_offer(fingerprint: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
a=fingerprint:{fingerprint}\r\n\
m=audio 10000 UDP/TLS/RTP/SAVPF 96 0 101\r\na=rtpmap:96 opus/48000/2\r\n\
a=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\na=setup:actpass\r\na=sendrecv\r\n\
m=video 10002 UDP/TLS/RTP/SAVP 100\r\na=rtpmap:100 H264/90000\r\n\
a=fmtp:100 packetization-mode=1;profile-level-id=42e01f\r\na=rtcp-mux\r\na=setup:actpass\r\n"
        )
    }

    const PEER_FINGERPRINT: &str = "sha-256 5B:2B:5E:DE:80:10:43:2F:4E:25:4C:23:43:3C:0F:28:92:19:1E:A5:37:5D:FC:33:05:B3:2B:3C:4F:25:3F:7B";

    #[test]
    fn a_dtls_srtp_offer_without_ice_is_answered_active_with_our_fingerprint() {
        let offer = SessionDescription::parse(&dtls_offer(PEER_FINGERPRINT)).unwrap();
        assert_eq!(
            offer.media[1].fingerprints,
            vec![PEER_FINGERPRINT.to_string()]
        );
        // Without SRTP the cart cannot take DTLS-SRTP streams.
        assert_eq!(answer(&offer, &caps()), Err(SdpError::NoCommonCodec));
        let a = answer(&offer, &srtp_caps()).unwrap();
        let audio = a.audio.clone().unwrap();
        let d = audio.dtls.clone().unwrap();
        assert_eq!(
            (d.setup, d.role),
            (Setup::Active, crate::dtls::DtlsRole::Client)
        );
        assert_eq!(
            d.remote,
            vec![Fingerprint::parse(PEER_FINGERPRINT).unwrap()]
        );
        assert!(audio.srtp.is_none() && a.is_encrypted());
        assert_eq!(audio.choice.codec, AudioCodec::Opus);
        let text = a.render(&local());
        let ours = crate::dtls::local_identity()
            .unwrap()
            .fingerprint()
            .to_string();
        assert!(
            text.contains("m=audio 1000 UDP/TLS/RTP/SAVPF 96 101\r\n"),
            "{text}"
        );
        assert!(
            text.contains("m=video 1002 UDP/TLS/RTP/SAVP 100\r\n"),
            "{text}"
        );
        assert_eq!(
            text.matches(&format!("a=fingerprint:{ours}\r\n")).count(),
            2,
            "{text}"
        );
        assert_eq!(text.matches("a=setup:active\r\n").count(), 2, "{text}");
        // Our answer parses back with our fingerprint and setup on each stream.
        let back = SessionDescription::parse(&text).unwrap();
        assert_eq!(back.media[0].setup.as_deref(), Some("active"));
        assert_eq!(back.media[1].fingerprints, vec![ours]);
        // A re-INVITE from the same peer keeps our role even if it now says passive.
        let again = dtls_offer(PEER_FINGERPRINT).replace("actpass", "active");
        let again = answer_again(
            &SessionDescription::parse(&again).unwrap(),
            &srtp_caps(),
            Some(&a),
        )
        .unwrap();
        assert_eq!(again.audio.unwrap().dtls.unwrap().setup, Setup::Active);
        // A re-INVITE cannot turn a plain stream into DTLS-SRTP (the media would stay plain).
        let plain_first =
            answer(&SessionDescription::parse(BARESIP).unwrap(), &srtp_caps()).unwrap();
        assert!(matches!(
            answer_again(&offer, &srtp_caps(), Some(&plain_first)),
            Err(SdpError::Dtls(DtlsError::Setup(_)))
        ));
        // An offerer that is active makes us passive.
        let active = dtls_offer(PEER_FINGERPRINT).replace("actpass", "active");
        let a = answer(&SessionDescription::parse(&active).unwrap(), &srtp_caps()).unwrap();
        assert_eq!(a.audio.unwrap().dtls.unwrap().setup, Setup::Passive);
    }

    #[test]
    fn unusable_fingerprints_and_setup_refuse_the_stream_with_the_reason() {
        for (bad, why) in [
            (
                "sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB",
                "sha-1",
            ),
            ("sha-256 5B:2B", "length"),
            ("sha-256", "no fingerprint"),
        ] {
            let offer = SessionDescription::parse(&dtls_offer(bad)).unwrap();
            match answer(&offer, &srtp_caps()) {
                Err(SdpError::Dtls(e)) => assert!(e.to_string().contains(why), "{e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let holdconn = dtls_offer(PEER_FINGERPRINT).replace("actpass", "holdconn");
        assert!(matches!(
            answer(&SessionDescription::parse(&holdconn).unwrap(), &srtp_caps()),
            Err(SdpError::Dtls(DtlsError::Setup(_)))
        ));
        let sideways = dtls_offer(PEER_FINGERPRINT).replace("actpass", "sideways");
        assert!(answer(&SessionDescription::parse(&sideways).unwrap(), &srtp_caps()).is_err());
        let none: String = dtls_offer(PEER_FINGERPRINT)
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert!(matches!(
            answer(&SessionDescription::parse(&none).unwrap(), &srtp_caps()),
            Err(SdpError::Dtls(DtlsError::MalformedFingerprint(_)))
        ));
    }

    #[test]
    fn dtls_wins_over_sdes_and_sdes_over_plain_when_both_are_offered() {
        let key = crate::srtp::MasterKey::generate(crate::srtp::CryptoSuite::AesCm128HmacSha1_80)
            .unwrap();
        let text = format!(
            "v=0\r\nc=IN IP4 10.0.0.1\r\n\
m=audio 4000 RTP/AVP 0\r\n\
m=audio 4002 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 {}\r\n\
m=audio 4004 UDP/TLS/RTP/SAVP 0\r\na=fingerprint:{PEER_FINGERPRINT}\r\na=setup:actpass\r\n",
            key.inline().as_str()
        );
        let offer = SessionDescription::parse(&text).unwrap();
        let a = answer(&offer, &srtp_caps()).unwrap();
        let audio = a.audio.clone().unwrap();
        assert_eq!(audio.index, 2);
        assert!(audio.dtls.is_some());
        let rendered = a.render(&local());
        assert!(
            rendered.contains(
                "m=audio 0 RTP/AVP 0\r\nm=audio 0 RTP/SAVP 0\r\nm=audio 1000 UDP/TLS/RTP/SAVP 0\r\n"
            ),
            "{rendered}"
        );
        // Without the DTLS line, SDES wins over plain.
        let sdes_and_plain: String = text.split("m=audio 4004").next().unwrap().to_string();
        let a = answer(
            &SessionDescription::parse(&sdes_and_plain).unwrap(),
            &srtp_caps(),
        )
        .unwrap();
        assert_eq!(a.audio.unwrap().index, 1);
    }

    #[test]
    fn mandatory_srtp_refuses_plain_offers_and_plain_streams() {
        let mandatory = Capabilities {
            video: true,
            srtp: true,
            require_srtp: true,
        };
        let plain = SessionDescription::parse(BARESIP).unwrap();
        assert_eq!(answer(&plain, &mandatory), Err(SdpError::SrtpRequired));
        assert!(
            SdpError::SrtpRequired
                .to_string()
                .contains("SRTP is mandatory")
        );
        assert!(!answer(&plain, &srtp_caps()).unwrap().is_encrypted());
        // Encrypted audio is taken; the plain video beside it is refused.
        let mixed = dtls_offer(PEER_FINGERPRINT).replace(
            "m=video 10002 UDP/TLS/RTP/SAVP 100",
            "m=video 10002 RTP/AVP 100",
        );
        let a = answer(&SessionDescription::parse(&mixed).unwrap(), &mandatory).unwrap();
        assert!(a.video.is_none() && a.is_encrypted());
        assert!(a.render(&local()).contains("m=video 0 RTP/AVP 100\r\n"));
    }
}
