//! Running the server: the web tier, the daemon, or both, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use panda_api::{AppState, IdentityPolicy, Limits, RequestStats, StaticDirs};
use panda_service::{JobService, ServiceSettings};
use panda_store::Store;
use tokio::sync::watch;

use crate::config::Config;

/// Which parts of the server this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Web tier and daemon; migrates the schema first (the zero-config default).
    All,
    Httpd,
    Daemon,
}

pub async fn run(config: Config, mode: Mode) -> anyhow::Result<()> {
    warn_about_config(&config);
    let store = Store::open(&config.db, config.store_options()).await?;
    if mode == Mode::All {
        let report = store.migrate().await?;
        if !report.applied.is_empty() {
            tracing::info!(from = ?report.from.map(|v| v.to_string()), to = %report.to,
                "database schema migrated");
        }
    } else {
        store.check_schema().await?;
    }
    if let (Some(file), Mode::All | Mode::Httpd) = (&config.queue_config_file, mode) {
        let names = crate::queues::load(&store, file).await?;
        tracing::info!(queues = names.len(), file = %file.display(), "queues loaded");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let web = match mode {
        Mode::All | Mode::Httpd => Some(tokio::spawn(run_httpd(
            config.clone(),
            store.clone(),
            stop_rx.clone(),
        ))),
        Mode::Daemon => None,
    };
    let daemon = match mode {
        Mode::All | Mode::Daemon if config.daemon_enable => Some(tokio::spawn(panda_daemon::run(
            store.clone(),
            config.daemon_tasks.clone(),
            stopped(stop_rx.clone()),
        ))),
        Mode::All | Mode::Daemon => {
            tracing::info!("daemon disabled by [daemon] enable = False");
            None
        }
        Mode::Httpd => None,
    };
    if let Some(web) = web {
        web.await.context("web tier task")??;
    }
    if let Some(daemon) = daemon {
        if mode == Mode::Daemon && !config.daemon_enable {
            stopped(stop_rx.clone()).await;
        }
        daemon.await.context("daemon task")?;
    } else if mode == Mode::Daemon {
        stopped(stop_rx.clone()).await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn run_httpd(
    config: Config,
    store: Store,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let address = SocketAddr::new(config.bind_address, config.http_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr()?;
    tracing::info!("listening on http://{local}");
    let service = JobService::new(
        store,
        ServiceSettings {
            max_jobs_per_get_job: config.n_jobs_in_get_job as usize,
            host_name: config.host_name.clone(),
        },
    );
    let state = AppState {
        service,
        identity_policy: Arc::new(IdentityPolicy {
            trust_loopback: config.trust_loopback,
        }),
        stats: Arc::new(RequestStats::default()),
        limits: Arc::new(Limits {
            max_body_bytes: config.max_body_size,
        }),
        files: Arc::new(StaticDirs {
            cache: config.cache_dir.clone(),
            trf: config.trf_dir.clone(),
        }),
    };
    let app = panda_api::router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop))
    .await
    .context("HTTP server")?;
    Ok(())
}

/// Resolves once a stop has been requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
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
