//! Capture → encode → send, one thread per stage, drop-oldest queues between.
//!
//! Capture and encoding are blocking and CPU-bound, so they run on plain
//! threads rather than in the async runtime; senders (console, WebRTC, SIP)
//! subscribe to the encoded queues from async tasks. Shutdown cascades: the
//! stop flag ends the capture threads, whose publishers close the raw queues,
//! which ends the encoders, whose publishers close the encoded queues.

use crate::bus::{Bus, Publisher, bus};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use telecart_audio::capture::NoiseSuppressor;
use telecart_audio::{CaptureChain, CaptureSettings, FarEndReference, MuteControl};
use telecart_cart::privacy::{PrivacyGate, PrivacySwitch};
use telecart_transcribe::CaptionBurner;

use crate::overlay::CaptionOverlay;
use telecart_codec::{AudioEncoder, EncoderSettings, OpusEncoder, VideoEncoder};
use telecart_core::config::{Config, NoiseSuppressorChoice, VideoSource};
use telecart_core::{AudioFrame, CaptureTime, EncodedAudio, EncodedVideo, VideoFrame};
use telecart_devices::{AudioCapture, CameraStatus, DeviceError, VideoCapture};
use tracing::{debug, error, info, warn};

/// What senders may ask of the video encoder while it runs.
#[derive(Debug)]
pub struct EncoderControl {
    keyframe_requested: AtomicBool,
    target_bitrate_bps: AtomicU32,
    min_bitrate_bps: u32,
    max_bitrate_bps: u32,
}

impl EncoderControl {
    fn new(start_bps: u32, min_bps: u32, max_bps: u32) -> Self {
        Self {
            keyframe_requested: AtomicBool::new(false),
            target_bitrate_bps: AtomicU32::new(start_bps.clamp(min_bps, max_bps)),
            min_bitrate_bps: min_bps,
            max_bitrate_bps: max_bps,
        }
    }

    /// The next encoded frame will be an IDR (PLI/FIR, a new viewer, a lost frame).
    pub fn request_keyframe(&self) {
        self.keyframe_requested.store(true, Ordering::Relaxed);
    }

    /// Asks for a new bitrate, clamped to the configured bounds; returns what was set.
    pub fn set_target_bitrate(&self, bps: u32) -> u32 {
        let bps = bps.clamp(self.min_bitrate_bps, self.max_bitrate_bps);
        self.target_bitrate_bps.store(bps, Ordering::Relaxed);
        bps
    }

    /// The bitrate the encoder is asked to hold.
    pub fn target_bitrate(&self) -> u32 {
        self.target_bitrate_bps.load(Ordering::Relaxed)
    }

    fn take_keyframe_request(&self) -> bool {
        self.keyframe_requested.swap(false, Ordering::Relaxed)
    }
}

/// State of the camera as the console shows it.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Not opened yet.
    #[default]
    Starting,
    /// Delivering frames.
    Streaming,
    /// Gone; the error says why.
    Lost,
    /// Waiting to try again.
    Reopening,
}

/// Everything the console and metrics show about the pipeline.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PipelineStatus {
    /// Camera state.
    pub camera_state: CameraState,
    /// Device and mode, e.g. "/dev/video0 YUYV 1280x720 @ 30 fps".
    pub camera: String,
    /// Last camera error, if it was lost.
    pub camera_error: Option<String>,
    /// Times the camera was lost and came back.
    pub camera_reopens: u64,
    /// Encoder in use.
    pub encoder: String,
    /// Bitrate the encoder holds now.
    pub encoder_bitrate_bps: u32,
    /// Microphone in use.
    pub microphone: String,
    /// Frames captured.
    pub frames_captured: u64,
    /// Frames encoded.
    pub frames_encoded: u64,
    /// Key frames encoded.
    pub keyframes: u64,
    /// Bytes of H.264 produced.
    pub encoded_bytes: u64,
    /// Frames skipped by the encoder because it fell behind the camera.
    pub frames_dropped_before_encode: u64,
    /// Frames the encoder saw while nobody was watching (not encoded, to save CPU).
    pub frames_idle: u64,
    /// Encode time of the last frame, in milliseconds.
    pub encode_ms_last: f64,
    /// Encode time, moving average, in milliseconds.
    pub encode_ms_avg: f64,
    /// Capture to encoded, last frame, in milliseconds.
    pub capture_to_encoded_ms_last: f64,
    /// Audio blocks captured.
    pub audio_blocks_captured: u64,
    /// Opus packets produced.
    pub audio_packets_encoded: u64,
    /// Errors from capture devices (each also logged).
    pub device_errors: u64,
    /// Counters of the microphone's processing (echo, noise, gain, mute, clipping, silence).
    pub audio_processing: AudioProcessingStatus,
    /// Errors from encoders (each also logged).
    pub encode_errors: u64,
}

