//! The `panda-server` binary as an operator and a client meet it: start-up with no
//! configuration, health endpoints, clean stop, the schema commands and bad input.

mod common;

use common::{api_client, db_env, run, Server};
use panda_store::testing::{backends, TestDb};
use panda_store::{Backend, SchemaVersion, Store, StoreOptions, SCHEMA_VERSION};

#[tokio::test]
async fn starts_without_config_answers_health_checks_and_stops_on_sigterm() {
    for backend in backends() {
        let db = TestDb::new(backend);
        let home = tempfile::tempdir().expect("home");
        let mut env = db_env(&db);
        env.push(("PANDA_HOME".into(), home.path().display().to_string()));
        let mut server = Server::start(&[], &env);
        assert!(
            server.base_url.starts_with("http://127.0.0.1:"),
            "{}",
            server.base_url
        );

        let client = api_client();
        let alive = client
            .get(server.url("/api/v1/system/is_alive"))
            .send()
            .await
            .expect("get");
        assert_eq!(alive.status(), 200);
        let body: serde_json::Value = alive.json().await.expect("json");
        assert_eq!(
            body,
            serde_json::json!({"success": true, "message": "", "data": null})
        );

        let legacy = client
            .get(server.url("/server/panda/isAlive"))
            .send()
            .await
            .expect("get");
        assert_eq!(legacy.status(), 200);
        assert_eq!(legacy.text().await.expect("text"), "alive=yes");

        let missing = client
            .get(server.url("/no/such/path"))
            .send()
            .await
            .expect("get");
        assert_eq!(missing.status(), 404);
        let forbidden = client
            .post(server.url("/server/panda/noSuchMethod"))
            .send()
            .await
            .expect("post");
        assert_eq!(forbidden.status(), 403);
        assert_eq!(
            forbidden.text().await.expect("text"),
            "ERROR : method noSuchMethod is forbidden"
        );

        let status = server.terminate();
        assert!(status.success(), "{backend:?}: exit status {status:?}");
    }
}

#[tokio::test]
async fn httpd_and_daemon_run_separately_and_stop_on_sigterm() {
    for backend in backends() {
        let db = TestDb::new(backend);
        let env = db_env(&db);
        assert!(run(&["schema", "migrate"], &env).status.success());

        let mut web = Server::start(&["httpd"], &env);
        let alive = api_client()
            .get(web.url("/server/panda/isAlive"))
            .send()
            .await
            .expect("get");
        assert_eq!(alive.text().await.expect("text"), "alive=yes");
        let mut daemon = Server::start_until(&["daemon"], &env, "daemon started");
        assert!(
            daemon.base_url.is_empty(),
            "the daemon alone does not listen"
        );

        assert!(daemon.terminate().success(), "{backend:?}: daemon exit");
        assert!(web.terminate().success(), "{backend:?}: httpd exit");
    }
}

/// A port free now, for settings that need a fixed one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn the_web_tier_and_the_daemon_share_one_node_and_one_configuration() {
    // The operations page's layout: both children read the same metrics_address.
    let db = TestDb::new(panda_store::Backend::Sqlite);
    let mut env = db_env(&db);
    assert!(run(&["schema", "migrate"], &env).status.success());
    let (web_port, daemon_port) = (free_port(), free_port());
    env.push((
        "PANDA_METRICS_ADDRESS".into(),
        format!("127.0.0.1:{web_port}"),
    ));
    env.push((
        "PANDA_DAEMON_METRICS_ADDRESS".into(),
        format!("127.0.0.1:{daemon_port}"),
    ));
    let mut web = Server::start(&["httpd"], &env);
    let mut daemon = Server::start_until(&["daemon"], &env, "daemon started");
    let client = api_client();
    for (port, what) in [(web_port, "web tier"), (daemon_port, "daemon")] {
        let text = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what} metrics: {e}"))
            .text()
            .await
            .expect("text");
        assert!(text.contains("# TYPE"), "{what}: {text}");
    }
    assert!(daemon.terminate().success(), "the daemon kept running");
    assert!(web.terminate().success(), "the web tier kept running");
}

