//! Configuration: upstream's `panda_server.cfg`, environment overrides, and embedded defaults.
//!
//! Precedence, lowest first: built-in defaults, the file, the environment. Keys we share with
//! upstream keep upstream's names and meaning; `PANDA_<KEY>` (upper-cased) overrides a
//! `[server]` key and `PANDA_DAEMON_<KEY>` a `[daemon]` key. Upstream keys we do not use are
//! accepted silently; anything else is warned about. A malformed file or a bad value stops the
//! program with a message naming the file, the line and the key (or the variable).
//!
//! Without any file the server runs in local mode: SQLite under `$PANDA_HOME`, listening on
//! loopback, trusting credential-less loopback callers as the local operator.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use panda_store::{Backend, DbConfig, StoreOptions};

use crate::ini;

/// Where the file is looked for when neither `--config` nor `PANDA_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/panda/panda_server.cfg";

/// Keys this server reads, by section.
const SERVER_KEYS: &[&str] = &[
    "backend",
    "dbhost",
    "dbport",
    "dbuser",
    "dbpasswd",
    "dbpasswd_file",
    "dbname",
    "schemaPANDA",
    "schemaMETA",
    "schemaPANDAARCH",
    "db_pool_size",
    "pserverporthttp",
    "pserverport",
    "pserverhost",
    "bind_address",
    "logdir",
    "cache_dir",
    "production_dns",
    "nJobsInGetJob",
    "trust_loopback",
    "record_statuschange",
    "group_commit",
    "trf_dir",
    "wn_script_base_url",
    "queue_config_file",
    "max_body_size",
    "max_workers",
    "anonymous_max_body_size",
    "header_read_timeout",
    "body_read_timeout",
    "body_min_rate",
    "keepalive_timeout",
    "max_connections",
    "max_connections_per_peer",
    "trusted_proxies",
    "metrics_address",
    "monitor_address",
    "monitor_open",
    "shutdown_timeout",
    "drain_delay",
    "token_authType",
    "auth_config",
    "hostcert",
    "hostkey",
    "cacert_dir",
    "vomsdir",
    "pilot_owners",
    "pilot_secrets",
    "credential_key_file",
];
const DAEMON_KEYS: &[&str] = &["config", "enable", "metrics_address"];

/// Upstream keys that mean nothing to this server (yet); accepted without a warning.
const UPSTREAM_ONLY_KEYS: &[&str] = &[
    "loggername",
    "native_python",
    "native_python32",
    "pandaCommon_dir",
    "pandaPython_dir",
    "home_dir_cwd",
    "nDBConnection",
    "usedbtimeout",
    "dbtimeout",
    "dbbridgeverbose",
    "dump_sql",
    "cursor_dump",
    "schemaJEDI",
    "schemaDEFT",
    "schemaGRISLI",
    "schemaEI",
    "pserverportcache",
    "pserveralias",
    "pserverhosthttp",
    "keyDir",
    "emailSMTPsrv",
    "emailSender",
    "emailLogin",
    "emailPass",
    "entryVerbose",
    "nrun_interval",
    "nrun_hosts",
    "nrun_snum",
    "useJEDI",
    "adder_plugins",
    "setupper_plugins",
    "closer_plugins",
    "pandaProxy_URLSSL",
    "pandaProxy_ca_certs",
    "ei_dbhost",
    "ei_dbuser",
    "ei_dbpasswd",
    "ei_dbname",
    "ei_dbtimeout",
    "token_issuers",
    "token_audience",
    "legacy_token_issuers",
    "mq_configFile",
    "disableHTTP",
    "certdir",
    "endpoint_mapfile",
    "pilot_secrets",
    "pilot_owners",
    "pandaEmailNotification",
    "uname",
    "gname",
    "package",
    "n_proc",
    "n_dbconn",
    "proc_lifetime",
];

/// Where a value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File { path: PathBuf, line: usize },
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed configuration file {path} {source}")]
    Malformed {
        path: PathBuf,
        source: ini::IniError,
    },
    #[error("{origin}: key {key}: {message}")]
    BadValue {
        origin: Origin,
        key: String,
        message: String,
    },
}

