//! getJob: which activated jobs a pilot may take, then one atomic claim in the store.
//!
//! Rules as upstream's dispatcher (tag 0.8.1): the queue must exist and be online, test or
//! brokeroff; a queue in `test` status serves test jobs for the `user`, `managed` and
//! `unified` labels; the label selects a group of job labels; a caller without the production
//! role may only ask for `user` jobs, and only gets their own.

use panda_core::identity::{clean_user_id, Identity};
use panda_core::{JobSpec, QueueSpec, QueueStatus};
use panda_store::{ClaimRequest, LabelFilter, StoreError};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ServiceError;
use crate::JobService;

/// A pilot's request, decoded from either API.
#[derive(Clone, Debug, Default)]
pub struct GetJobRequest {
    pub site: String,
    pub prod_source_label: Option<String>,
    pub memory: Option<i64>,
    pub disk: Option<i64>,
    pub node: Option<String>,
    pub computing_element: Option<String>,
    pub scheduler_id: Option<String>,
    pub prod_user_id: Option<String>,
    pub task_id: Option<i64>,
    pub resource_type: Option<String>,
    pub remaining_time: Option<i64>,
    pub background: bool,
    pub n_jobs: Option<usize>,
}

/// What getJob produced.
#[derive(Debug)]
pub enum GetJobResult {
    /// The jobs handed out.
    Jobs(Dispatched),
    /// No job; the reason goes into `errorDialog`.
    NoJobs(String),
    /// The caller may not take these jobs (StatusCode 60).
    NoRole(String),
}

/// Jobs handed out, with what their descriptions need.
#[derive(Debug)]
pub struct Dispatched {
    pub jobs: Vec<JobSpec>,
    /// Their queue, whose CRIC record the job descriptions read.
    pub queue: Arc<QueueSpec>,
    pub secrets: DispatchSecrets,
    /// Upstream's `nSent`, given with every job: for a production pull (no label or
    /// `managed`), the queue's `managed` and `test` jobs sent in the last minute, these
    /// included; 0 for any other pull.
    pub n_sent: i64,
}

/// The secrets handed out with jobs, as upstream's getJob does: a job marked `us`
/// (useSecrets) in `specialHandling` carries its owner's secrets (`secrets`), and when any
/// job handed out is in debug mode (`dm`) every job carries the pilot's (`pilotSecrets`, the
/// secrets of the owner named by `pilot_secrets`). Each is the JSON text of the owner's
/// secrets, `{}` when the owner has none. A document this server cannot open is left out
/// (and logged), as upstream leaves out what it cannot read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DispatchSecrets {
    /// By owner (`prodUserName`).
    pub by_owner: std::collections::HashMap<String, String>,
    pub pilot: Option<String>,
}

impl DispatchSecrets {
    /// The `secrets` entry of this job, if it has one.
    pub fn for_job(&self, job: &JobSpec) -> Option<&str> {
        if !uses_secrets(job) {
            return None;
        }
        let owner = job.get_str(panda_core::JobAttr::prodUserName)?;
        self.by_owner.get(owner).map(String::as_str)
    }
}

/// Whether `specialHandling` carries one of these tokens.
fn has_token(job: &JobSpec, tokens: &[&str]) -> bool {
    job.get_str(panda_core::JobAttr::specialHandling)
        .is_some_and(|sh| sh.split(',').any(|t| tokens.contains(&t)))
}

fn uses_secrets(job: &JobSpec) -> bool {
    has_token(job, &["us"])
}

fn in_debug_mode(job: &JobSpec) -> bool {
    has_token(job, &["dm", "debug"])
}

/// How long a queue's record is reused before it is read again.
pub const QUEUE_CACHE_TTL: Duration = Duration::from_secs(10);

/// How long a failed read of a queue's record stands: the pilots of that queue are told the
/// database is unavailable without a query each, and the failure is logged once.
pub const QUEUE_READ_RETRY: Duration = Duration::from_secs(5);

/// What the last read of a queue's record gave.
#[derive(Clone, Debug)]
pub(crate) enum QueueRead {
    Found(Option<Arc<QueueSpec>>),
    Failed(String),
}

fn label_filter(label: Option<&str>) -> LabelFilter {
    let group =
        |labels: &[&str]| LabelFilter::AnyOf(labels.iter().map(|l| l.to_string()).collect());
    match label {
        Some("user") => group(&["user", "panda", "install"]),
        None | Some("") | Some("managed") => group(&["managed", "test", "prod_test", "install"]),
        Some("unified") => group(&["managed", "test", "prod_test", "install", "user", "panda"]),
        Some("test") => LabelFilter::TestJobs,
        Some(other) => group(&[other]),
    }
}

