//! The daemon as operators and pilots meet it: the Adder finishes, fails or cancels jobs from
//! their final reports; the watcher times out silent jobs; the runner isolates failing tasks
//! and, with leases, runs a `sync` task on one node per period.

mod common;

use std::time::Duration;

use common::{run, submit, Server, Site, Stack, TestJob};
use panda_core::{FileAttr, JobAttr, JobStatus, JobTable};
use panda_store::testing::{backends, TestDb};
use panda_store::{Backend, Store};
use serde_json::json;

struct Setup {
    _db: TestDb,
    _site: Site,
    server: Server,
    store: Store,
    env: Vec<(String, String)>,
}

async fn setup(backend: Backend) -> Setup {
    let Stack {
        db,
        site,
        server,
        store,
        env,
    } = Stack::start(backend, &["httpd"], &[]).await;
    Setup {
        _db: db,
        _site: site,
        server,
        store,
        env,
    }
}

/// Submits jobs and takes them as a pilot would, up to `running`.
async fn running_jobs(s: &Setup, names: &[&str]) -> Vec<i64> {
    let jobs: Vec<TestJob> = names.iter().map(|n| TestJob::new(n)).collect();
    running(s, jobs).await
}

async fn running(s: &Setup, jobs: Vec<TestJob>) -> Vec<i64> {
    let client = reqwest::Client::new();
    let ids = submit(&client, &s.server, &jobs).await;
    for _ in &ids {
        client
            .post(s.server.url("/server/panda/getJob"))
            .form(&[("siteName", "TEST_QUEUE")])
            .send()
            .await
            .expect("getJob");
    }
    for id in &ids {
        beat(
            s,
            json!({"jobId": id.to_string(), "state": "running", "attemptNr": 0}),
        )
        .await;
    }
    ids
}

async fn beat(s: &Setup, fields: serde_json::Value) -> std::collections::BTreeMap<String, String> {
    common::update_job(&s.server, fields).await
}

