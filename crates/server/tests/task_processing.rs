//! Task processing on both backends, step by step as operators can run it (`panda-server
//! daemon --run-once <step>`): a prun-shaped `noInput` task is refined, gets its pseudo
//! files, becomes three jobs named and parametrised as JEDI names them, and — once pilots
//! report — ends `done` with its outputs registered, or retries failed files up to
//! `maxAttempt` and ends `failed`; pbook's listing shows the progress. Malformed parameters
//! make the task `broken` with the reason.

mod common;

use common::{api_client, no_input_task as task_parameters, run, Stack};
use panda_core::{ColumnType, JobAttr, Value};
use panda_store::testing::backends;
use panda_store::{Backend, Store, TxMode};
use serde_json::{json, Value as Json};

async fn post(stack: &Stack, path: &str, body: Json) -> Json {
    api_client()
        .post(stack.server.url(path))
        .json(&body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("envelope")
}

async fn rows(store: &Store, sql: &str, id: i64, columns: &[ColumnType]) -> Vec<Vec<String>> {
    let mut tx = store.begin(TxMode::Read).await.expect("tx");
    let rows = tx
        .fetch(sql, &[Value::Int(Some(id))], columns)
        .await
        .expect("query");
    rows.into_iter()
        .map(|r| r.iter().map(Value::render).collect())
        .collect()
}

async fn execute(store: &Store, sql: &str, params: &[Value]) -> u64 {
    let mut tx = store.begin(TxMode::Write).await.expect("tx");
    let changed = tx.execute(sql, params).await.expect("statement");
    tx.commit().await.expect("commit");
    changed
}

/// A pilot at ANALY_QUEUE takes one user job and reports it running.
async fn take_job(stack: &Stack) -> Option<Json> {
    take_job_at(stack, "ANALY_QUEUE").await
}

/// A pilot at `site` takes one user job and reports it running.
async fn take_job_at(stack: &Stack, site: &str) -> Option<Json> {
    common::take_running_job(stack, site, "user").await
}

/// The pilot's final report: finished with a file report for every output, or failed.
async fn report(stack: &Stack, job: &Json, finished: bool) {
    common::report_end(stack, job, finished).await;
}

/// A task listing since 2020 (`task/<function>`); the envelope.
async fn listing_since(stack: &Stack, function: &str) -> Json {
    api_client()
        .get(stack.server.url(&format!("/api/v1/task/{function}")))
        .query(&[("since", "2020-01-01 00:00:00")])
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("envelope")
}

async fn listed(stack: &Stack, id: i64) -> Json {
    let reply = listing_since(stack, "get_tasks_detailed_info_since").await;
    reply["data"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["jediTaskID"] == id).cloned())
        .unwrap_or(Json::Null)
}

