//! Session timers (RFC 4028), sans-IO and clock-free: what the cart answers to an INVITE's
//! `Session-Expires`/`Min-SE`, what the answer to its own INVITE settles, and, during the call,
//! when to refresh it (we are the refresher) or give it up with a BYE (the peer is and went
//! silent).

use std::time::{Duration, Instant};

/// The lowest session interval RFC 4028 §4 allows, and the cart's Min-SE.
pub const MIN_SE: Duration = Duration::from_secs(90);
/// The interval the cart's own INVITE asks for (RFC 4028 §4 recommends 1800 s); the refresher
/// is left to the answerer.
pub const REQUESTED_SE: Duration = Duration::from_secs(1800);
/// The longest interval we keep: a day (RFC 4028 sets no maximum; a larger value is taken as a
/// day, so a peer's absurd number cannot overflow a clock).
pub const MAX_SE: Duration = Duration::from_secs(86_400);

/// Who refreshes the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresher {
    /// The caller (UAC).
    Uac,
    /// The callee (UAS).
    Uas,
}

impl Refresher {
    fn token(self) -> &'static str {
        match self {
            Self::Uac => "uac",
            Self::Uas => "uas",
        }
    }
}

/// The session-timer parts of an incoming INVITE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimerRequest<'a> {
    /// `Session-Expires` value (`1800;refresher=uac`), if any.
    pub session_expires: Option<&'a str>,
    /// `Min-SE` value, if any.
    pub min_se: Option<&'a str>,
    /// The caller lists `timer` in `Supported` (or `Require`).
    pub supported: bool,
}

/// What to answer about session timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerAnswer {
    /// The INVITE asks for no session timer (or a malformed one, which RFC 4028 lets us
    /// ignore): nothing to add.
    None,
    /// 422 Session Interval Too Small, with our `Min-SE` (RFC 4028 §9).
    TooSmall {
        /// `Min-SE` to send.
        min_se_secs: u64,
    },
    /// Run a session timer; the 2xx carries `Session-Expires` (and `Require: timer` when the
    /// caller supports it).
    Timer {
        /// The session interval.
        interval: Duration,
        /// Who refreshes.
        refresher: Refresher,
        /// Put `Require: timer` in the 2xx (the caller supports timers, RFC 4028 §9).
        require: bool,
    },
}

impl TimerAnswer {
    /// The `Session-Expires` header value for the 2xx, if any.
    pub fn session_expires_header(&self) -> Option<String> {
        match self {
            Self::Timer {
                interval,
                refresher,
                ..
            } => Some(format!(
                "{};refresher={}",
                interval.as_secs(),
                refresher.token()
            )),
            _ => None,
        }
    }
}

fn delta_seconds(value: &str) -> Option<u64> {
    value.split(';').next()?.trim().parse().ok()
}

/// The refresher named by a `Session-Expires` value, if any.
fn refresher_param(value: &str) -> Option<Refresher> {
    let asked = value
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("refresher"))?
        .1
        .trim()
        .to_ascii_lowercase();
    match asked.as_str() {
        "uac" => Some(Refresher::Uac),
        "uas" => Some(Refresher::Uas),
        _ => None,
    }
}

/// The UAC side of RFC 4028 §7.2: what the 2xx to the cart's own INVITE settles, from its
/// `Session-Expires` value. None: the answerer runs no timer, and neither do we (§7.2: no
/// session expiration). A 2xx that names no refresher leaves the refresh to us (the UAS MUST
/// name one; refreshing when not needed costs a re-INVITE, missing one costs the call).
pub fn settle_response(session_expires: Option<&str>) -> TimerAnswer {
    let Some(secs) = session_expires.and_then(delta_seconds) else {
        return TimerAnswer::None;
    };
    TimerAnswer::Timer {
        interval: Duration::from_secs(secs.clamp(MIN_SE.as_secs(), MAX_SE.as_secs())),
        refresher: session_expires
            .and_then(refresher_param)
            .unwrap_or(Refresher::Uac),
        require: false,
    }
}

