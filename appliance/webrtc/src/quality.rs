//! Call quality as people understand it: a MOS estimate from round-trip time,
//! jitter and loss, after the ITU-T G.107 E-model in the simplified form that
//! VoIP monitoring tools use (delay impairment from effective latency, loss
//! impairment 2.5 R-points per percent), so numbers compare with theirs.

use serde::Serialize;

/// What the transport measured over the last interval.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct QualitySample {
    /// Round-trip time in milliseconds.
    pub rtt_ms: f64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Fraction of packets lost, 0.0..=1.0.
    pub loss: f64,
}

/// The E-model's R factor (0..=93.2).
pub fn r_factor(sample: QualitySample) -> f64 {
    let rtt = finite_non_negative(sample.rtt_ms);
    let jitter = finite_non_negative(sample.jitter_ms);
    let loss_pct = finite_non_negative(sample.loss).min(1.0) * 100.0;
    // One-way delay plus what a jitter buffer adds, plus codec delay.
    let effective_latency = rtt / 2.0 + 2.0 * jitter + 10.0;
    let delay_impairment = if effective_latency < 160.0 {
        effective_latency / 40.0
    } else {
        (effective_latency - 120.0) / 10.0
    };
    (93.2 - delay_impairment - 2.5 * loss_pct).clamp(0.0, 93.2)
}

/// Mean opinion score 1.0..=4.5 from the R factor (ITU-T G.107 Annex B).
pub fn mos(sample: QualitySample) -> f64 {
    let r = r_factor(sample);
    if r <= 0.0 {
        return 1.0;
    }
    (1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
}

fn finite_non_negative(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_lan_call_scores_near_the_top() {
        let m = mos(QualitySample {
            rtt_ms: 2.0,
            jitter_ms: 1.0,
            loss: 0.0,
        });
        assert!(m > 4.3 && m <= 4.5, "{m}");
    }

    #[test]
    fn loss_and_delay_lower_the_score_monotonically() {
        let good = mos(QualitySample {
            rtt_ms: 40.0,
            jitter_ms: 5.0,
            loss: 0.0,
        });
        let lossy = mos(QualitySample {
            rtt_ms: 40.0,
            jitter_ms: 5.0,
            loss: 0.05,
        });
        let slow = mos(QualitySample {
            rtt_ms: 600.0,
            jitter_ms: 5.0,
            loss: 0.0,
        });
        assert!(good > lossy && good > slow);
        // 5% loss costs 12.5 R points: from "satisfied" into "some users dissatisfied".
        assert!((3.5..4.1).contains(&lossy), "{lossy}");
    }

    #[test]
    fn nonsense_measurements_do_not_produce_nonsense_scores() {
        for s in [
            QualitySample {
                rtt_ms: f64::NAN,
                jitter_ms: -5.0,
                loss: 7.0,
            },
            QualitySample {
                rtt_ms: f64::INFINITY,
                jitter_ms: 0.0,
                loss: 0.0,
            },
        ] {
            let m = mos(s);
            assert!((1.0..=4.5).contains(&m), "{m}");
        }
    }
}
