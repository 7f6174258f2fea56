//! `/api/v1` for pilots and operators: the pilot cycle in the new API's names, kill, commands,
//! debug mode, resource types, and the envelope's argument errors.

mod common;

use common::{submit, Server, Site, Stack, TestJob};
use panda_core::{JobAttr, JobStatus};
use panda_store::testing::{backends, TestDb};
use panda_store::{Backend, Store};
use serde_json::{json, Value as Json};

async fn start(backend: Backend) -> (TestDb, Site, Server, Store) {
    let Stack {
        db,
        site,
        server,
        store,
        ..
    } = Stack::start(backend, &[], &[]).await;
    (db, site, server, store)
}

async fn post(server: &Server, path: &str, body: Json) -> Json {
    reqwest::Client::new()
        .post(server.url(path))
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("envelope")
}

#[tokio::test]
async fn the_pilot_cycle_works_in_the_new_api() {
    for backend in backends() {
        let (_db, _site, server, store) = start(backend).await;
        let ids = submit(&reqwest::Client::new(), &server, &[TestJob::new("v1")]).await;
        let got = post(
            &server,
            "/api/v1/pilot/acquire_jobs",
            json!({"site_name": "TEST_QUEUE", "node": "wn1"}),
        )
        .await;
        assert_eq!(got["success"], true, "{got}");
        assert_eq!(got["data"]["jobs"][0]["PandaID"], ids[0]);
        assert_eq!(got["data"]["jobs"][0]["nSent"], 1, "{got}");
        let none = post(
            &server,
            "/api/v1/pilot/acquire_jobs",
            json!({"site_name": "TEST_QUEUE"}),
        )
        .await;
        assert_eq!(
            none,
            json!({"success": false, "message": "No jobs in PanDA", "data": null})
        );

        let beat = |status: &str| json!({"job_id": ids[0], "job_status": status, "attempt_nr": 0, "max_rss": 100});
        let running = post(&server, "/api/v1/pilot/update_job", beat("running")).await;
        assert_eq!(
            running["data"],
            json!({"StatusCode": 0, "command": "NULL"}),
            "{running}"
        );
        let mut last = beat("finished");
        last["job_output_report"] = json!("{}");
        post(&server, "/api/v1/pilot/update_job", last).await;
        let job = store.get_job(ids[0]).await.expect("read").expect("job");
        assert_eq!(job.status(), Some(JobStatus::Holding), "{backend:?}");
        assert_eq!(job.get_i64(JobAttr::maxRSS), Some(100));

        let invalid = post(
            &server,
            "/api/v1/pilot/update_job",
            json!({"job_id": ids[0], "job_status": "flying"}),
        )
        .await;
        assert_eq!(invalid["success"], false);
        assert_eq!(invalid["data"]["StatusCode"], 50);
        let unknown = post(
            &server,
            "/api/v1/pilot/update_job",
            json!({"job_id": ids[0], "job_status": "running", "workdir": "/x"}),
        )
        .await;
        assert!(
            unknown["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Argument error")),
            "{unknown}"
        );
        let missing = post(&server, "/api/v1/pilot/acquire_jobs", json!({})).await;
        assert!(missing["message"]
            .as_str()
            .is_some_and(|m| m.contains("site_name")));
        let get = common::api_client()
            .get(server.url("/api/v1/pilot/update_job"))
            .send()
            .await
            .expect("get");
        let envelope: Json = get.json().await.expect("json");
        assert_eq!(envelope["message"], "expecting POST, received GET");

        let bulk = post(&server, "/api/v1/pilot/update_jobs_bulk",
            json!({"job_list": [{"job_id": ids[0], "job_status": "running"}, {"job_id": 99999, "job_status": "running"}]})).await;
        assert_eq!(bulk["data"][0]["data"]["command"], "NULL", "{bulk}");
        assert_eq!(bulk["data"][1]["data"]["command"], "tobekilled");
    }
}

#[tokio::test]
async fn kill_cancels_queued_jobs_at_once_and_tells_running_pilots() {
    for backend in backends() {
        let (_db, _site, server, store) = start(backend).await;
        let ids = submit(
            &reqwest::Client::new(),
            &server,
            &[TestJob::new("queued"), TestJob::new("running")],
        )
        .await;
        post(
            &server,
            "/api/v1/pilot/acquire_jobs",
            json!({"site_name": "TEST_QUEUE"}),
        )
        .await;
        let running_id = {
            let a = store.get_job(ids[0]).await.expect("read").expect("job");
            if a.status() == Some(JobStatus::Sent) {
                ids[0]
            } else {
                ids[1]
            }
        };
        let queued_id = if running_id == ids[0] { ids[1] } else { ids[0] };
        post(
            &server,
            "/api/v1/pilot/update_job",
            json!({"job_id": running_id, "job_status": "running"}),
        )
        .await;

        let killed = post(
            &server,
            "/api/v1/job/kill",
            json!({"job_ids": [queued_id, running_id, 424242]}),
        )
        .await;
        assert_eq!(killed["data"], json!([true, true, false]), "{killed}");
        let queued = store.get_job(queued_id).await.expect("read").expect("job");
        assert_eq!(queued.status(), Some(JobStatus::Cancelled), "{backend:?}");
        assert_eq!(queued.get_i64(JobAttr::taskBufferErrorCode), Some(100));
        assert_eq!(
            queued.files[0].get_str(panda_core::FileAttr::status),
            Some("failed")
        );
        let running = store.get_job(running_id).await.expect("read").expect("job");
        assert_eq!(
            running.status(),
            Some(JobStatus::Running),
            "a running job is only flagged"
        );
        let heartbeat = post(
            &server,
            "/api/v1/pilot/update_job",
            json!({"job_id": running_id, "job_status": "running"}),
        )
        .await;
        assert_eq!(heartbeat["data"]["command"], "tobekilled");
    }
}

