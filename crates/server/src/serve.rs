//! Running the server: the web tier, the daemon, or both, until SIGTERM or SIGINT.
//!
//! Start-up is all or nothing: the database must answer and hold the right schema, the log
//! files must be writable and the ports free, or the process exits non-zero naming what is
//! wrong (so systemd shows it). Once listening, the web tier tells systemd `READY=1` and then
//! a `STATUS=` line every few seconds; SIGHUP reopens the log files; SIGTERM stops accepting,
//! lets in-flight requests finish within `shutdown_timeout`, sends `STOPPING=1` and exits 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use panda_api::monitor::MonitorAccess;
use panda_api::{
    AccessLog, AppState, Health, IdentityPolicy, MonitorPlacement, OidcVerifier, RequestStats,
    StaticDirs, X509Verifier,
};
use panda_daemon::TaskStats;
use panda_service::JobService;
use panda_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, MonitorAddress};
use crate::logging::{self, LogFiles, ReopenableFile};
use crate::{metrics, notify};

/// Which parts of the server this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Web tier and daemon; migrates the schema first (the zero-config default).
    All,
    Httpd,
    Daemon,
}

impl Mode {
    fn component(self) -> &'static str {
        match self {
            Mode::All => "server",
            Mode::Httpd => "httpd",
            Mode::Daemon => "daemon",
        }
    }

    fn serves_http(self) -> bool {
        self != Mode::Daemon
    }
}

struct AccessFile(Arc<ReopenableFile>);

impl AccessLog for AccessFile {
    fn write_line(&self, line: &str) {
        self.0.write_line(line);
    }
}