fn run_once(s: &Setup, task: &str) -> String {
    let out = run(&["daemon", "--run-once", task], &s.env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{task}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn report(name: &str) -> String {
    json!({format!("{name}.log.tgz"): {"guid": "aaaa-bbbb", "fsize": 1234, "adler32": "0a1b2c3d",
                                       "surl": "file://localhost/se/x"}})
    .to_string()
}

#[tokio::test]
async fn the_adder_finishes_fails_and_cancels_jobs_from_their_reports() {
    for backend in backends() {
        let s = setup(backend).await;
        let ids = running_jobs(&s, &["good", "corrupt", "killed", "failed"]).await;
        let finish = |id: i64, xml: String| json!({"jobId": id.to_string(), "state": "finished", "attemptNr": 0, "xml": xml});
        beat(&s, finish(ids[0], report("good"))).await;
        beat(&s, finish(ids[1], "this is not json".into())).await;
        s.store
            .modify_job(ids[2], |job, _| {
                job.set_str(JobAttr::commandToPilot, "tobekilled").ok();
                Ok(())
            })
            .await
            .expect("kill flag");
        beat(&s, json!({"jobId": ids[2].to_string(), "state": "failed", "attemptNr": 0, "pilotErrorCode": "1305"})).await;
        beat(&s, json!({"jobId": ids[3].to_string(), "state": "failed", "attemptNr": 0, "transExitCode": "3"})).await;

        let summary = run_once(&s, "add_main");
        assert!(summary.contains("add_main: ok"), "{summary}");

        let good = s.store.get_job(ids[0]).await.expect("read").expect("job");
        assert_eq!(good.status(), Some(JobStatus::Finished), "{backend:?}");
        assert_eq!(
            s.store.job_table(ids[0]).await.expect("table"),
            Some(JobTable::Archived)
        );
        let log = &good.files[0];
        assert_eq!(log.get_str(FileAttr::status), Some("ready"));
        assert_eq!(log.get_str(FileAttr::checksum), Some("ad:0a1b2c3d"));
        assert_eq!(log.get_i64(FileAttr::fsize), Some(1234));

        let corrupt = s.store.get_job(ids[1]).await.expect("read").expect("job");
        assert_eq!(corrupt.status(), Some(JobStatus::Failed));
        assert_eq!(corrupt.get_i64(JobAttr::ddmErrorCode), Some(200));
        assert!(corrupt
            .get_str(JobAttr::ddmErrorDiag)
            .is_some_and(|d| d.contains("not a JSON object")));
        let killed = s.store.get_job(ids[2]).await.expect("read").expect("job");
        assert_eq!(killed.status(), Some(JobStatus::Cancelled));
        let failed = s.store.get_job(ids[3]).await.expect("read").expect("job");
        assert_eq!(failed.status(), Some(JobStatus::Failed));
        assert_eq!(failed.get_str(JobAttr::transExitCode), Some("3"));
        assert!(
            run_once(&s, "add_main").contains("{}"),
            "nothing left to do"
        );
    }
}

#[tokio::test]
async fn reports_naming_the_wrong_files_or_lacking_checksums_fail_only_their_job() {
    let s = setup(Backend::Sqlite).await;
    let ids = running_jobs(&s, &["wrong", "nosum", "fine"]).await;
    let finish = |id: i64, xml: serde_json::Value| json!({"jobId": id.to_string(), "state": "finished", "attemptNr": 0, "xml": xml.to_string()});
    beat(
        &s,
        finish(
            ids[0],
            json!({"other.log.tgz": {"guid": "g", "fsize": 1, "adler32": "1"}}),
        ),
    )
    .await;
    beat(
        &s,
        finish(ids[1], json!({"nosum.log.tgz": {"guid": "g", "fsize": 1}})),
    )
    .await;
    beat(
        &s,
        finish(ids[2], serde_json::from_str(&report("fine")).expect("json")),
    )
    .await;
    run_once(&s, "add_main");
    let diag = |id| {
        let store = s.store.clone();
        async move {
            let job = store.get_job(id).await.expect("read").expect("job");
            (
                job.status(),
                job.get_str(JobAttr::ddmErrorDiag).unwrap_or("").to_string(),
            )
        }
    };
    let (status, text) = diag(ids[0]).await;
    assert_eq!(status, Some(JobStatus::Failed));
    assert!(text.contains("wrong.log.tgz is missing"), "{text}");
    let (status, text) = diag(ids[1]).await;
    assert_eq!(status, Some(JobStatus::Failed));
    assert!(text.contains("no checksum"), "{text}");
    assert_eq!(diag(ids[2]).await.0, Some(JobStatus::Finished));
}

#[tokio::test]
async fn the_watcher_fails_jobs_whose_pilot_went_silent() {
    for backend in backends() {
        let s = setup(backend).await;
        let ids = running_jobs(&s, &["silent", "chatty"]).await;
        let client = reqwest::Client::new();
        let sent = submit(&client, &s.server, &[TestJob::new("unanswered")]).await[0];
        client
            .post(s.server.url("/server/panda/getJob"))
            .form(&[("siteName", "TEST_QUEUE")])
            .send()
            .await
            .expect("getJob");
        s.store
            .set_config_value("watcher", "HEARTBEAT_TIMEOUT_production", "0.0005")
            .await
            .expect("config");
        s.store
            .set_config_value("watcher", "SENT_TIMEOUT", "0.03")
            .await
            .expect("config");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        beat(
            &s,
            json!({"jobId": ids[1].to_string(), "state": "running", "attemptNr": 0}),
        )
        .await;
        run_once(&s, "copyArchive");

        let silent = s.store.get_job(ids[0]).await.expect("read").expect("job");
        assert_eq!(silent.status(), Some(JobStatus::Failed), "{backend:?}");
        assert_eq!(silent.get_i64(JobAttr::jobDispatcherErrorCode), Some(100));
        assert!(silent
            .get_str(JobAttr::jobDispatcherErrorDiag)
            .is_some_and(|d| d.starts_with("lost heartbeat : ")));
        let chatty = s.store.get_job(ids[1]).await.expect("read").expect("job");
        assert_eq!(
            chatty.status(),
            Some(JobStatus::Running),
            "a fresh heartbeat keeps a job"
        );
        let unanswered = s.store.get_job(sent).await.expect("read").expect("job");
        assert_eq!(unanswered.status(), Some(JobStatus::Failed));
        assert_eq!(
            unanswered.get_i64(JobAttr::jobDispatcherErrorCode),
            Some(102)
        );
    }
}

#[tokio::test]
async fn a_panicking_or_hanging_task_does_not_stop_the_others() {
    for arguments in [json!(["panic"]), json!(["sleep", "3600"])] {
        let s = setup(Backend::Sqlite).await;
        let ids = running_jobs(&s, &["victim"]).await;
        s.store
            .set_config_value("watcher", "HEARTBEAT_TIMEOUT_production", "0.0003")
            .await
            .expect("config");
        let config = json!({
            "dummy_test": {"period": 1, "timeout": 1, "arguments": arguments},
            "copyArchive": {"period": 1}
        });
        let mut env = s.env.clone();
        env.push(("PANDA_DAEMON_CONFIG".into(), config.to_string()));
        let mut daemon = Server::start_until(&["daemon"], &env, "daemon started");
        let mut ended = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let job = s.store.get_job(ids[0]).await.expect("read").expect("job");
            if job.status() == Some(JobStatus::Failed) {
                ended = true;
                break;
            }
        }
        assert!(
            ended,
            "copyArchive kept running next to dummy_test {arguments}"
        );
        let logged = daemon.find_log_where(|l| {
            l.contains("dummy_test") && (l.contains("task panicked") || l.contains("timed out"))
        });
        assert!(
            logged.is_some(),
            "the failure of dummy_test {arguments} is logged"
        );
        assert!(daemon.terminate().success());
    }
}

fn runs_of(lines: &[String], task: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("task done") && l.contains(&format!("task=\"{task}\"")))
        .count()
}

