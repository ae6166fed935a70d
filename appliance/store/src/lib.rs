//! Encrypted, hash-chained session log of the telecart appliance.
//!
//! - [`record`]: what a record says, and our own versioned envelope format;
//! - [`crypto`]: the device master key (0600 key file) wrapping per-epoch data keys
//!   (XChaCha20-Poly1305);
//! - [`store`]: the [`LogStore`] trait and its sled implementation [`SledStore`];
//! - [`audit`]: the audit trail's SHA-256 hash chain;
//! - [`sync`]: the sans-IO sync scheduler (the tokio/HTTPS driver is `telecart-sync`);
//! - [`wire`]: the ingest API's JSON types;
//! - [`technician`]: `cartctl log list|show|export`;
//! - [`config`]: the `[store]` configuration section.
//!
//! See `docs/store.md` for the design.
#![warn(missing_docs, unreachable_pub)]

pub mod audit;
pub mod config;
pub mod crypto;
mod error;
pub mod record;
pub mod store;
pub mod sync;
pub mod technician;
pub mod wire;

pub use config::{StoreConfig, SyncConfig};
pub use crypto::{KeyWrapper, MasterKey};
pub use error::{Result, StoreError};
pub use record::{AuditEntry, Kind, NewRecord, Record, RecordBody, SessionId};
pub use store::{LogStore, Readout, SledStore, VerifyReport};
