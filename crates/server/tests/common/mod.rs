//! Running the real `panda-server` binary in tests: on a free port, against a private
//! database, stopped (SIGTERM, then SIGKILL) when the handle is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod browser;
pub mod pki;

use panda_store::testing::TestDb;
use panda_store::Backend;

pub const BINARY: &str = env!("CARGO_BIN_EXE_panda-server");

/// A server on a fresh test database with a queue directory, and a store on that database.
/// Fields drop in order: the server stops before its database goes.
pub struct Stack {
    pub server: Server,
    pub store: panda_store::Store,
    pub env: Vec<(String, String)>,
    pub site: Site,
    pub db: TestDb,
}

impl Stack {
    /// Starts `panda-server ARGS` (`&[]`: the all-in-one server, which migrates; any other
    /// mode gets `schema migrate` first) with `extra` on top of the database's and the site's
    /// environment.
    pub async fn start(backend: Backend, args: &[&str], extra: &[(&str, &str)]) -> Stack {
        Stack::start_at(backend, args, extra, Site::new()).await
    }

    /// A stack whose server uses `site` (its own queues, say).
    pub async fn start_at(
        backend: Backend,
        args: &[&str],
        extra: &[(&str, &str)],
        site: Site,
    ) -> Stack {
        let db = TestDb::new(backend);
        let mut env = db_env(&db);
        env.extend(site.env());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        if !args.is_empty() {
            assert!(run(&["schema", "migrate"], &env).status.success());
        }
        let server = Server::start(args, &env);
        let store = panda_store::Store::open(&db.config, panda_store::StoreOptions::default())
            .await
            .expect("open the test database");
        Stack {
            server,
            store,
            env,
            site,
            db,
        }
    }
}

