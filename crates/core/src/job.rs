//! `JobSpec`: a PanDA job, its 126 attributes in upstream's order, and its files.
//!
//! `jobParameters` and `metadata` are attributes of the spec but live in their own tables
//! (`jobparamstable`, `metatable`); the store moves them there and back.

use std::ops::{Deref, DerefMut};

use chrono::NaiveDateTime;

use crate::attrs::attribute_table;
use crate::file::FileSpec;
use crate::record::Record;
use crate::status::JobStatus;
use crate::value::{ColumnType, Value};

attribute_table! { JobAttr, JOB_ATTRIBUTES;
    PandaID: ColumnType::BigInt;
    jobDefinitionID: ColumnType::BigInt;
    schedulerID: ColumnType::VarChar(128);
    pilotID: ColumnType::VarChar(200);
    creationTime: ColumnType::Timestamp;
    creationHost: ColumnType::VarChar(128);
    modificationTime: ColumnType::Timestamp;
    modificationHost: ColumnType::VarChar(128);
    AtlasRelease: ColumnType::VarChar(64);
    transformation: ColumnType::VarChar(250);
    homepackage: ColumnType::VarChar(80);
    prodSeriesLabel: ColumnType::VarChar(20);
    prodSourceLabel: ColumnType::VarChar(20);
    prodUserID: ColumnType::VarChar(250);
    assignedPriority: ColumnType::Int, zero;
    currentPriority: ColumnType::Int, zero;
    attemptNr: ColumnType::SmallInt, zero;
    maxAttempt: ColumnType::SmallInt, zero;
    jobStatus: ColumnType::VarChar(15);
    jobName: ColumnType::VarChar(256);
    maxCpuCount: ColumnType::BigInt, zero;
    maxCpuUnit: ColumnType::VarChar(32);
    maxDiskCount: ColumnType::BigInt, zero;
    maxDiskUnit: ColumnType::Char(4);
    ipConnectivity: ColumnType::Char(5);
    minRamCount: ColumnType::BigInt, zero;
    minRamUnit: ColumnType::Char(2);
    startTime: ColumnType::Timestamp;
    endTime: ColumnType::Timestamp;
    cpuConsumptionTime: ColumnType::Decimal(20,0), zero;
    cpuConsumptionUnit: ColumnType::VarChar(128);
    commandToPilot: ColumnType::VarChar(250);
    transExitCode: ColumnType::VarChar(128);
    pilotErrorCode: ColumnType::Int, zero;
    pilotErrorDiag: ColumnType::VarChar(500);
    exeErrorCode: ColumnType::Int, zero;
    exeErrorDiag: ColumnType::VarChar(500);
    supErrorCode: ColumnType::Int, zero;
    supErrorDiag: ColumnType::VarChar(250);
    ddmErrorCode: ColumnType::Int, zero;
    ddmErrorDiag: ColumnType::VarChar(500);
    brokerageErrorCode: ColumnType::Int, zero;
    brokerageErrorDiag: ColumnType::VarChar(250);
    jobDispatcherErrorCode: ColumnType::Int, zero;
    jobDispatcherErrorDiag: ColumnType::VarChar(250);
    taskBufferErrorCode: ColumnType::Int, zero;
    taskBufferErrorDiag: ColumnType::VarChar(300);
    computingSite: ColumnType::VarChar(128);
    computingElement: ColumnType::VarChar(128);
    jobParameters: ColumnType::Text;
    metadata: ColumnType::Text;
    prodDBlock: ColumnType::VarChar(255);
    dispatchDBlock: ColumnType::VarChar(255);
    destinationDBlock: ColumnType::VarChar(255);
    destinationSE: ColumnType::VarChar(250);
    nEvents: ColumnType::BigInt, zero;
    grid: ColumnType::VarChar(50);
    cloud: ColumnType::VarChar(50);
    cpuConversion: ColumnType::Decimal(9,4);
    sourceSite: ColumnType::VarChar(36);
    destinationSite: ColumnType::VarChar(36);
    transferType: ColumnType::VarChar(10);
    taskID: ColumnType::Int;
    cmtConfig: ColumnType::VarChar(250);
    stateChangeTime: ColumnType::Timestamp;
    prodDBUpdateTime: ColumnType::Timestamp;
    lockedby: ColumnType::VarChar(128);
    relocationFlag: ColumnType::SmallInt, zero;
    jobExecutionID: ColumnType::BigInt, zero;
    VO: ColumnType::VarChar(32);
    pilotTiming: ColumnType::VarChar(100);
    workingGroup: ColumnType::VarChar(20);
    processingType: ColumnType::VarChar(64);
    prodUserName: ColumnType::VarChar(60);
    nInputFiles: ColumnType::Int;
    countryGroup: ColumnType::VarChar(20);
    batchID: ColumnType::VarChar(80);
    parentID: ColumnType::BigInt;
    specialHandling: ColumnType::VarChar(80);
    jobsetID: ColumnType::BigInt;
    coreCount: ColumnType::SmallInt;
    nInputDataFiles: ColumnType::Int;
    inputFileType: ColumnType::VarChar(32);
    inputFileProject: ColumnType::VarChar(64);
    inputFileBytes: ColumnType::BigInt;
    nOutputDataFiles: ColumnType::Int, zero;
    outputFileBytes: ColumnType::BigInt, zero;
    jobMetrics: ColumnType::VarChar(500);
    workQueue_ID: ColumnType::Int;
    jediTaskID: ColumnType::BigInt;
    jobSubStatus: ColumnType::VarChar(80);
    actualCoreCount: ColumnType::Int;
    reqID: ColumnType::Int;
    maxRSS: ColumnType::BigInt;
    maxVMEM: ColumnType::BigInt;
    maxSWAP: ColumnType::BigInt;
    maxPSS: ColumnType::BigInt;
    avgRSS: ColumnType::BigInt;
    avgVMEM: ColumnType::BigInt;
    avgSWAP: ColumnType::BigInt;
    avgPSS: ColumnType::BigInt;
    maxWalltime: ColumnType::BigInt;
    nucleus: ColumnType::VarChar(52);
    eventService: ColumnType::SmallInt;
    failedAttempt: ColumnType::SmallInt;
    hs06sec: ColumnType::BigInt;
    gshare: ColumnType::VarChar(32);
    hs06: ColumnType::BigInt;
    totRCHAR: ColumnType::BigInt;
    totWCHAR: ColumnType::BigInt;
    totRBYTES: ColumnType::BigInt;
    totWBYTES: ColumnType::BigInt;
    rateRCHAR: ColumnType::BigInt;
    rateWCHAR: ColumnType::BigInt;
    rateRBYTES: ColumnType::BigInt;
    rateWBYTES: ColumnType::BigInt;
    resource_type: ColumnType::VarChar(56);
    diskIO: ColumnType::Int;
    memory_leak: ColumnType::BigInt;
    memory_leak_x2: ColumnType::Decimal(14,3);
    container_name: ColumnType::VarChar(200);
    job_label: ColumnType::VarChar(20);
    gco2_regional: ColumnType::Decimal(10,2);
    gco2_global: ColumnType::Decimal(10,2);
    cpu_architecture_level: ColumnType::VarChar(20);
    outputFileType: ColumnType::VarChar(32);
}

