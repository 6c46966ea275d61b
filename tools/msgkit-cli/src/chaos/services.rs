//! Service processes, restartable with the same settings, and the shared infrastructure the
//! faults act on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::CliError;

/// One service process, restartable with the same settings.
pub struct ServiceProcess {
    pub name: String,
    pub port: u16,
    binary: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl ServiceProcess {
    pub fn new(
        name: impl Into<String>,
        binary: PathBuf,
        env: BTreeMap<String, String>,
        log: PathBuf,
        port: u16,
    ) -> Self {
        Self {
            name: name.into(),
            port,
            binary,
            args: Vec::new(),
            env,
            log,
            child: None,
            starts: 0,
        }
    }

    /// Run the program with these arguments.
    pub fn with_args(mut self, args: Vec<String>) -> Self {
        self.args = args;
        self
    }

    /// Set an environment variable for the next start.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.insert(name.to_owned(), value.to_owned());
    }

    pub fn start(&mut self) -> Result<(), CliError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| CliError::Other(anyhow::anyhow!("opening {}: {e}", self.log.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| CliError::Other(anyhow::anyhow!("log file: {e}")))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CliError::Other(anyhow::anyhow!("starting {}: {e}", self.binary.display()))
            })?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM and wait (graceful shutdown), SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// CPU seconds (user + system) the running process has used, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// Peak resident memory (VmHWM) of the running process, in MiB.
    pub fn peak_memory_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// Wait until `url` answers 2xx for `process`, at most until `deadline`.
pub async fn wait_until_ready(
    client: &reqwest::Client,
    process: &ServiceProcess,
    url: &str,
    deadline: std::time::Instant,
) -> Result<(), CliError> {
    loop {
        let ready = client
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(CliError::Other(anyhow::anyhow!(
                "{} did not become ready in time; see {}",
                process.name,
                process.log().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A free loopback port.
pub fn free_port() -> Result<u16, CliError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::Other(anyhow::anyhow!("no free port: {e}")))
}

/// Run a fault command; its failure is the scenario's failure.
pub async fn run_command(words: &[String]) -> Result<(), CliError> {
    let (program, args) = words
        .split_first()
        .ok_or_else(|| CliError::Usage("an empty fault command".to_owned()))?;
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("running {}: {e}", words.join(" "))))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(CliError::Other(anyhow::anyhow!(
            "{} failed ({}): {}",
            words.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The installed PostgreSQL cluster version (`ls /etc/postgresql`).
pub fn postgres_version() -> Option<String> {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    versions.pop()
}
