use sendwerk_core::{MailingId, MailingState};

/// What can go wrong talking to the store. Callers map these to API status codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database connection available")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("mailing {0} not found")]
    MailingNotFound(MailingId),
    #[error("mailing {id} is {state}; {action} does not apply")]
    WrongMailingState { id: MailingId, state: MailingState, action: &'static str },
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
}
