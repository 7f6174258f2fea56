//! Harvester's calls as its communicator makes them (`pandaharvester/harvestercommunicator/
//! panda_communicator.py`): argument names, encodings (JSON bodies, GET arguments as a form
//! body, JSON texts inside arguments, its time formats) and what it reads back, on both
//! backends against a real server. Harvester's own functions (`harvester/*`), the pilot
//! functions its job fetcher and propagator call, and the credentials its cred managers fetch.
//! Its event-service calls (`get_event_ranges`, `update_event_ranges`,
//! `check_event_availability`) are pinned with the rest of the event service in
//! `event_service.rs`.

mod common;

use common::{api_client, start, submit, Site, Stack, TestJob};
use panda_store::testing::backends;
use serde_json::{json, Value as Json};

#[tokio::test]
async fn harvester_reports_and_commands_round_trip() {
    for backend in backends() {
        let f = start(backend).await;
        let beat = f
            .post(
                "/api/v1/harvester/heartbeat",
                json!({"harvester_id": "harv-1", "data": {
                    "startTime": "datetime/2026-11-25 10:00:00.000000", "sw_version": "0.6.5"}}),
            )
            .await;
        assert_eq!(beat["success"], true, "{beat}");
        let beat = f
            .post(
                "/api/v1/harvester/heartbeat",
                json!({"harvester_id": "harv-1", "data": {}}),
            )
            .await;
        assert_eq!(beat["success"], true);
        let bad = f
            .post(
                "/api/v1/harvester/heartbeat",
                json!({"harvester_id": "harv-1", "data": {"flavour": "x"}}),
            )
            .await;
        assert_eq!(bad["success"], false);
        assert!(bad["message"]
            .as_str()
            .is_some_and(|m| m.contains("flavour")));

        // Harvester's job fetcher sends its camelCase resourceType, which is read as
        // resource_type (no job of that type here), then asks without it.
        let ids = submit(&f.client, &f.server, &[TestJob::new("harv.job")]).await;
        let mut ask = json!({"site_name": "TEST_QUEUE", "node": "wn1",
            "prod_source_label": "managed", "computing_element": "ce1", "n_jobs": 2,
            "scheduler_id": "harvester-harv-1", "resourceType": "MCORE"});
        let none = f.post("/api/v1/pilot/acquire_jobs", ask.clone()).await;
        assert_eq!(none["message"], "No jobs in PanDA", "{none}");
        ask.as_object_mut().map(|m| m.remove("resourceType"));
        let jobs = f.post("/api/v1/pilot/acquire_jobs", ask).await;
        assert_eq!(jobs["data"]["jobs"][0]["PandaID"], ids[0], "{jobs}");
        // The claimed job comes with its files and parameters.
        assert_eq!(
            jobs["data"]["jobs"][0]["logFile"], "harv.job.log.tgz",
            "{jobs}"
        );
        assert_eq!(
            jobs["data"]["jobs"][0]["jobPars"], "/bin/echo hello",
            "{jobs}"
        );
        // The log's GUID is the server's own, as upstream's setup gives every log one.
        let log_guid = jobs["data"]["jobs"][0]["logGUID"].as_str().unwrap_or("");
        assert!(
            log_guid.len() == 36 && log_guid != "11111111-2222-3333-4444-555555555555",
            "{jobs}"
        );

        let workers = f
            .post(
                "/api/v1/harvester/update_workers",
                json!({"harvester_id": "harv-1", "workers": [
                    {"workerID": 7, "status": "running", "computingSite": "TEST_QUEUE",
                     "nCore": 8, "submitTime": "datetime/2026-11-25 10:00:00.000000",
                     "resourceType": "MCORE", "pandaid_list": [ids[0]], "syncLevel": 0},
                    {"workerID": 9, "status": "submitted", "computingSite": "TEST_QUEUE",
                     "submitTime": "02-NOV-24 00:02:18"}
                ]}),
            )
            .await;
        assert_eq!(workers["data"], json!([true, true]), "{workers}");
        // Oracle's rendering of a time is read as the time it names.
        let mut tx = f.store.begin(panda_store::TxMode::Read).await.expect("tx");
        let submitted = tx
            .fetch(
                "SELECT submittime FROM harvester_workers WHERE harvesterid = $1 \
                 AND workerid = 9",
                &[panda_core::Value::Text(Some("harv-1".into()))],
                &[panda_core::ColumnType::Timestamp],
            )
            .await
            .expect("read");
        tx.commit().await.expect("commit");
        assert_eq!(
            submitted[0][0].render(),
            "2024-11-02 00:02:18",
            "{backend:?}"
        );
        let max = f
            .get(
                "/api/v1/harvester/get_current_worker_id",
                &[("harvester_id", "harv-1")],
            )
            .await;
        assert_eq!(max["data"], 9);

        // The pilot under Harvester reports its worker started.
        let started = f
            .post(
                "/api/v1/pilot/update_worker_status",
                json!({"worker_id": 7, "harvester_id": "harv-1", "status": "started",
                       "node_id": "wn1"}),
            )
            .await;
        assert_eq!(started["success"], true, "{started}");
        let brief = f.store.worker_brief("harv-1", 7).await.expect("read");
        assert_eq!(
            brief,
            Some((
                "running".into(),
                Some("TEST_QUEUE".into()),
                Some("started".into())
            ))
        );
        let bad_status = f
            .post(
                "/api/v1/pilot/update_worker_status",
                json!({"worker_id": 7, "harvester_id": "harv-1", "status": "sleeping"}),
            )
            .await;
        assert_eq!(bad_status["success"], false);

        // Harvester's update_jobs_bulk, as its communicator maps job specs.
        let report = json!({"harv.job.log.tgz": {"guid": "g", "fsize": 10, "adler32": "0a0b0c0d"}});
        let bulk = f
            .post(
                "/api/v1/pilot/update_jobs_bulk",
                json!({"harvester_id": "harv-1", "job_list": [
                    {"job_id": ids[0], "site_name": "TEST_QUEUE", "job_status": "finished",
                     "attempt_nr": 0, "core_count": 8, "meta_data": "{}",
                     "job_output_report": report.to_string(), "node": "wn1"}
                ]}),
            )
            .await;
        assert_eq!(bulk["data"][0]["success"], true, "{bulk}");

        let command_id = f
            .store
            .add_harvester_command("harv-1", "SET_N_WORKERS_JOBTYPE", Some("{\"n\": 3}"), true)
            .await
            .expect("command");
        let commands = f
            .post(
                "/api/v1/harvester/acquire_commands",
                json!({"harvester_id": "harv-1", "n_commands": 5}),
            )
            .await;
        assert_eq!(commands["data"][0]["command_id"], command_id, "{commands}");
        assert_eq!(commands["data"][0]["params"]["n"], 3);
        let none = f
            .post(
                "/api/v1/harvester/acquire_commands",
                json!({"harvester_id": "harv-1", "n_commands": 5}),
            )
            .await;
        assert_eq!(none["data"], json!([]));
        let ack = f
            .post(
                "/api/v1/harvester/acknowledge_commands",
                json!({"command_ids": [command_id]}),
            )
            .await;
        assert_eq!(ack["success"], true);

        let stats = json!({"managed": {"SCORE": {"running": 4, "submitted": 1},
                                        "Undefined": {"running": 9}}});
        let reported = f
            .post(
                "/api/v1/harvester/report_worker_statistics",
                json!({"harvester_id": "harv-1", "panda_queue": "TEST_QUEUE",
                       "statistics": stats.to_string()}),
            )
            .await;
        assert_eq!(reported["message"], "OK");
        let read = f.get("/api/v1/harvester/get_worker_statistics", &[]).await;
        assert_eq!(
            read["data"]["TEST_QUEUE"]["harv-1"]["managed"],
            json!({"SCORE": {"running": 4, "submitted": 1}})
        );
        let metrics = f
            .post(
                "/api/v1/harvester/update_service_metrics",
                json!({"harvester_id": "harv-1", "metrics": [
                    ["2026-11-25 10:00:00.000000", "harvester-host", "{\"cpu\": 3}"]]}),
            )
            .await;
        assert_eq!(metrics["data"], json!([true]));
        let dialogs = f
            .post(
                "/api/v1/harvester/add_dialogs",
                json!({"harvester_id": "harv-1", "dialogs": [
                    {"diagID": 1, "moduleName": "submitter", "identifier": "x",
                     "creationTime": "2026-11-25 10:00:00.000000", "messageLevel": "ERROR",
                     "diagMessage": "failed to submit"}]}),
            )
            .await;
        assert_eq!(dialogs["success"], true, "{dialogs}");
        let not_harvester = f
            .post(
                "/api/v1/harvester/add_dialogs",
                json!({"harvester_id": "h", "dialogs": [1]}),
            )
            .await;
        assert_eq!(not_harvester["success"], false);
    }
}

