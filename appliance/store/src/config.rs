//! The `[store]` section lives in the cart's one configuration
//! (`telecart_core::config::StoreConfig`); this is how the store reads it.

use std::time::Duration;

use crate::sync::SchedulerConfig;

pub use telecart_core::config::{StoreConfig, SyncConfig, valid_device_id};

/// The sync scheduler's tunables from `[store]`.
pub fn scheduler_config(config: &StoreConfig) -> SchedulerConfig {
    SchedulerConfig {
        batch_size: config.sync.batch_size,
        backoff_initial: Duration::from_millis(config.sync.backoff_initial_ms),
        backoff_max: Duration::from_secs(config.sync.backoff_max_secs),
        retention: Duration::from_secs(u64::from(config.retention_days) * 86_400),
        disk_budget: config.disk_budget_mb.saturating_mul(1 << 20),
        housekeeping_interval: Duration::from_secs(config.housekeeping_secs),
        idle_poll: Duration::from_secs(5),
    }
}
