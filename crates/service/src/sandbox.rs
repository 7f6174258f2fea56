//! The sandbox cache (upstream's `file_server`): the tarballs users upload for their jobs,
//! kept in `cache_dir` and served back under `/cache/`, and recorded in `usercacheusage` so
//! that a user who sends the same sandbox again reuses it.
//!
//! Policy:
//! - A file name is a plain name: no `/`, no `..`, no leading dot, no control characters, at
//!   most [`MAX_NAME_BYTES`]. Anything else is refused with the reason, and nothing is written.
//! - Each name has its own size limit ([`upload_limit`]): 768 MB for `sources.*` (a build
//!   job's sources), 100 MB for `*.out` (logs), 10 MB for anything else (a `--noBuild`
//!   sandbox), as upstream and panda-client. The limit is checked on the bytes received, as
//!   they arrive; an upload over it is abandoned at once and leaves nothing behind.
//! - An upload streams to a temporary file in `cache_dir` and takes its name only when it is
//!   complete, with a link that fails if the name exists: a file is never overwritten, and
//!   two concurrent uploads of one name cannot both win. Upstream's exception holds: a name
//!   ending in `.__ow__` replaces the file of the name without that suffix. Refused
//!   overwrites touch the existing file, as upstream (its expiry restarts).
//! - The checksum is the CRC-32 in the gzip footer (the last 8 bytes), which is what
//!   panda-client sends to `validate_cache_file`. Files other than `*.out` are registered in
//!   `usercacheusage` under the uploader's name and this node's host name.
//! - At most [`MAX_CONCURRENT_UPLOADS`] uploads are written at once per node; more wait for
//!   their turn, so a burst of large uploads cannot take every file handle or the disk's
//!   bandwidth.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Duration;
use panda_core::identity::Identity;
use panda_core::time;
use tokio::io::AsyncWriteExt;

use crate::error::ServiceError;
use crate::tasks::user_name;
use crate::JobService;

const MB: u64 = 1024 * 1024;
/// A build job's sources (`sources.*`).
pub const SOURCES_LIMIT: u64 = 768 * MB;
/// Logs (`*.out`), which are not registered.
pub const LOG_LIMIT: u64 = 100 * MB;
/// Any other file: a `--noBuild` sandbox.
pub const NO_BUILD_LIMIT: u64 = 10 * MB;
/// The longest file name accepted (a Linux file name).
pub const MAX_NAME_BYTES: usize = 255;
/// Uploads written at once on one node.
pub const MAX_CONCURRENT_UPLOADS: usize = 8;
/// How long a registered sandbox may be reused, as upstream (`CURRENT_DATE - 3`).
pub const REUSE_DAYS: i64 = 3;
/// A JEDI log (`upload_jedi_log`), kept in `cache_dir/jedilog/`.
pub const JEDI_LOG_LIMIT: u64 = 100 * MB;
/// An HPO checkpoint (`upload_hpo_checkpoint`).
pub const CHECKPOINT_LIMIT: u64 = 500 * MB;
/// Where JEDI logs are kept, under `cache_dir` (served as `/cache/jedilog/`).
pub const JEDI_LOG_DIR: &str = "jedilog";

/// What an upload is, which decides its limit, its place and whether it may replace a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadKind {
    /// A user's sandbox (`upload_cache_file`): limit by name, never replaced, registered.
    Sandbox,
    /// A JEDI log (`upload_jedi_log`): 100 MB, in `jedilog/`, replaces the previous one.
    JediLog,
    /// An HPO checkpoint (`upload_hpo_checkpoint`), named `<taskID>_<subID>`: 500 MB, stored
    /// as `hpo_cp_<taskID>_<subID>`, replaces the previous one.
    Checkpoint,
}

/// The file an HPO checkpoint of a task and sub-ID is kept in.
pub fn checkpoint_name(task_id: &str, sub_id: &str) -> Result<String, ServiceError> {
    let plain = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !plain(task_id) || !plain(sub_id) {
        return Err(ServiceError::BadRequest(format!(
            "checkpoint IDs must be letters, digits or '-', at most 64 each: {task_id:?}, {sub_id:?}"
        )));
    }
    Ok(format!("hpo_cp_{task_id}_{sub_id}"))
}

/// The suffix that lets an upload replace an existing file.
const OVERWRITE_SUFFIX: &str = ".__ow__";

/// The largest upload a file name may carry.
pub fn upload_limit(file_name: &str) -> u64 {
    if file_name.starts_with("sources.") {
        SOURCES_LIMIT
    } else if file_name.ends_with(".out") {
        LOG_LIMIT
    } else {
        NO_BUILD_LIMIT
    }
}

