//! The per-step report: printed as each step ends, and written as JSON at the end.

use crate::verdict::{Outcome, Verdict};
use serde_json::{Value, json};
use std::time::Duration;

/// One step's result.
#[derive(Debug, Clone)]
pub(crate) struct StepResult {
    /// The step's name.
    pub(crate) name: String,
    /// What it checks.
    pub(crate) what: String,
    /// How it ended.
    pub(crate) verdict: Verdict,
    /// Wall time on the host, from start to verdict.
    pub(crate) took: Duration,
    /// What the cart produced (none for skipped steps).
    pub(crate) outcome: Option<Outcome>,
    /// Output of the step's `diagnose` script, when it failed.
    pub(crate) diagnosis: Option<String>,
}

impl StepResult {
    /// The lines the report prints for this step.
    pub(crate) fn render(&self) -> String {
        let mut out = match &self.verdict {
            Verdict::Skip(why) => format!("  SKIP  {:<22} {:>8}  {why}\n", self.name, "-"),
            v => format!(
                "  {}  {:<22} {:>6.1} s  {}\n",
                v.word(),
                self.name,
                self.took.as_secs_f64(),
                self.what
            ),
        };
        if let Verdict::Fail(reasons) = &self.verdict {
            for reason in reasons {
                for (i, line) in reason.lines().enumerate() {
                    let lead = if i == 0 { "- " } else { "  " };
                    out.push_str(&format!("          {lead}{line}\n"));
                }
            }
            if let Some(outcome) = &self.outcome {
                for (label, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
                    let tail = tail(text, 12);
                    if !tail.is_empty() {
                        out.push_str(&format!("          {label} (last lines):\n"));
                        for line in tail.lines() {
                            out.push_str(&format!("            | {line}\n"));
                        }
                    }
                }
            }
            if let Some(diagnosis) = &self.diagnosis {
                out.push_str("          diagnose:\n");
                for line in diagnosis.lines() {
                    out.push_str(&format!("            | {line}\n"));
                }
            }
        }
        out
    }

    /// The step as JSON (outputs are kept whole).
    pub(crate) fn to_json(&self) -> Value {
        let (reasons, skip) = match &self.verdict {
            Verdict::Fail(r) => (r.clone(), None),
            Verdict::Skip(why) => (Vec::new(), Some(why.clone())),
            Verdict::Pass => (Vec::new(), None),
        };
        json!({
            "name": self.name,
            "what": self.what,
            "result": self.verdict.word(),
            "seconds": (self.took.as_secs_f64() * 10.0).round() / 10.0,
            "failures": reasons,
            "skip_reason": skip,
            "exit": self.outcome.as_ref().and_then(|o| o.exit),
            "stdout": self.outcome.as_ref().map(|o| o.stdout.clone()),
            "stderr": self.outcome.as_ref().map(|o| o.stderr.clone()),
            "peer_stats": self.outcome.as_ref().and_then(|o| o.peer_stats.clone()),
            "diagnosis": self.diagnosis,
        })
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Counts of a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Steps that passed.
    pub(crate) pass: usize,
    /// Steps that failed.
    pub(crate) fail: usize,
    /// Steps skipped.
    pub(crate) skip: usize,
}

impl Tally {
    /// Counts the results.
    pub(crate) fn of(results: &[StepResult]) -> Tally {
        let mut t = Tally::default();
        for r in results {
            match r.verdict {
                Verdict::Pass => t.pass += 1,
                Verdict::Fail(_) => t.fail += 1,
                Verdict::Skip(_) => t.skip += 1,
            }
        }
        t
    }

    /// The closing line. (Worded so that CI's test-count parsers do not read it as a
    /// test runner's total.)
    pub(crate) fn line(&self) -> String {
        format!(
            "result: {} ({} pass, {} fail, {} skip)",
            if self.fail == 0 { "PASS" } else { "FAIL" },
            self.pass,
            self.fail,
            self.skip
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, verdict: Verdict) -> StepResult {
        StepResult {
            name: name.into(),
            what: "does a thing".into(),
            verdict,
            took: Duration::from_millis(4200),
            outcome: Some(Outcome {
                exit: Some(1),
                stderr: "Error: no camera\n".into(),
                ..Outcome::default()
            }),
            diagnosis: Some("camera driver (vivid) not loaded\n".into()),
        }
    }

    #[test]
    fn failures_show_reasons_output_and_diagnosis() {
        let text = result(
            "camera",
            Verdict::Fail(vec!["exit status 1, expected 0".into()]),
        )
        .render();
        assert!(text.starts_with("  FAIL  camera"), "{text}");
        assert!(text.contains("4.2 s"), "{text}");
        assert!(text.contains("- exit status 1, expected 0"), "{text}");
        assert!(text.contains("| Error: no camera"), "{text}");
        assert!(
            text.contains("| camera driver (vivid) not loaded"),
            "{text}"
        );
        let passed = result("camera", Verdict::Pass).render();
        assert_eq!(passed.lines().count(), 1, "{passed}");
    }

    #[test]
    fn tally_and_closing_line() {
        let results = vec![
            result("a", Verdict::Pass),
            result("b", Verdict::Fail(vec!["x".into()])),
            result("c", Verdict::Skip("requires sip: later".into())),
        ];
        let t = Tally::of(&results);
        assert_eq!(
            t,
            Tally {
                pass: 1,
                fail: 1,
                skip: 1
            }
        );
        assert_eq!(t.line(), "result: FAIL (1 pass, 1 fail, 1 skip)");
        let skip = results[2].render();
        assert!(skip.contains("SKIP  c") && skip.contains("requires sip: later"));
    }
}
