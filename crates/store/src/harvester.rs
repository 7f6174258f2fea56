//! Harvester's bookkeeping (instances, workers, commands, statistics, metrics, dialogs), the
//! worker nodes pilots report, and the job counts behind `statistics/*`.

use chrono::{Duration, NaiveDateTime};
use panda_core::{time, ColumnType, JobTable, Value};

use crate::bind::placeholders;
use crate::driver::{Dialect, Tx, TxMode};
use crate::error::{Result, StoreError};
use crate::jobs::next_ids;
use crate::row::Columns;
use crate::Store;

/// A column and the value to write into it.
pub type ColumnValue = (&'static str, Value);

/// One worker of `harvester/update_workers`.
#[derive(Clone, Debug, Default)]
pub struct WorkerUpdate {
    pub worker_id: i64,
    /// `harvester_workers` columns to set.
    pub columns: Vec<ColumnValue>,
    /// The PandaIDs the worker runs, when Harvester says (`pandaid_list`).
    pub panda_ids: Option<Vec<i64>>,
}

/// A harvester command as `acquire_commands` hands it out.
#[derive(Clone, Debug, PartialEq)]
pub struct HarvesterCommand {
    pub command_id: i64,
    pub command: Option<String>,
    pub params: Option<String>,
    pub ack_requested: i64,
    pub creation_date: Option<NaiveDateTime>,
}

/// One row of worker statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerStat {
    pub harvester_id: String,
    pub computing_site: String,
    pub resource_type: String,
    pub status: String,
    pub job_type: String,
    pub n_workers: i64,
}

/// Jobs counted by the dimensions `statistics/*` group by.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStatRow {
    pub table: JobTable,
    pub site: String,
    pub cloud: String,
    pub label: String,
    pub resource_type: String,
    pub processing_type: String,
    pub gshare: String,
    pub status: String,
    pub count: i64,
}

/// A worker node as a pilot describes it (`pilot/update_worker_node`).
#[derive(Clone, Debug, Default)]
pub struct WorkerNode {
    pub site: String,
    pub host_name: String,
    pub cpu_model: String,
    pub panda_queue: Option<String>,
    /// The other columns of `worker_node`.
    pub columns: Vec<ColumnValue>,
}

/// Worker statuses after which Harvester's late updates do not overwrite the status.
const FINAL_WORKER_STATUSES: &[&str] = &["finished", "failed", "cancelled", "missed"];

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

async fn insert_row(tx: &mut dyn Tx, table: &str, columns: &[ColumnValue]) -> Result<u64> {
    let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
    let values: Vec<Value> = columns.iter().map(|(_, v)| v.clone()).collect();
    tx.execute(
        &format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            placeholders(1, columns.len())
        ),
        &values,
    )
    .await
}

