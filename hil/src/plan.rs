//! The test plan as data (`hil/plan.toml`): parsing, validation and variable substitution.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A whole plan: its steps in order, the targets' variables and the product features
/// some steps need.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Plan {
    /// Name and other facts about the plan.
    pub(crate) plan: PlanInfo,
    /// Variables per target kind (`virtual`, `ssh`).
    #[serde(default)]
    pub(crate) vars: BTreeMap<String, BTreeMap<String, String>>,
    /// Product features by name.
    #[serde(default)]
    pub(crate) features: BTreeMap<String, Feature>,
    /// The steps, run in this order.
    #[serde(rename = "step")]
    pub(crate) steps: Vec<Step>,
}

/// The `[plan]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanInfo {
    /// Shown at the top of the report.
    pub(crate) name: String,
}

/// A product feature that steps may require.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Feature {
    /// Whether the feature is on main (steps requiring it run).
    pub(crate) available: bool,
    /// Why it is not available, shown with the SKIP.
    #[serde(default)]
    pub(crate) note: String,
    /// The feature needs the cart's CPU at its own speed: on a target whose CPU is emulated
    /// (the virtual cart without KVM) its steps are skipped with the target's reason.
    #[serde(default)]
    pub(crate) needs_native_cpu: bool,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    /// Runs `run` on the cart.
    #[default]
    Run,
    /// Reboots the cart and waits until it is back.
    Reboot,
}

/// A peer the runner starts on the host for the length of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PeerKind {
    /// `tests/peers/whip_aiortc.py`: a WHIP endpoint that decodes what it receives.
    Whip,
    /// Kamailio (registrar and proxy) and baresip (a video phone) on an address the cart
    /// reaches without NAT: baresip calls the cart once it has registered.
    Sip,
}

/// One step of the plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Step {
    /// Short unique name.
    pub(crate) name: String,
    /// What the step checks, in a sentence.
    pub(crate) what: String,
    /// Run a script (default) or reboot.
    #[serde(default)]
    pub(crate) action: Action,
    /// POSIX sh script run on the cart with `set -e`.
    pub(crate) run: Option<String>,
    /// Feature the step needs; skipped while it is not available.
    pub(crate) requires: Option<String>,
    /// Host peer started for this step.
    pub(crate) peer: Option<PeerKind>,
    /// Longest the step may take (seconds).
    #[serde(default = "default_timeout_s")]
    pub(crate) timeout_s: u64,
    /// Script run on the cart when the step fails; its output goes in the report.
    pub(crate) diagnose: Option<String>,
    /// What passes.
    #[serde(default)]
    pub(crate) pass: Pass,
}

fn default_timeout_s() -> u64 {
    120
}

impl Step {
    /// The step's time limit.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

/// What a step's outcome must show to pass.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pass {
    /// Exit status of `run` (default 0).
    pub(crate) exit: Option<i32>,
    /// Text the standard output must contain (variables substituted).
    #[serde(default)]
    pub(crate) stdout_contains: Vec<String>,
    /// At least this many non-empty lines of standard output.
    pub(crate) min_stdout_lines: Option<usize>,
    /// Every non-empty line this earlier step printed must be printed again.
    pub(crate) includes_lines_of: Option<String>,
    /// What the host peer must have decoded.
    pub(crate) peer: Option<PeerPass>,
}

/// Thresholds on what the peer decoded (the WHIP peer's `/stats`, the SIP peer's statistics).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeerPass {
    /// Decoded video frames, at least.
    pub(crate) min_video_frames: Option<u64>,
    /// Width of the decoded picture.
    pub(crate) width: Option<u64>,
    /// Height of the decoded picture.
    pub(crate) height: Option<u64>,
    /// Decoded audio frames (20 ms Opus frames), at least.
    pub(crate) min_audio_frames: Option<u64>,
    /// RMS of all decoded audio (full scale 1.0), at least: silence is ~0.
    pub(crate) min_audio_rms: Option<f64>,
    /// Yes/no facts the peer must report as true (the SIP peer's `cart_registered`,
    /// `call_established`, `bye_relayed`, `call_closed`).
    #[serde(default)]
    pub(crate) facts: Vec<String>,
}

/// The target kinds a plan has variables for.
pub(crate) const TARGET_KINDS: [&str; 2] = ["virtual", "ssh"];

