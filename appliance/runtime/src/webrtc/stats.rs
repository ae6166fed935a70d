//! What one call did and how good it is: filled in by the session driver from
//! str0m's stats events, read by `cartd publish`, the console and `/metrics`.

use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use telecart_webrtc::quality::{self, QualitySample};

/// Counters and quality of one peer connection.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CallStats {
    /// `new`, `connecting`, `connected`, `disconnected`, `closed` or `failed`.
    pub state: String,
    /// Why the call ended or failed, when it did.
    pub error: Option<String>,
    /// Selected ICE pair, `local <-> remote (proto)`.
    pub ice_pair: Option<String>,
    /// Negotiated video codec, e.g. `H264/90000 pt=108 packetization-mode=1 profile-level-id=42e01f`.
    pub video_codec: Option<String>,
    /// Negotiated audio codec.
    pub audio_codec: Option<String>,
    /// Milliseconds from the start of signalling to ICE + DTLS connected.
    pub connect_ms: Option<f64>,
    /// Milliseconds from the start of signalling to the first video frame written.
    pub first_frame_ms: Option<f64>,
    /// Video frames (access units) handed to str0m.
    pub video_frames_sent: u64,
    /// Video frames skipped while waiting for a key frame after a gap.
    pub video_frames_skipped: u64,
    /// Opus packets handed to str0m.
    pub audio_packets_sent: u64,
    /// RTP packets sent for video (from egress stats).
    pub video_packets_sent: u64,
    /// RTP bytes sent for video.
    pub video_bytes_sent: u64,
    /// RTP packets sent for audio.
    pub audio_packets_rtp_sent: u64,
    /// RTP bytes sent for audio.
    pub audio_bytes_sent: u64,
    /// PLIs received.
    pub plis: u64,
    /// FIRs received.
    pub firs: u64,
    /// NACKs received (each asks for retransmissions through RTX).
    pub nacks: u64,
    /// Key frames asked of the encoder (PLI, FIR, gaps, data channel).
    pub keyframes_requested: u64,
    /// Latest TWCC bandwidth estimate, bits per second.
    pub bwe_bps: Option<u64>,
    /// Bitrate last asked of the video encoder.
    pub encoder_target_bps: Option<u32>,
    /// Round-trip time, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Jitter the remote side reports for our video, milliseconds.
    pub jitter_ms: Option<f64>,
    /// Fraction of our packets the remote side lost (0..1).
    pub loss: Option<f64>,
    /// MOS estimate (1..4.5) from RTT, jitter and loss.
    pub mos: Option<f64>,
    /// RTP packets received (remote audio and video).
    pub packets_received: u64,
    /// Remote Opus packets decoded.
    pub remote_audio_packets_decoded: u64,
    /// Remote Opus packets that failed to decode.
    pub remote_audio_decode_errors: u64,
    /// The speaker's jitter buffer: audio held ahead of the speaker, ms.
    pub playout_delay_ms: Option<f64>,
    /// The jitter buffer: packets that came after their turn to play.
    pub playout_late_packets: u64,
    /// The jitter buffer: packets missing at their turn (concealed).
    pub playout_lost_packets: u64,
    /// Remote video frames received (depacketized).
    pub remote_video_frames: u64,
    /// Data-channel messages received on `telecart`.
    pub datachannel_messages_received: u64,
    /// Data-channel messages refused (bad JSON, wrong version, too big).
    pub datachannel_messages_refused: u64,
    /// Data-channel messages sent.
    pub datachannel_messages_sent: u64,
    /// Datagrams str0m did not accept (garbage, other sessions).
    pub datagrams_ignored: u64,
    /// ICE restarts the remote answered (network changes, requests).
    pub ice_restarts: u64,
    /// Milliseconds from the last ICE restart's answer to ICE connected again.
    pub ice_restart_connect_ms: Option<f64>,
}

impl CallStats {
    /// Recomputes the MOS estimate from RTT, jitter and loss.
    pub fn update_mos(&mut self) {
        if let Some(rtt) = self.rtt_ms {
            self.mos = Some(quality::mos(QualitySample {
                rtt_ms: rtt,
                jitter_ms: self.jitter_ms.unwrap_or(0.0),
                loss: self.loss.unwrap_or(0.0),
            }));
        }
    }
}

/// Stats shared between a session's task and its readers.
#[derive(Debug, Clone, Default)]
pub struct SharedStats(Arc<Mutex<CallStats>>);

impl SharedStats {
    /// Fresh stats in state `new`.
    pub fn new() -> Self {
        let s = Self::default();
        s.lock().state = "new".into();
        s
    }

