//! `/api/v1` beyond the pilot cycle, over HTTP against a real server on both backends:
//! tasks (as panda-client, pbook and prun call them), worker nodes, statistics, site specs,
//! the offline script, workflows, the functions with no backend here (data carousel, async,
//! iDDS), the envelope's encodings, and bad input that must be refused with a message and
//! change nothing. Harvester's calls have a suite of their own, `harvester.rs`.

mod common;

use common::{api_client, start, submit, Site, Stack, TestJob};
use panda_store::testing::backends;
use panda_store::Backend;
use serde_json::{json, Value as Json};

fn task_parameters(name: &str) -> Json {
    json!({
        "taskName": name,
        "uniqueTaskName": true,
        "vo": "atlas",
        "prodSourceLabel": "user",
        "site": "ANALY_QUEUE",
        "cliParams": "prun --exec 'echo hello' --outDS user.tester.out",
        "log": {"type": "template", "param_type": "log", "dataset": "user.tester.out.log/",
                "value": "user.tester.out.log.$JEDITASKID.${SN}.log.tgz"},
        "jobParameters": [
            {"type": "constant", "value": "echo hello"},
            {"type": "template", "param_type": "output", "dataset": "user.tester.out_x/",
             "value": "user.tester.out.$JEDITASKID._${SN}.x"}
        ],
        "noInput": true,
    })
}

