//! Where task processing finds the files of an input dataset: the `DatasetCatalog` trait,
//! and its default, the local catalogue (`local_dataset_files`, filled by the operator with
//! `panda-server datasets add`). A Rucio-backed catalogue would implement the same trait
//! (and a `DataManagement` plugin to move the files), and replace the default with
//! `JobService::with_catalog`.

use std::sync::Arc;

use async_trait::async_trait;
use panda_store::ports::CatalogStore;
use panda_store::CatalogFile;

use crate::error::ServiceError;
use crate::JobService;

/// Where Rucio's deterministic layout (and the pilot's `mv` copytool) puts a file on a
/// storage element whose root is `se`: `<se>/<scope split at dots>/<md5[0:2]>/<md5[2:4]>/<lfn>`,
/// the md5 of `scope:lfn`. `None` when the scope or the name could leave the root (an empty
/// part, `..`, a slash) or the digest cannot be made.
pub fn se_path(se: &std::path::Path, scope: &str, lfn: &str) -> Option<std::path::PathBuf> {
    let plain = |part: &str| {
        !part.is_empty() && part != "." && part != ".." && !part.contains(['/', '\\', '\0'])
    };
    if !plain(lfn) || !scope.split('.').all(plain) {
        return None;
    }
    let digest = openssl::hash::hash(
        openssl::hash::MessageDigest::md5(),
        format!("{scope}:{lfn}").as_bytes(),
    )
    .ok()?;
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut path = se.to_path_buf();
    path.extend(scope.split('.'));
    Some(path.join(&hex[0..2]).join(&hex[2..4]).join(lfn))
}

/// Most files one input dataset may give a task (a task's largest size).
pub const MAX_DATASET_FILES: i64 = crate::task_processing::MAX_TASK_FILES;

#[async_trait]
pub trait DatasetCatalog: Send + Sync {
    /// The files of `dataset`, or `None` when the catalogue does not know it.
    async fn dataset_files(&self, dataset: &str) -> Result<Option<Vec<CatalogFile>>, ServiceError>;
}

/// The local catalogue.
pub struct LocalCatalog(pub Arc<dyn CatalogStore>);

#[async_trait]
impl DatasetCatalog for LocalCatalog {
    async fn dataset_files(&self, dataset: &str) -> Result<Option<Vec<CatalogFile>>, ServiceError> {
        // A container (`name/`) is looked up by its name without the slash, as one dataset.
        let name = dataset.trim_end_matches('/');
        let files = self.0.catalog_files(name, MAX_DATASET_FILES + 1).await?;
        Ok(Some(files).filter(|f| !f.is_empty()))
    }
}

impl JobService {
    /// Replaces the dataset catalogue (the local one by default).
    pub fn with_catalog(mut self, catalog: Arc<dyn DatasetCatalog>) -> JobService {
        self.catalog = catalog;
        self
    }
}
