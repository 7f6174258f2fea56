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
