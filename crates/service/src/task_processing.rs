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
    time, DatasetAttr, DatasetSpec, FileAttr, FileSpec, JobAttr, JobSpec, TaskAttr, TaskFileAttr,
    TaskFileSpec, TaskSpec, Value,
};
use panda_store::{
    ports, Decision, FileClaim, FileOutcome, FileResult, NewDataset, OutputTemplate, RefinedTask,
    TaskLayout,
};
use serde_json::{Map, Value as Json};

use crate::error::ServiceError;
use crate::JobService;

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

/// One item of `jobParameters`.
struct JobParameter<'a> {
    kind: &'a str,
    value: &'a str,
    hidden: bool,
    padding: bool,
    item: &'a Map<String, Json>,
}

fn job_parameters(params: &Map<String, Json>) -> Result<Vec<JobParameter<'_>>, RefineError> {
    let Some(Json::Array(items)) = params.get("jobParameters") else {
        return Err("the task parameters need jobParameters, a list".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = item
                .as_object()
                .ok_or_else(|| format!("jobParameters[{i}] is not an object"))?;
            let field = |key: &str| {
                item.get(key)
                    .and_then(Json::as_str)
                    .ok_or_else(|| format!("jobParameters[{i}] needs {key}, a string"))
            };
            Ok(JobParameter {
                kind: field("type")?,
                value: field("value")?,
                hidden: item.get("hidden").and_then(Json::as_bool) == Some(true),
                padding: item.get("padding").and_then(Json::as_bool) != Some(false),
                item,
            })
        })
        .collect()
}

/// The scope of a user or group dataset: its first two fields, lower-cased (upstream's
/// `extractScope`); otherwise its first field.
pub fn dataset_scope(name: &str) -> String {
    let fields: Vec<&str> = name.split('.').collect();
    match fields.first() {
        Some(first) if (*first == "user" || *first == "group") && fields.len() > 1 => {
            format!("{}.{}", fields[0], fields[1]).to_lowercase()
        }
        Some(first) => first.to_string(),
        None => String::new(),
    }
}

