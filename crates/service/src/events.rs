//! The event service, the server's part: consumers (ES jobs) take event ranges a few at a
//! time, report each one, and when a consumer ends its ranges decide what becomes of it.
//!
//! **Who:** taking and reporting ranges, and the count of ranges left, need the production
//! or pilot role (`Identity::may_dispatch`), as upstream; the statuses of a job's ranges are
//! open to any verified identity, as upstream's (they show progress, no data).
//!
//! **Largest input:** a request asks for at most [`MAX_RANGES_PER_REQUEST`] ranges (Harvester's
//! own chunk); a report names at most [`MAX_REPORTED_RANGES`] ranges (the rest answered
//! `null`, as upstream answers past its own limit); a status query names at most
//! [`MAX_STATUS_JOBS`] jobs and reads at most [`MAX_STATUS_RANGES`] ranges of each; a range
//! ID is five numbers (`panda_core::event`).
//!
//! **Hostile cost:** a request is one transaction that locks one job row and its jobset's
//! ranges it takes; a report is one transaction of one job read and one row update per
//! range, each a compare-and-set on the range's consumer and status, so a report for another
//! consumer's range, or a repeated one, changes nothing.
//!
//! **A consumer's end** (the Adder calls [`JobService::end_event_consumer`] for an ES job whose
//! pilot sent its final report), a subset of upstream's rules for one consumer per jobset:
//! - its finished ranges are `done`; its unfinished ones go back to the jobset with one
//!   attempt fewer, and each failed one is copied back likewise (`panda_store`'s events);
//! - ranges left with attempts, and the file has attempts left: the consumer is `closed`
//!   (`es_retry`, 111 EventServiceRetried; `es_noevent`, 123, if it did none), and task
//!   processing makes the next consumer of the file, which takes the rest;
//! - ranges left but no attempt of the file: the consumer fails (118
//!   EventServiceLastUnprocessed) and the ranges left are cancelled;
//! - none left and none done: the consumer fails (119 EventServiceAllFailed);
//! - none left, some out of attempts: it fails (118), as upstream without `acceptPartial`;
//! - every range done: the consumer finishes. Upstream would make a merge job of the done
//!   ranges' outputs here; this server has no merge step, so the ranges stay `done` and the
//!   job that ended the jobset is the finished one.

use panda_core::event::{EventRangeId, EventStatus, MAX_RANGE_ID_LEN};
use panda_core::identity::Identity;
pub use panda_store::{AcquiredRange, ConsumerEnd, RangeStatus};
use panda_store::{RangeAnswer, RangeReport, ZipFile};
use serde_json::{Map, Value as Json};

use crate::error::ServiceError;
use crate::JobService;

/// Most ranges one request may take (Harvester's default chunk, `getEventsChunkSize`).
pub const MAX_RANGES_PER_REQUEST: i64 = 5_120;
/// Ranges a request takes when it names no valid number (upstream's).
pub const DEFAULT_RANGES: i64 = 8;
/// Most ranges one report is applied for; the rest are answered `null`.
pub const MAX_REPORTED_RANGES: usize = 10_000;
/// Most jobs one status query may name.
pub const MAX_STATUS_JOBS: usize = 1_000;
/// Most ranges a status query reads of one job.
pub const MAX_STATUS_RANGES: i64 = 10_000;
/// Longest error text kept for a range (the column's width).
const MAX_ERROR_DIAG: usize = 500;
/// Longest zip file name kept (the column's width).
const MAX_ZIP_LFN: usize = 256;

/// upstream's `taskBufferErrorCode`s of ES consumers.
pub const EC_ES_RETRIED: i64 = 111;
pub const EC_ES_LAST_UNPROCESSED: i64 = 118;
pub const EC_ES_ALL_FAILED: i64 = 119;
pub const EC_ES_NO_EVENT: i64 = 123;

/// The answer to one reported range, as upstream's `Returns` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeReply {
    /// `true`: accepted.
    Accepted,
    /// `false`: malformed, an unknown status, or the consumer may not report.
    Refused,
    /// `null`: accepted and not stored (`running`, `transferring`), or past the limit.
    NotStored,
}

