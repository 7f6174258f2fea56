//! The tables we create, with upstream's names, column names and types (panda-database
//! schema 0.1.6, PostgreSQL). Column types of the job tables come from the attribute table in
//! `panda-core`, with the few per-table differences upstream has; [`job_column_type`] is also
//! what the store uses to cut strings before an INSERT, so DDL and writes never disagree.
//!
//! Upstream range-partitions `jobsarchived4`, `filestable4`, `jobparamstable`, `metatable`
//! and `jobs_statuslog` by `modificationtime` (pg_partman). We create them as plain tables with
//! the same primary keys; the store runs unchanged on upstream's partitioned ones.

use panda_core::job::JOB_ATTRIBUTES;
use panda_core::task::TASK_ATTRIBUTES;
use panda_core::{ColumnType, JobTable};

use crate::config::DbConfig;
use crate::driver::Dialect;

/// The column type of a job attribute in a given job table.
pub fn job_column_type(table: JobTable, index: usize) -> ColumnType {
    let attr = &JOB_ATTRIBUTES[index];
    match (table, attr.name) {
        (JobTable::Defined, "maxCpuCount" | "maxDiskCount" | "minRamCount" | "nEvents") => {
            ColumnType::Int
        }
        (
            JobTable::Defined,
            "pilotErrorDiag" | "exeErrorDiag" | "ddmErrorDiag" | "taskBufferErrorDiag",
        ) => ColumnType::VarChar(250),
        (JobTable::Defined, "grid" | "cloud") => ColumnType::VarChar(32),
        (JobTable::Archived, "ddmErrorDiag") => ColumnType::VarChar(700),
        _ => attr.column_type,
    }
}

/// Where the tables go. On PostgreSQL upstream keeps some tables out of the PanDA schema:
/// `users` and `usercacheusage` in `schemaMETA`, the archive in `schemaPANDAARCH`. Migrations
/// create them there (or in the PanDA schema when the keys name the same schema, and always
/// on SQLite); statements find them through the `search_path` either way.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dialect: Dialect,
    /// The schemas to create, the PanDA schema first ([`DbConfig::schemas`]; none on SQLite).
    schemas: Vec<String>,
    meta: String,
    arch: String,
}

impl Layout {
    pub fn new(dialect: Dialect, config: &DbConfig) -> Layout {
        let schemas = match dialect {
            Dialect::Postgres => config.schemas().into_iter().map(str::to_string).collect(),
            Dialect::Sqlite => Vec::new(),
        };
        Layout {
            dialect,
            schemas,
            meta: config.meta().to_string(),
            arch: config.arch().to_string(),
        }
    }

    /// The layout of a single schema (SQLite, and tests of the statements).
    pub fn plain(dialect: Dialect) -> Layout {
        Layout {
            dialect,
            schemas: Vec::new(),
            meta: String::new(),
            arch: String::new(),
        }
    }

    /// The schemas to create before the tables, the PanDA schema first (PostgreSQL only).
    pub fn schemas(&self) -> &[String] {
        &self.schemas
    }

    /// `table` in `schema`, qualified unless that is the PanDA schema (or there are no schemas).
    fn qualified(&self, schema: &str, table: &str) -> String {
        match self.schemas.first() {
            Some(panda) if !schema.is_empty() && schema != panda => format!("{schema}.{table}"),
            _ => table.to_string(),
        }
    }

    /// `table` as named in `CREATE` statements of a META table.
    fn meta(&self, table: &str) -> String {
        self.qualified(&self.meta, table)
    }

    /// `table` as named in `CREATE` statements of an archive table.
    fn arch(&self, table: &str) -> String {
        self.qualified(&self.arch, table)
    }
}

/// Upstream's "no date yet" default, 1970-01-01.
fn epoch(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "TIMESTAMP '1970-01-01 00:00:00'",
        Dialect::Sqlite => "'1970-01-01 00:00:00'",
    }
}

/// NOT NULL and DEFAULT of a job column, as in upstream's tables.
fn job_column_constraint(table: JobTable, name: &str, dialect: Dialect) -> String {
    let epoch = epoch(dialect);
    match name {
        "PandaID"
        | "jobDefinitionID"
        | "assignedPriority"
        | "currentPriority"
        | "attemptNr"
        | "maxAttempt"
        | "maxCpuCount"
        | "maxDiskCount"
        | "minRamCount"
        | "cpuConsumptionTime"
        | "pilotErrorCode"
        | "exeErrorCode"
        | "supErrorCode"
        | "ddmErrorCode"
        | "brokerageErrorCode"
        | "jobDispatcherErrorCode"
        | "taskBufferErrorCode"
        | "nEvents" => " NOT NULL DEFAULT 0".into(),
        "modificationTime" if table == JobTable::Archived => " NOT NULL".into(),
        "creationTime" | "modificationTime" => format!(" NOT NULL DEFAULT {epoch}"),
        "jobStatus" if table == JobTable::Defined => " NOT NULL DEFAULT 'defined'".into(),
        "jobStatus" => " NOT NULL DEFAULT 'activated'".into(),
        "prodSeriesLabel" => " DEFAULT 'Rome'".into(),
        "prodSourceLabel" => " DEFAULT 'managed'".into(),
        "startTime" | "endTime" | "stateChangeTime" | "prodDBUpdateTime" => {
            format!(" DEFAULT {epoch}")
        }
        "relocationFlag" | "jobExecutionID" => " DEFAULT 0".into(),
        _ => String::new(),
    }
}