impl Store {
    /// Records a Harvester instance's heartbeat; returns true when the instance was new.
    pub async fn harvester_heartbeat(
        &self,
        harvester_id: &str,
        owner: &str,
        host: &str,
        fields: &[ColumnValue],
        commands: &[(String, String, String)],
    ) -> Result<bool> {
        let now = Value::Time(Some(time::now()));
        let mut tx = self.begin(TxMode::Write).await?;
        let mut columns: Vec<ColumnValue> = vec![
            ("owner", Value::Text(Some(owner.into()))),
            ("hostname", Value::Text(Some(host.into()))),
            ("lastupdate", now.clone()),
        ];
        columns.extend(fields.iter().cloned());
        let assignments: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (c, _))| format!("{c} = ${}", i + 2))
            .collect();
        let mut params = vec![Value::Text(Some(harvester_id.into()))];
        params.extend(columns.iter().map(|(_, v)| v.clone()));
        let updated = tx
            .execute(
                &format!(
                    "UPDATE harvester_instances SET {} WHERE harvester_id = $1",
                    assignments.join(", ")
                ),
                &params,
            )
            .await?;
        let created = updated == 0;
        if created {
            columns.push(("harvester_id", Value::Text(Some(harvester_id.into()))));
            if !fields.iter().any(|(c, _)| *c == "description") {
                columns.push(("description", Value::Text(Some("automatic".into()))));
            }
            insert_row(tx.as_mut(), "harvester_instances", &columns).await?;
        }
        let day_ago = Value::Time(Some(time::now() - Duration::days(1)));
        for (command, site, resource_type) in commands {
            let key = [
                Value::Text(Some(harvester_id.into())),
                Value::Text(Some(site.clone())),
                Value::Text(Some(resource_type.clone())),
                Value::Text(Some(command.clone())),
            ];
            let found = tx
                .fetch(
                    "SELECT harvester_id FROM harvester_command_lock WHERE harvester_id = $1 \
                     AND computingsite = $2 AND resourcetype = $3 AND command = $4",
                    &key,
                    &[ColumnType::Text],
                )
                .await?;
            if found.is_empty() {
                let mut row = key.to_vec();
                row.push(day_ago.clone());
                tx.execute(
                    "INSERT INTO harvester_command_lock (harvester_id, computingsite, \
                     resourcetype, command, lockedtime) VALUES ($1, $2, $3, $4, $5)",
                    &row,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(created)
    }

    /// Inserts or updates Harvester's workers, and their job relations.
    pub async fn update_workers(&self, harvester_id: &str, workers: &[WorkerUpdate]) -> Result<()> {
        let now = time::now();
        let recent = now - Duration::hours(3);
        let mut tx = self.begin(TxMode::Write).await?;
        let lock = self.dialect().row_lock();
        for worker in workers {
            let key = [
                Value::Text(Some(harvester_id.into())),
                Value::Int(Some(worker.worker_id)),
            ];
            let old = tx
                .fetch(
                    &format!(
                        "SELECT status, lastupdate FROM harvester_workers \
                         WHERE harvesterid = $1 AND workerid = $2{lock}"
                    ),
                    &key,
                    &[ColumnType::Text, ColumnType::Timestamp],
                )
                .await?;
            let mut columns: Vec<ColumnValue> = worker.columns.clone();
            if let Some(row) = old.first() {
                let old_status = row.first().map(text).unwrap_or_default();
                let recent_final = FINAL_WORKER_STATUSES.contains(&old_status.as_str())
                    && row
                        .get(1)
                        .and_then(Value::as_time)
                        .is_some_and(|t| t > recent);
                if recent_final {
                    columns.retain(|(c, _)| *c != "status");
                }
                columns.push(("lastupdate", Value::Time(Some(now))));
                let assignments: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (c, _))| format!("{c} = ${}", i + 3))
                    .collect();
                let mut params = key.to_vec();
                params.extend(columns.iter().map(|(_, v)| v.clone()));
                tx.execute(
                    &format!(
                        "UPDATE harvester_workers SET {} WHERE harvesterid = $1 AND workerid = $2",
                        assignments.join(", ")
                    ),
                    &params,
                )
                .await?;
            } else {
                if !columns.iter().any(|(c, _)| *c == "status") {
                    columns.push(("status", Value::Text(Some("submitted".into()))));
                }
                columns.push(("harvesterid", key[0].clone()));
                columns.push(("workerid", key[1].clone()));
                columns.push(("lastupdate", Value::Time(Some(now))));
                insert_row(tx.as_mut(), "harvester_workers", &columns).await?;
            }
            if let Some(ids) = &worker.panda_ids {
                tx.execute(
                    "DELETE FROM harvester_rel_jobs_workers WHERE harvesterid = $1 AND workerid = $2",
                    &key,
                )
                .await?;
                let mut seen = Vec::new();
                for id in ids.iter().filter(|id| {
                    let new = !seen.contains(*id);
                    seen.push(**id);
                    new
                }) {
                    tx.execute(
                        "INSERT INTO harvester_rel_jobs_workers (harvesterid, workerid, pandaid, \
                         lastupdate) VALUES ($1, $2, $3, $4)",
                        &[
                            key[0].clone(),
                            key[1].clone(),
                            Value::Int(Some(*id)),
                            Value::Time(Some(now)),
                        ],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await
    }

    /// A worker's row as stored: `(status, computingsite, pilotstatus)`, for checks.
    pub async fn worker_brief(
        &self,
        harvester_id: &str,
        worker_id: i64,
    ) -> Result<Option<(String, Option<String>, Option<String>)>> {
        let rows = self
            .query(
                "SELECT status, computingsite, pilotstatus FROM harvester_workers \
                 WHERE harvesterid = $1 AND workerid = $2",
                &[
                    Value::Text(Some(harvester_id.into())),
                    Value::Int(Some(worker_id)),
                ],
                &[ColumnType::Text, ColumnType::Text, ColumnType::Text],
            )
            .await?;
        Ok(rows.into_iter().next().map(|r| {
            let get = |i: usize| r.get(i).and_then(Value::as_str).map(str::to_string);
            (get(0).unwrap_or_default(), get(1), get(2))
        }))
    }

    /// The highest worker ID Harvester has reported.
    pub async fn max_worker_id(&self, harvester_id: &str) -> Result<Option<i64>> {
        let rows = self
            .query(
                "SELECT MAX(workerid) FROM harvester_workers WHERE harvesterid = $1",
                &[Value::Text(Some(harvester_id.into()))],
                &[ColumnType::BigInt],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.first()).and_then(Value::as_i64))
    }

    /// Sets the target slots of a queue (upstream's `setNumSlotsForWP`), for one global share
    /// and resource type or, where they are `None`, for the whole queue; `slots = -1` removes
    /// the entry. One row per (queue, share, type), NULLs matching NULLs.
    pub async fn set_target_slots(
        &self,
        queue: &str,
        share: Option<&str>,
        resource_type: Option<&str>,
        slots: i64,
        expires: Option<NaiveDateTime>,
    ) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        let key = [
            Value::Text(Some(queue.into())),
            Value::Text(share.map(str::to_string)),
            Value::Text(resource_type.map(str::to_string)),
        ];
        const MATCH: &str =
            "pandaqueuename = $1 AND (gshare = $2 OR (gshare IS NULL AND $2 IS NULL)) \
             AND (resourcetype = $3 OR (resourcetype IS NULL AND $3 IS NULL))";
        if slots == -1 {
            tx.execute(&format!("DELETE FROM harvester_slots WHERE {MATCH}"), &key)
                .await?;
            return tx.commit().await;
        }
        let mut params = key.to_vec();
        params.extend([
            Value::Int(Some(slots)),
            Value::Time(Some(time::now())),
            Value::Time(expires),
        ]);
        let updated = tx
            .execute(
                &format!(
                    "UPDATE harvester_slots SET numslots = $4, modificationtime = $5, \
                     expirationtime = $6 WHERE {MATCH}"
                ),
                &params,
            )
            .await?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO harvester_slots (pandaqueuename, gshare, resourcetype, numslots, \
                 modificationtime, expirationtime) VALUES ($1, $2, $3, $4, $5, $6)",
                &params,
            )
            .await?;
        }
        tx.commit().await
    }

    /// The target slots of a queue: (share, resource type, slots, expiry), unexpired or not.
    pub async fn target_slots(
        &self,
        queue: &str,
    ) -> Result<Vec<(Option<String>, Option<String>, i64, Option<NaiveDateTime>)>> {
        let rows = self
            .query(
                "SELECT gshare, resourcetype, numslots, expirationtime FROM harvester_slots \
                 WHERE pandaqueuename = $1 ORDER BY gshare, resourcetype",
                &[Value::Text(Some(queue.into()))],
                &[
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::BigInt,
                    ColumnType::Timestamp,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r[0].as_str().map(str::to_string),
                    r[1].as_str().map(str::to_string),
                    r[2].as_i64().unwrap_or(0),
                    r[3].as_time(),
                )
            })
            .collect())
    }

    /// Queues a command for a Harvester instance (operators and tests); returns its ID.
    pub async fn add_harvester_command(
        &self,
        harvester_id: &str,
        command: &str,
        params: Option<&str>,
        ack_requested: bool,
    ) -> Result<i64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let id = next_ids(tx.as_mut(), self.dialect(), "harvester_command_id_seq", 1)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("harvester_command_id_seq gave nothing".into()))?;
        let now = Value::Time(Some(time::now()));
        insert_row(
            tx.as_mut(),
            "harvester_commands",
            &[
                ("command_id", Value::Int(Some(id))),
                ("command", Value::Text(Some(command.into()))),
                ("harvester_id", Value::Text(Some(harvester_id.into()))),
                ("ack_requested", Value::Int(Some(i64::from(ack_requested)))),
                ("creation_date", now.clone()),
                ("status", Value::Text(Some("new".into()))),
                ("status_date", now),
                ("params", Value::Text(params.map(str::to_string))),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Hands out up to `n` new commands, oldest first, marking them `retrieved`.
    pub async fn acquire_harvester_commands(
        &self,
        harvester_id: &str,
        n: i64,
    ) -> Result<Vec<HarvesterCommand>> {
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        static COMMAND: Columns = Columns(&[
            ("command_id", ColumnType::BigInt),
            ("command", ColumnType::Text),
            ("params", ColumnType::Text),
            ("ack_requested", ColumnType::BigInt),
            ("creation_date", ColumnType::Timestamp),
        ]);
        let mut tx = self.begin(TxMode::Write).await?;
        let sql = format!(
            "SELECT {} FROM harvester_commands WHERE harvester_id = $1 AND status = 'new' \
             ORDER BY creation_date, command_id LIMIT $2{lock}",
            COMMAND.select_list("")
        );
        let params = [Value::Text(Some(harvester_id.into())), Value::Int(Some(n))];
        let rows = tx.fetch(&sql, &params, &COMMAND.types()).await?;
        let commands = rows
            .iter()
            .map(|row| {
                let r = COMMAND.read(row);
                Ok(HarvesterCommand {
                    command_id: r.int("command_id")?,
                    command: r.opt_text("command")?,
                    params: r.opt_text("params")?,
                    ack_requested: r.opt_int("ack_requested")?.unwrap_or(0),
                    creation_date: r.opt_time("creation_date")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let now = Value::Time(Some(time::now()));
        for command in &commands {
            tx.execute(
                "UPDATE harvester_commands SET status = 'retrieved', status_date = $2 \
                 WHERE command_id = $1",
                &[Value::Int(Some(command.command_id)), now.clone()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(commands)
    }

    /// Marks commands `acknowledged`.
    pub async fn acknowledge_harvester_commands(&self, ids: &[i64]) -> Result<()> {
        let now = Value::Time(Some(time::now()));
        let mut tx = self.begin(TxMode::Write).await?;
        for id in ids {
            tx.execute(
                "UPDATE harvester_commands SET status = 'acknowledged', status_date = $2 \
                 WHERE command_id = $1",
                &[Value::Int(Some(*id)), now.clone()],
            )
            .await?;
        }
        tx.commit().await
    }

    /// Replaces an instance's worker statistics for one queue.
    pub async fn replace_worker_stats(
        &self,
        harvester_id: &str,
        site: &str,
        stats: &[WorkerStat],
    ) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        tx.execute(
            "DELETE FROM harvester_worker_stats WHERE harvester_id = $1 AND computingsite = $2",
            &[
                Value::Text(Some(harvester_id.into())),
                Value::Text(Some(site.into())),
            ],
        )
        .await?;
        let now = Value::Time(Some(time::now()));
        for stat in stats {
            insert_row(
                tx.as_mut(),
                "harvester_worker_stats",
                &[
                    ("harvester_id", Value::Text(Some(stat.harvester_id.clone()))),
                    (
                        "computingsite",
                        Value::Text(Some(stat.computing_site.clone())),
                    ),
                    (
                        "resourcetype",
                        Value::Text(Some(stat.resource_type.clone())),
                    ),
                    ("status", Value::Text(Some(stat.status.clone()))),
                    ("jobtype", Value::Text(Some(stat.job_type.clone()))),
                    ("n_workers", Value::Int(Some(stat.n_workers))),
                    ("lastupdate", now.clone()),
                ],
            )
            .await?;
        }
        tx.commit().await
    }

    /// Worker statistics reported in the last four hours.
    pub async fn worker_stats(&self) -> Result<Vec<WorkerStat>> {
        let since = Value::Time(Some(time::now() - Duration::hours(4)));
        static STAT: Columns = Columns(&[
            ("harvester_id", ColumnType::Text),
            ("computingsite", ColumnType::Text),
            ("resourcetype", ColumnType::Text),
            ("status", ColumnType::Text),
            ("jobtype", ColumnType::Text),
            ("n_workers", ColumnType::BigInt),
        ]);
        let sql = format!(
            "SELECT {} FROM harvester_worker_stats WHERE lastupdate >= $1",
            STAT.select_list("")
        );
        let rows = self.query(&sql, &[since], &STAT.types()).await?;
        rows.iter()
            .map(|row| {
                let r = STAT.read(row);
                Ok(WorkerStat {
                    harvester_id: r.text("harvester_id")?,
                    computing_site: r.text("computingsite")?,
                    resource_type: r.text_or_empty("resourcetype")?,
                    status: r.text("status")?,
                    job_type: r.text_or_empty("jobtype")?,
                    n_workers: r.opt_int("n_workers")?.unwrap_or(0),
                })
            })
            .collect()
    }

    /// Stores service metrics: `(creation_time, host, metrics JSON)` per entry.
    pub async fn add_harvester_metrics(
        &self,
        harvester_id: &str,
        metrics: &[(NaiveDateTime, String, String)],
    ) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        for (created, host, text) in metrics {
            insert_row(
                tx.as_mut(),
                "harvester_metrics",
                &[
                    ("harvester_id", Value::Text(Some(harvester_id.into()))),
                    ("creation_time", Value::Time(Some(*created))),
                    ("harvester_host", Value::Text(Some(host.clone()))),
                    (
                        "metrics",
                        Value::Text(Some(text.chars().take(4000).collect())),
                    ),
                ],
            )
            .await?;
        }
        tx.commit().await
    }

    /// Stores dialog messages, replacing earlier ones with the same diagID.
    pub async fn add_harvester_dialogs(
        &self,
        harvester_id: &str,
        dialogs: &[Vec<ColumnValue>],
    ) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        for dialog in dialogs {
            let diag_id = dialog
                .iter()
                .find(|(c, _)| *c == "diagid")
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Int(None));
            tx.execute(
                "DELETE FROM harvester_dialogs WHERE harvester_id = $1 AND diagid = $2",
                &[Value::Text(Some(harvester_id.into())), diag_id],
            )
            .await?;
            let mut row = dialog.clone();
            row.push(("harvester_id", Value::Text(Some(harvester_id.into()))));
            insert_row(tx.as_mut(), "harvester_dialogs", &row).await?;
        }
        tx.commit().await
    }

    /// Records a worker node; returns true when it was new.
    pub async fn upsert_worker_node(&self, node: &WorkerNode) -> Result<bool> {
        let now = Value::Time(Some(time::now()));
        let key = [
            Value::Text(Some(node.site.clone())),
            Value::Text(Some(node.host_name.clone())),
            Value::Text(Some(node.cpu_model.clone())),
        ];
        let mut tx = self.begin(TxMode::Write).await?;
        let updated = tx
            .execute(
                "UPDATE worker_node SET last_seen = $4 WHERE site = $1 AND host_name = $2 \
                 AND cpu_model = $3",
                &[key.to_vec(), vec![now.clone()]].concat(),
            )
            .await?;
        let created = updated == 0;
        if created {
            let mut row: Vec<ColumnValue> = vec![
                ("site", key[0].clone()),
                ("host_name", key[1].clone()),
                ("cpu_model", key[2].clone()),
                ("last_seen", now.clone()),
            ];
            row.extend(node.columns.iter().cloned());
            insert_row(tx.as_mut(), "worker_node", &row).await?;
        }
        if let Some(queue) = &node.panda_queue {
            let qkey = [
                key[0].clone(),
                key[1].clone(),
                Value::Text(Some(queue.clone())),
                now,
            ];
            let updated = tx
                .execute(
                    "UPDATE worker_node_queue SET last_seen = $4 WHERE site = $1 \
                     AND host_name = $2 AND panda_queue = $3",
                    &qkey,
                )
                .await?;
            if updated == 0 {
                tx.execute(
                    "INSERT INTO worker_node_queue (site, host_name, panda_queue, last_seen) \
                     VALUES ($1, $2, $3, $4)",
                    &qkey,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(created)
    }

    /// Records a worker node's GPUs; returns true when they were new.
    pub async fn upsert_worker_node_gpu(
        &self,
        key: [&str; 4],
        columns: &[ColumnValue],
    ) -> Result<bool> {
        let now = Value::Time(Some(time::now()));
        let key: Vec<Value> = key
            .iter()
            .map(|k| Value::Text(Some(k.to_string())))
            .collect();
        let updatable: Vec<&ColumnValue> = columns
            .iter()
            .filter(|(c, _)| matches!(*c, "framework" | "framework_version" | "count"))
            .collect();
        let mut assignments = vec!["last_seen = $5".to_string()];
        let mut params = key.clone();
        params.push(now.clone());
        for (c, v) in &updatable {
            params.push(v.clone());
            assignments.push(format!("{c} = ${}", params.len()));
        }
        let mut tx = self.begin(TxMode::Write).await?;
        let updated = tx
            .execute(
                &format!(
                    "UPDATE worker_node_gpus SET {} WHERE site = $1 AND host_name = $2 \
                     AND vendor = $3 AND model = $4",
                    assignments.join(", ")
                ),
                &params,
            )
            .await?;
        let created = updated == 0;
        if created {
            let mut row: Vec<ColumnValue> = vec![
                ("site", key[0].clone()),
                ("host_name", key[1].clone()),
                ("vendor", key[2].clone()),
                ("model", key[3].clone()),
                ("last_seen", now),
            ];
            row.extend(columns.iter().cloned());
            insert_row(tx.as_mut(), "worker_node_gpus", &row).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    /// Job counts by site, cloud, label, resource type, processing type, share and status:
    /// the live tables, and `jobsarchived4` rows modified since `archived_since`.
    pub async fn job_stat_rows(&self, archived_since: NaiveDateTime) -> Result<Vec<JobStatRow>> {
        static COUNT: Columns = Columns(&[
            ("computingsite", ColumnType::Text),
            ("cloud", ColumnType::Text),
            ("prodsourcelabel", ColumnType::Text),
            ("resource_type", ColumnType::Text),
            ("processingtype", ColumnType::Text),
            ("gshare", ColumnType::Text),
            ("jobstatus", ColumnType::Text),
            ("n", ColumnType::BigInt),
        ]);
        let grouped = COUNT.0[..7]
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ");
        let types = COUNT.types();
        let mut tx = self.begin(TxMode::Read).await?;
        let mut out = Vec::new();
        for table in JobTable::ALL {
            let (filter, params) = match table {
                JobTable::Archived => (
                    " WHERE modificationtime >= $1",
                    vec![Value::Time(Some(archived_since))],
                ),
                _ => ("", Vec::new()),
            };
            let sql = format!(
                "SELECT {grouped}, COUNT(*) AS n FROM {}{filter} GROUP BY {grouped}",
                table.name()
            );
            for row in tx.fetch(&sql, &params, &types).await? {
                // The grouping columns may be NULL (a job without a cloud or share).
                let r = COUNT.read(&row);
                out.push(JobStatRow {
                    table,
                    site: r.text_or_empty("computingsite")?,
                    cloud: r.text_or_empty("cloud")?,
                    label: r.text_or_empty("prodsourcelabel")?,
                    resource_type: r.text_or_empty("resource_type")?,
                    processing_type: r.text_or_empty("processingtype")?,
                    gshare: r.text_or_empty("gshare")?,
                    status: r.text("jobstatus")?,
                    count: r.int("n")?,
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}
