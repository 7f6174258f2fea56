//! Task processing, JEDI's part: what turns a registered user task into jobs and a finished
//! task. Four steps, each a daemon task, each safe to run on many nodes (every step locks
//! the task row and checks its status, files are claimed with a compare-and-set):
//!
//! 1. **Refine** (`registered → defined`): upstream's analysis defaults (the transformation
//!    `<wn_script_base_url>/trf/user/runGen-00-00-02`, 2000 MB per core, 10 attempts), the
//!    job-parameter template (the non-hidden `jobParameters` values, a space after each unless
//!    `"padding": false`, `${SURL}` replaced by the task's `sourceURL`, each output's LFN
//!    template by its stream `${OUTPUT<n>}`), the datasets (a `pseudo_dataset` master input
//!    for `noInput`, else the input dataset (`--inDS`), the log and each output with their
//!    file-name templates), and `reqID`,
//!    the owner's next jobset ID. Parameters that cannot be refined make the task `broken`
//!    with the reason in `errorDialog`.
//! 2. **Contents** (`defined → ready`): a `noInput` task gets `ceil(nEvents / nEventsPerJob)`
//!    pseudo files, each a range of events; a task with an input dataset gets its files from
//!    the dataset catalogue (`catalog::DatasetCatalog`), less those the input's `exclude`
//!    pattern names; at most [`MAX_TASK_FILES`]. An unknown dataset breaks the task.
//! 3. **Generate** (`ready → running`): one job per pseudo file, or per `nFilesPerJob` input
//!    files (`${IN/T}` and `${IN}` in the parameters become their names), named and parametrised as
//!    JEDI does (`<taskName>.<PandaID>`, `jobsetID = reqID`, the log
//!    `<name>.log.<jediTaskID>.<SN:06d>.log.tgz` in its dataset, scope from the dataset name),
//!    submitted through the ordinary path (brokerage among the online queues, activation).
//!    Jobs are `lockedby = jedi`, so the server's own retry leaves them to this module.
//! 4. **Post-process**: each ended attempt is accounted for in the file and its dataset's
//!    counters; a failed file goes back to `ready` while `attemptNr < maxAttempt` and the task
//!    is not being killed or finished; a finished job's outputs are registered in their
//!    datasets with the size and checksum the pilot reported. When no file is left to run,
//!    the task goes `prepared` and then `done` (every file finished), `finished` (some) or
//!    `failed` (none); a task being killed ends `aborted`.
//!
//! A task with a build step (`buildSpec`, prun without `--noBuild`) first gets one build
//! job (buildGen, label `panda`), which makes the library `<lib dataset>.lib.tgz`; its run
//! jobs are made only once the library is built, each with the library as an input,
//! `${LIB}` its name, at the build's site. A build retried up to `maxAttempt` and failed for
//! good fails the task.
//!
//! Not done here (yet): scouting, secondary datasets, one build per site, per-site output
//! datasets (one dataset per output stream, named `<name>.<datasetID>`).

use std::collections::HashMap;

use panda_core::identity::Identity;
use panda_core::{
    time, DatasetAttr, FileAttr, FileSpec, JobAttr, JobSpec, TaskAttr, TaskFileAttr, TaskFileSpec,
    TaskSpec, Value,
};
use panda_store::{ports, Decision, FileClaim, FileOutcome, FileResult};
use serde_json::{Map, Value as Json};

use crate::error::ServiceError;
use crate::JobService;

mod jobs;
mod refine;

use jobs::{build_job, task_job, with_library};
pub use jobs::{dataset_scope, file_name, new_guid};
use refine::max_attempt;
pub use refine::{
    build_spec, files_per_job, input_files, pseudo_files, refine, retry_attempts, BuildSpec,
};

