//! A private, throw-away PostgreSQL cluster for `sendwerk dev`, `sendwerk demo` and the integration
//! tests when `DATABASE_URL` is unset.
//!
//! [`EmbeddedPostgres::start`] runs `initdb` and `pg_ctl` from the locally installed server binaries,
//! listens on `127.0.0.1` only (never on another address), keeps its Unix socket in a private
//! directory of its own and protects TCP logins with a random password. It must never touch the
//! system's cluster, its data directory or its socket directory `/var/run/postgresql`, and it never
//! logs the password.
//!
//! When the process runs as root (CI, these machines), the PostgreSQL processes run as the
//! unprivileged `postgres` user, because `initdb` and `postgres` refuse to run as root. A small
//! watchdog shell process, detached in its own process group, stops the cluster and removes its
//! temporary directory if the owning process dies without stopping it (for example on SIGKILL).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tracing::{debug, info, warn};

/// The superuser created by `initdb` and used in every connection URL.
const SUPERUSER: &str = "postgres";
/// The unprivileged system user that runs the cluster when we are root.
const SERVER_USER_WHEN_ROOT: &str = "postgres";
/// How many free ports are tried when the chosen one is taken before the server binds it.
const NUM_PORT_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_BYTES: u64 = 4096;

/// How to start an [`EmbeddedPostgres`].
#[derive(Clone, Debug)]
pub struct EmbeddedPostgresOptions {
    /// Where the cluster lives. `None`: a fresh temporary directory, deleted on stop. An existing
    /// cluster in `Some(dir)` is reused (its `postgres` password is replaced by a new random one).
    pub data_dir: Option<PathBuf>,
    /// `None`: a free port chosen by the kernel, retried on a clash.
    pub port: Option<u16>,
    /// `false` turns off `fsync`, `synchronous_commit` and `full_page_writes`: a crash may lose or
    /// corrupt data, which is fine for tests and demos only.
    pub durable: bool,
    pub max_connections: u32,
    /// Directory holding `initdb`, `pg_ctl` and `postgres`. `None`: `PG_BINDIR`, then
    /// `pg_config --bindir`, then `initdb` on `PATH`, then the newest `/usr/lib/postgresql/*/bin`.
    pub bin_dir: Option<PathBuf>,
}

