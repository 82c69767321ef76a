//! A Python virtualenv under `target/` with the independent tools the system tests use
//! (dkimpy for DKIM verification, grpcio for a client in another language), installed from
//! PyPI on first use. Without PyPI the tests that need it fail and say why.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context;

const PACKAGES: &[&str] = &["dkimpy[ed25519]", "grpcio", "grpcio-tools"];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python, created once per machine (serialised across processes by a file lock).
pub fn python() -> anyhow::Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| create_venv().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|error| anyhow::anyhow!(error))
}

fn create_venv() -> anyhow::Result<PathBuf> {
    let target = workspace_root().join("target");
    fs::create_dir_all(&target)?;
    let venv = target.join("pyenv-system");
    let python = venv.join("bin/python");
    let marker = venv.join(".ready");
    let lock = File::create(target.join("pyenv-system.lock"))?;
    lock.lock()?;
    if !marker.exists() {
        if venv.exists() {
            fs::remove_dir_all(&venv)?;
        }
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
        run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(PACKAGES),
            "pip install dkimpy[ed25519] grpcio grpcio-tools (is PyPI reachable?)",
        )?;
        fs::write(&marker, PACKAGES.join("\n"))?;
    }
    drop(lock);
    Ok(python)
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("{what}: could not start"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
