//! Deciding when the cart has moved to another network (a Wi-Fi roam, a
//! cable plugged in, a DHCP renumbering) and its media must follow with an
//! ICE restart, without ending the call.
//!
//! Sans-IO: the IO edge polls the interface addresses and the kernel's
//! choice of source address towards the signalling endpoint, and feeds each
//! [`Snapshot`] with the time it was taken. The detector waits until a new
//! route has held for [`RoamDetector::settle`] (a roam flaps: addresses come
//! and go for a second or two), never moves while there is no route at all
//! (the call waits for the network instead), and asks again at most once per
//! settle period until the IO edge [confirms](RoamDetector::moved) the move.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What the IO edge saw at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The source address the kernel picks towards the endpoint (None: no route).
    pub route: Option<IpAddr>,
    /// Every address on the cart's interfaces that are up.
    pub addresses: Vec<IpAddr>,
}

/// Why the media must move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoamReason {
    /// The address the media socket is bound to is gone.
    AddressLost,
    /// The address is still there but the route to the endpoint now leaves from another.
    RouteChanged,
}

/// Move the media from `from` to `to` (rebind, gather, restart ICE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roam {
    /// Where the media socket is bound now.
    pub from: IpAddr,
    /// Where it should be bound.
    pub to: IpAddr,
    /// Why.
    pub reason: RoamReason,
}

/// The network state the detector reports, for logs and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The media address is the route's.
    Steady,
    /// No route to the endpoint: waiting for the network.
    Offline,
    /// A different route was seen, not yet for long enough.
    Settling,
}

/// Watches snapshots for a change of the cart's address towards the endpoint.
#[derive(Debug, Clone)]
pub struct RoamDetector {
    current: IpAddr,
    settle: Duration,
    candidate: Option<(IpAddr, Instant)>,
    last_request: Option<Instant>,
    link: Link,
}

impl RoamDetector {
    /// Media is bound to `current`; a new route must hold for `settle` before a move.
    pub fn new(current: IpAddr, settle: Duration) -> Self {
        Self {
            current,
            settle,
            candidate: None,
            last_request: None,
            link: Link::Steady,
        }
    }

    /// How long a new route must hold before a move.
    pub fn settle(&self) -> Duration {
        self.settle
    }

    /// The address the media is bound to.
    pub fn current(&self) -> IpAddr {
        self.current
    }

    /// What the last snapshot said.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Feeds one snapshot taken at `now`; returns a move when one is due.
    pub fn observe(&mut self, now: Instant, snapshot: &Snapshot) -> Option<Roam> {
        let Some(route) = snapshot.route else {
            // No way out at all: moving now would bind to nothing useful.
            self.link = Link::Offline;
            self.candidate = None;
            return None;
        };
        if route == self.current {
            self.link = Link::Steady;
            self.candidate = None;
            return None;
        }
        let since = match self.candidate {
            Some((addr, since)) if addr == route => since,
            _ => {
                self.candidate = Some((route, now));
                now
            }
        };
        self.link = Link::Settling;
        if now.saturating_duration_since(since) < self.settle {
            return None;
        }
        if self
            .last_request
            .is_some_and(|t| now.saturating_duration_since(t) < self.settle)
        {
            return None;
        }
        self.last_request = Some(now);
        let reason = if snapshot.addresses.contains(&self.current) {
            RoamReason::RouteChanged
        } else {
            RoamReason::AddressLost
        };
        Some(Roam {
            from: self.current,
            to: route,
            reason,
        })
    }

    /// The IO edge moved the media to `to` (and the restart went through).
    pub fn moved(&mut self, to: IpAddr) {
        self.current = to;
        self.candidate = None;
        self.last_request = None;
        self.link = Link::Steady;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn snap(route: Option<&str>, addrs: &[&str]) -> Snapshot {
        Snapshot {
            route: route.map(ip),
            addresses: addrs.iter().map(|a| ip(a)).collect(),
        }
    }

    const SETTLE: Duration = Duration::from_secs(2);

    #[test]
    fn steady_network_never_moves() {
        let t0 = Instant::now();
        let mut d = RoamDetector::new(ip("10.0.0.2"), SETTLE);
        for s in 0..100 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(
                d.observe(now, &snap(Some("10.0.0.2"), &["10.0.0.2", "127.0.0.1"])),
                None
            );
        }
        assert_eq!(d.link(), Link::Steady);
    }

    #[test]
    fn a_roam_moves_once_the_new_address_has_settled() {
        let t0 = Instant::now();
        let mut d = RoamDetector::new(ip("10.0.0.2"), SETTLE);
        let new = snap(Some("10.0.0.3"), &["10.0.0.3"]);
        assert_eq!(d.observe(t0, &new), None);
        assert_eq!(d.link(), Link::Settling);
        assert_eq!(d.observe(t0 + Duration::from_secs(1), &new), None);
        let roam = d.observe(t0 + SETTLE, &new).unwrap();
        assert_eq!(
            roam,
            Roam {
                from: ip("10.0.0.2"),
                to: ip("10.0.0.3"),
                reason: RoamReason::AddressLost
            }
        );
        // Not confirmed: asked again only after another settle period.
        assert_eq!(d.observe(t0 + SETTLE + Duration::from_secs(1), &new), None);
        assert!(d.observe(t0 + SETTLE * 2, &new).is_some());
        d.moved(ip("10.0.0.3"));
        assert_eq!(d.current(), ip("10.0.0.3"));
        assert_eq!(d.observe(t0 + SETTLE * 5, &new), None);
        assert_eq!(d.link(), Link::Steady);
    }

    #[test]
    fn flapping_and_outages_do_not_move() {
        let t0 = Instant::now();
        let mut d = RoamDetector::new(ip("10.0.0.2"), SETTLE);
        let s = |x| t0 + Duration::from_millis(x);
        assert_eq!(
            d.observe(s(0), &snap(Some("10.0.0.3"), &["10.0.0.3"])),
            None
        );
        // Back before it settled: nothing to do.
        assert_eq!(
            d.observe(s(1000), &snap(Some("10.0.0.2"), &["10.0.0.2"])),
            None
        );
        assert_eq!(
            d.observe(s(2500), &snap(Some("10.0.0.3"), &["10.0.0.3"])),
            None
        );
        // No route at all: offline, the settling starts over afterwards.
        assert_eq!(d.observe(s(4000), &snap(None, &[])), None);
        assert_eq!(d.link(), Link::Offline);
        assert_eq!(
            d.observe(s(5000), &snap(Some("10.0.0.4"), &["10.0.0.4"])),
            None
        );
        assert_eq!(
            d.observe(s(6000), &snap(Some("10.0.0.3"), &["10.0.0.3"])),
            None
        );
        let roam = d
            .observe(s(8000), &snap(Some("10.0.0.3"), &["10.0.0.3"]))
            .unwrap();
        assert_eq!(roam.to, ip("10.0.0.3"));
    }

    #[test]
    fn a_better_route_with_the_old_address_still_up_is_a_route_change() {
        let t0 = Instant::now();
        let mut d = RoamDetector::new(ip("192.168.1.20"), Duration::ZERO);
        let roam = d
            .observe(t0, &snap(Some("10.1.0.5"), &["192.168.1.20", "10.1.0.5"]))
            .unwrap();
        assert_eq!(roam.reason, RoamReason::RouteChanged);
    }
}