/// The capture chain's counters as the status page and metrics show them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AudioProcessingStatus {
    /// 10 ms frames produced (48 kHz mono).
    pub frames: u64,
    /// Device blocks at another rate than configured (resampled from what came).
    pub rate_mismatch_blocks: u64,
    /// Samples at full scale.
    pub clipped_samples: u64,
    /// 10 ms units of input silence (below -70 dBFS).
    pub silent_frames: u64,
    /// Stretches of a minute or more of input silence (a dead microphone).
    pub long_silences: u64,
    /// Frames silenced by mute.
    pub muted_frames: u64,
    /// Far-end reference frames dropped (the speaker side ran ahead of capture).
    pub far_end_dropped: u64,
    /// Echo return loss enhancement the echo canceller reports, dB.
    pub erle_db: Option<f64>,
    /// Echo path delay the echo canceller found, ms.
    pub echo_delay_ms: Option<i32>,
}

impl From<telecart_audio::CaptureStats> for AudioProcessingStatus {
    fn from(s: telecart_audio::CaptureStats) -> Self {
        Self {
            frames: s.frames_out,
            rate_mismatch_blocks: s.rate_mismatch_blocks,
            clipped_samples: s.clipped_samples,
            silent_frames: s.silent_frames,
            long_silences: s.long_silences,
            muted_frames: s.muted_frames,
            far_end_dropped: s.far_end_dropped,
            erle_db: s.erle_db,
            echo_delay_ms: s.echo_delay_ms,
        }
    }
}

/// A running pipeline. Dropping it stops the threads.
#[derive(Debug)]
pub struct Pipeline {
    /// Raw pictures from the camera (I420).
    pub raw_video: Bus<VideoFrame>,
    /// H.264 access units.
    pub video: Bus<EncodedVideo>,
    /// The cleaned microphone (echo cancelled, noise suppressed, levelled): 10 ms frames,
    /// 48 kHz mono, whatever the device's rate and channels.
    pub raw_audio: Bus<AudioFrame>,
    /// The same cleaned microphone at 16 kHz mono, for transcription (silent while muted).
    pub transcription_audio: Bus<AudioFrame>,
    /// Mutes the microphone from the next 10 ms frame on (privacy switch, console, far end).
    pub mute: MuteControl,
    /// Where the speaker's playback pushes what it plays, for the echo canceller.
    pub far_end: FarEndReference,
    /// Opus packets.
    pub audio: Bus<EncodedAudio>,
    /// Key frame and bitrate requests to the video encoder.
    pub encoder: Arc<EncoderControl>,
    /// The camera's controls (pan, tilt, zoom, …), when the source has any.
    pub camera_controls: Option<telecart_devices::CameraControls>,
    /// Captions burned into the encoded video when a viewer has no data channel.
    pub captions_overlay: Arc<CaptionOverlay>,
    status: Arc<Mutex<PipelineStatus>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Wall-clock now as a capture time.
pub fn now() -> CaptureTime {
    CaptureTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
    )
}

