//! The task module's functions beyond submit and the user commands, over HTTP on both
//! backends, on a task made of real jobs: pause and resume, priority, attempts, reactivation,
//! modification time, the task's datasets and files, its detailed view and its jobs' view,
//! killing its unfinished jobs, and the metadata of its analysis jobs. Who may call each
//! (the production role where upstream asks for it) and what is refused, with the reason.

mod common;

use common::{api_client, run, Stack, TokenIssuer};
use panda_core::{JobAttr, TaskAttr};
use panda_store::testing::backends;
use panda_store::Backend;
use serde_json::{json, Value as Json};

fn parameters(name: &str, jobs: i64) -> Json {
    json!({
        "taskName": format!("user.tester.{name}/"), "vo": "atlas", "prodSourceLabel": "user",
        "nEvents": jobs, "nEventsPerJob": 1, "noInput": true, "maxAttempt": 1,
        "sourceURL": "http://127.0.0.1:39999",
        "log": {"dataset": format!("user.tester.{name}.log/"), "type": "template",
                "param_type": "log", "value": format!("user.tester.{name}.log.$JEDITASKID.${{SN}}.log.tgz")},
        "jobParameters": [{"type": "constant", "value": "-j \"\" -p \"echo\""}],
        "noInput": true
    })
}

struct Fixture {
    stack: Stack,
    client: reqwest::Client,
}

impl Fixture {
    async fn post(&self, function: &str, body: Json) -> Json {
        self.client
            .post(self.stack.server.url(&format!("/api/v1/{function}")))
            .json(&body)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("envelope")
    }

    async fn get(&self, function: &str, query: &[(&str, &str)]) -> Json {
        self.client
            .get(self.stack.server.url(&format!("/api/v1/{function}")))
            .query(query)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("envelope")
    }

    fn step(&self, name: &str) {
        let out = run(&["daemon", "--run-once", name], &self.stack.env);
        assert!(out.status.success(), "{name}: {out:?}");
    }

    /// A task of `jobs` generated jobs; its ID.
    async fn task(&self, name: &str, jobs: i64) -> i64 {
        let reply = self
            .post(
                "task/submit",
                json!({"task_parameters": parameters(name, jobs)}),
            )
            .await;
        let id = reply["data"].as_i64().unwrap_or_else(|| panic!("{reply}"));
        for step in ["task_refiner", "contents_feeder", "job_generator"] {
            self.step(step);
        }
        id
    }

    async fn status(&self, id: i64) -> String {
        self.stack
            .store
            .get_task(id)
            .await
            .expect("read")
            .and_then(|t| t.get_str(TaskAttr::status).map(str::to_string))
            .unwrap_or_default()
    }
}

async fn start(backend: Backend) -> Fixture {
    Fixture {
        stack: Stack::start(backend, &["httpd"], &[]).await,
        client: api_client(),
    }
}

