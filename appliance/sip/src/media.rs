//! One call's RTP and RTCP, sans-IO: packets in and out, DTMF (RFC 4733) both ways, key-frame
//! requests from PLI/FIR, receive statistics for call quality.
//!
//! The driver owns the sockets (one RTP and one RTCP socket per stream, the RTCP one unused with
//! rtcp-mux) and feeds every datagram to [`MediaSession::handle_receive`] with the address it
//! came from; datagrams from anywhere but the negotiated remote are dropped and counted
//! (symmetric RTP, RFC 4961: we send from the port we receive on). Time comes in as `now`.
//!
//! A stream negotiated with SDES keys is SRTP both ways: every RTP and RTCP datagram is
//! protected as it is queued and verified before it is read; what fails authentication or
//! replays is dropped and counted ([`MediaStats::srtp_auth_failures`]). A protected stream
//! never falls back to plain RTP.
//!
//! A stream negotiated for DTLS-SRTP ([`MediaSession::start_dtls`]) runs a DTLS handshake on
//! its own port (datagrams whose first byte is 20 to 63 are DTLS, RFC 7983), one per component
//! without rtcp-mux; until the handshake has produced keys nothing is sent or read (never in
//! the clear). A handshake that fails or times out is reported once as
//! [`MediaEvent::Failed`]: the call's owner ends the call with that reason.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtp::packetizer::Payloader as _;
use telecart_core::media::AudioCodec;
use webrtc_util::marshal::{Marshal, Unmarshal};

use crate::dtls::{self, DtlsEndpoint, DtlsError, DtlsParams, Identity};
use crate::srtp::{SdesKeys, SrtpError, SrtpSession};

/// Payload size kept under a typical path MTU (1500 minus IP, UDP, RTP and SRTP overhead).
pub const VIDEO_MTU: usize = 1200;
/// Interval between our RTCP reports.
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);
const DTMF_PACKET: Duration = Duration::from_millis(20);
const DTMF_TONE: Duration = Duration::from_millis(100);
const MAX_QUEUE: usize = 512;

/// Which stream a socket or datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// The audio m= line.
    Audio,
    /// The video m= line.
    Video,
}

/// Negotiated audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSetup {
    /// Codec.
    pub codec: AudioCodec,
    /// Payload type.
    pub pt: u8,
    /// RTP clock.
    pub clock: u32,
    /// telephone-event payload type.
    pub dtmf_pt: Option<u8>,
    /// telephone-event clock (may differ from `clock`: telephone-event/8000 beside Opus).
    pub dtmf_clock: u32,
    /// Where the peer receives RTP.
    pub remote: SocketAddr,
    /// RTCP multiplexed on the RTP port.
    pub rtcp_mux: bool,
    /// SDES-SRTP keys; `None`: plain RTP.
    pub srtp: Option<SdesKeys>,
}

/// Negotiated video.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoSetup {
    /// H.264 payload type.
    pub pt: u8,
    /// Where the peer receives RTP.
    pub remote: SocketAddr,
    /// RTCP multiplexed on the RTP port.
    pub rtcp_mux: bool,
    /// SDES-SRTP keys; `None`: plain RTP.
    pub srtp: Option<SdesKeys>,
}

/// What a call negotiated.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MediaSetup {
    /// Audio, if accepted.
    pub audio: Option<AudioSetup>,
    /// Video, if accepted.
    pub video: Option<VideoSetup>,
    /// Send nothing (we hold, or the peer holds us).
    pub send_paused: bool,
}

/// A datagram to send from the stream's RTP (or RTCP) socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Stream whose socket sends it.
    pub stream: StreamKind,
    /// From the RTCP socket (only without rtcp-mux).
    pub rtcp_socket: bool,
    /// Destination.
    pub to: SocketAddr,
    /// The datagram.
    pub data: Vec<u8>,
}

/// Something the call's owner must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// Audio from the peer in the negotiated codec, in arrival order.
    Audio {
        /// Codec.
        codec: AudioCodec,
        /// RTP payload.
        payload: Vec<u8>,
        /// RTP timestamp.
        timestamp: u32,
        /// RTP sequence number (the jitter buffer orders and counts loss by it).
        sequence: u16,
    },
    /// The peer pressed a key (reported once, at the event's start).
    Dtmf {
        /// `0-9`, `*`, `#`, `A-D`.
        digit: char,
    },
    /// The peer asked for a key frame (PLI or FIR).
    KeyFrameRequested,
    /// The stream's media cannot be protected (DTLS-SRTP handshake failed, timed out, or the
    /// peer's certificate did not match its fingerprint): the call should end with `reason`.
    Failed {
        /// Stream whose media failed.
        stream: StreamKind,
        /// Why, for the log and the call record.
        reason: String,
    },
}

/// Where a call's received audio packets go to be played: a jitter buffer that orders them by
/// sequence number, conceals loss and follows the device's clock (the daemon's speaker, the
/// same one WebRTC calls use). One per call and codec; dropping it ends the playback.
pub trait RemoteAudioSink: Send {
    /// One packet in the negotiated codec, as received (possibly late, duplicated or out of
    /// order: the sink sorts that out).
    fn packet(&mut self, sequence: u16, timestamp: u32, payload: &[u8]);
}

/// Counters and estimates for call quality.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MediaStats {
    /// Audio packets sent.
    pub audio_packets_sent: u64,
    /// Video packets sent.
    pub video_packets_sent: u64,
    /// Video access units sent.
    pub video_frames_sent: u64,
    /// Audio packets received from the peer.
    pub audio_packets_received: u64,
    /// Video packets received from the peer.
    pub video_packets_received: u64,
    /// Audio packets lost (sequence gaps).
    pub audio_packets_lost: u64,
    /// Interarrival jitter of the peer's audio, milliseconds (RFC 3550 §6.4.1).
    pub audio_jitter_ms: f64,
    /// Datagrams from an address other than the negotiated one, dropped.
    pub wrong_source: u64,
    /// Datagrams that were neither RTP nor RTCP we understand, dropped.
    pub malformed: u64,
    /// Key-frame requests received.
    pub keyframe_requests: u64,
    /// RTCP compound packets read (after SRTCP authentication on a protected stream).
    pub rtcp_received: u64,
    /// Datagrams on an SRTP stream that did not authenticate (forged, corrupted, truncated,
    /// wrong key, or plain RTP/RTCP on a protected stream), dropped.
    pub srtp_auth_failures: u64,
    /// SRTP/SRTCP datagrams seen before (replays), dropped.
    pub srtp_replayed: u64,
    /// Datagrams not sent because SRTP could not protect them (key exhausted).
    pub srtp_protect_failures: u64,
    /// Media datagrams neither sent nor read because the DTLS-SRTP handshake had not yet
    /// produced keys.
    pub dtls_unkeyed_drops: u64,
    /// DTLS datagrams that the finished association refused (a peer or forger speaking DTLS
    /// after keys exist); the keys stay.
    pub dtls_errors_after_keys: u64,
    /// How long the DTLS-SRTP handshake took (the longest of the streams), milliseconds.
    pub dtls_handshake_ms: Option<f64>,
    /// DTMF digits received.
    pub dtmf_received: u64,
    /// Fraction lost the peer reports for our stream, 0..=1.
    pub remote_fraction_lost: f64,
    /// Round-trip time from the peer's receiver reports.
    pub rtt_ms: Option<f64>,
}

