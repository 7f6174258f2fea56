//! `panda-bench tasks`: task processing at scale. Submits one prun-shaped `noInput` task of
//! `jobs` jobs and measures, against a server whose daemon runs the task-processing steps:
//!
//! - generation: from the submission until every job exists and is `activated`, in jobs/s;
//! - the task listing pbook shows (`task/get_tasks_detailed_info_since`), median of 5 calls;
//! - post-processing: `pilots` simulated pilots finish `finish` of the jobs over `/api/v1`,
//!   and the time from the first report until the task counts them all finished, in files/s
//!   (the Adder and the post-processor both in the path); with `adder_only`, the time until
//!   the Adder has finished them all, for a server without the post-processor (which is then
//!   timed on its own: `panda-server daemon --run-once post_processor`).
//!
//! With `build`, the task has a build step: generation then ends when the build job is
//! `activated` and every run job waits `assigned`; a simulated pilot finishes the build, and
//! the release is timed until every run job is `activated` (upstream's Activator), in jobs/s.
//!
//! The server needs an online analysis queue named `site` and, in `[daemon] config`, the
//! steps `task_refiner`, `contents_feeder`, `job_generator`, `add_main` and `post_processor`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value as Json};

fn parameters(name: &str, jobs: usize, build: bool) -> Json {
    let mut params = json!({
        "taskName": format!("user.bench.{name}/"), "uniqueTaskName": true, "vo": "atlas",
        "prodSourceLabel": "user", "processingType": "panda-client-2.2.0-jedi-run",
        "nEvents": jobs, "nEventsPerJob": 1, "noInput": true, "maxAttempt": 3,
        "sourceURL": "http://127.0.0.1:25080",
        "log": {"dataset": format!("user.bench.{name}.log/"),
                "container": format!("user.bench.{name}.log/"), "type": "template",
                "param_type": "log",
                "value": format!("user.bench.{name}.log.$JEDITASKID.${{SN}}.log.tgz")},
        "jobParameters": [
            {"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
            {"type": "constant", "value": "-r ."},
            {"type": "constant", "value": "-a jobO.bench.tar.gz"},
            {"type": "constant", "value": "-p \"", "padding": false},
            {"type": "constant", "value": "echo%20hello", "padding": false},
            {"type": "constant", "value": "\""}]
    });
    if build {
        params["buildSpec"] = json!({"prodSourceLabel": "panda",
            "archiveName": "sources.bench.tar.gz",
            "jobParameters": "-i ${IN} -o ${OUT} --sourceURL ${SURL} -r . "});
        params["jobParameters"][2] = json!({"type": "constant", "value": "-l ${LIB}"});
    }
    params
}

pub(crate) async fn post(client: &reqwest::Client, url: &str, body: Json) -> anyhow::Result<Json> {
    let reply = client
        .post(url)
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await?
        .json::<Json>()
        .await?;
    Ok(reply)
}

async fn get(client: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> anyhow::Result<Json> {
    Ok(client
        .get(url)
        .header("Accept", "application/json")
        .query(query)
        .send()
        .await?
        .json::<Json>()
        .await?)
}

/// The jobs in `status` out of `task/get_details`' job statistics (`status*N,...`).
fn jobs_in(details: &Json, status: &str) -> usize {
    let prefix = format!("{status}*");
    details["data"]["statistics"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter_map(|part| part.trim().strip_prefix(prefix.as_str()))
        .filter_map(|n| n.parse::<usize>().ok())
        .sum()
}

/// Waits until at least `want` of task `id`'s jobs are in `status` (`task/get_details`, every
/// `poll`), at most `limit` from `since`.
pub(crate) async fn wait_for_jobs(
    client: &reqwest::Client,
    base: &str,
    id: i64,
    (status, want): (&str, usize),
    since: Instant,
    limit: Duration,
    poll: Duration,
) -> anyhow::Result<()> {
    loop {
        let details = get(
            client,
            &format!("{base}/api/v1/task/get_details"),
            &[("task_id", &id.to_string())],
        )
        .await?;
        let n = jobs_in(&details, status);
        if n >= want {
            return Ok(());
        }
        if since.elapsed() > limit {
            bail!(
                "only {n} of {want} jobs {status} after {} s",
                limit.as_secs()
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// The task as pbook lists it, and how long the listing took.
async fn listed(client: &reqwest::Client, base: &str, id: i64) -> anyhow::Result<(Json, Duration)> {
    let t = Instant::now();
    let reply = get(
        client,
        &format!("{base}/api/v1/task/get_tasks_detailed_info_since"),
        &[("since", "2000-01-01 00:00:00")],
    )
    .await?;
    let elapsed = t.elapsed();
    let task = reply["data"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["jediTaskID"] == id).cloned())
        .unwrap_or(Json::Null);
    Ok((task, elapsed))
}

/// Reports `job` running, then finished with every output.
async fn finish_job(client: &reqwest::Client, base: &str, job: &Json) -> anyhow::Result<()> {
    let id = job["PandaID"].as_i64().context("PandaID")?;
    let mut xml = serde_json::Map::new();
    for lfn in job["outFiles"].as_str().unwrap_or_default().split(',') {
        if !lfn.is_empty() {
            xml.insert(
                lfn.into(),
                json!({"guid": "", "fsize": 1000, "adler32": "0a1b2c3d",
                       "surl": format!("file://localhost/se/{lfn}")}),
            );
        }
    }
    let update = format!("{base}/api/v1/pilot/update_job");
    post(
        client,
        &update,
        json!({"job_id": id, "job_status": "running", "attempt_nr": job["attemptNr"]}),
    )
    .await?;
    post(
        client,
        &update,
        json!({"job_id": id, "job_status": "finished", "attempt_nr": job["attemptNr"],
               "job_output_report": Json::Object(xml).to_string()}),
    )
    .await?;
    Ok(())
}

/// One simulated pilot: takes user jobs at `site` and finishes them, until `left` is 0.
async fn pilot(
    client: reqwest::Client,
    base: String,
    site: String,
    left: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    while left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let reply = post(
            &client,
            &format!("{base}/api/v1/pilot/acquire_jobs"),
            json!({"site_name": site, "prod_source_label": "user", "n_jobs": 1}),
        )
        .await?;
        let Some(job) = reply["data"]["jobs"].get(0).cloned() else {
            left.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        finish_job(&client, &base, &job).await?;
    }
    Ok(())
}

/// Finishes the task's build job and times the release of its `jobs` run jobs.
async fn release(
    client: &reqwest::Client,
    base: &str,
    site: &str,
    id: i64,
    jobs: usize,
) -> anyhow::Result<()> {
    let reply = post(
        client,
        &format!("{base}/api/v1/pilot/acquire_jobs"),
        json!({"site_name": site, "prod_source_label": "user", "n_jobs": 1}),
    )
    .await?;
    let Some(build) = reply["data"]["jobs"].get(0).cloned() else {
        bail!("no build job to take: {reply}");
    };
    if build["prodSourceLabel"] != "panda" {
        bail!("the first job is not the build job: {build}");
    }
    let reported = Instant::now();
    finish_job(client, base, &build).await?;
    let (limit, poll) = (Duration::from_secs(600), Duration::from_millis(200));
    wait_for_jobs(client, base, id, ("activated", jobs), reported, limit, poll).await?;
    let released = reported.elapsed();
    println!(
        "released {jobs} held jobs in {:.2}s after the build's report = {:.0} jobs/s \
         (Adder, post-processor and release)",
        released.as_secs_f64(),
        jobs as f64 / released.as_secs_f64()
    );
    Ok(())
}

/// What one `panda-bench tasks` run does.
pub struct TaskRun {
    pub jobs: usize,
    /// Jobs the simulated pilots finish afterwards (0: none).
    pub finish: usize,
    pub pilots: usize,
    pub adder_only: bool,
    pub build: bool,
}

pub async fn run(
    client: &reqwest::Client,
    base: &str,
    site: &str,
    how: TaskRun,
) -> anyhow::Result<()> {
    let TaskRun {
        jobs,
        finish,
        pilots,
        adder_only,
        build,
    } = how;
    let name = format!("t{}", std::process::id());
    let submitted = Instant::now();
    let reply = post(
        client,
        &format!("{base}/api/v1/task/submit"),
        json!({"task_parameters": parameters(&name, jobs, build)}),
    )
    .await?;
    let Some(id) = reply["data"].as_i64() else {
        bail!("task/submit failed: {reply}");
    };
    let waiting = if build { "assigned" } else { "activated" };
    let (limit, poll) = (Duration::from_secs(600), Duration::from_millis(500));
    wait_for_jobs(client, base, id, (waiting, jobs), submitted, limit, poll).await?;
    let generation = submitted.elapsed();
    println!(
        "generated {jobs} jobs in {:.2}s = {:.0} jobs/s (submission to all activated, task {id})",
        generation.as_secs_f64(),
        jobs as f64 / generation.as_secs_f64()
    );
    let mut listings = Vec::new();
    for _ in 0..5 {
        listings.push(listed(client, base, id).await?.1);
    }
    listings.sort();
    println!(
        "task listing (pbook show): median {:.1} ms, max {:.1} ms",
        listings[2].as_secs_f64() * 1000.0,
        listings[4].as_secs_f64() * 1000.0
    );
    if build {
        release(client, base, site, id, jobs).await?;
    }
    if finish == 0 {
        return Ok(());
    }
    let first_report = Instant::now();
    let left = Arc::new(AtomicUsize::new(finish));
    let handles: Vec<_> = (0..pilots)
        .map(|_| {
            tokio::spawn(pilot(
                client.clone(),
                base.to_string(),
                site.to_string(),
                left.clone(),
            ))
        })
        .collect();
    for handle in handles {
        handle.await??;
    }
    let reported = first_report.elapsed();
    if adder_only {
        let (limit, poll) = (Duration::from_secs(600), Duration::from_millis(200));
        wait_for_jobs(
            client,
            base,
            id,
            ("finished", finish),
            first_report,
            limit,
            poll,
        )
        .await?;
        println!(
            "finished {finish} jobs: reports sent in {:.2}s, all finished by the Adder after {:.2}s",
            reported.as_secs_f64(),
            first_report.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    loop {
        let (task, _) = listed(client, base, id).await?;
        let finished = task["nFilesFinished"].as_u64().unwrap_or(0) as usize;
        if finished >= finish {
            break;
        }
        if first_report.elapsed() > Duration::from_secs(600) {
            bail!("only {finished} of {finish} files accounted for after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accounted = first_report.elapsed();
    println!(
        "finished {finish} jobs: reports sent in {:.2}s ({:.0}/s, {pilots} pilots); accounted for \
         by the task in {:.2}s = {:.0} files/s",
        reported.as_secs_f64(),
        finish as f64 / reported.as_secs_f64(),
        accounted.as_secs_f64(),
        finish as f64 / accounted.as_secs_f64()
    );
    Ok(())
}
