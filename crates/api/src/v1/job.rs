//! `job`: submission in upstream's positional JSON (what panda-client's `submitJobs` sends).
//!
//! `jobs` is a JSON string holding a list; each job is its 126 attribute values in upstream's
//! order followed by the list of its files, each file its attribute values (18 from
//! panda-client, 22 from the server's own specs) followed by `null` for the owner. Unset values
//! are the string `"NULL"`, datetimes `{"_datetime_object": "YYYY-mm-dd HH:MM:SS.ffffff"}`.
//! As upstream, a shorter list is accepted: missing trailing attributes are NULL.

use chrono::NaiveDateTime;
use panda_core::{AttrSet, Attribute, FileAttr, FileSpec, JobAttr, JobSpec, Record, Value};

use serde_json::{json, Value as Json};

use panda_service::lookups::JobScope;

use super::args::ArgsExt;
use super::{record_json, Call, Envelope};
use crate::AppState;

/// Jobs per `job/submit` call, as upstream.
const MAX_SUBMIT: usize = 5000;
/// PanDAIDs per `job/get_description` call, as upstream.
const MAX_DESCRIPTIONS: usize = 5500;

/// Decodes one positional value into a column value.
fn decode_value(attr: &Attribute, raw: &Json) -> Result<Value, String> {
    let bad = |what: &str| format!("attribute {}: {what}", attr.name);
    match raw {
        Json::Null => Ok(attr.column_type.null()),
        Json::String(s) => Value::parse(attr.column_type, s).map_err(|e| bad(&e.to_string())),
        Json::Number(n) => {
            Value::parse(attr.column_type, &n.to_string()).map_err(|e| bad(&e.to_string()))
        }
        Json::Bool(b) => Value::parse(attr.column_type, if *b { "True" } else { "False" })
            .map_err(|e| bad(&e.to_string())),
        Json::Object(map) => {
            let text = map
                .get("_datetime_object")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("an object that is not {\"_datetime_object\": ...}"))?;
            let time =
                NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map_err(|_| {
                    bad(&format!(
                        "datetime {text:?} is not YYYY-mm-dd HH:MM:SS.ffffff"
                    ))
                })?;
            Ok(Value::Time(Some(time)))
        }
        Json::Array(_) => Err(bad("a list where a value was expected")),
    }
}

/// Fills a record from a positional state; entry `i` is used only when `i + 1 < len`, as
/// upstream's `__setstate__` (the last entry is the files, or the owner).
fn decode_record<A: AttrSet>(state: &[Json]) -> Result<Record<A>, String> {
    let mut record = Record::<A>::new();
    for (i, attr) in A::attributes().iter().enumerate() {
        let Some(raw) = state.get(i).filter(|_| i + 1 < state.len()) else {
            continue;
        };
        let value = decode_value(attr, raw)?;
        if let Some(a) = A::by_name(attr.name) {
            record.set(a, value);
        }
    }
    Ok(record)
}

pub(crate) fn decode_jobs(jobs_text: &str) -> Result<Vec<JobSpec>, String> {
    let states: Vec<Vec<Json>> = serde_json::from_str(jobs_text)
        .map_err(|e| format!("jobs is not a JSON list of job states: {e}"))?;
    states
        .iter()
        .enumerate()
        .map(|(n, state)| {
            // The attributes, the files, and (from some clients) the changed-attribute list.
            let most = JobAttr::attributes().len() + 2;
            if state.len() > most {
                return Err(format!(
                    "job {n} has {} entries; a job is at most {} attributes and its files",
                    state.len(),
                    JobAttr::attributes().len()
                ));
            }
            let attrs = decode_record::<JobAttr>(state).map_err(|e| format!("job {n}: {e}"))?;
            let files = match state.last() {
                Some(Json::Array(files)) => files
                    .iter()
                    .enumerate()
                    .map(|(f, file)| match file {
                        Json::Array(values) if values.len() > FileAttr::attributes().len() + 2 => {
                            Err(format!(
                                "job {n} file {f} has {} entries; a file is at most {} attributes",
                                values.len(),
                                FileAttr::attributes().len()
                            ))
                        }
                        Json::Array(values) => decode_record::<FileAttr>(values)
                            .map_err(|e| format!("job {n} file {f}: {e}")),
                        _ => Err(format!("job {n} file {f}: not a list")),
                    })
                    .collect::<Result<Vec<FileSpec>, String>>()?,
                _ => return Err(format!("job {n}: the last entry must be the list of files")),
            };
            Ok(JobSpec { attrs, files })
        })
        .collect()
}