/// A dataset of a refined task.
fn dataset(kind: &str, name: &str, container: Option<&str>, vo: &Value) -> DatasetSpec {
    let mut spec = DatasetSpec::new();
    spec.set(DatasetAttr::datasetName, text(name));
    if let Some(container) = container {
        spec.set(DatasetAttr::containerName, text(container));
    }
    spec.set(DatasetAttr::r#type, text(kind));
    spec.set(DatasetAttr::status, text("defined"));
    spec.set(DatasetAttr::vo, vo.clone());
    for counter in [
        DatasetAttr::nFiles,
        DatasetAttr::nFilesToBeUsed,
        DatasetAttr::nFilesUsed,
        DatasetAttr::nFilesFinished,
        DatasetAttr::nFilesFailed,
        DatasetAttr::nFilesOnHold,
        DatasetAttr::nEvents,
        DatasetAttr::nEventsToBeUsed,
        DatasetAttr::nEventsUsed,
    ] {
        spec.set(counter, int(0));
    }
    spec
}

/// The dataset a stream's files go to: the template name without its trailing `/`, with the
/// dataset's ID appended once it has one (`${DATASETID}`, filled in by the store).
fn file_dataset_name(template: &str) -> String {
    format!("{}.${{DATASETID}}", template.trim_end_matches('/'))
}

/// The transformation of a user task: `runGen` from this server's `/trf/user/`.
fn transformation(base: &str, build: bool) -> String {
    let name = match build {
        true => "buildGen-00-00-01",
        false => "runGen-00-00-02",
    };
    format!("{}/trf/user/{name}", base.trim_end_matches('/'))
}

/// Refinement of a registered task: its new attributes, datasets and templates.
pub fn refine(
    task: &TaskSpec,
    params: &Map<String, Json>,
    trf_base_url: &str,
) -> Result<RefinedTask, RefineError> {
    let items = job_parameters(params)?;
    let source_url = param_str(params, "sourceURL").unwrap_or("");
    let vo = task.get(TaskAttr::vo).clone();
    let mut datasets = Vec::new();
    let build = build_spec(params)?;
    let master = match params.get("noInput").and_then(Json::as_bool) == Some(true) {
        true => dataset("pseudo_input", "pseudo_dataset", None, &vo),
        false => {
            let name = input_dataset(&items, params).ok_or(
                "the task has neither noInput nor an input dataset (dsForIN, or a jobParameters \
                 template with param_type input)",
            )?;
            dataset("input", name, None, &vo)
        }
    };
    let mut master = master;
    master.set(DatasetAttr::streamName, text("IN"));
    datasets.push(NewDataset {
        spec: master,
        template: None,
    });
    if build.is_some() {
        let task_id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
        let mut lib = dataset("lib", &lib_dataset_name(task_id), None, &vo);
        lib.set(DatasetAttr::streamName, text("LIB"));
        datasets.push(NewDataset {
            spec: lib,
            template: None,
        });
    }
    let log = params
        .get("log")
        .and_then(Json::as_object)
        .ok_or("the task parameters need log, an object with dataset and value")?;
    let log_dataset = log
        .get("dataset")
        .and_then(Json::as_str)
        .ok_or("log needs dataset, a string")?;
    let log_value = log
        .get("value")
        .and_then(Json::as_str)
        .ok_or("log needs value, the log file's name template")?;
    let container = log.get("container").and_then(Json::as_str);
    let mut log_spec = dataset("log", &file_dataset_name(log_dataset), container, &vo);
    log_spec.set(DatasetAttr::streamName, text("LOG0"));
    datasets.push(NewDataset {
        spec: log_spec,
        template: Some(OutputTemplate {
            dataset_id: 0,
            file_name_template: log_value.to_string(),
            stream: "LOG0".into(),
            out_type: "log".into(),
            serial_nr: 1,
        }),
    });
    let mut template = String::new();
    let mut outputs: Vec<(String, String)> = Vec::new();
    for item in &items {
        if item.kind == "template"
            && item.item.get("param_type").and_then(Json::as_str) == Some("output")
        {
            let stream = format!("OUTPUT{}", outputs.len());
            let dataset_name = item
                .item
                .get("dataset")
                .and_then(Json::as_str)
                .ok_or("an output template needs dataset, a string")?;
            let container = item.item.get("container").and_then(Json::as_str);
            let mut spec = dataset("output", &file_dataset_name(dataset_name), container, &vo);
            spec.set(DatasetAttr::streamName, text(&stream));
            datasets.push(NewDataset {
                spec,
                template: Some(OutputTemplate {
                    dataset_id: 0,
                    file_name_template: item.value.to_string(),
                    stream: stream.clone(),
                    out_type: "output".into(),
                    serial_nr: 1,
                }),
            });
            outputs.push((item.value.to_string(), stream));
        }
        if item.hidden {
            continue;
        }
        if item.kind != "constant" && item.kind != "template" {
            return Err(format!(
                "job parameter type {:?} is not supported (constant or template)",
                item.kind
            ));
        }
        template.push_str(&item.value.replace("${SURL}", source_url));
        if item.padding {
            template.push(' ');
        }
    }
    let mut template = template.trim_end().to_string();
    for (lfn_template, stream) in &outputs {
        template = template.replace(lfn_template.as_str(), &format!("${{{stream}}}"));
    }
    let mut refined = task.clone();
    let build = false;
    let trf = param_str(params, "transPath")
        .map(str::to_string)
        .unwrap_or_else(|| transformation(trf_base_url, build));
    refined.set(TaskAttr::transPath, text(&trf));
    let defaults: [(TaskAttr, Value); 7] = [
        (TaskAttr::ramCount, int(2000)),
        (TaskAttr::ramUnit, text("MBPerCore")),
        (TaskAttr::baseWalltime, int(60)),
        (TaskAttr::outDiskCount, int(500)),
        (TaskAttr::outDiskUnit, text("kB")),
        (TaskAttr::coreCount, int(1)),
        (TaskAttr::walltimeUnit, text("kSI2kseconds")),
    ];
    for (attr, value) in defaults {
        if refined.get(attr).is_null() {
            refined.set(attr, value);
        }
    }
    refined.set(TaskAttr::status, text("defined"));
    refined.set(TaskAttr::superStatus, text("defined"));
    Ok(RefinedTask {
        task: refined,
        job_params_template: template,
        datasets,
    })
}

/// A task's build step (prun without `--noBuild`): the sources tarball, the build job's
/// parameters and label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSpec {
    pub archive: String,
    pub parameters: String,
    pub label: String,
}

