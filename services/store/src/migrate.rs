//! Forward-only numbered migrations, applied under a Postgres advisory lock so that replicas
//! starting together do not race. A migration that has shipped is never edited.

use tracing::info;

use crate::StoreError;

const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "shard_leases", include_str!("../migrations/0002_shard_leases.sql")),
    (3, "bounces", include_str!("../migrations/0003_bounces.sql")),
    (4, "queue_table", include_str!("../migrations/0004_queue_table.sql")),
    (5, "counts_in_statements", include_str!("../migrations/0005_counts_in_statements.sql")),
    (6, "event_id_brin", include_str!("../migrations/0006_event_id_brin.sql")),
    (7, "queue_due_cursor", include_str!("../migrations/0007_queue_due_cursor.sql")),
    (8, "recipients_keyed_by_mailing", include_str!("../migrations/0008_recipients_keyed_by_mailing.sql")),
    (9, "claim_batches", include_str!("../migrations/0009_claim_batches.sql")),
    (10, "suppressions_applied_when_added", include_str!("../migrations/0010_suppressions_applied_when_added.sql")),
    (11, "events_without_recipient_index", include_str!("../migrations/0011_events_without_recipient_index.sql")),
];

/// An arbitrary, fixed key for `pg_advisory_lock`: "sendwerk" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x7365_6e64_7765_726b;

pub(crate) async fn apply_migrations(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    let result = apply_pending(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    result
}

async fn apply_pending(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version int PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> =
        client.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|row| row.get(0)).collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let transaction = client.transaction().await?;
        transaction.batch_execute(sql).await?;
        transaction.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        transaction.commit().await?;
        info!(version, name, "applied migration");
    }
    Ok(())
}