/// Most files (and so jobs) one task may have.
pub const MAX_TASK_FILES: i64 = 200_000;
/// A file whose job cannot be found this long after it was given out counts as a failed
/// attempt (the generator stopped between claiming files and storing the jobs).
const LOST_JOB_MINUTES: i64 = 10;
/// How often this process looks for such files (the look is a scan of running files).
const LOST_CHECK_SECONDS: i64 = 300;
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

/// Where a task's build stands, for job generation.
enum Library {
    /// No build step.
    None,
    /// Being built (or a build job was just made): run jobs wait.
    Building,
    /// Built: run jobs take it as an input, at the build's site.
    Ready {
        file: FileSpec,
        site: Option<String>,
    },
    /// The build failed for good: no run job will be made.
    Failed,
}

/// How one attempt of a file ended, from its job's status.
fn attempt_outcome(job_status: &str, file: &TaskFileSpec, stopping: bool) -> Option<FileOutcome> {
    match job_status {
        "finished" => Some(FileOutcome::Finished),
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
            let library = match self.library_for(&task).await? {
                Library::Building => {
                    counts.tasks += 1;
                    continue;
                }
                Library::Failed => continue,
                ready => ready,
            };
            let per_job = files_per_job(&self.task_params(id).await?);
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
                let made = self.generate_for(&task, &files, &library, per_job).await?;
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

    async fn generate_for(
        &self,
        task: &TaskSpec,
        files: &[TaskFileSpec],
        library: &Library,
        per_job: usize,
    ) -> Result<usize, ServiceError> {
        let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
        let layout = self.stores.jedi.task_layout(id).await?;
        let groups: Vec<&[TaskFileSpec]> = files.chunks(per_job).collect();
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
        let jobs: Vec<JobSpec> = groups
            .iter()
            .zip(&ids)
            .enumerate()
            .map(|(i, (group, panda_id))| {
                let serials: HashMap<i64, i64> = first_serials
                    .iter()
                    .map(|(dataset, first)| (*dataset, first + i as i64))
                    .collect();
                let mut job = task_job(task, &layout, group, *panda_id, &serials);
                if let Library::Ready { file, site } = library {
                    with_library(&mut job, file, site.as_deref());
                }
                job
            })
            .collect();
        let submitted = self.submit_prepared(&Identity::anonymous(), jobs).await?;
        if task.get_str(TaskAttr::status) == Some("ready") {
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
        }
        tracing::info!(target: "panda::jedi", task_id = id, jobs = submitted.len(), "jobs generated");
        Ok(submitted.len())
    }

    /// Where the task's build stands; starts the build (or its next attempt) when it is due.
    async fn library_for(&self, task: &TaskSpec) -> Result<Library, ServiceError> {
        let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
        let params = self.task_params(id).await?;
        let Some(build) = build_spec(&params).ok().flatten() else {
            return Ok(Library::None);
        };
        let layout = self.stores.jedi.task_layout(id).await?;
        let Some(lib) = layout
            .datasets
            .iter()
            .find(|d| d.get_str(DatasetAttr::r#type) == Some("lib"))
        else {
            return Ok(Library::None);
        };
        let lib_id = lib.get_i64(DatasetAttr::datasetID).unwrap_or_default();
        let lib_name = lib
            .get_str(DatasetAttr::datasetName)
            .unwrap_or("")
            .to_string();
        let source_url = param_str(&params, "sourceURL").unwrap_or("");
        let row = self.stores.jedi.lib_file(id).await?;
        let status = row
            .as_ref()
            .and_then(|r| r.get_str(TaskFileAttr::status))
            .unwrap_or("")
            .to_string();
        match (row, status.as_str()) {
            (Some(row), "finished") => {
                let build_job = match row.get_i64(TaskFileAttr::PandaID) {
                    Some(panda_id) => self.stores.jobs.get_job(panda_id).await?,
                    None => None,
                };
                let site = build_job
                    .as_ref()
                    .and_then(|j| j.get_str(JobAttr::computingSite).map(str::to_string));
                let mut file = FileSpec::new();
                for (to, from) in [
                    (FileAttr::lfn, TaskFileAttr::lfn),
                    (FileAttr::GUID, TaskFileAttr::GUID),
                    (FileAttr::scope, TaskFileAttr::scope),
                ] {
                    file.set(to, row.get(from).clone());
                }
                let reported = build_job.as_ref().and_then(|j| {
                    j.files
                        .iter()
                        .find(|f| f.get_str(FileAttr::lfn) == row.get_str(TaskFileAttr::lfn))
                        .cloned()
                });
                if let Some(reported) = reported {
                    file.set(FileAttr::fsize, reported.get(FileAttr::fsize).clone());
                    file.set(FileAttr::checksum, reported.get(FileAttr::checksum).clone());
                }
                file.set(FileAttr::r#type, text("input"));
                file.set(FileAttr::dataset, text(&lib_name));
                file.set(FileAttr::prodDBlock, text(&lib_name));
                file.set(FileAttr::status, text("ready"));
                Ok(Library::Ready { file, site })
            }
            (Some(_), "failed") => Ok(Library::Failed),
            (Some(row), "ready") => {
                // A failed build with attempts left: its next attempt.
                let panda_id = self.stores.jobs.allocate_panda_ids(1).await?[0];
                let claim = FileClaim {
                    dataset_id: lib_id,
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
                    let job = build_job(task, &build, source_url, &lib_name, &row, panda_id);
                    self.submit_prepared(&Identity::anonymous(), vec![job])
                        .await?;
                }
                Ok(Library::Building)
            }
            (Some(_), _) => Ok(Library::Building),
            (None, _) => {
                let panda_id = self.stores.jobs.allocate_panda_ids(1).await?[0];
                let mut row = TaskFileSpec::new();
                row.set(TaskFileAttr::datasetID, int(lib_id));
                row.set(TaskFileAttr::lfn, text(&format!("{lib_name}.lib.tgz")));
                row.set(TaskFileAttr::GUID, text(&new_guid()));
                row.set(TaskFileAttr::scope, text(&dataset_scope(&lib_name)));
                row.set(TaskFileAttr::r#type, text("lib"));
                row.set(TaskFileAttr::status, text("running"));
                row.set(TaskFileAttr::proc_status, text("running"));
                row.set(TaskFileAttr::attemptNr, int(0));
                row.set(TaskFileAttr::maxAttempt, int(max_attempt(&params)));
                row.set(TaskFileAttr::keepTrack, int(1));
                row.set(TaskFileAttr::PandaID, int(panda_id));
                if self.stores.jedi.start_build(id, &row).await? {
                    let job = build_job(task, &build, source_url, &lib_name, &row, panda_id);
                    self.submit_prepared(&Identity::anonymous(), vec![job])
                        .await?;
                    tracing::info!(target: "panda::jedi", task_id = id, panda_id, "build job made");
                    self.task_now_running(id).await?;
                }
                Ok(Library::Building)
            }
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
            let started = std::time::Instant::now();
            loop {
                let accounted = self.account_attempts(id, stopping).await?;
                counts.files += accounted;
                // A full batch means more attempts ended: go on, within a bounded time.
                if (accounted as i64) < FILES_PER_RUN || started.elapsed().as_secs() > 30 {
                    break;
                }
            }
            let files = self.stores.jedi.master_file_counts(id).await?;
            let build_failed = self
                .stores
                .jedi
                .lib_file(id)
                .await?
                .is_some_and(|lib| lib.get_str(TaskFileAttr::status) == Some("failed"));
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
    async fn account_attempts(&self, task_id: i64, stopping: bool) -> Result<usize, ServiceError> {
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
            let Some(outcome) = attempt_outcome(status, file, stopping) else {
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
        assert_eq!(kinds, ["pseudo_input", "log", "output"]);
        assert_eq!(
            refined.datasets[1].spec.get_str(DatasetAttr::datasetName),
            Some("user.tester.test.log.${DATASETID}")
        );
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
