//! Reads the wire layers answer from: jobs and their states, tasks, queues and resource types,
//! and the ban list. The rules that decide what a caller sees live here: which tables a
//! pilot's status calls look in, for how long an archived job still counts, how a queue's CRIC
//! record becomes upstream's SiteSpec, how often the ban list is read.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use panda_core::{JobSpec, JobTable, QueueSpec, QueueType, TaskSpec};
use panda_store::{ResourceType, TaskCriterion};
use serde_json::{Map, Value as Json};

use crate::{JobService, ServiceError};

/// Which job tables a status lookup reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobScope {
    /// `jobsactive4` and `jobsarchived4`: what the legacy pilot calls see (a job still in
    /// `jobsdefined4` is unknown to them, as upstream).
    Dispatched,
    /// All three tables.
    Everywhere,
}

impl JobScope {
    fn tables(self) -> &'static [JobTable] {
        match self {
            JobScope::Dispatched => &[JobTable::Active, JobTable::Archived],
            JobScope::Everywhere => &JobTable::ALL,
        }
    }
}

/// A job's status and attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    pub status: String,
    pub attempt_nr: i64,
}

/// What a pilot's check of a job reads: its status and the command waiting for the pilot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobCheck {
    pub status: String,
    pub command: Option<String>,
}

/// How long an archived job still answers a pilot's check; after that it is unknown, and the
/// pilot is told to kill it.
pub const ARCHIVED_JOB_VISIBILITY: chrono::Duration = chrono::Duration::hours(1);

/// How long the ban list is trusted before it is read again (upstream caches it too).
pub const BAN_LIST_TTL: Duration = Duration::from_secs(60);

/// How long a failed read of the ban list stands before the next request tries again: a
/// missing table or a database in trouble costs one query per this period, not one per
/// request, and one log line when it starts failing.
pub const BAN_LIST_RETRY: Duration = Duration::from_secs(10);

/// Banned users (`users.status = 'disabled'`), read from the database at most once per
/// [`BAN_LIST_TTL`] (once per [`BAN_LIST_RETRY`] while reads fail).
#[derive(Debug, Default)]
pub struct BanList {
    cached: tokio::sync::RwLock<Option<BanState>>,
}

#[derive(Debug)]
struct BanState {
    next_read: Instant,
    names: HashSet<String>,
    /// The last read failed: the names are those of the last read that worked (none if none
    /// did).
    failing: bool,
}

/// CRIC keys of upstream's SiteSpec attributes.
const SITE_SPEC_KEYS: &[(&str, &str)] = &[
    ("cloud", "cloud"),
    ("type", "type"),
    ("status", "status"),
    ("memory", "memory"),
    ("maxrss", "maxrss"),
    ("minrss", "minrss"),
    ("maxtime", "maxtime"),
    ("mintime", "mintime"),
    ("maxinputsize", "maxinputsize"),
    ("maxwdir", "maxwdir"),
    ("coreCount", "corecount"),
    ("corepower", "corepower"),
    ("pandasite", "panda_site"),
    ("pandasite_state", "site_state"),
    ("catchall", "catchall"),
    ("capability", "capability"),
    ("comment", "comment"),
    ("tier", "tier"),
    ("wnconnectivity", "wnconnectivity"),
    ("direct_access_lan", "direct_access_lan"),
    ("direct_access_wan", "direct_access_wan"),
    ("transferringlimit", "transferringlimit"),
    ("fairsharePolicy", "fairsharepolicy"),
    ("pledgedCPU", "pledgedcpu"),
    ("jobseed", "jobseed"),
    ("workflow", "workflow"),
    ("maxDiskio", "maxdiskio"),
    ("role", "role"),
];

/// A queue as upstream's SiteSpec dict.
fn site_spec(name: &str, queue: &QueueSpec, type_name: &str) -> Json {
    let mut spec = Map::new();
    spec.insert("sitename".into(), Json::String(name.to_string()));
    spec.insert("nickname".into(), Json::String(name.to_string()));
    for (key, cric) in SITE_SPEC_KEYS {
        spec.insert(
            key.to_string(),
            queue.data.get(*cric).cloned().unwrap_or(Json::Null),
        );
    }
    spec.insert("type".into(), Json::String(type_name.to_string()));
    spec.insert("is_unified".into(), Json::Bool(type_name == "unified"));
    Json::Object(spec)
}

fn type_name(queue_type: &QueueType) -> &str {
    match queue_type {
        QueueType::Production => "production",
        QueueType::Analysis => "analysis",
        QueueType::Unified => "unified",
        QueueType::Other(other) => other.as_str(),
    }
}

impl JobService {
    /// One job with its files, from whichever table holds it.
    pub async fn job(&self, panda_id: i64) -> Result<Option<JobSpec>, ServiceError> {
        Ok(self.stores.jobs.get_job(panda_id).await?)
    }