/// The error components of a job, in upstream's order: the name BigPanDA gives it, its code
/// attribute and its diagnostic attribute.
pub const ERROR_COMPONENTS: [(&str, JobAttr, JobAttr); 7] = [
    ("pilot", JobAttr::pilotErrorCode, JobAttr::pilotErrorDiag),
    ("exe", JobAttr::exeErrorCode, JobAttr::exeErrorDiag),
    ("sup", JobAttr::supErrorCode, JobAttr::supErrorDiag),
    ("ddm", JobAttr::ddmErrorCode, JobAttr::ddmErrorDiag),
    (
        "brokerage",
        JobAttr::brokerageErrorCode,
        JobAttr::brokerageErrorDiag,
    ),
    (
        "jobdispatcher",
        JobAttr::jobDispatcherErrorCode,
        JobAttr::jobDispatcherErrorDiag,
    ),
    (
        "taskbuffer",
        JobAttr::taskBufferErrorCode,
        JobAttr::taskBufferErrorDiag,
    ),
];

/// A job with its files. Dereferences to its attribute record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobSpec {
    pub attrs: Record<JobAttr>,
    pub files: Vec<FileSpec>,
}

impl Deref for JobSpec {
    type Target = Record<JobAttr>;
    fn deref(&self) -> &Self::Target {
        &self.attrs
    }
}

impl DerefMut for JobSpec {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.attrs
    }
}

impl JobSpec {
    pub fn new() -> Self {
        Self::default()
    }

    /// The PandaID, 0 until the store assigns one.
    pub fn panda_id(&self) -> i64 {
        self.get_i64(JobAttr::PandaID).unwrap_or(0)
    }

    /// The job's status, if it holds a known one.
    pub fn status(&self) -> Option<JobStatus> {
        self.get_str(JobAttr::jobStatus).and_then(JobStatus::parse)
    }

    /// Sets `jobStatus` and, as upstream does on every status assignment, `stateChangeTime`.
    pub fn set_status(&mut self, status: JobStatus, now: NaiveDateTime) {
        self.set(
            JobAttr::jobStatus,
            Value::Text(Some(status.as_str().to_string())),
        );
        self.set(JobAttr::stateChangeTime, Value::Time(Some(now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AttrSet;

    #[test]
    fn the_table_has_upstreams_126_attributes_in_order() {
        let attrs = JobAttr::attributes();
        assert_eq!(attrs.len(), 126);
        assert_eq!(attrs[0].name, "PandaID");
        assert_eq!(attrs[18].name, "jobStatus");
        assert_eq!(attrs[125].name, "outputFileType");
        assert_eq!(
            JobAttr::by_name("workQueue_ID"),
            Some(JobAttr::workQueue_ID)
        );
        assert_eq!(JobAttr::by_name("nosuch"), None);
    }

    #[test]
    fn zero_attributes_default_to_zero_and_others_to_null() {
        let job = JobSpec::new();
        assert_eq!(job.get(JobAttr::currentPriority), &Value::Int(Some(0)));
        assert_eq!(job.get(JobAttr::computingSite), &Value::Text(None));
        let mut job = job;
        job.set(JobAttr::attemptNr, Value::Int(None));
        assert_eq!(job.get_i64(JobAttr::attemptNr), Some(0));
    }

    #[test]
    fn long_strings_are_cut_to_the_column_length() {
        let mut job = JobSpec::new();
        job.set_str(JobAttr::pilotErrorDiag, &"x".repeat(600)).ok();
        assert_eq!(
            job.get_str(JobAttr::pilotErrorDiag).map(str::len),
            Some(500)
        );
    }

    #[test]
    fn setting_the_status_bumps_the_state_change_time() {
        let mut job = JobSpec::new();
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0)
            .map(|t| t.naive_utc())
            .unwrap_or_default();
        job.set_status(JobStatus::Activated, now);
        assert_eq!(job.status(), Some(JobStatus::Activated));
        assert_eq!(job.get(JobAttr::stateChangeTime).as_time(), Some(now));
    }
}
