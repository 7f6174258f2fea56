//! Test support shared by the workspace's test suites: a fresh, private database on each
//! backend under test.
//!
//! SQLite is always tested. PostgreSQL is tested when `PANDA_TEST_DATABASE_URL` is set
//! (`postgres://user[:password]@host[:port]/dbname`); each test database is then a schema of
//! its own in that database, dropped afterwards. With `PANDA_REQUIRE_PG=1`, a missing URL is
//! an error rather than a skip.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::config::{Backend, DbConfig};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private database for one test; removed on drop.
pub struct TestDb {
    pub config: DbConfig,
    cleanup: Cleanup,
}

enum Cleanup {
    Directory(PathBuf),
    Schema { admin: DbConfig, schema: String },
}

/// Where PostgreSQL tests connect, if anywhere.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("PANDA_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() && std::env::var("PANDA_REQUIRE_PG").is_ok_and(|v| v == "1") {
        panic!("PANDA_REQUIRE_PG=1 but PANDA_TEST_DATABASE_URL is not set");
    }
    url
}

/// The backends to run a test on: SQLite always, PostgreSQL when configured.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    if postgres_url().is_some() {
        all.push(Backend::Postgres);
    } else {
        eprintln!("note: PostgreSQL skipped (set PANDA_TEST_DATABASE_URL to test it)");
    }
    all
}

fn unique_name() -> String {
    format!(
        "panda_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_subsec_micros()
    )
}

impl TestDb {
    /// A new, empty database on `backend` (for PostgreSQL, a schema not yet created).
    pub fn new(backend: Backend) -> TestDb {
        let name = unique_name();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("create test directory");
                TestDb {
                    config: DbConfig::sqlite(dir.join("panda.db")),
                    cleanup: Cleanup::Directory(dir),
                }
            }
            Backend::Postgres => {
                let url = postgres_url().expect("PANDA_TEST_DATABASE_URL");
                let admin = parse_postgres_url(&url).expect("a valid PANDA_TEST_DATABASE_URL");
                let mut config = admin.clone();
                config.schema = name.clone();
                config.application_name = name.clone();
                TestDb {
                    config,
                    cleanup: Cleanup::Schema {
                        admin,
                        schema: name,
                    },
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema { admin, schema } => drop_schema(admin.clone(), schema.clone()),
        }
    }
}

/// Drops the test schema from a thread of its own, so it works inside an async test and
/// while a failed test unwinds. Each test database connects under its schema's name as
/// `application_name`, which is how its leftover connections are found.
fn drop_schema(admin: DbConfig, schema: String) {
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async move {
                let options = sqlx::postgres::PgConnectOptions::new()
                    .host(&admin.host)
                    .port(admin.port)
                    .username(&admin.user)
                    .database(&admin.name);
                let options = match &admin.password {
                    Some(p) => options.password(p),
                    None => options,
                };
                if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                {
                    // The test's own connections may still hold locks (a transaction whose
                    // rollback waits for the runtime this thread blocks), so end them first.
                    let _ = sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&schema)
                    .execute(&pool)
                    .await;
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        }
    });
    let _ = worker.join();
}

/// Parses `postgres://user[:password]@host[:port]/dbname` into a connection config.
pub fn parse_postgres_url(url: &str) -> Option<DbConfig> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let (credentials, location) = rest.rsplit_once('@')?;
    let (user, password) = match credentials.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (credentials.to_string(), None),
    };
    let (host_port, name) = location.split_once('/')?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().ok()?),
        None => (host_port.to_string(), 5432),
    };
    Some(DbConfig {
        backend: Backend::Postgres,
        host,
        port,
        user,
        password,
        name: name.split('?').next().unwrap_or(name).to_string(),
        schema: "doma_panda".into(),
        pool_size: 8,
        connect_timeout: Duration::from_secs(10),
        application_name: "panda-test".into(),
    })
}