impl Stack {
    /// Runs one daemon step once (`panda-server daemon --run-once NAME`), which must succeed;
    /// its summary line.
    pub fn step(&self, name: &str) -> String {
        let out = run(&["daemon", "--run-once", name], &self.env);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Submits a task through `task/submit` as the local operator; its ID.
    pub async fn submit_task(&self, parameters: serde_json::Value) -> i64 {
        let reply = post_envelope(
            &api_client(),
            self.server.url("/api/v1/task/submit"),
            serde_json::json!({ "task_parameters": parameters }),
            None,
        )
        .await;
        assert_eq!(reply["success"], true, "{reply}");
        reply["data"].as_i64().expect("task id")
    }
}

/// A prun-shaped `noInput` task of `jobs` one-event jobs, named `user.tester.<name>/`.
pub fn no_input_task(name: &str, jobs: i64, max_attempt: i64) -> serde_json::Value {
    use serde_json::json;
    json!({
        "taskName": format!("user.tester.{name}/"), "uniqueTaskName": true, "vo": "atlas",
        "architecture": null, "transUses": "", "transHome": null,
        "processingType": "panda-client-2.2.0-jedi-run", "prodSourceLabel": "user",
        "site": null, "excludedSite": [], "includedSite": null,
        "nEvents": jobs, "nEventsPerJob": 1, "maxAttempt": max_attempt,
        "cliParams": "prun --exec \"echo hello > out.txt\"", "nMaxFilesPerJob": 200,
        "respectSplitRule": true, "sourceURL": "http://127.0.0.1:39999",
        "log": {"dataset": format!("user.tester.{name}.log/"),
                "container": format!("user.tester.{name}.log/"), "type": "template",
                "param_type": "log",
                "value": format!("user.tester.{name}.log.$JEDITASKID.${{SN}}.log.tgz")},
        "jobParameters": [
            {"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
            {"type": "constant", "value": "-r ."},
            {"type": "constant", "value": "__delimiter__", "hidden": true},
            {"type": "constant", "value": "-a jobO.f76aedaf.tar.gz"},
            {"type": "template", "value": "user.tester.$JEDITASKID._${SN/P}.out.txt",
             "param_type": "output", "dataset": format!("user.tester.{name}_out.txt/"),
             "container": format!("user.tester.{name}_out.txt/"), "hidden": true},
            {"type": "constant",
             "value": "-o \"{'out.txt': 'user.tester.$JEDITASKID._${SN/P}.out.txt'}\""},
            {"type": "constant", "value": "-p \"", "padding": false},
            {"type": "constant", "value": "echo%20hello%20%3E%20out.txt", "padding": false},
            {"type": "constant", "value": "\""}],
        "noInput": true
    })
}

/// A pilot at `site` takes one job of `label` (`pilot/acquire_jobs`) and reports it running.
pub async fn take_running_job(stack: &Stack, site: &str, label: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    let reply = post_envelope(
        &api_client(),
        stack.server.url("/api/v1/pilot/acquire_jobs"),
        json!({"site_name": site, "prod_source_label": label, "n_jobs": 1}),
        None,
    )
    .await;
    let job = reply["data"]["jobs"].get(0).cloned()?;
    let id = job["PandaID"].as_i64().expect("PandaID");
    update_job(
        &stack.server,
        json!({"jobId": id.to_string(), "state": "running", "attemptNr": job["attemptNr"]}),
    )
    .await;
    Some(job)
}

/// The pilot's final report of a job taken by [`take_running_job`]: finished with a file
/// report for every output and user metadata (`{"user_job_metadata": {"events": 10}}`), or
/// failed with pilot error 1305 and a diagnostic holding markup, as a hostile pilot might.
pub async fn report_end(stack: &Stack, job: &serde_json::Value, finished: bool) {
    use serde_json::json;
    let id = job["PandaID"].as_i64().expect("PandaID");
    let mut fields = json!({"jobId": id.to_string(), "attemptNr": job["attemptNr"]});
    if finished {
        let mut xml = serde_json::Map::new();
        let outs = job["outFiles"].as_str().unwrap_or_default();
        for (i, lfn) in outs.split(',').filter(|l| !l.is_empty()).enumerate() {
            xml.insert(
                lfn.to_string(),
                json!({"guid": format!("00000000-0000-4000-8000-00000000000{i}"),
                       "fsize": 1000 + i, "adler32": format!("0a1b2c3{i}"),
                       "surl": format!("file://localhost/se/{lfn}")}),
            );
        }
        fields["state"] = json!("finished");
        fields["xml"] = json!(serde_json::Value::Object(xml).to_string());
        fields["metaData"] = json!(r#"{"user_job_metadata": {"events": 10}}"#);
    } else {
        fields["state"] = json!("failed");
        fields["transExitCode"] = json!("1");
        fields["pilotErrorCode"] = json!("1305");
        fields["pilotErrorDiag"] = json!("<b>payload</b> failed");
    }
    update_job(&stack.server, fields).await;
}

/// A task's status as stored, empty when it cannot be read.
pub async fn task_status(store: &panda_store::Store, id: i64) -> String {
    store
        .get_task(id)
        .await
        .ok()
        .flatten()
        .and_then(|t| t.get_str(panda_core::TaskAttr::status).map(str::to_string))
        .unwrap_or_default()
}

/// Environment that points the binary at a test database, with no config file.
pub fn db_env(db: &TestDb) -> Vec<(String, String)> {
    let c = &db.config;
    let mut env = vec![("PANDA_CONFIG".to_string(), "none".to_string())];
    match c.backend {
        Backend::Sqlite => {
            env.push(("PANDA_DBNAME".into(), c.name.clone()));
        }
        Backend::Postgres => {
            env.extend([
                ("PANDA_BACKEND".into(), "postgres".into()),
                ("PANDA_DBHOST".into(), c.host.clone()),
                ("PANDA_DBPORT".into(), c.port.to_string()),
                ("PANDA_DBUSER".into(), c.user.clone()),
                ("PANDA_DBNAME".into(), c.name.clone()),
                ("PANDA_SCHEMAPANDA".into(), c.schema.clone()),
                ("PANDA_SCHEMAMETA".into(), c.meta().to_string()),
                ("PANDA_SCHEMAPANDAARCH".into(), c.arch().to_string()),
            ]);
            if let Some(p) = &c.password {
                env.push(("PANDA_DBPASSWD".into(), p.clone()));
            }
        }
    }
    env
}

/// An HTTP client for tests, with a bounded timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// An HTTP client for `/api/v1`, asking for JSON as panda-client and Harvester do.
#[allow(dead_code)]
pub fn api_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// GETs `url` and returns the answer's text.
pub async fn get_text(client: &reqwest::Client, url: String) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

/// Sends a request and reads the `/api/v1` envelope it answers.
pub async fn envelope(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("an /api/v1 envelope")
}

/// Asserts that an `/api/v1` envelope failed with a message containing `needle`.
pub fn assert_refused(reply: &serde_json::Value, needle: &str) {
    assert_eq!(reply["success"], false, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle)),
        "expected {needle:?}: {reply}"
    );
}

/// POSTs `body` as JSON to `url` (bearer `token` from VO `atlas` when given); the envelope.
pub async fn post_envelope(
    client: &reqwest::Client,
    url: String,
    body: serde_json::Value,
    token: Option<&str>,
) -> serde_json::Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token).header("Origin", "atlas");
    }
    envelope_of(request).await
}

