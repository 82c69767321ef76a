use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tracing::instrument;

use crate::StoreError;

/// How to reach Postgres.
#[derive(Clone)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database`. Never logged.
    pub database_url: String,
    pub max_connections: usize,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("database_url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// A pool of Postgres connections and every query sendwerk runs.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
}

impl Store {
    /// Builds the pool and checks that one connection can be opened.
    #[instrument(skip_all, fields(max_connections = config.max_connections))]
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let pg_config = tokio_postgres::Config::from_str(&config.database_url)
            .map_err(|error| StoreError::Config(format!("DATABASE_URL is not valid: {error}")))?;
        let manager = Manager::from_config(
            pg_config,
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(2))
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| StoreError::Config(error.to_string()))?;
        let store = Self { pool };
        drop(store.pool.get().await?);
        Ok(store)
    }

    /// Applies pending migrations (see [`crate::migrate`]).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        crate::migrate::apply_migrations(&mut client).await
    }

    /// Closes the pool: no new connections; idle ones are dropped.
    pub fn close(&self) {
        self.pool.close();
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Runs `EXPLAIN` for the claim statement, for the test that pins its plan.
    pub async fn explain_claim(&self, mailing_id: sendwerk_core::MailingId) -> Result<String, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(crate::queue::CLAIM_PLANNER_SETTINGS).await?;
        let sql = format!("EXPLAIN {}", crate::queue::CLAIM_DUE_RECIPIENTS_SQL);
        let shards: Vec<i16> = (0..256).collect();
        let owner = uuid::Uuid::nil();
        let front = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let rows = transaction
            .query(&sql, &[&mailing_id.get(), &shards, &1024_i64, &owner, &Vec::<String>::new(), &front, &0_i64])
            .await?;
        Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>().join("\n"))
    }
}
