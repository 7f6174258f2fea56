//! What Harvester instances report (heartbeats, workers, statistics, metrics, dialogs) and the
//! commands they fetch, in upstream's `harvester_*` tables.
//!
//! The rules of this module: which keys of Harvester's JSON are columns, of which SQL type, and
//! how a value is converted (Harvester's datetimes are `"datetime/YYYY-mm-dd HH:MM:SS.ffffff"`;
//! plain `YYYY-mm-dd HH:MM:SS[.f]` and Oracle's `DD-MON-YY HH:MM:SS` are accepted too; text is cut to its column's length). Worker
//! keys that are not worker attributes are ignored, as upstream ignores them; a value of the
//! wrong type is refused with its key named. Upstream fails the first heartbeat of a new
//! instance (it answers "no instance record" after inserting it); we succeed, since the
//! instance is recorded.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use panda_core::{ColumnType, Value};
use panda_store::{ColumnValue, HarvesterCommand, WorkerStat, WorkerUpdate};
use serde_json::{Map, Value as Json};

use crate::{JobService, ServiceError};

/// Most entries of each filter list of a sweep command.
pub const MAX_SWEEP_FILTER: usize = 1000;

/// Most commands one `acquire_commands` call hands out.
pub const MAX_COMMANDS_PER_CALL: i64 = 1000;

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest(message.into())
}

/// A Harvester datetime: `datetime/YYYY-mm-dd HH:MM:SS[.f]` (Harvester's own), the same
/// without the prefix or with a `T`, or Oracle's default rendering `DD-MON-YY HH:MM:SS[.f]`
/// (`02-NOV-24 00:02:18`), which values read back from an Oracle-backed PanDA carry.
pub fn parse_time(text: &str) -> Option<NaiveDateTime> {
    let text = text.strip_prefix("datetime/").unwrap_or(text).trim();
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%d-%b-%y %H:%M:%S%.f",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
}

/// Converts a JSON value for a column, cutting text to the column's length.
fn column_value(key: &str, value: &Json, column_type: ColumnType) -> Result<Value, String> {
    let converted = json_to_column(key, value, column_type)?;
    column_type
        .check(&converted)
        .map_err(|why| format!("{key}: {why}"))?;
    Ok(converted)
}