#[derive(Clone, Debug)]
struct RawValue {
    text: String,
    origin: Origin,
}

/// The server's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file read, if any.
    pub source: Option<PathBuf>,
    pub home: PathBuf,
    pub db: DbConfig,
    pub http_port: u16,
    pub https_port: u16,
    pub bind_address: IpAddr,
    pub host_name: String,
    pub logdir: Option<PathBuf>,
    pub cache_dir: PathBuf,
    /// Served under `/trf/`: transformation scripts the pilot downloads.
    pub trf_dir: PathBuf,
    /// The base URL workers fetch `/trf/user/...` from (upstream's `wn_script_base_url`);
    /// by default this node's HTTP address.
    pub wn_script_base_url: Option<String>,
    /// A CRIC-style queue file loaded into `schedconfig_json` at start.
    pub queue_config_file: Option<PathBuf>,
    /// Largest request body in bytes.
    pub max_body_size: usize,
    /// Requests handled at once ("workers" of the status line).
    pub max_workers: usize,
    /// Largest request body from a caller without verified credentials.
    pub anonymous_max_body_size: usize,
    /// Time for a request head to arrive (and for a new connection's first byte).
    pub header_read_timeout: Duration,
    /// Time for a request body to arrive, extended by a second for every `body_min_rate`
    /// bytes received (Apache's `RequestReadTimeout body=20,MinRate=500`).
    pub body_read_timeout: Duration,
    pub body_min_rate: u64,
    /// How long a connection may idle between requests.
    pub keepalive_timeout: Duration,
    /// Connections held at once, in total and by one client address.
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// Load balancers that must open each connection with a PROXY protocol header.
    pub trusted_proxies: Vec<crate::connections::IpRange>,
    /// Where `/metrics` listens; `None` when disabled (`metrics_address = off`). The web
    /// tier's (and the all-in-one server's).
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Where `panda-server daemon` serves its `/metrics` (`[daemon] metrics_address`): an
    /// address of its own, so that the web tier and the daemon on one node do not both bind
    /// the web tier's.
    pub daemon_metrics_address: Option<std::net::SocketAddr>,
    /// Where the monitor is served (`monitor_address`): on the web tier's own ports (`web`,
    /// the default), on an address of its own, or nowhere (`off`).
    pub monitor_address: MonitorAddress,
    /// Whether callers without a verified identity may see the monitor (`monitor_open`,
    /// default False).
    pub monitor_open: bool,
    /// Seconds to let in-flight requests finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long the web tier fails its health check (`/health/ready`) while
    /// still serving, before it stops accepting: the balancer's checks need that long to
    /// take the node out. 0 (the default) stops accepting at once.
    pub drain_delay: Duration,
    pub production_dns: Vec<String>,
    pub n_jobs_in_get_job: u32,
    pub trust_loopback: bool,
    /// HTTPS: the host certificate (with its chain) and key; HTTPS is off when they are
    /// missing.
    pub host_cert: PathBuf,
    pub host_key: PathBuf,
    /// Trusted CAs and their CRLs, in OpenSSL's hashed layout.
    pub cacert_dir: PathBuf,
    /// Trusted VOMS servers: `<vo>/<host>.lsc`.
    pub voms_dir: PathBuf,
    /// DNs the legacy dispatcher accepts as pilots.
    pub pilot_owners: Vec<String>,
    /// Directory of `<vo>_auth_config.json` files; `None` when `token_authType` is not `oidc`.
    pub auth_config: Option<PathBuf>,
    /// The file of the key that seals credentials at rest (`credential_key_file`; in local
    /// mode `$PANDA_HOME/credential.key`, made at the first start).
    pub credential_key_file: Option<PathBuf>,
    /// That key, once read (see [`Config::load_credential_key`]).
    pub credential_key: Option<std::sync::Arc<panda_service::credentials::CredentialKey>>,
    /// `pilot_secrets`: whose secrets go to pilots with debug-mode jobs (upstream's default
    /// `pilot secrets`).
    pub pilot_secrets: String,
    pub record_status_change: bool,
    /// `group_commit`: concurrent event-range takes and reports applied together on
    /// PostgreSQL (on unless set to False).
    pub group_commit: bool,
    pub daemon_enable: bool,
    pub daemon_tasks: BTreeMap<String, panda_daemon::TaskConfig>,
    /// Keys found that nobody knows, as `origin: [section] key`, for warnings at start.
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// What the job logic needs of the configuration (web tier and daemon alike).
    pub fn service_settings(&self) -> panda_service::ServiceSettings {
        panda_service::ServiceSettings {
            max_jobs_per_get_job: self.n_jobs_in_get_job as usize,
            host_name: self.host_name.clone(),
            cache_dir: self.cache_dir.clone(),
            trf_base_url: self
                .wn_script_base_url
                .clone()
                .unwrap_or_else(|| format!("http://{}:{}", self.host_name, self.http_port)),
            credential_key: self.credential_key.clone(),
            pilot_secrets_owner: self.pilot_secrets.clone(),
        }
    }

    /// Reads the credential key, in local mode making it first when it is missing. A
    /// configured key that cannot be read is an error: the server would otherwise run and
    /// refuse every credential request.
    pub fn load_credential_key(&mut self) -> Result<(), String> {
        use panda_service::credentials::CredentialKey;
        let Some(path) = self.credential_key_file.clone() else {
            return Ok(());
        };
        if self.source.is_none() && !path.exists() {
            // Two local servers starting at once: the one that loses reads the other's.
            if let Err(e) = write_new_key(&path) {
                if !path.exists() {
                    return Err(e);
                }
            }
        }
        let key = CredentialKey::from_file(&path)?;
        self.credential_key = Some(std::sync::Arc::new(key));
        Ok(())
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            record_status_change: self.record_status_change,
            host_name: self.host_name.clone(),
            group_commit: self.group_commit,
        }
    }

    /// Why the SQLite database cannot be used, when that is the backend and its file does
    /// not exist: commands other than `schema migrate` and the all-in-one server refuse to
    /// create it (an empty file would only fail the schema check, and hide a mistyped path).
    pub fn missing_sqlite_database(&self) -> Option<String> {
        let path = PathBuf::from(&self.db.name);
        (self.db.backend == panda_store::Backend::Sqlite && !path.exists()).then(|| {
            format!(
                "the SQLite database {} does not exist (`panda-server schema migrate` creates it)",
                path.display()
            )
        })
    }

    /// How connections are bounded (`connections`).
    pub fn connection_policy(&self) -> crate::connections::ConnectionPolicy {
        crate::connections::ConnectionPolicy {
            header_read_timeout: self.header_read_timeout,
            keepalive_timeout: self.keepalive_timeout,
            max_connections_per_peer: self.max_connections_per_peer,
            max_connections: self.max_connections,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    /// What one request may carry and how long it may take to send it.
    pub fn request_limits(&self) -> panda_api::Limits {
        panda_api::Limits {
            max_body_bytes: self.max_body_size,
            anonymous_max_body_bytes: self.anonymous_max_body_size.min(self.max_body_size),
            body_read_timeout: self.body_read_timeout,
            body_min_rate: self.body_min_rate,
            ..panda_api::Limits::default()
        }
    }
}

/// What to load: an explicit file, the default path if it exists, or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    DefaultLocation,
    None,
}

