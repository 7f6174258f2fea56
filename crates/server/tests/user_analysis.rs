//! User analysis end to end with the real clients from PyPI: `prun` (panda-client 2.2.0)
//! uploads its sandbox and submits a task, the daemon's task processing turns it into three
//! jobs, three real pilots (3.7.0.36) fetch this server's runGen, which fetches the sandbox
//! from `/cache/`, run them and stage the logs and outputs to a local storage element, and
//! `pbook show` reports the task `done`, 100 %.
//!
//! The pilot only downloads transformations from a hard-coded base URL
//! (`http://pandaserver-doma.cern.ch:25080/trf/user`), so the task's transformation is
//! configured there (`wn_script_base_url`) and the pilot's curl is sent through the server
//! under test as its HTTP proxy (`PILOT_TRF_PROXY`); the server answers the absolute URL from
//! its own `/trf/`.
//!
//! Skipped with a note when the clients cannot be installed, unless `CI` is set or
//! `PANDA_REQUIRE_REAL_CLIENTS=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{db_env, install_pandaclient, install_pilot, scripts, Server, Site, TokenIssuer};
use panda_core::{ColumnType, JobAttr, Value};
use panda_store::testing::TestDb;
use panda_store::{Backend, Store, StoreOptions, TxMode};

/// The pilot's hard-coded transformation base, which the test maps to the server.
const PILOT_TRF_BASE: &str = "http://pandaserver-doma.cern.ch:25080";

/// An analysis queue whose pilot moves outputs to their final place on the local SE.
fn analysis_queue() -> String {
    serde_json::json!({"ANALY_TEST": {
        "nickname": "ANALY_TEST", "panda_resource": "ANALY_TEST", "atlas_site": "TEST_SITE",
        "type": "analysis", "status": "online", "state": "ACTIVE",
        "copytools": {"mv": {"setup": ""}},
        "acopytools": {"pr": ["mv"], "pw": ["mv"], "pl": ["mv"]},
        "astorages": {"pr": ["TEST_DISK"], "pw": ["TEST_DISK"], "pl": ["TEST_DISK"]},
        "maxwdir": 10000, "maxrss": 4000, "maxtime": 3600, "corecount": 1, "timefloor": 0,
        "is_cvmfs": false, "container_type": "", "container_options": "",
        "catchall": "mv_final_destination", "params": {}
    }})
    .to_string()
}

struct Analysis {
    db: TestDb,
    site: Site,
    server: Server,
    issuer: TokenIssuer,
    pki: common::pki::GridPki,
    se: PathBuf,
    env: Vec<(String, String)>,
}

/// How the user authenticates.
enum Auth {
    /// An OIDC token (`PANDA_AUTH=oidc`), over HTTP in local mode.
    Token,
    /// An X.509 VOMS proxy with the nickname attribute (this file), over HTTPS.
    Proxy(PathBuf),
}

