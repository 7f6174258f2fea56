//! Operations as systemd and an operator see them: the notify protocol, log files and SIGHUP
//! rotation, metrics, the install script and unit verification, shutdown under load, and
//! start-up errors.

mod common;

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{api_client, db_env, get_text, http, run, Server, BINARY};
use panda_store::testing::TestDb;
use panda_store::Backend;

fn kill(server: &Server, signal: &str) {
    let pid = server.pid();
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Reads notify datagrams until one satisfies `want`, within `limit`.
fn wait_for_message(
    socket: &UnixDatagram,
    limit: Duration,
    want: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            let done = want(&text);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("no matching notify message within {limit:?}; got {seen:?}");
}

/// A notify socket as systemd's, named in `env` with a 1 s watchdog; the directory holding it
/// lives as long as the returned guard.
fn listen_as_systemd(env: &mut Vec<(String, String)>) -> (tempfile::TempDir, UnixDatagram) {
    let dir = tempfile::tempdir().expect("dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    env.push(("NOTIFY_SOCKET".into(), socket_path.display().to_string()));
    env.push(("WATCHDOG_USEC".into(), "1000000".into()));
    (dir, socket)
}

#[tokio::test]
async fn systemd_hears_ready_status_lines_that_count_requests_and_stopping() {
    let db = TestDb::new(Backend::Sqlite);
    let mut env = db_env(&db);
    let (_dir, socket) = listen_as_systemd(&mut env);
    // systemd names the watched PID; a shell that execs the server knows it in advance.
    let mut shell = Command::new("sh");
    shell.args(["-c", "WATCHDOG_PID=$$ exec \"$0\"", BINARY]);
    let mut server = Server::start_command(shell, &[], &env, "listening on ");
    wait_for_message(&socket, Duration::from_secs(10), |m| m.contains("READY=1"));
    wait_for_message(&socket, Duration::from_secs(5), |m| {
        m.contains("WATCHDOG=1")
    });
    // The port answers once READY was sent.
    let client = http();
    for _ in 0..7 {
        let r = client
            .get(server.url("/server/panda/isAlive"))
            .send()
            .await
            .expect("alive");
        assert_eq!(r.status(), 200);
    }
    let seen = wait_for_message(&socket, Duration::from_secs(15), |m| {
        m.contains("Total requests: 7;")
    });
    let status = seen.last().expect("a status line");
    assert!(
        status.contains("STATUS=Total requests: 7; Idle/Busy workers"),
        "{status}"
    );
    assert!(
        status.contains("Requests/sec: ") && status.contains("Bytes served/sec: "),
        "{status}"
    );
    let exit = server.terminate();
    assert!(exit.success());
    wait_for_message(&socket, Duration::from_secs(5), |m| {
        m.contains("STOPPING=1")
    });
}

#[test]
fn the_daemon_tells_systemd_ready_and_a_status_line_of_its_tasks() {
    let db = TestDb::new(Backend::Sqlite);
    let mut env = db_env(&db);
    assert!(run(&["schema", "migrate"], &env).status.success());
    let (_dir, socket) = listen_as_systemd(&mut env);
    env.push((
        "PANDA_DAEMON_CONFIG".into(),
        r#"{"dummy_test": {"period": 1}, "add_main": {"period": 1}}"#.into(),
    ));
    let mut shell = Command::new("sh");
    shell.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" daemon", BINARY]);
    let mut daemon = Server::start_command(shell, &[], &env, "daemon started");
    wait_for_message(&socket, Duration::from_secs(10), |m| m.contains("READY=1"));
    let seen = wait_for_message(&socket, Duration::from_secs(15), |m| {
        m.contains("STATUS=Tasks: 2 enabled; Runs: ") && !m.contains("Runs: 0,")
    });
    let status = seen.last().expect("a status line");
    assert!(status.contains("failed: 0; Last run: "), "{status}");
    assert!(status.contains("WATCHDOG=1"), "{status}");
    assert!(daemon.terminate().success());
}

