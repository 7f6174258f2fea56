//! Users (upstream's `users` table): bans (`status`) and the credential permissions
//! (`gridpref` letters, as upstream).

use panda_core::{time, Value};

use crate::driver::{Dialect, Tx, TxMode};
use crate::error::{Result, StoreError};
use crate::jobs::next_ids;
use crate::Store;

impl Store {
    /// Names of banned users (`users.status = 'disabled'`).
    pub async fn banned_users(&self) -> Result<Vec<String>> {
        self.texts("SELECT name FROM users WHERE status = 'disabled'", &[])
            .await
    }

    /// Sets a user's status (`disabled` bans), creating the user row if needed.
    pub async fn set_user_status(&self, name: &str, status: Option<&str>) -> Result<()> {
        self.set_user_column(name, UserColumn::Status, status).await
    }

    /// The `gridpref` letters of a user who is not banned (several rows of one name: all
    /// their letters), `None` when there is no such user: what a credential request is
    /// allowed by.
    pub async fn user_permissions(&self, name: &str) -> Result<Option<String>> {
        self.gridpref(name, " AND (status IS NULL OR status <> 'disabled')")
            .await
    }

    /// The stored `gridpref` letters of a user, banned or not (what an operator changes).
    pub async fn user_gridpref(&self, name: &str) -> Result<Option<String>> {
        self.gridpref(name, "").await
    }

    async fn gridpref(&self, name: &str, condition: &str) -> Result<Option<String>> {
        let rows = self
            .query(
                &format!("SELECT gridpref FROM users WHERE name = $1{condition}"),
                &[Value::Text(Some(name.into()))],
                &[panda_core::ColumnType::Text],
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .filter_map(|r| r.first().and_then(Value::as_str))
                .collect(),
        ))
    }

    /// Sets a user's `gridpref` letters, creating the user row if needed.
    pub async fn set_user_permissions(&self, name: &str, letters: Option<&str>) -> Result<()> {
        self.set_user_column(name, UserColumn::GridPref, letters)
            .await
    }

    async fn set_user_column(
        &self,
        name: &str,
        column: UserColumn,
        value: Option<&str>,
    ) -> Result<()> {
        let column = match column {
            UserColumn::Status => "status",
            UserColumn::GridPref => "gridpref",
        };
        let mut tx = self.begin(TxMode::Write).await?;
        let params = [
            Value::Text(Some(name.into())),
            Value::Text(value.map(str::to_string)),
        ];
        let updated = tx
            .execute(
                &format!("UPDATE users SET {column} = $2 WHERE name = $1"),
                &params,
            )
            .await?;
        if updated == 0 {
            insert_user_in(tx.as_mut(), self.dialect(), name, column, params[1].clone()).await?;
        }
        tx.commit().await
    }
}

/// What a submission of analysis jobs asks of the submitter's job counter (`users.jobid`),
/// from the `jobsetID` its first job carries (upstream's `getUserParameter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobsetRequest {
    /// `-1`: a new jobset, numbered from the counter.
    New,
    /// `NULL` or `0`: no jobset.
    NoJobset,
    /// The jobset the client chose.
    Given(i64),
}

/// The IDs a submission of analysis jobs gets: each job's `jobDefinitionID` and their
/// `jobsetID` (`None` when no jobset was asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserJobIds {
    pub job_definition_id: i64,
    pub jobset_id: Option<i64>,
}

impl UserJobIds {
    /// Upstream's rule: the client's IDs stand unless the counter has passed them; then the
    /// job (and a new jobset) are numbered after the counter. The counter becomes the job's ID.
    pub fn after_counter(counter: i64, job_id: i64, jobset: JobsetRequest) -> UserJobIds {
        let (mut job, mut jobset_id) = match jobset {
            JobsetRequest::New => (job_id.saturating_add(1), Some(job_id)),
            JobsetRequest::NoJobset => (job_id, None),
            JobsetRequest::Given(id) => (job_id, Some(id)),
        };
        let new_jobset = jobset == JobsetRequest::New;
        if counter >= job || (new_jobset && jobset_id.is_some_and(|s| counter >= s)) {
            if new_jobset {
                jobset_id = Some(counter.saturating_add(1));
                job = counter.saturating_add(2);
            } else {
                job = counter.saturating_add(1);
            }
        }
        UserJobIds {
            job_definition_id: job,
            jobset_id,
        }
    }
}

