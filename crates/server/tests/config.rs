//! Configuration as an operator writes it: no file, upstream's file format, environment
//! overrides, secrets from files, and files with mistakes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use panda_server::config::{load_with_env, ConfigError, ConfigSource};
use panda_store::Backend;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("panda_server.cfg");
    std::fs::write(&path, text).expect("write config");
    path
}

const UPSTREAM_STYLE: &str = r#"
##########################
#
# Database parameters
#

[server]

# logging
logdir = /var/log/panda
loggername = prod

# database
dbhost = panda-database
dbport = 5432
dbuser = panda
dbpasswd = FIXME
dbname = panda_db
backend = postgres
nDBConnection = 1
usedbtimeout = True
schemaPANDA = DOMA_PANDA
schemaMETA = DOMA_PANDAMETA

# ports
pserverport = 25443
pserverporthttp = 25080
pserveralias = pandaserver.cern.ch

cache_dir = /var/log/panda/pandacache
nJobsInGetJob = 20
production_dns = /DC=ch/CN=robot one, /DC=ch/CN=robot two
record_statuschange = True
frobnicate = 3

[daemon]
enable = True
uname = atlpan
n_proc = 6
config = {
    "dummy_test": {
        "enable": true, "period": 120},
    "add_main": {
        "enable": true, "period": 240, "loop": true}
    }

[mcp]
transport = http
"#;

#[test]
fn without_a_file_the_defaults_are_local_mode_on_sqlite() {
    let config =
        load_with_env(&ConfigSource::None, &env(&[("PANDA_HOME", "/srv/ph")])).expect("load");
    assert!(config.source.is_none());
    assert_eq!(config.db.backend, Backend::Sqlite);
    assert_eq!(config.db.name, "/srv/ph/panda.db");
    assert_eq!(config.http_port, 25080);
    assert_eq!(config.https_port, 25443);
    assert_eq!(config.bind_address, IpAddr::from([127, 0, 0, 1]));
    assert!(config.trust_loopback);
    assert_eq!(config.n_jobs_in_get_job, 10);
    assert!(config.logdir.is_none());
    assert_eq!(config.cache_dir, PathBuf::from("/srv/ph/cache"));
    assert!(
        config.store_options().group_commit,
        "group commit is on by default"
    );

    let default_home = load_with_env(&ConfigSource::None, &env(&[])).expect("load");
    assert_eq!(default_home.db.name, "./panda-data/panda.db");
}

#[test]
fn an_upstream_style_file_is_read_with_upstreams_meanings() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(dir.path(), UPSTREAM_STYLE);
    let config = load_with_env(&ConfigSource::File(path.clone()), &env(&[])).expect("load");
    assert_eq!(config.source.as_deref(), Some(path.as_path()));
    assert_eq!(config.db.backend, Backend::Postgres);
    assert_eq!(config.db.host, "panda-database");
    assert_eq!(config.db.password.as_deref(), Some("FIXME"));
    assert_eq!(
        config.db.schema, "doma_panda",
        "schema names fold to lower case"
    );
    // Upstream's META schema from the file; the archive's at upstream's default.
    assert_eq!(config.db.meta_schema, "doma_pandameta");
    assert_eq!(config.db.arch_schema, "doma_pandaarch");
    assert_eq!(
        config.db.schemas(),
        vec!["doma_panda", "doma_pandameta", "doma_pandaarch"]
    );
    assert_eq!(config.n_jobs_in_get_job, 20);
    assert_eq!(
        config.production_dns,
        vec!["/DC=ch/CN=robot one", "/DC=ch/CN=robot two"]
    );
    assert_eq!(config.logdir, Some(PathBuf::from("/var/log/panda")));
    assert_eq!(config.bind_address, IpAddr::from([0, 0, 0, 0]));
    assert!(!config.trust_loopback, "a config file turns local mode off");
    assert_eq!(config.daemon_tasks.len(), 2);
    assert_eq!(config.daemon_tasks["add_main"].period, 240);
    assert!(config.daemon_tasks["add_main"].looped);
    assert_eq!(config.unknown_keys.len(), 2, "{:?}", config.unknown_keys);
    let frobnicate_line = UPSTREAM_STYLE
        .lines()
        .position(|l| l.starts_with("frobnicate"))
        .map(|i| i + 1)
        .expect("the fixture has the key");
    assert!(config.unknown_keys[0].contains("frobnicate"));
    assert!(config.unknown_keys[0].contains(&format!("line {frobnicate_line}")));
    assert!(config.unknown_keys[1].contains("[mcp] transport"));
}

