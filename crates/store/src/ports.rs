//! The store as the service sees it: a few role-sized traits (jobs, sites, tasks, Harvester,
//! users), each implemented by the SQL code where it is, so that the service holds
//! `Arc<dyn …>` and its rules can be tested against any implementation.
//!
//! The traits forward to `Store`'s own methods, which stay the one place each statement is
//! written. Changes under a row lock take a closure; a trait object cannot take a generic
//! one, so the traits take `&mut dyn FnMut` and [`change_job`], [`change_job_row`] and
//! [`change_task`] give the service back the generic form with an outcome of any type.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::NaiveDateTime;
use panda_core::{
    DatasetSpec, JobAttr, JobSpec, JobStatus, JobTable, TaskFileSpec, TaskSpec, Value,
};

use crate::catalog::{CatalogDataset, CatalogFile};
use crate::credentials::{SealedCredential, SecretsChange};
use crate::daemon_support::OutputReport;
use crate::dispatch::{ClaimRequest, Claimed};
use crate::error::{Result, StoreError};
use crate::events::{
    AcquiredRange, ConsumerEnd, NewEventRanges, RangeReport, RangeReportOutcome, RangeStatus,
    ZipFile,
};
use crate::harvester::{
    ColumnValue, HarvesterCommand, JobStatRow, WorkerNode, WorkerStat, WorkerUpdate,
};
use crate::jedi::{
    DatasetFiles, FileClaim, FileCounts, FileResult, HeldLibrary, RefinedTask, TaskLayout,
};
use crate::jobs::Decision;
use crate::lookups::{GlobalShare, JobBrief, ResourceType};
use crate::maintenance::TableMaintenance;
use crate::monitor::{
    DisplayRows, ErrorGroup, HourCount, HourlyScope, JobListing, JobPage, SiteStateCount,
    TaskListing, TaskPageRows,
};
use crate::retry_rules::RetryRule;
use crate::side::SideWrite;
use crate::tasks::TaskCriterion;
use crate::users::{JobsetRequest, UserJobIds};
use crate::Store;

