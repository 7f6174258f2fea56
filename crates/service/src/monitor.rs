//! The embedded monitor's rules: which filters each page takes and how far each is bounded,
//! the time windows, and the views the pages are made of (summaries, dataset progress, a
//! job's log tarball on the local storage element).
//!
//! Who may look is decided by the web tier from the verified identity (any authenticated
//! caller, or everyone when the operator opens the monitor). What a look costs is decided
//! here: a filter the page does not know is refused by name, a value is at most
//! [`MAX_VALUE_LEN`] characters, a filter at most [`MAX_VALUES_PER_FILTER`] values, every
//! listing at most [`MAX_LIMIT`] rows, and every read of the archive is bounded by a window
//! of at most [`MAX_DAYS`] days (except a task's or a job set's own jobs, found through
//! their indexes). Reading a log tarball's listing stops after [`MAX_LOG_ENTRIES`] entries or
//! [`MAX_LOG_BYTES`] bytes, on a blocking thread, two at a time. Nothing here writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, NaiveDateTime};
use panda_core::{
    DatasetAttr, DatasetSpec, FileAttr, JobAttr, JobSpec, JobStatus, TaskAttr, TaskSpec, Value,
};
pub use panda_store::HourCount;
use panda_store::{
    DisplayRows, ErrorGroup, HourlyScope, JobListing, OneOf, SiteStateCount, StatusLogEntry,
    TaskListing, WORKER_FILTERS,
};

use crate::error::ServiceError;
use crate::JobService;

/// Longest filter value accepted.
pub const MAX_VALUE_LEN: usize = 256;
/// Most values one filter may list (`jobstatus=failed|finished`).
pub const MAX_VALUES_PER_FILTER: usize = 20;
/// Most rows a listing returns (`limit`); pandamonium asks for 10,000.
pub const MAX_LIMIT: usize = 10_000;
/// Rows a listing returns without a `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Widest time window (`days`, `hours`).
pub const MAX_DAYS: i64 = 365;
/// The window of the job pages without `hours` or `days`, as BigPanDA's.
pub const DEFAULT_JOB_HOURS: i64 = 12;
/// The window of the task pages without `hours` or `days`.
pub const DEFAULT_TASK_DAYS: i64 = 30;
/// Entries of a log tarball listed at most.
pub const MAX_LOG_ENTRIES: usize = 10_000;
/// Bytes of a log tarball read, decompressed, to list it (pilot log tarballs are a few MB
/// to a few hundred).
pub const MAX_LOG_BYTES: u64 = 512 << 20;
/// Groups `/errors/` shows at most.
pub const MAX_ERROR_GROUPS: usize = 500;

/// Parameters that shape an answer instead of choosing rows; every page takes them.
const PRESENTATION: &[&str] = &[
    "json",
    "fields",
    "timestamp",
    "display_limit",
    "datasets",
    "extra",
    "outputs",
    "sortby",
    "limit",
    "hours",
    "days",
];

/// The job filters of `/jobs/`: the parameter, the attribute, whether it is a number.
const JOB_FILTERS: &[(&str, JobAttr, bool)] = &[
    ("jobstatus", JobAttr::jobStatus, false),
    ("computingsite", JobAttr::computingSite, false),
    ("jeditaskid", JobAttr::jediTaskID, true),
    ("taskid", JobAttr::jediTaskID, true),
    ("produsername", JobAttr::prodUserName, false),
    ("prodsourcelabel", JobAttr::prodSourceLabel, false),
    ("pandaid", JobAttr::PandaID, true),
    ("jobsetid", JobAttr::jobsetID, true),
    ("cloud", JobAttr::cloud, false),
    ("workinggroup", JobAttr::workingGroup, false),
    ("processingtype", JobAttr::processingType, false),
    ("transformation", JobAttr::transformation, false),
];

/// The orders `/jobs/` may be sorted by (`sortby=<name>[-asc|-desc]`).
const JOB_ORDERS: &[(&str, JobAttr)] = &[
    ("pandaid", JobAttr::PandaID),
    ("modificationtime", JobAttr::modificationTime),
    ("time", JobAttr::modificationTime),
    ("statechangetime", JobAttr::stateChangeTime),
    ("creationtime", JobAttr::creationTime),
    ("starttime", JobAttr::startTime),
    ("endtime", JobAttr::endTime),
    ("currentpriority", JobAttr::currentPriority),
    ("priority", JobAttr::currentPriority),
    ("computingsite", JobAttr::computingSite),
    ("jobstatus", JobAttr::jobStatus),
    ("produsername", JobAttr::prodUserName),
    ("attemptnr", JobAttr::attemptNr),
];

/// The task filters of `/tasks/` (besides `taskname`, a pattern).
const TASK_FILTERS: &[(&str, TaskAttr, bool)] = &[
    ("jeditaskid", TaskAttr::jediTaskID, true),
    ("status", TaskAttr::status, false),
    ("superstatus", TaskAttr::superStatus, false),
    ("username", TaskAttr::userName, false),
    ("reqid", TaskAttr::reqID, true),
    ("tasktype", TaskAttr::taskType, false),
    ("prodsourcelabel", TaskAttr::prodSourceLabel, false),
    ("workinggroup", TaskAttr::workingGroup, false),
    ("site", TaskAttr::site, false),
];