#[tokio::test]
async fn a_loopback_caller_without_credentials_is_the_local_operator_in_local_mode() {
    let db = TestDb::new(panda_store::Backend::Sqlite);
    let server = Server::start(&[], &db_env(&db));
    let client = api_client();
    let body: serde_json::Value = client
        .get(server.url("/api/v1/system/get_attributes"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(body["success"], true);
    assert_eq!(
        body["data"]["environment"]["SSL_CLIENT_S_DN"],
        "/CN=local operator"
    );
    assert_eq!(body["data"]["environment"]["PANDA_PRODUCTION_ROLE"], true);

    let with_token = client
        .get(server.url("/api/v1/system/get_attributes"))
        .bearer_auth("not-a-valid-token")
        .header("Origin", "atlas")
        .send()
        .await
        .expect("get");
    assert_eq!(
        with_token.status(),
        403,
        "credentials replace the local identity, and a bad token is refused"
    );
}

#[tokio::test]
async fn with_a_config_file_loopback_callers_are_not_trusted_unless_configured() {
    let db = TestDb::new(panda_store::Backend::Sqlite);
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("panda_server.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndbname = {}\nbind_address = 127.0.0.1\n",
            db.config.name
        ),
    )
    .expect("write cfg");
    let server = Server::start(&["--config", &cfg.display().to_string()], &[]);
    let body: serde_json::Value = api_client()
        .get(server.url("/api/v1/system/get_attributes"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(body["success"], false);
    assert_eq!(body["message"], "SSL secure connection is required");
}

#[tokio::test]
async fn schema_check_and_migrate_from_the_command_line() {
    for backend in backends() {
        let db = TestDb::new(backend);
        let env = db_env(&db);

        let fresh = run(&["schema", "check"], &env);
        assert_eq!(
            fresh.status.code(),
            Some(1),
            "{backend:?}: a fresh database fails the check"
        );
        let said = String::from_utf8_lossy(&fresh.stdout);
        assert!(said.contains("DB schema check: FAILED"), "{said}");
        let upstream_layout =
            backend == Backend::Postgres && panda_store::testing::upstream_template().is_some();
        if backend == Backend::Postgres {
            // It names what `schema migrate` would add: on upstream's layout only our
            // additions. (A missing SQLite file is said as such.)
            assert!(
                said.contains("index jobsactive4_dispatch_idx")
                    && said.contains("sequence jedi_tasks_id_seq"),
                "{said}"
            );
            assert_eq!(
                said.contains("table jobsactive4,"),
                !upstream_layout,
                "{said}"
            );
        }

        let migrated = run(&["schema", "migrate"], &env);
        assert!(migrated.status.success(), "{migrated:?}");
        // A copy of a database upstream's scripts made starts at their layout.
        let from = if upstream_layout { "0.1.6" } else { "empty" };
        assert!(String::from_utf8_lossy(&migrated.stdout)
            .contains(&format!("{from} -> {SCHEMA_VERSION}")));
        let again = run(&["schema", "migrate"], &env);
        assert!(String::from_utf8_lossy(&again.stdout)
            .contains(&format!("already at {SCHEMA_VERSION}")));

        let ok = run(&["schema", "check"], &env);
        assert!(ok.status.success(), "{ok:?}");
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout).trim(),
            "DB schema check: OK"
        );

        let store = Store::open(&db.config, StoreOptions::default())
            .await
            .expect("open");
        for (version, words) in [((0, 1, 5), "older"), ((0, 2, 0), "newer")] {
            let (a, b, c) = version;
            store
                .force_schema_version(SchemaVersion::new(a, b, c))
                .await
                .expect("fake a version");
            let out = run(&["schema", "check"], &env);
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{backend:?}: {text}");
            assert!(
                text.contains(&format!("{a}.{b}.{c}"))
                    && text.contains(&SCHEMA_VERSION.to_string()),
                "{text}"
            );
            assert!(text.contains(words), "{text}");
        }
        let refused = run(&["httpd"], &env);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "the web tier refuses a newer database"
        );
        assert!(String::from_utf8_lossy(&refused.stderr).contains("newer"));
        store.close().await;
    }
}

