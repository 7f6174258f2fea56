//! Log output, as operators know it from upstream.
//!
//! With `logdir` set (upstream's default is `/var/log/panda`), each process writes:
//! - `panda_server_access_log`: one line per request, Apache's `%t %h "%r" %>s %b` plus the
//!   duration in microseconds (web tier only);
//! - `panda_server_error_log`: warnings and errors;
//! - `panda-<component>.log`: the structured application log (`httpd`, `daemon`, or `server` for
//!   the all-in-one process): requests with method, path, status, duration and a hashed
//!   identity; daemon task runs.
//!
//! Files are opened for appending and reopened on SIGHUP, so logrotate renames them and
//! signals, and no line is lost or needs a restart. Without `logdir` everything goes to
//! standard output for journald. The level comes from `RUST_LOG` (default `info`).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Config;

pub const ACCESS_LOG: &str = "panda_server_access_log";
pub const ERROR_LOG: &str = "panda_server_error_log";

/// A log file that can be reopened at the same path after logrotate renamed it.
#[derive(Debug)]
pub struct ReopenableFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl ReopenableFile {
    pub fn open(path: PathBuf) -> io::Result<ReopenableFile> {
        let file = open_append(&path)?;
        Ok(ReopenableFile {
            path,
            file: Mutex::new(file),
        })
    }

    /// Opens the path anew; later writes go to the new file.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        *file = fresh;
        Ok(())
    }

    /// Writes one whole line in a single call, so concurrent writers never interleave.
    pub fn write_line(&self, line: &str) {
        let mut buffer = String::with_capacity(line.len() + 1);
        buffer.push_str(line);
        buffer.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(buffer.as_bytes());
    }
}

impl Write for &ReopenableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The open log files of this process, for SIGHUP.
#[derive(Debug, Default, Clone)]
pub struct LogFiles {
    /// The access log, when this process writes one to a file.
    pub access: Option<Arc<ReopenableFile>>,
    all: Vec<Arc<ReopenableFile>>,
}

impl LogFiles {
    /// Whether this process logs to files under `logdir` (rather than to standard output).
    pub fn to_files(&self) -> bool {
        !self.all.is_empty()
    }

    /// Reopens every file; errors are reported on stderr and the old file kept.
    pub fn reopen(&self) {
        for file in &self.all {
            if let Err(e) = file.reopen() {
                eprintln!("panda-server: cannot reopen {}: {e}", file.path.display());
            }
        }
    }
}

/// Sets up logging for `component` (`httpd`, `daemon` or `server`).
pub fn init(config: &Config, component: &str) -> anyhow::Result<LogFiles> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(dir) = &config.logdir else {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(io::stdout().is_terminal())
            .init();
        return Ok(LogFiles::default());
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    let open = |name: &str| {
        let path = dir.join(name);
        ReopenableFile::open(path.clone())
            .map(Arc::new)
            .map_err(|e| anyhow::anyhow!("cannot write log file {}: {e}", path.display()))
    };
    let app = open(&format!("panda-{component}.log"))?;
    let errors = open(ERROR_LOG)?;
    let access = match component {
        "daemon" => None,
        _ => Some(open(ACCESS_LOG)?),
    };
    let app_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(app.clone())
        .with_filter(filter());
    let error_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(errors.clone())
        .with_filter(LevelFilter::WARN);
    tracing_subscriber::registry()
        .with(app_layer)
        .with(error_layer)
        .init();
    let mut all = vec![app, errors];
    all.extend(access.clone());
    Ok(LogFiles { access, all })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_file_receives_the_lines_after_a_rename() {
        let dir = std::env::temp_dir().join(format!("panda-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("x.log");
        let file = ReopenableFile::open(path.clone()).expect("open");
        file.write_line("one");
        std::fs::rename(&path, dir.join("x.log.1")).expect("rename");
        file.write_line("two");
        file.reopen().expect("reopen");
        file.write_line("three");
        let old = std::fs::read_to_string(dir.join("x.log.1")).expect("old");
        let new = std::fs::read_to_string(&path).expect("new");
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(new, "three\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
