//! Prometheus/OpenMetrics text for `/metrics`, read from the pipeline status at
//! scrape time so that the status page and the metrics can never disagree.

use crate::pipeline::{CameraState, Pipeline, PipelineStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::time::Instant;

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
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}
