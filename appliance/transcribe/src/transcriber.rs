//! The live transcriber: audio in from any thread without ever blocking, captions out.
//!
//! ```text
//!  AudioInput::push (capture / decode threads; try_send, drop-and-count when full)
//!        │ bounded queue of blocks
//!        ▼
//!  "transcribe-cut" thread: to 16 kHz mono per side, VAD, utterance cutting (segmenter)
//!        │ job queue: finals first, only the newest partial per side, bounded
//!        ▼
//!  "transcribe-N" worker threads: whisper.cpp (own state each), vocabulary highlighting
//!        │ bounded caption queue (try_send, drop-and-count)
//!        ▼
//!  Captions (the daemon: data channel, console, session log, burn-in)
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use telecart_core::{AudioFrame, CaptureTime};

use crate::engine::{DecodeConfig, Decoder, Interrupt};
use crate::resample::{MAX_CHANNELS, MonoResampler, downmix};
use crate::segmenter::{CutterConfig, Segment, UtteranceCutter};
use crate::{Caption, Side, TranscribeError, Vocabulary, WhisperModel};

/// How the live transcriber runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriberConfig {
    /// Utterance cutting.
    pub cutter: CutterConfig,
    /// whisper.cpp settings of each worker.
    pub decode: DecodeConfig,
    /// Worker threads (each decodes one utterance at a time with `decode.threads` threads).
    pub workers: usize,
    /// Audio blocks waiting for the cutter before new ones are dropped.
    pub input_queue_blocks: usize,
    /// Final utterances waiting for a worker before the oldest is dropped.
    pub max_pending_finals: usize,
    /// Captions waiting for the consumer before new ones are dropped.
    pub caption_queue: usize,
    /// Capture time the captions' `start_ms` / `end_ms` count from (the call's start).
    pub call_start: CaptureTime,
}

impl Default for TranscriberConfig {
    fn default() -> Self {
        Self {
            cutter: CutterConfig::default(),
            decode: DecodeConfig::default(),
            workers: 1,
            input_queue_blocks: 512,
            max_pending_finals: 8,
            caption_queue: 64,
            call_start: CaptureTime(0),
        }
    }
}

/// Counters of what the transcriber did and what it had to drop.
#[derive(Debug, Default)]
struct Counters {
    blocks: AtomicU64,
    blocks_dropped: AtomicU64,
    blocks_refused: AtomicU64,
    utterances: AtomicU64,
    partials_skipped: AtomicU64,
    partials_preempted: AtomicU64,
    finals_dropped: AtomicU64,
    captions: AtomicU64,
    captions_dropped: AtomicU64,
    decode_errors: AtomicU64,
}

/// A snapshot of the transcriber's counters (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TranscriberStats {
    /// Audio blocks accepted.
    pub blocks: u64,
    /// Blocks dropped because the cutter was behind (input queue full).
    pub blocks_dropped: u64,
    /// Blocks refused as malformed (rate, channels, length).
    pub blocks_refused: u64,
    /// Utterances cut (finals produced by the cutter).
    pub utterances: u64,
    /// Partials replaced by a newer one before a worker got to them.
    pub partials_skipped: u64,
    /// Partial decodes given up half-way because a final was waiting for the worker.
    pub partials_preempted: u64,
    /// Final utterances dropped because the workers were behind.
    pub finals_dropped: u64,
    /// Captions delivered.
    pub captions: u64,
    /// Captions dropped because the consumer was behind.
    pub captions_dropped: u64,
    /// Utterances whisper.cpp failed on.
    pub decode_errors: u64,
}

