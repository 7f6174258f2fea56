//! `panda-bench events`: the event service under load. Submits one event-service task of
//! `jobs` jobs (`events` events each, ranges of one event), waits until every job is
//! `activated`, then `clients` simulated pilots each take a job and loop for `duration`
//! seconds: legacy `getEventRanges` for `ranges` ranges, then `updateEventRanges` reporting
//! them finished (version 1, one zip per call, as the pilot's executor does), each call timed.
//! With `rate`, the pilots together offer that many calls a second (each paced on its own
//! clock, catching up when behind), as pilots that process events between calls do; without
//! it each calls again as soon as it is answered, which measures the most the server does.
//! Ends with how many ranges were handed out twice (must be 0).
//!
//! The server needs an online analysis queue named `site` and, in `[daemon] config`, the
//! steps `task_refiner`, `contents_feeder` and `job_generator`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value as Json};

use crate::tasks::{post, wait_for_jobs};
use crate::Recorder;

fn parameters(name: &str, jobs: usize, events: usize) -> Json {
    json!({
        "taskName": format!("user.bench.{name}/"), "uniqueTaskName": true, "vo": "atlas",
        "prodSourceLabel": "user", "processingType": "panda-client-2.2.0-jedi-run",
        "nEvents": jobs * events, "nEventsPerJob": events, "nEventsPerWorker": 1,
        "maxAttemptES": 3, "noInput": true, "maxAttempt": 3,
        "sourceURL": "http://127.0.0.1:25080",
        "log": {"dataset": format!("user.bench.{name}.log/"),
                "container": format!("user.bench.{name}.log/"), "type": "template",
                "param_type": "log",
                "value": format!("user.bench.{name}.log.$JEDITASKID.${{SN}}.log.tgz")},
        "jobParameters": [{"type": "constant", "value": "-p \"echo%20hello\""}]
    })
}

pub struct EventRun {
    pub jobs: usize,
    pub events: usize,
    pub clients: usize,
    pub ranges: usize,
    pub duration: u64,
    /// Calls a second offered by all pilots together; `None`: as fast as answered.
    pub rate: Option<f64>,
}

