//! The tokio driver: sockets, TLS and the wall clock around the sans-IO [`TurnClient`].

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, trace, warn};

use crate::binding::StunBinding;
use crate::client::{TurnClient, TurnConfig, TurnEvent, TurnStats, TurnTransport};
use crate::error::TurnError;

/// How long a TCP or TLS connection to the server may take to establish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Datagrams from peers held for [`TurnSocket::recv_from`]; more are dropped, like a full UDP
/// receive buffer.
const RECV_QUEUE: usize = 1024;
/// Commands (mostly datagrams to send) queued for the driver task.
const SEND_QUEUE: usize = 1024;
/// Largest read from the server.
const READ_BUF: usize = 65_536 + 4;

/// TLS settings for [`TurnTransport::Tls`]: the caller's rustls configuration (CA roots,
/// protocol versions; built with the aws-lc-rs provider) and the name to verify.
#[derive(Clone)]
pub struct TlsOptions {
    /// The rustls client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The server name sent in SNI and checked against the certificate.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

enum Command {
    Send(SocketAddr, Vec<u8>),
    Refresh(oneshot::Sender<Duration>),
    Close(oneshot::Sender<()>),
}

/// What the driver task shares with the handle.
#[derive(Debug, Default)]
struct Shared {
    /// Why the task ended, if it ended in failure.
    error: Option<TurnError>,
    stats: TurnStats,
    channels: HashMap<SocketAddr, u16>,
}

/// A TURN allocation driven by a tokio task: a UDP relay reached over UDP, TCP or TLS.
///
/// Created by [`TurnSocket::connect`], which returns once the allocation exists. Refreshes of
/// the allocation, permissions and channels run in the background. Dropping it releases the
/// allocation in the background as [`close`](Self::close) does.
#[derive(Debug)]
pub struct TurnSocket {
    relayed: SocketAddr,
    mapped: SocketAddr,
    local: SocketAddr,
    commands: mpsc::Sender<Command>,
    data: tokio::sync::Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
    shared: Arc<Mutex<Shared>>,
}

impl TurnSocket {
    /// Connects to the server in `config`, allocates a relay and returns once it is allocated
    /// (or why not). `tls` is required for [`TurnTransport::Tls`] and ignored otherwise.
    pub async fn connect(
        config: TurnConfig,
        tls: Option<TlsOptions>,
    ) -> Result<TurnSocket, TurnError> {
        if config.transport == TurnTransport::Tls && tls.is_none() {
            return Err(TurnError::Config(
                "TLS transport needs TlsOptions (rustls config and server name)".into(),
            ));
        }
        let transport = Transport::connect(config.transport, config.server, tls.as_ref()).await?;
        let local = transport.local_addr()?;
        let client = TurnClient::new(config, Instant::now());
        let (cmd_tx, cmd_rx) = mpsc::channel(SEND_QUEUE);
        let (data_tx, data_rx) = mpsc::channel(RECV_QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = Task {
            client,
            transport,
            tls,
            commands: cmd_rx,
            data: data_tx,
            ready: Some(ready_tx),
            closers: Vec::new(),
            refreshers: Vec::new(),
            shared: shared.clone(),
        };
        tokio::spawn(task.run());
        let (relayed, mapped) = ready_rx.await.map_err(|_| TurnError::Closed)??;
        Ok(TurnSocket {
            relayed,
            mapped,
            local,
            commands: cmd_tx,
            data: tokio::sync::Mutex::new(data_rx),
            shared,
        })
    }

    /// The relayed address peers send to (the `relay` ICE candidate).
    pub fn relayed_addr(&self) -> SocketAddr {
        self.relayed
    }

    /// Our address as the TURN server sees it (a server-reflexive candidate).
    pub fn mapped_addr(&self) -> SocketAddr {
        self.mapped
    }

    /// The local address of the connection to the server (the relay candidate's base).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `data` to `peer` through the relay, creating its permission and channel on first
    /// use. Like a UDP send it does not wait for delivery; it fails only once the allocation
    /// is gone (with the reason), and waits only if the driver is more than
    /// 1024 datagrams behind.
    pub async fn send_to(&self, peer: SocketAddr, data: &[u8]) -> Result<(), TurnError> {
        self.commands
            .send(Command::Send(peer, data.to_vec()))
            .await
            .map_err(|_| self.ended())
    }

    /// The next datagram a peer sent to the relayed address. Fails once the allocation is gone
    /// and every datagram received before has been read. Cancel-safe.
    pub async fn recv_from(&self) -> Result<(SocketAddr, Vec<u8>), TurnError> {
        let mut data = self.data.lock().await;
        data.recv().await.ok_or_else(|| self.ended())
    }

    /// Refreshes the allocation now and returns the lifetime the server granted.
    pub async fn refresh(&self) -> Result<Duration, TurnError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.commands
            .send(Command::Refresh(done_tx))
            .await
            .map_err(|_| self.ended())?;
        done_rx.await.map_err(|_| self.ended())
    }

