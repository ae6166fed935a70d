//! The sans-IO TURN client (RFC 8656) over UDP, TCP or TLS.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::{debug, trace, warn};

use crate::codec::attribute::{Attribute, PasswordAlgorithm, TRANSPORT_UDP};
use crate::codec::channel::{CHANNEL_MAX, CHANNEL_MIN, ChannelData, FrameKind, StreamFramer};
use crate::codec::credentials::{
    FEATURE_PASSWORD_ALGORITHMS, long_term_key, nonce_security_features,
};
use crate::codec::message::{Class, Integrity, Message, Method, TransactionId};
use crate::error::TurnError;
use crate::retransmit::{Due, Schedule};

/// Lifetime of a permission on the server (RFC 8656 section 9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Lifetime of a channel binding on the server (RFC 8656 section 12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Permissions and channels are refreshed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// After a CreatePermission fails, sends to that peer fail this long before it is tried again.
const PERMISSION_RETRY: Duration = Duration::from_secs(30);
/// Allocation lifetime assumed when a success response has no LIFETIME (RFC 8656 default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Datagrams held per peer while its permission is being created; older ones are dropped.
const MAX_QUEUED_PER_PEER: usize = 32;
/// 300 (Try Alternate) redirects followed before giving up.
const MAX_REDIRECTS: u32 = 3;
/// 438 (Stale Nonce) retries of one request before giving up.
const MAX_STALE_RETRIES: u32 = 3;

/// How the client reaches the TURN server. Peers are always reached over UDP from the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnTransport {
    /// UDP: requests are retransmitted on the RFC 8489 schedule.
    Udp,
    /// TCP: a byte stream, re-framed by the client; requests are sent once.
    Tcp,
    /// TLS over TCP (usually port 443 or 5349); to the state machine the same as TCP.
    Tls,
}

impl TurnTransport {
    /// Whether the transport is a byte stream (TCP or TLS).
    pub fn is_stream(self) -> bool {
        !matches!(self, TurnTransport::Udp)
    }
}

/// What a [`TurnClient`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// The TURN server's address.
    pub server: SocketAddr,
    /// How to reach it.
    pub transport: TurnTransport,
    /// Long-term credential user name.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
    /// Allocation lifetime to ask for; `None` takes the server's default (usually 10 minutes).
    pub lifetime: Option<Duration>,
    /// SOFTWARE attribute to send, if any.
    pub software: Option<String>,
    /// Initial retransmission timeout over UDP (RFC 8489 recommends 500 ms or more).
    pub rto: Duration,
}

impl TurnConfig {
    /// A configuration with the defaults: server lifetime, no SOFTWARE, RTO 500 ms.
    pub fn new(
        server: SocketAddr,
        transport: TurnTransport,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            server,
            transport,
            username: username.into(),
            password: password.into(),
            lifetime: None,
            software: None,
            rto: Duration::from_millis(500),
        }
    }
}

/// Something the client reports; drain them with [`TurnClient::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnEvent {
    /// The allocation exists.
    Allocated {
        /// The relayed transport address peers send to.
        relayed: SocketAddr,
        /// The client's address as the server sees it (server-reflexive).
        mapped: SocketAddr,
        /// How long the server keeps it without a refresh (the client refreshes on its own).
        lifetime: Duration,
    },
    /// The server answered 300 (Try Alternate): the driver must now talk to `server` (for TLS,
    /// verifying `domain` if given, else the original name). The client already queued its
    /// Allocate for the new server, so connect first, then send what
    /// [`TurnClient::poll_transmit`] gives.
    Redirected {
        /// The alternate server.
        server: SocketAddr,
        /// ALTERNATE-DOMAIN, for TLS certificate checks.
        domain: Option<String>,
    },
    /// A permission for this peer IP address was installed (once per address).
    PermissionCreated(IpAddr),
    /// A permission could not be created or refreshed; data to that address is dropped.
    PermissionFailed {
        /// The peer's address.
        peer: IpAddr,
        /// Why.
        error: TurnError,
    },
    /// A channel is bound to `peer`; data to and from it now travels as ChannelData.
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// A ChannelBind failed; data to `peer` keeps going in Send indications.
    ChannelBindFailed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        error: TurnError,
    },
    /// Data a peer sent to the relayed address.
    Data {
        /// The peer that sent it.
        peer: SocketAddr,
        /// The data.
        data: Vec<u8>,
    },
    /// The allocation was refreshed.
    Refreshed {
        /// Its new lifetime.
        lifetime: Duration,
    },
    /// The allocation failed or was lost; the client is finished.
    Failed(TurnError),
    /// The allocation was released after [`TurnClient::close`]; the client is finished.
    Closed,
}

