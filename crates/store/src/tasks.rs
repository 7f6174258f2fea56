//! Tasks: rows of `jedi_tasks` with their parameters in `jedi_taskparams`, every status
//! change appended to `tasks_statuslog`, IDs from `jedi_tasks_id_seq`.

use chrono::NaiveDateTime;
use panda_core::task::TASK_ATTRIBUTES;
use panda_core::{time, AttrSet, ColumnType, JobTable, TaskAttr, TaskSpec, Value};

use crate::bind::{placeholders, record_values};
use crate::driver::{Dialect, Tx, TxMode};
use crate::error::{Result, StoreError};
use crate::jobs::{next_ids, Decision};
use crate::Store;

const TASK_ID_SEQUENCE: &str = "jedi_tasks_id_seq";

/// A condition on one task attribute, for [`Store::task_ids`].
#[derive(Clone, Debug, PartialEq)]
pub enum TaskCriterion {
    Equals(TaskAttr, Value),
    IsNull(TaskAttr),
    IsNotNull(TaskAttr),
}

pub(crate) fn select_list(dialect: Dialect) -> String {
    TASK_ATTRIBUTES
        .iter()
        .map(|a| dialect.read_column(&a.column(), a.column_type))
        .collect::<Vec<_>>()
        .join(", ")
}

fn col(attr: TaskAttr) -> String {
    TASK_ATTRIBUTES[attr.index()].column()
}

pub(crate) fn task_types() -> Vec<ColumnType> {
    TASK_ATTRIBUTES.iter().map(|a| a.column_type).collect()
}

