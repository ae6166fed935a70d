//! The `[board]` configuration section lives in `telecart-core` (one config
//! file, one parser); this module turns it into the policies of the state
//! machine and of the PTZ controller.

use telecart_cart::machine::MachineConfig;
use telecart_cart::ptz::PtzConfig;
pub use telecart_core::config::{BoardConfig, PtzSection};

/// The state machine's policy.
pub fn machine_config(config: &BoardConfig) -> MachineConfig {
    MachineConfig {
        outgoing_uri: config.outgoing_uri.clone(),
        ring_timeout_ms: u64::from(config.ring_timeout_s) * 1000,
        low_battery_percent: config.low_battery_percent,
    }
}

/// The PTZ policy.
pub fn ptz_config(config: &BoardConfig) -> PtzConfig {
    PtzConfig {
        full_step: config.ptz.full_step,
        rate_per_s: config.ptz.rate_per_s,
        burst: config.ptz.burst,
        presets: config.ptz.presets.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_follow_the_section() {
        let c: BoardConfig = toml::from_str(
            "ring_timeout_s = 30\n[ptz]\npresets = [ { pan = 0, tilt = 0, zoom = 0 } ]\n",
        )
        .unwrap();
        assert_eq!(machine_config(&c).ring_timeout_ms, 30_000);
        assert_eq!(ptz_config(&c).presets.len(), 1);
        assert_eq!(ptz_config(&BoardConfig::default()), PtzConfig::default());
    }
}
