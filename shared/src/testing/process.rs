//! A service binary run by a test as a child process, with everything it writes kept: for
//! tests of what a process logs and how it behaves as a whole (signals, settings from its
//! environment). Killed when dropped, so a failing test leaves nothing running.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running service and everything it has written to stdout and stderr.
pub struct Running {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Start `command` with its stdout and stderr kept (panics when it cannot start).
    pub fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the test's own process and output");
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(
                child
                    .stdout
                    .take()
                    .expect("the test's own process and output"),
            ),
            Box::new(
                child
                    .stderr
                    .take()
                    .expect("the test's own process and output"),
            ),
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
                            .expect("the test's own process and output")
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

    /// Whether it has written `text` so far.
    pub fn has_logged(&self, text: &str) -> bool {
        self.output
            .lock()
            .expect("the test's own process and output")
            .contains(text)
    }

    /// Kill it and return all it wrote.
    pub fn stop(mut self) -> String {
        self.kill();
        for reader in std::mem::take(&mut self.readers) {
            reader.join().expect("the test's own process and output");
        }
        self.output
            .lock()
            .expect("the test's own process and output")
            .clone()
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
