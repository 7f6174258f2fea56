//! Schema versions, the start-up check and migrations.
//!
//! The version lives where upstream keeps it: `pandadb_version`, component `PanDA`,
//! `major.minor.patch`. Our migrations are numbered with upstream's layout versions: each step
//! brings the tables we use to the layout upstream had at that version. The check is strict:
//! the server runs only on the version it was built for. An older database is refused until
//! `schema migrate` has run; a newer one is refused outright, because columns or meanings may
//! have changed under us.
//!
//! Tables and indexes this server needs beyond upstream's layout at [`SCHEMA_VERSION`] (our own
//! credential store; upstream tables our earlier steps did not create) are numbered on a line
//! of their own: component [`EXTENSION_COMPONENT`] in the same table, steps in [`EXTENSIONS`].
//! Upstream's server reads only its own component, so the extra row and the extra tables do
//! not disturb it, and upstream's next layout number stays free for upstream's meaning.
//!
//! Migrations run in one transaction under a lock (an advisory lock on PostgreSQL, the
//! write lock on SQLite), so every node may run them at start: one applies the steps, the
//! others wait, then find the version current and do nothing.

use std::fmt;

use panda_core::{ColumnType, Value};

use crate::ddl;
use crate::driver::{Dialect, Tx};
use crate::error::{Result, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaVersion {
    pub major: i64,
    pub minor: i64,
    pub patch: i64,
}

impl SchemaVersion {
    pub const fn new(major: i64, minor: i64, patch: i64) -> Self {
        SchemaVersion {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The layout this binary reads and writes.
pub const SCHEMA_VERSION: SchemaVersion = SchemaVersion::new(0, 1, 7);

/// The component name of the version row, as upstream.
pub const SCHEMA_COMPONENT: &str = "PanDA";

/// One migration step: the statements that bring the database to `version`.
pub struct Migration {
    pub version: SchemaVersion,
    pub description: &'static str,
    pub statements: fn(&ddl::Layout) -> Vec<String>,
}

/// All steps, oldest first. Every statement must be idempotent (`IF NOT EXISTS`), so a step
/// also completes a database that upstream's own scripts created.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: SchemaVersion::new(0, 1, 5),
        description: "job, file, parameter, report, log, lock, config, queue, task, harvester and \
                      worker-node tables; sequences",
        statements: ddl::core_tables,
    },
    Migration {
        version: SchemaVersion::new(0, 1, 6),
        description: "indexes for job lookups and dispatch",
        statements: ddl::lookup_indexes,
    },
    Migration {
        version: SchemaVersion::new(0, 1, 7),
        description: "the sandbox cache (usercacheusage) and JEDI's dataset, file and template \
                      tables",
        statements: ddl::task_processing_tables,
    },
];

/// The component of the version row of our own steps.
pub const EXTENSION_COMPONENT: &str = "panda-server-rs";

/// The level of our own steps this binary needs.
pub const EXTENSION_VERSION: SchemaVersion = SchemaVersion::new(0, 0, 4);

/// Our own steps, oldest first, applied after upstream's; idempotent like those.
pub const EXTENSIONS: &[Migration] = &[
    Migration {
        version: SchemaVersion::new(0, 0, 1),
        description: "user secrets (upstream's secrets), Harvester's slots (upstream's \
                      harvester_slots), workflow requests (JEDI's workflows) and the sealed \
                      credentials operators register",
        statements: ddl::credential_tables,
    },
    Migration {
        version: SchemaVersion::new(0, 0, 2),
        description: "the event ranges of event-service jobs (JEDI's jedi_events)",
        statements: ddl::event_tables,
    },
    Migration {
        version: SchemaVersion::new(0, 0, 3),
        description: "on a database upstream's scripts made: the claim's index, the index of \
                      the defined jobs by state and the task-ID sequence (our own databases \
                      have them from 0.1.5 and 0.1.6); on ours, upstream's global_shares",
        statements: ddl::upstream_layout_additions,
    },
    Migration {
        version: SchemaVersion::new(0, 0, 4),
        description: "the monitor's index: archived jobs by site and state, newest first",
        statements: ddl::monitor_indexes,
    },
];

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub from: Option<SchemaVersion>,
    pub to: SchemaVersion,
    pub applied: Vec<SchemaVersion>,
    /// Our own steps applied ([`EXTENSIONS`]).
    pub extensions_applied: Vec<SchemaVersion>,
}

/// Key of the PostgreSQL advisory lock that serializes migrations across nodes.
const MIGRATION_LOCK_KEY: i64 = 0x7061_6e64_6100;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS pandadb_version (
  component VARCHAR(100) NOT NULL PRIMARY KEY, major INTEGER NOT NULL,
  minor INTEGER NOT NULL, patch INTEGER NOT NULL
)";

/// Compares the level of our own steps with [`EXTENSION_VERSION`].
pub fn check_extensions(found: Option<SchemaVersion>) -> Result<SchemaVersion> {
    match found {
        Some(v) if v == EXTENSION_VERSION => Ok(v),
        Some(v) if v > EXTENSION_VERSION => Err(StoreError::ExtensionsTooNew {
            found: v,
            supported: EXTENSION_VERSION,
        }),
        found => Err(StoreError::ExtensionsMissing {
            found: found.map_or_else(|| "none".to_string(), |v| v.to_string()),
            required: EXTENSION_VERSION,
        }),
    }
}

/// Compares a database's version with [`SCHEMA_VERSION`].
pub fn check_version(found: Option<SchemaVersion>) -> Result<SchemaVersion> {
    match found {
        None => Err(StoreError::SchemaMissing),
        Some(v) if v < SCHEMA_VERSION => Err(StoreError::SchemaTooOld {
            found: v,
            required: SCHEMA_VERSION,
        }),
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            found: v,
            supported: SCHEMA_VERSION,
        }),
        Some(v) => Ok(v),
    }
}