pub(crate) async fn submit(state: &AppState, call: &Call) -> Envelope {
    let jobs_text = call.args.text("jobs").unwrap_or_default();
    let jobs = match decode_jobs(jobs_text) {
        Ok(jobs) => jobs,
        Err(e) => return Envelope::fail(format!("Failed to deserialize jobs: {e}")),
    };
    if jobs.len() > MAX_SUBMIT {
        return Envelope::fail(format!(
            "too many jobs: {} given, at most {MAX_SUBMIT} per call",
            jobs.len()
        ));
    }
    let client_host = call.peer.map(|peer| peer.ip().to_string());
    match state
        .service
        .submit(&call.identity, jobs, client_host.as_deref())
        .await
    {
        Ok(results) => Envelope::ok(Json::Array(
            results
                .iter()
                .map(|r| {
                    // Upstream reads the values back through its JobSpec, where NULL is the
                    // text "NULL".
                    let third = if r.reply_with_jobset {
                        json!({"jobsetID": upstream_text(&r.jobset_id)})
                    } else {
                        upstream_text(&r.job_name)
                    };
                    json!([r.panda_id, upstream_text(&r.job_definition_id), third])
                })
                .collect(),
        )),
        Err(e) => Envelope::from_service(e),
    }
}

/// A value as upstream's JobSpec gives it back: NULL as the text `"NULL"`.
fn upstream_text(value: &Value) -> Json {
    if value.is_null() {
        json!("NULL")
    } else {
        crate::job_dict::attr_json(value)
    }
}

/// A job as panda-client's `JobSpec.load_from_dict` reads it: every attribute (`null` for
/// NULL, times as `{"__datetime__": iso}`), plus `"Files"`, the file dicts.
pub(crate) fn job_dict(job: &JobSpec) -> Json {
    let mut dict = record_json(&job.attrs);
    if let Json::Object(map) = &mut dict {
        let files: Vec<Json> = job.files.iter().map(record_json).collect();
        map.insert("Files".into(), Json::Array(files));
    }
    dict
}

/// `job/get_description` and `job/get_description_incl_archive`: one entry per requested
/// PandaID, `null` for an unknown one. Both read the defined, active and archived jobs, as
/// upstream's first does; upstream's second also falls back to the long-term archive
/// (`jobsarchived`), which this server reads only in its daemon.
pub(crate) async fn get_description(state: &AppState, call: &Call) -> Envelope {
    let ids = call.args.ints("job_ids");
    if ids.len() > MAX_DESCRIPTIONS {
        return Envelope::fail(format!(
            "too many job IDs: {} given, at most {MAX_DESCRIPTIONS} per call",
            ids.len()
        ));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match state.service.job(id).await {
            Ok(Some(job)) => out.push(job_dict(&job)),
            Ok(None) => out.push(Json::Null),
            Err(e) => return Envelope::from_service(e),
        }
    }
    Envelope::ok(Json::Array(out))
}

/// `job/kill`: a list of booleans, one per PandaID, true when the kill was accepted.
pub(crate) async fn kill(state: &AppState, call: &Call) -> Envelope {
    let ids = call.args.ints("job_ids");
    let code = call.args.int("code");
    match state.service.kill_jobs(&call.identity, &ids, code).await {
        Ok(results) => Envelope::ok(json!(results)),
        Err(e) => Envelope::from_service(e),
    }
}

/// `job/set_command`: sets `commandToPilot`; production role.
pub(crate) async fn set_command(state: &AppState, call: &Call) -> Envelope {
    let id = call.args.int("job_id").unwrap_or_default();
    let command = call.args.text("command").unwrap_or_default();
    match state.service.set_command(&call.identity, id, command).await {
        // Upstream's texts, and no data.
        Ok(done) => Envelope {
            success: done,
            message: if done {
                "command received".into()
            } else {
                format!("no active job with PandaID={id}")
            },
            data: Json::Null,
        },
        Err(e) => Envelope::from_service(e),
    }
}

/// `job/set_debug_mode`: turns debug mode on or off; production role.
pub(crate) async fn set_debug_mode(state: &AppState, call: &Call) -> Envelope {
    let id = call.args.int("job_id").unwrap_or_default();
    let on = call.args.flag("mode");
    match state.service.set_debug_mode(&call.identity, id, on).await {
        // Upstream's texts, and no data. (Upstream also answers `success: false` when it
        // succeeded, a slip no client relies on; we say what happened.)
        Ok(done) => Envelope {
            success: done,
            message: if done {
                "Succeeded".into()
            } else {
                format!("PandaID={id} not found in active DB")
            },
            data: Json::Null,
        },
        Err(e) => Envelope::from_service(e),
    }
}

