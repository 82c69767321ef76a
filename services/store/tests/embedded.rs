//! Starts real private PostgreSQL clusters with `sendwerk_store::embedded`.

// sendwerk-store has no `anyhow` to give test failures context; a panic names the line.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sendwerk_store::embedded::{EmbeddedPostgres, EmbeddedPostgresOptions};

const HELPER_ENV: &str = "SENDWERK_EMBEDDED_WATCHDOG_HELPER";

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    let row = client.query_one(&format!("SHOW {setting}"), &[]).await.unwrap();
    row.get(0)
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

/// Polls `condition` until it holds or `timeout` passes.
fn eventually(timeout: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

fn run_dir_of(cluster: &EmbeddedPostgres) -> PathBuf {
    cluster.data_dir().parent().unwrap().to_path_buf()
}

#[tokio::test]
async fn a_started_cluster_answers_queries_with_ssd_costs_and_vanishes_when_stopped() {
    let started_at = Instant::now();
    let cluster = EmbeddedPostgres::start(EmbeddedPostgresOptions::default()).await.unwrap();
    eprintln!("cluster started in {:?}", started_at.elapsed());
    let port = cluster.port();
    let run_dir = run_dir_of(&cluster);
    assert!(run_dir.exists());
    assert!(cluster.admin_url().starts_with("postgres://postgres:"));
    assert!(!format!("{cluster:?}").contains(&cluster.admin_url()[20..40]));

    let client = connect(&cluster.admin_url()).await.unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(show(&client, "random_page_cost").await, "1.1");
    assert_eq!(show(&client, "listen_addresses").await, "127.0.0.1");
    assert_eq!(show(&client, "fsync").await, "off");
    assert_eq!(show(&client, "max_connections").await, "200");
    assert_eq!(show(&client, "server_encoding").await, "UTF8");
    drop(client);

    let url_without_password = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    assert!(connect(&url_without_password).await.is_err());

    let stopped_at = Instant::now();
    cluster.stop().await;
    eprintln!("cluster stopped in {:?}", stopped_at.elapsed());
    assert!(!accepts_connections(port));
    assert!(!run_dir.exists());
}

#[tokio::test]
async fn two_clusters_run_side_by_side_on_different_ports() {
    let (first, second) = tokio::join!(
        EmbeddedPostgres::start(EmbeddedPostgresOptions::default()),
        EmbeddedPostgres::start(EmbeddedPostgresOptions::default()),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.port(), second.port());
    assert_ne!(first.data_dir(), second.data_dir());

    let first_client = connect(&first.admin_url()).await.unwrap();
    let second_client = connect(&second.admin_url()).await.unwrap();
    first_client.batch_execute("CREATE TABLE only_in_first (id int)").await.unwrap();
    let num_tables: i64 = second_client
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_first'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(num_tables, 0);
    drop((first_client, second_client));

    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn missing_server_binaries_give_an_error_naming_the_package_to_install() {
    let empty_dir = tempfile::tempdir().unwrap();
    let options =
        EmbeddedPostgresOptions { bin_dir: Some(empty_dir.path().to_path_buf()), ..EmbeddedPostgresOptions::default() };
    let error = EmbeddedPostgres::start(options).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains("dnf install postgresql-server"), "{message}");
    assert!(message.contains("DATABASE_URL"), "{message}");
}

#[tokio::test]
async fn a_taken_port_gives_an_error_with_the_tail_of_the_server_log() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let taken_port = listener.local_addr().unwrap().port();
    let options = EmbeddedPostgresOptions { port: Some(taken_port), ..EmbeddedPostgresOptions::default() };
    let error = EmbeddedPostgres::start(options).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&taken_port.to_string()), "{message}");
    assert!(message.contains("Address already in use"), "{message}");
}

#[tokio::test]
async fn dropping_a_cluster_without_stopping_it_still_shuts_it_down() {
    let cluster = EmbeddedPostgres::start(EmbeddedPostgresOptions::default()).await.unwrap();
    let port = cluster.port();
    let run_dir = run_dir_of(&cluster);
    drop(cluster);
    assert!(!accepts_connections(port));
    assert!(!run_dir.exists());
}

#[tokio::test]
async fn a_persistent_data_dir_keeps_its_data_across_restarts_with_a_new_password() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let options = EmbeddedPostgresOptions {
        data_dir: Some(parent.path().join("pgdata")),
        durable: true,
        max_connections: 20,
        ..EmbeddedPostgresOptions::default()
    };

    let first_run = EmbeddedPostgres::start(options.clone()).await.unwrap();
    let first_url = first_run.admin_url();
    let client = connect(&first_url).await.unwrap();
    client.batch_execute("CREATE TABLE survives (id int); INSERT INTO survives VALUES (7)").await.unwrap();
    assert_eq!(show(&client, "fsync").await, "on");
    drop(client);
    first_run.stop().await;

    let second_run = EmbeddedPostgres::start(options).await.unwrap();
    assert_ne!(second_run.admin_url(), first_url);
    let client = connect(&second_run.admin_url()).await.unwrap();
    let id: i32 = client.query_one("SELECT id FROM survives", &[]).await.unwrap().get(0);
    assert_eq!(id, 7);
    drop(client);
    second_run.stop().await;
    assert!(parent.path().join("pgdata").join("PG_VERSION").exists());
}

#[test]
fn a_cluster_whose_owner_is_killed_is_stopped_by_the_watchdog() {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_process_that_starts_a_cluster_and_waits_to_be_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(helper.stdout.take().unwrap());
    let mut port_and_run_dir = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        // libtest may print "test NAME ... " in front of the helper's line.
        if let Some((_, rest)) = line.split_once("embedded cluster: ") {
            let (port, run_dir) = rest.split_once(' ').unwrap();
            port_and_run_dir = Some((port.parse::<u16>().unwrap(), PathBuf::from(run_dir)));
            break;
        }
    }
    let (port, run_dir) = port_and_run_dir.expect("the helper reports its cluster");
    assert!(accepts_connections(port));

    helper.kill().unwrap(); // SIGKILL: no destructor runs.
    helper.wait().unwrap();

    assert!(eventually(Duration::from_secs(30), || !accepts_connections(port)));
    assert!(eventually(Duration::from_secs(30), || !Path::new(&run_dir).exists()));
}

#[tokio::test]
#[ignore = "helper process of a_cluster_whose_owner_is_killed_is_stopped_by_the_watchdog"]
async fn helper_process_that_starts_a_cluster_and_waits_to_be_killed() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let cluster = EmbeddedPostgres::start(EmbeddedPostgresOptions::default()).await.unwrap();
    println!("embedded cluster: {} {}", cluster.port(), run_dir_of(&cluster).display());
    tokio::time::sleep(Duration::from_secs(300)).await;
    drop(cluster);
}