impl RangeReply {
    pub fn to_json(self) -> Json {
        match self {
            RangeReply::Accepted => Json::Bool(true),
            RangeReply::Refused => Json::Bool(false),
            RangeReply::NotStored => Json::Null,
        }
    }
}

/// The answer to a report: one reply per range, in order, and a command per job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportReply {
    pub returns: Vec<RangeReply>,
    pub commands: Vec<(i64, String)>,
}

impl ReportReply {
    /// `{"<PandaID>": "<command>"}`.
    pub fn commands_json(&self) -> Json {
        Json::Object(
            self.commands
                .iter()
                .map(|(id, c)| (id.to_string(), Json::String(c.clone())))
                .collect(),
        )
    }
}

/// What becomes of an ES consumer whose pilot has ended (see the module's rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerVerdict {
    /// Every range is done: the job finishes.
    Finished,
    /// Ranges are left for the file's next consumer: the job closes.
    Closed { sub_status: &'static str, code: i64 },
    /// The jobset ends without every range done: the job fails.
    Failed { code: i64, diag: String },
}

/// The verdict for a consumer, from its jobset's state after its end; `last_attempt` when
/// the file has no attempt left for another consumer.
pub fn consumer_verdict(end: &ConsumerEnd, last_attempt: bool) -> ConsumerVerdict {
    if end.ready > 0 {
        if last_attempt {
            return ConsumerVerdict::Failed {
                code: EC_ES_LAST_UNPROCESSED,
                diag: format!(
                    "{} event ranges left unprocessed and no attempt left",
                    end.ready
                ),
            };
        }
        return match end.done_by_consumer {
            0 => ConsumerVerdict::Closed {
                sub_status: "es_noevent",
                code: EC_ES_NO_EVENT,
            },
            _ => ConsumerVerdict::Closed {
                sub_status: "es_retry",
                code: EC_ES_RETRIED,
            },
        };
    }
    if end.done == 0 {
        return ConsumerVerdict::Failed {
            code: EC_ES_ALL_FAILED,
            diag: "no event range was processed".into(),
        };
    }
    if end.hopeless > 0 {
        return ConsumerVerdict::Failed {
            code: EC_ES_LAST_UNPROCESSED,
            diag: format!("{} event ranges failed on every attempt", end.hopeless),
        };
    }
    ConsumerVerdict::Finished
}

