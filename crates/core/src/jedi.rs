//! JEDI's datasets and their files: `JediDatasetSpec` (a row of `jedi_datasets`) and
//! `JediFileSpec` (a row of `jedi_dataset_contents`), with upstream's attribute names in
//! upstream's order.
//!
//! A task's datasets are its master input (a real dataset, or the `pseudo_dataset` of a task
//! without input), its outputs and its log; a file of the master input is one unit of work,
//! tried until it is `finished` or has used its attempts (`attemptNr` reaches `maxAttempt`).

use crate::attrs::attribute_table;
use crate::record::Record;
use crate::value::ColumnType;

attribute_table! { DatasetAttr, DATASET_ATTRIBUTES;
    jediTaskID: ColumnType::BigInt;
    datasetID: ColumnType::BigInt;
    datasetName: ColumnType::VarChar(255);
    containerName: ColumnType::VarChar(255);
    r#type: ColumnType::VarChar(20);
    creationTime: ColumnType::Timestamp;
    modificationTime: ColumnType::Timestamp;
    vo: ColumnType::VarChar(32);
    cloud: ColumnType::VarChar(10);
    site: ColumnType::VarChar(60);
    masterID: ColumnType::BigInt;
    provenanceID: ColumnType::BigInt;
    status: ColumnType::VarChar(20);
    state: ColumnType::VarChar(20);
    stateCheckTime: ColumnType::Timestamp;
    stateCheckExpiration: ColumnType::Timestamp;
    frozenTime: ColumnType::Timestamp;
    nFiles: ColumnType::BigInt, zero;
    nFilesToBeUsed: ColumnType::BigInt, zero;
    nFilesUsed: ColumnType::BigInt, zero;
    nFilesFinished: ColumnType::BigInt, zero;
    nFilesFailed: ColumnType::BigInt, zero;
    nFilesOnHold: ColumnType::BigInt, zero;
    nEvents: ColumnType::BigInt, zero;
    nEventsToBeUsed: ColumnType::BigInt, zero;
    nEventsUsed: ColumnType::BigInt, zero;
    lockedBy: ColumnType::VarChar(56);
    lockedTime: ColumnType::Timestamp;
    attributes: ColumnType::VarChar(100);
    streamName: ColumnType::VarChar(20);
    storageToken: ColumnType::VarChar(100);
    destination: ColumnType::VarChar(60);
    templateID: ColumnType::BigInt;
    nFilesWaiting: ColumnType::BigInt;
    nFilesMissing: ColumnType::BigInt;
}

attribute_table! { TaskFileAttr, TASK_FILE_ATTRIBUTES;
    jediTaskID: ColumnType::BigInt;
    datasetID: ColumnType::BigInt;
    fileID: ColumnType::BigInt;
    creationDate: ColumnType::Timestamp;
    lastAttemptTime: ColumnType::Timestamp;
    lfn: ColumnType::VarChar(4000);
    GUID: ColumnType::VarChar(64);
    r#type: ColumnType::VarChar(20);
    status: ColumnType::VarChar(64);
    fsize: ColumnType::BigInt;
    checksum: ColumnType::VarChar(36);
    scope: ColumnType::VarChar(30);
    attemptNr: ColumnType::SmallInt, zero;
    maxAttempt: ColumnType::SmallInt;
    nEvents: ColumnType::BigInt;
    keepTrack: ColumnType::SmallInt;
    startEvent: ColumnType::BigInt;
    endEvent: ColumnType::BigInt;
    firstEvent: ColumnType::BigInt;
    boundaryID: ColumnType::BigInt;
    PandaID: ColumnType::BigInt;
    failedAttempt: ColumnType::SmallInt;
    lumiBlockNr: ColumnType::BigInt;
    outPandaID: ColumnType::BigInt;
    maxFailure: ColumnType::SmallInt;
    ramCount: ColumnType::BigInt;
    is_waiting: ColumnType::VarChar(1);
    jobsetID: ColumnType::BigInt;
    proc_status: ColumnType::VarChar(64);
}

/// A row of `jedi_datasets`.
pub type DatasetSpec = Record<DatasetAttr>;
/// A row of `jedi_dataset_contents`.
pub type TaskFileSpec = Record<TaskFileAttr>;
