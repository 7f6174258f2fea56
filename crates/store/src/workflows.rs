//! JEDI's `workflows`: workflow requests as users submit them (pchain, `workflow/*`). This
//! server records them; no workflow engine here turns them into tasks.

use panda_core::{time, ColumnType, Value};

use crate::driver::{Dialect, TxMode};
use crate::error::{Result, StoreError};
use crate::jobs::next_ids;
use crate::Store;

/// A stored workflow request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowRow {
    pub workflow_id: i64,
    pub status: String,
    pub prodsourcelabel: Option<String>,
    pub username: Option<String>,
    pub raw_request_json: Option<String>,
}

impl Store {
    /// Records a workflow request as `registered`; its new `workflow_id`.
    pub async fn insert_workflow(
        &self,
        prodsourcelabel: &str,
        username: &str,
        raw_request_json: &str,
    ) -> Result<i64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let id = next_ids(tx.as_mut(), self.dialect(), "workflow_id_seq", 1)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("workflow_id_seq gave nothing".into()))?;
        // Upstream's column is JSONB; ours is text. On PostgreSQL the cast serves both (a
        // JSONB value is assigned to a text column as its text).
        let request = match self.dialect() {
            Dialect::Postgres => "CAST($5 AS JSONB)",
            Dialect::Sqlite => "$5",
        };
        tx.execute(
            &format!(
                "INSERT INTO workflows (workflow_id, status, prodsourcelabel, username, \
                 creation_time, raw_request_json) VALUES ($1, 'registered', $2, $3, $4, {request})"
            ),
            &[
                Value::Int(Some(id)),
                Value::Text(Some(prodsourcelabel.into())),
                Value::Text(Some(username.into())),
                Value::Time(Some(time::now())),
                Value::Text(Some(raw_request_json.into())),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A workflow request by its ID.
    pub async fn workflow(&self, workflow_id: i64) -> Result<Option<WorkflowRow>> {
        let rows = self
            .query(
                "SELECT workflow_id, status, prodsourcelabel, username, \
                 CAST(raw_request_json AS TEXT) FROM workflows WHERE workflow_id = $1",
                &[Value::Int(Some(workflow_id))],
                &[
                    ColumnType::BigInt,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::Text,
                ],
            )
            .await?;
        Ok(rows.first().map(|r| WorkflowRow {
            workflow_id: r[0].as_i64().unwrap_or(workflow_id),
            status: r[1].as_str().unwrap_or_default().to_string(),
            prodsourcelabel: r[2].as_str().map(str::to_string),
            username: r[3].as_str().map(str::to_string),
            raw_request_json: r[4].as_str().map(str::to_string),
        }))
    }
}
