//! `panda-bench`: drives a running PanDA server over HTTP as its real clients do, and reports
//! rates, latency percentiles, errors, and the server's CPU time and peak memory (from /proc).
//!
//! - `pilots`: submits jobs, then N simulated pilots loop getJob → updateJob running →
//!   updateJob finished (with a file report), over the legacy API or `/api/v1`; a failed
//!   call is sent again with back-off, as pilot3 does, so a run outlives a fault.
//! - `submit`: N clients post `job/submit` batches.
//! - `alive`: N clients hit the health endpoint.
//! - `abuse`: pilots cycle for a while alone, then again while a thousand hostile
//!   connections (slow bodies, idle connections, slow heads, bombs, floods; `abuse.rs`) are
//!   open; reports both, and isAlive's latency in each.

mod abuse;
mod events;
mod monitor;
mod tasks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value as Json};

#[derive(Parser)]
#[command(name = "panda-bench", about = "Load generator for the PanDA server")]
struct Cli {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:25080", global = true)]
    url: String,
    /// PID of the server, to report its CPU seconds and peak RSS.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// A file holding an OIDC token every request carries (`Authorization: Bearer`), as
    /// pilots and panda-client send theirs to a server that is not on loopback.
    #[arg(long, global = true, requires = "origin")]
    token_file: Option<std::path::PathBuf>,
    /// The token's VO and role (`Origin`, e.g. `atlas.production`).
    #[arg(long, global = true)]
    origin: Option<String>,
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Simulated pilots running jobs.
    Pilots {
        #[arg(long, default_value_t = 8)]
        pilots: usize,
        /// Jobs submitted before the pilots start.
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        #[arg(long, default_value = "TEST_QUEUE")]
        site: String,
        #[arg(long, value_enum, default_value_t = Api::Legacy)]
        api: Api,
        /// Seconds to run at most.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Clients submitting batches of jobs alongside the pilots (`job/submit`); the
        /// pilots then wait for jobs instead of stopping when there is none.
        #[arg(long, default_value_t = 0)]
        submitters: usize,
        /// Jobs per submitted batch.
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// Clients only claiming jobs (`pilot/acquire_jobs`), `per_call` at a time, until
    /// `claims` are made or no job is left; then every claim is checked: none twice, each
    /// job `sent` (or `starting` with `--start`).
    Claims {
        #[arg(long, default_value_t = 100000)]
        claims: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        per_call: usize,
        #[arg(long, default_value = "TEST_QUEUE")]
        site: String,
        /// Seconds to run at most.
        #[arg(long, default_value_t = 3600)]
        duration: u64,
        /// Report each claim's jobs `starting` in one `pilot/update_jobs_bulk` call, as
        /// Harvester does after fetching jobs. Without it every claimed job stays `sent`, and
        /// each production claim's count of the queue's sent jobs (upstream's `nSent`) reads
        /// them all: a long run slows down with the jobs it has claimed.
        #[arg(long)]
        start: bool,
    },
    /// Clients submitting batches of jobs.
    Submit {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 5000)]
        jobs: usize,
        #[arg(long, default_value = "TEST_QUEUE")]
        site: String,
    },
    /// Fill the database directly (not over HTTP) with archived and activated jobs, for
    /// runs at scale; the server's schema must be in place.
    Preload {
        /// PostgreSQL, e.g. postgres://postgres@127.0.0.1:5432/panda_bench.
        #[arg(long)]
        database_url: Option<String>,
        /// Or an SQLite file.
        #[arg(long)]
        sqlite: Option<String>,
        #[arg(long, default_value = "doma_panda")]
        schema: String,
        #[arg(long, default_value = "TEST_QUEUE")]
        site: String,
        #[arg(long, default_value_t = 0)]
        archived: u64,
        #[arg(long, default_value_t = 0)]
        activated: u64,
    },
    /// Pilots, submitters and health probes at once, for `duration` seconds.
    Mixed {
        #[arg(long, default_value_t = 32)]
        pilots: usize,
        #[arg(long, default_value_t = 2)]
        submitters: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Jobs submitted before the run starts.
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        #[arg(long, default_value = "TEST_QUEUE")]
        site: String,
        #[arg(long, default_value_t = 15)]
        duration: u64,
    },
    /// Pilots alone, then pilots beside hostile connections; both reported.
    Abuse {
        #[arg(long, default_value_t = 64)]
        pilots: usize,
        /// Jobs submitted before each phase.
        #[arg(long, default_value_t = 20000)]
        jobs: usize,
        #[arg(long, default_value = "TEST_QUEUE")]
        site: String,
        /// Seconds each phase runs.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Hostile connections held open during the second phase.
        #[arg(long, default_value_t = 1000)]
        hostile: usize,
        /// Hostile connections per named client (the server must trust 127.0.0.128/25 as
        /// load balancers: `PANDA_TRUSTED_PROXIES=127.0.0.128/25`).
        #[arg(long, default_value_t = 200)]
        per_address: usize,
        /// Compressed bombs posted per second.
        #[arg(long, default_value_t = 5.0)]
        bomb_rate: f64,
        /// Odd requests (percent-spelled names, unknown methods) per second.
        #[arg(long, default_value_t = 200.0)]
        flood_rate: f64,
    },
    /// One noInput task of `jobs` jobs: generation rate, pbook's listing, post-processing.
    Tasks {
        #[arg(long, default_value_t = 10000)]
        jobs: usize,
        /// Jobs simulated pilots finish afterwards (0: none).
        #[arg(long, default_value_t = 0)]
        finish: usize,
        #[arg(long, default_value_t = 32)]
        pilots: usize,
        /// An online analysis queue.
        #[arg(long, default_value = "ANALY_QUEUE")]
        site: String,
        /// Wait only for the Adder (the server runs no post-processor).
        #[arg(long)]
        adder_only: bool,
        /// Give the task a build step and time the release of its held run jobs.
        #[arg(long)]
        build: bool,
    },
    /// One event-service task: pilots taking and reporting event ranges.
    Events {
        /// Jobs of the task (one pilot each, at most).
        #[arg(long, default_value_t = 64)]
        jobs: usize,
        /// Events (ranges of one) per job.
        #[arg(long, default_value_t = 2000)]
        events: usize,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Ranges per getEventRanges / updateEventRanges call.
        #[arg(long, default_value_t = 8)]
        ranges: usize,
        /// An online analysis queue.
        #[arg(long, default_value = "ANALY_QUEUE")]
        site: String,
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Calls a second all pilots offer together (default: each calls again at once).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Viewers reading the monitor's pages (HTML): a queue's finished jobs, a job, the
    /// dash, and a task when given; latency per page.
    Monitor {
        #[arg(long, default_value_t = 16)]
        viewers: usize,
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// The queue whose finished jobs are listed (and one of them shown).
        #[arg(long, default_value = "TEST_QUEUE")]
        site: String,
        /// A task whose page is read too.
        #[arg(long)]
        task: Option<i64>,
        /// Seconds between one viewer's pages (0: as fast as the server answers).
        #[arg(long, default_value_t = 0.0)]
        pace: f64,
    },
    /// Clients calling the health endpoint.
    Alive {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    Legacy,
    V1,
}

/// Latencies per call name, in microseconds.
#[derive(Default)]
struct Recorder {
    calls: Mutex<BTreeMap<&'static str, Vec<u64>>>,
    errors: AtomicU64,
}

impl Recorder {
    /// Counts an error; the first few are printed with what went wrong.
    fn fail(&self, what: impl std::fmt::Display) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("error: {what}");
        }
    }

    fn record(&self, name: &'static str, started: Instant) {
        if let Ok(mut calls) = self.calls.lock() {
            calls
                .entry(name)
                .or_default()
                .push(started.elapsed().as_micros() as u64);
        }
    }

    fn report(&self, elapsed: Duration) {
        let Ok(mut calls) = self.calls.lock() else {
            return;
        };
        let total: usize = calls.values().map(Vec::len).sum();
        println!(
            "requests: {total} in {:.2}s = {:.0} req/s; errors: {}",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            self.errors.load(Ordering::Relaxed)
        );
        for (name, samples) in calls.iter_mut() {
            samples.sort_unstable();
            let pct = |p: f64| {
                samples[((samples.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
            };
            println!(
                "  {name:<22} n={:<7} p50={:.2}ms p95={:.2}ms p99={:.2}ms",
                samples.len(),
                pct(0.5),
                pct(0.95),
                pct(0.99)
            );
        }
    }
}

/// isAlive every 10 ms until `stop`, recorded as `isAlive`.
async fn alive_probe(
    client: reqwest::Client,
    url: String,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match client
            .get(format!("{url}/server/panda/isAlive"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
            }
            _ => {
                rec.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        rec.record("isAlive", t);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// CPU seconds (user + system) and peak RSS in MB of a process.
fn process_usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()?;
    Some((ticks / 100.0, hwm_kb / 1024.0))
}

/// The states of jobs by PandaID (`getStatus`, 500 at a time), in the order asked;
/// `notfound` for an unknown one.
async fn job_states(
    client: &reqwest::Client,
    url: &str,
    ids: &[i64],
) -> anyhow::Result<Vec<String>> {
    let mut states = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let reply = client
            .post(format!("{url}/server/panda/getStatus"))
            .form(&[("ids", ids.join(" "))])
            .send()
            .await?
            .text()
            .await?;
        let status = reply
            .split('&')
            .find_map(|kv| kv.strip_prefix("status="))
            .unwrap_or("")
            .replace("%2B", "+");
        let got: Vec<String> = status.split('+').map(str::to_string).collect();
        if got.len() != chunk.len() {
            bail!(
                "getStatus answered {} states for {} jobs",
                got.len(),
                chunk.len()
            );
        }
        states.extend(got);
    }
    Ok(states)
}

/// The number of entries of `ids` that repeat an earlier one, and the distinct ones sorted.
fn distinct(ids: &[i64]) -> (usize, Vec<i64>) {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let before = sorted.len();
    sorted.dedup();
    (before - sorted.len(), sorted)
}

/// What the pilots of a run were handed, and which of those jobs' final reports the server
/// acknowledged (answered, whatever the answer).
#[derive(Default)]
struct Handed {
    claimed: Vec<i64>,
    reported: Vec<i64>,
}

/// The load's correctness: no job handed out twice; every job whose final report was
/// acknowledged ends where a finished pilot cycle leaves it (`holding`, or `finished` once
/// the Adder ran): none lost, no acknowledged update lost. A job whose report never got
/// through (every try failed) is counted apart as not reported: its history explains it.
async fn check_jobs(client: &reqwest::Client, url: &str, handed: &Handed) -> anyhow::Result<bool> {
    let before = handed.claimed.len();
    let (twice, claimed) = distinct(&handed.claimed);
    let (_, reported) = distinct(&handed.reported);
    let states = job_states(client, url, &claimed).await?;
    let (mut lost, mut elsewhere) = (0, 0);
    for (id, state) in claimed.iter().zip(&states) {
        match state.as_str() {
            "notfound" => lost += 1,
            "holding" | "finished" => {}
            _ if reported.binary_search(id).is_ok() => elsewhere += 1,
            _ => {}
        }
    }
    let unreported = claimed.len() - reported.len();
    println!(
        "check: {before} handed out, {twice} twice, {lost} lost, {elsewhere} in another state, \
         {unreported} not reported"
    );
    Ok(twice == 0 && lost == 0 && elsewhere == 0)
}

/// A claim-only run's correctness: no job handed out twice, each one claimed still in the
/// state the claimers left it (`expected`), none lost.
async fn check_claims(
    client: &reqwest::Client,
    url: &str,
    claimed: &[i64],
    expected: &str,
) -> anyhow::Result<bool> {
    let (twice, ids) = distinct(claimed);
    let states = job_states(client, url, &ids).await?;
    let lost = states.iter().filter(|s| *s == "notfound").count();
    let elsewhere = states
        .iter()
        .filter(|s| *s != expected && *s != "notfound")
        .count();
    println!(
        "claims: {} handed out, {twice} twice, {lost} lost, {elsewhere} in another state",
        claimed.len()
    );
    Ok(twice == 0 && lost == 0 && elsewhere == 0)
}

/// Acknowledged submissions: every PandaID a `job/submit` answer gave must exist.
async fn check_submitted(
    client: &reqwest::Client,
    url: &str,
    submitted: &[i64],
) -> anyhow::Result<bool> {
    let (twice, ids) = distinct(submitted);
    let states = job_states(client, url, &ids).await?;
    let lost = states.iter().filter(|s| *s == "notfound").count();
    println!(
        "submitted: {} acknowledged, {twice} twice, {lost} lost",
        submitted.len()
    );
    Ok(twice == 0 && lost == 0)
}

fn job_state(name: &str, site: &str) -> Json {
    let mut values = vec![json!("NULL"); 126];
    values[1] = json!(1);
    values[9] = json!("http://localhost/jobO.runpayload.tar.gz");
    values[12] = json!("managed");
    values[14] = json!(1000);
    values[19] = json!(name);
    values[47] = json!(site);
    values[49] = json!("/bin/true");
    let mut log = vec![json!("NULL"); 18];
    log[2] = json!("00000000-0000-0000-0000-000000000000");
    log[3] = json!(format!("{name}.log.tgz"));
    log[4] = json!("log");
    log[17] = json!("bench");
    log.push(Json::Null);
    values.push(json!([log]));
    Json::Array(values)
}

/// Submits one batch; returns the PandaIDs the answer gave.
async fn submit_batch(
    client: &reqwest::Client,
    url: &str,
    site: &str,
    names: std::ops::Range<usize>,
    tag: &str,
) -> anyhow::Result<Vec<i64>> {
    let states: Vec<Json> = names
        .map(|i| job_state(&format!("bench.{tag}.{i}"), site))
        .collect();
    let n = states.len();
    let body = json!({"jobs": Json::Array(states).to_string()});
    let reply: Json = client
        .post(format!("{url}/api/v1/job/submit"))
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    if reply["success"] != true {
        bail!("submission failed: {reply}");
    }
    let ids: Vec<i64> = reply["data"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[0].as_i64()).collect())
        .unwrap_or_default();
    if ids.len() != n {
        bail!("{n} jobs submitted, {} PandaIDs answered", ids.len());
    }
    Ok(ids)
}

/// Gzip bodies as pilot 3.11 sends them, from one deflate state per simulated pilot: a fresh
/// encoder per request allocates and clears its state every time, and the load generator
/// shares the server's cores.
struct Gzipper {
    deflate: flate2::Compress,
}

impl Gzipper {
    fn new() -> Gzipper {
        Gzipper {
            deflate: flate2::Compress::new(flate2::Compression::fast(), false),
        }
    }

    fn json(&mut self, value: &Json) -> Vec<u8> {
        let data = value.to_string().into_bytes();
        // Header: magic, deflate, no flags, no time, no extra flags, unknown OS.
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        out.reserve(data.len() + 64);
        self.deflate.reset();
        let mut input = data.as_slice();
        loop {
            let before_in = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut out, flate2::FlushCompress::Finish);
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            match status {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) => out.reserve(out.capacity().max(64)),
                Err(_) => return Vec::new(),
            }
        }
        let mut crc = flate2::Crc::new();
        crc.update(&data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }
}

/// Submits `jobs` jobs in batches of 500 before a run.
async fn submit_all(
    client: &reqwest::Client,
    url: &str,
    site: &str,
    jobs: usize,
    tag: &str,
) -> anyhow::Result<()> {
    let mut submitted = 0;
    while submitted < jobs {
        let n = (jobs - submitted).min(500);
        submitted += submit_batch(client, url, site, submitted..submitted + n, tag)
            .await
            .context("preload")?
            .len();
    }
    Ok(())
}

/// A client submitting batches, numbering jobs from a shared counter.
#[derive(Clone)]
struct Submitter {
    client: reqwest::Client,
    url: String,
    site: String,
    rec: Arc<Recorder>,
    batch: usize,
    /// The PandaIDs of acknowledged submissions.
    acknowledged: Arc<Mutex<Vec<i64>>>,
}

impl Submitter {
    fn new(
        client: &reqwest::Client,
        url: &str,
        site: &str,
        rec: &Arc<Recorder>,
        batch: usize,
    ) -> Self {
        Submitter {
            client: client.clone(),
            url: url.to_string(),
            site: site.to_string(),
            rec: rec.clone(),
            batch,
            acknowledged: Arc::default(),
        }
    }

    /// Starts `count` submitters numbering jobs from `first`, until `stop`.
    fn spawn(
        &self,
        count: usize,
        tag: &str,
        first: u64,
        stop: &Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let next = Arc::new(AtomicU64::new(first));
        (0..count)
            .map(|c| {
                let (submitter, next, stop) = (self.clone(), next.clone(), stop.clone());
                let tag = format!("{tag}{c}");
                tokio::spawn(async move { submitter.run(tag, next, None, Some(stop)).await })
            })
            .collect()
    }

    fn acknowledged(&self) -> Vec<i64> {
        self.acknowledged
            .lock()
            .map(|ids| ids.clone())
            .unwrap_or_default()
    }

    /// Submits until `limit` jobs are numbered, or until `stop`.
    async fn run(
        self,
        tag: String,
        next: Arc<AtomicU64>,
        limit: Option<usize>,
        stop: Option<Arc<AtomicBool>>,
    ) {
        while !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            let from = next.fetch_add(self.batch as u64, Ordering::Relaxed) as usize;
            let to = match limit {
                Some(limit) if from >= limit => break,
                Some(limit) => (from + self.batch).min(limit),
                None => from + self.batch,
            };
            let t = Instant::now();
            match submit_batch(&self.client, &self.url, &self.site, from..to, &tag).await {
                Ok(ids) => {
                    if let Ok(mut acknowledged) = self.acknowledged.lock() {
                        acknowledged.extend(ids);
                    }
                }
                Err(e) => self.rec.fail(format_args!("job/submit: {e:#}")),
            }
            self.rec.record("job/submit batch", t);
        }
    }
}

