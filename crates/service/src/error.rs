use panda_store::StoreError;

/// Why a job operation failed, in terms a handler can map to a response.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed or names something invalid; the message says what.
    #[error("{0}")]
    BadRequest(String),
    /// The caller lacks the role or ownership the operation needs.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ServiceError::Store(e) if e.is_unavailable())
    }
}
