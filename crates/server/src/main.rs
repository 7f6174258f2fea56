//! `panda-server`: the PanDA server's web tier, daemon and schema tools in one binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use panda_store::{Store, StoreError};

use panda_server::config::{self, Config, ConfigSource};
use panda_server::serve::{self, Mode};

/// `0.9.0 (commit 1a2b3c4d5e6f)`: the release and the commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PANDA_BUILD_COMMIT"),
    ")"
);

/// The PanDA server (web tier and daemon) for the PanDA workload-management system.
///
/// With no command it runs the web tier and the daemon in one process. With no configuration
/// file it runs in local mode: an embedded SQLite database under $PANDA_HOME (default
/// ./panda-data), HTTP on 127.0.0.1:25080, and credential-less requests from this machine
/// accepted as the local operator.
#[derive(Parser, Debug)]
#[command(name = "panda-server", version = VERSION, about, long_about)]
struct Cli {
    /// Configuration file in upstream's panda_server.cfg format; "none" for no file.
    /// Default: /etc/panda/panda_server.cfg if it exists.
    #[arg(long, global = true, env = "PANDA_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the web tier only (panda_httpd): HTTP on pserverporthttp.
    Httpd,
    /// Run the daemon only (panda_daemon): the periodic tasks.
    Daemon {
        /// Run this one task now and exit (add_main, copyArchive, tmpwatch, archive_retention,
        /// db_maintenance, dummy_test).
        #[arg(long, value_name = "TASK")]
        run_once: Option<String>,
    },
    /// Check or migrate the database schema.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Manage PanDA queues (sites).
    Queues {
        #[command(subcommand)]
        action: QueuesAction,
    },
    /// Ban or allow users (upstream's users table; a banned user gets 403).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Credentials for pilots and Harvester: register proxies, access tokens, token keys and
    /// key files (sealed with the credential key), list or remove them, make a key.
    Creds {
        #[command(subcommand)]
        action: CredsAction,
    },
    /// The local catalogue of input datasets (instead of Rucio): add files, list datasets.
    Datasets {
        #[command(subcommand)]
        action: DatasetsAction,
    },
    /// Look at jobs: list them by status, site or task; show one with its status log.
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
    },
    /// This node's view: database, schema, queues, jobs, the daemon's leases, the local web
    /// tier. Exits 1 unless the database answers at the right schema version.
    Status,
}

#[derive(Subcommand, Debug)]
enum DatasetsAction {
    /// Record files as (part of) a dataset; with --se, copy them onto the local storage
    /// element where pilots find them.
    Add {
        /// The dataset, e.g. user.alice.inputs
        dataset: String,
        /// The files' scope, e.g. user.alice
        #[arg(long)]
        scope: String,
        /// The storage element's root directory (the DDM endpoint's path).
        #[arg(long)]
        se: Option<PathBuf>,
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The datasets, or one dataset's files.
    List { dataset: Option<String> },
}

#[derive(Subcommand, Debug)]
enum JobsAction {
    /// Jobs of all three tables, newest first, one per line.
    List {
        /// Only jobs in this status (activated, running, finished, ...).
        #[arg(long)]
        status: Option<String>,
        /// Only jobs at this PanDA queue (computingSite).
        #[arg(long)]
        site: Option<String>,
        /// Only jobs of this JEDI task.
        #[arg(long)]
        task: Option<i64>,
        /// At most this many jobs.
        #[arg(long, default_value_t = panda_server::operator::DEFAULT_LIST_LIMIT,
              value_parser = clap::value_parser!(u64).range(1..=panda_server::operator::MAX_LIST_LIMIT))]
        limit: u64,
    },
    /// One job: its attributes, files and status log.
    Show {
        /// The PandaID.
        panda_id: i64,
    },
}