fn job_table_ddl(table: JobTable, dialect: Dialect) -> String {
    let mut columns: Vec<String> = JOB_ATTRIBUTES
        .iter()
        .enumerate()
        .map(|(i, attr)| {
            format!(
                "{} {}{}",
                attr.column(),
                dialect.column_type(job_column_type(table, i)),
                job_column_constraint(table, attr.name, dialect)
            )
        })
        .collect();
    // Written by upstream's pilot heartbeat path; not a JobSpec attribute.
    columns.push(format!(
        "meancorecount {}",
        dialect.column_type(ColumnType::Decimal(8, 2))
    ));
    let key = match table {
        JobTable::Archived => "pandaid, modificationtime",
        _ => "pandaid",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {},\n  PRIMARY KEY ({key})\n)",
        table.name(),
        columns.join(",\n  ")
    )
}

/// Statements of the first migration: every table and sequence the server uses.
pub fn core_tables(layout: &Layout) -> Vec<String> {
    let dialect = layout.dialect;
    let ty = |t| dialect.column_type(t);
    let (big, int, small, ts) = (
        ty(ColumnType::BigInt),
        ty(ColumnType::Int),
        ty(ColumnType::SmallInt),
        ty(ColumnType::Timestamp),
    );
    let vc = |n| ty(ColumnType::VarChar(n));
    let json = match dialect {
        Dialect::Postgres => ("JSON", "JSONB"),
        Dialect::Sqlite => ("TEXT", "TEXT"),
    };
    let epoch = epoch(dialect);
    let mut statements: Vec<String> = JobTable::ALL
        .iter()
        .map(|t| job_table_ddl(*t, dialect))
        .collect();
    statements.extend([
        format!(
            "CREATE TABLE IF NOT EXISTS filestable4 (
  row_id {big} NOT NULL, pandaid {big} NOT NULL DEFAULT 0,
  modificationtime {ts} NOT NULL DEFAULT {epoch},
  guid {}, lfn {}, type {}, dataset {}, status {},
  proddblock {}, proddblocktoken {}, dispatchdblock {}, dispatchdblocktoken {},
  destinationdblock {}, destinationdblocktoken {}, destinationse {},
  fsize {big} NOT NULL DEFAULT 0, md5sum {}, checksum {}, scope {},
  jeditaskid {big}, datasetid {big}, fileid {big}, attemptnr {small},
  PRIMARY KEY (row_id, modificationtime)
)",
            vc(64),
            vc(4000),
            vc(20),
            vc(255),
            vc(64),
            vc(255),
            vc(250),
            vc(255),
            vc(250),
            vc(255),
            vc(250),
            vc(250),
            vc(36),
            vc(36),
            vc(30)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS jobparamstable (
  pandaid {big} NOT NULL, modificationtime {ts} NOT NULL DEFAULT {epoch}, jobparameters TEXT,
  PRIMARY KEY (pandaid, modificationtime)
)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS metatable (
  pandaid {big} NOT NULL, modificationtime {ts} NOT NULL DEFAULT {epoch}, metadata TEXT,
  PRIMARY KEY (pandaid, modificationtime)
)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS job_output_report (
  pandaid {big} NOT NULL, prodsourcelabel {}, jobstatus {} NOT NULL, attemptnr {small} NOT NULL,
  data TEXT, timestamp {ts} NOT NULL, lockedby {}, lockedtime {ts},
  PRIMARY KEY (pandaid, attemptnr)
)",
            vc(20),
            vc(15),
            vc(56)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS jobs_statuslog (
  pandaid {big} NOT NULL, modificationtime {ts} NOT NULL, jobstatus {} NOT NULL,
  prodsourcelabel {}, cloud {}, computingsite {}, modificationhost {}, modiftime_extended {ts}
)",
            vc(15),
            vc(20),
            vc(50),
            vc(128),
            vc(128)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS jedi_process_lock (
  vo {} NOT NULL, prodsourcelabel {} NOT NULL, workqueue_id {int} NOT NULL, cloud {} NOT NULL,
  lockedby {}, lockedtime {ts}, resource_type {} NOT NULL, component {} NOT NULL,
  PRIMARY KEY (vo, prodsourcelabel, workqueue_id, cloud, resource_type, component)
)",
            vc(32),
            vc(20),
            vc(10),
            vc(56),
            vc(56),
            vc(56)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS config (
  app {} NOT NULL, component {} NOT NULL, key {} NOT NULL, value {} NOT NULL,
  type {} NOT NULL, vo {} NOT NULL, descr {} NOT NULL, value_json {},
  PRIMARY KEY (app, component, key, vo)
)",
            vc(64),
            vc(64),
            vc(64),
            vc(256),
            vc(64),
            vc(32),
            vc(256),
            json.1
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS schedconfig_json (
  panda_queue {} NOT NULL PRIMARY KEY, data {}, last_update {ts}
)",
            vc(50),
            json.0
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS retryactions (
  retryaction_id {big} NOT NULL PRIMARY KEY, retry_action {} NOT NULL, active {} NOT NULL,
  retry_description {}
)",
            vc(50),
            ty(ColumnType::Char(1)),
            vc(250)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS retryerrors (
  retryerror_id {big} NOT NULL PRIMARY KEY, errorsource {} NOT NULL, errorcode {big} NOT NULL,
  active {} NOT NULL, retryaction {big} NOT NULL, errordiag {}, parameters {}, architecture {},
  release {}, workqueue_id {big}, description {}, expiration_date {ts}
)",
            vc(256),
            ty(ColumnType::Char(1)),
            vc(256),
            vc(256),
            vc(256),
            vc(64),
            vc(250)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS jobsdebug (pandaid {big} NOT NULL PRIMARY KEY, stdout {})",
            vc(2048)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS pandalog (
  bintime {ts} NOT NULL DEFAULT {epoch}, name {}, module {}, loguser {}, type {},
  pid {big} NOT NULL DEFAULT 0, loglevel {int} NOT NULL DEFAULT 0, levelname {}, time {},
  filename {}, line {int} NOT NULL DEFAULT 0, message {}
)",
            vc(30),
            vc(30),
            vc(80),
            vc(20),
            vc(30),
            vc(30),
            vc(100),
            vc(4000)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS resource_types (
  resource_name {} NOT NULL PRIMARY KEY, mincore {int}, maxcore {int},
  minrampercore {int}, maxrampercore {int}
)",
            vc(56)
        ),
        // Upstream's post-install row; more types are an operator's choice.
        "INSERT INTO resource_types (resource_name, mincore) SELECT 'Undefined', 1 \
         WHERE NOT EXISTS (SELECT 1 FROM resource_types)"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_workers (
  harvesterid {} NOT NULL, workerid {big} NOT NULL, lastupdate {ts} NOT NULL, status {} NOT NULL,
  batchid {}, nodeid {}, queuename {}, computingsite {}, submittime {ts}, starttime {ts},
  endtime {ts}, ncore {int}, errorcode {int}, stdout {}, stderr {}, batchlog {},
  resourcetype {}, nativeexitcode {int}, nativestatus {}, diagmessage {}, computingelement {},
  njobs {int}, submissionhost {}, harvesterhost {}, jdl {}, jobtype {}, pilotstarttime {ts},
  pilotendtime {ts}, pilotstatus {}, pilotstatussynctime {ts}, minramcount {int},
  PRIMARY KEY (harvesterid, workerid, lastupdate)
)",
            vc(50),
            vc(80),
            vc(80),
            vc(80),
            vc(80),
            vc(128),
            vc(250),
            vc(250),
            vc(250),
            vc(56),
            vc(80),
            vc(500),
            vc(128),
            vc(128),
            vc(128),
            vc(250),
            vc(52),
            vc(80)
        ),
    ]);
    statements.extend(sequences(dialect));
    statements.extend(archive_tables(layout));
    statements.extend(task_tables(dialect));
    statements.extend(harvester_tables(dialect));
    statements.extend(user_tables(layout));
    statements
}

