//! The daemon's tasks, by upstream's names where upstream has one: `add_main` (the Adder),
//! `copyArchive` (timeouts), `tmpwatch` (cache cleanup), `archive_retention` (ours: old
//! archived jobs leave the live tables), `db_maintenance` (ours: statistics and dead rows of
//! the job tables where PostgreSQL's autovacuum is off) and `dummy_test` (a diagnostic task
//! that can also fail, panic or hang on purpose), and JEDI's agents for user tasks
//! (`task_refiner`, `contents_feeder`, `job_generator`, `post_processor`).

mod adder;
mod cleanup;
mod dummy;
mod jedi;
mod watcher;

use std::sync::Arc;

use async_trait::async_trait;
use panda_service::DataManagement;
use panda_service::Stores;
use panda_store::ports::DaemonStore;
use panda_store::Store;

/// What a task run gets.
#[derive(Clone)]
pub struct TaskContext {
    /// The daemon's own bookkeeping (leases, report queue, retention).
    pub daemon: Arc<dyn DaemonStore>,
    /// The roles the job rules work through (jobs, queues, changes).
    pub stores: Stores,
    /// This daemon, as it signs leases and report locks (`host:pid`).
    pub node: String,
    /// The task's `arguments` from the configuration.
    pub arguments: Vec<String>,
    /// The job logic's settings (`cache_dir`, swept by `tmpwatch`; the transformation URL).
    pub settings: panda_service::ServiceSettings,
    pub data_management: Arc<dyn DataManagement>,
}

impl TaskContext {
    /// A context for the tasks on one store.
    pub fn new(
        store: Store,
        node: String,
        arguments: Vec<String>,
        settings: panda_service::ServiceSettings,
    ) -> TaskContext {
        TaskContext {
            daemon: Arc::new(store.clone()),
            stores: Stores::of(store),
            node,
            arguments,
            settings,
            data_management: Arc::new(panda_service::NoDataMovement),
        }
    }

    /// The job logic on this context's store, for retries and activation.
    pub fn service(&self) -> panda_service::JobService {
        panda_service::JobService::with_stores(
            self.stores.clone(),
            panda_service::ServiceSettings {
                max_jobs_per_get_job: 1,
                ..self.settings.clone()
            },
        )
        .with_data_management(self.data_management.clone())
    }

    /// Retries a job that just failed, when the retry rules allow it.
    pub async fn retry(&self, panda_id: i64) -> anyhow::Result<()> {
        if let Some(job) = self.stores.jobs.get_job(panda_id).await? {
            let outcome = self.service().retry_failed(&job).await?;
            tracing::info!(target: "panda::retry", panda_id, outcome = ?outcome);
        }
        Ok(())
    }
}

/// One periodic task. A run returns a one-line summary, or an error that is logged.
#[async_trait]
pub trait Task: Send + Sync + 'static {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String>;
}

/// What makes a task.
pub type MakeTask = fn() -> Arc<dyn Task>;

/// The tasks this build implements, each with what makes it: the one table of task names.
pub const TASKS: [(&str, MakeTask); 10] = [
    ("add_main", || Arc::new(adder::Adder)),
    ("copyArchive", || Arc::new(watcher::Watcher)),
    ("tmpwatch", || Arc::new(cleanup::TmpWatch)),
    ("archive_retention", || Arc::new(cleanup::ArchiveRetention)),
    ("db_maintenance", || Arc::new(cleanup::DbMaintenance)),
    ("dummy_test", || Arc::new(dummy::Dummy)),
    ("task_refiner", || Arc::new(jedi::TaskRefiner)),
    ("contents_feeder", || Arc::new(jedi::ContentsFeeder)),
    ("job_generator", || Arc::new(jedi::JobGenerator)),
    ("post_processor", || Arc::new(jedi::PostProcessor)),
];

/// The names of [`TASKS`], in order.
pub fn task_names() -> impl Iterator<Item = &'static str> {
    TASKS.iter().map(|(name, _)| *name)
}

pub fn task_by_name(name: &str) -> Option<Arc<dyn Task>> {
    TASKS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, make)| make())
}
