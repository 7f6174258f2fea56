//! The request decoding and response encoding on the pilots' and clients' hot paths, as
//! plain functions for `cargo bench -p panda-api` (`benches/hot_paths.rs`). Not an API.

use panda_core::JobSpec;

use crate::body::{gunzip, legacy_params, RawBody, GZIP_MAGIC};
use crate::job_dict::job_entries;
use crate::legacy::Protocol;

/// Decodes a legacy request body (gzip sniffed, then JSON or form) under the default
/// limits; returns the number of parameters. Also the fuzz target of that decoder.
pub fn decode_legacy(body: &[u8], content_type: &str) -> Result<usize, String> {
    let limits = crate::Limits::default();
    let bytes = if body.starts_with(&GZIP_MAGIC) {
        gunzip(body, limits.max_body_bytes).map_err(|e| format!("{e:?}"))?
    } else {
        body.to_vec()
    };
    let params = legacy_params(
        None,
        RawBody {
            bytes,
            content_type: content_type.to_string(),
            multipart: None,
        },
        &limits,
    )
    .map_err(|e| format!("{e:?}"))?;
    Ok(params.len())
}

/// getJob's answer for one job, urlencoded (pilot 3.x over urllib) or JSON.
pub fn encode_get_job(job: &JobSpec, json: bool) -> String {
    let mut response = Protocol::new(0);
    response.extend(job_entries(job, &serde_json::Value::Null));
    if json {
        response.to_json().to_string()
    } else {
        response.to_urlencoded()
    }
}

/// `job/submit`'s decoding of the positional jobs; returns the number of jobs.
pub fn decode_submission(jobs_text: &str) -> Result<usize, String> {
    crate::v1::decode_jobs(jobs_text).map(|jobs| jobs.len())
}

/// `job/get_description`'s dict of one job, as JSON text.
pub fn encode_job_description(job: &JobSpec) -> String {
    crate::v1::job_description(job).to_string()
}

/// Decodes `/api/v1` arguments as a POST (a JSON body) or a GET (a query string) and checks
/// them against every function's declaration; returns how many declarations accepted them.
/// The fuzz target of the argument decoder.
pub fn decode_v1_args(body: &[u8], query: &str) -> usize {
    crate::v1::fuzz_decode(body, query)
}

/// Refines task parameters as `task/submit` would receive them (a JSON object) the way the
/// task refiner does, and splits them into pseudo files; returns the number of files, or why
/// the parameters are refused. The fuzz target of task refinement.
pub fn refine_task_parameters(body: &[u8]) -> Result<usize, String> {
    use panda_service::task_processing::{pseudo_files, refine};
    let limits = crate::Limits::default();
    let params = match crate::body::parse_json(body, &limits) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => return Err("not an object".into()),
        Err(e) => return Err(e.message()),
    };
    let task = panda_core::TaskSpec::new();
    let refined = refine(&task, &params, "http://localhost:25080")?;
    let files = pseudo_files(&params)?;
    Ok(files.len() + refined.datasets.len())
}

/// Decodes an event-range report (`updateEventRanges`' `eventRanges`) and the range IDs in
/// it: the first byte picks the version (0–2), the rest is the text. Returns how many ranges
/// it names. The fuzz target of the event-service decoder.
pub fn decode_event_report(data: &[u8]) -> Result<usize, String> {
    let (version, text) = match data.split_first() {
        Some((v, rest)) => (i64::from(*v % 3), String::from_utf8_lossy(rest)),
        None => (0, "".into()),
    };
    for word in text.split(|c: char| !(c.is_ascii_digit() || c == '-')) {
        let _ = panda_core::event::EventRangeId::parse(word);
    }
    panda_service::events::decode_report_ranges(&text, version).map_err(|e| e.to_string())
}

/// The monitor's query rules on a raw query string, as its pages read one: decoded into
/// pairs, checked for size, then read as `/jobs/`, `/tasks/`, `/user/<name>/` and a page
/// without filters would. Returns how many of them accepted it. The fuzz target of the
/// monitor's queries.
pub fn monitor_query(query: &[u8]) -> usize {
    use panda_service::monitor::{self as rules, MonitorQuery};
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(query) else {
        return 0;
    };
    let Ok(query) = MonitorQuery::new(pairs) else {
        return 0;
    };
    let now = panda_core::time::now();
    [
        rules::jobs_request(&query, now).is_ok(),
        rules::tasks_request(&query, now).is_ok(),
        rules::user_requests(&query, "someone", now).is_ok(),
        rules::presentation_only(&query).is_ok(),
    ]
    .iter()
    .filter(|ok| **ok)
    .count()
}

/// Lists a log tarball's bytes as the monitor does; the number of entries, or 0 for bytes
/// that are not one. The fuzz target of the log listing.
pub fn monitor_log_listing(tarball: &[u8]) -> usize {
    panda_service::monitor::list_tar(tarball).map_or(0, |entries| entries.len())
}