fn lock(status: &Mutex<PipelineStatus>) -> MutexGuard<'_, PipelineStatus> {
    // A panicking stage must not take the console down with it.
    status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pipeline {
    /// Opens the devices and encoders the config names and starts the threads.
    /// Every frame and audio block passes a gate on `privacy` before anyone
    /// (encoder, snapshot, call) sees it.
    pub fn start(config: &Config, privacy: PrivacySwitch) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(PipelineStatus::default()));
        let v = &config.video;
        let control = Arc::new(EncoderControl::new(
            v.bitrate_kbps * 1000,
            v.min_bitrate_kbps * 1000,
            v.max_bitrate_kbps * 1000,
        ));

        let (raw_video_tx, raw_video) = bus(config.pipeline.video_queue_frames);
        // Encoded video is small and losing one breaks decoding until the next
        // IDR, so senders get more slack than the raw queue.
        let (video_tx, video) = bus(config.pipeline.video_queue_frames.max(8) * 2);
        let (raw_audio_tx, raw_audio) = bus(config.pipeline.audio_queue_blocks);
        let (audio_tx, audio) = bus(config.pipeline.audio_queue_blocks);

        let camera = open_camera(config, status.clone(), stop.clone())?;
        let camera_controls = camera.control_handle();
        let settings = EncoderSettings {
            width: v.width,
            height: v.height,
            fps: v.fps,
            bitrate_bps: control.target_bitrate(),
            keyframe_interval_frames: v.keyframe_interval_s * v.fps,
            profile: v.profile,
        };
        let encoder = telecart_codec::open_video_encoder(v.encoder, settings)?;
        info!(encoder = %encoder.name(), "video encoder ready");
        let microphone = telecart_devices::open_microphone(&config.audio)?;
        info!(microphone = %microphone.description(), "microphone ready");
        let mute = MuteControl::default();
        let processing = CaptureChain::new(capture_settings(config), mute.clone())?;
        let far_end = processing.far_end();
        let (transcription_tx, transcription_audio) =
            bus(config.pipeline.audio_queue_blocks.max(4) * 3);
        // The capture chain hands out 48 kHz mono whatever the device gives.
        let opus = OpusEncoder::new(1, config.audio.opus_bitrate_kbps * 1000)?;
        {
            let mut s = lock(&status);
            s.encoder = encoder.name();
            s.encoder_bitrate_bps = control.target_bitrate();
            s.microphone = microphone.description();
        }

        let captions_overlay = CaptionOverlay::new(config.captions.burn_in);
        let raw_video_for_encoder = raw_video.clone();
        let raw_audio_for_encoder = raw_audio.clone();
        let threads = vec![
            spawn("video-capture", {
                let (status, stop, gate) = (status.clone(), stop.clone(), privacy.gate());
                move || video_capture_loop(camera, gate, raw_video_tx, &status, &stop)
            })?,
            spawn("video-encode", {
                let (status, control) = (status.clone(), control.clone());
                let burn_in = CaptionsOnPicture {
                    overlay: captions_overlay.clone(),
                    privacy: privacy.clone(),
                    burner: None,
                };
                move || {
                    video_encode_loop(
                        encoder,
                        raw_video_for_encoder,
                        video_tx,
                        &control,
                        &status,
                        burn_in,
                    )
                }
            })?,
            spawn("audio-capture", {
                let (status, stop, gate) = (status.clone(), stop.clone(), privacy.gate());
                move || {
                    audio_capture_loop(
                        microphone,
                        gate,
                        processing,
                        raw_audio_tx,
                        transcription_tx,
                        &status,
                        &stop,
                    )
                }
            })?,
            spawn("audio-encode", {
                let status = status.clone();
                move || audio_encode_loop(Box::new(opus), raw_audio_for_encoder, audio_tx, &status)
            })?,
        ];

        Ok(Self {
            raw_video,
            video,
            raw_audio,
            transcription_audio,
            mute,
            far_end,
            audio,
            encoder: control,
            camera_controls,
            captions_overlay,
            status,
            stop,
            threads,
        })
    }

    /// A copy of the current status.
    pub fn status(&self) -> PipelineStatus {
        let mut s = lock(&self.status).clone();
        s.frames_dropped_before_encode = self.raw_video.counters().dropped();
        s
    }

    /// Asks capture to stop; the queues then drain and close in order.
    /// Dropping the pipeline also waits for the threads to end.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("stage").to_string();
            if t.join().is_err() {
                error!(stage = %name, "pipeline stage panicked");
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> anyhow::Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new().name(name.into()).spawn(f)?)
}