#[tokio::test]
async fn a_no_input_task_becomes_jobs_and_ends_done() {
    for backend in backends() {
        let stack = Stack::start(
            backend,
            &["httpd"],
            &[("PANDA_WN_SCRIPT_BASE_URL", "http://trf.example:25080")],
        )
        .await;
        let id = stack.submit_task(task_parameters("t1", 3, 3)).await;
        assert_eq!(common::task_status(&stack.store, id).await, "registered");

        assert!(stack.step("task_refiner").contains("tasks=1"));
        assert_eq!(common::task_status(&stack.store, id).await, "defined");
        let task = stack.store.get_task(id).await.expect("read").expect("task");
        assert_eq!(
            task.get_str(panda_core::TaskAttr::transPath),
            Some("http://trf.example:25080/trf/user/runGen-00-00-02")
        );
        let jobset = task.get_i64(panda_core::TaskAttr::reqID).expect("reqID");
        // Listed as upstream lists tasks: keyed by reqID, the split rules by name, the job
        // template with the details.
        let changed = common::post_envelope(
            &api_client(),
            stack.server.url("/api/v1/task/change_split_rule"),
            json!({"task_id": id, "attribute_name": "NF", "value": 2}),
            None,
        )
        .await;
        assert_eq!(changed["success"], true, "{changed}");
        let modified = listing_since(&stack, "get_tasks_modified_since").await;
        assert_eq!(
            modified["data"][jobset.to_string()]["jediTaskID"],
            id,
            "{backend:?}: {modified}"
        );
        assert_eq!(modified["data"][jobset.to_string()]["reqID"], jobset);
        let shown = listed(&stack, id).await;
        assert_eq!(shown["splitRule"], "nFilesPerJob=2", "{shown}");
        assert!(
            shown["job_execution_params"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "{shown}"
        );
        assert!(stack.step("contents_feeder").contains("files=3"));
        assert_eq!(common::task_status(&stack.store, id).await, "ready");
        assert!(stack.step("job_generator").contains("jobs=3"));
        assert_eq!(common::task_status(&stack.store, id).await, "running");
        assert!(
            stack.step("job_generator").contains("jobs=0"),
            "a file went to two jobs"
        );

        let mut jobs = Vec::new();
        while let Some(job) = take_job(&stack).await {
            jobs.push(job);
        }
        assert_eq!(jobs.len(), 3, "{backend:?}");
        for (i, job) in jobs.iter().enumerate() {
            let panda_id = job["PandaID"].as_i64().expect("PandaID");
            assert_eq!(job["jobName"], format!("user.tester.t1/.{panda_id}"));
            assert_eq!(job["jobsetID"].as_i64(), Some(jobset));
            assert_eq!(
                job["transformation"],
                "http://trf.example:25080/trf/user/runGen-00-00-02"
            );
            let serial = format!("{:06}", i + 1);
            assert_eq!(
                job["jobPars"],
                format!(
                    "-j \"\" --sourceURL http://127.0.0.1:39999 -r . -a jobO.f76aedaf.tar.gz \
                     -o \"{{'out.txt': 'user.tester.{id}._{serial}.out.txt'}}\" \
                     -p \"echo%20hello%20%3E%20out.txt\""
                )
            );
            let log = format!("user.tester.t1.log.{id}.{serial}.log.tgz");
            assert_eq!(job["logFile"], log.as_str());
            assert!(job["outFiles"]
                .as_str()
                .is_some_and(|o| o.contains(&log) && o.contains(".out.txt")));
            assert_eq!(job["scopeLog"], "user.tester");
            report(&stack, job, true).await;
        }
        stack.step("add_main");
        assert!(stack.step("post_processor").contains("closed=1"));
        assert_eq!(
            common::task_status(&stack.store, id).await,
            "done",
            "{backend:?}"
        );
        let shown = listed(&stack, id).await;
        assert_eq!(shown["nFiles"], 3, "{shown}");
        assert_eq!(shown["pctFinished"], 100, "{shown}");

        let outputs = rows(
            &stack.store,
            "SELECT c.lfn, c.fsize, c.checksum FROM jedi_dataset_contents c \
             JOIN jedi_datasets d ON d.jeditaskid = c.jeditaskid AND d.datasetid = c.datasetid \
             WHERE c.jeditaskid = $1 AND d.type = 'output' ORDER BY c.lfn",
            id,
            &[ColumnType::Text, ColumnType::BigInt, ColumnType::Text],
        )
        .await;
        assert_eq!(outputs.len(), 3, "{outputs:?}");
        assert!(outputs[0][0].ends_with("._000001.out.txt"), "{outputs:?}");
        assert_eq!(outputs[0][1], "1001", "{outputs:?}");
        assert_eq!(outputs[0][2], "ad:0a1b2c31", "{outputs:?}");
        let history = rows(
            &stack.store,
            "SELECT status FROM tasks_statuslog WHERE jeditaskid = $1 ORDER BY modificationtime",
            id,
            &[ColumnType::Text],
        )
        .await;
        let history: Vec<&str> = history.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            history,
            [
                "registered",
                "defined",
                "ready",
                "running",
                "prepared",
                "done"
            ]
        );
    }
}

#[tokio::test]
async fn failed_files_are_retried_up_to_max_attempt_then_the_task_fails_and_retry_reopens_it() {
    let stack = Stack::start(Backend::Sqlite, &["httpd"], &[]).await;
    let id = stack.submit_task(task_parameters("t2", 1, 2)).await;
    for name in ["task_refiner", "contents_feeder", "job_generator"] {
        stack.step(name);
    }
    let mut attempts = Vec::new();
    for _ in 0..2 {
        let job = take_job(&stack).await.expect("a job");
        attempts.push(job["attemptNr"].as_i64().unwrap_or(-1));
        report(&stack, &job, false).await;
        stack.step("add_main");
        stack.step("post_processor");
        stack.step("job_generator");
    }
    assert_eq!(attempts, [0, 1]);
    assert!(take_job(&stack).await.is_none(), "a third attempt");
    assert_eq!(common::task_status(&stack.store, id).await, "failed");
    let failed = stack
        .store
        .get_job(
            stack
                .store
                .task_job_ids(id)
                .await
                .expect("ids")
                .last()
                .copied()
                .unwrap_or_default(),
        )
        .await
        .expect("read")
        .expect("job");
    assert_eq!(failed.get_str(JobAttr::lockedby), Some("jedi"));

    // pbook retry: the failed file gets new attempts, which a pilot runs.
    let retried = post(&stack, "/api/v1/task/retry", json!({"task_id": id})).await;
    assert_eq!(retried["data"], 0, "{retried}");
    stack.step("job_generator");
    let job = take_job(&stack).await.expect("a job after the retry");
    assert_eq!(job["attemptNr"], 2);
    report(&stack, &job, true).await;
    stack.step("add_main");
    stack.step("post_processor");
    assert_eq!(common::task_status(&stack.store, id).await, "done");
}