/// Upstream's `users` table (in the META schema, as upstream): a user whose `status` is
/// `disabled` is banned.
pub fn user_tables(layout: &Layout) -> Vec<String> {
    let dialect = layout.dialect;
    let ty = |t| dialect.column_type(t);
    let (big, int, ts) = (
        ty(ColumnType::BigInt),
        ty(ColumnType::Int),
        ty(ColumnType::Timestamp),
    );
    let vc = |n| ty(ColumnType::VarChar(n));
    let epoch = epoch(dialect);
    let counters: Vec<String> = [
        "njobsa",
        "njobsp",
        "njobs1",
        "njobs7",
        "njobs30",
        "cpua1",
        "cpua7",
        "cpua30",
        "cpup1",
        "cpup7",
        "cpup30",
        "cpuxp1",
        "cpuxp7",
        "cpuxp30",
        "quotaa1",
        "quotaa7",
        "quotaa30",
        "quotap1",
        "quotap7",
        "quotap30",
        "quotaxp1",
        "quotaxp7",
        "quotaxp30",
        "space1",
        "space7",
        "space30",
    ]
    .iter()
    .map(|c| format!("{c} {big}"))
    .collect();
    let users = layout.meta("users");
    let mut statements = vec![format!(
        "CREATE TABLE IF NOT EXISTS {users} (
  id {int} NOT NULL PRIMARY KEY, name {} NOT NULL, dn {}, email {}, url {}, location {},
  classa {}, classp {}, classxp {}, sitepref {}, gridpref {}, queuepref {}, scriptcache {},
  types {}, sites {}, {},
  lastmod {ts} NOT NULL DEFAULT {epoch}, firstjob {ts} NOT NULL DEFAULT {epoch},
  latestjob {ts} NOT NULL DEFAULT {epoch}, pagecache TEXT,
  cachetime {ts} NOT NULL DEFAULT {epoch}, ncurrent {big} NOT NULL DEFAULT 0,
  jobid {big} NOT NULL DEFAULT 0, status {}, vo {}
)",
        vc(60),
        vc(150),
        vc(60),
        vc(100),
        vc(60),
        vc(30),
        vc(30),
        vc(30),
        vc(60),
        vc(20),
        vc(60),
        vc(100),
        vc(60),
        vc(250),
        counters.join(", "),
        vc(20),
        vc(20)
    )];
    statements.push(format!(
        "CREATE INDEX IF NOT EXISTS users_name_idx ON {users} (name, vo)"
    ));
    statements.push(match dialect {
        Dialect::Postgres => format!(
            "CREATE SEQUENCE IF NOT EXISTS {}",
            layout.meta("users_id_seq")
        ),
        Dialect::Sqlite => {
            "INSERT OR IGNORE INTO panda_sequences (name, last_value) VALUES ('users_id_seq', 0)"
                .into()
        }
    });
    statements
}