/// Settings for PostgreSQL on a port where nothing listens, and that port.
fn unreachable_database_env() -> (Vec<(String, String)>, u16) {
    let closed_port = free_port();
    let env = [
        ("PANDA_CONFIG", "none"),
        ("PANDA_BACKEND", "postgres"),
        ("PANDA_DBHOST", "127.0.0.1"),
        ("PANDA_DBPORT", &closed_port.to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    (env, closed_port)
}

#[test]
fn an_unreachable_database_is_one_clear_line_and_a_failure_exit() {
    let (env, closed_port) = unreachable_database_env();
    for args in [&["schema", "check"][..], &["httpd"][..]] {
        let out = run(args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let error_lines: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("panda-server:"))
            .collect();
        assert_eq!(error_lines.len(), 1, "{stderr}");
        assert!(
            error_lines[0].contains(&format!("127.0.0.1:{closed_port}")),
            "{stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

#[test]
fn a_fatal_start_up_error_lands_in_the_error_log_too() {
    let logdir = tempfile::tempdir().expect("logdir");
    let (mut env, closed_port) = unreachable_database_env();
    env.push(("PANDA_LOGDIR".into(), logdir.path().display().to_string()));
    let out = run(&["httpd"], &env);
    assert_eq!(out.status.code(), Some(1));
    let errors = std::fs::read_to_string(logdir.path().join("panda_server_error_log"))
        .expect("the error log");
    assert!(
        errors.contains("cannot run") && errors.contains(&format!("127.0.0.1:{closed_port}")),
        "{errors}"
    );
}

#[test]
fn a_missing_sqlite_file_is_named_and_never_created_by_a_check() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("mistyped.db");
    let env: Vec<(String, String)> = [
        ("PANDA_CONFIG", "none"),
        ("PANDA_DBNAME", &path.display().to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let check = run(&["schema", "check"], &env);
    assert_eq!(check.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains("DB schema check: FAILED") && stdout.contains("does not exist"),
        "{stdout}"
    );
    let httpd = run(&["httpd"], &env);
    assert_eq!(httpd.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&httpd.stderr).contains("does not exist"));
    assert!(!path.exists(), "a check created {}", path.display());
    // `schema migrate` creates it, and the check then passes.
    assert!(run(&["schema", "migrate"], &env).status.success());
    assert!(run(&["schema", "check"], &env).status.success());
}

#[test]
fn queues_load_refuses_an_unknown_status_and_list_prints_plain_words() {
    let db = TestDb::new(panda_store::Backend::Sqlite);
    let env = db_env(&db);
    assert!(run(&["schema", "migrate"], &env).status.success());
    let dir = tempfile::tempdir().expect("dir");
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, r#"{"Q1": {"status": "bogus"}}"#).expect("write");
    let out = run(&["queues", "load", &bogus.display().to_string()], &env);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Q1") && stderr.contains("bogus"),
        "{stderr}"
    );
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"Q2": {"status": "brokeroff", "type": "analysis"}}"#,
    )
    .expect("write");
    assert!(run(&["queues", "load", &good.display().to_string()], &env)
        .status
        .success());
    let listed = run(&["queues", "list"], &env);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "Q2\tbrokeroff\tanalysis"
    );
}

#[test]
fn a_malformed_config_file_names_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("panda_server.cfg");
    let cfg_arg = cfg.display().to_string();

    std::fs::write(&cfg, "[server]\ndbhost = db\nthis line is junk\n").expect("write");
    let out = run(&["--config", &cfg_arg, "schema", "check"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&cfg_arg) && stderr.contains("line 3"),
        "{stderr}"
    );

    std::fs::write(&cfg, "[server]\ndbhost = db\npserverport = https\n").expect("write");
    let out = run(&["--config", &cfg_arg, "schema", "check"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("pserverport"),
        "{stderr}"
    );

    let missing = run(&["--config", "/nonexistent/panda_server.cfg", "httpd"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/panda_server.cfg"));
}

#[test]
fn version_and_help_are_there_for_a_new_user() {
    let version = run(&["--version"], &[]);
    assert!(version.status.success());
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(version.starts_with("panda-server "), "{version}");
    // The commit the binary was built from, as git names it here.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    match head {
        Some(head) => assert!(version.contains(&format!("(commit {head}")), "{version}"),
        None => assert!(version.contains("(commit unknown)"), "{version}"),
    }
    let help = run(&["--help"], &[]);
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["httpd", "daemon", "schema", "jobs", "status", "--config"] {
        assert!(text.contains(word), "help lacks {word}: {text}");
    }
}
