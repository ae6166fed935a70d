//! Incoming browser calls, WHEP-style: the call page POSTs its offer
//! (`application/sdp`) to `/api/call`, gets `201` with the answer and a
//! `Location` to DELETE on hang-up. Each call is one session task; the
//! registry keeps their stats for the console and `/metrics`.

use super::session::{MediaSources, SessionOptions, rtc_config, run_session};
use super::stats::{CallStats, SharedStats};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;
use str0m::Candidate;
use str0m::change::SdpOffer;
use telecart_store::{RecordBody, SessionId};
use telecart_webrtc::datachannel::Message;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Most calls at once (the cart has one camera and two cores).
pub const MAX_CALLS: usize = 4;
/// Ended calls kept for the console.
const KEEP_ENDED: usize = 8;

/// Why a call could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The offer is not SDP str0m can read.
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
    /// The offer has nothing in common with what the cart sends.
    #[error("offer refused: {0}")]
    Refused(String),
    /// Already [`MAX_CALLS`] calls.
    #[error("the cart is busy ({MAX_CALLS} calls)")]
    Busy,
    /// Socket trouble.
    #[error("{0}")]
    Local(String),
}

/// What a call tells the rest of the cart as it runs.
#[derive(Default)]
pub struct CallHooks {
    /// Every data-channel message from the far end (camera control, …).
    pub incoming: Option<mpsc::Sender<Message>>,
    /// Called once when the call ends, however it ends.
    pub on_end: Option<Box<dyn FnOnce() + Send>>,
    /// Follow the cart's route towards this address (the browser's): when it
    /// leaves from another local address (a roam, a new default route), the
    /// media moves there and the page's ICE restart finds it. None: the media
    /// address is fixed (configured or the console's own).
    pub follow_network_towards: Option<IpAddr>,
}

struct Call {
    stats: SharedStats,
    session: SessionId,
    stop: watch::Sender<bool>,
    outgoing: mpsc::Sender<Message>,
    started: Instant,
    control: mpsc::Sender<super::session::SessionControl>,
}

/// The calls the console answered.
#[derive(Default)]
pub struct Calls {
    calls: Mutex<BTreeMap<String, Call>>,
    /// Sessions of calls that are not browser calls (SIP), so that captions run and are
    /// recorded during them too: session and when it came up.
    other_sessions: Mutex<Vec<(SessionId, Instant)>>,
    /// Where each call's start, quality and end are recorded.
    log: Option<std::sync::Arc<crate::SessionLog>>,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("calls", &self.lock().len())
            .finish()
    }
}