/// Queues with and without a Harvester instance, and their computing elements.
const HARVESTER_QUEUES: &str = r#"{
  "HQ": {"nickname": "HQ", "status": "online", "type": "production", "harvester": "harv-9",
         "queues": [{"ce_endpoint": "ce1.test:9619"}, {"ce_endpoint": "ce2.test:9619"}]},
  "PLAIN": {"nickname": "PLAIN", "status": "online", "type": "production"}
}"#;

/// `harvester/add_sweep_command`: a `KILL_WORKERS` command for the queue's Harvester
/// instance, with upstream's params (unknown computing elements dropped); the production role
/// only; bounded filters; the queue's faults named.
#[tokio::test]
async fn a_sweep_command_reaches_the_queues_harvester() {
    for backend in backends() {
        let issuer = common::TokenIssuer::new("atlas");
        let env = issuer.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let stack = Stack::start_at(
            backend,
            &["httpd"],
            &env,
            Site::with_queues(HARVESTER_QUEUES),
        )
        .await;
        let client = api_client();
        // A POST to a harvester function, as the local operator or with a bearer token.
        let call = |function: &str, body: Json, token: Option<&str>| {
            let url = stack.server.url(&format!("/api/v1/harvester/{function}"));
            let (client, token) = (&client, token.map(str::to_string));
            async move { common::post_envelope(client, url, body, token.as_deref()).await }
        };
        let post = |body: Json| call("add_sweep_command", body, None);
        let acquire = || {
            call(
                "acquire_commands",
                json!({"harvester_id": "harv-9", "n_commands": 10}),
                None,
            )
        };
        let sweep = |queue: &str, ces: Json| {
            json!({"panda_queue": queue, "status_list": ["submitted", "running"],
                   "ce_list": ces, "submission_host_list": ["sub1.test"]})
        };
        let done = post(sweep("HQ", json!(["ce1.test:9619", "elsewhere:9619"]))).await;
        assert_eq!(done["success"], true, "{backend:?}: {done}");
        let all = post(sweep("HQ", json!("ALL"))).await;
        assert_eq!(all["success"], true, "{all}");
        let commands = acquire().await;
        let commands = commands["data"].as_array().cloned().unwrap_or_default();
        assert_eq!(commands.len(), 2, "{commands:?}");
        assert_eq!(commands[0]["command"], "KILL_WORKERS");
        assert_eq!(
            commands[0]["params"],
            json!({"status": ["submitted", "running"], "computingSite": ["HQ"],
                   "computingElement": ["ce1.test:9619"], "submissionHost": ["sub1.test"]})
        );
        assert_eq!(commands[1]["params"]["computingElement"], "ALL");

        for (body, message) in [
            (
                sweep("PLAIN", json!("ALL")),
                "Queue not served by any harvester ID",
            ),
            (
                sweep("NO_SUCH_QUEUE", json!("ALL")),
                "Error retrieving queue configuration from DB",
            ),
            (
                sweep("HQ", json!(7)),
                "ce_list must be a list of computing elements, or \"ALL\"",
            ),
        ] {
            let refused = post(body).await;
            assert_eq!(refused["success"], false, "{refused}");
            assert_eq!(refused["message"], message);
        }
        let mut huge = sweep("HQ", json!("ALL"));
        huge["status_list"] = json!(vec!["running"; 1001]);
        let refused = post(huge).await;
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("at most 1000")),
            "{refused}"
        );
        // A user's token is not the production role.
        let token = issuer.sign(&issuer.claims("Test user", &["atlas"]));
        let user = call("add_sweep_command", sweep("HQ", json!("ALL")), Some(&token)).await;
        assert_eq!(
            user["message"], "production or pilot role required",
            "{user}"
        );
        let left = acquire().await;
        assert_eq!(left["data"], json!([]), "nothing queued by the refusals");
    }
}