/// The largest upload of any name: what a request may declare before its name is known.
pub const MAX_UPLOAD: u64 = SOURCES_LIMIT;

/// Checks that `name` is a plain file name the cache may hold.
pub fn check_file_name(name: &str) -> Result<(), ServiceError> {
    let refuse = |why: &str| {
        Err(ServiceError::BadRequest(format!(
            "file name {name:?} {why}"
        )))
    };
    if name.is_empty() {
        return Err(ServiceError::BadRequest("the file name is empty".into()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(ServiceError::BadRequest(format!(
            "the file name is {} bytes long; at most {MAX_NAME_BYTES} are accepted",
            name.len()
        )));
    }
    if name.contains('/') || name.contains('\\') {
        return refuse("holds a path separator; send a plain file name");
    }
    if name.contains("..") {
        return refuse("holds \"..\"");
    }
    if name.starts_with('.') {
        return refuse("starts with a dot");
    }
    if name.chars().any(char::is_control) {
        return refuse("holds control characters");
    }
    if OPERATOR_FILES.contains(&name) {
        return refuse("is the operator's; uploads cannot take that name");
    }
    Ok(())
}

/// Files the operator keeps in the cache directory and the server reads as its own: the DDM
/// endpoints pilots fetch from `/cache/` and the monitor finds log tarballs through. A user's
/// upload (even with the overwrite suffix) must not replace them.
pub const OPERATOR_FILES: &[&str] = &["ddmendpoints.json"];

/// A registered sandbox: where it is and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheFileInfo {
    pub user: String,
    pub host: String,
    pub file_name: String,
    pub size: i64,
    pub checksum: Option<String>,
}

/// What an upload ended as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    Stored(CacheFileInfo),
    /// The name exists and the upload may not replace it (upstream's `cannot overwrite`).
    Exists,
}

/// The cache directory and the node's name as sandboxes are registered.
#[derive(Debug)]
pub struct SandboxCache {
    dir: PathBuf,
    host: String,
    uploads: Arc<tokio::sync::Semaphore>,
    serial: AtomicU64,
}

impl SandboxCache {
    pub fn new(dir: PathBuf, host: String) -> SandboxCache {
        SandboxCache {
            dir,
            host,
            uploads: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_UPLOADS)),
            serial: AtomicU64::new(0),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// An upload being received: bytes go to a temporary file in the cache directory, which is
/// removed unless [`CacheUpload::finish`] gives it its name.
pub struct CacheUpload {
    cache: Arc<SandboxCache>,
    kind: UploadKind,
    _turn: tokio::sync::OwnedSemaphorePermit,
    user: String,
    /// The name the file will take (without `.__ow__`).
    name: String,
    overwrite: bool,
    limit: u64,
    received: u64,
    /// The last 8 bytes received: the gzip footer once the upload is complete.
    tail: Vec<u8>,
    temporary: PathBuf,
    file: Option<tokio::fs::File>,
}

impl CacheUpload {
    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends a chunk; past the name's limit the upload fails (and is removed).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.received += chunk.len() as u64;
        if self.received > self.limit {
            return Err(UploadError::TooLarge {
                limit: self.limit,
                name: self.name.clone(),
            });
        }
        let file = self.file.as_mut().ok_or(UploadError::Write)?;
        file.write_all(chunk).await.map_err(|e| {
            tracing::error!(target: "panda::cache", error = %e, "cannot write an upload");
            UploadError::Write
        })?;
        self.tail.extend_from_slice(chunk);
        let excess = self.tail.len().saturating_sub(8);
        self.tail.drain(..excess);
        Ok(())
    }

    /// The CRC-32 of the gzip footer, when the file is long enough to have one.
    fn footer_crc(&self) -> Option<u32> {
        let footer: [u8; 4] = self.tail.get(..4)?.try_into().ok()?;
        (self.tail.len() == 8).then(|| u32::from_le_bytes(footer))
    }
}

