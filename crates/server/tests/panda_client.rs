//! The real panda-client 2.2.0 (PyPI) and its pbook against a real server, authenticated by
//! OIDC tokens signed by a test issuer, as a user would run them: jobs (submit, status, kill,
//! full status), tasks (insertTaskParams, getTaskStatus, killTask, finishTask, retryTask),
//! `pbook show` and `pbook kill`, and another user's kills refused; pbook's `set_secret`,
//! `list_secrets` and `delete_secret`.
//!
//! panda-client is installed by `tests/real-clients/install_pandaclient.sh`; without it the
//! test is skipped with a note, unless `CI` is set or `PANDA_REQUIRE_REAL_CLIENTS=1`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{db_env, install_pandaclient, scripts, value_of, Server, Site, TokenIssuer};
use panda_store::testing::{backends, TestDb};

/// Runs panda-client's python with `args` as the user holding `token`.
fn client(python: &str, server: &Server, config: &Path, token: &str, args: &[&str]) -> Output {
    let api = format!("{}/server/panda", server.base_url);
    Command::new(python)
        .args(args)
        .env("PANDA_URL_SSL", &api)
        .env("PANDA_URL", &api)
        .env("PANDACACHE_URL", &api)
        .env("PANDA_BEHIND_REAL_LB", "1")
        .env("PANDA_VERIFY_HOST", "off")
        .env("PANDA_CONFIG_ROOT", config)
        .env("PANDA_AUTH", "oidc")
        .env("PANDA_AUTH_VO", "atlas")
        .env("PANDA_AUTH_ID_TOKEN", token)
        .env_remove("X509_USER_PROXY")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python")
}

/// Asserts the driver printed each `key=value`.
fn assert_values(output: &Output, expected: &[(&str, &str)]) {
    let log = text(output);
    for (key, value) in expected {
        assert_eq!(
            value_of(output, key).as_deref(),
            Some(*value),
            "{key}: {log}"
        );
    }
}

/// The driver's `jobs` run: submit, status `activated`, one file, kill, full status
/// `cancelled`. Returns the PandaID.
fn assert_job_flow(jobs: &Output) -> String {
    assert_values(
        jobs,
        &[
            ("hello", "0"),
            ("getJobStatus", "0:activated"),
            ("files", "1"),
            ("killJobs", "0:[True]"),
            ("getFullJobStatus", "0:cancelled"),
        ],
    );
    value_of(jobs, "PandaID").unwrap_or_else(|| panic!("{}", text(jobs)))
}

