//! What pilots tell about the machines they run on: the worker's pilot status for Harvester
//! (`harvester_workers`), and the node's hardware (`worker_node`, `worker_node_queue`,
//! `worker_node_gpus`).
//!
//! The rules: a pilot status is `started` or `finished`; host names lose a `slot@` prefix and
//! ATLAS's `atlprdN-xxx-` pilot prefixes on CERN names; the CPU model is also stored
//! normalized (upper case, without clock, cache, core-count and marketing words); every text
//! is cut to its column's length.

use panda_core::Value;
use panda_store::WorkerNode;

use crate::{JobService, ServiceError};

/// A worker's pilot status as Harvester tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PilotStatus {
    Started,
    Finished,
}

impl PilotStatus {
    pub fn parse(text: &str) -> Option<PilotStatus> {
        match text {
            "started" => Some(PilotStatus::Started),
            "finished" => Some(PilotStatus::Finished),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PilotStatus::Started => "started",
            PilotStatus::Finished => "finished",
        }
    }
}

/// A CPU node as `pilot/update_worker_node` describes it.
#[derive(Clone, Debug, Default)]
pub struct CpuNodeReport {
    pub site: String,
    pub host_name: String,
    pub cpu_model: String,
    pub panda_queue: Option<String>,
    pub n_logical_cpus: Option<i64>,
    pub n_sockets: Option<i64>,
    pub cores_per_socket: Option<i64>,
    pub threads_per_core: Option<i64>,
    pub cpu_architecture: Option<String>,
    pub cpu_architecture_level: Option<String>,
    pub clock_speed: Option<f64>,
    pub total_memory: Option<i64>,
    pub total_local_disk: Option<i64>,
}

/// A node's GPUs as `pilot/update_worker_node_gpu` describes them.
#[derive(Clone, Debug, Default)]
pub struct GpuNodeReport {
    pub site: String,
    pub host_name: String,
    pub vendor: String,
    pub model: String,
    pub count: Option<i64>,
    pub vram: Option<i64>,
    pub architecture: Option<String>,
    pub framework: Option<String>,
    pub framework_version: Option<String>,
    pub driver_version: Option<String>,
}

/// Whether a node report made a new row or updated one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRecord {
    Inserted,
    Updated,
}

impl From<bool> for NodeRecord {
    fn from(inserted: bool) -> NodeRecord {
        match inserted {
            true => NodeRecord::Inserted,
            false => NodeRecord::Updated,
        }
    }
}

fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn cut_opt(text: &Option<String>, max: usize) -> Value {
    Value::Text(text.as_deref().map(|t| cut(t, max)))
}

/// Upstream's normalized CPU model.
pub fn normalize_cpu_model(model: &str) -> String {
    static PATTERNS: std::sync::LazyLock<Vec<regex::Regex>> = std::sync::LazyLock::new(|| {
        [
            r"@\s*[\d.]+\s*GHZ",
            r"\d+\s*KB",
            r"CORE PROCESSOR\s*\([^)]*\)",
            r"\d+-CORE",
            r"\b(CPU|CORE|PROCESSOR|SCALABLE)\b",
            r"\((R|TM)\)",
        ]
        .iter()
        .filter_map(|p| regex::Regex::new(p).ok())
        .collect()
    });
    let mut text = model.to_uppercase();
    for pattern in PATTERNS.iter() {
        text = pattern.replace_all(&text, " ").into_owned();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Upstream's host-name cleaning.
pub fn clean_host_name(host: &str) -> String {
    let host = host.rsplit('@').next().unwrap_or(host);
    if host.starts_with("atlprd") && host.ends_with(".cern.ch") {
        let parts: Vec<&str> = host.splitn(3, '-').collect();
        if let [_, _, rest] = parts.as_slice() {
            return rest.to_string();
        }
    }
    host.to_string()
}

impl JobService {
    /// Records that a Harvester worker's pilot started or finished (on `node_id`).
    pub async fn set_worker_pilot_status(
        &self,
        harvester_id: &str,
        worker_id: i64,
        status: PilotStatus,
        node_id: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.stores
            .harvester
            .set_worker_pilot_status(harvester_id, worker_id, status.as_str(), node_id)
            .await?;
        Ok(())
    }

    pub async fn update_worker_node(
        &self,
        report: &CpuNodeReport,
    ) -> Result<NodeRecord, ServiceError> {
        let int = |name: &'static str, v: Option<i64>| (name, Value::Int(v));
        let node = WorkerNode {
            site: cut(&report.site, 128),
            host_name: cut(&clean_host_name(&report.host_name), 128),
            cpu_model: cut(&report.cpu_model, 128),
            panda_queue: report.panda_queue.as_deref().map(|q| cut(q, 128)),
            columns: vec![
                int("n_logical_cpus", report.n_logical_cpus),
                int("n_sockets", report.n_sockets),
                int("cores_per_socket", report.cores_per_socket),
                int("threads_per_core", report.threads_per_core),
                ("cpu_architecture", cut_opt(&report.cpu_architecture, 20)),
                (
                    "cpu_architecture_level",
                    cut_opt(&report.cpu_architecture_level, 20),
                ),
                ("clock_speed", Value::Float(report.clock_speed)),
                int("total_memory", report.total_memory),
                int("total_local_disk", report.total_local_disk),
                (
                    "cpu_model_normalized",
                    Value::Text(Some(cut(&normalize_cpu_model(&report.cpu_model), 128))),
                ),
            ],
        };
        Ok(self
            .stores
            .harvester
            .upsert_worker_node(&node)
            .await?
            .into())
    }

    pub async fn update_worker_node_gpu(
        &self,
        report: &GpuNodeReport,
    ) -> Result<NodeRecord, ServiceError> {
        let site = cut(&report.site, 128);
        let host = cut(&clean_host_name(&report.host_name), 128);
        let vendor = cut(&report.vendor, 128);
        let model = cut(&report.model, 128);
        let columns = vec![
            ("count", Value::Int(report.count)),
            ("vram", Value::Int(report.vram)),
            ("architecture", cut_opt(&report.architecture, 128)),
            ("framework", cut_opt(&report.framework, 128)),
            ("framework_version", cut_opt(&report.framework_version, 20)),
            ("driver_version", cut_opt(&report.driver_version, 20)),
        ];
        Ok(self
            .stores
            .harvester
            .upsert_worker_node_gpu([&site, &host, &vendor, &model], &columns)
            .await?
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_models_normalize_as_upstream() {
        assert_eq!(
            normalize_cpu_model("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"),
            "INTEL XEON GOLD 6248"
        );
        assert_eq!(
            normalize_cpu_model("AMD EPYC 7452 32-Core Processor"),
            "AMD EPYC 7452"
        );
    }

    #[test]
    fn host_names_are_cleaned() {
        assert_eq!(
            clean_host_name("slot1@wn01.example.org"),
            "wn01.example.org"
        );
        assert_eq!(
            clean_host_name("atlprd55-xyz-b7g42n1234.cern.ch"),
            "b7g42n1234.cern.ch"
        );
    }

    #[test]
    fn only_started_and_finished_are_pilot_statuses() {
        assert_eq!(PilotStatus::parse("started"), Some(PilotStatus::Started));
        assert_eq!(
            PilotStatus::parse("finished").map(PilotStatus::as_str),
            Some("finished")
        );
        assert_eq!(PilotStatus::parse("running"), None);
    }
}