#[derive(Subcommand, Debug)]
enum UsersAction {
    /// Ban a user, by the name the server derives from the DN (e.g. "Alice Tester").
    Ban { name: String },
    /// Lift a ban.
    Unban { name: String },
    /// List the banned users.
    Banned,
    /// Give a user credential permissions, upstream's users.gridpref letters: p (proxies and
    /// access tokens), k (key pairs), t (token keys).
    Grant { name: String, letters: String },
    /// Take credential permissions away.
    Revoke { name: String, letters: String },
}

#[derive(Subcommand, Debug)]
enum CredsAction {
    /// Write a new credential key (64 hex digits, mode 0600) to FILE; never overwrites.
    NewKey { file: std::path::PathBuf },
    /// Register a credential: KIND is proxy, access_token, token_key or key; NAME is a bare DN
    /// or a name (proxy), a client name (access_token, token_key) or a key's name (key).
    Add {
        kind: String,
        name: String,
        /// The VOMS role of a proxy (e.g. atlas or atlas:/atlas/Role=production); a token
        /// key's id (default: its fingerprint).
        #[arg(long, default_value = "")]
        label: String,
        /// The value's file, - for standard input. A token key without one is made at
        /// random.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Days until it expires (default: never).
        #[arg(long)]
        days: Option<i64>,
    },
    /// The registered credentials (no values): kind, name, label, key, created, expires.
    List { kind: Option<String> },
    /// Remove a credential.
    Remove {
        kind: String,
        name: String,
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[derive(Subcommand, Debug)]
enum QueuesAction {
    /// Load (insert or replace) the queues of a CRIC-style JSON file: {"QUEUE": {...}, ...}.
    Load {
        /// The queue file.
        file: PathBuf,
    },
    /// List the queues with their status and type.
    List,
}

#[derive(Subcommand, Debug)]
enum SchemaAction {
    /// Print "DB schema check: OK" and exit 0 if the database has the schema version this
    /// server supports; otherwise name both versions and exit 1.
    Check,
    /// Bring an empty or older database to the current version (idempotent; safe on many
    /// nodes at once).
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(&ConfigSource::from_arg(cli.config.as_deref())) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("panda-server: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("panda-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, config));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("panda-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Option<Command>, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Some(Command::Schema { action }) => schema(action, &config).await,
        Some(Command::Queues { action }) => queues(action, &config).await,
        Some(Command::Users { action }) => users(action, &config).await,
        Some(Command::Jobs { action }) => jobs(action, &config).await,
        Some(Command::Datasets { action }) => datasets(action, &config).await,
        Some(Command::Creds { action }) => creds(action, config).await,
        Some(Command::Status) => {
            let (report, healthy) = panda_server::operator::node_status(&config).await;
            print!("{report}");
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Daemon {
            run_once: Some(task),
        }) => run_once(&task, &config).await,
        other => {
            let mode = match other {
                Some(Command::Httpd) => Mode::Httpd,
                Some(Command::Daemon { .. }) => Mode::Daemon,
                _ => Mode::All,
            };
            serve::run(config, mode).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_once(task: &str, config: &Config) -> anyhow::Result<ExitCode> {
    panda_server::logging::init(config, "daemon")?;
    let store = Store::open(&config.db, config.store_options()).await?;
    store.check_schema().await?;
    let node = serve::node_name(config);
    let result = panda_daemon::run_task_once(
        store.clone(),
        node,
        config.service_settings(),
        task,
        config.daemon_tasks.get(task),
    )
    .await;
    store.close().await;
    match result {
        Ok(run) => {
            println!(
                "{task}: {} in {:.3}s",
                run.outcome,
                run.duration.as_secs_f64()
            );
            Ok(if run.outcome == "ok" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(e) => {
            eprintln!("panda-server: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn queues(action: QueuesAction, config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.db, config.store_options()).await?;
    store.check_schema().await?;
    match action {
        QueuesAction::Load { file } => {
            let names = panda_server::queues::load(&store, &file).await?;
            println!("loaded {} queue(s): {}", names.len(), names.join(", "));
        }
        QueuesAction::List => {
            for (name, json) in store.all_queues().await? {
                let data = serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
                let queue = panda_core::QueueSpec::from_json(&name, data);
                println!("{name}\t{}\t{}", queue.status, queue.queue_type);
            }
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn datasets(action: DatasetsAction, config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.db, config.store_options()).await?;
    store.check_schema().await?;
    let text = match action {
        DatasetsAction::Add {
            dataset,
            scope,
            se,
            files,
        } => panda_server::datasets::add(&store, &dataset, &scope, se.as_deref(), &files).await,
        DatasetsAction::List { dataset } => {
            panda_server::datasets::list(&store, dataset.as_deref()).await
        }
    };
    store.close().await;
    Ok(printed(text))
}

/// An operator command's outcome: its text on standard output, or its error on standard
/// error and exit code 1.
fn printed<E: std::fmt::Display>(outcome: Result<String, E>) -> ExitCode {
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("panda-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn jobs(action: JobsAction, config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.db, config.store_options()).await?;
    store.check_schema().await?;
    let code = match action {
        JobsAction::List {
            status,
            site,
            task,
            limit,
        } => {
            let filter = panda_store::JobFilter {
                status,
                site,
                task_id: task,
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            };
            print!(
                "{}",
                panda_server::operator::jobs_list(&store, &filter).await?
            );
            ExitCode::SUCCESS
        }
        JobsAction::Show { panda_id } => {
            match panda_server::operator::jobs_show(&store, panda_id).await? {
                Some(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("panda-server: no job {panda_id} in any job table");
                    ExitCode::FAILURE
                }
            }
        }
    };
    store.close().await;
    Ok(code)
}

/// Which of the two permission commands runs.
enum GrantOrRevoke {
    Grant,
    Revoke,
}

async fn users(action: UsersAction, config: &Config) -> anyhow::Result<ExitCode> {
    let action_kind = match action {
        UsersAction::Revoke { .. } => GrantOrRevoke::Revoke,
        _ => GrantOrRevoke::Grant,
    };
    let store = Store::open(&config.db, config.store_options()).await?;
    store.check_schema().await?;
    match action {
        UsersAction::Ban { name } => {
            store.set_user_status(&name, Some("disabled")).await?;
            println!("banned: {name} (effective within a minute)");
        }
        UsersAction::Unban { name } => {
            if !store.banned_users().await?.contains(&name) {
                eprintln!("panda-server: {name} is not banned (`users banned` lists who is)");
                store.close().await;
                return Ok(ExitCode::FAILURE);
            }
            store.set_user_status(&name, None).await?;
            println!("allowed: {name} (effective within a minute)");
        }
        UsersAction::Banned => {
            for name in store.banned_users().await? {
                println!("{name}");
            }
        }
        UsersAction::Grant { name, letters } | UsersAction::Revoke { name, letters } => {
            let grant = matches!(action_kind, GrantOrRevoke::Grant);
            if let Some(bad) = letters.chars().find(|c| !"pkt".contains(*c)) {
                eprintln!("panda-server: unknown permission {bad:?}: use p, k or t");
                store.close().await;
                return Ok(ExitCode::from(2));
            }
            // Upstream's other letters (super user, async requests, ...) are kept as they are.
            let current = store.user_gridpref(&name).await?.unwrap_or_default();
            let mut kept: String = current
                .chars()
                .filter(|c| grant || !letters.contains(*c))
                .collect();
            if grant {
                for letter in letters.chars() {
                    if !kept.contains(letter) {
                        kept.push(letter);
                    }
                }
            }
            store
                .set_user_permissions(&name, (!kept.is_empty()).then_some(kept.as_str()))
                .await?;
            println!(
                "{name}: gridpref {}",
                if kept.is_empty() { "(none)" } else { &kept }
            );
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn creds(action: CredsAction, mut config: Config) -> anyhow::Result<ExitCode> {
    use panda_service::credentials::CredentialKind;
    if let CredsAction::NewKey { file } = &action {
        return Ok(match panda_server::config::write_new_key(file) {
            Ok(()) => {
                println!("wrote a new credential key to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("panda-server: {e}");
                ExitCode::FAILURE
            }
        });
    }
    let kind_of = |text: &str| {
        CredentialKind::parse(text).ok_or_else(|| {
            anyhow::anyhow!("unknown kind {text:?}: use proxy, access_token, token_key or key")
        })
    };
    let store = Store::open(&config.db, config.store_options()).await?;
    store.check_schema().await?;
    let outcome = match action {
        CredsAction::NewKey { .. } => Ok(String::new()),
        CredsAction::Add {
            kind,
            name,
            label,
            file,
            days,
        } => {
            let kind = kind_of(&kind)?;
            config.load_credential_key().map_err(anyhow::Error::msg)?;
            match config.credential_key.clone() {
                None => Err(
                    "no credential_key_file is configured (`creds new-key FILE` makes one)"
                        .to_string(),
                ),
                Some(key) => {
                    let registration = panda_server::creds::Registration {
                        kind,
                        name: &name,
                        label: &label,
                        file: file.as_deref(),
                        valid_days: days,
                    };
                    panda_server::creds::add(&store, &key, registration).await
                }
            }
        }
        CredsAction::List { kind } => {
            let kind = kind.as_deref().map(kind_of).transpose()?;
            panda_server::creds::list(&store, kind).await
        }
        CredsAction::Remove { kind, name, label } => {
            let kind = kind_of(&kind)?;
            let name = match kind {
                CredentialKind::Proxy => panda_service::credentials::bare_dn(&name),
                _ => name,
            };
            match store
                .remove_sealed_credential(kind.as_str(), &name, &label)
                .await?
            {
                true => Ok(format!("removed {} {name}\n", kind.as_str())),
                false => Err(format!(
                    "no {} {name} [{label}] is registered",
                    kind.as_str()
                )),
            }
        }
    };
    store.close().await;
    Ok(printed(outcome))
}

async fn schema(action: SchemaAction, config: &Config) -> anyhow::Result<ExitCode> {
    if let (SchemaAction::Check, Some(why)) = (&action, config.missing_sqlite_database()) {
        println!("DB schema check: FAILED: {why}");
        return Ok(ExitCode::FAILURE);
    }
    let store = Store::open(&config.db, config.store_options()).await?;
    let code = match action {
        SchemaAction::Check => match store.check_schema().await {
            Ok(_) => {
                println!("DB schema check: OK");
                ExitCode::SUCCESS
            }
            Err(
                e @ (StoreError::SchemaMissing
                | StoreError::SchemaTooOld { .. }
                | StoreError::SchemaTooNew { .. }
                | StoreError::ExtensionsMissing { .. }
                | StoreError::ExtensionsTooNew { .. }),
            ) => {
                println!("DB schema check: FAILED: {e}");
                // What `schema migrate` would add, so that an operator of a database made by
                // upstream's scripts sees it before changing anything.
                if !matches!(
                    e,
                    StoreError::SchemaTooNew { .. } | StoreError::ExtensionsTooNew { .. }
                ) {
                    let missing = store.missing_objects().await?;
                    if !missing.is_empty() {
                        println!("missing ({}): {}", missing.len(), missing.join(", "));
                    }
                }
                ExitCode::FAILURE
            }
            Err(e) => return Err(e.into()),
        },
        SchemaAction::Migrate => {
            let report = store.migrate().await?;
            let from = report
                .from
                .map_or_else(|| "empty".to_string(), |v| v.to_string());
            if report.applied.is_empty() && report.extensions_applied.is_empty() {
                println!("DB schema migrate: already at {}", report.to);
            } else if report.applied.is_empty() {
                println!(
                    "DB schema migrate: {} with this server's own tables at {}",
                    report.to,
                    panda_store::EXTENSION_VERSION
                );
            } else {
                println!("DB schema migrate: {from} -> {}", report.to);
            }
            ExitCode::SUCCESS
        }
    };
    store.close().await;
    Ok(code)
}
