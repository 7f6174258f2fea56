//! Task processing, JEDI's part: what turns a registered user task into jobs and a finished
//! task. Four steps, each a daemon task, each safe to run on many nodes (every step locks
//! the task row and checks its status, files are claimed with a compare-and-set):
//!
//! 1. **Refine** (`registered → defined`): upstream's analysis defaults (the transformation
//!    `<wn_script_base_url>/trf/user/runGen-00-00-02`, 2000 MB per core, 10 attempts), the
//!    job-parameter template (the non-hidden `jobParameters` values, a space after each unless
//!    `"padding": false`, `${SURL}` replaced by the task's `sourceURL`, each output's LFN
//!    template by its stream `${OUTPUT<n>}`), the datasets (a `pseudo_dataset` master input
//!    for `noInput`, else the input dataset (`--inDS`), and a template (`tmpl_log`,
//!    `tmpl_output`) for the log and each output with their file-name templates), and `reqID`,
//!    the owner's next jobset ID. Parameters that cannot be refined make the task `broken`
//!    with the reason in `errorDialog`.
//! 2. **Contents** (`defined → ready`): a `noInput` task gets `ceil(nEvents / nEventsPerJob)`
//!    pseudo files, each a range of events; a task with an input dataset gets its files from
//!    the dataset catalogue (`catalog::DatasetCatalog`), less those the input's `exclude`
//!    pattern names; at most [`MAX_TASK_FILES`]. An unknown dataset breaks the task.
//! 3. **Generate** (`ready → running`): one job per pseudo file, or per `nFilesPerJob` input
//!    files (`${IN/T}` and `${IN}` in the parameters become their names), placed by
//!    brokerage before it is named (the task's `site`, else the least-loaded fitting queue,
//!    each job counted as it is placed, so a batch spreads over the queues that fit). Its
//!    outputs go to its site's instance of each template (`<template>.<datasetID>`, in the
//!    template's container, made on first use), named and parametrised as JEDI does
//!    (`<taskName>.<PandaID>`, `jobsetID = reqID`, the log
//!    `<name>.log.<jediTaskID>.<SN:06d>.log.tgz`, serial numbers per template across sites,
//!    scope from the dataset name), submitted through the ordinary path.
//!    Jobs are `lockedby = jedi`, so the server's own retry leaves them to this module.
//! 4. **Post-process**: each ended attempt is accounted for in the file and its dataset's
//!    counters; a failed file goes back to `ready` while `attemptNr < maxAttempt` and the task
//!    is not being killed or finished; a finished job's outputs are registered in their
//!    datasets with the size and checksum the pilot reported. When no file is left to run,
//!    the task goes `prepared` and then `done` (every file finished), `finished` (some) or
//!    `failed` (none); a task being killed ends `aborted`.
//!
//! A task with a build step (`buildSpec`, prun without `--noBuild`) gets one build job
//! (buildGen, label `panda`) per site its jobs are placed at, which makes that site's library
//! `<lib dataset>.lib.tgz` (`panda.<MMDDhhmmss>.<us>.lib._<task:06>`, one dataset per site).
//! The run jobs are made with the build, each with the library as an input (`${LIB}` its
//! name), and wait `assigned` while it is built (after the data-management step has seen
//! them, which may still fail them); post-processing then releases them (upstream's
//! Activator): the library's size and checksum from the build's report go on their input,
//! and a job whose inputs are then all ready is activated. A build retried up to `maxAttempt` and
//! failed for good fails the jobs waiting for it and the task.
//!
//! Not done here (yet): scouting, secondary datasets, weighting sites by more than their
//! `activated` jobs.

use std::collections::{HashMap, HashSet};

use panda_core::identity::Identity;
use panda_core::{
    time, DatasetAttr, DatasetSpec, FileAttr, FileSpec, JobAttr, JobStatus, TaskAttr, TaskFileAttr,
    TaskFileSpec, TaskSpec, Value,
};
use panda_store::{
    ports, same_site_dataset, Decision, FileClaim, FileOutcome, FileResult, HeldLibrary, TaskLayout,
};
use serde_json::{Map, Value as Json};

use crate::error::ServiceError;
use crate::JobService;

mod jobs;
mod refine;

use crate::brokerage::choose_queue;
use jobs::{as_event_service_job, build_job, task_job, with_library, SiteDatasets};
pub use jobs::{dataset_scope, file_name, new_guid};
use panda_core::event::cut_ranges;
use panda_store::NewEventRanges;
use refine::EventServiceSpec;
pub use refine::{
    build_spec, event_service, files_per_job, input_files, pseudo_files, refine, retry_attempts,
    BuildSpec,
};
use refine::{lib_dataset, max_attempt, site_dataset, TEMPLATE_PREFIX};

/// Most files (and so jobs) one task may have.
pub const MAX_TASK_FILES: i64 = 200_000;
/// A file whose job cannot be found this long after it was given out counts as a failed
/// attempt (the generator stopped between claiming files and storing the jobs).
const LOST_JOB_MINUTES: i64 = 10;
/// How often this process looks for such files (the look is a scan of running files).
const LOST_CHECK_SECONDS: i64 = 300;
/// Most event ranges one file is cut into.
const MAX_RANGES_PER_FILE: i64 = 100_000;
/// Ended attempts of one task accounted for per post-processing run.
const FILES_PER_RUN: i64 = 2_000;

