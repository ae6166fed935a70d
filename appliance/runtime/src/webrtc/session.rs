//! The session driver: one tokio task per peer connection, moving a str0m
//! [`Rtc`] between a UDP socket, the pipeline's encoded media and its timers.
//!
//! Media rules: video goes out with the frame's capture time as wallclock and
//! a 90 kHz RTP time derived from it; after a gap in the queue (or a PLI/FIR)
//! the encoder is asked for a key frame and nothing is sent until it arrives.
//! Audio uses a 48 kHz RTP time that advances by each packet's sample count.
//! TWCC estimates are smoothed and passed to the encoder with headroom for
//! audio and RTP overhead.

use super::stats::SharedStats;
use crate::bus::Bus;
use crate::pipeline::EncoderControl;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use telecart_codec::OpusDecoder;
use telecart_core::{EncodedAudio, EncodedVideo};
use telecart_turn::TurnSocket;
use telecart_webrtc::datachannel::{self, Message};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// The H.264 profile the cart sends: constrained baseline, level 3.1.
pub const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// Bits per second kept back from the estimate for audio and RTP/SRTP overhead.
pub const AUDIO_HEADROOM_BPS: u64 = 64_000;

/// A str0m configuration for the cart: H.264 constrained baseline
/// (packetization-mode 1, with RTX for NACK repair), Opus, TWCC bandwidth
/// estimation starting at `start_bps`, stats once a second.
pub fn rtc_config(start_bps: u32) -> RtcConfig {
    let mut config = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_bwe(Some(Bitrate::bps(u64::from(start_bps))))
        .set_stats_interval(Some(Duration::from_secs(1)));
    config
        .codec_config()
        .add_h264(108.into(), Some(109.into()), true, H264_PROFILE_LEVEL_ID);
    config
}

/// Binds the media socket on `ip`, within `ports` (inclusive) when given,
/// starting at a random port of the range so that calls spread over it.
pub async fn bind_media_socket(
    ip: IpAddr,
    ports: Option<(u16, u16)>,
) -> std::io::Result<UdpSocket> {
    let Some((lo, hi)) = ports.filter(|(lo, hi)| *lo != 0 && lo <= hi) else {
        return UdpSocket::bind(SocketAddr::new(ip, 0)).await;
    };
    let span = u32::from(hi - lo) + 1;
    let start = rand::random::<u32>() % span;
    let mut last = None;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        match UdpSocket::bind(SocketAddr::new(ip, port)).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("empty port range")))
}

/// Where a session's media comes from and what it may ask of the encoder.
#[derive(Debug, Clone)]
pub struct MediaSources {
    /// Encoded video (H.264 access units).
    pub video: Bus<EncodedVideo>,
    /// Encoded audio (Opus packets).
    pub audio: Bus<EncodedAudio>,
    /// Key frame and bitrate requests.
    pub encoder: Arc<EncoderControl>,
    /// The most the encoder may use (config `video.max_bitrate_kbps`): BWE probes up to it.
    pub max_bitrate_bps: u32,
}

/// How a session runs.
#[derive(Debug)]
pub struct SessionOptions {
    /// The m-line the cart sends video on.
    pub video_mid: Option<Mid>,
    /// The m-line the cart sends (and maybe receives) audio on.
    pub audio_mid: Option<Mid>,
    /// When signalling started (for set-up times).
    pub started: Instant,
    /// Messages to send on the `telecart` data channel once it is open.
    pub outgoing: Option<mpsc::Receiver<Message>>,
    /// Messages received on the `telecart` data channel.
    pub incoming: Option<mpsc::Sender<Message>>,
    /// A TURN relay whose relayed address was offered as a `relay` candidate:
    /// str0m's transmits from that address go through it, and what it
    /// receives goes to str0m as received on that address.
    pub turn: Option<TurnSocket>,
    /// Where the remote party's decoded audio goes (None: decoded and counted only).
    pub speaker: Option<super::speaker::SpeakerOutput>,
    /// Signalling's hold on the running session: late candidates and relays,
    /// ICE restarts (None: the session runs as negotiated).
    pub control: Option<mpsc::Receiver<SessionControl>>,
}