/// The task's `buildSpec`, checked, if it has one.
pub fn build_spec(params: &Map<String, Json>) -> Result<Option<BuildSpec>, RefineError> {
    let Some(spec) = params.get("buildSpec") else {
        return Ok(None);
    };
    let spec = spec.as_object().ok_or("buildSpec must be an object")?;
    let field = |key: &str| {
        spec.get(key)
            .and_then(Json::as_str)
            .ok_or_else(|| format!("buildSpec needs {key}, a string"))
    };
    let archive = field("archiveName")?;
    crate::sandbox::check_file_name(archive).map_err(|e| format!("buildSpec archiveName: {e}"))?;
    Ok(Some(BuildSpec {
        archive: archive.to_string(),
        parameters: field("jobParameters")?.to_string(),
        label: spec
            .get("prodSourceLabel")
            .and_then(Json::as_str)
            .unwrap_or("panda")
            .to_string(),
    }))
}

/// The library dataset of a task's build, as JEDI names it:
/// `panda.<MMDDhhmmss>.<microseconds>.lib._<jediTaskID:06>`.
fn lib_dataset_name(task_id: i64) -> String {
    let now = time::now();
    format!(
        "panda.{}.{:06}.lib._{task_id:06}",
        now.format("%m%d%H%M%S"),
        now.and_utc().timestamp_subsec_micros()
    )
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

/// The master input dataset of a task that reads one: the input template's `dataset`, else
/// `dsForIN`.
fn input_dataset<'a>(items: &[JobParameter<'a>], params: &'a Map<String, Json>) -> Option<&'a str> {
    items
        .iter()
        .find(|i| i.item.get("param_type").and_then(Json::as_str) == Some("input"))
        .and_then(|i| i.item.get("dataset").and_then(Json::as_str))
        .or_else(|| param_str(params, "dsForIN"))
        .filter(|name| !name.is_empty())
}

/// The files of an input dataset as the task's master input: those not matching the input
/// template's `exclude` pattern (prun leaves out log tarballs), at most [`MAX_TASK_FILES`].
pub fn input_files(
    params: &Map<String, Json>,
    dataset: &str,
    files: Vec<panda_store::CatalogFile>,
) -> Result<Vec<TaskFileSpec>, RefineError> {
    let items = job_parameters(params)?;
    let exclude = items
        .iter()
        .find(|i| i.item.get("param_type").and_then(Json::as_str) == Some("input"))
        .and_then(|i| i.item.get("exclude").and_then(Json::as_str))
        .filter(|p| !p.is_empty())
        .map(|p| {
            regex::RegexBuilder::new(p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    format!("the input's exclude pattern {p:?} is not a regular expression: {e}")
                })
        })
        .transpose()?;
    let attempts = max_attempt(params);
    let failures = param_int(params, "maxFailure").unwrap_or(DEFAULT_MAX_FAILURE);
    let kept: Vec<TaskFileSpec> = files
        .into_iter()
        .filter(|f| !exclude.as_ref().is_some_and(|e| e.is_match(&f.lfn)))
        .map(|f| {
            let mut file = TaskFileSpec::new();
            file.set(TaskFileAttr::lfn, text(&f.lfn));
            file.set(TaskFileAttr::GUID, text(&f.guid));
            file.set(TaskFileAttr::scope, text(&f.scope));
            file.set(TaskFileAttr::fsize, int(f.fsize));
            file.set(TaskFileAttr::checksum, Value::Text(f.checksum.clone()));
            file.set(TaskFileAttr::r#type, text("input"));
            file.set(TaskFileAttr::status, text("ready"));
            file.set(TaskFileAttr::attemptNr, int(0));
            file.set(TaskFileAttr::maxAttempt, int(attempts));
            file.set(TaskFileAttr::maxFailure, int(failures));
            file.set(TaskFileAttr::keepTrack, int(1));
            file
        })
        .collect();
    if kept.is_empty() {
        return Err(format!(
            "the input dataset {dataset} has no file to process"
        ));
    }
    if kept.len() as i64 > MAX_TASK_FILES {
        return Err(format!(
            "the input dataset {dataset} has {} files; at most {MAX_TASK_FILES} are accepted",
            kept.len()
        ));
    }
    Ok(kept)
}

/// How many files of the master input one job takes: 1 for a `noInput` task's pseudo
/// files, else `nFilesPerJob` (10 by default), at most `nMaxFilesPerJob` (200).
pub fn files_per_job(params: &Map<String, Json>) -> usize {
    if params.get("noInput").and_then(Json::as_bool) == Some(true) {
        return 1;
    }
    let max = param_int(params, "nMaxFilesPerJob")
        .filter(|n| *n > 0)
        .unwrap_or(200);
    param_int(params, "nFilesPerJob")
        .filter(|n| *n > 0)
        .unwrap_or(10)
        .min(max)
        .clamp(1, 1000) as usize
}