/// The attributes `/jobs/` summarises ("selectionsummary"), as BigPanDA's first columns.
pub const SUMMARY_FIELDS: &[(&str, JobAttr)] = &[
    ("jobstatus", JobAttr::jobStatus),
    ("computingsite", JobAttr::computingSite),
    ("produsername", JobAttr::prodUserName),
    ("prodsourcelabel", JobAttr::prodSourceLabel),
    ("jeditaskid", JobAttr::jediTaskID),
    ("cloud", JobAttr::cloud),
];

/// A page's query string, checked for size once: name and value pairs in order.
#[derive(Clone, Debug, Default)]
pub struct MonitorQuery {
    pairs: Vec<(String, String)>,
}

impl MonitorQuery {
    /// Checks every pair: a name of at most 64 characters, a value of at most
    /// [`MAX_VALUE_LEN`], at most 64 pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Result<MonitorQuery, ServiceError> {
        if pairs.len() > 64 {
            return Err(bad(format!("{} query parameters; at most 64", pairs.len())));
        }
        for (name, value) in &pairs {
            if name.len() > 64 {
                return Err(bad(format!(
                    "a parameter name of {} characters; at most 64",
                    name.len()
                )));
            }
            if value.chars().count() > MAX_VALUE_LEN {
                return Err(bad(format!(
                    "the value of {name} has {} characters; at most {MAX_VALUE_LEN}",
                    value.chars().count()
                )));
            }
        }
        Ok(MonitorQuery { pairs })
    }

    /// The last value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the parameter is present (`?json`, `?datasets=True`).
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    /// Whether a flag is on: present and not `0`, `false` or `no`.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no"))
    }

    /// Refuses parameters that are neither presentation nor one of `filters`.
    fn check_names(&self, filters: &[&str]) -> Result<(), ServiceError> {
        for (name, _) in &self.pairs {
            if !PRESENTATION.contains(&name.as_str()) && !filters.contains(&name.as_str()) {
                let mut known: Vec<&str> = filters.to_vec();
                known.extend_from_slice(PRESENTATION);
                return Err(bad(format!(
                    "unknown filter {name:?}; this page takes {}",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// `limit` (or `display_limit`), at most [`MAX_LIMIT`].
    pub fn limit(&self) -> Result<usize, ServiceError> {
        let text = self.get("limit").or_else(|| self.get("display_limit"));
        match text {
            None => Ok(DEFAULT_LIMIT),
            Some(t) => match t.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(bad(format!(
                    "limit {t:?} is not a number from 1 to {MAX_LIMIT}"
                ))),
            },
        }
    }

    /// The window from `hours` or `days`, `None` when neither is given.
    pub fn window(&self) -> Result<Option<Duration>, ServiceError> {
        let number = |name: &str, max: i64| -> Result<Option<i64>, ServiceError> {
            match self.get(name) {
                None => Ok(None),
                Some(t) => match t.trim().parse::<i64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                    _ => Err(bad(format!("{name} {t:?} is not a number from 1 to {max}"))),
                },
            }
        };
        if let Some(hours) = number("hours", MAX_DAYS * 24)? {
            return Ok(Some(Duration::hours(hours)));
        }
        Ok(number("days", MAX_DAYS)?.map(Duration::days))
    }

    /// The requested fields of `?fields=a,b`, lower-case.
    pub fn fields(&self) -> Option<Vec<String>> {
        self.get("fields").map(|f| {
            f.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        })
    }
}

fn bad(message: String) -> ServiceError {
    ServiceError::BadRequest(message)
}

/// A filter's values: `a|b|c` (or commas), each checked as a number or, for `jobstatus`, as
/// a known job state.
fn filter_values(name: &str, text: &str, numeric: bool) -> Result<Vec<Value>, ServiceError> {
    let parts: Vec<&str> = text
        .split(['|', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(bad(format!("{name} is empty")));
    }
    if parts.len() > MAX_VALUES_PER_FILTER {
        return Err(bad(format!(
            "{name} lists {} values; at most {MAX_VALUES_PER_FILTER}",
            parts.len()
        )));
    }
    parts
        .into_iter()
        .map(|part| {
            if numeric {
                part.parse::<i64>()
                    .map(|n| Value::Int(Some(n)))
                    .map_err(|_| bad(format!("{name} {part:?} is not a number")))
            } else if name == "jobstatus" && JobStatus::parse(part).is_none() {
                Err(bad(format!("jobstatus {part:?} is not a job state")))
            } else {
                Ok(Value::Text(Some(part.to_string())))
            }
        })
        .collect()
}

/// `/jobs/` as asked.
#[derive(Clone, Debug)]
pub struct JobsRequest {
    pub listing: JobListing,
    /// `?fields=`: only these keys per job in the JSON.
    pub fields: Option<Vec<String>>,
}

/// Reads `/jobs/`'s filters (and `/user/<name>/`'s, with the user fixed).
pub fn jobs_request(query: &MonitorQuery, now: NaiveDateTime) -> Result<JobsRequest, ServiceError> {
    let names: Vec<&str> = JOB_FILTERS.iter().map(|(n, _, _)| *n).collect();
    query.check_names(&names)?;
    let mut conditions = Vec::new();
    for (name, attr, numeric) in JOB_FILTERS {
        if let Some(text) = query.get(name) {
            conditions.push(OneOf {
                attr: *attr,
                values: filter_values(name, text, *numeric)?,
            });
        }
    }
    // A task's, a job set's or a job's own jobs are found through their indexes, whatever
    // their age; everything else is bounded by the window.
    let own = ["jeditaskid", "taskid", "pandaid", "jobsetid"]
        .iter()
        .any(|n| query.has(n));
    let since = match (query.window()?, own) {
        (Some(window), _) => Some(now - window),
        (None, true) => None,
        (None, false) => Some(now - Duration::hours(DEFAULT_JOB_HOURS)),
    };
    // The latest changes first, as an operator looks: what just happened (and what the
    // archive's index by site, state and time serves).
    let (order, descending) = match query.get("sortby") {
        None => (JobAttr::modificationTime, true),
        Some(text) => job_order(text)?,
    };
    Ok(JobsRequest {
        listing: JobListing {
            conditions,
            since,
            order,
            descending,
            limit: query.limit()?,
        },
        fields: query.fields(),
    })
}

fn job_order(text: &str) -> Result<(JobAttr, bool), ServiceError> {
    let lower = text.to_ascii_lowercase();
    let (name, descending) = match lower.rsplit_once('-') {
        Some((name, "asc" | "ascending")) => (name, false),
        Some((name, "desc" | "descending")) => (name, true),
        _ => (lower.as_str(), true),
    };
    JOB_ORDERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, attr)| (*attr, descending))
        .ok_or_else(|| {
            let known: Vec<&str> = JOB_ORDERS.iter().map(|(n, _)| *n).collect();
            bad(format!(
                "sortby {text:?}: sort by one of {}, with -asc or -desc",
                known.join(", ")
            ))
        })
}

/// Reads `/tasks/`'s filters. `taskname` is a pattern: `*` matches any text.
pub fn tasks_request(
    query: &MonitorQuery,
    now: NaiveDateTime,
) -> Result<TaskListing, ServiceError> {
    let mut names: Vec<&str> = TASK_FILTERS.iter().map(|(n, _, _)| *n).collect();
    names.push("taskname");
    query.check_names(&names)?;
    let mut conditions = Vec::new();
    for (name, attr, numeric) in TASK_FILTERS {
        if let Some(text) = query.get(name) {
            conditions.push(OneOf {
                attr: *attr,
                values: filter_values(name, text, *numeric)?,
            });
        }
    }
    let name_like = query.get("taskname").map(like_pattern);
    let since = match (query.window()?, query.has("jeditaskid")) {
        (Some(window), _) => Some(now - window),
        (None, true) => None,
        (None, false) => Some(now - Duration::days(DEFAULT_TASK_DAYS)),
    };
    Ok(TaskListing {
        conditions,
        name_like,
        since,
        limit: query.limit()?,
    })
}

/// Refuses every parameter that is not a presentation one (pages without filters).
pub fn presentation_only(query: &MonitorQuery) -> Result<(), ServiceError> {
    query.check_names(&[])
}

/// `/user/<name>/`: the user's jobs (`/jobs/`'s filters and window, with `produsername`
/// fixed) and tasks (the window of the task pages).
pub fn user_requests(
    query: &MonitorQuery,
    user: &str,
    now: NaiveDateTime,
) -> Result<(JobsRequest, TaskListing), ServiceError> {
    if query.has("produsername") {
        return Err(bad("produsername is the page's own: /user/<name>/".into()));
    }
    let mut jobs = jobs_request(query, now)?;
    jobs.listing.conditions.push(OneOf {
        attr: JobAttr::prodUserName,
        values: vec![Value::Text(Some(user.to_string()))],
    });
    let window = query.window()?;
    let tasks = TaskListing {
        conditions: vec![OneOf {
            attr: TaskAttr::userName,
            values: vec![Value::Text(Some(user.to_string()))],
        }],
        name_like: None,
        since: Some(now - window.unwrap_or(Duration::days(DEFAULT_TASK_DAYS))),
        limit: query.limit()?,
    };
    Ok((jobs, tasks))
}

/// A `*` pattern as SQL's LIKE: `*` is `%`, and LIKE's own `%` and `_` match themselves only
/// as far as LIKE allows without an escape (they stay wildcards, which only widens a match).
fn like_pattern(text: &str) -> String {
    text.replace('*', "%")
}

/// One job's errors: (component, code, diagnostic) for each component whose code is set and
/// not 0 (`panda_core::job::ERROR_COMPONENTS`).
pub fn job_errors(job: &JobSpec) -> Vec<(&'static str, i64, String)> {
    panda_core::job::ERROR_COMPONENTS
        .iter()
        .filter_map(|(name, code, diag)| {
            let code = job.get_i64(*code).filter(|c| *c != 0)?;
            let diag = job.get_str(*diag).unwrap_or_default().to_string();
            Some((*name, code, diag))
        })
        .collect()
}

/// Failed jobs of a listing with one component's code (`errsByCount`).
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorCount {
    pub component: &'static str,
    pub code: i64,
    pub count: i64,
    /// The diagnostic of the first such job.
    pub diag: String,
}

/// `/jobs/`: the jobs, how many of them have each value of the summary fields, and their
/// errors by count.
#[derive(Clone, Debug, Default)]
pub struct JobsView {
    pub jobs: Vec<JobSpec>,
    /// For each of [`SUMMARY_FIELDS`]: (value, count), largest first.
    pub summary: Vec<(&'static str, Vec<(String, i64)>)>,
    /// The failed jobs' errors, largest first.
    pub errors: Vec<ErrorCount>,
    /// The pilots' metadata by PandaID, read only when asked (`fields=metastruct`).
    pub metadata: std::collections::HashMap<i64, String>,
}

impl JobsView {
    fn of(jobs: Vec<JobSpec>) -> JobsView {
        let summary = SUMMARY_FIELDS
            .iter()
            .map(|(name, attr)| {
                let mut counts: BTreeMap<String, i64> = BTreeMap::new();
                for job in &jobs {
                    let value = job.get(*attr);
                    if !value.is_null() {
                        *counts.entry(value.render()).or_default() += 1;
                    }
                }
                let mut counts: Vec<(String, i64)> = counts.into_iter().collect();
                counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                (*name, counts)
            })
            .collect();
        let mut errors: BTreeMap<(&'static str, i64), ErrorCount> = BTreeMap::new();
        for job in jobs
            .iter()
            .filter(|j| j.status() == Some(JobStatus::Failed))
        {
            for (component, code, diag) in job_errors(job) {
                let entry = errors.entry((component, code)).or_insert(ErrorCount {
                    component,
                    code,
                    count: 0,
                    diag,
                });
                entry.count += 1;
            }
        }
        let mut errors: Vec<ErrorCount> = errors.into_values().collect();
        errors.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (a.component, a.code).cmp(&(b.component, b.code)))
        });
        JobsView {
            jobs,
            summary,
            errors,
            metadata: Default::default(),
        }
    }
}

/// A job's log tarball: its file row's name and where the local storage element has it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogTarball {
    pub lfn: String,
    pub scope: String,
    /// The file on the storage element, when it is there.
    pub path: Option<PathBuf>,
    pub size: Option<u64>,
}

