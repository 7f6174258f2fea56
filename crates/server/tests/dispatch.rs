//! The legacy dispatcher as pilot3 meets it: queues, submission and activation, getJob in
//! every encoding the pilot uses, updateJob's state rules, the auxiliary calls, static paths
//! and bad input. Each test runs against the real binary on SQLite and, when configured,
//! PostgreSQL.

mod common;

use std::io::{Read, Write};

use common::{form, get_text, gzip, http, submit, Server, Site, Stack, TestJob};
use panda_core::{JobAttr, JobStatus, Value};
use panda_store::testing::{backends, TestDb};
use panda_store::Store;
use serde_json::{json, Value as Json};

async fn start(
    backend: panda_store::Backend,
    extra: &[(&str, &str)],
) -> (TestDb, Site, Server, Store) {
    let Stack {
        db,
        site,
        server,
        store,
        ..
    } = Stack::start(backend, &[], extra).await;
    (db, site, server, store)
}

async fn status_of(store: &Store, id: i64) -> Option<JobStatus> {
    store
        .get_job(id)
        .await
        .expect("read")
        .and_then(|j| j.status())
}

/// getJob the way pilot 3.11 sends it: gzipped JSON, no Content-Encoding, no Accept.
async fn get_job_gzip(client: &reqwest::Client, server: &Server, fields: Json) -> String {
    client
        .post(server.url("/server/panda/getJob"))
        .header("Content-Type", "application/json")
        .body(gzip(fields.to_string().as_bytes()))
        .send()
        .await
        .expect("getJob")
        .text()
        .await
        .expect("text")
}

/// getJob the way pilot 3.7 (curl) sends it: a form, `Accept: application/json`.
async fn get_job_form(client: &reqwest::Client, server: &Server, fields: &[(&str, &str)]) -> Json {
    client
        .post(server.url("/server/panda/getJob"))
        .header("Accept", "application/json")
        .form(fields)
        .send()
        .await
        .expect("getJob")
        .json()
        .await
        .expect("json")
}

async fn update(
    _client: &reqwest::Client,
    server: &Server,
    fields: Json,
) -> std::collections::BTreeMap<String, String> {
    common::update_job(server, fields).await
}

#[tokio::test]
async fn submitted_jobs_are_activated_and_each_dispatched_once_in_priority_order() {
    for backend in backends() {
        let (_db, _site, server, store) = start(backend, &[]).await;
        let client = http();
        let mut low = TestJob::new("low");
        low.priority = 100;
        let high = TestJob::new("high");
        let ids = submit(&client, &server, &[low, high]).await;
        for id in &ids {
            assert_eq!(
                status_of(&store, *id).await,
                Some(JobStatus::Activated),
                "{backend:?}"
            );
        }

        let pilot = json!({"siteName": "TEST_QUEUE", "prodSourceLabel": "managed", "mem": 4000,
                           "diskSpace": 10000, "node": "wn01", "allowOtherCountry": false, "cpu": 2445.4});
        let first = form(&get_job_gzip(&client, &server, pilot.clone()).await);
        assert_eq!(first["StatusCode"], "0");
        assert_eq!(
            first["PandaID"],
            ids[1].to_string(),
            "the higher priority goes first"
        );
        assert_eq!(first["jobPars"], "/bin/echo hello");
        assert_eq!(first["logFile"], "high.log.tgz");
        assert_eq!(first["outFiles"], "high.log.tgz");
        assert_eq!(first["ddmEndPointOut"], "LOCAL_DISK");
        assert_eq!(first["inFiles"], "");
        assert_eq!(first["coreCount"], "1");
        // Upstream's nSent: the queue's production jobs sent in the last minute, this one too.
        assert_eq!(first["nSent"], "1");

        let second = get_job_form(
            &client,
            &server,
            &[
                ("siteName", "TEST_QUEUE"),
                ("prodSourceLabel", "managed"),
                ("node", "wn02"),
            ],
        )
        .await;
        assert_eq!(second["StatusCode"], 0);
        assert_eq!(second["PandaID"], ids[0]);
        assert_eq!(second["nSent"], 2, "the first job is still sent");
        let keys =
            |m: &std::collections::BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
        let json_keys: Vec<String> = second.as_object().expect("dict").keys().cloned().collect();
        let mut sorted = json_keys.clone();
        sorted.sort();
        assert_eq!(keys(&first), sorted, "both encodings carry the same keys");

        let none = form(&get_job_gzip(&client, &server, pilot).await);
        assert_eq!(none["StatusCode"], "20");
        let job = store.get_job(ids[1]).await.expect("read").expect("job");
        assert_eq!(job.status(), Some(JobStatus::Sent));
        assert_eq!(job.get_str(JobAttr::modificationHost), Some("wn01"));
        assert!(job.get(JobAttr::startTime).as_time().is_some());
    }
}