#[tokio::test]
async fn production_functions_change_a_task_and_its_jobs() {
    for backend in backends() {
        let f = start(backend).await;
        let id = f.task("prod", 2).await;
        let tid = id.to_string();

        // Pause, then resume back to where it was; a paused task gets no new jobs.
        let paused = f.post("task/pause", json!({"task_id": id})).await;
        assert_eq!(
            (&paused["success"], &paused["data"]),
            (&json!(true), &json!(0)),
            "{paused}"
        );
        assert_eq!(f.status(id).await, "paused");
        let again = f.post("task/pause", json!({"task_id": id})).await;
        assert_eq!(again["data"], 4, "{again}");
        let resumed = f.post("task/resume", json!({"task_id": id})).await;
        assert_eq!(resumed["data"], 0, "{resumed}");
        assert_eq!(f.status(id).await, "running");

        // Priority: the task's and its waiting jobs'.
        let prio = f
            .post(
                "task/change_priority",
                json!({"task_id": id, "priority": 4321}),
            )
            .await;
        assert_eq!(prio["message"], "1 tasks changed", "{prio}");
        let jobs = f.stack.store.task_job_ids(id).await.expect("ids");
        for job in &jobs {
            let job = f
                .stack
                .store
                .get_job(*job)
                .await
                .expect("read")
                .expect("job");
            assert_eq!(job.get_i64(JobAttr::currentPriority), Some(4321));
        }
        let missing = f
            .post("task/change_priority", json!({"task_id": 1, "priority": 1}))
            .await;
        assert_eq!(missing["message"], "Task not found");

        // Modification time: an hour back; out of range refused.
        let back = f
            .post(
                "task/change_modification_time",
                json!({"task_id": id, "hour_offset": -1}),
            )
            .await;
        assert_eq!(back["success"], true, "{back}");
        let far = f
            .post(
                "task/change_modification_time",
                json!({"task_id": id, "hour_offset": 100000}),
            )
            .await;
        assert!(
            far["message"]
                .as_str()
                .unwrap_or_default()
                .contains("out of range"),
            "{far}"
        );

        // The datasets and files, the detailed view, the jobs' view.
        let files = f
            .get("task/get_datasets_and_files", &[("task_id", &tid)])
            .await;
        assert_eq!(
            files["data"][0]["dataset"]["name"], "pseudo_dataset",
            "{files}"
        );
        assert_eq!(files["data"][0]["files"].as_array().map(Vec::len), Some(2));
        assert_eq!(files["data"][0]["files"][0]["status"], "running");
        let logs = f
            .get(
                "task/get_datasets_and_files",
                &[("task_id", &tid), ("dataset_types", "log")],
            )
            .await;
        assert!(logs["data"][0]["dataset"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("user.tester.prod.log.")));
        let none = f
            .get("task/get_datasets_and_files", &[("task_id", "1")])
            .await;
        assert_eq!(none["message"], "No data found for the task");
        let details = f.get("task/get_detailed_info", &[("task_id", &tid)]).await;
        assert_eq!(details["data"]["jediTaskID"], id, "{details}");
        assert_eq!(
            details["data"]["job_execution_params"],
            "-j \"\" -p \"echo\""
        );
        assert_eq!(details["data"]["nFiles"], 2);
        let parent = f
            .get("task/get_parent_detailed_info", &[("task_id", &tid)])
            .await;
        assert_eq!(parent["message"], "No parent task found");
        let described = f
            .get("task/get_job_descriptions", &[("task_id", &tid)])
            .await;
        assert_eq!(
            described["data"].as_array().map(Vec::len),
            Some(2),
            "{described}"
        );
        let unsuccessful = f
            .get(
                "task/get_job_descriptions",
                &[("task_id", &tid), ("unsuccessful_only", "true")],
            )
            .await;
        assert_eq!(unsuccessful["data"], json!([]));
        let metadata = f
            .get("job/get_metadata_for_analysis_jobs", &[("task_id", &tid)])
            .await;
        assert_eq!(
            (&metadata["message"], &metadata["data"]),
            (&json!("No metadata found"), &json!({}))
        );

        // Kill the unfinished jobs: both waiting jobs go; the files fail for good
        // (maxAttempt 1), and more attempts bring them back.
        let killed = f
            .post("task/kill_unfinished_jobs", json!({"task_id": id}))
            .await;
        assert_eq!(killed["data"], json!([true, true]), "{killed}");
        f.step("post_processor");
        assert_eq!(f.status(id).await, "failed");
        let refused = f
            .post(
                "task/increase_attempts",
                json!({"task_id": id, "increase": 2}),
            )
            .await;
        assert_eq!(refused["data"], 2, "not running: {refused}");
        let reactivated = f.post("task/reactivate", json!({"task_id": id})).await;
        assert_eq!(reactivated["data"], 0, "{reactivated}");
        assert!(reactivated["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("updated 2 inputs")));
        assert_eq!(f.status(id).await, "ready");
        let more = f
            .post(
                "task/increase_attempts",
                json!({"task_id": id, "increase": 2}),
            )
            .await;
        assert_eq!(
            more["message"],
            "increased attemptNr for 2 inputs (0 reactivated)"
        );
        f.step("job_generator");
        assert_eq!(f.stack.store.task_job_ids(id).await.expect("ids").len(), 4);
        assert_eq!(f.status(id).await, "running");
        let bad = f
            .post(
                "task/increase_attempts",
                json!({"task_id": id, "increase": -1}),
            )
            .await;
        assert!(
            bad["message"]
                .as_str()
                .unwrap_or_default()
                .contains("positive"),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn the_production_functions_refuse_users_and_the_reads_need_a_credential() {
    let issuer = TokenIssuer::new("atlas");
    let env: Vec<(String, String)> = issuer.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let f = Fixture {
        stack: Stack::start(Backend::Sqlite, &["httpd"], &env).await,
        client: api_client(),
    };
    let id = f.task("users", 1).await;
    let token = issuer.sign(&issuer.claims("Test user", &["atlas"]));
    for (function, body) in [
        ("task/pause", json!({"task_id": id})),
        ("task/resume", json!({"task_id": id})),
        (
            "task/change_priority",
            json!({"task_id": id, "priority": 1}),
        ),
        (
            "task/increase_attempts",
            json!({"task_id": id, "increase": 1}),
        ),
        ("task/reactivate", json!({"task_id": id})),
        (
            "task/change_modification_time",
            json!({"task_id": id, "hour_offset": 1}),
        ),
    ] {
        let reply: Json = f
            .client
            .post(f.stack.server.url(&format!("/api/v1/{function}")))
            .bearer_auth(&token)
            .header("Origin", "atlas")
            .json(&body)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("envelope");
        assert_eq!(
            reply["message"], "production or pilot role required",
            "{function}"
        );
    }
    assert_eq!(f.status(id).await, "running", "nothing changed");
    // Another user may not kill the task's jobs.
    let other: Json = f
        .client
        .post(f.stack.server.url("/api/v1/task/kill_unfinished_jobs"))
        .bearer_auth(&token)
        .header("Origin", "atlas")
        .json(&json!({"task_id": id}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("envelope");
    assert_eq!(other["data"], json!([false]), "{other}");
    // Too many dataset types are refused with the reason.
    let many = vec!["input"; 21].join(",");
    let tid = id.to_string();
    let refused = f
        .get(
            "task/get_datasets_and_files",
            &[("task_id", tid.as_str()), ("dataset_types", many.as_str())],
        )
        .await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1 to 20"),
        "{refused}"
    );
}

#[tokio::test]
async fn attributes_split_rules_commands_and_reassignment() {
    for backend in backends() {
        let f = start(backend).await;
        let mut params = parameters("re", 2);
        params["maxAttempt"] = json!(3);
        let reply = f
            .post("task/submit", json!({"task_parameters": params}))
            .await;
        let id = reply["data"].as_i64().expect("id");
        for step in ["task_refiner", "contents_feeder", "job_generator"] {
            f.step(step);
        }
        let task = || async {
            f.stack
                .store
                .get_task(id)
                .await
                .expect("read")
                .expect("task")
        };

        let ram = f
            .post(
                "task/change_attribute",
                json!({"task_id": id, "attribute_name": "ramCount", "value": 3000}),
            )
            .await;
        assert_eq!(ram["message"], "1 tasks changed", "{ram}");
        assert_eq!(task().await.get_i64(TaskAttr::ramCount), Some(3000));
        let bad = f
            .post(
                "task/change_attribute",
                json!({"task_id": id, "attribute_name": "status", "value": 1}),
            )
            .await;
        assert!(
            bad["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Valid attributes are"),
            "{bad}"
        );

        let rule = f
            .post(
                "task/change_split_rule",
                json!({"task_id": id, "attribute_name": "NF", "value": "5"}),
            )
            .await;
        assert_eq!(rule["success"], true, "{rule}");
        assert!(task()
            .await
            .get_str(TaskAttr::splitRule)
            .is_some_and(|r| r.contains("NF=5")));
        f.post(
            "task/change_split_rule",
            json!({"task_id": id, "attribute_name": "NF", "value": "None"}),
        )
        .await;
        assert!(!task()
            .await
            .get_str(TaskAttr::splitRule)
            .unwrap_or("")
            .contains("NF="));
        let tag = f
            .post(
                "task/change_split_rule",
                json!({"task_id": id, "attribute_name": "XX", "value": "1"}),
            )
            .await;
        assert_eq!(tag["data"], 2, "{tag}");

        let release = f.post("task/release", json!({"task_id": id})).await;
        assert_eq!(release["data"], 0, "{release}");
        let avalanche = f.post("task/avalanche", json!({"task_id": id})).await;
        assert_eq!(avalanche["data"], 4, "not scouting: {avalanche}");

        // Reassign without killing: nothing happens to the jobs; with kill: they are killed,
        // and their files come back as new jobs at the task's new site.
        let keep = f
            .post(
                "task/reassign",
                json!({"task_id": id, "site": "ANALY_QUEUE", "mode": "nokill"}),
            )
            .await;
        assert_eq!(keep["data"], 0, "{keep}");
        assert_eq!(task().await.get_str(TaskAttr::site), Some("ANALY_QUEUE"));
        let first = f.stack.store.task_job_ids(id).await.expect("ids");
        assert_eq!(first.len(), 2);
        let moved = f
            .post(
                "task/reassign",
                json!({"task_id": id, "site": "ANALY_QUEUE"}),
            )
            .await;
        assert_eq!(moved["data"], 0, "{moved}");
        f.step("post_processor");
        f.step("job_generator");
        let all = f.stack.store.task_job_ids(id).await.expect("ids");
        assert_eq!(all.len(), 4, "{backend:?}: two new jobs");
        for job in &all[2..] {
            let job = f
                .stack
                .store
                .get_job(*job)
                .await
                .expect("read")
                .expect("job");
            assert_eq!(job.get_str(JobAttr::computingSite), Some("ANALY_QUEUE"));
            assert_eq!(job.get_i64(JobAttr::attemptNr), Some(1));
        }
        let mode = f
            .post(
                "task/reassign",
                json!({"task_id": id, "site": "X", "mode": "gently"}),
            )
            .await;
        assert!(mode["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not kill, soft or nokill"));
    }
}

#[tokio::test]
async fn job_cloning_jumbo_jobs_and_global_shares_are_set_as_upstream_sets_them() {
    let f = start(Backend::Sqlite).await;
    let id = f.task("es", 1).await;
    let task = || async {
        f.stack
            .store
            .get_task(id)
            .await
            .expect("read")
            .expect("task")
    };
    let cloning = f
        .post(
            "task/enable_job_cloning",
            json!({"jedi_task_id": id, "mode": "storeonce", "multiplicity": 3}),
        )
        .await;
    assert_eq!(cloning["success"], true, "{cloning}");
    let t = task().await;
    assert_eq!(t.get_i64(TaskAttr::eventService), Some(2));
    let rules = t.get_str(TaskAttr::splitRule).unwrap_or("").to_string();
    for rule in ["UC=2", "ES=1", "EC=3", "NS=2"] {
        assert!(rules.split(',').any(|r| r == rule), "{rule} in {rules}");
    }
    let bad = f
        .post(
            "task/enable_job_cloning",
            json!({"jedi_task_id": id, "mode": "often"}),
        )
        .await;
    assert_eq!(bad["message"], "invalid job cloning mode: often");
    let off = f
        .post("task/disable_job_cloning", json!({"jedi_task_id": id}))
        .await;
    assert_eq!(off["success"], true);
    let t = task().await;
    assert_eq!(t.get_i64(TaskAttr::eventService), Some(0));
    assert!(!t.get_str(TaskAttr::splitRule).unwrap_or("").contains("UC="));

    let jumbo = f
        .post(
            "task/enable_jumbo_jobs",
            json!({"task_id": id, "jumbo_jobs_total": 4}),
        )
        .await;
    assert_eq!(jumbo["data"], 0, "{jumbo}");
    let t = task().await;
    assert_eq!(t.get_str(TaskAttr::useJumbo), Some("W"));
    assert!(t
        .get_str(TaskAttr::splitRule)
        .is_some_and(|r| r.contains("NJ=4") && r.contains("MJ=4")));
    let none = f
        .post(
            "task/enable_jumbo_jobs",
            json!({"task_id": 1, "jumbo_jobs_total": 1}),
        )
        .await;
    assert_eq!(none["data"], 2);
    let listed = f
        .get("task/get_jumbo_job_datasets", &[("from_offset", "3")])
        .await;
    assert_eq!(
        listed["data"],
        json!({}),
        "a user task is not listed: {listed}"
    );

    let share = f
        .post(
            "task/reassign_global_share",
            json!({"task_id_list": [id], "share": "Express", "reassign_running_jobs": false}),
        )
        .await;
    assert_eq!(share["data"], 0, "{share}");
    assert_eq!(task().await.get_str(TaskAttr::gshare), Some("Express"));
    let job = f.stack.store.task_job_ids(id).await.expect("ids")[0];
    let job = f
        .stack
        .store
        .get_job(job)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(job.get_str(JobAttr::gshare), Some("Express"));
}

#[tokio::test]
async fn oversized_inputs_are_refused_with_the_limit_named() {
    let f = start(Backend::Sqlite).await;
    let id = f.task("big", 1).await;
    let many: Vec<i64> = (0..5501).collect();
    for (function, body, words) in [
        (
            "task/reassign_global_share",
            json!({"task_id_list": many, "share": "Express", "reassign_running_jobs": false}),
            "5500",
        ),
        (
            "task/reassign_global_share",
            json!({"task_id_list": [id], "share": "x".repeat(33), "reassign_running_jobs": false}),
            "1 to 32",
        ),
        (
            "task/change_split_rule",
            json!({"task_id": id, "attribute_name": "NF", "value": "1,XX=2"}),
            "without ','",
        ),
        (
            "task/enable_jumbo_jobs",
            json!({"task_id": id, "jumbo_jobs_total": 1_000_000}),
            "0 to 100000",
        ),
        (
            "task/enable_job_cloning",
            json!({"jedi_task_id": id, "multiplicity": 1000}),
            "1 to 100",
        ),
        (
            "task/reassign",
            json!({"task_id": id, "site": "S".repeat(61)}),
            "1 to 60",
        ),
    ] {
        let reply = f.post(function, body).await;
        assert_eq!(reply["success"], false, "{function}: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap_or_default()
                .contains(words),
            "{function}: {reply}"
        );
    }
    let far = f
        .get("task/get_jumbo_job_datasets", &[("from_offset", "400")])
        .await;
    assert!(
        far["message"]
            .as_str()
            .unwrap_or_default()
            .contains("0 to 366"),
        "{far}"
    );
    let task = f
        .stack
        .store
        .get_task(id)
        .await
        .expect("read")
        .expect("task");
    assert!(task.get(TaskAttr::gshare).is_null(), "nothing changed");
}