#[derive(Clone, Debug)]
struct Sender {
    ssrc: u32,
    sequence: u16,
    /// Timestamp of the next audio packet; for video the random offset.
    timestamp: u32,
    packets: u32,
    octets: u32,
    last_rtp_ts: u32,
}

impl Sender {
    fn new(seed: u64) -> Self {
        Self {
            ssrc: (seed >> 32) as u32 | 1,
            sequence: seed as u16,
            timestamp: (seed >> 16) as u32,
            packets: 0,
            octets: 0,
            last_rtp_ts: 0,
        }
    }

    fn packet(&mut self, pt: u8, marker: bool, timestamp: u32, payload: Bytes) -> Vec<u8> {
        let p = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: self.sequence,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(p.payload.len() as u32);
        self.last_rtp_ts = timestamp;
        p.marshal().map(|b| b.to_vec()).unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default)]
struct Receiver {
    ssrc: Option<u32>,
    highest_seq: Option<u16>,
    cycles: u32,
    received: u64,
    base_seq: u32,
    expected_prior: u64,
    received_prior: u64,
    transit: Option<i64>,
    jitter: f64,
    last_sr: Option<(u32, Instant)>,
    last_dtmf_ts: Option<u32>,
}

impl Receiver {
    fn on_packet(&mut self, ssrc: u32, seq: u16, ts: u32, arrival_units: i64) {
        if self.ssrc != Some(ssrc) {
            *self = Self {
                ssrc: Some(ssrc),
                base_seq: u32::from(seq),
                last_sr: self.last_sr,
                ..Self::default()
            };
        }
        match self.highest_seq {
            None => self.highest_seq = Some(seq),
            Some(h) => {
                let delta = seq.wrapping_sub(h);
                if delta != 0 && delta < 0x8000 {
                    if seq < h {
                        self.cycles += 1;
                    }
                    self.highest_seq = Some(seq);
                }
            }
        }
        self.received += 1;
        let transit = arrival_units - i64::from(ts);
        if let Some(prev) = self.transit {
            let d = (transit - prev).abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    fn extended_highest(&self) -> u64 {
        u64::from(self.cycles) << 16 | u64::from(self.highest_seq.unwrap_or(0))
    }

    fn expected(&self) -> u64 {
        (self.extended_highest() + 1).saturating_sub(u64::from(self.base_seq))
    }

    fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// One DTLS-SRTP component: its handshake, then the SRTP contexts from its keys.
#[derive(Debug)]
struct DtlsComponent {
    endpoint: DtlsEndpoint,
    srtp: Option<SrtpSession>,
}

/// A DTLS-SRTP stream: the RTP component, and the RTCP one without rtcp-mux (RFC 5764 §4.1).
#[derive(Debug)]
struct DtlsStream {
    rtp: DtlsComponent,
    rtcp: Option<DtlsComponent>,
}

impl DtlsStream {
    fn component(&mut self, rtcp_socket: bool) -> &mut DtlsComponent {
        match (&mut self.rtcp, rtcp_socket) {
            (Some(c), true) => c,
            _ => &mut self.rtp,
        }
    }

    fn keyed(&self) -> bool {
        self.rtp.srtp.is_some() && self.rtcp.as_ref().is_none_or(|c| c.srtp.is_some())
    }
}

/// How one stream's datagrams are protected.
#[derive(Debug)]
enum Protection {
    Plain,
    Srtp(Box<SrtpSession>),
    Dtls(Box<DtlsStream>),
    /// Keys were negotiated but no context could be made from them: nothing is sent or read
    /// rather than anything in the clear.
    Broken,
}

/// The SRTP context for one datagram of a stream, or why there is none.
enum Keying<'a> {
    /// Plain RTP.
    Plain,
    /// Protected with this session.
    Session(&'a mut SrtpSession),
    /// DTLS-SRTP whose handshake has not given keys yet: nothing passes.
    Unkeyed,
    /// Keys that made no context: nothing passes.
    Broken,
}

impl Protection {
    /// The context for a datagram on the RTP (or, without rtcp-mux, the RTCP) socket.
    fn keying(&mut self, rtcp_socket: bool) -> Keying<'_> {
        match self {
            Self::Plain => Keying::Plain,
            Self::Srtp(s) => Keying::Session(s),
            Self::Dtls(d) => match d.component(rtcp_socket).srtp.as_mut() {
                Some(s) => Keying::Session(s),
                None => Keying::Unkeyed,
            },
            Self::Broken => Keying::Broken,
        }
    }

    fn for_keys(keys: Option<&SdesKeys>) -> Self {
        match keys {
            None => Self::Plain,
            Some(k) => SrtpSession::new(k).map_or(Self::Broken, |s| Self::Srtp(Box::new(s))),
        }
    }

    /// Follows a renegotiation: contexts whose key is unchanged keep their rollover counter
    /// and replay window.
    fn update(&mut self, old: Option<&SdesKeys>, new: Option<&SdesKeys>) {
        match (old, new, &mut *self) {
            (Some(o), Some(n), Self::Srtp(session)) if o.suite() == n.suite() => {
                if session.rekey(o, n).is_err() {
                    *self = Self::Broken;
                }
            }
            // A DTLS-SRTP stream has no SDES keys in either setup; its association outlives
            // re-INVITEs (hold, resume) as RFC 5763 §5 has it for an unchanged fingerprint.
            (o, n, _) if o == n => {}
            (_, n, _) => *self = Self::for_keys(n),
        }
    }
}

#[derive(Clone, Debug)]
struct DtmfOut {
    event: u8,
    started: Instant,
    timestamp: u32,
    next_at: Instant,
    ends_sent: u8,
}

/// One call's media state.
#[derive(Debug)]
pub struct MediaSession {
    setup: MediaSetup,
    started: Instant,
    ntp_at_start: u64,
    audio_tx: Sender,
    video_tx: Sender,
    audio_rx: Receiver,
    video_rx: Receiver,
    video_payloader: rtp::codecs::h264::H264Payloader,
    audio_protection: Protection,
    video_protection: Protection,
    dtmf_out: Option<DtmfOut>,
    dtmf_queue: VecDeque<u8>,
    next_rtcp: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MediaEvent>,
    stats: MediaStats,
}

fn dtmf_code(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

fn dtmf_digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some((b'0' + code) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + code - 12) as char),
        _ => None,
    }
}

/// Whether a datagram on an rtcp-mux port is RTCP (RFC 5761 §4: payload types 64-95 with the
/// marker bit folded in, i.e. second byte 192..=223).
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

impl MediaSession {
    /// A session for `setup`, started at `now`; `seed` randomises SSRCs, sequence numbers and
    /// timestamps (RFC 3550 §5.1); `ntp_now` is the wall clock in NTP format for sender reports.
    pub fn new(setup: MediaSetup, seed: u64, now: Instant, ntp_now: u64) -> Self {
        Self {
            audio_protection: Protection::for_keys(
                setup.audio.as_ref().and_then(|a| a.srtp.as_ref()),
            ),
            video_protection: Protection::for_keys(
                setup.video.as_ref().and_then(|v| v.srtp.as_ref()),
            ),
            setup,
            started: now,
            ntp_at_start: ntp_now,
            audio_tx: Sender::new(seed),
            video_tx: Sender::new(seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15),
            audio_rx: Receiver::default(),
            video_rx: Receiver::default(),
            video_payloader: rtp::codecs::h264::H264Payloader::default(),
            dtmf_out: None,
            dtmf_queue: VecDeque::new(),
            next_rtcp: now + RTCP_INTERVAL,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: MediaStats::default(),
        }
    }

