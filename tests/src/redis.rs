//! A `redis-server` of the test's own, on a free loopback port, with no
//! persistence; stopped (by its PID) when dropped.

use anyhow::{Context as _, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    /// An ACL user (name, password) `cli` logs in as.
    user: Option<(String, String)>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start(dir: &std::path::Path) -> anyhow::Result<RedisServer> {
        RedisServer::start_with(dir, &[])
    }

    /// With more `redis-server` arguments (e.g. cluster mode).
    pub fn start_with(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<RedisServer> {
        let mut server = RedisServer {
            port: crate::free_port(),
            dir: dir.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            user: None,
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// Only ACL user `user` (password `password`) may connect; the default
    /// user is off.
    pub fn start_with_user(dir: &std::path::Path, user: &str, password: &str) -> anyhow::Result<RedisServer> {
        let mut server = RedisServer {
            port: crate::free_port(),
            dir: dir.to_owned(),
            extra: ["--user", user, "on", &format!(">{password}"), "~*", "&*", "+@all"]
                .iter()
                .map(|s| (*s).to_owned())
                .chain(["--user", "default", "off"].iter().map(|s| (*s).to_owned()))
                .collect(),
            user: Some((user.to_owned(), password.to_owned())),
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`RedisServer::stop`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("redis-server on {} is already running", self.port);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("redis-{}.log", self.port)))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting redis-server (scripts/bootstrap installs it)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).is_ok_and(|answer| answer.trim() == "PONG") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("redis-server on {} did not answer PING", self.port)
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        crate::kill(&mut self.child);
    }

    /// Runs `redis-cli` against it and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some((user, password)) = &self.user {
            command.args(["--user", user, "--pass", password, "--no-auth-warning"]);
        }
        let output = command.args(args).output().context("redis-cli")?;
        if !output.status.success() {
            bail!("redis-cli {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Calls of each command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
    pub fn command_calls(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let info = self.cli(&["INFO", "commandstats"])?;
        Ok(info
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters, each its own `redis-server`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(dir: &std::path::Path) -> anyhow::Result<RedisCluster> {
        let mut nodes = Vec::new();
        for i in 0..3 {
            let node_dir = dir.join(format!("cluster-{i}"));
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(RedisServer::start_with(
                &node_dir,
                &["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
            )?);
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("redis-cli --cluster create")?;
        if !output.status.success() {
            bail!("cluster create: {}", String::from_utf8_lossy(&output.stdout));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = nodes.iter().all(|n| {
                n.cli(&["CLUSTER", "INFO"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(RedisCluster { nodes });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the cluster did not reach cluster_state:ok")
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }
}

/// A Redis Sentinel watching one master under the name `pylon`.
pub struct RedisSentinel {
    pub port: u16,
    child: Option<Child>,
}

impl RedisSentinel {
    pub fn start(dir: &std::path::Path, master: &RedisServer) -> anyhow::Result<RedisSentinel> {
        let port = crate::free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor pylon 127.0.0.1 {} 1\nsentinel down-after-milliseconds pylon 1000\n",
                master.port
            ),
        )?;
        let log = std::fs::File::create(dir.join(format!("sentinel-{port}.log")))?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting redis-server --sentinel")?;
        let sentinel = RedisSentinel {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let answer = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["SENTINEL", "get-master-addr-by-name", "pylon"])
                .output();
            if answer.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&master.port.to_string())) {
                return Ok(sentinel);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the sentinel on {port} does not know the master")
    }

    pub fn url(&self) -> String {
        format!("redis-sentinel://127.0.0.1:{}/pylon", self.port)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        crate::kill(&mut self.child);
    }
}