/// Why [`TurnClient::poll_timeout`] wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutReason {
    /// A request of this method is due to be sent again (UDP).
    Retransmit(Method),
    /// A request of this method gets no more chances: it times out then.
    TransactionTimeout(Method),
    /// The allocation must be refreshed.
    AllocationRefresh,
    /// A permission must be refreshed (or dropped if unused).
    PermissionRefresh(IpAddr),
    /// A channel binding must be refreshed (or dropped if unused).
    ChannelRefresh(SocketAddr),
}

/// Counters of what the client did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnStats {
    /// Datagrams sent to peers in Send indications.
    pub send_indications: u64,
    /// Datagrams sent to peers as ChannelData.
    pub channel_data_sent: u64,
    /// Datagrams received from peers in Data indications.
    pub data_indications: u64,
    /// Datagrams received from peers as ChannelData.
    pub channel_data_received: u64,
    /// Requests sent again after a UDP retransmission timeout.
    pub retransmissions: u64,
    /// Requests repeated after 438 (Stale Nonce).
    pub stale_nonces: u64,
    /// Inputs from the server dropped as malformed or unexpected.
    pub dropped_inputs: u64,
}

/// The long-term credential state after the server's first challenge.
#[derive(Debug, Clone)]
struct Auth {
    realm: String,
    nonce: String,
    key: Vec<u8>,
    /// Send MESSAGE-INTEGRITY-SHA256 (the server negotiates password algorithms) rather than
    /// MESSAGE-INTEGRITY.
    sha256: bool,
    /// PASSWORD-ALGORITHMS to echo and the PASSWORD-ALGORITHM chosen.
    algorithms: Option<(Vec<PasswordAlgorithm>, PasswordAlgorithm)>,
}

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Allocate,
    Refresh { lifetime: u32 },
    CreatePermission(IpAddr),
    ChannelBind { peer: SocketAddr, channel: u16 },
}

impl Op {
    fn method(&self) -> Method {
        match self {
            Op::Allocate => Method::ALLOCATE,
            Op::Refresh { .. } => Method::REFRESH,
            Op::CreatePermission(_) => Method::CREATE_PERMISSION,
            Op::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }
}

#[derive(Debug)]
struct Transaction {
    op: Op,
    bytes: Vec<u8>,
    schedule: Schedule,
    /// The key the request was protected with, to check the response.
    key: Option<Vec<u8>>,
    /// The nonce it carried, to tell a repeated 401 from a fresh challenge.
    nonce: Option<String>,
    stale_retries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated {
        relayed: SocketAddr,
        mapped: SocketAddr,
        expires_at: Instant,
        /// `None` while a Refresh is in flight.
        refresh_at: Option<Instant>,
    },
    Closing,
    Closed,
    Failed,
}

#[derive(Debug)]
enum PermState {
    Pending,
    Installed,
    Failed { until: Instant, error: TurnError },
}

#[derive(Debug)]
struct Permission {
    state: PermState,
    /// When to refresh (or drop, if unused); `None` while a request is in flight.
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    used: bool,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChanState {
    Pending,
    Bound,
    Failed,
}

#[derive(Debug)]
struct Channel {
    number: u16,
    state: ChanState,
    refresh_at: Option<Instant>,
    used: bool,
}

/// A TURN client as a pure state machine: no sockets, no clock.
///
/// Feed it bytes from the server with [`handle_input`](Self::handle_input) and the time with
/// [`handle_timeout`](Self::handle_timeout); send whatever [`poll_transmit`](Self::poll_transmit)
/// returns to the server; act on [`poll_event`](Self::poll_event); sleep until
/// [`poll_timeout`](Self::poll_timeout). After any `handle_*`, `send_to` or `close` call, drain
/// all three polls again.
///
/// It allocates a UDP relay as soon as it is created, answers the 401 challenge with the
/// long-term credentials (MESSAGE-INTEGRITY, or MESSAGE-INTEGRITY-SHA256 when the server
/// negotiates password algorithms), retries with a new nonce on 438, follows 300 Try Alternate,
/// refreshes the allocation at half its lifetime, creates permissions for peers it sends to,
/// binds a channel to each peer it sends to and refreshes both while they are in use.
#[derive(Debug)]
pub struct TurnClient {
    config: TurnConfig,
    state: State,
    auth: Option<Auth>,
    transactions: HashMap<TransactionId, Transaction>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
    framer: StreamFramer,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    channel_peers: HashMap<u16, SocketAddr>,
    next_channel: u16,
    redirects: u32,
    stats: TurnStats,
}

impl TurnClient {
    /// A client that starts allocating at once: its first Allocate is ready in
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn new(config: TurnConfig, now: Instant) -> Self {
        let mut client = Self {
            config,
            state: State::Allocating,
            auth: None,
            transactions: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            framer: StreamFramer::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_peers: HashMap::new(),
            next_channel: CHANNEL_MIN,
            redirects: 0,
            stats: TurnStats::default(),
        };
        client.start(now, Op::Allocate, 0);
        client
    }