#[tokio::test]
async fn tasks_are_registered_listed_and_commanded_as_pbook_expects() {
    for backend in backends() {
        let f = start(backend).await;
        let submitted = f
            .post(
                "/api/v1/task/submit",
                json!({"task_parameters": task_parameters("user.tester.task1"), "parent_tid": null}),
            )
            .await;
        assert_eq!(submitted["success"], true, "{submitted}");
        let id = submitted["data"].as_i64().expect("jediTaskID");
        assert!(
            id >= 10_000_000,
            "pbook reads smaller IDs as request IDs: {id}"
        );
        assert_eq!(
            submitted["message"],
            format!("succeeded. new jediTaskID={id}")
        );
        let id_text = id.to_string();

        let status = f
            .get("/api/v1/task/get_status", &[("task_id", &id_text)])
            .await;
        assert_eq!(status["data"], "registered", "{status}");

        // The same unique name while the task is active: refused with code 2.
        let again = f
            .post(
                "/api/v1/task/submit",
                json!({"task_parameters": task_parameters("user.tester.task1")}),
            )
            .await;
        assert_eq!(again["success"], false);
        assert_eq!(again["data"], 2, "{again}");

        let params = f
            .get("/api/v1/task/get_task_parameters", &[("task_id", &id_text)])
            .await;
        assert_eq!(params["data"]["taskName"], "user.tester.task1");
        assert_eq!(params["data"]["userName"], "local operator");

        let details = f
            .get(
                "/api/v1/task/get_details",
                &[
                    ("task_id", &id_text),
                    ("include_parameters", "True"),
                    ("include_status", "True"),
                ],
            )
            .await;
        assert_eq!(details["data"]["status"], "registered", "{details}");
        assert_eq!(
            details["data"]["outDS"],
            "user.tester.out_x/,user.tester.out.log/"
        );
        assert!(details["data"]["cliParams"]
            .as_str()
            .is_some_and(|c| c.starts_with("prun")));

        // pbook show: the caller's tasks since a time, filtered by a JSON object of strings.
        let since = (chrono::Utc::now() - chrono::Duration::days(14))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let filters = json!({"jediTaskID": id_text}).to_string();
        let listed = f
            .get(
                "/api/v1/task/get_tasks_detailed_info_since",
                &[
                    ("n_tasks", "1000"),
                    ("since", &since),
                    ("filters", &filters),
                ],
            )
            .await;
        let tasks = listed["data"].as_array().expect("list");
        assert_eq!(tasks.len(), 1, "{listed}");
        assert_eq!(tasks[0]["jediTaskID"], id);
        assert_eq!(tasks[0]["taskName"], "user.tester.task1");
        assert!(tasks[0]["creationDate"]["__datetime__"].is_string());
        assert_eq!(tasks[0]["raw_task_params"]["site"], "ANALY_QUEUE");
        let by_pattern = f
            .get(
                "/api/v1/task/get_tasks_detailed_info_since",
                &[(
                    "filters",
                    &json!({"taskName": "^user\\.tester\\.task"}).to_string(),
                )],
            )
            .await;
        assert_eq!(by_pattern["data"].as_array().map(Vec::len), Some(1));
        let other_user = f
            .get(
                "/api/v1/task/get_tasks_detailed_info_since",
                &[("filters", &json!({"userName": "Someone Else"}).to_string())],
            )
            .await;
        assert_eq!(other_user["data"], json!([]));

        // A job of the task, then kill: the job is cancelled at once, the task aborted.
        let mut job = TestJob::new("task1.job");
        job.task_id = Some(id);
        let job_ids = submit(&f.client, &f.server, &[job]).await;
        let ids = f
            .get("/api/v1/task/get_job_ids", &[("task_id", &id_text)])
            .await;
        assert_eq!(ids["data"], json!(job_ids));
        let killed = f.post("/api/v1/task/kill", json!({"task_id": id})).await;
        assert_eq!(killed["success"], true, "{killed}");
        assert_eq!(killed["data"], 0);
        let status = f
            .get("/api/v1/task/get_status", &[("task_id", &id_text)])
            .await;
        assert_eq!(status["data"], "aborted");
        let job_status = f
            .get(
                "/api/v1/job/get_status",
                &[("job_ids", &job_ids[0].to_string())],
            )
            .await;
        assert_eq!(job_status["data"][0]["status"], "cancelled", "{job_status}");

        // Upstream's refusals: kill twice (code 4), retry of an aborted task (code 4, but
        // success as upstream's retry always is), an unknown task.
        let twice = f.post("/api/v1/task/kill", json!({"task_id": id})).await;
        assert_eq!(twice["success"], false);
        assert_eq!(twice["data"], 4);
        assert!(twice["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Command rejected")));
        let retry = f.post("/api/v1/task/retry", json!({"task_id": id})).await;
        assert_eq!(
            (retry["success"].clone(), retry["data"].clone()),
            (json!(true), json!(4))
        );
        let unknown = f.post("/api/v1/task/kill", json!({"task_id": 99})).await;
        assert_eq!(unknown["success"], false);
        assert_eq!(unknown["message"], "jediTaskID=99 not found");
        let missing = f.get("/api/v1/task/get_status", &[("task_id", "99")]).await;
        assert_eq!(missing["message"], "Task not found");

        // finish, then retry of the finished task.
        let second = f
            .post(
                "/api/v1/task/submit",
                json!({"task_parameters": task_parameters("user.tester.task2")}),
            )
            .await;
        let second_id = second["data"].as_i64().expect("id");
        let finished = f
            .post(
                "/api/v1/task/finish",
                json!({"task_id": second_id, "soft": true}),
            )
            .await;
        assert_eq!(finished["data"], 0, "{finished}");
        let retried = f
            .post("/api/v1/task/retry", json!({"task_id": second_id}))
            .await;
        assert_eq!(retried["data"], 0, "{retried}");
        let status = f
            .get(
                "/api/v1/task/get_status",
                &[("task_id", &second_id.to_string())],
            )
            .await;
        assert_eq!(status["data"], "ready");
        let modified = f
            .get(
                "/api/v1/task/get_tasks_modified_since",
                &[("since", &since), ("min_task_id", &second_id.to_string())],
            )
            .await;
        assert_eq!(
            modified["data"][second_id.to_string()]["status"],
            "ready",
            "{modified}"
        );

        let log = f.store.task_status_log(id).await.expect("log");
        assert_eq!(log, vec!["registered", "aborting", "aborted"]);
    }
}

