//! Small reads and writes behind the pilot's auxiliary calls: job states by ID, resource
//! types, worker pilot status.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use panda_core::{time, ColumnType, JobTable, Value};

use crate::bind::placeholders;
use crate::driver::TxMode;
use crate::error::Result;
use crate::Store;

/// A job's status at a glance.
#[derive(Clone, Debug, PartialEq)]
pub struct JobBrief {
    pub status: String,
    pub attempt_nr: i64,
    pub command: Option<String>,
    pub table: JobTable,
    pub modification_time: Option<NaiveDateTime>,
}

/// A row of `resource_types`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    pub name: String,
    pub min_core: Option<i64>,
    pub max_core: Option<i64>,
    pub min_ram_per_core: Option<i64>,
    pub max_ram_per_core: Option<i64>,
}

impl Store {
    /// The first column of a query's rows, as text (NULLs left out).
    pub(crate) async fn texts(&self, sql: &str, params: &[Value]) -> Result<Vec<String>> {
        let rows = self.query(sql, params, &[ColumnType::Text]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.first().and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// Status, attempt and command of the given jobs, looked up in `tables` in order (the
    /// first table holding a job wins).
    pub async fn job_briefs(
        &self,
        ids: &[i64],
        tables: &[JobTable],
    ) -> Result<HashMap<i64, JobBrief>> {
        let mut found = HashMap::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let marks = placeholders(1, ids.len());
        let params: Vec<Value> = ids.iter().map(|i| Value::Int(Some(*i))).collect();
        let types = [
            ColumnType::BigInt,
            ColumnType::Text,
            ColumnType::BigInt,
            ColumnType::Text,
            ColumnType::Timestamp,
        ];
        let mut tx = self.begin(TxMode::Read).await?;
        for table in tables {
            let sql = format!(
                "SELECT pandaid, jobstatus, attemptnr, commandtopilot, modificationtime FROM {} \
                 WHERE pandaid IN ({})",
                table.name(),
                marks
            );
            for row in tx.fetch(&sql, &params, &types).await? {
                let Some(id) = row[0].as_i64() else { continue };
                found.entry(id).or_insert_with(|| JobBrief {
                    status: row[1].render(),
                    attempt_nr: row[2].as_i64().unwrap_or(0),
                    command: row[3].as_str().map(str::to_string),
                    table: *table,
                    modification_time: row[4].as_time(),
                });
            }
        }
        tx.commit().await?;
        Ok(found)
    }

    /// Number of jobs per (table, status), for monitoring.
    pub async fn job_counts(&self) -> Result<Vec<(JobTable, String, i64)>> {
        let mut counts = Vec::new();
        let mut tx = self.begin(TxMode::Read).await?;
        for table in JobTable::ALL {
            let sql = format!(
                "SELECT jobstatus, COUNT(*) FROM {} GROUP BY jobstatus",
                table.name()
            );
            for row in tx
                .fetch(&sql, &[], &[ColumnType::Text, ColumnType::BigInt])
                .await?
            {
                counts.push((table, row[0].render(), row[1].as_i64().unwrap_or(0)));
            }
        }
        tx.commit().await?;
        Ok(counts)
    }

    pub async fn resource_types(&self) -> Result<Vec<ResourceType>> {
        let rows = self
            .query(
                "SELECT resource_name, mincore, maxcore, minrampercore, maxrampercore \
                 FROM resource_types",
                &[],
                &[
                    ColumnType::Text,
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                ],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| ResourceType {
                name: r[0].render(),
                min_core: r[1].as_i64(),
                max_core: r[2].as_i64(),
                min_ram_per_core: r[3].as_i64(),
                max_ram_per_core: r[4].as_i64(),
            })
            .collect())
    }

    /// Records a pilot's start or end on its Harvester worker; returns the rows changed (0
    /// when the worker is unknown, which upstream also accepts).
    pub async fn set_worker_pilot_status(
        &self,
        harvester_id: &str,
        worker_id: i64,
        status: &str,
        node_id: Option<&str>,
    ) -> Result<u64> {
        let time_column = if status == "started" {
            "pilotstarttime"
        } else {
            "pilotendtime"
        };
        let sql = format!(
            "UPDATE harvester_workers SET pilotstatus = $1, nodeid = $2, {time_column} = $3 \
             WHERE workerid = $4 AND harvesterid = $5"
        );
        let mut tx = self.begin(TxMode::Write).await?;
        let changed = tx
            .execute(
                &sql,
                &[
                    Value::Text(Some(status.to_string())),
                    Value::Text(node_id.map(str::to_string)),
                    Value::Time(Some(time::now())),
                    Value::Int(Some(worker_id)),
                    Value::Text(Some(harvester_id.to_string())),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(changed)
    }
}
