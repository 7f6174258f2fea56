//! Filling a database with jobs quickly, for benchmarks at scale: archived jobs (finished
//! over the last day, one a second in turn, as a busy archive fills) and activated jobs waiting at a queue, written with set-based INSERTs rather
//! than one job at a time. Rows carry only what dispatch and the archive look at; every other
//! column takes its table default.

use panda_core::Value;

use crate::driver::{Dialect, TxMode};
use crate::error::Result;
use crate::jobs::next_ids;
use crate::Store;

/// Jobs written per transaction.
const CHUNK: u64 = 50_000;

impl Store {
    /// Adds `archived` finished jobs to `jobsarchived4` and `activated` jobs for `site` to
    /// `jobsactive4`.
    pub async fn preload_jobs(&self, site: &str, archived: u64, activated: u64) -> Result<()> {
        for (table, status, total) in [
            ("jobsarchived4", "finished", archived),
            ("jobsactive4", "activated", activated),
        ] {
            let mut done = 0;
            while done < total {
                let n = CHUNK.min(total - done);
                self.preload_chunk(table, status, site, n).await?;
                done += n;
            }
        }
        Ok(())
    }

    async fn preload_chunk(&self, table: &str, status: &str, site: &str, n: u64) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let first = next_ids(tx.as_mut(), self.dialect(), "jobsdefined4_pandaid_seq", 1)
            .await?
            .pop()
            .unwrap_or(1);
        // Reserve the whole range: on PostgreSQL move the sequence past it, on SQLite the
        // counter row.
        let reserve = match self.dialect() {
            Dialect::Postgres => "SELECT CAST(setval('jobsdefined4_pandaid_seq', $1 + $2) AS TEXT)",
            Dialect::Sqlite => {
                "UPDATE panda_sequences SET last_value = $1 + $2 \
                 WHERE name = 'jobsdefined4_pandaid_seq' RETURNING CAST(last_value AS TEXT)"
            }
        };
        tx.fetch(
            reserve,
            &[Value::Int(Some(first)), Value::Int(Some(n))],
            &[panda_core::ColumnType::Text],
        )
        .await?;
        let (series, day_ago) = match self.dialect() {
            Dialect::Postgres => (
                "SELECT g AS n FROM generate_series(0, $4 - 1) AS g",
                "CAST(now() AT TIME ZONE 'UTC' - interval '1 day' \
                 + (seq.n % 86400) * interval '1 second' AS TIMESTAMP)",
            ),
            Dialect::Sqlite => (
                "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < $4) \
                 SELECT n FROM s",
                "datetime('now', '-1 day', '+' || (seq.n % 86400) || ' seconds')",
            ),
        };
        let sql = format!(
            "INSERT INTO {table} (pandaid, jobdefinitionid, jobname, jobstatus, prodsourcelabel, \
             computingsite, transformation, assignedpriority, currentpriority, creationtime, \
             modificationtime, statechangetime) \
             SELECT $1 + seq.n, 1, 'preload.' || ($1 + seq.n), $2, 'managed', $3, \
             'http://localhost/jobO.runpayload.tar.gz', 1000, 1000, {day_ago}, {day_ago}, \
             {day_ago} FROM ({series}) AS seq"
        );
        tx.execute(
            &sql,
            &[
                Value::Int(Some(first)),
                Value::Text(Some(status.into())),
                Value::Text(Some(site.into())),
                Value::Int(Some(n)),
            ],
        )
        .await?;
        tx.commit().await
    }
}