impl ConfigSource {
    /// From `--config` / `PANDA_CONFIG`: a path, or `none` for no file at all.
    pub fn from_arg(arg: Option<&Path>) -> ConfigSource {
        match arg {
            Some(p) if p.as_os_str() == "none" || p.as_os_str().is_empty() => ConfigSource::None,
            Some(p) => ConfigSource::File(p.to_path_buf()),
            None => ConfigSource::DefaultLocation,
        }
    }
}

/// Loads the configuration with the process environment.
pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    load_with_env(source, &env)
}

/// Loads the configuration with the given environment (tests pass their own).
pub fn load_with_env(
    source: &ConfigSource,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let path = match source {
        ConfigSource::File(p) => Some(p.clone()),
        ConfigSource::DefaultLocation => {
            Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists())
        }
        ConfigSource::None => None,
    };
    let mut values: BTreeMap<(String, String), RawValue> = BTreeMap::new();
    let mut unknown_keys = Vec::new();
    if let Some(path) = &path {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let entries = ini::parse(&text).map_err(|source| ConfigError::Malformed {
            path: path.clone(),
            source,
        })?;
        for entry in entries {
            let origin = Origin::File {
                path: path.clone(),
                line: entry.line,
            };
            match canonical_key(&entry.section, &entry.key) {
                Some(key) => {
                    let text = substitute_env(&entry.value, env).map_err(|message| {
                        ConfigError::BadValue {
                            origin: origin.clone(),
                            key: entry.key.clone(),
                            message,
                        }
                    })?;
                    values.insert(
                        (entry.section.clone(), key.to_string()),
                        RawValue { text, origin },
                    );
                }
                None if is_upstream_only(&entry.key) => {}
                None => unknown_keys.push(format!("{origin}: [{}] {}", entry.section, entry.key)),
            }
        }
    }
    apply_env(&mut values, env);
    build(path, values, env, unknown_keys)
}