#[tokio::test]
async fn malformed_parameters_break_the_task_with_the_reason() {
    let stack = Stack::start(Backend::Sqlite, &["httpd"], &[]).await;
    let mut bad = task_parameters("t3", 1, 1);
    bad["jobParameters"] = json!([{"type": "constant"}]);
    let id = stack.submit_task(bad).await;
    let mut input = task_parameters("t4", 1, 1);
    input.as_object_mut().expect("object").remove("noInput");
    let needs_input = stack.submit_task(input).await;
    assert!(stack.step("task_refiner").contains("broken=2"));
    for (task, words) in [
        (id, "jobParameters[0] needs value"),
        (needs_input, "neither noInput nor an input dataset"),
    ] {
        let spec = stack
            .store
            .get_task(task)
            .await
            .expect("read")
            .expect("task");
        assert_eq!(spec.get_str(panda_core::TaskAttr::status), Some("broken"));
        assert!(
            spec.get_str(panda_core::TaskAttr::errorDialog)
                .is_some_and(|d| d.contains(words)),
            "{:?}",
            spec.get_str(panda_core::TaskAttr::errorDialog)
        );
    }
    assert!(stack.step("job_generator").contains("jobs=0"));
}

#[tokio::test]
async fn a_killed_task_tells_its_running_pilot_and_ends_aborted() {
    for backend in backends() {
        let stack = Stack::start(backend, &["httpd"], &[]).await;
        let id = stack.submit_task(task_parameters("t5", 2, 3)).await;
        for name in ["task_refiner", "contents_feeder", "job_generator"] {
            stack.step(name);
        }
        let running = take_job(&stack).await.expect("a job");
        let killed = post(&stack, "/api/v1/task/kill", json!({"task_id": id})).await;
        assert_eq!(killed["success"], true, "{killed}");
        assert_eq!(common::task_status(&stack.store, id).await, "aborting");
        // The pilot hears of it on its next heartbeat.
        let panda_id = running["PandaID"].as_i64().expect("PandaID");
        let beat = common::update_job(
            &stack.server,
            json!({"jobId": panda_id.to_string(), "state": "running", "attemptNr": 0}),
        )
        .await;
        assert_eq!(
            beat.get("command").map(String::as_str),
            Some("tobekilled"),
            "{beat:?}"
        );
        report(&stack, &running, false).await;
        stack.step("add_main");
        stack.step("post_processor");
        assert_eq!(
            common::task_status(&stack.store, id).await,
            "aborted",
            "{backend:?}"
        );
        // Nothing is generated for a killed task, and nothing is left to a pilot.
        assert!(stack.step("job_generator").contains("jobs=0"));
        assert!(take_job(&stack).await.is_none());
    }
}

