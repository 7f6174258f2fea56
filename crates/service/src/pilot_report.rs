//! A pilot's report on one job (legacy `updateJob`, `/api/v1` `pilot/update_job`), decoded
//! once for both wires into a [`PilotReport`].
//!
//! The fields are named as the legacy dispatcher names them; [`V1_FIELD_NAMES`] maps the
//! `/api/v1` spelling to those. Each wire hands the decoder a [`ReportFields`] lookup over its
//! own request, so neither wire depends on the other. The rules here are upstream's mapping
//! of report fields to job columns: which texts are kept and how long, which codes count only
//! when numeric, bytes reported and kilobytes stored, `leak` and `chi2` read out of
//! `jobMetrics`, every value checked against its column before any SQL runs.

use chrono::NaiveDateTime;
use panda_core::{AttrSet, JobAttr, Value};

use crate::ServiceError;

/// The state a pilot reports for its job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PilotState {
    #[default]
    Starting,
    Running,
    Transferring,
    Holding,
    Finished,
    Failed,
    /// Any other word: the report is ignored, as upstream ignores it.
    Other(String),
}

impl PilotState {
    pub fn parse(text: &str) -> PilotState {
        match text {
            "starting" => PilotState::Starting,
            "running" => PilotState::Running,
            "transferring" => PilotState::Transferring,
            "holding" => PilotState::Holding,
            "finished" => PilotState::Finished,
            "failed" => PilotState::Failed,
            other => PilotState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            PilotState::Starting => "starting",
            PilotState::Running => "running",
            PilotState::Transferring => "transferring",
            PilotState::Holding => "holding",
            PilotState::Finished => "finished",
            PilotState::Failed => "failed",
            PilotState::Other(other) => other,
        }
    }

    /// `finished` or `failed`: the pilot's last word on the job, with its file report.
    pub fn is_final(&self) -> bool {
        matches!(self, PilotState::Finished | PilotState::Failed)
    }
}

impl std::fmt::Display for PilotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A heartbeat or final report, decoded from either API.
#[derive(Clone, Debug, Default)]
pub struct PilotReport {
    pub panda_id: i64,
    pub state: PilotState,
    pub attempt_nr: Option<i64>,
    /// Job attributes reported by the pilot, already converted to the column's units.
    pub attributes: Vec<(JobAttr, Value)>,
    /// The final file report (`xml`): JSON `{lfn: {guid, fsize, adler32, surl, endpoint}}`.
    pub file_report: Option<String>,
    pub metadata: Option<String>,
    pub stdout: Option<String>,
    pub pilot_log: Option<String>,
}

/// A report's fields by their legacy names, as one wire received them.
pub trait ReportFields {
    /// The field as sent (possibly empty); `None` when absent.
    fn get(&self, name: &str) -> Option<&str>;