/// What every simulated pilot of a run shares.
#[derive(Clone)]
struct PilotSetup {
    client: reqwest::Client,
    url: String,
    site: String,
    api: Api,
    stop: Arc<AtomicBool>,
    rec: Arc<Recorder>,
    /// Keep asking when there is no job (submitters run alongside), instead of stopping.
    wait_for_jobs: bool,
}

impl PilotSetup {
    /// Starts `count` pilots (nodes `wn0`, `wn1`, ...).
    fn spawn(&self, count: usize) -> Vec<tokio::task::JoinHandle<Handed>> {
        (0..count)
            .map(|i| tokio::spawn(pilot(self.clone(), i)))
            .collect()
    }
}

/// What the pilots were handed, once they all stopped.
async fn join_pilots(handles: Vec<tokio::task::JoinHandle<Handed>>) -> Handed {
    let mut all = Handed::default();
    for h in handles {
        let one = h.await.unwrap_or_default();
        all.claimed.extend(one.claimed);
        all.reported.extend(one.reported);
    }
    all
}

/// How often a simulated pilot sends a call that failed, as pilot3 retries its calls (a
/// fault under load can only be measured if the pilots outlive it): tries in all.
const RETRY_ATTEMPTS: u32 = 10;
/// The pause after the first failure; it doubles after each further one, up to
/// [`RETRY_MAX_PAUSE`]. Ten tries span about 11 s.
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(100);
const RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// Sends one pilot call until it is answered, at most [`RETRY_ATTEMPTS`] times. A call fails
/// (and is sent again after a pause) when there is no answer, HTTP 5xx, an answer that is not
/// JSON, or the server's database error (legacy StatusCode 30; `/api/v1`: that code in `data`
/// or the envelope's message saying so); any other answer is the call's, and HTTP 4xx ends it
/// without one. Every failed try counts as an error.
async fn send_with_retry(
    rec: &Recorder,
    what: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Option<Json> {
    let mut pause = RETRY_FIRST_PAUSE;
    for attempt in 1..=RETRY_ATTEMPTS {
        let failure = match request().send().await {
            Err(e) => format!("{e}"),
            Ok(r) if r.status().is_client_error() => {
                rec.fail(format_args!("{what}: HTTP {}", r.status()));
                return None;
            }
            Ok(r) if !r.status().is_success() => format!("HTTP {}", r.status()),
            Ok(r) => match r.json::<Json>().await {
                Ok(j) if database_error(&j) => "database error".to_string(),
                Ok(j) => return Some(j),
                Err(e) => format!("answer: {e}"),
            },
        };
        rec.fail(format_args!("{what}, try {attempt}: {failure}"));
        if attempt < RETRY_ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX_PAUSE);
        }
    }
    None
}