/// The column type of a task attribute: as the attribute table says.
fn task_columns(dialect: Dialect) -> Vec<String> {
    TASK_ATTRIBUTES
        .iter()
        .map(|attr| {
            let constraint = match attr.name {
                "jediTaskID" | "status" | "userName" | "creationDate" | "modificationTime" => {
                    " NOT NULL"
                }
                _ => "",
            };
            format!(
                "{} {}{constraint}",
                attr.column(),
                dialect.column_type(attr.column_type)
            )
        })
        .collect()
}

/// JEDI's task tables (`jedi_tasks`, `jedi_taskparams`, `tasks_statuslog`) and the task ID
/// sequence. Upstream takes task IDs from DEFT's `prodsys2_task_id_seq`; we have no DEFT
/// schema, so `jedi_tasks_id_seq` starts at 10^7, where pbook stops reading IDs as request IDs.
pub fn task_tables(dialect: Dialect) -> Vec<String> {
    let ty = |t| dialect.column_type(t);
    let (big, small, ts) = (
        ty(ColumnType::BigInt),
        ty(ColumnType::SmallInt),
        ty(ColumnType::Timestamp),
    );
    let vc = |n| ty(ColumnType::VarChar(n));
    let mut columns = task_columns(dialect);
    columns.extend([
        format!("amiflag_old {}", vc(10)),
        format!("amiflag {} DEFAULT 1", ty(ColumnType::Int)),
        format!("job_label {}", vc(20)),
        format!("realmodificationtime {ts}"),
    ]);
    let mut statements = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS jedi_tasks (\n  {},\n  PRIMARY KEY (jeditaskid)\n)",
            columns.join(",\n  ")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS jedi_taskparams (
  jeditaskid {big} NOT NULL PRIMARY KEY, taskparams TEXT
)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS tasks_statuslog (
  jeditaskid {big} NOT NULL, modificationtime {ts} NOT NULL, status {} NOT NULL,
  modificationhost {}, attemptnr {small}, reason {}
)",
            vc(64),
            vc(128),
            vc(255)
        ),
        "CREATE INDEX IF NOT EXISTS jedi_tasks_modiftime_idx ON jedi_tasks (modificationtime)"
            .into(),
        "CREATE INDEX IF NOT EXISTS jedi_tasks_reqid_idx ON jedi_tasks (reqid, username)".into(),
        "CREATE INDEX IF NOT EXISTS jedi_tasks_nametaskid_idx ON jedi_tasks (taskname, jeditaskid)"
            .into(),
        "CREATE INDEX IF NOT EXISTS task_statuslog_jeditaskid_idx ON tasks_statuslog (jeditaskid)"
            .into(),
    ];
    statements.extend(match dialect {
        Dialect::Postgres => vec![
            "CREATE SEQUENCE IF NOT EXISTS jedi_tasks_id_seq START WITH 10000000".to_string(),
            "CREATE SEQUENCE IF NOT EXISTS harvester_command_id_seq".to_string(),
        ],
        Dialect::Sqlite => vec![
            "INSERT OR IGNORE INTO panda_sequences (name, last_value) VALUES
  ('jedi_tasks_id_seq', 9999999), ('harvester_command_id_seq', 0)"
                .to_string(),
        ],
    });
    statements
}