    /// The negotiated media (a re-INVITE may change it with [`Self::update`]).
    pub fn setup(&self) -> &MediaSetup {
        &self.setup
    }

    /// Applies a renegotiation (re-INVITE: hold, resume, new address or codec). SSRCs and
    /// sequence numbers continue.
    pub fn update(&mut self, setup: MediaSetup) {
        let keys = |s: &MediaSetup| {
            (
                s.audio.as_ref().and_then(|a| a.srtp.clone()),
                s.video.as_ref().and_then(|v| v.srtp.clone()),
            )
        };
        let (old_audio, old_video) = keys(&self.setup);
        let (new_audio, new_video) = keys(&setup);
        self.audio_protection
            .update(old_audio.as_ref(), new_audio.as_ref());
        self.video_protection
            .update(old_video.as_ref(), new_video.as_ref());
        self.setup = setup;
    }

    /// Counters so far.
    pub fn stats(&self) -> &MediaStats {
        &self.stats
    }

    /// Queues a datagram, protecting it first on an SRTP stream.
    fn push(&mut self, mut t: Transmit, rtcp: bool) {
        if self.transmits.len() >= MAX_QUEUE {
            return;
        }
        let protection = match t.stream {
            StreamKind::Audio => &mut self.audio_protection,
            StreamKind::Video => &mut self.video_protection,
        };
        match protection.keying(t.rtcp_socket) {
            Keying::Plain => {}
            Keying::Session(s) => {
                let sealed = if rtcp {
                    s.protect_rtcp(&t.data)
                } else {
                    s.protect_rtp(&t.data)
                };
                match sealed {
                    Ok(data) => t.data = data,
                    Err(_) => {
                        self.stats.srtp_protect_failures += 1;
                        return;
                    }
                }
            }
            Keying::Unkeyed => {
                self.stats.dtls_unkeyed_drops += 1;
                return;
            }
            Keying::Broken => {
                self.stats.srtp_protect_failures += 1;
                return;
            }
        }
        self.transmits.push_back(t);
    }

    /// Sends one encoded audio packet covering `frames` samples at the codec clock.
    pub fn send_audio(&mut self, payload: &[u8], frames: u32) {
        let Some(a) = self.setup.audio.clone() else {
            return;
        };
        let ts = self.audio_tx.timestamp;
        self.audio_tx.timestamp = ts.wrapping_add(frames);
        // During a DTMF event the tone replaces speech (RFC 4733 §2.5.1.2 leaves it to us).
        if self.setup.send_paused || self.dtmf_out.is_some() {
            return;
        }
        let marker = self.audio_tx.packets == 0;
        let data = self
            .audio_tx
            .packet(a.pt, marker, ts, Bytes::copy_from_slice(payload));
        self.stats.audio_packets_sent += 1;
        self.push(
            Transmit {
                stream: StreamKind::Audio,
                rtcp_socket: false,
                to: a.remote,
                data,
            },
            false,
        );
    }

    /// Sends one H.264 access unit (Annex B) captured at `capture_us` (wall clock, µs).
    pub fn send_video(&mut self, access_unit: &[u8], capture_us: u64) {
        let Some(v) = self.setup.video.clone() else {
            return;
        };
        if self.setup.send_paused {
            return;
        }
        let ts = self
            .video_tx
            .timestamp
            .wrapping_add((capture_us.wrapping_mul(9) / 100) as u32);
        let Ok(payloads) = self
            .video_payloader
            .payload(VIDEO_MTU, &Bytes::copy_from_slice(access_unit))
        else {
            return;
        };
        let n = payloads.len();
        for (i, p) in payloads.into_iter().enumerate() {
            let data = self.video_tx.packet(v.pt, i + 1 == n, ts, p);
            self.stats.video_packets_sent += 1;
            self.push(
                Transmit {
                    stream: StreamKind::Video,
                    rtcp_socket: false,
                    to: v.remote,
                    data,
                },
                false,
            );
        }
        if n > 0 {
            self.stats.video_frames_sent += 1;
        }
    }

    /// Queues a DTMF digit to send as RFC 4733 events; false if the digit is not a DTMF key or
    /// the peer did not negotiate telephone-event.
    pub fn send_dtmf(&mut self, digit: char) -> bool {
        let has_events = self
            .setup
            .audio
            .as_ref()
            .is_some_and(|a| a.dtmf_pt.is_some());
        match dtmf_code(digit) {
            Some(code) if has_events && self.dtmf_queue.len() < 32 => {
                self.dtmf_queue.push_back(code);
                true
            }
            _ => false,
        }
    }

    fn dtmf_tick(&mut self, now: Instant) {
        let Some(a) = self.setup.audio.clone() else {
            return;
        };
        let Some(pt) = a.dtmf_pt else { return };
        if self.dtmf_out.is_none() {
            let Some(event) = self.dtmf_queue.pop_front() else {
                return;
            };
            self.dtmf_out = Some(DtmfOut {
                event,
                started: now,
                timestamp: self.audio_tx.timestamp,
                next_at: now,
                ends_sent: 0,
            });
        }
        let Some(mut d) = self.dtmf_out.clone() else {
            return;
        };
        while d.next_at <= now {
            let elapsed = d.next_at - d.started;
            let end = elapsed >= DTMF_TONE;
            let clock = u64::from(if a.dtmf_clock > 0 {
                a.dtmf_clock
            } else {
                a.clock
            });
            let units = (elapsed.min(DTMF_TONE).as_micros() as u64 * clock / 1_000_000)
                .max(clock / 50) as u16;
            let payload = [
                d.event,
                if end { 0x80 } else { 0 } | 10,
                (units >> 8) as u8,
                units as u8,
            ];
            let marker = elapsed.is_zero();
            let data =
                self.audio_tx
                    .packet(pt, marker, d.timestamp, Bytes::copy_from_slice(&payload));
            self.push(
                Transmit {
                    stream: StreamKind::Audio,
                    rtcp_socket: false,
                    to: a.remote,
                    data,
                },
                false,
            );
            d.next_at += DTMF_PACKET;
            if end {
                // The end packet goes three times (RFC 4733 §2.5.1.4).
                d.ends_sent += 1;
                if d.ends_sent == 3 {
                    self.dtmf_out = None;
                    return;
                }
                d.next_at = now;
            }
        }
        self.dtmf_out = Some(d);
    }

