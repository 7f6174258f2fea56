//! Choosing a queue for a job submitted without `computingSite`.
//!
//! The rule, deliberately simple: among queues that are `online` (not offline, test or
//! brokeroff), whose `type` fits the job's `prodSourceLabel` (analysis labels `user` and `panda`
//! go to analysis or unified queues, everything else to production or unified ones), and whose
//! limits fit the job (`minRamCount` ≤ `maxrss`, `coreCount` ≤ `corecount`, `maxWalltime` ≤
//! `maxtime`, each checked only when both sides are set), take the one with the fewest
//! `activated` jobs; ties go to the first name in order.

use std::collections::HashMap;

use panda_core::{JobAttr, JobSpec, QueueSpec, QueueStatus, QueueType};

fn is_analysis_label(label: &str) -> bool {
    matches!(label, "user" | "panda")
}

fn type_fits(queue: &QueueType, label: &str) -> bool {
    match queue {
        QueueType::Unified => true,
        QueueType::Analysis => is_analysis_label(label),
        QueueType::Production => !is_analysis_label(label),
        QueueType::Other(_) => false,
    }
}

fn limit_fits(job_needs: Option<i64>, queue_offers: Option<i64>) -> bool {
    match (job_needs.filter(|n| *n > 0), queue_offers) {
        (Some(need), Some(offer)) => need <= offer,
        _ => true,
    }
}

/// Why a queue was not chosen, for the job's brokerage diagnostic.
pub fn rejection(queue: &QueueSpec, job: &JobSpec) -> Option<&'static str> {
    let label = job.get_str(JobAttr::prodSourceLabel).unwrap_or("managed");
    if queue.status != QueueStatus::Online {
        Some("not online")
    } else if !type_fits(&queue.queue_type, label) {
        Some("type does not fit the label")
    } else if !limit_fits(job.get_i64(JobAttr::minRamCount), queue.max_rss) {
        Some("memory")
    } else if !limit_fits(job.get_i64(JobAttr::coreCount), queue.core_count) {
        Some("cores")
    } else if !limit_fits(job.get_i64(JobAttr::maxWalltime), queue.max_time) {
        Some("walltime")
    } else {
        None
    }
}

/// The queue for `job`, or `None` when none fits.
pub fn choose_queue<'q>(
    queues: &'q [QueueSpec],
    activated: &HashMap<String, i64>,
    job: &JobSpec,
) -> Option<&'q QueueSpec> {
    queues
        .iter()
        .filter(|q| rejection(q, job).is_none())
        .min_by_key(|q| (activated.get(&q.name).copied().unwrap_or(0), q.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queue(name: &str, data: serde_json::Value) -> QueueSpec {
        QueueSpec::from_json(name, data)
    }

    fn job(label: &str, ram: i64) -> JobSpec {
        let mut job = JobSpec::new();
        job.set_str(JobAttr::prodSourceLabel, label).ok();
        job.set_str(JobAttr::minRamCount, &ram.to_string()).ok();
        job
    }

    #[test]
    fn the_least_loaded_fitting_queue_wins() {
        let queues = vec![
            queue("A", json!({"type": "production", "maxrss": 2000})),
            queue("B", json!({"type": "production", "maxrss": 8000})),
            queue("C", json!({"type": "analysis"})),
            queue("D", json!({"type": "production", "status": "offline"})),
        ];
        let mut load = HashMap::new();
        load.insert("A".to_string(), 5);
        load.insert("B".to_string(), 1);
        let chosen = |load: &HashMap<String, i64>, j: &JobSpec| {
            choose_queue(&queues, load, j).map(|q| q.name.clone())
        };
        assert_eq!(chosen(&load, &job("managed", 1000)), Some("B".into()));
        assert_eq!(chosen(&load, &job("managed", 4000)), Some("B".into()));
        assert_eq!(chosen(&load, &job("user", 1000)), Some("C".into()));
        assert_eq!(chosen(&load, &job("managed", 9000)), None);
        load.insert("B".to_string(), 9);
        assert_eq!(chosen(&load, &job("managed", 1000)), Some("A".into()));
    }
}
