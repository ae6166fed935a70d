//! `cartctl keygen` and `cartctl log` against a log the daemon itself wrote.

// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).output().expect("runs")
}

#[test]
fn a_technician_reads_what_cartd_logged_and_the_reading_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/master.key");
    let cartctl = env!("CARGO_BIN_EXE_cartctl");

    let made = run(cartctl, &["keygen", "--out", key.to_str().unwrap()]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let again = run(cartctl, &["keygen", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success(), "never overwrites a key");

    let config = dir.path().join("cart.toml");
    std::fs::write(
        &config,
        format!(
            "[cart]\ndata_dir = \"{d}\"\n[console]\nlisten = \"127.0.0.1:0\"\n[video]\nwidth = 320\nheight = 240\nfps = 10\n[store]\ndata_dir = \"{d}/log\"\nmaster_key = \"{k}\"\ndevice_id = \"cart-7\"\n",
            d = dir.path().display(),
            k = key.display()
        ),
    )
    .unwrap();
    // The daemon, for a second: its start and stop go to the audit trail.
    let cartd = std::path::Path::new(cartctl).with_file_name("cartd");
    if cartd.exists() {
        let out = run(
            cartd.to_str().unwrap(),
            &[
                "run",
                "--config",
                config.to_str().unwrap(),
                "--seconds",
                "1",
            ],
        );
        assert!(
            out.status.success(),
            "cartd run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        panic!("cartd binary not built next to cartctl (build the workspace)");
    }

    let cfg = config.to_str().unwrap();
    let list = run(cartctl, &["log", "--config", cfg, "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.lines().count() >= 2,
        "start and stop entries:\n{listing}"
    );

    let show = run(
        cartctl,
        &["log", "--config", cfg, "show", "1", "--actor", "tech-ana"],
    );
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(String::from_utf8_lossy(&show.stdout).contains("cartd.start"));

    let export = dir.path().join("export.jsonl");
    let out = run(
        cartctl,
        &[
            "log",
            "--config",
            cfg,
            "export",
            "--out",
            export.to_str().unwrap(),
            "--actor",
            "tech-ana",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(
        exported.contains("log.show"),
        "the earlier show is in the audit trail:\n{exported}"
    );
    assert!(exported.contains("tech-ana"));

    // The data directory holds no plaintext of what was exported.
    for entry in walk(&dir.path().join("log")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"tech-ana"),
            "plaintext in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