/// prun's parameters for `--inDS <dataset> --nFilesPerJob <n>` (as prun 2.2.0 dumps them).
fn input_task_parameters(name: &str, dataset: &str, per_job: i64) -> Json {
    json!({
        "taskName": format!("user.tester.{name}/"), "uniqueTaskName": true, "vo": "atlas",
        "prodSourceLabel": "user", "nFilesPerJob": per_job, "nMaxFilesPerJob": 200,
        "sourceURL": "http://127.0.0.1:39999", "dsForIN": dataset,
        "log": {"dataset": format!("user.tester.{name}.log/"), "type": "template",
                "param_type": "log", "value": format!("user.tester.{name}.log.$JEDITASKID.${{SN}}.log.tgz")},
        "jobParameters": [
            {"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
            {"type": "constant", "value": "-r ."},
            {"type": "template", "param_type": "input", "value": "-i \"${IN/T}\"",
             "dataset": dataset, "exclude": "\\.log\\.tgz(\\.\\d+)*$", "expand": true},
            {"type": "constant", "value": "-p \"", "padding": false},
            {"type": "constant", "value": "cat%20%25IN", "padding": false},
            {"type": "constant", "value": "\""}]
    })
}

#[tokio::test]
async fn a_task_on_a_catalogued_dataset_gets_one_job_per_n_files() {
    for backend in backends() {
        let stack = Stack::start(backend, &["httpd"], &[]).await;
        let files = stack.site.dir.path().join("inputs");
        std::fs::create_dir_all(&files).expect("dir");
        let mut paths = Vec::new();
        for name in ["in.1.txt", "in.2.txt", "in.3.txt", "old.log.tgz"] {
            std::fs::write(files.join(name), name).expect("file");
            paths.push(files.join(name).display().to_string());
        }
        let se = stack.site.dir.path().join("se").display().to_string();
        let mut args = vec![
            "datasets",
            "add",
            "user.tester.in1",
            "--scope",
            "user.tester",
            "--se",
            &se,
        ];
        args.extend(paths.iter().map(String::as_str));
        let added = run(&args, &stack.env);
        assert!(added.status.success(), "{added:?}");
        assert!(String::from_utf8_lossy(&added.stdout).contains("4 files added"));
        let catalogue = run(&["datasets", "list", "user.tester.in1"], &stack.env);
        let catalogue = String::from_utf8_lossy(&catalogue.stdout).into_owned();
        assert!(
            catalogue.contains("in.2.txt\tuser.tester\t") && catalogue.contains("ad:"),
            "{catalogue}"
        );

        let id = stack
            .submit_task(input_task_parameters("in", "user.tester.in1", 2))
            .await;
        let unknown = stack
            .submit_task(input_task_parameters("nodata", "user.tester.none", 1))
            .await;
        stack.step("task_refiner");
        assert!(stack.step("contents_feeder").contains("broken=1"));
        let spec = stack
            .store
            .get_task(unknown)
            .await
            .expect("read")
            .expect("task");
        assert!(spec
            .get_str(panda_core::TaskAttr::errorDialog)
            .is_some_and(|d| d.contains("not in the dataset catalogue")));
        assert!(
            stack.step("job_generator").contains("jobs=2"),
            "3 files, 2 per job"
        );
        let mut jobs = Vec::new();
        while let Some(job) = take_job(&stack).await {
            jobs.push(job);
        }
        assert_eq!(jobs.len(), 2, "{backend:?}");
        jobs.sort_by_key(|j| j["PandaID"].as_i64());
        assert_eq!(jobs[0]["inFiles"], "in.1.txt,in.2.txt", "{}", jobs[0]);
        assert_eq!(jobs[1]["inFiles"], "in.3.txt");
        assert!(
            jobs[0]["jobPars"]
                .as_str()
                .is_some_and(|p| p.contains("-i \"['in.1.txt', 'in.2.txt']\"")),
            "{}",
            jobs[0]["jobPars"]
        );
        assert_eq!(jobs[0]["scopeIn"], "user.tester,user.tester");
        for job in &jobs {
            report(&stack, job, true).await;
        }
        stack.step("add_main");
        stack.step("post_processor");
        assert_eq!(
            common::task_status(&stack.store, id).await,
            "done",
            "{backend:?}"
        );
        let shown = listed(&stack, id).await;
        assert_eq!(
            (shown["nFiles"].as_i64(), shown["pctFinished"].as_i64()),
            (Some(3), Some(100))
        );
    }
}

/// prun's parameters without `--noBuild`: a build step (`buildSpec`) and `-l ${LIB}`.
fn build_task_parameters(name: &str, jobs: i64, max_attempt: i64) -> Json {
    let mut params = task_parameters(name, jobs, max_attempt);
    params["buildSpec"] = json!({"prodSourceLabel": "panda",
        "archiveName": "sources.5e1f.tar.gz",
        "jobParameters": "-i ${IN} -o ${OUT} --sourceURL ${SURL} -r . "});
    params["jobParameters"][3] = json!({"type": "constant", "value": "-l ${LIB}"});
    params
}

#[tokio::test]
async fn a_task_with_a_build_step_runs_its_build_first_then_the_jobs_with_the_library() {
    for backend in backends() {
        let stack = Stack::start(backend, &["httpd"], &[]).await;
        let id = stack.submit_task(build_task_parameters("b1", 2, 3)).await;
        stack.step("task_refiner");
        stack.step("contents_feeder");
        stack.step("job_generator");
        assert_eq!(common::task_status(&stack.store, id).await, "running");
        let build = take_job(&stack).await.expect("the build job");
        assert!(
            take_job(&stack).await.is_none(),
            "run jobs wait for the build"
        );
        assert_eq!(build["prodSourceLabel"], "panda", "{build}");
        assert!(build["transformation"]
            .as_str()
            .is_some_and(|t| t.ends_with("/trf/user/buildGen-00-00-01")));
        let lib = build["outFiles"]
            .as_str()
            .and_then(|o| o.split(',').find(|f| f.ends_with(".lib.tgz")))
            .expect("the library is an output")
            .to_string();
        assert!(
            lib.starts_with("panda.") && lib.contains(&format!(".lib._{id:06}")),
            "{lib}"
        );
        assert_eq!(
            build["jobPars"],
            format!("-i sources.5e1f.tar.gz -o {lib} --sourceURL http://127.0.0.1:39999 -r .")
        );
        // The run jobs exist from the start, waiting for the library.
        let held = rows(
            &stack.store,
            "SELECT jobstatus, computingsite FROM jobsdefined4 WHERE jeditaskid = $1",
            id,
            &[ColumnType::Text, ColumnType::Text],
        )
        .await;
        assert_eq!(held.len(), 2, "{backend:?}: {held:?}");
        assert!(held
            .iter()
            .all(|r| r[0] == "assigned" && r[1] == "ANALY_QUEUE"));
        stack.step("job_generator");
        stack.step("post_processor");
        assert!(take_job(&stack).await.is_none(), "still building");
        report(&stack, &build, true).await;
        stack.step("add_main");
        assert!(stack.step("post_processor").contains("jobs=2"), "released");
        assert!(stack.step("job_generator").contains("jobs=0"));
        let mut runs = Vec::new();
        while let Some(job) = take_job(&stack).await {
            runs.push(job);
        }
        assert_eq!(runs.len(), 2, "{backend:?}");
        for job in &runs {
            assert_eq!(job["inFiles"], lib.as_str(), "{job}");
            // The library's size and checksum are those the build job reported.
            assert_eq!(job["fsize"], "1000", "{job}");
            assert_eq!(job["checksum"], "ad:0a1b2c30", "{job}");
            let log = rows(
                &stack.store,
                "SELECT jobstatus FROM jobs_statuslog WHERE pandaid = $1 \
                 ORDER BY modificationtime, jobstatus",
                job["PandaID"].as_i64().expect("PandaID"),
                &[ColumnType::Text],
            )
            .await;
            let log: Vec<&str> = log.iter().map(|r| r[0].as_str()).collect();
            assert_eq!(
                log,
                ["defined", "assigned", "activated", "sent", "running"],
                "{backend:?}"
            );
            assert!(job["jobPars"]
                .as_str()
                .is_some_and(|p| p.contains(&format!("-l {lib}"))));
            assert_eq!(job["computingSite"], build["computingSite"]);
            report(&stack, job, true).await;
        }
        stack.step("add_main");
        stack.step("post_processor");
        assert_eq!(
            common::task_status(&stack.store, id).await,
            "done",
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_build_that_fails_every_attempt_fails_the_task_and_retry_builds_again() {
    let stack = Stack::start(Backend::Sqlite, &["httpd"], &[]).await;
    let id = stack.submit_task(build_task_parameters("b2", 2, 2)).await;
    for name in ["task_refiner", "contents_feeder", "job_generator"] {
        stack.step(name);
    }
    for attempt in 0..2 {
        let build = take_job(&stack).await.expect("a build attempt");
        assert_eq!(build["attemptNr"], attempt, "{build}");
        report(&stack, &build, false).await;
        stack.step("add_main");
        stack.step("post_processor");
        stack.step("job_generator");
    }
    assert!(
        take_job(&stack).await.is_none(),
        "no third attempt, no run job"
    );
    assert_eq!(common::task_status(&stack.store, id).await, "failed");
    // The run jobs that waited for the library ended with the reason.
    let held = rows(
        &stack.store,
        "SELECT jobstatus, taskbuffererrordiag FROM jobsarchived4 WHERE jeditaskid = $1 \
         AND prodsourcelabel = 'user'",
        id,
        &[ColumnType::Text, ColumnType::Text],
    )
    .await;
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter()
            .all(|r| r[0] == "failed" && r[1].contains("library could not be built")),
        "{held:?}"
    );
    // pbook retry: the library gets new attempts; its build runs first, then the jobs.
    let retried = post(&stack, "/api/v1/task/retry", json!({"task_id": id})).await;
    assert_eq!(retried["success"], true, "{retried}");
    stack.step("job_generator");
    let build = take_job(&stack).await.expect("the build's next attempt");
    assert_eq!(
        (
            build["prodSourceLabel"].as_str(),
            build["attemptNr"].as_i64()
        ),
        (Some("panda"), Some(2)),
        "{build}"
    );
    assert!(take_job(&stack).await.is_none(), "the run jobs wait");
    report(&stack, &build, true).await;
    stack.step("add_main");
    stack.step("post_processor");
    let mut runs = Vec::new();
    while let Some(job) = take_job(&stack).await {
        runs.push(job);
    }
    assert_eq!(runs.len(), 2);
    for job in &runs {
        report(&stack, job, true).await;
    }
    stack.step("add_main");
    stack.step("post_processor");
    assert_eq!(common::task_status(&stack.store, id).await, "done");
}

/// Two analysis queues, equally idle: brokerage spreads a task's jobs over both.
const TWO_SITES: &str = r#"{
  "ANALY_A": {"nickname": "ANALY_A", "status": "online", "type": "analysis", "maxrss": 4000},
  "ANALY_B": {"nickname": "ANALY_B", "status": "online", "type": "analysis", "maxrss": 4000}
}"#;

#[tokio::test]
async fn a_task_over_two_sites_gets_a_build_and_output_datasets_per_site() {
    for backend in backends() {
        let site = common::Site::with_queues(TWO_SITES);
        let stack = Stack::start_at(backend, &["httpd"], &[], site).await;
        let id = stack.submit_task(build_task_parameters("s1", 4, 3)).await;
        for name in ["task_refiner", "contents_feeder", "job_generator"] {
            stack.step(name);
        }
        let datasets = rows(
            &stack.store,
            "SELECT datasetid, type, COALESCE(site, ''), datasetname, \
             COALESCE(containername, ''), COALESCE(templateid, 0) \
             FROM jedi_datasets WHERE jeditaskid = $1 ORDER BY datasetid",
            id,
            &[
                ColumnType::BigInt,
                ColumnType::Text,
                ColumnType::Text,
                ColumnType::Text,
                ColumnType::Text,
                ColumnType::BigInt,
            ],
        )
        .await;
        let of = |kind: &str, site: &str| -> Vec<Vec<String>> {
            datasets
                .iter()
                .filter(|d| d[1] == kind && d[2] == site)
                .cloned()
                .collect()
        };
        let log_template = of("tmpl_log", "");
        assert_eq!(log_template.len(), 1, "{backend:?}: {datasets:?}");
        assert_eq!(log_template[0][3], "user.tester.s1.log/");
        for site in ["ANALY_A", "ANALY_B"] {
            for (kind, stem, container) in [
                ("log", "user.tester.s1.log", "user.tester.s1.log/"),
                (
                    "output",
                    "user.tester.s1_out.txt",
                    "user.tester.s1_out.txt/",
                ),
            ] {
                let found = of(kind, site);
                assert_eq!(found.len(), 1, "{backend:?} {site} {kind}: {datasets:?}");
                assert_eq!(found[0][3], format!("{stem}.{}", found[0][0]));
                assert_eq!(found[0][4], container);
                let template = of(&format!("tmpl_{kind}"), "");
                assert_eq!(found[0][5], template[0][0], "instance of its template");
            }
            assert_eq!(of("lib", site).len(), 1, "{site}: one library per site");
        }
        // One build job per site; the run jobs wait at the site of their build.
        let mut builds = std::collections::HashMap::new();
        for site in ["ANALY_A", "ANALY_B"] {
            let build = take_job_at(&stack, site).await.expect("a build per site");
            assert_eq!(build["prodSourceLabel"], "panda", "{build}");
            assert!(take_job_at(&stack, site).await.is_none(), "{site} waits");
            builds.insert(site, build);
        }
        let held = rows(
            &stack.store,
            "SELECT computingsite, COUNT(*) FROM jobsdefined4 WHERE jeditaskid = $1 \
             AND jobstatus = 'assigned' GROUP BY computingsite ORDER BY computingsite",
            id,
            &[ColumnType::Text, ColumnType::BigInt],
        )
        .await;
        assert_eq!(held, [["ANALY_A", "2"], ["ANALY_B", "2"]], "{backend:?}");
        let mut runs = Vec::new();
        for site in ["ANALY_A", "ANALY_B"] {
            let build = &builds[site];
            report(&stack, build, true).await;
            stack.step("add_main");
            stack.step("post_processor");
            let lib = build["outFiles"]
                .as_str()
                .and_then(|o| o.split(',').find(|f| f.ends_with(".lib.tgz")))
                .expect("the library")
                .to_string();
            for _ in 0..2 {
                let job = take_job_at(&stack, site).await.expect("released");
                assert_eq!(job["inFiles"], lib.as_str(), "{job}");
                let (log, out) = (&of("log", site)[0][3], &of("output", site)[0][3]);
                let real = job["realDatasets"].as_str().unwrap_or("");
                assert!(
                    real.contains(log.as_str()) && real.contains(out.as_str()),
                    "{job}"
                );
                runs.push(job);
            }
            assert!(take_job_at(&stack, site).await.is_none());
            if site == "ANALY_A" {
                assert!(
                    take_job_at(&stack, "ANALY_B").await.is_none(),
                    "B's jobs wait for B's build"
                );
            }
        }
        for job in &runs {
            report(&stack, job, true).await;
        }
        stack.step("add_main");
        stack.step("post_processor");
        assert_eq!(
            common::task_status(&stack.store, id).await,
            "done",
            "{backend:?}"
        );
        let registered = rows(
            &stack.store,
            "SELECT d.site, d.type, COUNT(*) FROM jedi_dataset_contents c \
             JOIN jedi_datasets d ON d.jeditaskid = c.jeditaskid AND d.datasetid = c.datasetid \
             WHERE c.jeditaskid = $1 AND d.type IN ('log', 'output') \
             GROUP BY d.site, d.type ORDER BY d.site, d.type",
            id,
            &[ColumnType::Text, ColumnType::Text, ColumnType::BigInt],
        )
        .await;
        assert_eq!(
            registered,
            [
                ["ANALY_A", "log", "2"],
                ["ANALY_A", "output", "2"],
                ["ANALY_B", "log", "2"],
                ["ANALY_B", "output", "2"]
            ],
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn reload_input_takes_new_files_and_retry_takes_new_parameters() {
    let stack = Stack::start(Backend::Sqlite, &["httpd"], &[]).await;
    let dir = stack.site.dir.path().join("inputs");
    std::fs::create_dir_all(&dir).expect("dir");
    let add = |names: &[&str]| {
        let mut args = vec![
            "datasets".to_string(),
            "add".into(),
            "user.tester.grow".into(),
            "--scope".into(),
            "user.tester".into(),
        ];
        for name in names {
            std::fs::write(dir.join(name), name).expect("file");
            args.push(dir.join(name).display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(run(&args, &stack.env).status.success());
    };
    add(&["g.1", "g.2"]);
    let id = stack
        .submit_task(input_task_parameters("grow", "user.tester.grow", 2))
        .await;
    let finish_all = || async {
        while let Some(job) = take_job(&stack).await {
            report(&stack, &job, true).await;
        }
        stack.step("add_main");
        stack.step("post_processor");
    };
    for name in ["task_refiner", "contents_feeder", "job_generator"] {
        stack.step(name);
    }
    finish_all().await;
    assert_eq!(common::task_status(&stack.store, id).await, "done");

    // Files added to the dataset since: reload_input takes them in.
    add(&["g.3", "g.4", "g.5"]);
    let running = stack.submit_task(parameters_for_refusal()).await;
    let refused = post(
        &stack,
        "/api/v1/task/reload_input",
        json!({"task_id": running}),
    )
    .await;
    assert_eq!(refused["data"], 4, "registered: {refused}");
    let reloaded = post(&stack, "/api/v1/task/reload_input", json!({"task_id": id})).await;
    assert_eq!(reloaded["data"], 0, "{reloaded}");
    assert!(reloaded["message"]
        .as_str()
        .unwrap_or_default()
        .contains("3 new inputs"));
    assert!(
        stack.step("job_generator").contains("jobs=2"),
        "3 new files, 2 per job"
    );
    finish_all().await;
    assert_eq!(common::task_status(&stack.store, id).await, "done");
    assert_eq!(listed(&stack, id).await["nFiles"], 5);

    // A retry with new parameters: kept where upstream keeps them, others ignored.
    let retried = post(
        &stack,
        "/api/v1/task/retry",
        json!({"task_id": id, "new_parameters": {"nFilesPerJob": 1, "taskName": "other"}}),
    )
    .await;
    assert_eq!(retried["data"], 3, "{retried}");
    let params: Json = serde_json::from_str(
        &stack
            .store
            .task_parameters(id)
            .await
            .expect("read")
            .expect("params"),
    )
    .expect("json");
    assert_eq!(params["nFilesPerJob"], 1);
    assert_eq!(params["taskName"], "user.tester.grow/");
    assert_eq!(common::task_status(&stack.store, id).await, "ready");
}

/// A task that stays `registered` (no daemon step runs for it here).
fn parameters_for_refusal() -> Json {
    task_parameters("stays", 1, 1)
}

/// A generator that stops between giving a file to a job and storing the job leaves the
/// file `running` with a PandaID no table holds. Post-processing leaves it alone for ten
/// minutes (the job may still be on its way), then counts the attempt as failed, and the
/// file goes to a new job.
#[tokio::test]
async fn a_file_whose_job_was_never_stored_goes_to_a_new_job_after_ten_minutes() {
    for backend in backends() {
        let stack = Stack::start(backend, &["httpd"], &[]).await;
        let id = stack.submit_task(task_parameters("lost", 1, 3)).await;
        for name in ["task_refiner", "contents_feeder", "job_generator"] {
            stack.step(name);
        }
        let file = |stack: &Stack| {
            let store = stack.store.clone();
            async move {
                rows(
                    &store,
                    "SELECT status, pandaid, attemptnr FROM jedi_dataset_contents \
                     WHERE jeditaskid = $1 AND type = 'pseudo_input'",
                    id,
                    &[ColumnType::Text, ColumnType::BigInt, ColumnType::BigInt],
                )
                .await
                .remove(0)
            }
        };
        let claimed = file(&stack).await;
        assert_eq!(claimed[0], "running", "{backend:?}");
        let lost = Value::Int(claimed[1].parse().ok());
        for table in ["jobsactive4", "filestable4", "jobparamstable"] {
            execute(
                &stack.store,
                &format!("DELETE FROM {table} WHERE pandaid = $1"),
                std::slice::from_ref(&lost),
            )
            .await;
        }
        stack.step("post_processor");
        assert_eq!(file(&stack).await, claimed, "within the grace time");
        let eleven_minutes_ago = panda_core::time::now() - chrono::Duration::minutes(11);
        execute(
            &stack.store,
            "UPDATE jedi_dataset_contents SET lastattempttime = $2 WHERE jeditaskid = $1",
            &[Value::Int(Some(id)), Value::Time(Some(eleven_minutes_ago))],
        )
        .await;
        stack.step("post_processor");
        let retried = file(&stack).await;
        assert_eq!((retried[0].as_str(), retried[2].as_str()), ("ready", "1"));
        stack.step("job_generator");
        let again = file(&stack).await;
        assert_eq!(again[0], "running");
        assert_ne!(again[1], claimed[1], "a new job");
        let job = take_job(&stack).await.expect("the new job");
        assert_eq!(job["PandaID"].to_string(), again[1]);
        assert_eq!(job["attemptNr"], 1, "{job}");
        assert_eq!(common::task_status(&stack.store, id).await, "running");
    }
}

/// Upstream's Activator activates a job once all its inputs are ready: a held job whose other
/// input is still on its way (a data-management step moving it) gets the built library and
/// waits on, while the job next to it runs.
#[tokio::test]
async fn a_held_job_with_an_input_still_on_its_way_waits_after_the_build() {
    for backend in backends() {
        let stack = Stack::start(backend, &["httpd"], &[]).await;
        let files = stack.site.dir.path().join("inputs");
        std::fs::create_dir_all(&files).expect("dir");
        let mut args: Vec<String> = [
            "datasets",
            "add",
            "user.tester.in2",
            "--scope",
            "user.tester",
        ]
        .map(String::from)
        .to_vec();
        for name in ["a.txt", "b.txt"] {
            std::fs::write(files.join(name), name).expect("file");
            args.push(files.join(name).display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(run(&args, &stack.env).status.success());
        let mut params = input_task_parameters("h1", "user.tester.in2", 1);
        params["buildSpec"] = json!({"prodSourceLabel": "panda",
            "archiveName": "sources.h1.tar.gz",
            "jobParameters": "-i ${IN} -o ${OUT} --sourceURL ${SURL} -r . "});
        params["jobParameters"][1] = json!({"type": "constant", "value": "-l ${LIB}"});
        let id = stack.submit_task(params).await;
        for name in ["task_refiner", "contents_feeder", "job_generator"] {
            stack.step(name);
        }
        let build = take_job(&stack).await.expect("the build job");
        let held = rows(
            &stack.store,
            "SELECT pandaid FROM jobsdefined4 WHERE jeditaskid = $1 AND jobstatus = 'assigned' \
             ORDER BY pandaid",
            id,
            &[ColumnType::BigInt],
        )
        .await;
        assert_eq!(held.len(), 2, "{backend:?}");
        let on_its_way = Value::Int(held[0][0].parse().ok());
        let changed = execute(
            &stack.store,
            "UPDATE filestable4 SET status = 'unknown' WHERE pandaid = $1 AND lfn = 'a.txt'",
            std::slice::from_ref(&on_its_way),
        )
        .await;
        assert_eq!(changed, 1);
        report(&stack, &build, true).await;
        stack.step("add_main");
        assert!(stack.step("post_processor").contains("jobs=1"));
        let job = take_job(&stack).await.expect("the job with its inputs");
        assert_eq!(job["PandaID"].to_string(), held[1][0]);
        assert!(take_job(&stack).await.is_none(), "the other job waits");
        let waiting = rows(
            &stack.store,
            "SELECT j.jobstatus, f.lfn, f.status FROM jobsdefined4 j \
             JOIN filestable4 f ON f.pandaid = j.pandaid \
             WHERE j.pandaid = $1 AND f.type = 'input' ORDER BY f.lfn",
            held[0][0].parse().expect("id"),
            &[ColumnType::Text, ColumnType::Text, ColumnType::Text],
        )
        .await;
        assert_eq!(waiting.len(), 2, "{waiting:?}");
        assert_eq!(waiting[0][1..], ["a.txt".to_string(), "unknown".into()]);
        assert!(waiting[1][1].ends_with(".lib.tgz") && waiting[1][2] == "ready");
        assert!(waiting.iter().all(|r| r[0] == "assigned"));
        // Nothing more happens to it on the next runs.
        assert!(stack.step("post_processor").contains("jobs=0"));
    }
}
