//! `JediTaskSpec`: a task, a row of `jedi_tasks`, with upstream's 84 attributes in upstream's
//! order (the table orders its columns differently and has four more, which only the
//! database fills: `amiflag_old`, `amiflag`, `job_label`, `realmodificationtime`).
//!
//! Task statuses are plain strings: JEDI has about thirty, and the server only needs to know
//! which ones are final ([`task_status_is_final`]).

use crate::attrs::attribute_table;
use crate::record::Record;
use crate::value::ColumnType;

attribute_table! { TaskAttr, TASK_ATTRIBUTES;
    jediTaskID: ColumnType::BigInt;
    taskName: ColumnType::VarChar(256);
    status: ColumnType::VarChar(64);
    userName: ColumnType::VarChar(128);
    creationDate: ColumnType::Timestamp;
    modificationTime: ColumnType::Timestamp;
    startTime: ColumnType::Timestamp;
    endTime: ColumnType::Timestamp;
    frozenTime: ColumnType::Timestamp;
    prodSourceLabel: ColumnType::VarChar(20);
    workingGroup: ColumnType::VarChar(32);
    vo: ColumnType::VarChar(32);
    coreCount: ColumnType::Int;
    taskType: ColumnType::VarChar(64);
    processingType: ColumnType::VarChar(64);
    taskPriority: ColumnType::Int;
    currentPriority: ColumnType::Int;
    architecture: ColumnType::VarChar(256);
    transUses: ColumnType::VarChar(64);
    transHome: ColumnType::VarChar(128);
    transPath: ColumnType::VarChar(128);
    lockedBy: ColumnType::VarChar(56);
    lockedTime: ColumnType::Timestamp;
    termCondition: ColumnType::VarChar(100);
    splitRule: ColumnType::VarChar(200);
    walltime: ColumnType::Int;
    walltimeUnit: ColumnType::VarChar(32);
    outDiskCount: ColumnType::Int;
    outDiskUnit: ColumnType::VarChar(32);
    workDiskCount: ColumnType::Int;
    workDiskUnit: ColumnType::VarChar(32);
    ramCount: ColumnType::Int;
    ramUnit: ColumnType::VarChar(32);
    ioIntensity: ColumnType::Int;
    ioIntensityUnit: ColumnType::VarChar(32);
    workQueue_ID: ColumnType::Int;
    progress: ColumnType::SmallInt;
    failureRate: ColumnType::SmallInt;
    errorDialog: ColumnType::VarChar(510);
    reqID: ColumnType::Int;
    oldStatus: ColumnType::VarChar(64);
    cloud: ColumnType::VarChar(10);
    site: ColumnType::VarChar(60);
    countryGroup: ColumnType::VarChar(20);
    parent_tid: ColumnType::BigInt;
    eventService: ColumnType::SmallInt;
    ticketID: ColumnType::VarChar(50);
    ticketSystemType: ColumnType::VarChar(32);
    stateChangeTime: ColumnType::Timestamp;
    superStatus: ColumnType::VarChar(64);
    campaign: ColumnType::VarChar(32);
    mergeRamCount: ColumnType::Int;
    mergeRamUnit: ColumnType::VarChar(32);
    mergeWalltime: ColumnType::Int;
    mergeWalltimeUnit: ColumnType::VarChar(32);
    throttledTime: ColumnType::Timestamp;
    numThrottled: ColumnType::SmallInt;
    mergeCoreCount: ColumnType::Int;
    goal: ColumnType::SmallInt;
    assessmentTime: ColumnType::Timestamp;
    cpuTime: ColumnType::Int;
    cpuTimeUnit: ColumnType::VarChar(32);
    cpuEfficiency: ColumnType::SmallInt;
    baseWalltime: ColumnType::Int;
    nucleus: ColumnType::VarChar(52);
    baseRamCount: ColumnType::Int;
    ttcRequested: ColumnType::Timestamp;
    ttcPredicted: ColumnType::Timestamp;
    ttcPredictionDate: ColumnType::Timestamp;
    rescueTime: ColumnType::Timestamp;
    requestType: ColumnType::VarChar(32);
    gshare: ColumnType::VarChar(32);
    resource_type: ColumnType::VarChar(56);
    useJumbo: ColumnType::Char(1);
    diskIO: ColumnType::Int;
    diskIOUnit: ColumnType::VarChar(32);
    memory_leak_core: ColumnType::BigInt;
    memory_leak_x2: ColumnType::Decimal(14, 3);
    attemptNr: ColumnType::SmallInt;
    container_name: ColumnType::VarChar(200);
    framework: ColumnType::VarChar(50);
    activatedTime: ColumnType::Timestamp;
    queuedTime: ColumnType::Timestamp;
    actionTime: ColumnType::Timestamp;
}

/// A task.
pub type TaskSpec = Record<TaskAttr>;

/// Statuses after which a task never changes again by itself.
pub fn task_status_is_final(status: &str) -> bool {
    matches!(
        status,
        "finished" | "done" | "failed" | "aborted" | "broken"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AttrSet;

    #[test]
    fn the_table_has_upstreams_84_attributes() {
        assert_eq!(TaskAttr::attributes().len(), 84);
        assert_eq!(TaskAttr::attributes()[83].name, "actionTime");
        assert_eq!(
            TaskAttr::by_name("workQueue_ID"),
            Some(TaskAttr::workQueue_ID)
        );
    }
}