impl Plan {
    /// Parses and validates a plan; every problem is listed.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Plan> {
        let plan: Plan = toml::from_str(text)?;
        let problems = plan.problems();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("\n"));
        }
        Ok(plan)
    }

    /// Everything wrong with the plan, one sentence each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for kind in self.vars.keys() {
            if !TARGET_KINDS.contains(&kind.as_str()) {
                out.push(format!(
                    "vars.{kind}: unknown target kind (expected one of {TARGET_KINDS:?})"
                ));
            }
        }
        if self.steps.is_empty() {
            out.push("the plan has no step".into());
        }
        for step in &self.steps {
            let name = step.name.as_str();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                out.push(format!(
                    "step {name:?}: names are letters, digits and '-', not empty"
                ));
            }
            if seen.contains(&name) {
                out.push(format!("step {name}: the name is used twice"));
            }
            if step.timeout_s == 0 || step.timeout_s > 3600 {
                out.push(format!("step {name}: timeout_s must be 1..=3600"));
            }
            let available = match &step.requires {
                Some(feature) => match self.features.get(feature) {
                    Some(f) => f.available,
                    None => {
                        out.push(format!(
                            "step {name}: requires {feature:?}, which [features] does not define"
                        ));
                        false
                    }
                },
                None => true,
            };
            match step.action {
                Action::Run if step.run.is_none() && available => out.push(format!(
                    "step {name}: no `run` (only a step whose feature is not available may leave it out)"
                )),
                Action::Reboot if step.run.is_some() => {
                    out.push(format!("step {name}: a reboot step has no `run`"))
                }
                Action::Reboot if step.peer.is_some() => {
                    out.push(format!("step {name}: a reboot step has no peer"))
                }
                _ => {}
            }
            if step.pass.peer.is_some() && step.peer.is_none() {
                out.push(format!(
                    "step {name}: pass.peer needs `peer` (which peer to ask)"
                ));
            }
            if let Some(earlier) = &step.pass.includes_lines_of
                && !seen.contains(&earlier.as_str())
            {
                out.push(format!(
                    "step {name}: includes_lines_of names {earlier:?}, which is not an earlier step"
                ));
            }
            seen.push(name);
        }
        out
    }

    /// The reason a step is skipped, if its feature is not available (and not forced on),
    /// or needs a native CPU where `emulated_cpu` says why the target's is not.
    pub(crate) fn skip_reason(
        &self,
        step: &Step,
        forced: &[String],
        emulated_cpu: Option<&str>,
    ) -> Option<String> {
        let feature = step.requires.as_ref()?;
        if forced.iter().any(|f| f == feature) {
            return None;
        }
        let f = self.features.get(feature)?;
        if !f.available {
            return Some(format!("requires {feature}: {}", f.note));
        }
        match emulated_cpu {
            Some(why) if f.needs_native_cpu => Some(format!(
                "requires {feature} at the cart's own CPU speed: {why}"
            )),
            _ => None,
        }
    }
}

