//! The PostgreSQL connection pool.
//!
//! sqlx's pool pings every connection as it is given back, a round trip per request that
//! measured a tenth of a pilot cycle on this project's benchmark. This pool keeps what a
//! server needs and no more:
//! - at most `max` connections are in use; a caller waits for one at most `acquire_timeout`;
//! - a connection given back cleanly is reused as it is, most recently used first; one that
//!   sat idle longer than [`PING_WHEN_IDLE_FOR`] is pinged before reuse (a server restart or a
//!   firewall may have dropped it), and one idle longer than [`CLOSE_WHEN_IDLE_FOR`] is closed
//!   at the next acquire or give-back;
//! - a connection given back with a transaction open is rolled back in the background and
//!   then reused; one given back in the middle of a statement (a cancelled request), after its
//!   statement failed for a reason other than the statement itself (a broken socket, a FATAL
//!   error such as a terminated backend), or after a failed rollback is closed, since its
//!   state is unknown. So a database restart fails at most one request per open connection
//!   (idle ones older than the ping threshold are checked first), and the pool heals itself.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Result, StoreError};

/// A connection idle for longer is pinged before it is handed out again.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(10);
/// A connection idle for longer is closed instead of reused.
pub const CLOSE_WHEN_IDLE_FOR: Duration = Duration::from_secs(600);

pub struct PgConnectionPool {
    options: PgConnectOptions,
    max: u32,
    acquire_timeout: Duration,
    /// One permit per connection that may be in use.
    permits: Arc<Semaphore>,
    /// Connections given back, the most recently used last.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// Connections open, in use or idle.
    open: AtomicU32,
    /// What the pool is for, in error messages.
    describe: String,
}

impl PgConnectionPool {
    pub fn new(
        options: PgConnectOptions,
        max: u32,
        acquire_timeout: Duration,
        describe: String,
    ) -> Arc<PgConnectionPool> {
        let max = max.max(1);
        Arc::new(PgConnectionPool {
            options,
            max,
            acquire_timeout,
            permits: Arc::new(Semaphore::new(max as usize)),
            idle: Mutex::new(Vec::new()),
            open: AtomicU32::new(0),
            describe,
        })
    }

    /// Adds an open connection to the idle ones (the driver's first, probing connection).
    pub fn adopt(&self, conn: PgConnection) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.give_back(conn);
    }

    pub async fn acquire(self: &Arc<Self>) -> Result<PooledConnection> {
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "no connection to {} free within {:?} (all {} in use)",
                        self.describe, self.acquire_timeout, self.max
                    ))
                })?
                .map_err(|_| {
                    StoreError::Unavailable(format!("the pool of {} is closed", self.describe))
                })?;
        loop {
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((mut conn, since)) = idle else {
                break;
            };
            let idle_for = since.elapsed();
            if idle_for > CLOSE_WHEN_IDLE_FOR {
                self.forget(conn);
                continue;
            }
            if idle_for > PING_WHEN_IDLE_FOR && conn.ping().await.is_err() {
                self.forget(conn);
                continue;
            }
            return Ok(self.lend(conn, permit));
        }
        let conn = tokio::time::timeout(self.acquire_timeout, self.options.connect())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("connecting to {} timed out", self.describe))
            })?
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to {}: {e}", self.describe))
            })?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(self.lend(conn, permit))
    }

    fn lend(
        self: &Arc<Self>,
        conn: PgConnection,
        permit: OwnedSemaphorePermit,
    ) -> PooledConnection {
        PooledConnection {
            conn: Some(conn),
            pool: self.clone(),
            permit: Some(permit),
            busy: false,
            in_transaction: false,
        }
    }

    /// Puts a connection on the idle stack, and closes those at its bottom that have been idle
    /// too long (the stack is in the order connections were given back, so they are a prefix:
    /// on a quiet server the most recently used few serve everything and the rest age out).
    fn give_back(&self, conn: PgConnection) {
        let stale: Vec<(PgConnection, Instant)> = match self.idle.lock() {
            Ok(mut idle) => {
                idle.push((conn, Instant::now()));
                let fresh_from = idle
                    .iter()
                    .position(|(_, since)| since.elapsed() <= CLOSE_WHEN_IDLE_FOR)
                    .unwrap_or(idle.len());
                idle.drain(..fresh_from).collect()
            }
            Err(_) => vec![(conn, Instant::now())],
        };
        for (conn, _) in stale {
            self.forget(conn);
        }
    }

    /// Drops a connection; its socket closes with it.
    fn forget(&self, conn: PgConnection) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        drop(conn);
    }

    /// (open, idle, maximum).
    pub fn stats(&self) -> (u32, u32, u32) {
        let idle = self
            .idle
            .lock()
            .map(|idle| u32::try_from(idle.len()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        (self.open.load(Ordering::Relaxed), idle, self.max)
    }

    /// Refuses further acquires and closes the idle connections.
    pub async fn close(&self) {
        self.permits.close();
        let idle: Vec<_> = match self.idle.lock() {
            Ok(mut idle) => idle.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for (conn, _) in idle {
            self.open.fetch_sub(1, Ordering::Relaxed);
            let _ = conn.close().await;
        }
    }
}

/// A connection lent by the pool; given back when dropped.
pub struct PooledConnection {
    conn: Option<PgConnection>,
    pool: Arc<PgConnectionPool>,
    permit: Option<OwnedSemaphorePermit>,
    /// A statement was sent and its answer not read in full (set by the caller around each
    /// statement; still set when the caller's future was dropped half-way).
    pub busy: bool,
    /// A transaction is open (set by the caller after BEGIN, cleared after COMMIT).
    pub in_transaction: bool,
}

impl PooledConnection {
    pub fn connection(&mut self) -> Result<&mut PgConnection> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the connection was given back".into()))
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.busy {
            self.pool.forget(conn);
            return;
        }
        if !self.in_transaction {
            self.pool.give_back(conn);
            return;
        }
        // Roll back before reuse, holding the permit until then so that the pool never has
        // more than its maximum open.
        let pool = self.pool.clone();
        let permit = self.permit.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    match conn.execute("ROLLBACK").await {
                        Ok(_) => pool.give_back(conn),
                        Err(_) => pool.forget(conn),
                    }
                    drop(permit);
                });
            }
            Err(_) => pool.forget(conn),
        }
    }
}