    /// The channel bound to `peer`, once the server confirmed it.
    pub fn channel_of(&self, peer: SocketAddr) -> Option<u16> {
        self.lock().channels.get(&peer).copied()
    }

    /// Counters of the relay's traffic and of retries so far.
    pub fn stats(&self) -> TurnStats {
        self.lock().stats
    }

    /// Releases the allocation (Refresh with lifetime 0) and waits for the server's answer or
    /// the request's timeout.
    pub async fn close(self) -> Result<(), TurnError> {
        let (done_tx, done_rx) = oneshot::channel();
        if self.commands.send(Command::Close(done_tx)).await.is_err() {
            return match self.error() {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        let _ = done_rx.await;
        match self.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self) -> Option<TurnError> {
        self.lock().error.clone()
    }

    fn ended(&self) -> TurnError {
        self.error().unwrap_or(TurnError::Closed)
    }
}

struct Task {
    client: TurnClient,
    transport: Transport,
    tls: Option<TlsOptions>,
    commands: mpsc::Receiver<Command>,
    data: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    ready: Option<oneshot::Sender<Result<(SocketAddr, SocketAddr), TurnError>>>,
    closers: Vec<oneshot::Sender<()>>,
    refreshers: Vec<oneshot::Sender<Duration>>,
    shared: Arc<Mutex<Shared>>,
}

impl Task {
    async fn run(mut self) {
        let result = self.drive().await;
        if let Err(e) = &result {
            warn!(error = %e, "TURN driver stopped");
            self.shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .error = Some(e.clone());
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(result.err().unwrap_or(TurnError::Closed)));
        }
        for closer in self.closers.drain(..) {
            let _ = closer.send(());
        }
    }

    /// Runs until the client is closed (`Ok`) or fails (`Err`).
    async fn drive(&mut self) -> Result<(), TurnError> {
        let mut buf = vec![0u8; READ_BUF];
        let mut commands_open = true;
        loop {
            // Events first: a redirect must reconnect before the new Allocate goes out.
            while let Some(event) = self.client.poll_event() {
                if self.on_event(event).await? {
                    return Ok(());
                }
            }
            while let Some(bytes) = self.client.poll_transmit() {
                self.transport.send(&bytes).await?;
            }
            self.shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stats = self.client.stats();
            let deadline = self.client.poll_timeout();
            let sleep_until = deadline
                .map(|(at, _)| tokio::time::Instant::from_std(at))
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                cmd = self.commands.recv(), if commands_open => match cmd {
                    Some(Command::Send(peer, data)) => {
                        if let Err(e) = self.client.send_to(Instant::now(), peer, &data) {
                            debug!(%peer, error = %e, "datagram not relayed");
                        }
                    }
                    Some(Command::Refresh(done)) => {
                        if self.client.refresh(Instant::now()).is_ok() {
                            self.refreshers.push(done);
                        }
                    }
                    Some(Command::Close(done)) => {
                        self.closers.push(done);
                        self.client.close(Instant::now());
                    }
                    None => {
                        // The handle is gone: release the allocation.
                        commands_open = false;
                        self.client.close(Instant::now());
                    }
                },
                read = self.transport.recv(&mut buf) => match read {
                    Ok(0) if self.transport.is_stream() => {
                        return Err(TurnError::Io {
                            kind: io::ErrorKind::UnexpectedEof,
                            message: "the TURN server closed the connection".into(),
                        });
                    }
                    Ok(n) => {
                        if let Err(e) = self.client.handle_input(Instant::now(), &buf[..n]) {
                            debug!(error = %e, "input from the TURN server dropped");
                        }
                    }
                    Err(e) if !self.transport.is_stream() => {
                        // ICMP errors on a connected UDP socket; the client's own timers
                        // decide whether the server is gone.
                        trace!(error = %e, "UDP receive error");
                    }
                    Err(e) => return Err(e.into()),
                },
                () = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                    self.client.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Acts on one event; `Ok(true)` when the client is finished.
    async fn on_event(&mut self, event: TurnEvent) -> Result<bool, TurnError> {
        match event {
            TurnEvent::Allocated {
                relayed, mapped, ..
            } => {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok((relayed, mapped)));
                }
            }
            TurnEvent::Data { peer, data } => {
                if let Err(mpsc::error::TrySendError::Full(_)) = self.data.try_send((peer, data)) {
                    trace!(%peer, "receive queue full, datagram dropped");
                }
            }
            TurnEvent::Redirected { server, domain } => {
                let tls = match (&self.tls, domain) {
                    (Some(t), Some(d)) => Some(TlsOptions {
                        config: t.config.clone(),
                        server_name: ServerName::try_from(d).map_err(|e| {
                            TurnError::Config(format!("ALTERNATE-DOMAIN is no DNS name: {e}"))
                        })?,
                    }),
                    (t, _) => t.clone(),
                };
                debug!(%server, "reconnecting to the alternate server");
                self.transport =
                    Transport::connect(self.client.transport(), server, tls.as_ref()).await?;
            }
            TurnEvent::Refreshed { lifetime } => {
                for done in self.refreshers.drain(..) {
                    let _ = done.send(lifetime);
                }
            }
            TurnEvent::ChannelBound { peer, channel } => {
                self.shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .channels
                    .insert(peer, channel);
            }
            TurnEvent::Failed(e) => return Err(e),
            TurnEvent::Closed => return Ok(true),
            other => debug!(event = ?other, "TURN"),
        }
        Ok(false)
    }
}

/// The connection to the TURN server.
enum Transport {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    async fn connect(
        kind: TurnTransport,
        server: SocketAddr,
        tls: Option<&TlsOptions>,
    ) -> Result<Transport, TurnError> {
        match kind {
            TurnTransport::Udp => {
                let socket = UdpSocket::bind(unspecified_like(server)).await?;
                socket.connect(server).await?;
                Ok(Transport::Udp(socket))
            }
            TurnTransport::Tcp => Ok(Transport::Tcp(tcp_connect(server).await?)),
            TurnTransport::Tls => {
                let tls = tls.ok_or_else(|| TurnError::Config("TLS without TlsOptions".into()))?;
                let tcp = tcp_connect(server).await?;
                let connector = TlsConnector::from(tls.config.clone());
                let stream = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    connector.connect(tls.server_name.clone(), tcp),
                )
                .await
                .map_err(|_| TurnError::Io {
                    kind: io::ErrorKind::TimedOut,
                    message: format!("TLS handshake with {server} timed out"),
                })??;
                Ok(Transport::Tls(Box::new(stream)))
            }
        }
    }