/// What signalling asks of a running session.
// A few messages per call: boxing the relay would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum SessionControl {
    /// A relay allocated after the offer went out (e.g. on a TURN server from
    /// the WHIP answer's `Link` headers): its `candidate` is added to ICE and
    /// str0m's transmits from its relayed address go through it. The caller
    /// trickles the candidate to the remote.
    AddRelay {
        /// The allocation.
        relay: TurnSocket,
        /// Its `relay` candidate.
        candidate: Candidate,
    },
    /// Starts an ICE restart (new local credentials). With `socket` the media
    /// moves to it first (the old address is gone: a roam): its host
    /// candidate replaces the old one, and `relays` (allocated from the new
    /// address) replace every relay the session had. Replies with the
    /// restart offer (SDP), whose credentials and candidates go to the remote.
    RestartIce {
        /// The new media socket, when the cart's address changed.
        socket: Option<UdpSocket>,
        /// New relays and their candidates (used only with `socket`).
        relays: Vec<(TurnSocket, Candidate)>,
        /// The offer, or why there is none.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Moves the media to `socket` (the cart's address changed) without an
    /// ICE restart: its host candidate replaces the old one. For calls the
    /// cart answered, where the remote (the offerer) restarts ICE: its
    /// answer then names the new address.
    Rebind {
        /// The new media socket.
        socket: UdpSocket,
    },
    /// A new offer from the remote (a browser's `restartIce()`: new
    /// credentials, maybe new candidates). Replies with our answer.
    AcceptOffer {
        /// SDP offer.
        offer: String,
        /// Our answer, or why the offer was refused.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// The remote's answer to the pending restart (a whole SDP answer).
    AcceptRestart {
        /// SDP answer.
        answer: String,
        /// Applied, or why not.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The monotonic instant at which something with capture time `capture_us`
/// (Unix µs) was captured, given the pair (`now`, `now_us`) read together.
fn capture_instant(capture_us: u64, now: Instant, now_us: u64) -> Instant {
    let age = Duration::from_micros(now_us.saturating_sub(capture_us));
    now.checked_sub(age).unwrap_or(now)
}

/// 90 kHz RTP media time of a capture time in Unix µs.
pub fn video_media_time(capture_us: u64) -> MediaTime {
    MediaTime::from_90khz(capture_us / 100 * 9 + (capture_us % 100) * 9 / 100)
}

/// Smooths TWCC estimates and turns them into an encoder target.
#[derive(Debug, Clone, Copy, Default)]
pub struct BitrateFollower {
    smoothed_bps: Option<f64>,
}

impl BitrateFollower {
    /// Feeds one estimate; returns the video bitrate to ask of the encoder.
    /// Drops are followed quickly (congestion), rises slowly (probing is noisy).
    pub fn update(&mut self, estimate_bps: u64) -> u32 {
        let est = estimate_bps as f64;
        let s = match self.smoothed_bps {
            None => est,
            Some(old) if est < old => 0.5 * old + 0.5 * est,
            Some(old) => 0.8 * old + 0.2 * est,
        };
        self.smoothed_bps = Some(s);
        let video = (s * 0.9) as u64;
        video
            .saturating_sub(AUDIO_HEADROOM_BPS)
            .min(u64::from(u32::MAX)) as u32
    }
}

struct Driver {
    rtc: Rtc,
    socket: UdpSocket,
    media: MediaSources,
    opts: SessionOptions,
    stats: SharedStats,
    video_pt: Option<Pt>,
    audio_pt: Option<Pt>,
    connected: bool,
    need_keyframe: bool,
    audio_rtp: Option<u64>,
    follower: BitrateFollower,
    channel: Option<ChannelId>,
    opus: Option<OpusDecoder>,
    /// TURN relays by relayed address; their readers feed `relay_tx`.
    relays: Vec<(SocketAddr, Arc<TurnSocket>)>,
    relay_readers: Vec<tokio::task::JoinHandle<()>>,
    relay_tx: mpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>,
    local: SocketAddr,
    pending_restart: Option<SdpPendingOffer>,
    /// When the last restart answer was applied, until ICE is connected again.
    restart_answered: Option<Instant>,
}

/// Drives one peer connection until it ends, the remote hangs up, or `stop`
/// becomes true (then it closes the connection politely). The [`Rtc`] must
/// have its local candidate and the remote description applied already.
pub async fn run_session(
    rtc: Rtc,
    socket: UdpSocket,
    media: MediaSources,
    opts: SessionOptions,
    stats: SharedStats,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let local = socket.local_addr()?;
    stats.lock().state = "connecting".into();
    let mut opts = opts;
    let turn = opts.turn.take();
    let mut control = opts.control.take();
    let (relay_tx, mut relay_rx) = mpsc::channel(256);
    let mut d = Driver {
        rtc,
        socket,
        media: media.clone(),
        opts,
        stats: stats.clone(),
        video_pt: None,
        audio_pt: None,
        connected: false,
        need_keyframe: true,
        audio_rtp: None,
        follower: BitrateFollower::default(),
        channel: None,
        opus: None,
        relays: Vec::new(),
        relay_readers: Vec::new(),
        relay_tx,
        local,
        pending_restart: None,
        restart_answered: None,
    };
    if let Some(turn) = turn {
        d.attach_relay(turn);
    }
    let mut video = media.video.subscribe();
    let mut audio = media.audio.subscribe();
    let mut outgoing = d.opts.outgoing.take();
    let mut buf = vec![0u8; 2048];
    let result = loop {
        let timeout = match d.drain().await {
            Ok(t) => t,
            Err(e) => break Err(e),
        };
        if !d.rtc.is_alive() {
            break Ok(());
        }
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(timeout));
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    info!("session: hanging up");
                    d.rtc.disconnect();
                    break Ok(());
                }
            }
            received = d.socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    let local = d.local;
                    d.receive(&buf[..n], source, local);
                }
                Err(e) => debug!(error = %e, "session: recv failed"),
            },
            Some((relayed, source, data)) = relay_rx.recv() => d.receive(&data, source, relayed),
            command = async { control.as_mut()?.recv().await }, if control.is_some() => {
                match command {
                    Some(c) => d.control(c),
                    None => { control = None; }
                }
            }
            delivery = async { video.as_mut()?.recv().await }, if d.connected && video.is_some() => {
                match delivery {
                    Some(delivery) => d.write_video(&delivery.item, delivery.missed),
                    None => { video = None; }
                }
            }
            delivery = async { audio.as_mut()?.recv().await }, if d.connected && audio.is_some() => {
                match delivery {
                    Some(delivery) => d.write_audio(&delivery.item),
                    None => { audio = None; }
                }
            }
            message = async { outgoing.as_mut()?.recv().await }, if d.channel.is_some() && outgoing.is_some() => {
                match message {
                    Some(m) => d.send_message(&m),
                    None => { outgoing = None; }
                }
            }
            _ = sleep => {
                if let Err(e) = d.rtc.handle_input(Input::Timeout(Instant::now())) {
                    break Err(anyhow::anyhow!("str0m: {e}"));
                }
            }
        }
    };
    // Flush what the disconnect queued (DTLS close, SCTP abort).
    let _ = d.drain().await;
    for reader in &d.relay_readers {
        reader.abort();
    }
    let mut s = stats.lock();
    match &result {
        Ok(()) => s.state = "closed".into(),
        Err(e) => {
            s.state = "failed".into();
            s.error = Some(format!("{e:#}"));
        }
    }
    result
}

