//! `panda-bench monitor`: viewers reading the embedded monitor's pages as a browser does
//! (HTML), each page in turn, either as fast as the server answers (`--pace 0`) or one page
//! every `pace` seconds as a person reads; latency per page. Run it beside
//! `panda-bench pilots` to see what viewers cost the pilots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value as Json;

use crate::Recorder;

/// The pages one viewer cycles through: `(name, path)`.
async fn pages(
    client: &reqwest::Client,
    url: &str,
    site: &str,
    task: Option<i64>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let jobs = format!("/jobs/?computingsite={site}&jobstatus=finished&days=2");
    let listed: Json = client
        .get(format!("{url}{jobs}&json&limit=1"))
        .send()
        .await?
        .json()
        .await
        .context("the job listing as JSON")?;
    let Some(id) = listed["jobs"][0]["pandaid"].as_i64() else {
        bail!("no finished job at {site} in the last two days: preload some first");
    };
    let mut pages = vec![
        ("jobs by site+state", jobs),
        ("job", format!("/job/{id}/")),
        ("dash", "/dash/".to_string()),
    ];
    if let Some(task) = task {
        pages.push(("task", format!("/task/{task}/")));
    }
    Ok(pages)
}

/// What one `panda-bench monitor` run does.
pub struct Viewing {
    pub viewers: usize,
    /// Seconds the run lasts.
    pub duration: u64,
    /// The queue whose finished jobs are listed.
    pub site: String,
    pub task: Option<i64>,
    /// Seconds between one viewer's pages; 0 for as fast as answered.
    pub pace: f64,
}

pub async fn run(
    client: &reqwest::Client,
    url: &str,
    how: Viewing,
    rec: Arc<Recorder>,
) -> anyhow::Result<Duration> {
    let Viewing {
        viewers,
        duration,
        site,
        task,
        pace,
    } = how;
    let site = site.as_str();
    let pages = Arc::new(pages(client, url, site, task).await?);
    for (name, path) in pages.iter() {
        println!("page {name}: {path}");
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(duration);
    let handles: Vec<_> = (0..viewers)
        .map(|viewer| {
            let (client, url, rec, pages) =
                (client.clone(), url.to_string(), rec.clone(), pages.clone());
            tokio::spawn(async move {
                let mut i = viewer;
                let pace = Duration::from_secs_f64(pace.max(0.0));
                // Paced viewers start spread over one pace, as people do.
                if !pace.is_zero() {
                    let offset = pace.mul_f64(viewer as f64 / viewers.max(1) as f64);
                    tokio::time::sleep(offset).await;
                }
                while Instant::now() < deadline {
                    let (name, path) = &pages[i % pages.len()];
                    i += 1;
                    let t = Instant::now();
                    match client.get(format!("{url}{path}")).send().await {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(_) => rec.record(name, t),
                            Err(e) => rec.fail(format!("{path}: {e}")),
                        },
                        Ok(r) => rec.fail(format!("{path}: HTTP {}", r.status())),
                        Err(e) => rec.fail(format!("{path}: {e}")),
                    }
                    if let Some(left) = pace.checked_sub(t.elapsed()) {
                        tokio::time::sleep(left).await;
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await?;
    }
    Ok(started.elapsed())
}
