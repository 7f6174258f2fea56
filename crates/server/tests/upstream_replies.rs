//! Replies a node replacing an upstream node must give as upstream gives them (docs/API.md,
//! "Replies compared with upstream's"; docs/MIGRATION.md). Each expectation is upstream's
//! shape as its code builds it, checked over HTTP against a running server on both backends.

mod common;

use common::{post_envelope, submit, Stack, TestJob};
use panda_core::{FileAttr, JobAttr, JobTable};
use panda_store::testing::backends;
use panda_store::Store;
use serde_json::{json, Value as Json};

async fn post(stack: &Stack, path: &str, body: Json) -> Json {
    post_envelope(&reqwest::Client::new(), stack.server.url(path), body, None).await
}

/// Submits `jobs` through `job/submit`; the whole envelope.
async fn submit_reply(stack: &Stack, jobs: &[Json]) -> Json {
    let body = json!({"jobs": Json::Array(jobs.to_vec()).to_string()});
    post(stack, "/api/v1/job/submit", body).await
}

fn job_state(name: &str, label: &str, edit: impl FnOnce(&mut Vec<Json>)) -> Json {
    let mut job = TestJob::new(name);
    job.label = label.into();
    let mut state = match job.state() {
        Json::Array(values) => values,
        _ => unreachable!("a job state is a list"),
    };
    edit(&mut state);
    Json::Array(state)
}