/// Harvester's tables and the worker-node tables pilots fill, as upstream's.
pub fn harvester_tables(dialect: Dialect) -> Vec<String> {
    let ty = |t| dialect.column_type(t);
    let (big, int, small, ts) = (
        ty(ColumnType::BigInt),
        ty(ColumnType::Int),
        ty(ColumnType::SmallInt),
        ty(ColumnType::Timestamp),
    );
    let vc = |n| ty(ColumnType::VarChar(n));
    let (v50, v100, v128) = (vc(50), vc(100), vc(128));
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_instances (
  harvester_id {v50} NOT NULL PRIMARY KEY, description {}, starttime {ts}, owner {v100},
  hostname {v100}, lastupdate {ts}, sw_version {v50}, commit_stamp {v100}
)",
            vc(200)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_commands (
  command_id {big} NOT NULL PRIMARY KEY, command {}, harvester_id {v50}, ack_requested {small},
  creation_date {ts}, status {}, status_date {ts}, params TEXT
)",
            vc(200),
            vc(32)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_command_lock (
  harvester_id {v50} NOT NULL, computingsite {v128} NOT NULL, resourcetype {} NOT NULL,
  command {} NOT NULL, lockedtime {ts}, lockedby {},
  PRIMARY KEY (harvester_id, computingsite, resourcetype, command)
)",
            vc(56),
            vc(200),
            vc(56)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_dialogs (
  harvester_id {v50} NOT NULL, diagid {big} NOT NULL, modulename {v100}, identifier {v100},
  creationtime {ts} NOT NULL, messagelevel {}, diagmessage {}
)",
            vc(10),
            vc(500)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_metrics (
  harvester_id {v50} NOT NULL, creation_time {ts} NOT NULL, harvester_host {v100},
  metrics {}
)",
            vc(4000)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_worker_stats (
  harvester_id {v50} NOT NULL, computingsite {v128} NOT NULL, resourcetype {} NOT NULL,
  status {} NOT NULL, jobtype {} NOT NULL, n_workers {int}, lastupdate {ts} NOT NULL,
  PRIMARY KEY (harvester_id, computingsite, resourcetype, status, jobtype)
)",
            vc(56),
            vc(80),
            vc(52)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_rel_jobs_workers (
  harvesterid {v50} NOT NULL, workerid {big} NOT NULL, pandaid {big} NOT NULL,
  lastupdate {ts} NOT NULL, PRIMARY KEY (harvesterid, workerid, pandaid)
)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS worker_node (
  site {v128} NOT NULL, host_name {v128} NOT NULL, cpu_model {v128} NOT NULL,
  n_logical_cpus {int}, n_sockets {int}, cores_per_socket {int}, threads_per_core {int},
  cpu_architecture {}, cpu_architecture_level {}, clock_speed {}, total_memory {big},
  last_seen {ts}, total_local_disk {big}, cpu_model_normalized {v128},
  PRIMARY KEY (site, host_name, cpu_model)
)",
            vc(20),
            vc(20),
            ty(ColumnType::Decimal(9, 2))
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS worker_node_gpus (
  site {v128} NOT NULL, host_name {v128} NOT NULL, vendor {v128} NOT NULL,
  model {v128} NOT NULL, count {int}, vram {big}, architecture {v128}, framework {v128},
  framework_version {}, driver_version {}, last_seen {ts},
  PRIMARY KEY (site, host_name, vendor, model)
)",
            vc(20),
            vc(20)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS worker_node_queue (
  site {v128} NOT NULL, host_name {v128} NOT NULL, panda_queue {v128} NOT NULL,
  last_seen {ts}, PRIMARY KEY (site, host_name, panda_queue)
)"
        ),
        "CREATE INDEX IF NOT EXISTS harvester_workers_worker_idx \
         ON harvester_workers (harvesterid, workerid)"
            .into(),
    ]
}

/// Upstream's sequences for PandaIDs and file row IDs. SQLite has no sequences, so a small
/// table of counters stands in; the store advances it inside a write transaction.
fn sequences(dialect: Dialect) -> Vec<String> {
    match dialect {
        Dialect::Postgres => vec![
            "CREATE SEQUENCE IF NOT EXISTS jobsdefined4_pandaid_seq".into(),
            "CREATE SEQUENCE IF NOT EXISTS filestable4_row_id_seq CACHE 20".into(),
        ],
        Dialect::Sqlite => vec![
            "CREATE TABLE IF NOT EXISTS panda_sequences (
  name TEXT NOT NULL PRIMARY KEY, last_value INTEGER NOT NULL
)"
            .into(),
            "INSERT OR IGNORE INTO panda_sequences (name, last_value) VALUES
  ('jobsdefined4_pandaid_seq', 0), ('filestable4_row_id_seq', 0)"
                .into(),
        ],
    }
}