fn canonical_key(section: &str, key: &str) -> Option<&'static str> {
    let known = match section {
        "server" => SERVER_KEYS,
        "daemon" => DAEMON_KEYS,
        _ => return None,
    };
    known.iter().copied().find(|k| k.eq_ignore_ascii_case(key))
}

fn is_upstream_only(key: &str) -> bool {
    UPSTREAM_ONLY_KEYS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(key))
}

/// The environment variable that overrides a key.
pub fn env_var_name(section: &str, key: &str) -> String {
    match section {
        "daemon" => format!("PANDA_DAEMON_{}", key.to_ascii_uppercase()),
        _ => format!("PANDA_{}", key.to_ascii_uppercase()),
    }
}

fn apply_env(values: &mut BTreeMap<(String, String), RawValue>, env: &BTreeMap<String, String>) {
    let keys = SERVER_KEYS
        .iter()
        .map(|k| ("server", *k))
        .chain(DAEMON_KEYS.iter().map(|k| ("daemon", *k)));
    for (section, key) in keys {
        let var = env_var_name(section, key);
        if let Some(text) = env.get(&var) {
            values.insert(
                (section.to_string(), key.to_string()),
                RawValue {
                    text: text.clone(),
                    origin: Origin::Env(var),
                },
            );
        }
    }
}

/// Upstream's rule: a value that is exactly `$VAR` or `${VAR}` is taken from the environment.
fn substitute_env(value: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let name = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'));
    match name {
        Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => env
            .get(n)
            .cloned()
            .ok_or_else(|| format!("refers to ${n}, which is not set in the environment")),
        _ => Ok(value.to_string()),
    }
}

/// Typed access to the raw values, with errors that name where a value came from.
struct Values<'a> {
    values: &'a BTreeMap<(String, String), RawValue>,
}

impl Values<'_> {
    fn raw(&self, section: &str, key: &str) -> Option<&RawValue> {
        self.values.get(&(section.to_string(), key.to_string()))
    }

    fn text(&self, key: &str) -> Option<String> {
        self.raw("server", key).map(|v| v.text.trim().to_string())
    }

    fn parse<T>(
        &self,
        section: &str,
        key: &str,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.raw(section, key) {
            None => Ok(None),
            Some(raw) => parse(raw.text.trim())
                .map(Some)
                .ok_or_else(|| ConfigError::BadValue {
                    origin: raw.origin.clone(),
                    key: key.to_string(),
                    message: format!("{:?} is not {what}", raw.text.trim()),
                }),
        }
    }

    fn server<T>(
        &self,
        key: &str,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        self.parse("server", key, what, parse)
    }
}

/// Where the monitor is served.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MonitorAddress {
    /// Beside the APIs, on the web tier's HTTP and HTTPS ports.
    WebPorts,
    /// On a plain-HTTP listener of its own.
    Own(std::net::SocketAddr),
    Off,
}

/// A section's `metrics_address`: an address, `off`, or 127.0.0.1:`default_port`.
fn metrics_address(
    v: &Values,
    section: &str,
    default_port: u16,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    Ok(v.parse(
        section,
        "metrics_address",
        "an address such as 127.0.0.1:25090, or off",
        |t| match t {
            "off" | "none" | "" => Some(None),
            addr => addr.parse::<std::net::SocketAddr>().ok().map(Some),
        },
    )?
    .unwrap_or(Some(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        default_port,
    )))))
}