/// PostgreSQL without autovacuum and without the daemon's `db_maintenance` task never gets
/// statistics for the job tables, and their plans degrade as the tables grow.
async fn warn_about_statistics(config: &Config, store: &Store) {
    if store.dialect() != panda_store::Dialect::Postgres {
        return;
    }
    let maintained = config.daemon_enable
        && config
            .daemon_tasks
            .get("db_maintenance")
            .is_some_and(|task| task.enable);
    match store.autovacuum_on().await {
        Ok(false) if !maintained => tracing::warn!(
            "PostgreSQL's autovacuum is off and the daemon task db_maintenance is not \
             enabled: the job tables get no statistics and their queries slow down as they \
             grow; enable one of the two"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!("cannot read PostgreSQL's autovacuum setting: {e}"),
    }
}

pub async fn run(config: Config, mode: Mode) -> anyhow::Result<()> {
    let logs = logging::init(&config, mode.component())?;
    let result = run_logged(config, mode, logs.clone()).await;
    if let (Err(e), true) = (&result, logs.to_files()) {
        // Standard error goes to the journal; the operator reads panda_server_error_log.
        tracing::error!("cannot run: {e:#}");
    }
    result
}

async fn run_logged(mut config: Config, mode: Mode, logs: LogFiles) -> anyhow::Result<()> {
    warn_about_config(&config);
    if let (false, Some(why)) = (mode == Mode::All, config.missing_sqlite_database()) {
        anyhow::bail!("{why}");
    }
    let store = Store::open(&config.db, config.store_options()).await?;
    if mode == Mode::All {
        let report = store.migrate().await?;
        if !report.applied.is_empty() || !report.extensions_applied.is_empty() {
            tracing::info!(from = ?report.from.map(|v| v.to_string()), to = %report.to,
                "database schema migrated");
        }
    } else {
        store.check_schema().await?;
    }
    // After the database answered: a node that cannot start makes no key.
    config.load_credential_key().map_err(anyhow::Error::msg)?;
    if config.credential_key.is_none() && mode != Mode::Daemon {
        tracing::warn!(
            "no credential_key_file: user secrets and registered credentials are refused"
        );
    }
    warn_about_statistics(&config, &store).await;
    if let (Some(file), true) = (&config.queue_config_file, mode.serves_http()) {
        let names = crate::queues::load(&store, file).await?;
        tracing::info!(queues = names.len(), file = %file.display(), "queues loaded");
    }
    // Bind everything before announcing anything: a port in use is a start-up error.
    let listener = match mode.serves_http() {
        true => Some(
            bind(
                SocketAddr::new(config.bind_address, config.http_port),
                "HTTP",
            )
            .await?,
        ),
        false => None,
    };
    let has_host_cert = config.host_cert.exists() && config.host_key.exists();
    let https = match (mode.serves_http(), has_host_cert) {
        (true, true) => Some((
            bind(
                SocketAddr::new(config.bind_address, config.https_port),
                "HTTPS",
            )
            .await?,
            Arc::new(crate::tls::acceptor(&config.host_cert, &config.host_key)?),
        )),
        (true, false) => {
            tracing::info!(
                "HTTPS off: no host certificate and key at {} and {}",
                config.host_cert.display(),
                config.host_key.display()
            );
            None
        }
        (false, _) => None,
    };
    // One listener per process: the daemon has an address of its own, so that it and the web
    // tier can run side by side on one node with one configuration.
    let metrics_address = match mode {
        Mode::Daemon => config.daemon_metrics_address,
        Mode::All | Mode::Httpd => config.metrics_address,
    };
    let metrics_listener = match metrics_address {
        Some(address) => Some(bind(address, "metrics").await?),
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    // Only a web tier has a health check to fail before it stops.
    let drain = match mode.serves_http() {
        true => Some((health.clone(), config.drain_delay)),
        false => None,
    };
    tokio::spawn(watch_signals(stop_tx, logs.clone(), drain));
    let stats = Arc::new(RequestStats::new(
        config.max_workers,
        logs.access
            .clone()
            .map(|f| Arc::new(AccessFile(f)) as Arc<dyn AccessLog>),
    ));
    let task_stats = Arc::new(TaskStats::default());
    if let Some(listener) = metrics_listener {
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        let state = metrics::MetricsState {
            requests: stats.clone(),
            store: store.clone(),
            tasks: task_stats.clone(),
        };
        tokio::spawn(metrics::serve(listener, state, stopped(stop_rx.clone())));
    }

    let web = listener.map(|listener| {
        tokio::spawn(run_httpd(
            config.clone(),
            store.clone(),
            listener,
            https,
            stats.clone(),
            health,
            stop_rx.clone(),
        ))
    });
    let daemon = match (mode, config.daemon_enable) {
        (Mode::All | Mode::Daemon, true) => {
            if mode == Mode::Daemon {
                // The daemon alone under systemd: its own READY, status line and watchdog.
                store.ping().await.context("database check before READY")?;
                let enabled = config
                    .daemon_tasks
                    .iter()
                    .filter(|(name, task)| task.enable && panda_daemon::known_task(name))
                    .count();
                notify::ready();
                tokio::spawn(notify::status_loop(
                    notify::daemon_status(task_stats.clone(), enabled),
                    store.clone(),
                    stopped(stop_rx.clone()),
                ));
            }
            Some(tokio::spawn(panda_daemon::run(
                store.clone(),
                node_name(&config),
                config.service_settings(),
                config.daemon_tasks.clone(),
                task_stats,
                stopped(stop_rx.clone()),
            )))
        }
        (Mode::All | Mode::Daemon, false) => {
            tracing::info!("daemon disabled by [daemon] enable = False");
            if mode == Mode::Daemon {
                notify::ready_with_status("disabled by [daemon] enable = False");
            }
            None
        }
        (Mode::Httpd, _) => None,
    };
    if web.is_none() && daemon.is_none() {
        stopped(stop_rx.clone()).await;
    }
    if let Some(web) = web {
        web.await.context("web tier task")??;
    }
    if let Some(daemon) = daemon {
        daemon.await.context("daemon task")?;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// How this process signs leases and locks: `host:pid`.
pub fn node_name(config: &Config) -> String {
    format!("{}:{}", config.host_name, std::process::id())
}

async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({what})"))
}

/// The HTTPS listener and its TLS settings.
type HttpsListener = (TcpListener, Arc<openssl::ssl::SslAcceptor>);

async fn run_httpd(
    config: Config,
    store: Store,
    listener: TcpListener,
    https: Option<HttpsListener>,
    stats: Arc<RequestStats>,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    for dir in [&config.cache_dir, &config.trf_dir] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(
                "cannot create {}: {e}; it will not be served",
                dir.display()
            );
        }
    }
    let local = listener.local_addr()?;
    let service = JobService::new(store.clone(), config.service_settings());
    let policy = Arc::new(identity_policy(&config, https.is_some()));
    if let Some(oidc) = policy.oidc.clone().filter(|o| o.has_remote_issuers()) {
        for warning in oidc.refresh().await {
            tracing::warn!("token authentication: {warning}");
        }
        // Issuers rotate keys; fetch them again every hour.
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                for warning in oidc.refresh().await {
                    tracing::warn!("token authentication: {warning}");
                }
            }
        });
    }
    let state = AppState {
        service,
        identity_policy: policy.clone(),
        stats: stats.clone(),
        limits: Arc::new(config.request_limits()),
        files: Arc::new(StaticDirs {
            cache: config.cache_dir.clone(),
            trf: config.trf_dir.clone(),
            auth: config.auth_config.clone(),
        }),
        health,
        monitor: MonitorPlacement {
            on_web_ports: config.monitor_address == MonitorAddress::WebPorts,
            access: MonitorAccess {
                open: config.monitor_open,
            },
        },
    };
    let connection_policy = Arc::new(config.connection_policy());
    let monitor_server = match config.monitor_address {
        MonitorAddress::Own(address) => {
            let listener = bind(address, "monitor").await?;
            tracing::info!("monitor on http://{}/", listener.local_addr()?);
            Some(tokio::spawn(crate::connections::serve(
                listener,
                None,
                panda_api::monitor_router(state.clone()),
                connection_policy.clone(),
                stop.clone(),
                config.shutdown_timeout,
            )))
        }
        MonitorAddress::WebPorts | MonitorAddress::Off => None,
    };
    let app = panda_api::router(state);
    store.ping().await.context("database check before READY")?;
    tracing::info!("listening on http://{local}");
    if let Some((listener, _)) = &https {
        tracing::info!("HTTPS on https://{}", listener.local_addr()?);
    }
    notify::ready();
    let status = tokio::spawn(notify::status_loop(
        notify::web_status(stats),
        store,
        stopped(stop.clone()),
    ));
    let https_server = https.map(|(listener, acceptor)| {
        tokio::spawn(crate::connections::serve(
            listener,
            Some((acceptor, policy.x509.clone())),
            app.clone(),
            connection_policy.clone(),
            stop.clone(),
            config.shutdown_timeout,
        ))
    });
    let http_server = tokio::spawn(crate::connections::serve(
        listener,
        None,
        app,
        connection_policy,
        stop.clone(),
        config.shutdown_timeout,
    ));
    stopped(stop).await;
    notify::stopping();
    let drained = async {
        let _ = http_server.await;
        if let Some(https_server) = https_server {
            let _ = https_server.await;
        }
        if let Some(monitor_server) = monitor_server {
            let _ = monitor_server.await;
        }
    };
    if tokio::time::timeout(config.shutdown_timeout + Duration::from_secs(1), drained)
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running after {}s; stopping anyway",
            config.shutdown_timeout.as_secs()
        );
    }
    status.abort();
    Ok(())
}

