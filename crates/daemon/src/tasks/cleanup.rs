//! Housekeeping tasks.
//!
//! `tmpwatch`: removes regular files under `cache_dir` older than `arguments[0]` hours
//! (default 168, a week, as copyArchive's cache cleanup); directories and links are left.
//!
//! `archive_retention` (ours; upstream does this with database procedures): jobs whose last
//! change in `jobsarchived4` is older than `arguments[0]` days (default 3, upstream's window)
//! leave the live tables with their files, parameters and metadata, copied to the archive
//! tables (`jobsarchived`, `filestable_arch`, `jobparamstable_arch`, `metatable_arch`) or, with
//! `arguments[1] = delete`, deleted.
//!
//! `db_maintenance` (ours): see the store's maintenance module for its policy.

use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use panda_core::time;

use super::{Task, TaskContext};

pub struct TmpWatch;
pub struct ArchiveRetention;

fn number(ctx: &TaskContext, index: usize, default: f64) -> f64 {
    ctx.arguments
        .get(index)
        .and_then(|a| a.parse::<f64>().ok())
        .filter(|v| *v >= 0.0)
        .unwrap_or(default)
}

fn sweep(dir: &Path, cutoff: SystemTime, removed: &mut usize) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sweep(&entry.path(), cutoff, removed)?;
        } else if kind.is_file() && entry.metadata()?.modified()? < cutoff {
            std::fs::remove_file(entry.path())?;
            *removed += 1;
        }
    }
    Ok(())
}

#[async_trait]
impl Task for TmpWatch {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        let hours = number(ctx, 0, 168.0);
        let cutoff = SystemTime::now() - Duration::from_secs_f64(hours * 3600.0);
        let dir = ctx.settings.cache_dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            match dir.exists() {
                true => sweep(&dir, cutoff, &mut removed).map(|_| removed),
                false => Ok(0),
            }
        })
        .await??;
        Ok(format!(
            "removed {removed} files older than {hours} h from {}",
            ctx.settings.cache_dir.display()
        ))
    }
}

#[async_trait]
impl Task for ArchiveRetention {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        let days = number(ctx, 0, 3.0);
        let archive = ctx.arguments.get(1).map(String::as_str) != Some("delete");
        let before = time::now() - chrono::Duration::milliseconds((days * 86_400_000.0) as i64);
        let mut total = 0;
        loop {
            let moved = ctx
                .daemon
                .retire_archived_jobs(before, archive, 500)
                .await?;
            total += moved;
            if moved < 500 {
                break;
            }
        }
        let verb = if archive { "archived" } else { "deleted" };
        Ok(format!("{verb} {total} jobs older than {days} days"))
    }
}

/// `db_maintenance` (ours): on PostgreSQL with autovacuum off, vacuums and analyzes the job
/// tables that changed enough (the store's maintenance policy); on SQLite, `PRAGMA optimize`.
pub struct DbMaintenance;

#[async_trait]
impl Task for DbMaintenance {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        let done = ctx.daemon.maintain_tables().await?;
        if done.is_empty() {
            return Ok(match ctx.daemon.autovacuum_on().await? {
                true => "autovacuum is on: nothing to do".into(),
                false => "no table changed enough".into(),
            });
        }
        let list: Vec<String> = done
            .iter()
            .map(|d| format!("{} {}", d.action, d.table))
            .collect();
        Ok(list.join(", "))
    }
}
