//! A real `redis-server` per test, on a unix socket in a temp dir (port 0: no TCP at all),
//! stopped, killed and restarted by the cluster tests.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Append-only file with fsync on every write: a killed server comes back with its data.
    persistent: bool,
}

impl RedisServer {
    pub fn start(persistent: bool) -> RedisServer {
        let mut r = RedisServer {
            dir: tempfile::tempdir().unwrap(),
            child: None,
            persistent,
        };
        r.spawn();
        r
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--daemonize", "no"]);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdout(Stdio::from(
                std::fs::File::create(self.dir.path().join("redis.log")).unwrap(),
            ))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian: redis-server; .ci/run installs it)");
        self.child = Some(child);
        wait_for_pong(|| self.cli(&["PING"]), "redis-server");
    }

    /// `redis-cli -s <socket> args…`, its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(&["-s", &self.socket().display().to_string()], args)
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status()
                .unwrap();
        }
    }

    /// SIGSTOP: the server holds its connections and answers nothing (a hung Redis).
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new process on the same socket: with its data when persistent, else empty.
    pub fn restart(&mut self, keep_data: bool) {
        self.kill();
        if !keep_data {
            for f in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with("appendonly") || name.ends_with(".rdb") {
                    let _ = std::fs::remove_dir_all(f.path());
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// A redis-server (or sentinel) on a loopback TCP port, for the Sentinel tests: a master, a
/// replica of it, and a sentinel watching them. Killed on drop.
pub struct TcpRedis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TcpRedis {
    /// A data node; `replica_of`: the master's port.
    pub fn node(port: u16, replica_of: Option<u16>) -> TcpRedis {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir.path());
        if let Some(m) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &m.to_string()]);
        }
        Self::spawn(cmd, port, dir)
    }

    /// A sentinel monitoring `master` on `master_port` (quorum 1, down after 500 ms).
    pub fn sentinel(port: u16, master: &str, master_port: u16) -> TcpRedis {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {master} 127.0.0.1 {master_port} 1\nsentinel down-after-milliseconds {master} 500\nsentinel failover-timeout {master} 3000\nsentinel parallel-syncs {master} 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        Self::spawn(cmd, port, dir)
    }

    fn spawn(mut cmd: Command, port: u16, dir: tempfile::TempDir) -> TcpRedis {
        let child = cmd
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("redis.log")).unwrap(),
            ))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let r = TcpRedis {
            port,
            dir,
            child: Some(child),
        };
        wait_for_pong(|| r.cli(&["PING"]), &format!("redis on port {port}"));
        r
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(&["-h", "127.0.0.1", "-p", &self.port.to_string()], args)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TcpRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli <target…> <args…>`, its stdout.
fn redis_cli(target: &[&str], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(target)
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (10 s at most) until `ping` answers PONG.
fn wait_for_pong(ping: impl Fn() -> String, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ping().trim() != "PONG" {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}