/// A `[server]` key that is a positive whole number (a count or a size), or its default.
fn positive(v: &Values, key: &str, what: &str, default: usize) -> Result<usize, ConfigError> {
    Ok(
        v.server(key, what, |t| t.parse::<usize>().ok().filter(|n| *n > 0))?
            .unwrap_or(default),
    )
}

/// A `[server]` key in whole seconds (fractions allowed), or its default.
fn seconds(v: &Values, key: &str, default: u64) -> Result<Duration, ConfigError> {
    Ok(v.server(key, "a number of seconds", |t| {
        t.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
    })?
    .unwrap_or(Duration::from_secs(default)))
}

/// Python-style booleans as upstream's files write them, plus the usual spellings.
fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn build(
    path: Option<PathBuf>,
    values: BTreeMap<(String, String), RawValue>,
    env: &BTreeMap<String, String>,
    unknown_keys: Vec<String>,
) -> Result<Config, ConfigError> {
    let v = Values { values: &values };
    let has_file = path.is_some();
    let home = PathBuf::from(env.get("PANDA_HOME").map_or("./panda-data", String::as_str));
    let backend = v
        .server("backend", "a backend (sqlite or postgres)", Backend::parse)?
        .unwrap_or(Backend::Sqlite);
    let port = |key: &str, default: u16| {
        v.server(key, "a port number", |t| t.parse::<u16>().ok())
            .map(|p| p.unwrap_or(default))
    };
    let password = match v.text("dbpasswd_file") {
        // An empty file means no password (PostgreSQL's trust or peer authentication): the
        // installed file is empty until the operator writes one.
        Some(file) => Some(read_secret(&file, v.raw("server", "dbpasswd_file"))?)
            .filter(|secret| !secret.is_empty()),
        None => v.text("dbpasswd"),
    };
    let dbname = match backend {
        Backend::Sqlite => v
            .text("dbname")
            .unwrap_or_else(|| home.join("panda.db").to_string_lossy().into_owned()),
        Backend::Postgres => v.text("dbname").unwrap_or_else(|| "panda_db".into()),
    };
    let db = DbConfig {
        backend,
        host: v.text("dbhost").unwrap_or_else(|| "localhost".into()),
        port: port("dbport", 5432)?,
        user: v.text("dbuser").unwrap_or_else(|| "panda".into()),
        password,
        name: dbname,
        schema: v
            .text("schemaPANDA")
            .unwrap_or_else(|| "doma_panda".into())
            .to_ascii_lowercase(),
        meta_schema: v
            .text("schemaMETA")
            .unwrap_or_else(|| "doma_pandameta".into())
            .to_ascii_lowercase(),
        arch_schema: v
            .text("schemaPANDAARCH")
            .unwrap_or_else(|| "doma_pandaarch".into())
            .to_ascii_lowercase(),
        pool_size: v
            .server("db_pool_size", "a positive number", |t| {
                t.parse::<u32>().ok().filter(|n| *n > 0)
            })?
            .unwrap_or(10),
        connect_timeout: Duration::from_secs(10),
        application_name: "panda-server".into(),
    };
    if let Err(e) = db.validate() {
        let message = e.to_string();
        let key = if db.name.is_empty() {
            "dbname"
        } else if message.contains("schemaMETA") {
            "schemaMETA"
        } else if message.contains("schemaPANDAARCH") {
            "schemaPANDAARCH"
        } else {
            "schemaPANDA"
        };
        return Err(ConfigError::BadValue {
            origin: v
                .raw("server", key)
                .map(|r| r.origin.clone())
                .unwrap_or(Origin::Env(env_var_name("server", key))),
            key: key.into(),
            message,
        });
    }
    let daemon_json = v.parse("daemon", "config", "a JSON object", |t| {
        serde_json::from_str::<serde_json::Value>(t).ok()
    })?;
    let daemon_tasks = match daemon_json {
        None => BTreeMap::new(),
        Some(json) => panda_daemon::parse_config(&json).map_err(|e| ConfigError::BadValue {
            origin: v
                .raw("daemon", "config")
                .map(|r| r.origin.clone())
                .unwrap_or(Origin::Env("PANDA_DAEMON_CONFIG".into())),
            key: "config".into(),
            message: e.to_string(),
        })?,
    };
    let default_bind: IpAddr = if has_file {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([127, 0, 0, 1])
    };
    Ok(Config {
        http_port: port("pserverporthttp", 25080)?,
        https_port: port("pserverport", 25443)?,
        bind_address: v
            .server("bind_address", "an IP address", |t| {
                t.parse::<IpAddr>().ok()
            })?
            .unwrap_or(default_bind),
        host_name: v.text("pserverhost").unwrap_or_else(local_host_name),
        logdir: v
            .text("logdir")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        cache_dir: v
            .text("cache_dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("cache")),
        trf_dir: v
            .text("trf_dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("trf")),
        wn_script_base_url: v
            .text("wn_script_base_url")
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty()),
        queue_config_file: v
            .text("queue_config_file")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from),
        max_body_size: positive(&v, "max_body_size", "a size in bytes", 128 * 1024 * 1024)?,
        max_workers: positive(&v, "max_workers", "a positive number", 512)?,
        anonymous_max_body_size: positive(
            &v,
            "anonymous_max_body_size",
            "a size in bytes",
            1024 * 1024,
        )?,
        header_read_timeout: seconds(&v, "header_read_timeout", 20)?,
        body_read_timeout: seconds(&v, "body_read_timeout", 20)?,
        body_min_rate: v
            .server("body_min_rate", "a number of bytes per second", |t| {
                t.parse::<u64>().ok()
            })?
            .unwrap_or(500),
        keepalive_timeout: seconds(&v, "keepalive_timeout", 5)?,
        max_connections: positive(&v, "max_connections", "a positive number", 10_000)?,
        max_connections_per_peer: positive(
            &v,
            "max_connections_per_peer",
            "a positive number",
            256,
        )?,
        trusted_proxies: v
            .server(
                "trusted_proxies",
                "a list of addresses or ranges such as 10.0.0.0/8",
                |t| {
                    split_list(t)
                        .iter()
                        .map(|r| crate::connections::IpRange::parse(r))
                        .collect::<Option<Vec<_>>>()
                },
            )?
            .unwrap_or_default(),
        metrics_address: metrics_address(&v, "server", 25090)?,
        daemon_metrics_address: metrics_address(&v, "daemon", 25091)?,
        monitor_address: v
            .server(
                "monitor_address",
                "web, off, or an address such as 127.0.0.1:25180",
                |t| match t {
                    "web" | "" => Some(MonitorAddress::WebPorts),
                    "off" | "none" => Some(MonitorAddress::Off),
                    addr => addr
                        .parse::<std::net::SocketAddr>()
                        .ok()
                        .map(MonitorAddress::Own),
                },
            )?
            .unwrap_or(MonitorAddress::WebPorts),
        monitor_open: v
            .server("monitor_open", "a boolean (True or False)", parse_bool)?
            .unwrap_or(false),
        shutdown_timeout: Duration::from_secs(
            v.server("shutdown_timeout", "a number of seconds", |t| {
                t.parse::<u64>().ok()
            })?
            .unwrap_or(30),
        ),
        drain_delay: Duration::from_secs(
            v.server("drain_delay", "a number of seconds up to 60", |t| {
                t.parse::<u64>().ok().filter(|s| *s <= 60)
            })?
            .unwrap_or(0),
        ),
        production_dns: v
            .text("production_dns")
            .map(|t| split_list(&t))
            .unwrap_or_default(),
        n_jobs_in_get_job: v
            .server("nJobsInGetJob", "a positive number", |t| {
                t.parse::<u32>().ok().filter(|n| *n > 0)
            })?
            .unwrap_or(10),
        trust_loopback: v
            .server("trust_loopback", "a boolean (True or False)", parse_bool)?
            .unwrap_or(!has_file),
        host_cert: path_or(&v, "hostcert", "/etc/grid-security/hostcert.pem"),
        host_key: path_or(&v, "hostkey", "/etc/grid-security/hostkey.pem"),
        cacert_dir: path_or(&v, "cacert_dir", "/etc/grid-security/certificates"),
        voms_dir: path_or(&v, "vomsdir", "/etc/grid-security/vomsdir"),
        pilot_owners: v
            .text("pilot_owners")
            .map(|t| split_list(&t))
            .unwrap_or_default(),
        auth_config: match v.text("token_authType").as_deref() {
            Some("oidc") | None => Some(
                v.text("auth_config")
                    .filter(|t| !t.is_empty() && t != "None")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/opt/panda/etc/panda/auth")),
            ),
            Some(_) => None,
        },
        credential_key_file: v
            .text("credential_key_file")
            .filter(|t| !t.is_empty())
            .map(PathBuf::from)
            .or_else(|| (!has_file).then(|| home.join("credential.key"))),
        credential_key: None,
        pilot_secrets: v
            .text("pilot_secrets")
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panda_service::PILOT_SECRETS_OWNER.into()),
        record_status_change: v
            .server(
                "record_statuschange",
                "a boolean (True or False)",
                parse_bool,
            )?
            .unwrap_or(true),
        group_commit: v
            .server("group_commit", "a boolean (True or False)", parse_bool)?
            .unwrap_or(true),
        daemon_enable: v
            .parse("daemon", "enable", "a boolean (True or False)", parse_bool)?
            .unwrap_or(true),
        daemon_tasks,
        db,
        home,
        source: path,
        unknown_keys,
    })
}

