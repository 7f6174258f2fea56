//! The embedded monitor over HTTP on both backends: a task taken to `done` by the daemon's
//! steps and a failed job, seen through `/tasks/`, `/task/<id>/`, `/jobs/`, `/job/<id>/`,
//! `/errors/`, `/dash/`, `/sites/`, `/site/<queue>/`, `/harvester/workers/` and
//! `/user/<name>/` as HTML and as BigPanDA's JSON; bad input answered 400 or 404 with the
//! problem named; who may look (verified identities, `monitor_open`), and where the monitor
//! is served (`monitor_address`).

mod common;

use common::{api_client, no_input_task, submit, Stack, TestJob};
use panda_store::testing::backends;
use serde_json::{json, Value as Json};

async fn get(stack: &Stack, path: &str) -> (u16, String) {
    let response = common::http()
        .get(stack.server.url(path))
        .send()
        .await
        .expect("get");
    let status = response.status().as_u16();
    (status, response.text().await.expect("text"))
}

async fn get_json(stack: &Stack, path: &str) -> Json {
    let (status, text) = get(stack, path).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// A two-job `noInput` task taken to `done` by the daemon's steps and two pilots' reports
/// (the post-processing is left to the caller); its ID and its jobs.
async fn done_task(stack: &Stack, name: &str) -> (i64, Vec<i64>) {
    let task_id = stack.submit_task(no_input_task(name, 2, 1)).await;
    for step in ["task_refiner", "contents_feeder", "job_generator"] {
        stack.step(step);
    }
    let mut jobs = Vec::new();
    while let Some(job) = common::take_running_job(stack, "ANALY_QUEUE", "user").await {
        common::report_end(stack, &job, true).await;
        jobs.push(job["PandaID"].as_i64().expect("PandaID"));
    }
    (task_id, jobs)
}

#[tokio::test]
async fn the_monitor_shows_tasks_jobs_errors_and_sites_as_pages_and_bigpanda_json() {
    for backend in backends() {
        let stack = Stack::start(backend, &["httpd"], &[]).await;
        let (task_id, mut task_jobs) = done_task(&stack, "mon").await;
        assert_eq!(task_jobs.len(), 2, "{backend:?}");
        let mut failing = TestJob::new("monitor.fails");
        failing.max_attempt = Some(1);
        let failed = submit(&api_client(), &stack.server, &[failing]).await[0];
        let job = common::take_running_job(&stack, "TEST_QUEUE", "managed")
            .await
            .expect("the managed job");
        common::report_end(&stack, &job, false).await;
        stack.step("add_main");
        assert!(stack.step("post_processor").contains("closed=1"));

        // pandamonium's query, and what it reads.
        let tasks = get_json(
            &stack,
            "/tasks/?taskname=user.tester.mon*&datasets=True&limit=10000&json=1",
        )
        .await;
        let task = &tasks[0];
        assert_eq!(task["jeditaskid"], task_id, "{backend:?}: {tasks}");
        assert_eq!(task["status"], "done", "{task}");
        assert!(task.get("superstatus").is_some(), "{task}");
        assert!(task.get("reqid").is_some(), "{task}");
        assert_eq!(task["dsinfo"]["pctfinished"], 100, "{task}");
        assert_eq!(task["dsinfo"]["pctfailed"], 0, "{task}");
        let datasets = task["datasets"].as_array().expect("datasets");
        assert!(datasets
            .iter()
            .all(|d| ["streamname", "containername", "datasetname", "site"]
                .iter()
                .all(|k| d.get(*k).is_some())));
        assert!(datasets.iter().any(|d| d["type"] == "output"), "{task}");
        let none = get_json(&stack, "/tasks/?taskname=nothing.like.this*&json=1").await;
        assert_eq!(none, json!([]));
        // The same page answers HTML or JSON by `Accept`: caches are told to key on it.
        for (accept, kind) in [
            ("application/json", "application/json"),
            ("text/html", "text/html"),
        ] {
            let answer = common::http()
                .get(stack.server.url("/tasks/?taskname=nothing.like.this*"))
                .header("Accept", accept)
                .send()
                .await
                .expect("get");
            let headers = answer.headers();
            assert!(headers["content-type"]
                .to_str()
                .expect("type")
                .starts_with(kind));
            assert_eq!(headers["vary"], "Accept", "{accept}");
            assert_eq!(headers["cache-control"], "no-store", "{accept}");
        }

        let listed = get_json(
            &stack,
            &format!("/jobs/?jeditaskid={task_id}&limit=10000&json=1"),
        )
        .await;
        let mut ids: Vec<i64> = listed["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| j["pandaid"].as_i64().expect("pandaid"))
            .collect();
        ids.sort_unstable();
        task_jobs.sort_unstable();
        assert_eq!(ids, task_jobs, "{listed}");
        let states = listed["selectionsummary"]
            .as_array()
            .and_then(|s| s.iter().find(|f| f["field"] == "jobstatus"))
            .cloned()
            .expect("a jobstatus summary");
        assert_eq!(
            states["list"],
            json!([{"kname": "finished", "kvalue": 2}]),
            "{listed}"
        );
        let trimmed = get_json(
            &stack,
            &format!("/jobs/?jeditaskid={task_id}&json=1&fields=pandaid,jobstatus"),
        )
        .await;
        assert_eq!(
            trimmed["jobs"][0]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["pandaid".to_string(), "jobstatus".to_string()])
        );

        // The site and state filters of a browser's first look, with links to every job.
        let (status, page) = get(
            &stack,
            "/jobs/?computingsite=ANALY_QUEUE&jobstatus=finished",
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for id in &task_jobs {
            assert!(page.contains(&format!("href=\"/job/{id}/\"")), "{page}");
        }
        assert!(
            page.contains(&format!("href=\"/task/{task_id}/\"")),
            "{page}"
        );

        let shown = get_json(&stack, &format!("/job/{}/?json", task_jobs[0])).await;
        assert_eq!(shown["job"]["pandaid"], task_jobs[0]);
        assert_eq!(shown["job"]["jobstatus"], "finished");
        assert!(
            shown["files"].as_array().is_some_and(|f| !f.is_empty()),
            "{shown}"
        );
        assert!(shown.get("dsfiles").is_some());
        let log: Vec<&str> = shown["statuslog"]
            .as_array()
            .expect("statuslog")
            .iter()
            .filter_map(|e| e["jobstatus"].as_str())
            .collect();
        assert!(
            log.contains(&"running") && log.contains(&"finished"),
            "{shown}"
        );
        let (status, page) = get(&stack, &format!("/job/{failed}/")).await;
        assert_eq!(status, 200);
        // The pilot's words are shown, escaped.
        assert!(
            page.contains("1305: &#60;b&#62;payload&#60;/b&#62; failed"),
            "{page}"
        );
        assert!(!page.contains("<b>payload"), "{page}");
        assert!(
            page.contains("Status log") && page.contains("Log tarball"),
            "{page}"
        );

        // The failed job came back as a new attempt, which names it as its parent.
        let retry = get_json(
            &stack,
            "/jobs/?computingsite=TEST_QUEUE&jobstatus=activated&json",
        )
        .await;
        let retry_id = retry["jobs"][0]["pandaid"].as_i64().expect("the retry");
        assert_eq!(retry["jobs"][0]["parentid"], failed, "{retry}");
        let shown = get_json(&stack, &format!("/job/{retry_id}/?json")).await;
        assert_eq!(shown["retries"], json!([failed]), "{shown}");
        let (status, page) = get(&stack, &format!("/task/{task_id}/")).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("100% of 2 files"), "{page}");
        assert!(
            page.contains("<svg") && page.contains("<figcaption"),
            "{page}"
        );
        assert!(page.contains("2 finished"), "the plot's text: {page}");
        let task_json = get_json(&stack, &format!("/task/{task_id}/?json")).await;
        assert_eq!(
            task_json["jobsummary"],
            json!([{"name": "finished", "count": 2}])
        );
        let history: Vec<&str> = task_json["statuslog"]
            .as_array()
            .expect("statuslog")
            .iter()
            .filter_map(|e| e["status"].as_str())
            .collect();
        assert_eq!(history.last(), Some(&"done"), "{task_json}");

        let errors = get_json(&stack, "/errors/?json").await;
        let group = &errors["errors"][0];
        assert_eq!(group["computingsite"], "TEST_QUEUE", "{errors}");
        assert_eq!(group["codes"][0]["error"], "pilot", "{errors}");
        assert_eq!(group["codes"][0]["codeval"], 1305, "{errors}");
        assert_eq!(group["count"], 1);
        let jobs = get_json(&stack, "/jobs/?jobstatus=failed&json").await;
        assert_eq!(jobs["errsByCount"][0]["codeval"], 1305, "{jobs}");

        let dash = get_json(&stack, "/dash/?json").await;
        let analy = dash["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["computingsite"] == "ANALY_QUEUE"))
            .cloned()
            .expect("ANALY_QUEUE on the dash");
        assert_eq!(analy["states"]["finished"], 2, "{dash}");
        let (status, page) = get(&stack, "/dash/").await;
        assert_eq!(status, 200);
        assert!(
            page.contains("/jobs/?computingsite=TEST_QUEUE&#38;jobstatus=failed"),
            "{page}"
        );
        let sites = get_json(&stack, "/sites/?json").await;
        assert!(sites
            .as_array()
            .is_some_and(|s| s.iter().any(|q| q["siteid"] == "ANALY_QUEUE")));
        let site = get_json(&stack, "/site/ANALY_QUEUE/?json").await;
        assert_eq!(site["jobs"]["finished"], 2, "{site}");
        let (status, page) = get(&stack, "/site/ANALY_QUEUE/").await;
        assert_eq!(status, 200);
        assert!(page.contains("<svg"), "{page}");
        let workers = get_json(&stack, "/harvester/workers/?json").await;
        assert_eq!(workers["workers"], json!([]));
        let owner = task_json["task"]["username"]
            .as_str()
            .expect("owner")
            .to_string();
        let mine = get_json(
            &stack,
            &format!("/user/{}/?json", owner.replace(' ', "%20")),
        )
        .await;
        assert_eq!(mine["tasks"][0]["jeditaskid"], task_id, "{mine}");

        // Bad input: named, bounded, never a 500.
        let long = "x".repeat(1000);
        for (path, status, needle) in [
            (
                "/jobs/?colour=red".to_string(),
                400,
                "unknown filter \"colour\"",
            ),
            (
                format!("/jobs/?computingsite={long}"),
                400,
                "1000 characters",
            ),
            ("/jobs/?limit=100000".to_string(), 400, "limit"),
            (
                "/jobs/?jobstatus=sleeping".to_string(),
                400,
                "not a job state",
            ),
            ("/jobs/?days=9999".to_string(), 400, "days"),
            ("/job/abc/".to_string(), 400, "not a positive number"),
            ("/job/99999999/".to_string(), 404, "no job 99999999"),
            ("/task/-4/".to_string(), 400, "not a positive number"),
            ("/site/NO_SUCH_QUEUE/".to_string(), 404, "no queue"),
            ("/dash/?computingsite=X".to_string(), 400, "unknown filter"),
            (format!("/user/{long}/"), 400, "at most 256"),
        ] {
            let (got, page) = get(&stack, &path).await;
            assert_eq!(got, status, "{path}: {page}");
            assert!(page.contains("role=\"alert\""), "{path}: {page}");
            // The same refusal as JSON, with the message as written.
            let glue = if path.contains('?') { '&' } else { '?' };
            let (got, text) = get(&stack, &format!("{path}{glue}json")).await;
            assert_eq!(got, status, "{path}: {text}");
            let refusal: Json = serde_json::from_str(&text).expect("a JSON refusal");
            let message = refusal["error"].as_str().unwrap_or_default();
            assert!(message.contains(needle), "{path}: {text}");
        }
        let (_, text) = get(&stack, "/job/abc/?json").await;
        let refusal: Json = serde_json::from_str(&text).expect("a JSON refusal");
        assert!(refusal["error"]
            .as_str()
            .is_some_and(|e| e.contains("PandaID")));
        let posted = common::http()
            .post(stack.server.url("/jobs/"))
            .send()
            .await
            .expect("post");
        assert_eq!(posted.status(), 405, "the monitor changes nothing");
    }
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

#[tokio::test]
async fn who_sees_the_monitor_and_where_it_is_served() {
    let backend = panda_store::Backend::Sqlite;
    // Without local mode a caller with no credential is anonymous: refused, unless opened.
    let closed = Stack::start(backend, &["httpd"], &[("PANDA_TRUST_LOOPBACK", "False")]).await;
    let (status, text) = get(&closed, "/jobs/").await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("verified identity"), "{text}");
    let (status, _) = get(&closed, "/jobs/?json").await;
    assert_eq!(status, 403);
    drop(closed);
    // A verified token is an identity: such a caller sees the monitor; a forged one is
    // refused before any page.
    let issuer = common::TokenIssuer::new("atlas");
    let mut extra: Vec<(String, String)> = issuer.env();
    extra.push(("PANDA_TRUST_LOOPBACK".into(), "False".into()));
    let extra_ref: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let tokened = Stack::start(backend, &["httpd"], &extra_ref).await;
    let token = issuer.sign(&issuer.claims("Test user", &["atlas"]));
    let look = |token: String| {
        common::http()
            .get(tokened.server.url("/dash/?json"))
            .bearer_auth(token)
            .header("Origin", "atlas")
            .send()
    };
    assert_eq!(look(token).await.expect("get").status(), 200);
    let forged = issuer.sign_with(
        &openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa"))
            .expect("key"),
        &issuer.claims("Mallory", &["atlas"]),
    );
    assert_eq!(look(forged).await.expect("get").status(), 403);
    drop(tokened);
    let open = Stack::start(
        backend,
        &["httpd"],
        &[
            ("PANDA_TRUST_LOOPBACK", "False"),
            ("PANDA_MONITOR_OPEN", "True"),
        ],
    )
    .await;
    assert_eq!(get(&open, "/jobs/").await.0, 200);
    assert_eq!(get(&open, "/tasks/?json").await.0, 200);
    drop(open);

    // On a port of its own, and then not on the web tier's.
    let address = free_address();
    let own = Stack::start(
        backend,
        &["httpd"],
        &[("PANDA_MONITOR_ADDRESS", address.as_str())],
    )
    .await;
    let there = common::http()
        .get(format!("http://{address}/dash/?json"))
        .send()
        .await
        .expect("the monitor's own port");
    assert_eq!(there.status(), 200);
    assert_eq!(get(&own, "/dash/").await.0, 404);
    let api = common::http()
        .get(format!("http://{address}/api/v1/system/is_alive"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        api.status(),
        404,
        "the monitor's port serves the monitor only"
    );
    drop(own);
    let off = Stack::start(backend, &["httpd"], &[("PANDA_MONITOR_ADDRESS", "off")]).await;
    assert_eq!(get(&off, "/jobs/").await.0, 404);
}

/// A CONNECT proxy on loopback that takes every tunnel to `target`, whatever host it names,
/// and records the hosts asked for: how a client whose server name is fixed
/// (bigpanda.cern.ch) reaches a test server unmodified.
async fn tunnel_to(
    target: std::net::SocketAddr,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let host = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                if let Ok(mut asked) = record.lock() {
                    asked.push(host);
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (format!("http://{address}"), asked)
}

/// Runs the installed `pandamon` (in `bin`) with `args`, its HTTPS going through the tunnel
/// `proxy` and trusting `ca`; its standard output, which must come with success.
async fn pandamon(bin: &str, proxy: &str, ca: &std::path::Path, args: &[&str]) -> String {
    let mut command = std::process::Command::new(std::path::Path::new(bin).join("pandamon"));
    command
        .args(args)
        .env("https_proxy", proxy)
        .env("HTTPS_PROXY", proxy)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env("SSL_CERT_FILE", ca)
        .env("GRID_USER_NAME", "")
        .env("USER", "tester");
    let output = tokio::task::spawn_blocking(move || command.output().expect("pandamon"))
        .await
        .expect("pandamon thread");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "pandamon {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_real_pandamonium_lists_a_done_task_with_its_percentage() {
    let installed = std::process::Command::new("bash")
        .arg(common::scripts().join("install_pandamonium.sh"))
        .output()
        .expect("install_pandamonium.sh");
    let bin = String::from_utf8_lossy(&installed.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    if !installed.status.success() || !std::path::Path::new(&bin).join("pandamon").exists() {
        let why = String::from_utf8_lossy(&installed.stderr).into_owned();
        assert!(!common::required(), "cannot install pandamonium: {why}");
        eprintln!("note: pandamonium test skipped: {why}");
        return;
    }
    // HTTPS with a host certificate for the monitor's fixed name.
    let pki = common::pki::GridPki::new();
    let host = common::pki::issue(common::pki::Issued {
        subject: "/DC=org/DC=test/CN=bigpanda.cern.ch",
        issuer: Some(&pki.ca),
        server_names: &["bigpanda.cern.ch"],
        ..Default::default()
    });
    std::fs::write(pki.path("host/bigpanda.pem"), host.chain_pem()).expect("cert");
    std::fs::write(pki.path("host/bigpanda.key"), host.key_pem()).expect("key");
    std::fs::write(pki.path("ca.pem"), pki.ca.cert.to_pem().expect("pem")).expect("ca");
    let mut env: Vec<(String, String)> = pki.env();
    env.retain(|(k, _)| k != "PANDA_HOSTCERT" && k != "PANDA_HOSTKEY");
    let cert = pki.path("host/bigpanda.pem").display().to_string();
    let key = pki.path("host/bigpanda.key").display().to_string();
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("PANDA_HOSTCERT", &cert));
    extra.push(("PANDA_HOSTKEY", &key));
    let stack = Stack::start(panda_store::Backend::Sqlite, &["httpd"], &extra).await;
    let (task_id, _) = done_task(&stack, "pm").await;
    stack.step("add_main");
    assert!(stack.step("post_processor").contains("closed=1"));

    let https = stack.server.https_url();
    let port: u16 = https
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the HTTPS port");
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (proxy, asked) = tunnel_to(target).await;
    let ca = pki.path("ca.pem");
    let stdout = pandamon(&bin, &proxy, &ca, &["user.tester.pm", "--clean"]).await;
    assert_eq!(
        stdout.trim(),
        format!("done {task_id} 100% user.tester.pm/"),
        "{stdout}"
    );
    assert_eq!(
        asked.lock().map(|a| a.clone()).unwrap_or_default(),
        vec!["bigpanda.cern.ch:443".to_string()]
    );
    // `-m` sums the jobs' user metadata (from `/jobs/?fields=metastruct`).
    let stdout = pandamon(&bin, &proxy, &ca, &["user.tester.pm", "-m"]).await;
    assert_eq!(stdout.trim(), "user.tester.pm/  events:20", "{stdout}");
}