/// Sends `request`, which must be answered 200; the envelope it answers.
pub async fn envelope_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("envelope")
}

/// A GET with its arguments in a form body labelled JSON, as Harvester's client sends one;
/// the envelope.
pub async fn get_with_form_body(
    client: &reqwest::Client,
    url: String,
    body: String,
) -> serde_json::Value {
    let request = client
        .get(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(body);
    envelope_of(request).await
}

/// Runs the binary to completion with `args` and `env`, bounded in time.
pub fn run(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_remove("PANDA_CONFIG")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start panda-server");
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("collect output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("panda-server {args:?} did not finish within 60 s");
        }
    }
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub base_url: String,
    pub log: mpsc::Receiver<String>,
    /// Lines read so far.
    seen: std::sync::Mutex<Vec<String>>,
}

impl Server {
    /// Starts `panda-server [args]` on a free loopback port and waits until it listens.
    pub fn start(args: &[&str], env: &[(String, String)]) -> Server {
        Server::start_until(args, env, "listening on ")
    }

    /// Starts `panda-server [args]` and waits for a log line containing `marker`; when the
    /// marker is the listening line, `base_url` is set from it. An empty marker does not wait.
    pub fn start_until(args: &[&str], env: &[(String, String)], marker: &str) -> Server {
        Server::start_command(Command::new(BINARY), args, env, marker)
    }

