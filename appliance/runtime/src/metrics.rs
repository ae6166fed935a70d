//! Prometheus/OpenMetrics text for `/metrics`, read from the pipeline status at
//! scrape time so that the status page and the metrics can never disagree.

use crate::pipeline::{CameraState, Pipeline, PipelineStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use telecart_audio::JitterStats;
use telecart_sip::SipStatus;
use tokio::sync::watch;

/// What `/metrics` shows of the SIP endpoint: its status (registration, counters, the current
/// call's RTP/RTCP numbers) and the current call's jitter buffer. One handle is shared by the
/// console and the SIP endpoint's speakers; empty (no SIP series) until SIP starts.
#[derive(Clone, Debug, Default)]
pub struct SipMetrics(Arc<Mutex<SipMetricsInner>>);

#[derive(Debug, Default)]
struct SipMetricsInner {
    status: Option<watch::Receiver<SipStatus>>,
    jitter: Option<JitterStats>,
}

impl SipMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, SipMetricsInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running endpoint's status (`SipEndpoint::status`).
    pub fn watch(&self, status: watch::Receiver<SipStatus>) {
        self.lock().status = Some(status);
    }

    /// The current call's jitter buffer: set by its speaker, cleared when the speaker goes.
    pub fn jitter(&self) -> SipJitterPublisher {
        SipJitterPublisher(self.clone())
    }

    fn snapshot(&self) -> Option<(SipStatus, Option<JitterStats>)> {
        let inner = self.lock();
        let status = inner.status.as_ref()?.borrow().clone();
        Some((status, inner.jitter))
    }
}

/// Publishes one SIP call's jitter-buffer counters to [`SipMetrics`]; dropping it (the call's
/// speaker ends) takes them off `/metrics`.
#[derive(Debug)]
pub struct SipJitterPublisher(SipMetrics);

impl SipJitterPublisher {
    /// The latest counters of the call's jitter buffer.
    pub fn publish(&self, stats: JitterStats) {
        self.0.lock().jitter = Some(stats);
    }
}

impl Drop for SipJitterPublisher {
    fn drop(&mut self) {
        self.0.lock().jitter = None;
    }
}