/// A path from a key, or its default.
fn path_or(values: &Values<'_>, key: &str, default: &str) -> PathBuf {
    values
        .text(key)
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Reads a secret from a file; surrounding whitespace (the trailing newline) is dropped.
fn read_secret(file: &str, raw: Option<&RawValue>) -> Result<String, ConfigError> {
    std::fs::read_to_string(file)
        .map(|s| s.trim().to_string())
        .map_err(|e| ConfigError::BadValue {
            origin: raw
                .map(|r| r.origin.clone())
                .unwrap_or(Origin::Env("PANDA_DBPASSWD_FILE".into())),
            key: "dbpasswd_file".into(),
            message: format!("cannot read {file}: {e}"),
        })
}

/// Writes a new credential key to `path`, readable by its owner only; never overwrites. The
/// key is written whole to a file of its own and then linked into place, so a reader never
/// sees half a key.
pub fn write_new_key(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = panda_service::credentials::CredentialKey::generate()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let fail =
        |e: std::io::Error| format!("cannot create the credential key {}: {e}", path.display());
    let staged = path.with_extension(format!("new.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .map_err(fail)?;
    let written = writeln!(file, "{}", key.to_hex())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::hard_link(&staged, path));
    let _ = std::fs::remove_file(&staged);
    written.map_err(fail)
}

/// Lists in upstream's files are comma-separated; a Python list literal is accepted too.
fn split_list(text: &str) -> Vec<String> {
    text.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The kernel's host name, from uname(2): under the units' sandbox (`ProcSubset=pid`)
/// /proc/sys is hidden, so reading /proc/sys/kernel/hostname would give "localhost".
fn local_host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    match name.trim() {
        "" | "(none)" => "localhost".into(),
        name => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitution_takes_whole_dollar_values_from_the_environment() {
        let e = env(&[("DBPW", "s3cret")]);
        assert_eq!(substitute_env("$DBPW", &e), Ok("s3cret".into()));
        assert_eq!(substitute_env("${DBPW}", &e), Ok("s3cret".into()));
        assert_eq!(substitute_env("a$DBPW", &e), Ok("a$DBPW".into()));
        assert!(substitute_env("$MISSING", &e).is_err());
    }

    #[test]
    fn lists_accept_commas_and_python_literals() {
        assert_eq!(split_list("/CN=a, /CN=b"), vec!["/CN=a", "/CN=b"]);
        assert_eq!(split_list("['/CN=a', '/CN=b']"), vec!["/CN=a", "/CN=b"]);
    }

    #[test]
    fn env_var_names_follow_the_section() {
        assert_eq!(env_var_name("server", "schemaPANDA"), "PANDA_SCHEMAPANDA");
        assert_eq!(env_var_name("daemon", "config"), "PANDA_DAEMON_CONFIG");
    }
}