fn start() -> Analysis {
    let db = TestDb::new(Backend::Sqlite);
    let site = Site::new();
    let se = site.dir.path().join("se");
    let made = Command::new("python3")
        .arg(scripts().join("make_ddmendpoints.py"))
        .arg(site.dir.path().join("cache/ddmendpoints.json"))
        .arg(&se)
        .arg("TEST_DISK")
        .arg("TEST_SITE")
        .status()
        .expect("make_ddmendpoints.py");
    assert!(made.success());
    let queues = site.dir.path().join("analysis_queue.json");
    std::fs::write(&queues, analysis_queue()).expect("queues");
    let trf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/trf/user/runGen-00-00-02");
    std::fs::copy(&trf, site.dir.path().join("trf/user/runGen-00-00-02")).expect("runGen");
    let issuer = TokenIssuer::new("atlas");
    let pki = common::pki::GridPki::new();
    let mut env = db_env(&db);
    env.extend(site.env());
    env.extend(issuer.env());
    env.extend(pki.env());
    env.push((
        "PANDA_QUEUE_CONFIG_FILE".into(),
        queues.display().to_string(),
    ));
    env.push(("PANDA_WN_SCRIPT_BASE_URL".into(), PILOT_TRF_BASE.into()));
    let every = |s: u32| format!(r#"{{"period": {s}}}"#);
    env.push((
        "PANDA_DAEMON_CONFIG".into(),
        format!(
            r#"{{"task_refiner": {}, "contents_feeder": {}, "job_generator": {}, "add_main": {}, "post_processor": {}}}"#,
            every(1),
            every(1),
            every(1),
            every(1),
            every(2)
        ),
    ));
    let server = Server::start(&[], &env);
    Analysis {
        db,
        site,
        server,
        issuer,
        pki,
        se,
        env,
    }
}

impl Analysis {
    /// Runs panda-client's python as the user (nickname `testuser`), in `dir`.
    fn client(&self, python: &str, auth: &Auth, dir: &Path, args: &[&str]) -> Output {
        let base = match auth {
            Auth::Token => self.server.base_url.clone(),
            Auth::Proxy(_) => self.server.https_url(),
        };
        let api = format!("{base}/server/panda");
        let mut command = Command::new(python);
        command
            .args(args)
            .current_dir(dir)
            .env("PANDA_URL_SSL", &api)
            .env("PANDA_URL", &api)
            .env("PANDACACHE_URL", &api)
            .env("PANDA_BEHIND_REAL_LB", "1")
            .env(
                "PANDA_CONFIG_ROOT",
                self.site.dir.path().join("pandaconfig"),
            )
            .stdin(std::process::Stdio::null());
        match auth {
            Auth::Token => {
                let token = self
                    .issuer
                    .sign(&self.issuer.claims("Test user", &["atlas"]));
                command
                    .env("PANDA_VERIFY_HOST", "off")
                    .env("PANDA_AUTH", "oidc")
                    .env("PANDA_AUTH_VO", "atlas")
                    .env("PANDA_AUTH_ID_TOKEN", token)
                    .env_remove("X509_USER_PROXY");
            }
            Auth::Proxy(proxy) => {
                command
                    .env("X509_USER_PROXY", proxy)
                    .env("X509_CERT_DIR", self.pki.path("certificates"))
                    .env("X509_VOMS_DIR", self.pki.path("vomsdir"))
                    .env_remove("PANDA_VERIFY_HOST")
                    .env_remove("PANDA_AUTH");
            }
        }
        command.output().expect("python")
    }

    /// Runs the real prun in `dir` with `args`; the new task's ID, which prun prints.
    fn prun(&self, python: &str, auth: &Auth, dir: &Path, args: &[&str]) -> i64 {
        let main = "from pandaclient.PrunScript import main; main()";
        let mut all = vec!["-u", "-W", "ignore", "-c", main];
        all.extend_from_slice(args);
        let said = text(&self.client(python, auth, dir, &all));
        said.split("succeeded. new jediTaskID=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("prun did not submit: {said}"))
    }

    /// A VOMS proxy of "Proxy User" with the nickname `testuser`, or `None` without
    /// voms-proxy-fake.
    fn voms_proxy(&self) -> Option<PathBuf> {
        let user = self.pki.user("Proxy User");
        let proxy =
            self.pki
                .voms_proxy_with(&user, "atlas", &["/atlas"], &["nickname=testuser"], None)?;
        let mut pem = proxy.cert.to_pem().expect("pem");
        pem.extend(proxy.key.private_key_to_pem_pkcs8().expect("key"));
        for cert in &proxy.chain {
            pem.extend(cert.to_pem().expect("pem"));
        }
        let path = self.site.dir.path().join("user.proxy");
        std::fs::write(&path, pem).expect("proxy file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Some(path)
    }
}

/// One real pilot at ANALY_TEST for user jobs, its transformation fetched through the server.
fn run_pilot(pilot: &Path, server_url: &str, cadir: &Path, work: &Path) -> (i32, String) {
    run_pilot_with(pilot, server_url, cadir, work, "")
}

/// [`run_pilot`] with more pilot options (`PILOT_EXTRA_ARGS`).
fn run_pilot_with(
    pilot: &Path,
    server_url: &str,
    cadir: &Path,
    work: &Path,
    extra: &str,
) -> (i32, String) {
    let status = Command::new("bash")
        .arg(scripts().join("run_pilot.sh"))
        .env("PANDA_SERVER_URL", server_url)
        .env("PILOT_QUEUE", "ANALY_TEST")
        .env("PILOT_LABEL", "user")
        .env("PILOT_WORKDIR", work)
        .env("PILOT_DIR", pilot)
        .env("PILOT_TIMEOUT", "240")
        .env("PILOT_NOKILL", "1")
        .env("PILOT_TRF_PROXY", server_url)
        .env("X509_CERT_DIR", cadir)
        .env("PILOT_EXTRA_ARGS", extra)
        .status()
        .expect("run_pilot.sh");
    let output = std::fs::read_to_string(work.join("pilot.out")).unwrap_or_default();
    (status.code().unwrap_or(-1), output)
}

/// Runs `case` twice, as users authenticate: with an OIDC token (over HTTP in local mode),
/// then with a VOMS proxy carrying the nickname (over HTTPS), each on a server of its own.
async fn with_each_credential<F, Fut>(case: F)
where
    F: Fn(String, PathBuf, Analysis, Auth) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(python) = install_pandaclient() else {
        return;
    };
    let Some(pilot) = install_pilot() else { return };
    case(python.clone(), pilot.clone(), start(), Auth::Token).await;
    let a = start();
    let Some(proxy) = a.voms_proxy() else {
        assert!(
            !common::required(),
            "voms-proxy-fake is needed (apt-get install voms-clients)"
        );
        eprintln!("note: the proxy case skipped: voms-proxy-fake is not installed");
        return;
    };
    case(python, pilot, a, Auth::Proxy(proxy)).await;
}

/// `count` real pilots at once (as on a site), each in its own work directory
/// `<prefix>-<n>`, with more pilot options `extra`; their exit codes and outputs.
fn run_pilots(
    a: &Analysis,
    pilot: &Path,
    prefix: &str,
    count: usize,
    extra: &str,
) -> Vec<(i32, String)> {
    let cadir = a.pki.path("certificates");
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=count)
            .map(|n| {
                let work = a.site.dir.path().join(format!("{prefix}-{n}"));
                let (url, cadir) = (&a.server.base_url, &cadir);
                scope.spawn(move || run_pilot_with(pilot, url, cadir, &work, extra))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pilot thread"))
            .collect()
    })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn wait_for_status(store: &Store, id: i64, wanted: &str, seconds: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let status = common::task_status(store, id).await;
        if status == wanted || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn texts(store: &Store, sql: &str, id: i64, columns: &[ColumnType]) -> Vec<Vec<String>> {
    let mut tx = store.begin(TxMode::Read).await.expect("tx");
    let rows = tx
        .fetch(sql, &[Value::Int(Some(id))], columns)
        .await
        .expect("query");
    rows.into_iter()
        .map(|r| r.iter().map(Value::render).collect())
        .collect()
}

/// Where the pilot's `mv` copytool puts a file with `mv_final_destination` (Rucio's
/// deterministic layout, as `panda-server datasets add --se` writes it too).
fn se_path(se: &Path, scope: &str, lfn: &str) -> PathBuf {
    panda_server::datasets::se_path(se, scope, lfn).expect("md5")
}

/// prun submits a task of `jobs` jobs with one output, `jobs` pilots run them, pbook shows
/// it done; the sandbox, the logs and the outputs are where they belong.
async fn analysis_to_done(python: &str, pilot: &Path, a: &Analysis, auth: &Auth, jobs: usize) {
    let store = Store::open(&a.db.config, StoreOptions::default())
        .await
        .expect("open");

    // The user's work area: what prun packs into the sandbox.
    let area = a.site.dir.path().join("workarea");
    std::fs::create_dir_all(&area).expect("area");
    let marker = format!("sandbox marker {}\n", std::process::id());
    std::fs::write(area.join("marker.txt"), &marker).expect("marker");
    let n_jobs = jobs.to_string();
    let id = a.prun(
        python,
        auth,
        &area,
        &[
            "--exec",
            "cat marker.txt > out.txt",
            "--outDS",
            "user.testuser.t1",
            "--nJobs",
            &n_jobs,
            "--noBuild",
            "--outputs",
            "out.txt",
        ],
    );

    // The sandbox under /cache/ is what prun packed: it holds the marker, byte for byte.
    let sandboxes: Vec<PathBuf> = std::fs::read_dir(a.site.dir.path().join("cache"))
        .expect("cache")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("jobO."))
        })
        .collect();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    let name = sandboxes[0].file_name().expect("name").to_string_lossy();
    let served = reqwest::get(a.server.url(&format!("/cache/{name}")))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let copy = a.site.dir.path().join("served.tar.gz");
    std::fs::write(&copy, &served).expect("copy");
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&copy)
        .output()
        .expect("tar");
    let member = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|l| l.ends_with("marker.txt"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no marker in the sandbox: {}", text(&listing)));
    let unpacked = Command::new("tar")
        .arg("-xzOf")
        .arg(&copy)
        .arg(&member)
        .output()
        .expect("tar");
    let packed = Some(String::from_utf8_lossy(&unpacked.stdout).into_owned());
    assert_eq!(packed.as_deref(), Some(marker.as_str()));

    assert_eq!(
        wait_for_status(&store, id, "running", 60).await,
        "running",
        "task processing did not generate the jobs"
    );
    let runs = run_pilots(a, pilot, "pilot", jobs, "");
    for (rc, output) in &runs {
        assert_eq!(*rc, 0, "pilot output:\n{output}");
    }
    let status = wait_for_status(&store, id, "done", 90).await;
    let mut talk: Vec<String> = runs
        .iter()
        .flat_map(|(_, out)| {
            out.lines()
                .filter(|l| {
                    ["ERROR", "WARNING", "curl", "payload", "exit"]
                        .iter()
                        .any(|k| l.contains(k))
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut jobs_said = Vec::new();
    for table in ["jobsactive4", "jobsarchived4"] {
        jobs_said.extend(
            texts(
                &store,
                &format!(
                    "SELECT pandaid, jobstatus, ddmerrordiag, piloterrordiag, superrordiag \
                     FROM {table} WHERE jeditaskid = $1"
                ),
                id,
                &[
                    ColumnType::BigInt,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::Text,
                ],
            )
            .await,
        );
    }
    talk.push(format!("status {status}; jobs {jobs_said:?}"));
    let server_said: Vec<String> = a.server.lines_after(Duration::from_millis(100));
    assert_eq!(
        status,
        "done",
        "pilots:\n{}\nserver:\n{}",
        talk.join("\n"),
        server_said
            .iter()
            .filter(|l| l.contains("jedi")
                || l.contains("adder")
                || l.contains("ERROR")
                || l.contains("WARN"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    let pbook = "import sys, pandaclient.PBookScript as p; sys.argv[0] = 'pbook'; p.main()";
    let shown = a.client(python, auth, &area, &["-c", pbook, "show", &id.to_string()]);
    let shown = text(&shown);
    assert!(shown.contains("done") && shown.contains("100%"), "{shown}");

    // Logs and outputs: on the SE where the pilot put them, with JEDI's names, and the
    // outputs registered in their dataset with the size and checksum the pilot reported.
    let files = texts(
        &store,
        "SELECT c.lfn, c.scope, c.fsize, c.checksum, d.type FROM jedi_dataset_contents c \
         JOIN jedi_datasets d ON d.jeditaskid = c.jeditaskid AND d.datasetid = c.datasetid \
         WHERE c.jeditaskid = $1 AND d.type IN ('log', 'output') ORDER BY c.lfn",
        id,
        &[
            ColumnType::Text,
            ColumnType::Text,
            ColumnType::BigInt,
            ColumnType::Text,
            ColumnType::Text,
        ],
    )
    .await;
    assert_eq!(files.len(), 2 * jobs, "{files:?}");
    for serial in 1..=jobs {
        let log = format!("user.testuser.t1.log.{id}.{serial:06}.log.tgz");
        let out = format!("user.testuser.{id}._{serial:06}.out.txt");
        for lfn in [&log, &out] {
            let row = files
                .iter()
                .find(|r| &r[0] == lfn)
                .unwrap_or_else(|| panic!("{lfn} not registered: {files:?}"));
            assert_eq!(row[1], "user.testuser");
            let path = se_path(&a.se, &row[1], lfn);
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{} on the SE: {e}", path.display()))
                .len();
            assert_eq!(row[2], size.to_string(), "{lfn}");
            assert!(row[3].starts_with("ad:"), "{row:?}");
        }
        let out = std::fs::read_to_string(se_path(&a.se, "user.testuser", &out)).expect("out");
        assert_eq!(out, marker, "the payload ran in the unpacked sandbox");
    }
}

#[tokio::test]
async fn prun_the_pilot_and_pbook_take_a_task_to_done_with_a_token() {
    let Some(python) = install_pandaclient() else {
        return;
    };
    let Some(pilot) = install_pilot() else { return };
    let a = start();
    analysis_to_done(&python, &pilot, &a, &Auth::Token, 3).await;
}

#[tokio::test]
async fn prun_the_pilot_and_pbook_take_a_task_to_done_with_a_voms_proxy_over_https() {
    let Some(python) = install_pandaclient() else {
        return;
    };
    let Some(pilot) = install_pilot() else { return };
    let a = start();
    let Some(proxy) = a.voms_proxy() else {
        assert!(
            !common::required(),
            "voms-proxy-fake is needed (apt-get install voms-clients)"
        );
        eprintln!("note: skipped: voms-proxy-fake is not installed");
        return;
    };
    analysis_to_done(&python, &pilot, &a, &Auth::Proxy(proxy), 1).await;
}

/// A payload that fails: its one attempt (`--maxAttempt 1`) fails, the task ends `failed`;
/// once the cause is gone, `pbook retry` gives the file a new attempt, which a pilot runs,
/// and the task ends `done`.
#[tokio::test]
async fn a_failing_payload_fails_the_task_and_pbook_retry_runs_it_again() {
    with_each_credential(failing_payload).await;
}

async fn failing_payload(python: String, pilot: PathBuf, a: Analysis, auth: Auth) {
    let store = Store::open(&a.db.config, StoreOptions::default())
        .await
        .expect("open");
    let area = a.site.dir.path().join("workarea");
    std::fs::create_dir_all(&area).expect("area");
    let flag = a.site.dir.path().join("the-cause-is-gone");
    let exec = format!("test -f {}", flag.display());
    let id = a.prun(
        &python,
        &auth,
        &area,
        &[
            "--exec",
            &exec,
            "--outDS",
            "user.testuser.fails",
            "--nJobs",
            "1",
            "--noBuild",
            "--maxAttempt",
            "1",
        ],
    );
    let cadir = a.pki.path("certificates");
    assert_eq!(wait_for_status(&store, id, "running", 60).await, "running");
    let (rc, output) = run_pilot(
        &pilot,
        &a.server.base_url,
        &cadir,
        &a.site.dir.path().join("p1"),
    );
    assert_eq!(rc, 0, "{output}");
    assert_eq!(
        wait_for_status(&store, id, "failed", 60).await,
        "failed",
        "one attempt, failed"
    );
    let first = store.task_job_ids(id).await.expect("ids");
    assert_eq!(first.len(), 1);
    let job = store.get_job(first[0]).await.expect("read").expect("job");
    assert_eq!(job.status(), Some(panda_core::JobStatus::Failed));
    assert_ne!(job.get_str(panda_core::JobAttr::transExitCode), Some("0"));

    std::fs::write(&flag, "").expect("flag");
    let pbook = "import sys, pandaclient.PBookScript as p; sys.argv[0] = 'pbook'; p.main()";
    let retried = a.client(
        &python,
        &auth,
        &area,
        &["-c", pbook, "retry", &id.to_string()],
    );
    assert!(retried.status.success(), "{}", text(&retried));
    assert_eq!(wait_for_status(&store, id, "running", 60).await, "running");
    let (rc, output) = run_pilot(
        &pilot,
        &a.server.base_url,
        &cadir,
        &a.site.dir.path().join("p2"),
    );
    assert_eq!(rc, 0, "{output}");
    assert_eq!(wait_for_status(&store, id, "done", 60).await, "done");
    let all = store.task_job_ids(id).await.expect("ids");
    assert_eq!(all.len(), 2, "one new attempt: {all:?}");
    let second = store.get_job(all[1]).await.expect("read").expect("job");
    assert_eq!(second.get_i64(panda_core::JobAttr::attemptNr), Some(1));
}

/// `prun --inDS` on a dataset of the local catalogue, one file per job: each real pilot
/// stages its input from the storage element (`--input-destination-dir`), runGen hands it to
/// the command as `%IN`, and the output holds that file's content.
#[tokio::test]
async fn prun_on_a_catalogued_dataset_runs_one_job_per_file() {
    with_each_credential(catalogued_dataset).await;
}

async fn catalogued_dataset(python: String, pilot: PathBuf, a: Analysis, auth: Auth) {
    let store = Store::open(&a.db.config, StoreOptions::default())
        .await
        .expect("open");
    let inputs = a.site.dir.path().join("inputs");
    std::fs::create_dir_all(&inputs).expect("inputs");
    let mut add = vec![
        "datasets".to_string(),
        "add".into(),
        "user.testuser.in1".into(),
        "--scope".into(),
        "user.testuser".into(),
        "--se".into(),
        a.se.display().to_string(),
    ];
    for n in 1..=2 {
        let file = inputs.join(format!("in.{n}.txt"));
        std::fs::write(&file, format!("content of input {n}\n")).expect("input");
        add.push(file.display().to_string());
    }
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    let added = common::run(&add, &a.env);
    assert!(added.status.success(), "{added:?}");

    let area = a.site.dir.path().join("workarea");
    std::fs::create_dir_all(&area).expect("area");
    let id = a.prun(
        &python,
        &auth,
        &area,
        &[
            "--exec",
            "cat %IN > out.txt",
            "--inDS",
            "user.testuser.in1",
            "--nFilesPerJob",
            "1",
            "--outDS",
            "user.testuser.t2",
            "--noBuild",
            "--outputs",
            "out.txt",
        ],
    );
    assert_eq!(wait_for_status(&store, id, "running", 60).await, "running");
    let extra = format!("--input-destination-dir {}", a.se.display());
    let runs = run_pilots(&a, &pilot, "pilot", 2, &extra);
    for (rc, output) in &runs {
        assert_eq!(*rc, 0, "{output}");
    }
    let status = wait_for_status(&store, id, "done", 90).await;
    let talk: Vec<&str> = runs
        .iter()
        .flat_map(|(_, out)| {
            out.lines()
                .filter(|l| l.contains("ERROR") || l.contains("stage-in") || l.contains("payload"))
        })
        .collect();
    assert_eq!(status, "done", "{}", talk.join("\n"));
    let mut outputs = Vec::new();
    for serial in 1..=2 {
        let lfn = format!("user.testuser.{id}._{serial:06}.out.txt");
        let path = se_path(&a.se, "user.testuser", &lfn);
        outputs.push(
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        );
    }
    outputs.sort();
    assert_eq!(outputs, ["content of input 1\n", "content of input 2\n"]);
}

/// prun without `--noBuild`: the build job runs first (our buildGen packs the sources into
/// the library, which its pilot puts on the storage element), the run jobs wait for it, then
/// take the library as an input and run in it.
#[tokio::test]
async fn prun_with_a_build_step_builds_first_then_runs_with_the_library() {
    with_each_credential(build_step).await;
}

async fn build_step(python: String, pilot: PathBuf, a: Analysis, auth: Auth) {
    let build_gen =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/trf/user/buildGen-00-00-01");
    std::fs::copy(
        &build_gen,
        a.site.dir.path().join("trf/user/buildGen-00-00-01"),
    )
    .expect("buildGen");
    let store = Store::open(&a.db.config, StoreOptions::default())
        .await
        .expect("open");
    let area = a.site.dir.path().join("workarea");
    std::fs::create_dir_all(&area).expect("area");
    std::fs::write(area.join("marker.txt"), "built and run\n").expect("marker");
    let id = a.prun(
        &python,
        &auth,
        &area,
        &[
            "--exec",
            "cat marker.txt > out.txt",
            "--outDS",
            "user.testuser.t3",
            "--nJobs",
            "2",
            "--outputs",
            "out.txt",
        ],
    );
    assert_eq!(wait_for_status(&store, id, "running", 60).await, "running");
    // The run jobs are made with the build job and wait for its library.
    let jobs_by_status = |store: &Store| {
        let store = store.clone();
        async move {
            let mut found = Vec::new();
            for panda_id in store.task_job_ids(id).await.expect("ids") {
                let job = store.get_job(panda_id).await.expect("job").expect("stored");
                found.push((
                    job.get_str(JobAttr::prodSourceLabel)
                        .unwrap_or("")
                        .to_string(),
                    job.get_str(JobAttr::jobStatus).unwrap_or("").to_string(),
                ));
            }
            found.sort();
            found
        }
    };
    let pair = |label: &str, status: &str| (label.to_string(), status.to_string());
    assert_eq!(
        jobs_by_status(&store).await,
        [
            pair("panda", "activated"),
            pair("user", "assigned"),
            pair("user", "assigned")
        ]
    );
    let extra = format!("--input-destination-dir {}", a.se.display());
    let cadir = a.pki.path("certificates");
    let (rc, output) = run_pilot_with(
        &pilot,
        &a.server.base_url,
        &cadir,
        &a.site.dir.path().join("build"),
        &extra,
    );
    assert_eq!(rc, 0, "{output}");
    // The run jobs are released once the build is accounted for.
    let released = [
        pair("panda", "finished"),
        pair("user", "activated"),
        pair("user", "activated"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    while jobs_by_status(&store).await != released && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        jobs_by_status(&store).await,
        released,
        "build output:\n{output}"
    );
    let runs = run_pilots(&a, &pilot, "run", 2, &extra);
    for (rc, output) in &runs {
        assert_eq!(*rc, 0, "{output}");
    }
    let status = wait_for_status(&store, id, "done", 90).await;
    let talk: Vec<&str> = runs
        .iter()
        .flat_map(|(_, out)| {
            out.lines()
                .filter(|l| l.contains("ERROR") || l.contains("payload"))
        })
        .collect();
    assert_eq!(status, "done", "{}", talk.join("\n"));
    for serial in 1..=2 {
        let lfn = format!("user.testuser.{id}._{serial:06}.out.txt");
        let out = std::fs::read_to_string(se_path(&a.se, "user.testuser", &lfn)).expect("output");
        assert_eq!(out, "built and run\n");
    }
}

/// `pbook kill` while a real pilot runs the task's job: the pilot hears of it on its next
/// heartbeat (every 10 s here: `PILOT_HEARTBEAT`, the pilot's own configuration), kills the
/// payload, and the task ends `aborted`.
#[tokio::test]
async fn pbook_kill_reaches_the_running_pilot_and_aborts_the_task() {
    with_each_credential(kill_while_running).await;
}

async fn kill_while_running(python: String, pilot: PathBuf, a: Analysis, auth: Auth) {
    let store = Store::open(&a.db.config, StoreOptions::default())
        .await
        .expect("open");
    let area = a.site.dir.path().join("workarea");
    std::fs::create_dir_all(&area).expect("area");
    let id = a.prun(
        &python,
        &auth,
        &area,
        &[
            "--exec",
            "sleep 600",
            "--outDS",
            "user.testuser.killed",
            "--nJobs",
            "1",
            "--noBuild",
        ],
    );
    assert_eq!(wait_for_status(&store, id, "running", 60).await, "running");
    let pilot_run = {
        let (pilot, url, cadir, work) = (
            pilot.clone(),
            a.server.base_url.clone(),
            a.pki.path("certificates"),
            a.site.dir.path().join("pilot"),
        );
        std::thread::spawn(move || {
            let status = Command::new("bash")
                .arg(scripts().join("run_pilot.sh"))
                .env("PANDA_SERVER_URL", &url)
                .env("PILOT_QUEUE", "ANALY_TEST")
                .env("PILOT_LABEL", "user")
                .env("PILOT_WORKDIR", &work)
                .env("PILOT_DIR", &pilot)
                .env("PILOT_TIMEOUT", "400")
                .env("PILOT_NOKILL", "1")
                .env("PILOT_TRF_PROXY", &url)
                .env("PILOT_HEARTBEAT", "10")
                .env("X509_CERT_DIR", &cadir)
                .status()
                .expect("run_pilot.sh");
            let output = std::fs::read_to_string(work.join("pilot.out")).unwrap_or_default();
            (status.code().unwrap_or(-1), output)
        })
    };
    // Wait until the payload runs, then kill the task as its user does.
    let job_id = loop {
        let ids = store.task_job_ids(id).await.expect("ids");
        if let Some(job) = match ids.first() {
            Some(first) => store.get_job(*first).await.expect("read"),
            None => None,
        } {
            if job.get_str(panda_core::JobAttr::jobStatus) == Some("running") {
                break job.panda_id();
            }
        }
        assert!(
            !pilot_run.is_finished(),
            "the pilot ended before its job ran"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let pbook = "import sys, pandaclient.PBookScript as p; sys.argv[0] = 'pbook'; p.main()";
    let killed = a.client(
        &python,
        &auth,
        &area,
        &["-c", pbook, "kill", &id.to_string()],
    );
    assert!(killed.status.success(), "{}", text(&killed));
    assert_eq!(common::task_status(&store, id).await, "aborting");
    let (rc, output) = pilot_run.join().expect("pilot thread");
    assert_eq!(rc, 0, "{output}");
    assert!(
        output.contains("tobekilled") || output.contains("kill"),
        "the pilot was told: {}",
        output
            .lines()
            .filter(|l| l.contains("kill"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(wait_for_status(&store, id, "aborted", 60).await, "aborted");
    let job = store.get_job(job_id).await.expect("read").expect("job");
    assert_eq!(
        job.get_str(panda_core::JobAttr::jobStatus),
        Some("cancelled")
    );
}
