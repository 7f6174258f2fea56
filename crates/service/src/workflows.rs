//! Workflow requests (`workflow/submit_workflow`, pchain's `submit_workflow_raw_request`):
//! recorded in JEDI's `workflows` as `registered`, as upstream records them before its
//! workflow engine takes them. No engine runs here, so a request stays `registered`; the
//! answer says so. Who: any verified identity, the request owned by its name. Largest input:
//! [`MAX_WORKFLOW_REQUEST_BYTES`] of JSON (the body limit bounds it before that).

use panda_core::identity::Identity;
use serde_json::Value as Json;

use crate::{JobService, ServiceError};

/// Largest workflow request, as stored JSON.
pub const MAX_WORKFLOW_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// What a registered request is told: recorded, and that nothing here runs it.
pub const NO_WORKFLOW_ENGINE: &str =
    "registered; no workflow engine runs on this server, so the workflow stays registered";

impl JobService {
    /// Records a workflow request (`params`: an object, or its JSON text) for the caller; its
    /// `workflow_id`.
    pub async fn submit_workflow(
        &self,
        caller: &Identity,
        params: &Json,
    ) -> Result<i64, ServiceError> {
        let Some(dn) = caller.dn.as_deref().filter(|_| caller.is_authenticated()) else {
            return Err(ServiceError::Forbidden(
                "a workflow needs a verified identity".into(),
            ));
        };
        let mut request = match params {
            Json::Object(map) => map.clone(),
            Json::String(text) => match serde_json::from_str::<Json>(text) {
                Ok(Json::Object(map)) => map,
                _ => {
                    let shown: String = text.chars().take(200).collect();
                    return Err(ServiceError::BadRequest(format!(
                        "Failed to parse params: {shown} is not a JSON object"
                    )));
                }
            },
            _ => {
                return Err(ServiceError::BadRequest(
                    "params must be a JSON object (or its text)".into(),
                ))
            }
        };
        request.insert("user_dn".into(), Json::String(dn.to_string()));
        let raw = Json::Object(request).to_string();
        if raw.len() > MAX_WORKFLOW_REQUEST_BYTES {
            return Err(ServiceError::BadRequest(format!(
                "a workflow request may have at most {MAX_WORKFLOW_REQUEST_BYTES} bytes"
            )));
        }
        Ok(self
            .stores
            .tasks
            .insert_workflow("user", &crate::user_name(caller), &raw)
            .await?)
    }
}