/// `/job/<pandaid>/`.
#[derive(Clone, Debug)]
pub struct JobView {
    /// The job with its files, parameters and metadata.
    pub job: JobSpec,
    pub status_log: Vec<StatusLogEntry>,
    /// The jobs it was retried as, and the one it retries.
    pub retries: Vec<i64>,
    pub log: Option<LogTarball>,
}

/// A task's progress over its input datasets, as BigPanDA's `dsinfo`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatasetProgress {
    pub nfiles: i64,
    pub nfilesfinished: i64,
    pub nfilesfailed: i64,
    pub pctfinished: i64,
    pub pctfailed: i64,
}

impl DatasetProgress {
    /// Over the master input datasets (`input` and `pseudo_input` without a master).
    pub fn of(datasets: &[DatasetSpec]) -> DatasetProgress {
        let mut p = DatasetProgress::default();
        for ds in datasets {
            let kind = ds.get_str(DatasetAttr::r#type).unwrap_or_default();
            let master = ds.get_i64(DatasetAttr::masterID).is_none();
            if master && matches!(kind, "input" | "pseudo_input") {
                p.nfiles += ds.get_i64(DatasetAttr::nFiles).unwrap_or(0);
                p.nfilesfinished += ds.get_i64(DatasetAttr::nFilesFinished).unwrap_or(0);
                p.nfilesfailed += ds.get_i64(DatasetAttr::nFilesFailed).unwrap_or(0);
            }
        }
        if p.nfiles > 0 {
            p.pctfinished = 100 * p.nfilesfinished / p.nfiles;
            p.pctfailed = 100 * p.nfilesfailed / p.nfiles;
        }
        p
    }
}

/// A task with its datasets and progress.
#[derive(Clone, Debug)]
pub struct TaskView {
    pub task: TaskSpec,
    pub datasets: Vec<DatasetSpec>,
    pub progress: DatasetProgress,
}

/// `/task/<id>/`.
#[derive(Clone, Debug)]
pub struct TaskPage {
    pub view: TaskView,
    /// Its jobs by state.
    pub job_counts: Vec<(String, i64)>,
    /// (time, status, reason), oldest first.
    pub status_log: Vec<(Option<NaiveDateTime>, String, String)>,
    pub hourly: Vec<HourCount>,
}

/// `/site/<queue>/`.
#[derive(Clone, Debug)]
pub struct SitePage {
    pub name: String,
    /// The queue's CRIC record.
    pub record: serde_json::Value,
    pub counts: Vec<(String, i64)>,
    pub hourly: Vec<HourCount>,
}

/// The window of a queue's plot.
pub const PLOT_HOURS: i64 = 24;
/// How far back a task's plot goes at most (from the task's creation).
pub const TASK_PLOT_DAYS: i64 = 30;

impl JobService {
    /// `/jobs/` (and a user's jobs), with the jobs' metadata when `with_metadata`.
    pub async fn monitor_jobs(
        &self,
        listing: &JobListing,
        with_metadata: bool,
    ) -> Result<JobsView, ServiceError> {
        let jobs = self.stores.monitor.monitor_jobs(listing).await?;
        let ids: Vec<i64> = jobs.iter().map(JobSpec::panda_id).collect();
        let mut view = JobsView::of(jobs);
        if with_metadata {
            view.metadata = self
                .stores
                .monitor
                .jobs_metadata(&ids)
                .await?
                .into_iter()
                .collect();
        }
        Ok(view)
    }