    /// Feeds one datagram received on `stream`'s RTP socket (`rtcp_socket` false) or RTCP
    /// socket, from `from`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        stream: StreamKind,
        rtcp_socket: bool,
        from: SocketAddr,
        data: &[u8],
    ) {
        let (remote, mux, clock) = match stream {
            StreamKind::Audio => match &self.setup.audio {
                Some(a) => (a.remote, a.rtcp_mux, a.clock),
                None => return,
            },
            StreamKind::Video => match &self.setup.video {
                Some(v) => (v.remote, v.rtcp_mux, 90_000),
                None => return,
            },
        };
        // RTCP comes from the RTP port with mux, from port+1 without (RFC 3605 aside).
        let expected_from = if rtcp_socket && !mux {
            SocketAddr::new(remote.ip(), remote.port().wrapping_add(1))
        } else {
            remote
        };
        if from != expected_from {
            self.stats.wrong_source += 1;
            return;
        }
        let control = rtcp_socket || (mux && is_rtcp(data));
        let protection = match stream {
            StreamKind::Audio => &mut self.audio_protection,
            StreamKind::Video => &mut self.video_protection,
        };
        if let Protection::Dtls(d) = protection
            && dtls::is_dtls(data)
        {
            let result = d.component(rtcp_socket).endpoint.handle_datagram(now, data);
            self.dtls_progress(stream, result);
            return;
        }
        let session = match protection.keying(rtcp_socket) {
            Keying::Plain => None,
            Keying::Session(s) => Some(s),
            Keying::Unkeyed => {
                self.stats.dtls_unkeyed_drops += 1;
                return;
            }
            Keying::Broken => return,
        };
        let opened;
        let data = match session {
            None => data,
            Some(s) => {
                let result = if control {
                    s.unprotect_rtcp(data)
                } else {
                    s.unprotect_rtp(data)
                };
                match result {
                    Ok(plain) => {
                        opened = plain;
                        &opened[..]
                    }
                    Err(SrtpError::Replayed) => {
                        self.stats.srtp_replayed += 1;
                        return;
                    }
                    // Anything else on a protected stream, short or forged, is unauthenticated.
                    Err(_) => {
                        self.stats.srtp_auth_failures += 1;
                        return;
                    }
                }
            }
        };
        if control {
            self.handle_rtcp(now, stream, data);
            return;
        }
        let mut buf = data;
        let Ok(packet) = rtp::packet::Packet::unmarshal(&mut buf) else {
            self.stats.malformed += 1;
            return;
        };
        let h = &packet.header;
        if h.version != 2 {
            self.stats.malformed += 1;
            return;
        }
        let arrival =
            ((now - self.started).as_micros() as u64 * u64::from(clock) / 1_000_000) as i64;
        match stream {
            StreamKind::Video => {
                self.video_rx
                    .on_packet(h.ssrc, h.sequence_number, h.timestamp, arrival);
                self.stats.video_packets_received += 1;
            }
            StreamKind::Audio => {
                let Some(a) = self.setup.audio.clone() else {
                    return;
                };
                if Some(h.payload_type) == a.dtmf_pt {
                    self.audio_rx
                        .on_packet(h.ssrc, h.sequence_number, h.timestamp, arrival);
                    if packet.payload.len() >= 4
                        && self.audio_rx.last_dtmf_ts != Some(h.timestamp)
                        && let Some(digit) = dtmf_digit(packet.payload[0])
                    {
                        self.audio_rx.last_dtmf_ts = Some(h.timestamp);
                        self.stats.dtmf_received += 1;
                        self.events.push_back(MediaEvent::Dtmf { digit });
                    }
                } else if h.payload_type == a.pt {
                    self.audio_rx
                        .on_packet(h.ssrc, h.sequence_number, h.timestamp, arrival);
                    self.stats.audio_packets_received += 1;
                    self.stats.audio_packets_lost = self.audio_rx.lost();
                    self.stats.audio_jitter_ms = self.audio_rx.jitter * 1000.0 / f64::from(clock);
                    if self.events.len() < MAX_QUEUE {
                        self.events.push_back(MediaEvent::Audio {
                            codec: a.codec,
                            payload: packet.payload.to_vec(),
                            timestamp: h.timestamp,
                            sequence: h.sequence_number,
                        });
                    }
                } else {
                    self.stats.malformed += 1;
                }
            }
        }
    }

    fn handle_rtcp(&mut self, now: Instant, stream: StreamKind, data: &[u8]) {
        let mut buf = Bytes::copy_from_slice(data);
        let Ok(packets) = rtcp::packet::unmarshal(&mut buf) else {
            self.stats.malformed += 1;
            return;
        };
        self.stats.rtcp_received += 1;
        let our_ssrc = match stream {
            StreamKind::Audio => self.audio_tx.ssrc,
            StreamKind::Video => self.video_tx.ssrc,
        };
        for p in packets {
            let any = p.as_any();
            if any
                .downcast_ref::<rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication>()
                .is_some()
                || any
                    .downcast_ref::<rtcp::payload_feedbacks::full_intra_request::FullIntraRequest>()
                    .is_some()
            {
                if stream == StreamKind::Video {
                    self.stats.keyframe_requests += 1;
                    self.events.push_back(MediaEvent::KeyFrameRequested);
                }
                continue;
            }
            let reports = if let Some(sr) = any.downcast_ref::<rtcp::sender_report::SenderReport>()
            {
                let rx = match stream {
                    StreamKind::Audio => &mut self.audio_rx,
                    StreamKind::Video => &mut self.video_rx,
                };
                rx.last_sr = Some(((sr.ntp_time >> 16) as u32, now));
                sr.reports.clone()
            } else if let Some(rr) = any.downcast_ref::<rtcp::receiver_report::ReceiverReport>() {
                rr.reports.clone()
            } else {
                continue;
            };
            for r in reports.iter().filter(|r| r.ssrc == our_ssrc) {
                self.stats.remote_fraction_lost = f64::from(r.fraction_lost) / 256.0;
                if r.last_sender_report != 0 {
                    let now_ntp = self.ntp_at(now);
                    let middle = (now_ntp >> 16) as u32;
                    let rtt = middle
                        .wrapping_sub(r.last_sender_report)
                        .wrapping_sub(r.delay);
                    if rtt < 0x8000_0000 {
                        self.stats.rtt_ms = Some(f64::from(rtt) * 1000.0 / 65536.0);
                    }
                }
            }
        }
    }

    fn ntp_at(&self, now: Instant) -> u64 {
        let d = now - self.started;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        self.ntp_at_start
            .wrapping_add(d.as_secs() << 32)
            .wrapping_add(frac)
    }

    fn report_block(
        rx: &mut Receiver,
        now: Instant,
    ) -> Option<rtcp::reception_report::ReceptionReport> {
        let ssrc = rx.ssrc?;
        let expected = rx.expected();
        let interval_expected = expected.saturating_sub(rx.expected_prior);
        let interval_received = rx.received.saturating_sub(rx.received_prior);
        rx.expected_prior = expected;
        rx.received_prior = rx.received;
        let lost_interval = interval_expected.saturating_sub(interval_received);
        let fraction_lost = (lost_interval << 8)
            .checked_div(interval_expected)
            .map_or(0, |f| f.min(255) as u8);
        let (lsr, dlsr) = match rx.last_sr {
            Some((lsr, at)) => {
                let d = now - at;
                (lsr, (d.as_secs_f64() * 65536.0) as u32)
            }
            None => (0, 0),
        };
        Some(rtcp::reception_report::ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost: rx.lost().min(0x7f_ffff) as u32,
            last_sequence_number: rx.extended_highest() as u32,
            jitter: rx.jitter as u32,
            last_sender_report: lsr,
            delay: dlsr,
        })
    }

    fn rtcp_reports(&mut self, now: Instant) {
        let ntp = self.ntp_at(now);
        for stream in [StreamKind::Audio, StreamKind::Video] {
            let (remote, mux) = match stream {
                StreamKind::Audio => match &self.setup.audio {
                    Some(a) => (a.remote, a.rtcp_mux),
                    None => continue,
                },
                StreamKind::Video => match &self.setup.video {
                    Some(v) => (v.remote, v.rtcp_mux),
                    None => continue,
                },
            };
            let (tx, rx) = match stream {
                StreamKind::Audio => (&self.audio_tx, &mut self.audio_rx),
                StreamKind::Video => (&self.video_tx, &mut self.video_rx),
            };
            let reports: Vec<_> = Self::report_block(rx, now).into_iter().collect();
            let packet: Box<dyn rtcp::packet::Packet + Send + Sync> = if tx.packets > 0 {
                // The RTP time of the last packet sent, a close enough pairing with `ntp`.
                let rtp_time = match stream {
                    StreamKind::Audio => tx.timestamp,
                    StreamKind::Video => tx.last_rtp_ts,
                };
                Box::new(rtcp::sender_report::SenderReport {
                    ssrc: tx.ssrc,
                    ntp_time: ntp,
                    rtp_time,
                    packet_count: tx.packets,
                    octet_count: tx.octets,
                    reports,
                    profile_extensions: Bytes::new(),
                })
            } else {
                Box::new(rtcp::receiver_report::ReceiverReport {
                    ssrc: tx.ssrc,
                    reports,
                    profile_extensions: Bytes::new(),
                })
            };
            let sdes = rtcp::source_description::SourceDescription {
                chunks: vec![rtcp::source_description::SourceDescriptionChunk {
                    source: tx.ssrc,
                    items: vec![rtcp::source_description::SourceDescriptionItem {
                        sdes_type: rtcp::source_description::SdesType::SdesCname,
                        text: Bytes::from_static(b"telecart"),
                    }],
                }],
            };
            let Ok(data) = rtcp::packet::marshal(&[packet, Box::new(sdes)]) else {
                continue;
            };
            let to = if mux {
                remote
            } else {
                SocketAddr::new(remote.ip(), remote.port().wrapping_add(1))
            };
            self.push(
                Transmit {
                    stream,
                    rtcp_socket: !mux,
                    to,
                    data: data.to_vec(),
                },
                true,
            );
        }
    }

    /// Asks the peer for a key frame of its video (we do not display video yet; kept for
    /// recording and tests).
    pub fn request_remote_keyframe(&mut self) {
        let (Some(v), Some(media_ssrc)) = (self.setup.video.clone(), self.video_rx.ssrc) else {
            return;
        };
        let pli = rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: self.video_tx.ssrc,
            media_ssrc,
        };
        if let Ok(data) = pli.marshal() {
            let to = if v.rtcp_mux {
                v.remote
            } else {
                SocketAddr::new(v.remote.ip(), v.remote.port().wrapping_add(1))
            };
            self.push(
                Transmit {
                    stream: StreamKind::Video,
                    rtcp_socket: !v.rtcp_mux,
                    to,
                    data: data.to_vec(),
                },
                true,
            );
        }
    }

    /// Protects `stream` with DTLS-SRTP: a handshake in `params.role` with `identity` (ours)
    /// against the peer's fingerprints, one per component without rtcp-mux. The first
    /// ClientHello (when we are the client) is queued at once.
    pub fn start_dtls(
        &mut self,
        now: Instant,
        stream: StreamKind,
        params: &DtlsParams,
        identity: &Identity,
    ) -> Result<(), DtlsError> {
        let mux = match stream {
            StreamKind::Audio => self.setup.audio.as_ref().map(|a| a.rtcp_mux),
            StreamKind::Video => self.setup.video.as_ref().map(|v| v.rtcp_mux),
        };
        let Some(mux) = mux else { return Ok(()) };
        let component = || -> Result<DtlsComponent, DtlsError> {
            Ok(DtlsComponent {
                endpoint: DtlsEndpoint::new(identity, params.role, params.remote.clone(), now)?,
                srtp: None,
            })
        };
        let dtls = DtlsStream {
            rtp: component()?,
            rtcp: if mux { None } else { Some(component()?) },
        };
        *self.protection(stream) = Protection::Dtls(Box::new(dtls));
        self.dtls_progress(stream, Ok(()));
        Ok(())
    }

    fn protection(&mut self, stream: StreamKind) -> &mut Protection {
        match stream {
            StreamKind::Audio => &mut self.audio_protection,
            StreamKind::Video => &mut self.video_protection,
        }
    }

    /// Whether every DTLS-SRTP stream has its keys (true when there is none; false once a
    /// stream failed).
    pub fn dtls_keyed(&self) -> bool {
        [&self.audio_protection, &self.video_protection]
            .into_iter()
            .all(|p| match p {
                Protection::Dtls(d) => d.keyed(),
                Protection::Broken => false,
                Protection::Plain | Protection::Srtp(_) => true,
            })
    }

    /// After a DTLS endpoint of `stream` was fed: queues what it sends, installs keys it
    /// produced, and turns a failure into [`MediaEvent::Failed`] (the stream then sends and
    /// reads nothing).
    fn dtls_progress(&mut self, stream: StreamKind, result: Result<(), DtlsError>) {
        let remote = match stream {
            StreamKind::Audio => self.setup.audio.as_ref().map(|a| a.remote),
            StreamKind::Video => self.setup.video.as_ref().map(|v| v.remote),
        };
        let protection = match stream {
            StreamKind::Audio => &mut self.audio_protection,
            StreamKind::Video => &mut self.video_protection,
        };
        let Protection::Dtls(d) = protection else {
            return;
        };
        let mut failure = None;
        if let Err(e) = result {
            if d.rtp.endpoint.is_keyed() && d.rtcp.as_ref().is_none_or(|c| c.endpoint.is_keyed()) {
                self.stats.dtls_errors_after_keys += 1;
            } else {
                failure = Some(e.to_string());
            }
        }
        let mut handshake = None;
        for (rtcp_socket, component) in [(false, Some(&mut d.rtp)), (true, d.rtcp.as_mut())] {
            let Some(c) = component else { continue };
            while let Some(data) = c.endpoint.poll_transmit() {
                let Some(remote) = remote else { continue };
                let to = if rtcp_socket {
                    SocketAddr::new(remote.ip(), remote.port().wrapping_add(1))
                } else {
                    remote
                };
                if self.transmits.len() < MAX_QUEUE {
                    self.transmits.push_back(Transmit {
                        stream,
                        rtcp_socket,
                        to,
                        data,
                    });
                }
            }
            if let Some(keys) = c.endpoint.take_keys() {
                match SrtpSession::with_keys(&keys.local, &keys.remote) {
                    Ok(s) => c.srtp = Some(s),
                    Err(e) => failure = Some(format!("DTLS-SRTP keys: {e}")),
                }
                handshake = c.endpoint.handshake_time();
            }
        }
        if let Some(t) = handshake {
            let ms = t.as_secs_f64() * 1000.0;
            self.stats.dtls_handshake_ms =
                Some(self.stats.dtls_handshake_ms.map_or(ms, |m| m.max(ms)));
        }
        if let Some(reason) = failure {
            *protection = Protection::Broken;
            self.events.push_back(MediaEvent::Failed { stream, reason });
        }
    }

    fn dtls_timeouts(&mut self, now: Instant) {
        for stream in [StreamKind::Audio, StreamKind::Video] {
            let Protection::Dtls(d) = self.protection(stream) else {
                continue;
            };
            let mut result = d.rtp.endpoint.handle_timeout(now);
            if let Some(c) = d.rtcp.as_mut() {
                result = result.and(c.endpoint.handle_timeout(now));
            }
            self.dtls_progress(stream, result);
        }
    }

    /// Runs timers (DTMF packets, RTCP reports, DTLS retransmissions and deadlines) due at
    /// `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.dtls_timeouts(now);
        if !self.setup.send_paused {
            self.dtmf_tick(now);
        }
        if now >= self.next_rtcp {
            self.rtcp_reports(now);
            self.next_rtcp = now + RTCP_INTERVAL;
        }
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        let dtmf = match &self.dtmf_out {
            Some(d) => Some(d.next_at),
            None if !self.dtmf_queue.is_empty() => Some(self.started),
            None => None,
        };
        let dtls = [&self.audio_protection, &self.video_protection]
            .into_iter()
            .filter_map(|p| match p {
                Protection::Dtls(d) => [
                    d.rtp.endpoint.poll_timeout(),
                    d.rtcp.as_ref().and_then(|c| c.endpoint.poll_timeout()),
                ]
                .into_iter()
                .flatten()
                .min(),
                _ => None,
            })
            .min();
        [dtmf, dtls]
            .into_iter()
            .flatten()
            .fold(self.next_rtcp, Instant::min)
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the owner.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(mux: bool) -> MediaSetup {
        MediaSetup {
            audio: Some(AudioSetup {
                codec: AudioCodec::Pcmu,
                pt: 0,
                clock: 8000,
                dtmf_pt: Some(101),
                dtmf_clock: 8000,
                remote: "10.0.0.2:4000".parse().unwrap(),
                rtcp_mux: mux,
                srtp: None,
            }),
            video: Some(VideoSetup {
                pt: 97,
                remote: "10.0.0.2:4002".parse().unwrap(),
                rtcp_mux: mux,
                srtp: None,
            }),
            send_paused: false,
        }
    }

    fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut s = Sender::new(42);
        s.sequence = seq;
        s.packet(pt, false, ts, Bytes::copy_from_slice(payload))
    }

    #[test]
    fn audio_packets_count_up_by_the_frames_they_cover() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(setup(true), 7, t0, 0);
        m.send_audio(&[0xff; 160], 160);
        m.send_audio(&[0xff; 160], 160);
        let a = m.poll_transmit().unwrap();
        let b = m.poll_transmit().unwrap();
        let pa = rtp::packet::Packet::unmarshal(&mut a.data.as_slice()).unwrap();
        let pb = rtp::packet::Packet::unmarshal(&mut b.data.as_slice()).unwrap();
        assert_eq!(a.to, "10.0.0.2:4000".parse().unwrap());
        assert!(pa.header.marker && !pb.header.marker);
        assert_eq!(pb.header.timestamp.wrapping_sub(pa.header.timestamp), 160);
        assert_eq!(
            pb.header.sequence_number,
            pa.header.sequence_number.wrapping_add(1)
        );
        assert_eq!((pa.header.payload_type, pa.payload.len()), (0, 160));
    }

    #[test]
    fn video_is_fragmented_under_the_mtu_with_the_marker_on_the_last_packet() {
        let mut m = MediaSession::new(setup(true), 7, Instant::now(), 0);
        let mut au = vec![0, 0, 0, 1, 0x65];
        au.extend(std::iter::repeat_n(0xab, 5000));
        m.send_video(&au, 1_000_000);
        let packets: Vec<_> = std::iter::from_fn(|| m.poll_transmit()).collect();
        assert!(packets.len() >= 5);
        for (i, t) in packets.iter().enumerate() {
            assert!(t.data.len() <= VIDEO_MTU + 12);
            let p = rtp::packet::Packet::unmarshal(&mut t.data.as_slice()).unwrap();
            assert_eq!(p.header.marker, i + 1 == packets.len());
            assert_eq!(p.payload[0] & 0x1f, 28, "FU-A");
        }
        assert_eq!(m.stats().video_frames_sent, 1);
    }

    #[test]
    fn wrong_source_is_dropped_and_right_source_is_delivered() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(setup(false), 7, t0, 0);
        let pkt = rtp(0, 1, 100, &[1, 2, 3]);
        m.handle_receive(
            t0,
            StreamKind::Audio,
            false,
            "10.0.0.66:4000".parse().unwrap(),
            &pkt,
        );
        m.handle_receive(
            t0,
            StreamKind::Audio,
            false,
            "10.0.0.2:4001".parse().unwrap(),
            &pkt,
        );
        assert_eq!(m.stats().wrong_source, 2);
        assert_eq!(m.poll_event(), None);
        m.handle_receive(
            t0,
            StreamKind::Audio,
            false,
            "10.0.0.2:4000".parse().unwrap(),
            &pkt,
        );
        assert_eq!(
            m.poll_event(),
            Some(MediaEvent::Audio {
                codec: AudioCodec::Pcmu,
                payload: vec![1, 2, 3],
                timestamp: 100,
                sequence: 1,
            })
        );
        // Garbage from the right source is counted, not delivered, and never panics.
        for junk in [
            &[][..],
            &[0x80],
            &[0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0],
            &[0xff; 40],
        ] {
            m.handle_receive(
                t0,
                StreamKind::Audio,
                false,
                "10.0.0.2:4000".parse().unwrap(),
                junk,
            );
        }
        assert!(m.stats().malformed >= 3);
    }

    #[test]
    fn sequence_gaps_count_as_loss() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(setup(true), 7, t0, 0);
        let from: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        for seq in [65534u16, 65535, 2, 3] {
            m.handle_receive(
                t0,
                StreamKind::Audio,
                false,
                from,
                &rtp(0, seq, u32::from(seq) * 160, &[0]),
            );
        }
        assert_eq!(m.stats().audio_packets_received, 4);
        assert_eq!(
            m.stats().audio_packets_lost,
            2,
            "0 and 1 missing across the wrap"
        );
    }

    #[test]
    fn dtmf_goes_out_as_rfc_4733_events_and_comes_in_once_per_event() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(setup(true), 7, t0, 0);
        assert!(m.send_dtmf('5'));
        assert!(!m.send_dtmf('x'));
        let mut t = t0;
        let mut sent = Vec::new();
        for _ in 0..20 {
            m.handle_timeout(t);
            while let Some(tx) = m.poll_transmit() {
                let p = rtp::packet::Packet::unmarshal(&mut tx.data.as_slice()).unwrap();
                assert_eq!(p.header.payload_type, 101);
                sent.push(p);
            }
            t += DTMF_PACKET;
        }
        assert!(sent[0].header.marker);
        assert!(
            sent.iter()
                .all(|p| p.payload[0] == 5 && p.header.timestamp == sent[0].header.timestamp)
        );
        let ends = sent.iter().filter(|p| p.payload[1] & 0x80 != 0).count();
        assert_eq!(ends, 3);
        assert_eq!(
            u16::from_be_bytes([sent[5].payload[2], sent[5].payload[3]]),
            800
        );
        // Feed them back as if the peer sent them: one digit.
        let mut rx = MediaSession::new(setup(true), 9, t0, 0);
        for p in &sent {
            let data = p.marshal().unwrap();
            rx.handle_receive(
                t0,
                StreamKind::Audio,
                false,
                "10.0.0.2:4000".parse().unwrap(),
                &data,
            );
        }
        assert_eq!(rx.poll_event(), Some(MediaEvent::Dtmf { digit: '5' }));
        assert_eq!(rx.poll_event(), None);
    }

    #[test]
    fn pli_and_fir_ask_for_a_key_frame_and_reports_flow() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(setup(true), 7, t0, 1 << 40);
        let from: SocketAddr = "10.0.0.2:4002".parse().unwrap();
        let pli = rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        }
        .marshal()
        .unwrap();
        m.handle_receive(t0, StreamKind::Video, false, from, &pli);
        let fir = rtcp::payload_feedbacks::full_intra_request::FullIntraRequest {
            sender_ssrc: 1,
            media_ssrc: 2,
            fir: vec![],
        }
        .marshal()
        .unwrap();
        m.handle_receive(t0, StreamKind::Video, false, from, &fir);
        assert_eq!(m.poll_event(), Some(MediaEvent::KeyFrameRequested));
        assert_eq!(m.poll_event(), Some(MediaEvent::KeyFrameRequested));
        m.send_audio(&[0; 160], 160);
        m.poll_transmit();
        assert_eq!(m.poll_timeout(), t0 + RTCP_INTERVAL);
        m.handle_timeout(t0 + RTCP_INTERVAL);
        let reports: Vec<_> = std::iter::from_fn(|| m.poll_transmit()).collect();
        assert_eq!(reports.len(), 2);
        assert!(reports.iter().all(|r| is_rtcp(&r.data)));
        let parsed = rtcp::packet::unmarshal(&mut Bytes::from(reports[0].data.clone())).unwrap();
        assert!(
            parsed[0]
                .as_any()
                .downcast_ref::<rtcp::sender_report::SenderReport>()
                .is_some()
        );
    }

    #[test]
    fn hold_stops_sending() {
        let mut s = setup(true);
        s.send_paused = true;
        let mut m = MediaSession::new(s, 7, Instant::now(), 0);
        m.send_audio(&[0; 160], 160);
        m.send_video(&[0, 0, 0, 1, 0x65, 1], 0);
        assert_eq!(m.poll_transmit(), None);
    }

    fn srtp_setup(
        suite: crate::srtp::CryptoSuite,
        ours: &crate::srtp::MasterKey,
        theirs: &crate::srtp::MasterKey,
    ) -> MediaSetup {
        let keys = SdesKeys {
            tag: 1,
            local: ours.clone(),
            remote: theirs.clone(),
        };
        assert_eq!(keys.suite(), suite);
        let mut s = setup(true);
        if let Some(a) = s.audio.as_mut() {
            a.srtp = Some(keys.clone());
        }
        if let Some(v) = s.video.as_mut() {
            v.srtp = Some(keys);
        }
        s
    }

    #[test]
    fn srtp_streams_carry_audio_dtmf_video_and_reports_between_two_sessions() {
        use crate::srtp::{CryptoSuite, MasterKey};
        for suite in [CryptoSuite::AesCm128HmacSha1_80, CryptoSuite::AeadAes128Gcm] {
            let t0 = Instant::now();
            let a_key = MasterKey::generate(suite).unwrap();
            let b_key = MasterKey::generate(suite).unwrap();
            let mut alice = MediaSession::new(srtp_setup(suite, &a_key, &b_key), 1, t0, 1 << 40);
            let mut bob = MediaSession::new(srtp_setup(suite, &b_key, &a_key), 2, t0, 1 << 40);
            let from: SocketAddr = "10.0.0.2:4000".parse().unwrap();
            let video_from: SocketAddr = "10.0.0.2:4002".parse().unwrap();
            alice.send_audio(b"hello-patient-audio", 160);
            alice.send_video(&[0, 0, 0, 1, 0x65, 0xaa, 0xbb], 0);
            alice.send_dtmf('7');
            alice.handle_timeout(t0);
            alice.handle_timeout(t0 + RTCP_INTERVAL);
            let mut sent = Vec::new();
            while let Some(t) = alice.poll_transmit() {
                assert!(
                    !t.data.windows(7).any(|w| w == b"patient"),
                    "{suite}: audio leaves encrypted"
                );
                sent.push(t);
            }
            for t in &sent {
                let src = if t.stream == StreamKind::Audio {
                    from
                } else {
                    video_from
                };
                bob.handle_receive(t0, t.stream, false, src, &t.data);
            }
            let events: Vec<_> = std::iter::from_fn(|| bob.poll_event()).collect();
            assert!(
                events.iter().any(|e| matches!(e, MediaEvent::Audio { payload, .. } if payload == b"hello-patient-audio")),
                "{suite}: {events:?}"
            );
            assert!(events.contains(&MediaEvent::Dtmf { digit: '7' }), "{suite}");
            let st = bob.stats();
            assert_eq!(
                (st.video_packets_received, st.srtp_auth_failures),
                (1, 0),
                "{suite}"
            );
            // Replaying everything: each one dropped and counted, nothing delivered twice.
            for t in &sent {
                let src = if t.stream == StreamKind::Audio {
                    from
                } else {
                    video_from
                };
                bob.handle_receive(t0, t.stream, false, src, &t.data);
            }
            assert_eq!(bob.poll_event(), None);
            assert_eq!(bob.stats().srtp_replayed, sent.len() as u64, "{suite}");
            // Plain RTP and plain RTCP on the protected stream are refused.
            bob.handle_receive(
                t0,
                StreamKind::Audio,
                false,
                from,
                &rtp(0, 900, 1, &[1; 160]),
            );
            let pli = rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: 2,
            }
            .marshal()
            .unwrap();
            bob.handle_receive(t0, StreamKind::Video, false, video_from, &pli);
            assert_eq!(bob.poll_event(), None, "no key frame for a forged PLI");
            assert_eq!(bob.stats().srtp_auth_failures, 2, "{suite}");
        }
    }

    #[test]
    fn a_reinvite_with_the_same_keys_keeps_the_replay_window_and_new_keys_take_over() {
        use crate::srtp::{CryptoSuite, MasterKey};
        let suite = CryptoSuite::AesCm128HmacSha1_80;
        let t0 = Instant::now();
        let from: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let a_key = MasterKey::generate(suite).unwrap();
        let b_key = MasterKey::generate(suite).unwrap();
        let mut alice = MediaSession::new(srtp_setup(suite, &a_key, &b_key), 1, t0, 0);
        let mut bob = MediaSession::new(srtp_setup(suite, &b_key, &a_key), 2, t0, 0);
        alice.send_audio(&[5; 160], 160);
        let first = alice.poll_transmit().unwrap();
        bob.handle_receive(t0, StreamKind::Audio, false, from, &first.data);
        assert!(bob.poll_event().is_some());
        // Hold: same keys, only the direction changes.
        let mut held = srtp_setup(suite, &b_key, &a_key);
        held.send_paused = true;
        bob.update(held);
        bob.handle_receive(t0, StreamKind::Audio, false, from, &first.data);
        assert_eq!(
            bob.stats().srtp_replayed,
            1,
            "the window survived the re-INVITE"
        );
        // The peer re-keys: its new key is used from now on, the old one refused.
        let a_key2 = MasterKey::generate(suite).unwrap();
        bob.update(srtp_setup(suite, &b_key, &a_key2));
        alice.update(srtp_setup(suite, &a_key2, &b_key));
        alice.send_audio(&[6; 160], 160);
        let second = alice.poll_transmit().unwrap();
        bob.handle_receive(t0, StreamKind::Audio, false, from, &second.data);
        assert!(matches!(bob.poll_event(), Some(MediaEvent::Audio { .. })));
        let mut stale = MediaSession::new(srtp_setup(suite, &a_key, &b_key), 1, t0, 0);
        stale.send_audio(&[7; 160], 160);
        let old = stale.poll_transmit().unwrap();
        bob.handle_receive(t0, StreamKind::Audio, false, from, &old.data);
        assert_eq!(bob.poll_event(), None);
        assert_eq!(bob.stats().srtp_auth_failures, 1);
    }
    fn dtls_pair(mux: bool, bob_trusts_alice: bool) -> (MediaSession, MediaSession, Instant) {
        use crate::dtls::{DtlsParams, DtlsRole, Setup};
        let (ia, ib, other) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        let t0 = Instant::now();
        let mut alice = MediaSession::new(setup(mux), 1, t0, 0);
        let mut bob = MediaSession::new(setup(mux), 2, t0, 0);
        let params = |role, setup, local: &Identity, remote: &Identity| DtlsParams {
            setup,
            role,
            local: local.fingerprint().clone(),
            remote: vec![remote.fingerprint().clone()],
        };
        let trusted = if bob_trusts_alice { &ia } else { &other };
        for stream in [StreamKind::Audio, StreamKind::Video] {
            alice
                .start_dtls(
                    t0,
                    stream,
                    &params(DtlsRole::Client, Setup::Active, &ia, &ib),
                    &ia,
                )
                .unwrap();
            bob.start_dtls(
                t0,
                stream,
                &params(DtlsRole::Server, Setup::Passive, &ib, trusted),
                &ib,
            )
            .unwrap();
        }
        (alice, bob, t0)
    }

    /// Delivers everything `from` has queued to `to` (both sessions see the same remote, so a
    /// datagram's destination is where the receiver expects it from). Returns how many.
    fn deliver(from: &mut MediaSession, to: &mut MediaSession, now: Instant) -> usize {
        let mut n = 0;
        while let Some(t) = from.poll_transmit() {
            n += 1;
            to.handle_receive(now, t.stream, t.rtcp_socket, t.to, &t.data);
        }
        n
    }

    #[test]
    fn dtls_srtp_streams_send_nothing_until_keyed_then_carry_media_both_ways() {
        for mux in [true, false] {
            let (mut alice, mut bob, t0) = dtls_pair(mux, true);
            // Before keys: the ClientHellos go out, audio does not (not even in the clear).
            alice.send_audio(b"too early", 160);
            let queued: Vec<Transmit> = std::iter::from_fn(|| alice.poll_transmit()).collect();
            assert_eq!(
                queued.len(),
                if mux { 2 } else { 4 },
                "a ClientHello per component"
            );
            assert!(queued.iter().all(|t| dtls::is_dtls(&t.data)));
            assert_eq!(alice.stats().dtls_unkeyed_drops, 1);
            for t in &queued {
                bob.handle_receive(t0, t.stream, t.rtcp_socket, t.to, &t.data);
            }
            let mut rounds = 0;
            while !(alice.dtls_keyed() && bob.dtls_keyed()) {
                rounds += 1;
                assert!(rounds < 20, "no keys after {rounds} rounds (mux {mux})");
                deliver(&mut bob, &mut alice, t0);
                deliver(&mut alice, &mut bob, t0);
            }
            deliver(&mut bob, &mut alice, t0);
            deliver(&mut alice, &mut bob, t0);
            assert!(alice.stats().dtls_handshake_ms.is_some());
            alice.send_audio(b"hello bob", 160);
            let sealed = alice.poll_transmit().unwrap();
            assert!(
                !sealed.data.windows(9).any(|w| w == b"hello bob"),
                "SRTP, not RTP"
            );
            bob.handle_receive(
                t0,
                sealed.stream,
                sealed.rtcp_socket,
                sealed.to,
                &sealed.data,
            );
            bob.send_audio(b"hello alice", 160);
            deliver(&mut bob, &mut alice, t0);
            let heard = |m: &mut MediaSession| {
                std::iter::from_fn(|| m.poll_event())
                    .filter_map(|e| match e {
                        MediaEvent::Audio { payload, .. } => Some(payload),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(heard(&mut bob), vec![b"hello bob".to_vec()], "mux {mux}");
            assert_eq!(
                heard(&mut alice),
                vec![b"hello alice".to_vec()],
                "mux {mux}"
            );
            // RTCP reports (on their own component without mux) authenticate too.
            alice.handle_timeout(t0 + RTCP_INTERVAL);
            deliver(&mut alice, &mut bob, t0 + RTCP_INTERVAL);
            assert!(
                bob.stats().rtcp_received >= 1,
                "mux {mux}: {:?}",
                bob.stats()
            );
            assert_eq!(bob.stats().srtp_auth_failures, 0);
            // DTLS junk after keys changes nothing and is counted.
            let remote = setup(mux).audio.unwrap().remote;
            bob.handle_receive(
                t0,
                StreamKind::Audio,
                false,
                remote,
                &[22, 0xfe, 0xfd, 0, 0],
            );
            bob.handle_receive(t0, StreamKind::Audio, false, remote, &[23; 40]);
            alice.send_audio(b"still here", 160);
            deliver(&mut alice, &mut bob, t0);
            assert_eq!(heard(&mut bob), vec![b"still here".to_vec()]);
        }
    }

    #[test]
    fn a_peer_whose_certificate_does_not_match_fails_the_stream() {
        let (mut alice, mut bob, t0) = dtls_pair(true, false);
        for _ in 0..10 {
            deliver(&mut alice, &mut bob, t0);
            deliver(&mut bob, &mut alice, t0);
        }
        let failures: Vec<String> = std::iter::from_fn(|| bob.poll_event())
            .filter_map(|e| match e {
                MediaEvent::Failed { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("fingerprint"), "{failures:?}");
        assert!(!bob.dtls_keyed());
        bob.send_audio(b"secret", 160);
        assert!(bob.poll_transmit().is_none(), "nothing in the clear");
    }

    #[test]
    fn a_silent_peer_ends_the_stream_at_the_handshake_deadline() {
        let (mut alice, _, t0) = dtls_pair(true, true);
        let mut now = t0;
        let mut reasons = Vec::new();
        while reasons.is_empty() && now < t0 + Duration::from_secs(60) {
            now = alice.poll_timeout().max(now + Duration::from_millis(1));
            alice.handle_timeout(now);
            while alice.poll_transmit().is_some() {}
            reasons.extend(
                std::iter::from_fn(|| alice.poll_event()).filter_map(|e| match e {
                    MediaEvent::Failed { reason, .. } => Some(reason),
                    _ => None,
                }),
            );
        }
        assert!(!reasons.is_empty());
        assert!(now - t0 <= crate::dtls::HANDSHAKE_TIMEOUT + Duration::from_secs(1));
        println!("{reasons:?} after {:?}", now - t0);
    }
}
