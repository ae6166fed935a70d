//! The UDP socket rsipstack reads SIP from, with the datagrams its parser would silently drop
//! answered first ([`crate::guard`]): 501 for an extension method, 400 for a malformed request.

use std::net::SocketAddr;

use rsipstack::sip::SipMessage;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::driver::SipStatus;
use crate::guard::{Screened, screen};

/// A bound UDP socket whose `recv_from` hands rsipstack only what it can parse.
pub(crate) struct ScreenedUdpSocket {
    socket: UdpSocket,
    status: watch::Sender<SipStatus>,
}

impl ScreenedUdpSocket {
    pub(crate) async fn bind(
        addr: SocketAddr,
        status: watch::Sender<SipStatus>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            socket: UdpSocket::bind(addr).await?,
            status,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Whether rsipstack gets this datagram; if not, its answer (if any) has been sent.
    async fn screen(&self, datagram: &[u8], from: SocketAddr) -> bool {
        // Keep-alives are the stack's. Parsing here as well as in the stack costs a second parse
        // per message, cheap at SIP's message rate, and keeps the stack's own rules in force.
        if datagram.iter().all(u8::is_ascii_whitespace) {
            return true;
        }
        let parsed = SipMessage::try_from(datagram).is_ok();
        let tag = format!("{:08x}", rand::random::<u32>());
        match screen(datagram, parsed, &tag) {
            Screened::Pass => return true,
            Screened::Answer { status, response } => {
                info!(%from, status, "sip: answered a request the stack must not take");
                self.status.send_modify(|s| {
                    if status == 501 {
                        s.unknown_methods += 1;
                    } else {
                        s.bad_requests += 1;
                    }
                });
                if let Err(e) = self.socket.send_to(&response, from).await {
                    debug!(%from, error = %e, "sip: answer to a screened request not sent");
                }
            }
            Screened::Drop(why) => debug!(%from, why, "sip: unparsable datagram dropped"),
        }
        false
    }
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for ScreenedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            let (len, from) = self.socket.recv_from(buf).await?;
            if self.screen(&buf[..len], from).await {
                return Ok((len, from));
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(ScreenedUdpSocket::local_addr(self)?)
    }
}
