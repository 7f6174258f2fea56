//! Running the real `panda-server` binary in tests: on a free port, against a private
//! database, stopped (SIGTERM, then SIGKILL) when the handle is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use panda_store::testing::TestDb;
use panda_store::Backend;

pub const BINARY: &str = env!("CARGO_BIN_EXE_panda-server");

/// Environment that points the binary at a test database, with no config file.
pub fn db_env(db: &TestDb) -> Vec<(String, String)> {
    let c = &db.config;
    let mut env = vec![("PANDA_CONFIG".to_string(), "none".to_string())];
    match c.backend {
        Backend::Sqlite => {
            env.push(("PANDA_DBNAME".into(), c.name.clone()));
        }
        Backend::Postgres => {
            env.extend([
                ("PANDA_BACKEND".into(), "postgres".into()),
                ("PANDA_DBHOST".into(), c.host.clone()),
                ("PANDA_DBPORT".into(), c.port.to_string()),
                ("PANDA_DBUSER".into(), c.user.clone()),
                ("PANDA_DBNAME".into(), c.name.clone()),
                ("PANDA_SCHEMAPANDA".into(), c.schema.clone()),
            ]);
            if let Some(p) = &c.password {
                env.push(("PANDA_DBPASSWD".into(), p.clone()));
            }
        }
    }
    env
}

/// Runs the binary to completion with `args` and `env`, bounded in time.
pub fn run(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_remove("PANDA_CONFIG")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start panda-server");
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("collect output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("panda-server {args:?} did not finish within 60 s");
        }
    }
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub base_url: String,
    pub log: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `panda-server [args]` on a free loopback port and waits until it listens.
    pub fn start(args: &[&str], env: &[(String, String)]) -> Server {
        Server::start_until(args, env, "listening on ")
    }

    /// Starts `panda-server [args]` and waits for a log line containing `marker`; when the
    /// marker is the listening line, `base_url` is set from it.
    pub fn start_until(args: &[&str], env: &[(String, String)], marker: &str) -> Server {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env_remove("PANDA_CONFIG")
            .env("RUST_LOG", "info")
            .env("PANDA_PSERVERPORTHTTP", "0");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start panda-server");
        let (tx, log) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = Server {
            child: Some(child),
            base_url: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match server.log.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(url) = line.split("listening on ").nth(1) {
                        server.base_url = url.trim().to_string();
                    }
                    if line.contains(marker) {
                        return server;
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "panda-server did not start listening; output:\n{}",
            seen.join("\n")
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server still running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("panda-server did not stop within 15 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
