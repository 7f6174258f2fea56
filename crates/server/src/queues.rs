//! Loading PanDA queues from a CRIC-style dump (`{"QUEUE": {...}, ...}`) into
//! `schedconfig_json`; there is no CRIC here, so this file is the queues' source of truth.

use std::path::Path;

use anyhow::{bail, Context};
use panda_store::Store;
use serde_json::Value;

/// Reads a queue file: (name, JSON text) per queue, with errors naming the file and queue.
pub fn read_queue_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read queue file {}", path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("queue file {} is not valid JSON", path.display()))?;
    let Value::Object(queues) = json else {
        bail!(
            "queue file {} must be a JSON object of queue names to queue data",
            path.display()
        );
    };
    let mut out = Vec::with_capacity(queues.len());
    for (name, data) in queues {
        if name.trim().is_empty() || name.len() > 50 {
            bail!(
                "queue file {}: queue name {name:?} must be 1 to 50 characters",
                path.display()
            );
        }
        if !data.is_object() {
            bail!(
                "queue file {}: queue {name} is not a JSON object",
                path.display()
            );
        }
        let spec = panda_core::QueueSpec::from_json(&name, data.clone());
        if let panda_core::QueueStatus::Other(status) = &spec.status {
            bail!(
                "queue file {}: queue {name} has status {status:?}; a queue is online, \
                 offline, test or brokeroff",
                path.display()
            );
        }
        out.push((name, data.to_string()));
    }
    Ok(out)
}

/// Loads the file into the store; returns the queue names.
pub async fn load(store: &Store, path: &Path) -> anyhow::Result<Vec<String>> {
    let queues = read_queue_file(path)?;
    store.upsert_queues(&queues).await?;
    Ok(queues.into_iter().map(|(name, _)| name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_with_an_unknown_status_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("panda-queues-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("q.json");
        std::fs::write(
            &path,
            r#"{"GOOD": {"status": "online"}, "BAD": {"status": "bogus"}}"#,
        )
        .expect("write");
        let err = read_queue_file(&path).expect_err("bogus").to_string();
        assert!(err.contains("BAD") && err.contains("\"bogus\""), "{err}");
        std::fs::write(
            &path,
            r#"{"GOOD": {"status": "Brokeroff", "type": "unified"}}"#,
        )
        .expect("write");
        assert_eq!(read_queue_file(&path).map(|q| q.len()).ok(), Some(1));
        let _ = std::fs::remove_dir_all(dir);
    }
}
