//! Small reads and writes behind the pilot's auxiliary calls: job states by ID, resource
//! types, worker pilot status.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use panda_core::{time, ColumnType, JobTable, Value};

use crate::bind::placeholders;
use crate::driver::TxMode;
use crate::error::Result;
use crate::row::Columns;
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

/// A row of `global_shares`: a node of upstream's tree of global shares and what a job must
/// match to belong to it (regular expressions; none means anything).
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalShare {
    pub name: String,
    pub parent: Option<String>,
    pub prodsourcelabel: Option<String>,
    pub workinggroup: Option<String>,
    pub processingtype: Option<String>,
    pub rtype: Option<String>,
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
        static BRIEF: Columns = Columns(&[
            ("pandaid", ColumnType::BigInt),
            ("jobstatus", ColumnType::Text),
            ("attemptnr", ColumnType::BigInt),
            ("commandtopilot", ColumnType::Text),
            ("modificationtime", ColumnType::Timestamp),
        ]);
        let marks = placeholders(1, ids.len());
        let params: Vec<Value> = ids.iter().map(|i| Value::Int(Some(*i))).collect();
        let types = BRIEF.types();
        let mut tx = self.begin(TxMode::Read).await?;
        for table in tables {
            let sql = format!(
                "SELECT {} FROM {} WHERE pandaid IN ({marks})",
                BRIEF.select_list(""),
                table.name(),
            );
            for row in tx.fetch(&sql, &params, &types).await? {
                let r = BRIEF.read(&row);
                let id = r.int("pandaid")?;
                if found.contains_key(&id) {
                    continue;
                }
                let brief = JobBrief {
                    status: r.text("jobstatus")?,
                    attempt_nr: r.opt_int("attemptnr")?.unwrap_or(0),
                    command: r.opt_text("commandtopilot")?,
                    table: *table,
                    modification_time: r.opt_time("modificationtime")?,
                };
                found.insert(id, brief);
            }
        }
        tx.commit().await?;
        Ok(found)
    }

    /// Number of jobs per (table, status), for monitoring.
    pub async fn job_counts(&self) -> Result<Vec<(JobTable, String, i64)>> {
        static COUNT: Columns =
            Columns(&[("jobstatus", ColumnType::Text), ("n", ColumnType::BigInt)]);
        let mut counts = Vec::new();
        let mut tx = self.begin(TxMode::Read).await?;
        for table in JobTable::ALL {
            let sql = format!(
                "SELECT jobstatus, COUNT(*) AS n FROM {} GROUP BY jobstatus",
                table.name()
            );
            for row in tx.fetch(&sql, &[], &COUNT.types()).await? {
                let r = COUNT.read(&row);
                counts.push((table, r.text("jobstatus")?, r.int("n")?));
            }
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// The rows of `global_shares`, in the table's order, as upstream reads them.
    pub async fn global_shares(&self) -> Result<Vec<GlobalShare>> {
        static SHARE: Columns = Columns(&[
            ("name", ColumnType::Text),
            ("parent", ColumnType::Text),
            ("prodsourcelabel", ColumnType::Text),
            ("workinggroup", ColumnType::Text),
            ("processingtype", ColumnType::Text),
            ("rtype", ColumnType::Text),
        ]);
        let sql = format!("SELECT {} FROM global_shares", SHARE.select_list(""));
        let rows = self.query(&sql, &[], &SHARE.types()).await?;
        rows.iter()
            .map(|row| {
                let r = SHARE.read(row);
                Ok(GlobalShare {
                    name: r.text("name")?,
                    parent: r.opt_text("parent")?,
                    prodsourcelabel: r.opt_text("prodsourcelabel")?,
                    workinggroup: r.opt_text("workinggroup")?,
                    processingtype: r.opt_text("processingtype")?,
                    rtype: r.opt_text("rtype")?,
                })
            })
            .collect()
    }

    pub async fn resource_types(&self) -> Result<Vec<ResourceType>> {
        static TYPE: Columns = Columns(&[
            ("resource_name", ColumnType::Text),
            ("mincore", ColumnType::BigInt),
            ("maxcore", ColumnType::BigInt),
            ("minrampercore", ColumnType::BigInt),
            ("maxrampercore", ColumnType::BigInt),
        ]);
        let sql = format!("SELECT {} FROM resource_types", TYPE.select_list(""));
        let rows = self.query(&sql, &[], &TYPE.types()).await?;
        rows.iter()
            .map(|row| {
                let r = TYPE.read(row);
                Ok(ResourceType {
                    name: r.text("resource_name")?,
                    min_core: r.opt_int("mincore")?,
                    max_core: r.opt_int("maxcore")?,
                    min_ram_per_core: r.opt_int("minrampercore")?,
                    max_ram_per_core: r.opt_int("maxrampercore")?,
                })
            })
            .collect()
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
