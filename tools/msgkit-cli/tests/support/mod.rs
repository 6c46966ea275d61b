//! What the CLI's tests that run the service binaries share: finding them, and running one
//! with its output kept.
#![allow(dead_code)] // each test file uses its own part

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A service binary built beside this package's `msgkit` (`make test` builds them first).
pub fn binary(name: &str) -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_msgkit"))
        .parent()
        .unwrap()
        .join(name);
    assert!(
        binary.is_file(),
        "{} is missing: cargo build --workspace --bins",
        binary.display()
    );
    binary
}

/// A running service and everything it has written to stdout and stderr.
pub struct Running {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let readers = streams
            .into_iter()
            .map(|mut stream| {
                let output = Arc::clone(&output);
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 8192];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 {
                            break;
                        }
                        output
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buffer[..n]));
                    }
                })
            })
            .collect();
        Self {
            child,
            output,
            readers,
        }
    }

    pub fn has_logged(&self, text: &str) -> bool {
        self.output.lock().unwrap().contains(text)
    }

    /// Kill it and return all it wrote.
    pub fn stop(mut self) -> String {
        self.kill();
        for reader in std::mem::take(&mut self.readers) {
            reader.join().unwrap();
        }
        self.output.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A test that fails leaves no service running.
impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
