//! `FileSpec`: one file of one job attempt, a row of `filestable4`.
//!
//! The table also has `modificationTime`, which is not one of the spec's attributes: the
//! store sets it when the job is archived.

use crate::attrs::attribute_table;
use crate::record::Record;
use crate::value::ColumnType;

attribute_table! { FileAttr, FILE_ATTRIBUTES;
    row_ID: ColumnType::BigInt;
    PandaID: ColumnType::BigInt;
    GUID: ColumnType::VarChar(64);
    lfn: ColumnType::VarChar(4000);
    r#type: ColumnType::VarChar(20);
    dataset: ColumnType::VarChar(255);
    status: ColumnType::VarChar(64);
    prodDBlock: ColumnType::VarChar(255);
    prodDBlockToken: ColumnType::VarChar(250);
    dispatchDBlock: ColumnType::VarChar(255);
    dispatchDBlockToken: ColumnType::VarChar(250);
    destinationDBlock: ColumnType::VarChar(255);
    destinationDBlockToken: ColumnType::VarChar(250);
    destinationSE: ColumnType::VarChar(250);
    fsize: ColumnType::BigInt, zero;
    md5sum: ColumnType::VarChar(36);
    checksum: ColumnType::VarChar(36);
    scope: ColumnType::VarChar(30);
    jediTaskID: ColumnType::BigInt;
    datasetID: ColumnType::BigInt;
    fileID: ColumnType::BigInt;
    attemptNr: ColumnType::SmallInt;
}

/// A job's file. `row_ID` and `PandaID` are set by the store on insert.
pub type FileSpec = Record<FileAttr>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AttrSet;

    #[test]
    fn the_table_has_upstreams_22_attributes() {
        assert_eq!(FileAttr::attributes().len(), 22);
        assert_eq!(FileAttr::attributes()[4].name, "type");
        assert_eq!(FileAttr::by_name("type"), Some(FileAttr::r#type));
    }
}