#[tokio::test]
async fn a_sync_task_runs_once_per_period_across_nodes_and_survives_a_dead_node() {
    if !backends().contains(&Backend::Postgres) {
        eprintln!("note: lease test needs PostgreSQL (set PANDA_TEST_DATABASE_URL)");
        return;
    }
    let s = setup(Backend::Postgres).await;
    let mut env = s.env.clone();
    env.push((
        "PANDA_DAEMON_CONFIG".into(),
        json!({"dummy_test": {"period": 2, "sync": true}}).to_string(),
    ));
    let mut a = Server::start_until(&["daemon"], &env, "daemon started");
    let b = Server::start_until(&["daemon"], &env, "daemon started");
    let window = Duration::from_millis(7_000);
    // Both logs are buffered as they come; read one during the window, then the other.
    let la = a.lines_after(window);
    let lb = b.lines_after(Duration::from_millis(100));
    let (ra, rb) = (runs_of(&la, "dummy_test"), runs_of(&lb, "dummy_test"));
    assert!(
        ra + rb >= 3 && ra + rb <= 5,
        "about one run per 2 s period across both nodes: {ra} + {rb}"
    );
    // Kill the node that ran last (or either); the other takes over once the lease expires.
    let before_b = rb;
    a.kill_hard();
    let later = b.lines_after(Duration::from_millis(5_000));
    assert!(
        runs_of(&later, "dummy_test") > before_b,
        "the surviving node took the lease over"
    );
}

async fn children_of(store: &Store, parent: i64) -> Vec<i64> {
    let mut tx = store.begin(panda_store::TxMode::Read).await.expect("tx");
    let rows = tx
        .fetch(
            "SELECT pandaid FROM jobsactive4 WHERE parentid = $1",
            &[panda_core::Value::Int(Some(parent))],
            &[panda_core::ColumnType::BigInt],
        )
        .await
        .expect("children");
    rows.iter().filter_map(|r| r[0].as_i64()).collect()
}