impl Store {
    /// Takes the IDs of a submission of analysis jobs from `user`'s counter (`users.jobid`,
    /// upstream's `getUserParameter`), under the user row's lock, and moves the counter to the
    /// job's ID. A user without a row gets one, its counter at 1, as upstream.
    pub async fn take_user_job_ids(
        &self,
        user: &str,
        job_id: i64,
        jobset: JobsetRequest,
    ) -> Result<UserJobIds> {
        let name = Value::Text(Some(user.into()));
        let mut tx = self.begin(TxMode::Write).await?;
        let rows = tx
            .fetch(
                &format!(
                    "SELECT jobid FROM users WHERE name = $1{}",
                    self.dialect().row_lock()
                ),
                std::slice::from_ref(&name),
                &[panda_core::ColumnType::BigInt],
            )
            .await?;
        let counter = match rows.first() {
            Some(row) => row.first().and_then(Value::as_i64).unwrap_or(0),
            None => {
                insert_user_in(
                    tx.as_mut(),
                    self.dialect(),
                    user,
                    "jobid",
                    Value::Int(Some(1)),
                )
                .await?;
                1
            }
        };
        let ids = UserJobIds::after_counter(counter, job_id, jobset);
        tx.execute(
            "UPDATE users SET jobid = $2 WHERE name = $1",
            &[name, Value::Int(Some(ids.job_definition_id))],
        )
        .await?;
        tx.commit().await?;
        Ok(ids)
    }
}

/// Makes the row of a user upstream's way (an ID from `users_id_seq`, the dates now) with
/// one more column set: what every writer of a user not yet known does.
pub(crate) async fn insert_user_in(
    tx: &mut dyn Tx,
    dialect: Dialect,
    name: &str,
    column: &str,
    value: Value,
) -> Result<()> {
    let id = next_ids(tx, dialect, "users_id_seq", 1)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("users_id_seq gave nothing".into()))?;
    let now = Value::Time(Some(time::now()));
    tx.execute(
        &format!(
            "INSERT INTO users (id, name, {column}, lastmod, firstjob, latestjob, cachetime) \
             VALUES ($1, $2, $3, $4, $4, $4, $4)"
        ),
        &[
            Value::Int(Some(id)),
            Value::Text(Some(name.into())),
            value,
            now,
        ],
    )
    .await?;
    Ok(())
}

/// The user columns an operator sets.
#[derive(Clone, Copy)]
enum UserColumn {
    Status,
    GridPref,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_numbers_ids_it_has_passed() {
        let ids = |counter, job, jobset| UserJobIds::after_counter(counter, job, jobset);
        // A new user (counter 1) asking for a new jobset from 3: jobset 3, job 4.
        assert_eq!(
            ids(1, 3, JobsetRequest::New),
            UserJobIds {
                job_definition_id: 4,
                jobset_id: Some(3)
            }
        );
        // The counter at 4, the client asking from 1: jobset 5, job 6.
        assert_eq!(
            ids(4, 1, JobsetRequest::New),
            UserJobIds {
                job_definition_id: 6,
                jobset_id: Some(5)
            }
        );
        // A jobset the client chose stands; the job's ID is numbered after the counter.
        assert_eq!(
            ids(9, 2, JobsetRequest::Given(7)),
            UserJobIds {
                job_definition_id: 10,
                jobset_id: Some(7)
            }
        );
        // Ahead of the counter, the client's ID stands; no jobset asked, none given.
        assert_eq!(
            ids(9, 20, JobsetRequest::NoJobset),
            UserJobIds {
                job_definition_id: 20,
                jobset_id: None
            }
        );
        // The counter equal to the new jobset's ID passes it too.
        assert_eq!(
            ids(5, 5, JobsetRequest::New),
            UserJobIds {
                job_definition_id: 7,
                jobset_id: Some(6)
            }
        );
        assert_eq!(
            ids(i64::MAX, 1, JobsetRequest::New).job_definition_id,
            i64::MAX
        );
    }
}