impl Drop for CacheUpload {
    fn drop(&mut self) {
        // Unfinished (or linked already): the temporary name goes either way.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Why an upload failed.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadError {
    TooLarge { limit: u64, name: String },
    Write,
}

impl UploadError {
    /// Upstream's words, with the limit named.
    pub fn message(&self) -> String {
        match self {
            UploadError::TooLarge { limit, name } => format!(
                "ERROR: upload failure. Exceeded size limit: {name} may be at most {limit} \
                 bytes{}",
                match name.starts_with("sources.") {
                    true => ". Please remove redundant files from your work area",
                    false =>
                        ". Please submit the job without --noBuild/--libDS since those options \
                         impose a tighter size limit",
                }
            ),
            UploadError::Write => "ERROR: cannot write file".into(),
        }
    }
}

impl JobService {
    /// Starts an upload of `file_name` for the caller: checks the name and waits for a turn.
    pub async fn begin_cache_upload(
        &self,
        caller: &Identity,
        kind: UploadKind,
        file_name: &str,
    ) -> Result<CacheUpload, ServiceError> {
        check_file_name(file_name)?;
        let (name, overwrite, limit) = match kind {
            UploadKind::Sandbox => match file_name.strip_suffix(OVERWRITE_SUFFIX) {
                Some(base) => (base.to_string(), true, upload_limit(base)),
                None => (file_name.to_string(), false, upload_limit(file_name)),
            },
            UploadKind::JediLog => (file_name.to_string(), true, JEDI_LOG_LIMIT),
            UploadKind::Checkpoint => {
                let (task, sub) = file_name.split_once('_').ok_or_else(|| {
                    ServiceError::BadRequest(
                        "Failed to extract task and sub IDs: the file name must be <taskID>_<subID>"
                            .into(),
                    )
                })?;
                (checkpoint_name(task, sub)?, true, CHECKPOINT_LIMIT)
            }
        };
        check_file_name(&name)?;
        let cache = self.sandbox.clone();
        let turn = cache
            .uploads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::BadRequest("the server is shutting down".into()))?;
        let serial = cache.serial.fetch_add(1, Ordering::Relaxed);
        let temporary = cache
            .dir
            .join(format!(".upload.{}.{serial}", std::process::id()));
        let file = tokio::fs::File::create(&temporary).await.map_err(|e| {
            tracing::error!(target: "panda::cache", error = %e, dir = %cache.dir.display(),
                "cannot create an upload file");
            ServiceError::BadRequest("ERROR: cannot write file".into())
        })?;
        Ok(CacheUpload {
            limit,
            kind,
            cache,
            _turn: turn,
            user: user_name(caller),
            name,
            overwrite,
            received: 0,
            tail: Vec::with_capacity(16),
            temporary,
            file: Some(file),
        })
    }