    /// The server currently in use (it changes on a 300 redirect).
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// The transport to the server.
    pub fn transport(&self) -> TurnTransport {
        self.config.transport
    }

    /// The relayed address, once allocated.
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// The server-reflexive address the server reported, once allocated.
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { mapped, .. } => Some(mapped),
            _ => None,
        }
    }

    /// Whether the allocation is up.
    pub fn is_allocated(&self) -> bool {
        matches!(self.state, State::Allocated { .. })
    }

    /// Whether the client is finished (closed or failed): nothing more will happen.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Closed | State::Failed)
    }

    /// The channel bound to `peer`, if any.
    pub fn channel_of(&self, peer: SocketAddr) -> Option<u16> {
        self.channels
            .get(&peer)
            .filter(|c| c.state == ChanState::Bound)
            .map(|c| c.number)
    }

    /// Whether a permission for `peer` is installed.
    pub fn has_permission(&self, peer: IpAddr) -> bool {
        self.permissions
            .get(&peer)
            .is_some_and(|p| p.expires_at.is_some())
    }

    /// What the client has done so far.
    pub fn stats(&self) -> TurnStats {
        self.stats
    }

    /// Refreshes the allocation now rather than at half its lifetime (for example after a
    /// network change). [`TurnEvent::Refreshed`] follows. Does nothing while a refresh is
    /// already in flight.
    pub fn refresh(&mut self, now: Instant) -> Result<(), TurnError> {
        let State::Allocated { refresh_at, .. } = &mut self.state else {
            return Err(TurnError::NotAllocated("refresh"));
        };
        if refresh_at.take().is_some() {
            let lifetime = self.requested_lifetime();
            self.start(now, Op::Refresh { lifetime }, 0);
        }
        Ok(())
    }

    /// The next bytes to send to the server, `None` when there are none.
    ///
    /// Worth calling again after any `handle_*`, [`send_to`](Self::send_to) or
    /// [`close`](Self::close).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event, `None` when there are none.
    ///
    /// Worth calling again after any `handle_*`, [`send_to`](Self::send_to) or
    /// [`close`](Self::close).
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, and why; `None` once
    /// the client is finished.
    ///
    /// It changes after any `handle_*`, [`send_to`](Self::send_to) or [`close`](Self::close).
    pub fn poll_timeout(&self) -> Option<(Instant, TimeoutReason)> {
        let mut best: Option<(Instant, TimeoutReason)> = None;
        let mut consider = |at: Instant, why: TimeoutReason| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, why));
            }
        };
        for tx in self.transactions.values() {
            let (at, due) = tx.schedule.deadline();
            let why = match due {
                Due::Retransmit => TimeoutReason::Retransmit(tx.op.method()),
                Due::GiveUp => TimeoutReason::TransactionTimeout(tx.op.method()),
            };
            consider(at, why);
        }
        if let State::Allocated {
            refresh_at: Some(at),
            ..
        } = self.state
        {
            consider(at, TimeoutReason::AllocationRefresh);
        }
        for (ip, p) in &self.permissions {
            if let Some(at) = p.refresh_at {
                consider(at, TimeoutReason::PermissionRefresh(*ip));
            }
        }
        for (peer, c) in &self.channels {
            if let Some(at) = c.refresh_at {
                consider(at, TimeoutReason::ChannelRefresh(*peer));
            }
        }
        best
    }

    /// Does whatever is due at `now`: retransmissions, transaction timeouts, refreshes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(TransactionId, Due)> = self
            .transactions
            .iter()
            .filter_map(|(id, tx)| {
                let (at, due) = tx.schedule.deadline();
                (at <= now).then_some((*id, due))
            })
            .collect();
        for (id, due) in due {
            match due {
                Due::Retransmit => {
                    if let Some(tx) = self.transactions.get_mut(&id) {
                        tx.schedule.retransmitted(now);
                        self.stats.retransmissions += 1;
                        trace!(method = ?tx.op.method(), "retransmit");
                        self.transmits.push_back(tx.bytes.clone());
                    }
                }
                Due::GiveUp => {
                    if let Some(tx) = self.transactions.remove(&id) {
                        let error = TurnError::Timeout {
                            method: tx.op.method().name(),
                        };
                        self.on_failure(now, tx.op, error);
                    }
                }
            }
        }

        let refresh_due = matches!(
            self.state,
            State::Allocated { refresh_at: Some(at), .. } if at <= now
        );
        if refresh_due {
            if let State::Allocated { refresh_at, .. } = &mut self.state {
                *refresh_at = None;
            }
            let lifetime = self.requested_lifetime();
            self.start(now, Op::Refresh { lifetime }, 0);
        }

        let due_perms: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| p.refresh_at.is_some_and(|at| at <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due_perms {
            let Some(p) = self.permissions.get_mut(&ip) else {
                continue;
            };
            match p.state {
                PermState::Failed { .. } => {
                    self.permissions.remove(&ip);
                }
                _ if p.used => {
                    p.used = false;
                    p.refresh_at = None;
                    self.start(now, Op::CreatePermission(ip), 0);
                }
                _ => {
                    debug!(%ip, "permission unused, letting it expire");
                    self.permissions.remove(&ip);
                }
            }
        }

        let due_chans: Vec<SocketAddr> = self
            .channels
            .iter()
            .filter(|(_, c)| c.refresh_at.is_some_and(|at| at <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due_chans {
            let Some(c) = self.channels.get_mut(&peer) else {
                continue;
            };
            if c.used && c.state == ChanState::Bound {
                c.used = false;
                c.refresh_at = None;
                let channel = c.number;
                self.start(now, Op::ChannelBind { peer, channel }, 0);
            } else {
                debug!(%peer, "channel unused, letting it expire");
                let number = c.number;
                self.channels.remove(&peer);
                self.channel_peers.remove(&number);
            }
        }
    }

    /// Bytes received from the server: one datagram over UDP, or whatever a read returned
    /// over TCP/TLS (any split of the stream is fine).
    ///
    /// An error says why (part of) the input was dropped; the client goes on unless it also
    /// reports [`TurnEvent::Failed`] (a TCP/TLS stream whose framing is lost).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), TurnError> {
        if self.is_finished() {
            return Err(TurnError::Closed);
        }
        if !self.config.transport.is_stream() {
            let Some(kind) = bytes.first().and_then(|b| FrameKind::of(*b)) else {
                self.stats.dropped_inputs += 1;
                return Err(TurnError::NotStun(
                    "datagram is neither STUN nor ChannelData",
                ));
            };
            let result = self.handle_frame(now, kind, bytes);
            if result.is_err() {
                self.stats.dropped_inputs += 1;
            }
            return result;
        }
        self.framer.push(bytes);
        let mut first_error = None;
        loop {
            match self.framer.next_frame() {
                Ok(Some((kind, frame))) => {
                    if let Err(e) = self.handle_frame(now, kind, &frame) {
                        self.stats.dropped_inputs += 1;
                        first_error.get_or_insert(e);
                    }
                    if self.is_finished() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(e.clone());
                    return Err(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sends `data` to `peer` through the relay.
    ///
    /// Creates the permission for the peer's address if there is none (holding the data until
    /// it is installed), starts binding a channel on first use, and sends ChannelData once
    /// the channel is bound, Send indications until then.
    pub fn send_to(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), TurnError> {
        if !self.is_allocated() {
            return Err(TurnError::NotAllocated(
                "send_to before Allocated or after close",
            ));
        }
        if data.len() > usize::from(u16::MAX) - 64 {
            return Err(TurnError::InvalidInput("datagram too large for TURN"));
        }
        let ip = peer.ip();
        let mut create = false;
        let perm = match self.permissions.entry(ip) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                create = true;
                v.insert(Permission {
                    state: PermState::Pending,
                    refresh_at: None,
                    expires_at: None,
                    used: true,
                    queue: VecDeque::new(),
                })
            }
        };
        perm.used = true;
        if let PermState::Failed { until, error } = &perm.state {
            if *until > now {
                return Err(error.clone());
            }
            perm.state = PermState::Pending;
            perm.refresh_at = None;
            create = true;
        }
        let installed = perm.expires_at.is_some_and(|e| e > now);
        if !installed {
            if perm.queue.len() >= MAX_QUEUED_PER_PEER {
                perm.queue.pop_front();
            }
            perm.queue.push_back((peer, data.to_vec()));
        }
        if create {
            self.start(now, Op::CreatePermission(ip), 0);
        }
        self.ensure_channel(now, peer);
        if let Some(c) = self.channels.get_mut(&peer) {
            c.used = true;
        }
        if installed {
            self.transmit_data(peer, data)?;
        }
        Ok(())
    }

    /// Releases the allocation (Refresh with LIFETIME 0). [`TurnEvent::Closed`] follows when
    /// the server answers or the request times out.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Allocated { .. } => {
                self.transactions.clear();
                self.transmits.clear();
                self.permissions.clear();
                self.channels.clear();
                self.channel_peers.clear();
                self.state = State::Closing;
                self.start(now, Op::Refresh { lifetime: 0 }, 0);
            }
            State::Allocating => {
                self.transactions.clear();
                self.transmits.clear();
                self.state = State::Closed;
                self.events.push_back(TurnEvent::Closed);
            }
            State::Closing | State::Closed | State::Failed => {}
        }
    }

    fn requested_lifetime(&self) -> u32 {
        self.config
            .lifetime
            .map_or(DEFAULT_LIFETIME.as_secs(), |d| d.as_secs())
            .min(u64::from(u32::MAX)) as u32
    }

    fn ensure_channel(&mut self, now: Instant, peer: SocketAddr) {
        if self.channels.contains_key(&peer) || self.next_channel > CHANNEL_MAX {
            return;
        }
        let channel = self.next_channel;
        self.next_channel += 1;
        self.channels.insert(
            peer,
            Channel {
                number: channel,
                state: ChanState::Pending,
                refresh_at: None,
                used: true,
            },
        );
        self.channel_peers.insert(channel, peer);
        self.start(now, Op::ChannelBind { peer, channel }, 0);
    }

    /// Puts `data` for `peer` on the wire: ChannelData on a bound channel, else a Send
    /// indication.
    fn transmit_data(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), TurnError> {
        let bytes = match self.channels.get(&peer) {
            Some(c) if c.state == ChanState::Bound => {
                let b = ChannelData::encode(c.number, data, self.config.transport.is_stream())?;
                self.stats.channel_data_sent += 1;
                b
            }
            _ => {
                let b = Message::new(Class::Indication, Method::SEND, TransactionId::random())
                    .with(Attribute::XorPeerAddress(peer))
                    .with(Attribute::Data(data.to_vec()))
                    .encode(Integrity::None, false)?;
                self.stats.send_indications += 1;
                b
            }
        };
        self.transmits.push_back(bytes);
        Ok(())
    }

    /// Builds and queues a request for `op` with the current credentials.
    fn start(&mut self, now: Instant, op: Op, stale_retries: u32) {
        let tid = TransactionId::random();
        let mut msg = Message::new(Class::Request, op.method(), tid);
        match &op {
            Op::Allocate => {
                msg.attributes
                    .push(Attribute::RequestedTransport(TRANSPORT_UDP));
                if let Some(l) = self.config.lifetime {
                    msg.attributes.push(Attribute::Lifetime(
                        l.as_secs().min(u64::from(u32::MAX)) as u32
                    ));
                }
            }
            Op::Refresh { lifetime } => msg.attributes.push(Attribute::Lifetime(*lifetime)),
            Op::CreatePermission(ip) => msg
                .attributes
                .push(Attribute::XorPeerAddress(SocketAddr::new(*ip, 0))),
            Op::ChannelBind { peer, channel } => {
                msg.attributes.push(Attribute::ChannelNumber(*channel));
                msg.attributes.push(Attribute::XorPeerAddress(*peer));
            }
        }
        if let Some(s) = &self.config.software {
            msg.attributes.push(Attribute::Software(s.clone()));
        }
        let (key, nonce) = match &self.auth {
            Some(auth) => {
                msg.attributes
                    .push(Attribute::Username(self.config.username.clone()));
                msg.attributes.push(Attribute::Realm(auth.realm.clone()));
                msg.attributes.push(Attribute::Nonce(auth.nonce.clone()));
                if let Some((offered, chosen)) = &auth.algorithms {
                    msg.attributes
                        .push(Attribute::PasswordAlgorithms(offered.clone()));
                    msg.attributes
                        .push(Attribute::PasswordAlgorithm(chosen.clone()));
                }
                (Some(auth.key.clone()), Some(auth.nonce.clone()))
            }
            None => (None, None),
        };
        let integrity = match (&key, &self.auth) {
            (Some(k), Some(a)) if a.sha256 => Integrity::Sha256(k),
            (Some(k), _) => Integrity::Sha1(k),
            _ => Integrity::None,
        };
        let bytes = match msg.encode(integrity, true) {
            Ok(b) => b,
            Err(e) => {
                // Only an over-long configured text (username, software) gets here.
                self.on_failure(now, op, e);
                return;
            }
        };
        trace!(method = ?op.method(), ?tid, authenticated = key.is_some(), "request");
        self.transmits.push_back(bytes.clone());
        self.transactions.insert(
            tid,
            Transaction {
                op,
                bytes,
                schedule: Schedule::start(now, self.config.rto, self.config.transport.is_stream()),
                key,
                nonce,
                stale_retries,
            },
        );
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        kind: FrameKind,
        bytes: &[u8],
    ) -> Result<(), TurnError> {
        match kind {
            FrameKind::ChannelData => {
                let cd = ChannelData::decode(bytes)?;
                let Some(&peer) = self.channel_peers.get(&cd.channel) else {
                    return Err(TurnError::InvalidChannelNumber(cd.channel));
                };
                self.mark_used(peer);
                self.stats.channel_data_received += 1;
                self.events.push_back(TurnEvent::Data {
                    peer,
                    data: cd.data.to_vec(),
                });
                Ok(())
            }
            FrameKind::Stun => {
                let msg = Message::decode(bytes)?;
                match msg.class {
                    Class::Indication => self.handle_indication(msg),
                    Class::Success | Class::Error => self.handle_response(now, msg),
                    Class::Request => Err(TurnError::InvalidInput(
                        "the server sent a request; clients do not serve any",
                    )),
                }
            }
        }
    }

    fn mark_used(&mut self, peer: SocketAddr) {
        if let Some(c) = self.channels.get_mut(&peer) {
            c.used = true;
        }
        if let Some(p) = self.permissions.get_mut(&peer.ip()) {
            p.used = true;
        }
    }

    fn handle_indication(&mut self, msg: Message) -> Result<(), TurnError> {
        if msg.method != Method::DATA {
            return Err(TurnError::InvalidInput("indication other than Data"));
        }
        if !msg.unknown_required().is_empty() {
            return Err(TurnError::UnknownRequiredAttributes(
                msg.unknown_required().to_vec(),
            ));
        }
        let peer = msg
            .find(|a| match a {
                Attribute::XorPeerAddress(p) => Some(*p),
                _ => None,
            })
            .ok_or(TurnError::MissingAttribute {
                method: "Data indication",
                attr: "XOR-PEER-ADDRESS",
            })?;
        let data = msg
            .attributes
            .into_iter()
            .find_map(|a| match a {
                Attribute::Data(d) => Some(d),
                _ => None,
            })
            .ok_or(TurnError::MissingAttribute {
                method: "Data indication",
                attr: "DATA",
            })?;
        self.mark_used(peer);
        self.stats.data_indications += 1;
        self.events.push_back(TurnEvent::Data { peer, data });
        Ok(())
    }

    fn handle_response(&mut self, now: Instant, msg: Message) -> Result<(), TurnError> {
        let Some(tx) = self.transactions.get(&msg.transaction_id) else {
            trace!(id = ?msg.transaction_id, "response to no open transaction (late or duplicate)");
            return Ok(());
        };
        if tx.op.method() != msg.method {
            return Err(TurnError::InvalidInput(
                "response method differs from the request's",
            ));
        }
        // Integrity: a response to a protected request must be protected with the same key,
        // except error responses that carry none (401 and 438 challenges cannot). A redirect
        // must be protected though: a forged 300 would send our credentials elsewhere.
        if let Some(key) = &tx.key {
            let redirect = msg.error_code().is_some_and(|e| e.code == 300);
            let check = if msg.has_integrity() {
                msg.verify_integrity(key)
            } else if msg.class == Class::Success {
                Err(TurnError::IntegrityMismatch(
                    "success response without integrity",
                ))
            } else if redirect {
                Err(TurnError::IntegrityMismatch(
                    "300 Try Alternate without integrity",
                ))
            } else {
                Ok(())
            };
            if let Err(e) = check {
                if self.config.transport.is_stream() {
                    // Nothing else will come on a reliable transport (RFC 8489 section 9.2.5).
                    if let Some(tx) = self.transactions.remove(&msg.transaction_id) {
                        self.on_failure(now, tx.op, e.clone());
                    }
                }
                return Err(e);
            }
        }
        let Some(tx) = self.transactions.remove(&msg.transaction_id) else {
            return Ok(());
        };
        if !msg.unknown_required().is_empty() {
            let e = TurnError::UnknownRequiredAttributes(msg.unknown_required().to_vec());
            self.on_failure(now, tx.op, e.clone());
            return Err(e);
        }
        match msg.class {
            Class::Success => self.on_success(now, tx.op, &msg),
            _ => self.on_error(now, tx, &msg),
        }
        Ok(())
    }

    fn on_success(&mut self, now: Instant, op: Op, msg: &Message) {
        match op {
            Op::Allocate => {
                if self.state != State::Allocating {
                    return;
                }
                let relayed = msg.find(|a| match a {
                    Attribute::XorRelayedAddress(r) => Some(*r),
                    _ => None,
                });
                let mapped = msg.find(|a| match a {
                    Attribute::XorMappedAddress(r) => Some(*r),
                    _ => None,
                });
                let (Some(relayed), Some(mapped)) = (relayed, mapped) else {
                    let attr = if relayed.is_none() {
                        "XOR-RELAYED-ADDRESS"
                    } else {
                        "XOR-MAPPED-ADDRESS"
                    };
                    self.fail(TurnError::MissingAttribute {
                        method: "Allocate",
                        attr,
                    });
                    return;
                };
                let lifetime = lifetime_of(msg);
                debug!(%relayed, %mapped, ?lifetime, "allocated");
                self.state = State::Allocated {
                    relayed,
                    mapped,
                    expires_at: now + lifetime,
                    refresh_at: Some(now + lifetime / 2),
                };
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
            }
            Op::Refresh { lifetime: 0 } => self.finish_close(),
            Op::Refresh { .. } => {
                let lifetime = lifetime_of(msg);
                if let State::Allocated {
                    expires_at,
                    refresh_at,
                    ..
                } = &mut self.state
                {
                    *expires_at = now + lifetime;
                    *refresh_at = Some(now + lifetime / 2);
                    self.events.push_back(TurnEvent::Refreshed { lifetime });
                }
            }
            Op::CreatePermission(ip) => {
                let Some(p) = self.permissions.get_mut(&ip) else {
                    return;
                };
                let first = p.expires_at.is_none();
                p.state = PermState::Installed;
                p.expires_at = Some(now + PERMISSION_LIFETIME);
                p.refresh_at = Some(now + PERMISSION_LIFETIME - REFRESH_MARGIN);
                let queued: Vec<_> = p.queue.drain(..).collect();
                if first {
                    self.events.push_back(TurnEvent::PermissionCreated(ip));
                }
                for (peer, data) in queued {
                    if let Err(e) = self.transmit_data(peer, &data) {
                        warn!(%peer, error = %e, "dropping queued datagram");
                    }
                }
            }
            Op::ChannelBind { peer, channel } => {
                let Some(c) = self.channels.get_mut(&peer) else {
                    return;
                };
                if c.number != channel {
                    return;
                }
                let first = c.state == ChanState::Pending;
                c.state = ChanState::Bound;
                c.refresh_at = Some(now + CHANNEL_LIFETIME - REFRESH_MARGIN);
                if first {
                    self.events
                        .push_back(TurnEvent::ChannelBound { peer, channel });
                }
            }
        }
    }

    fn on_error(&mut self, now: Instant, tx: Transaction, msg: &Message) {
        let method = tx.op.method().name();
        let (code, reason) = msg.error_code().map_or(
            (0, String::from("error response without ERROR-CODE")),
            |e| (e.code, e.reason.clone()),
        );
        match code {
            401 if tx.stale_retries >= MAX_STALE_RETRIES => {
                self.on_failure(now, tx.op, TurnError::TooManyRetries("401 with new nonces"));
            }
            401 => {
                // A 401 to a request that carried the current nonce means the credentials
                // are wrong; to one without credentials, or with an older nonce, it is the
                // challenge to answer.
                let new_nonce = msg.find(|a| match a {
                    Attribute::Nonce(n) => Some(n.as_str()),
                    _ => None,
                });
                if tx.key.is_some() && (new_nonce.is_none() || new_nonce == tx.nonce.as_deref()) {
                    self.on_failure(
                        now,
                        tx.op,
                        TurnError::AuthenticationFailed(format!("{code} {reason}")),
                    );
                    return;
                }
                match auth_from_challenge(msg, &self.config, None) {
                    Ok(auth) => {
                        self.auth = Some(auth);
                        self.start(now, tx.op, tx.stale_retries + 1);
                    }
                    Err(e) => self.on_failure(now, tx.op, e),
                }
            }
            438 => {
                if tx.stale_retries >= MAX_STALE_RETRIES {
                    self.on_failure(now, tx.op, TurnError::TooManyRetries("438 Stale Nonce"));
                    return;
                }
                let realm = self.auth.as_ref().map(|a| a.realm.clone());
                match auth_from_challenge(msg, &self.config, realm) {
                    Ok(auth) => {
                        debug!(method, "stale nonce, retrying");
                        self.stats.stale_nonces += 1;
                        self.auth = Some(auth);
                        self.start(now, tx.op, tx.stale_retries + 1);
                    }
                    Err(e) => self.on_failure(now, tx.op, e),
                }
            }
            300 if tx.op == Op::Allocate => self.redirect(now, msg),
            _ => self.on_failure(
                now,
                tx.op,
                TurnError::ServerError {
                    method,
                    code,
                    reason,
                },
            ),
        }
    }

    fn redirect(&mut self, now: Instant, msg: &Message) {
        let Some(alt) = msg.find(|a| match a {
            Attribute::AlternateServer(s) => Some(*s),
            _ => None,
        }) else {
            self.fail(TurnError::MissingAttribute {
                method: "Allocate 300",
                attr: "ALTERNATE-SERVER",
            });
            return;
        };
        if self.redirects >= MAX_REDIRECTS {
            self.fail(TurnError::TooManyRetries("300 Try Alternate"));
            return;
        }
        if alt == self.config.server || alt.port() == 0 || alt.ip().is_unspecified() {
            self.fail(TurnError::BadAlternate(alt));
            return;
        }
        let domain = msg.find(|a| match a {
            Attribute::AlternateDomain(d) => Some(d.clone()),
            _ => None,
        });
        debug!(%alt, "redirected");
        self.redirects += 1;
        self.config.server = alt;
        self.auth = None;
        self.framer = StreamFramer::new();
        self.transactions.clear();
        self.transmits.clear();
        self.events.push_back(TurnEvent::Redirected {
            server: alt,
            domain,
        });
        self.start(now, Op::Allocate, 0);
    }

    /// A request failed for good (error response, timeout, bad integrity).
    fn on_failure(&mut self, now: Instant, op: Op, error: TurnError) {
        debug!(method = ?op.method(), %error, "request failed");
        match op {
            Op::Allocate => {
                if self.state == State::Allocating {
                    self.fail(error);
                }
            }
            Op::Refresh { lifetime: 0 } => self.finish_close(),
            Op::Refresh { .. } => {
                // A refresh that timed out is tried again while the allocation has time left
                // for a whole transaction; anything else loses the allocation.
                if let State::Allocated {
                    expires_at,
                    refresh_at,
                    ..
                } = &mut self.state
                {
                    let retry = matches!(error, TurnError::Timeout { .. })
                        && now + crate::retransmit::TI < *expires_at;
                    if retry {
                        *refresh_at = Some(now);
                    } else {
                        self.fail(error);
                    }
                }
            }
            Op::CreatePermission(ip) => {
                if let Some(p) = self.permissions.get_mut(&ip) {
                    p.queue.clear();
                    p.state = PermState::Failed {
                        until: now + PERMISSION_RETRY,
                        error: error.clone(),
                    };
                    p.expires_at = None;
                    p.refresh_at = Some(now + PERMISSION_RETRY);
                    self.events
                        .push_back(TurnEvent::PermissionFailed { peer: ip, error });
                }
            }
            Op::ChannelBind { peer, channel } => {
                if let Some(c) = self.channels.get_mut(&peer)
                    && c.number == channel
                {
                    // Keep the entry for a while, so the peer is not bound again with every
                    // datagram; meanwhile its data goes in Send indications.
                    c.state = ChanState::Failed;
                    c.refresh_at = Some(now + PERMISSION_RETRY);
                    self.events
                        .push_back(TurnEvent::ChannelBindFailed { peer, error });
                }
            }
        }
    }

    fn finish_close(&mut self) {
        if self.state == State::Closing {
            self.state = State::Closed;
            self.transactions.clear();
            self.events.push_back(TurnEvent::Closed);
        }
    }

    fn fail(&mut self, error: TurnError) {
        if self.is_finished() {
            return;
        }
        warn!(%error, "TURN allocation failed");
        self.state = State::Failed;
        self.transactions.clear();
        self.permissions.clear();
        self.channels.clear();
        self.channel_peers.clear();
        self.events.push_back(TurnEvent::Failed(error));
    }
}