#[tokio::test]
async fn failed_jobs_come_back_as_new_attempts_unless_a_rule_forbids_it() {
    for backend in backends() {
        let s = setup(backend).await;
        for (code, action, parameters) in [
            (1306, "no_retry", None),
            (1307, "limit_retry", Some("maxAttempt=0")),
        ] {
            s.store
                .add_retry_rule(&panda_store::RetryRule {
                    source: "pilotErrorCode".into(),
                    code,
                    diag: None,
                    action: action.into(),
                    parameters: parameters.map(str::to_string),
                })
                .await
                .expect("rule");
        }
        let jobs: Vec<TestJob> = ["retried", "norule", "limited"]
            .iter()
            .map(|n| {
                let mut job = TestJob::new(n);
                job.max_attempt = Some(2);
                job
            })
            .collect();
        let ids = running(&s, jobs).await;
        for (id, code) in ids.iter().zip(["1305", "1306", "1307"]) {
            beat(&s, json!({"jobId": id.to_string(), "state": "failed", "attemptNr": 0, "pilotErrorCode": code})).await;
        }
        let log = run_once(&s, "add_main");

        let children = children_of(&s.store, ids[0]).await;
        assert_eq!(children.len(), 1, "{backend:?}: one new attempt; {log}");
        let next = s
            .store
            .get_job(children[0])
            .await
            .expect("read")
            .expect("job");
        assert_eq!(next.status(), Some(JobStatus::Activated));
        assert_eq!(next.get_i64(JobAttr::attemptNr), Some(1));
        assert_eq!(next.get_i64(JobAttr::parentID), Some(ids[0]));
        assert_eq!(
            next.files[0].get_str(FileAttr::lfn),
            Some("retried.log.tgz.1")
        );
        assert!(
            next.get(JobAttr::pilotErrorCode).as_i64() == Some(0),
            "errors start afresh"
        );
        let old = s.store.get_job(ids[0]).await.expect("read").expect("job");
        assert_eq!(old.get_i64(JobAttr::taskBufferErrorCode), Some(106));
        assert!(children_of(&s.store, ids[1]).await.is_empty(), "no_retry");
        assert!(
            children_of(&s.store, ids[2]).await.is_empty(),
            "limit_retry to 0 attempts"
        );
    }
}

fn with_task(s: &Setup, config: serde_json::Value) -> Vec<(String, String)> {
    let mut env = s.env.clone();
    env.push(("PANDA_DAEMON_CONFIG".into(), config.to_string()));
    env
}

#[tokio::test]
async fn tmpwatch_removes_old_cache_files_only() {
    let s = setup(Backend::Sqlite).await;
    let cache = s._site.dir.path().join("cache");
    std::fs::create_dir_all(cache.join("sub")).expect("dirs");
    let old = cache.join("sub/old.tgz");
    let new = cache.join("new.tgz");
    std::fs::write(&old, "x").expect("old");
    std::fs::write(&new, "y").expect("new");
    let file = std::fs::File::options()
        .write(true)
        .open(&old)
        .expect("open");
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 3600))
        .expect("age it");
    let env = with_task(&s, json!({"tmpwatch": {"arguments": ["2"]}}));
    let out = run(&["daemon", "--run-once", "tmpwatch"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!old.exists(), "a file older than 2 h is removed");
    assert!(new.exists(), "a new file stays");
}

#[tokio::test]
async fn old_archived_jobs_move_to_the_archive_tables_or_are_deleted() {
    for backend in backends() {
        let s = setup(backend).await;
        let ids = running_jobs(&s, &["keep", "drop"]).await;
        for (id, name) in ids.iter().zip(["keep", "drop"]) {
            beat(&s, json!({"jobId": id.to_string(), "state": "finished", "attemptNr": 0, "xml": report(name)})).await;
        }
        run_once(&s, "add_main");
        let count = |sql: &'static str, id: i64| {
            let store = s.store.clone();
            async move {
                let mut tx = store.begin(panda_store::TxMode::Read).await.expect("tx");
                tx.fetch(
                    sql,
                    &[panda_core::Value::Int(Some(id))],
                    &[panda_core::ColumnType::BigInt],
                )
                .await
                .expect("count")
                .len()
            }
        };
        let env = with_task(&s, json!({"archive_retention": {"arguments": ["0"]}}));
        let out = run(&["daemon", "--run-once", "archive_retention"], &env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        for id in &ids {
            assert_eq!(
                count("SELECT pandaid FROM jobsarchived4 WHERE pandaid = $1", *id).await,
                0,
                "{backend:?}"
            );
            assert_eq!(
                count("SELECT pandaid FROM jobsarchived WHERE pandaid = $1", *id).await,
                1
            );
            assert_eq!(
                count(
                    "SELECT pandaid FROM filestable_arch WHERE pandaid = $1",
                    *id
                )
                .await,
                1
            );
            assert_eq!(
                count("SELECT pandaid FROM filestable4 WHERE pandaid = $1", *id).await,
                0
            );
        }
        let more = running_jobs(&s, &["gone"]).await;
        beat(&s, json!({"jobId": more[0].to_string(), "state": "finished", "attemptNr": 0, "xml": report("gone")})).await;
        run_once(&s, "add_main");
        let env = with_task(
            &s,
            json!({"archive_retention": {"arguments": ["0", "delete"]}}),
        );
        assert!(run(&["daemon", "--run-once", "archive_retention"], &env)
            .status
            .success());
        assert!(
            s.store.get_job(more[0]).await.expect("read").is_none(),
            "deleted"
        );
        assert_eq!(
            count(
                "SELECT pandaid FROM jobsarchived WHERE pandaid = $1",
                more[0]
            )
            .await,
            0
        );
    }
}

