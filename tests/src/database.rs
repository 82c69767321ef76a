//! One PostgreSQL server per test process and a fresh database per test, cloned from a template
//! that is migrated once (`CREATE DATABASE … TEMPLATE`, a file copy: milliseconds).

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use sendwerk_store::embedded::{EmbeddedPostgres, EmbeddedPostgresOptions};
use sendwerk_store::{Store, StoreConfig};
use tokio::sync::OnceCell;

const TEMPLATE_DATABASE: &str = "sendwerk_test_template";

struct SharedServer {
    /// Kept alive for the whole process; its watchdog stops the cluster when the process ends.
    _embedded: Option<EmbeddedPostgres>,
    admin_url: String,
    url_for: Box<dyn Fn(&str) -> String + Send + Sync>,
}

static SERVER: OnceCell<SharedServer> = OnceCell::const_new();
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(0);

async fn shared_server() -> anyhow::Result<&'static SharedServer> {
    SERVER
        .get_or_try_init(|| async {
            let server = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => {
                    let base = url.clone();
                    SharedServer {
                        _embedded: None,
                        admin_url: url,
                        url_for: Box::new(move |database| replace_database(&base, database)),
                    }
                }
                _ => {
                    // The server outlives the runtime of the test that started it, so start it
                    // on a runtime of its own that is never shut down.
                    let embedded = std::thread::spawn(|| {
                        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                        let embedded = runtime.block_on(EmbeddedPostgres::start(EmbeddedPostgresOptions::default()))?;
                        std::mem::forget(runtime);
                        anyhow::Ok(embedded)
                    })
                    .join()
                    .map_err(|_| anyhow::anyhow!("embedded postgres start panicked"))??;
                    let admin_url = embedded.admin_url();
                    let port = embedded.port();
                    let template_url = embedded.connection_url("postgres");
                    SharedServer {
                        _embedded: Some(embedded),
                        admin_url,
                        url_for: Box::new(move |database| {
                            let _ = port;
                            replace_database(&template_url, database)
                        }),
                    }
                }
            };
            prepare_template(&server).await?;
            anyhow::Ok(server)
        })
        .await
}

/// `postgres://u:p@h:port/old?x` with the database replaced.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_start..].find('/').map(|i| i + authority_start).unwrap_or(base.len());
    let mut result = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

async fn admin_execute(admin_url: &str, statement: &str) -> anyhow::Result<()> {
    let (client, connection) =
        tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await.context("admin connection")?;
    let task = tokio::spawn(connection);
    client.batch_execute(statement).await.with_context(|| format!("running {statement}"))?;
    drop(client);
    let _ = task.await;
    Ok(())
}

async fn prepare_template(server: &SharedServer) -> anyhow::Result<()> {
    admin_execute(&server.admin_url, &format!("DROP DATABASE IF EXISTS {TEMPLATE_DATABASE}")).await?;
    admin_execute(&server.admin_url, &format!("CREATE DATABASE {TEMPLATE_DATABASE}")).await?;
    let store =
        Store::connect(&StoreConfig { database_url: (server.url_for)(TEMPLATE_DATABASE), max_connections: 2 }).await?;
    store.migrate().await.context("migrating the template database")?;
    store.close();
    Ok(())
}

/// A new, migrated, empty database for one test.
pub async fn fresh_database() -> anyhow::Result<(Store, String)> {
    let server = shared_server().await?;
    let name = format!("sendwerk_test_{}_{}", std::process::id(), NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
    admin_execute(&server.admin_url, &format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")).await?;
    let url = (server.url_for)(&name);
    let store = Store::connect(&StoreConfig { database_url: url.clone(), max_connections: 16 }).await?;
    Ok((store, url))
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn database_name_in_a_url_is_replaced() {
        assert_eq!(replace_database("postgres://u:p@h:5/old", "new"), "postgres://u:p@h:5/new");
        assert_eq!(replace_database("postgres://u@h/old?sslmode=disable", "n"), "postgres://u@h/n?sslmode=disable");
        assert_eq!(replace_database("postgres://u@h:5", "n"), "postgres://u@h:5/n");
    }
}