#[tokio::test]
async fn worker_nodes_statistics_and_site_specs() {
    for backend in backends() {
        let f = start(backend).await;
        let node = json!({"site": "TEST_SITE", "host_name": "slot1@wn01.example.org",
            "cpu_model": "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "panda_queue": "TEST_QUEUE",
            "n_logical_cpus": 80, "clock_speed": 2500.0, "total_memory": 192000});
        let first = f
            .post("/api/v1/pilot/update_worker_node", node.clone())
            .await;
        assert_eq!(first["message"], "Inserted new worker node.", "{first}");
        let second = f.post("/api/v1/pilot/update_worker_node", node).await;
        assert_eq!(second["message"], "Updated existing worker node.");
        let gpu = f
            .post(
                "/api/v1/pilot/update_worker_node_gpu",
                json!({"site": "TEST_SITE", "host_name": "wn01.example.org", "vendor": "NVIDIA",
                       "model": "A100", "count": 4, "vram": 40000}),
            )
            .await;
        assert_eq!(gpu["message"], "Inserted new worker node GPU.", "{gpu}");
        let missing = f
            .post("/api/v1/pilot/update_worker_node", json!({"site": "S"}))
            .await;
        assert_eq!(missing["success"], false);

        submit(
            &f.client,
            &f.server,
            &[TestJob::new("stat.a"), TestJob::new("stat.b")],
        )
        .await;
        let by_site = f
            .get("/api/v1/statistics/active_job_stats_by_site", &[])
            .await;
        assert_eq!(
            by_site["data"]["TEST_QUEUE"],
            json!({"activated": 2, "assigned": 0, "running": 0}),
            "{by_site}"
        );
        let by_resource = f
            .get(
                "/api/v1/statistics/job_stats_by_site_and_resource_type",
                &[("time_window", "60")],
            )
            .await;
        assert_eq!(by_resource["success"], true, "{by_resource}");
        assert_eq!(
            by_resource["data"]["TEST_QUEUE"]
                .as_object()
                .map(|m| m.len()),
            Some(1)
        );
        let bad_window = f
            .get(
                "/api/v1/statistics/job_stats_by_site_and_resource_type",
                &[("time_window", "99999")],
            )
            .await;
        assert_eq!(bad_window["success"], false);
        let bad_type = f
            .get(
                "/api/v1/statistics/job_stats_by_cloud",
                &[("type", "bogus")],
            )
            .await;
        assert_eq!(bad_type["success"], false);

        // job/reassign moves a waiting job to another queue that fits; pilot/get_job_status
        // reports it (and an unknown ID) in the pilot's names.
        f.store
            .upsert_queues(&[(
                "SECOND_QUEUE".into(),
                json!({"status": "online", "type": "production"}).to_string(),
            )])
            .await
            .expect("queue");
        let moved = submit(&f.client, &f.server, &[TestJob::new("stat.c")]).await;
        let reassigned = f
            .post("/api/v1/job/reassign", json!({"job_ids": [moved[0]]}))
            .await;
        assert_eq!(
            (reassigned["success"].clone(), reassigned["data"].clone()),
            (json!(true), Json::Null),
            "{reassigned}"
        );
        let job = f.store.get_job(moved[0]).await.expect("read").expect("job");
        assert_eq!(
            job.get_str(panda_core::JobAttr::computingSite),
            Some("SECOND_QUEUE")
        );
        let pilot_view = f
            .get(
                "/api/v1/pilot/get_job_status",
                &[("job_ids", &moved[0].to_string()), ("job_ids", "4242")],
            )
            .await;
        assert_eq!(
            pilot_view["data"],
            json!([{"job_id": moved[0], "status": "activated", "attempt_number": 0},
                   {"job_id": 4242, "status": "not found", "attempt_number": 0}]),
            "{pilot_view}"
        );

        let analysis = f.get("/api/v1/metaconfig/get_site_specs", &[]).await;
        let names: Vec<&String> = analysis["data"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(names, vec!["ANALY_QUEUE"], "{analysis}");
        assert_eq!(analysis["data"]["ANALY_QUEUE"]["maxrss"], 2000);
        let all = f
            .get("/api/v1/metaconfig/get_site_specs", &[("type", "all")])
            .await;
        assert_eq!(all["data"].as_object().map(|m| m.len()), Some(5));

        // The ban list as upstream gives it: the disabled users, each `false`.
        let none = f.get("/api/v1/metaconfig/get_banned_users", &[]).await;
        assert_eq!(none["data"], json!({}), "{none}");
        f.store
            .set_user_status("Bad Actor", Some("disabled"))
            .await
            .expect("ban");
        let banned = f.get("/api/v1/metaconfig/get_banned_users", &[]).await;
        assert_eq!(banned["success"], true, "{banned}");
        assert_eq!(banned["data"], json!({"Bad Actor": false}), "{banned}");
    }
}

#[tokio::test]
async fn encodings_and_bad_input() {
    let f = start(Backend::Sqlite).await;
    // Without asking for JSON, upstream answers the Python rendering of the envelope.
    let plain = reqwest::Client::new()
        .get(f.server.url("/api/v1/system/is_alive"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert_eq!(plain, "{'success': True, 'message': '', 'data': None}");
    // A media-type list naming JSON gets JSON.
    let listed: Json = reqwest::Client::new()
        .get(f.server.url("/api/v1/system/is_alive"))
        .header("Accept", "text/html, application/json;q=0.9")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["success"], true);
    // Repeated query keys are a list; `latest` is `v1`.
    let ids = submit(
        &f.client,
        &f.server,
        &[TestJob::new("enc.a"), TestJob::new("enc.b")],
    )
    .await;
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    let status = f
        .get(
            "/api/v1/job/get_status",
            &[("job_ids", &a), ("job_ids", &b)],
        )
        .await;
    assert_eq!(status["data"].as_array().map(Vec::len), Some(2), "{status}");
    let described = f
        .get("/api/latest/job/get_description", &[("job_ids", &a)])
        .await;
    assert_eq!(described["data"][0]["PandaID"], ids[0]);
    assert!(described["data"][0]["creationTime"]["__datetime__"].is_string());
    assert_eq!(described["data"][0]["Files"][0]["type"], "log");

    let refusals: Vec<(&str, Json, &str)> = vec![
        (
            "/api/v1/task/submit",
            json!({"task_parameters": "x"}),
            "Type error",
        ),
        (
            "/api/v1/task/submit",
            json!({}),
            "Argument error: missing required argument 'task_parameters'",
        ),
        (
            "/api/v1/task/submit",
            json!({"task_parameters": {"vo": "atlas"}}),
            "taskName",
        ),
        (
            "/api/v1/task/kill",
            json!({"task_id": "abc"}),
            "Type error: argument 'task_id'",
        ),
        (
            "/api/v1/job/submit",
            json!({"jobs": "{\"not\": \"a list\"}"}),
            "Failed to deserialize jobs",
        ),
        (
            "/api/v1/job/submit",
            json!({"jobs": 5}),
            "Failed to deserialize jobs",
        ),
        (
            "/api/v1/job/kill",
            json!({"job_ids": ["x"]}),
            "Type error: argument 'job_ids'",
        ),
        (
            "/api/v1/job/kill",
            json!({"job_ids": [1], "color": "red"}),
            "unexpected keyword argument 'color'",
        ),
    ];
    for (path, body, expected) in refusals {
        let answer = f.post(path, body.clone()).await;
        assert_eq!(answer["success"], false, "{path} {body}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains(expected)),
            "{path} {body}: {answer}"
        );
    }
    // A job with 300 attributes, and a file with 40.
    let mut state = TestJob::new("too.wide").state();
    let files = state.as_array_mut().and_then(|a| a.pop()).expect("files");
    let wide: Vec<Json> = std::iter::repeat_n(json!("NULL"), 300)
        .chain([files])
        .collect();
    let answer = f
        .post(
            "/api/v1/job/submit",
            json!({"jobs": Json::Array(vec![Json::Array(wide)]).to_string()}),
        )
        .await;
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("301 entries")),
        "{answer}"
    );
    // Malformed JSON and a non-object body.
    for body in ["{\"jobs\": ", "[1, 2]"] {
        let answer: Json = f
            .client
            .post(f.server.url("/api/v1/job/submit"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("envelope");
        assert_eq!(answer["success"], false, "{body}");
    }
    let get_instead = f.get("/api/v1/task/kill", &[("task_id", "1")]).await;
    assert_eq!(get_instead["message"], "expecting POST, received GET");
    let forbidden = f
        .client
        .get(f.server.url("/api/v1/task/no_such_function"))
        .send()
        .await
        .expect("get");
    assert_eq!(forbidden.status(), 403);
    // Nothing above was stored: only the two jobs submitted here exist.
    let counts = f.store.job_counts().await.expect("counts");
    assert_eq!(counts.iter().map(|(_, _, n)| n).sum::<i64>(), 2);
}

/// `job/generate_offline_execution_script`: a job's script as plain text that runs its
/// transformation with its parameters (checked with `--dry-run`); an unknown job and a bad
/// `days` named.
#[tokio::test]
async fn a_jobs_offline_script_runs_its_transformation_with_its_parameters() {
    let f = start(Backend::Sqlite).await;
    let mut job = TestJob::new("offline.job");
    job.parameters = "--input 'a b' --count 3".into();
    let ids = submit(&f.client, &f.server, &[job]).await;
    let url = f
        .server
        .url("/api/v1/job/generate_offline_execution_script");
    let response = f
        .client
        .get(&url)
        .query(&[("job_id", ids[0].to_string())])
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    let script = response.text().await.expect("text");
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    assert!(
        script.contains(&format!("PanDA job {}", ids[0])),
        "{script}"
    );
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("offline.sh");
    std::fs::write(&file, &script).expect("script");
    let out = std::process::Command::new("bash")
        .arg(&file)
        .arg("--dry-run")
        .env("TMPDIR", dir.path())
        .output()
        .expect("bash");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains(
            "+ curl -fsSL -o jobO.runpayload.tar.gz http://localhost/jobO.runpayload.tar.gz"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("+ ./jobO.runpayload.tar.gz --input 'a b' --count 3"),
        "{printed}"
    );

    let missing = f
        .get(
            "/api/v1/job/generate_offline_execution_script",
            &[("job_id", "999999")],
        )
        .await;
    assert_eq!(missing["success"], false);
    assert_eq!(
        missing["message"],
        "ERROR: Cannot get PandaID=999999 in DB for the last 30 days. You may add &days=N to the URL"
    );
    let bad = f
        .get(
            "/api/v1/job/generate_offline_execution_script",
            &[("job_id", "1"), ("days", "0")],
        )
        .await;
    assert!(
        bad["message"]
            .as_str()
            .is_some_and(|m| m.contains("days must be from 1 to 3650")),
        "{bad}"
    );
}

/// `workflow/submit_workflow` (`workflow_definition`, as upstream) and pchain's
/// `submit_workflow_raw_request` (`params`, the request as JSON text): recorded as `registered`
/// in JEDI's `workflows` with its owner, the answer saying no engine runs it; a text that is
/// not a JSON object is refused by name.
#[tokio::test]
async fn workflow_requests_are_recorded_and_say_no_engine_runs_them() {
    for backend in backends() {
        let f = start(backend).await;
        let done = f
            .post(
                "/api/v1/workflow/submit_workflow",
                json!({"workflow_definition": {"name": "wf1", "steps": [1, 2]}}),
            )
            .await;
        assert_eq!(done["success"], true, "{backend:?}: {done}");
        assert!(done["message"]
            .as_str()
            .is_some_and(|m| m.contains("no workflow engine")));
        let id = done["data"]["workflow_id"].as_i64().expect("workflow_id");
        let raw = f
            .post(
                "/api/v1/workflow/submit_workflow_raw_request",
                json!({"params": json!({"name": "wf2"}).to_string()}),
            )
            .await;
        let second = raw["data"]["workflow_id"].as_i64().expect("workflow_id");
        assert!(second > id, "{raw}");
        let row = f.store.workflow(id).await.expect("read").expect("stored");
        assert_eq!(row.status, "registered");
        assert_eq!(row.prodsourcelabel.as_deref(), Some("user"));
        assert_eq!(row.username.as_deref(), Some("local operator"));
        let stored: Json =
            serde_json::from_str(row.raw_request_json.as_deref().unwrap_or("")).expect("json");
        assert_eq!(stored["name"], "wf1");
        assert_eq!(stored["user_dn"], "/CN=local operator");
        let refused = f
            .post(
                "/api/v1/workflow/submit_workflow_raw_request",
                json!({"params": "not json"}),
            )
            .await;
        assert_eq!(refused["success"], false);
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Failed to parse params")),
            "{refused}"
        );
    }
}

/// `data_carousel/*` and `async_process/*`: upstream's envelope, refused with the reason (no
/// data carousel, no asynchronous workers behind this server), never 403; the production
/// functions still need the production role.
#[tokio::test]
async fn data_carousel_and_async_functions_say_what_is_missing() {
    let issuer = common::TokenIssuer::new("atlas");
    let env = issuer.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = Stack::start_at(Backend::Sqlite, &["httpd"], &env, Site::new()).await;
    let client = api_client();
    let user = issuer.sign(&issuer.claims("Test user", &["atlas"]));
    let post = |function: &str, body: Json, token: Option<&str>| {
        let url = stack.server.url(&format!("/api/v1/{function}"));
        let (client, token) = (&client, token.map(str::to_string));
        async move { common::post_envelope(client, url, body, token.as_deref()).await }
    };
    for function in [
        "change_staging_destination",
        "change_staging_source",
        "force_to_staging",
        "retire_unused",
    ] {
        let path = format!("data_carousel/{function}");
        let answer = post(&path, json!({"request_id": 42}), None).await;
        assert_eq!(
            answer,
            json!({"success": false, "data": null, "message":
                "failed to get corresponding request (request_id=42): no data carousel runs behind this server"}),
            "{function}"
        );
        let refused = post(&path, json!({"dataset": "data.x"}), Some(&user)).await;
        assert_eq!(refused["message"], "production or pilot role required");
    }
    let grep = post(
        "async_process/submit_grep_request",
        json!({"pattern": "error", "log_filename": "panda-server.log", "service_name": "panda"}),
        Some(&user),
    )
    .await;
    assert_eq!(grep["success"], false);
    assert!(grep["message"]
        .as_str()
        .is_some_and(|m| m.contains("no asynchronous request workers")));
    let result: Json = client
        .get(stack.server.url("/api/v1/async_process/get_result"))
        .query(&[("request_id", "abc")])
        .bearer_auth(&user)
        .header("Origin", "atlas")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("envelope");
    assert_eq!(result["message"], "request_id 'abc' not found");
}

/// The iDDS functions answer with upstream's envelope and say why nothing happens: this
/// server has no iDDS to relay to.
#[tokio::test]
async fn idds_commands_are_refused_with_the_reason() {
    let f = start(Backend::Sqlite).await;
    for (function, body) in [
        (
            "relay_idds_command",
            json!({"command_name": "get_requests", "kwargs": "{\"request_id\": 1}"}),
        ),
        (
            "execute_idds_workflow_command",
            json!({"command_name": "get_status"}),
        ),
    ] {
        let reply = f.post(&format!("/api/v1/idds/{function}"), body).await;
        assert_eq!(reply["success"], false, "{reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("no iDDS") && message.contains("get_"),
            "{message}"
        );
    }
    // A long command name is cut in the answer, not echoed whole.
    let long = f
        .post(
            "/api/v1/idds/relay_idds_command",
            json!({"command_name": "x".repeat(100_000)}),
        )
        .await;
    let message = long["message"].as_str().unwrap_or_default();
    assert!(
        long["success"] == false && message.contains("no iDDS") && message.len() < 300,
        "{} bytes",
        message.len()
    );
    let missing = f.post("/api/v1/idds/relay_idds_command", json!({})).await;
    assert_eq!(missing["success"], false);
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|m| m.contains("command_name")),
        "{missing}"
    );
}

