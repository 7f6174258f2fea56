//! The operator's views of a node, printed by `panda-server jobs` and `panda-server status`.
//!
//! Both only read: the database through the store, and this node's own web tier through one
//! `isAlive` request on loopback with a two-second limit. Each function returns the text it
//! prints, so the format is tested without a terminal.
//!
//! Who may call them: whoever can read the configuration and its password file, which the
//! installation gives to root and the `panda` group only; nothing here is reachable over the
//! network. The largest answer: `jobs list` stops at [`MAX_LIST_LIMIT`] jobs, `jobs show` is one
//! job, `status` a page of counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use panda_core::{FileAttr, JobSpec, QueueSpec};
use panda_store::{Backend, JobFilter, Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

/// Most jobs `jobs list` prints unless `--limit` says otherwise.
pub const DEFAULT_LIST_LIMIT: u64 = 100;
/// The most `--limit` may ask for: an operator's terminal, not an export.
pub const MAX_LIST_LIMIT: u64 = 10_000;

fn time(t: Option<chrono::NaiveDateTime>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `jobs list`: one tab-separated line per job under a header, newest first.
pub async fn jobs_list(store: &Store, filter: &JobFilter) -> Result<String, StoreError> {
    let jobs = store.list_jobs(filter).await?;
    let mut out = String::from("PandaID\tstatus\tsite\ttask\tlabel\tmodified\n");
    for job in &jobs {
        let task = job.task_id.map_or_else(|| "-".into(), |t| t.to_string());
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{task}\t{}\t{}",
            job.panda_id,
            job.status,
            job.site,
            job.label,
            time(job.modification_time)
        );
    }
    if jobs.len() == filter.limit {
        let _ = writeln!(out, "(first {} shown; --limit for more)", filter.limit);
    }
    Ok(out)
}

/// `jobs show ID`: the job's attributes that are set, its files, and its status log.
pub async fn jobs_show(store: &Store, panda_id: i64) -> Result<Option<String>, StoreError> {
    let Some(job) = store.get_job(panda_id).await? else {
        return Ok(None);
    };
    let mut out = describe(&job);
    let log = store.job_status_log(panda_id).await?;
    let _ = writeln!(out, "status log:");
    if log.is_empty() {
        let _ = writeln!(out, "  (none; record_statuschange may be off)");
    }
    for entry in log {
        let _ = writeln!(
            out,
            "  {}  {}  {}  {}",
            time(entry.time),
            entry.status,
            entry.site,
            entry.host
        );
    }
    Ok(Some(out))
}

fn describe(job: &JobSpec) -> String {
    let mut out = String::new();
    for (attribute, value) in job.iter() {
        let text = value.render();
        if text != "NULL" && !text.is_empty() {
            let _ = writeln!(out, "{}: {text}", attribute.name);
        }
    }
    let _ = writeln!(out, "files:");
    for file in &job.files {
        let field = |attr| file.get_str(attr).unwrap_or("-").to_string();
        let _ = writeln!(
            out,
            "  {}  {}  {}",
            field(FileAttr::r#type),
            field(FileAttr::lfn),
            field(FileAttr::status)
        );
    }
    out
}

/// `status`: this node's view, and whether it is healthy (schema current, database answering).
pub async fn node_status(config: &Config) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(out, "node: {}", config.host_name);
    let _ = writeln!(out, "database: {}", database_name(config));
    if let Some(why) = config.missing_sqlite_database() {
        let _ = writeln!(out, "DB schema check: FAILED: {why}");
        return (out, false);
    }
    let store = match Store::open(&config.db, config.store_options()).await {
        Ok(store) => store,
        Err(e) => {
            let _ = writeln!(out, "database answers: no: {e}");
            return (out, false);
        }
    };
    let started = Instant::now();
    let healthy = match store.check_schema().await {
        Ok(version) => {
            let _ = writeln!(
                out,
                "DB schema check: OK ({version}; answered in {} ms)",
                panda_core::time::millis(started.elapsed())
            );
            true
        }
        Err(e) => {
            let _ = writeln!(out, "DB schema check: FAILED: {e}");
            false
        }
    };
    if healthy {
        report_contents(&store, &mut out).await;
    }
    let _ = writeln!(
        out,
        "web tier on this node: {}",
        probe_web_tier(config).await
    );
    store.close().await;
    (out, healthy)
}

fn database_name(config: &Config) -> String {
    let db = &config.db;
    match db.backend {
        Backend::Sqlite => format!("sqlite {}", db.name),
        Backend::Postgres => format!(
            "postgres {}@{}:{}/{} (schema {})",
            db.user, db.host, db.port, db.name, db.schema
        ),
    }
}

/// Queues by status, jobs by status, and the daemon's leases.
async fn report_contents(store: &Store, out: &mut String) {
    match store.all_queues().await {
        Ok(queues) => {
            let mut by_status = BTreeMap::<String, usize>::new();
            for (name, json) in &queues {
                let data = serde_json::from_str(json).unwrap_or(serde_json::Value::Null);
                *by_status
                    .entry(QueueSpec::from_json(name, data).status.to_string())
                    .or_default() += 1;
            }
            let _ = writeln!(out, "queues: {} ({})", queues.len(), counts(&by_status));
        }
        Err(e) => {
            let _ = writeln!(out, "queues: cannot read: {e}");
        }
    }
    match store.job_counts().await {
        Ok(rows) => {
            let mut by_status = BTreeMap::<String, usize>::new();
            for (_, status, n) in rows {
                *by_status.entry(status).or_default() += usize::try_from(n).unwrap_or(0);
            }
            let total: usize = by_status.values().sum();
            let _ = writeln!(out, "jobs: {total} ({})", counts(&by_status));
        }
        Err(e) => {
            let _ = writeln!(out, "jobs: cannot read: {e}");
        }
    }
    match store.daemon_leases().await {
        Ok(leases) if leases.is_empty() => {
            let _ = writeln!(out, "daemon leases: none taken yet");
        }
        Ok(leases) => {
            let _ = writeln!(out, "daemon leases:");
            for lease in leases {
                let _ = writeln!(
                    out,
                    "  {}  {}  {}",
                    lease.task,
                    lease.holder,
                    time(lease.taken)
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "daemon leases: cannot read: {e}");
        }
    }
}

fn counts(by_status: &BTreeMap<String, usize>) -> String {
    if by_status.is_empty() {
        return "none".into();
    }
    by_status
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks this node's web tier `isAlive` on loopback: `alive` or why not.
async fn probe_web_tier(config: &Config) -> String {
    let address = match config.bind_address {
        ip if ip.is_unspecified() => std::net::SocketAddr::from(([127, 0, 0, 1], config.http_port)),
        ip => std::net::SocketAddr::new(ip, config.http_port),
    };
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /server/panda/isAlive HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut answer = Vec::with_capacity(512);
        (&mut stream).take(4096).read_to_end(&mut answer).await?;
        std::io::Result::Ok(answer)
    };
    match tokio::time::timeout(Duration::from_secs(2), ask).await {
        Ok(Ok(answer)) if String::from_utf8_lossy(&answer).contains("alive=yes") => {
            format!("alive (http://{address})")
        }
        Ok(Ok(_)) => format!("answers on http://{address} but not alive=yes"),
        Ok(Err(e)) => format!("not answering on http://{address}: {e}"),
        Err(_) => format!("no answer from http://{address} within 2 s"),
    }
}