/// The attempts each file of the task gets.
fn max_attempt(params: &Map<String, Json>) -> i64 {
    param_int(params, "maxAttempt")
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_ATTEMPT)
        .min(100)
}

/// The attempts a retry gives each failed file: the task's `maxAttempt`.
pub fn retry_attempts(params: Option<&str>) -> i64 {
    let params = params
        .and_then(|t| serde_json::from_str::<Map<String, Json>>(t).ok())
        .unwrap_or_default();
    max_attempt(&params)
}

/// The pseudo files of a `noInput` task: `nEvents` split into ranges of `nEventsPerJob`.
pub fn pseudo_files(params: &Map<String, Json>) -> Result<Vec<TaskFileSpec>, RefineError> {
    let events = param_int(params, "nEvents").unwrap_or(1);
    let per_job = param_int(params, "nEventsPerJob").unwrap_or(1);
    if events < 1 || per_job < 1 {
        return Err(format!(
            "nEvents ({events}) and nEventsPerJob ({per_job}) must be positive"
        ));
    }
    let count = (events + per_job - 1) / per_job;
    if count > MAX_TASK_FILES {
        return Err(format!(
            "the task would have {count} jobs; at most {MAX_TASK_FILES} are accepted"
        ));
    }
    let attempts = max_attempt(params);
    let failures = param_int(params, "maxFailure").unwrap_or(DEFAULT_MAX_FAILURE);
    Ok((0..count)
        .map(|i| {
            let first = i * per_job;
            let last = ((i + 1) * per_job).min(events) - 1;
            let mut file = TaskFileSpec::new();
            file.set(TaskFileAttr::lfn, text("pseudo_lfn"));
            file.set(TaskFileAttr::r#type, text("pseudo_input"));
            file.set(TaskFileAttr::status, text("ready"));
            file.set(TaskFileAttr::attemptNr, int(0));
            file.set(TaskFileAttr::maxAttempt, int(attempts));
            file.set(TaskFileAttr::maxFailure, int(failures));
            file.set(TaskFileAttr::keepTrack, int(1));
            file.set(TaskFileAttr::startEvent, int(first));
            file.set(TaskFileAttr::endEvent, int(last));
            file.set(TaskFileAttr::firstEvent, int(first + 1));
            file.set(TaskFileAttr::nEvents, int(last - first + 1));
            file
        })
        .collect())
}

/// An LFN from its template: `$JEDITASKID`, and the serial number `${SN}` / `${SN/P}` as six
/// digits.
pub fn file_name(template: &str, task_id: i64, serial: i64) -> String {
    let serial = format!("{serial:06}");
    template
        .replace("$JEDITASKID", &task_id.to_string())
        .replace("${SN/P}", &serial)
        .replace("${SN}", &serial)
}

/// A random GUID, as upstream gives new files.
pub fn new_guid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back on the clock, still unique enough per node.
        let nanos = time::now().and_utc().timestamp_nanos_opt().unwrap_or(0) as u128;
        b = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// One job of a task for its files of the master input, as JEDI's job generator makes it.
fn task_job(
    task: &TaskSpec,
    layout: &TaskLayout,
    inputs: &[TaskFileSpec],
    panda_id: i64,
    serials: &HashMap<i64, i64>,
) -> JobSpec {
    let Some(file) = inputs.first() else {
        return JobSpec::new();
    };
    let task_id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
    let mut job = JobSpec::new();
    let copy = |job: &mut JobSpec, to: JobAttr, from: TaskAttr| {
        job.set(to, task.get(from).clone());
    };
    job.set(JobAttr::PandaID, int(panda_id));
    let name = task.get_str(TaskAttr::taskName).unwrap_or("task");
    job.set(JobAttr::jobName, text(&format!("{name}.{panda_id}")));
    job.set(JobAttr::jobDefinitionID, int(0));
    copy(&mut job, JobAttr::transformation, TaskAttr::transPath);
    copy(
        &mut job,
        JobAttr::prodSourceLabel,
        TaskAttr::prodSourceLabel,
    );
    copy(&mut job, JobAttr::processingType, TaskAttr::processingType);
    copy(&mut job, JobAttr::jediTaskID, TaskAttr::jediTaskID);
    copy(&mut job, JobAttr::taskID, TaskAttr::jediTaskID);
    copy(&mut job, JobAttr::jobsetID, TaskAttr::reqID);
    copy(&mut job, JobAttr::prodUserName, TaskAttr::userName);
    copy(&mut job, JobAttr::workingGroup, TaskAttr::workingGroup);
    copy(&mut job, JobAttr::countryGroup, TaskAttr::countryGroup);
    copy(&mut job, JobAttr::VO, TaskAttr::vo);
    copy(&mut job, JobAttr::cloud, TaskAttr::cloud);
    copy(&mut job, JobAttr::AtlasRelease, TaskAttr::transUses);
    copy(&mut job, JobAttr::homepackage, TaskAttr::transHome);
    copy(&mut job, JobAttr::cmtConfig, TaskAttr::architecture);
    copy(&mut job, JobAttr::coreCount, TaskAttr::coreCount);
    copy(
        &mut job,
        JobAttr::assignedPriority,
        TaskAttr::currentPriority,
    );
    copy(
        &mut job,
        JobAttr::currentPriority,
        TaskAttr::currentPriority,
    );
    if let Some(site) = task.get_str(TaskAttr::site) {
        job.set(JobAttr::computingSite, text(site));
    }
    let cores = task.get_i64(TaskAttr::coreCount).unwrap_or(1).max(1);
    let ram = task.get_i64(TaskAttr::ramCount).unwrap_or(2000);
    job.set(JobAttr::minRamCount, int(ram * cores));
    job.set(JobAttr::prodSeriesLabel, text("pandatest"));
    job.set(JobAttr::lockedby, text("jedi"));
    let attempt = file.get_i64(TaskFileAttr::attemptNr).unwrap_or(0);
    job.set(JobAttr::attemptNr, int(attempt));
    job.set(JobAttr::maxAttempt, int(attempt));
    job.set(JobAttr::nEvents, file.get(TaskFileAttr::nEvents).clone());
    let master = layout
        .datasets
        .iter()
        .find(|d| d.get_i64(DatasetAttr::datasetID) == file.get_i64(TaskFileAttr::datasetID))
        .and_then(|d| d.get_str(DatasetAttr::datasetName))
        .unwrap_or("pseudo_dataset");
    let lfns: Vec<String> = inputs
        .iter()
        .filter_map(|f| f.get_str(TaskFileAttr::lfn).map(str::to_string))
        .collect();
    // `${IN/T}` is the inputs as a Python list literal (what runGen's -i reads), `${IN}`
    // the same names separated by commas.
    let as_list = format!(
        "[{}]",
        lfns.iter()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut parameters = layout
        .job_params_template
        .replace("$JEDITASKID", &task_id.to_string())
        .replace("${IN/T}", &as_list)
        .replace("${IN}", &lfns.join(","));
    for input in inputs {
        let mut spec = FileSpec::new();
        for (to, from) in [
            (FileAttr::lfn, TaskFileAttr::lfn),
            (FileAttr::r#type, TaskFileAttr::r#type),
            (FileAttr::GUID, TaskFileAttr::GUID),
            (FileAttr::scope, TaskFileAttr::scope),
            (FileAttr::fsize, TaskFileAttr::fsize),
            (FileAttr::checksum, TaskFileAttr::checksum),
            (FileAttr::datasetID, TaskFileAttr::datasetID),
            (FileAttr::fileID, TaskFileAttr::fileID),
        ] {
            spec.set(to, input.get(from).clone());
        }
        spec.set(FileAttr::dataset, text(master));
        spec.set(FileAttr::prodDBlock, text(master));
        spec.set(FileAttr::status, text("ready"));
        spec.set(FileAttr::jediTaskID, int(task_id));
        spec.set(FileAttr::attemptNr, int(attempt));
        job.files.push(spec);
    }
    for template in &layout.templates {
        let Some(dataset) = layout
            .datasets
            .iter()
            .find(|d| d.get_i64(DatasetAttr::datasetID) == Some(template.dataset_id))
        else {
            continue;
        };
        let serial = serials.get(&template.dataset_id).copied().unwrap_or(1);
        let lfn = file_name(&template.file_name_template, task_id, serial);
        parameters = parameters.replace(&format!("${{{}}}", template.stream), &lfn);
        let dataset_name = dataset.get_str(DatasetAttr::datasetName).unwrap_or("");
        let mut out = FileSpec::new();
        out.set(FileAttr::lfn, text(&lfn));
        out.set(FileAttr::r#type, text(&template.out_type));
        out.set(FileAttr::dataset, text(dataset_name));
        out.set(FileAttr::destinationDBlock, text(dataset_name));
        out.set(FileAttr::scope, text(&dataset_scope(dataset_name)));
        out.set(FileAttr::GUID, text(&new_guid()));
        out.set(FileAttr::jediTaskID, int(task_id));
        out.set(FileAttr::datasetID, int(template.dataset_id));
        if let Some(site) = task.get_str(TaskAttr::site) {
            out.set(FileAttr::destinationSE, text(site));
        }
        job.files.push(out);
    }
    job.set(JobAttr::jobParameters, text(&parameters));
    job
}

/// The build job of a task: buildGen makes the library `lib` from the sources tarball.
fn build_job(
    task: &TaskSpec,
    build: &BuildSpec,
    source_url: &str,
    lib_name: &str,
    lib: &TaskFileSpec,
    panda_id: i64,
) -> JobSpec {
    let layout = TaskLayout {
        job_params_template: build.parameters.clone(),
        ..Default::default()
    };
    let mut job = task_job(
        task,
        &layout,
        std::slice::from_ref(lib),
        panda_id,
        &HashMap::new(),
    );
    // The job's files are the library and the build's log, not the master input.
    job.files.clear();
    let lib_lfn = lib
        .get_str(TaskFileAttr::lfn)
        .unwrap_or("lib.tgz")
        .to_string();
    let log_lfn = format!("{lib_name}.log.tgz");
    let scope = dataset_scope(lib_name);
    for (lfn, kind, guid) in [
        (&lib_lfn, "output", lib.get(TaskFileAttr::GUID).clone()),
        (&log_lfn, "log", text(&new_guid())),
    ] {
        let mut file = FileSpec::new();
        file.set(FileAttr::lfn, text(lfn));
        file.set(FileAttr::r#type, text(kind));
        file.set(FileAttr::dataset, text(lib_name));
        file.set(FileAttr::destinationDBlock, text(lib_name));
        file.set(FileAttr::scope, text(&scope));
        file.set(FileAttr::GUID, guid);
        file.set(FileAttr::jediTaskID, task.get(TaskAttr::jediTaskID).clone());
        job.files.push(file);
    }
    let parameters = build
        .parameters
        .replace("${IN}", &build.archive)
        .replace("${OUT}", &lib_lfn)
        .replace("${SURL}", source_url);
    job.set(JobAttr::jobParameters, text(parameters.trim_end()));
    job.set(JobAttr::prodSourceLabel, text(&build.label));
    let trf = task.get_str(TaskAttr::transPath).unwrap_or("");
    let base = trf.rsplit_once('/').map_or("", |(base, _)| base);
    job.set(
        JobAttr::transformation,
        text(&format!("{base}/buildGen-00-00-01")),
    );
    job
}

/// A run job of a built task: the library as one more input, `${LIB}` its name, and the
/// build's site.
fn with_library(job: &mut JobSpec, lib: &FileSpec, site: Option<&str>) {
    let lfn = lib.get_str(FileAttr::lfn).unwrap_or("").to_string();
    if let Some(parameters) = job
        .get_str(JobAttr::jobParameters)
        .map(|p| p.replace("${LIB}", &lfn))
    {
        job.set(JobAttr::jobParameters, text(&parameters));
    }
    let mut file = lib.clone();
    file.set(FileAttr::jediTaskID, job.get(JobAttr::jediTaskID).clone());
    file.set(FileAttr::attemptNr, job.get(JobAttr::attemptNr).clone());
    job.files.push(file);
    if let Some(site) = site {
        job.set(JobAttr::computingSite, text(site));
    }
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
            let mut task = task;
            let mut made_for_task = 0;
            // Batches of at most one submission's size, until the task has no ready file,
            // leaves the generating statuses (a kill), or the run's budget is spent.
            while counts.jobs < max_jobs {
                let budget = (max_jobs - counts.jobs).min(crate::submit::MAX_JOBS_PER_SUBMISSION);
                let per_job = files_per_job(&self.task_params(id).await?);
                let files = self
                    .stores
                    .jedi
                    .ready_task_files(id, (budget * per_job) as i64)
                    .await?;
                if files.is_empty() {
                    break;
                }
                let made = self.generate_for(&task, &files, &library).await?;
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
    ) -> Result<usize, ServiceError> {
        let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
        let layout = self.stores.jedi.task_layout(id).await?;
        let per_job = files_per_job(&self.task_params(id).await?);
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