fn open_camera(
    config: &Config,
    status: Arc<Mutex<PipelineStatus>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Box<dyn VideoCapture>> {
    let v = &config.video;
    let pattern = telecart_stamp::TestPattern::new(v.width, v.height)
        .map_err(|e| anyhow::anyhow!("test pattern: {e}"))?;
    let renderer = move |sequence, time| pattern.render(sequence, time);
    let on_status = move |event: &CameraStatus| {
        let mut s = lock(&status);
        match event {
            CameraStatus::Streaming { description } => {
                info!(camera = %description, "camera streaming");
                if s.camera_state != CameraState::Starting {
                    s.camera_reopens += 1;
                }
                s.camera_state = CameraState::Streaming;
                s.camera = description.clone();
                s.camera_error = None;
            }
            CameraStatus::Lost { error } => {
                warn!(%error, "camera lost");
                s.camera_state = CameraState::Lost;
                s.camera_error = Some(error.to_string());
            }
            CameraStatus::Reopening { attempt, delay, .. } => {
                debug!(attempt, ?delay, "camera: reopening");
                s.camera_state = CameraState::Reopening;
            }
            other => debug!(?other, "camera status"),
        }
    };
    if v.source == VideoSource::TestPattern {
        info!(
            width = v.width,
            height = v.height,
            fps = v.fps,
            "camera: test pattern"
        );
    }
    Ok(telecart_devices::open_camera(v, renderer, on_status, stop)?)
}

fn video_capture_loop(
    mut camera: Box<dyn VideoCapture>,
    mut privacy: PrivacyGate,
    out: Publisher<VideoFrame>,
    status: &Mutex<PipelineStatus>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match camera.next_frame() {
            Ok(frame) => {
                {
                    let mut s = lock(status);
                    s.frames_captured += 1;
                    if s.camera_state == CameraState::Starting {
                        s.camera_state = CameraState::Streaming;
                        s.camera = camera.description();
                    }
                }
                out.publish(privacy.video(frame));
            }
            Err(DeviceError::Stopped) => break,
            Err(e) => {
                // The reconnecting camera retries on its own; an error here is
                // one it could not absorb, so slow down rather than spin.
                error!(error = %e, "video capture failed");
                lock(status).device_errors += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    debug!("video capture stopped");
}

/// The encoder thread's part of burned-in captions.
struct CaptionsOnPicture {
    overlay: Arc<CaptionOverlay>,
    privacy: PrivacySwitch,
    /// Made on first use (it loads the font); `Err` once it failed, so it is not retried.
    burner: Option<Result<CaptionBurner, ()>>,
}

impl CaptionsOnPicture {
    /// The frame with the current caption on it, or None to encode the frame as it is.
    fn burn(&mut self, frame: &VideoFrame) -> Option<VideoFrame> {
        if self.privacy.is_on() {
            // Nothing said before privacy stays on the slate.
            self.overlay.clear();
            return None;
        }
        let caption = self.overlay.current(Instant::now())?;
        let burner = self.burner.get_or_insert_with(|| {
            CaptionBurner::new().map_err(|e| error!(error = %e, "captions cannot be burned in"))
        });
        let burner = burner.as_mut().ok()?;
        let mut copy = frame.clone();
        burner.burn(&mut copy, &caption);
        Some(copy)
    }
}

fn video_encode_loop(
    mut encoder: Box<dyn VideoEncoder>,
    input: Bus<VideoFrame>,
    out: Publisher<EncodedVideo>,
    control: &EncoderControl,
    status: &Mutex<PipelineStatus>,
    mut captions: CaptionsOnPicture,
) {
    let Some(mut frames) = input.subscribe() else {
        return;
    };
    let mut bitrate = encoder.settings().bitrate_bps;
    // Whoever subscribes next must start on an IDR.
    let mut keyframe_due = true;
    while let Some(delivery) = frames.blocking_recv() {
        if out.consumers() == 0 {
            // Nobody is watching: save the CPU (and the battery).
            keyframe_due = true;
            lock(status).frames_idle += 1;
            continue;
        }
        if control.take_keyframe_request() || keyframe_due {
            encoder.request_keyframe();
            keyframe_due = false;
        }
        let target = control.target_bitrate();
        if target != bitrate {
            if let Err(e) = encoder.set_bitrate(target) {
                warn!(error = %e, target, "encoder refused a bitrate change");
            }
            // Asked once per target: a refusal is not retried frame after frame.
            bitrate = target;
        }
        let burned = captions.burn(&delivery.item);
        let frame = burned.as_ref().unwrap_or(&delivery.item);
        let started = Instant::now();
        let result = encoder.encode(frame);
        let encode_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(Some(unit)) => {
                let mut s = lock(status);
                s.frames_encoded += 1;
                s.keyframes += u64::from(unit.keyframe);
                s.encoded_bytes += unit.data.len() as u64;
                s.encode_ms_last = encode_ms;
                s.encode_ms_avg = if s.frames_encoded == 1 {
                    encode_ms
                } else {
                    0.95 * s.encode_ms_avg + 0.05 * encode_ms
                };
                s.capture_to_encoded_ms_last = now().micros_since(unit.capture_time) as f64 / 1e3;
                s.encoder_bitrate_bps = encoder.settings().bitrate_bps;
                drop(s);
                out.publish(unit);
            }
            Ok(None) => {}
            Err(e) => {
                error!(error = %e, sequence = frame.sequence, "video encode failed");
                lock(status).encode_errors += 1;
                keyframe_due = true;
            }
        }
    }
    debug!("video encoder stopped");
}

/// What the `[audio_processing]` section asks of the capture chain.
fn capture_settings(config: &Config) -> CaptureSettings {
    let p = &config.audio_processing;
    CaptureSettings {
        high_pass: p.high_pass,
        echo_cancellation: p.echo_cancellation,
        noise_suppression: match p.noise_suppression {
            NoiseSuppressorChoice::Rnnoise => NoiseSuppressor::Rnnoise,
            NoiseSuppressorChoice::Webrtc => NoiseSuppressor::Webrtc,
            NoiseSuppressorChoice::Off => NoiseSuppressor::Off,
        },
        automatic_gain: p.automatic_gain,
        max_gain_db: p.max_gain_db,
        device_rate: config.audio.sample_rate,
        transcription_tap: p.transcription_tap,
    }
}

fn audio_capture_loop(
    mut microphone: Box<dyn AudioCapture>,
    privacy: PrivacyGate,
    mut processing: CaptureChain,
    out: Publisher<AudioFrame>,
    transcription: Publisher<AudioFrame>,
    status: &Mutex<PipelineStatus>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match microphone.read() {
            Ok(mut block) => {
                lock(status).audio_blocks_captured += 1;
                // Privacy silences the microphone before any processing: the echo
                // canceller, encoder and transcription tap never hear the room.
                privacy.audio(&mut block);
                match processing.process(&block) {
                    Ok(cleaned) => {
                        for frame in cleaned.frames {
                            out.publish(frame);
                        }
                        for frame in cleaned.transcription {
                            transcription.publish(frame);
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "audio processing refused a block");
                        lock(status).device_errors += 1;
                    }
                }
                lock(status).audio_processing = processing.stats().into();
            }
            Err(DeviceError::Stopped) => break,
            Err(e) => {
                error!(error = %e, "audio capture failed");
                lock(status).device_errors += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    debug!("audio capture stopped");
}

fn audio_encode_loop(
    mut encoder: Box<dyn AudioEncoder>,
    input: Bus<AudioFrame>,
    out: Publisher<EncodedAudio>,
    status: &Mutex<PipelineStatus>,
) {
    let Some(mut blocks) = input.subscribe() else {
        return;
    };
    while let Some(delivery) = blocks.blocking_recv() {
        if out.consumers() == 0 {
            continue;
        }
        match encoder.encode(&delivery.item) {
            Ok(packets) => {
                lock(status).audio_packets_encoded += packets.len() as u64;
                for p in packets {
                    out.publish(p);
                }
            }
            Err(e) => {
                error!(error = %e, "audio encode failed");
                lock(status).encode_errors += 1;
            }
        }
    }
    debug!("audio encoder stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;
    use telecart_core::config::BurnIn;
    use telecart_transcribe::{Caption, Side};

    /// Mean luma inside the caption box of the next `frames` decoded pictures.
    fn caption_box_luma(pipeline: &Pipeline, frames: usize) -> Vec<f64> {
        let mut units = pipeline.video.subscribe().unwrap();
        let mut decoder = Decoder::new().unwrap();
        let area = CaptionBurner::caption_box(320, 240, 1);
        let mut out = Vec::new();
        let mut started = false;
        while out.len() < frames {
            let unit = units.blocking_recv().unwrap().item;
            started |= unit.keyframe;
            if !started {
                continue;
            }
            let Some(picture) = decoder.decode(&unit.data).unwrap() else {
                continue;
            };
            let (stride, _, _) = picture.strides();
            let y = picture.y();
            let mut sum = 0u64;
            for row in area.y..area.y + area.height {
                for col in area.x..area.x + area.width {
                    sum += u64::from(y[row as usize * stride + col as usize]);
                }
            }
            out.push(sum as f64 / f64::from(area.width * area.height));
        }
        out
    }

    #[test]
    fn captions_are_burned_into_the_encoded_video_only_while_wanted_and_never_on_the_slate() {
        let mut config = Config::default();
        config.video.width = 320;
        config.video.height = 240;
        config.video.fps = 30;
        config.captions.burn_in = BurnIn::Sip;
        let privacy = PrivacySwitch::new();
        let pipeline = Pipeline::start(&config, privacy.clone()).unwrap();
        let caption = Caption {
            id: 7,
            side: Side::Cart,
            text: "Chest pain since last night".into(),
            is_final: true,
            start: CaptureTime(0),
            end: CaptureTime(0),
            start_ms: 0,
            end_ms: 0,
            highlights: Vec::new(),
            decode_time: Duration::ZERO,
        };
        let plain = caption_box_luma(&pipeline, 5);
        // Shown, but no call wants it yet: the picture is untouched.
        pipeline.captions_overlay.show(&caption, Instant::now());
        let unwanted = caption_box_luma(&pipeline, 5);
        let sip_call = pipeline.captions_overlay.require();
        pipeline.captions_overlay.show(&caption, Instant::now());
        let burned = caption_box_luma(&pipeline, 5);
        // The box is darkened under the text: far darker than the test pattern there.
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            mean(&burned) + 20.0 < mean(&plain),
            "burned {burned:?} plain {plain:?}"
        );
        assert!(
            (mean(&unwanted) - mean(&plain)).abs() < 10.0,
            "unwanted {unwanted:?} plain {plain:?}"
        );
        // Privacy: the slate goes out bare, and the caption is gone for good.
        privacy.set(true);
        let slate = telecart_cart::privacy::slate(320, 240);
        let area = CaptionBurner::caption_box(320, 240, 1);
        let slate_box = (area.y..area.y + area.height)
            .flat_map(|r| (area.x..area.x + area.width).map(move |c| (r, c)))
            .map(|(r, c)| f64::from(slate.data[(r * 320 + c) as usize]))
            .sum::<f64>()
            / f64::from(area.width * area.height);
        let during = caption_box_luma(&pipeline, 10);
        let last = during[during.len() - 3..].to_vec();
        assert!(
            last.iter().all(|l| (l - slate_box).abs() < 6.0),
            "slate box {slate_box}, got {during:?}"
        );
        privacy.set(false);
        assert!(pipeline.captions_overlay.current(Instant::now()).is_none());
        drop(sip_call);
    }
}