/// Upstream's archive tables (`jobsarchived`, `filestable_arch`, `jobparamstable_arch`,
/// `metatable_arch`, in the archive schema as upstream), with the live tables' columns.
fn archive_tables(layout: &Layout) -> Vec<String> {
    let dialect = layout.dialect;
    let jobs = job_table_ddl(JobTable::Archived, dialect).replacen(
        "CREATE TABLE IF NOT EXISTS jobsarchived4",
        &format!("CREATE TABLE IF NOT EXISTS {}", layout.arch("jobsarchived")),
        1,
    );
    let copy = |live: &str, archive: &str| match dialect {
        Dialect::Postgres => {
            format!("CREATE TABLE IF NOT EXISTS {archive} (LIKE {live} INCLUDING DEFAULTS)")
        }
        Dialect::Sqlite => {
            format!("CREATE TABLE IF NOT EXISTS {archive} AS SELECT * FROM {live} WHERE 0")
        }
    };
    vec![
        jobs,
        copy("filestable4", &layout.arch("filestable_arch")),
        copy("jobparamstable", &layout.arch("jobparamstable_arch")),
        copy("metatable", &layout.arch("metatable_arch")),
    ]
}

/// Statements of the second migration: the indexes the lookups and the dispatcher need.
pub fn lookup_indexes(_layout: &Layout) -> Vec<String> {
    [
        // In the claim's ORDER BY, so getJob walks the index instead of sorting the queue.
        "CREATE INDEX IF NOT EXISTS jobsactive4_dispatch_idx ON jobsactive4 (computingsite, jobstatus, currentpriority DESC, pandaid)",
        "CREATE INDEX IF NOT EXISTS jobsactive4_statechangetime_idx ON jobsactive4 (statechangetime)",
        "CREATE INDEX IF NOT EXISTS jobsdefined4_status_idx ON jobsdefined4 (jobstatus, computingsite)",
        "CREATE INDEX IF NOT EXISTS jobsarchived4_modtime_idx ON jobsarchived4 (modificationtime)",
        "CREATE INDEX IF NOT EXISTS filestable4_pandaid_idx ON filestable4 (pandaid)",
        "CREATE INDEX IF NOT EXISTS jobs_statuslog_pandaid_idx ON jobs_statuslog (pandaid)",
        "CREATE INDEX IF NOT EXISTS jobsdefined4_jeditaskid_idx ON jobsdefined4 (jeditaskid)",
        "CREATE INDEX IF NOT EXISTS jobsactive4_jeditaskid_idx ON jobsactive4 (jeditaskid)",
        "CREATE INDEX IF NOT EXISTS jobsarchived4_jeditaskid_idx ON jobsarchived4 (jeditaskid)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Our extension step 0.0.4: the monitor's `/jobs/?computingsite=..&jobstatus=..` (newest
/// first) and a queue's plot read the archive by site and state within a time window.
/// Upstream's own index on these columns puts `cloud` second, which such a query cannot use.
/// Archiving (the Adder's move) pays one more index entry per job; the pilot's calls do not.
pub fn monitor_indexes(_layout: &Layout) -> Vec<String> {
    vec![
        "CREATE INDEX IF NOT EXISTS jobsarchived4_site_state_mtime_idx \
          ON jobsarchived4 (computingsite, jobstatus, modificationtime)"
            .to_string(),
    ]
}

/// Our extension step 0.0.3: what this server needs that upstream's own layout (its scripts'
/// 0.1.6) lacks, indexes and a sequence, and upstream's `global_shares` for a database our
/// own earlier steps made. No table of upstream's changes.
pub fn upstream_layout_additions(layout: &Layout) -> Vec<String> {
    let mut statements: Vec<String> = lookup_indexes(layout)
        .into_iter()
        .filter(|s| s.contains("jobsactive4_dispatch_idx") || s.contains("jobsdefined4_status_idx"))
        .collect();
    let ty = |t| layout.dialect.column_type(t);
    let vc = |n| ty(ColumnType::VarChar(n));
    // Upstream's tree of global shares (empty: every job is in the share `root`).
    statements.push(format!(
        "CREATE TABLE IF NOT EXISTS global_shares (
  name {} NOT NULL PRIMARY KEY, value {} NOT NULL, parent {}, prodsourcelabel {},
  workinggroup {}, campaign {}, processingtype {}, vo {}, queue_id {} UNIQUE, throttled {},
  transpath {}, rtype {}
)",
        vc(32),
        ty(ColumnType::SmallInt),
        vc(32),
        vc(100),
        vc(100),
        vc(100),
        vc(100),
        vc(32),
        ty(ColumnType::Int),
        vc(1),
        vc(128),
        vc(32)
    ));
    statements.push(match layout.dialect {
        Dialect::Postgres => {
            "CREATE SEQUENCE IF NOT EXISTS jedi_tasks_id_seq START WITH 10000000".into()
        }
        Dialect::Sqlite => "INSERT OR IGNORE INTO panda_sequences (name, last_value) VALUES \
                            ('jedi_tasks_id_seq', 9999999)"
            .into(),
    });
    statements
}

/// `CREATE TABLE` columns of an attribute table, the columns in `not_null` NOT NULL.
fn attribute_columns(
    attributes: &[panda_core::Attribute],
    not_null: &[&str],
    dialect: Dialect,
) -> String {
    attributes
        .iter()
        .map(|attr| {
            let constraint = match not_null.contains(&attr.name) {
                true => " NOT NULL",
                false => "",
            };
            format!(
                "{} {}{constraint}",
                attr.column(),
                dialect.column_type(attr.column_type)
            )
        })
        .collect::<Vec<_>>()
        .join(",\n  ")
}

/// Schema 0.1.7: what the sandbox cache and task processing use, as upstream lays it out
/// (its 0.1.6 scripts already have these tables; its 0.1.7 step adds none of them):
/// `usercacheusage` (a `<vo>_pandameta` table upstream), JEDI's `jedi_datasets`,
/// `jedi_dataset_contents`, `jedi_jobparams_template` and `jedi_output_template`, with the
/// sequences of their IDs.
pub fn task_processing_tables(layout: &Layout) -> Vec<String> {
    let dialect = layout.dialect;
    use panda_core::jedi::{DATASET_ATTRIBUTES, TASK_FILE_ATTRIBUTES};
    let ty = |t| dialect.column_type(t);
    let (big, int, ts) = (
        ty(ColumnType::BigInt),
        ty(ColumnType::Int),
        ty(ColumnType::Timestamp),
    );
    let vc = |n| ty(ColumnType::VarChar(n));
    let mut statements = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
  username {} NOT NULL, filename {} NOT NULL, hostname {} NOT NULL,
  creationtime {ts} NOT NULL, modificationtime {ts}, filesize {big}, checksum {},
  aliasname {},
  PRIMARY KEY (filename, hostname, creationtime)
)",
            layout.meta("usercacheusage"),
            vc(128),
            vc(256),
            vc(64),
            vc(36),
            vc(256)
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS usercacheusage_usr_crdate_indx ON {} (username, creationtime)",
            layout.meta("usercacheusage")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS jedi_datasets (\n  {},\n  PRIMARY KEY (jeditaskid, datasetid)\n)",
            attribute_columns(
                DATASET_ATTRIBUTES,
                &["jediTaskID", "datasetID", "datasetName", "type", "creationTime", "modificationTime"],
                dialect
            )
        ),
        "CREATE INDEX IF NOT EXISTS jedi_datasets_status_idx ON jedi_datasets (jeditaskid, status)"
            .into(),
        format!(
            "CREATE TABLE IF NOT EXISTS jedi_dataset_contents (\n  {},\n  constituent_id {big},\n  PRIMARY KEY (jeditaskid, datasetid, fileid)\n)",
            attribute_columns(
                TASK_FILE_ATTRIBUTES,
                &["jediTaskID", "datasetID", "fileID", "creationDate", "lfn", "type", "status"],
                dialect
            )
        ),
        "CREATE INDEX IF NOT EXISTS jedi_contents_status_idx \
         ON jedi_dataset_contents (jeditaskid, status)"
            .into(),
        "CREATE INDEX IF NOT EXISTS jedi_dataset_contents_pid_idx ON jedi_dataset_contents (pandaid)"
            .into(),
        "CREATE TABLE IF NOT EXISTS jedi_jobparams_template (
  jeditaskid BIGINT NOT NULL PRIMARY KEY, jobparamstemplate TEXT
)"
        .into(),
        format!(
            "CREATE TABLE IF NOT EXISTS jedi_output_template (
  jeditaskid {big} NOT NULL, datasetid {big} NOT NULL, outtempid {big} NOT NULL,
  filenametemplate {} NOT NULL, maxserialnr {int}, serialnr {int}, sourcename {},
  streamname {}, outtype {},
  PRIMARY KEY (jeditaskid, datasetid, outtempid)
)",
            vc(256),
            vc(256),
            vc(20),
            vc(20)
        ),
    ];
    // Ours, not upstream's: the local catalogue of input datasets that stands in for Rucio.
    statements.push(format!(
        "CREATE TABLE IF NOT EXISTS local_dataset_files (
  dataset {} NOT NULL, scope {} NOT NULL, lfn {} NOT NULL, guid {} NOT NULL,
  fsize {big} NOT NULL, checksum {}, path {} NOT NULL, creationtime {ts} NOT NULL,
  PRIMARY KEY (dataset, lfn)
)",
        vc(255),
        vc(30),
        vc(256),
        vc(64),
        vc(36),
        vc(1024)
    ));
    statements.extend(match dialect {
        Dialect::Postgres => vec![
            "CREATE SEQUENCE IF NOT EXISTS jedi_datasets_id_seq".to_string(),
            "CREATE SEQUENCE IF NOT EXISTS jedi_dataset_cont_fileid_seq".to_string(),
            "CREATE SEQUENCE IF NOT EXISTS jedi_output_template_id_seq".to_string(),
        ],
        Dialect::Sqlite => vec![
            "INSERT OR IGNORE INTO panda_sequences (name, last_value) VALUES
  ('jedi_datasets_id_seq', 0), ('jedi_dataset_cont_fileid_seq', 0),
  ('jedi_output_template_id_seq', 0)"
                .to_string(),
        ],
    });
    statements
}