#[test]
fn the_shipped_example_file_is_valid() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/panda_server.cfg.example");
    let secret_dir = tempfile::tempdir().expect("dir");
    let secret = secret_dir.path().join("pw");
    std::fs::write(&secret, "pw\n").expect("write");
    let config = load_with_env(
        &ConfigSource::File(example),
        &env(&[("PANDA_DBPASSWD_FILE", secret.to_str().expect("utf-8"))]),
    )
    .expect("the example loads");
    assert!(config.unknown_keys.is_empty(), "{:?}", config.unknown_keys);
    assert_eq!(config.db.password.as_deref(), Some("pw"));
}

#[test]
fn the_environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(dir.path(), UPSTREAM_STYLE);
    let secret = dir.path().join("dbpasswd");
    std::fs::write(&secret, "from-a-file\n").expect("write secret");
    let config = load_with_env(
        &ConfigSource::File(path),
        &env(&[
            ("PANDA_DBHOST", "db.example.org"),
            ("PANDA_PSERVERPORTHTTP", "8080"),
            ("PANDA_SCHEMAPANDA", "other_schema"),
            ("PANDA_TRUST_LOOPBACK", "True"),
            ("PANDA_DBPASSWD_FILE", secret.to_str().expect("utf-8")),
            ("PANDA_DAEMON_CONFIG", r#"{"tmpwatch": {"period": 60}}"#),
        ]),
    )
    .expect("load");
    assert_eq!(config.db.host, "db.example.org");
    assert_eq!(config.http_port, 8080);
    assert_eq!(config.db.schema, "other_schema");
    assert!(config.trust_loopback);
    assert_eq!(config.db.password.as_deref(), Some("from-a-file"));
    assert_eq!(
        config.daemon_tasks.keys().collect::<Vec<_>>(),
        vec!["tmpwatch"]
    );
}

#[test]
fn a_dollar_value_is_taken_from_the_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write(dir.path(), "[server]\ndbpasswd = ${PANDA_DB_PASSWORD}\n");
    let config = load_with_env(
        &ConfigSource::File(path.clone()),
        &env(&[("PANDA_DB_PASSWORD", "pw")]),
    )
    .expect("load");
    assert_eq!(config.db.password.as_deref(), Some("pw"));
    let err = load_with_env(&ConfigSource::File(path), &env(&[])).expect_err("unset variable");
    assert!(err.to_string().contains("PANDA_DB_PASSWORD"), "{err}");
}

#[test]
fn mistakes_are_reported_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        ("[server]\npserverport = 99999\n", "line 2", "pserverport"),
        ("[server]\nbackend = oracle\n", "line 2", "backend"),
        (
            "[server]\n\ntrust_loopback = maybe\n",
            "line 3",
            "trust_loopback",
        ),
        ("[daemon]\nconfig = {not json\n", "line 2", "config"),
        (
            "[daemon]\nconfig = {\"add_main\": {\"perod\": 5}}\n",
            "line 2",
            "add_main",
        ),
        (
            "[server]\nschemaPANDA = doma panda\n",
            "line 2",
            "schemaPANDA",
        ),
        ("[server]\nschemaMETA = meta;drop\n", "line 2", "schemaMETA"),
        (
            "[server]\nschemaPANDAARCH = 1arch\n",
            "line 2",
            "schemaPANDAARCH",
        ),
        (
            "[server]\ndbpasswd_file = /nonexistent/secret\n",
            "line 2",
            "dbpasswd_file",
        ),
        ("dbhost = x\n", "line 1", "before any [section]"),
    ];
    for (text, line, key) in cases {
        let path = write(dir.path(), text);
        let err = load_with_env(&ConfigSource::File(path.clone()), &env(&[])).expect_err(text);
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains(line) && message.contains(key),
            "{text:?} gave {message}"
        );
    }
    let err =
        load_with_env(&ConfigSource::None, &env(&[("PANDA_DBPORT", "x")])).expect_err("bad env");
    assert!(matches!(err, ConfigError::BadValue { .. }));
    assert!(err.to_string().contains("PANDA_DBPORT"), "{err}");
}

#[test]
fn group_commit_is_turned_off_by_its_switch_and_nonsense_is_refused() {
    let off = env(&[("PANDA_HOME", "/srv/ph"), ("PANDA_GROUP_COMMIT", "False")]);
    let config = load_with_env(&ConfigSource::None, &off).expect("load");
    assert!(!config.store_options().group_commit);
    let bad = env(&[
        ("PANDA_HOME", "/srv/ph"),
        ("PANDA_GROUP_COMMIT", "sometimes"),
    ]);
    let error = match load_with_env(&ConfigSource::None, &bad) {
        Ok(_) => panic!("a nonsense switch was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("group_commit"), "{error}");
}