/// The interval to ask for again after a 422 to the cart's INVITE (RFC 4028 §7.3): the
/// answer's `Min-SE`, if it is above what was asked and not absurd; else give up.
pub fn retry_after_too_small(min_se: Option<&str>, asked: Duration) -> Option<Duration> {
    let min_se = Duration::from_secs(min_se.and_then(delta_seconds)?);
    (min_se > asked && min_se <= MAX_SE).then_some(min_se)
}

/// Decides the UAS side of RFC 4028 §9 for an incoming INVITE.
pub fn answer_invite(request: &TimerRequest<'_>) -> TimerAnswer {
    let Some(se) = request.session_expires else {
        return TimerAnswer::None;
    };
    let Some(secs) = delta_seconds(se) else {
        return TimerAnswer::None;
    };
    if secs < MIN_SE.as_secs() {
        return TimerAnswer::TooSmall {
            min_se_secs: MIN_SE.as_secs(),
        };
    }
    // Without timer support at the caller only we can refresh (§9); otherwise honour its
    // choice, and when it left the choice to us let it refresh (it asked for the timer).
    let refresher = match (request.supported, refresher_param(se)) {
        (false, _) => Refresher::Uas,
        (true, Some(Refresher::Uas)) => Refresher::Uas,
        (true, _) => Refresher::Uac,
    };
    // A Min-SE above the Session-Expires is the caller's mistake; the larger one wins.
    let floor = request.min_se.and_then(delta_seconds).unwrap_or(0);
    TimerAnswer::Timer {
        interval: Duration::from_secs(secs.max(floor).min(MAX_SE.as_secs())),
        refresher,
        require: request.supported,
    }
}

/// What the running timer wants done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Send a refresh (UPDATE, or a re-INVITE with the current SDP) now.
    Refresh,
    /// The session expired without a refresh: send BYE (RFC 4028 §10).
    Expire,
}

/// One call's session timer.
#[derive(Clone, Debug)]
pub struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    last_refresh: Instant,
    refresh_sent: bool,
    expired: bool,
}

impl SessionTimer {
    /// A timer of `interval` started (by the 2xx) at `now`; `we_refresh` when the cart is
    /// the refresher.
    pub fn new(interval: Duration, we_refresh: bool, now: Instant) -> Self {
        Self {
            interval: interval.min(MAX_SE),
            we_refresh,
            last_refresh: now,
            refresh_sent: false,
            expired: false,
        }
    }

    /// From a settled [`TimerAnswer::Timer`]; `we_are` is the cart's side of the call (UAS
    /// for calls it answered, UAC for its own).
    pub fn for_answer(answer: &TimerAnswer, we_are: Refresher, now: Instant) -> Option<Self> {
        match answer {
            TimerAnswer::Timer {
                interval,
                refresher,
                ..
            } => Some(Self::new(*interval, *refresher == we_are, now)),
            _ => None,
        }
    }

    /// The session was refreshed at `now` (a 2xx to a re-INVITE or UPDATE, in either
    /// direction).
    pub fn refreshed(&mut self, now: Instant) {
        self.last_refresh = now;
        self.refresh_sent = false;
    }

    /// The session interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn refresh_due(&self) -> Instant {
        // Half the interval (RFC 4028 §10).
        self.last_refresh + self.interval / 2
    }

    fn expiry(&self) -> Instant {
        // The non-refresher sends BYE min(32 s, interval / 3) before the end (§10); the
        // refresher, whose refresh got no answer, gives up at the end itself.
        let margin = if self.we_refresh {
            Duration::ZERO
        } else {
            (self.interval / 3).min(Duration::from_secs(32))
        };
        self.last_refresh + self.interval - margin
    }

    /// What to do at `now`, if anything.
    pub fn poll_action(&mut self, now: Instant) -> Option<TimerAction> {
        if self.expired {
            return None;
        }
        if now >= self.expiry() {
            self.expired = true;
            return Some(TimerAction::Expire);
        }
        if self.we_refresh && !self.refresh_sent && now >= self.refresh_due() {
            self.refresh_sent = true;
            return Some(TimerAction::Refresh);
        }
        None
    }

    /// When to poll again; `None` once expired.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.expired {
            None
        } else if self.we_refresh && !self.refresh_sent {
            Some(self.refresh_due())
        } else {
            Some(self.expiry())
        }
    }
}