/// Whether this process should look for lost files now (once per [`LOST_CHECK_SECONDS`]).
fn lost_check_due() -> bool {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = time::now().and_utc().timestamp();
    let last = LAST.load(Ordering::Relaxed);
    now - last >= LOST_CHECK_SECONDS
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
/// Attempts of a user task's files unless the task says otherwise (upstream's default).
const DEFAULT_MAX_ATTEMPT: i64 = 10;
const DEFAULT_MAX_FAILURE: i64 = 3;
/// Statuses a task is generated for.
const GENERATING: [&str; 3] = ["ready", "running", "scouting"];
/// Statuses whose files are accounted for by post-processing.
const PROCESSING: [&str; 7] = [
    "ready",
    "running",
    "scouting",
    "finishing",
    "aborting",
    "toabort",
    "toretry",
];

/// What a step did, for the daemon's log line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepCounts {
    pub tasks: usize,
    pub broken: usize,
    pub jobs: usize,
    pub files: usize,
    pub closed: usize,
}

impl std::fmt::Display for StepCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tasks={} broken={} jobs={} files={} closed={}",
            self.tasks, self.broken, self.jobs, self.files, self.closed
        )
    }
}

/// Why task parameters cannot be refined.
type RefineError = String;

fn text(value: &str) -> Value {
    Value::Text(Some(value.to_string()))
}

fn int(value: i64) -> Value {
    Value::Int(Some(value))
}

fn param_str<'a>(params: &'a Map<String, Json>, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
}

