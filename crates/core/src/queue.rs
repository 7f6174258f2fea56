//! PanDA queues ("sites"): the CRIC PanDA-queue JSON, of which the server reads a few fields.
//!
//! The whole JSON is kept as it came (it is what the pilot downloads as queuedata); the fields
//! the server acts on are parsed once: `status`, `type`, `maxrss`, `maxtime`, `corecount`.

use serde_json::Value as Json;

/// Whether a queue gets work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueStatus {
    Online,
    Offline,
    /// Only test jobs: getJob rewrites the label to `test`.
    Test,
    /// Online for pilots, but brokerage assigns it no new jobs.
    Brokeroff,
    Other(String),
}

/// Which jobs a queue runs, by their `prodSourceLabel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueType {
    Production,
    Analysis,
    Unified,
    Other(String),
}

impl std::fmt::Display for QueueStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueStatus::Online => "online",
            QueueStatus::Offline => "offline",
            QueueStatus::Test => "test",
            QueueStatus::Brokeroff => "brokeroff",
            QueueStatus::Other(other) => other,
        })
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueType::Production => "production",
            QueueType::Analysis => "analysis",
            QueueType::Unified => "unified",
            QueueType::Other(other) => other,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    pub status: QueueStatus,
    pub queue_type: QueueType,
    /// Memory limit per job in MB (0 or absent: none).
    pub max_rss: Option<i64>,
    /// Wall-time limit in seconds (0 or absent: none).
    pub max_time: Option<i64>,
    pub core_count: Option<i64>,
    /// The queue's JSON as loaded.
    pub data: Json,
}

impl QueueSpec {
    /// Reads a queue from its CRIC JSON. Missing `status` means online, missing `type`
    /// production, as CRIC's defaults.
    pub fn from_json(name: &str, data: Json) -> QueueSpec {
        let text = |key: &str| {
            data.get(key)
                .and_then(Json::as_str)
                .map(str::to_ascii_lowercase)
        };
        let number = |key: &str| {
            data.get(key).and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_f64().map(|f| f as i64))
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
        };
        let status = match text("status").as_deref() {
            None | Some("online") => QueueStatus::Online,
            Some("offline") => QueueStatus::Offline,
            Some("test") => QueueStatus::Test,
            Some("brokeroff") => QueueStatus::Brokeroff,
            Some(other) => QueueStatus::Other(other.to_string()),
        };
        let queue_type = match text("type").as_deref() {
            None | Some("production") => QueueType::Production,
            Some("analysis") => QueueType::Analysis,
            Some("unified") => QueueType::Unified,
            Some(other) => QueueType::Other(other.to_string()),
        };
        QueueSpec {
            name: name.to_string(),
            status,
            queue_type,
            max_rss: number("maxrss").filter(|v| *v > 0),
            max_time: number("maxtime").filter(|v| *v > 0),
            core_count: number("corecount").filter(|v| *v > 0),
            data,
        }
    }

    /// Whether pilots of this queue may get jobs.
    pub fn dispatches(&self) -> bool {
        matches!(
            self.status,
            QueueStatus::Online | QueueStatus::Test | QueueStatus::Brokeroff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_read_from_cric_json_with_cric_defaults() {
        let q = QueueSpec::from_json(
            "Q1",
            json!({"status": "test", "type": "analysis", "maxrss": "4000", "maxtime": 0, "corecount": 8}),
        );
        assert_eq!(q.status, QueueStatus::Test);
        assert_eq!(q.queue_type, QueueType::Analysis);
        assert_eq!(q.max_rss, Some(4000));
        assert_eq!(q.max_time, None);
        assert_eq!(q.core_count, Some(8));
        let bare = QueueSpec::from_json("Q2", json!({}));
        assert_eq!(bare.status, QueueStatus::Online);
        assert_eq!(bare.queue_type, QueueType::Production);
        assert!(!QueueSpec::from_json("Q3", json!({"status": "offline"})).dispatches());
    }
}