#[tokio::test]
async fn bulk_get_job_returns_a_list_and_queue_rules_hold() {
    for backend in backends() {
        let (_db, _site, server, store) = start(backend, &[]).await;
        let client = http();
        let mut jobs: Vec<TestJob> = (0..4).map(|i| TestJob::new(&format!("bulk{i}"))).collect();
        let mut offline = TestJob::new("offline");
        offline.site = Some("OFFLINE_QUEUE".into());
        let mut testing = TestJob::new("testing");
        testing.site = Some("TESTING_QUEUE".into());
        testing.label = "test".into();
        jobs.extend([offline, testing]);
        let ids = submit(&client, &server, &jobs).await;

        let bulk = get_job_form(
            &client,
            &server,
            &[("siteName", "TEST_QUEUE"), ("nJobs", "2")],
        )
        .await;
        assert_eq!(bulk["jobs"].as_array().map(Vec::len), Some(2), "{bulk}");
        let multipart = reqwest::multipart::Form::new()
            .text("siteName", "TEST_QUEUE")
            .text("prodSourceLabel", "managed");
        let one: Json = client
            .post(server.url("/server/panda/getJob"))
            .header("Accept", "application/json")
            .multipart(multipart)
            .send()
            .await
            .expect("multipart getJob")
            .json()
            .await
            .expect("json");
        assert_eq!(
            one["PandaID"], ids[2],
            "a multipart request is understood: {one}"
        );

        let urlencoded = client
            .get(server.url("/server/panda/getJob?siteName=TEST_QUEUE&nJobs=5"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        let rest: Json =
            serde_json::from_str(&form(&urlencoded)["jobs"]).expect("jobs is JSON text");
        assert_eq!(rest.as_array().map(Vec::len), Some(1));

        let offline = get_job_form(&client, &server, &[("siteName", "OFFLINE_QUEUE")]).await;
        assert_eq!(offline["StatusCode"], 20);
        assert_eq!(status_of(&store, ids[4]).await, Some(JobStatus::Activated));
        // A test queue serves test jobs to a managed pilot.
        let testing = get_job_form(
            &client,
            &server,
            &[
                ("siteName", "TESTING_QUEUE"),
                ("prodSourceLabel", "managed"),
            ],
        )
        .await;
        assert_eq!(testing["PandaID"], ids[5], "{testing}");
        let unknown = get_job_form(&client, &server, &[("siteName", "NO_SUCH_QUEUE")]).await;
        assert_eq!(unknown["StatusCode"], 20);
        assert!(unknown["errorDialog"]
            .as_str()
            .is_some_and(|d| d.contains("NO_SUCH_QUEUE")));
    }
}

#[tokio::test]
async fn brokerage_assigns_jobs_without_a_queue_and_fails_those_that_fit_none() {
    for backend in backends() {
        let (_db, _site, server, store) = start(backend, &[]).await;
        let client = http();
        let mut production = TestJob::new("brokered");
        production.site = None;
        let mut analysis = TestJob::new("analysis");
        analysis.site = None;
        analysis.label = "user".into();
        let mut huge = TestJob::new("huge");
        huge.site = None;
        huge.min_ram = 100_000;
        let ids = submit(&client, &server, &[production, analysis, huge]).await;
        let site = |id| {
            let store = store.clone();
            async move {
                let job = store.get_job(id).await.expect("read").expect("job");
                (
                    job.get_str(JobAttr::computingSite).map(str::to_string),
                    job.status(),
                )
            }
        };
        assert_eq!(
            site(ids[0]).await,
            (Some("TEST_QUEUE".into()), Some(JobStatus::Activated))
        );
        assert_eq!(
            site(ids[1]).await,
            (Some("ANALY_QUEUE".into()), Some(JobStatus::Activated))
        );
        let failed = store.get_job(ids[2]).await.expect("read").expect("job");
        assert_eq!(failed.status(), Some(JobStatus::Failed));
        assert!(failed
            .get_str(JobAttr::brokerageErrorDiag)
            .is_some_and(|d| d.contains("memory")));
    }
}

#[tokio::test]
async fn update_job_follows_upstreams_state_rules() {
    for backend in backends() {
        let (_db, _site, server, store) = start(backend, &[]).await;
        let client = http();
        let ids = submit(&client, &server, &[TestJob::new("a"), TestJob::new("b")]).await;
        for _ in 0..2 {
            let got = get_job_form(&client, &server, &[("siteName", "TEST_QUEUE")]).await;
            assert_eq!(got["StatusCode"], 0);
        }
        let id = ids[0].to_string();
        let beat = |state: &str| {
            json!({"jobId": id, "state": state, "attemptNr": 0, "node": "wn9",
                                         "maxRSS": "2048", "totRCHAR": "4096", "startTime": 1795624967.7})
        };
        assert_eq!(
            update(&client, &server, beat("starting")).await["command"],
            "NULL"
        );
        assert_eq!(status_of(&store, ids[0]).await, Some(JobStatus::Starting));
        update(&client, &server, beat("running")).await;
        update(&client, &server, beat("starting")).await;
        assert_eq!(
            status_of(&store, ids[0]).await,
            Some(JobStatus::Running),
            "running never goes back to starting"
        );
        let job = store.get_job(ids[0]).await.expect("read").expect("job");
        assert_eq!(job.get_i64(JobAttr::maxRSS), Some(2048));
        assert_eq!(
            job.get_i64(JobAttr::totRCHAR),
            Some(4),
            "bytes are stored as kB"
        );

        let mut last = beat("finished");
        last["xml"] = json!(r#"{"a.log.tgz": {"guid": "g1", "fsize": 10, "adler32": "0a0b0c0d"}}"#);
        last["transExitCode"] = json!("0");
        last["metaData"] = json!("{\"report\": 1}");
        last["pilotLog"] = json!("stage-out done");
        assert_eq!(
            update(&client, &server, last.clone()).await["command"],
            "NULL"
        );
        assert_eq!(status_of(&store, ids[0]).await, Some(JobStatus::Holding));
        assert_eq!(
            update(&client, &server, last).await["command"],
            "alreadydone"
        );
        update(&client, &server, beat("running")).await;
        assert_eq!(
            status_of(&store, ids[0]).await,
            Some(JobStatus::Holding),
            "a late heartbeat is ignored"
        );

        let mut tx = store.begin(panda_store::TxMode::Read).await.expect("tx");
        let reports = tx
            .fetch(
                "SELECT jobstatus, data FROM job_output_report WHERE pandaid = $1",
                &[Value::Int(Some(ids[0]))],
                &[panda_core::ColumnType::Text, panda_core::ColumnType::Text],
            )
            .await
            .expect("reports");
        drop(tx);
        assert_eq!(reports.len(), 1, "{backend:?}: one report per attempt");
        assert_eq!(reports[0][0].render(), "finished");
        assert!(reports[0][1].render().contains("0a0b0c0d"));
        let stored = store.get_job(ids[0]).await.expect("read").expect("job");
        assert_eq!(stored.get_str(JobAttr::metadata), Some("{\"report\": 1}"));
        let mut tx = store.begin(panda_store::TxMode::Read).await.expect("tx");
        let logged = tx
            .fetch(
                "SELECT message FROM pandalog WHERE pid = $1 AND type = 'pilotLog'",
                &[Value::Int(Some(ids[0]))],
                &[panda_core::ColumnType::Text],
            )
            .await
            .expect("pandalog");
        drop(tx);
        assert_eq!(
            logged.first().map(|r| r[0].render()).as_deref(),
            Some("stage-out done"),
            "{backend:?}: the pilot's log excerpt is kept"
        );

        // Stale attempt, unknown job, unknown state: nothing changes.
        let other = ids[1].to_string();
        let stale = update(
            &client,
            &server,
            json!({"jobId": other, "state": "running", "attemptNr": 5}),
        )
        .await;
        assert_eq!(stale["command"], "tobekilled");
        assert_eq!(status_of(&store, ids[1]).await, Some(JobStatus::Sent));
        let unknown = update(
            &client,
            &server,
            json!({"jobId": "987654321", "state": "running"}),
        )
        .await;
        assert_eq!(unknown["command"], "tobekilled");
        let bogus = update(&client, &server, json!({"jobId": other, "state": "flying"})).await;
        assert_eq!(bogus.get("StatusCode").map(String::as_str), Some("0"));
        assert!(!bogus.contains_key("command"));
        assert_eq!(status_of(&store, ids[1]).await, Some(JobStatus::Sent));

        // A kill request reaches the pilot with its next heartbeat.
        store
            .modify_job(ids[1], |job, _| {
                job.set_str(JobAttr::commandToPilot, "tobekilled").ok();
                Ok(())
            })
            .await
            .expect("set command");
        let killed = update(
            &client,
            &server,
            json!({"jobId": other, "state": "running", "attemptNr": 0}),
        )
        .await;
        assert_eq!(killed["command"], "tobekilled");
    }
}

#[tokio::test]
async fn auxiliary_calls_answer_in_upstreams_formats() {
    for backend in backends() {
        let (_db, _site, server, _store) = start(backend, &[]).await;
        let client = http();
        let ids = submit(&client, &server, &[TestJob::new("aux")]).await;
        let get = |path: String| {
            let client = client.clone();
            async move { get_text(&client, path).await }
        };
        let status =
            get(server.url(&format!("/server/panda/getStatus?ids={}+999999", ids[0]))).await;
        assert_eq!(
            status,
            "StatusCode=0&status=activated%2Bnotfound&attemptNr=0%2B0"
        );
        let check: Json = serde_json::from_str(
            &get(server.url(&format!(
                "/server/panda/checkJobStatus?ids={},999999",
                ids[0]
            )))
            .await,
        )
        .expect("always JSON");
        assert_eq!(
            check["data"][0],
            json!({"command": null, "status": "activated"})
        );
        assert_eq!(
            check["data"][1],
            json!({"command": "tobekilled", "status": "unknown"})
        );
        let types = get(server.url("/server/panda/getResourceTypes")).await;
        assert!(
            types.starts_with("StatusCode=0&Returns=0&ResourceTypes=%5B%7B%27resource_name%27"),
            "{types}"
        );
        let bulk = client
            .post(server.url("/server/panda/updateJobsInBulk"))
            .form(&[(
                "jobList",
                json!([{"jobId": "NULL", "state": "running"}]).to_string(),
            )])
            .send()
            .await
            .expect("post")
            .text()
            .await
            .expect("text");
        assert_eq!(bulk, r#"[true,["StatusCode=0"]]"#);
        let worker = client
            .post(server.url("/server/panda/updateWorkerPilotStatus"))
            .form(&[
                ("site", "TEST_QUEUE"),
                ("workerID", "1"),
                ("harvesterID", "h1"),
                ("status", "flying"),
            ])
            .send()
            .await
            .expect("post")
            .text()
            .await
            .expect("text");
        assert!(worker.starts_with("Invalid worker state"), "{worker}");
    }
}

#[tokio::test]
async fn static_paths_serve_files_and_queue_data_without_traversal() {
    let (_db, site, server, _store) = start(panda_store::Backend::Sqlite, &[]).await;
    let endpoints = "{\"LOCAL_DISK\": {}}";
    std::fs::write(site.dir.path().join("cache/ddmendpoints.json"), endpoints).expect("write");
    std::fs::write(
        site.dir.path().join("trf/user/runpayload.sh"),
        "#!/bin/bash\nexec \"$@\"\n",
    )
    .expect("write");
    let client = http();
    let cached = client
        .get(server.url("/cache/ddmendpoints.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(cached.status(), 200);
    assert_eq!(cached.headers()["content-type"], "application/json");
    assert_eq!(
        cached.headers()["cache-control"],
        "public, max-age=300",
        "a squid may cache /cache/"
    );
    assert_eq!(
        cached.headers()["content-length"],
        endpoints.len().to_string().as_str()
    );
    let trf = client
        .get(server.url("/trf/user/runpayload.sh"))
        .send()
        .await
        .expect("get");
    assert_eq!(trf.status(), 200);
    assert_eq!(trf.headers()["cache-control"], "public, max-age=300");
    let modified = trf.headers()["last-modified"].clone();
    assert!(trf.text().await.expect("text").contains("exec"));
    let unchanged = client
        .get(server.url("/trf/user/runpayload.sh"))
        .header("If-Modified-Since", modified)
        .send()
        .await
        .expect("get");
    assert_eq!(
        unchanged.status(),
        304,
        "a cache revalidates a file by its date"
    );
    // Queue data carries an entity tag a cache revalidates with, on any node.
    let answer = client
        .get(server.url("/cache/schedconfig/TEST_QUEUE.all.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(answer.headers()["cache-control"], "public, max-age=300");
    assert!(
        answer.headers().get("vary").is_none(),
        "no header changes the answer"
    );
    let tag = answer.headers()["etag"].to_str().expect("etag").to_string();
    let queue: Json = answer.json().await.expect("json");
    assert_eq!(queue["nickname"], "TEST_QUEUE");
    let unchanged = client
        .get(server.url("/cache/schedconfig/TEST_QUEUE.all.json"))
        .header("If-None-Match", &tag)
        .send()
        .await
        .expect("get");
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"].to_str().expect("etag"), tag);
    assert_eq!(unchanged.headers()["cache-control"], "public, max-age=300");
    let other = client
        .get(server.url("/cache/schedconfig/TEST_QUEUE.all.json"))
        .header("If-None-Match", "\"0123\"")
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 200, "another tag gets the data");
    let pilot = client
        .get(server.url("/cache/schedconfig/TEST_QUEUE.pilot.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(pilot.status(), 200);
    let missing = client
        .get(server.url("/cache/schedconfig/NOPE.all.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    for path in [
        "/cache/../queues.json",
        "/cache/%2e%2e/queues.json",
        "/trf/../queues.json",
    ] {
        let status = raw_request(
            &server,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(
            !status.starts_with("HTTP/1.1 200"),
            "{path} must not escape: {status}"
        );
    }
}

/// Sends raw bytes and returns the response's first line (or what the server sent).
fn raw_request(server: &Server, request: &str) -> String {
    let address = server.base_url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[tokio::test]
async fn bad_input_gets_a_clear_answer_and_changes_nothing() {
    for backend in backends() {
        let (_db, _site, server, store) = start(backend, &[("PANDA_MAX_BODY_SIZE", "4096")]).await;
        let client = http();
        let ids = submit(&client, &server, &[TestJob::new("victim")]).await;
        let post = |body: Vec<u8>, content_type: &'static str| {
            let client = client.clone();
            let url = server.url("/server/panda/getJob");
            async move {
                let r = client
                    .post(url)
                    .header("Content-Type", content_type)
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                (r.status().as_u16(), r.text().await.expect("text"))
            }
        };
        let mut broken_gzip = gzip(b"{\"siteName\": \"TEST_QUEUE\"}");
        broken_gzip.truncate(12);
        let (code, text) = post(broken_gzip, "application/json").await;
        assert_eq!(code, 400, "{text}");
        assert!(text.contains("gzip"), "{text}");
        let (code, text) = post(b"{\"siteName\": ".to_vec(), "application/json").await;
        assert_eq!(code, 400);
        assert!(text.contains("JSON"), "{text}");
        let (code, text) = post(
            b"prodSourceLabel=managed".to_vec(),
            "application/x-www-form-urlencoded",
        )
        .await;
        assert_eq!(code, 400);
        assert!(text.contains("siteName"), "{text}");
        let (code, text) = post(
            b"siteName=TEST_QUEUE&mem=lots".to_vec(),
            "application/x-www-form-urlencoded",
        )
        .await;
        assert_eq!(code, 400);
        assert!(text.contains("mem"), "{text}");
        let (code, _) = post(vec![b'a'; 10_000], "application/x-www-form-urlencoded").await;
        assert_eq!(code, 413);
        let bomb = gzip(&vec![b' '; 100_000]);
        let (code, _) = post(bomb, "application/json").await;
        assert_eq!(code, 413, "the limit holds after decompression too");

        let bad_id = client
            .post(server.url("/server/panda/updateJob"))
            .form(&[("jobId", "abc"), ("state", "running")])
            .send()
            .await
            .expect("post");
        assert_eq!(bad_id.status(), 400);
        assert!(bad_id.text().await.expect("text").contains("jobId"));

        // A body shorter than its Content-Length: 400, and the server carries on.
        let truncated = raw_request(
            &server,
            "POST /server/panda/getJob HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nsiteName=TEST_QUEUE",
        );
        assert!(!truncated.starts_with("HTTP/1.1 200"), "{truncated}");
        let alive = client
            .get(server.url("/server/panda/isAlive"))
            .send()
            .await
            .expect("alive");
        assert_eq!(alive.text().await.expect("text"), "alive=yes");
        assert_eq!(
            status_of(&store, ids[0]).await,
            Some(JobStatus::Activated),
            "{backend:?}: no job moved"
        );
    }
}