/// Our first own step: upstream's `secrets` (pbook's user secrets, one JSON document per
/// owner), `harvester_slots` (Harvester's target slots) and JEDI's `workflows` (submitted
/// workflow requests, with `workflow_id_seq`), which our upstream-numbered steps did not
/// create, and `sealed_credentials`, ours: the proxies, access tokens, token keys and
/// key files operators register, each sealed with the server's credential key
/// (`panda-service`'s `credentials`). Upstream keeps those in files on each node; here every
/// node reads them from the database.
pub fn credential_tables(layout: &Layout) -> Vec<String> {
    let dialect = layout.dialect;
    let ty = |t| dialect.column_type(t);
    let (big, ts, text) = (
        ty(ColumnType::BigInt),
        ty(ColumnType::Timestamp),
        ty(ColumnType::Text),
    );
    let vc = |n| ty(ColumnType::VarChar(n));
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS secrets (
  owner {} NOT NULL PRIMARY KEY, updated_at {ts} NOT NULL, data {text}
)",
            vc(60)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS harvester_slots (
  pandaqueuename {} NOT NULL, gshare {}, resourcetype {}, numslots {big} NOT NULL,
  modificationtime {ts} NOT NULL, expirationtime {ts}
)",
            vc(128),
            vc(32),
            vc(56)
        ),
        // Upstream's unique key over the three, which allows NULL shares and types.
        "CREATE UNIQUE INDEX IF NOT EXISTS harvester_slots_uk ON harvester_slots \
         (pandaqueuename, gshare, resourcetype)"
            .into(),
        format!(
            "CREATE TABLE IF NOT EXISTS workflows (
  workflow_id {big} NOT NULL PRIMARY KEY, name {}, parent_id {big}, loop_count {big},
  status {} NOT NULL, prodsourcelabel {}, username {}, creation_time {ts} NOT NULL,
  start_time {ts}, end_time {ts}, modification_time {ts}, check_time {ts}, locked_by {},
  lock_time {ts}, raw_request_json {text}, definition_json {text}, parameters {text}
)",
            vc(255),
            vc(64),
            vc(64),
            vc(168),
            vc(40)
        ),
        match dialect {
            Dialect::Postgres => "CREATE SEQUENCE IF NOT EXISTS workflow_id_seq".to_string(),
            Dialect::Sqlite => "INSERT OR IGNORE INTO panda_sequences (name, last_value) \
                 VALUES ('workflow_id_seq', 0)"
                .to_string(),
        },
        format!(
            "CREATE TABLE IF NOT EXISTS sealed_credentials (
  kind {} NOT NULL, name {} NOT NULL, label {} NOT NULL, sealed {text} NOT NULL,
  key_id {} NOT NULL, created {ts} NOT NULL, expires {ts},
  PRIMARY KEY (kind, name, label)
)",
            vc(16),
            vc(255),
            vc(255),
            vc(16)
        ),
    ]
}