    /// Locks for update; a panicked writer does not poison readers.
    pub fn lock(&self) -> MutexGuard<'_, CallStats> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the current stats.
    pub fn snapshot(&self) -> CallStats {
        self.lock().clone()
    }
}

/// OpenMetrics lines for the calls (gauges labelled by call id), to go
/// before the `# EOF` of `/metrics`. Ended calls are left out.
pub fn render_metrics(cart: &str, calls: &[(String, CallStats)]) -> String {
    use std::fmt::Write;
    let live: Vec<_> = calls
        .iter()
        .filter(|(_, s)| !matches!(s.state.as_str(), "closed" | "failed"))
        .collect();
    let cart = escape(cart);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# TYPE telecart_calls_active gauge\n# HELP telecart_calls_active WebRTC calls in progress.\ntelecart_calls_active{{cart=\"{cart}\"}} {}",
        live.len()
    );
    type Field = fn(&CallStats) -> Option<f64>;
    let fields: [(&str, &str, Field); 11] = [
        ("call_rtt_seconds", "Round-trip time.", |s| {
            s.rtt_ms.map(|v| v / 1e3)
        }),
        (
            "call_jitter_seconds",
            "Jitter the far end reports for our video.",
            |s| s.jitter_ms.map(|v| v / 1e3),
        ),
        (
            "call_loss_ratio",
            "Fraction of our packets the far end lost.",
            |s| s.loss,
        ),
        (
            "call_mos",
            "MOS estimate (1 to 4.5) from RTT, jitter and loss.",
            |s| s.mos,
        ),
        (
            "call_bandwidth_estimate_bps",
            "TWCC bandwidth estimate.",
            |s| s.bwe_bps.map(|v| v as f64),
        ),
        (
            "call_video_target_bps",
            "Bitrate asked of the video encoder.",
            |s| s.encoder_target_bps.map(f64::from),
        ),
        (
            "call_video_frames_sent",
            "Video frames sent in the call.",
            |s| Some(s.video_frames_sent as f64),
        ),
        ("call_nacks", "NACKs received in the call.", |s| {
            Some(s.nacks as f64)
        }),
        (
            "call_playout_delay_seconds",
            "Caller's audio held in the jitter buffer ahead of the speaker.",
            |s| s.playout_delay_ms.map(|v| v / 1e3),
        ),
        (
            "call_playout_late_packets",
            "Caller's audio packets that came after their turn to play.",
            |s| Some(s.playout_late_packets as f64),
        ),
        (
            "call_playout_lost_packets",
            "Caller's audio packets missing at their turn to play (concealed).",
            |s| Some(s.playout_lost_packets as f64),
        ),
    ];
    for (name, help, get) in fields {
        let _ = writeln!(
            out,
            "# TYPE telecart_{name} gauge\n# HELP telecart_{name} {help}"
        );
        for (id, s) in &live {
            if let Some(v) = get(s) {
                let _ = writeln!(
                    out,
                    "telecart_{name}{{cart=\"{cart}\",call=\"{}\"}} {v}",
                    escape(id)
                );
            }
        }
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_list_live_calls_only() {
        let live = CallStats {
            state: "connected".into(),
            rtt_ms: Some(20.0),
            mos: Some(4.3),
            ..Default::default()
        };
        let ended = CallStats {
            state: "closed".into(),
            ..Default::default()
        };
        let text = render_metrics("c\"1", &[("a".into(), live), ("b".into(), ended)]);
        assert!(
            text.contains("telecart_calls_active{cart=\"c\\\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("telecart_call_rtt_seconds{cart=\"c\\\"1\",call=\"a\"} 0.02\n"),
            "{text}"
        );
        assert!(text.contains("telecart_call_mos{cart=\"c\\\"1\",call=\"a\"} 4.3\n"));
        assert!(!text.contains("call=\"b\""));
    }

    #[test]
    fn mos_follows_rtt_jitter_and_loss() {
        let stats = SharedStats::new();
        assert_eq!(stats.snapshot().state, "new");
        let mut s = stats.lock();
        s.update_mos();
        assert_eq!(s.mos, None, "no MOS before an RTT is known");
        s.rtt_ms = Some(2.0);
        s.jitter_ms = Some(1.0);
        s.loss = Some(0.0);
        s.update_mos();
        let good = s.mos.unwrap();
        s.loss = Some(0.05);
        s.update_mos();
        assert!(s.mos.unwrap() < good);
    }
}