fn param_int(params: &Map<String, Json>, key: &str) -> Option<i64> {
    match params.get(key)? {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Where the build of a site's library stands, for the run jobs made there.
enum Library {
    /// No build step.
    None,
    /// Built: run jobs take it as a ready input and are activated.
    Ready(FileSpec),
    /// Being built: run jobs take it as an input (`unknown`) and wait `assigned` until the
    /// build job has finished ([`JobService::release_held_jobs`]).
    Building(FileSpec),
}

/// Held jobs released (or failed) per site and post-processing run, in batches of this many.
const RELEASE_BATCH: i64 = 5_000;
/// How long one post-processing run of a task goes on accounting and releasing.
const RUN_SECONDS: u64 = 30;

/// A task's library as an input of its run jobs: `ready` with the size and checksum the
/// build reported once built, `unknown` before.
fn library_input(row: &TaskFileSpec, lib_name: &str, reported: Option<&FileSpec>) -> FileSpec {
    let mut file = FileSpec::new();
    for (to, from) in [
        (FileAttr::lfn, TaskFileAttr::lfn),
        (FileAttr::GUID, TaskFileAttr::GUID),
        (FileAttr::scope, TaskFileAttr::scope),
    ] {
        file.set(to, row.get(from).clone());
    }
    file.set(FileAttr::r#type, text("input"));
    file.set(FileAttr::dataset, text(lib_name));
    file.set(FileAttr::prodDBlock, text(lib_name));
    match reported {
        Some(reported) => {
            file.set(FileAttr::fsize, reported.get(FileAttr::fsize).clone());
            file.set(FileAttr::checksum, reported.get(FileAttr::checksum).clone());
            file.set(FileAttr::status, text("ready"));
        }
        None if row.get_str(TaskFileAttr::status) == Some("finished") => {
            file.set(FileAttr::status, text("ready"));
        }
        None => {
            file.set(FileAttr::status, text("unknown"));
        }
    }
    file
}

/// How one attempt of a file ended, from its job's status. An event-service consumer
/// `closed` left ranges for the next one; one that `failed` ended its jobset for good (its
/// ranges had their own attempts), so the file is not tried again.
fn attempt_outcome(
    job_status: &str,
    file: &TaskFileSpec,
    stopping: bool,
    event_service: bool,
) -> Option<FileOutcome> {
    match job_status {
        "finished" => Some(FileOutcome::Finished),
        "failed" if event_service => Some(FileOutcome::Failed),
        "failed" | "cancelled" | "closed" => {
            let next_attempt = file.get_i64(TaskFileAttr::attemptNr).unwrap_or(0) + 1;
            let max = file.get_i64(TaskFileAttr::maxAttempt).unwrap_or(1);
            Some(match !stopping && next_attempt < max {
                true => FileOutcome::Retry,
                false => FileOutcome::Failed,
            })
        }
        _ => None,
    }
}

/// The status a task ends in, from its master input's files.
pub fn final_status(finished: i64, total: i64) -> &'static str {
    if total > 0 && finished == total {
        "done"
    } else if finished == 0 {
        "failed"
    } else {
        "finished"
    }
}

impl JobService {
    async fn task_params(&self, task_id: i64) -> Result<Map<String, Json>, ServiceError> {
        let text = self.stores.tasks.task_parameters(task_id).await?;
        Ok(text
            .and_then(|t| serde_json::from_str::<Map<String, Json>>(&t).ok())
            .unwrap_or_default())
    }

    /// Marks a task `broken` with the reason, if it is still in `from`.
    async fn break_task(&self, task_id: i64, from: &str, why: &str) -> Result<(), ServiceError> {
        tracing::warn!(target: "panda::jedi", task_id, reason = why, "task broken");
        ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            if task.get_str(TaskAttr::status) != Some(from) {
                return Decision::Keep(());
            }
            task.set(TaskAttr::oldStatus, text(from));
            task.set(TaskAttr::status, text("broken"));
            task.set(TaskAttr::superStatus, text("broken"));
            task.set_str(TaskAttr::errorDialog, why).ok();
            Decision::Write(())
        })
        .await?;
        Ok(())
    }

    /// Step 1: refines up to `limit` registered tasks.
    pub async fn refine_tasks(&self, limit: i64) -> Result<StepCounts, ServiceError> {
        let mut counts = StepCounts::default();
        for task in self
            .stores
            .jedi
            .tasks_in_status(&["registered"], limit)
            .await?
        {
            let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
            let params = self.task_params(id).await?;
            match refine(&task, &params, &self.settings.trf_base_url) {
                Ok(refined) => {
                    if self.stores.jedi.register_refined_task(&refined).await? {
                        counts.tasks += 1;
                    }
                }
                Err(why) => {
                    self.break_task(id, "registered", &why).await?;
                    counts.broken += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Step 2: gives up to `limit` defined tasks their files.
    pub async fn feed_task_contents(&self, limit: i64) -> Result<StepCounts, ServiceError> {
        let mut counts = StepCounts::default();
        for task in self
            .stores
            .jedi
            .tasks_in_status(&["defined"], limit)
            .await?
        {
            let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
            let params = self.task_params(id).await?;
            let layout = self.stores.jedi.task_layout(id).await?;
            let Some(master) = layout.datasets.iter().find(|d| {
                matches!(
                    d.get_str(DatasetAttr::r#type),
                    Some("pseudo_input" | "input")
                )
            }) else {
                self.break_task(id, "defined", "the task has no master input dataset")
                    .await?;
                counts.broken += 1;
                continue;
            };
            let master_id = master.get_i64(DatasetAttr::datasetID).unwrap_or_default();
            let files = match master.get_str(DatasetAttr::r#type) {
                Some("input") => {
                    let name = master.get_str(DatasetAttr::datasetName).unwrap_or("");
                    match self.catalog.dataset_files(name).await? {
                        Some(found) => input_files(&params, name, found),
                        None => Err(format!(
                            "the input dataset {name} is not in the dataset catalogue"
                        )),
                    }
                }
                _ => pseudo_files(&params),
            };
            let master = master_id;
            match files {
                Ok(files) => {
                    if self.stores.jedi.add_task_files(id, master, &files).await? {
                        counts.tasks += 1;
                        counts.files += files.len();
                    }
                }
                Err(why) => {
                    self.break_task(id, "defined", &why).await?;
                    counts.broken += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Step 3: makes and submits up to `max_jobs` jobs of ready tasks.
    pub async fn generate_jobs(&self, max_jobs: usize) -> Result<StepCounts, ServiceError> {
        let mut counts = StepCounts::default();
        for task in self.stores.jedi.tasks_in_status(&GENERATING, 100).await? {
            if counts.jobs >= max_jobs {
                break;
            }
            let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
            let params = self.task_params(id).await?;
            let build = build_spec(&params).ok().flatten();
            if let Some(build) = &build {
                if !self.retry_builds(&task, build, &params).await? {
                    // A build failed for good: nothing more is made (post-processing ends
                    // the task).
                    continue;
                }
            }
            let per_job = files_per_job(&params);
            let mut task = task;
            let mut made_for_task = 0;
            // Batches of at most one submission's size, until the task has no ready file,
            // leaves the generating statuses (a kill), or the run's budget is spent.
            while counts.jobs < max_jobs {
                let budget = (max_jobs - counts.jobs).min(crate::submit::MAX_JOBS_PER_SUBMISSION);
                let files = self
                    .stores
                    .jedi
                    .ready_task_files(id, (budget * per_job) as i64)
                    .await?;
                if files.is_empty() {
                    break;
                }
                let made = self
                    .generate_for(&task, &params, build.as_ref(), &files, per_job)
                    .await?;
                counts.jobs += made;
                made_for_task += made;
                match self.stores.tasks.get_task(id).await? {
                    Some(now)
                        if made > 0
                            && now
                                .get_str(TaskAttr::status)
                                .is_some_and(|s| GENERATING.contains(&s)) =>
                    {
                        task = now;
                    }
                    _ => break,
                }
            }
            counts.tasks += usize::from(made_for_task > 0);
        }
        Ok(counts)
    }

    /// Makes one batch of jobs for `files`: each job placed by brokerage, its outputs in its
    /// site's datasets, and, for a task with a build step, the site's library as an input
    /// (the site's build job made first when there is none).
    async fn generate_for(
        &self,
        task: &TaskSpec,
        params: &Map<String, Json>,
        build: Option<&BuildSpec>,
        files: &[TaskFileSpec],
        per_job: usize,
    ) -> Result<usize, ServiceError> {
        let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
        let layout = self.stores.jedi.task_layout(id).await?;
        let groups: Vec<&[TaskFileSpec]> = files.chunks(per_job).collect();
        let sites = self.place_jobs(task, &layout, &groups).await?;
        let mut places: HashMap<Option<String>, (SiteDatasets, Library)> = HashMap::new();
        for site in &sites {
            if places.contains_key(site) {
                continue;
            }
            let at = self
                .site_datasets(task, &layout, site.as_deref(), build.is_some())
                .await?;
            let library = match build {
                Some(build) => self.library_at(task, build, params, &at).await?,
                None => Library::None,
            };
            places.insert(site.clone(), (at, library));
        }
        let ids = self.stores.jobs.allocate_panda_ids(groups.len()).await?;
        let claims: Vec<FileClaim> = groups
            .iter()
            .zip(&ids)
            .flat_map(|(group, panda_id)| {
                group.iter().map(|f| FileClaim {
                    dataset_id: f.get_i64(TaskFileAttr::datasetID).unwrap_or_default(),
                    file_id: f.get_i64(TaskFileAttr::fileID).unwrap_or_default(),
                    panda_id: *panda_id,
                })
            })
            .collect();
        let serial_requests: Vec<(i64, i64)> = layout
            .templates
            .iter()
            .map(|t| (t.dataset_id, groups.len() as i64))
            .collect();
        let Some(first_serials) = self
            .stores
            .jedi
            .claim_task_files(id, &claims, &serial_requests)
            .await?
        else {
            // Another generator took some of these files; the next run takes the rest.
            return Ok(0);
        };
        let jobsets = match refine::event_service(params).ok().flatten() {
            Some(es) => self.event_jobsets(id, params, &groups, &ids, es).await?,
            None => HashMap::new(),
        };
        let mut waiting = HashSet::new();
        let mut jobs = Vec::with_capacity(groups.len());
        for (i, ((group, panda_id), site)) in groups.iter().zip(&ids).zip(&sites).enumerate() {
            let serials: HashMap<i64, i64> = first_serials
                .iter()
                .map(|(dataset, first)| (*dataset, first + i as i64))
                .collect();
            let Some((at, library)) = places.get(site) else {
                continue;
            };
            let mut job = task_job(task, &layout, group, *panda_id, &serials, at);
            if let Some(jobset) = jobsets.get(panda_id) {
                as_event_service_job(&mut job, *jobset, group);
            }
            match library {
                Library::None => {}
                Library::Ready(lib) => with_library(&mut job, lib),
                Library::Building(lib) => {
                    with_library(&mut job, lib);
                    waiting.insert(*panda_id);
                }
            }
            jobs.push(job);
        }
        let submitted = self
            .submit_prepared(&Identity::anonymous(), jobs, &waiting)
            .await?;
        self.task_now_running(id).await?;
        tracing::info!(target: "panda::jedi", task_id = id, jobs = submitted.len(),
            waiting = waiting.len(), "jobs generated");
        Ok(submitted.len())
    }

    /// The jobset of each job of an event-service task (by PandaID): the jobset of its
    /// file's ranges when an earlier consumer had them (the job takes what is left), else a
    /// new jobset whose ranges are stored here, before the job can be dispatched. A file's
    /// events are its `nEvents` (else the task's `nEventsPerFile`) from its `startEvent`.
    async fn event_jobsets(
        &self,
        task_id: i64,
        params: &Map<String, Json>,
        groups: &[&[TaskFileSpec]],
        ids: &[i64],
        es: EventServiceSpec,
    ) -> Result<HashMap<i64, i64>, ServiceError> {
        let events = &self.stores.events;
        let first_file =
            |group: &[TaskFileSpec]| group.first().and_then(|f| f.get_i64(TaskFileAttr::fileID));
        let file_ids: Vec<i64> = groups.iter().filter_map(|g| first_file(g)).collect();
        let known: HashMap<i64, i64> = events
            .event_jobsets(task_id, &file_ids)
            .await?
            .into_iter()
            .collect();
        let mut jobsets = HashMap::new();
        let mut fresh = Vec::new();
        for (group, panda_id) in groups.iter().zip(ids) {
            let Some(file_id) = first_file(group) else {
                continue;
            };
            match known.get(&file_id) {
                Some(jobset) => {
                    jobsets.insert(*panda_id, *jobset);
                }
                None => fresh.push((*panda_id, *group)),
            }
        }
        let new_ids = self.stores.jobs.allocate_panda_ids(fresh.len()).await?;
        let per_file = param_int(params, "nEventsPerFile").filter(|n| *n > 0);
        let mut rows = Vec::new();
        for ((panda_id, group), jobset) in fresh.iter().zip(new_ids) {
            jobsets.insert(*panda_id, jobset);
            for file in group.iter() {
                let n_events = file
                    .get_i64(TaskFileAttr::nEvents)
                    .filter(|n| *n > 0)
                    .or(per_file)
                    .unwrap_or(0);
                // A range count beyond the bound widens the ranges instead.
                let per_range = es
                    .events_per_range
                    .max((n_events + MAX_RANGES_PER_FILE - 1) / MAX_RANGES_PER_FILE);
                rows.push(NewEventRanges {
                    task_id,
                    dataset_id: file.get_i64(TaskFileAttr::datasetID).unwrap_or_default(),
                    file_id: file.get_i64(TaskFileAttr::fileID).unwrap_or_default(),
                    jobset_id: jobset,
                    ranges: cut_ranges(
                        file.get_i64(TaskFileAttr::startEvent).unwrap_or(0),
                        n_events,
                        per_range,
                    ),
                    attempts: es.max_attempt,
                });
            }
        }
        events.insert_event_ranges(&rows).await?;
        Ok(jobsets)
    }

    /// The queue of each job of a batch: the task's `site` if it names one, else brokerage's
    /// rule for the batch's first job, each job counted in its queue's load as it is placed
    /// (so a batch spreads over the queues that fit, least loaded first). `None` when no
    /// queue fits: submission then fails the job with brokerage's reasons.
    async fn place_jobs(
        &self,
        task: &TaskSpec,
        layout: &TaskLayout,
        groups: &[&[TaskFileSpec]],
    ) -> Result<Vec<Option<String>>, ServiceError> {
        if let Some(site) = task.get_str(TaskAttr::site) {
            return Ok(vec![Some(site.to_string()); groups.len()]);
        }
        let Some(first) = groups.first() else {
            return Ok(Vec::new());
        };
        let probe = task_job(
            task,
            layout,
            first,
            0,
            &HashMap::new(),
            &SiteDatasets::default(),
        );
        let (queues, mut load) = self.brokerage_inputs().await?;
        Ok(groups
            .iter()
            .map(|_| {
                let name = choose_queue(&queues, &load, &probe)?.name.clone();
                *load.entry(name.clone()).or_default() += 1;
                Some(name)
            })
            .collect())
    }

    /// The task's datasets at `site`: its instance of each output template and, for a task
    /// with a build step, its library dataset, made on first use.
    async fn site_datasets(
        &self,
        task: &TaskSpec,
        layout: &TaskLayout,
        site: Option<&str>,
        with_lib: bool,
    ) -> Result<SiteDatasets, ServiceError> {
        let Some(site) = site else {
            return Ok(SiteDatasets::default());
        };
        let mut wanted: Vec<DatasetSpec> = layout
            .datasets
            .iter()
            .filter(|d| {
                d.get_str(DatasetAttr::r#type)
                    .is_some_and(|t| t.starts_with(TEMPLATE_PREFIX))
            })
            .map(site_dataset)
            .collect();
        if with_lib {
            wanted.push(lib_dataset(task));
        }
        let known: Vec<DatasetSpec> = layout
            .datasets
            .iter()
            .filter(|d| d.get_str(DatasetAttr::site) == Some(site))
            .cloned()
            .collect();
        let present = match wanted
            .iter()
            .all(|w| known.iter().any(|k| same_site_dataset(k, w)))
        {
            true => known,
            false => {
                let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
                self.stores
                    .jedi
                    .add_site_datasets(id, site, &wanted)
                    .await?
            }
        };
        let mut at = SiteDatasets {
            site: Some(site.to_string()),
            ..Default::default()
        };
        for dataset in present {
            match (
                dataset.get_str(DatasetAttr::r#type),
                dataset.get_i64(DatasetAttr::templateID),
            ) {
                (Some("lib"), _) => at.lib = Some(dataset),
                (_, Some(template)) => {
                    at.outputs.insert(template, dataset);
                }
                _ => {}
            }
        }
        Ok(at)
    }

    /// Where the library of the site `at` stands; its build job is made when there is none.
    async fn library_at(
        &self,
        task: &TaskSpec,
        build: &BuildSpec,
        params: &Map<String, Json>,
        at: &SiteDatasets,
    ) -> Result<Library, ServiceError> {
        let Some(lib_dataset) = &at.lib else {
            return Ok(Library::None);
        };
        let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
        let lib_id = lib_dataset.get_i64(DatasetAttr::datasetID);
        let lib_name = lib_dataset.get_str(DatasetAttr::datasetName).unwrap_or("");
        let of_site = |files: Vec<TaskFileSpec>| {
            files
                .into_iter()
                .find(|f| f.get_i64(TaskFileAttr::datasetID) == lib_id)
        };
        if let Some(row) = of_site(self.stores.jedi.lib_files(id).await?) {
            return Ok(match row.get_str(TaskFileAttr::status) {
                Some("finished") => Library::Ready(self.built_library(&row, lib_name).await?),
                _ => Library::Building(library_input(&row, lib_name, None)),
            });
        }
        let panda_id = self.stores.jobs.allocate_panda_ids(1).await?[0];
        let mut row = TaskFileSpec::new();
        row.set(
            TaskFileAttr::datasetID,
            lib_dataset.get(DatasetAttr::datasetID).clone(),
        );
        row.set(TaskFileAttr::lfn, text(&format!("{lib_name}.lib.tgz")));
        row.set(TaskFileAttr::GUID, text(&new_guid()));
        row.set(TaskFileAttr::scope, text(&dataset_scope(lib_name)));
        row.set(TaskFileAttr::r#type, text("lib"));
        row.set(TaskFileAttr::status, text("running"));
        row.set(TaskFileAttr::proc_status, text("running"));
        row.set(TaskFileAttr::attemptNr, int(0));
        row.set(TaskFileAttr::maxAttempt, int(max_attempt(params)));
        row.set(TaskFileAttr::keepTrack, int(1));
        row.set(TaskFileAttr::PandaID, int(panda_id));
        if self.stores.jedi.start_build(id, &row).await? {
            let source_url = param_str(params, "sourceURL").unwrap_or("");
            let job = build_job(task, build, source_url, at, &row, panda_id);
            self.submit_prepared(&Identity::anonymous(), vec![job], &HashSet::new())
                .await?;
            tracing::info!(target: "panda::jedi", task_id = id, panda_id,
                site = at.site.as_deref(), "build job made");
            return Ok(Library::Building(library_input(&row, lib_name, None)));
        }
        // Another generator made this site's build meanwhile: wait for that one.
        Ok(match of_site(self.stores.jedi.lib_files(id).await?) {
            Some(row) => Library::Building(library_input(&row, lib_name, None)),
            None => Library::None,
        })
    }

    /// A finished library as run jobs take it: with the size and checksum its build job
    /// reported.
    async fn built_library(
        &self,
        row: &TaskFileSpec,
        lib_name: &str,
    ) -> Result<FileSpec, ServiceError> {
        let build_job = match row.get_i64(TaskFileAttr::PandaID) {
            Some(panda_id) => self.stores.jobs.get_job(panda_id).await?,
            None => None,
        };
        let reported = build_job.as_ref().and_then(|j| {
            j.files
                .iter()
                .find(|f| f.get_str(FileAttr::lfn) == row.get_str(TaskFileAttr::lfn))
        });
        Ok(library_input(row, lib_name, reported))
    }

    /// Starts the next attempt of each build that failed with attempts left; `false` when a
    /// build failed for good.
    async fn retry_builds(
        &self,
        task: &TaskSpec,
        build: &BuildSpec,
        params: &Map<String, Json>,
    ) -> Result<bool, ServiceError> {
        let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
        let libs = self.stores.jedi.lib_files(id).await?;
        if libs
            .iter()
            .any(|l| l.get_str(TaskFileAttr::status) == Some("failed"))
        {
            return Ok(false);
        }
        let due: Vec<&TaskFileSpec> = libs
            .iter()
            .filter(|l| l.get_str(TaskFileAttr::status) == Some("ready"))
            .collect();
        if due.is_empty() {
            return Ok(true);
        }
        let layout = self.stores.jedi.task_layout(id).await?;
        let source_url = param_str(params, "sourceURL").unwrap_or("");
        for row in due {
            let Some(dataset) = layout.datasets.iter().find(|d| {
                d.get_i64(DatasetAttr::datasetID) == row.get_i64(TaskFileAttr::datasetID)
            }) else {
                continue;
            };
            let panda_id = self.stores.jobs.allocate_panda_ids(1).await?[0];
            let claim = FileClaim {
                dataset_id: row.get_i64(TaskFileAttr::datasetID).unwrap_or_default(),
                file_id: row.get_i64(TaskFileAttr::fileID).unwrap_or_default(),
                panda_id,
            };
            if self
                .stores
                .jedi
                .claim_task_files(id, &[claim], &[])
                .await?
                .is_some()
            {
                let at = SiteDatasets {
                    site: dataset.get_str(DatasetAttr::site).map(str::to_string),
                    outputs: HashMap::new(),
                    lib: Some(dataset.clone()),
                };
                let job = build_job(task, build, source_url, &at, row, panda_id);
                self.submit_prepared(&Identity::anonymous(), vec![job], &HashSet::new())
                    .await?;
                tracing::info!(target: "panda::jedi", task_id = id, panda_id,
                    "build job retried");
            }
        }
        Ok(true)
    }

    /// Upstream's Activator: the jobs held for a library that is now built get it as a ready
    /// input (with the size and checksum the build reported) and are activated once all
    /// their inputs are ready; when a build failed for good, the jobs held for any library
    /// of the task fail. Returns how many jobs were released or failed.
    async fn release_held_jobs(
        &self,
        task_id: i64,
        libs: &[TaskFileSpec],
        build_failed: bool,
    ) -> Result<usize, ServiceError> {
        if libs.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let out_of_time = || started.elapsed().as_secs() > RUN_SECONDS;
        let mut done = 0;
        if build_failed {
            loop {
                let held = self
                    .stores
                    .jedi
                    .held_task_jobs(task_id, None, RELEASE_BATCH)
                    .await?;
                for panda_id in &held {
                    done += usize::from(self.fail_held_job(*panda_id).await?);
                }
                if (held.len() as i64) < RELEASE_BATCH || out_of_time() {
                    break;
                }
            }
            return Ok(done);
        }
        let layout = self.stores.jedi.task_layout(task_id).await?;
        for lib in libs
            .iter()
            .filter(|l| l.get_str(TaskFileAttr::status) == Some("finished"))
        {
            let Some(dataset) = layout.datasets.iter().find(|d| {
                d.get_i64(DatasetAttr::datasetID) == lib.get_i64(TaskFileAttr::datasetID)
            }) else {
                continue;
            };
            let Some(site) = dataset.get_str(DatasetAttr::site) else {
                continue;
            };
            let name = dataset.get_str(DatasetAttr::datasetName).unwrap_or("");
            let built = self.built_library(lib, name).await?;
            let built = HeldLibrary {
                lfn: built.get_str(FileAttr::lfn).unwrap_or("").to_string(),
                fsize: built.get_i64(FileAttr::fsize),
                checksum: built.get_str(FileAttr::checksum).map(str::to_string),
            };
            loop {
                let (given, activated) = self
                    .stores
                    .jedi
                    .activate_held_jobs(task_id, site, &built, RELEASE_BATCH)
                    .await?;
                done += activated.len();
                if (given as i64) < RELEASE_BATCH || out_of_time() {
                    break;
                }
            }
        }
        if done > 0 {
            tracing::info!(target: "panda::jedi", task_id, jobs = done, "held jobs released");
        }
        Ok(done)
    }

    /// Fails a job held for a library whose build failed for good.
    async fn fail_held_job(&self, panda_id: i64) -> Result<bool, ServiceError> {
        let outcome = ports::change_job(self.stores.changes.as_ref(), panda_id, |job, side| {
            if job.status() != Some(JobStatus::Assigned) {
                return Ok(Decision::Keep(false));
            }
            job.set(JobAttr::taskBufferErrorCode, int(crate::EC_KILL));
            job.set_str(
                JobAttr::taskBufferErrorDiag,
                "its library could not be built: the build job failed every attempt",
            )
            .ok();
            job.set_status(JobStatus::Failed, time::now());
            crate::kill::fail_outputs(job, side);
            Ok(Decision::Write(true))
        })
        .await;
        match outcome {
            Ok((_, changed)) => Ok(changed),
            Err(panda_store::StoreError::JobNotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// `ready → running`, with the start time, if the task is still `ready`.
    async fn task_now_running(&self, id: i64) -> Result<(), ServiceError> {
        ports::change_task(self.stores.changes.as_ref(), id, |task| {
            if task.get_str(TaskAttr::status) != Some("ready") {
                return Decision::Keep(());
            }
            task.set(TaskAttr::status, text("running"));
            task.set(TaskAttr::superStatus, text("running"));
            if task.get(TaskAttr::startTime).is_null() {
                task.set(TaskAttr::startTime, Value::Time(Some(time::now())));
            }
            Decision::Write(())
        })
        .await?;
        Ok(())
    }

    /// Step 4: accounts for ended attempts of up to `limit` tasks and closes the tasks that
    /// have nothing left to run.
    pub async fn post_process_tasks(&self, limit: i64) -> Result<StepCounts, ServiceError> {
        let mut counts = StepCounts::default();
        for task in self.stores.jedi.tasks_in_status(&PROCESSING, limit).await? {
            let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
            let status = task.get_str(TaskAttr::status).unwrap_or("").to_string();
            let stopping = matches!(status.as_str(), "finishing" | "aborting" | "toabort");
            let event_service = task.get_i64(TaskAttr::eventService) == Some(1);
            let started = std::time::Instant::now();
            loop {
                let accounted = self.account_attempts(id, stopping, event_service).await?;
                counts.files += accounted;
                // A full batch means more attempts ended: go on, within a bounded time.
                if (accounted as i64) < FILES_PER_RUN || started.elapsed().as_secs() > RUN_SECONDS {
                    break;
                }
            }
            let libs = self.stores.jedi.lib_files(id).await?;
            let build_failed = libs
                .iter()
                .any(|lib| lib.get_str(TaskFileAttr::status) == Some("failed"));
            let released = self.release_held_jobs(id, &libs, build_failed).await?;
            if released > 0 {
                // Held jobs failed with their build are accounted for in the same run.
                counts.files += self.account_attempts(id, stopping, event_service).await?;
            }
            counts.jobs += released;
            let files = self.stores.jedi.master_file_counts(id).await?;
            // A build that failed for good leaves nothing to run.
            let idle = files.running == 0 && (files.ready == 0 || stopping || build_failed);
            if files.total == 0 || !idle {
                continue;
            }
            let end = match status.as_str() {
                "aborting" | "toabort" => "aborted",
                _ => final_status(files.finished, files.total),
            };
            if self.close_task(id, &status, end).await? {
                counts.closed += 1;
                tracing::info!(target: "panda::jedi", task_id = id, status = end, "task closed");
            }
        }
        Ok(counts)
    }

    /// Accounts for the task's files whose jobs ended (at most [`FILES_PER_RUN`]), and, at
    /// most every [`LOST_CHECK_SECONDS`], for files whose job was never stored; returns how
    /// many.
    async fn account_attempts(
        &self,
        task_id: i64,
        stopping: bool,
        event_service: bool,
    ) -> Result<usize, ServiceError> {
        let jedi = &self.stores.jedi;
        let mut ended: Vec<(TaskFileSpec, String)> =
            jedi.ended_task_files(task_id, FILES_PER_RUN).await?;
        if lost_check_due() {
            let before = time::now() - chrono::Duration::minutes(LOST_JOB_MINUTES);
            for file in jedi.lost_task_files(task_id, before, FILES_PER_RUN).await? {
                tracing::warn!(target: "panda::jedi", task_id,
                    panda_id = file.get_i64(TaskFileAttr::PandaID), "a file's job was never stored");
                ended.push((file, "failed".into()));
            }
        }
        if ended.is_empty() {
            return Ok(0);
        }
        let mut results = Vec::with_capacity(ended.len());
        let mut finished = Vec::new();
        for (file, status) in &ended {
            let Some(outcome) = attempt_outcome(status, file, stopping, event_service) else {
                continue;
            };
            if outcome == FileOutcome::Finished {
                finished.extend(file.get_i64(TaskFileAttr::PandaID));
            }
            results.push(FileResult {
                dataset_id: file.get_i64(TaskFileAttr::datasetID).unwrap_or_default(),
                file_id: file.get_i64(TaskFileAttr::fileID).unwrap_or_default(),
                outcome,
                counts_as_failure: status == "failed",
            });
        }
        let outputs = jedi.finished_job_outputs(&finished).await?;
        jedi.record_file_results(task_id, &results, &outputs)
            .await?;
        Ok(results.len())
    }

    /// `prepared`, then the final status, if the task is still in `from`.
    async fn close_task(&self, task_id: i64, from: &str, end: &str) -> Result<bool, ServiceError> {
        let step = |next: &'static str, expect: String| {
            let changes = self.stores.changes.clone();
            async move {
                ports::change_task(changes.as_ref(), task_id, |task| {
                    if task.get_str(TaskAttr::status) != Some(expect.as_str()) {
                        return Decision::Keep(false);
                    }
                    task.set(TaskAttr::status, text(next));
                    task.set(TaskAttr::superStatus, text(next));
                    if next != "prepared" {
                        task.set(TaskAttr::endTime, Value::Time(Some(time::now())));
                    }
                    Decision::Write(true)
                })
                .await
                .map(|changed| changed.is_some_and(|(_, written)| written))
            }
        };
        if end == "aborted" {
            return Ok(step("aborted", from.to_string()).await?);
        }
        if !step("prepared", from.to_string()).await? {
            return Ok(false);
        }
        let end: &'static str = match end {
            "done" => "done",
            "finished" => "finished",
            _ => "failed",
        };
        Ok(step(end, "prepared".to_string()).await?)
    }

    /// The task's master-input files: total, finished, failed (what pbook shows).
    pub async fn task_file_counts(&self, task_id: i64) -> Result<crate::FileCounts, ServiceError> {
        Ok(self.stores.jedi.master_file_counts(task_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nobuild_params() -> Map<String, Json> {
        let params = json!({
            "taskName": "user.tester.test/", "vo": "atlas", "prodSourceLabel": "user",
            "nEvents": 3, "nEventsPerJob": 1, "noInput": true, "sourceURL": "https://cache:25443",
            "log": {"dataset": "user.tester.test.log/", "container": "user.tester.test.log/",
                    "type": "template", "param_type": "log",
                    "value": "user.tester.test.log.$JEDITASKID.${SN}.log.tgz"},
            "jobParameters": [
                {"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
                {"type": "constant", "value": "-r ."},
                {"type": "constant", "value": "__delimiter__", "hidden": true},
                {"type": "constant", "value": "-a jobO.f76a.tar.gz"},
                {"type": "template", "value": "user.tester.$JEDITASKID._${SN/P}.out.txt",
                 "param_type": "output", "dataset": "user.tester.test_out.txt/",
                 "container": "user.tester.test_out.txt/", "hidden": true},
                {"type": "constant", "value": "-o \"{'out.txt': 'user.tester.$JEDITASKID._${SN/P}.out.txt'}\""},
                {"type": "constant", "value": "-p \"", "padding": false},
                {"type": "constant", "value": "echo%20hello", "padding": false},
                {"type": "constant", "value": "\""}]
        });
        params.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn refinement_builds_jedis_template_and_datasets() {
        let mut task = TaskSpec::new();
        task.set(TaskAttr::vo, text("atlas"));
        let refined = refine(&task, &nobuild_params(), "http://srv:25080").expect("refined");
        assert_eq!(
            refined.job_params_template,
            "-j \"\" --sourceURL https://cache:25443 -r . -a jobO.f76a.tar.gz \
             -o \"{'out.txt': '${OUTPUT0}'}\" -p \"echo%20hello\""
        );
        assert_eq!(
            refined.task.get_str(TaskAttr::transPath),
            Some("http://srv:25080/trf/user/runGen-00-00-02")
        );
        let kinds: Vec<&str> = refined
            .datasets
            .iter()
            .map(|d| d.spec.get_str(DatasetAttr::r#type).unwrap_or(""))
            .collect();
        assert_eq!(kinds, ["pseudo_input", "tmpl_log", "tmpl_output"]);
        let log = &refined.datasets[1].spec;
        assert_eq!(
            log.get_str(DatasetAttr::datasetName),
            Some("user.tester.test.log/")
        );
        // Each site gets its instance: `<template>.<datasetID>` in the template's container.
        let mut template = log.clone();
        template.set(DatasetAttr::datasetID, int(17));
        let at_site = site_dataset(&template);
        assert_eq!(at_site.get_str(DatasetAttr::r#type), Some("log"));
        assert_eq!(
            at_site.get_str(DatasetAttr::datasetName),
            Some("user.tester.test.log.${DATASETID}")
        );
        assert_eq!(
            at_site.get_str(DatasetAttr::containerName),
            Some("user.tester.test.log/")
        );
        assert_eq!(at_site.get_i64(DatasetAttr::templateID), Some(17));
    }

    #[test]
    fn bad_parameters_are_named() {
        let task = TaskSpec::new();
        let mut params = nobuild_params();
        params.insert("jobParameters".into(), json!("not a list"));
        assert!(refine(&task, &params, "")
            .expect_err("refused")
            .contains("jobParameters"));
        let mut params = nobuild_params();
        params.remove("noInput");
        assert!(refine(&task, &params, "")
            .expect_err("refused")
            .contains("neither noInput nor an input dataset"));
        let mut params = nobuild_params();
        params.insert("nEvents".into(), json!(200_001));
        assert!(pseudo_files(&params)
            .expect_err("refused")
            .contains("at most"));
        for (key, bad) in [
            ("nEventsPerWorker", json!(0)),
            ("nEventsPerWorker", json!("ten")),
            ("nEventsPerWorker", json!(1_000_001)),
            ("maxAttemptES", json!(101)),
        ] {
            let mut params = nobuild_params();
            params.insert("nEventsPerWorker".into(), json!(5));
            params.insert(key.into(), bad.clone());
            assert!(
                refine(&task, &params, "")
                    .expect_err("refused")
                    .contains(key),
                "{key} = {bad}"
            );
        }
    }

    #[test]
    fn an_event_service_task_is_flagged_and_carries_its_split_rules() {
        let task = TaskSpec::new();
        let mut params = nobuild_params();
        assert_eq!(event_service(&params), Ok(None));
        params.insert("nEventsPerWorker".into(), json!(4));
        let refined = refine(&task, &params, "").expect("refined");
        assert_eq!(refined.task.get_i64(TaskAttr::eventService), Some(1));
        assert_eq!(
            refined.task.get_str(TaskAttr::splitRule),
            Some("ES=4,XA=10")
        );
    }

    #[test]
    fn pseudo_files_cover_the_events() {
        let mut params = nobuild_params();
        params.insert("nEvents".into(), json!(5));
        params.insert("nEventsPerJob".into(), json!(2));
        let files = pseudo_files(&params).expect("files");
        let ranges: Vec<(i64, i64)> = files
            .iter()
            .map(|f| {
                (
                    f.get_i64(TaskFileAttr::startEvent).unwrap_or(-1),
                    f.get_i64(TaskFileAttr::endEvent).unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(ranges, [(0, 1), (2, 3), (4, 4)]);
    }

    #[test]
    fn names_scopes_and_final_statuses_are_jedis() {
        assert_eq!(
            file_name(
                "user.tester.test.log.$JEDITASKID.${SN}.log.tgz",
                10000042,
                1
            ),
            "user.tester.test.log.10000042.000001.log.tgz"
        );
        assert_eq!(dataset_scope("user.Tester.test.log.17"), "user.tester");
        assert_eq!(dataset_scope("mc23_13p6TeV.x"), "mc23_13p6TeV");
        assert_eq!(final_status(3, 3), "done");
        assert_eq!(final_status(1, 3), "finished");
        assert_eq!(final_status(0, 3), "failed");
        let guid = new_guid();
        assert_eq!(guid.len(), 36);
        assert_ne!(guid, new_guid());
    }
}