#[tokio::test]
async fn on_sigterm_a_running_task_finishes_before_the_daemon_stops() {
    let s = setup(Backend::Sqlite).await;
    let env = with_task(
        &s,
        json!({"dummy_test": {"period": 60, "timeout": 30, "arguments": ["sleep", "2"]}}),
    );
    let mut daemon = Server::start_until(&["daemon"], &env, "daemon started");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let pid = daemon.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = daemon.terminate_or_exited();
    assert!(status.success());
    let lines = daemon.lines_after(Duration::from_millis(100));
    let done = lines.iter().position(|l| l.contains("slept 2s"));
    let stopped = lines.iter().position(|l| l.contains("daemon stopped"));
    assert!(
        done.is_some() && done < stopped,
        "the run finished before the stop: {lines:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "and within the bound"
    );
}

#[tokio::test]
async fn a_report_for_another_attempt_is_dropped_and_the_job_waits() {
    let s = setup(Backend::Sqlite).await;
    let ids = running_jobs(&s, &["stale"]).await;
    beat(&s, json!({"jobId": ids[0].to_string(), "state": "finished", "attemptNr": 0, "xml": report("stale")})).await;
    s.store
        .modify_job(ids[0], |job, _| {
            job.set(JobAttr::attemptNr, panda_core::Value::Int(Some(1)));
            Ok(())
        })
        .await
        .expect("a newer attempt");
    run_once(&s, "add_main");
    let job = s.store.get_job(ids[0]).await.expect("read").expect("job");
    assert_eq!(
        job.status(),
        Some(JobStatus::Holding),
        "the job waits for its own report"
    );
    let mut tx = s.store.begin(panda_store::TxMode::Read).await.expect("tx");
    let left = tx
        .fetch(
            "SELECT pandaid FROM job_output_report WHERE pandaid = $1",
            &[panda_core::Value::Int(Some(ids[0]))],
            &[panda_core::ColumnType::BigInt],
        )
        .await
        .expect("reports");
    assert!(left.is_empty(), "the stale report is gone");
}

#[tokio::test]
async fn db_maintenance_analyzes_the_job_tables_where_autovacuum_is_off() {
    for backend in backends() {
        let s = setup(backend).await;
        let names: Vec<String> = (0..60).map(|i| format!("stats{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        running_jobs(&s, &names).await;
        if backend == Backend::Sqlite {
            let out = run_once(&s, "db_maintenance");
            assert!(out.contains("PRAGMA optimize"), "{out}");
            continue;
        }
        if s.store.autovacuum_on().await.expect("setting") {
            let out = run_once(&s, "db_maintenance");
            assert!(out.contains("autovacuum is on"), "{out}");
            continue;
        }
        let analyzed = || async {
            let mut tx = s.store.begin(panda_store::TxMode::Read).await.expect("tx");
            let rows = tx
                .fetch(
                    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = \
                     current_schema() AND relname = 'jobsactive4' AND last_analyze IS NOT NULL",
                    &[],
                    &[panda_core::ColumnType::Text],
                )
                .await
                .expect("statistics");
            !rows.is_empty()
        };
        assert!(!analyzed().await, "analyzed before the task ran");
        // The server's sessions report their changes to the statistics within seconds.
        let mut outputs = Vec::new();
        for _ in 0..20 {
            outputs.push(run_once(&s, "db_maintenance"));
            if analyzed().await {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(analyzed().await, "jobsactive4 never analyzed: {outputs:?}");
        let last = outputs.last().map(String::as_str).unwrap_or_default();
        assert!(last.contains("ANALYZE"), "{last}");
        // Done once, a table is left alone until it changes enough again.
        let again = run_once(&s, "db_maintenance");
        assert!(!again.contains("jobsactive4"), "{again}");
    }
}