/// A queued job of one user that another user may not kill and its owner may.
fn assert_only_the_owner_kills(
    owner: &dyn Fn(&[&str]) -> Output,
    other: &dyn Fn(&[&str]) -> Output,
    driver: &str,
) {
    let submitted = owner(&[driver, "submit", "ANALY_QUEUE"]);
    let id = value_of(&submitted, "PandaID").unwrap_or_else(|| panic!("{}", text(&submitted)));
    let refused = other(&[driver, "kill_job", &id]);
    assert_eq!(
        value_of(&refused, "killJobs").as_deref(),
        Some("0:[False]"),
        "{}",
        text(&refused)
    );
    let killed = owner(&[driver, "kill_job", &id]);
    assert_eq!(
        value_of(&killed, "killJobs").as_deref(),
        Some("0:[True]"),
        "{}",
        text(&killed)
    );
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn panda_client_and_pbook_manage_jobs_and_tasks_with_tokens() {
    let Some(python) = install_pandaclient() else {
        return;
    };
    let driver = scripts().join("pandaclient_api.py").display().to_string();
    let pbook = "import sys, pandaclient.PBookScript as p; sys.argv[0] = 'pbook'; p.main()";
    for backend in backends() {
        let db = TestDb::new(backend);
        let site = Site::new();
        let issuer = TokenIssuer::new("atlas");
        let mut env = db_env(&db);
        env.extend(site.env());
        env.extend(issuer.env());
        let server = Server::start(&[], &env);
        let config = site.dir.path().join("pandaconfig");
        let alice = issuer.sign(&issuer.claims("Alice Tester", &["atlas"]));
        let bob = issuer.sign(&issuer.claims("Bob Other", &["atlas"]));

        let jobs = client(
            &python,
            &server,
            &config,
            &alice,
            &[&driver, "jobs", "ANALY_QUEUE"],
        );
        assert_job_flow(&jobs);

        let tasks = client(
            &python,
            &server,
            &config,
            &alice,
            &[&driver, "tasks", "ANALY_QUEUE"],
        );
        let log = text(&tasks);
        let first = value_of(&tasks, "insertTaskParams").unwrap_or_else(|| panic!("{log}"));
        assert!(
            first.parse::<i64>().is_ok_and(|id| id >= 10_000_000),
            "{log}"
        );
        assert_values(
            &tasks,
            &[
                ("getTaskStatus", "0:registered"),
                ("killTask", "0:True"),
                ("afterKill", "aborted"),
                ("finishTask", "0:True"),
                ("retryTask", "0:0"),
                ("afterRetry", "ready"),
            ],
        );
        let third = value_of(&tasks, "forPbook").unwrap_or_else(|| panic!("{log}"));

        // pbook show lists Alice's tasks; pbook show <id> shows one; pbook kill kills it.
        let shown = client(&python, &server, &config, &alice, &["-c", pbook, "show"]);
        let out = text(&shown);
        assert!(out.contains("PBook user: Alice Tester"), "{out}");
        for id in [&first, &third] {
            assert!(out.contains(id.as_str()), "pbook show lists {id}: {out}");
        }
        let one = client(
            &python,
            &server,
            &config,
            &alice,
            &["-c", pbook, "show", &third],
        );
        let out = text(&one);
        assert!(out.contains(&third) && out.contains("registered"), "{out}");
        assert!(!out.contains(&first), "{out}");

        // Bob may neither kill Alice's task nor her job, and does not see her tasks.
        let refused = client(
            &python,
            &server,
            &config,
            &bob,
            &[&driver, "kill_task", &third],
        );
        assert_eq!(
            value_of(&refused, "killTask").as_deref(),
            Some("0:False"),
            "{}",
            text(&refused)
        );
        assert_only_the_owner_kills(
            &|args| client(&python, &server, &config, &alice, args),
            &|args| client(&python, &server, &config, &bob, args),
            &driver,
        );
        let bobs_view = client(&python, &server, &config, &bob, &["-c", pbook, "show"]);
        assert!(!text(&bobs_view).contains(&third), "{}", text(&bobs_view));

        let killed = client(
            &python,
            &server,
            &config,
            &alice,
            &["-c", pbook, "kill", &third],
        );
        let out = text(&killed);
        assert!(
            out.contains(&format!("Done, jediTaskID={third} will be killed")),
            "{out}"
        );
        let after = client(
            &python,
            &server,
            &config,
            &alice,
            &["-c", pbook, "show", &third],
        );
        assert!(text(&after).contains("aborted"), "{}", text(&after));

        // pbook's secrets: set a value and a file, list them in full, delete one; another
        // user sees none of them.
        let pbook_as = |token: &str, args: &[&str]| {
            let mut full = vec!["-c", pbook];
            full.extend_from_slice(args);
            text(&client(&python, &server, &config, token, &full))
        };
        let out = pbook_as(&alice, &["set_secret", "MQ_USER", "alice-broker"]);
        assert!(!out.contains("Failed"), "{out}");
        let secret_file = site.dir.path().join("secret.txt");
        std::fs::write(&secret_file, "file-secret-content").expect("secret file");
        let secret_path = secret_file.display().to_string();
        let out = pbook_as(
            &alice,
            &["set_secret", "token_file", &secret_path, "--is_file"],
        );
        assert!(!out.contains("Failed"), "{out}");
        let listed = pbook_as(&alice, &["list_secrets", "--full"]);
        assert!(
            listed.contains("MQ_USER") && listed.contains("alice-broker"),
            "{listed}"
        );
        // The file's content, base64 as pbook sends it, under its name without the prefix.
        assert!(listed.contains("token_file"), "{listed}");
        assert!(listed.contains("ZmlsZS1zZWNyZXQtY29udGVudA=="), "{listed}");
        let bobs = pbook_as(&bob, &["list_secrets"]);
        assert!(bobs.contains("No secrets"), "{bobs}");
        assert!(!bobs.contains("alice-broker"), "{bobs}");
        pbook_as(&alice, &["delete_secret", "MQ_USER"]);
        let listed = pbook_as(&alice, &["list_secrets", "--full"]);
        assert!(
            !listed.contains("MQ_USER") && listed.contains("token_file"),
            "{listed}"
        );
    }
}

/// Writes a proxy file as `voms-proxy-init` does: certificate, key, then the chain.
fn proxy_file(dir: &Path, name: &str, credential: &common::pki::Credential) -> String {
    credential.write_proxy_file(&dir.join(name))
}

/// Over HTTPS, with the host certificate verified against the grid CA directory: the client
/// authenticated by an X.509 proxy (`X509_USER_PROXY`), then by a token.
#[tokio::test]
async fn panda_client_over_https_with_a_proxy_and_with_a_token() {
    let Some(python) = install_pandaclient() else {
        return;
    };
    let driver = scripts().join("pandaclient_api.py").display().to_string();
    let pki = common::pki::GridPki::new();
    let db = TestDb::new(panda_store::Backend::Sqlite);
    let site = Site::new();
    let issuer = TokenIssuer::new("atlas");
    let mut env = db_env(&db);
    env.extend(site.env());
    env.extend(pki.env());
    env.extend(issuer.env());
    let cfg = site.dir.path().join("panda_server.cfg");
    std::fs::write(&cfg, "[server]\nbind_address = 127.0.0.1\n").expect("cfg");
    let server = Server::start(&["--config", &cfg.display().to_string()], &env);
    let api = format!("{}/server/panda", server.https_url());
    let run = |proxy: Option<&str>, token: Option<&str>, args: &[&str]| {
        let mut command = Command::new(&python);
        command
            .args(args)
            .env("PANDA_URL_SSL", &api)
            .env("PANDA_URL", &api)
            .env("PANDACACHE_URL", &api)
            .env("PANDA_BEHIND_REAL_LB", "1")
            .env("X509_CERT_DIR", pki.path("certificates"))
            .env("PANDA_CONFIG_ROOT", site.dir.path().join("pandaconfig"))
            .env_remove("PANDA_VERIFY_HOST")
            .stdin(std::process::Stdio::null());
        match (proxy, token) {
            (Some(proxy), _) => {
                command
                    .env("X509_USER_PROXY", proxy)
                    .env_remove("PANDA_AUTH");
            }
            (None, Some(token)) => {
                command
                    .env("PANDA_AUTH", "oidc")
                    .env("PANDA_AUTH_VO", "atlas")
                    .env("PANDA_AUTH_ID_TOKEN", token);
            }
            (None, None) => {}
        }
        command.output().expect("python")
    };
    let work = site.dir.path();
    let alice = pki.user("Alice Tester");
    let alice_proxy = proxy_file(work, "alice.proxy", &common::pki::proxy(&alice, false));
    let bob_proxy = proxy_file(
        work,
        "bob.proxy",
        &common::pki::proxy(&pki.user("Bob Other"), false),
    );

    let jobs = run(Some(&alice_proxy), None, &[&driver, "jobs", "ANALY_QUEUE"]);
    assert_job_flow(&jobs);
    // Bob's proxy may not kill Alice's queued job; hers may.
    assert_only_the_owner_kills(
        &|args| run(Some(&alice_proxy), None, args),
        &|args| run(Some(&bob_proxy), None, args),
        &driver,
    );

    // The same client with a token instead of a proxy: jobs, then tasks.
    let token = issuer.sign(&issuer.claims("Alice Tester", &["atlas"]));
    let jobs = run(None, Some(&token), &[&driver, "jobs", "ANALY_QUEUE"]);
    assert_job_flow(&jobs);
    let tasks = run(None, Some(&token), &[&driver, "tasks", "ANALY_QUEUE"]);
    assert_values(
        &tasks,
        &[("getTaskStatus", "0:registered"), ("killTask", "0:True")],
    );
}
