//! Refinement and contents, the pure rules: what a task's parameters make of it (its job
//! parameter template, datasets and defaults) and which files its master input has.

use panda_core::{
    time, DatasetAttr, DatasetSpec, TaskAttr, TaskFileAttr, TaskFileSpec, TaskSpec, Value,
};
use panda_store::{NewDataset, OutputTemplate, RefinedTask};
use serde_json::{Map, Value as Json};

use super::{
    int, param_int, param_str, text, RefineError, DEFAULT_MAX_ATTEMPT, DEFAULT_MAX_FAILURE,
    MAX_TASK_FILES,
};

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

/// The prefix of a template dataset's type: `tmpl_log`, `tmpl_output` (upstream's
/// `instantiateTmplSite`), each made into one dataset per site its jobs run at.
pub const TEMPLATE_PREFIX: &str = "tmpl_";

/// The dataset of a template at one site, before it has an ID: the template's type without
/// `tmpl_`, its name without the trailing `/` and with the dataset's ID appended
/// (`${DATASETID}`, filled in by the store), in the template's container.
pub(super) fn site_dataset(template: &DatasetSpec) -> DatasetSpec {
    let kind = template.get_str(DatasetAttr::r#type).unwrap_or("");
    let kind = kind.strip_prefix(TEMPLATE_PREFIX).unwrap_or(kind);
    let name = template.get_str(DatasetAttr::datasetName).unwrap_or("");
    let container = template
        .get_str(DatasetAttr::containerName)
        .unwrap_or(name)
        .to_string();
    let mut spec = dataset(
        kind,
        &format!("{}.${{DATASETID}}", name.trim_end_matches('/')),
        Some(&container),
        template.get(DatasetAttr::vo),
    );
    spec.set(
        DatasetAttr::templateID,
        template.get(DatasetAttr::datasetID).clone(),
    );
    spec.set(
        DatasetAttr::streamName,
        template.get(DatasetAttr::streamName).clone(),
    );
    spec
}

/// The library dataset of a task's build at one site, as JEDI names it (one per site).
pub(super) fn lib_dataset(task: &TaskSpec) -> DatasetSpec {
    let task_id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
    let mut lib = dataset(
        "lib",
        &lib_dataset_name(task_id),
        None,
        task.get(TaskAttr::vo),
    );
    lib.set(DatasetAttr::streamName, text("LIB"));
    lib
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
    // A malformed build step or event-service setting breaks the task here, not at
    // generation.
    build_spec(params)?;
    let event_service = event_service(params)?;
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
    let mut log_spec = dataset("tmpl_log", log_dataset, container, &vo);
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
            let mut spec = dataset("tmpl_output", dataset_name, container, &vo);
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
    if let Some(es) = event_service {
        refined.set(TaskAttr::eventService, int(1));
        // JEDI's split-rule tokens for the two settings (`ES`, `XA`).
        let mut rules: Vec<String> = refined
            .get_str(TaskAttr::splitRule)
            .unwrap_or("")
            .split(',')
            .filter(|r| !r.is_empty() && !r.starts_with("ES=") && !r.starts_with("XA="))
            .map(str::to_string)
            .collect();
        rules.push(format!("ES={}", es.events_per_range));
        rules.push(format!("XA={}", es.max_attempt));
        refined.set(TaskAttr::splitRule, text(&rules.join(",")));
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

/// An event-service task's settings: JEDI's `nEventsPerWorker` (events per range, which
/// makes a task an event-service task) and `maxAttemptES` (attempts per range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventServiceSpec {
    pub events_per_range: i64,
    pub max_attempt: i64,
}

/// Attempts per range unless the task says otherwise (upstream's).
const DEFAULT_MAX_ATTEMPT_ES: i64 = 10;
/// Most events one range may hold, and most attempts per range (a smallint column).
const MAX_EVENTS_PER_RANGE: i64 = 1_000_000;
const MAX_ATTEMPT_ES: i64 = 100;

/// The task's event-service settings; `None` for an ordinary task, an error naming a bad
/// value.
pub fn event_service(params: &Map<String, Json>) -> Result<Option<EventServiceSpec>, RefineError> {
    let Some(raw) = params.get("nEventsPerWorker").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let events_per_range = raw
        .as_i64()
        .filter(|n| (1..=MAX_EVENTS_PER_RANGE).contains(n))
        .ok_or_else(|| {
            format!("nEventsPerWorker must be a whole number from 1 to {MAX_EVENTS_PER_RANGE}, got {raw}")
        })?;
    let max_attempt = match params.get("maxAttemptES").filter(|v| !v.is_null()) {
        None => DEFAULT_MAX_ATTEMPT_ES,
        Some(v) => v
            .as_i64()
            .filter(|n| (1..=MAX_ATTEMPT_ES).contains(n))
            .ok_or_else(|| {
                format!("maxAttemptES must be a whole number from 1 to {MAX_ATTEMPT_ES}, got {v}")
            })?,
    };
    Ok(Some(EventServiceSpec {
        events_per_range,
        max_attempt,
    }))
}

/// The attempts each file of the task gets.
pub(super) fn max_attempt(params: &Map<String, Json>) -> i64 {
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