    /// `/job/<pandaid>/`, `None` for a job no table holds. One pool connection for the page:
    /// under load each one is a wait in the pool's queue.
    pub async fn monitor_job(&self, panda_id: i64) -> Result<Option<JobView>, ServiceError> {
        let Some(page) = self.stores.monitor.monitor_job_page(panda_id).await? else {
            return Ok(None);
        };
        let log = self.log_tarball(&page.job);
        Ok(Some(JobView {
            job: page.job,
            status_log: page.status_log,
            retries: page.retries,
            log,
        }))
    }

    /// The job's log file and, when the local storage element has it, its path there.
    fn log_tarball(&self, job: &JobSpec) -> Option<LogTarball> {
        let file = job
            .files
            .iter()
            .find(|f| f.get_str(FileAttr::r#type) == Some("log"))?;
        let lfn = file.get_str(FileAttr::lfn)?.to_string();
        let scope = file
            .get_str(FileAttr::scope)
            .unwrap_or_default()
            .to_string();
        let found = storage_roots(&self.settings.cache_dir)
            .iter()
            .filter_map(|root| crate::catalog::se_path(root, &scope, &lfn))
            .find_map(|path| {
                let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
                Some((path, meta.len()))
            });
        Some(LogTarball {
            lfn,
            scope,
            path: found.as_ref().map(|(p, _)| p.clone()),
            size: found.map(|(_, s)| s),
        })
    }

    /// The names and sizes in a job's log tarball, at most [`MAX_LOG_ENTRIES`]; `None` when
    /// the job has no log on the local storage element.
    pub async fn log_listing(
        &self,
        panda_id: i64,
    ) -> Result<Option<(LogTarball, Vec<(String, u64)>)>, ServiceError> {
        let Some(job) = self.stores.jobs.get_job(panda_id).await? else {
            return Ok(None);
        };
        let Some(log) = self.log_tarball(&job) else {
            return Ok(None);
        };
        let Some(path) = log.path.clone() else {
            return Ok(None);
        };
        let _turn = LISTINGS
            .acquire()
            .await
            .map_err(|_| bad("the server is shutting down".into()))?;
        let entries = tokio::task::spawn_blocking(move || list_tarball(&path))
            .await
            .map_err(|e| bad(format!("listing the log tarball stopped: {e}")))?
            .map_err(|e| bad(format!("the log tarball cannot be read: {e}")))?;
        Ok(Some((log, entries)))
    }

    /// Where a job's log tarball is on the local storage element.
    pub async fn log_file(&self, panda_id: i64) -> Result<Option<LogTarball>, ServiceError> {
        let Some(job) = self.stores.jobs.get_job(panda_id).await? else {
            return Ok(None);
        };
        Ok(self.log_tarball(&job).filter(|l| l.path.is_some()))
    }

    /// `/tasks/`: the tasks with their datasets and progress.
    pub async fn monitor_tasks(
        &self,
        listing: &TaskListing,
    ) -> Result<Vec<TaskView>, ServiceError> {
        let tasks = self.stores.monitor.monitor_tasks(listing).await?;
        let ids: Vec<i64> = tasks
            .iter()
            .filter_map(|t| t.get_i64(TaskAttr::jediTaskID))
            .collect();
        let mut datasets = self.stores.monitor.datasets_of_tasks(&ids).await?;
        Ok(tasks
            .into_iter()
            .map(|task| {
                let id = task.get_i64(TaskAttr::jediTaskID);
                let (own, rest): (Vec<DatasetSpec>, Vec<DatasetSpec>) = datasets
                    .drain(..)
                    .partition(|d| d.get_i64(DatasetAttr::jediTaskID) == id);
                datasets = rest;
                TaskView {
                    progress: DatasetProgress::of(&own),
                    task,
                    datasets: own,
                }
            })
            .collect())
    }

    /// `/task/<id>/`, `None` for an unknown task; its plot from its creation, at most
    /// [`TASK_PLOT_DAYS`] back. One pool connection for the page.
    pub async fn monitor_task(
        &self,
        task_id: i64,
        now: NaiveDateTime,
    ) -> Result<Option<TaskPage>, ServiceError> {
        let plot_from = now - Duration::days(TASK_PLOT_DAYS);
        let Some(rows) = self
            .stores
            .monitor
            .monitor_task_page(task_id, plot_from)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(TaskPage {
            view: TaskView {
                progress: DatasetProgress::of(&rows.datasets),
                task: rows.task,
                datasets: rows.datasets,
            },
            job_counts: rows.job_counts,
            status_log: rows.status_log,
            hourly: rows.hourly,
        }))
    }

    /// `/errors/`: failed jobs of the last `window` by site and error codes, at most
    /// [`COUNTS_TTL`] old (or [`STALE_LIMIT`] while a fresher answer is being made).
    pub async fn monitor_errors(
        &self,
        window: Duration,
        now: NaiveDateTime,
    ) -> Result<Arc<Vec<ErrorGroup>>, ServiceError> {
        let since = now - window;
        self.kept_counts(
            |c| &c.errors,
            window,
            move |service| {
                Box::pin(async move {
                    let store = &service.stores.monitor;
                    store.error_groups(since, MAX_ERROR_GROUPS).await
                })
            },
        )
        .await
    }

    /// `/dash/`, `/sites/` and `/site/<queue>/`: jobs by site and state (active jobs, and
    /// archived jobs of the last `window`), at most [`COUNTS_TTL`] old (or [`STALE_LIMIT`]
    /// while a fresher answer is being made).
    pub async fn site_state_counts(
        &self,
        window: Duration,
        now: NaiveDateTime,
    ) -> Result<Arc<Vec<SiteStateCount>>, ServiceError> {
        let since = now - window;
        self.kept_counts(
            |c| &c.states,
            window,
            move |service| {
                Box::pin(async move { service.stores.monitor.site_state_counts(since).await })
            },
        )
        .await
    }

    /// A kept answer for `window` from the cache `pick` chooses: fresh as kept; stale as kept
    /// while this caller starts `make` in the background; missing made now.
    async fn kept_counts<T: Send + Sync + 'static>(
        &self,
        pick: fn(&CountsCache) -> &TimedAnswers<T>,
        window: Duration,
        make: impl Fn(JobService) -> Making<T>,
    ) -> Result<Arc<T>, ServiceError> {
        let key = window.num_seconds();
        match pick(&self.monitor_counts).lookup(key) {
            Kept::Fresh(found) => return Ok(found),
            Kept::Stale(found) => {
                let service = self.clone();
                let making = make(self.clone());
                tokio::spawn(async move {
                    if let Err(e) = pick(&service.monitor_counts).refreshed(key, making.await) {
                        tracing::warn!(error = %e, "monitor: refreshing the counts failed");
                    }
                });
                return Ok(found);
            }
            Kept::Missing => {}
        }
        pick(&self.monitor_counts).refreshed(key, make(self.clone()).await)
    }