fn json_int(value: Option<&Json>) -> Option<i64> {
    match value? {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn json_text(value: Option<&Json>, max: usize) -> Option<String> {
    let text = match value? {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(text.chars().take(max).collect())
}

/// One range of a report, decoded: `Ok(None)` for a state that is accepted and not stored.
fn decode_range(range: &Json, zip: Option<usize>) -> Result<Option<RangeReport>, ()> {
    let map = range.as_object().ok_or(())?;
    let id = map
        .get("eventRangeID")
        .and_then(Json::as_str)
        .filter(|s| s.len() <= MAX_RANGE_ID_LEN)
        .and_then(EventRangeId::parse)
        .ok_or(())?;
    let word = map.get("eventStatus").and_then(Json::as_str).ok_or(())?;
    let status = match word {
        "running" | "transferring" => return Ok(None),
        "finished" => EventStatus::Finished,
        "failed" => EventStatus::Failed,
        "fatal" => EventStatus::Fatal,
        _ => return Err(()),
    };
    Ok(Some(RangeReport {
        id,
        status,
        error_code: json_int(map.get("errorCode")),
        error_diag: json_text(map.get("errorDiag"), MAX_ERROR_DIAG),
        objstore_id: json_int(map.get("objstoreID")),
        path_convention: json_int(map.get("pathConvention")),
        zip,
    }))
}

fn decode_zip(zip: &Map<String, Json>) -> Option<ZipFile> {
    let lfn = json_text(zip.get("lfn"), MAX_ZIP_LFN + 1).filter(|l| !l.is_empty())?;
    if lfn.len() > MAX_ZIP_LFN {
        return None;
    }
    Some(ZipFile {
        lfn,
        guid: crate::task_processing::new_guid(),
        objstore_id: json_int(zip.get("objstoreID"))?,
        fsize: json_int(zip.get("fsize")),
        adler32: json_text(zip.get("adler32"), 16),
        num_events: json_int(zip.get("numEvents")),
        path_convention: json_int(zip.get("pathConvention")),
    })
}

/// A report's ranges in order, each with its position: version 0 is a list of ranges (a
/// single range object is taken as a list of one, as the pilot's own test sends it);
/// versions 1 and 2 may also hold chunks `{"zipFile": {...}, "eventRanges": [...]}` whose
/// ranges share the zip file.
struct DecodedReport {
    /// Per reported range: `Err` refused, `Ok(None)` not stored, `Ok(Some(i))` the i-th
    /// report to store.
    slots: Vec<Result<Option<usize>, ()>>,
    reports: Vec<RangeReport>,
    zips: Vec<ZipFile>,
}

fn decode_report(text: &str, version: i64) -> Result<DecodedReport, ServiceError> {
    let parsed: Json = serde_json::from_str(text)
        .map_err(|e| ServiceError::BadRequest(format!("eventRanges is not valid JSON: {e}")))?;
    let items = match parsed {
        Json::Array(items) => items,
        single @ Json::Object(_) => vec![single],
        _ => {
            return Err(ServiceError::BadRequest(
                "eventRanges must be a JSON list of event ranges".into(),
            ))
        }
    };
    let mut decoded = DecodedReport {
        slots: Vec::new(),
        reports: Vec::new(),
        zips: Vec::new(),
    };
    let push = |decoded: &mut DecodedReport, range: &Json, zip: Option<usize>| {
        let slot = decode_range(range, zip).map(|report| {
            report.map(|r| {
                decoded.reports.push(r);
                decoded.reports.len() - 1
            })
        });
        decoded.slots.push(slot);
    };
    for item in &items {
        let chunk = (version >= 1)
            .then(|| item.get("eventRanges").and_then(Json::as_array))
            .flatten();
        let Some(ranges) = chunk else {
            push(&mut decoded, item, None);
            continue;
        };
        let zip = match item.get("zipFile") {
            None | Some(Json::Null) => None,
            Some(Json::Object(z)) => match decode_zip(z) {
                Some(zip) => {
                    decoded.zips.push(zip);
                    Some(decoded.zips.len() - 1)
                }
                // A zip file without a name or object store: its ranges are refused.
                None => {
                    decoded.slots.extend(ranges.iter().map(|_| Err(())));
                    continue;
                }
            },
            Some(_) => {
                decoded.slots.extend(ranges.iter().map(|_| Err(())));
                continue;
            }
        };
        for range in ranges {
            push(&mut decoded, range, zip);
        }
    }
    Ok(decoded)
}

/// Decodes a report as `report_event_ranges` does and returns how many ranges it names;
/// the fuzz target of the decoder (`fuzz/fuzz_targets/event_report.rs`), which must answer
/// or refuse any text, never panic.
pub fn decode_report_ranges(text: &str, version: i64) -> Result<usize, ServiceError> {
    decode_report(text, version).map(|d| d.slots.len())
}

fn need_dispatch_role(caller: &Identity) -> Result<(), ServiceError> {
    match caller.may_dispatch() {
        true => Ok(()),
        false => Err(ServiceError::Forbidden(
            "production or pilot role required".into(),
        )),
    }
}

/// The number of ranges a request asks for: upstream's 8 when it names none or nonsense,
/// at most [`MAX_RANGES_PER_REQUEST`].
pub fn ranges_wanted(requested: Option<&str>) -> i64 {
    requested
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_RANGES)
        .min(MAX_RANGES_PER_REQUEST)
}

impl JobService {
    /// Hands up to `n` ranges to the consumer `panda_id` (legacy `getEventRanges`, v1
    /// `event/acquire_event_ranges`). An unknown job, a job not running or being killed
    /// gets none, as upstream.
    pub async fn acquire_event_ranges(
        &self,
        caller: &Identity,
        panda_id: i64,
        n: i64,
    ) -> Result<Vec<AcquiredRange>, ServiceError> {
        need_dispatch_role(caller)?;
        let n = n.clamp(1, MAX_RANGES_PER_REQUEST);
        Ok(self.stores.events.acquire_event_ranges(panda_id, n).await?)
    }

    /// Applies a report of ranges (legacy `updateEventRanges`, v1
    /// `event/update_event_ranges`): `text` is the JSON list, `version` 0, 1 or 2 (any
    /// other is taken as 0, as upstream).
    pub async fn report_event_ranges(
        &self,
        caller: &Identity,
        text: &str,
        version: i64,
    ) -> Result<ReportReply, ServiceError> {
        need_dispatch_role(caller)?;
        let version = if (0..=2).contains(&version) {
            version
        } else {
            0
        };
        let mut decoded = decode_report(text, version)?;
        let mut over = false;
        if decoded.reports.len() > MAX_REPORTED_RANGES {
            decoded.reports.truncate(MAX_REPORTED_RANGES);
            over = true;
        }
        let stored = self
            .stores
            .events
            .report_event_ranges(&decoded.reports, &decoded.zips)
            .await?;
        let returns = decoded
            .slots
            .iter()
            .map(|slot| match slot {
                Err(()) => RangeReply::Refused,
                Ok(None) => RangeReply::NotStored,
                Ok(Some(i)) => match stored.answers.get(*i) {
                    Some(RangeAnswer::Accepted) => RangeReply::Accepted,
                    Some(RangeAnswer::Refused) => RangeReply::Refused,
                    None if over => RangeReply::NotStored,
                    None => RangeReply::Refused,
                },
            })
            .collect();
        Ok(ReportReply {
            returns,
            commands: stored.commands,
        })
    }

    /// Ready ranges with attempts left of a jobset (legacy `checkEventsAvailability`, v1
    /// `event/get_available_event_range_count`).
    pub async fn available_event_ranges(
        &self,
        caller: &Identity,
        task_id: i64,
        jobset_id: i64,
    ) -> Result<i64, ServiceError> {
        need_dispatch_role(caller)?;
        Ok(self
            .stores
            .events
            .available_event_ranges(task_id, jobset_id)
            .await?)
    }

    /// The ranges of each `(task, PandaID)` (legacy `get_events_status`, v1
    /// `event/get_event_range_statuses`).
    pub async fn event_range_statuses(
        &self,
        jobs: &[(i64, i64)],
    ) -> Result<Vec<(i64, Vec<RangeStatus>)>, ServiceError> {
        if jobs.len() > MAX_STATUS_JOBS {
            return Err(ServiceError::BadRequest(format!(
                "at most {MAX_STATUS_JOBS} jobs per query, got {}",
                jobs.len()
            )));
        }
        let mut out = Vec::with_capacity(jobs.len());
        for (task_id, panda_id) in jobs {
            let ranges = self
                .stores
                .events
                .event_range_statuses(*task_id, *panda_id, MAX_STATUS_RANGES)
                .await?;
            out.push((*panda_id, ranges));
        }
        Ok(out)
    }

    /// Settles the ranges of an ES consumer whose pilot ended and says what becomes of the
    /// job (the module's rules). `last_attempt`: the file has no attempt left for another
    /// consumer. Ranges left when the jobset fails are cancelled.
    pub async fn end_event_consumer(
        &self,
        task_id: i64,
        panda_id: i64,
        jobset_id: i64,
        last_attempt: bool,
    ) -> Result<ConsumerVerdict, ServiceError> {
        let events = &self.stores.events;
        let end = events
            .end_event_consumer(task_id, panda_id, jobset_id)
            .await?;
        let verdict = consumer_verdict(&end, last_attempt);
        if matches!(verdict, ConsumerVerdict::Failed { .. }) {
            events.cancel_event_ranges(task_id, jobset_id).await?;
        }
        tracing::info!(target: "panda::events", task_id, panda_id, jobset_id,
            done_by_consumer = end.done_by_consumer, ready = end.ready, done = end.done,
            hopeless = end.hopeless, verdict = ?verdict, "event-service consumer ended");
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(done_by_consumer: i64, ready: i64, done: i64, hopeless: i64) -> ConsumerEnd {
        ConsumerEnd {
            done_by_consumer,
            ready,
            done,
            hopeless,
        }
    }

    #[test]
    fn a_consumer_ends_as_its_jobset_stands() {
        assert_eq!(
            consumer_verdict(&end(3, 0, 5, 0), false),
            ConsumerVerdict::Finished
        );
        assert_eq!(
            consumer_verdict(&end(2, 4, 2, 0), false),
            ConsumerVerdict::Closed {
                sub_status: "es_retry",
                code: EC_ES_RETRIED
            }
        );
        assert_eq!(
            consumer_verdict(&end(0, 4, 0, 0), false),
            ConsumerVerdict::Closed {
                sub_status: "es_noevent",
                code: EC_ES_NO_EVENT
            }
        );
        assert!(matches!(
            consumer_verdict(&end(2, 4, 2, 0), true),
            ConsumerVerdict::Failed {
                code: EC_ES_LAST_UNPROCESSED,
                ..
            }
        ));
        assert!(matches!(
            consumer_verdict(&end(0, 0, 0, 3), false),
            ConsumerVerdict::Failed {
                code: EC_ES_ALL_FAILED,
                ..
            }
        ));
        assert!(matches!(
            consumer_verdict(&end(1, 0, 4, 1), false),
            ConsumerVerdict::Failed {
                code: EC_ES_LAST_UNPROCESSED,
                ..
            }
        ));
    }

    #[test]
    fn reports_decode_both_versions() {
        let v0 = r#"[{"eventRangeID":"1-2-3-4-5","eventStatus":"failed","errorCode":1220},
                     {"eventRangeID":"1-2-3-5-5","eventStatus":"running"},
                     {"eventRangeID":"bad","eventStatus":"finished"},
                     {"eventRangeID":"1-2-3-6-5","eventStatus":"done"}]"#;
        let d = decode_report(v0, 0).expect("decodes");
        assert_eq!(d.slots, vec![Ok(Some(0)), Ok(None), Err(()), Err(())]);
        assert_eq!(d.reports[0].error_code, Some(1220));
        assert_eq!(d.reports[0].status, EventStatus::Failed);
        let v1 = r#"[{"zipFile":{"numEvents":2,"objstoreID":1318,"lfn":"EventService_premerge_1.tar",
                       "fsize":1024,"adler32":"0a0b0c0d","pathConvention":1000},
                      "eventRanges":[{"eventRangeID":"1-2-3-4-5","eventStatus":"finished"},
                                     {"eventRangeID":"1-2-3-5-5","eventStatus":"finished"}]}]"#;
        let d = decode_report(v1, 1).expect("decodes");
        assert_eq!(d.slots, vec![Ok(Some(0)), Ok(Some(1))]);
        assert_eq!(d.zips.len(), 1);
        assert_eq!(d.zips[0].objstore_id, 1318);
        assert_eq!(d.reports[1].zip, Some(0));
        // A single object stands for a list of one; other JSON is refused with a message.
        let d = decode_report(r#"{"eventRangeID":"1-2-3-4-5","eventStatus":"fatal"}"#, 0)
            .expect("decodes");
        assert_eq!(d.reports[0].status, EventStatus::Fatal);
        for bad in ["", "[", "42", "\"x\""] {
            assert!(
                matches!(decode_report(bad, 0), Err(ServiceError::BadRequest(_))),
                "{bad}"
            );
        }
        // A zip without an object store refuses its ranges.
        let d = decode_report(
            r#"[{"zipFile":{"lfn":"z"},"eventRanges":[{"eventRangeID":"1-2-3-4-5","eventStatus":"finished"}]}]"#,
            1,
        )
        .expect("decodes");
        assert_eq!(d.slots, vec![Err(())]);
    }

    #[test]
    fn requests_are_bounded() {
        assert_eq!(ranges_wanted(None), DEFAULT_RANGES);
        assert_eq!(ranges_wanted(Some("x")), DEFAULT_RANGES);
        assert_eq!(ranges_wanted(Some("-3")), DEFAULT_RANGES);
        assert_eq!(ranges_wanted(Some("3")), 3);
        assert_eq!(ranges_wanted(Some("999999999")), MAX_RANGES_PER_REQUEST);
    }
}
