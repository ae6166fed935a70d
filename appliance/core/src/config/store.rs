//! The `[store]` section: the encrypted session log and its upload (see docs/store.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[store]`: where the session log lives, how long synced records are kept, how much disk it may
/// use, and `[store.sync]`: where and how it is uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory of the sled store (mode 0700, owned by cartd).
    pub data_dir: PathBuf,
    /// Device master key file from provisioning (32 raw bytes or 64 hex digits, mode 0600/0400).
    pub master_key: PathBuf,
    /// Device id, as in the device certificate's common name; names the device at the ingest API.
    pub device_id: String,
    /// Synced records older than this are purged.
    pub retention_days: u32,
    /// Disk the store may use before the alarm is raised and synced records go early.
    pub disk_budget_mb: u64,
    /// How often retention and disk usage are checked.
    pub housekeeping_secs: u64,
    /// Upload to the ingest API.
    pub sync: SyncConfig,
}

/// `[store.sync]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Upload at all (off: records stay on the device and are never purged).
    pub enabled: bool,
    /// Base URL of the ingest API, `https://...` (records go to `{url}/v1/devices/{device_id}/records`).
    pub url: String,
    /// Device certificate chain (PEM), presented for mutual TLS.
    pub client_cert: PathBuf,
    /// Device certificate's private key (PEM, mode 0600/0400).
    pub client_key: PathBuf,
    /// CA certificate(s) (PEM) the server's certificate must chain to; system roots are not used.
    pub ca_cert: PathBuf,
    /// Records per request.
    pub batch_size: usize,
    /// Bound on one request, connect to response.
    pub request_timeout_secs: u64,
    /// First retry delay.
    pub backoff_initial_ms: u64,
    /// Retry delay cap.
    pub backoff_max_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/telecart/log"),
            master_key: PathBuf::from("/etc/telecart/keys/master.key"),
            device_id: String::new(),
            retention_days: 30,
            disk_budget_mb: 512,
            housekeeping_secs: 60,
            sync: SyncConfig::default(),
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: String::new(),
            client_cert: PathBuf::from("/etc/telecart/keys/device.crt"),
            client_key: PathBuf::from("/etc/telecart/keys/device.key"),
            ca_cert: PathBuf::from("/etc/telecart/keys/ingest-ca.crt"),
            batch_size: 256,
            request_timeout_secs: 30,
            backoff_initial_ms: 500,
            backoff_max_secs: 300,
        }
    }
}

/// Whether `id` is a valid device id: 1..=64 of `[A-Za-z0-9._-]`.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl StoreConfig {
    /// Checks ranges and consistency. Returns `(key, message)` pairs, keys as in the TOML file
    /// (`store.sync.url`); empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        let mut err = |k: &str, m: &str| e.push((format!("store.{k}"), m.to_string()));
        if !self.data_dir.is_absolute() {
            err("data_dir", "must be an absolute path");
        }
        if !self.master_key.is_absolute() {
            err("master_key", "must be an absolute path");
        }
        if !self.device_id.is_empty() && !valid_device_id(&self.device_id) {
            err("device_id", "1 to 64 characters of A-Z a-z 0-9 . _ -");
        }
        if self.retention_days == 0 || self.retention_days > 3650 {
            err("retention_days", "must be 1..=3650");
        }
        if self.disk_budget_mb < 16 {
            err("disk_budget_mb", "must be at least 16");
        }
        if !(1..=86_400).contains(&self.housekeeping_secs) {
            err("housekeeping_secs", "must be 1..=86400");
        }
        let s = &self.sync;
        if s.enabled {
            if self.device_id.is_empty() {
                err("device_id", "required when store.sync.enabled = true");
            }
            if !s.url.starts_with("https://") {
                err("sync.url", "must be an https:// URL");
            }
            for (k, p) in [
                ("sync.client_cert", &s.client_cert),
                ("sync.client_key", &s.client_key),
                ("sync.ca_cert", &s.ca_cert),
            ] {
                if !p.is_absolute() {
                    err(k, "must be an absolute path");
                }
            }
        }
        if !(1..=10_000).contains(&s.batch_size) {
            err("sync.batch_size", "must be 1..=10000");
        }
        if !(1..=600).contains(&s.request_timeout_secs) {
            err("sync.request_timeout_secs", "must be 1..=600");
        }
        if !(10..=60_000).contains(&s.backoff_initial_ms) {
            err("sync.backoff_initial_ms", "must be 10..=60000");
        }
        if s.backoff_max_secs == 0
            || s.backoff_max_secs > 86_400
            || s.backoff_max_secs * 1000 < s.backoff_initial_ms
        {
            err(
                "sync.backoff_max_secs",
                "must be 1..=86400 and not below backoff_initial_ms",
            );
        }
        e
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_keys() {
        assert!(StoreConfig::default().validate().is_empty());
        let mut c = StoreConfig::default();
        c.sync.enabled = true;
        c.sync.url = "http://x".into();
        c.retention_days = 0;
        let keys: Vec<_> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec!["store.retention_days", "store.device_id", "store.sync.url"]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let c: Result<StoreConfig, _> = toml::from_str("retention_dayz = 3");
        assert!(c.is_err());
        let c: StoreConfig =
            toml::from_str("retention_days = 3\n[sync]\nbatch_size = 9\n").unwrap();
        assert_eq!(
            (c.retention_days, c.sync.batch_size, c.disk_budget_mb),
            (3, 9, 512)
        );
    }
}