/// Every function upstream declares (api-coverage.md's list, 108), called with no arguments
/// as the local operator in both methods: each answers upstream's envelope (HTTP 200, JSON
/// with `success`, `message` and `data`), none is a 403 of an unknown function.
#[tokio::test]
async fn every_function_upstream_declares_answers_with_its_envelope() {
    const UPSTREAM: &str = "async_process/get_result async_process/submit_grep_request \
        async_process/submit_sleep_echo_request creds/get_access_token creds/get_key_pair \
        creds/get_proxy creds/get_token_key creds/get_user_secrets creds/set_user_secrets \
        data_carousel/change_staging_destination data_carousel/change_staging_source \
        data_carousel/force_to_staging data_carousel/retire_unused event/acquire_event_ranges \
        event/get_available_event_range_count event/get_event_range_statuses \
        event/update_event_ranges event/update_single_event_range file_server/delete_cache_file \
        file_server/delete_hpo_checkpoint file_server/download_jedi_log \
        file_server/register_cache_file file_server/touch_cache_file file_server/update_jedi_log \
        file_server/upload_cache_file file_server/upload_event_picking_request \
        file_server/upload_file_recovery_request file_server/upload_hpo_checkpoint \
        file_server/upload_jedi_log file_server/upload_workflow_request \
        file_server/validate_cache_file harvester/acknowledge_commands harvester/acquire_commands \
        harvester/add_dialogs harvester/add_sweep_command harvester/add_target_slots \
        harvester/get_current_worker_id harvester/get_worker_statistics harvester/heartbeat \
        harvester/report_worker_statistics harvester/update_service_metrics \
        harvester/update_workers idds/execute_idds_workflow_command idds/relay_idds_command \
        job/generate_offline_execution_script job/get_description \
        job/get_description_incl_archive job/get_metadata_for_analysis_jobs job/get_status \
        job/kill job/reassign job/set_command job/set_debug_mode job/submit \
        metaconfig/get_banned_users metaconfig/get_resource_types metaconfig/get_site_specs \
        pilot/acquire_jobs pilot/get_job_status pilot/update_job pilot/update_jobs_bulk \
        pilot/update_worker_node pilot/update_worker_node_gpu pilot/update_worker_status \
        statistics/active_job_detailed_stats_by_site statistics/active_job_stats_by_site \
        statistics/job_stats_by_cloud statistics/job_stats_by_site_and_resource_type \
        statistics/job_stats_by_site_share_and_resource_type \
        statistics/production_job_stats_by_cloud_and_processing_type system/get_attributes \
        system/get_user_attributes system/get_voms_attributes system/is_alive task/avalanche \
        task/change_attribute task/change_modification_time task/change_priority \
        task/change_split_rule task/disable_job_cloning task/enable_job_cloning \
        task/enable_jumbo_jobs task/finish task/get_datasets_and_files task/get_detailed_info \
        task/get_details task/get_job_descriptions task/get_job_ids task/get_jumbo_job_datasets \
        task/get_parent_detailed_info task/get_status task/get_task_parameters \
        task/get_tasks_detailed_info_since task/get_tasks_modified_since task/increase_attempts \
        task/kill task/kill_unfinished_jobs task/pause task/reactivate task/reassign \
        task/reassign_global_share task/release task/reload_input task/resume task/retry \
        task/submit workflow/submit_workflow workflow/submit_workflow_raw_request";
    let functions: Vec<&str> = UPSTREAM.split_whitespace().collect();
    assert_eq!(functions.len(), 108);
    for backend in backends() {
        let fixture = start(backend).await;
        for function in &functions {
            let url = fixture.server.url(&format!("/api/v1/{function}"));
            for request in [
                fixture.client.get(&url),
                fixture.client.post(&url).json(&json!({})),
            ] {
                let response = request
                    .header("Accept", "application/json")
                    .send()
                    .await
                    .expect("call");
                let status = response.status().as_u16();
                let text = response.text().await.expect("text");
                assert_eq!(status, 200, "{function}: {text}");
                let envelope: Json = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{function}: not JSON: {text}"));
                for key in ["success", "message", "data"] {
                    assert!(envelope.get(key).is_some(), "{function}: no {key}: {text}");
                }
            }
        }
    }
}