    /// A field that is present and not empty.
    fn value(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

/// `/api/v1` argument names of `pilot/update_job` and the legacy field each one is.
pub const V1_FIELD_NAMES: [(&str, &str); 51] = [
    ("job_id", "jobId"),
    ("job_status", "state"),
    ("job_output_report", "xml"),
    ("meta_data", "metaData"),
    ("pilot_log", "pilotLog"),
    ("stdout", "stdout"),
    ("node", "node"),
    ("site_name", "siteName"),
    ("scheduler_id", "schedulerID"),
    ("pilot_id", "pilotID"),
    ("batch_id", "batchID"),
    ("trans_exit_code", "transExitCode"),
    ("pilot_error_code", "pilotErrorCode"),
    ("exe_error_code", "exeErrorCode"),
    ("pilot_error_diag", "pilotErrorDiag"),
    ("exe_error_diag", "exeErrorDiag"),
    ("cpu_consumption_time", "cpuConsumptionTime"),
    ("cpu_consumption_unit", "cpuConsumptionUnit"),
    ("cpu_conversion_factor", "cpuConversionFactor"),
    ("cpu_architecture_level", "cpu_architecture_level"),
    ("pilot_timing", "pilotTiming"),
    ("start_time", "startTime"),
    ("end_time", "endTime"),
    ("n_events", "nEvents"),
    ("n_input_files", "nInputFiles"),
    ("attempt_nr", "attemptNr"),
    ("job_metrics", "jobMetrics"),
    ("job_sub_status", "jobSubStatus"),
    ("core_count", "coreCount"),
    ("mean_core_count", "meanCoreCount"),
    ("max_rss", "maxRSS"),
    ("max_vmem", "maxVMEM"),
    ("max_swap", "maxSWAP"),
    ("max_pss", "maxPSS"),
    ("avg_rss", "avgRSS"),
    ("avg_vmem", "avgVMEM"),
    ("avg_swap", "avgSWAP"),
    ("avg_pss", "avgPSS"),
    ("tot_rchar", "totRCHAR"),
    ("tot_wchar", "totWCHAR"),
    ("tot_rbytes", "totRBYTES"),
    ("tot_wbytes", "totWBYTES"),
    ("rate_rchar", "rateRCHAR"),
    ("rate_wchar", "rateWCHAR"),
    ("rate_rbytes", "rateRBYTES"),
    ("rate_wbytes", "rateWBYTES"),
    ("corrupted_files", "corruptedFiles"),
    ("grid", "grid"),
    ("source_site", "source_site"),
    ("destination_site", "destination_site"),
    ("timeout", "timeout"),
];

/// The `/api/v1` name of a legacy field.
pub fn v1_name(legacy: &str) -> Option<&'static str> {
    V1_FIELD_NAMES
        .iter()
        .find(|(_, l)| *l == legacy)
        .map(|(v1, _)| *v1)
}

/// `int(float(value))`, as upstream converts numeric parameters: absent, empty, `None` and
/// `NULL` are no value; anything else that is not a number is an error naming the field.
pub fn number(name: &str, value: Option<&str>) -> Result<Option<i64>, ServiceError> {
    match value.filter(|v| !v.is_empty()) {
        None | Some("None") | Some("NULL") => Ok(None),
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| ServiceError::BadRequest(format!("{name}={text:?} is not a number"))),
    }
}

/// Parses `%Y-%m-%d %H:%M:%S`; anything else (the pilot sends epoch floats) is dropped, as
/// upstream does.
fn timestamp(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()
}

/// Text fields: (field, column, length kept). Diagnostics are kept even when empty.
const TEXTS: [(&str, JobAttr, usize); 15] = [
    ("cpuConsumptionUnit", JobAttr::cpuConsumptionUnit, 128),
    ("schedulerID", JobAttr::schedulerID, 128),
    ("pilotTiming", JobAttr::pilotTiming, 100),
    ("jobSubStatus", JobAttr::jobSubStatus, 80),
    ("grid", JobAttr::grid, 50),
    (
        "cpu_architecture_level",
        JobAttr::cpu_architecture_level,
        20,
    ),
    ("node", JobAttr::modificationHost, 128),
    ("pilotErrorDiag", JobAttr::pilotErrorDiag, 500),
    ("exeErrorDiag", JobAttr::exeErrorDiag, 500),
    ("jobMetrics", JobAttr::jobMetrics, 500),
    ("pilotID", JobAttr::pilotID, 200),
    ("batchID", JobAttr::batchID, 80),
    ("computingElement", JobAttr::computingElement, 128),
    ("source_site", JobAttr::sourceSite, 36),
    ("destination_site", JobAttr::destinationSite, 36),
];

/// Integer fields stored as they come.
const NUMBERS: [(&str, JobAttr); 13] = [
    ("exeErrorCode", JobAttr::exeErrorCode),
    ("cpuConsumptionTime", JobAttr::cpuConsumptionTime),
    ("nEvents", JobAttr::nEvents),
    ("nInputFiles", JobAttr::nInputFiles),
    ("coreCount", JobAttr::actualCoreCount),
    ("maxRSS", JobAttr::maxRSS),
    ("maxVMEM", JobAttr::maxVMEM),
    ("maxSWAP", JobAttr::maxSWAP),
    ("maxPSS", JobAttr::maxPSS),
    ("avgRSS", JobAttr::avgRSS),
    ("avgVMEM", JobAttr::avgVMEM),
    ("avgSWAP", JobAttr::avgSWAP),
    ("avgPSS", JobAttr::avgPSS),
];

