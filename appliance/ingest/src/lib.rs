//! Reference ingest server for telecart session logs (`docs/ingest-api.yaml`).
//!
//! HTTPS only, with mutual TLS: a device authenticates with its certificate, whose common name must
//! equal the `{device}` in the path. Records are kept in PostgreSQL, keyed by (device, sequence),
//! inserted with `ON CONFLICT DO NOTHING`, so a retried batch is never stored twice; the answer is
//! the highest sequence up to which the server holds every record of the device.
//!
//! This is a reference for tests and integrators: a fleet scales it by running several instances
//! against one PostgreSQL (per-device row locks serialise concurrent uploads of one device).
#![warn(missing_docs, unreachable_pub)]

pub mod db;
pub mod faults;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

/// Errors of the ingest server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS configuration is unusable (certificates, keys).
    #[error("TLS: {0}")]
    Tls(String),
    /// PostgreSQL reported an error.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No database connection could be had from the pool.
    #[error("database pool: {0}")]
    Pool(String),
    /// The test harness failed (PostgreSQL would not start, ...).
    #[error("harness: {0}")]
    Harness(String),
}

impl From<deadpool_postgres::PoolError> for IngestError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        IngestError::Pool(e.to_string())
    }
}