#[tokio::test]
async fn jobs_and_status_show_an_operator_the_database_and_the_node() {
    for backend in panda_store::testing::backends() {
        let db = TestDb::new(backend);
        let site = common::Site::new();
        let mut env = db_env(&db);
        env.extend(site.env());
        let server = Server::start(&[], &env);
        let client = http();
        let mut in_task = common::TestJob::new("in-task");
        in_task.task_id = Some(4242);
        let mut elsewhere = common::TestJob::new("elsewhere");
        elsewhere.site = Some("ANALY_QUEUE".into());
        elsewhere.label = "user".into();
        let ids = common::submit(&client, &server, &[in_task, elsewhere]).await;

        let all = run(&["jobs", "list"], &env);
        assert!(all.status.success(), "{backend:?}: {all:?}");
        let text = String::from_utf8_lossy(&all.stdout).into_owned();
        assert!(text.starts_with("PandaID\tstatus\tsite\ttask"), "{text}");
        assert_eq!(text.lines().count(), 3, "a header and two jobs: {text}");

        let by_task = run(&["jobs", "list", "--task", "4242"], &env);
        let text = String::from_utf8_lossy(&by_task.stdout).into_owned();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(
            lines[0].starts_with(&format!("{}\tactivated\tTEST_QUEUE\t4242\t", ids[0])),
            "{text}"
        );
        let by_site = run(
            &[
                "jobs",
                "list",
                "--site",
                "ANALY_QUEUE",
                "--status",
                "activated",
            ],
            &env,
        );
        let text = String::from_utf8_lossy(&by_site.stdout).into_owned();
        assert!(
            text.contains(&format!("{}\t", ids[1])) && !text.contains(&format!("{}\t", ids[0])),
            "{text}"
        );
        let limited = run(&["jobs", "list", "--limit", "1"], &env);
        assert!(String::from_utf8_lossy(&limited.stdout).contains("(first 1 shown"));
        let too_many = run(&["jobs", "list", "--limit", "1000000"], &env);
        assert_eq!(
            too_many.status.code(),
            Some(2),
            "a limit past 10000 is a usage error"
        );

        let show = run(&["jobs", "show", &ids[0].to_string()], &env);
        assert!(show.status.success(), "{show:?}");
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        for line in [
            format!("PandaID: {}", ids[0]),
            "jobStatus: activated".to_string(),
            "computingSite: TEST_QUEUE".to_string(),
            "jediTaskID: 4242".to_string(),
            "  log  in-task.log.tgz".to_string(),
            "status log:".to_string(),
        ] {
            assert!(
                text.contains(&line),
                "{backend:?}: {line} missing from:\n{text}"
            );
        }
        assert!(
            text.contains("  activated  TEST_QUEUE"),
            "the status log: {text}"
        );
        let unknown = run(&["jobs", "show", "999999999"], &env);
        assert_eq!(unknown.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("no job 999999999"));

        let status = run(&["status"], &env);
        assert!(status.status.success(), "{backend:?}: {status:?}");
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        for needle in [
            "DB schema check: OK",
            "queues: 4 (offline 1, online 2, test 1)",
            "jobs: 2 (activated 2)",
        ] {
            assert!(
                text.contains(needle),
                "{backend:?}: {needle} missing from:\n{text}"
            );
        }
        assert!(text.contains("web tier on this node: "), "{text}");
        drop(server);
    }
}