    /// The queues by name with their CRIC records.
    pub async fn monitor_sites(&self) -> Result<Vec<(String, serde_json::Value)>, ServiceError> {
        let mut out = Vec::new();
        for (name, text) in self.stores.sites.all_queues().await? {
            let record = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            out.push((name, record));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// `/site/<queue>/`, `None` for an unknown queue.
    pub async fn monitor_site(
        &self,
        name: &str,
        now: NaiveDateTime,
    ) -> Result<Option<SitePage>, ServiceError> {
        let Some(text) = self.stores.sites.queue_json(name).await? else {
            return Ok(None);
        };
        let since = now - Duration::hours(PLOT_HOURS);
        let counts = self
            .site_state_counts(Duration::hours(PLOT_HOURS), now)
            .await?
            .iter()
            .filter(|c| c.site == name)
            .map(|c| (c.status.clone(), c.count))
            .collect();
        let hourly = self
            .stores
            .monitor
            .hourly_final_counts(&HourlyScope::Site(name.to_string()), since)
            .await?;
        Ok(Some(SitePage {
            name: name.to_string(),
            record: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            counts,
            hourly,
        }))
    }

    /// `/harvester/workers/`: workers updated in the window, filtered by
    /// `harvesterid`, `computingsite`, `status`, `workerid`.
    pub async fn monitor_workers(
        &self,
        query: &MonitorQuery,
        now: NaiveDateTime,
    ) -> Result<DisplayRows, ServiceError> {
        query.check_names(&WORKER_FILTERS)?;
        let mut filters = Vec::new();
        for name in WORKER_FILTERS {
            if let Some(text) = query.get(name) {
                let value = match name {
                    "workerid" => text
                        .trim()
                        .parse::<i64>()
                        .map(|n| Value::Int(Some(n)))
                        .map_err(|_| bad(format!("workerid {text:?} is not a number")))?,
                    _ => Value::Text(Some(text.to_string())),
                };
                filters.push((name, value));
            }
        }
        let window = query
            .window()?
            .unwrap_or(Duration::hours(DEFAULT_JOB_HOURS));
        Ok(self
            .stores
            .monitor
            .monitor_workers(&filters, now - window, query.limit()?)
            .await?)
    }
}

/// How old the counts of `/dash/`, `/sites/` and `/errors/` may be: they group every active
/// job, and many viewers should not each pay for that.
pub const COUNTS_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// How old an answer may be served while one request makes a fresher one in the background:
/// no viewer waits for the grouping except the first, or after a quiet minute.
pub const STALE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A count being made from the store, in the background or not.
type Making<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, panda_store::StoreError>> + Send>>;

/// What [`TimedAnswers::lookup`] found.
enum Kept<T> {
    Fresh(Arc<T>),
    /// Older than the TTL: serve it, and this caller refreshes it (no other is told to).
    Stale(Arc<T>),
    Missing,
}

/// Answers by window: fresh for [`COUNTS_TTL`], then served stale up to [`STALE_LIMIT`]
/// while one refresh runs. At most 16 windows are kept (the pages ask for few; more from one
/// client clear the lot rather than grow it).
pub struct TimedAnswers<T> {
    kept: std::sync::Mutex<std::collections::HashMap<i64, Entry<T>>>,
}

struct Entry<T> {
    made: std::time::Instant,
    value: Arc<T>,
    refreshing: bool,
}

impl<T> Default for TimedAnswers<T> {
    fn default() -> Self {
        TimedAnswers {
            kept: std::sync::Mutex::default(),
        }
    }
}

impl<T> TimedAnswers<T> {
    fn lookup(&self, key: i64) -> Kept<T> {
        let Ok(mut kept) = self.kept.lock() else {
            return Kept::Missing;
        };
        let Some(entry) = kept.get_mut(&key) else {
            return Kept::Missing;
        };
        let age = entry.made.elapsed();
        if age < COUNTS_TTL || (age < STALE_LIMIT && entry.refreshing) {
            Kept::Fresh(entry.value.clone())
        } else if age < STALE_LIMIT {
            entry.refreshing = true;
            Kept::Stale(entry.value.clone())
        } else {
            Kept::Missing
        }
    }

    /// Keeps a fresh answer; a failed one ends the refresh and is passed on.
    fn refreshed(
        &self,
        key: i64,
        made: Result<T, panda_store::StoreError>,
    ) -> Result<Arc<T>, ServiceError> {
        let Ok(mut kept) = self.kept.lock() else {
            return made.map(Arc::new).map_err(ServiceError::from);
        };
        match made {
            Ok(value) => {
                let value = Arc::new(value);
                if kept.len() >= 16 && !kept.contains_key(&key) {
                    kept.clear();
                }
                let entry = Entry {
                    made: std::time::Instant::now(),
                    value: value.clone(),
                    refreshing: false,
                };
                kept.insert(key, entry);
                Ok(value)
            }
            Err(e) => {
                if let Some(entry) = kept.get_mut(&key) {
                    entry.refreshing = false;
                }
                Err(e.into())
            }
        }
    }
}

/// The monitor's cached counts.
#[derive(Default)]
pub struct CountsCache {
    states: TimedAnswers<Vec<SiteStateCount>>,
    errors: TimedAnswers<Vec<ErrorGroup>>,
}

/// The roots of the local storage elements: every `file://` protocol path of the DDM
/// endpoints the server gives pilots (`<cache_dir>/ddmendpoints.json`).
fn storage_roots(cache_dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(cache_dir.join("ddmendpoints.json")) else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(endpoints)) = serde_json::from_str(&text) else {
        return Vec::new();
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    for endpoint in endpoints.values() {
        let Some(protocols) = endpoint.get("arprotocols").and_then(|p| p.as_object()) else {
            continue;
        };
        for list in protocols.values().filter_map(|l| l.as_array()) {
            for protocol in list {
                let local = protocol
                    .get("endpoint")
                    .and_then(|e| e.as_str())
                    .is_some_and(|e| e.starts_with("file://"));
                if let (true, Some(path)) = (local, protocol.get("path").and_then(|p| p.as_str())) {
                    let path = PathBuf::from(path);
                    if path.is_absolute() && !roots.contains(&path) {
                        roots.push(path);
                    }
                }
            }
        }
    }
    roots
}

/// The entries of a (gzipped) tar file, bounded by [`MAX_LOG_ENTRIES`] and [`MAX_LOG_BYTES`].
fn list_tarball(path: &Path) -> std::io::Result<Vec<(String, u64)>> {
    list_tar(std::io::BufReader::new(std::fs::File::open(path)?))
}

/// The entries of a tar stream, gzipped or not (the first two bytes say), bounded by
/// [`MAX_LOG_ENTRIES`] and [`MAX_LOG_BYTES`]. A pilot made the bytes: anything may be in
/// them, and a malformed archive is an error, never a panic.
pub fn list_tar(mut input: impl std::io::BufRead) -> std::io::Result<Vec<(String, u64)>> {
    use std::io::Read;
    let gzipped = input.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = match gzipped {
        true => Box::new(flate2::bufread::GzDecoder::new(input)),
        false => Box::new(input),
    };
    let mut archive = tar::Archive::new(reader.take(MAX_LOG_BYTES));
    let mut entries = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let name = entry.path()?.display().to_string();
        entries.push((name, entry.header().size().unwrap_or(0)));
        if entries.len() >= MAX_LOG_ENTRIES {
            break;
        }
    }
    Ok(entries)
}

/// Log tarballs listed at once: each is a decompression on a blocking thread, and a
/// hostile viewer asking for many must not take every core.
static LISTINGS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<MonitorQuery, ServiceError> {
        MonitorQuery::new(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    fn now() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_700_000_000, 0)
            .expect("time")
            .naive_utc()
    }