/// Declares a role trait and its implementation by [`Store`], one forwarding line per method.
macro_rules! port {
    ($(#[$doc:meta])* $role:ident {
        $( $(#[$mdoc:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*
    }) => {
        $(#[$doc])*
        #[async_trait]
        pub trait $role: Send + Sync {
            $( $(#[$mdoc])* async fn $name(&self $(, $arg: $ty)*) -> $ret; )*
        }

        #[async_trait]
        impl $role for Store {
            $( async fn $name(&self $(, $arg: $ty)*) -> $ret {
                Store::$name(self $(, $arg)*).await
            } )*
        }
    };
}

port! {
    /// Jobs: insert, read, claim, the retry rules.
    JobStore {
        fn allocate_panda_ids(&self, count: usize) -> Result<Vec<i64>>;
        fn insert_jobs(&self, jobs: &mut [JobSpec]) -> Result<()>;
        fn insert_jobs_via(&self, jobs: &mut [JobSpec], via: Option<JobStatus>) -> Result<()>;
        fn get_job(&self, panda_id: i64) -> Result<Option<JobSpec>>;
        fn job_briefs(&self, ids: &[i64], tables: &[JobTable]) -> Result<HashMap<i64, JobBrief>>;
        fn claim_jobs(&self, request: &ClaimRequest) -> Result<Claimed>;
        fn retry_rules(&self) -> Result<Vec<RetryRule>>;
        fn job_stat_rows(&self, archived_since: NaiveDateTime) -> Result<Vec<JobStatRow>>;
        /// Whether the database answers (`SELECT 1`).
        fn ping(&self) -> Result<()>;
    }
}

port! {
    /// Sites: PanDA queues (CRIC records) and resource types.
    SiteStore {
        fn queue_json(&self, name: &str) -> Result<Option<String>>;
        fn all_queues(&self) -> Result<Vec<(String, String)>>;
        fn activated_counts(&self) -> Result<Vec<(String, i64)>>;
        fn resource_types(&self) -> Result<Vec<ResourceType>>;
        fn global_shares(&self) -> Result<Vec<GlobalShare>>;
    }
}

port! {
    /// JEDI's tasks and their jobs.
    TaskStore {
        fn insert_task(&self, task: TaskSpec, parameters: &str) -> Result<TaskSpec>;
        fn insert_workflow(&self, prodsourcelabel: &str, username: &str, raw_request_json: &str) -> Result<i64>;
        fn get_task(&self, task_id: i64) -> Result<Option<TaskSpec>>;
        fn task_parameters(&self, task_id: i64) -> Result<Option<String>>;
        fn task_ids(&self, criteria: &[TaskCriterion], since: NaiveDateTime, limit: i64) -> Result<Vec<i64>>;
        fn task_by_name(&self, vo: &Value, label: &Value, user: &str, name: &str) -> Result<Option<TaskSpec>>;
        fn task_job_ids(&self, task_id: i64) -> Result<Vec<i64>>;
        fn task_job_counts(&self, task_id: i64) -> Result<Vec<(String, i64)>>;
    }
}

port! {
    /// JEDI's part of tasks: datasets, their files and templates, the steps that move a
    /// task from `registered` to its end.
    JediStore {
        fn tasks_in_status(&self, statuses: &[&str], limit: i64) -> Result<Vec<TaskSpec>>;
        fn register_refined_task(&self, refined: &RefinedTask) -> Result<bool>;
        fn task_layout(&self, task_id: i64) -> Result<TaskLayout>;
        fn add_task_files(&self, task_id: i64, dataset_id: i64, files: &[TaskFileSpec]) -> Result<bool>;
        fn ready_task_files(&self, task_id: i64, limit: i64) -> Result<Vec<TaskFileSpec>>;
        fn claim_task_files(&self, task_id: i64, claims: &[FileClaim], serials: &[(i64, i64)]) -> Result<Option<Vec<(i64, i64)>>>;
        fn ended_task_files(&self, task_id: i64, limit: i64) -> Result<Vec<(TaskFileSpec, String)>>;
        fn lost_task_files(&self, task_id: i64, before: NaiveDateTime, limit: i64) -> Result<Vec<TaskFileSpec>>;
        fn finished_job_outputs(&self, panda_ids: &[i64]) -> Result<Vec<TaskFileSpec>>;
        fn record_file_results(&self, task_id: i64, results: &[FileResult], outputs: &[TaskFileSpec]) -> Result<()>;
        fn master_file_counts(&self, task_id: i64) -> Result<FileCounts>;
        fn lib_files(&self, task_id: i64) -> Result<Vec<TaskFileSpec>>;
        fn add_site_datasets(&self, task_id: i64, site: &str, wanted: &[DatasetSpec]) -> Result<Vec<DatasetSpec>>;
        fn held_task_jobs(&self, task_id: i64, site: Option<&str>, limit: i64) -> Result<Vec<i64>>;
        fn activate_held_jobs(&self, task_id: i64, site: &str, lib: &HeldLibrary, limit: i64) -> Result<(usize, Vec<i64>)>;
        fn set_task_parameters(&self, task_id: i64, parameters: &str) -> Result<bool>;
        fn set_task_share(&self, task_id: i64, share: &str, statuses: &[&str]) -> Result<bool>;
        fn jumbo_task_datasets(&self, after: NaiveDateTime, before: NaiveDateTime) -> Result<Vec<(i64, String, Vec<String>)>>;
        fn add_new_input_files(&self, task_id: i64, dataset_id: i64, files: &[TaskFileSpec]) -> Result<u64>;
        fn start_build(&self, task_id: i64, file: &TaskFileSpec) -> Result<bool>;
        fn reset_failed_files(&self, task_id: i64, extra: i64) -> Result<u64>;
        fn increase_file_attempts(&self, task_id: i64, increase: i64) -> Result<(u64, u64)>;
        fn reactivate_task_files(&self, task_id: i64, keep_attempt_nr: bool) -> Result<u64>;
        fn set_task_priority(&self, task_id: i64, priority: i64) -> Result<bool>;
        fn set_task_modification_time(&self, task_id: i64, at: NaiveDateTime) -> Result<bool>;
        fn task_datasets_and_files(&self, task_id: i64, kinds: &[String], max_files: i64) -> Result<Vec<DatasetFiles>>;
        fn analysis_job_metadata(&self, task_id: i64, limit: i64) -> Result<Vec<(i64, String)>>;
    }
}

port! {
    /// The event service's ranges (`jedi_events`).
    EventStore {
        fn event_jobsets(&self, task_id: i64, file_ids: &[i64]) -> Result<Vec<(i64, i64)>>;
        fn insert_event_ranges(&self, files: &[NewEventRanges]) -> Result<u64>;
        fn acquire_event_ranges(&self, panda_id: i64, n: i64) -> Result<Vec<AcquiredRange>>;
        fn report_event_ranges(&self, reports: &[RangeReport], zips: &[ZipFile]) -> Result<RangeReportOutcome>;
        fn available_event_ranges(&self, task_id: i64, jobset_id: i64) -> Result<i64>;
        fn event_range_statuses(&self, task_id: i64, panda_id: i64, limit: i64) -> Result<Vec<RangeStatus>>;
        fn end_event_consumer(&self, task_id: i64, panda_id: i64, jobset_id: i64) -> Result<ConsumerEnd>;
        fn cancel_event_ranges(&self, task_id: i64, jobset_id: i64) -> Result<u64>;
    }
}

port! {
    /// The local catalogue of input datasets.
    CatalogStore {
        fn add_catalog_files(&self, files: &[CatalogFile]) -> Result<u64>;
        fn catalog_files(&self, dataset: &str, limit: i64) -> Result<Vec<CatalogFile>>;
        fn catalog_datasets(&self, limit: i64) -> Result<Vec<CatalogDataset>>;
    }
}

port! {
    /// Harvester's tables and the worker nodes pilots describe.
    HarvesterStore {
        fn harvester_heartbeat(&self, harvester_id: &str, owner: &str, host: &str, fields: &[ColumnValue], commands: &[(String, String, String)]) -> Result<bool>;
        fn update_workers(&self, harvester_id: &str, workers: &[WorkerUpdate]) -> Result<()>;
        fn max_worker_id(&self, harvester_id: &str) -> Result<Option<i64>>;
        fn add_harvester_command(&self, harvester_id: &str, command: &str, params: Option<&str>, ack_requested: bool) -> Result<i64>;
        fn set_target_slots(&self, queue: &str, share: Option<&str>, resource_type: Option<&str>, slots: i64, expires: Option<NaiveDateTime>) -> Result<()>;
        fn acquire_harvester_commands(&self, harvester_id: &str, n: i64) -> Result<Vec<HarvesterCommand>>;
        fn acknowledge_harvester_commands(&self, ids: &[i64]) -> Result<()>;
        fn replace_worker_stats(&self, harvester_id: &str, site: &str, stats: &[WorkerStat]) -> Result<()>;
        fn worker_stats(&self) -> Result<Vec<WorkerStat>>;
        fn add_harvester_metrics(&self, harvester_id: &str, metrics: &[(NaiveDateTime, String, String)]) -> Result<()>;
        fn add_harvester_dialogs(&self, harvester_id: &str, dialogs: &[Vec<ColumnValue>]) -> Result<()>;
        fn set_worker_pilot_status(&self, harvester_id: &str, worker_id: i64, status: &str, node_id: Option<&str>) -> Result<u64>;
        fn upsert_worker_node(&self, node: &WorkerNode) -> Result<bool>;
        fn upsert_worker_node_gpu(&self, key: [&str; 4], columns: &[ColumnValue]) -> Result<bool>;
    }
}

port! {
    /// Users: who is banned, and the sandboxes they uploaded (`usercacheusage`).
    UserStore {
        fn banned_users(&self) -> Result<Vec<String>>;
        fn take_user_job_ids(&self, user: &str, job_id: i64, jobset: JobsetRequest) -> Result<UserJobIds>;
        fn register_cache_file(&self, user: &str, host: &str, file_name: &str, size: i64, checksum: Option<&str>) -> Result<()>;
        fn find_cache_file(&self, user: &str, size: i64, checksum: &str, since: NaiveDateTime) -> Result<Option<(String, String)>>;
    }
}

port! {
    /// Credentials: users' secrets, the sealed credentials operators register, and who may
    /// fetch them (`users.gridpref`).
    CredentialStore {
        fn user_secrets(&self, owner: &str) -> Result<Option<String>>;
        fn change_user_secrets(&self, owner: &str, change: &mut SecretsChange<'_>) -> Result<bool>;
        fn put_sealed_credential(&self, credential: &SealedCredential) -> Result<()>;
        fn sealed_credential(&self, kind: &str, name: &str, label: &str) -> Result<Option<SealedCredential>>;
        fn sealed_credentials(&self, kind: Option<&str>, name: Option<&str>) -> Result<Vec<SealedCredential>>;
        fn remove_sealed_credential(&self, kind: &str, name: &str, label: &str) -> Result<bool>;
        fn user_permissions(&self, name: &str) -> Result<Option<String>>;
    }
}

port! {
    /// The daemon's own bookkeeping: cluster-wide leases, the Adder's report queue, the
    /// watcher's settings and candidates, retention and table maintenance.
    DaemonStore {
        fn take_lease(&self, component: &str, holder: &str, period: chrono::Duration) -> Result<bool>;
        fn pending_output_reports(&self, stale_lock: NaiveDateTime, limit: i64) -> Result<Vec<OutputReport>>;
        fn lock_output_report(&self, report: &OutputReport, holder: &str, stale_lock: NaiveDateTime) -> Result<bool>;
        fn delete_output_report(&self, panda_id: i64, attempt_nr: i64) -> Result<()>;
        fn config_value(&self, component: &str, key: &str) -> Result<Option<String>>;
        fn jobs_older_than(&self, table: JobTable, statuses: &[&str], column: &str, before: NaiveDateTime, limit: i64) -> Result<Vec<i64>>;
        fn retire_archived_jobs(&self, before: NaiveDateTime, archive: bool, limit: i64) -> Result<u64>;
        fn maintain_tables(&self) -> Result<Vec<TableMaintenance>>;
        fn autovacuum_on(&self) -> Result<bool>;
    }
}

port! {
    /// The embedded monitor's reads: bounded listings and counts, nothing that writes.
    MonitorStore {
        fn monitor_jobs(&self, listing: &JobListing) -> Result<Vec<JobSpec>>;
        fn monitor_job_page(&self, panda_id: i64) -> Result<Option<JobPage>>;
        fn monitor_task_page(&self, task_id: i64, plot_from: NaiveDateTime) -> Result<Option<TaskPageRows>>;
        fn jobs_metadata(&self, panda_ids: &[i64]) -> Result<Vec<(i64, String)>>;
        fn site_state_counts(&self, archived_since: NaiveDateTime) -> Result<Vec<SiteStateCount>>;
        fn error_groups(&self, since: NaiveDateTime, limit: usize) -> Result<Vec<ErrorGroup>>;
        fn hourly_final_counts(&self, scope: &HourlyScope, since: NaiveDateTime) -> Result<Vec<HourCount>>;
        fn monitor_tasks(&self, listing: &TaskListing) -> Result<Vec<TaskSpec>>;
        fn datasets_of_tasks(&self, task_ids: &[i64]) -> Result<Vec<DatasetSpec>>;
        fn monitor_workers(&self, filters: &[(&'static str, Value)], since: NaiveDateTime, limit: usize) -> Result<DisplayRows>;
    }
}

/// A change of a job: the job as stored in, side writes out, write or keep.
pub type JobChange<'a> =
    dyn FnMut(&mut JobSpec, &mut Vec<SideWrite>) -> Result<Decision<()>> + Send + 'a;
/// A change of a task.
pub type TaskChange<'a> = dyn FnMut(&mut TaskSpec) -> Decision<()> + Send + 'a;

/// Changes under the store's locking rules (`Store::change_job`, `change_job_row`,
/// `change_task`), in a form a trait object can take.
#[async_trait]
pub trait Changes: Send + Sync {
    async fn change_job_with(&self, panda_id: i64, change: &mut JobChange<'_>) -> Result<JobSpec>;
    async fn change_job_row_with(
        &self,
        panda_id: i64,
        reads: &[JobAttr],
        change: &mut JobChange<'_>,
    ) -> Result<JobSpec>;
    async fn change_task_with(
        &self,
        task_id: i64,
        change: &mut TaskChange<'_>,
    ) -> Result<Option<TaskSpec>>;
}

#[async_trait]
impl Changes for Store {
    async fn change_job_with(&self, panda_id: i64, change: &mut JobChange<'_>) -> Result<JobSpec> {
        let (job, ()) = Store::change_job(self, panda_id, |job, side| change(job, side)).await?;
        Ok(job)
    }

    async fn change_job_row_with(
        &self,
        panda_id: i64,
        reads: &[JobAttr],
        change: &mut JobChange<'_>,
    ) -> Result<JobSpec> {
        let (job, ()) =
            Store::change_job_row(self, panda_id, reads, |job, side| change(job, side)).await?;
        Ok(job)
    }

    async fn change_task_with(
        &self,
        task_id: i64,
        change: &mut TaskChange<'_>,
    ) -> Result<Option<TaskSpec>> {
        let changed = Store::change_task(self, task_id, |task| change(task)).await?;
        Ok(changed.map(|(task, ())| task))
    }
}

/// Splits a decision into its kind and its outcome.
fn split<R>(decision: Decision<R>) -> (Decision<()>, R) {
    match decision {
        Decision::Write(r) => (Decision::Write(()), r),
        Decision::Keep(r) => (Decision::Keep(()), r),
    }
}

fn no_outcome() -> StoreError {
    StoreError::Corrupt("a job change finished without an outcome".into())
}

/// `Store::change_job` through [`Changes`]: `change` runs once, under the job's row lock.
pub async fn change_job<R, F>(store: &dyn Changes, panda_id: i64, change: F) -> Result<(JobSpec, R)>
where
    F: FnOnce(&mut JobSpec, &mut Vec<SideWrite>) -> Result<Decision<R>> + Send,
    R: Send,
{
    let mut change = Some(change);
    let mut outcome = None;
    let job = store
        .change_job_with(panda_id, &mut |job, side| {
            let change = change.take().ok_or_else(no_outcome)?;
            let (decision, r) = split(change(job, side)?);
            outcome = Some(r);
            Ok(decision)
        })
        .await?;
    Ok((job, outcome.ok_or_else(no_outcome)?))
}

/// `Store::change_job_row` through [`Changes`]: `change` may run again when a concurrent
/// writer got there first; the outcome is that of its last run.
pub async fn change_job_row<R, F>(
    store: &dyn Changes,
    panda_id: i64,
    reads: &[JobAttr],
    mut change: F,
) -> Result<(JobSpec, R)>
where
    F: FnMut(&mut JobSpec, &mut Vec<SideWrite>) -> Result<Decision<R>> + Send,
    R: Send,
{
    let mut outcome = None;
    let job = store
        .change_job_row_with(panda_id, reads, &mut |job, side| {
            let (decision, r) = split(change(job, side)?);
            outcome = Some(r);
            Ok(decision)
        })
        .await?;
    Ok((job, outcome.ok_or_else(no_outcome)?))
}

/// `Store::change_task` through [`Changes`]: `None` when there is no such task.
pub async fn change_task<R, F>(
    store: &dyn Changes,
    task_id: i64,
    change: F,
) -> Result<Option<(TaskSpec, R)>>
where
    F: FnOnce(&mut TaskSpec) -> Decision<R> + Send,
    R: Send,
{
    let mut change = Some(change);
    let mut outcome = None;
    let task = store
        .change_task_with(task_id, &mut |task| match change.take() {
            Some(change) => {
                let (decision, r) = split(change(task));
                outcome = Some(r);
                decision
            }
            None => Decision::Keep(()),
        })
        .await?;
    Ok(task.and_then(|task| outcome.map(|r| (task, r))))
}