impl JobService {
    /// A queue's record, read from `schedconfig_json` at most once per [`QUEUE_CACHE_TTL`]
    /// (every getJob needs it; operators change queues rarely).
    pub async fn queue(&self, site: &str) -> Result<Option<Arc<QueueSpec>>, ServiceError> {
        let mut was_failing = false;
        if let Ok(cache) = self.queues.lock() {
            match cache.get(site) {
                Some((read, QueueRead::Found(queue))) if read.elapsed() < QUEUE_CACHE_TTL => {
                    return Ok(queue.clone());
                }
                Some((read, QueueRead::Failed(why))) => {
                    if read.elapsed() < QUEUE_READ_RETRY {
                        return Err(StoreError::Unavailable(why.clone()).into());
                    }
                    was_failing = true;
                }
                _ => {}
            }
        }
        let read = self.stores.sites.queue_json(site).await.map(|found| {
            found.map(|json| {
                let data = serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
                Arc::new(QueueSpec::from_json(site, data))
            })
        });
        let (entry, outcome) = match read {
            Ok(queue) => (QueueRead::Found(queue.clone()), Ok(queue)),
            Err(e) => {
                let why = format!("the record of queue {site} cannot be read: {e}");
                if was_failing {
                    tracing::debug!(target: "panda::dispatch", queue = site, error = %e, "queue still unreadable");
                } else {
                    tracing::warn!(target: "panda::dispatch", queue = site, error = %e,
                        retry_s = QUEUE_READ_RETRY.as_secs(), "cannot read the queue's record");
                }
                (QueueRead::Failed(why), Err(ServiceError::from(e)))
            }
        };
        if let Ok(mut cache) = self.queues.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(site.to_string(), (Instant::now(), entry));
        }
        outcome
    }

    pub async fn get_jobs(
        &self,
        caller: &Identity,
        request: &GetJobRequest,
    ) -> Result<GetJobResult, ServiceError> {
        let mut label = request.prod_source_label.clone().filter(|l| !l.is_empty());
        if !caller.may_dispatch() && label.as_deref() != Some("user") {
            return Ok(GetJobResult::NoRole(format!(
                "production or pilot role required for prodSourceLabel={}",
                label.as_deref().unwrap_or("managed")
            )));
        }
        let Some(queue) = self.queue(&request.site).await? else {
            return Ok(GetJobResult::NoJobs(format!(
                "unknown queue {}",
                request.site
            )));
        };
        if !queue.dispatches() {
            return Ok(GetJobResult::NoJobs(format!(
                "queue {} is not online",
                request.site
            )));
        }
        if queue.status == QueueStatus::Test
            && matches!(label.as_deref(), Some("user" | "managed" | "unified"))
        {
            label = Some("test".into());
        }
        // Without the production or pilot role a caller gets only their own jobs.
        let prod_user_name = match (caller.may_dispatch(), &caller.dn) {
            (true, _) => None,
            (false, Some(dn)) => Some(clean_user_id(dn)),
            (false, None) => {
                return Ok(GetJobResult::NoRole(
                    "an authenticated caller is required".into(),
                ))
            }
        };
        let claim = ClaimRequest {
            site: request.site.clone(),
            labels: label_filter(label.as_deref()),
            memory: request.memory,
            disk: request.disk,
            remaining_time: request.remaining_time,
            background: request.background,
            resource_type: request.resource_type.clone(),
            prod_user_name,
            task_id: request.task_id,
            limit: request
                .n_jobs
                .unwrap_or(1)
                .clamp(1, self.settings.max_jobs_per_get_job.max(1)),
            node: request.node.clone().unwrap_or_default(),
            computing_element: request.computing_element.clone(),
            scheduler_id: request.scheduler_id.clone(),
            count_recently_sent: matches!(label.as_deref(), None | Some("managed")),
        };
        let claimed = self.stores.jobs.claim_jobs(&claim).await?;
        if claimed.jobs.is_empty() {
            return Ok(GetJobResult::NoJobs("no jobs in PanDA".into()));
        }
        let secrets = self.dispatch_secrets(&claimed.jobs).await;
        Ok(GetJobResult::Jobs(Dispatched {
            jobs: claimed.jobs,
            queue,
            secrets,
            n_sent: claimed.recently_sent,
        }))
    }

    /// The secrets that go with `jobs` ([`DispatchSecrets`]); a read that fails leaves that
    /// owner's out, as upstream does, and the jobs go out all the same.
    async fn dispatch_secrets(&self, jobs: &[JobSpec]) -> DispatchSecrets {
        let mut secrets = DispatchSecrets::default();
        for job in jobs.iter().filter(|j| uses_secrets(j)) {
            let Some(owner) = job.get_str(panda_core::JobAttr::prodUserName) else {
                continue;
            };
            if secrets.by_owner.contains_key(owner) {
                continue;
            }
            if let Some(text) = self.secrets_text(owner).await {
                secrets.by_owner.insert(owner.to_string(), text);
            }
        }
        if jobs.iter().any(in_debug_mode) {
            secrets.pilot = self.secrets_text(&self.settings.pilot_secrets_owner).await;
        }
        secrets
    }

    /// An owner's secrets as JSON text (`{}` for none), or `None` when they cannot be read.
    async fn secrets_text(&self, owner: &str) -> Option<String> {
        let opened = match self.stores.credentials.user_secrets(owner).await {
            Ok(None) => Ok(serde_json::Map::new()),
            Ok(Some(document)) => self.open_secrets(owner, &document),
            Err(e) => Err(ServiceError::from(e)),
        };
        match opened {
            Ok(map) => Some(serde_json::Value::Object(map).to_string()),
            Err(e) => {
                tracing::warn!(target: "panda::dispatch", owner, error = %e,
                    "the owner's secrets are not sent with the job");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_map_to_upstreams_groups() {
        let names = |f: LabelFilter| match f {
            LabelFilter::AnyOf(v) => v,
            LabelFilter::TestJobs => vec!["<test>".to_string()],
        };
        assert_eq!(
            names(label_filter(Some("user"))),
            ["user", "panda", "install"]
        );
        assert_eq!(
            names(label_filter(None)),
            ["managed", "test", "prod_test", "install"]
        );
        assert_eq!(names(label_filter(Some("ptest"))), ["ptest"]);
        assert_eq!(names(label_filter(Some("test"))), ["<test>"]);
    }
}