/// `job/get_status`: `{"status", "command"}` per PandaID, as the legacy `checkJobStatus`;
/// a job that is unknown, or archived more than an hour ago, is `unknown` and `tobekilled`.
pub(crate) async fn get_status(state: &AppState, call: &Call) -> Envelope {
    let ids = call.args.ints("job_ids");
    let checks = match state.service.job_checks(&ids, JobScope::Everywhere).await {
        Ok(checks) => checks,
        Err(e) => return Envelope::from_service(e),
    };
    let data: Vec<Json> = ids
        .iter()
        .map(|id| match checks.get(id) {
            Some(c) => json!({"status": c.status, "command": c.command}),
            None => json!({"status": "unknown", "command": "tobekilled"}),
        })
        .collect();
    Envelope::ok(Json::Array(data))
}

/// `job/reassign`: queued jobs of the caller go back through brokerage; always succeeds, as
/// upstream, with `null`.
pub(crate) async fn reassign(state: &AppState, call: &Call) -> Envelope {
    let ids = call.args.ints("job_ids");
    match state.service.reassign_jobs(&call.identity, &ids).await {
        Ok(moved) => {
            tracing::debug!(moved, asked = ids.len(), "jobs reassigned");
            Envelope {
                success: true,
                message: String::new(),
                data: Json::Null,
            }
        }
        Err(e) => Envelope::from_service(e),
    }
}

/// `job/get_metadata_for_analysis_jobs`: `{PandaID: metadata}` of the task's finished user
/// jobs (metadata that is JSON), `No metadata found` with `{}` when there is none.
pub(crate) async fn get_metadata_for_analysis_jobs(state: &AppState, call: &Call) -> Envelope {
    let task_id = call.args.int("task_id").unwrap_or_default();
    match state.service.analysis_job_metadata(task_id).await {
        Ok(found) if found.is_empty() => Envelope {
            success: true,
            message: "No metadata found".into(),
            data: json!({}),
        },
        Ok(found) => Envelope::ok(Json::Object(
            found
                .into_iter()
                .map(|(id, metadata)| (id.to_string(), metadata))
                .collect(),
        )),
        Err(e) => Envelope::from_service(e),
    }
}

/// `job/generate_offline_execution_script` (open, as upstream): the job's offline script as
/// plain text, or a failed envelope saying why there is none.
pub(crate) async fn generate_offline_execution_script(
    state: &AppState,
    call: &Call,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let id = call.args.int("job_id").unwrap_or_default();
    match state
        .service
        .offline_script(id, call.args.int("days"))
        .await
    {
        Ok(Ok(script)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            script,
        )
            .into_response(),
        Ok(Err(message)) => Envelope::fail(message).into_response_as(true),
        Err(e) => Envelope::from_service(e).into_response_as(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_states_decode_with_nulls_datetimes_and_short_files() {
        let mut state: Vec<Json> = vec![json!("NULL"); 126];
        state[19] = json!("my.job");
        state[14] = json!(1000);
        state[4] = json!({"_datetime_object": "2026-11-25 10:00:00.000000"});
        let file: Vec<Json> = (0..18)
            .map(|i| {
                if i == 3 {
                    json!("out.log.tgz")
                } else {
                    json!("NULL")
                }
            })
            .chain([Json::Null])
            .collect();
        state.push(json!([file]));
        let jobs = decode_jobs(&Json::Array(vec![Json::Array(state)]).to_string()).expect("valid");
        assert_eq!(jobs[0].get_str(JobAttr::jobName), Some("my.job"));
        assert_eq!(jobs[0].get_i64(JobAttr::assignedPriority), Some(1000));
        assert!(jobs[0].get(JobAttr::creationTime).as_time().is_some());
        assert_eq!(jobs[0].files[0].get_str(FileAttr::lfn), Some("out.log.tgz"));
        assert!(jobs[0].files[0].get(FileAttr::attemptNr).is_null());
    }

    #[test]
    fn a_bad_value_names_the_job_and_attribute() {
        let mut state: Vec<Json> = vec![json!("NULL"); 126];
        state[16] = json!("many");
        state.push(json!([]));
        let err = decode_jobs(&Json::Array(vec![Json::Array(state)]).to_string()).expect_err("bad");
        assert!(err.contains("job 0") && err.contains("attemptNr"), "{err}");
    }
}
