//! The daemon: upstream's `panda_daemon`, a runner of periodic tasks on the shared database.
//!
//! Tasks are configured by the `[daemon] config` JSON of `panda_server.cfg`, one object per
//! task name with upstream's keys (`enable`, `period`, `sync`, `loop`, `timeout`,
//! `arguments`). This crate so far holds the configuration and the scheduling loop; the tasks
//! themselves (adder, watcher, retention, ...) are registered in [`known_task`] as they arrive.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use panda_store::Store;
use serde::Deserialize;

pub mod runner;
pub mod tasks;

pub use tasks::{task_names, Task, TaskContext, TASKS};

/// One task's settings, as upstream spells them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    #[serde(default = "default_enable")]
    pub enable: bool,
    /// Seconds between runs.
    #[serde(default = "default_period")]
    pub period: u64,
    /// Run on one node per period across the cluster.
    #[serde(default)]
    pub sync: bool,
    /// Keep the task running in a loop rather than once per period.
    #[serde(default, rename = "loop")]
    pub looped: bool,
    /// Seconds after which a run is stopped.
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub arguments: Vec<String>,
}

fn default_enable() -> bool {
    true
}

fn default_period() -> u64 {
    600
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("[daemon] config must be a JSON object of task names to settings")]
    NotAnObject,
    #[error("[daemon] config: task {task}: {message}")]
    Task { task: String, message: String },
}

/// Parses the `[daemon] config` JSON.
pub fn parse_config(json: &serde_json::Value) -> Result<BTreeMap<String, TaskConfig>, ConfigError> {
    let object = json.as_object().ok_or(ConfigError::NotAnObject)?;
    object
        .iter()
        .map(|(name, settings)| {
            let task = serde_json::from_value::<TaskConfig>(settings.clone()).map_err(|e| {
                ConfigError::Task {
                    task: name.clone(),
                    message: e.to_string(),
                }
            })?;
            Ok((name.clone(), task))
        })
        .collect()
}

/// The last run of a task, for logs and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRun {
    pub started: SystemTime,
    pub duration: Duration,
    /// `ok`, `failed` or `timeout`.
    pub outcome: &'static str,
}

/// Per-task run records of this daemon process.
#[derive(Debug, Default)]
pub struct TaskStats {
    runs: Mutex<BTreeMap<String, TaskRun>>,
    totals: Mutex<RunTotals>,
}

/// Runs of all tasks since this process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub runs: u64,
    /// Runs whose outcome was not `ok`.
    pub failures: u64,
}

impl TaskStats {
    pub fn record(&self, task: &str, run: TaskRun) {
        tracing::info!(target: "panda::daemon", task, outcome = run.outcome,
            duration_ms = panda_core::time::millis(run.duration), "task run");
        if let Ok(mut totals) = self.totals.lock() {
            totals.runs += 1;
            totals.failures += u64::from(run.outcome != "ok");
        }
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(task.to_string(), run);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, TaskRun> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn totals(&self) -> RunTotals {
        self.totals.lock().map(|t| *t).unwrap_or_default()
    }

    /// The daemon's status line for systemd, in the spirit of the web tier's:
    /// `Tasks: 5 enabled; Runs: 42, failed: 1; Last run: add_main ok 3s ago`.
    pub fn status_line(&self, enabled: usize, now: SystemTime) -> String {
        let totals = self.totals();
        let last = self
            .snapshot()
            .into_iter()
            .max_by_key(|(_, run)| run.started + run.duration)
            .map_or_else(
                || "none yet".to_string(),
                |(task, run)| {
                    let ago = now
                        .duration_since(run.started + run.duration)
                        .unwrap_or_default()
                        .as_secs();
                    format!("{task} {} {ago}s ago", run.outcome)
                },
            );
        format!(
            "Tasks: {enabled} enabled; Runs: {}, failed: {}; Last run: {last}",
            totals.runs, totals.failures
        )
    }
}

/// Whether this build implements a task of that name.
pub fn known_task(name: &str) -> bool {
    tasks::task_by_name(name).is_some()
}

/// Runs the configured tasks until `shutdown` resolves.
pub async fn run(
    store: Store,
    node: String,
    settings: panda_service::ServiceSettings,
    tasks: BTreeMap<String, TaskConfig>,
    stats: std::sync::Arc<TaskStats>,
    shutdown: impl Future<Output = ()>,
) {
    let ctx = TaskContext::new(store, node, Vec::new(), settings);
    runner::run_all(ctx, tasks, stats, shutdown).await;
}

/// Runs one task now, for operators and tests (`panda-server daemon --run-once TASK`).
pub async fn run_task_once(
    store: Store,
    node: String,
    settings: panda_service::ServiceSettings,
    name: &str,
    config: Option<&TaskConfig>,
) -> Result<TaskRun, String> {
    let task = tasks::task_by_name(name).ok_or_else(|| {
        format!(
            "unknown task {name}; known: {}",
            tasks::task_names().collect::<Vec<_>>().join(", ")
        )
    })?;
    let arguments = config.map(|c| c.arguments.clone()).unwrap_or_default();
    let ctx = TaskContext::new(store, node, arguments, settings);
    let timeout = std::time::Duration::from_secs(config.and_then(|c| c.timeout).unwrap_or(3600));
    Ok(runner::run_once(task, name, ctx, timeout, &TaskStats::default()).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_style_task_settings_parse_with_defaults() {
        let tasks = parse_config(&json!({
            "add_main": {"enable": true, "period": 240, "loop": true},
            "tmpwatch": {"period": 3600, "sync": true}
        }))
        .expect("valid");
        assert_eq!(tasks["add_main"].period, 240);
        assert!(tasks["add_main"].looped);
        assert!(tasks["tmpwatch"].enable && tasks["tmpwatch"].sync);
    }

    #[test]
    fn the_status_line_counts_runs_and_failures_and_names_the_latest() {
        let stats = TaskStats::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            stats.status_line(3, t0),
            "Tasks: 3 enabled; Runs: 0, failed: 0; Last run: none yet"
        );
        let run = |started: SystemTime, outcome| TaskRun {
            started,
            duration: Duration::from_secs(1),
            outcome,
        };
        stats.record("tmpwatch", run(t0, "failed"));
        stats.record("add_main", run(t0 + Duration::from_secs(10), "ok"));
        stats.record("add_main", run(t0 + Duration::from_secs(20), "ok"));
        assert_eq!(
            stats.status_line(3, t0 + Duration::from_secs(25)),
            "Tasks: 3 enabled; Runs: 3, failed: 1; Last run: add_main ok 4s ago"
        );
    }

    #[test]
    fn a_misspelled_setting_is_an_error_naming_the_task() {
        let err = parse_config(&json!({"add_main": {"perod": 5}})).expect_err("invalid");
        assert!(err.to_string().contains("add_main"), "{err}");
        assert!(parse_config(&json!([1, 2])).is_err());
    }
}
