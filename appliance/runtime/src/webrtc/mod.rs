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
pub mod stats;
pub mod whip;

pub use session::{SessionOptions, run_session};
pub use stats::{CallStats, SharedStats};
pub use whip::{PublishError, PublishOptions, PublishReport, TurnServer, publish};

use crate::pipeline::Pipeline;
use std::sync::Arc;

/// Starts the pipeline `config` describes, publishes it once over WHIP and
/// stops the pipeline again: what `cartd publish` and the interop tests run.
pub async fn publish_config(
    config: telecart_core::Config,
    opts: PublishOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<PublishReport> {
    let max_bitrate_bps = config.video.max_bitrate_kbps * 1000;
    let pipeline = Arc::new(tokio::task::spawn_blocking(move || Pipeline::start(&config)).await??);
    let media = session::MediaSources {
        video: pipeline.video.clone(),
        audio: pipeline.audio.clone(),
        encoder: pipeline.encoder.clone(),
        max_bitrate_bps,
    };
    let result = publish(media, &opts, SharedStats::new(), stop).await;
    pipeline.request_stop();
    tokio::task::spawn_blocking(move || drop(pipeline)).await?;
    Ok(result?)
}
