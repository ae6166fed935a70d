//! The telecart appliance at run time: the media pipeline's threads, the queues
//! between them, and the local console. Everything that touches tokio, a
//! socket or a device thread lives here; protocol and policy crates do not.

pub mod bus;
pub mod captions;
pub mod cart;
pub mod console;
pub mod metrics;
pub mod overlay;
pub mod pipeline;
pub mod privacy_follower;
pub mod session_log;
pub mod sip;
pub mod tls;
pub mod webrtc;

pub use pipeline::{EncoderControl, Pipeline, PipelineStatus};
pub use session_log::{KeyPolicy, SessionLog};

use std::sync::Arc;
use std::time::Instant;
use telecart_core::Config;
use tokio::net::TcpListener;
use tracing::info;

/// Runs the appliance until `shutdown` resolves: pipeline and console.
/// `on_listening` gets the console's bound address (the port may have been 0).
pub async fn run(
    config: Config,
    keys: KeyPolicy,
    on_listening: impl FnOnce(std::net::SocketAddr, Arc<cart::CartController>),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let listener = TcpListener::bind(config.console.listen)
        .await
        .map_err(|e| anyhow::anyhow!("console: cannot bind {}: {e}", config.console.listen))?;
    let addr = listener.local_addr()?;
    let store_config = config.store.clone();
    let mut log =
        tokio::task::spawn_blocking(move || SessionLog::open(&store_config, keys)).await??;
    log.start_sync(&config.store)?;
    let log = Arc::new(log);
    // The audit trail records every start and stop of the daemon.
    let _ = log.audit("cartd", "cartd.start", env!("CARGO_PKG_VERSION"));
    let calls = Arc::new(webrtc::call::Calls::with_log(log.clone()));
    // The board comes up before the camera: a privacy switch already on at
    // power-up gates the very first frame.
    let cart = Arc::new(cart::CartController::start(
        &sip::board_with_sip_call(&config.board, &config.sip),
        cart::Wiring {
            calls: calls.clone(),
            log: Some(log.clone()),
        },
    )?);
    let pipeline_config = config.clone();
    let privacy = cart.privacy();
    let pipeline = Arc::new(
        tokio::task::spawn_blocking(move || Pipeline::start(&pipeline_config, privacy)).await??,
    );
    if let Some(controls) = pipeline.camera_controls.clone() {
        cart.attach_camera(controls);
    }
    let captions = {
        let (config, tap, calls, log, overlay) = (
            config.captions.clone(),
            pipeline.transcription_audio.clone(),
            calls.clone(),
            log.clone(),
            pipeline.captions_overlay.clone(),
        );
        match tokio::task::spawn_blocking(move || {
            captions::start(&config, &tap, calls, Some(log), Some(overlay))
        })
        .await?
        {
            Ok(c) => Some(Arc::new(c)),
            Err(why) => {
                tracing::warn!(%why, "calls run without captions");
                None
            }
        }
    };
    cart.input(telecart_cart::machine::Input::BootComplete);
    let state = Arc::new(console::ConsoleState {
        config,
        pipeline: pipeline.clone(),
        log: log.clone(),
        started,
        calls,
        cart: cart.clone(),
        captions,
        sip: metrics::SipMetrics::default(),
    });
    let sip = sip::start(
        &state.config,
        pipeline.clone(),
        cart.clone(),
        state.calls.clone(),
        state.captions.clone(),
        telecart_audio::JitterSettings {
            min_delay_ms: state.config.audio_processing.jitter_min_ms,
            max_delay_ms: state.config.audio_processing.jitter_max_ms,
        },
        state.sip.clone(),
    )
    .await;
    on_listening(addr, cart.clone());
    tokio::spawn(systemd_watchdog(pipeline.clone()));
    // Stop the pipeline first: that closes the queues, which ends open live
    // streams, which lets the server's graceful shutdown finish.
    let stop_pipeline = {
        let pipeline = pipeline.clone();
        let calls = state.calls.clone();
        async move {
            shutdown.await;
            info!("shutting down");
            calls.hang_up_all();
            pipeline.request_stop();
        }
    };
    console::serve(listener, state, stop_pipeline).await?;
    // Joining the stage threads blocks; keep it off the async workers.
    if let Some(sip) = sip {
        sip.shutdown().await;
    }
    tokio::task::spawn_blocking(move || {
        drop(pipeline);
        cart.stop();
    })
    .await?;
    let _ = log.audit("cartd", "cartd.stop", "");
    log.close().await;
    Ok(())
}

/// Tells systemd the daemon is ready and, under `WatchdogSec=`, keeps
/// petting the watchdog only while media flows: a pipeline that stopped
/// capturing (wedged driver, deadlock) is restarted by systemd rather than
/// left up and silent. Does nothing outside systemd.
async fn systemd_watchdog(pipeline: Arc<Pipeline>) {
    use sd_notify::NotifyState;
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    let mut timeout_usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut timeout_usec) || timeout_usec == 0 {
        return;
    }
    let period = std::time::Duration::from_micros(timeout_usec / 2);
    let progress = |s: &PipelineStatus| s.frames_captured + s.audio_blocks_captured;
    let mut last = progress(&pipeline.status());
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = progress(&pipeline.status());
        if now > last {
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
        } else {
            tracing::warn!(
                "no frame or audio block since the last watchdog period: not petting systemd's watchdog"
            );
        }
        last = now;
    }
}