fn lifetime_of(msg: &Message) -> Duration {
    msg.find(|a| match a {
        Attribute::Lifetime(s) => Some(Duration::from_secs(u64::from(*s))),
        _ => None,
    })
    .unwrap_or(DEFAULT_LIFETIME)
}

/// The credentials to use after a 401 or 438 challenge.
fn auth_from_challenge(
    msg: &Message,
    config: &TurnConfig,
    fallback_realm: Option<String>,
) -> Result<Auth, TurnError> {
    let realm = msg
        .find(|a| match a {
            Attribute::Realm(r) => Some(r.clone()),
            _ => None,
        })
        .or(fallback_realm)
        .ok_or_else(|| TurnError::AuthenticationFailed("challenge without REALM".into()))?;
    let nonce = msg
        .find(|a| match a {
            Attribute::Nonce(n) => Some(n.clone()),
            _ => None,
        })
        .ok_or_else(|| TurnError::AuthenticationFailed("challenge without NONCE".into()))?;
    let negotiates =
        nonce_security_features(&nonce).is_some_and(|f| f & FEATURE_PASSWORD_ALGORITHMS != 0);
    let (algorithms, sha256, algorithm) = if negotiates {
        let offered = msg
            .find(|a| match a {
                Attribute::PasswordAlgorithms(l) => Some(l.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                // RFC 8489 section 9.2.5: a possible bid-down attack; do not retry.
                TurnError::AuthenticationFailed(
                    "nonce announces password algorithms but PASSWORD-ALGORITHMS is missing".into(),
                )
            })?;
        let chosen = [PasswordAlgorithm::SHA256, PasswordAlgorithm::MD5]
            .into_iter()
            .find_map(|want| offered.iter().find(|a| a.id == want && a.params.is_empty()))
            .cloned()
            .ok_or_else(|| {
                TurnError::AuthenticationFailed("no supported password algorithm offered".into())
            })?;
        let id = chosen.id;
        (Some((offered, chosen)), true, id)
    } else {
        (None, false, PasswordAlgorithm::MD5)
    };
    let key = long_term_key(algorithm, &config.username, &realm, &config.password)
        .ok_or_else(|| TurnError::AuthenticationFailed("unsupported password algorithm".into()))?;
    Ok(Auth {
        realm,
        nonce,
        key,
        sha256,
        algorithms,
    })
}

#[cfg(test)]
mod tests;
