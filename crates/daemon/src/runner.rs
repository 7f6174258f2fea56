//! The scheduling loop: each enabled task runs every `period` seconds in a loop of its own.
//!
//! - On one node a task never overlaps itself: the next run starts only after the last ended.
//! - A run longer than `timeout` is stopped (its future dropped) and logged as `timeout`.
//! - A run that fails or panics is logged as `failed`; the task runs again next period and the
//!   other tasks are untouched (each run is a tokio task of its own, so a panic stays there).
//! - A `sync` task runs on one node per period across the cluster: before each run the node
//!   takes the task's lease in `jedi_process_lock`, which expires after the period, so a dead
//!   node blocks nobody for longer than that.
//! - On shutdown no new run starts; a run in progress gets `SHUTDOWN_GRACE` to finish.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::tasks::{task_by_name, Task, TaskContext};
use crate::{TaskConfig, TaskRun, TaskStats};

/// How long a running task may take to finish after shutdown was requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Default timeout of a run when the configuration sets none: the period, at least a minute.
fn timeout_of(config: &TaskConfig) -> Duration {
    Duration::from_secs(config.timeout.unwrap_or(config.period.max(60)).max(1))
}

/// Runs one task once and records the outcome.
pub async fn run_once(
    task: Arc<dyn Task>,
    name: &str,
    ctx: TaskContext,
    timeout: Duration,
    stats: &TaskStats,
) -> TaskRun {
    let started = SystemTime::now();
    let clock = Instant::now();
    let handle = tokio::spawn(async move { task.run(&ctx).await });
    let abort = handle.abort_handle();
    let outcome = match tokio::time::timeout(timeout, handle).await {
        Ok(Ok(Ok(summary))) => {
            tracing::info!(target: "panda::daemon", task = name, summary = %summary, "task done");
            "ok"
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(target: "panda::daemon", task = name, error = %format!("{e:#}"), "task failed");
            "failed"
        }
        Ok(Err(join)) => {
            tracing::error!(target: "panda::daemon", task = name, error = %join, "task panicked");
            "failed"
        }
        Err(_) => {
            abort.abort();
            tracing::error!(target: "panda::daemon", task = name, timeout_s = timeout.as_secs(), "task timed out and was stopped");
            "timeout"
        }
    };
    let run = TaskRun {
        started,
        duration: clock.elapsed(),
        outcome,
    };
    stats.record(name, run.clone());
    run
}

/// Runs every enabled, known task until `shutdown` resolves.
pub async fn run_all(
    ctx: TaskContext,
    tasks: BTreeMap<String, TaskConfig>,
    stats: Arc<TaskStats>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for (name, config) in tasks.into_iter().filter(|(_, c)| c.enable) {
        let Some(task) = task_by_name(&name) else {
            tracing::warn!(target: "panda::daemon", task = %name, "unknown task in [daemon] config; skipped");
            continue;
        };
        loops.push(tokio::spawn(task_loop(
            name,
            config,
            task,
            ctx.clone(),
            stats.clone(),
            stop_rx.clone(),
        )));
    }
    tracing::info!(target: "panda::daemon", tasks = loops.len(), "daemon started");
    shutdown.await;
    let _ = stop_tx.send(true);
    for handle in loops {
        let _ = handle.await;
    }
    tracing::info!(target: "panda::daemon", "daemon stopped");
}

/// Resolves once a stop has been requested (without holding the channel's read guard).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

async fn task_loop(
    name: String,
    config: TaskConfig,
    task: Arc<dyn Task>,
    ctx: TaskContext,
    stats: Arc<TaskStats>,
    mut stop: watch::Receiver<bool>,
) {
    let period = Duration::from_secs(config.period.max(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = ticker.tick() => {}
        }
        if config.sync {
            let lease = chrono::Duration::from_std(period).unwrap_or(chrono::Duration::seconds(60));
            match ctx.daemon.take_lease(&name, &ctx.node, lease).await {
                // Logged so that a cluster's logs show which node ran each period.
                Ok(true) => {
                    tracing::info!(target: "panda::daemon", task = %name, node = %ctx.node, "took the lease")
                }
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(target: "panda::daemon", task = %name, error = %e, "cannot take the lease");
                    continue;
                }
            }
        }
        let mut task_ctx = ctx.clone();
        task_ctx.arguments = config.arguments.clone();
        let run = run_once(task.clone(), &name, task_ctx, timeout_of(&config), &stats);
        tokio::pin!(run);
        tokio::select! {
            _ = &mut run => {}
            _ = stopped(&mut stop) => {
                // Let the current run finish, within the grace period.
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, run).await;
                return;
            }
        }
    }
}