    fn is_stream(&self) -> bool {
        !matches!(self, Transport::Udp(_))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Udp(s) => s.local_addr(),
            Transport::Tcp(s) => s.local_addr(),
            Transport::Tls(s) => s.get_ref().0.local_addr(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Udp(s) => match s.send(bytes).await {
                Ok(_) => Ok(()),
                // ICMP from an earlier datagram; the transaction timers handle a dead server.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
                Err(e) => Err(e),
            },
            Transport::Tcp(s) => s.write_all(bytes).await,
            Transport::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    /// Cancel-safe: a read dropped before completion loses no bytes.
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Udp(s) => s.recv(buf).await,
            Transport::Tcp(s) => s.read(buf).await,
            Transport::Tls(s) => s.read(buf).await,
        }
    }
}

async fn tcp_connect(server: SocketAddr) -> Result<TcpStream, TurnError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| TurnError::Io {
            kind: io::ErrorKind::TimedOut,
            message: format!("TCP connect to {server} timed out"),
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    }
}

/// Asks the STUN server `server` which address it sees `socket` at (a server-reflexive
/// candidate), retransmitting on the RFC 8489 schedule (up to 39.5 s without an answer).
///
/// Datagrams from other sources that arrive meanwhile are read and discarded, so run it
/// before the socket carries media.
pub async fn stun_binding(socket: &UdpSocket, server: SocketAddr) -> Result<SocketAddr, TurnError> {
    let mut binding = StunBinding::new(Instant::now(), Duration::from_millis(500))?;
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(bytes) = binding.poll_transmit() {
            socket.send_to(&bytes, server).await?;
        }
        if let Some(result) = binding.result() {
            return result;
        }
        let Some(at) = binding.poll_timeout() else {
            return Err(TurnError::Closed);
        };
        tokio::select! {
            read = socket.recv_from(&mut buf) => {
                let (n, from) = read?;
                if from == server
                    && let Err(e) = binding.handle_input(&buf[..n])
                {
                    debug!(error = %e, "malformed Binding response dropped");
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {
                binding.handle_timeout(Instant::now());
            }
        }
    }
}
