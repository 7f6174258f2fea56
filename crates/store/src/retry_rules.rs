//! The retry module's rules (`retryerrors` joined with `retryactions`).

use panda_core::{ColumnType, Value};

use crate::driver::TxMode;
use crate::error::Result;
use crate::row::Columns;
use crate::Store;

/// One active rule: when `source` (an error-code attribute such as `pilotErrorCode`) equals
/// `code` and the matching diagnostic contains `diag` (if set), apply `action`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryRule {
    pub source: String,
    pub code: i64,
    pub diag: Option<String>,
    pub action: String,
    pub parameters: Option<String>,
}

impl Store {
    pub async fn retry_rules(&self) -> Result<Vec<RetryRule>> {
        static RULE: Columns = Columns(&[
            ("errorsource", ColumnType::Text),
            ("errorcode", ColumnType::BigInt),
            ("errordiag", ColumnType::Text),
            ("retry_action", ColumnType::Text),
            ("parameters", ColumnType::Text),
        ]);
        let rows = self
            .query(
                "SELECT e.errorsource, e.errorcode, e.errordiag, a.retry_action, e.parameters \
                 FROM retryerrors e JOIN retryactions a ON a.retryaction_id = e.retryaction \
                 WHERE e.active = 'Y' AND a.active = 'Y' ORDER BY e.retryerror_id",
                &[],
                &RULE.types(),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let r = RULE.read(row);
                Ok(RetryRule {
                    source: r.text("errorsource")?,
                    code: r.int("errorcode")?,
                    diag: r.opt_text("errordiag")?,
                    action: r.text("retry_action")?,
                    parameters: r.opt_text("parameters")?,
                })
            })
            .collect()
    }

    /// Adds a rule (operators and tests); returns its id.
    pub async fn add_retry_rule(&self, rule: &RetryRule) -> Result<i64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let action_id = next_id(tx.as_mut(), "retryactions", "retryaction_id").await?;
        tx.execute(
            "INSERT INTO retryactions (retryaction_id, retry_action, active) VALUES ($1, $2, 'Y')",
            &[
                Value::Int(Some(action_id)),
                Value::Text(Some(rule.action.clone())),
            ],
        )
        .await?;
        let error_id = next_id(tx.as_mut(), "retryerrors", "retryerror_id").await?;
        tx.execute(
            "INSERT INTO retryerrors (retryerror_id, errorsource, errorcode, active, retryaction, \
             errordiag, parameters) VALUES ($1, $2, $3, 'Y', $4, $5, $6)",
            &[
                Value::Int(Some(error_id)),
                Value::Text(Some(rule.source.clone())),
                Value::Int(Some(rule.code)),
                Value::Int(Some(action_id)),
                Value::Text(rule.diag.clone()),
                Value::Text(rule.parameters.clone()),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(error_id)
    }
}

/// The next free id of a rule table (they have no sequence of their own here).
async fn next_id(tx: &mut dyn crate::driver::Tx, table: &str, column: &str) -> Result<i64> {
    let sql = format!("SELECT COALESCE(MAX({column}), 0) + 1 FROM {table}");
    let rows = tx.fetch(&sql, &[], &[ColumnType::BigInt]).await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()).unwrap_or(1))
}