    /// Gives a complete upload its name and registers it.
    pub async fn finish_cache_upload(
        &self,
        mut upload: CacheUpload,
    ) -> Result<UploadOutcome, ServiceError> {
        let write_failed = || ServiceError::BadRequest(UploadError::Write.message());
        if let Some(mut file) = upload.file.take() {
            file.flush().await.map_err(|_| write_failed())?;
            file.sync_all().await.map_err(|_| write_failed())?;
        }
        let dir = match upload.kind {
            UploadKind::JediLog => upload.cache.dir.join(JEDI_LOG_DIR),
            _ => upload.cache.dir.clone(),
        };
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            tracing::error!(target: "panda::cache", error = %e, "cannot make the upload's directory");
            return Err(write_failed());
        }
        let target = dir.join(&upload.name);
        if upload.overwrite {
            tokio::fs::rename(&upload.temporary, &target)
                .await
                .map_err(|_| write_failed())?;
        } else if let Err(e) = tokio::fs::hard_link(&upload.temporary, &target).await {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                touch(&target);
                return Ok(UploadOutcome::Exists);
            }
            tracing::error!(target: "panda::cache", error = %e, "cannot store an upload");
            return Err(write_failed());
        }
        let info = CacheFileInfo {
            user: upload.user.clone(),
            host: upload.cache.host.clone(),
            file_name: upload.name.clone(),
            size: upload.received as i64,
            checksum: upload.footer_crc().map(|crc| crc.to_string()),
        };
        tracing::info!(target: "panda::cache", user = %info.user, file = %info.file_name,
            size = info.size, checksum = ?info.checksum, "sandbox stored");
        if upload.kind == UploadKind::Sandbox && !upload.name.ends_with(".out") {
            self.register_cache_file(&info).await?;
        }
        Ok(UploadOutcome::Stored(info))
    }

    /// Records a sandbox in `usercacheusage` (also `register_cache_file`, for production).
    pub async fn register_cache_file(&self, info: &CacheFileInfo) -> Result<(), ServiceError> {
        check_file_name(&info.file_name)?;
        self.stores
            .users
            .register_cache_file(
                &info.user,
                &info.host,
                &info.file_name,
                info.size,
                info.checksum.as_deref(),
            )
            .await?;
        Ok(())
    }

    /// Where the caller's sandbox of this size and checksum is, if it was registered in the
    /// last [`REUSE_DAYS`] days: `(host, file name)`.
    pub async fn find_cache_file(
        &self,
        caller: &Identity,
        size: i64,
        checksum: &str,
    ) -> Result<Option<(String, String)>, ServiceError> {
        let since = time::now() - Duration::days(REUSE_DAYS);
        let found = self
            .stores
            .users
            .find_cache_file(&user_name(caller), size, checksum, since)
            .await?;
        // A file registered but since removed from this cache cannot be reused.
        Ok(found.filter(|(host, name)| {
            *host != self.sandbox.host || self.sandbox.dir.join(name).is_file()
        }))
    }

    /// Renews a cache file's modification time, so that the cleanup keeps it; `false` when
    /// there is no such file.
    pub fn touch_cache_file(&self, file_name: &str) -> Result<bool, ServiceError> {
        check_file_name(file_name)?;
        let path = self.sandbox.dir.join(file_name);
        Ok(path.is_file() && touch(&path))
    }

    /// `delete_hpo_checkpoint`: removes the checkpoint; why not, when it cannot.
    pub async fn delete_checkpoint(&self, task_id: &str, sub_id: &str) -> Result<(), ServiceError> {
        let path = self.sandbox.dir.join(checkpoint_name(task_id, sub_id)?);
        tokio::fs::remove_file(&path).await.map_err(|e| {
            ServiceError::BadRequest(format!("Failed to delete file due to {}", e.kind()))
        })
    }

    /// Keeps a request for an agent (file recovery, workflow, event picking) as upstream
    /// does: a JSON file `<prefix>.<uuid>` in the cache directory. Returns its name.
    pub async fn store_request(
        &self,
        prefix: &str,
        request: &serde_json::Value,
    ) -> Result<String, ServiceError> {
        let name = format!("{prefix}.{}", crate::task_processing::new_guid());
        let text = serde_json::to_vec(request)
            .map_err(|e| ServiceError::BadRequest(format!("the request cannot be written: {e}")))?;
        tokio::fs::write(self.sandbox.dir.join(&name), text)
            .await
            .map_err(|e| {
                tracing::error!(target: "panda::cache", error = %e, "cannot store a request");
                ServiceError::BadRequest("cannot put request".into())
            })?;
        tracing::info!(target: "panda::cache", file = %name, "request stored");
        Ok(name)
    }

    /// `update_jedi_log`: the cache file `name`, opened to append to (made if missing).
    pub async fn open_log_to_append(&self, name: &str) -> Result<tokio::fs::File, ServiceError> {
        check_file_name(name)?;
        tokio::fs::File::options()
            .create(true)
            .append(true)
            .open(self.sandbox.dir.join(name))
            .await
            .map_err(|e| {
                ServiceError::BadRequest(format!("ERROR: cannot update file: {}", e.kind()))
            })
    }

    /// Makes an empty file in the cache (a request's log, to be filled by its agent).
    pub async fn create_cache_file(&self, name: &str) -> Result<(), ServiceError> {
        check_file_name(name)?;
        tokio::fs::write(self.sandbox.dir.join(name), b"")
            .await
            .map_err(|_| ServiceError::BadRequest("ERROR: cannot write file".into()))
    }

    /// The cache directory (for readers of files it holds).
    pub fn cache_dir(&self) -> &Path {
        self.sandbox.dir()
    }
}

/// Sets a file's modification time to now; whether that worked.
fn touch(path: &Path) -> bool {
    std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_has_upstreams_limit() {
        assert_eq!(upload_limit("sources.1234.tar.gz"), 768 * MB);
        assert_eq!(upload_limit("jobO.1234.tar.gz"), 10 * MB);
        assert_eq!(upload_limit("payload.out"), 100 * MB);
    }

    #[test]
    fn only_plain_names_are_accepted() {
        assert!(check_file_name("jobO.f76aedaf.tar.gz").is_ok());
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "..",
            "x..y",
            ".hidden",
            "a\nb",
            &"x".repeat(256),
            "ddmendpoints.json",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_upload_over_its_limit_fails_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("panda-sandbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test setup");
        let cache = Arc::new(SandboxCache::new(dir.clone(), "node".into()));
        let turn = cache
            .uploads
            .clone()
            .acquire_owned()
            .await
            .expect("test setup");
        let temporary = dir.join(".upload.test");
        let mut upload = CacheUpload {
            kind: UploadKind::Sandbox,
            cache,
            _turn: turn,
            user: "u".into(),
            name: "jobO.x.tar.gz".into(),
            overwrite: false,
            limit: 10,
            received: 0,
            tail: Vec::new(),
            temporary: temporary.clone(),
            file: Some(
                tokio::fs::File::create(&temporary)
                    .await
                    .expect("test setup"),
            ),
        };
        upload.write(b"12345678").await.expect("test setup");
        assert_eq!(upload.footer_crc(), Some(u32::from_le_bytes(*b"1234")));
        assert!(matches!(
            upload.write(b"abc").await,
            Err(UploadError::TooLarge { limit: 10, .. })
        ));
        drop(upload);
        assert!(!temporary.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
