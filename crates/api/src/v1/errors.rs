//! How an `/api/v1` call fails, and what the client sees.
//!
//! Every answer is HTTP 200 with the envelope `{"success": false, "message": ...}`, a
//! database outage included, as upstream answers and as panda-client, pbook and Harvester
//! expect (they read `success`, and treat a non-200 as a transport failure to retry blindly);
//! `docs/decisions/0004-api-v1-failures-answer-200.md` records the choice. Refusals before a
//! function runs (unknown function 403, wrong verb, bad arguments) are answered by the
//! dispatcher in `mod.rs`.
//!
//! The message is the service's own words for a bad request or a refused rule, and a fixed
//! text for a database failure: the database's words (host, user, driver text) never reach
//! the client. The detail is logged here, once per failed call, inside the request's span.

use serde_json::json;

use panda_service::ServiceError;

use super::Envelope;

/// What a client reads when the database failed.
const DATABASE_ERROR: &str = "database error in the PanDA server";

fn log_store_failure(error: &panda_service::StoreError) {
    match error.is_unavailable() {
        true => tracing::error!(target: "panda::api", error = %error, "database unavailable"),
        false => tracing::error!(target: "panda::api", error = %error, "call failed"),
    }
}

impl Envelope {
    pub fn from_service(error: ServiceError) -> Envelope {
        match error {
            ServiceError::BadRequest(m) | ServiceError::Forbidden(m) => Envelope::fail(m),
            ServiceError::Store(e) => {
                log_store_failure(&e);
                Envelope::fail(DATABASE_ERROR)
            }
        }
    }

    /// A failed pilot call: as [`Envelope::from_service`], with `data` carrying upstream's
    /// `StatusCode` 30 for a database failure, which the pilot reads.
    pub fn from_pilot_call(error: ServiceError) -> Envelope {
        match error {
            ServiceError::BadRequest(m) => Envelope::fail(format!("Argument error: {m}")),
            ServiceError::Forbidden(m) => Envelope::fail(m),
            ServiceError::Store(e) => {
                log_store_failure(&e);
                Envelope {
                    success: false,
                    message: DATABASE_ERROR.into(),
                    data: json!({"StatusCode": 30}),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panda_service::StoreError;

    #[test]
    fn database_failures_are_a_fixed_text_and_rule_refusals_the_service_s_words() {
        let secret = "password authentication failed for user panda at db01:5432";
        let envelope =
            Envelope::from_service(ServiceError::Store(StoreError::Unavailable(secret.into())));
        assert_eq!(envelope.message, DATABASE_ERROR);
        assert!(!envelope.success);
        let pilot =
            Envelope::from_pilot_call(ServiceError::Store(StoreError::Unavailable(secret.into())));
        assert_eq!(pilot.data, json!({"StatusCode": 30}));
        let refused = Envelope::from_service(ServiceError::Forbidden("not your task".into()));
        assert_eq!(refused.message, "not your task");
    }
}
