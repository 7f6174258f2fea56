//! Log output: to `<logdir>/panda-server.log` when `logdir` is set, else to standard output
//! (journald under systemd). The level comes from `RUST_LOG` (default `info`).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use crate::config::Config;

pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &config.logdir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create log directory {}: {e}", dir.display())
            })?;
            let path = dir.join("panda-server.log");
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
            builder.with_ansi(false).with_writer(Arc::new(file)).init();
        }
        None => builder.with_ansi(std::io::stdout().is_terminal()).init(),
    }
    Ok(())
}
