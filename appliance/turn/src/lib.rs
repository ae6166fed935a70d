//! TURN (RFC 8656) and STUN (RFC 8489) client for the telecart appliance.
//!
//! Hospital firewalls often let nothing out but TLS on port 443, and str0m has no TURN client,
//! so this crate provides one:
//!
//! - [`codec`]: the STUN/TURN wire format (messages, attributes, MESSAGE-INTEGRITY with
//!   HMAC-SHA1 and HMAC-SHA256, FINGERPRINT, ChannelData, stream framing). Every parser takes
//!   untrusted bytes and returns a [`TurnError`], never panics.
//! - [`TurnClient`]: a sans-IO state machine in the style of str0m and quinn-proto. It never
//!   reads a clock or touches a socket: feed it bytes and `now`, send what it returns, sleep
//!   until [`TurnClient::poll_timeout`] (which says why).
//! - [`StunBinding`]: a sans-IO Binding transaction for server-reflexive candidates.
//! - With the `tokio` feature (on by default): [`TurnSocket`], the driver over UDP, TCP or
//!   TLS (rustls with aws-lc-rs), and [`stun_binding`].
//!
//! # Wiring a relay into str0m
//!
//! A WebRTC session driver allocates a relay, offers it to str0m as a `relay` candidate,
//! sends str0m's transmits whose source is the relayed address through the relay, and feeds
//! what the relay receives back to str0m as if it had arrived on the relayed address:
//!
//! ```ignore
//! use std::time::Instant;
//! use str0m::net::{Protocol, Receive};
//! use str0m::{Candidate, Input, Output, Rtc};
//! use telecart_turn::{TlsOptions, TurnConfig, TurnSocket, TurnTransport};
//!
//! // TURN over TLS on 443, the one way out of many hospital networks.
//! let config = TurnConfig::new(server_addr, TurnTransport::Tls, username, password);
//! let tls = TlsOptions { config: rustls_client_config, server_name: "turn.example.org".try_into()? };
//! let turn = TurnSocket::connect(config, Some(tls)).await?;
//! let relayed = turn.relayed_addr();
//!
//! // The relayed address is the candidate; the local end of the connection is its base.
//! rtc.add_local_candidate(Candidate::relayed(relayed, turn.local_addr(), "udp")?);
//!
//! loop {
//!     // Drain str0m completely (its single-mutation invariant), routing by source address.
//!     let timeout = loop {
//!         match rtc.poll_output()? {
//!             Output::Timeout(t) => break t,
//!             Output::Transmit(t) if t.source == relayed => {
//!                 turn.send_to(t.destination, &t.contents).await?;
//!             }
//!             Output::Transmit(t) => {
//!                 host_socket.send_to(&t.contents, t.destination).await?;
//!             }
//!             Output::Event(e) => handle_event(e),
//!         }
//!     };
//!     tokio::select! {
//!         // What a peer sent to the relayed address: to str0m, as received on `relayed`.
//!         Ok((peer, data)) = turn.recv_from() => {
//!             let input = Receive::new(Protocol::Udp, peer, relayed, &data)?;
//!             rtc.handle_input(Input::Receive(Instant::now(), input))?;
//!         }
//!         Ok((n, from)) = host_socket.recv_from(&mut buf) => {
//!             let input = Receive::new(Protocol::Udp, from, host_addr, &buf[..n])?;
//!             rtc.handle_input(Input::Receive(Instant::now(), input))?;
//!         }
//!         _ = tokio::time::sleep_until(timeout.into()) => {
//!             rtc.handle_input(Input::Timeout(Instant::now()))?;
//!         }
//!     }
//! }
//! // At the end of the call: turn.close().await releases the allocation.
//! ```
//!
//! The relay always speaks UDP to peers (`"udp"` in the candidate), whatever carries it to the
//! TURN server. Permissions and channels are created and refreshed by the client for every
//! peer str0m sends to (ICE checks go first, so a peer has its permission before its media
//! arrives). [`TurnSocket::mapped_addr`] can be offered as a server-reflexive candidate too.

//!
//! # Tests
//!
//! `cargo test -p telecart-turn` runs the unit tests (codec, state machine on virtual time,
//! property tests over random bytes) and `tests/coturn.rs`, which starts real `turnserver`
//! processes from the Debian package `coturn` on 127.0.0.1 and fails, naming the package, if
//! it is not installed.

#![warn(missing_docs)]

pub mod binding;
pub mod client;
pub mod codec;
#[cfg(feature = "tokio")]
mod driver;
pub mod error;
mod retransmit;

pub use binding::StunBinding;
pub use client::{TimeoutReason, TurnClient, TurnConfig, TurnEvent, TurnStats, TurnTransport};
#[cfg(feature = "tokio")]
pub use driver::{TlsOptions, TurnSocket, stun_binding};
pub use error::TurnError;
