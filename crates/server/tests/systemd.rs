//! The operations page under a real systemd (`tests/systemd/run.sh`): a Debian root file
//! system booted with systemd-nspawn, the server installed with `deploy/install.sh`, and the
//! page's commands run and checked in it: enable, start, status lines, rotation, reload, a
//! killed and a frozen web tier, stop, a schema mismatch, the sandbox's score.
//!
//! It needs root, systemd-nspawn and debootstrap (or a cached root file system). Where they
//! are missing it is skipped with a note, unless `PANDA_REQUIRE_SYSTEMD=1` (set by CI) makes
//! that a failure.

use std::path::Path;
use std::process::Command;

fn available(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

#[test]
fn the_operations_page_holds_under_a_real_systemd() {
    let missing: Vec<&str> = [
        (!is_root()).then_some("root"),
        (!available("systemd-nspawn")).then_some("systemd-nspawn (systemd-container)"),
        (!available("nsenter")).then_some("nsenter (util-linux)"),
        (!available("debootstrap")).then_some("debootstrap"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("PANDA_REQUIRE_SYSTEMD").as_deref() != Ok("1"),
            "PANDA_REQUIRE_SYSTEMD=1 but this machine lacks: {}",
            missing.join(", ")
        );
        eprintln!(
            "note: the real-systemd test is skipped; missing: {}",
            missing.join(", ")
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/systemd/run.sh");
    let transcript = Path::new(env!("CARGO_TARGET_TMPDIR")).join("systemd-transcript.txt");
    let out = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_panda-server"))
        .arg(&transcript)
        .output()
        .expect("run tests/systemd/run.sh");
    let steps = std::fs::read_to_string(&transcript).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n--- transcript ---\n{steps}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(steps.ends_with("all systemd checks passed\n"), "{steps}");
    eprintln!("transcript: {}", transcript.display());
}