impl Driver {
    /// Drains str0m's output; returns when it wants to be woken next.
    async fn drain(&mut self) -> anyhow::Result<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    if let Some((_, relay)) = self.relays.iter().find(|(a, _)| *a == t.source) {
                        if let Err(e) = relay.send_to(t.destination, &t.contents).await {
                            debug!(error = %e, to = %t.destination, "session: relay send failed");
                        }
                    } else if t.source.ip() != self.local.ip() {
                        // From a host address we left (roam): that socket is gone.
                        debug!(from = %t.source, "session: transmit from a retired address dropped");
                    } else if let Err(e) = self.socket.send_to(&t.contents, t.destination).await {
                        debug!(error = %e, to = %t.destination, "session: send failed");
                    }
                }
                Ok(Output::Event(e)) => self.event(e),
                Err(e) => return Err(anyhow::anyhow!("str0m: {e}")),
            }
        }
    }

    /// Routes a relay's received datagrams to the run loop, tagged with its relayed address.
    fn attach_relay(&mut self, relay: TurnSocket) {
        let relayed = relay.relayed_addr();
        let relay = Arc::new(relay);
        let reader = relay.clone();
        let tx = self.relay_tx.clone();
        self.relay_readers.push(tokio::spawn(async move {
            loop {
                match reader.recv_from().await {
                    Ok((source, data)) => {
                        if tx.send((relayed, source, data)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, %relayed, "session: the TURN allocation is gone");
                        return;
                    }
                }
            }
        }));
        self.relays.push((relayed, relay));
    }

    fn control(&mut self, command: SessionControl) {
        match command {
            SessionControl::AddRelay { relay, candidate } => {
                info!(relayed = %relay.relayed_addr(), "session: late relay candidate");
                self.attach_relay(relay);
                self.rtc.add_local_candidate(candidate);
            }
            SessionControl::RestartIce {
                socket,
                relays,
                reply,
            } => {
                let _ = reply.send(self.restart_ice(socket, relays));
            }
            SessionControl::Rebind { socket } => {
                if let Err(e) = self.move_to(socket) {
                    warn!(error = %e, "session: cannot move the media");
                }
            }
            SessionControl::AcceptOffer { offer, reply } => {
                let before = self.rtc.direct_api().local_ice_credentials();
                let result = str0m::change::SdpOffer::from_sdp_string(&offer)
                    .map_err(|e| format!("malformed offer: {e}"))
                    .and_then(|o| {
                        self.rtc
                            .sdp_api()
                            .accept_offer(o)
                            .map_err(|e| e.to_string())
                    })
                    .map(|a| a.to_sdp_string());
                if result.is_ok() && self.rtc.direct_api().local_ice_credentials() != before {
                    info!("session: the remote restarted ICE");
                    self.stats.lock().ice_restarts += 1;
                    self.restart_answered = Some(Instant::now());
                }
                if let Err(e) = &result {
                    warn!(error = %e, "session: new offer refused");
                }
                let _ = reply.send(result);
            }
            SessionControl::AcceptRestart { answer, reply } => {
                let result = match self.pending_restart.take() {
                    None => Err("no ICE restart pending".to_string()),
                    Some(pending) => SdpAnswer::from_sdp_string(&answer)
                        .map_err(|e| format!("malformed restart answer: {e}"))
                        .and_then(|a| {
                            self.rtc
                                .sdp_api()
                                .accept_answer(pending, a)
                                .map_err(|e| e.to_string())
                        }),
                };
                match &result {
                    Ok(()) => {
                        info!("session: ICE restart answered, checking the new pairs");
                        self.stats.lock().ice_restarts += 1;
                        self.restart_answered = Some(Instant::now());
                    }
                    Err(e) => warn!(error = %e, "session: ICE restart answer refused"),
                }
                let _ = reply.send(result);
            }
        }
    }

    /// Swaps the media socket; the new host candidate replaces the old one.
    fn move_to(&mut self, socket: UdpSocket) -> Result<(), String> {
        let new_local = socket.local_addr().map_err(|e| e.to_string())?;
        let old = Candidate::host(self.local, "udp").map_err(|e| e.to_string())?;
        let had_host = self.rtc.direct_api().invalidate_candidate(&old);
        if had_host {
            // Relay-only sessions never offered a host candidate.
            let new = Candidate::host(new_local, "udp").map_err(|e| e.to_string())?;
            self.rtc.add_local_candidate(new);
        }
        info!(from = %self.local, to = %new_local, "session: media moved to a new address");
        self.socket = socket;
        self.local = new_local;
        Ok(())
    }

    fn restart_ice(
        &mut self,
        socket: Option<UdpSocket>,
        relays: Vec<(TurnSocket, Candidate)>,
    ) -> Result<String, String> {
        if let Some(socket) = socket {
            // The old relays were reached from the address that is gone.
            for (relayed, relay) in self.relays.drain(..) {
                if let Ok(old) = Candidate::relayed(relayed, relay.local_addr(), "udp") {
                    self.rtc.direct_api().invalidate_candidate(&old);
                }
            }
            for reader in self.relay_readers.drain(..) {
                reader.abort();
            }
            for (relay, candidate) in relays {
                info!(relayed = %relay.relayed_addr(), "session: relay from the new address");
                self.attach_relay(relay);
                self.rtc.add_local_candidate(candidate);
            }
            self.move_to(socket)?;
        }
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| "str0m made no restart offer".to_string())?;
        self.pending_restart = Some(pending);
        Ok(offer.to_sdp_string())
    }

    fn receive(&mut self, data: &[u8], source: SocketAddr, destination: SocketAddr) {
        let Ok(contents) = data.try_into() else {
            self.stats.lock().datagrams_ignored += 1;
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if !self.rtc.accepts(&input) {
            self.stats.lock().datagrams_ignored += 1;
            return;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            warn!(error = %e, %source, "session: bad datagram");
            self.stats.lock().datagrams_ignored += 1;
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Connected => self.on_connected(),
            Event::MediaAdded(added) => {
                // Answering an offer: learn the m-lines from the remote side. A caller that
                // only sends (a WHIP-style publisher) gets nothing back on its m-lines:
                // str0m refuses writes to a receive-only m-line and that would end the call.
                match added.kind {
                    _ if !added.direction.is_sending() => {}
                    MediaKind::Video if self.opts.video_mid.is_none() => {
                        self.opts.video_mid = Some(added.mid);
                    }
                    MediaKind::Audio if self.opts.audio_mid.is_none() => {
                        self.opts.audio_mid = Some(added.mid);
                    }
                    _ => {}
                }
                if self.connected {
                    self.resolve_codecs();
                }
            }
            Event::IceConnectionStateChange(state) => {
                debug!(?state, "session: ICE state");
                if matches!(
                    state,
                    IceConnectionState::Connected | IceConnectionState::Completed
                ) && let Some(t) = self.restart_answered.take()
                {
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    info!(ms, "session: ICE connected again after the restart");
                    self.stats.lock().ice_restart_connect_ms = Some(ms);
                }
                if state == IceConnectionState::Disconnected {
                    self.stats.lock().state = "disconnected".into();
                } else if self.connected {
                    self.stats.lock().state = "connected".into();
                }
            }
            Event::KeyframeRequest(req) => {
                let mut s = self.stats.lock();
                match req.kind {
                    KeyframeRequestKind::Pli => s.plis += 1,
                    KeyframeRequestKind::Fir => s.firs += 1,
                }
                s.keyframes_requested += 1;
                drop(s);
                debug!(kind = ?req.kind, "session: key frame requested by the peer");
                self.media.encoder.request_keyframe();
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
            | Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                let bps = estimate.as_u64();
                let target = self.follower.update(bps);
                let set = self.media.encoder.set_target_bitrate(target);
                let mut s = self.stats.lock();
                s.bwe_bps = Some(bps);
                s.encoder_target_bps = Some(set);
            }
            Event::PeerStats(p) => {
                let mut s = self.stats.lock();
                if let Some(rtt) = p.rtt {
                    s.rtt_ms = Some(rtt.as_secs_f64() * 1e3);
                }
                if let Some(pair) = p.selected_candidate_pair {
                    s.ice_pair = Some(format!(
                        "{} <-> {} ({:?})",
                        pair.local.addr, pair.remote.addr, pair.protocol
                    ));
                }
                if let Some(loss) = p.egress_loss_fraction {
                    s.loss = Some(f64::from(loss));
                }
                s.update_mos();
            }
            Event::MediaEgressStats(e) => {
                let is_video = Some(e.mid) == self.opts.video_mid;
                let mut s = self.stats.lock();
                if is_video {
                    s.video_packets_sent = e.packets;
                    s.video_bytes_sent = e.bytes;
                    s.nacks = e.nacks;
                    if let Some(remote) = &e.remote {
                        s.jitter_ms = Some(f64::from(remote.jitter) / 90.0);
                    }
                } else {
                    s.audio_packets_rtp_sent = e.packets;
                    s.audio_bytes_sent = e.bytes;
                }
                if let Some(rtt) = e.rtt {
                    s.rtt_ms = Some(rtt.as_secs_f64() * 1e3);
                }
                if let Some(loss) = e.loss {
                    s.loss = Some(f64::from(loss));
                }
                s.update_mos();
            }
            Event::MediaIngressStats(i) => {
                self.stats.lock().packets_received = i.packets;
            }
            Event::MediaData(data) => self.on_media_data(&data),
            Event::ChannelOpen(id, label) => {
                info!(%label, "session: data channel open");
                if label == datachannel::LABEL {
                    self.channel = Some(id);
                    self.send_message(&Message::Status {
                        state: "in_call".into(),
                        privacy: false,
                    });
                }
            }
            Event::ChannelData(data) => {
                if Some(data.id) != self.channel {
                    return;
                }
                let parsed = if data.binary {
                    Err(datachannel::MessageError::NotText)
                } else {
                    Message::parse(&data.data)
                };
                match parsed {
                    Ok(message) => {
                        self.stats.lock().datachannel_messages_received += 1;
                        debug!(?message, "session: data-channel message");
                        if message == (Message::Keyframe {}) {
                            self.media.encoder.request_keyframe();
                            self.stats.lock().keyframes_requested += 1;
                        }
                        if let Some(tx) = &self.opts.incoming {
                            let _ = tx.try_send(message);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "session: data-channel message refused");
                        self.stats.lock().datachannel_messages_refused += 1;
                    }
                }
            }
            Event::ChannelClose(id) => {
                if Some(id) == self.channel {
                    self.channel = None;
                }
            }
            other => debug!(event = ?other, "session: event"),
        }
    }

    fn on_connected(&mut self) {
        self.connected = true;
        self.need_keyframe = true;
        self.media.encoder.request_keyframe();
        // Probe for what the encoder could use, plus the audio headroom.
        let current = u64::from(self.media.encoder.target_bitrate());
        let desired = u64::from(self.media.max_bitrate_bps) + AUDIO_HEADROOM_BPS;
        self.rtc
            .bwe()
            .set_bitrate(Bitrate::bps(current), Bitrate::bps(desired.max(current)));
        let started = self.opts.started;
        {
            let mut s = self.stats.lock();
            s.state = "connected".into();
            s.connect_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            info!(connect_ms = ?s.connect_ms, "session: connected");
        }
        self.resolve_codecs();
    }

    /// Finds the payload types to send with, once connected and the m-lines are known.
    fn resolve_codecs(&mut self) {
        let mut video_codec = None;
        let mut audio_codec = None;
        if let Some(mid) = self.opts.video_mid
            && let Some(writer) = self.rtc.writer(mid)
        {
            let h264 = writer
                .payload_params()
                .filter(|p| p.spec().codec == Codec::H264)
                .filter(|p| p.spec().format.packetization_mode == Some(1))
                .max_by_key(|p| {
                    // Constrained baseline first: that is what the encoder makes.
                    u8::from(p.spec().format.profile_level_id == Some(H264_PROFILE_LEVEL_ID))
                });
            if let Some(p) = h264 {
                self.video_pt = Some(p.pt());
                video_codec = Some(format!(
                    "H264/90000 pt={} packetization-mode=1 profile-level-id={:06x}",
                    *p.pt(),
                    p.spec().format.profile_level_id.unwrap_or(0)
                ));
            }
        }
        if let Some(mid) = self.opts.audio_mid
            && let Some(writer) = self.rtc.writer(mid)
            && let Some(p) = writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
        {
            self.audio_pt = Some(p.pt());
            audio_codec = Some(format!("opus/48000/2 pt={}", *p.pt()));
        }
        let mut s = self.stats.lock();
        s.video_codec = video_codec;
        s.audio_codec = audio_codec;
        info!(video = ?s.video_codec, audio = ?s.audio_codec, "session: codecs");
        if self.opts.video_mid.is_some() && self.video_pt.is_none() {
            warn!("session: the answer has no H.264 packetization-mode 1 we can send");
        }
    }

    fn write_video(&mut self, unit: &EncodedVideo, missed: u64) {
        let (Some(mid), Some(pt)) = (self.opts.video_mid, self.video_pt) else {
            return;
        };
        if missed > 0 {
            // The reference chain is broken: only an IDR repairs it.
            debug!(missed, "session: video queue gap, waiting for a key frame");
            self.media.encoder.request_keyframe();
            self.stats.lock().keyframes_requested += 1;
            self.need_keyframe = true;
        }
        if self.need_keyframe && !unit.keyframe {
            self.stats.lock().video_frames_skipped += 1;
            return;
        }
        self.need_keyframe = false;
        let capture_us = unit.capture_time.0;
        let wallclock = capture_instant(
            capture_us,
            Instant::now(),
            crate::pipeline::now().as_micros(),
        );
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        match writer.write(
            pt,
            wallclock,
            video_media_time(capture_us),
            unit.data.clone(),
        ) {
            Ok(()) => {
                let started = self.opts.started;
                let mut s = self.stats.lock();
                s.video_frames_sent += 1;
                if s.first_frame_ms.is_none() {
                    s.first_frame_ms = Some(started.elapsed().as_secs_f64() * 1e3);
                }
            }
            Err(e) => warn!(error = %e, "session: video write failed"),
        }
    }

    fn write_audio(&mut self, packet: &EncodedAudio) {
        let (Some(mid), Some(pt)) = (self.opts.audio_mid, self.audio_pt) else {
            return;
        };
        let capture_us = packet.capture_time.0;
        // 48 kHz timeline anchored at the first packet's capture time, advanced
        // by the samples each packet covers, so it never jitters or repeats.
        let rtp = *self.audio_rtp.get_or_insert(capture_us * 48 / 1000);
        self.audio_rtp = Some(rtp + u64::from(packet.frames));
        let wallclock = capture_instant(
            capture_us,
            Instant::now(),
            crate::pipeline::now().as_micros(),
        );
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        match writer.write(
            pt,
            wallclock,
            MediaTime::new(rtp, Frequency::FORTY_EIGHT_KHZ),
            packet.data.clone(),
        ) {
            Ok(()) => self.stats.lock().audio_packets_sent += 1,
            Err(e) => warn!(error = %e, "session: audio write failed"),
        }
    }

    fn on_media_data(&mut self, data: &str0m::media::MediaData) {
        let kind = self.rtc.media(data.mid).map(|m| m.kind());
        match kind {
            Some(MediaKind::Audio) if data.params.spec().codec == Codec::Opus => {
                if let Some(speaker) = &self.opts.speaker {
                    // The speaker's jitter buffer decodes, conceals and paces.
                    speaker.packet(
                        data.seq_range.start().as_u16(),
                        data.time.numer() as u32,
                        data.data.to_vec(),
                    );
                    let jitter = speaker.jitter_stats();
                    let mut s = self.stats.lock();
                    s.remote_audio_packets_decoded += 1;
                    s.playout_delay_ms = Some(jitter.playout_delay_ms);
                    s.playout_late_packets = jitter.late;
                    s.playout_lost_packets = jitter.lost;
                    return;
                }
                // Without a speaker (the demo) decoding still proves the audio is sound.
                if self.opus.is_none() {
                    self.opus = OpusDecoder::new(2).ok();
                }
                let Some(decoder) = self.opus.as_mut() else {
                    return;
                };
                match decoder.decode(&data.data) {
                    Ok(_) => self.stats.lock().remote_audio_packets_decoded += 1,
                    Err(e) => {
                        debug!(error = %e, "session: remote Opus packet");
                        self.stats.lock().remote_audio_decode_errors += 1;
                    }
                }
            }
            Some(MediaKind::Video) => self.stats.lock().remote_video_frames += 1,
            _ => {}
        }
    }

    fn send_message(&mut self, message: &Message) {
        let Some(id) = self.channel else {
            return;
        };
        let Some(mut channel) = self.rtc.channel(id) else {
            return;
        };
        match channel.write(false, message.to_json().as_bytes()) {
            Ok(_) => self.stats.lock().datachannel_messages_sent += 1,
            Err(e) => warn!(error = %e, "session: data-channel send failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_media_time_is_90khz_of_the_capture_time() {
        assert_eq!(video_media_time(1_000_000).numer(), 90_000);
        assert_eq!(video_media_time(33_333).numer(), 2_999);
        let t = 1_795_536_607_470_691u64;
        assert_eq!(video_media_time(t).numer(), (t as u128 * 9 / 100) as u64);
    }

    #[test]
    fn capture_instant_is_in_the_past() {
        let now = Instant::now();
        let then = capture_instant(1_000_000, now, 1_020_000);
        assert_eq!(now - then, Duration::from_millis(20));
        // A capture time from the future (clock step) clamps to now.
        assert_eq!(capture_instant(2_000_000, now, 1_000_000), now);
    }

    #[tokio::test]
    async fn media_sockets_stay_in_the_port_range() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = bind_media_socket(ip, Some((41000, 41001))).await.unwrap();
        let b = bind_media_socket(ip, Some((41000, 41001))).await.unwrap();
        let mut ports = [
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        ];
        ports.sort();
        assert_eq!(ports, [41000, 41001]);
        assert!(
            bind_media_socket(ip, Some((41000, 41001))).await.is_err(),
            "range exhausted"
        );
        assert_ne!(
            bind_media_socket(ip, None)
                .await
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
            0
        );
    }

    #[test]
    fn bitrate_follows_drops_fast_and_rises_slowly() {
        let mut f = BitrateFollower::default();
        assert_eq!(f.update(1_000_000), 900_000 - 64_000);
        let down = f.update(200_000);
        assert!(down < 600_000 - 64_000 + 1, "{down}");
        let up = f.update(2_000_000);
        assert!(up < 1_000_000, "rises slowly: {up}");
        // Far below the audio headroom the target is zero (the encoder clamps to its minimum).
        let mut g = BitrateFollower::default();
        assert_eq!(g.update(10_000), 0);
    }

    #[test]
    fn the_config_offers_constrained_baseline_with_rtx_and_opus() {
        let rtc = rtc_config(1_000_000).build(Instant::now());
        let cfg = rtc.codec_config();
        let params: Vec<_> = cfg.params().iter().collect();
        assert!(params.iter().any(|p| p.spec().codec == Codec::H264
            && p.spec().format.profile_level_id == Some(H264_PROFILE_LEVEL_ID)
            && p.spec().format.packetization_mode == Some(1)
            && p.resend().is_some()));
        assert!(params.iter().any(|p| p.spec().codec == Codec::Opus));
        assert_eq!(params.len(), 2);
    }
}
