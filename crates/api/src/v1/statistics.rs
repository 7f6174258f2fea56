//! `statistics`: job counts for monitors and Harvester, open to everyone as upstream.
//!
//! Counts come from the live job tables and the archive's recent rows (12 hours, or
//! `time_window` minutes). A queue's cloud is the `cloud` of its CRIC record, else the job's.
//! Upstream's share-based function groups by the label its global share implies; we have no
//! share table, so it groups by the job's own `prodSourceLabel`.

use std::collections::{BTreeMap, HashMap};

use chrono::Duration;
use panda_core::{time, JobTable};
use panda_store::JobStatRow;
use serde_json::{json, Map, Value as Json};

use super::args::ArgsExt;
use super::{Call, Envelope};
use crate::AppState;

const ANALYSIS_LABELS: &[&str] = &["user", "panda"];
const PRODUCTION_LABELS: &[&str] = &["managed", "ptest", "prod_test"];
const DEFAULT_WINDOW_MINUTES: i64 = 12 * 60;
const MAX_WINDOW_MINUTES: i64 = 7 * 24 * 60;

pub(crate) async fn route(state: &AppState, call: &Call, function: &str) -> Envelope {
    let window =
        match function {
            "job_stats_by_site_and_resource_type" | "job_stats_by_site_share_and_resource_type" => {
                match call.args.int("time_window") {
                    None => DEFAULT_WINDOW_MINUTES,
                    Some(w) if (0..=MAX_WINDOW_MINUTES).contains(&w) => w,
                    Some(_) => return Envelope::fail(
                        "Parameter \"time_window\" needs to be a positive integer smaller than \
                         10080 min (7 days)",
                    ),
                }
            }
            _ => DEFAULT_WINDOW_MINUTES,
        };
    let labels: Option<&[&str]> = match function {
        "job_stats_by_cloud" => match call.args.text("type").unwrap_or("production") {
            "production" => Some(PRODUCTION_LABELS),
            "analysis" => Some(ANALYSIS_LABELS),
            _ => {
                return Envelope::fail(
                    "Parameter \"type\" needs to be either \"production\" or \"analysis\"",
                )
            }
        },
        "production_job_stats_by_cloud_and_processing_type" => Some(PRODUCTION_LABELS),
        _ => None,
    };
    let store = state.service.store();
    let since = time::now() - Duration::minutes(window);
    let rows = match store.job_stat_rows(since).await {
        Ok(rows) => rows,
        Err(_) => return Envelope::fail("Database failure getting the job statistics"),
    };
    let clouds: HashMap<String, String> = store
        .all_queues()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, data)| {
            let data: Json = serde_json::from_str(&data).ok()?;
            Some((name, data.get("cloud")?.as_str()?.to_string()))
        })
        .collect();
    let cloud_of = |row: &JobStatRow| {
        clouds
            .get(&row.site)
            .cloned()
            .unwrap_or_else(|| row.cloud.clone())
    };
    let rows: Vec<&JobStatRow> = rows
        .iter()
        .filter(|r| labels.is_none_or(|l| l.contains(&r.label.as_str())))
        .collect();
    let live = |r: &&&JobStatRow| r.table != JobTable::Archived;
    let data = match function {
        "job_stats_by_cloud" => nest(rows.iter(), |r| vec![cloud_of(r), r.status.clone()], &[]),
        "production_job_stats_by_cloud_and_processing_type" => nest(
            rows.iter(),
            |r| vec![cloud_of(r), r.processing_type.clone(), r.status.clone()],
            &[],
        ),
        "active_job_stats_by_site" => nest(
            rows.iter().filter(live).filter(|r| r.status != "merging"),
            |r| vec![r.site.clone(), r.status.clone()],
            &["assigned", "activated", "running"],
        ),
        "active_job_detailed_stats_by_site" => nest(
            rows.iter().filter(live).filter(|r| r.status != "merging"),
            |r| {
                vec![
                    r.site.clone(),
                    r.resource_type.clone(),
                    r.label.clone(),
                    r.status.clone(),
                ]
            },
            &["assigned", "activated", "running"],
        ),
        "job_stats_by_site_and_resource_type" => nest(
            rows.iter(),
            |r| vec![r.site.clone(), r.resource_type.clone(), r.status.clone()],
            &["assigned", "activated", "running", "finished", "failed"],
        ),
        _ => nest(
            rows.iter(),
            |r| {
                vec![
                    r.site.clone(),
                    r.label.clone(),
                    r.resource_type.clone(),
                    r.status.clone(),
                ]
            },
            &["assigned", "activated", "running", "finished", "failed"],
        ),
    };
    Envelope::ok(data)
}

/// A tree of counts keyed by `path` (the last key is the status); every innermost map gets
/// the `zero_filled` statuses.
fn nest<'a>(
    rows: impl Iterator<Item = &'a &'a JobStatRow>,
    path: impl Fn(&JobStatRow) -> Vec<String>,
    zero_filled: &[&str],
) -> Json {
    #[derive(Default)]
    struct Node(BTreeMap<String, Node>, i64);
    let mut root = Node::default();
    for row in rows {
        let keys = path(row);
        let mut node = &mut root;
        for key in keys {
            node = node.0.entry(key).or_default();
        }
        node.1 += row.count;
    }
    fn render(node: &Node, zero_filled: &[&str]) -> Json {
        let leaves = node.0.values().all(|n| n.0.is_empty());
        let mut map = Map::new();
        if leaves {
            for status in zero_filled {
                map.insert(status.to_string(), json!(0));
            }
        }
        for (key, child) in &node.0 {
            let value = if child.0.is_empty() {
                json!(child.1)
            } else {
                render(child, zero_filled)
            };
            map.insert(key.clone(), value);
        }
        Json::Object(map)
    }
    if root.0.is_empty() {
        return json!({});
    }
    render(&root, zero_filled)
}