    /// Like [`Server::start_until`], with the program given (e.g. a shell that execs the
    /// binary, to know its PID beforehand).
    pub fn start_command(
        mut command: Command,
        args: &[&str],
        env: &[(String, String)],
        marker: &str,
    ) -> Server {
        command
            .args(args)
            .env_remove("PANDA_CONFIG")
            .env("RUST_LOG", "info")
            .env("PANDA_PSERVERPORTHTTP", "0")
            .env("PANDA_PSERVERPORT", "0")
            .env("PANDA_METRICS_ADDRESS", "127.0.0.1:0")
            .env("PANDA_DAEMON_METRICS_ADDRESS", "127.0.0.1:0");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start panda-server");
        let (tx, log) = mpsc::channel();
        // (the log readers below)
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = Server {
            child: Some(child),
            base_url: String::new(),
            log,
            seen: std::sync::Mutex::new(Vec::new()),
        };
        if marker.is_empty() {
            return server;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match server.log.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(url) = line.split("listening on ").nth(1) {
                        server.base_url = url.trim().to_string();
                    }
                    if let Ok(mut all) = server.seen.lock() {
                        all.push(line.clone());
                    }
                    if line.contains(marker) {
                        return server;
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "panda-server did not start listening; output:\n{}",
            seen.join("\n")
        );
    }

    /// The HTTPS base URL, once the server has logged it (HTTPS is on when a host
    /// certificate is configured).
    pub fn https_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(url) = self
                .find_log("HTTPS on ")
                .and_then(|l| l.split("HTTPS on ").nth(1).map(|u| u.trim().to_string()))
            {
                return url;
            }
            assert!(Instant::now() < deadline, "the server did not start HTTPS");
            let _ = self.lines_after(Duration::from_millis(100));
        }
    }

    /// The `/metrics` URL the server logged at start.
    pub fn metrics_url(&self) -> String {
        self.find_log("metrics on ")
            .and_then(|l| l.split("metrics on ").nth(1).map(|u| u.trim().to_string()))
            .expect("metrics address in the log")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The first log line (seen so far or within 5 s) containing `text`.
    pub fn find_log(&self, text: &str) -> Option<String> {
        self.find_log_where(|line| line.contains(text))
    }

    /// The first log line (seen so far or within 5 s) for which `want` holds.
    pub fn find_log_where(&self, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = self.seen.lock().ok()?;
        if let Some(line) = seen.iter().find(|l| want(l)) {
            return Some(line.clone());
        }
        while Instant::now() < deadline {
            match self.log.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let hit = want(&line);
                    seen.push(line.clone());
                    if hit {
                        return Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }

    /// Every log line so far plus those arriving within `wait`.
    pub fn lines_after(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let Ok(mut seen) = self.seen.lock() else {
            return Vec::new();
        };
        while Instant::now() < deadline {
            if let Ok(line) = self.log.recv_timeout(Duration::from_millis(50)) {
                seen.push(line);
            }
        }
        seen.clone()
    }

    /// Kills the process at once (SIGKILL), as a crashed node.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the exit of a server already told to stop (or stops it).
    pub fn terminate_or_exited(&mut self) -> ExitStatus {
        if let Some(child) = self.child.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.terminate()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server still running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("panda-server did not stop within 15 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory layout for a server under test: queue file, cache and trf directories.
pub struct Site {
    pub dir: tempfile::TempDir,
}

/// The queues every dispatch test uses: an online production queue, an offline one, a test
/// one, and an analysis one.
pub const QUEUES: &str = r#"{
  "TEST_QUEUE": {"nickname": "TEST_QUEUE", "status": "online", "type": "production",
                 "maxrss": 4000, "maxtime": 3600, "corecount": 1,
                 "astorages": {"pr": ["LOCAL_DISK"], "pw": ["LOCAL_DISK"], "pl": ["LOCAL_DISK"]}},
  "OFFLINE_QUEUE": {"nickname": "OFFLINE_QUEUE", "status": "offline", "type": "production"},
  "TESTING_QUEUE": {"nickname": "TESTING_QUEUE", "status": "test", "type": "unified"},
  "ANALY_QUEUE": {"nickname": "ANALY_QUEUE", "status": "online", "type": "analysis", "maxrss": 2000}
}"#;

impl Site {
    pub fn new() -> Site {
        Site::with_queues(QUEUES)
    }

    /// A site whose queue file is `queues` (JSON, as [`QUEUES`]).
    pub fn with_queues(queues: &str) -> Site {
        let dir = tempfile::tempdir().expect("site dir");
        std::fs::write(dir.path().join("queues.json"), queues).expect("queues");
        std::fs::create_dir_all(dir.path().join("cache")).expect("cache");
        std::fs::create_dir_all(dir.path().join("trf/user")).expect("trf");
        Site { dir }
    }

    /// Environment for a server using this site (add to `db_env`).
    pub fn env(&self) -> Vec<(String, String)> {
        let p = |s: &str| self.dir.path().join(s).display().to_string();
        vec![
            ("PANDA_QUEUE_CONFIG_FILE".into(), p("queues.json")),
            ("PANDA_CACHE_DIR".into(), p("cache")),
            ("PANDA_TRF_DIR".into(), p("trf")),
            ("PANDA_HOME".into(), p("home")),
        ]
    }
}

/// What a test job looks like.
#[derive(Clone, Debug)]
pub struct TestJob {
    pub name: String,
    pub label: String,
    pub site: Option<String>,
    pub priority: i64,
    pub parameters: String,
    pub transformation: String,
    pub min_ram: i64,
    pub max_attempt: Option<i64>,
    pub task_id: Option<i64>,
}

impl TestJob {
    pub fn new(name: &str) -> TestJob {
        TestJob {
            name: name.into(),
            label: "managed".into(),
            site: Some("TEST_QUEUE".into()),
            priority: 1000,
            parameters: "/bin/echo hello".into(),
            transformation: "http://localhost/jobO.runpayload.tar.gz".into(),
            min_ram: 0,
            max_attempt: None,
            task_id: None,
        }
    }

    /// The job in panda-client's positional submission format: 126 attribute values, then
    /// the files (here one log file of 18 values plus the owner).
    pub fn state(&self) -> serde_json::Value {
        use panda_core::{AttrSet, JobAttr};
        let mut values = vec![serde_json::json!("NULL"); 126];
        let mut set = |attr: JobAttr, v: serde_json::Value| values[attr.index()] = v;
        set(JobAttr::jobName, self.name.clone().into());
        set(JobAttr::prodSourceLabel, self.label.clone().into());
        if let Some(site) = &self.site {
            set(JobAttr::computingSite, site.clone().into());
        }
        set(JobAttr::assignedPriority, self.priority.into());
        set(JobAttr::jobParameters, self.parameters.clone().into());
        set(JobAttr::transformation, self.transformation.clone().into());
        set(JobAttr::jobDefinitionID, 1.into());
        set(JobAttr::minRamCount, self.min_ram.into());
        set(JobAttr::creationHost, "test-host".into());
        if let Some(max) = self.max_attempt {
            set(JobAttr::maxAttempt, max.into());
        }
        if let Some(task) = self.task_id {
            set(JobAttr::jediTaskID, task.into());
        }
        let mut log = vec![serde_json::json!("NULL"); 18];
        log[2] = "11111111-2222-3333-4444-555555555555".into();
        log[3] = format!("{}.log.tgz", self.name).into();
        log[4] = "log".into();
        log[5] = format!("{}.log", self.name).into();
        log[11] = format!("{}.log", self.name).into();
        log[17] = "test".into();
        log.push(serde_json::Value::Null);
        values.push(serde_json::json!([log]));
        serde_json::Value::Array(values)
    }
}

/// Submits jobs through `/api/v1/job/submit`; returns their PandaIDs.
pub async fn submit(client: &reqwest::Client, server: &Server, jobs: &[TestJob]) -> Vec<i64> {
    let states: Vec<serde_json::Value> = jobs.iter().map(TestJob::state).collect();
    let body = serde_json::json!({"jobs": serde_json::Value::Array(states).to_string()});
    let reply: serde_json::Value = client
        .post(server.url("/api/v1/job/submit"))
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("submit reply");
    assert_eq!(reply["success"], true, "{reply}");
    reply["data"]
        .as_array()
        .expect("data list")
        .iter()
        .map(|r| r[0].as_i64().expect("PandaID"))
        .collect()
}

/// updateJob the way pilot 3.11 sends it (gzipped JSON, no Content-Encoding); the answer's
/// urlencoded fields.
pub async fn update_job(
    server: &Server,
    fields: serde_json::Value,
) -> std::collections::BTreeMap<String, String> {
    let text = http()
        .post(server.url("/server/panda/updateJob"))
        .header("Content-Type", "application/json")
        .body(gzip(fields.to_string().as_bytes()))
        .send()
        .await
        .expect("updateJob")
        .text()
        .await
        .expect("text");
    form(&text)
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Parses an urlencoded answer into pairs.
pub fn form(text: &str) -> std::collections::BTreeMap<String, String> {
    url_pairs(text).into_iter().collect()
}

fn url_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (unquote(k), unquote(v))
        })
        .collect()
}

fn unquote(text: &str) -> String {
    let bytes = text.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An OIDC issuer for tests: an RSA key, its JWKS and a `<vo>_auth_config.json` in an
/// `auth_config` directory, and tokens signed with the key.
#[allow(dead_code)]
pub struct TokenIssuer {
    pub dir: tempfile::TempDir,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    pub issuer: String,
    pub audience: String,
}

#[allow(dead_code)]
impl TokenIssuer {
    /// An issuer trusted for `vo`.
    pub fn new(vo: &str) -> TokenIssuer {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
        let jwks = serde_json::json!({"keys": [{
            "kty": "RSA", "kid": "test-key", "alg": "RS256", "use": "sig",
            "n": b64.encode(rsa.n().to_vec()), "e": b64.encode(rsa.e().to_vec()),
        }]});
        let key = openssl::pkey::PKey::from_rsa(rsa).expect("pkey");
        let dir = tempfile::tempdir().expect("auth dir");
        let issuer = "https://issuer.test/".to_string();
        let audience = "panda-test-client".to_string();
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks.to_string()).expect("jwks");
        let config = serde_json::json!({
            "client_id": audience, "audience": audience, "issuer": issuer,
            "jwks_file": jwks_path.display().to_string(),
        });
        std::fs::write(
            dir.path().join(format!("{vo}_auth_config.json")),
            config.to_string(),
        )
        .expect("auth config");
        TokenIssuer {
            dir,
            key,
            issuer,
            audience,
        }
    }

    /// `PANDA_AUTH_CONFIG` for a server trusting this issuer.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "PANDA_AUTH_CONFIG".into(),
            self.dir.path().display().to_string(),
        )]
    }

    /// Valid claims for `name` in `groups`, for an hour.
    pub fn claims(&self, name: &str, groups: &[&str]) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({
            "iss": self.issuer, "aud": self.audience, "sub": format!("sub-{name}"),
            "name": name, "preferred_username": name.to_lowercase().replace(' ', ""),
            "groups": groups, "iat": now, "nbf": now - 5, "exp": now + 3600,
        })
    }

    /// The claims signed as an RS256 JWT.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_with(&self.key, claims)
    }

    /// The claims signed with another key (a forgery).
    pub fn sign_with(
        &self,
        key: &openssl::pkey::PKey<openssl::pkey::Private>,
        claims: &serde_json::Value,
    ) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "test-key"});
        let signed = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)
            .expect("signer");
        let signature = signer.sign_oneshot_to_vec(signed.as_bytes()).expect("sign");
        format!("{signed}.{}", b64.encode(signature))
    }
}

