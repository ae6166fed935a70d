//! Debounce, long press and LED patterns on embassy-time's mock driver.
//!
//! Run with `cargo test -p telecart-board --features mock-clock-tests`, in
//! its own cargo invocation (see `tests/run`): the mock driver and the
//! daemon's `std` driver cannot be linked together. The mock clock is one
//! global, so the tests take a lock and reset it first.
#![cfg(feature = "mock-clock-tests")]

use std::sync::{Mutex, MutexGuard};

use embassy_time::{Duration, Instant, MockDriver};
use telecart_board::input::{Button, Debouncer, Switch};
use telecart_board::led::{LedPlayer, Rgb};
use telecart_cart::machine::{CartState, Indication, LedColor, Press};

static CLOCK: Mutex<()> = Mutex::new(());

fn clock() -> MutexGuard<'static, ()> {
    let guard = CLOCK.lock().unwrap_or_else(|e| e.into_inner());
    MockDriver::get().reset();
    guard
}

fn advance(ms: u64) {
    MockDriver::get().advance(Duration::from_millis(ms));
}

/// Samples `level` every millisecond for `ms` milliseconds, collecting what `f` reports.
fn hold<T>(ms: u64, mut f: impl FnMut() -> Option<T>) -> Vec<(u64, T)> {
    let mut out = Vec::new();
    for _ in 0..ms {
        advance(1);
        if let Some(v) = f() {
            out.push((Instant::now().as_millis(), v));
        }
    }
    out
}

fn ind(state: CartState, battery_low: bool) -> Indication {
    Indication {
        state,
        led: state.led(),
        privacy: false,
        battery_low,
    }
}

#[test]
fn bouncing_contact_gives_one_change_after_it_settles() {
    let _c = clock();
    let mut d = Debouncer::new(Duration::from_millis(20), false);
    // 8 ms of bounce: the contact chatters every millisecond.
    let mut level = false;
    let bounce = hold(8, || {
        level = !level;
        d.update(level)
    });
    assert!(bounce.is_empty());
    let settled = hold(40, || d.update(true));
    assert_eq!(settled.len(), 1);
    let (t, v) = settled[0];
    assert!(v);
    assert!((28..=29).contains(&t), "settled at {t} ms");
}

#[test]
fn glitches_never_reach_the_state_machine() {
    let _c = clock();
    let mut s = Switch::new(Duration::from_millis(20), false);
    for _ in 0..50 {
        // a 5 ms spike (EMI from the cart's motor, a knock) every 100 ms
        assert!(hold(5, || s.update(true)).is_empty());
        assert!(hold(95, || s.update(false)).is_empty());
    }
    assert!(!s.is_on());
}

#[test]
fn privacy_switch_reports_each_real_toggle_once() {
    let _c = clock();
    let mut s = Switch::new(Duration::from_millis(20), false);
    let on = hold(100, || s.update(true));
    let off = hold(100, || s.update(false));
    assert_eq!(on.iter().map(|x| x.1).collect::<Vec<_>>(), vec![true]);
    assert_eq!(off.iter().map(|x| x.1).collect::<Vec<_>>(), vec![false]);
}

#[test]
fn switch_already_on_at_power_up_is_not_a_toggle() {
    let _c = clock();
    let mut s = Switch::new(Duration::from_millis(20), true);
    assert!(hold(100, || s.update(true)).is_empty());
    assert!(s.is_on());
}

#[test]
fn short_press_is_reported_on_release() {
    let _c = clock();
    let mut b = Button::new(Duration::from_millis(20), Duration::from_millis(1500));
    assert!(hold(300, || b.update(true)).is_empty());
    let out = hold(50, || b.update(false));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, Press::Short);
}

#[test]
fn long_press_is_reported_while_held_at_the_long_press_time() {
    let _c = clock();
    let mut b = Button::new(Duration::from_millis(20), Duration::from_millis(1500));
    let out = hold(3000, || b.update(true));
    assert_eq!(out.len(), 1, "once, however long it is held");
    assert_eq!(out[0].1, Press::Long);
    let t = out[0].0;
    assert!(
        (1500..=1501).contains(&t),
        "long press at {t} ms from first contact"
    );
    assert!(
        hold(50, || b.update(false)).is_empty(),
        "no short press after a long one"
    );
}

#[test]
fn a_bouncy_release_does_not_make_a_second_press() {
    let _c = clock();
    let mut b = Button::new(Duration::from_millis(20), Duration::from_millis(1500));
    hold(200, || b.update(true));
    let mut level = true;
    let mut out = hold(10, || {
        level = !level;
        b.update(level)
    });
    out.extend(hold(100, || b.update(false)));
    assert_eq!(
        out.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![Press::Short]
    );
}

#[test]
fn solid_pattern_stays_lit() {
    let _c = clock();
    let p = LedPlayer::new(&ind(CartState::Ready, false));
    for _ in 0..50 {
        assert_eq!(p.output(), Rgb::of(LedColor::Green));
        advance(100);
    }
}

#[test]
fn fast_blink_alternates_every_quarter_second() {
    let _c = clock();
    let p = LedPlayer::new(&ind(CartState::Ringing, false));
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(p.output() != Rgb::OFF);
        advance(250);
    }
    assert_eq!(seen, [true, false, true, false, true, false, true, false]);
}

#[test]
fn slow_blink_alternates_every_second() {
    let _c = clock();
    let p = LedPlayer::new(&ind(CartState::Offline, false));
    assert_eq!(p.output(), Rgb::of(LedColor::Red));
    advance(999);
    assert_eq!(p.output(), Rgb::of(LedColor::Red));
    advance(1);
    assert_eq!(p.output(), Rgb::OFF);
    advance(1000);
    assert_eq!(p.output(), Rgb::of(LedColor::Red));
}

#[test]
fn a_new_state_restarts_the_pattern_at_once() {
    let _c = clock();
    let mut p = LedPlayer::new(&ind(CartState::Ringing, false));
    advance(300); // ringing is in its dark half now
    assert_eq!(p.output(), Rgb::OFF);
    p.set(&ind(CartState::InCall, false));
    assert_eq!(p.output(), Rgb::of(LedColor::Blue));
    // The same indication again does not restart it.
    let mut q = LedPlayer::new(&ind(CartState::Ringing, false));
    advance(300);
    q.set(&ind(CartState::Ringing, false));
    assert_eq!(q.output(), Rgb::OFF);
}

#[test]
fn low_battery_interrupts_any_pattern_with_two_red_flashes() {
    let _c = clock();
    let p = LedPlayer::new(&ind(CartState::Privacy, true));
    let mut timeline = Vec::new();
    for _ in 0..80 {
        timeline.push(p.output());
        advance(100);
    }
    let amber = Rgb::of(LedColor::Amber);
    let red = Rgb::of(LedColor::Red);
    for cycle in 0..2 {
        let c = &timeline[cycle * 40..cycle * 40 + 40];
        assert!(
            c[..36].iter().all(|x| *x == amber),
            "state shown most of the time"
        );
        assert_eq!(&c[36..], &[red, Rgb::OFF, red, Rgb::OFF]);
    }
}

#[test]
fn next_change_is_when_the_level_changes() {
    let _c = clock();
    let p = LedPlayer::new(&ind(CartState::Syncing, false));
    let before = p.output();
    let next = p.next_change_at(Instant::now()).unwrap();
    MockDriver::get().advance(next - Instant::now() - Duration::from_millis(1));
    assert_eq!(p.output(), before);
    advance(1);
    assert_ne!(p.output(), before);
}
