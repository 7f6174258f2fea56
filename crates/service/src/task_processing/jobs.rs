//! Jobs as JEDI's job generator makes them: names, parameters and files of a task's run and
//! build jobs.

use std::collections::HashMap;

use panda_core::{
    time, DatasetAttr, DatasetSpec, FileAttr, FileSpec, JobAttr, JobSpec, TaskAttr, TaskFileAttr,
    TaskFileSpec, TaskSpec,
};
use panda_store::TaskLayout;

use super::refine::BuildSpec;
use super::{int, text};

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

/// Where a batch of a task's jobs runs, and the datasets there: the site's instance of each
/// output template (by the template's datasetID) and the site's library dataset.
#[derive(Clone, Debug, Default)]
pub(super) struct SiteDatasets {
    /// `None` when no queue fits: the jobs then fail at submission with brokerage's reason.
    pub site: Option<String>,
    pub outputs: HashMap<i64, DatasetSpec>,
    pub lib: Option<DatasetSpec>,
}

/// One job of a task for its files of the master input, as JEDI's job generator makes it,
/// at `at.site`, its outputs in that site's datasets.
pub(super) fn task_job(
    task: &TaskSpec,
    layout: &TaskLayout,
    inputs: &[TaskFileSpec],
    panda_id: i64,
    serials: &HashMap<i64, i64>,
    at: &SiteDatasets,
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
    if let Some(site) = &at.site {
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
        // The site's instance of the template; a task refined before templates were
        // instantiated per site (or a job no queue fits) uses the template's own dataset.
        let Some(dataset) = at.outputs.get(&template.dataset_id).or_else(|| {
            layout
                .datasets
                .iter()
                .find(|d| d.get_i64(DatasetAttr::datasetID) == Some(template.dataset_id))
        }) else {
            continue;
        };
        let dataset_id = dataset
            .get_i64(DatasetAttr::datasetID)
            .unwrap_or(template.dataset_id);
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
        out.set(FileAttr::datasetID, int(dataset_id));
        if let Some(site) = &at.site {
            out.set(FileAttr::destinationSE, text(site));
        }
        job.files.push(out);
    }
    job.set(JobAttr::jobParameters, text(&parameters));
    job
}

/// Makes a task's job an event-service consumer of `jobset` (the ranges of its files): the
/// flag the pilot reads (`eventService`), upstream's `eventservice` token, the file's
/// attempts (the consumer's end decides by them), and only the log among its files: an ES
/// job's outputs are the zipped event files it reports range by range (upstream merges them
/// into the task's outputs in a merge job, which this server does not make).
pub(super) fn as_event_service_job(job: &mut JobSpec, jobset: i64, inputs: &[TaskFileSpec]) {
    job.set(JobAttr::eventService, int(1));
    job.set(JobAttr::jobsetID, int(jobset));
    let mut tokens: Vec<String> = job
        .get_str(JobAttr::specialHandling)
        .unwrap_or("")
        .split(',')
        .filter(|t| !t.is_empty() && *t != "eventservice")
        .map(str::to_string)
        .collect();
    tokens.push("eventservice".into());
    job.set(JobAttr::specialHandling, text(&tokens.join(",")));
    if let Some(max) = inputs
        .first()
        .and_then(|f| f.get_i64(TaskFileAttr::maxAttempt))
    {
        job.set(JobAttr::maxAttempt, int(max));
    }
    job.files
        .retain(|f| f.get_str(FileAttr::r#type) != Some("output"));
}

/// The build job of a task: buildGen makes the library `lib` from the sources tarball.
pub(super) fn build_job(
    task: &TaskSpec,
    build: &BuildSpec,
    source_url: &str,
    at: &SiteDatasets,
    lib: &TaskFileSpec,
    panda_id: i64,
) -> JobSpec {
    let lib_name = at
        .lib
        .as_ref()
        .and_then(|d| d.get_str(DatasetAttr::datasetName))
        .unwrap_or("");
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
        at,
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
        if let Some(site) = &at.site {
            file.set(FileAttr::destinationSE, text(site));
        }
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

/// A run job of a built task: the library as one more input and `${LIB}` its name. A
/// library not yet built is an input of status `unknown` (its size and checksum come when
/// the build job reports them), from the library's dataset (`dispatchDBlock`, as upstream),
/// and the job waits until the build has finished.
pub(super) fn with_library(job: &mut JobSpec, lib: &FileSpec) {
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
    file.set(FileAttr::dispatchDBlock, lib.get(FileAttr::dataset).clone());
    file.set(FileAttr::prodDBlockToken, text("local"));
    job.files.push(file);
}
