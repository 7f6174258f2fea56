//! The systemd notify protocol (`Type=notify`): `READY=1` once the web tier listens (or the
//! daemon's tasks are scheduled) and the database answers, a `STATUS=` line every few seconds
//! (Apache's form for the web tier; tasks, runs and failures for the daemon), `WATCHDOG=1` when
//! `WatchdogSec` is set, `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` all of it is a no-op.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use panda_api::RequestStats;
use panda_daemon::TaskStats;
use panda_store::Store;
use sd_notify::NotifyState;

use crate::serve::STATUS_INTERVAL;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Ready, with a status that does not change (nothing to report periodically).
pub fn ready_with_status(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Apache's status line: `Total requests: N; Idle/Busy workers I/B; Requests/sec: R; Bytes
/// served/sec: B`, the rates over the last interval.
pub fn status_line(
    total: u64,
    idle: u64,
    busy: u64,
    requests_per_sec: f64,
    bytes_per_sec: f64,
) -> String {
    let bytes = if bytes_per_sec >= 1024.0 * 1024.0 {
        format!("{:.1}MB/sec", bytes_per_sec / (1024.0 * 1024.0))
    } else if bytes_per_sec >= 1024.0 {
        format!("{:.1}KB/sec", bytes_per_sec / 1024.0)
    } else {
        format!("{bytes_per_sec:.0}B/sec")
    };
    format!(
        "Total requests: {total}; Idle/Busy workers {idle}/{busy}; Requests/sec: {requests_per_sec:.1}; Bytes served/sec: {bytes}"
    )
}

/// The web tier's status line from its request counters, rates since the previous call.
pub fn web_status(stats: Arc<RequestStats>) -> impl FnMut() -> String + Send {
    let (mut last_total, mut last_bytes, mut last_time) = (0u64, 0u64, Instant::now());
    move || {
        let total = stats.total.load(Ordering::Relaxed);
        let bytes = stats.bytes.load(Ordering::Relaxed);
        let busy = stats.busy_workers();
        let idle = (stats.max_workers as u64).saturating_sub(busy);
        let seconds = last_time.elapsed().as_secs_f64().max(0.001);
        let line = status_line(
            total,
            idle,
            busy,
            total.saturating_sub(last_total) as f64 / seconds,
            bytes.saturating_sub(last_bytes) as f64 / seconds,
        );
        (last_total, last_bytes, last_time) = (total, bytes, Instant::now());
        line
    }
}

/// The daemon's status line: enabled tasks, runs and failures, the latest run.
pub fn daemon_status(tasks: Arc<TaskStats>, enabled: usize) -> impl FnMut() -> String + Send {
    move || tasks.status_line(enabled, SystemTime::now())
}

/// Sends `line()` as the status every [`STATUS_INTERVAL`] and feeds the watchdog while the
/// database answers, until `stop` resolves.
pub async fn status_loop(
    mut line: impl FnMut() -> String + Send,
    store: Store,
    stop: impl Future<Output = ()>,
) {
    let mut usec = 0u64;
    let watchdog =
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec));
    let interval = match watchdog {
        Some(w) => STATUS_INTERVAL.min(w / 2).max(Duration::from_millis(100)),
        None => STATUS_INTERVAL,
    };
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let line = line();
        let mut states = vec![NotifyState::Status(&line)];
        if watchdog.is_some() && store.ping().await.is_ok() {
            states.push(NotifyState::Watchdog);
        }
        send(&states);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_reads_like_apaches() {
        assert_eq!(
            status_line(24631, 94, 6, 11.7, 320.0 * 1024.0),
            "Total requests: 24631; Idle/Busy workers 94/6; Requests/sec: 11.7; Bytes served/sec: 320.0KB/sec"
        );
    }
}