#[derive(Debug)]
struct Scrape {
    status: PipelineStatus,
    target_bitrate_bps: u32,
    uptime_s: f64,
    raw_video_dropped: u64,
    encoded_video_dropped: u64,
    raw_audio_dropped: u64,
    log: telecart_store::sync::SyncStatus,
    cart: crate::cart::CartView,
    sip: Option<(SipStatus, Option<JitterStats>)>,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The SIP endpoint's series: registration and call counts always, and while a call is up
/// its quality under the names browser calls use, prefixed `sip_` (`telecart_sip_call_rtt_seconds`
/// beside `telecart_call_rtt_seconds`): a SIP call has no call id of the console's, and the
/// prefix keeps the two families apart in one scrape.
fn encode_sip(
    e: &mut DescriptorEncoder,
    status: &SipStatus,
    jitter: Option<&JitterStats>,
) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "sip_registered",
        "1 while the SIP endpoint is registered.",
        f64::from(u8::from(status.registration == "registered")),
    )?;
    counter(
        e,
        "sip_registrations",
        "Successful SIP registrations since start.",
        status.registrations,
    )?;
    counter(
        e,
        "sip_calls_answered",
        "SIP calls answered (incoming) or answered by the far end (the call button).",
        status.calls_answered,
    )?;
    counter(
        e,
        "sip_calls_rejected",
        "SIP calls refused (policy, busy, no common codec).",
        status.calls_rejected,
    )?;
    counter(
        e,
        "sip_bad_requests",
        "SIP requests over UDP answered 400 (unparsable, or a body shorter than its Content-Length).",
        status.bad_requests,
    )?;
    counter(
        e,
        "sip_unknown_methods",
        "SIP requests over UDP with a method the cart does not implement, answered 501.",
        status.unknown_methods,
    )?;
    let up = matches!(status.call, Some((_, "answered" | "held")));
    gauge(
        e,
        "sip_calls_active",
        "SIP calls in progress (answered or held).",
        f64::from(u8::from(up)),
    )?;
    if !up {
        return Ok(());
    }
    let m = &status.media;
    let expected = m.audio_packets_received + m.audio_packets_lost;
    let received_loss = if expected == 0 {
        0.0
    } else {
        m.audio_packets_lost as f64 / expected as f64
    };
    if let Some(rtt_ms) = m.rtt_ms {
        gauge(
            e,
            "sip_call_rtt_seconds",
            "Round-trip time (RTCP).",
            rtt_ms / 1e3,
        )?;
        // The same E-model, on the same inputs, as the call's `call_quality` record.
        let mos = telecart_webrtc::quality::mos(telecart_webrtc::quality::QualitySample {
            rtt_ms,
            jitter_ms: m.audio_jitter_ms,
            loss: received_loss,
        });
        gauge(
            e,
            "sip_call_mos",
            "MOS estimate (1 to 4.5) from RTT, the caller's audio jitter and loss.",
            mos,
        )?;
    }
    let gauges = [
        (
            "sip_call_jitter_seconds",
            "Interarrival jitter of the far end's audio (RFC 3550).",
            m.audio_jitter_ms / 1e3,
        ),
        (
            "sip_call_loss_ratio",
            "Fraction of our packets the far end reports lost (RTCP).",
            m.remote_fraction_lost,
        ),
        (
            "sip_call_received_loss_ratio",
            "Fraction of the far end's audio packets that never arrived.",
            received_loss,
        ),
    ];
    for (name, help, value) in gauges {
        gauge(e, name, help, value)?;
    }
    let counts = [
        (
            "sip_call_audio_packets_sent",
            "Audio RTP packets sent in the call.",
            m.audio_packets_sent,
        ),
        (
            "sip_call_audio_packets_received",
            "Audio RTP packets received in the call.",
            m.audio_packets_received,
        ),
        (
            "sip_call_audio_packets_lost",
            "Audio RTP packets missing (sequence gaps).",
            m.audio_packets_lost,
        ),
        (
            "sip_call_video_frames_sent",
            "Video frames sent in the call.",
            m.video_frames_sent,
        ),
        (
            "sip_call_video_packets_received",
            "Video RTP packets received in the call.",
            m.video_packets_received,
        ),
        (
            "sip_call_rtcp_received",
            "RTCP packets read (after SRTCP authentication).",
            m.rtcp_received,
        ),
        (
            "sip_call_keyframe_requests",
            "Key-frame requests (PLI, FIR, SIP INFO) received.",
            m.keyframe_requests,
        ),
        (
            "sip_call_wrong_source",
            "Datagrams from other than the negotiated address, dropped.",
            m.wrong_source,
        ),
        (
            "sip_call_srtp_auth_failures",
            "SRTP/SRTCP datagrams that did not authenticate, dropped.",
            m.srtp_auth_failures,
        ),
        (
            "sip_call_srtp_replayed",
            "SRTP/SRTCP replays, dropped.",
            m.srtp_replayed,
        ),
    ];
    // Gauges, as for browser calls: each call starts again from zero.
    for (name, help, value) in counts {
        gauge(e, name, help, value as f64)?;
    }
    if let Some(j) = jitter {
        gauge(
            e,
            "sip_call_playout_delay_seconds",
            "Caller's audio held in the jitter buffer ahead of the speaker.",
            j.playout_delay_ms / 1e3,
        )?;
        gauge(
            e,
            "sip_call_playout_target_seconds",
            "Delay the jitter buffer aims at ([audio_processing] jitter_min_ms..jitter_max_ms).",
            j.target_delay_ms / 1e3,
        )?;
        gauge(
            e,
            "sip_call_playout_late_packets",
            "Caller's audio packets that came after their turn to play.",
            j.late as f64,
        )?;
        gauge(
            e,
            "sip_call_playout_lost_packets",
            "Caller's audio packets missing at their turn to play (concealed).",
            j.lost as f64,
        )?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.status;
        gauge(
            &mut e,
            "uptime_seconds",
            "Seconds since cartd started.",
            self.uptime_s,
        )?;
        gauge(
            &mut e,
            "camera_streaming",
            "1 while the camera delivers frames.",
            f64::from(u8::from(s.camera_state == CameraState::Streaming)),
        )?;
        counter(
            &mut e,
            "camera_reopens",
            "Times the camera was lost and came back.",
            s.camera_reopens,
        )?;
        counter(
            &mut e,
            "video_frames_captured",
            "Frames captured.",
            s.frames_captured,
        )?;
        counter(
            &mut e,
            "video_frames_encoded",
            "Frames encoded.",
            s.frames_encoded,
        )?;
        counter(
            &mut e,
            "video_keyframes",
            "Key frames encoded.",
            s.keyframes,
        )?;
        counter(
            &mut e,
            "video_encoded_bytes",
            "Bytes of H.264 produced.",
            s.encoded_bytes,
        )?;
        counter(
            &mut e,
            "video_frames_dropped_raw",
            "Raw frames a consumer missed because it fell behind capture.",
            self.raw_video_dropped,
        )?;
        counter(
            &mut e,
            "video_frames_dropped_encoded",
            "Encoded frames a sender missed because it fell behind the encoder.",
            self.encoded_video_dropped,
        )?;
        counter(
            &mut e,
            "video_frames_idle",
            "Frames not encoded because nobody was watching.",
            s.frames_idle,
        )?;
        gauge(
            &mut e,
            "video_encode_ms",
            "Encode time per frame, moving average.",
            s.encode_ms_avg,
        )?;
        gauge(
            &mut e,
            "video_capture_to_encoded_ms",
            "Capture to encoded access unit, last frame.",
            s.capture_to_encoded_ms_last,
        )?;
        gauge(
            &mut e,
            "video_target_bitrate_bps",
            "Bitrate asked of the encoder.",
            f64::from(self.target_bitrate_bps),
        )?;
        counter(
            &mut e,
            "audio_blocks_captured",
            "Microphone blocks captured.",
            s.audio_blocks_captured,
        )?;
        counter(
            &mut e,
            "audio_packets_encoded",
            "Opus packets produced.",
            s.audio_packets_encoded,
        )?;
        counter(
            &mut e,
            "audio_blocks_dropped",
            "Microphone blocks a consumer missed.",
            self.raw_audio_dropped,
        )?;
        counter(
            &mut e,
            "device_errors",
            "Errors from capture devices.",
            s.device_errors,
        )?;
        counter(
            &mut e,
            "encode_errors",
            "Errors from encoders.",
            s.encode_errors,
        )?;
        for (name, help, value) in self.log.gauges() {
            // The store names its series in full; the registry adds the prefix.
            let name = name.strip_prefix("telecart_").unwrap_or(name);
            gauge(&mut e, name, help, value as f64)?;
        }
        let a = &s.audio_processing;
        for (name, help, value) in [
            (
                "audio_frames_processed",
                "10 ms microphone frames through echo cancellation and noise suppression.",
                a.frames,
            ),
            (
                "audio_rate_mismatch_blocks",
                "Microphone blocks at another rate than configured (resampled).",
                a.rate_mismatch_blocks,
            ),
            (
                "audio_clipped_samples",
                "Microphone samples at full scale.",
                a.clipped_samples,
            ),
            (
                "audio_silent_frames",
                "10 ms microphone frames of silence (below -70 dBFS).",
                a.silent_frames,
            ),
            (
                "audio_long_silences",
                "Minute-long stretches of microphone silence (a dead microphone?).",
                a.long_silences,
            ),
            (
                "audio_muted_frames",
                "Microphone frames silenced by mute.",
                a.muted_frames,
            ),
            (
                "audio_far_end_dropped",
                "Echo-canceller reference frames dropped.",
                a.far_end_dropped,
            ),
        ] {
            counter(&mut e, name, help, value)?;
        }
        if let Some(erle) = a.erle_db {
            gauge(
                &mut e,
                "audio_erle_db",
                "Echo return loss enhancement the echo canceller reports.",
                erle,
            )?;
        }
        if let Some(delay) = a.echo_delay_ms {
            gauge(
                &mut e,
                "audio_echo_delay_ms",
                "Echo path delay the echo canceller found.",
                f64::from(delay),
            )?;
        }
        let c = &self.cart;
        gauge(
            &mut e,
            "privacy",
            "1 while privacy is on (camera slate, microphone muted).",
            f64::from(u8::from(c.privacy)),
        )?;
        gauge(
            &mut e,
            "cart_faults",
            "Faults raised (names on the console).",
            c.faults.len() as f64,
        )?;
        gauge(
            &mut e,
            "cart_in_call",
            "1 while a call is dialing, ringing or up.",
            f64::from(u8::from(matches!(
                c.state,
                telecart_cart::machine::CartState::InCall
                    | telecart_cart::machine::CartState::Ringing
            ))),
        )?;
        counter(
            &mut e,
            "ptz_commands_dropped",
            "Far-end camera commands refused for flooding.",
            c.ptz_dropped,
        )?;
        if let Some((status, jitter)) = &self.sip {
            encode_sip(&mut e, status, jitter.as_ref())?;
        }
        if let telecart_board::battery::BatteryStatus::Reading(r) = &c.battery {
            gauge(
                &mut e,
                "battery_percent",
                "Battery state of charge.",
                f64::from(r.percent),
            )?;
            gauge(
                &mut e,
                "battery_charging",
                "1 while on mains power and charging.",
                f64::from(u8::from(r.charging)),
            )?;
        }
        Ok(())
    }
}