fn json_to_column(key: &str, value: &Json, column_type: ColumnType) -> Result<Value, String> {
    let bad = || format!("{key}: {value} is not a valid {column_type:?} value");
    match (value, column_type) {
        (Json::Null, t) => Ok(t.null()),
        (Json::String(s), ColumnType::Timestamp) => {
            parse_time(s).map(|t| Value::Time(Some(t))).ok_or_else(bad)
        }
        (Json::String(s), ColumnType::VarChar(n)) => {
            Ok(Value::Text(Some(s.chars().take(n as usize).collect())))
        }
        (Json::Number(n), ColumnType::VarChar(_)) => Ok(Value::Text(Some(n.to_string()))),
        (Json::Number(n), ColumnType::Int | ColumnType::BigInt | ColumnType::SmallInt) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .map(|i| Value::Int(Some(i)))
            .ok_or_else(bad),
        (Json::String(s), ColumnType::Int | ColumnType::BigInt | ColumnType::SmallInt) => {
            Value::parse(column_type, s).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Columns a heartbeat's `data` may set (upstream uses the keys as column names).
const INSTANCE_COLUMNS: &[(&str, &str, ColumnType)] = &[
    ("description", "description", ColumnType::VarChar(200)),
    ("starttime", "starttime", ColumnType::Timestamp),
    ("sw_version", "sw_version", ColumnType::VarChar(50)),
    ("commit_stamp", "commit_stamp", ColumnType::VarChar(100)),
];

/// Worker attributes (upstream's `WorkerSpec`) and their `harvester_workers` columns.
const WORKER_COLUMNS: &[(&str, &str, ColumnType)] = &[
    ("batchID", "batchid", ColumnType::VarChar(80)),
    ("queueName", "queuename", ColumnType::VarChar(80)),
    ("status", "status", ColumnType::VarChar(80)),
    ("computingSite", "computingsite", ColumnType::VarChar(128)),
    ("nCore", "ncore", ColumnType::Int),
    ("nodeID", "nodeid", ColumnType::VarChar(80)),
    ("submitTime", "submittime", ColumnType::Timestamp),
    ("startTime", "starttime", ColumnType::Timestamp),
    ("endTime", "endtime", ColumnType::Timestamp),
    ("stdOut", "stdout", ColumnType::VarChar(250)),
    ("stdErr", "stderr", ColumnType::VarChar(250)),
    ("batchLog", "batchlog", ColumnType::VarChar(250)),
    ("jdl", "jdl", ColumnType::VarChar(250)),
    ("resourceType", "resourcetype", ColumnType::VarChar(56)),
    ("nativeExitCode", "nativeexitcode", ColumnType::Int),
    ("nativeStatus", "nativestatus", ColumnType::VarChar(80)),
    ("diagMessage", "diagmessage", ColumnType::VarChar(500)),
    ("nJobs", "njobs", ColumnType::Int),
    (
        "computingElement",
        "computingelement",
        ColumnType::VarChar(128),
    ),
    ("submissionHost", "submissionhost", ColumnType::VarChar(128)),
    ("harvesterHost", "harvesterhost", ColumnType::VarChar(128)),
    ("jobType", "jobtype", ColumnType::VarChar(52)),
    ("minRamCount", "minramcount", ColumnType::Int),
    ("errorCode", "errorcode", ColumnType::Int),
];

const DIALOG_COLUMNS: &[(&str, &str, ColumnType)] = &[
    ("diagID", "diagid", ColumnType::BigInt),
    ("moduleName", "modulename", ColumnType::VarChar(100)),
    ("identifier", "identifier", ColumnType::VarChar(100)),
    ("creationTime", "creationtime", ColumnType::Timestamp),
    ("messageLevel", "messagelevel", ColumnType::VarChar(10)),
    ("diagMessage", "diagmessage", ColumnType::VarChar(500)),
];

fn worker_update(index: usize, worker: &Json) -> Result<WorkerUpdate, String> {
    let Some(map) = worker.as_object() else {
        return Err(format!("workers[{index}] is not an object"));
    };
    let worker_id = match map.get("workerID") {
        Some(Json::Number(n)) => n.as_i64(),
        Some(Json::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("workers[{index}] needs an integer workerID"))?;
    let mut columns = Vec::new();
    for (key, column, column_type) in WORKER_COLUMNS {
        if let Some(value) = map.get(*key) {
            let value = column_value(key, value, *column_type)
                .map_err(|e| format!("Type error: workers[{index}].{e}"))?;
            columns.push((*column, value));
        }
    }
    let panda_ids = match map.get("pandaid_list") {
        None | Some(Json::Null) => None,
        Some(Json::Array(ids)) => Some(
            ids.iter()
                .map(Json::as_i64)
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| format!("workers[{index}].pandaid_list must hold PandaIDs"))?,
        ),
        Some(_) => return Err(format!("workers[{index}].pandaid_list must be a list")),
    };
    Ok(WorkerUpdate {
        worker_id,
        columns,
        panda_ids,
    })
}

/// Worker counts as `get_worker_statistics` answers them:
/// site → harvester → job type → resource type → status → count.
pub type WorkerStatistics =
    BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>>>>;

impl JobService {
    /// A heartbeat of instance `harvester_id` run by `owner` from `host`: its attributes and
    /// the commands it announces.
    pub async fn harvester_heartbeat(
        &self,
        harvester_id: &str,
        owner: &str,
        host: &str,
        data: &Map<String, Json>,
    ) -> Result<(), ServiceError> {
        let mut fields: Vec<ColumnValue> = Vec::new();
        let mut commands = Vec::new();
        for (key, value) in data {
            if key == "commands" {
                for item in value.as_array().into_iter().flatten() {
                    let get = |k: &str| item.get(k).and_then(Json::as_str).map(str::to_string);
                    match (get("command"), get("computingSite"), get("resourceType")) {
                        (Some(c), Some(s), Some(r)) => commands.push((c, s, r)),
                        _ => {
                            return Err(bad(
                                "data.commands: each entry needs command, computingSite and \
                                 resourceType",
                            ))
                        }
                    }
                }
                continue;
            }
            let lower = key.to_ascii_lowercase();
            let Some((_, column, column_type)) =
                INSTANCE_COLUMNS.iter().find(|(k, ..)| *k == lower)
            else {
                return Err(bad(format!(
                    "data: {key} is not a harvester instance attribute"
                )));
            };
            let value = column_value(key, value, *column_type)
                .map_err(|e| bad(format!("Type error: data.{e}")))?;
            fields.push((column, value));
        }
        self.stores
            .harvester
            .harvester_heartbeat(harvester_id, owner, host, &fields, &commands)
            .await?;
        Ok(())
    }

    /// Records the workers of an instance; returns how many.
    pub async fn update_harvester_workers(
        &self,
        harvester_id: &str,
        workers: &[Json],
    ) -> Result<usize, ServiceError> {
        let workers = workers
            .iter()
            .enumerate()
            .map(|(i, w)| worker_update(i, w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        self.stores
            .harvester
            .update_workers(harvester_id, &workers)
            .await?;
        Ok(workers.len())
    }

    /// Hands out at most `n` (and at most [`MAX_COMMANDS_PER_CALL`]) pending commands.
    pub async fn acquire_harvester_commands(
        &self,
        harvester_id: &str,
        n: i64,
    ) -> Result<Vec<HarvesterCommand>, ServiceError> {
        let n = n.clamp(0, MAX_COMMANDS_PER_CALL);
        Ok(self
            .stores
            .harvester
            .acquire_harvester_commands(harvester_id, n)
            .await?)
    }

    pub async fn acknowledge_harvester_commands(&self, ids: &[i64]) -> Result<(), ServiceError> {
        Ok(self
            .stores
            .harvester
            .acknowledge_harvester_commands(ids)
            .await?)
    }

    /// Sets the target number of slots of a queue (upstream's `setNumSlotsForWP`, to build up
    /// job pressure), for a global share and resource type or the whole queue, valid for
    /// `valid_days` (`None`: no expiry); `slots = -1` removes the entry. The answer is
    /// upstream's sentence.
    pub async fn set_target_slots(
        &self,
        queue: &str,
        slots: i64,
        share: Option<&str>,
        resource_type: Option<&str>,
        valid_days: Option<i64>,
    ) -> Result<String, ServiceError> {
        for (name, value, longest) in [
            ("panda_queue", Some(queue), 128),
            ("global_share", share, 32),
            ("resource_type", resource_type, 56),
        ] {
            if value.is_some_and(|v| v.is_empty() || v.len() > longest) {
                return Err(bad(format!("{name} must have 1 to {longest} characters")));
            }
        }
        if slots < -1 {
            return Err(bad(
                "slots must be a number of slots, or -1 to remove the entry",
            ));
        }
        if valid_days.is_some_and(|d| !(0..=36_500).contains(&d)) {
            return Err(bad(
                "expiration_date must be a number of days from 0 to 36500",
            ));
        }
        let expires = valid_days.map(|d| panda_core::time::now() + chrono::Duration::days(d));
        self.stores
            .harvester
            .set_target_slots(queue, share, resource_type, slots, expires)
            .await?;
        Ok(format!(
            "set numSlots={slots} for PQ={queue} gshare={} resource={}",
            share.unwrap_or("None"),
            resource_type.unwrap_or("None")
        ))
    }

    /// Tells the Harvester instance serving `queue` (its CRIC record's `harvester`) to kill
    /// its workers there (upstream's `sweepPQ`): a `KILL_WORKERS` command whose params name
    /// the queue and filter by worker status, computing element (`None` for all; the ones
    /// the queue does not list are dropped, as upstream drops them) and submission host.
    pub async fn sweep_queue(
        &self,
        queue: &str,
        statuses: &[String],
        computing_elements: Option<&[String]>,
        submission_hosts: &[String],
    ) -> Result<i64, ServiceError> {
        for (name, list) in [
            ("status_list", statuses),
            ("ce_list", computing_elements.unwrap_or(&[])),
            ("submission_host_list", submission_hosts),
        ] {
            if list.len() > MAX_SWEEP_FILTER {
                return Err(bad(format!(
                    "{name} has {} entries; at most {MAX_SWEEP_FILTER} are accepted",
                    list.len()
                )));
            }
        }
        let Some(record) = self.stores.sites.queue_json(queue).await? else {
            return Err(bad("Error retrieving queue configuration from DB"));
        };
        let record: Json = serde_json::from_str(&record).unwrap_or(Json::Null);
        let Some(harvester_id) = record
            .get("harvester")
            .and_then(Json::as_str)
            .filter(|h| !h.is_empty())
        else {
            return Err(bad("Queue not served by any harvester ID"));
        };
        let listed: Vec<&str> = record
            .get("queues")
            .and_then(Json::as_array)
            .map(|ces| {
                ces.iter()
                    .filter_map(|ce| ce.get("ce_endpoint").and_then(Json::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let computing_elements = match computing_elements {
            None => Json::from("ALL"),
            Some(wanted) => Json::from(
                wanted
                    .iter()
                    .filter(|ce| listed.contains(&ce.as_str()))
                    .cloned()
                    .collect::<Vec<String>>(),
            ),
        };
        let params = serde_json::json!({
            "status": statuses,
            "computingSite": [queue],
            "computingElement": computing_elements,
            "submissionHost": submission_hosts,
        });
        Ok(self
            .stores
            .harvester
            .add_harvester_command(
                harvester_id,
                "KILL_WORKERS",
                Some(&params.to_string()),
                false,
            )
            .await?)
    }

    /// The highest worker ID the instance has reported.
    pub async fn current_worker_id(&self, harvester_id: &str) -> Result<i64, ServiceError> {
        self.stores
            .harvester
            .max_worker_id(harvester_id)
            .await?
            .ok_or_else(|| bad(format!("no workers known for harvester_id={harvester_id}")))
    }

    /// Replaces the instance's worker counts at `site`: `statistics` is the JSON text
    /// `{jobType: {resourceType: {status: n}}}`; the resource type `Undefined` is skipped.
    pub async fn report_worker_statistics(
        &self,
        harvester_id: &str,
        site: &str,
        statistics: &str,
    ) -> Result<(), ServiceError> {
        let parsed: Map<String, Json> = match serde_json::from_str(statistics) {
            Ok(Json::Object(map)) => map,
            _ => {
                return Err(bad(
                    "statistics must be a JSON object {jobType: {resourceType: {status: n}}}",
                ))
            }
        };
        let mut stats = Vec::new();
        for (job_type, by_resource) in &parsed {
            for (resource_type, by_status) in by_resource.as_object().into_iter().flatten() {
                if resource_type == "Undefined" {
                    continue;
                }
                for (status, n) in by_status.as_object().into_iter().flatten() {
                    let n = n.as_i64().ok_or_else(|| {
                        bad(format!(
                            "statistics: {job_type}.{resource_type}.{status} is not a count"
                        ))
                    })?;
                    stats.push(WorkerStat {
                        harvester_id: harvester_id.to_string(),
                        computing_site: site.to_string(),
                        resource_type: resource_type.clone(),
                        status: status.clone(),
                        job_type: job_type.clone(),
                        n_workers: n,
                    });
                }
            }
        }
        Ok(self
            .stores
            .harvester
            .replace_worker_stats(harvester_id, site, &stats)
            .await?)
    }

    /// The worker counts of the last four hours, summed per site, instance, job type,
    /// resource type and status.
    pub async fn worker_statistics(&self) -> Result<WorkerStatistics, ServiceError> {
        let mut out = WorkerStatistics::new();
        for s in self.stores.harvester.worker_stats().await? {
            *out.entry(s.computing_site)
                .or_default()
                .entry(s.harvester_id)
                .or_default()
                .entry(s.job_type)
                .or_default()
                .entry(s.resource_type)
                .or_default()
                .entry(s.status)
                .or_default() += s.n_workers;
        }
        Ok(out)
    }

    /// Service metrics: each entry `[creation time, host, metrics]`; metrics that are not text
    /// are kept as their JSON.
    pub async fn add_harvester_metrics(
        &self,
        harvester_id: &str,
        metrics: &[Json],
    ) -> Result<(), ServiceError> {
        let mut rows = Vec::with_capacity(metrics.len());
        for (i, entry) in metrics.iter().enumerate() {
            let parts = entry.as_array().map(Vec::as_slice).unwrap_or_default();
            let (Some(time), Some(host), Some(metrics)) = (
                parts.first().and_then(Json::as_str).and_then(parse_time),
                parts.get(1).and_then(Json::as_str),
                parts.get(2),
            ) else {
                return Err(bad(format!(
                    "metrics[{i}] must be [creation time, host, metrics]"
                )));
            };
            let text = match metrics {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            rows.push((time, host.to_string(), text));
        }
        Ok(self
            .stores
            .harvester
            .add_harvester_metrics(harvester_id, &rows)
            .await?)
    }

    /// Dialog messages; each needs `diagID` and `creationTime`.
    pub async fn add_harvester_dialogs(
        &self,
        harvester_id: &str,
        dialogs: &[Json],
    ) -> Result<(), ServiceError> {
        let mut rows = Vec::with_capacity(dialogs.len());
        for (i, dialog) in dialogs.iter().enumerate() {
            let Some(map) = dialog.as_object() else {
                return Err(bad(format!("dialogs[{i}] is not an object")));
            };
            let mut row: Vec<ColumnValue> = Vec::new();
            for (key, column, column_type) in DIALOG_COLUMNS {
                let value = match map.get(*key) {
                    Some(v) => column_value(key, v, *column_type)
                        .map_err(|e| bad(format!("Type error: dialogs[{i}].{e}")))?,
                    None if matches!(*key, "diagID" | "creationTime") => {
                        return Err(bad(format!("dialogs[{i}] needs {key}")));
                    }
                    None => continue,
                };
                row.push((*column, value));
            }
            rows.push(row);
        }
        Ok(self
            .stores
            .harvester
            .add_harvester_dialogs(harvester_id, &rows)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn harvester_datetimes_parse_with_and_without_the_prefix() {
        assert!(parse_time("datetime/2026-11-25 10:00:00.123456").is_some());
        assert!(parse_time("2026-11-25 10:00:00").is_some());
        assert!(parse_time("yesterday").is_none());
        let oracle = parse_time("02-NOV-24 00:02:18").expect("Oracle's form");
        assert_eq!(oracle.to_string(), "2024-11-02 00:02:18");
        assert!(parse_time("02-Nov-24 00:02:18.5").is_some());
        assert!(parse_time("32-NOV-24 00:02:18").is_none());
    }

    #[test]
    fn worker_values_are_typed_and_cut() {
        let long = "x".repeat(300);
        let v = column_value("stdOut", &json!(long), ColumnType::VarChar(250)).expect("text");
        assert_eq!(v.as_str().map(str::len), Some(250));
        let err = column_value("nCore", &json!("eight"), ColumnType::Int).expect_err("bad");
        assert!(err.starts_with("nCore"), "{err}");
    }

    #[test]
    fn a_worker_needs_an_id_and_keeps_only_worker_attributes() {
        let update = worker_update(
            0,
            &json!({"workerID": "7", "status": "running", "nCore": 8, "unknownKey": 1,
                    "pandaid_list": [1, 2]}),
        )
        .expect("valid");
        assert_eq!(update.worker_id, 7);
        assert_eq!(
            update.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            ["status", "ncore"]
        );
        assert_eq!(update.panda_ids, Some(vec![1, 2]));
        let err = worker_update(3, &json!({"status": "running"})).expect_err("no id");
        assert_eq!(err, "workers[3] needs an integer workerID");
        let err =
            worker_update(1, &json!({"workerID": 1, "pandaid_list": ["x"]})).expect_err("bad ids");
        assert!(err.contains("pandaid_list must hold PandaIDs"), "{err}");
    }

    #[tokio::test]
    async fn workers_and_statistics_go_through_the_store_and_come_back_summed() {
        use panda_store::testing::TestDb;
        use panda_store::{Backend, Store, StoreOptions};
        let db = TestDb::new(Backend::Sqlite);
        let store = Store::open(&db.config, StoreOptions::default())
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        let service = JobService::new(store, crate::ServiceSettings::default());
        let err = service
            .update_harvester_workers("h1", &[json!({"status": "running"})])
            .await
            .expect_err("no workerID");
        assert!(err.to_string().contains("workerID"), "{err}");
        let n = service
            .update_harvester_workers(
                "h1",
                &[json!({"workerID": 3, "status": "running", "computingSite": "Q1"})],
            )
            .await
            .expect("workers");
        assert_eq!(n, 1);
        assert_eq!(service.current_worker_id("h1").await.expect("id"), 3);
        assert!(service.current_worker_id("h2").await.is_err());
        service
            .report_worker_statistics(
                "h1",
                "Q1",
                r#"{"managed": {"SCORE": {"running": 2}, "Undefined": {"running": 9}}}"#,
            )
            .await
            .expect("stats");
        let stats = service.worker_statistics().await.expect("read");
        assert_eq!(stats["Q1"]["h1"]["managed"]["SCORE"]["running"], 2);
        assert!(!stats["Q1"]["h1"]["managed"].contains_key("Undefined"));
    }
}
