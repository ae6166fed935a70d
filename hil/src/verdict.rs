//! Judging a step's outcome against its `pass` table (pure: no cart, no peer).

use crate::plan::{Pass, PeerPass};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a step produced on the cart.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    /// Exit status of the script; `None` if it did not finish (timeout, cart lost).
    pub(crate) exit: Option<i32>,
    /// Its standard output.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
    /// Why there is no exit status, when there is none.
    pub(crate) lost: Option<String>,
    /// The peer's statistics after the step, when the step had a peer.
    pub(crate) peer_stats: Option<Value>,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Everything in `pass` held.
    Pass,
    /// What did not hold, one sentence each.
    Fail(Vec<String>),
    /// Not run, and why.
    Skip(String),
}

impl Verdict {
    /// The report's word for it.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skip(_) => "SKIP",
        }
    }
}

/// Judges `outcome` by `pass`; `earlier` holds the standard output of the steps before.
/// `pass` has its variables substituted already.
pub(crate) fn judge(pass: &Pass, outcome: &Outcome, earlier: &BTreeMap<String, String>) -> Verdict {
    let mut failures = Vec::new();
    let want_exit = pass.exit.unwrap_or(0);
    match outcome.exit {
        None => failures.push(format!(
            "did not finish: {}",
            outcome.lost.as_deref().unwrap_or("no exit status")
        )),
        Some(code) if code != want_exit => {
            failures.push(format!("exit status {code}, expected {want_exit}"))
        }
        Some(_) => {}
    }
    for needle in &pass.stdout_contains {
        if !outcome.stdout.contains(needle.as_str()) {
            failures.push(format!("output lacks {needle:?}"));
        }
    }
    if let Some(min) = pass.min_stdout_lines {
        let lines = non_empty_lines(&outcome.stdout).count();
        if lines < min {
            failures.push(format!("{lines} output line(s), expected at least {min}"));
        }
    }
    if let Some(step) = &pass.includes_lines_of {
        match earlier.get(step) {
            None => failures.push(format!("step {step} has no output to compare with")),
            Some(before) => {
                let now: Vec<&str> = non_empty_lines(&outcome.stdout).collect();
                let missing: Vec<&str> = non_empty_lines(before)
                    .filter(|line| !now.contains(line))
                    .collect();
                if non_empty_lines(before).next().is_none() {
                    failures.push(format!("step {step} printed nothing to look for"));
                } else if !missing.is_empty() {
                    failures.push(format!(
                        "{} of {} line(s) printed by {step} are gone, first: {:?}",
                        missing.len(),
                        non_empty_lines(before).count(),
                        missing[0]
                    ));
                }
            }
        }
    }
    if let Some(want) = &pass.peer {
        match &outcome.peer_stats {
            None => failures.push("the peer gave no statistics".into()),
            Some(stats) => failures.extend(judge_peer(want, stats)),
        }
    }
    if failures.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(failures)
    }
}

fn non_empty_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
}

