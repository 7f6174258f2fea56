//! The real pilot (PyPI panda-pilot 3.7.0.36) against the real server: a job submitted to a
//! queue goes activated → sent → starting → running → holding, its file report is stored, and
//! a failing payload ends in holding with the pilot's error codes.
//!
//! The pilot is installed by `tests/real-clients/install_pilot.sh` (a download from PyPI).
//! When that is impossible the test is skipped with a note, unless `CI` is set or
//! `PANDA_REQUIRE_REAL_CLIENTS=1`, where it fails. The pilot runs with `PILOT_NOKILL=1`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    db_env, install_pandaclient, install_pilot, scripts, submit, value_of, Server, Site, TestJob,
};
use panda_core::{ColumnType, JobAttr, JobStatus, Value};
use panda_store::testing::TestDb;
use panda_store::{Backend, Store, StoreOptions, TxMode};

/// `run_pilot.sh` for one pilot on TEST_QUEUE asking for `label` jobs, bounded to 240 s.
fn pilot_command(pilot: &Path, server_url: &str, label: &str, workdir: &Path) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(scripts().join("run_pilot.sh"))
        .env("PANDA_SERVER_URL", server_url)
        .env("PILOT_QUEUE", "TEST_QUEUE")
        .env("PILOT_LABEL", label)
        .env("PILOT_WORKDIR", workdir)
        .env("PILOT_DIR", pilot)
        .env("PILOT_TIMEOUT", "240")
        .env("PILOT_NOKILL", "1");
    command
}

/// The same over HTTPS with a pilot token and the grid CAs.
fn https_pilot_command(
    pilot: &Path,
    server: &Server,
    label: &str,
    workdir: &Path,
    token_file: &Path,
    pki: &common::pki::GridPki,
    site: &Site,
) -> Command {
    let mut command = pilot_command(pilot, &server.https_url(), label, workdir);
    command
        .env("PILOT_TOKEN_FILE", token_file)
        .env("PILOT_TOKEN_ORIGIN", "atlas.pilot")
        .env("X509_CERT_DIR", pki.path("certificates"))
        .env(
            "PILOT_STORAGEDATA_URL",
            site.dir.path().join("cache/ddmendpoints.json"),
        );
    command
}

fn run_pilot(pilot: &Path, server_url: &str, workdir: &Path) -> i32 {
    let status = pilot_command(pilot, server_url, "ptest", workdir)
        .status()
        .expect("run run_pilot.sh");
    status.code().unwrap_or(-1)
}

fn pilot_output(workdir: &Path) -> String {
    std::fs::read_to_string(workdir.join("pilot.out")).unwrap_or_default()
}

async fn status_history(store: &Store, id: i64) -> Vec<String> {
    let mut tx = store.begin(TxMode::Read).await.expect("tx");
    let rows = tx
        .fetch(
            "SELECT jobstatus FROM jobs_statuslog WHERE pandaid = $1 ORDER BY modiftime_extended",
            &[Value::Int(Some(id))],
            &[ColumnType::Text],
        )
        .await
        .expect("status log");
    rows.iter().map(|r| r[0].render()).collect()
}

async fn output_report(store: &Store, id: i64) -> Option<(String, String)> {
    let mut tx = store.begin(TxMode::Read).await.expect("tx");
    let rows = tx
        .fetch(
            "SELECT jobstatus, data FROM job_output_report WHERE pandaid = $1",
            &[Value::Int(Some(id))],
            &[ColumnType::Text, ColumnType::Text],
        )
        .await
        .expect("report");
    rows.first().map(|r| (r[0].render(), r[1].render()))
}

/// A SQLite server setup for the pilot: the pilot's queue, and DDM endpoints in `cache_dir`
/// pointing at a local storage directory.
fn pilot_site(extra: &[(&str, &str)]) -> (TestDb, Site, Vec<(String, String)>) {
    let db = TestDb::new(Backend::Sqlite);
    let site = Site::new();
    let se = site.dir.path().join("se");
    std::fs::create_dir_all(&se).expect("se");
    let made = Command::new("python3")
        .arg(scripts().join("make_ddmendpoints.py"))
        .arg(site.dir.path().join("cache/ddmendpoints.json"))
        .arg(&se)
        .arg("TEST_DISK")
        .arg("TEST_QUEUE")
        .status()
        .expect("make_ddmendpoints.py");
    assert!(made.success());
    let mut env = db_env(&db);
    env.extend(site.env());
    let queues = scripts().join("pilot_queue.json");
    env.push((
        "PANDA_QUEUE_CONFIG_FILE".into(),
        queues.display().to_string(),
    ));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (db, site, env)
}

