//! PanDA queues in `schedconfig_json` (panda_queue, data, last_update), as upstream stores the
//! CRIC dump. The JSON is stored and returned as text; callers parse what they need.

use panda_core::{time, ColumnType, Value};

use crate::driver::{Dialect, TxMode};
use crate::error::Result;
use crate::Store;

impl Store {
    /// Inserts or replaces queues, given as (name, JSON text), in one transaction.
    pub async fn upsert_queues(&self, queues: &[(String, String)]) -> Result<()> {
        let json_param = match self.dialect() {
            Dialect::Postgres => "CAST($2 AS JSON)",
            Dialect::Sqlite => "$2",
        };
        let update = format!(
            "UPDATE schedconfig_json SET data = {json_param}, last_update = $3 WHERE panda_queue = $1"
        );
        let insert = format!(
            "INSERT INTO schedconfig_json (panda_queue, data, last_update) VALUES ($1, {json_param}, $3)"
        );
        let now = Value::Time(Some(time::now()));
        let mut tx = self.begin(TxMode::Write).await?;
        for (name, json) in queues {
            let params = [
                Value::Text(Some(name.clone())),
                Value::Text(Some(json.clone())),
                now.clone(),
            ];
            if tx.execute(&update, &params).await? == 0 {
                tx.execute(&insert, &params).await?;
            }
        }
        tx.commit().await
    }

    /// One queue's JSON text.
    pub async fn queue_json(&self, name: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT {} FROM schedconfig_json WHERE panda_queue = $1",
            self.dialect().read_json("data")
        );
        Ok(self
            .texts(&sql, &[Value::Text(Some(name.to_string()))])
            .await?
            .into_iter()
            .next())
    }

    /// All queues as (name, JSON text), ordered by name.
    pub async fn all_queues(&self) -> Result<Vec<(String, String)>> {
        let sql = format!(
            "SELECT panda_queue, {} FROM schedconfig_json ORDER BY panda_queue",
            self.dialect().read_json("data")
        );
        let rows = self
            .query(&sql, &[], &[ColumnType::Text, ColumnType::Text])
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match (r[0].as_str(), r[1].as_str()) {
                (Some(n), Some(d)) => Some((n.to_string(), d.to_string())),
                _ => None,
            })
            .collect())
    }

    /// Number of `activated` jobs per queue, for brokerage.
    pub async fn activated_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = self
            .query(
                "SELECT computingsite, COUNT(*) FROM jobsactive4 WHERE jobstatus = 'activated' \
                 GROUP BY computingsite",
                &[],
                &[ColumnType::Text, ColumnType::BigInt],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_i64()?)))
            .collect())
    }
}
