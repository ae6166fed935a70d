//! The RFC 8489 section 6.2.1 retransmission schedule of one request.

use std::time::{Duration, Instant};

/// Requests sent over UDP before giving up (Rc).
pub(crate) const RC: u32 = 7;
/// After the last send, wait this many RTOs for an answer (Rm).
pub(crate) const RM: u32 = 16;
/// Transaction timeout over TCP and TLS (Ti), where requests are sent once.
pub(crate) const TI: Duration = Duration::from_millis(39_500);

/// What to do when [`Schedule::deadline`] passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send the request again.
    Retransmit,
    /// Give up: the transaction timed out.
    GiveUp,
}

/// When a request is sent again and when it times out.
///
/// Over UDP it is sent at 0, RTO, 3 RTO, 7 RTO, ... (the interval doubling each time) for
/// [`RC`] sends, and times out [`RM`] RTOs after the last; with the default 500 ms RTO that is
/// sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s and a timeout at 39.5 s. Over a stream it is
/// sent once and times out after [`TI`].
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    reliable: bool,
    rto: Duration,
    sends: u32,
    next: Instant,
}

impl Schedule {
    /// A schedule for a request first sent at `now`.
    pub(crate) fn start(now: Instant, rto: Duration, reliable: bool) -> Self {
        let next = if reliable { now + TI } else { now + rto };
        Self {
            reliable,
            rto,
            sends: 1,
            next,
        }
    }

    /// The next moment something is due, and what.
    pub(crate) fn deadline(&self) -> (Instant, Due) {
        if self.reliable || self.sends >= RC {
            (self.next, Due::GiveUp)
        } else {
            (self.next, Due::Retransmit)
        }
    }

    /// Records a retransmission at `now` and moves the deadline on.
    pub(crate) fn retransmitted(&mut self, now: Instant) {
        self.sends += 1;
        self.next = if self.sends >= RC {
            now + self.rto * RM
        } else {
            now + self.rto * (1u32 << (self.sends - 1).min(16))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_schedule_matches_rfc8489() {
        let t0 = Instant::now();
        let mut s = Schedule::start(t0, Duration::from_millis(500), false);
        let mut sends = vec![0u64];
        loop {
            let (at, due) = s.deadline();
            let ms = at.duration_since(t0).as_millis() as u64;
            match due {
                Due::Retransmit => {
                    sends.push(ms);
                    s.retransmitted(at);
                }
                Due::GiveUp => {
                    assert_eq!(ms, 39_500);
                    break;
                }
            }
        }
        assert_eq!(sends, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    }

    #[test]
    fn stream_schedule_sends_once() {
        let t0 = Instant::now();
        let s = Schedule::start(t0, Duration::from_millis(500), true);
        assert_eq!(s.deadline(), (t0 + TI, Due::GiveUp));
    }
}