#[tokio::test]
async fn log_files_rotate_on_sighup_without_losing_a_line() {
    let db = TestDb::new(Backend::Sqlite);
    let logs = tempfile::tempdir().expect("logs");
    let mut env = db_env(&db);
    env.push(("PANDA_LOGDIR".into(), logs.path().display().to_string()));
    let mut server = Server::start_until(&[], &env, "");
    let base = wait_for_port(logs.path());
    let client = http();
    let access = logs.path().join("panda_server_access_log");
    let total = 200;
    for i in 0..total {
        if i == total / 2 {
            std::fs::rename(&access, logs.path().join("panda_server_access_log.1"))
                .expect("rotate");
            std::fs::rename(
                logs.path().join("panda-server.log"),
                logs.path().join("panda-server.log.1"),
            )
            .expect("rotate");
            kill(&server, "-HUP");
        }
        let r = client
            .get(format!("{base}/server/panda/isAlive?n={i}"))
            .send()
            .await
            .expect("alive");
        assert_eq!(r.status(), 200);
    }
    let exit = server.terminate();
    assert!(exit.success());
    let old = std::fs::read_to_string(logs.path().join("panda_server_access_log.1")).expect("old");
    let new = std::fs::read_to_string(&access).expect("new access log after SIGHUP");
    assert!(!new.is_empty(), "the reopened file receives lines");
    let mut found = HashSet::new();
    for line in old.lines().chain(new.lines()) {
        if let Some(rest) = line.split("isAlive?n=").nth(1) {
            let n: usize = rest
                .split(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("number");
            assert!(found.insert(n), "request {n} logged twice");
            assert!(
                line.contains("\" 200 9 "),
                "Apache format with status and bytes: {line}"
            );
        }
    }
    assert_eq!(
        found.len(),
        total,
        "every request is in the old or the new file"
    );
    assert!(
        logs.path().join("panda-server.log").exists(),
        "the application log was reopened"
    );
    assert!(logs.path().join("panda_server_error_log").exists());
}

/// With logs in files, the listening line is in the application log.
fn wait_for_port(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(dir.join("panda-server.log")).unwrap_or_default();
        if let Some(url) = text.lines().find_map(|l| l.split("listening on ").nth(1)) {
            return url.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the server never logged its port");
}

/// Parses Prometheus text: (name with labels, value) per sample; panics on a malformed line.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed: {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {l}"));
            (name.to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_move_with_requests() {
    let db = TestDb::new(Backend::Sqlite);
    let server = Server::start(&[], &db_env(&db));
    let metrics_url = server.metrics_url();
    let client = http();
    let read = |url: String| {
        let client = client.clone();
        async move { samples(&get_text(&client, url).await) }
    };
    let alive =
        "panda_http_requests_total{route=\"/server/panda/isAlive\",method=\"GET\",status=\"200\"}";
    let count = |s: &[(String, f64)]| {
        s.iter()
            .find(|(n, _)| n == alive)
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    };
    let before = read(metrics_url.clone()).await;
    for _ in 0..5 {
        client
            .get(server.url("/server/panda/isAlive"))
            .send()
            .await
            .expect("alive");
    }
    let after = read(metrics_url).await;
    assert_eq!(count(&after) - count(&before), 5.0);
    assert!(after.iter().any(|(n, _)| n.starts_with(
        "panda_http_request_duration_seconds_bucket{route=\"/server/panda/isAlive\",le=\"+Inf\"}"
    )));
    assert!(after.iter().any(|(n, _)| n == "panda_db_connections_max"));
}

#[test]
fn install_lays_out_every_file_and_the_units_verify() {
    let stage = tempfile::tempdir().expect("stage");
    let root = stage.path();
    let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
        .expect("utf-8");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(BINARY)
        .env("DESTDIR", root)
        .env("PANDA_USER", user.trim())
        .output()
        .expect("install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in [
        "opt/panda/bin/panda-server",
        "etc/panda/panda_server.cfg",
        "etc/panda/queues.json",
        "etc/panda/dbpasswd",
        "etc/sysconfig/panda_server_env",
        "etc/systemd/system/panda.service",
        "etc/systemd/system/panda_httpd.service",
        "etc/systemd/system/panda_daemon.service",
        "etc/logrotate.d/panda_server",
        "var/log/panda",
        "var/log/panda/pandacache",
    ] {
        assert!(root.join(path).exists(), "{path} missing");
    }
    // An existing configuration is never overwritten.
    std::fs::write(
        root.join("etc/panda/panda_server.cfg"),
        "[server]\n# mine\n",
    )
    .expect("edit");
    let again = Command::new("bash")
        .arg(&script)
        .arg(BINARY)
        .env("DESTDIR", root)
        .env("PANDA_USER", user.trim())
        .output()
        .expect("install");
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/panda/panda_server.cfg")).expect("cfg"),
        "[server]\n# mine\n"
    );

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "systemd-analyze is required in CI"
        );
        eprintln!("note: systemd-analyze missing; unit verification skipped");
        return;
    }
    // Verify the installed units with their paths pointing into the stage.
    let units = tempfile::tempdir().expect("units");
    let mut files = Vec::new();
    for unit in [
        "panda.service",
        "panda_httpd.service",
        "panda_daemon.service",
    ] {
        let text =
            std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).expect("unit");
        let staged = text.replace("/opt/panda", &root.join("opt/panda").display().to_string());
        let path = units.path().join(unit);
        std::fs::write(&path, staged).expect("write");
        files.push(path);
    }
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("verify");
    let messages = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && messages.trim().is_empty(),
        "systemd-analyze verify: {messages}"
    );
}