/// Whether an answer says the server's database failed (so the call may be sent again).
fn database_error(answer: &Json) -> bool {
    answer["StatusCode"] == 30
        || answer["data"]["StatusCode"] == 30
        || (answer["success"] == false
            && answer["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("database error")))
}

/// The final report of a job that ran: its log file (as the job description names it) stored,
/// or nothing for a job without files. Naming a file the job does not have would make the
/// Adder fail the job.
fn output_report(job: &Json) -> Json {
    match (job["logFile"].as_str(), job["logGUID"].as_str()) {
        (Some(lfn), Some(guid)) if lfn != "NULL" && !lfn.is_empty() => {
            json!({lfn: {"guid": guid, "fsize": 1, "adler32": "0"}})
        }
        _ => json!({}),
    }
}

/// A POST of JSON to an `/api/v1` function (`pilot/acquire_jobs`, ...), answered in JSON.
fn v1_request(
    client: &reqwest::Client,
    url: &str,
    function: &str,
    body: &Json,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{url}/api/v1/{function}"))
        .header("Accept", "application/json")
        .json(body)
}

/// Whether a pilot call's answer accepted it (legacy `StatusCode` 0, `/api/v1` success).
fn accepted(answer: &Json) -> bool {
    answer["StatusCode"] == 0 || answer["success"] == true
}

/// One pilot: returns the PandaIDs of the jobs it was handed, and of those whose final report
/// the server accepted.
async fn pilot(setup: PilotSetup, node: usize) -> Handed {
    let PilotSetup {
        client,
        url,
        site,
        api,
        stop,
        rec,
        wait_for_jobs,
    } = setup;
    let mut handed = Handed::default();
    let mut gzip = Gzipper::new();
    let node = format!("wn{node}");
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let job = match api {
            Api::Legacy => {
                let body = gzip.json(
                    &json!({"siteName": site, "prodSourceLabel": "managed", "node": node, "mem": 4000, "diskSpace": 10000}),
                );
                let request = || {
                    client
                        .post(format!("{url}/server/panda/getJob"))
                        .header("Content-Type", "application/json")
                        .header("Accept", "application/json")
                        .body(body.clone())
                };
                send_with_retry(&rec, "getJob", request)
                    .await
                    .filter(|j| j["StatusCode"] == 0)
            }
            Api::V1 => {
                let fields = json!({"site_name": site, "node": node});
                let request = || v1_request(&client, &url, "pilot/acquire_jobs", &fields);
                send_with_retry(&rec, "acquire_jobs", request)
                    .await
                    .map(|j| j["data"]["jobs"][0].clone())
            }
        };
        rec.record("getJob", started);
        let Some((id, job)) = job.and_then(|j| Some((j["PandaID"].as_i64()?, j))) else {
            if wait_for_jobs {
                // The mixed scenario's submitters will bring more.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            break;
        };
        handed.claimed.push(id);
        let report = output_report(&job).to_string();
        for state in ["running", "finished"] {
            let started = Instant::now();
            let answer = match api {
                Api::Legacy => {
                    let mut fields = json!({"jobId": id.to_string(), "state": state, "node": node, "maxRSS": "1000"});
                    if state == "finished" {
                        fields["xml"] = json!(report);
                    }
                    let body = gzip.json(&fields);
                    let request = || {
                        client
                            .post(format!("{url}/server/panda/updateJob"))
                            .header("Content-Type", "application/json")
                            .header("Accept", "application/json")
                            .body(body.clone())
                    };
                    send_with_retry(&rec, "updateJob", request).await
                }
                Api::V1 => {
                    let mut fields =
                        json!({"job_id": id, "job_status": state, "node": node, "max_rss": 1000});
                    if state == "finished" {
                        fields["job_output_report"] = json!(report);
                    }
                    let request = || v1_request(&client, &url, "pilot/update_job", &fields);
                    send_with_retry(&rec, "update_job", request).await
                }
            };
            if state == "finished" && answer.as_ref().is_some_and(accepted) {
                handed.reported.push(id);
            }
            rec.record(
                if state == "running" {
                    "updateJob running"
                } else {
                    "updateJob finished"
                },
                started,
            );
        }
    }
    handed
}

/// Clients that only claim jobs, sharing a budget of claims.
#[derive(Clone)]
struct Claiming {
    client: reqwest::Client,
    url: String,
    site: String,
    per_call: usize,
    /// Report the claimed jobs `starting` (`--start`).
    start: bool,
    /// Claims still to be made by all clients together.
    left: Arc<AtomicU64>,
    deadline: Instant,
    rec: Arc<Recorder>,
}

impl Claiming {
    /// Claims until the budget is spent, the deadline passes, or the queue is empty; returns
    /// the PandaIDs handed out.
    async fn run(self, node: usize) -> Vec<i64> {
        let node = format!("claimer{node}");
        let mut claimed = Vec::new();
        while Instant::now() < self.deadline {
            let want = self.per_call as u64;
            let Ok(before) = self
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1).map(|_| left.saturating_sub(want))
                })
            else {
                break;
            };
            let n = before.min(want);
            let fields = json!({"site_name": self.site, "node": node, "n_jobs": n});
            let started = Instant::now();
            let request = || v1_request(&self.client, &self.url, "pilot/acquire_jobs", &fields);
            let answer = send_with_retry(&self.rec, "acquire_jobs", request).await;
            self.rec.record("acquire_jobs", started);
            let jobs: Vec<i64> = answer
                .as_ref()
                .and_then(|j| j["data"]["jobs"].as_array())
                .map(|jobs| jobs.iter().filter_map(|j| j["PandaID"].as_i64()).collect())
                .unwrap_or_default();
            if jobs.is_empty() && answer.is_some() {
                break;
            }
            if self.start && !jobs.is_empty() {
                self.report_starting(&jobs).await;
            }
            claimed.extend(jobs);
        }
        claimed
    }

    /// Reports claimed jobs `starting`; a refused update leaves its job `sent`, which the
    /// final check counts as in another state.
    async fn report_starting(&self, jobs: &[i64]) {
        let list: Vec<Json> = jobs
            .iter()
            .map(|id| json!({"job_id": id, "job_status": "starting"}))
            .collect();
        let body = json!({ "job_list": list });
        let started = Instant::now();
        let request = || v1_request(&self.client, &self.url, "pilot/update_jobs_bulk", &body);
        let answer = send_with_retry(&self.rec, "update_jobs_bulk", request).await;
        self.rec.record("update_jobs_bulk", started);
        let refused = answer
            .as_ref()
            .and_then(|a| a["data"].as_array())
            .map_or(jobs.len(), |answers| {
                answers.iter().filter(|a| !accepted(a)).count()
            });
        if refused > 0 {
            self.rec
                .fail(format_args!("update_jobs_bulk: {refused} updates refused"));
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    // Idle pooled connections are dropped before the server's keepalive_timeout (5 s) closes
    // them, so that no request is sent on a connection the server is closing.
    let mut headers = reqwest::header::HeaderMap::new();
    if let (Some(path), Some(origin)) = (&cli.token_file, &cli.origin) {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .context("the token is not a header value")?;
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        headers.insert(
            reqwest::header::ORIGIN,
            reqwest::header::HeaderValue::from_str(origin)
                .context("--origin is not a header value")?,
        );
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(4))
        .timeout(Duration::from_secs(60))
        .build()?;
    let usage_before = cli.server_pid.and_then(process_usage);
    let rec = Arc::new(Recorder::default());
    let started;
    let mut failed = false;
    match cli.command {
        Mode::Preload {
            database_url,
            sqlite,
            schema,
            site,
            archived,
            activated,
        } => {
            let config = match (database_url, sqlite) {
                (Some(url), None) => {
                    let mut config = panda_store::testing::parse_postgres_url(&url)
                        .context("--database-url must be postgres://user@host:port/name")?;
                    config.schema = schema.to_ascii_lowercase();
                    config
                }
                (None, Some(path)) => panda_store::DbConfig::sqlite(path),
                _ => anyhow::bail!("give --database-url or --sqlite"),
            };
            let store =
                panda_store::Store::open(&config, panda_store::StoreOptions::default()).await?;
            store.check_schema().await?;
            let t = Instant::now();
            store.preload_jobs(&site, archived, activated).await?;
            println!(
                "preloaded {archived} archived and {activated} activated jobs in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            store.close().await;
            return Ok(());
        }
        Mode::Tasks {
            jobs,
            finish,
            pilots,
            site,
            adder_only,
            build,
        } => {
            started = Instant::now();
            let how = tasks::TaskRun {
                jobs,
                finish: finish.min(jobs),
                pilots,
                adder_only,
                build,
            };
            tasks::run(&client, &cli.url, &site, how).await?;
            println!("whole run: {:.2}s", started.elapsed().as_secs_f64());
        }
        Mode::Events {
            jobs,
            events,
            clients,
            ranges,
            site,
            duration,
            rate,
        } => {
            started = Instant::now();
            let how = events::EventRun {
                jobs,
                events,
                clients: clients.min(jobs),
                ranges,
                duration,
                rate,
            };
            failed |= !events::run(&client, &cli.url, &site, how, rec.clone()).await?;
            println!("whole run: {:.2}s", started.elapsed().as_secs_f64());
        }
        Mode::Pilots {
            pilots,
            jobs,
            site,
            api,
            duration,
            submitters,
            batch,
        } => {
            let t = Instant::now();
            submit_all(&client, &cli.url, &site, jobs, "pre").await?;
            println!("preloaded {jobs} jobs in {:.2}s", t.elapsed().as_secs_f64());
            let stop = Arc::new(AtomicBool::new(false));
            started = Instant::now();
            let handles = PilotSetup {
                client: client.clone(),
                url: cli.url.clone(),
                site: site.clone(),
                api,
                stop: stop.clone(),
                rec: rec.clone(),
                wait_for_jobs: submitters > 0,
            }
            .spawn(pilots);
            let submitter = Submitter::new(&client, &cli.url, &site, &rec, batch);
            let submitting = submitter.spawn(submitters, "load", jobs as u64, &stop);
            let timer = {
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(duration)).await;
                    stop.store(true, Ordering::Relaxed);
                })
            };
            let handed = join_pilots(handles).await;
            for h in submitting {
                let _ = h.await;
            }
            timer.abort();
            let elapsed = started.elapsed();
            let cycles = handed.claimed.len();
            println!(
                "pilot cycles: {cycles} in {:.2}s = {:.1} cycles/s ({} pilots)",
                elapsed.as_secs_f64(),
                cycles as f64 / elapsed.as_secs_f64(),
                pilots
            );
            rec.report(elapsed);
            failed |= !check_jobs(&client, &cli.url, &handed).await?;
            if submitters > 0 {
                failed |= !check_submitted(&client, &cli.url, &submitter.acknowledged()).await?;
            }
        }
        Mode::Claims {
            claims,
            clients,
            per_call,
            site,
            duration,
            start,
        } => {
            started = Instant::now();
            let how = Claiming {
                start,
                client: client.clone(),
                url: cli.url.clone(),
                site,
                per_call: per_call.clamp(1, 1000),
                left: Arc::new(AtomicU64::new(claims as u64)),
                deadline: started + Duration::from_secs(duration),
                rec: rec.clone(),
            };
            let handles: Vec<_> = (0..clients)
                .map(|i| tokio::spawn(how.clone().run(i)))
                .collect();
            let mut claimed = Vec::new();
            for h in handles {
                claimed.extend(h.await.unwrap_or_default());
            }
            let elapsed = started.elapsed();
            println!(
                "claimed {} jobs in {:.2}s = {:.0} claims/s ({clients} clients, {per_call} per call)",
                claimed.len(),
                elapsed.as_secs_f64(),
                claimed.len() as f64 / elapsed.as_secs_f64()
            );
            rec.report(elapsed);
            let expected = if start { "starting" } else { "sent" };
            failed |= !check_claims(&client, &cli.url, &claimed, expected).await?;
        }
        Mode::Submit {
            clients,
            batch,
            jobs,
            site,
        } => {
            started = Instant::now();
            let next = Arc::new(AtomicU64::new(0));
            let submitter = Submitter::new(&client, &cli.url, &site, &rec, batch);
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let (submitter, next) = (submitter.clone(), next.clone());
                    tokio::spawn(async move {
                        submitter.run(format!("s{c}"), next, Some(jobs), None).await
                    })
                })
                .collect();
            for h in handles {
                let _ = h.await;
            }
            let elapsed = started.elapsed();
            println!("submitted {jobs} jobs in {:.2}s = {:.0} jobs/s ({clients} clients, batches of {batch}, activated at reply)", elapsed.as_secs_f64(), jobs as f64 / elapsed.as_secs_f64());
            rec.report(elapsed);
        }
        Mode::Mixed {
            pilots,
            submitters,
            batch,
            jobs,
            site,
            duration,
        } => {
            submit_all(&client, &cli.url, &site, jobs, "mix").await?;
            let stop = Arc::new(AtomicBool::new(false));
            started = Instant::now();
            let pilot_handles = PilotSetup {
                client: client.clone(),
                url: cli.url.clone(),
                site: site.clone(),
                api: Api::Legacy,
                stop: stop.clone(),
                rec: rec.clone(),
                wait_for_jobs: true,
            }
            .spawn(pilots);
            let submitter = Submitter::new(&client, &cli.url, &site, &rec, batch);
            let mut others = submitter.spawn(submitters, "m", jobs as u64, &stop);
            others.push(tokio::spawn(alive_probe(
                client.clone(),
                cli.url.clone(),
                rec.clone(),
                stop.clone(),
            )));
            tokio::time::sleep(Duration::from_secs(duration)).await;
            stop.store(true, Ordering::Relaxed);
            let handed = join_pilots(pilot_handles).await;
            for h in others {
                let _ = h.await;
            }
            let elapsed = started.elapsed();
            println!(
                "mixed: {} pilot cycles in {:.2}s = {:.1} cycles/s ({pilots} pilots, {submitters} submitters)",
                handed.claimed.len(),
                elapsed.as_secs_f64(),
                handed.claimed.len() as f64 / elapsed.as_secs_f64()
            );
            rec.report(elapsed);
            failed |= !check_jobs(&client, &cli.url, &handed).await?;
            failed |= !check_submitted(&client, &cli.url, &submitter.acknowledged()).await?;
        }
        Mode::Abuse {
            pilots,
            jobs,
            site,
            duration,
            hostile,
            per_address,
            bomb_rate,
            flood_rate,
        } => {
            let server: std::net::SocketAddr = cli
                .url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .context("--url must be http://IP:PORT for the abuse scenario")?;
            started = Instant::now();
            let phase = |tag: &'static str, rec: Arc<Recorder>| {
                let (client, url, site) = (client.clone(), cli.url.clone(), site.clone());
                async move {
                    submit_all(&client, &url, &site, jobs, tag).await?;
                    let stop = Arc::new(AtomicBool::new(false));
                    let t = Instant::now();
                    let handles = PilotSetup {
                        client: client.clone(),
                        url: url.clone(),
                        site,
                        api: Api::Legacy,
                        stop: stop.clone(),
                        rec: rec.clone(),
                        wait_for_jobs: false,
                    }
                    .spawn(pilots);
                    let probe = tokio::spawn(alive_probe(
                        client.clone(),
                        url.clone(),
                        rec.clone(),
                        stop.clone(),
                    ));
                    tokio::time::sleep(Duration::from_secs(duration)).await;
                    stop.store(true, Ordering::Relaxed);
                    let claimed = join_pilots(handles).await;
                    let _ = probe.await;
                    anyhow::Ok((claimed, t.elapsed()))
                }
            };
            let quiet_rec = Arc::new(Recorder::default());
            let (quiet, quiet_time) = phase("calm", quiet_rec.clone()).await?;
            let stop_abuse = Arc::new(AtomicBool::new(false));
            let counts = Arc::new(abuse::AbuseCounts::default());
            let hostile_handles = abuse::start(
                server,
                hostile,
                per_address,
                bomb_rate,
                flood_rate,
                stop_abuse.clone(),
                counts.clone(),
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            let open_before = counts.connections_opened.load(Ordering::Relaxed);
            let (abused, abused_time) = phase("rude", rec.clone()).await?;
            stop_abuse.store(true, Ordering::Relaxed);
            for h in hostile_handles {
                h.abort();
            }
            let rate = |n: usize, t: Duration| n as f64 / t.as_secs_f64();
            println!(
                "without abuse: {} pilot cycles in {:.2}s = {:.1} cycles/s ({pilots} pilots)",
                quiet.claimed.len(),
                quiet_time.as_secs_f64(),
                rate(quiet.claimed.len(), quiet_time)
            );
            quiet_rec.report(quiet_time);
            println!(
                "with abuse: {} pilot cycles in {:.2}s = {:.1} cycles/s = {:.0}% of the calm rate;                  {hostile} hostile connections ({open_before} opened before the phase, {} in all,                  {} closed by the server), {} bombs, {} flood requests",
                abused.claimed.len(),
                abused_time.as_secs_f64(),
                rate(abused.claimed.len(), abused_time),
                100.0 * rate(abused.claimed.len(), abused_time) / rate(quiet.claimed.len(), quiet_time).max(0.001),
                counts.connections_opened.load(Ordering::Relaxed),
                counts.closed_by_server.load(Ordering::Relaxed),
                counts.bombs.load(Ordering::Relaxed),
                counts.floods.load(Ordering::Relaxed),
            );
            rec.report(abused_time);
            println!(
                "abuse scenario: {:.1}s in all",
                started.elapsed().as_secs_f64()
            );
            failed |= quiet_rec.errors.load(Ordering::Relaxed) > 0;
            failed |= !check_jobs(&client, &cli.url, &quiet).await?;
            failed |= !check_jobs(&client, &cli.url, &abused).await?;
        }
        Mode::Monitor {
            viewers,
            duration,
            site,
            task,
            pace,
        } => {
            let how = monitor::Viewing {
                viewers,
                duration,
                site,
                task,
                pace,
            };
            let elapsed = monitor::run(&client, &cli.url, how, rec.clone()).await?;
            rec.report(elapsed);
        }
        Mode::Alive { clients, duration } => {
            started = Instant::now();
            let deadline = started + Duration::from_secs(duration);
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    let (client, url, rec) = (client.clone(), cli.url.clone(), rec.clone());
                    tokio::spawn(async move {
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            match client
                                .get(format!("{url}/api/v1/system/is_alive"))
                                .header("Accept", "application/json")
                                .send()
                                .await
                            {
                                Ok(r) => {
                                    let _ = r.bytes().await;
                                }
                                Err(_) => {
                                    rec.errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            rec.record("is_alive", t);
                        }
                    })
                })
                .collect();
            for h in handles {
                let _ = h.await;
            }
            rec.report(started.elapsed());
        }
    }
    if let (Some(pid), Some((cpu0, _))) = (cli.server_pid, usage_before) {
        if let Some((cpu1, rss)) = process_usage(pid) {
            println!(
                "server: {:.2} CPU s during the run, peak RSS {:.1} MB",
                cpu1 - cpu0,
                rss
            );
        }
    }
    if failed || rec.errors.load(Ordering::Relaxed) > 0 {
        anyhow::bail!("the run had errors or failed its checks");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_report_names_only_the_jobs_own_log_file() {
        let job = json!({"PandaID": 7, "logFile": "x.log.tgz", "logGUID": "g-1"});
        assert_eq!(
            output_report(&job),
            json!({"x.log.tgz": {"guid": "g-1", "fsize": 1, "adler32": "0"}})
        );
        assert_eq!(
            output_report(&json!({"PandaID": 7, "logFile": "NULL"})),
            json!({})
        );
        assert_eq!(output_report(&json!({"PandaID": 7})), json!({}));
    }

    #[test]
    fn a_job_handed_out_twice_is_counted_once_per_repeat() {
        assert_eq!(distinct(&[3, 1, 3, 2, 3]), (2, vec![1, 2, 3]));
        assert_eq!(distinct(&[]), (0, vec![]));
    }

    #[test]
    fn only_database_failures_are_sent_again() {
        // What this server and upstream's answer when their database is down.
        assert!(database_error(
            &json!({"StatusCode": 30, "errorDialog": "db"})
        ));
        assert!(database_error(
            &json!({"success": false, "message": "database error in the PanDA server", "data": null})
        ));
        assert!(database_error(
            &json!({"success": false, "message": "x", "data": {"StatusCode": 30}})
        ));
        // Answers that are the call's own: no job, a refused caller, a job in another state.
        assert!(!database_error(&json!({"StatusCode": 20})));
        assert!(!database_error(
            &json!({"success": false, "message": "No jobs in PanDA", "data": null})
        ));
        assert!(!database_error(
            &json!({"success": false, "message": "Invalid job status: finished", "data": {"StatusCode": 50}})
        ));
        assert!(!database_error(
            &json!({"success": true, "message": "database error is a fine phrase", "data": {}})
        ));
    }
}
