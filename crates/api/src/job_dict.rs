//! The job description a pilot receives from getJob, key for key as upstream's
//! `Protocol.Response.appendJob` builds it: job attributes as stored (`NULL` for a NULL), and
//! the file lists joined with commas, input files first, outputs and the log after.

use panda_core::{FileAttr, FileSpec, JobAttr, JobSpec, Value};
use panda_service::Dispatched;
use serde_json::{json, Value as Json};

/// A job attribute as upstream's JobSpec reads it: `"NULL"` for NULL, numbers as numbers.
pub fn attr_json(value: &Value) -> Json {
    match value {
        Value::Int(Some(i)) => json!(i),
        Value::Float(Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => json!(*f as i64),
        Value::Float(Some(f)) => json!(f),
        Value::Text(Some(s)) => json!(s),
        Value::Time(Some(_)) => json!(value.render()),
        _ => json!("NULL"),
    }
}

fn file_text(file: &FileSpec, attr: FileAttr) -> String {
    file.get(attr).render()
}

fn joined(files: &[&FileSpec], f: impl Fn(&FileSpec) -> String) -> Json {
    json!(files
        .iter()
        .map(|file| f(file))
        .collect::<Vec<_>>()
        .join(","))
}

/// The queue's storage endpoint for an activity (`pr`/`read_lan` to read, `pw`/`write_lan`
/// to write), from its CRIC `astorages`.
fn queue_endpoint(queue: &Json, activities: &[&str]) -> String {
    activities
        .iter()
        .find_map(|a| {
            queue
                .get("astorages")
                .and_then(|s| s.get(*a))
                .and_then(|list| list.get(0))
                .and_then(Json::as_str)
        })
        .unwrap_or("")
        .to_string()
}

/// The keys upstream appends after a job's own, in its order: `nSent` ([`Dispatched`]), then
/// `secrets` for a job marked to use its owner's, and `pilotSecrets` for every job when one
/// of them is in debug mode ([`panda_service::DispatchSecrets`]).
pub fn trailing_entries(job: &JobSpec, out: &Dispatched) -> Vec<(String, Json)> {
    let mut entries = vec![("nSent".to_string(), json!(out.n_sent))];
    if let Some(text) = out.secrets.for_job(job) {
        entries.push(("secrets".to_string(), Json::String(text.to_string())));
    }
    if let Some(text) = &out.secrets.pilot {
        entries.push(("pilotSecrets".to_string(), Json::String(text.clone())));
    }
    entries
}

/// The getJob keys for one job, after `StatusCode`.
pub fn job_entries(job: &JobSpec, queue: &Json) -> Vec<(String, Json)> {
    let attr = |a: JobAttr| attr_json(job.get(a));
    let mut inputs: Vec<&FileSpec> = Vec::new();
    for file in job
        .files
        .iter()
        .filter(|f| f.get_str(FileAttr::r#type) == Some("input"))
    {
        if !inputs
            .iter()
            .any(|seen| seen.get(FileAttr::lfn) == file.get(FileAttr::lfn))
        {
            inputs.push(file);
        }
    }
    let outputs: Vec<&FileSpec> = job
        .files
        .iter()
        .filter(|f| matches!(f.get_str(FileAttr::r#type), Some("output" | "log")))
        .collect();
    let log = job
        .files
        .iter()
        .find(|f| f.get_str(FileAttr::r#type) == Some("log"));
    let read_endpoint = queue_endpoint(queue, &["pr", "read_lan"]);
    let write_endpoint = queue_endpoint(queue, &["pw", "write_lan"]);
    let mut e: Vec<(String, Json)> = Vec::with_capacity(64);
    let mut put = |k: &str, v: Json| e.push((k.to_string(), v));
    put("PandaID", attr(JobAttr::PandaID));
    put("prodSourceLabel", attr(JobAttr::prodSourceLabel));
    put("swRelease", attr(JobAttr::AtlasRelease));
    put("homepackage", attr(JobAttr::homepackage));
    put("transformation", attr(JobAttr::transformation));
    put("jobName", attr(JobAttr::jobName));
    put("jobDefinitionID", attr(JobAttr::jobDefinitionID));
    put("cloud", attr(JobAttr::cloud));
    put("inFiles", joined(&inputs, |f| file_text(f, FileAttr::lfn)));
    put(
        "dispatchDblock",
        joined(&inputs, |f| file_text(f, FileAttr::dispatchDBlock)),
    );
    put(
        "dispatchDBlockToken",
        joined(&inputs, |f| file_text(f, FileAttr::dispatchDBlockToken)),
    );
    put(
        "dispatchDBlockTokenForOut",
        joined(&outputs, |f| file_text(f, FileAttr::dispatchDBlockToken)),
    );
    put(
        "outFiles",
        joined(&outputs, |f| file_text(f, FileAttr::lfn)),
    );
    put(
        "destinationDblock",
        joined(&outputs, |f| file_text(f, FileAttr::destinationDBlock)),
    );
    put(
        "destinationDBlockToken",
        joined(&outputs, |f| {
            let token = file_text(f, FileAttr::destinationDBlockToken);
            let first = token.split(',').next().unwrap_or("").to_string();
            match first.strip_prefix("ddd:") {
                Some(rest) => format!("dst:{rest}"),
                None => first,
            }
        }),
    );
    put(
        "prodDBlocks",
        joined(&inputs, |f| file_text(f, FileAttr::prodDBlock)),
    );
    put(
        "prodDBlockToken",
        joined(&inputs, |f| file_text(f, FileAttr::prodDBlockToken)),
    );
    put(
        "realDatasets",
        joined(&outputs, |f| file_text(f, FileAttr::dataset)),
    );
    put(
        "realDatasetsIn",
        joined(&inputs, |f| file_text(f, FileAttr::dataset)),
    );
    put(
        "fileDestinationSE",
        joined(&outputs, |f| file_text(f, FileAttr::destinationSE)),
    );
    if let Some(log) = log {
        put("logFile", json!(file_text(log, FileAttr::lfn)));
        put("logGUID", json!(file_text(log, FileAttr::GUID)));
    }
    put("jobPars", attr(JobAttr::jobParameters));
    put("attemptNr", attr(JobAttr::attemptNr));
    put("GUID", joined(&inputs, |f| file_text(f, FileAttr::GUID)));
    put(
        "checksum",
        joined(&inputs, |f| match f.get_str(FileAttr::checksum) {
            Some(c) => c.to_string(),
            None => file_text(f, FileAttr::md5sum),
        }),
    );
    put("fsize", joined(&inputs, |f| file_text(f, FileAttr::fsize)));
    put(
        "scopeIn",
        joined(&inputs, |f| file_text(f, FileAttr::scope)),
    );
    let data_outputs: Vec<&FileSpec> = outputs
        .iter()
        .copied()
        .filter(|f| f.get_str(FileAttr::r#type) == Some("output"))
        .collect();
    put(
        "scopeOut",
        joined(&data_outputs, |f| file_text(f, FileAttr::scope)),
    );
    if let Some(log) = log {
        put("scopeLog", json!(file_text(log, FileAttr::scope)));
    }
    put("ddmEndPointIn", joined(&inputs, |_| read_endpoint.clone()));
    put(
        "ddmEndPointOut",
        joined(&outputs, |_| write_endpoint.clone()),
    );
    put("destinationSE", attr(JobAttr::destinationSE));
    put("prodUserID", attr(JobAttr::prodUserID));
    put("maxCpuCount", attr(JobAttr::maxCpuCount));
    put("minRamCount", attr(JobAttr::minRamCount));
    put("maxDiskCount", attr(JobAttr::maxDiskCount));
    put("cmtConfig", attr(JobAttr::cmtConfig));
    put("processingType", attr(JobAttr::processingType));
    put("transferType", attr(JobAttr::transferType));
    put("sourceSite", attr(JobAttr::sourceSite));
    put("currentPriority", attr(JobAttr::currentPriority));
    let task = if job.get_str(JobAttr::lockedby) == Some("jedi") {
        attr(JobAttr::jediTaskID)
    } else {
        attr(JobAttr::taskID)
    };
    put("taskID", task);
    put(
        "coreCount",
        match job.get_i64(JobAttr::coreCount) {
            Some(n) => json!(n),
            None => json!(1),
        },
    );
    put("jobsetID", attr(JobAttr::jobsetID));
    put("reqID", attr(JobAttr::reqID));
    put("nucleus", attr(JobAttr::nucleus));
    put("maxWalltime", attr(JobAttr::maxWalltime));
    put("resource_type", attr(JobAttr::resource_type));
    let special = job.get_str(JobAttr::specialHandling).unwrap_or("");
    if special.split(',').any(|t| t == "dm" || t == "debug") {
        put("debug", json!("True"));
    }
    // An event-service consumer: the pilot then asks for event ranges (upstream's flag).
    if job.get_i64(JobAttr::eventService) == Some(1) {
        put("eventService", json!("True"));
    }
    if let Some(container) = job.get_str(JobAttr::container_name) {
        put("container_name", json!(container));
    }
    put("ioIntensity", Json::Null);
    put("ioIntensityUnit", Json::Null);
    e
}