impl Calls {
    /// A registry that records every call in the encrypted session log.
    pub fn with_log(log: std::sync::Arc<crate::SessionLog>) -> Self {
        Self {
            calls: Mutex::default(),
            other_sessions: Mutex::default(),
            log: Some(log),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Call>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers `offer` from a browser; media goes from/to `bind` (an address
    /// the browser can reach). Returns the call id and the SDP answer.
    pub async fn answer(
        &self,
        media: MediaSources,
        offer: &str,
        bind: IpAddr,
        ports: Option<(u16, u16)>,
        speaker: Option<super::speaker::SpeakerOutput>,
        hooks: CallHooks,
    ) -> Result<(String, String), CallError> {
        self.answer_in_session(media, offer, bind, ports, speaker, hooks, None)
            .await
    }

    /// [`Self::answer`] for a call whose session-log records someone else writes (a SIP
    /// dialog with WebRTC media: `SipCart` records it like every SIP call) under `session`;
    /// `None`: the registry records the call itself, as a browser call.
    #[allow(clippy::too_many_arguments)]
    pub async fn answer_in_session(
        &self,
        media: MediaSources,
        offer: &str,
        bind: IpAddr,
        ports: Option<(u16, u16)>,
        speaker: Option<super::speaker::SpeakerOutput>,
        hooks: CallHooks,
        recorded_elsewhere: Option<SessionId>,
    ) -> Result<(String, String), CallError> {
        self.forget_ended();
        if self.active() >= MAX_CALLS {
            return Err(CallError::Busy);
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| CallError::BadOffer(e.to_string()))?;
        let socket = super::session::bind_media_socket(bind, ports)
            .await
            .map_err(|e| CallError::Local(format!("binding UDP on {bind}: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| CallError::Local(e.to_string()))?;
        let started = Instant::now();
        let mut rtc = rtc_config(media.encoder.target_bitrate()).build(started);
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| CallError::Local(format!("candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| CallError::Refused(e.to_string()))?;
        let answer = answer.to_sdp_string();
        if !answer.contains("H264") && !answer.contains("opus") {
            return Err(CallError::Refused(
                "no common codec (the cart sends H.264 constrained baseline and Opus)".into(),
            ));
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let stats = SharedStats::new();
        let (stop, stop_rx) = watch::channel(false);
        let (outgoing, outgoing_rx) = mpsc::channel(64);
        let (control, control_rx) = mpsc::channel(4);
        let opts = SessionOptions {
            video_mid: None,
            audio_mid: None,
            started,
            outgoing: Some(outgoing_rx),
            incoming: hooks.incoming,
            turn: None,
            speaker,
            control: Some(control_rx),
        };
        let task_stats = stats.clone();
        let task_id = id.clone();
        let log = self.log.clone().filter(|_| recorded_elsewhere.is_none());
        let record = log.map(|log| {
            let session = SessionId::random().unwrap_or(SessionId::NONE);
            let _ = log.append(
                session,
                RecordBody::SessionStart {
                    direction: "inbound".into(),
                    protocol: "webrtc".into(),
                    remote: "browser via console".into(),
                },
            );
            (log, session)
        });
        let session = recorded_elsewhere
            .or(record.as_ref().map(|(_, s)| *s))
            .unwrap_or(SessionId::NONE);
        let on_end = hooks.on_end;
        if let Some(peer) = hooks.follow_network_towards {
            tokio::spawn(follow_network(
                local.ip(),
                peer,
                ports,
                control.clone(),
                stop_rx.clone(),
            ));
        }
        tokio::spawn(async move {
            let outcome = run_session(rtc, socket, media, opts, task_stats.clone(), stop_rx).await;
            if let Some(on_end) = on_end {
                on_end();
            }
            let reason = match &outcome {
                Ok(()) => {
                    info!(call = %task_id, "call ended");
                    "hangup".to_string()
                }
                Err(e) => {
                    warn!(call = %task_id, error = %e, "call failed");
                    format!("failed: {e}")
                }
            };
            if let Some((log, session)) = record {
                let summary = task_stats.snapshot();
                let duration_ms = started.elapsed().as_millis() as u64;
                // fdatasync: off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    if let (Some(rtt_ms), Some(mos)) = (summary.rtt_ms, summary.mos) {
                        let _ = log.append(
                            session,
                            RecordBody::CallQuality {
                                rtt_ms,
                                jitter_ms: summary.jitter_ms.unwrap_or(0.0),
                                loss_pct: summary.loss.unwrap_or(0.0) * 100.0,
                                mos,
                                bitrate_kbps: summary.bwe_bps.map_or(0, |b| (b / 1000) as u32),
                            },
                        );
                    }
                    let _ = log.append(
                        session,
                        RecordBody::SessionEnd {
                            reason,
                            duration_ms,
                        },
                    );
                })
                .await;
            }
        });
        info!(call = %id, %local, "call answered");
        self.lock().insert(
            id.clone(),
            Call {
                stats,
                session,
                stop,
                outgoing,
                started,
                control,
            },
        );
        Ok((id, answer))
    }

    /// A new offer from call `id`'s browser (its `restartIce()` after the
    /// network changed on either side): the session answers it.
    pub async fn renegotiate(&self, id: &str, offer: &str) -> Result<String, CallError> {
        let control = self
            .lock()
            .get(id)
            .map(|c| c.control.clone())
            .ok_or_else(|| CallError::Local(format!("no call {id}")))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        control
            .send(super::session::SessionControl::AcceptOffer {
                offer: offer.to_string(),
                reply,
            })
            .await
            .map_err(|_| CallError::Local("the call has ended".into()))?;
        answer
            .await
            .map_err(|_| CallError::Local("the call has ended".into()))?
            .map_err(CallError::Refused)
    }

    /// Hangs up call `id`; false if there is no such call.
    pub fn hang_up(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(call) => {
                let _ = call.stop.send(true);
                true
            }
            None => false,
        }
    }

    /// Hangs up every call (daemon shutdown).
    pub fn hang_up_all(&self) {
        for call in self.lock().values() {
            let _ = call.stop.send(true);
        }
    }

    /// Sends a message on every open call's `telecart` data channel.
    pub fn broadcast(&self, message: &Message) {
        for call in self.lock().values() {
            let _ = call.outgoing.try_send(message.clone());
        }
    }

    /// The session log's id of the newest call not yet ended (captions are recorded under it).
    pub fn current_session(&self) -> Option<SessionId> {
        let browser = self
            .lock()
            .values()
            .filter(|c| !is_ended(&c.stats.snapshot()))
            .max_by_key(|c| c.started)
            .map(|c| (c.started, c.session));
        let other = self
            .others()
            .iter()
            .max_by_key(|(_, t)| *t)
            .map(|(s, t)| (*t, *s));
        browser
            .into_iter()
            .chain(other)
            .max_by_key(|(t, _)| *t)
            .map(|(_, s)| s)
    }

    /// Calls not yet ended, browser calls and others.
    pub fn active(&self) -> usize {
        let browser = self
            .lock()
            .values()
            .filter(|c| !is_ended(&c.stats.snapshot()))
            .count();
        browser + self.others().len()
    }

    /// A call that is not a browser call (SIP) came up under `session`.
    pub fn other_call_started(&self, session: SessionId) {
        self.others().push((session, Instant::now()));
    }

    /// That call ended.
    pub fn other_call_ended(&self, session: SessionId) {
        self.others().retain(|(s, _)| *s != session);
    }

    fn others(&self) -> std::sync::MutexGuard<'_, Vec<(SessionId, Instant)>> {
        self.other_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Every known call's id and stats, newest last.
    pub fn list(&self) -> Vec<(String, CallStats)> {
        let calls = self.lock();
        let mut v: Vec<_> = calls
            .iter()
            .map(|(id, c)| (c.started, id.clone(), c.stats.snapshot()))
            .collect();
        v.sort_by_key(|(t, _, _)| *t);
        v.into_iter().map(|(_, id, s)| (id, s)).collect()
    }

    /// Stats of call `id`.
    pub fn stats(&self, id: &str) -> Option<CallStats> {
        self.lock().get(id).map(|c| c.stats.snapshot())
    }

    fn forget_ended(&self) {
        let mut calls = self.lock();
        let mut ended: Vec<_> = calls
            .iter()
            .filter(|(_, c)| is_ended(&c.stats.snapshot()))
            .map(|(id, c)| (c.started, id.clone()))
            .collect();
        ended.sort();
        let excess = ended.len().saturating_sub(KEEP_ENDED);
        for (_, id) in ended.into_iter().take(excess) {
            calls.remove(&id);
        }
    }
}

/// Watches the route towards `peer` once a second for the call's life; when
/// it leaves from another address (for 2 s), binds there and moves the media.
async fn follow_network(
    mut current: IpAddr,
    peer: IpAddr,
    ports: Option<(u16, u16)>,
    control: mpsc::Sender<super::session::SessionControl>,
    mut stop: watch::Receiver<bool>,
) {
    use telecart_webrtc::roam::RoamDetector;
    let mut detector = RoamDetector::new(current, std::time::Duration::from_secs(2));
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { return; }
            }
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        if control.is_closed() {
            return;
        }
        let snapshot = super::whip::network_snapshot(SocketAddr::new(peer, 9));
        let Some(roam) = detector.observe(Instant::now(), &snapshot) else {
            continue;
        };
        info!(from = %roam.from, to = %roam.to, reason = ?roam.reason, "call: network changed, moving the media");
        match super::session::bind_media_socket(roam.to, ports).await {
            Ok(socket) => {
                if control
                    .send(super::session::SessionControl::Rebind { socket })
                    .await
                    .is_err()
                {
                    return;
                }
                current = roam.to;
                detector.moved(current);
            }
            Err(e) => warn!(error = %e, to = %roam.to, "call: cannot bind the new address"),
        }
    }
}

fn is_ended(s: &CallStats) -> bool {
    matches!(s.state.as_str(), "closed" | "failed")
}

/// The local address that routes to `peer` (for a console bound to 0.0.0.0).
pub fn local_ip_towards(peer: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = if peer.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    let probe = std::net::UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    probe.connect(SocketAddr::new(peer, 9)).ok()?;
    Some(probe.local_addr().ok()?.ip())
}