    #[test]
    fn unknown_filters_and_long_values_are_refused_by_name() {
        let q = query(&[("colour", "red")]).expect("sizes");
        let e = jobs_request(&q, now()).expect_err("unknown").to_string();
        assert!(e.contains("unknown filter \"colour\""), "{e}");
        let long = "x".repeat(1000);
        let e = query(&[("computingsite", long.as_str())])
            .expect_err("long")
            .to_string();
        assert!(e.contains("computingsite has 1000 characters"), "{e}");
        let e = jobs_request(&query(&[("jobstatus", "nonsense")]).expect("q"), now())
            .expect_err("state")
            .to_string();
        assert!(e.contains("not a job state"), "{e}");
        let e = jobs_request(&query(&[("pandaid", "abc")]).expect("q"), now())
            .expect_err("number")
            .to_string();
        assert!(e.contains("not a number"), "{e}");
        for limit in ["0", "10001", "x"] {
            let q = query(&[("limit", limit)]).expect("q");
            assert!(jobs_request(&q, now()).is_err(), "{limit}");
        }
    }

    #[test]
    fn a_query_is_bounded_in_parameters_names_and_values_per_filter() {
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("p{i}"), "x".into())).collect();
        let e = MonitorQuery::new(many)
            .expect_err("65 parameters")
            .to_string();
        assert!(e.contains("at most 64"), "{e}");
        let long_name = "n".repeat(65);
        let e = query(&[(long_name.as_str(), "x")])
            .expect_err("a long name")
            .to_string();
        assert!(e.contains("at most 64"), "{e}");
        let states = vec!["finished"; MAX_VALUES_PER_FILTER + 1].join("|");
        let q = query(&[("jobstatus", states.as_str())]).expect("sizes");
        let e = jobs_request(&q, now()).expect_err("21 values").to_string();
        assert!(e.contains("at most 20"), "{e}");
        let states = vec!["finished"; MAX_VALUES_PER_FILTER].join("|");
        let q = query(&[("jobstatus", states.as_str())]).expect("sizes");
        assert!(jobs_request(&q, now()).is_ok(), "20 values are taken");
    }

    #[test]
    fn a_listing_is_windowed_unless_it_names_its_own_jobs() {
        let r = jobs_request(&query(&[]).expect("q"), now()).expect("plain");
        assert_eq!(
            r.listing.since,
            Some(now() - Duration::hours(DEFAULT_JOB_HOURS))
        );
        assert_eq!(r.listing.limit, DEFAULT_LIMIT);
        let r = jobs_request(&query(&[("jeditaskid", "7")]).expect("q"), now()).expect("task");
        assert_eq!(r.listing.since, None);
        let r = jobs_request(
            &query(&[("jeditaskid", "7"), ("days", "2")]).expect("q"),
            now(),
        )
        .expect("task");
        assert_eq!(r.listing.since, Some(now() - Duration::days(2)));
        let r = jobs_request(
            &query(&[("jobstatus", "finished|failed"), ("sortby", "time-asc")]).expect("q"),
            now(),
        )
        .expect("states");
        assert_eq!(r.listing.conditions[0].values.len(), 2);
        assert_eq!(r.listing.order, JobAttr::modificationTime);
        assert!(!r.listing.descending);
        assert!(jobs_request(&query(&[("days", "366")]).expect("q"), now()).is_err());
    }

    #[test]
    fn task_names_are_patterns() {
        let l = tasks_request(
            &query(&[("taskname", "user.me.*"), ("datasets", "True")]).expect("q"),
            now(),
        )
        .expect("tasks");
        assert_eq!(l.name_like.as_deref(), Some("user.me.%"));
    }

    #[test]
    fn counts_are_kept_then_served_stale_to_all_but_the_one_refreshing() {
        let answers: TimedAnswers<u32> = TimedAnswers::default();
        assert!(matches!(answers.lookup(1), Kept::Missing));
        assert_eq!(answers.refreshed(1, Ok(7)).ok().as_deref(), Some(&7));
        assert!(matches!(answers.lookup(1), Kept::Fresh(v) if *v == 7));
        // Made a TTL ago: the first caller refreshes, the others get the kept answer.
        if let Ok(mut kept) = answers.kept.lock() {
            if let Some(entry) = kept.get_mut(&1) {
                entry.made -= COUNTS_TTL;
            }
        }
        assert!(matches!(answers.lookup(1), Kept::Stale(v) if *v == 7));
        assert!(matches!(answers.lookup(1), Kept::Fresh(v) if *v == 7));
        // A failed refresh lets the next caller try again.
        let failed = answers.refreshed(1, Err(panda_store::StoreError::Corrupt("x".into())));
        assert!(failed.is_err());
        assert!(matches!(answers.lookup(1), Kept::Stale(_)));
        // Past the stale limit nothing is served.
        if let Ok(mut kept) = answers.kept.lock() {
            if let Some(entry) = kept.get_mut(&1) {
                entry.made -= STALE_LIMIT;
            }
        }
        assert!(matches!(answers.lookup(1), Kept::Missing));
    }

    #[test]
    fn a_log_tarball_is_listed_gzipped_or_not_and_garbage_is_an_error() {
        let mut plain = tar::Builder::new(Vec::new());
        for name in ["pilotlog.txt", "payload.stdout"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_cksum();
            plain
                .append_data(&mut header, name, &b"hello"[..])
                .expect("append");
        }
        let plain = plain.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).expect("gzip");
        let gzipped = gz.finish().expect("gzip");
        for bytes in [&plain, &gzipped] {
            let entries = list_tar(bytes.as_slice()).expect("a listing");
            assert_eq!(
                entries,
                vec![
                    ("pilotlog.txt".to_string(), 5),
                    ("payload.stdout".to_string(), 5)
                ]
            );
        }
        assert!(list_tar(&b"\x1f\x8bnot gzip at all"[..]).is_err());
        let junk = vec![7u8; 1024];
        assert!(list_tar(junk.as_slice()).map_or(true, |e| e.is_empty()));
    }

    #[test]
    fn a_log_listing_stops_at_its_entry_limit() {
        let mut many = tar::Builder::new(Vec::new());
        for i in 0..=MAX_LOG_ENTRIES {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_cksum();
            many.append_data(&mut header, format!("f{i}"), &b""[..])
                .expect("append");
        }
        let many = many.into_inner().expect("tar");
        let entries = list_tar(many.as_slice()).expect("a listing");
        assert_eq!(entries.len(), MAX_LOG_ENTRIES);
    }

    #[test]
    fn progress_counts_the_master_inputs_only() {
        let mut input = DatasetSpec::new();
        input.set(DatasetAttr::r#type, Value::Text(Some("input".into())));
        input.set(DatasetAttr::nFiles, Value::Int(Some(4)));
        input.set(DatasetAttr::nFilesFinished, Value::Int(Some(3)));
        input.set(DatasetAttr::nFilesFailed, Value::Int(Some(1)));
        let mut output = DatasetSpec::new();
        output.set(DatasetAttr::r#type, Value::Text(Some("output".into())));
        output.set(DatasetAttr::nFiles, Value::Int(Some(10)));
        let p = DatasetProgress::of(&[input, output]);
        assert_eq!((p.nfiles, p.pctfinished, p.pctfailed), (4, 75, 25));
    }
}
