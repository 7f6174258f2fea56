//! Statements behind the daemon: cluster-wide leases in `jedi_process_lock`, the Adder's work
//! list in `job_output_report`, timeouts from the `config` table, and job selections for the
//! watcher.

use chrono::NaiveDateTime;
use panda_core::{time, ColumnType, JobTable, Value};

use crate::bind::placeholders;
use crate::driver::TxMode;
use crate::error::Result;
use crate::row::Columns;
use crate::Store;

/// A pilot's final report waiting for the Adder.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputReport {
    pub panda_id: i64,
    pub attempt_nr: i64,
    pub job_status: String,
    pub data: Option<String>,
}

fn text(s: &str) -> Value {
    Value::Text(Some(s.to_string()))
}

/// The lease key columns: one row per daemon task.
const LEASE_KEY: &str = "vo = 'panda' AND prodsourcelabel = 'daemon' AND workqueue_id = 0 \
     AND cloud = 'any' AND resource_type = 'any' AND component = $1";

impl Store {
    /// Takes the cluster-wide lease of `component` for `holder` if nobody took it within the
    /// last `period` (upstream's semantics: leases are never released, they expire). Returns
    /// whether this holder has it now.
    pub async fn take_lease(
        &self,
        component: &str,
        holder: &str,
        period: chrono::Duration,
    ) -> Result<bool> {
        let now = time::now();
        let params = [
            text(component),
            text(holder),
            Value::Time(Some(now)),
            Value::Time(Some(now - period)),
        ];
        let mut tx = self.begin(TxMode::Write).await?;
        let taken = tx
            .execute(
                &format!(
                    "UPDATE jedi_process_lock SET lockedby = $2, lockedtime = $3 WHERE {LEASE_KEY} \
                     AND (lockedtime IS NULL OR lockedtime < $4)"
                ),
                &params,
            )
            .await?;
        let taken = if taken == 1 {
            true
        } else {
            tx.execute(
                "INSERT INTO jedi_process_lock (vo, prodsourcelabel, workqueue_id, cloud, \
                 resource_type, component, lockedby, lockedtime) \
                 VALUES ('panda', 'daemon', 0, 'any', 'any', $1, $2, $3) ON CONFLICT DO NOTHING",
                &params[..3],
            )
            .await?
                == 1
        };
        tx.commit().await?;
        Ok(taken)
    }