/// The headers of a refresh the cart sends as the refresher (RFC 4028 §7.4): the interval
/// with us (`we_are`, our side of the call) as refresher, and `Supported: timer`.
pub fn refresh_headers(interval: Duration, we_are: Refresher) -> Vec<(&'static str, String)> {
    vec![
        (
            "Session-Expires",
            format!("{};refresher={}", interval.as_secs(), we_are.token()),
        ),
        ("Supported", "timer".to_string()),
    ]
}

/// The ICE credentials, DTLS fingerprints and media lines of a WebRTC offer: what stays put
/// when a browser offers the same session again (a session refresh) and changes with an ICE
/// restart or new media.
fn webrtc_identity(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .map(str::trim)
        .filter_map(|l| {
            if l.starts_with("a=ice-ufrag:") || l.starts_with("a=ice-pwd:") {
                Some(l)
            } else if let Some(f) = l.strip_prefix("a=fingerprint:") {
                Some(f)
            } else if let Some(m) = l.strip_prefix("m=") {
                // The kind only: the port may move with the default candidate.
                m.split_whitespace().next()
            } else {
                None
            }
        })
        .collect()
}

/// Whether `reoffer`, a re-INVITE's SDP on a call whose media the WebRTC stack answered,
/// offers the same session as `offer` did, so that the first answer answers it again (RFC
/// 4028 refreshes by re-INVITE carry the session unchanged; JsSIP's do).
pub fn same_webrtc_session(offer: &str, reoffer: &str) -> bool {
    let first = webrtc_identity(offer);
    first.iter().any(|l| l.starts_with("a=ice-ufrag:")) && first == webrtc_identity(reoffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(se: Option<&'a str>, min_se: Option<&'a str>, supported: bool) -> TimerRequest<'a> {
        TimerRequest {
            session_expires: se,
            min_se,
            supported,
        }
    }

    #[test]
    fn an_invite_without_session_expires_runs_no_timer() {
        assert_eq!(answer_invite(&req(None, None, true)), TimerAnswer::None);
        assert_eq!(
            answer_invite(&req(Some("soon"), None, true)),
            TimerAnswer::None
        );
    }

    #[test]
    fn too_small_an_interval_gets_422_with_our_min_se() {
        assert_eq!(
            answer_invite(&req(Some("30"), None, true)),
            TimerAnswer::TooSmall { min_se_secs: 90 }
        );
    }

    #[test]
    fn the_refresher_follows_rfc_4028_section_9() {
        let a = answer_invite(&req(Some("1800;refresher=uac"), Some("90"), true));
        assert_eq!(
            a,
            TimerAnswer::Timer {
                interval: Duration::from_secs(1800),
                refresher: Refresher::Uac,
                require: true
            }
        );
        assert_eq!(
            a.session_expires_header().as_deref(),
            Some("1800;refresher=uac")
        );
        // The caller leaves it to us: it refreshes (it asked for the timer).
        assert!(matches!(
            answer_invite(&req(Some("600"), None, true)),
            TimerAnswer::Timer {
                refresher: Refresher::Uac,
                ..
            }
        ));
        // The caller asks us to refresh.
        assert!(matches!(
            answer_invite(&req(Some("600; refresher=UAS"), None, true)),
            TimerAnswer::Timer {
                refresher: Refresher::Uas,
                ..
            }
        ));
        // A proxy added the timer for a caller without support: only we can refresh, and
        // no Require.
        assert_eq!(
            answer_invite(&req(Some("600;refresher=uac"), None, false)),
            TimerAnswer::Timer {
                interval: Duration::from_secs(600),
                refresher: Refresher::Uas,
                require: false
            }
        );
        // Absurd intervals are taken as a day.
        assert!(matches!(
            answer_invite(&req(Some("18446744073709551615"), None, true)),
            TimerAnswer::Timer { interval, .. } if interval == MAX_SE
        ));
        // Min-SE above Session-Expires: the larger wins.
        assert!(matches!(
            answer_invite(&req(Some("100"), Some("120"), true)),
            TimerAnswer::Timer { interval, .. } if interval == Duration::from_secs(120)
        ));
    }

    #[test]
    fn as_refresher_we_refresh_at_half_the_interval_and_again_after_each_refresh() {
        let t0 = Instant::now();
        let mut t = SessionTimer::new(Duration::from_secs(90), true, t0);
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(45)));
        assert_eq!(t.poll_action(t0 + Duration::from_secs(44)), None);
        assert_eq!(
            t.poll_action(t0 + Duration::from_secs(45)),
            Some(TimerAction::Refresh)
        );
        assert_eq!(t.poll_action(t0 + Duration::from_secs(46)), None);
        // The refresh's 2xx at 46 s starts a new interval.
        t.refreshed(t0 + Duration::from_secs(46));
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(91)));
        assert_eq!(
            t.poll_action(t0 + Duration::from_secs(91)),
            Some(TimerAction::Refresh)
        );
        // That refresh is never answered: the session ends at the end of the interval.
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(136)));
        assert_eq!(t.poll_action(t0 + Duration::from_secs(135)), None);
        assert_eq!(
            t.poll_action(t0 + Duration::from_secs(136)),
            Some(TimerAction::Expire)
        );
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(t.poll_action(t0 + Duration::from_secs(500)), None);
    }

    #[test]
    fn a_silent_refresher_peer_gets_a_bye_before_the_interval_ends() {
        let t0 = Instant::now();
        let mut t = SessionTimer::new(Duration::from_secs(90), false, t0);
        // min(32, 90/3) = 30 s before the end.
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(t.poll_action(t0 + Duration::from_secs(59)), None);
        t.refreshed(t0 + Duration::from_secs(40));
        assert_eq!(t.poll_action(t0 + Duration::from_secs(60)), None);
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(100)));
        assert_eq!(
            t.poll_action(t0 + Duration::from_secs(100)),
            Some(TimerAction::Expire)
        );
        // Long intervals: 32 s before the end.
        let long = SessionTimer::new(Duration::from_secs(1800), false, t0);
        assert_eq!(long.poll_timeout(), Some(t0 + Duration::from_secs(1768)));
    }

    #[test]
    fn the_answer_to_our_invite_settles_the_timer_and_its_refresher() {
        assert_eq!(settle_response(None), TimerAnswer::None);
        assert_eq!(settle_response(Some("soon")), TimerAnswer::None);
        let timer = |secs, refresher| TimerAnswer::Timer {
            interval: Duration::from_secs(secs),
            refresher,
            require: false,
        };
        assert_eq!(
            settle_response(Some("90;refresher=uac")),
            timer(90, Refresher::Uac)
        );
        assert_eq!(
            settle_response(Some("1800; Refresher=UAS")),
            timer(1800, Refresher::Uas)
        );
        // No refresher named: ours to refresh; below the floor or above a day: clamped.
        assert_eq!(settle_response(Some("600")), timer(600, Refresher::Uac));
        assert_eq!(
            settle_response(Some("5;refresher=uas")),
            timer(90, Refresher::Uas)
        );
        assert_eq!(
            settle_response(Some("999999999999;refresher=uac")),
            timer(86_400, Refresher::Uac)
        );
        // As UAC refresher the cart refreshes at half the interval and names itself.
        let t0 = Instant::now();
        let t = SessionTimer::for_answer(&timer(90, Refresher::Uac), Refresher::Uac, t0).unwrap();
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(45)));
        assert_eq!(
            refresh_headers(Duration::from_secs(90), Refresher::Uac)[0].1,
            "90;refresher=uac"
        );
        // The answerer refreshing: the cart only watches for expiry.
        let watch = SessionTimer::for_answer(&timer(90, Refresher::Uas), Refresher::Uac, t0);
        assert_eq!(
            watch.unwrap().poll_timeout(),
            Some(t0 + Duration::from_secs(60))
        );
    }

    #[test]
    fn a_422_to_our_invite_is_retried_once_with_its_min_se() {
        let asked = REQUESTED_SE;
        assert_eq!(
            retry_after_too_small(Some("3600"), asked),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            retry_after_too_small(Some("900"), asked),
            None,
            "not above what we asked"
        );
        assert_eq!(retry_after_too_small(None, asked), None);
        assert_eq!(retry_after_too_small(Some("x"), asked), None);
        assert_eq!(
            retry_after_too_small(Some("99999999"), asked),
            None,
            "beyond a day"
        );
    }

    #[test]
    fn for_answer_makes_the_uas_the_refresher_only_when_agreed() {
        let t0 = Instant::now();
        assert!(SessionTimer::for_answer(&TimerAnswer::None, Refresher::Uas, t0).is_none());
        let uas = answer_invite(&req(Some("120;refresher=uas"), None, true));
        let t = SessionTimer::for_answer(&uas, Refresher::Uas, t0).unwrap();
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(t.interval(), Duration::from_secs(120));
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n\
        a=ice-pwd:secretsecretsecretsecret\r\na=fingerprint:sha-256 AA:BB\r\n\
        a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:abcd\r\n";

    #[test]
    fn a_refresh_offers_the_same_webrtc_session_again() {
        // JsSIP's refresh: a new o= version, other candidates and ports, same session.
        let again = OFFER
            .replace("o=- 1 1", "o=- 1 2")
            .replace("5000", "6000")
            .replace("m=audio 9", "m=audio 6000");
        assert!(same_webrtc_session(OFFER, &again));
        assert!(same_webrtc_session(OFFER, OFFER));
    }

    #[test]
    fn an_ice_restart_or_new_media_is_another_session() {
        let restart = OFFER.replace("ice-ufrag:abcd", "ice-ufrag:wxyz");
        assert!(!same_webrtc_session(OFFER, &restart));
        let audio_only = OFFER.split("m=video").next().unwrap();
        assert!(!same_webrtc_session(OFFER, audio_only));
        let other_cert = OFFER.replace("AA:BB", "CC:DD");
        assert!(!same_webrtc_session(OFFER, &other_cert));
        // Not a WebRTC offer at all: never "the same".
        let plain = "v=0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert!(!same_webrtc_session(plain, plain));
        assert!(!same_webrtc_session(OFFER, ""));
    }

    #[test]
    fn the_uas_refresh_names_us_as_refresher() {
        assert_eq!(
            refresh_headers(Duration::from_secs(90), Refresher::Uas),
            [
                ("Session-Expires", "90;refresher=uas".to_string()),
                ("Supported", "timer".to_string())
            ]
        );
        // The cart refreshes a WebRTC leg it refreshes at half the interval, like any call.
        let t0 = Instant::now();
        let mut t = SessionTimer::new(Duration::from_secs(90), true, t0);
        assert_eq!(t.poll_action(t0 + Duration::from_secs(44)), None);
        assert_eq!(
            t.poll_action(t0 + Duration::from_secs(45)),
            Some(TimerAction::Refresh)
        );
        t.refreshed(t0 + Duration::from_secs(46));
        assert_eq!(t.poll_action(t0 + Duration::from_secs(90)), None);
        assert_eq!(
            t.poll_action(t0 + Duration::from_secs(91)),
            Some(TimerAction::Refresh)
        );
    }
}