#[tokio::test]
async fn sigterm_during_a_burst_leaves_no_truncated_answer() {
    let db = TestDb::new(Backend::Sqlite);
    let mut server = Server::start(&[], &db_env(&db));
    let client = api_client();
    let stop_after = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let url = server.url("/api/v1/system/is_alive");
        let stopping = stop_after.clone();
        workers.push(tokio::spawn(async move {
            let (mut complete, deadline) = (0, Instant::now() + Duration::from_secs(20));
            while Instant::now() < deadline {
                match client.get(&url).send().await {
                    Ok(response) => {
                        let body = response
                            .text()
                            .await
                            .expect("an answer that started is complete");
                        assert_eq!(body, r#"{"success":true,"message":"","data":null}"#);
                        complete += 1;
                    }
                    // Refused or reset before an answer began: acceptable once stopping.
                    Err(_) if stopping.load(std::sync::atomic::Ordering::SeqCst) => break,
                    Err(e) => panic!("request failed before the signal: {e}"),
                }
            }
            complete
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_after.store(true, std::sync::atomic::Ordering::SeqCst);
    kill(&server, "-TERM");
    let mut answered = 0;
    for worker in workers {
        answered += worker.await.expect("worker");
    }
    assert!(answered > 0);
    assert!(server.terminate_or_exited().success());
}

#[tokio::test]
async fn a_stopping_node_fails_its_health_check_first_and_serves_until_the_drain_ends() {
    for backend in panda_store::testing::backends() {
        let db = TestDb::new(backend);
        let mut env = db_env(&db);
        env.push(("PANDA_DRAIN_DELAY".into(), "2".into()));
        let mut server = Server::start(&[], &env);
        let client = http();
        let ready = |client: &reqwest::Client| {
            let url = server.url("/health/ready");
            let client = client.clone();
            async move {
                let r = client.get(url).send().await.expect("health check");
                let status = r.status().as_u16();
                let cache = r.headers().get("cache-control").cloned();
                (status, r.text().await.expect("text"), cache)
            }
        };
        let (status, text, cache) = ready(&client).await;
        assert_eq!((status, text.as_str()), (200, "ready\n"), "{backend:?}");
        assert_eq!(
            cache.as_ref().and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        // A flood of checks costs the database at most one query a second; all answer.
        for _ in 0..200 {
            assert_eq!(ready(&client).await.0, 200, "{backend:?}");
        }

        let signalled = Instant::now();
        kill(&server, "-TERM");
        let mut draining = None;
        while signalled.elapsed() < Duration::from_millis(1500) {
            let (status, text, _) = ready(&client).await;
            // 404: HAProxy's `disable-on-404` takes the node out without closing requests.
            if status == 404 {
                draining = Some(text);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(draining.as_deref(), Some("draining\n"), "{backend:?}");
        // Still serving while the balancer takes the node out: a pilot call is answered.
        let alive = client
            .get(server.url("/server/panda/isAlive"))
            .send()
            .await
            .expect("served while draining");
        assert_eq!(alive.status(), 200);
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "{backend:?}: the checks took longer than the drain"
        );
        assert!(server.terminate_or_exited().success(), "{backend:?}");
        assert!(
            signalled.elapsed() >= Duration::from_secs(2),
            "{backend:?}: stopped before the drain delay ended"
        );
    }
}

#[test]
fn start_up_errors_name_the_path_or_port() {
    let db = TestDb::new(Backend::Sqlite);
    let mut env = db_env(&db);
    env.push(("PANDA_LOGDIR".into(), "/etc/hostname/logs".into()));
    let out = run(&["httpd"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/etc/hostname/logs"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut env = db_env(&db);
    env.push(("PANDA_PSERVERPORTHTTP".into(), port.to_string()));
    env.push(("PANDA_METRICS_ADDRESS".into(), "off".into()));
    let out = run(&[], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "{stderr}");
}

#[test]
fn the_shipped_logrotate_file_rotates_every_log_once() {
    let have = Command::new("logrotate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            !common::required(),
            "logrotate is needed (apt-get install logrotate)"
        );
        eprintln!("note: skipped: logrotate is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let logs = dir.path().join("log");
    std::fs::create_dir_all(&logs).expect("logs");
    for name in [
        "panda_server_access_log",
        "panda_server_error_log",
        "panda-httpd.log",
    ] {
        std::fs::write(logs.join(name), "a line\n").expect("log");
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/logrotate/panda_server");
    let text = std::fs::read_to_string(shipped).expect("logrotate file");
    let conf = dir.path().join("panda_server");
    std::fs::write(
        &conf,
        text.replace("/var/log/panda", &logs.display().to_string()),
    )
    .expect("conf");
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.path().join("state"))
        .arg(&conf)
        .output()
        .expect("logrotate");
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "panda_server_access_log",
        "panda_server_error_log",
        "panda-httpd.log",
    ] {
        assert!(
            logs.join(format!("{name}.1")).exists(),
            "{name} was not rotated"
        );
    }
}

#[tokio::test]
async fn files_under_cache_count_their_bytes() {
    let db = TestDb::new(Backend::Sqlite);
    let home = tempfile::tempdir().expect("home");
    let mut env = db_env(&db);
    env.push(("PANDA_HOME".into(), home.path().display().to_string()));
    let server = Server::start(&[], &env);
    let cache = home.path().join("cache");
    std::fs::create_dir_all(&cache).expect("cache");
    std::fs::write(cache.join("sandbox.tgz"), vec![7u8; 100_000]).expect("file");
    let client = http();
    let served = |text: String| {
        text.lines()
            .find_map(|l| l.strip_prefix("panda_http_response_bytes_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("the bytes counter")
    };
    let before = served(get_text(&client, server.metrics_url()).await);
    let file = client
        .get(server.url("/cache/sandbox.tgz"))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(file.len(), 100_000);
    let after = served(get_text(&client, server.metrics_url()).await);
    assert!(
        after - before >= 100_000,
        "counted {} bytes",
        after - before
    );
}
