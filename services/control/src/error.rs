use sendwerk_store::StoreError;
use tonic::{Code, Status};
use tracing::error;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A request field is malformed; the message names the field and why.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    /// The request is well-formed but does not apply in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }
}

impl From<ControlError> for Status {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::InvalidArgument { .. } => Status::new(Code::InvalidArgument, error.to_string()),
            ControlError::NotFound(_) => Status::new(Code::NotFound, error.to_string()),
            ControlError::FailedPrecondition(_) => Status::new(Code::FailedPrecondition, error.to_string()),
            ControlError::Unauthenticated(_) => Status::new(Code::Unauthenticated, error.to_string()),
            ControlError::Store(StoreError::MailingNotFound(id)) => {
                Status::new(Code::NotFound, format!("mailing {id} not found"))
            }
            ControlError::Store(StoreError::WrongMailingState { id, state, action }) => {
                Status::new(Code::FailedPrecondition, format!("mailing {id} is {state}; {action} does not apply"))
            }
            ControlError::Store(StoreError::Pool(ref cause)) => {
                error!(error = %cause, "database unavailable");
                Status::new(Code::Unavailable, "database unavailable, try again")
            }
            ControlError::Store(ref cause) => {
                error!(error = %cause, source = ?std::error::Error::source(cause), "store error");
                Status::new(Code::Internal, "internal error")
            }
            ControlError::Internal(ref detail) => {
                error!(detail = %detail, "internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}