    /// Status and attempt of the jobs found in `scope`.
    pub async fn job_states(
        &self,
        ids: &[i64],
        scope: JobScope,
    ) -> Result<HashMap<i64, JobState>, ServiceError> {
        let briefs = self.stores.jobs.job_briefs(ids, scope.tables()).await?;
        Ok(briefs
            .into_iter()
            .map(|(id, b)| {
                let state = JobState {
                    status: b.status,
                    attempt_nr: b.attempt_nr,
                };
                (id, state)
            })
            .collect())
    }

    /// What a pilot's check sees of each job in `scope`: jobs not archived, and jobs archived
    /// less than [`ARCHIVED_JOB_VISIBILITY`] ago. The others are absent.
    pub async fn job_checks(
        &self,
        ids: &[i64],
        scope: JobScope,
    ) -> Result<HashMap<i64, JobCheck>, ServiceError> {
        let visible_since = panda_core::time::now() - ARCHIVED_JOB_VISIBILITY;
        let briefs = self.stores.jobs.job_briefs(ids, scope.tables()).await?;
        Ok(briefs
            .into_iter()
            .filter(|(_, b)| {
                b.table != JobTable::Archived
                    || b.modification_time.is_some_and(|t| t > visible_since)
            })
            .map(|(id, b)| {
                let check = JobCheck {
                    status: b.status,
                    command: b.command,
                };
                (id, check)
            })
            .collect())
    }

    pub async fn resource_types(&self) -> Result<Vec<ResourceType>, ServiceError> {
        Ok(self.stores.sites.resource_types().await?)
    }

    /// A queue's CRIC record as stored, JSON text.
    pub async fn queue_json(&self, name: &str) -> Result<Option<String>, ServiceError> {
        Ok(self.stores.sites.queue_json(name).await?)
    }

    /// The queues of one type (`analysis`, `production`, `unified`; `all` for every queue) as
    /// upstream's SiteSpec dicts by name. Records that are not JSON are left out.
    pub async fn site_specs(&self, wanted: &str) -> Result<Map<String, Json>, ServiceError> {
        let wanted = wanted.to_ascii_lowercase();
        let mut out = Map::new();
        for (name, text) in self.stores.sites.all_queues().await? {
            let Ok(data) = serde_json::from_str::<Json>(&text) else {
                continue;
            };
            let queue = QueueSpec::from_json(&name, data);
            let type_name = type_name(&queue.queue_type);
            if wanted == "all" || wanted == type_name {
                let spec = site_spec(&name, &queue, type_name);
                out.insert(name, spec);
            }
        }
        Ok(out)
    }

    pub async fn task(&self, task_id: i64) -> Result<Option<TaskSpec>, ServiceError> {
        Ok(self.stores.tasks.get_task(task_id).await?)
    }

    /// The task's parameters as submitted (with the server's additions); a stored text that
    /// is not a JSON object is an error.
    pub async fn task_parameters(
        &self,
        task_id: i64,
    ) -> Result<Option<Map<String, Json>>, ServiceError> {
        match self.stores.tasks.task_parameters(task_id).await? {
            None => Ok(None),
            Some(text) => match serde_json::from_str(&text) {
                Ok(Json::Object(map)) => Ok(Some(map)),
                Ok(_) | Err(_) => Err(ServiceError::BadRequest(
                    "Error decoding the task parameters: not a JSON object".into(),
                )),
            },
        }
    }

    /// The PandaIDs of a task's jobs, lowest first.
    pub async fn task_job_ids(&self, task_id: i64) -> Result<Vec<i64>, ServiceError> {
        Ok(self.stores.tasks.task_job_ids(task_id).await?)
    }

    /// A task's jobs by status.
    pub async fn task_job_counts(&self, task_id: i64) -> Result<Vec<(String, i64)>, ServiceError> {
        Ok(self.stores.tasks.task_job_counts(task_id).await?)
    }