/// The OpenMetrics text of one scrape.
pub fn render(
    cart: &str,
    pipeline: &Pipeline,
    log: &crate::SessionLog,
    cart_view: &crate::cart::CartView,
    started: Instant,
    sip: &SipMetrics,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix_and_labels(
        "telecart",
        [(
            std::borrow::Cow::Borrowed("cart"),
            std::borrow::Cow::Owned(cart.to_string()),
        )]
        .into_iter(),
    );
    registry.register_collector(Box::new(Scrape {
        status: pipeline.status(),
        target_bitrate_bps: pipeline.encoder.target_bitrate(),
        uptime_s: started.elapsed().as_secs_f64(),
        raw_video_dropped: pipeline.raw_video.counters().dropped(),
        encoded_video_dropped: pipeline.video.counters().dropped(),
        raw_audio_dropped: pipeline.raw_audio.counters().dropped(),
        log: log.status(),
        cart: cart_view.clone(),
        sip: sip.snapshot(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct SipOnly(Option<(SipStatus, Option<JitterStats>)>);

    impl Collector for SipOnly {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            if let Some((status, jitter)) = &self.0 {
                encode_sip(&mut e, status, jitter.as_ref())?;
            }
            Ok(())
        }
    }

    fn scrape(sip: &SipMetrics) -> String {
        let mut registry = Registry::with_prefix_and_labels(
            "telecart",
            [(
                std::borrow::Cow::Borrowed("cart"),
                std::borrow::Cow::Borrowed("c1"),
            )]
            .into_iter(),
        );
        registry.register_collector(Box::new(SipOnly(sip.snapshot())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn sip_series_follow_the_endpoint_and_the_calls_speaker() {
        let metrics = SipMetrics::default();
        assert!(!scrape(&metrics).contains("sip_"), "no SIP, no series");
        let (tx, rx) = watch::channel(SipStatus {
            registration: "registered",
            registrations: 1,
            ..SipStatus::default()
        });
        metrics.watch(rx);
        let text = scrape(&metrics);
        assert!(
            text.contains("telecart_sip_registered{cart=\"c1\"} 1.0\n"),
            "{text}"
        );
        assert!(
            text.contains("telecart_sip_calls_active{cart=\"c1\"} 0.0\n"),
            "{text}"
        );
        assert!(
            !text.contains("sip_call_"),
            "no call, no call series: {text}"
        );

        tx.send_modify(|s| {
            s.call = Some(("sip:doctor@h".into(), "answered"));
            s.media.audio_packets_received = 95;
            s.media.audio_packets_lost = 5;
            s.media.audio_packets_sent = 120;
            s.media.audio_jitter_ms = 4.0;
            s.media.rtt_ms = Some(30.0);
        });
        let publisher = metrics.jitter();
        publisher.publish(JitterStats {
            lost: 2,
            playout_delay_ms: 60.0,
            target_delay_ms: 40.0,
            ..JitterStats::default()
        });
        let text = scrape(&metrics);
        for line in [
            "telecart_sip_calls_active{cart=\"c1\"} 1.0\n",
            "telecart_sip_call_audio_packets_received{cart=\"c1\"} 95.0\n",
            "telecart_sip_call_audio_packets_sent{cart=\"c1\"} 120.0\n",
            "telecart_sip_call_received_loss_ratio{cart=\"c1\"} 0.05\n",
            "telecart_sip_call_rtt_seconds{cart=\"c1\"} 0.03\n",
            "telecart_sip_call_jitter_seconds{cart=\"c1\"} 0.004\n",
            "telecart_sip_call_playout_delay_seconds{cart=\"c1\"} 0.06\n",
            "telecart_sip_call_playout_target_seconds{cart=\"c1\"} 0.04\n",
            "telecart_sip_call_playout_lost_packets{cart=\"c1\"} 2.0\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(
            text.contains("telecart_sip_call_mos{cart=\"c1\"} "),
            "{text}"
        );
        // The call's speaker gone: its jitter buffer leaves the scrape.
        drop(publisher);
        assert!(!scrape(&metrics).contains("sip_call_playout"));
    }
}