impl Store {
    /// Stores a new task and its parameters; returns the task with its new `jediTaskID` and
    /// its creation, modification and state-change times.
    pub async fn insert_task(&self, mut task: TaskSpec, parameters: &str) -> Result<TaskSpec> {
        let dialect = self.dialect();
        let mut tx = self.begin(TxMode::Write).await?;
        let id = next_ids(tx.as_mut(), dialect, TASK_ID_SEQUENCE, 1)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("the task ID sequence returned nothing".into()))?;
        let now = Value::Time(Some(time::now()));
        task.set(TaskAttr::jediTaskID, Value::Int(Some(id)));
        for attr in [
            TaskAttr::creationDate,
            TaskAttr::modificationTime,
            TaskAttr::stateChangeTime,
        ] {
            task.set(attr, now.clone());
        }
        let columns: Vec<String> = TASK_ATTRIBUTES.iter().map(|a| a.column()).collect();
        tx.execute(
            &format!(
                "INSERT INTO jedi_tasks ({}, realmodificationtime) VALUES ({}, ${})",
                columns.join(", "),
                placeholders(1, columns.len()),
                columns.len() + 1
            ),
            &[record_values(&task), vec![now]].concat(),
        )
        .await?;
        tx.execute(
            "INSERT INTO jedi_taskparams (jeditaskid, taskparams) VALUES ($1, $2)",
            &[Value::Int(Some(id)), Value::Text(Some(parameters.into()))],
        )
        .await?;
        self.record_task_status_in(tx.as_mut(), &task).await?;
        tx.commit().await?;
        Ok(task)
    }

    async fn record_task_status_in(&self, tx: &mut dyn Tx, task: &TaskSpec) -> Result<()> {
        let reason = task
            .get_str(TaskAttr::errorDialog)
            .map(|r| r.chars().take(255).collect());
        tx.execute(
            "INSERT INTO tasks_statuslog (jeditaskid, modificationtime, status, modificationhost, \
             attemptnr, reason) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                task.get(TaskAttr::jediTaskID).clone(),
                Value::Time(Some(time::now())),
                task.get(TaskAttr::status).clone(),
                Value::Text(Some(self.options().host_name.clone())),
                task.get(TaskAttr::attemptNr).clone(),
                Value::Text(reason),
            ],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn find_task_in(
        &self,
        tx: &mut dyn Tx,
        task_id: i64,
        for_update: bool,
    ) -> Result<Option<TaskSpec>> {
        let lock = match for_update {
            true => self.dialect().row_lock(),
            false => "",
        };
        let sql = format!(
            "SELECT {} FROM jedi_tasks WHERE jeditaskid = $1{lock}",
            select_list(self.dialect())
        );
        let mut rows = tx
            .fetch(&sql, &[Value::Int(Some(task_id))], &task_types())
            .await?;
        rows.pop()
            .map(|row| {
                TaskSpec::from_values(row)
                    .ok_or_else(|| StoreError::Corrupt("task row has the wrong width".into()))
            })
            .transpose()
    }

    /// A task, if it exists.
    pub async fn get_task(&self, task_id: i64) -> Result<Option<TaskSpec>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let task = self.find_task_in(tx.as_mut(), task_id, false).await?;
        tx.commit().await?;
        Ok(task)
    }

    /// The task's parameters as stored (JSON text).
    pub async fn task_parameters(&self, task_id: i64) -> Result<Option<String>> {
        Ok(self
            .texts(
                "SELECT taskparams FROM jedi_taskparams WHERE jeditaskid = $1",
                &[Value::Int(Some(task_id))],
            )
            .await?
            .into_iter()
            .next())
    }

    /// Changes a task under a row lock. A written change stamps `modificationTime` (and
    /// `stateChangeTime` with the status) and logs a status change in `tasks_statuslog`.
    pub async fn change_task<F, R>(&self, task_id: i64, change: F) -> Result<Option<(TaskSpec, R)>>
    where
        F: FnOnce(&mut TaskSpec) -> Decision<R> + Send,
        R: Send,
    {
        let mut tx = self.begin(TxMode::Write).await?;
        let Some(mut task) = self.find_task_in(tx.as_mut(), task_id, true).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let old_status = task.get(TaskAttr::status).clone();
        let outcome = match change(&mut task) {
            Decision::Keep(outcome) => {
                tx.commit().await?;
                return Ok(Some((task, outcome)));
            }
            Decision::Write(outcome) => outcome,
        };
        self.write_task_in(tx.as_mut(), &mut task, &old_status)
            .await?;
        tx.commit().await?;
        Ok(Some((task, outcome)))
    }

    /// Writes a changed task (read in this transaction with `old_status`): stamps
    /// `modificationTime` (and `stateChangeTime` with a new status) and logs a status change.
    pub(crate) async fn write_task_in(
        &self,
        tx: &mut dyn Tx,
        task: &mut TaskSpec,
        old_status: &Value,
    ) -> Result<()> {
        let now = Value::Time(Some(time::now()));
        task.set(TaskAttr::modificationTime, now.clone());
        let status_changed = task.get(TaskAttr::status) != old_status;
        if status_changed {
            task.set(TaskAttr::stateChangeTime, now.clone());
        }
        let assignments: Vec<String> = TASK_ATTRIBUTES
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, a)| format!("{} = ${}", a.column(), i + 1))
            .collect();
        let mut params = record_values(task);
        params.push(now);
        tx.execute(
            &format!(
                "UPDATE jedi_tasks SET {}, realmodificationtime = ${} WHERE jeditaskid = $1",
                assignments.join(", "),
                params.len()
            ),
            &params,
        )
        .await?;
        if status_changed {
            self.record_task_status_in(tx, task).await?;
        }
        Ok(())
    }

    /// IDs of tasks meeting every criterion, modified at or after `since`, lowest first, at
    /// most `limit`.
    pub async fn task_ids(
        &self,
        criteria: &[TaskCriterion],
        since: NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let mut clauses = vec!["modificationtime >= $1".to_string()];
        let mut params = vec![Value::Time(Some(since))];
        for criterion in criteria {
            match criterion {
                TaskCriterion::Equals(attr, value) => {
                    params.push(value.clone());
                    clauses.push(format!("{} = ${}", col(*attr), params.len()));
                }
                TaskCriterion::IsNull(attr) => clauses.push(format!("{} IS NULL", col(*attr))),
                TaskCriterion::IsNotNull(attr) => {
                    clauses.push(format!("{} IS NOT NULL", col(*attr)))
                }
            }
        }
        params.push(Value::Int(Some(limit)));
        let sql = format!(
            "SELECT jeditaskid FROM jedi_tasks WHERE {} ORDER BY jeditaskid DESC LIMIT ${}",
            clauses.join(" AND "),
            params.len()
        );
        let rows = self.query(&sql, &params, &[ColumnType::BigInt]).await?;
        let mut ids: Vec<i64> = rows
            .into_iter()
            .filter_map(|r| r.first().and_then(Value::as_i64))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The newest task of a user with a given name, vo and label, for duplicate checks.
    pub async fn task_by_name(
        &self,
        vo: &Value,
        label: &Value,
        user: &str,
        name: &str,
    ) -> Result<Option<TaskSpec>> {
        let sql = format!(
            "SELECT {} FROM jedi_tasks WHERE taskname = $1 AND username = $2 \
             AND vo IS NOT DISTINCT FROM $3 AND prodsourcelabel IS NOT DISTINCT FROM $4 \
             ORDER BY jeditaskid DESC LIMIT 1",
            select_list(self.dialect())
        );
        let sql = match self.dialect() {
            Dialect::Postgres => sql,
            Dialect::Sqlite => sql.replace("IS NOT DISTINCT FROM", "IS"),
        };
        let mut rows = self
            .query(
                &sql,
                &[
                    Value::Text(Some(name.into())),
                    Value::Text(Some(user.into())),
                    vo.clone(),
                    label.clone(),
                ],
                &task_types(),
            )
            .await?;
        Ok(rows.pop().and_then(TaskSpec::from_values))
    }

    /// The PandaIDs of a task's jobs in every job table, lowest first.
    pub async fn task_job_ids(&self, task_id: i64) -> Result<Vec<i64>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let mut ids = Vec::new();
        for table in JobTable::ALL {
            let rows = tx
                .fetch(
                    &format!("SELECT pandaid FROM {} WHERE jeditaskid = $1", table.name()),
                    &[Value::Int(Some(task_id))],
                    &[ColumnType::BigInt],
                )
                .await?;
            ids.extend(
                rows.into_iter()
                    .filter_map(|r| r.first().and_then(Value::as_i64)),
            );
        }
        tx.commit().await?;
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// How many of a task's jobs are in each status.
    pub async fn task_job_counts(&self, task_id: i64) -> Result<Vec<(String, i64)>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let counts = task_job_counts_in(tx.as_mut(), task_id).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// The statuses a task went through, oldest first (from `tasks_statuslog`).
    pub async fn task_status_log(&self, task_id: i64) -> Result<Vec<String>> {
        self.texts(
            "SELECT status FROM tasks_statuslog WHERE jeditaskid = $1 ORDER BY modificationtime",
            &[Value::Int(Some(task_id))],
        )
        .await
    }
}

/// How many of a task's jobs are in each status, in `tx`.
pub(crate) async fn task_job_counts_in(
    tx: &mut dyn Tx,
    task_id: i64,
) -> Result<Vec<(String, i64)>> {
    // One statement over the three tables: a page that shows the counts waits once.
    let per_table: Vec<String> = JobTable::ALL
        .iter()
        .map(|t| format!("SELECT jobstatus FROM {} WHERE jeditaskid = $1", t.name()))
        .collect();
    let sql = format!(
        "SELECT jobstatus, COUNT(*) FROM ({}) AS jobs GROUP BY jobstatus ORDER BY jobstatus",
        per_table.join(" UNION ALL ")
    );
    let rows = tx
        .fetch(
            &sql,
            &[Value::Int(Some(task_id))],
            &[ColumnType::Text, ColumnType::BigInt],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let status = row.first().and_then(Value::as_str)?.to_string();
            Some((status, row.get(1).and_then(Value::as_i64)?))
        })
        .collect())
}