    /// IDs of tasks matching `criteria` modified since `since`, at most `limit`.
    pub async fn task_ids(
        &self,
        criteria: &[TaskCriterion],
        since: NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<i64>, ServiceError> {
        Ok(self.stores.tasks.task_ids(criteria, since, limit).await?)
    }

    /// The banned users (`users.status = 'disabled'`), read now.
    pub async fn banned_users(&self) -> Result<Vec<String>, ServiceError> {
        Ok(self.stores.users.banned_users().await?)
    }

    /// Whether `user` (a cleaned user name) is banned. Requests share a read lock; one
    /// refreshes the list when it is stale. A database that cannot be read bans nobody: it is
    /// logged, and the request goes on to fail or succeed on its own.
    pub async fn is_banned(&self, user: &str) -> bool {
        {
            let cached = self.bans.cached.read().await;
            if let Some(state) = cached.as_ref() {
                if Instant::now() < state.next_read {
                    return state.names.contains(user);
                }
            }
        }
        let mut cached = self.bans.cached.write().await;
        let stale = cached
            .as_ref()
            .is_none_or(|state| Instant::now() >= state.next_read);
        if stale {
            let read = self.stores.users.banned_users().await;
            let previous = cached.take();
            let was_failing = previous.as_ref().is_some_and(|s| s.failing);
            *cached = Some(match read {
                Ok(names) => {
                    if was_failing {
                        tracing::info!(target: "panda::auth", "the ban list can be read again");
                    }
                    BanState {
                        next_read: Instant::now() + BAN_LIST_TTL,
                        names: names.into_iter().collect(),
                        failing: false,
                    }
                }
                Err(e) => {
                    if was_failing {
                        tracing::debug!(target: "panda::auth", error = %e, "the ban list still cannot be read");
                    } else {
                        tracing::warn!(target: "panda::auth", error = %e,
                            retry_s = BAN_LIST_RETRY.as_secs(),
                            "cannot read the ban list; the last list read stands until a read works");
                    }
                    BanState {
                        next_read: Instant::now() + BAN_LIST_RETRY,
                        names: previous.map(|s| s.names).unwrap_or_default(),
                        failing: true,
                    }
                }
            });
        }
        cached
            .as_ref()
            .is_some_and(|state| state.names.contains(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceSettings;
    use panda_core::JobStatus;
    use panda_store::testing::TestDb;
    use panda_store::{Backend, Store, StoreOptions, TxMode};

    async fn service(db: &TestDb) -> JobService {
        let store = Store::open(&db.config, StoreOptions::default())
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        JobService::new(store, ServiceSettings::default())
    }

    fn job(status: JobStatus) -> JobSpec {
        let mut job = JobSpec::new();
        job.set_status(status, panda_core::time::now());
        job.set_str(panda_core::JobAttr::prodSourceLabel, "managed")
            .expect("label");
        job.set_str(panda_core::JobAttr::computingSite, "TEST_QUEUE")
            .expect("site");
        job
    }

    #[tokio::test]
    async fn pilot_lookups_see_dispatched_jobs_and_recently_archived_ones() {
        let db = TestDb::new(Backend::Sqlite);
        let service = service(&db).await;
        let mut jobs = vec![
            job(JobStatus::Defined),
            job(JobStatus::Running),
            job(JobStatus::Finished),
        ];
        service
            .stores
            .jobs
            .insert_jobs(&mut jobs)
            .await
            .expect("insert");
        let ids: Vec<i64> = jobs.iter().map(JobSpec::panda_id).collect();
        let dispatched = service
            .job_states(&ids, JobScope::Dispatched)
            .await
            .expect("states");
        assert!(
            !dispatched.contains_key(&ids[0]),
            "a defined job is not the pilot's"
        );
        assert_eq!(dispatched[&ids[1]].status, "running");
        assert_eq!(dispatched[&ids[2]].status, "finished");
        let everywhere = service
            .job_states(&ids, JobScope::Everywhere)
            .await
            .expect("states");
        assert_eq!(everywhere[&ids[0]].status, "defined");
        // Archived a moment ago: still answered.
        let checks = service
            .job_checks(&ids, JobScope::Dispatched)
            .await
            .expect("checks");
        assert_eq!(checks[&ids[2]].status, "finished");
    }

    #[tokio::test]
    async fn the_ban_list_is_read_once_per_ttl() {
        let db = TestDb::new(Backend::Sqlite);
        let service = service(&db).await;
        assert!(!service.is_banned("Alice Tester").await);
        let store = Store::open(&db.config, StoreOptions::default())
            .await
            .expect("open");
        store
            .set_user_status("Alice Tester", Some("disabled"))
            .await
            .expect("ban");
        // Within the TTL the cached list still holds: the ban takes effect within a minute.
        assert!(!service.is_banned("Alice Tester").await);
        let fresh = JobService::new(store, ServiceSettings::default());
        assert!(fresh.is_banned("Alice Tester").await);
    }

    #[tokio::test]
    async fn a_ban_list_that_cannot_be_read_is_not_read_again_at_once() {
        let db = TestDb::new(Backend::Sqlite);
        let service = service(&db).await;
        let store = Store::open(&db.config, StoreOptions::default())
            .await
            .expect("open");
        let mut tx = store.begin(TxMode::Write).await.expect("tx");
        tx.execute("ALTER TABLE users RENAME TO users_away", &[])
            .await
            .expect("hide the table");
        tx.commit().await.expect("commit");
        assert!(
            !service.is_banned("Alice Tester").await,
            "unreadable bans nobody"
        );
        let mut tx = store.begin(TxMode::Write).await.expect("tx");
        tx.execute("ALTER TABLE users_away RENAME TO users", &[])
            .await
            .expect("restore the table");
        tx.commit().await.expect("commit");
        store
            .set_user_status("Alice Tester", Some("disabled"))
            .await
            .expect("ban");
        // The failure stands for BAN_LIST_RETRY: no request reads the table meanwhile.
        assert!(!service.is_banned("Alice Tester").await);
        let fresh = JobService::new(store, ServiceSettings::default());
        assert!(fresh.is_banned("Alice Tester").await);
    }
}