/// Checks the peer's statistics (the WHIP peer's `/stats`, tests/peers/README.md; the SIP
/// peer's, hil/src/sip_peer.rs) against the thresholds.
fn judge_peer(want: &PeerPass, stats: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let number = |key: &str| stats.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    if let Some(min) = want.min_video_frames {
        let got = number("video_frames_decoded");
        if got < min as f64 {
            out.push(format!(
                "peer decoded {got} video frames, expected at least {min}"
            ));
        }
    }
    for (key, wanted) in [("width", want.width), ("height", want.height)] {
        if let Some(w) = wanted {
            let got = number(key);
            if got != w as f64 {
                out.push(format!("peer's decoded {key} is {got}, expected {w}"));
            }
        }
    }
    if let Some(min) = want.min_audio_frames {
        let got = number("audio_frames_decoded");
        if got < min as f64 {
            out.push(format!(
                "peer decoded {got} audio frames, expected at least {min}"
            ));
        }
    }
    if let Some(min) = want.min_audio_rms {
        let got = number("audio_rms_total");
        if got < min {
            out.push(format!(
                "peer's decoded audio RMS is {got:.4}, expected at least {min} (silence?)"
            ));
        }
    }
    for fact in &want.facts {
        if stats.get(fact).and_then(Value::as_bool) != Some(true) {
            let why = stats
                .get("notes")
                .and_then(Value::as_array)
                .map(|notes| {
                    notes
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|n| !n.is_empty())
                .map_or_else(String::new, |n| format!(" ({n})"));
            out.push(format!("peer: {fact} is not true{why}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PeerPass;
    use serde_json::json;

    fn ran(exit: i32, stdout: &str) -> Outcome {
        Outcome {
            exit: Some(exit),
            stdout: stdout.into(),
            ..Outcome::default()
        }
    }

    #[test]
    fn exit_status_and_text() {
        let pass = Pass {
            stdout_contains: vec!["25 frames in".into()],
            ..Pass::default()
        };
        let none = BTreeMap::new();
        assert_eq!(
            judge(&pass, &ran(0, "25 frames in 1 s"), &none),
            Verdict::Pass
        );
        assert_eq!(
            judge(&pass, &ran(1, "0 capture device(s)"), &none),
            Verdict::Fail(vec![
                "exit status 1, expected 0".into(),
                "output lacks \"25 frames in\"".into()
            ])
        );
        let lost = Outcome {
            lost: Some("timed out after 120 s".into()),
            ..Outcome::default()
        };
        assert_eq!(
            judge(&Pass::default(), &lost, &none),
            Verdict::Fail(vec!["did not finish: timed out after 120 s".into()])
        );
        let expect_failure = Pass {
            exit: Some(3),
            ..Pass::default()
        };
        assert_eq!(judge(&expect_failure, &ran(3, ""), &none), Verdict::Pass);
    }

    #[test]
    fn lines_of_an_earlier_step_must_all_be_there() {
        let pass = Pass {
            includes_lines_of: Some("storage-write".into()),
            ..Pass::default()
        };
        let mut earlier = BTreeMap::new();
        earlier.insert(
            "storage-write".to_string(),
            "1 a audit\n2 b audit\n".to_string(),
        );
        assert_eq!(
            judge(
                &pass,
                &ran(0, "1 a audit\n2 b audit\n3 c audit\n"),
                &earlier
            ),
            Verdict::Pass
        );
        match judge(&pass, &ran(0, "1 a audit\n"), &earlier) {
            Verdict::Fail(why) => assert_eq!(
                why,
                vec!["1 of 2 line(s) printed by storage-write are gone, first: \"2 b audit\""]
            ),
            other => panic!("{other:?}"),
        }
        earlier.insert("storage-write".to_string(), "\n".to_string());
        assert!(matches!(
            judge(&pass, &ran(0, "anything"), &earlier),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn peer_facts_must_be_true_and_say_why_not() {
        let pass = Pass {
            peer: Some(PeerPass {
                facts: vec!["cart_registered".into(), "bye_relayed".into()],
                ..PeerPass::default()
            }),
            ..Pass::default()
        };
        let none = BTreeMap::new();
        let mut good = ran(0, "");
        good.peer_stats = Some(json!({"cart_registered": true, "bye_relayed": true}));
        assert_eq!(judge(&pass, &good, &none), Verdict::Pass);
        let mut unregistered = ran(0, "");
        unregistered.peer_stats = Some(json!({"cart_registered": false, "bye_relayed": "yes",
            "notes": ["the cart did not register with Kamailio"]}));
        assert_eq!(
            judge(&pass, &unregistered, &none),
            Verdict::Fail(vec![
                "peer: cart_registered is not true (the cart did not register with Kamailio)"
                    .into(),
                "peer: bye_relayed is not true (the cart did not register with Kamailio)".into(),
            ])
        );
    }

    #[test]
    fn peer_thresholds() {
        let pass = Pass {
            peer: Some(PeerPass {
                min_video_frames: Some(20),
                width: Some(640),
                height: Some(480),
                min_audio_frames: Some(100),
                min_audio_rms: Some(0.01),
                facts: vec!["call_established".into()],
            }),
            ..Pass::default()
        };
        let none = BTreeMap::new();
        let mut good = ran(0, "");
        good.peer_stats = Some(
            json!({"video_frames_decoded": 90, "width": 640, "height": 480,
            "audio_frames_decoded": 400, "audio_rms_total": 0.08, "call_established": true}),
        );
        assert_eq!(judge(&pass, &good, &none), Verdict::Pass);
        let mut silent_and_small = ran(0, "");
        silent_and_small.peer_stats = Some(json!({"video_frames_decoded": 3, "width": 320,
            "height": 240, "audio_frames_decoded": 400, "audio_rms_total": 0.0}));
        match judge(&pass, &silent_and_small, &none) {
            Verdict::Fail(why) => assert_eq!(why.len(), 5, "{why:?}"),
            other => panic!("{other:?}"),
        }
        let no_stats = ran(0, "");
        assert_eq!(
            judge(&pass, &no_stats, &none),
            Verdict::Fail(vec!["the peer gave no statistics".into()])
        );
    }
}
