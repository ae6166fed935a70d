//! The cart's encrypted session log in the running daemon: opened at start,
//! every daemon start/stop in the audit trail, and the upload task when
//! `[store.sync]` is enabled. Calls write their records through it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use telecart_core::config::StoreConfig;
use telecart_store::sync::SyncStatus;
use telecart_store::{LogStore, MasterKey, NewRecord, RecordBody, SessionId, SledStore};
use telecart_sync::SyncHandle;
use tokio::sync::watch;
use tracing::{info, warn};

/// Wall-clock now in Unix milliseconds, as records carry it.
pub fn now_ms() -> u64 {
    crate::pipeline::now().as_micros() / 1000
}

/// How the master key is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPolicy {
    /// It must exist (a provisioned cart).
    Provisioned,
    /// Create it when missing (the demo, with its throw-away data directory).
    CreateIfMissing,
}

/// The open session log.
#[derive(Debug)]
pub struct SessionLog {
    store: Arc<SledStore>,
    sync: Mutex<Option<SyncHandle>>,
    status: Option<watch::Receiver<SyncStatus>>,
}

impl SessionLog {
    /// Opens the store of `[store]` and, when enabled, starts its upload.
    /// Blocking (sled recovery, fsync): call from a blocking context.
    pub fn open(config: &StoreConfig, keys: KeyPolicy) -> anyhow::Result<SessionLog> {
        let key = load_key(&config.master_key, keys)?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("store.data_dir {}: {e}", config.data_dir.display()))?;
        let store = Arc::new(
            SledStore::open(&config.data_dir, &key)
                .map_err(|e| anyhow::anyhow!("session log {}: {e}", config.data_dir.display()))?,
        );
        info!(
            dir = %config.data_dir.display(),
            durable = store.durable_upto(),
            synced = store.synced_upto(),
            "session log open"
        );
        Ok(SessionLog {
            store,
            sync: Mutex::new(None),
            status: None,
        })
    }

    /// Starts uploading (needs a tokio runtime); a no-op unless `[store.sync] enabled`.
    pub fn start_sync(&mut self, config: &StoreConfig) -> anyhow::Result<()> {
        if !config.sync.enabled {
            info!("session log upload off (store.sync.enabled = false): records stay on the cart");
            return Ok(());
        }
        let uploader = telecart_sync::Uploader::from_config(config)
            .map_err(|e| anyhow::anyhow!("store.sync: {e}"))?;
        let handle = telecart_sync::spawn(
            self.store.clone(),
            uploader,
            telecart_store::config::scheduler_config(config),
            now_ms(),
        );
        self.status = Some(handle.status());
        *self.sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        info!(url = %config.sync.url, "session log upload started");
        Ok(())
    }

    /// Appends an audit-trail entry; a failure is logged (the call goes on) and returned.
    pub fn audit(&self, actor: &str, action: &str, detail: &str) -> anyhow::Result<u64> {
        let seq = self
            .store
            .audit(now_ms(), actor, action, detail)
            .inspect_err(|e| warn!(error = %e, action, "audit entry not written"))?;
        self.notify_sync();
        Ok(seq)
    }

    /// Appends a record of a session.
    pub fn append(&self, session: SessionId, body: RecordBody) -> anyhow::Result<u64> {
        let seq = self
            .store
            .append(NewRecord {
                session,
                at_ms: now_ms(),
                body,
            })
            .inspect_err(|e| warn!(error = %e, "session record not written"))?;
        self.notify_sync();
        Ok(seq)
    }

    fn notify_sync(&self) {
        if let Some(sync) = self.sync.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            sync.notify();
        }
    }

    /// Watermarks and alarms of the upload, when it runs; else the store's own watermarks.
    pub fn status(&self) -> SyncStatus {
        match &self.status {
            Some(rx) => rx.borrow().clone(),
            None => SyncStatus {
                durable_upto: self.store.durable_upto(),
                synced_upto: self.store.synced_upto(),
                ..SyncStatus::default()
            },
        }
    }

    /// Stops the upload task.
    pub async fn close(&self) {
        let handle = self.sync.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle
            && let Err(e) = handle.shutdown().await
        {
            warn!(error = %e, "session log upload ended with an error");
        }
    }
}

fn load_key(path: &Path, policy: KeyPolicy) -> anyhow::Result<MasterKey> {
    match (path.exists(), policy) {
        (true, _) => MasterKey::load(path)
            .map_err(|e| anyhow::anyhow!("store.master_key {}: {e}", path.display())),
        (false, KeyPolicy::CreateIfMissing) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            MasterKey::generate_file(path)
                .map_err(|e| anyhow::anyhow!("store.master_key {}: {e}", path.display()))
        }
        (false, KeyPolicy::Provisioned) => Err(anyhow::anyhow!(
            "store.master_key {}: missing; create it on the cart with `cartctl keygen --out {}` (mode 0600) before starting cartd",
            path.display(),
            path.display()
        )),
    }
}
