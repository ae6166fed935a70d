//! The telecart appliance at run time: the media pipeline's threads, the queues
//! between them, and the local console. Everything that touches tokio, a
//! socket or a device thread lives here; protocol and policy crates do not.

pub mod bus;
pub mod console;
pub mod metrics;
pub mod pipeline;
pub mod session_log;
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
    on_listening: impl FnOnce(std::net::SocketAddr),
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
    let pipeline_config = config.clone();
    let pipeline =
        Arc::new(tokio::task::spawn_blocking(move || Pipeline::start(&pipeline_config)).await??);
    let state = Arc::new(console::ConsoleState {
        config,
        pipeline: pipeline.clone(),
        log: log.clone(),
        started,
        calls: Arc::new(webrtc::call::Calls::with_log(log.clone())),
    });
    on_listening(addr);
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
    tokio::task::spawn_blocking(move || drop(pipeline)).await?;
    let _ = log.audit("cartd", "cartd.stop", "");
    log.close().await;
    Ok(())
}