/// A legacy call with form fields, answered in JSON.
async fn legacy(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    form: &[(&str, String)],
) -> anyhow::Result<Json> {
    let response = client
        .post(format!("{base}/server/panda/{method}"))
        .header("Accept", "application/json")
        .form(form)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{method}: HTTP {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{method}: not JSON: {text}"))
}

/// One simulated pilot: takes a job, reports it running, then takes and reports ranges.
async fn consumer(
    client: reqwest::Client,
    base: String,
    site: String,
    ranges: usize,
    pace: Option<Duration>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<String>> {
    let mut ticks = pace.map(|p| {
        // Pilots start spread over one period, not all at once.
        let offset = p.mul_f64(rand_fraction());
        tokio::time::interval_at(tokio::time::Instant::now() + offset, p)
    });
    let reply = post(
        &client,
        &format!("{base}/api/v1/pilot/acquire_jobs"),
        json!({"site_name": site, "prod_source_label": "user", "n_jobs": 1}),
    )
    .await?;
    let job = reply["data"]["jobs"]
        .get(0)
        .cloned()
        .with_context(|| format!("no job to take: {reply}"))?;
    let id = job["PandaID"].as_i64().context("PandaID")?;
    post(
        &client,
        &format!("{base}/api/v1/pilot/update_job"),
        json!({"job_id": id, "job_status": "running", "attempt_nr": job["attemptNr"]}),
    )
    .await?;
    let mut seen = Vec::new();
    let ask = [
        ("pandaID", id.to_string()),
        ("jobsetID", job["jobsetID"].to_string()),
        ("taskID", job["taskID"].to_string()),
        ("nRanges", ranges.to_string()),
    ];
    while !stop.load(Ordering::Relaxed) {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        let t = Instant::now();
        let got = legacy(&client, &base, "getEventRanges", &ask).await?;
        rec.record("getEventRanges", t);
        let list = got["eventRanges"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            break;
        }
        let ids: Vec<String> = list
            .iter()
            .filter_map(|r| r["eventRangeID"].as_str().map(str::to_string))
            .collect();
        let report = json!([{
            "zipFile": {"numEvents": ids.len(), "objstoreID": 1318, "pathConvention": 1000,
                        "lfn": format!("EventService_premerge_{}.tar", ids[0]),
                        "fsize": 1024, "adler32": "0a1b2c3d"},
            "eventRanges": ids.iter()
                .map(|i| json!({"eventRangeID": i, "eventStatus": "finished"}))
                .collect::<Vec<_>>(),
        }]);
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        let t = Instant::now();
        let answer = legacy(
            &client,
            &base,
            "updateEventRanges",
            &[("eventRanges", report.to_string()), ("version", "1".into())],
        )
        .await?;
        rec.record("updateEventRanges", t);
        let accepted = answer["Returns"]
            .as_array()
            .is_some_and(|r| r.len() == ids.len() && r.iter().all(|v| v == true));
        if !accepted {
            rec.fail(format!("updateEventRanges not accepted: {answer}"));
        }
        seen.extend(ids);
    }
    Ok(seen)
}

pub async fn run(
    client: &reqwest::Client,
    base: &str,
    site: &str,
    how: EventRun,
    rec: Arc<Recorder>,
) -> anyhow::Result<bool> {
    let name = format!("es{}", std::process::id());
    let t = Instant::now();
    let reply = post(
        client,
        &format!("{base}/api/v1/task/submit"),
        json!({"task_parameters": parameters(&name, how.jobs, how.events)}),
    )
    .await?;
    let id = reply["data"]
        .as_i64()
        .with_context(|| format!("task not submitted: {reply}"))?;
    let (limit, poll) = (Duration::from_secs(900), Duration::from_millis(500));
    wait_for_jobs(client, base, id, ("activated", how.jobs), t, limit, poll).await?;
    println!(
        "task {id}: {} jobs of {} ranges made and activated in {:.1}s",
        how.jobs,
        how.events,
        t.elapsed().as_secs_f64()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let pace = how
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(how.clients as f64 / r));
    let started = Instant::now();
    let handles: Vec<_> = (0..how.clients)
        .map(|_| {
            tokio::spawn(consumer(
                client.clone(),
                base.to_string(),
                site.to_string(),
                how.ranges,
                pace,
                rec.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let timer = {
        let stop = stop.clone();
        let duration = how.duration;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(duration)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut all = Vec::new();
    let mut failed = false;
    for handle in handles {
        match handle.await {
            Ok(Ok(seen)) => all.extend(seen),
            Ok(Err(e)) => {
                rec.fail(e);
                failed = true;
            }
            Err(e) => {
                rec.fail(e);
                failed = true;
            }
        }
    }
    // Until the last pilot stopped: the time limit, or every range handed out.
    let elapsed = started.elapsed();
    timer.abort();
    let unique: HashSet<&String> = all.iter().collect();
    let calls: usize = rec
        .calls
        .lock()
        .map(|c| c.values().map(Vec::len).sum())
        .unwrap_or(0);
    let offered = how.rate.map_or_else(
        || "as fast as answered".to_string(),
        |r| format!("{r:.0} calls/s offered"),
    );
    println!(
        "event calls: {calls} in {:.2}s = {:.0} calls/s ({} clients, {} ranges per call, \
         {offered}); ranges {} handed out, {} twice",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64(),
        how.clients,
        how.ranges,
        all.len(),
        all.len() - unique.len()
    );
    rec.report(elapsed);
    Ok(!failed && all.len() == unique.len())
}

/// A number in [0, 1) that differs between pilots (the clock's nanoseconds, mixed).
fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() % 1_000_000) as f64 / 1_000_000.0
}