impl Counters {
    fn snapshot(&self) -> TranscriberStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TranscriberStats {
            blocks: get(&self.blocks),
            blocks_dropped: get(&self.blocks_dropped),
            blocks_refused: get(&self.blocks_refused),
            utterances: get(&self.utterances),
            partials_skipped: get(&self.partials_skipped),
            partials_preempted: get(&self.partials_preempted),
            finals_dropped: get(&self.finals_dropped),
            captions: get(&self.captions),
            captions_dropped: get(&self.captions_dropped),
            decode_errors: get(&self.decode_errors),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

enum Block {
    /// PCM as the pipeline carries it (any rate and channel count).
    Pcm(Side, AudioFrame),
    /// 16 kHz mono already.
    Mono16k(Side, Vec<f32>, CaptureTime),
}

/// Where audio goes in. Cheap to clone; `push` never blocks. When every clone is dropped the
/// transcriber finishes the open utterances, delivers their captions and ends.
#[derive(Clone)]
pub struct AudioInput {
    blocks: SyncSender<Block>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for AudioInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioInput").finish_non_exhaustive()
    }
}

impl AudioInput {
    /// Queues a block of one side's audio (any rate, any channel count; converted to
    /// 16 kHz mono on the transcriber's thread). Returns `false` if it was dropped because
    /// the transcriber is behind or gone.
    pub fn push(&self, side: Side, frame: AudioFrame) -> bool {
        self.send(Block::Pcm(side, frame))
    }

    /// Queues 16 kHz mono samples whose first was captured at `capture_time`.
    pub fn push_16k(&self, side: Side, samples: Vec<f32>, capture_time: CaptureTime) -> bool {
        self.send(Block::Mono16k(side, samples, capture_time))
    }