/// Reads the version row of `component`; `None` when the table or the row is missing.
pub(crate) async fn read_version(
    tx: &mut dyn Tx,
    dialect: Dialect,
    component: &str,
) -> Result<Option<SchemaVersion>> {
    let exists = match dialect {
        Dialect::Postgres => "SELECT CAST(to_regclass('pandadb_version') AS TEXT)",
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'pandadb_version'"
        }
    };
    let rows = tx.fetch(exists, &[], &[ColumnType::Text]).await?;
    if !rows.iter().any(|r| r.first().is_some_and(|v| !v.is_null())) {
        return Ok(None);
    }
    let ints = [ColumnType::BigInt; 3];
    let rows = tx
        .fetch(
            "SELECT major, minor, patch FROM pandadb_version WHERE component = $1",
            &[Value::Text(Some(component.into()))],
            &ints,
        )
        .await?;
    Ok(rows.first().map(|r| {
        let part = |i: usize| r.get(i).and_then(Value::as_i64).unwrap_or(0);
        SchemaVersion::new(part(0), part(1), part(2))
    }))
}

/// Applies the missing steps up to `target` inside `tx` (which the caller commits).
pub(crate) async fn migrate_in(
    tx: &mut dyn Tx,
    layout: &ddl::Layout,
    target: SchemaVersion,
) -> Result<MigrationReport> {
    let dialect = layout.dialect;
    if dialect == Dialect::Postgres {
        tx.fetch(
            "SELECT CAST(pg_advisory_xact_lock($1) AS TEXT)",
            &[Value::Int(Some(MIGRATION_LOCK_KEY))],
            &[ColumnType::Text],
        )
        .await?;
        for schema in layout.schemas() {
            tx.execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"), &[])
                .await?;
        }
    }
    tx.execute(VERSION_TABLE, &[]).await?;
    let from = read_version(tx, dialect, SCHEMA_COMPONENT).await?;
    if let Some(found) = from.filter(|v| *v > SCHEMA_VERSION) {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let mut applied = Vec::new();
    for step in MIGRATIONS
        .iter()
        .filter(|m| from.is_none_or(|v| m.version > v) && m.version <= target)
    {
        for statement in (step.statements)(layout) {
            tx.execute(&statement, &[]).await?;
        }
        applied.push(step.version);
    }
    let to = applied.last().copied().or(from).unwrap_or(target);
    if !applied.is_empty() {
        write_version(tx, SCHEMA_COMPONENT, to).await?;
    }
    // Our own steps come on top of upstream's current layout only.
    let mut extensions_applied = Vec::new();
    if to == SCHEMA_VERSION {
        let level = read_version(tx, dialect, EXTENSION_COMPONENT).await?;
        if let Some(found) = level.filter(|v| *v > EXTENSION_VERSION) {
            return Err(StoreError::ExtensionsTooNew {
                found,
                supported: EXTENSION_VERSION,
            });
        }
        for step in EXTENSIONS
            .iter()
            .filter(|m| level.is_none_or(|v| m.version > v))
        {
            for statement in (step.statements)(layout) {
                tx.execute(&statement, &[]).await?;
            }
            extensions_applied.push(step.version);
        }
        if let Some(last) = extensions_applied.last() {
            write_version(tx, EXTENSION_COMPONENT, *last).await?;
        }
    }
    Ok(MigrationReport {
        from,
        to,
        applied,
        extensions_applied,
    })
}

/// The tables, indexes and sequences the steps after `from` (our layout line) and `level` (our
/// own line) create, as `(kind, name)`, in step order: what `schema migrate` would run. Read
/// from the steps' own statements, so the list cannot drift from them.
pub(crate) fn created_objects(
    layout: &ddl::Layout,
    from: Option<SchemaVersion>,
    level: Option<SchemaVersion>,
) -> Vec<(&'static str, String)> {
    let pending =
        |after: Option<SchemaVersion>| move |m: &&Migration| after.is_none_or(|v| m.version > v);
    let steps = MIGRATIONS
        .iter()
        .filter(pending(from))
        .chain(EXTENSIONS.iter().filter(pending(level)));
    let mut objects = Vec::new();
    for step in steps {
        for statement in (step.statements)(layout) {
            let mut words = statement.split_whitespace();
            let created = (words.next(), words.next());
            let kind = match created {
                (Some("CREATE"), Some("TABLE")) => "table",
                (Some("CREATE"), Some("INDEX")) => "index",
                (Some("CREATE"), Some("SEQUENCE")) => "sequence",
                _ => continue,
            };
            let rest: Vec<&str> = words.collect();
            let name = match rest.as_slice() {
                ["IF", "NOT", "EXISTS", name, ..] => name,
                [name, ..] => name,
                [] => continue,
            };
            let name = name.trim_end_matches('(').to_string();
            if !objects.iter().any(|(_, n)| *n == name) {
                objects.push((kind, name));
            }
        }
    }
    objects
}

/// What the pending steps would create that the database lacks, as "kind name". On a
/// database upstream's scripts made, that is what `schema migrate` adds to it.
pub(crate) async fn missing_objects(tx: &mut dyn Tx, layout: &ddl::Layout) -> Result<Vec<String>> {
    let from = read_version(tx, layout.dialect, SCHEMA_COMPONENT).await?;
    let level = read_version(tx, layout.dialect, EXTENSION_COMPONENT).await?;
    let lookup = match layout.dialect {
        Dialect::Postgres => "SELECT CAST(to_regclass($1) AS TEXT)",
        Dialect::Sqlite => "SELECT name FROM sqlite_master WHERE name = $1",
    };
    let mut missing = Vec::new();
    for (kind, name) in created_objects(layout, from, level) {
        let rows = tx
            .fetch(
                lookup,
                &[Value::Text(Some(name.clone()))],
                &[ColumnType::Text],
            )
            .await?;
        if !rows.iter().any(|r| r.first().is_some_and(|v| !v.is_null())) {
            missing.push(format!("{kind} {name}"));
        }
    }
    Ok(missing)
}

/// Sets the version row (tests also use this to fake older and newer databases).
pub(crate) async fn write_version(
    tx: &mut dyn Tx,
    component: &str,
    version: SchemaVersion,
) -> Result<()> {
    let params = [
        Value::Text(Some(component.into())),
        Value::Int(Some(version.major)),
        Value::Int(Some(version.minor)),
        Value::Int(Some(version.patch)),
    ];
    let updated = tx
        .execute(
            "UPDATE pandadb_version SET major = $2, minor = $3, patch = $4 WHERE component = $1",
            &params,
        )
        .await?;
    if updated == 0 {
        tx.execute(
            "INSERT INTO pandadb_version (component, major, minor, patch) VALUES ($1, $2, $3, $4)",
            &params,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objects_of_the_steps_are_read_from_their_statements() {
        let objects = created_objects(&ddl::Layout::plain(Dialect::Postgres), None, None);
        for wanted in [
            ("table", "jobsactive4"),
            ("index", "jobsactive4_dispatch_idx"),
            ("sequence", "jedi_tasks_id_seq"),
            ("table", "jedi_events"),
        ] {
            assert!(
                objects.iter().any(|(k, n)| (*k, n.as_str()) == wanted),
                "{wanted:?} in {objects:?}"
            );
        }
        // A database at our current layout and level has nothing pending.
        let current = created_objects(
            &ddl::Layout::plain(Dialect::Postgres),
            Some(SCHEMA_VERSION),
            Some(EXTENSION_VERSION),
        );
        assert!(current.is_empty(), "{current:?}");
    }

    #[test]
    fn versions_order_numerically_not_textually() {
        assert!(SchemaVersion::new(0, 1, 10) > SchemaVersion::new(0, 1, 9));
        assert_eq!(SchemaVersion::new(0, 1, 6).to_string(), "0.1.6");
    }

    #[test]
    fn the_check_names_both_versions() {
        let old = check_version(Some(SchemaVersion::new(0, 1, 5)));
        let msg = old.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("0.1.5") && msg.contains(&SCHEMA_VERSION.to_string()),
            "{msg}"
        );
        let new = check_version(Some(SchemaVersion::new(0, 2, 0)));
        assert!(matches!(new, Err(StoreError::SchemaTooNew { .. })));
        assert!(check_version(Some(SCHEMA_VERSION)).is_ok());
    }

    #[test]
    fn the_last_migration_reaches_the_current_version() {
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
        assert_eq!(
            EXTENSIONS.last().map(|m| m.version),
            Some(EXTENSION_VERSION)
        );
    }

    #[test]
    fn a_database_without_our_own_steps_is_sent_to_migrate() {
        let msg = check_extensions(None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("schema migrate"), "{msg}");
        assert!(check_extensions(Some(SchemaVersion::new(9, 0, 0))).is_err());
        assert!(check_extensions(Some(EXTENSION_VERSION)).is_ok());
    }
}