/// Byte counters, reported in bytes and stored in kB.
const BYTE_TOTALS: [(&str, JobAttr); 4] = [
    ("totRCHAR", JobAttr::totRCHAR),
    ("totWCHAR", JobAttr::totWCHAR),
    ("totRBYTES", JobAttr::totRBYTES),
    ("totWBYTES", JobAttr::totWBYTES),
];

/// Byte rates, stored as they come.
const BYTE_RATES: [(&str, JobAttr); 4] = [
    ("rateRCHAR", JobAttr::rateRCHAR),
    ("rateWCHAR", JobAttr::rateWCHAR),
    ("rateRBYTES", JobAttr::rateRBYTES),
    ("rateWBYTES", JobAttr::rateWBYTES),
];

/// The largest byte count or rate stored (the columns' width).
const BYTES_CAP: i64 = 9_999_999_999;

impl PilotReport {
    /// Decodes a report; a field that is malformed or does not fit its column is a
    /// `BadRequest` naming it, and nothing is stored.
    pub fn decode(fields: &impl ReportFields) -> Result<PilotReport, ServiceError> {
        let bad = |message: String| ServiceError::BadRequest(message);
        let job_id = fields.get("jobId").unwrap_or("");
        let panda_id = job_id
            .trim()
            .parse::<i64>()
            .map_err(|_| bad(format!("jobId={job_id:?} is not a PandaID")))?;
        let mut attributes: Vec<(JobAttr, Value)> = Vec::new();
        for (name, attr, max) in TEXTS {
            let value = match name {
                "pilotErrorDiag" | "exeErrorDiag" => fields.get(name),
                _ => fields.value(name),
            };
            if let Some(v) = value {
                attributes.push((attr, Value::Text(Some(v.chars().take(max).collect()))));
            }
        }
        // Codes that upstream keeps only when they are integers.
        if let Some(code) = fields
            .value("transExitCode")
            .filter(|c| c.trim().parse::<i64>().is_ok())
        {
            attributes.push((
                JobAttr::transExitCode,
                Value::Text(Some(code.trim().to_string())),
            ));
        }
        if let Some(code) = fields
            .value("pilotErrorCode")
            .and_then(|c| c.trim().trim_start_matches('-').parse::<i64>().ok())
        {
            attributes.push((JobAttr::pilotErrorCode, Value::Int(Some(code))));
        }
        let field_number = |name: &str| number(name, fields.get(name));
        for (name, attr) in NUMBERS {
            if let Some(n) = field_number(name)? {
                attributes.push((attr, Value::Int(Some(n))));
            }
        }
        if let Some(text) = fields.value("cpuConversionFactor") {
            let factor = text
                .trim()
                .parse::<f64>()
                .map_err(|_| bad(format!("cpuConversionFactor={text:?} is not a number")))?;
            attributes.push((JobAttr::cpuConversion, Value::Float(Some(factor))));
        }
        for (name, attr) in BYTE_TOTALS {
            if let Some(n) = field_number(name)? {
                let kilobytes = ((n as f64 / 1024.0).round() as i64).min(BYTES_CAP);
                attributes.push((attr, Value::Int(Some(kilobytes))));
            }
        }
        for (name, attr) in BYTE_RATES {
            if let Some(n) = field_number(name)? {
                attributes.push((attr, Value::Int(Some(n.min(BYTES_CAP)))));
            }
        }
        for (name, attr) in [
            ("startTime", JobAttr::startTime),
            ("endTime", JobAttr::endTime),
        ] {
            if let Some(t) = fields.value(name).and_then(timestamp) {
                attributes.push((attr, Value::Time(Some(t))));
            }
        }
        if let Some(metrics) = fields.value("jobMetrics") {
            attributes.extend(memory_metrics(metrics));
        }
        // Every value must fit its column before any SQL runs: a database error would lose
        // the whole heartbeat, a 400 names the field.
        for (attr, value) in &attributes {
            let meta = &JobAttr::attributes()[attr.index()];
            meta.column_type
                .check(value)
                .map_err(|why| bad(format!("{}: {why}", meta.name)))?;
        }
        for name in ["state", "xml", "metaData", "stdout", "pilotLog"] {
            if fields.get(name).is_some_and(|v| v.contains('\0')) {
                return Err(bad(format!("{name}: contains a NUL byte")));
            }
        }
        Ok(PilotReport {
            panda_id,
            state: PilotState::parse(fields.get("state").unwrap_or("")),
            attempt_nr: field_number("attemptNr")?,
            attributes,
            file_report: fields.get("xml").map(str::to_string),
            metadata: fields.value("metaData").map(str::to_string),
            stdout: fields
                .value("stdout")
                .map(|s| s.chars().take(2048).collect()),
            pilot_log: fields.value("pilotLog").map(str::to_string),
        })
    }
}

