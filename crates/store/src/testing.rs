//! Test support shared by the workspace's test suites: a fresh, private database on each
//! backend under test.
//!
//! SQLite is always tested. PostgreSQL is tested when `PANDA_TEST_DATABASE_URL` is set
//! (`postgres://user[:password]@host[:port]/dbname`); each test database is then three schemas
//! of its own in that database (the PanDA, META and archive schemas, split as upstream splits
//! them), dropped afterwards. With `PANDA_REQUIRE_PG=1`, a missing URL is an error rather than
//! a skip.
//!
//! With `PANDA_TEST_UPSTREAM_TEMPLATE` naming a database made by upstream's own scripts
//! (`scripts/upstream-database.sh`) on that server, each PostgreSQL test database is instead a
//! copy of it (`CREATE DATABASE ... TEMPLATE`) in upstream's schema names, so the whole suite
//! runs on upstream's layout.

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
    Schemas {
        admin: DbConfig,
        schemas: Vec<String>,
    },
    Database {
        admin: DbConfig,
        name: String,
    },
}

/// The PostgreSQL URL of the test server, when PostgreSQL is under test.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("PANDA_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() && std::env::var("PANDA_REQUIRE_PG").is_ok_and(|v| v == "1") {
        panic!("PANDA_REQUIRE_PG=1 but PANDA_TEST_DATABASE_URL is not set");
    }
    url
}

/// The database made by upstream's scripts that test databases are copied from, if any.
pub fn upstream_template() -> Option<String> {
    std::env::var("PANDA_TEST_UPSTREAM_TEMPLATE")
        .ok()
        .filter(|t| !t.is_empty())
}

/// The backends under test: SQLite, and PostgreSQL when a URL is given.
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
                config.application_name = name.clone();
                if let Some(template) = upstream_template() {
                    admin_statements(
                        &admin,
                        vec![format!("CREATE DATABASE {name} TEMPLATE {template}")],
                    )
                    .unwrap_or_else(|e| panic!("copy the upstream database {template}: {e}"));
                    config.name = name.clone();
                    return TestDb {
                        config,
                        cleanup: Cleanup::Database { admin, name },
                    };
                }
                config.schema = name.clone();
                config.meta_schema = format!("{name}_meta");
                config.arch_schema = format!("{name}_arch");
                let schemas = vec![
                    config.schema.clone(),
                    config.meta_schema.clone(),
                    config.arch_schema.clone(),
                ];
                TestDb {
                    config,
                    cleanup: Cleanup::Schemas { admin, schemas },
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
            Cleanup::Schemas { admin, schemas } => {
                // The test's own connections may still hold locks (a transaction whose
                // rollback waits for the runtime this drop blocks), so end them first. Each
                // test database connects under its name as `application_name`.
                let mut statements = vec![terminate(&self.config.application_name)];
                statements.extend(
                    schemas
                        .iter()
                        .map(|s| format!("DROP SCHEMA IF EXISTS {s} CASCADE")),
                );
                let _ = admin_statements(admin, statements);
            }
            Cleanup::Database { admin, name } => {
                let _ = admin_statements(
                    admin,
                    vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")],
                );
            }
        }
    }
}

fn terminate(application_name: &str) -> String {
    format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = '{application_name}' AND pid <> pg_backend_pid()"
    )
}

/// Runs `statements` on the admin database from a thread of its own, so it works inside an
/// async test and while a failed test unwinds.
fn admin_statements(admin: &DbConfig, statements: Vec<String>) -> Result<(), String> {
    let admin = admin.clone();
    let worker = std::thread::spawn(move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
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
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await
                .map_err(|e| e.to_string())?;
            let mut outcome = Ok(());
            for statement in statements {
                if let Err(e) = sqlx::query(&statement).execute(&pool).await {
                    outcome = Err(e.to_string());
                    break;
                }
            }
            pool.close().await;
            outcome
        })
    });
    worker
        .join()
        .unwrap_or_else(|_| Err("the admin thread panicked".into()))
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
        meta_schema: "doma_pandameta".into(),
        arch_schema: "doma_pandaarch".into(),
        pool_size: 8,
        connect_timeout: Duration::from_secs(10),
        application_name: "panda-test".into(),
    })
}