impl Default for EmbeddedPostgresOptions {
    fn default() -> Self {
        Self { data_dir: None, port: None, durable: false, max_connections: 200, bin_dir: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPostgresError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install them (Debian/Ubuntu: apt-get \
         install postgresql; Fedora: dnf install postgresql-server) or set DATABASE_URL to an \
         existing server (looked in: {searched})"
    )]
    BinariesNotFound { searched: String },
    #[error("running as root needs an unprivileged 'postgres' user: useradd --system postgres")]
    NoUnprivilegedUser,
    #[error("could not {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    CommandFailed { command: String, status: String, output: String },
    #[error("postgres did not start on port {port}; last lines of {}:\n{log_tail}", log_path.display())]
    StartFailed { port: u16, log_path: PathBuf, log_tail: String },
    #[error("postgres did not accept connections within {} s", READY_TIMEOUT.as_secs())]
    NotReady(#[source] tokio_postgres::Error),
    #[error("could not set the password of the existing cluster")]
    SetPassword(#[source] tokio_postgres::Error),
}

fn io_error(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedPostgresError {
    let action = action.into();
    move |source| EmbeddedPostgresError::Io { action, source }
}

/// A running private cluster. Stop it with [`EmbeddedPostgres::stop`]; dropping it stops it too
/// (blocking, best effort).
pub struct EmbeddedPostgres {
    layout: ClusterLayout,
    port: u16,
    password: String,
    run_dir: Option<TempDir>,
    watchdog: Option<Child>,
    is_running: bool,
}

impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EmbeddedPostgres")
            .field("port", &self.port)
            .field("data_dir", &self.layout.data_dir)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Where everything of one cluster lives and who runs it.
struct ClusterLayout {
    bin_dir: PathBuf,
    run_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    /// `Some` when we are root and the server runs as this other user.
    server_user_opt: Option<UnixUser>,
}

#[derive(Clone, Debug)]
struct UnixUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    pub async fn start(options: EmbeddedPostgresOptions) -> Result<Self, EmbeddedPostgresError> {
        let started_at = Instant::now();
        let bin_dir = find_server_bin_dir(options.bin_dir.as_deref())?;
        let run_dir = tempfile::Builder::new()
            .prefix("sendwerk-pg-")
            .tempdir()
            .map_err(io_error("create a temporary directory"))?;
        // The server user must be able to traverse it to reach its socket and data directories.
        fs::set_permissions(run_dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_error("make the temporary directory traversable"))?;
        let our_uid = fs::metadata(run_dir.path()).map_err(io_error("stat the temporary directory"))?.uid();
        let server_user_opt = if our_uid == 0 { Some(find_unix_user(SERVER_USER_WHEN_ROOT)?) } else { None };
        let (data_dir, is_data_dir_ephemeral) = match options.data_dir.clone() {
            Some(data_dir) => (data_dir, false),
            None => (run_dir.path().join("data"), true),
        };
        let log_path =
            if is_data_dir_ephemeral { run_dir.path().join("postgres.log") } else { data_dir.join("postgres.log") };
        let layout = ClusterLayout {
            bin_dir,
            run_dir: run_dir.path().to_path_buf(),
            socket_dir: run_dir.path().join("socket"),
            data_dir,
            log_path,
            server_user_opt,
        };
        create_private_dir(&layout.socket_dir, layout.server_user_opt.as_ref())?;
        create_private_dir(&layout.data_dir, layout.server_user_opt.as_ref())?;

        // From here on, Drop cleans up whatever an error leaves behind.
        let mut cluster = EmbeddedPostgres {
            layout,
            port: 0,
            password: random_password(),
            run_dir: Some(run_dir),
            watchdog: None,
            is_running: false,
        };
        cluster.watchdog = Some(spawn_watchdog(&cluster.layout)?);
        let needs_initdb = !cluster.layout.data_dir.join("PG_VERSION").exists();
        if needs_initdb {
            cluster.run_initdb(options.durable).await?;
        }
        create_owned_file(&cluster.layout.log_path, &cluster.layout)?;
        cluster.start_server(&options).await?;
        if !needs_initdb {
            cluster.replace_password_over_socket().await?;
        }
        cluster.wait_until_accepting_connections().await?;
        info!(
            port = cluster.port,
            data_dir = %cluster.layout.data_dir.display(),
            bin_dir = %cluster.layout.bin_dir.display(),
            elapsed_ms = started_at.elapsed().as_millis() as u64,
            "embedded postgres started"
        );
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/DATABASE`. Contains the password: do not log it.
    pub fn connection_url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/{}", self.password, self.port, percent_encode(database))
    }

    /// The URL of the `postgres` maintenance database.
    pub fn admin_url(&self) -> String {
        self.connection_url("postgres")
    }

    pub fn data_dir(&self) -> &Path {
        &self.layout.data_dir
    }

    /// The server log; for a temporary cluster it is deleted on stop.
    pub fn log_path(&self) -> &Path {
        &self.layout.log_path
    }

    /// Restarts the server (`pg_ctl restart -m fast`) on the same port with the same settings,
    /// cutting every client connection as a database restart or fail-over would. For fault tests.
    pub async fn restart(&self) -> Result<(), EmbeddedPostgresError> {
        let mut command = self.layout.server_command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.layout.data_dir)
            .arg("-l")
            .arg(&self.layout.log_path)
            .args(["restart", "-m", "fast", "-w", "-t", "60"])
            .process_group(0);
        run_to_completion(command, "pg_ctl restart").await?;
        self.wait_until_accepting_connections().await
    }

    /// Stops the server (`pg_ctl stop -m fast`) and deletes the temporary directory.
    pub async fn stop(mut self) {
        self.stop_watchdog();
        if self.is_running {
            let command = self.layout.pg_ctl_stop_command("fast");
            match tokio::process::Command::from(command).output().await {
                Ok(output) if output.status.success() => {}
                Ok(output) => warn!(
                    status = %output.status,
                    output = %combined_output(&output),
                    "embedded postgres did not stop cleanly"
                ),
                Err(error) => warn!(%error, "could not run pg_ctl stop"),
            }
            self.is_running = false;
        }
        if let Some(run_dir) = self.run_dir.take() {
            let removal = tokio::task::spawn_blocking(move || run_dir.close()).await;
            match removal {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%error, "could not remove the embedded postgres directory"),
                Err(error) => warn!(%error, "could not remove the embedded postgres directory"),
            }
        }
        info!(port = self.port, "embedded postgres stopped");
    }

    async fn run_initdb(&self, durable: bool) -> Result<(), EmbeddedPostgresError> {
        let layout = &self.layout;
        let password_file = layout.run_dir.join("pwfile");
        create_owned_file(&password_file, layout)?;
        fs::write(&password_file, format!("{}\n", self.password)).map_err(io_error("write the password file"))?;
        let mut command = layout.server_command("initdb");
        command
            .arg("-D")
            .arg(&layout.data_dir)
            .args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["-E", "UTF8", "--locale=C", "--no-instructions"]);
        if !durable {
            command.arg("--no-sync");
        }
        let result = run_to_completion(command, "initdb").await;
        if let Err(error) = fs::remove_file(&password_file) {
            warn!(%error, "could not remove the initdb password file");
        }
        result?;
        debug!(data_dir = %layout.data_dir.display(), "embedded postgres initialised");
        Ok(())
    }

    async fn start_server(&mut self, options: &EmbeddedPostgresOptions) -> Result<(), EmbeddedPostgresError> {
        let num_attempts = if options.port.is_some() { 1 } else { NUM_PORT_ATTEMPTS };
        let mut attempt = 1;
        loop {
            let port = match options.port {
                Some(port) => port,
                None => pick_free_port()?,
            };
            let log_offset = fs::metadata(&self.layout.log_path).map_or(0, |metadata| metadata.len());
            let server_options = postgres_server_options(port, options, &self.layout.socket_dir);
            let mut command = self.layout.server_command("pg_ctl");
            command
                .arg("-D")
                .arg(&self.layout.data_dir)
                .arg("-l")
                .arg(&self.layout.log_path)
                .args(["-w", "-t", "60", "start", "-o", &server_options])
                .process_group(0);
            let output = tokio::process::Command::from(command).output().await.map_err(io_error("run pg_ctl start"))?;
            if output.status.success() {
                self.port = port;
                self.is_running = true;
                return Ok(());
            }
            let log_tail = read_log_tail(&self.layout.log_path, log_offset);
            if self.layout.data_dir.join("postmaster.pid").exists() {
                // Timed out while starting: do not leave a half-started server behind.
                let stop = self.layout.pg_ctl_stop_command("immediate");
                let _ = tokio::process::Command::from(stop).output().await;
            }
            if attempt < num_attempts && is_port_clash(&log_tail) {
                warn!(port, attempt, "port taken before postgres could bind it, retrying");
                attempt += 1;
                continue;
            }
            let log_tail = format!("{log_tail}{}", combined_output(&output));
            return Err(EmbeddedPostgresError::StartFailed { port, log_path: self.layout.log_path.clone(), log_tail });
        }
    }

    /// A reused cluster has a password we do not know: set ours over the trusted private socket.
    async fn replace_password_over_socket(&self) -> Result<(), EmbeddedPostgresError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.layout.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) =
            config.connect(tokio_postgres::NoTls).await.map_err(EmbeddedPostgresError::SetPassword)?;
        let connection_task = tokio::spawn(connection);
        // DDL takes no bind parameters; the password is our own hex string, so it needs no escaping.
        let statement = format!("ALTER ROLE {SUPERUSER} PASSWORD '{}'", self.password);
        let result = client.batch_execute(&statement).await;
        drop(client);
        let _ = connection_task.await;
        result.map_err(EmbeddedPostgresError::SetPassword)
    }

    async fn wait_until_accepting_connections(&self) -> Result<(), EmbeddedPostgresError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let admin_url = format!("{}?connect_timeout=5", self.admin_url());
        loop {
            let attempt = async {
                let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
                let connection_task = tokio::spawn(connection);
                let result = client.simple_query("SELECT 1").await.map(|_| ());
                drop(client);
                let _ = connection_task.await;
                result
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(EmbeddedPostgresError::NotReady(error));
                }
                Err(error) => {
                    debug!(%error, "embedded postgres not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn stop_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop_watchdog();
        if self.is_running {
            match self.layout.pg_ctl_stop_command("fast").output() {
                Ok(output) if output.status.success() => {
                    info!(port = self.port, "embedded postgres stopped on drop");
                }
                Ok(output) => warn!(
                    status = %output.status,
                    output = %combined_output(&output),
                    "embedded postgres did not stop cleanly on drop"
                ),
                Err(error) => warn!(%error, "could not run pg_ctl stop on drop"),
            }
            self.is_running = false;
        }
        if let Some(run_dir) = self.run_dir.take()
            && let Err(error) = run_dir.close()
        {
            warn!(%error, "could not remove the embedded postgres directory");
        }
    }
}

impl ClusterLayout {
    /// A command for a PostgreSQL binary, run as the server user.
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(&self.run_dir).stdin(Stdio::null());
        if let Some(server_user) = &self.server_user_opt {
            command.uid(server_user.uid).gid(server_user.gid);
        }
        command
    }

    fn pg_ctl_stop_command(&self, mode: &str) -> Command {
        let mut command = self.server_command("pg_ctl");
        command.arg("-D").arg(&self.data_dir).args(["stop", "-m", mode, "-w", "-t", "60"]);
        command
    }
}

/// `-p PORT -c name=value ...` for `pg_ctl -o`, which hands it to a shell: values are quoted.
fn postgres_server_options(port: u16, options: &EmbeddedPostgresOptions, socket_dir: &Path) -> String {
    let mut settings = vec![
        ("listen_addresses", "127.0.0.1".to_string()),
        ("unix_socket_directories", socket_dir.display().to_string()),
        ("max_connections", options.max_connections.to_string()),
        // SSD-like planner costs: with the default random_page_cost = 4 the claim query walks the
        // primary key and runs 15x slower on a draining queue.
        ("random_page_cost", "1.1".to_string()),
        ("effective_io_concurrency", "200".to_string()),
        ("shared_buffers", "256MB".to_string()),
        ("log_min_messages", "warning".to_string()),
    ];
    if !options.durable {
        for name in ["fsync", "synchronous_commit", "full_page_writes"] {
            settings.push((name, "off".to_string()));
        }
    }
    let mut server_options = format!("-p {port}");
    for (name, value) in settings {
        server_options.push_str(&format!(" -c {name}={}", shell_quote(&value)));
    }
    server_options
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn is_port_clash(log_tail: &str) -> bool {
    ["Address already in use", "could not create any TCP/IP sockets"].iter().any(|needle| log_tail.contains(needle))
}

fn pick_free_port() -> Result<u16, EmbeddedPostgresError> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io_error("bind 127.0.0.1:0 to find a free port"))?;
    let port = listener.local_addr().map_err(io_error("read the address of a free port"))?.port();
    Ok(port)
}

/// The watchdog polls our pid; once we are gone it stops the server and removes the run dir. It is
/// spawned in its own process group so that a Ctrl-C to our terminal does not kill it first.
fn spawn_watchdog(layout: &ClusterLayout) -> Result<Child, EmbeddedPostgresError> {
    const SCRIPT: &str = r#"
owner_pid=$1 pg_ctl=$2 data_dir=$3 run_dir=$4 server_user=$5
while kill -0 "$owner_pid" 2>/dev/null; do sleep 1; done
sleep 1
if [ -f "$data_dir/postmaster.pid" ]; then
  if [ -z "$server_user" ]; then
    "$pg_ctl" -D "$data_dir" stop -m immediate
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$server_user" -- "$pg_ctl" -D "$data_dir" stop -m immediate
  else
    su -s /bin/sh -c '"$0" -D "$1" stop -m immediate' "$server_user" "$pg_ctl" "$data_dir"
  fi
fi >/dev/null 2>&1
rm -rf -- "$run_dir"
"#;
    let server_user = layout.server_user_opt.as_ref().map_or(String::new(), |user| user.name.clone());
    Command::new("/bin/sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("sendwerk-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(layout.bin_dir.join("pg_ctl"))
        .arg(&layout.data_dir)
        .arg(&layout.run_dir)
        .arg(server_user)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(io_error("spawn the embedded postgres watchdog"))
}

async fn run_to_completion(command: Command, name: &str) -> Result<(), EmbeddedPostgresError> {
    let output = tokio::process::Command::from(command).output().await.map_err(io_error(format!("run {name}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(EmbeddedPostgresError::CommandFailed {
        command: name.to_string(),
        status: output.status.to_string(),
        output: combined_output(&output),
    })
}

fn combined_output(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    format!("{}{}", stdout, stderr).trim().to_string()
}

/// The last few KiB written to the log since `offset`.
fn read_log_tail(log_path: &Path, offset: u64) -> String {
    let Ok(mut file) = fs::File::open(log_path) else {
        return String::new();
    };
    let length = file.metadata().map_or(0, |metadata| metadata.len());
    let start = offset.max(length.saturating_sub(LOG_TAIL_BYTES));
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut tail).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Creates `path` (and missing parents) as a 0700 directory owned by the server user.
fn create_private_dir(path: &Path, server_user_opt: Option<&UnixUser>) -> Result<(), EmbeddedPostgresError> {
    let action = || format!("create directory {}", path.display());
    fs::create_dir_all(path).map_err(io_error(action()))?;
    if let Some(server_user) = server_user_opt {
        std::os::unix::fs::chown(path, Some(server_user.uid), Some(server_user.gid))
            .map_err(io_error(format!("chown {}", path.display())))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_error(action()))
}

/// Creates an empty 0600 file owned by the server user (or appends to an existing one).
fn create_owned_file(path: &Path, layout: &ClusterLayout) -> Result<(), EmbeddedPostgresError> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(format!("create {}", path.display())))?;
    file.flush().map_err(io_error(format!("create {}", path.display())))?;
    if let Some(server_user) = &layout.server_user_opt {
        std::os::unix::fs::chown(path, Some(server_user.uid), Some(server_user.gid))
            .map_err(io_error(format!("chown {}", path.display())))?;
    }
    Ok(())
}

fn find_unix_user(name: &str) -> Result<UnixUser, EmbeddedPostgresError> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_error("read /etc/passwd"))?;
    let user_opt = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(UnixUser { name: name.to_string(), uid, gid })
    });
    match user_opt {
        Some(user) if user.uid != 0 => Ok(user),
        _ => Err(EmbeddedPostgresError::NoUnprivilegedUser),
    }
}

/// Finds the directory with `initdb`, `pg_ctl` and `postgres` of one PostgreSQL version.
fn find_server_bin_dir(explicit_bin_dir: Option<&Path>) -> Result<PathBuf, EmbeddedPostgresError> {
    let env_bin_dir = std::env::var_os("PG_BINDIR").filter(|value| !value.is_empty()).map(PathBuf::from);
    // An explicit choice is honoured or reported, never silently replaced by another version.
    if let Some(bin_dir) = explicit_bin_dir.map(Path::to_path_buf).or(env_bin_dir) {
        if is_server_bin_dir(&bin_dir) {
            return Ok(bin_dir);
        }
        return Err(EmbeddedPostgresError::BinariesNotFound { searched: bin_dir.display().to_string() });
    }
    let mut searched = Vec::new();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).output()
        && output.status.success()
    {
        let bin_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if is_server_bin_dir(&bin_dir) {
            return Ok(bin_dir);
        }
        searched.push(format!("{} (pg_config --bindir)", bin_dir.display()));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        // Debian links /usr/local/bin/initdb into /usr/lib/postgresql/N/bin: take pg_ctl and
        // postgres from where initdb really lives, so that all three are of one version.
        let Ok(initdb) = fs::canonicalize(dir.join("initdb")) else {
            continue;
        };
        if let Some(bin_dir) = initdb.parent()
            && is_server_bin_dir(bin_dir)
        {
            return Ok(bin_dir.to_path_buf());
        }
    }
    searched.push("PATH".to_string());
    let newest_debian_bin_dir = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: Vec<u32> =
                entry.file_name().to_str()?.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin_dir)| is_server_bin_dir(bin_dir))
        .max_by(|(left, _), (right, _)| left.cmp(right));
    if let Some((_, bin_dir)) = newest_debian_bin_dir {
        return Ok(bin_dir);
    }
    searched.push("/usr/lib/postgresql/*/bin".to_string());
    Err(EmbeddedPostgresError::BinariesNotFound { searched: searched.join(", ") })
}

fn is_server_bin_dir(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"].iter().all(|program| {
        fs::metadata(dir.join(program)).is_ok_and(|metadata| metadata.is_file() && metadata.mode() & 0o111 != 0)
    })
}

/// 64 hex digits from two v4 UUIDs (244 random bits): safe in URLs and SQL literals as is.
fn random_password() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
