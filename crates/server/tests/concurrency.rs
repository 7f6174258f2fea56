//! A job is handed to exactly one pilot: 32 concurrent getJob callers drain the activated
//! jobs, through several server processes on one PostgreSQL, and through one process on SQLite.

mod common;

use std::collections::HashSet;

use common::{db_env, run, submit, Server, Site, TestJob};
use panda_store::testing::{backends, TestDb};
use panda_store::Backend;
use serde_json::Value as Json;

const JOBS: usize = 240;
const CALLERS: usize = 32;

#[tokio::test]
async fn concurrent_pilots_drain_every_job_exactly_once() {
    for backend in backends() {
        let db = TestDb::new(backend);
        let site = Site::new();
        let mut env = db_env(&db);
        env.extend(site.env());
        assert!(run(&["schema", "migrate"], &env).status.success());
        let processes = if backend == Backend::Postgres { 3 } else { 1 };
        let servers: Vec<Server> = (0..processes)
            .map(|_| Server::start(&["httpd"], &env))
            .collect();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("client");

        let mut submitted = HashSet::new();
        for batch in 0..(JOBS / 60) {
            let jobs: Vec<TestJob> = (0..60)
                .map(|i| {
                    let mut job = TestJob::new(&format!("race{batch}-{i}"));
                    job.priority = (i % 7) as i64;
                    job
                })
                .collect();
            submitted.extend(submit(&client, &servers[0], &jobs).await);
        }
        assert_eq!(submitted.len(), JOBS);

        let urls: Vec<String> = servers
            .iter()
            .map(|s| s.url("/server/panda/getJob"))
            .collect();
        let mut callers = Vec::new();
        for caller in 0..CALLERS {
            let client = client.clone();
            let url = urls[caller % urls.len()].clone();
            callers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let bulk = caller % 2 == 1;
                for _ in 0..JOBS {
                    let mut form = vec![
                        ("siteName", "TEST_QUEUE".to_string()),
                        ("node", format!("wn{caller}")),
                    ];
                    if bulk {
                        form.push(("nJobs", "3".into()));
                    }
                    let reply: Json = client
                        .post(&url)
                        .header("Accept", "application/json")
                        .form(&form)
                        .send()
                        .await
                        .expect("getJob")
                        .json()
                        .await
                        .expect("json");
                    match reply["StatusCode"].as_i64() {
                        Some(0) if bulk => got.extend(
                            reply["jobs"]
                                .as_array()
                                .expect("jobs")
                                .iter()
                                .map(|j| j["PandaID"].as_i64().expect("id")),
                        ),
                        Some(0) => got.push(reply["PandaID"].as_i64().expect("id")),
                        Some(20) => break,
                        other => panic!("unexpected answer {other:?}: {reply}"),
                    }
                }
                got
            }));
        }
        let mut handed_out = Vec::new();
        for caller in callers {
            handed_out.extend(caller.await.expect("caller"));
        }
        let unique: HashSet<i64> = handed_out.iter().copied().collect();
        assert_eq!(
            handed_out.len(),
            unique.len(),
            "{backend:?}: a job went to two pilots"
        );
        assert_eq!(
            unique, submitted,
            "{backend:?}: every job handed out, none lost"
        );
        drop(servers);
    }
}