    fn send(&self, block: Block) -> bool {
        match self.blocks.try_send(block) {
            Ok(()) => {
                bump(&self.counters.blocks);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                bump(&self.counters.blocks_dropped);
                false
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> TranscriberStats {
        self.counters.snapshot()
    }
}

/// Where captions come out. Dropping it stops the transcriber (a decode in progress is
/// aborted) without waiting for its threads.
pub struct Captions {
    captions: Receiver<Caption>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Captions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captions").finish_non_exhaustive()
    }
}

impl Captions {
    /// The next caption; `None` once the transcriber has ended (all inputs dropped and
    /// everything delivered).
    pub fn recv(&self) -> Option<Caption> {
        self.captions.recv().ok()
    }

    /// The next caption within `timeout`: `Ok(None)` on timeout, `Err` once ended.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Caption>, TranscribeError> {
        match self.captions.recv_timeout(timeout) {
            Ok(c) => Ok(Some(c)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(TranscribeError::Whisper("the transcriber has ended".into()))
            }
        }
    }

    /// A caption if one is ready.
    pub fn try_recv(&self) -> Option<Caption> {
        self.captions.try_recv().ok()
    }

    /// The counters.
    pub fn stats(&self) -> TranscriberStats {
        self.counters.snapshot()
    }

    /// Waits for the transcriber's threads to end (after every input was dropped).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Captions {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Work waiting for a decoder.
#[derive(Default)]
struct Jobs {
    finals: VecDeque<Segment>,
    /// At most one partial per side: a newer one replaces the older.
    partials: Vec<Segment>,
    /// The interrupts of workers decoding a partial right now: a final preempts them, since
    /// waiting for a partial to finish adds its whole decode time to the final's latency.
    decoding_partials: Vec<Arc<Interrupt>>,
    closed: bool,
}

struct JobQueue {
    jobs: Mutex<Jobs>,
    ready: Condvar,
    max_finals: usize,
    counters: Arc<Counters>,
}

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, segment: Segment) {
        let mut jobs = self.lock();
        if segment.is_final {
            bump(&self.counters.utterances);
            let before = jobs.partials.len();
            // The final makes this side's pending partial (of this or an older utterance) stale.
            jobs.partials.retain(|p| p.side != segment.side);
            for _ in jobs.partials.len()..before {
                bump(&self.counters.partials_skipped);
            }
            if jobs.finals.len() >= self.max_finals {
                jobs.finals.pop_front();
                bump(&self.counters.finals_dropped);
            }
            jobs.finals.push_back(segment);
            for worker in &jobs.decoding_partials {
                worker.preempt();
            }
        } else {
            if let Some(old) = jobs.partials.iter_mut().find(|p| p.side == segment.side) {
                *old = segment;
                bump(&self.counters.partials_skipped);
            } else {
                jobs.partials.push(segment);
            }
        }
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next job (finals first) for the worker interrupted by `worker`; `None` when closed
    /// and drained or when stopping. A worker given a partial stays preemptible until
    /// [`JobQueue::done`].
    fn pop(&self, stop: &AtomicBool, worker: &Arc<Interrupt>) -> Option<Segment> {
        let mut jobs = self.lock();
        jobs.decoding_partials.retain(|w| !Arc::ptr_eq(w, worker));
        worker.clear();
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(f) = jobs.finals.pop_front() {
                return Some(f);
            }
            if !jobs.partials.is_empty() {
                jobs.decoding_partials.push(worker.clone());
                return Some(jobs.partials.remove(0));
            }
            if jobs.closed {
                return None;
            }
            jobs = self
                .ready
                .wait_timeout(jobs, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Ids already given a final, so that a late partial (decoded by a slower worker) is not
/// shown after its final.
#[derive(Default)]
struct Finished {
    ids: VecDeque<u64>,
}

impl Finished {
    fn insert(&mut self, id: u64) {
        if self.ids.len() >= 256 {
            self.ids.pop_front();
        }
        self.ids.push_back(id);
    }
    fn contains(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }
}

/// The live transcriber.
#[derive(Debug)]
pub struct Transcriber;

impl Transcriber {
    /// Starts the cutter and the workers on `model`. Errors (a bad setting, no memory for a
    /// decoding state) are for the caller to log: the call goes on without captions.
    pub fn start(
        model: &WhisperModel,
        config: TranscriberConfig,
    ) -> Result<(AudioInput, Captions), TranscribeError> {
        if !(1..=8).contains(&config.workers) {
            return Err(TranscribeError::Config(format!(
                "workers must be 1 to 8, got {}",
                config.workers
            )));
        }
        if config.input_queue_blocks == 0
            || config.caption_queue == 0
            || config.max_pending_finals == 0
        {
            return Err(TranscribeError::Config(
                "queue sizes must be positive".into(),
            ));
        }
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let decoders = (0..config.workers)
            .map(|_| {
                let interrupt = Arc::new(Interrupt::new(stop.clone()));
                Decoder::with_interrupt(model, config.decode.clone(), interrupt.clone())
                    .map(|decoder| (decoder, interrupt))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (block_tx, block_rx) =
            std::sync::mpsc::sync_channel::<Block>(config.input_queue_blocks);
        let (caption_tx, caption_rx) =
            std::sync::mpsc::sync_channel::<Caption>(config.caption_queue);
        let queue = Arc::new(JobQueue {
            jobs: Mutex::new(Jobs::default()),
            ready: Condvar::new(),
            max_finals: config.max_pending_finals,
            counters: counters.clone(),
        });
        let vocabulary = Arc::new(Vocabulary::bundled());
        let finished = Arc::new(Mutex::new(Finished::default()));
        let mut threads = Vec::new();

        let spawn_error =
            |e: std::io::Error| TranscribeError::Whisper(format!("cannot start a thread: {e}"));
        {
            let queue = queue.clone();
            let counters = counters.clone();
            let stop = stop.clone();
            let cutter = config.cutter;
            threads.push(
                std::thread::Builder::new()
                    .name("transcribe-cut".into())
                    .spawn(move || cut_loop(block_rx, &queue, &counters, &stop, cutter))
                    .map_err(spawn_error)?,
            );
        }
        for (n, (mut decoder, interrupt)) in decoders.into_iter().enumerate() {
            let queue = queue.clone();
            let counters = counters.clone();
            let stop = stop.clone();
            let caption_tx = caption_tx.clone();
            let vocabulary = vocabulary.clone();
            let finished = finished.clone();
            let call_start = config.call_start;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("transcribe-{n}"))
                    .spawn(move || {
                        while let Some(segment) = queue.pop(&stop, &interrupt) {
                            let caption = match decode(&mut decoder, &vocabulary, &segment, call_start) {
                                Ok(c) => c,
                                Err(TranscribeError::Interrupted) => {
                                    if !segment.is_final {
                                        bump(&counters.partials_preempted);
                                    }
                                    continue;
                                }
                                Err(e) => {
                                    bump(&counters.decode_errors);
                                    tracing::warn!(error = %e, id = segment.id, "utterance not transcribed");
                                    continue;
                                }
                            };
                            {
                                let mut finished = finished.lock().unwrap_or_else(PoisonError::into_inner);
                                if finished.contains(caption.id) {
                                    continue;
                                }
                                if caption.is_final {
                                    finished.insert(caption.id);
                                }
                            }
                            if caption.text.is_empty() && !caption.is_final {
                                continue;
                            }
                            match caption_tx.try_send(caption) {
                                Ok(()) => bump(&counters.captions),
                                Err(TrySendError::Full(_)) => bump(&counters.captions_dropped),
                                Err(TrySendError::Disconnected(_)) => return,
                            }
                        }
                    })
                    .map_err(spawn_error)?,
            );
        }
        Ok((
            AudioInput {
                blocks: block_tx,
                counters: counters.clone(),
            },
            Captions {
                captions: caption_rx,
                counters,
                stop,
                threads,
            },
        ))
    }
}

fn ms_since(t: CaptureTime, origin: CaptureTime) -> u64 {
    t.micros_since(origin) / 1000
}

/// Transcribes one segment into a caption.
pub(crate) fn decode(
    decoder: &mut Decoder,
    vocabulary: &Vocabulary,
    segment: &Segment,
    call_start: CaptureTime,
) -> Result<Caption, TranscribeError> {
    let began = Instant::now();
    let text = if segment.is_final {
        decoder.transcribe(&segment.samples)?
    } else {
        decoder.transcribe_partial(&segment.samples)?
    };
    let decode_time = began.elapsed();
    Ok(Caption {
        id: segment.id,
        side: segment.side,
        highlights: vocabulary.highlight(&text),
        text,
        is_final: segment.is_final,
        start: segment.start,
        end: segment.end,
        start_ms: ms_since(segment.start, call_start),
        end_ms: ms_since(segment.end, call_start),
        decode_time,
    })
}

/// Per-side conversion and cutting.
struct SideState {
    resampler: Option<MonoResampler>,
    cutter: UtteranceCutter,
}

fn cut_loop(
    blocks: Receiver<Block>,
    queue: &JobQueue,
    counters: &Counters,
    stop: &AtomicBool,
    cutter: CutterConfig,
) {
    let mut sides = [Side::Cart, Side::Remote].map(|side| SideState {
        resampler: None,
        cutter: UtteranceCutter::new(side, cutter),
    });
    let index = |side: Side| usize::from(side == Side::Remote);
    while let Ok(block) = blocks.recv() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (side, samples, time) = match block {
            Block::Mono16k(side, samples, time) => (side, samples, time),
            Block::Pcm(side, frame) => {
                let state = &mut sides[index(side)];
                match to_16k_mono(&mut state.resampler, &frame) {
                    Ok((samples, time)) => (side, samples, time),
                    Err(e) => {
                        let refused = counters.blocks_refused.fetch_add(1, Ordering::Relaxed);
                        if refused.is_power_of_two() || refused == 0 {
                            tracing::warn!(error = %e, side = side.label(), refused = refused + 1, "audio block refused");
                        }
                        continue;
                    }
                }
            }
        };
        for segment in sides[index(side)].cutter.push(&samples, time) {
            queue.push(segment);
        }
    }
    for state in &mut sides {
        if let Some(segment) = state.cutter.finish() {
            queue.push(segment);
        }
    }
    queue.close();
}

fn to_16k_mono(
    resampler: &mut Option<MonoResampler>,
    frame: &AudioFrame,
) -> Result<(Vec<f32>, CaptureTime), TranscribeError> {
    let channels = frame.channels as usize;
    if frame.channels == 0 || frame.channels > MAX_CHANNELS {
        return Err(TranscribeError::Audio(format!(
            "{} channels is not in 1..={MAX_CHANNELS}",
            frame.channels
        )));
    }
    if !frame.samples.len().is_multiple_of(channels) {
        return Err(TranscribeError::Audio(format!(
            "{} samples do not make whole {}-channel frames",
            frame.samples.len(),
            channels
        )));
    }
    if resampler.as_ref().map(MonoResampler::rate) != Some(frame.sample_rate) {
        // The rate changed (or this is the first block): start over at the new rate.
        *resampler = Some(MonoResampler::new(frame.sample_rate)?);
    }
    let floats: Vec<f32> = frame
        .samples
        .iter()
        .map(|&s| f32::from(s) / 32768.0)
        .collect();
    let mono = downmix(&floats, channels);
    match resampler.as_mut() {
        Some(r) => Ok(r.push(&mono, frame.capture_time)),
        None => Ok((mono, frame.capture_time)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(id: u64, side: Side, is_final: bool) -> Segment {
        Segment {
            id,
            side,
            is_final,
            samples: vec![0.0; 10].into(),
            start: CaptureTime(0),
            end: CaptureTime(0),
        }
    }

    #[test]
    fn the_queue_prefers_finals_keeps_one_partial_per_side_and_bounds_finals() {
        let counters = Arc::new(Counters::default());
        let queue = JobQueue {
            jobs: Mutex::new(Jobs::default()),
            ready: Condvar::new(),
            max_finals: 2,
            counters: counters.clone(),
        };
        let stop = AtomicBool::new(false);
        let worker = Arc::new(Interrupt::new(Arc::new(AtomicBool::new(false))));
        queue.push(segment(2, Side::Cart, false));
        queue.push(segment(2, Side::Cart, false));
        queue.push(segment(3, Side::Remote, false));
        queue.push(segment(4, Side::Cart, false));
        queue.push(segment(5, Side::Remote, true));
        queue.push(segment(7, Side::Remote, true));
        queue.push(segment(9, Side::Remote, true));
        let order: Vec<(u64, bool)> = std::iter::from_fn(|| {
            queue.close();
            queue.pop(&stop, &worker).map(|s| (s.id, s.is_final))
        })
        .collect();
        assert_eq!(order, vec![(7, true), (9, true), (4, false)]);
        let stats = counters.snapshot();
        assert_eq!(stats.finals_dropped, 1);
        // Partial 2 replaced twice (by 2, then 4); partial 3 made stale by final 5.
        assert_eq!(stats.partials_skipped, 3);
        assert_eq!(stats.utterances, 3);
    }

    #[test]
    fn a_final_preempts_the_workers_decoding_partials_and_only_them() {
        let queue = JobQueue {
            jobs: Mutex::new(Jobs::default()),
            ready: Condvar::new(),
            max_finals: 4,
            counters: Arc::new(Counters::default()),
        };
        let stop = AtomicBool::new(false);
        let shared_stop = Arc::new(AtomicBool::new(false));
        let on_partial = Arc::new(Interrupt::new(shared_stop.clone()));
        let on_final = Arc::new(Interrupt::new(shared_stop));
        queue.push(segment(1, Side::Cart, true));
        queue.push(segment(2, Side::Remote, false));
        assert!(queue.pop(&stop, &on_final).is_some_and(|s| s.is_final));
        assert!(queue.pop(&stop, &on_partial).is_some_and(|s| !s.is_final));
        queue.push(segment(3, Side::Cart, true));
        assert!(
            on_partial.is_set(),
            "the partial's worker is asked to give up"
        );
        assert!(!on_final.is_set(), "a final in progress is never preempted");
        // The preempted worker takes the waiting final, no longer preemptible.
        assert!(queue.pop(&stop, &on_partial).is_some_and(|s| s.id == 3));
        assert!(!on_partial.is_set());
        queue.push(segment(4, Side::Cart, true));
        assert!(!on_partial.is_set());
    }

    #[test]
    fn malformed_blocks_are_refused_with_reasons() {
        let mut r = None;
        let frame = |rate, channels, n| AudioFrame {
            sample_rate: rate,
            channels,
            samples: vec![0; n],
            sequence: 0,
            capture_time: CaptureTime(0),
        };
        assert!(to_16k_mono(&mut r, &frame(0, 1, 160)).is_err());
        assert!(to_16k_mono(&mut r, &frame(16_000, 0, 160)).is_err());
        assert!(to_16k_mono(&mut r, &frame(16_000, 2, 161)).is_err());
        assert_eq!(
            to_16k_mono(&mut r, &frame(16_000, 2, 320)).unwrap().0.len(),
            160
        );
        // A rate change mid-stream restarts the converter.
        assert!(to_16k_mono(&mut r, &frame(48_000, 1, 4800)).is_ok());
        assert_eq!(r.as_ref().map(MonoResampler::rate), Some(48_000));
    }
}
