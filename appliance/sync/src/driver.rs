//! The sync task.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use telecart_store::LogStore;
use telecart_store::store::Readout;
use telecart_store::sync::{Input, Output, Scheduler, SchedulerConfig, SyncStatus, UploadFailure};
use telecart_store::wire::{UploadBatch, to_wire};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{SyncError, Uploader};

/// Handle of a running sync task. Dropping it stops the task.
#[derive(Debug)]
pub struct SyncHandle {
    notify: Arc<Notify>,
    status: watch::Receiver<SyncStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), SyncError>>,
}

impl SyncHandle {
    /// Tells the task that records were appended (it also looks by itself every few seconds).
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    /// Status updates (backlog, failures, alarms) for metrics, the console page and the LED.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Stops the task (an upload in flight is abandoned; it is retried on the next start, and the
    /// server's idempotency makes that harmless) and returns how it ended.
    pub async fn shutdown(mut self) -> Result<(), SyncError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| SyncError::Join(e.to_string()))?
    }
}

/// Starts the sync task on the current tokio runtime. `seed` seeds the backoff jitter.
pub fn spawn<S: LogStore + 'static>(
    store: Arc<S>,
    uploader: Uploader,
    cfg: SchedulerConfig,
    seed: u64,
) -> SyncHandle {
    let notify = Arc::new(Notify::new());
    let sched = Scheduler::new(cfg, seed);
    let (status_tx, status) = watch::channel(sched.status());
    let (stop, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(
        store,
        uploader,
        sched,
        notify.clone(),
        status_tx,
        stop_rx,
    ));
    SyncHandle {
        notify,
        status,
        stop: Some(stop),
        task,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, telecart_store::StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Join(e.to_string()))??)
}

fn unix_ms_minus(age: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(age).as_millis() as u64
}

async fn run<S: LogStore + 'static>(
    store: Arc<S>,
    up: Uploader,
    mut sched: Scheduler,
    notify: Arc<Notify>,
    status: watch::Sender<SyncStatus>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), SyncError> {
    tracing::info!(device = up.device(), "session-log sync started");
    loop {
        let now = Instant::now().into_std();
        sched.handle_input(
            now,
            Input::Store {
                durable_upto: store.durable_upto(),
                synced_upto: store.synced_upto(),
            },
        );
        match sched.poll_output(now) {
            Output::Upload { from, upto } => {
                let s = store.clone();
                let max = usize::try_from(upto - from + 1).unwrap_or(usize::MAX);
                let readouts = blocking(move || s.read_from(from, max)).await?;
                for r in &readouts {
                    if let Readout::Unreadable { seq, error } = r {
                        tracing::error!(seq, %error, "record unreadable on the device; uploading a placeholder");
                    }
                }
                let batch = UploadBatch {
                    records: readouts.iter().map(|r| to_wire(up.device(), r)).collect(),
                };
                drop(readouts);
                let sent_upto = batch
                    .records
                    .last()
                    .map(|r| r.seq)
                    .unwrap_or(from.saturating_sub(1));
                let result = tokio::select! {
                    r = up.upload(&batch) => r,
                    _ = &mut stop => break,
                };
                drop(batch);
                let input = match result {
                    Ok(acked) => {
                        let mark = acked.min(sent_upto);
                        let s = store.clone();
                        match blocking(move || s.mark_synced(mark)).await {
                            Ok(()) => {
                                tracing::debug!(
                                    from,
                                    upto = sent_upto,
                                    acked,
                                    "batch acknowledged"
                                );
                                Input::Uploaded { acked_upto: acked }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "could not persist the acknowledgement");
                                Input::UploadFailed(UploadFailure::Transient(format!(
                                    "persisting ack: {e}"
                                )))
                            }
                        }
                    }
                    Err(f) => {
                        tracing::warn!(from, upto = sent_upto, failure = ?f, "upload failed");
                        Input::UploadFailed(f)
                    }
                };
                sched.handle_input(Instant::now().into_std(), input);
                status.send_replace(sched.status());
            }
            Output::MeasureDisk => {
                let s = store.clone();
                let bytes = blocking(move || s.disk_usage()).await?;
                sched.handle_input(Instant::now().into_std(), Input::DiskUsage { bytes });
            }
            Output::Purge { upto, min_age } => {
                let s = store.clone();
                let cutoff = unix_ms_minus(min_age);
                let r = blocking(move || s.purge_synced(upto, cutoff)).await?;
                if r.removed > 0 {
                    tracing::info!(
                        removed = r.removed,
                        purged_upto = r.purged_upto,
                        "purged synced records"
                    );
                }
                sched.handle_input(
                    Instant::now().into_std(),
                    Input::Purged { removed: r.removed },
                );
            }
            Output::Alarm(a) => {
                tracing::warn!(alarm = ?a, "session-log alarm");
                status.send_replace(sched.status());
            }
            Output::AlarmCleared(k) => {
                tracing::info!(alarm = ?k, "session-log alarm cleared");
                status.send_replace(sched.status());
            }
            Output::Timeout { at, .. } => {
                status.send_replace(sched.status());
                tokio::select! {
                    _ = tokio::time::sleep_until(Instant::from_std(at)) => {}
                    _ = notify.notified() => {}
                    _ = &mut stop => break,
                }
            }
            other => tracing::debug!(output = ?other, "unhandled scheduler output"),
        }
    }
    tracing::info!("session-log sync stopped");
    Ok(())
}
