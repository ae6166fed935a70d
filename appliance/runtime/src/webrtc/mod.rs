//! WebRTC for the cart, driven by str0m: one tokio task per peer connection
//! (the [`session`] driver), the WHIP publisher ([`whip`]) and the call
//! statistics the console and `/metrics` show ([`stats`]).
//!
//! The driver follows str0m's run loop: drain `poll_output()` until it says
//! `Timeout`, then wait for whichever comes first of a datagram, an encoded
//! frame from the pipeline or that timeout. Pure rules (WHIP responses,
//! data-channel messages, MOS) live in the sans-IO crate `telecart-webrtc`.

pub mod call;
pub mod session;
pub mod speaker;
pub mod stats;
pub mod whip;

pub use session::SessionControl;
pub use session::{SessionOptions, run_session};
pub use stats::{CallStats, SharedStats};
pub use whip::{
    IceRestartReport, PublishError, PublishOptions, PublishReport, TurnServer, publish,
};

use crate::pipeline::Pipeline;
use crate::privacy_follower::PrivacyFollower;
use std::sync::Arc;

/// Starts the pipeline `config` describes, publishes it once over WHIP and
/// stops the pipeline again: what `cartd publish` and the interop tests run.
pub async fn publish_config(
    config: telecart_core::Config,
    mut opts: PublishOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<PublishReport> {
    apply_config(&config.webrtc, &mut opts)?;
    let max_bitrate_bps = config.video.max_bitrate_kbps * 1000;
    // The cart's privacy switch gates a publish of its camera as it gates calls.
    let follower = tokio::task::spawn_blocking({
        let board = config.board.clone();
        move || PrivacyFollower::start(&board)
    })
    .await??;
    let privacy = follower.privacy();
    let pipeline =
        Arc::new(tokio::task::spawn_blocking(move || Pipeline::start(&config, privacy)).await??);
    let media = session::MediaSources {
        video: pipeline.video.clone(),
        audio: pipeline.audio.clone(),
        encoder: pipeline.encoder.clone(),
        max_bitrate_bps,
    };
    let result = publish(media, &opts, SharedStats::new(), stop).await;
    pipeline.request_stop();
    tokio::task::spawn_blocking(move || drop((pipeline, follower))).await?;
    Ok(result?)
}

/// Fills what the command line left open from the `[webrtc]` section:
/// bind address, port range, the first STUN server, the first TURN server
/// (UDP, TCP or TLS, trusting the system store and `ca_file`), relay-only,
/// the CA file for an HTTPS endpoint.
pub fn apply_config(
    w: &telecart_core::config::WebRtcConfig,
    opts: &mut PublishOptions,
) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    opts.bind = opts.bind.or(w.bind_address);
    if opts.port_range.is_none() && w.port_min != 0 {
        opts.port_range = Some((w.port_min, w.port_max));
    }
    if opts.stun.is_none()
        && let Some(url) = w.stun_servers.first()
    {
        match telecart_webrtc::whip::IceServerUrl::parse(url) {
            Some(telecart_webrtc::whip::IceServerUrl::Stun { host, port }) => {
                opts.stun = (host.as_str(), port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next());
            }
            _ => anyhow::bail!("webrtc.stun_servers: {url:?} is not a stun: URI"),
        }
    }
    if opts.ca_file.is_none() {
        opts.ca_file = w.ca_file.clone();
    }
    if opts.turn.is_none()
        && let Some(t) = w.turn_servers.first()
    {
        let mut server = TurnServer::from_url(&t.url, &t.username, &t.password)?;
        if server.is_tls() {
            server.tls = Some(turn_tls(&t.url, opts.ca_file.as_deref())?);
        }
        opts.turn = Some(server);
    }
    opts.relay_only |= w.relay_only;
    if opts.relay_only && opts.turn.is_none() && !opts.link_ice_servers {
        anyhow::bail!(
            "webrtc.relay_only needs a TURN server in webrtc.turn_servers \
             (or the endpoint's Link headers, which are switched off)"
        );
    }
    Ok(())
}

/// TLS towards a `turns:` server: its host name for SNI and certificate
/// checks, the cart's trusted roots.
pub fn turn_tls(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<telecart_turn::TlsOptions> {
    let Some(telecart_webrtc::whip::IceServerUrl::Turn { host, .. }) =
        telecart_webrtc::whip::IceServerUrl::parse(url)
    else {
        anyhow::bail!("{url:?} is not a turns: URI");
    };
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| anyhow::anyhow!("{url:?}: {host:?} is not a TLS server name: {e}"))?;
    Ok(telecart_turn::TlsOptions {
        config: crate::tls::client_config(ca_file)?,
        server_name,
    })
}
