//! The production topology, short (`scripts/cluster-test`): three nodes, each in a network
//! namespace of its own with `panda-server httpd`, `panda-server daemon` and squid, behind
//! HAProxy on one PostgreSQL; one fault (SIGKILL of a node) under v1 pilots and submitters,
//! then 100,000 claims through the balancer. The script checks, from the database and the
//! clients' own records, that no job went out twice, none was lost and every status has its
//! log entry, and that each period of a cluster-wide daemon task ran on one node.
//!
//! Needs root (ip netns), haproxy, squid and PostgreSQL, and the debug `panda-server` beside
//! this package's binary (`cargo test --workspace` builds both); without them the test says
//! so and passes, unless `PANDA_REQUIRE_CLUSTER=1` (CI) makes the lack a failure.

use std::path::Path;
use std::process::Command;

fn missing_prerequisite(bin_dir: &Path) -> Option<String> {
    if !bin_dir.join("panda-server").is_file() {
        return Some(format!("no panda-server in {}", bin_dir.display()));
    }
    let uid = Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|o| o.stdout.starts_with(b"0\n")) {
        return Some("not root".into());
    }
    for tool in ["ip", "haproxy", "squid", "psql", "openssl", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

#[test]
fn three_nodes_behind_a_balancer_lose_no_job_when_one_is_killed() {
    let bench = Path::new(env!("CARGO_BIN_EXE_panda-bench"));
    let bin_dir = bench.parent().expect("the binaries' directory");
    if let Some(why) = missing_prerequisite(bin_dir) {
        assert!(
            std::env::var("PANDA_REQUIRE_CLUSTER").is_err(),
            "PANDA_REQUIRE_CLUSTER is set but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster-test");
    let output = Command::new("bash")
        .arg(&script)
        .args([
            "--nodes",
            "3",
            "--faults",
            "kill",
            "--duration",
            "20",
            "--jobs",
            "20000",
        ])
        .args(["--pilots", "16", "--submitters", "1"])
        .args(["--claims", "100000", "--per-call", "10"])
        .env("PANDA_BIN_DIR", bin_dir)
        // A network and names of this test's own, apart from a cluster-test run by hand.
        .env("CLUSTER_NET", "10.213.9")
        .env("CLUSTER_TAG", "pctci")
        .env("CLUSTER_DB", "panda_cluster_ci")
        .output()
        .expect("run scripts/cluster-test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line\n{stdout}\n{stderr}"))
            .to_string()
    };
    let topology = line("topology:");
    for part in [
        "https_through_balancer=200",
        "client_address_seen=yes",
        "squid_second_fetch=HIT",
    ] {
        assert!(topology.contains(part), "{topology}");
    }
    let kill = line("fault=kill ");
    for part in [
        " lost=0 ",
        " duplicates=0 ",
        " unexplained=0 ",
        " lease_overlaps=0",
    ] {
        assert!(kill.contains(part), "{kill}");
    }
    let claims = line("claims=");
    assert!(
        claims.starts_with("claims=100000 duplicates=0 lost=0 "),
        "{claims}"
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
}