/// Resolves once a stop has been requested.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// SIGTERM and SIGINT request a stop; SIGHUP reopens the log files. With `drain` (a web
/// tier), the health check fails first and requests are still served for the drain delay;
/// a second SIGTERM or SIGINT cuts the delay short.
async fn watch_signals(
    stop: watch::Sender<bool>,
    logs: LogFiles,
    drain: Option<(Arc<Health>, Duration)>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                logs.reopen();
                tracing::info!("log files reopened (SIGHUP)");
            }
        }
    }
    if let Some((health, delay)) = drain.filter(|(_, delay)| !delay.is_zero()) {
        health.start_draining();
        tracing::info!(
            drain_s = delay.as_secs(),
            "shutdown requested: failing the health check, still serving"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    tracing::info!("shutdown requested");
    let _ = stop.send(true);
}

/// The identity policy: local mode, bearer tokens for the VOs under `auth_config`, and
/// client certificates on HTTPS.
fn identity_policy(config: &Config, https: bool) -> IdentityPolicy {
    let oidc = config.auth_config.as_ref().map(|dir| {
        let (verifier, warnings) = OidcVerifier::load(dir, config.production_dns.clone());
        if dir.exists() {
            for warning in warnings {
                tracing::warn!("token authentication: {warning}");
            }
            tracing::info!("token authentication: {verifier:?} from {}", dir.display());
        }
        Arc::new(verifier)
    });
    let x509 = match https {
        false => None,
        true => match X509Verifier::load(
            &config.cacert_dir,
            &config.voms_dir,
            config.production_dns.clone(),
            config.pilot_owners.clone(),
        ) {
            Ok(verifier) => Some(Arc::new(verifier)),
            Err(e) => {
                tracing::warn!("client certificates are refused: {e}");
                None
            }
        },
    };
    IdentityPolicy {
        trust_loopback: config.trust_loopback,
        oidc,
        x509,
    }
}

fn warn_about_config(config: &Config) {
    match &config.source {
        Some(path) => tracing::info!("configuration from {}", path.display()),
        None => tracing::info!("no configuration file; embedded defaults (local mode)"),
    }
    for key in &config.unknown_keys {
        tracing::warn!("unknown configuration key ignored: {key}");
    }
    if config.trust_loopback {
        tracing::warn!(
            "local mode: requests from loopback without credentials act as {:?} with the production role",
            panda_api::identity::LOCAL_OPERATOR_DN
        );
    }
}

/// How often the status line is sent.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);
