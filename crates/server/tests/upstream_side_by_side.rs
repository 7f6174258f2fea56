//! Our server and upstream's (Python, 1.0.x) on one database at once, as during a rolling
//! migration (docs/MIGRATION.md): the same job submitted through each and dispatched through
//! each must leave the same rows, column by column.
//!
//! Runs only when `PANDA_TEST_UPSTREAM_SERVER` is the base URL of a running upstream server
//! (e.g. `http://127.0.0.1:26080`) that serves `PANDA_TEST_UPSTREAM_SERVER_DB`, a database on
//! the server of `PANDA_TEST_DATABASE_URL` made by upstream's scripts, with an online queue
//! `TEST_QUEUE` in its `schedconfig_json`. Upstream must see its callers with the production
//! role (behind Apache with a certificate, or `tests/upstream/identity_shim.py`). Use a fresh
//! copy of the database: jobs an earlier, failed run left in the queue can come first.

mod common;

use std::collections::BTreeMap;

use common::{post_envelope, run, Server, TestJob};
use panda_core::{ColumnType, Value};
use panda_store::{Store, StoreOptions, TxMode};
use serde_json::{json, Value as Json};

/// Columns that differ between any two jobs however they were made: their identity, their
/// times, the GUID each log gets, and the submitter (our local-mode caller against
/// upstream's certificate).
const PER_JOB: &[&str] = &[
    "pandaid",
    "creationtime",
    "modificationtime",
    "statechangetime",
    "proddbupdatetime",
    "starttime",
    "endtime",
    "modiftime_extended",
    "produserid",
    "produsername",
    "row_id",
    "guid",
];

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn rows(store: &Store, table: &str, id: i64, order: &str) -> Vec<BTreeMap<String, Json>> {
    let mut tx = store.begin(TxMode::Read).await.expect("tx");
    let found = tx
        .fetch(
            &format!(
                "SELECT CAST(row_to_json(t) AS TEXT) FROM {table} t WHERE pandaid = $1 {order}"
            ),
            &[Value::Int(Some(id))],
            &[ColumnType::Text],
        )
        .await
        .expect("read");
    tx.commit().await.expect("commit");
    found
        .iter()
        .filter_map(|r| r.first().and_then(Value::as_str))
        .map(|text| {
            let mut row: BTreeMap<String, Json> = serde_json::from_str(text).expect("a row");
            row.retain(|column, _| !PER_JOB.contains(&column.as_str()));
            // The status log names the server node that wrote the change.
            if table == "jobs_statuslog" {
                row.remove("modificationhost");
            }
            row
        })
        .collect()
}

/// Everything the two servers store of a job: its row, files, parameters and status log.
async fn stored(store: &Store, id: i64) -> Json {
    let mut all = serde_json::Map::new();
    for (table, order) in [
        ("jobsdefined4", ""),
        ("jobsactive4", ""),
        ("jobsarchived4", ""),
        ("filestable4", "ORDER BY type, lfn"),
        ("jobparamstable", ""),
        ("metatable", ""),
        ("jobs_statuslog", "ORDER BY modificationtime, jobstatus"),
    ] {
        all.insert(table.into(), json!(rows(store, table, id, order).await));
    }
    Json::Object(all)
}

