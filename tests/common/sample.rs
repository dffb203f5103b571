//! The sample CMS as a separate process (`contentgate sample-cms`): the access-recording
//! origin of the soundness oracle, and the process-memory readings the resource tests use.
#![allow(unused_imports)]
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// `contentgate sample-cms` on a free loopback port, killed on drop. It records every
/// (action, model, stage, locale) it touches per `x-request-id` (`GET /__audit`), and what
/// arrived (`GET /__received`).
pub struct SampleCms {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for SampleCms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SampleCms {
    /// `root_stage_default`: the stage its SDL gives root `stage:` arguments (and that it
    /// serves when a request names none), as a Hygraph schema introspected with such a token.
    pub fn start(root_stage_default: Option<&str>) -> SampleCms {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_contentgate"));
        cmd.args(["sample-cms", "--port", &port.to_string(), "--runtime-dir"])
            .arg(dir.path());
        if let Some(stage) = root_stage_default {
            cmd.args(["--root-stage-default", stage]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn contentgate sample-cms");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sample-cms did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        SampleCms {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 if absent.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory of a process, KiB.
pub fn peak_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}