#[tokio::test]
async fn commands_debug_mode_and_resource_types() {
    let (_db, _site, server, store) = start(Backend::Sqlite).await;
    let ids = submit(&reqwest::Client::new(), &server, &[TestJob::new("cmd")]).await;
    post(
        &server,
        "/api/v1/pilot/acquire_jobs",
        json!({"site_name": "TEST_QUEUE"}),
    )
    .await;
    let set = post(
        &server,
        "/api/v1/job/set_command",
        json!({"job_id": ids[0], "command": "softkill"}),
    )
    .await;
    assert_eq!(
        set,
        json!({"success": true, "message": "command received", "data": null})
    );
    let debug = post(
        &server,
        "/api/v1/job/set_debug_mode",
        json!({"job_id": ids[0], "mode": true}),
    )
    .await;
    assert_eq!(
        debug,
        json!({"success": true, "message": "Succeeded", "data": null})
    );
    let heartbeat = post(
        &server,
        "/api/v1/pilot/update_job",
        json!({"job_id": ids[0], "job_status": "running"}),
    )
    .await;
    assert_eq!(heartbeat["data"]["command"], "debug,softkill");
    post(
        &server,
        "/api/v1/job/set_debug_mode",
        json!({"job_id": ids[0], "mode": false}),
    )
    .await;
    let job = store.get_job(ids[0]).await.expect("read").expect("job");
    assert!(job.get(JobAttr::specialHandling).is_null());
    let types: Json = common::api_client()
        .get(server.url("/api/v1/metaconfig/get_resource_types"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(types["data"][0]["resource_name"], "Undefined");
}

/// The legacy `setDebugMode` as pilots and users call it: the job's owner or the production
/// role may turn it on and off (upstream's sentences), another user is told it is not theirs,
/// an unknown job is named, a PandaID that is no number is refused; the job changes only when
/// it says so.
#[tokio::test]
async fn legacy_set_debug_mode_is_for_the_owner_or_the_production_role() {
    let issuer = common::TokenIssuer::new("atlas");
    let env = issuer.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = Stack::start_at(Backend::Sqlite, &[], &env, Site::new()).await;
    let client = common::api_client();
    let alice = issuer.sign(&issuer.claims("Alice Tester", &["atlas"]));
    let bob = issuer.sign(&issuer.claims("Bob Other", &["atlas"]));
    // Alice's job: submitted with her token.
    let mut job = TestJob::new("debug.mine");
    job.label = "user".into();
    let submitted: Json = client
        .post(stack.server.url("/api/v1/job/submit"))
        .bearer_auth(&alice)
        .header("Origin", "atlas")
        .json(&json!({"jobs": Json::Array(vec![job.state()]).to_string()}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("envelope");
    let id = submitted["data"][0][0].as_i64().expect("PandaID");
    let set = |token: Option<&str>, id: String, on: &str| {
        let mut request = client
            .post(stack.server.url("/server/panda/setDebugMode"))
            .form(&[("pandaID", id.as_str()), ("modeOn", on)]);
        if let Some(token) = token {
            request = request.bearer_auth(token).header("Origin", "atlas");
        }
        async move {
            request
                .send()
                .await
                .expect("post")
                .text()
                .await
                .expect("text")
        }
    };
    let special = || async {
        stack
            .store
            .get_job(id)
            .await
            .expect("read")
            .expect("job")
            .get_str(JobAttr::specialHandling)
            .map(str::to_string)
    };
    assert_eq!(
        set(Some(&bob), id.to_string(), "True").await,
        "Permission denied. Not the owner or production manager"
    );
    assert_eq!(special().await, None, "a refusal changes nothing");
    assert_eq!(set(Some(&alice), id.to_string(), "True").await, "Succeeded");
    assert_eq!(special().await.as_deref(), Some("dm"));
    assert_eq!(
        set(Some(&alice), id.to_string(), "True").await,
        "Already set accordingly"
    );
    // The local operator holds the production role.
    assert_eq!(set(None, id.to_string(), "False").await, "Succeeded");
    assert_eq!(special().await, None);
    assert_eq!(
        set(Some(&alice), "999999".into(), "True").await,
        "PandaID=999999 not found in active DB"
    );
    assert!(set(Some(&alice), "x".repeat(1000), "True")
        .await
        .starts_with("ERROR: pandaID must be a PandaID"));
}
