//! The job logic, written once for both wire formats (the legacy dispatcher and `/api/v1`):
//! submission with brokerage and activation, dispatch to pilots, pilot heartbeats, tasks,
//! Harvester, worker nodes, statistics and the reads the wire layers answer from.
//!
//! Handlers decode a request into the types here, call [`JobService`], and encode the result;
//! every rule lives in this crate, every statement in `panda-store`. The web tier reaches the
//! database only through [`JobService`]: the store is private to it (the api crate does not
//! depend on `panda-store`).

mod brokerage;
pub mod catalog;
pub mod credentials;
mod dispatch;
mod error;
pub mod events;
pub mod harvester;
mod kill;
pub mod lookups;
pub mod monitor;
pub mod offline_script;
pub mod pilot_report;
mod readiness;
mod reassign;
mod retry;
pub mod sandbox;
mod setup;
pub mod statistics;
mod submit;
pub mod task_admin;
pub mod task_listing;
pub mod task_processing;
mod tasks;
mod update;
pub mod worker_nodes;
pub mod workflows;

use std::sync::Arc;

use panda_store::ports::{
    CatalogStore, Changes, CredentialStore, EventStore, HarvesterStore, JediStore, JobStore,
    MonitorStore, SiteStore, TaskStore, UserStore,
};
use panda_store::Store;

pub use brokerage::choose_queue;
pub use dispatch::{DispatchSecrets, Dispatched, GetJobRequest, GetJobResult, QUEUE_CACHE_TTL};
pub use error::ServiceError;
pub use kill::{may_change, EC_KILL};
pub use pilot_report::{PilotReport, PilotState, ReportFields};
pub use retry::{RetryOutcome, EC_RETRIED};
pub use setup::{DataManagement, FinalizeDecision, NoDataMovement, SetupDecision};
pub use submit::SubmittedJob;
pub use tasks::{code as task_code, user_name, TaskCommand, TaskOutcome};
pub use update::UpdateResult;

/// Store types that are part of the service's vocabulary.
pub use panda_store::{
    DatasetFile, DatasetFiles, FileCounts, HarvesterCommand, ResourceType, StoreError,
    TaskCriterion,
};

/// Settings of the job logic, from the server's configuration.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// Most jobs one getJob call hands out (`nJobsInGetJob`).
    pub max_jobs_per_get_job: usize,
    /// This node's name, recorded as `modificationHost` of new jobs and as the host of the
    /// sandboxes it stores.
    pub host_name: String,
    /// `cache_dir`: where sandboxes are stored and served from.
    pub cache_dir: std::path::PathBuf,
    /// Where workers fetch the user transformations from (`wn_script_base_url`): a task's
    /// `transPath` is `<this>/trf/user/runGen-00-00-02`.
    pub trf_base_url: String,
    /// The key that seals credentials at rest (`credential_key_file`); without one the
    /// server keeps no credentials and says so.
    pub credential_key: Option<Arc<credentials::CredentialKey>>,
    /// `pilot_secrets`: the owner whose secrets go to pilots with debug-mode jobs.
    pub pilot_secrets_owner: String,
}

/// Upstream's default `pilot_secrets` owner.
pub const PILOT_SECRETS_OWNER: &str = "pilot secrets";

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            max_jobs_per_get_job: 10,
            host_name: "localhost".into(),
            cache_dir: std::env::temp_dir().join("panda-cache"),
            trf_base_url: "http://localhost:25080".into(),
            credential_key: None,
            pilot_secrets_owner: PILOT_SECRETS_OWNER.into(),
        }
    }
}

/// The store's roles the service works through (`panda_store::ports`). [`JobService::new`]
/// fills every role with one `Store`; tests may bring other implementations.
#[derive(Clone)]
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub sites: Arc<dyn SiteStore>,
    pub tasks: Arc<dyn TaskStore>,
    /// JEDI's datasets, files and templates of tasks.
    pub jedi: Arc<dyn JediStore>,
    /// The local catalogue of input datasets (behind `catalog::DatasetCatalog`).
    pub catalog: Arc<dyn CatalogStore>,
    pub harvester: Arc<dyn HarvesterStore>,
    pub users: Arc<dyn UserStore>,
    /// Users' secrets and the credentials operators register.
    pub credentials: Arc<dyn CredentialStore>,
    /// The event service's ranges.
    pub events: Arc<dyn EventStore>,
    /// The monitor's reads.
    pub monitor: Arc<dyn MonitorStore>,
    /// Changes of jobs and tasks under the store's locking rules.
    pub changes: Arc<dyn Changes>,
}

impl Stores {
    /// Every role played by one store.
    pub fn of(store: Store) -> Stores {
        let shared = Arc::new(store);
        Stores {
            jobs: shared.clone(),
            sites: shared.clone(),
            tasks: shared.clone(),
            jedi: shared.clone(),
            catalog: shared.clone(),
            harvester: shared.clone(),
            users: shared.clone(),
            credentials: shared.clone(),
            events: shared.clone(),
            monitor: shared.clone(),
            changes: shared,
        }
    }
}

/// The job logic on one store.
#[derive(Clone)]
pub struct JobService {
    stores: Stores,
    settings: Arc<ServiceSettings>,
    data_management: Arc<dyn DataManagement>,
    /// Queue records by name, with when they were read (see `JobService::queue`).
    queues: Arc<std::sync::Mutex<QueueCache>>,
    bans: Arc<lookups::BanList>,
    sandbox: Arc<sandbox::SandboxCache>,
    catalog: Arc<dyn catalog::DatasetCatalog>,
    /// The last answer of [`JobService::database_ready`].
    readiness: Arc<readiness::LastCheck>,
    /// The monitor's counts, a few seconds old at most.
    monitor_counts: Arc<monitor::CountsCache>,
}

type QueueCache = std::collections::HashMap<String, (std::time::Instant, dispatch::QueueRead)>;

impl JobService {
    pub fn new(store: Store, settings: ServiceSettings) -> JobService {
        JobService::with_stores(Stores::of(store), settings)
    }

    /// The job logic on the given roles.
    pub fn with_stores(stores: Stores, settings: ServiceSettings) -> JobService {
        let sandbox = Arc::new(sandbox::SandboxCache::new(
            settings.cache_dir.clone(),
            settings.host_name.clone(),
        ));
        let catalog = Arc::new(catalog::LocalCatalog(stores.catalog.clone()));
        JobService {
            stores,
            catalog,
            sandbox,
            settings: Arc::new(settings),
            data_management: Arc::new(NoDataMovement),
            queues: Arc::default(),
            bans: Arc::default(),
            readiness: Arc::default(),
            monitor_counts: Arc::default(),
        }
    }

    /// Replaces the data-management plugin (upstream's setupper/adder).
    pub fn with_data_management(mut self, plugin: Arc<dyn DataManagement>) -> JobService {
        self.data_management = plugin;
        self
    }
}