async fn stored_log(store: &Store, id: i64) -> (Option<String>, Option<String>) {
    let job = store.get_job(id).await.expect("read").expect("stored");
    let log = job
        .files
        .iter()
        .find(|f| f.get_str(FileAttr::r#type) == Some("log"))
        .expect("a log file");
    (
        log.get_str(FileAttr::GUID).map(str::to_string),
        log.get_str(FileAttr::scope).map(str::to_string),
    )
}

#[tokio::test]
async fn submission_answers_and_stores_jobs_as_upstream() {
    use panda_core::AttrSet;
    for backend in backends() {
        let stack = Stack::start(backend, &[], &[]).await;
        // A production job with a jobDefinitionID, an analysis job without one, and a
        // production job with no assigned priority but a current one.
        let managed = job_state("up-managed", "managed", |v| {
            v[JobAttr::jobDefinitionID.index()] = json!(77);
        });
        let analysis = job_state("up-user", "user", |v| {
            v[JobAttr::jobDefinitionID.index()] = json!("NULL");
            v[JobAttr::jobsetID.index()] = json!(5);
            // The log of a user dataset: its scope is the user's.
            if let Some(Json::Array(files)) = v.last_mut() {
                if let Some(Json::Array(log)) = files.first_mut() {
                    log[FileAttr::dataset.index()] = json!("user.JDoe.up-user.log");
                }
            }
        });
        let unprioritised = job_state("up-current", "managed", |v| {
            v[JobAttr::assignedPriority.index()] = json!("NULL");
            v[JobAttr::currentPriority.index()] = json!(900);
        });
        let reply = submit_reply(&stack, &[managed, analysis, unprioritised]).await;
        assert_eq!(reply["success"], true, "{backend:?}: {reply}");
        assert_eq!(reply["message"], "", "{reply}");
        let rows = reply["data"].as_array().expect("a list per job");
        // [PandaID, jobDefinitionID, jobName] for production ...
        assert_eq!(rows[0][1], 77, "{reply}");
        assert_eq!(rows[0][2], "up-managed", "{reply}");
        // ... [PandaID, jobDefinitionID, {"jobsetID"}] for analysis, NULL as "NULL".
        assert_eq!(rows[1][1], "NULL", "{reply}");
        assert_eq!(rows[1][2], json!({"jobsetID": 5}), "{reply}");
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r[0].as_i64().expect("PandaID"))
            .collect();

        let kept = stack
            .store
            .get_job(ids[2])
            .await
            .expect("read")
            .expect("job");
        assert_eq!(
            kept.get_i64(JobAttr::currentPriority),
            Some(900),
            "{backend:?}: no assigned priority keeps the current one"
        );
        let copied = stack
            .store
            .get_job(ids[0])
            .await
            .expect("read")
            .expect("job");
        assert_eq!(copied.get_i64(JobAttr::currentPriority), Some(1000));
        // The submitter's address, a chosen queue marked, the label from that queue.
        assert_eq!(copied.get_str(JobAttr::creationHost), Some("127.0.0.1"));
        assert_eq!(copied.get_i64(JobAttr::relocationFlag), Some(1));
        assert_eq!(copied.get_str(JobAttr::job_label), Some("managed"));

        let odd_label = job_state("up-label", "managed", |v| {
            v[JobAttr::job_label.index()] = json!("express");
        });
        let refused = submit_reply(&stack, &[odd_label]).await;
        assert_eq!(
            refused,
            json!({"success": false, "message": "job_label=express is not valid", "data": null}),
            "{backend:?}"
        );

        // Every log gets a GUID of its own; outputs and logs the scope of their dataset.
        let (guid, scope) = stored_log(&stack.store, ids[0]).await;
        let guid = guid.expect("a log GUID");
        assert_eq!(guid.len(), 36, "{guid}");
        assert_ne!(guid, "11111111-2222-3333-4444-555555555555");
        assert_eq!(scope.as_deref(), Some("up-managed"), "{backend:?}");
        let (_, user_scope) = stored_log(&stack.store, ids[1]).await;
        assert_eq!(user_scope.as_deref(), Some("user.jdoe"), "{backend:?}");
    }
}

#[tokio::test]
async fn pilot_and_operator_calls_answer_in_upstreams_words() {
    for backend in backends() {
        let stack = Stack::start(backend, &[], &[]).await;
        let client = reqwest::Client::new();
        let ids = submit(&client, &stack.server, &[TestJob::new("up-pilot")]).await;
        let got = post(
            &stack,
            "/api/v1/pilot/acquire_jobs",
            json!({"site_name": "TEST_QUEUE", "node": "wn1"}),
        )
        .await;
        assert_eq!(got["data"]["jobs"][0]["PandaID"], ids[0], "{got}");

        let beat = post(
            &stack,
            "/api/v1/pilot/update_job",
            json!({"job_id": ids[0], "job_status": "running"}),
        )
        .await;
        assert_eq!(
            beat,
            json!({"success": true, "message": "", "data": {"StatusCode": 0, "command": "NULL"}}),
            "{backend:?}"
        );
        let odd = post(
            &stack,
            "/api/v1/pilot/update_job",
            json!({"job_id": ids[0], "job_status": "sleeping"}),
        )
        .await;
        assert_eq!(
            odd,
            json!({"success": false, "message": "Invalid job status: sleeping",
                   "data": {"StatusCode": 50}}),
            "{backend:?}"
        );

        let set = post(
            &stack,
            "/api/v1/job/set_command",
            json!({"job_id": ids[0], "command": "softkill"}),
        )
        .await;
        assert_eq!(
            set,
            json!({"success": true, "message": "command received", "data": null})
        );
        let unknown = post(
            &stack,
            "/api/v1/job/set_command",
            json!({"job_id": 999_999_999, "command": "softkill"}),
        )
        .await;
        assert_eq!(
            unknown,
            json!({"success": false, "message": "no active job with PandaID=999999999",
                   "data": null})
        );
        let debug = post(
            &stack,
            "/api/v1/job/set_debug_mode",
            json!({"job_id": 999_999_999, "mode": true}),
        )
        .await;
        assert_eq!(
            debug,
            json!({"success": false, "message": "PandaID=999999999 not found in active DB",
                   "data": null})
        );

        // A finished job is still described (upstream reads the archived jobs too).
        stack
            .store
            .modify_job(ids[0], |job, _| {
                job.set_status(panda_core::JobStatus::Finished, panda_core::time::now());
                Ok(())
            })
            .await
            .expect("finish");
        assert_eq!(
            stack.store.job_table(ids[0]).await.expect("where"),
            Some(JobTable::Archived)
        );
        let described = post(
            &stack,
            "/api/v1/job/get_description",
            json!({"job_ids": [ids[0]]}),
        )
        .await;
        assert_eq!(described["data"][0]["PandaID"], ids[0], "{described}");

        let reassigned = post(&stack, "/api/v1/job/reassign", json!({"job_ids": [ids[0]]})).await;
        assert_eq!(
            reassigned,
            json!({"success": true, "message": "", "data": null})
        );
    }
}

#[tokio::test]
async fn analysis_jobs_are_numbered_from_the_submitters_counter() {
    use panda_core::AttrSet;
    for backend in backends() {
        let stack = Stack::start(backend, &[], &[]).await;
        let ids = |definition: Json, jobset: Json, label: &str, name: &str| {
            job_state(name, label, |v| {
                v[JobAttr::jobDefinitionID.index()] = definition;
                v[JobAttr::jobsetID.index()] = jobset;
            })
        };
        // A new jobset (-1) asked from 3 by a user the counter has not seen (it starts at 1):
        // jobset 3, jobDefinitionID 4.
        let first = submit_reply(&stack, &[ids(json!(3), json!(-1), "user", "n-1")]).await;
        assert_eq!(first["data"][0][1], 4, "{backend:?}: {first}");
        assert_eq!(first["data"][0][2], json!({"jobsetID": 3}), "{first}");
        // Asked again from 1: the counter (4) has passed it, so jobset 5 and job 6.
        let second = submit_reply(&stack, &[ids(json!(1), json!(-1), "user", "n-2")]).await;
        assert_eq!(second["data"][0][1], 6, "{second}");
        assert_eq!(second["data"][0][2], json!({"jobsetID": 5}), "{second}");
        let stored = stack
            .store
            .get_job(second["data"][0][0].as_i64().expect("PandaID"))
            .await
            .expect("read")
            .expect("job");
        assert_eq!(stored.get_i64(JobAttr::jobDefinitionID), Some(6));
        assert_eq!(stored.get_i64(JobAttr::jobsetID), Some(5));
        // A test job keeps its jobDefinitionID and the jobset it names; the counter moves on.
        let test = submit_reply(&stack, &[ids(json!(1), json!(9), "ptest", "n-3")]).await;
        assert_eq!(test["data"][0][1], 1, "{test}");
        assert_eq!(test["data"][0][2], json!({"jobsetID": 9}), "{test}");
        // No jobset asked: none given; the job numbered after the counter (7).
        let plain = submit_reply(&stack, &[ids(json!(2), json!("NULL"), "user", "n-4")]).await;
        assert_eq!(plain["data"][0][1], 8, "{plain}");
        assert_eq!(plain["data"][0][2], json!({"jobsetID": "NULL"}), "{plain}");
        // Production jobs are not numbered.
        let managed = submit_reply(&stack, &[ids(json!(2), json!(-1), "managed", "n-5")]).await;
        assert_eq!(managed["data"][0][1], 2, "{managed}");
        assert_eq!(managed["data"][0][2], "n-5", "{managed}");
    }
}
