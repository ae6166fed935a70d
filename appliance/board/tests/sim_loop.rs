//! The simulated board, the panel and the cart state machine in one loop, as
//! the runtime will run them (5 ms ticks on explicit instants, no driver).

use embassy_time::Instant;
use telecart_board::config::BoardConfig;
use telecart_board::led::Rgb;
use telecart_board::panel::{Board, Panel};
use telecart_board::sim::{SimEvent, SimHandle, SimulatedBoard};
use telecart_cart::Timestamp;
use telecart_cart::machine::{
    Action, Actor, AuditAction, CartMachine, CartState, Input, LedColor, Output,
};

struct Rig {
    board: SimulatedBoard,
    handle: SimHandle,
    panel: Panel,
    machine: CartMachine,
    t: u64,
    actions: Vec<Action>,
    audit: Vec<(Actor, AuditAction)>,
}

impl Rig {
    fn new(first_privacy: Option<SimEvent>) -> Rig {
        let config = BoardConfig {
            outgoing_uri: Some("sip:nurse-station@pbx.example".into()),
            ..BoardConfig::default()
        };
        let (mut board, handle) = SimulatedBoard::new(&config);
        if let Some(e) = first_privacy {
            handle.send(e).expect("board alive");
            board.read_inputs(Instant::from_millis(0)).expect("sim");
        }
        let mut machine = CartMachine::new(telecart_board::config::machine_config(&config));
        let first = board.read_inputs(Instant::from_millis(1)).expect("sim");
        let panel = Panel::new_at(
            Instant::from_millis(1),
            &config,
            &first,
            &machine.indication(),
        );
        machine.handle_input(Timestamp(1), Input::NetworkUp);
        let mut rig = Rig {
            board,
            handle,
            panel,
            machine,
            t: 1,
            actions: Vec::new(),
            audit: Vec::new(),
        };
        for input in rig.panel.initial_inputs() {
            rig.machine.handle_input(Timestamp(1), input);
        }
        rig.machine.handle_input(Timestamp(1), Input::BootComplete);
        rig.drain();
        rig
    }

    fn drain(&mut self) {
        let now = Instant::from_millis(self.t);
        while let Some(o) = self.machine.poll_output() {
            match o {
                Output::Indication(i) => self.panel.show_at(now, &i),
                Output::Action(a) => self.actions.push(a),
                Output::Audit(e) => self.audit.push((e.who, e.what)),
                Output::Notice(_) => {}
            }
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 5 {
            self.t += 5;
            let now = Instant::from_millis(self.t);
            let raw = self.board.read_inputs(now).expect("sim");
            for input in self.panel.poll_at(now, &raw) {
                self.machine.handle_input(Timestamp(self.t), input);
            }
            self.drain();
            self.board.set_leds(self.panel.leds_at(now)).expect("sim");
        }
    }
}

#[test]
fn a_console_click_places_the_call_and_the_led_turns_blue() {
    let mut rig = Rig::new(None);
    rig.run(50);
    assert_eq!(rig.handle.view().leds, Rgb::of(LedColor::Green));
    rig.handle
        .send(SimEvent::from_key('c').expect("key"))
        .expect("alive");
    rig.run(500);
    assert_eq!(
        rig.actions,
        [Action::PlaceCall {
            uri: "sip:nurse-station@pbx.example".into()
        }]
    );
    assert_eq!(rig.machine.state(), CartState::InCall);
    assert_eq!(rig.handle.view().leds, Rgb::of(LedColor::Blue));
}

#[test]
fn keyboard_privacy_mutes_turns_the_led_amber_and_is_audited_as_the_keyboard() {
    let mut rig = Rig::new(None);
    rig.handle
        .send(SimEvent::from_key('p').expect("key"))
        .expect("alive");
    rig.run(200);
    assert!(rig.actions.contains(&Action::MuteCameraAndMic));
    assert_eq!(rig.audit, [(Actor::Keyboard, AuditAction::PrivacyOn)]);
    assert_eq!(rig.handle.view().leds, Rgb::of(LedColor::Amber));
}

#[test]
fn privacy_already_on_at_power_up_is_enforced_before_boot_completes() {
    let on = SimEvent::Privacy {
        on: true,
        by: Actor::PrivacySwitch,
    };
    let mut rig = Rig::new(Some(on));
    assert_eq!(rig.actions.first(), Some(&Action::MuteCameraAndMic));
    assert_eq!(rig.machine.state(), CartState::Privacy);
    rig.run(100);
    assert_eq!(rig.audit, [(Actor::PrivacySwitch, AuditAction::PrivacyOn)]);
}

#[test]
fn a_long_press_from_the_keyboard_hangs_up() {
    let mut rig = Rig::new(None);
    rig.handle
        .send(SimEvent::from_key('c').expect("key"))
        .expect("alive");
    rig.run(400);
    rig.machine.handle_input(
        Timestamp(rig.t),
        Input::CallConnected {
            call: telecart_cart::machine::CallId(1),
        },
    );
    rig.handle
        .send(SimEvent::from_key('C').expect("key"))
        .expect("alive");
    rig.run(2500);
    assert_eq!(
        rig.actions.last(),
        Some(&Action::HangUp {
            call: Some(telecart_cart::machine::CallId(1))
        })
    );
    assert_eq!(rig.machine.state(), CartState::Ready);
}
