//! Tokio driver of the session-log sync: runs [`telecart_store::sync::Scheduler`] against a
//! [`LogStore`] and the ingest API over HTTPS with mutual TLS (rustls, aws-lc-rs).
//!
//! ```text
//! loop: feed the store's watermarks -> poll_output:
//!   Upload{from,upto} -> read + POST -> mark_synced(ack) -> Input::Uploaded | Input::UploadFailed
//!   Purge / MeasureDisk -> store (blocking pool) -> Input::Purged | Input::DiskUsage
//!   Alarm               -> tracing (console) + status channel (metrics, LED)
//!   Timeout{at}         -> sleep until at, a notify (new records), or shutdown
//! ```
#![warn(missing_docs, unreachable_pub)]

mod driver;
pub mod tls;
mod upload;

pub use driver::{SyncHandle, spawn};
pub use upload::Uploader;

/// Errors of the sync driver's setup and of its task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A certificate or key file could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] telecart_store::StoreError),
    /// A blocking store task panicked or was cancelled.
    #[error("store task: {0}")]
    Join(String),
}