#[tokio::test]
async fn the_real_pilot_runs_a_job_end_to_end() {
    let Some(pilot) = install_pilot() else { return };
    let (db, site, env) = pilot_site(&[]);
    let server = Server::start(&[], &env);
    let store = Store::open(&db.config, StoreOptions::default())
        .await
        .expect("open");
    let client = reqwest::Client::new();

    let mut good = TestJob::new("pilot.hello");
    good.label = "ptest".into();
    good.priority = 2000;
    let mut bad = TestJob::new("pilot.fails");
    bad.label = "ptest".into();
    bad.priority = 1000;
    bad.parameters = "/bin/sh -c 'echo failing; exit 3'".into();
    let ids = submit(&client, &server, &[good, bad]).await;

    // Two pilots at once, as on a site; each takes one job, whichever it gets.
    let runs: Vec<(i32, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["pilot-1", "pilot-2"]
            .iter()
            .map(|name| {
                let work = site.dir.path().join(name);
                let (pilot, url) = (&pilot, &server.base_url);
                scope.spawn(move || (run_pilot(pilot, url, &work), pilot_output(&work)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pilot thread"))
            .collect()
    });
    let ran = |id: i64| {
        runs.iter()
            .find(|(_, out)| out.contains(&format!("'PandaID': {id},")))
            .cloned()
            .unwrap_or_else(|| (-1, format!("no pilot ran job {id}: {runs:?}")))
    };
    let (rc, output) = ran(ids[0]);
    assert_eq!(rc, 0, "the pilot failed; its output:\n{output}");
    let job = store.get_job(ids[0]).await.expect("read").expect("job");
    assert_eq!(
        job.status(),
        Some(JobStatus::Holding),
        "pilot output:\n{output}"
    );
    assert_eq!(job.get_str(JobAttr::transExitCode), Some("0"));
    assert_eq!(
        status_history(&store, ids[0]).await,
        [
            "defined",
            "activated",
            "sent",
            "starting",
            "running",
            "holding"
        ]
    );
    let (reported, data) = output_report(&store, ids[0]).await.expect("a file report");
    assert_eq!(reported, "finished", "pilot output:\n{output}");
    assert!(data.contains("pilot.hello.log.tgz"), "{data}");

    let (rc, output) = ran(ids[1]);
    let job = store.get_job(ids[1]).await.expect("read").expect("job");
    assert_eq!(
        job.status(),
        Some(JobStatus::Holding),
        "pilot rc {rc}, output:\n{output}"
    );
    assert_eq!(job.get_str(JobAttr::transExitCode), Some("3"));
    assert!(
        job.get_i64(JobAttr::pilotErrorCode).is_some_and(|c| c != 0),
        "pilot error code stored"
    );
    let (reported, _) = output_report(&store, ids[1]).await.expect("a file report");
    assert_eq!(reported, "failed");
}

/// The whole chain with the real clients: panda-client submits, the pilot runs the job, the
/// daemon's Adder finishes it, and panda-client's getFullJobStatus reports `finished`.
#[tokio::test]
async fn panda_client_pilot_and_daemon_take_a_job_to_finished() {
    let Some(pilot) = install_pilot() else { return };
    let Some(python) = install_pandaclient() else {
        return;
    };
    let (_db, site, env) = pilot_site(&[("PANDA_DAEMON_CONFIG", r#"{"add_main": {"period": 1}}"#)]);
    let server = Server::start(&[], &env);
    let client = |args: &[&str]| {
        let api = format!("{}/server/panda", server.base_url);
        Command::new(&python)
            .arg(scripts().join("pandaclient_job.py"))
            .args(args)
            .env("PANDA_URL_SSL", &api)
            .env("PANDA_URL", &api)
            .env("PANDACACHE_URL", &api)
            .env("PANDA_BEHIND_REAL_LB", "1")
            .env("PANDA_VERIFY_HOST", "off")
            .env("PANDA_CONFIG_ROOT", site.dir.path().join("pandaconfig"))
            .env_remove("PANDA_AUTH")
            .output()
            .expect("pandaclient_job.py")
    };
    let submitted = client(&["submit", "TEST_QUEUE", "client.hello", "/bin/echo", "hello"]);
    let id = value_of(&submitted, "PandaID").unwrap_or_else(|| {
        panic!(
            "panda-client did not submit: {}{}",
            String::from_utf8_lossy(&submitted.stdout),
            String::from_utf8_lossy(&submitted.stderr)
        )
    });
    let work = site.dir.path().join("pilot");
    let rc = run_pilot(&pilot, &server.base_url, &work);
    assert_eq!(rc, 0, "pilot output:\n{}", pilot_output(&work));
    let mut status = String::new();
    for _ in 0..60 {
        status = value_of(&client(&["status", &id]), "jobStatus").unwrap_or_default();
        if status == "finished" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(status, "finished", "panda-client sees the job finished");
}

/// The real pilot over HTTPS, authenticated by an OIDC token file with the pilot role
/// (`Origin: atlas.pilot`), the server certificate verified against the grid CA directory.
#[tokio::test]
async fn the_real_pilot_works_over_https_with_a_token() {
    let Some(pilot) = install_pilot() else { return };
    let pki = common::pki::GridPki::new();
    let issuer = common::TokenIssuer::new("atlas");
    let (db, site, mut env) = pilot_site(&[]);
    env.extend(pki.env());
    env.extend(issuer.env());
    let server = Server::start(&[], &env);
    let store = Store::open(&db.config, StoreOptions::default())
        .await
        .expect("open");
    let mut job = TestJob::new("pilot.https");
    job.label = "ptest".into();
    let ids = submit(&reqwest::Client::new(), &server, &[job]).await;

    let token = issuer.sign(&issuer.claims("Pilot Factory", &["atlas", "atlas/pilot"]));
    let token_file = site.dir.path().join("pilot.token");
    std::fs::write(&token_file, token).expect("token");
    let work = site.dir.path().join("pilot-https");
    let status = https_pilot_command(&pilot, &server, "ptest", &work, &token_file, &pki, &site)
        .status()
        .expect("run_pilot.sh");
    let talk = || {
        pilot_output(&work)
            .lines()
            .filter(|l| {
                ["curl", "StatusCode", "server", "WARNING", "ERROR"]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(status.code(), Some(0), "pilot output:\n{}", talk());
    let job = store.get_job(ids[0]).await.expect("read").expect("job");
    assert_eq!(
        job.status(),
        Some(JobStatus::Holding),
        "pilot output:\n{}",
        talk()
    );
    assert_eq!(job.get_str(JobAttr::transExitCode), Some("0"));
    // The pilot was the token's holder, over HTTPS.
    assert!(server
        .find_log_where(|l| l.contains("/server/panda/getJob") && l.contains("status=200"))
        .is_some());
}

/// On a `unified` queue the pilot replaces its production proxy by a user proxy for a user
/// job: pilot3's atlas plugin asks `getProxy` for `role=atlas, dn=atlpilo2`, here over HTTPS
/// with a pilot token, and gets the proxy the operator registered with `panda-server creds`.
#[tokio::test]
async fn the_real_pilot_fetches_the_registered_user_proxy_on_a_unified_queue() {
    let Some(pilot) = install_pilot() else { return };
    // The atlas plugin checks proxies with arcproxy (Debian's nordugrid-arc-client) and runs
    // in a mount namespace (run_pilot.sh says why).
    let tools = Command::new("sh")
        .args(["-c", "command -v arcproxy && unshare -m true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !tools {
        assert!(
            !common::required(),
            "arcproxy (nordugrid-arc-client) and unshare -m (root) are needed"
        );
        eprintln!("note: unified-queue pilot test skipped: no arcproxy or no mount namespace");
        return;
    }
    let pki = common::pki::GridPki::new();
    let issuer = common::TokenIssuer::new("atlas");
    let (_db, site, mut env) = pilot_site(&[]);
    env.extend(pki.env());
    env.extend(issuer.env());
    // The pilot's queue, as a unified one.
    let mut queues: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(scripts().join("pilot_queue.json")).expect("queue file"),
    )
    .expect("queue json");
    queues["TEST_QUEUE"]["type"] = "unified".into();
    let queue_file = site.dir.path().join("unified_queue.json");
    std::fs::write(&queue_file, queues.to_string()).expect("queue file");
    env.push((
        "PANDA_QUEUE_CONFIG_FILE".into(),
        queue_file.display().to_string(),
    ));
    let server = Server::start(&[], &env);

    // The operator registers the user proxy pilots fetch: a VOMS proxy of the VO, without
    // the production role.
    let Some(proxy) = pki.voms_proxy(&pki.user("Atlas Pilot Two"), &["/atlas"], None) else {
        assert!(
            !common::required(),
            "voms-proxy-fake is needed (voms-clients)"
        );
        eprintln!("note: unified-queue pilot test skipped: no voms-proxy-fake");
        return;
    };
    let proxy_file = site.dir.path().join("atlpilo2.pem");
    std::fs::write(&proxy_file, proxy.pem_text()).expect("proxy file");
    let added = common::run(
        &[
            "creds",
            "add",
            "proxy",
            "atlpilo2",
            "--label",
            "atlas",
            "--file",
            &proxy_file.display().to_string(),
        ],
        &env,
    );
    assert!(added.status.success(), "{added:?}");

    let mut job = TestJob::new("pilot.unified");
    job.label = "user".into();
    let ids = submit(&reqwest::Client::new(), &server, &[job]).await;
    let token = issuer.sign(&issuer.claims("Pilot Factory", &["atlas", "atlas/pilot"]));
    let token_file = site.dir.path().join("pilot.token");
    std::fs::write(&token_file, token).expect("token");
    // The pilot's own proxy is a VOMS proxy with the production role, which the pilot's
    // arcproxy check reads before it asks for a job.
    let factory = pki.user("Pilot Factory");
    let own = pki
        .voms_proxy(&factory, &["/atlas/Role=production"], None)
        .expect("voms-proxy-fake");
    let own_file = site.dir.path().join("pilot-own.proxy");
    own.write_proxy_file(&own_file);
    // arcproxy reads a proxy only where it also finds the certificate and key it came from.
    let cert_file = site.dir.path().join("usercert.pem");
    std::fs::write(&cert_file, factory.chain_pem()).expect("cert");
    let key_file = site.dir.path().join("userkey.pem");
    std::fs::write(&key_file, factory.key_pem()).expect("key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let work = site.dir.path().join("pilot-unified");
    let status = https_pilot_command(&pilot, &server, "user", &work, &token_file, &pki, &site)
        .env("PILOT_USER_PLUGIN", "atlas")
        .env("PILOT_VERIFY_PROXY", "1")
        .env("PILOT_X509_PROXY", &own_file)
        .env("X509_VOMS_DIR", pki.path("vomsdir"))
        .env("X509_USER_CERT", &cert_file)
        .env("X509_USER_KEY", &key_file)
        .status()
        .expect("run_pilot.sh");
    let full = pilot_output(&work);
    let out = full
        .lines()
        .filter(|l| {
            ["ERROR", "WARNING", "proxy", "getJob", "exit"]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("pilot exit {:?}, job {}", status.code(), ids[0]);
    assert!(
        server
            .find_log_where(|l| l.contains("/server/panda/getProxy") && l.contains("status=200"))
            .is_some(),
        "no getProxy call:\n{out}"
    );
    assert!(
        full.contains("server returned proxy (verifying)"),
        "the pilot did not get the proxy:\n{out}"
    );
    // What it got is the registered proxy, and it passes the pilot's own check.
    assert!(
        full.contains("subject=/DC=org/DC=test/OU=Users/CN=Atlas Pilot Two"),
        "{out}"
    );
    assert!(
        full.contains("proxy verified (proxy type='unified')"),
        "{out}"
    );
}

/// Where the monitor's screenshots go: `PANDA_SCREENSHOT_DIR` (set it to `docs/monitor` to
/// refresh the documentation's), else the test's own target directory.
fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("PANDA_SCREENSHOT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("monitor-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// The monitor in a real browser: headless Chromium opens the finished jobs of a queue,
/// follows a PandaID to its page, sees the status log, and downloads the log tarball the
/// real pilot left on the local storage element; every page is photographed.
#[tokio::test]
async fn a_browser_follows_a_pilot_job_from_the_monitor_to_its_log_tarball() {
    let Some(pilot) = install_pilot() else { return };
    let Some((chromium, chromedriver)) = common::browser::installed() else {
        assert!(
            !common::required(),
            "chromium and chromium-driver are not installed"
        );
        eprintln!("note: browser test skipped: no chromium and chromedriver");
        return;
    };
    // The mv copytool moves the log onto the storage element itself with
    // `mv_final_destination`, as a site without Harvester's stage-out does.
    let queues = tempfile::tempdir().expect("queues");
    let mut queue: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(scripts().join("pilot_queue.json")).expect("pilot_queue.json"),
    )
    .expect("queue json");
    queue["TEST_QUEUE"]["catchall"] = "mv_final_destination".into();
    let queue_file = queues.path().join("queues.json");
    std::fs::write(&queue_file, queue.to_string()).expect("queue file");
    let queue_file = queue_file.display().to_string();
    let (_db, site, env) = pilot_site(&[
        ("PANDA_DAEMON_CONFIG", r#"{"add_main": {"period": 1}}"#),
        ("PANDA_QUEUE_CONFIG_FILE", &queue_file),
    ]);
    let server = Server::start(&[], &env);
    let mut job = TestJob::new("browser.hello");
    job.label = "ptest".into();
    let id = submit(&reqwest::Client::new(), &server, &[job]).await[0];
    let work = site.dir.path().join("pilot");
    let (pilot2, url, work2) = (pilot.clone(), server.base_url.clone(), work.clone());
    let rc = tokio::task::spawn_blocking(move || run_pilot(&pilot2, &url, &work2))
        .await
        .expect("pilot thread");
    assert_eq!(rc, 0, "the pilot failed:\n{}", pilot_output(&work));
    // The Adder finishes the job within seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let client = common::http();
    loop {
        let shown: serde_json::Value = client
            .get(server.url(&format!("/job/{id}/?json")))
            .send()
            .await
            .expect("job page")
            .json()
            .await
            .expect("json");
        if shown["job"]["jobstatus"] == "finished" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not finished: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    let shots = screenshot_dir();
    let browser = common::browser::Browser::start(&chromium, &chromedriver).await;
    browser
        .open(&server.url("/jobs/?computingsite=TEST_QUEUE&jobstatus=finished"))
        .await;
    browser.screenshot(&shots.join("jobs.png")).await;
    browser.click(&format!("a[href='/job/{id}/']")).await;
    assert!(browser.url().await.ends_with(&format!("/job/{id}/")));
    let page = browser.source().await;
    assert!(page.contains("Status log"), "{page}");
    for status in ["sent", "running", "finished"] {
        assert!(page.contains(&format!(">{status}<")), "{status}: {page}");
    }
    assert!(page.contains("browser.hello.log.tgz"), "{page}");
    browser.screenshot(&shots.join("job.png")).await;
    let files: Vec<String> = walk(site.dir.path());
    assert!(
        page.contains(&format!("href=\"/job/{id}/log/\"")),
        "no log link; files under the site: {files:?}\n{}",
        pilot_output(&work)
            .lines()
            .filter(|l| l.contains("log.tgz") || l.contains("stage") || l.contains("copytool"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    browser.click(&format!("a[href='/job/{id}/log/']")).await;
    let listing = browser.source().await;
    assert!(
        listing.contains("<td>"),
        "the tarball's contents: {listing}"
    );
    browser.screenshot(&shots.join("job-log.png")).await;
    browser
        .click(&format!("a[href='/job/{id}/log/download']"))
        .await;
    let tarball = browser.downloaded("browser.hello.log.tgz").await;
    let bytes = std::fs::read(&tarball).expect("the download");
    assert!(bytes.starts_with(&[0x1f, 0x8b]), "a gzipped tarball");
    for (name, path) in [
        ("tasks", "/tasks/"),
        ("dash", "/dash/"),
        ("errors", "/errors/"),
        ("sites", "/sites/"),
        ("site", "/site/TEST_QUEUE/"),
    ] {
        browser.open(&server.url(path)).await;
        let page = browser.source().await;
        assert!(page.contains("PanDA monitor"), "{path}: {page}");
        browser.screenshot(&shots.join(format!("{name}.png"))).await;
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.to_string_lossy().contains("log.tgz") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
