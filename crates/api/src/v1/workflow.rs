//! `workflow`: workflow requests, recorded as upstream records them (`panda_service::workflows`);
//! no workflow engine runs here, and the answer says so.

use panda_service::workflows::NO_WORKFLOW_ENGINE;
use serde_json::{json, Value as Json};

use super::{Call, Envelope};
use crate::AppState;

/// `workflow/submit_workflow` (its argument `workflow_definition`, as upstream declares it)
/// and the older `submit_workflow_raw_request` (pchain; `params`): `data` is
/// `{"workflow_id": N}`.
pub(crate) async fn submit_workflow(state: &AppState, call: &Call) -> Envelope {
    let params = call
        .args
        .get("workflow_definition")
        .or_else(|| call.args.get("params"))
        .cloned()
        .unwrap_or(Json::Null);
    match state.service.submit_workflow(&call.identity, &params).await {
        Ok(id) => Envelope {
            success: true,
            message: NO_WORKFLOW_ENGINE.into(),
            data: json!({ "workflow_id": id }),
        },
        Err(e) => Envelope::from_service(e),
    }
}