/// Replaces every `{name}` whose name is in `vars`; other braces are left alone (shell
/// scripts have their own). Unknown `{name}`s made of variable characters are errors, so a
/// misspelt variable never reaches the cart.
pub(crate) fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}');
        let name = close.map(|c| &after[..c]);
        // `${x}` is the shell's.
        let shell = out.ends_with('$');
        match name {
            Some(n)
                if !shell
                    && !n.is_empty()
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                match vars.get(n) {
                    Some(v) => out.push_str(v),
                    None => return Err(format!("unknown variable {{{n}}}")),
                }
                rest = &after[n.len() + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_shipped_plan_is_valid() {
        let plan = Plan::parse(include_str!("../plan.toml")).unwrap();
        let names: Vec<_> = plan.steps.iter().map(|s| s.name.as_str()).collect();
        for wanted in [
            "camera",
            "microphone",
            "speaker",
            "publish",
            "call",
            "privacy",
            "transcription",
            "storage-write",
            "reboot",
            "storage-after-reboot",
        ] {
            assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
        }
        for kind in TARGET_KINDS {
            assert!(plan.vars.contains_key(kind), "no vars for {kind}");
        }
    }

    #[test]
    fn every_variable_of_the_shipped_plan_is_defined_for_both_targets() {
        let plan = Plan::parse(include_str!("../plan.toml")).unwrap();
        for kind in TARGET_KINDS {
            let mut v = plan.vars[kind].clone();
            for runner in [
                "bin",
                "share",
                "data",
                "whip_url",
                "sip_registrar",
                "sip_user",
                "sip_password",
                "sip_caller",
            ] {
                v.insert(runner.into(), "x".into());
            }
            for step in &plan.steps {
                for text in step.run.iter().chain(&step.diagnose) {
                    substitute(text, &v).unwrap();
                }
            }
        }
    }

    #[test]
    fn the_carts_configs_render_for_both_targets() {
        let plan = Plan::parse(include_str!("../plan.toml")).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cart");
        for kind in TARGET_KINDS {
            let mut v = plan.vars[kind].clone();
            for runner in ["bin", "share", "data"] {
                v.insert(runner.into(), "/x".into());
            }
            v.extend(crate::sip_peer::SipAccounts::new("10.77.0.1".parse().unwrap(), 5060).vars());
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                let rendered =
                    substitute(&text, &v).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                rendered
                    .parse::<toml::Table>()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }

    #[test]
    fn unavailable_features_skip_with_their_note_unless_forced() {
        let text = r#"
            [plan]
            name = "p"
            [features.sip]
            available = false
            note = "SIP endpoint not on main"
            [features.camera]
            available = true
            [[step]]
            name = "call"
            what = "a call"
            requires = "sip"
            [[step]]
            name = "camera"
            what = "frames"
            requires = "camera"
            run = "true"
        "#;
        let plan = Plan::parse(text).unwrap();
        let call = plan.steps.iter().find(|s| s.name == "call").unwrap();
        let reason = plan.skip_reason(call, &[], None).unwrap();
        assert_eq!(reason, "requires sip: SIP endpoint not on main");
        assert_eq!(plan.skip_reason(call, &["sip".into()], None), None);
        let camera = plan.steps.iter().find(|s| s.name == "camera").unwrap();
        assert_eq!(plan.skip_reason(camera, &[], None), None);
    }

    #[test]
    fn the_shipped_call_step_asks_for_the_sip_peer() {
        let plan = Plan::parse(include_str!("../plan.toml")).unwrap();
        let call = plan.steps.iter().find(|s| s.name == "call").unwrap();
        assert_eq!(call.peer, Some(PeerKind::Sip));
        let peer = call.pass.peer.as_ref().unwrap();
        for fact in ["cart_registered", "call_established", "bye_relayed"] {
            assert!(peer.facts.iter().any(|f| f == fact), "{fact} not checked");
        }
    }

    #[test]
    fn problems_are_all_listed() {
        let text = r#"
            [plan]
            name = "bad"
            [vars.floppy]
            a = "b"
            [[step]]
            name = "one"
            what = "x"
            [[step]]
            name = "one"
            what = "y"
            run = "true"
            requires = "teleport"
            [step.pass]
            includes_lines_of = "later"
            [step.pass.peer]
            min_video_frames = 1
            [[step]]
            name = "boot"
            what = "z"
            action = "reboot"
            run = "reboot"
        "#;
        let err = Plan::parse(text).unwrap_err().to_string();
        for needle in [
            "vars.floppy: unknown target kind",
            "step one: no `run`",
            "step one: the name is used twice",
            "requires \"teleport\", which [features] does not define",
            "includes_lines_of names \"later\"",
            "pass.peer needs `peer`",
            "step boot: a reboot step has no `run`",
        ] {
            assert!(err.contains(needle), "{needle:?} not in:\n{err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "[plan]\nname = \"x\"\n[[step]]\nname = \"a\"\nwhat = \"b\"\nrun = \"true\"\ntimout_s = 3\n";
        assert!(Plan::parse(text).is_err());
    }

    #[test]
    fn substitution_leaves_shell_braces_alone_and_refuses_unknown_names() {
        let v = vars(&[("bin", "/opt/cart/bin"), ("camera", "/dev/video0")]);
        assert_eq!(
            substitute("{bin}/cartd -d {camera}; f() { echo ${x}; }", &v).unwrap(),
            "/opt/cart/bin/cartd -d /dev/video0; f() { echo ${x}; }"
        );
        assert_eq!(
            substitute("{bim}/cartd", &v).unwrap_err(),
            "unknown variable {bim}"
        );
        assert_eq!(substitute("{ {} {", &v).unwrap(), "{ {} {");
        assert_eq!(substitute("a{b", &v).unwrap(), "a{b");
    }
}