/// The repository's scripts for the real clients.
#[allow(dead_code)]
pub fn scripts() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/real-clients")
}

/// Whether the real clients must be there (CI), so that a missing client fails the test.
#[allow(dead_code)]
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
        || std::env::var("PANDA_REQUIRE_REAL_CLIENTS").is_ok_and(|v| v == "1")
}

/// The python of a virtualenv with the real panda-client, or `None` (with a note) when it
/// cannot be installed here and the clients are not required.
#[allow(dead_code)]
pub fn install_pandaclient() -> Option<String> {
    let installed = std::process::Command::new("bash")
        .arg(scripts().join("install_pandaclient.sh"))
        .output()
        .expect("install_pandaclient.sh");
    let python = String::from_utf8_lossy(&installed.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    if !installed.status.success() || !std::path::Path::new(&python).exists() {
        let why = String::from_utf8_lossy(&installed.stderr).into_owned();
        assert!(!required(), "cannot install panda-client: {why}");
        eprintln!("note: panda-client test skipped: {why}");
        return None;
    }
    Some(python)
}

/// The last `key=value` line of a command's output.
#[allow(dead_code)]
pub fn value_of(output: &std::process::Output, key: &str) -> Option<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// The unpacked pilot, or `None` (with a note) when it cannot be installed here.
#[allow(dead_code)]
pub fn install_pilot() -> Option<std::path::PathBuf> {
    let out = std::process::Command::new("bash")
        .arg(scripts().join("install_pilot.sh"))
        .output()
        .expect("run install_pilot.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").trim().to_string();
    if out.status.success() && std::path::Path::new(&last).join("pilot.py").exists() {
        return Some(std::path::PathBuf::from(last));
    }
    let why = format!(
        "cannot install the pilot: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!required(), "{why}");
    eprintln!("note: real-pilot test skipped: {why}");
    None
}

/// A server (the all-in-one, local mode) with its database, site, store and an HTTP client,
/// for calling `/api/v1` as the local operator.
pub struct Fixture {
    pub _db: TestDb,
    pub _site: Site,
    pub server: Server,
    pub store: panda_store::Store,
    pub client: reqwest::Client,
}

/// Starts a [`Fixture`] on `backend`.
pub async fn start(backend: Backend) -> Fixture {
    let Stack {
        db,
        site,
        server,
        store,
        ..
    } = Stack::start(backend, &[], &[]).await;
    Fixture {
        _db: db,
        _site: site,
        server,
        store,
        client: api_client(),
    }
}

impl Fixture {
    pub async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .client
            .post(self.server.url(path))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("envelope")
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let response = self
            .client
            .get(self.server.url(path))
            .query(query)
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("envelope")
    }
}
