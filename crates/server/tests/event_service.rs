//! The event service on both backends: an event-service task (`nEventsPerWorker`) gets its
//! `jedi_events` rows when its job is made; the pilot's own, unmodified event-service
//! library (`pilot/eventservice/communicationmanager`, pilot3 3.7.0.36 from PyPI) takes
//! the job and its ranges, reports one failed (version 0) and the rest finished in a zip
//! (version 1); the consumer closes, the next consumer takes the retried range, and the
//! task ends `done` with every range `done`. The calls' bounds and refusals are pinned over
//! HTTP, Harvester's shapes included.

mod common;

use std::process::Command;

use common::{api_client, Stack};
use panda_core::{ColumnType, Value};
use panda_store::testing::backends;
use panda_store::{Store, TxMode};
use serde_json::{json, Value as Json};

/// A `noInput` task of `events` events, one job per `per_job`, ranges of `per_range`.
fn es_task(name: &str, events: i64, per_job: i64, per_range: i64, attempts_es: i64) -> Json {
    json!({
        "taskName": format!("user.tester.{name}/"), "uniqueTaskName": true, "vo": "atlas",
        "architecture": null, "transUses": "", "transHome": null,
        "processingType": "panda-client-2.2.0-jedi-run", "prodSourceLabel": "user",
        "site": null, "excludedSite": [], "includedSite": null,
        "nEvents": events, "nEventsPerJob": per_job, "maxAttempt": 3,
        "nEventsPerWorker": per_range, "maxAttemptES": attempts_es,
        "cliParams": "prun --exec \"echo hello\"", "sourceURL": "http://127.0.0.1:39999",
        "log": {"dataset": format!("user.tester.{name}.log/"),
                "container": format!("user.tester.{name}.log/"), "type": "template",
                "param_type": "log",
                "value": format!("user.tester.{name}.log.$JEDITASKID.${{SN}}.log.tgz")},
        "jobParameters": [
            {"type": "constant", "value": "-r ."},
            {"type": "template", "value": "user.tester.$JEDITASKID._${SN/P}.out.txt",
             "param_type": "output", "dataset": format!("user.tester.{name}_out.txt/"),
             "container": format!("user.tester.{name}_out.txt/"), "hidden": true},
            {"type": "constant", "value": "-p \"echo%20hello\""}],
        "noInput": true
    })
}

async fn post(stack: &Stack, path: &str, body: Json) -> Json {
    common::post_envelope(&api_client(), stack.server.url(path), body, None).await
}

async fn rows(
    store: &Store,
    sql: &str,
    params: &[Value],
    columns: &[ColumnType],
) -> Vec<Vec<String>> {
    let mut tx = store.begin(TxMode::Read).await.expect("tx");
    let rows = tx.fetch(sql, params, columns).await.expect("query");
    rows.into_iter()
        .map(|r| r.iter().map(Value::render).collect())
        .collect()
}

fn int(v: i64) -> Value {
    Value::Int(Some(v))
}

/// The task's ranges: (pandaid, job_processid, status, attemptnr, def_min, def_max,
/// event_offset, error_code, ziprow_id is set), in key order.
async fn ranges(store: &Store, task: i64) -> Vec<Vec<String>> {
    rows(
        store,
        "SELECT pandaid, job_processid, status, attemptnr, def_min_eventid, def_max_eventid, \
         event_offset, error_code, CASE WHEN ziprow_id IS NULL THEN 0 ELSE 1 END \
         FROM jedi_events WHERE jeditaskid = $1 ORDER BY job_processid, pandaid",
        &[int(task)],
        &[ColumnType::BigInt; 9],
    )
    .await
}

/// A job's (jobstatus, jobsubstatus, taskbuffererrorcode, attemptnr, jobsetid,
/// eventservice), from whichever table holds it.
async fn job_row(store: &Store, panda_id: i64) -> Vec<String> {
    for table in ["jobsactive4", "jobsarchived4"] {
        let found = rows(
            store,
            &format!(
                "SELECT jobstatus, jobsubstatus, taskbuffererrorcode, attemptnr, jobsetid, \
                 eventservice FROM {table} WHERE pandaid = $1"
            ),
            &[int(panda_id)],
            &[
                ColumnType::Text,
                ColumnType::Text,
                ColumnType::BigInt,
                ColumnType::BigInt,
                ColumnType::BigInt,
                ColumnType::BigInt,
            ],
        )
        .await;
        if let Some(row) = found.into_iter().next() {
            return row;
        }
    }
    panic!("job {panda_id} is in no table");
}