    /// Final reports of `holding` jobs not locked by another Adder since `stale_lock`.
    pub async fn pending_output_reports(
        &self,
        stale_lock: NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<OutputReport>> {
        static REPORT: Columns = Columns(&[
            ("pandaid", ColumnType::BigInt),
            ("attemptnr", ColumnType::BigInt),
            ("jobstatus", ColumnType::Text),
            ("data", ColumnType::Text),
        ]);
        let sql = format!(
            "SELECT {} FROM job_output_report r JOIN jobsactive4 j ON j.pandaid = r.pandaid \
             WHERE j.jobstatus = 'holding' AND (r.lockedby IS NULL OR r.lockedtime < $1) \
             ORDER BY r.timestamp LIMIT $2",
            REPORT.select_list("r.")
        );
        let params = [Value::Time(Some(stale_lock)), Value::Int(Some(limit))];
        let rows = self.query(&sql, &params, &REPORT.types()).await?;
        rows.iter()
            .map(|row| {
                let r = REPORT.read(row);
                Ok(OutputReport {
                    panda_id: r.int("pandaid")?,
                    attempt_nr: r.int("attemptnr")?,
                    job_status: r.text("jobstatus")?,
                    data: r.opt_text("data")?,
                })
            })
            .collect()
    }

    /// Locks a report for `holder`; false when another Adder holds a fresh lock.
    pub async fn lock_output_report(
        &self,
        report: &OutputReport,
        holder: &str,
        stale_lock: NaiveDateTime,
    ) -> Result<bool> {
        let mut tx = self.begin(TxMode::Write).await?;
        let locked = tx
            .execute(
                "UPDATE job_output_report SET lockedby = $3, lockedtime = $4 WHERE pandaid = $1 \
                 AND attemptnr = $2 AND (lockedby IS NULL OR lockedtime < $5)",
                &[
                    Value::Int(Some(report.panda_id)),
                    Value::Int(Some(report.attempt_nr)),
                    text(holder),
                    Value::Time(Some(time::now())),
                    Value::Time(Some(stale_lock)),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(locked == 1)
    }

    pub async fn delete_output_report(&self, panda_id: i64, attempt_nr: i64) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        tx.execute(
            "DELETE FROM job_output_report WHERE pandaid = $1 AND attemptnr = $2",
            &[Value::Int(Some(panda_id)), Value::Int(Some(attempt_nr))],
        )
        .await?;
        tx.commit().await
    }

    /// A value of upstream's `config` table (gdpconfig), e.g. (`watcher`,
    /// `HEARTBEAT_TIMEOUT_production`); app `pandaserver`.
    pub async fn config_value(&self, component: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .texts(
                "SELECT value FROM config WHERE app = 'pandaserver' AND component = $1 AND key = $2",
                &[text(component), text(key)],
            )
            .await?
            .into_iter()
            .next())
    }

    /// Sets a `config` table value (operators and tests).
    pub async fn set_config_value(&self, component: &str, key: &str, value: &str) -> Result<()> {
        let params = [text(component), text(key), text(value)];
        let mut tx = self.begin(TxMode::Write).await?;
        let updated = tx
            .execute(
                "UPDATE config SET value = $3 WHERE app = 'pandaserver' AND component = $1 AND key = $2",
                &params,
            )
            .await?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO config (app, component, key, value, type, vo, descr) \
                 VALUES ('pandaserver', $1, $2, $3, 'float', 'any', 'set by panda-server')",
                &params,
            )
            .await?;
        }
        tx.commit().await
    }

    /// PandaIDs in `table` with one of `statuses` whose `column` (a timestamp column) is
    /// older than `before`, oldest first, at most `limit`.
    pub async fn jobs_older_than(
        &self,
        table: JobTable,
        statuses: &[&str],
        column: &str,
        before: NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let mut params = vec![Value::Time(Some(before)), Value::Int(Some(limit))];
        let list: Vec<String> = statuses
            .iter()
            .map(|s| {
                params.push(text(s));
                format!("${}", params.len())
            })
            .collect();
        let column = match column {
            "modificationtime" | "creationtime" | "statechangetime" => column,
            _ => "modificationtime",
        };
        let sql = format!(
            "SELECT pandaid FROM {} WHERE jobstatus IN ({}) AND {column} < $1 ORDER BY {column} LIMIT $2",
            table.name(),
            list.join(", ")
        );
        let rows = self.query(&sql, &params, &[ColumnType::BigInt]).await?;
        Ok(rows.into_iter().filter_map(|r| r[0].as_i64()).collect())
    }
}

impl Store {
    /// Moves (or deletes, when `archive` is false) up to `limit` jobs whose
    /// `modificationtime` in `jobsarchived4` is older than `before`, with their files,
    /// parameters and metadata, in one transaction. Returns how many jobs left.
    pub async fn retire_archived_jobs(
        &self,
        before: NaiveDateTime,
        archive: bool,
        limit: i64,
    ) -> Result<u64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let ids: Vec<Value> = tx
            .fetch(
                "SELECT pandaid FROM jobsarchived4 WHERE modificationtime < $1 ORDER BY modificationtime LIMIT $2",
                &[Value::Time(Some(before)), Value::Int(Some(limit))],
                &[ColumnType::BigInt],
            )
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let list = placeholders(1, ids.len());
        let pairs = [
            ("jobsarchived4", "jobsarchived"),
            ("filestable4", "filestable_arch"),
            ("jobparamstable", "jobparamstable_arch"),
            ("metatable", "metatable_arch"),
        ];
        for (live, archived) in pairs {
            if archive {
                let columns = self.table_columns(tx.as_mut(), live).await?.join(", ");
                tx.execute(
                    &format!(
                        "INSERT INTO {archived} ({columns}) SELECT {columns} FROM {live} WHERE pandaid IN ({list})"
                    ),
                    &ids,
                )
                .await?;
            }
            tx.execute(
                &format!("DELETE FROM {live} WHERE pandaid IN ({list})"),
                &ids,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Column names of a table in the current schema.
    async fn table_columns(
        &self,
        tx: &mut dyn crate::driver::Tx,
        table: &str,
    ) -> Result<Vec<String>> {
        let (sql, params) = match self.dialect() {
            crate::Dialect::Postgres => (
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name = $1 ORDER BY ordinal_position"
                    .to_string(),
                vec![text(table)],
            ),
            crate::Dialect::Sqlite => (format!("SELECT name FROM pragma_table_info('{table}')"), vec![]),
        };
        let rows = tx.fetch(&sql, &params, &[ColumnType::Text]).await?;
        Ok(rows.into_iter().map(|r| r[0].render()).collect())
    }
}
