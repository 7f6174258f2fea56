//! Job counts for monitors and Harvester (`/api/v1/statistics`), open to everyone as upstream.
//!
//! Counts come from the live job tables and the archive's recent rows (12 hours, or the
//! caller's window). A queue's cloud is the `cloud` of its CRIC record, else the job's.
//! Upstream's share-based view groups by the label its global share implies; we have no share
//! table, so it groups by the job's own `prodSourceLabel`. Every innermost map of a view lists
//! its view's usual statuses, zero when no job has them.

use std::collections::{BTreeMap, HashMap};

use chrono::Duration;
use panda_core::{time, JobTable};
use panda_store::JobStatRow;
use serde_json::{json, Map, Value as Json};

use crate::{JobService, ServiceError};

const ANALYSIS_LABELS: &[&str] = &["user", "panda"];
const PRODUCTION_LABELS: &[&str] = &["managed", "ptest", "prod_test"];
/// The archive window when the caller gives none.
pub const DEFAULT_WINDOW_MINUTES: i64 = 12 * 60;
/// The longest archive window a caller may ask for.
pub const MAX_WINDOW_MINUTES: i64 = 7 * 24 * 60;

/// Which count tree to build; one per `/api/v1/statistics` function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatistics {
    /// cloud → status, of production (or analysis) jobs.
    ByCloud { analysis: bool },
    /// cloud → processing type → status, of production jobs.
    ProductionByCloudAndProcessingType,
    /// site → status, of live jobs but `merging`.
    ActiveBySite,
    /// site → resource type → label → status, of live jobs but `merging`.
    ActiveDetailedBySite,
    /// site → resource type → status.
    BySiteAndResourceType,
    /// site → label (for the share) → resource type → status.
    BySiteShareAndResourceType,
}

impl JobService {
    /// The counts of `view`, the archive read back `window_minutes` (at most
    /// [`MAX_WINDOW_MINUTES`]).
    pub async fn job_statistics(
        &self,
        view: JobStatistics,
        window_minutes: i64,
    ) -> Result<Json, ServiceError> {
        let window = window_minutes.clamp(0, MAX_WINDOW_MINUTES);
        let rows = self
            .stores
            .jobs
            .job_stat_rows(time::now() - Duration::minutes(window))
            .await?;
        // A queue list that cannot be read leaves the jobs' own clouds.
        let clouds: HashMap<String, String> = self
            .stores
            .sites
            .all_queues()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, data)| {
                let data: Json = serde_json::from_str(&data).ok()?;
                Some((name, data.get("cloud")?.as_str()?.to_string()))
            })
            .collect();
        Ok(count_tree(view, &rows, &clouds))
    }
}

/// The tree of `view` over `rows`; `clouds` maps queues to their CRIC cloud.
fn count_tree(view: JobStatistics, rows: &[JobStatRow], clouds: &HashMap<String, String>) -> Json {
    let cloud_of = |row: &JobStatRow| {
        clouds
            .get(&row.site)
            .cloned()
            .unwrap_or_else(|| row.cloud.clone())
    };
    let labels: Option<&[&str]> = match view {
        JobStatistics::ByCloud { analysis: true } => Some(ANALYSIS_LABELS),
        JobStatistics::ByCloud { analysis: false }
        | JobStatistics::ProductionByCloudAndProcessingType => Some(PRODUCTION_LABELS),
        _ => None,
    };
    let rows: Vec<&JobStatRow> = rows
        .iter()
        .filter(|r| labels.is_none_or(|l| l.contains(&r.label.as_str())))
        .collect();
    let live = |r: &&&JobStatRow| r.table != JobTable::Archived && r.status != "merging";
    const LIVE: &[&str] = &["assigned", "activated", "running"];
    const ALL: &[&str] = &["assigned", "activated", "running", "finished", "failed"];
    match view {
        JobStatistics::ByCloud { .. } => {
            nest(rows.iter(), |r| vec![cloud_of(r), r.status.clone()], &[])
        }
        JobStatistics::ProductionByCloudAndProcessingType => nest(
            rows.iter(),
            |r| vec![cloud_of(r), r.processing_type.clone(), r.status.clone()],
            &[],
        ),
        JobStatistics::ActiveBySite => nest(
            rows.iter().filter(live),
            |r| vec![r.site.clone(), r.status.clone()],
            LIVE,
        ),
        JobStatistics::ActiveDetailedBySite => nest(
            rows.iter().filter(live),
            |r| {
                vec![
                    r.site.clone(),
                    r.resource_type.clone(),
                    r.label.clone(),
                    r.status.clone(),
                ]
            },
            LIVE,
        ),
        JobStatistics::BySiteAndResourceType => nest(
            rows.iter(),
            |r| vec![r.site.clone(), r.resource_type.clone(), r.status.clone()],
            ALL,
        ),
        JobStatistics::BySiteShareAndResourceType => nest(
            rows.iter(),
            |r| {
                vec![
                    r.site.clone(),
                    r.label.clone(),
                    r.resource_type.clone(),
                    r.status.clone(),
                ]
            },
            ALL,
        ),
    }
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
        let mut node = &mut root;
        for key in path(row) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: JobTable, site: &str, label: &str, status: &str, count: i64) -> JobStatRow {
        JobStatRow {
            table,
            site: site.into(),
            cloud: "JOBCLOUD".into(),
            label: label.into(),
            resource_type: "SCORE".into(),
            processing_type: "simul".into(),
            gshare: String::new(),
            status: status.into(),
            count,
        }
    }

    #[test]
    fn active_counts_leave_out_the_archive_and_merging_and_fill_in_zeros() {
        let rows = [
            row(JobTable::Active, "Q1", "managed", "running", 3),
            row(JobTable::Active, "Q1", "managed", "merging", 5),
            row(JobTable::Archived, "Q1", "managed", "finished", 7),
        ];
        let tree = count_tree(JobStatistics::ActiveBySite, &rows, &HashMap::new());
        assert_eq!(
            tree,
            json!({"Q1": {"assigned": 0, "activated": 0, "running": 3}})
        );
    }

    #[test]
    fn clouds_come_from_the_queue_record_before_the_job_and_labels_select_the_kind() {
        let rows = [
            row(JobTable::Active, "Q1", "managed", "running", 2),
            row(JobTable::Active, "Q2", "managed", "running", 1),
            row(JobTable::Active, "Q1", "user", "running", 4),
        ];
        let clouds = HashMap::from([("Q1".to_string(), "CERN".to_string())]);
        let production = count_tree(JobStatistics::ByCloud { analysis: false }, &rows, &clouds);
        assert_eq!(
            production,
            json!({"CERN": {"running": 2}, "JOBCLOUD": {"running": 1}})
        );
        let analysis = count_tree(JobStatistics::ByCloud { analysis: true }, &rows, &clouds);
        assert_eq!(analysis, json!({"CERN": {"running": 4}}));
        assert_eq!(
            count_tree(JobStatistics::ActiveBySite, &[], &clouds),
            json!({})
        );
    }
}