/// Our second own step: JEDI's `jedi_events`, the event ranges of event-service jobs, with
/// upstream's columns (a `<vo>_jedi` table upstream, partitioned by task there; one table
/// here), its key `(jeditaskid, pandaid, fileid, job_processid)` and its indexes on the
/// file and on a consumer's ranges by status.
pub fn event_tables(layout: &Layout) -> Vec<String> {
    let dialect = layout.dialect;
    let ty = |t| dialect.column_type(t);
    let (big, small) = (ty(ColumnType::BigInt), ty(ColumnType::SmallInt));
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS jedi_events (
  jeditaskid {big} NOT NULL, pandaid {big} NOT NULL, fileid {big} NOT NULL,
  job_processid {big} NOT NULL, datasetid {big} NOT NULL, status {small} NOT NULL,
  def_min_eventid {big}, def_max_eventid {big}, processed_upto_eventid {big},
  attemptnr {small}, objstore_id {big}, event_offset {big},
  is_jumbo {small}, ziprow_id {big}, file_not_deleted {}, error_code {},
  path_convention {small}, error_diag {},
  PRIMARY KEY (jeditaskid, pandaid, fileid, job_processid)
)",
            ty(ColumnType::Char(1)),
            ty(ColumnType::Int),
            ty(ColumnType::VarChar(500)),
        ),
        "CREATE INDEX IF NOT EXISTS jedi_events_fileid_idx ON jedi_events (fileid)".into(),
        "CREATE INDEX IF NOT EXISTS jedi_events_pandaid_status_idx \
         ON jedi_events (pandaid, status)"
            .into(),
    ]
}