/// `harvester/add_target_slots`: the target slots of a queue, per share and resource type or
/// for the whole queue, replaced on a second call, removed with -1; the production role only;
/// bad values named, nothing stored.
#[tokio::test]
async fn target_slots_are_set_replaced_and_removed() {
    for backend in backends() {
        let issuer = common::TokenIssuer::new("atlas");
        let env = issuer.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let stack = Stack::start_at(backend, &["httpd"], &env, Site::new()).await;
        let client = api_client();
        let call = |body: Json, token: Option<String>| {
            let url = stack.server.url("/api/v1/harvester/add_target_slots");
            let client = &client;
            async move { common::post_envelope(client, url, body, token.as_deref()).await }
        };
        let whole = call(json!({"panda_queue": "CERN", "slots": 10000}), None).await;
        assert_eq!(
            whole,
            json!({"success": true, "data": null,
                   "message": "set numSlots=10000 for PQ=CERN gshare=None resource=None"}),
            "{backend:?}"
        );
        let share = json!({"panda_queue": "CERN", "slots": 50, "global_share": "User Analysis",
                           "resource_type": "SCORE", "expiration_date": "3"});
        assert_eq!(call(share.clone(), None).await["success"], true);
        let mut again = share.clone();
        again["slots"] = json!(70);
        assert_eq!(call(again, None).await["success"], true);
        let slots = stack.store.target_slots("CERN").await.expect("slots");
        assert_eq!(
            slots.len(),
            2,
            "{backend:?}: one row per share and type: {slots:?}"
        );
        let shared = slots
            .iter()
            .find(|s| s.0.as_deref() == Some("User Analysis"))
            .expect("the share's row");
        assert_eq!((shared.1.as_deref(), shared.2), (Some("SCORE"), 70));
        let expiry = shared.3.expect("an expiry");
        let days = (expiry - panda_core::time::now()).num_hours();
        assert!((71..=72).contains(&days), "three days: {days} h");
        let whole_row = slots.iter().find(|s| s.0.is_none()).expect("whole queue");
        assert_eq!((whole_row.2, whole_row.3), (10000, None));
        // -1 removes the entry it names, and only that one.
        let mut remove = share.clone();
        remove["slots"] = json!(-1);
        assert_eq!(call(remove, None).await["success"], true);
        let slots = stack.store.target_slots("CERN").await.expect("slots");
        assert_eq!(slots.len(), 1, "{slots:?}");

        for (body, message) in [
            (json!({"panda_queue": "CERN", "slots": -2}), "slots must be"),
            (
                json!({"panda_queue": "CERN", "slots": 1, "expiration_date": "soon"}),
                "expiration_date must be a number of days",
            ),
            (
                json!({"panda_queue": "Q".repeat(200), "slots": 1}),
                "panda_queue must have 1 to 128 characters",
            ),
            (json!({"panda_queue": "CERN"}), "slots"),
        ] {
            let refused = call(body.clone(), None).await;
            assert_eq!(refused["success"], false, "{body}: {refused}");
            assert!(
                refused["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(message)),
                "{body}: {refused}"
            );
        }
        let token = issuer.sign(&issuer.claims("Test user", &["atlas"]));
        let user = call(json!({"panda_queue": "CERN", "slots": 5}), Some(token)).await;
        assert_eq!(
            user["message"], "production or pilot role required",
            "{user}"
        );
        let slots = stack.store.target_slots("CERN").await.expect("slots");
        assert_eq!(slots.len(), 1, "the refusals stored nothing");
        assert_eq!(slots[0].2, 10000);
    }
}

/// Harvester's client sends a GET's arguments as a form body labelled JSON (`requests` with
/// `data=`): with no query string that body is read, lists as repeated fields, and the same
/// functions answer as from a query.
#[tokio::test]
async fn harvester_gets_with_their_arguments_in_a_form_body_are_answered() {
    for backend in backends() {
        let f = start(backend).await;
        let ids = submit(
            &f.client,
            &f.server,
            &[TestJob::new("h.1"), TestJob::new("h.2")],
        )
        .await;
        let get = |path: &str, body: String| {
            common::get_with_form_body(&f.client, f.server.url(path), body)
        };
        let statuses = get(
            "/api/v1/job/get_status",
            format!("job_ids={}&job_ids={}&job_ids=424242", ids[0], ids[1]),
        )
        .await;
        assert_eq!(statuses["success"], true, "{backend:?}: {statuses}");
        let data = statuses["data"].as_array().cloned().unwrap_or_default();
        assert_eq!(data.len(), 3, "{statuses}");
        assert_eq!(data[0]["status"], "activated");
        assert_eq!(data[2]["status"], "unknown");
        let worker = get(
            "/api/v1/harvester/get_current_worker_id",
            "harvester_id=harv-none".into(),
        )
        .await;
        // The argument was read: the answer names the instance.
        assert_eq!(
            worker["message"], "no workers known for harvester_id=harv-none",
            "{worker}"
        );
        // A JSON body serves too; a body that is neither is named.
        let json_body = get(
            "/api/v1/harvester/get_current_worker_id",
            json!({"harvester_id": "harv-none"}).to_string(),
        )
        .await;
        assert_eq!(json_body["message"], worker["message"], "{json_body}");
        let missing = get(
            "/api/v1/harvester/get_current_worker_id",
            "\u{1}=%ZZ".into(),
        )
        .await;
        assert_eq!(missing["success"], false, "{missing}");
    }
}

/// Harvester's credential managers: `creds/get_proxy` (its own DN, by role), and
/// `creds/get_token_key` and `creds/get_key_pair`, each a GET with its arguments in a form
/// body; it reads `data["userProxy"]`, `data["tokenKey"]` and the key pair's dict. The
/// cacher's `metaconfig/get_resource_types` and the job statistics read the same way.
#[tokio::test]
async fn harvester_fetches_its_proxy_token_keys_and_key_pairs() {
    for backend in backends() {
        let stack = Stack::start_at(backend, &[], &[], Site::new()).await;
        let dir = stack.site.dir.path();
        let register = |args: &[&str]| {
            let mut full = vec!["creds", "add"];
            full.extend_from_slice(args);
            let out = common::run(&full, &stack.env);
            assert!(out.status.success(), "{args:?}: {out:?}");
        };
        let file = |name: &str, content: &str| {
            let path = dir.join(name);
            std::fs::write(&path, content).expect("file");
            path.display().to_string()
        };
        let proxy = file("robot.pem", "ROBOT-PROXY");
        let role = "atlas:/atlas/Role=production";
        register(&[
            "proxy",
            "/CN=local operator",
            "--label",
            role,
            "--file",
            &proxy,
        ]);
        register(&["token_key", "pilot_server"]);
        let public = file("pub.key", "PUB");
        let private = file("priv.key", "PRIV");
        register(&["key", "pub.key", "--file", &public]);
        register(&["key", "priv.key", "--file", &private]);

        let client = api_client();
        let get = |function: &str, body: String| {
            let url = stack.server.url(&format!("/api/v1/{function}"));
            common::get_with_form_body(&client, url, body)
        };
        let answer = get(
            "creds/get_proxy",
            format!("role={}", role.replace('/', "%2F")),
        )
        .await;
        assert_eq!(
            answer["data"]["userProxy"], "ROBOT-PROXY",
            "{backend:?}: {answer}"
        );
        let answer = get("creds/get_token_key", "client_name=pilot_server".into()).await;
        let key = answer["data"]["tokenKey"].as_str().unwrap_or_default();
        assert_eq!(key.len(), 64, "{answer}");
        let answer = get(
            "creds/get_key_pair",
            "public_key_name=pub.key&private_key_name=priv.key".into(),
        )
        .await;
        assert_eq!(
            answer["data"],
            json!({"public_key": "PUB", "private_key": "PRIV"}),
            "{answer}"
        );
        let missing = get("creds/get_token_key", "client_name=nobody".into()).await;
        assert_eq!(missing["success"], false);
        assert_eq!(missing["message"], "token key is missing for 'nobody'");

        let types = get("metaconfig/get_resource_types", String::new()).await;
        assert_eq!(types["success"], true, "{types}");
        assert!(types["data"].is_array(), "{types}");
        let stats = get("statistics/active_job_stats_by_site", String::new()).await;
        assert!(stats["data"].is_object(), "{stats}");
    }
}