/// `leak=` and `chi2=` of the memory monitor, out of `jobMetrics`.
fn memory_metrics(metrics: &str) -> Vec<(JobAttr, Value)> {
    let mut found = Vec::new();
    for item in metrics.split_whitespace() {
        match item.split_once('=').map(|(k, v)| (k, v.parse::<f64>())) {
            Some(("leak", Ok(f))) => found.push((JobAttr::memory_leak, Value::Int(Some(f as i64)))),
            Some(("chi2", Ok(f))) => found.push((JobAttr::memory_leak_x2, Value::Float(Some(f)))),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fields(HashMap<&'static str, &'static str>);

    impl ReportFields for Fields {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).copied()
        }
    }

    fn decode(pairs: &[(&'static str, &'static str)]) -> Result<PilotReport, ServiceError> {
        PilotReport::decode(&Fields(pairs.iter().copied().collect()))
    }

    fn attribute(report: &PilotReport, attr: JobAttr) -> Option<&Value> {
        report
            .attributes
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|(_, v)| v)
    }

    #[test]
    fn units_and_codes_follow_upstream() {
        let report = decode(&[
            ("jobId", "42"),
            ("state", "running"),
            ("totRCHAR", "2048"),
            ("rateRCHAR", "99999999999999"),
            ("transExitCode", "not a number"),
            ("pilotErrorCode", "-1305"),
            ("jobMetrics", "coreCount=8 leak=12.7 chi2=0.5"),
            ("maxRSS", "1.5e3"),
            ("startTime", "1700000000.0"),
            ("attemptNr", "2"),
        ])
        .expect("valid");
        assert_eq!(report.panda_id, 42);
        assert_eq!(report.state, PilotState::Running);
        assert_eq!(report.attempt_nr, Some(2));
        assert_eq!(
            attribute(&report, JobAttr::totRCHAR),
            Some(&Value::Int(Some(2)))
        );
        assert_eq!(
            attribute(&report, JobAttr::rateRCHAR),
            Some(&Value::Int(Some(BYTES_CAP)))
        );
        assert_eq!(attribute(&report, JobAttr::transExitCode), None);
        assert_eq!(
            attribute(&report, JobAttr::pilotErrorCode),
            Some(&Value::Int(Some(1305)))
        );
        assert_eq!(
            attribute(&report, JobAttr::memory_leak),
            Some(&Value::Int(Some(12)))
        );
        assert_eq!(
            attribute(&report, JobAttr::maxRSS),
            Some(&Value::Int(Some(1500)))
        );
        assert_eq!(
            attribute(&report, JobAttr::startTime),
            None,
            "epoch floats are dropped"
        );
    }

    #[test]
    fn bad_fields_are_refused_by_name() {
        let err = decode(&[("jobId", "x")]).expect_err("not a PandaID");
        assert!(err.to_string().contains("jobId=\"x\""), "{err}");
        let err = decode(&[("jobId", "1"), ("nEvents", "many")]).expect_err("not a number");
        assert!(err.to_string().contains("nEvents"), "{err}");
        let err = decode(&[("jobId", "1"), ("stdout", "a\0b")]).expect_err("NUL");
        assert!(err.to_string().contains("stdout"), "{err}");
    }

    #[test]
    fn unknown_states_are_kept_as_other_and_finals_are_finished_or_failed() {
        let report = decode(&[("jobId", "1"), ("state", "dancing")]).expect("valid");
        assert_eq!(report.state, PilotState::Other("dancing".into()));
        assert!(PilotState::Failed.is_final() && !PilotState::Holding.is_final());
        assert_eq!(v1_name("jobId"), Some("job_id"));
    }
}