/// Where two stored jobs differ: `table[row].column: left | right`.
fn differences(left: &Json, right: &Json) -> Vec<String> {
    let mut out = Vec::new();
    let tables = left.as_object().into_iter().flatten();
    for (table, rows) in tables {
        let (l, r) = (rows.as_array(), right[table].as_array());
        let (l, r) = (l.map_or(&[][..], |v| v), r.map_or(&[][..], |v| v));
        if l.len() != r.len() {
            out.push(format!("{table}: {} rows | {} rows", l.len(), r.len()));
            continue;
        }
        for (n, (a, b)) in l.iter().zip(r).enumerate() {
            for (column, value) in a.as_object().into_iter().flatten() {
                if b.get(column) != Some(value) {
                    out.push(format!("{table}[{n}].{column}: {value} | {}", b[column]));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn jobs_submitted_and_dispatched_across_the_two_servers_are_stored_alike() {
    let (Some(upstream), Some(database), Some(url)) = (
        setting("PANDA_TEST_UPSTREAM_SERVER"),
        setting("PANDA_TEST_UPSTREAM_SERVER_DB"),
        panda_store::testing::postgres_url(),
    ) else {
        eprintln!("note: side-by-side check skipped (set PANDA_TEST_UPSTREAM_SERVER and _DB)");
        return;
    };
    let mut config = panda_store::testing::parse_postgres_url(&url).expect("a postgres URL");
    config.name = database.clone();
    let env: Vec<(String, String)> = [
        ("PANDA_CONFIG", "none"),
        ("PANDA_BACKEND", "postgres"),
        ("PANDA_DBHOST", config.host.as_str()),
        ("PANDA_DBPORT", &config.port.to_string()),
        ("PANDA_DBUSER", config.user.as_str()),
        ("PANDA_DBNAME", database.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert!(run(&["schema", "migrate"], &env).status.success());
    let ours = Server::start(&["httpd"], &env);
    let store = Store::open(&config, StoreOptions::default())
        .await
        .expect("open");
    let client = reqwest::Client::new();
    let api = |base: &str, function: &str| format!("{base}/api/v1/{function}");
    let ours_base = ours.url("");
    let ours_base = ours_base.trim_end_matches('/');

    // The same job, through upstream, ours, upstream, ours.
    let mut job = TestJob::new("side-by-side");
    // A priority above that of any job an earlier run left in the queue.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    job.priority = 1_000_000 + now % 1_000_000_000;
    let body = json!({"jobs": json!([job.state()]).to_string()});
    let mut ids = Vec::new();
    let mut replies = Vec::new();
    for base in [upstream.as_str(), ours_base, upstream.as_str(), ours_base] {
        let reply = post_envelope(&client, api(base, "job/submit"), body.clone(), None).await;
        assert_eq!(reply["success"], true, "{base}: {reply}");
        ids.push(reply["data"][0][0].as_i64().expect("a PandaID"));
        let mut shape = reply["data"][0].clone();
        shape[0] = json!(0);
        replies.push(shape);
    }
    assert_eq!(replies[0], replies[1], "the submission replies differ");

    // Upstream dispatches the first two (upstream's and ours), ours the other two.
    let ask = json!({"site_name": "TEST_QUEUE", "prod_source_label": "managed", "node": "wn01"});
    for (n, base) in [upstream.as_str(), upstream.as_str(), ours_base, ours_base]
        .iter()
        .enumerate()
    {
        let got = post_envelope(&client, api(base, "pilot/acquire_jobs"), ask.clone(), None).await;
        assert_eq!(got["data"]["jobs"][0]["PandaID"], ids[n], "{base}: {got}");
    }

    // Each reports `running` through the server that did not dispatch it, or the one that did.
    for (n, base) in [upstream.as_str(), ours_base, upstream.as_str(), ours_base]
        .iter()
        .enumerate()
    {
        let beat = json!({"job_id": ids[n], "job_status": "running", "node": "wn01",
                          "site_name": "TEST_QUEUE", "cpu_consumption_time": 12});
        let said = post_envelope(&client, api(base, "pilot/update_job"), beat, None).await;
        assert_eq!(
            said["data"],
            json!({"StatusCode": 0, "command": "NULL"}),
            "{base}: {said}"
        );
    }

    // And the final report, likewise.
    for (n, base) in [upstream.as_str(), ours_base, upstream.as_str(), ours_base]
        .iter()
        .enumerate()
    {
        let last = json!({"job_id": ids[n], "job_status": "finished", "node": "wn01",
                          "site_name": "TEST_QUEUE", "cpu_consumption_time": 30,
                          "trans_exit_code": 0, "pilot_error_code": 0});
        let said = post_envelope(&client, api(base, "pilot/update_job"), last, None).await;
        assert_eq!(said["data"]["StatusCode"], 0, "{base}: {said}");
    }

    let mut seen = Vec::new();
    for id in &ids {
        seen.push(stored(&store, *id).await);
    }
    // Job n was submitted, dispatched and reported by: 0 upstream, upstream, upstream;
    // 1 ours, upstream, ours; 2 upstream, ours, upstream; 3 ours, ours, ours.
    let pairs = [
        (0, 1, "all upstream, against submitted and updated by ours"),
        (
            2,
            3,
            "dispatched by ours, submitted and updated by upstream or by ours",
        ),
        (0, 2, "all upstream, against dispatched by ours"),
        (0, 3, "all upstream, against all ours"),
    ];
    for (a, b, what) in pairs {
        let differences = differences(&seen[a], &seen[b]);
        assert!(differences.is_empty(), "{what}: {differences:#?}");
    }
    assert!(
        seen[0]["jobsactive4"]
            .as_array()
            .is_some_and(|r| r.len() == 1),
        "{}",
        seen[0]
    );
}
