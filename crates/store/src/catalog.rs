//! `local_dataset_files`: the local catalogue of input datasets (ours, standing in for Rucio
//! where there is none): each file of a dataset with its scope, GUID, size, checksum and path
//! on the local storage element. Filled by the operator (`panda-server datasets add`), read by
//! task processing through the service's `DatasetCatalog`.

use panda_core::{time, ColumnType, Value};

use crate::driver::TxMode;
use crate::error::Result;
use crate::jobs::insert_rows;
use crate::row::Columns;
use crate::Store;

/// One file of a dataset in the local catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogFile {
    pub dataset: String,
    pub scope: String,
    pub lfn: String,
    pub guid: String,
    pub fsize: i64,
    /// `ad:<adler32>` or `md5:<md5>`, as the pilot reports checksums.
    pub checksum: Option<String>,
    pub path: String,
}

/// A dataset of the catalogue: its name, files and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDataset {
    pub name: String,
    pub files: i64,
    pub bytes: i64,
}

static FILE: Columns = Columns(&[
    ("dataset", ColumnType::Text),
    ("scope", ColumnType::Text),
    ("lfn", ColumnType::Text),
    ("guid", ColumnType::Text),
    ("fsize", ColumnType::BigInt),
    ("checksum", ColumnType::Text),
    ("path", ColumnType::Text),
]);

impl Store {
    /// Adds files to the catalogue; a file already there (same dataset and LFN) is kept as it
    /// was. Returns how many were added.
    pub async fn add_catalog_files(&self, files: &[CatalogFile]) -> Result<u64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let mut added = 0;
        let now = Value::Time(Some(time::now()));
        for file in files {
            let exists = tx
                .fetch(
                    "SELECT lfn FROM local_dataset_files WHERE dataset = $1 AND lfn = $2",
                    &[
                        Value::Text(Some(file.dataset.clone())),
                        Value::Text(Some(file.lfn.clone())),
                    ],
                    &[ColumnType::Text],
                )
                .await?;
            if !exists.is_empty() {
                continue;
            }
            let columns: Vec<String> = FILE
                .0
                .iter()
                .map(|(c, _)| c.to_string())
                .chain(["creationtime".to_string()])
                .collect();
            insert_rows(
                tx.as_mut(),
                "local_dataset_files",
                &columns,
                vec![vec![
                    Value::Text(Some(file.dataset.clone())),
                    Value::Text(Some(file.scope.clone())),
                    Value::Text(Some(file.lfn.clone())),
                    Value::Text(Some(file.guid.clone())),
                    Value::Int(Some(file.fsize)),
                    Value::Text(file.checksum.clone()),
                    Value::Text(Some(file.path.clone())),
                    now.clone(),
                ]],
            )
            .await?;
            added += 1;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// The files of a dataset, by LFN, at most `limit`.
    pub async fn catalog_files(&self, dataset: &str, limit: i64) -> Result<Vec<CatalogFile>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {} FROM local_dataset_files WHERE dataset = $1 ORDER BY lfn LIMIT $2",
                    FILE.select_list("")
                ),
                &[Value::Text(Some(dataset.into())), Value::Int(Some(limit))],
                &FILE.types(),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let r = FILE.read(row);
                Ok(CatalogFile {
                    dataset: r.text("dataset")?,
                    scope: r.text("scope")?,
                    lfn: r.text("lfn")?,
                    guid: r.text("guid")?,
                    fsize: r.int("fsize")?,
                    checksum: r.opt_text("checksum")?,
                    path: r.text("path")?,
                })
            })
            .collect()
    }

    /// The catalogue's datasets, by name, at most `limit`.
    pub async fn catalog_datasets(&self, limit: i64) -> Result<Vec<CatalogDataset>> {
        let rows = self
            .query(
                "SELECT dataset, COUNT(*), SUM(fsize) FROM local_dataset_files \
                 GROUP BY dataset ORDER BY dataset LIMIT $1",
                &[Value::Int(Some(limit))],
                &[ColumnType::Text, ColumnType::BigInt, ColumnType::BigInt],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| CatalogDataset {
                name: r[0].render(),
                files: r[1].as_i64().unwrap_or(0),
                bytes: r[2].as_i64().unwrap_or(0),
            })
            .collect())
    }
}