/// Runs the pilot's library through `es_communicator.py`; its JSON summary.
fn communicator(pilot: &std::path::Path, stack: &Stack, scenario: &str, ranges: usize) -> Json {
    let script = common::scripts().join("es_communicator.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .args(["--pilot-tree", &pilot.display().to_string()])
        .args(["--url", &stack.server.url("")])
        .args(["--queue", "ANALY_QUEUE", "--job-label", "user"])
        .args(["--ranges", &ranges.to_string(), "--scenario", scenario])
        .args(["--timeout", "90", "--call-timeout", "20"])
        .env("PILOT_NOKILL", "1");
    let out = command.output().expect("run es_communicator.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary: Json = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Json::Null);
    assert!(
        out.status.success() && summary["ok"] == true,
        "{scenario}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    summary
}

fn ids(summary: &Json, key: &str) -> Vec<String> {
    summary[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_pilots_event_service_library_runs_an_es_task_to_done() {
    let Some(pilot) = common::install_pilot() else {
        return;
    };
    for backend in backends() {
        let stack = Stack::start(backend, &["httpd"], &[]).await;
        // Ten events, one job, ranges of two: five ranges; two attempts per range.
        let task = stack.submit_task(es_task("es1", 10, 10, 2, 2)).await;
        stack.step("task_refiner");
        stack.step("contents_feeder");
        assert!(stack.step("job_generator").contains("jobs=1"));

        let made = ranges(&stack.store, task).await;
        assert_eq!(made.len(), 5, "{made:?}");
        let jobset = made[0][0].clone();
        for (i, row) in made.iter().enumerate() {
            let first = (2 * i + 1).to_string();
            let last = (2 * i + 2).to_string();
            // Ready under the jobset, numbered from 1 as upstream, two attempts each.
            assert_eq!(
                row[..7],
                [&jobset, &first, "0", "2", &first, &last, &jobset],
                "{made:?}"
            );
        }

        // The first consumer: three ranges, one failed (v0), two finished in a zip (v1),
        // then the two left, until none is handed out.
        let first = communicator(&pilot, &stack, "acceptance", 3);
        assert_eq!(first["eventService"], true, "{first}");
        let consumer = first["pandaID"].as_i64().expect("PandaID");
        assert_eq!(job_row(&stack.store, consumer).await[4], jobset);
        let (got, failed, finished) = (
            ids(&first, "ranges"),
            ids(&first, "failed"),
            ids(&first, "finished"),
        );
        assert_eq!(got.len(), 5, "{first}");
        assert_eq!(
            failed,
            [format!(
                "{task}-{consumer}-{}-1-2",
                made_file(&stack, task).await
            )]
        );
        assert_eq!(finished.len(), 4, "{first}");
        let reported = ranges(&stack.store, task).await;
        let by_status =
            |rows: &[Vec<String>], status: &str| rows.iter().filter(|r| r[2] == status).count();
        assert_eq!(by_status(&reported, "3"), 4, "{reported:?}");
        assert_eq!(by_status(&reported, "7"), 1, "{reported:?}");
        assert!(
            reported.iter().all(|r| r[0] == consumer.to_string()),
            "{reported:?}"
        );
        assert!(
            reported.iter().filter(|r| r[2] == "3").all(|r| r[8] == "1"),
            "finished ranges carry their zip: {reported:?}"
        );
        assert!(
            reported.iter().any(|r| r[2] == "7" && r[7] == "1220"),
            "{reported:?}"
        );
        let zips = rows(
            &stack.store,
            "SELECT lfn, checksum, destinationse FROM filestable4 WHERE pandaid = $1 \
             AND type = 'zipoutput' ORDER BY lfn",
            &[int(consumer)],
            &[ColumnType::Text; 3],
        )
        .await;
        assert_eq!(zips.len(), 2, "{zips:?}");
        assert!(
            zips.iter()
                .all(|z| z[0].starts_with("EventService_premerge_")
                    && z[1].starts_with("ad:")
                    && z[2] == "1318/1000"),
            "{zips:?}"
        );

        // Its end: the four are done, the failed one goes back with one attempt fewer, and
        // the consumer closes for the next.
        stack.step("add_main");
        let closed = job_row(&stack.store, consumer).await;
        assert_eq!(closed[..3], ["closed", "es_retry", "111"], "{closed:?}");
        let settled = ranges(&stack.store, task).await;
        assert_eq!(by_status(&settled, "6"), 4, "{settled:?}");
        let retried: Vec<_> = settled.iter().filter(|r| r[2] == "0").collect();
        assert_eq!(retried.len(), 1, "{settled:?}");
        assert_eq!(retried[0][..4], [&jobset, "1", "0", "1"], "{settled:?}");

        stack.step("post_processor");
        assert_eq!(common::task_status(&stack.store, task).await, "running");
        assert!(stack.step("job_generator").contains("jobs=1"));

        // The next consumer takes the one range left (its new attempt in the ID) and
        // finishes it; the jobset is done, and so is the task.
        let second = communicator(&pilot, &stack, "drain_only", 3);
        let next = second["pandaID"].as_i64().expect("PandaID");
        assert_ne!(next, consumer);
        let got = ids(&second, "ranges");
        assert_eq!(got.len(), 1, "{second}");
        assert!(
            got[0].starts_with(&format!("{task}-{next}-")) && got[0].ends_with("-1-1"),
            "{second}"
        );
        let job = job_row(&stack.store, next).await;
        assert_eq!(
            (job[3].as_str(), job[4].as_str()),
            ("1", jobset.as_str()),
            "{job:?}"
        );
        stack.step("add_main");
        assert_eq!(job_row(&stack.store, next).await[0], "finished");
        stack.step("post_processor");
        assert_eq!(
            common::task_status(&stack.store, task).await,
            "done",
            "{backend:?}"
        );
        let end = ranges(&stack.store, task).await;
        assert_eq!(by_status(&end, "6"), 5, "{end:?}");
        assert_eq!(end.len(), 6, "the failed attempt stays on record: {end:?}");
    }
}

/// The ID of the task's one pseudo file.
async fn made_file(stack: &Stack, task: i64) -> i64 {
    rows(
        &stack.store,
        "SELECT fileid FROM jedi_dataset_contents WHERE jeditaskid = $1 AND type = 'pseudo_input'",
        &[int(task)],
        &[ColumnType::BigInt],
    )
    .await
    .first()
    .and_then(|r| r[0].parse().ok())
    .expect("pseudo file")
}

/// Takes the task's one job as a pilot and reports it running; its PandaID.
async fn take_running_job(stack: &Stack) -> i64 {
    let reply = post(
        stack,
        "/api/v1/pilot/acquire_jobs",
        json!({"site_name": "ANALY_QUEUE", "prod_source_label": "user", "n_jobs": 1}),
    )
    .await;
    let job = reply["data"]["jobs"][0].clone();
    assert_eq!(job["eventService"], "True", "{reply}");
    let id = job["PandaID"].as_i64().expect("PandaID");
    common::update_job(
        &stack.server,
        json!({"jobId": id.to_string(), "state": "running", "attemptNr": job["attemptNr"]}),
    )
    .await;
    id
}

async fn legacy(stack: &Stack, method: &str, form: &[(&str, String)], json: bool) -> (u16, String) {
    let mut request = common::http()
        .post(stack.server.url(&format!("/server/panda/{method}")))
        .form(form);
    if json {
        request = request.header("Accept", "application/json");
    }
    let response = request.send().await.expect("legacy call");
    let status = response.status().as_u16();
    (status, response.text().await.expect("text"))
}

/// The five v1 functions and the five legacy methods as Harvester and other clients call
/// them: shapes, the range limit, a fatal range that is never handed out again, refusals
/// of bad input and of callers without the role.
#[tokio::test]
async fn event_calls_answer_their_clients_and_refuse_what_they_must() {
    for backend in backends() {
        let issuer = common::TokenIssuer::new("atlas");
        let env = issuer.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let stack = Stack::start(backend, &["httpd"], &env).await;
        let task = stack.submit_task(es_task("es2", 6, 6, 1, 1)).await;
        stack.step("task_refiner");
        stack.step("contents_feeder");
        stack.step("job_generator");
        let job = take_running_job(&stack).await;
        let jobset: i64 = ranges(&stack.store, task).await[0][0]
            .parse()
            .expect("jobset");

        // Harvester: the count of ranges left, then ranges by the legacy argument names
        // in v1, read as data["StatusCode"] and data["eventRanges"].
        let client = api_client();
        let count = common::get_with_form_body(
            &client,
            stack
                .server
                .url("/api/v1/event/get_available_event_range_count"),
            json!({"job_id": job, "jobset_id": jobset, "task_id": task}).to_string(),
        )
        .await;
        assert_eq!(count["data"], 6, "{count}");
        let acquired = post(
            &stack,
            "/api/v1/event/acquire_event_ranges",
            json!({"pandaID": job, "jobsetID": jobset, "taskID": task, "nRanges": 2}),
        )
        .await;
        assert_eq!(acquired["data"]["StatusCode"], 0, "{acquired}");
        let got = acquired["data"]["eventRanges"]
            .as_array()
            .expect("ranges")
            .clone();
        assert_eq!(got.len(), 2, "{acquired}");
        let keys: Vec<&str> = got[0]
            .as_object()
            .expect("range")
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "eventRangeID",
            "startEvent",
            "lastEvent",
            "LFN",
            "GUID",
            "scope",
        ] {
            assert!(keys.contains(&key), "{key}: {acquired}");
        }
        assert_eq!(
            (got[0]["startEvent"].as_i64(), got[0]["lastEvent"].as_i64()),
            (Some(1), Some(1))
        );
        let id0 = got[0]["eventRangeID"].as_str().expect("id").to_string();
        let id1 = got[1]["eventRangeID"].as_str().expect("id").to_string();

        // Harvester's v1 report (version 1): one fatal, one running (not stored), one of an
        // unknown job, one malformed; data["StatusCode"] and data["Returns"] as it reads them.
        let report = json!([
            {"eventRangeID": id0, "eventStatus": "fatal", "errorCode": 7},
            {"eventRangeID": id1, "eventStatus": "running"},
            {"eventRangeID": format!("{task}-999999-1-1-1"), "eventStatus": "finished"},
            {"eventRangeID": "not-a-range", "eventStatus": "finished"},
        ]);
        let updated = post(
            &stack,
            "/api/v1/event/update_event_ranges",
            json!({"event_ranges": report.to_string(), "version": 1}),
        )
        .await;
        assert_eq!(updated["data"]["StatusCode"], 0, "{updated}");
        assert_eq!(
            updated["data"]["Returns"],
            json!([true, null, false, false]),
            "{updated}"
        );
        assert_eq!(
            updated["data"]["Commands"]["999999"], "tobekilled",
            "{updated}"
        );
        // A repeated report changes nothing (the range is no longer sent or running).
        let again = post(
            &stack,
            "/api/v1/event/update_single_event_range",
            json!({"event_range_id": id0, "event_range_status": "finished"}),
        )
        .await;
        assert_eq!(again["success"], true, "{again}");
        let statuses = common::get_with_form_body(
            &client,
            stack.server.url("/api/v1/event/get_event_range_statuses"),
            json!({"job_task_ids": [{"task_id": task, "panda_id": job}]}).to_string(),
        )
        .await;
        let mine = &statuses["data"][job.to_string()];
        assert_eq!(mine[&id0]["status"], "failed", "{statuses}");
        assert_eq!(mine[&id0]["error"], 7, "{statuses}");
        assert_eq!(mine[&id1]["status"], "sent", "{statuses}");

        // Legacy: getEventRanges as the pilot asks (JSON) and as an old client (urlencoded,
        // the list as JSON text); updateEventRanges version 0 answers JSON texts.
        let (code, text) = legacy(
            &stack,
            "getEventRanges",
            &[
                ("pandaID", job.to_string()),
                ("jobsetID", jobset.to_string()),
                ("taskID", task.to_string()),
                ("nRanges", "1".into()),
            ],
            true,
        )
        .await;
        assert_eq!(code, 200);
        let reply: Json = serde_json::from_str(&text).expect("JSON");
        assert_eq!(reply["StatusCode"], 0, "{text}");
        let id2 = reply["eventRanges"][0]["eventRangeID"]
            .as_str()
            .expect("id")
            .to_string();
        let (_, text) = legacy(
            &stack,
            "getEventRanges",
            &[
                ("pandaID", job.to_string()),
                ("jobsetID", jobset.to_string()),
                ("nRanges", "1".into()),
            ],
            false,
        )
        .await;
        let form = common::form(&text);
        assert_eq!(form["StatusCode"], "0", "{text}");
        let listed: Json = serde_json::from_str(&form["eventRanges"]).expect("list as JSON text");
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{text}");
        let v0 = json!([{"eventRangeID": id2, "eventStatus": "finished"}]).to_string();
        let (_, text) = legacy(
            &stack,
            "updateEventRanges",
            &[("eventRanges", v0), ("version", "0".into())],
            true,
        )
        .await;
        let reply: Json = serde_json::from_str(&text).expect("JSON");
        assert_eq!(reply["Returns"], "[true]", "{text}");
        assert_eq!(
            reply["Command"],
            format!("{{\"{job}\":\"NULL\"}}"),
            "{text}"
        );
        let (_, text) = legacy(
            &stack,
            "checkEventsAvailability",
            &[
                ("pandaID", job.to_string()),
                ("jobsetID", jobset.to_string()),
                ("taskID", task.to_string()),
            ],
            false,
        )
        .await;
        let reply: Json = serde_json::from_str(&text).expect("always JSON");
        assert_eq!(reply["nEventRanges"], 2, "{text}");
        let ids_arg = json!([{"task_id": task, "panda_id": job}]).to_string();
        let (_, text) = legacy(&stack, "get_events_status", &[("ids", ids_arg)], false).await;
        let reply: Json = serde_json::from_str(&text).expect("bare JSON");
        assert_eq!(reply[job.to_string()][&id2]["status"], "finished", "{text}");

        // Bad input: a clear 400 naming the argument, never a 500.
        let long = "9".repeat(1000);
        for (method, form, needle) in [
            (
                "getEventRanges",
                vec![("pandaID", long.clone())],
                "pandaID must be an integer",
            ),
            ("getEventRanges", vec![], "pandaID is required"),
            (
                "updateEventRanges",
                vec![("eventRanges", "[{".to_string())],
                "not valid JSON",
            ),
            (
                "updateEventRanges",
                vec![("eventRanges", "42".to_string())],
                "JSON list",
            ),
            (
                "get_events_status",
                vec![("ids", "{}".to_string())],
                "JSON list",
            ),
        ] {
            let (code, text) = legacy(&stack, method, &form, false).await;
            assert_eq!(code, 400, "{method}: {text}");
            assert!(text.contains(needle), "{method}: {text}");
        }
        // A status query of more jobs than the bound is refused, naming it.
        let many_ids: Vec<Json> = (0..1001)
            .map(|i| json!({"task_id": task, "panda_id": i}))
            .collect();
        let (code, text) = legacy(
            &stack,
            "get_events_status",
            &[("ids", Json::Array(many_ids).to_string())],
            false,
        )
        .await;
        assert_eq!(code, 400, "{text}");
        assert!(text.contains("at most 1000 jobs"), "{text}");
        // A range ID of 1,000 digits is refused, not parsed.
        let huge = json!([{"eventRangeID": long, "eventStatus": "finished"}]).to_string();
        let (_, text) = legacy(
            &stack,
            "updateEventRanges",
            &[("eventRanges", huge), ("version", "1".into())],
            true,
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Json>(&text).expect("JSON")["Returns"],
            json!([false])
        );

        // A request for more than the limit gets what is left, no error; an unknown job none.
        let many = post(
            &stack,
            "/api/v1/event/acquire_event_ranges",
            json!({"job_id": job, "n_ranges": 1_000_000}),
        )
        .await;
        assert_eq!(
            many["data"]["eventRanges"].as_array().map(Vec::len),
            Some(2),
            "{many}"
        );
        let none = post(
            &stack,
            "/api/v1/event/acquire_event_ranges",
            json!({"job_id": 42}),
        )
        .await;
        assert_eq!(none["data"]["eventRanges"], json!([]), "{none}");

        // A user's token is neither the production nor the pilot role.
        let token = issuer.sign(&issuer.claims("Test user", &["atlas"]));
        let user = common::post_envelope(
            &client,
            stack.server.url("/api/v1/event/acquire_event_ranges"),
            json!({"job_id": job}),
            Some(&token),
        )
        .await;
        assert_eq!(user["success"], false, "{user}");
        assert_eq!(
            user["message"], "production or pilot role required",
            "{user}"
        );
        let response = common::http()
            .post(stack.server.url("/server/panda/updateEventRanges"))
            .bearer_auth(&token)
            .header("Origin", "atlas")
            .header("Accept", "application/json")
            .form(&[("eventRanges", "[]")])
            .send()
            .await
            .expect("post");
        let reply: Json = response.json().await.expect("JSON");
        assert_eq!(reply["StatusCode"], 60, "{reply}");

        // The fatal range is never handed out again: its job ends failed, and so does the
        // task once its file has no consumer left to try.
        common::update_job(
            &stack.server,
            json!({"jobId": job.to_string(), "state": "finished", "attemptNr": 0}),
        )
        .await;
        stack.step("add_main");
        let ended = job_row(&stack.store, job).await;
        assert_eq!(
            (ended[0].as_str(), ended[2].as_str()),
            ("failed", "118"),
            "{ended:?}"
        );
        stack.step("post_processor");
        assert_eq!(
            common::task_status(&stack.store, task).await,
            "failed",
            "{backend:?}"
        );
        let left = ranges(&stack.store, task).await;
        assert!(
            left.iter().all(|r| r[2] != "0"),
            "nothing is left ready: {left:?}"
        );
    }
}
