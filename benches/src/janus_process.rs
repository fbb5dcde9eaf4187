//! Janus as a process under test: installed from the distribution if missing, started with a
//! configuration of our own (the VideoRoom plugin and the HTTP transport only, the API bound to
//! the server namespace's address), stopped and its configuration removed on drop.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::http;

/// The Janus executable the distribution package installs.
pub const JANUS_BIN: &str = "/usr/bin/janus";

/// How to start Janus.
#[derive(Debug, Clone)]
pub struct JanusLaunch {
    /// Command prefix (namespace, CPU pinning) the executable runs under.
    pub prefix: Vec<String>,
    /// Address the HTTP API binds to (and libnice gathers on: the namespace has no other).
    pub ip: IpAddr,
    /// HTTP API port.
    pub port: u16,
    /// Janus's `event_loops`: 0 keeps its default of one thread per handle.
    pub event_loops: usize,
    /// Where Janus's output goes.
    pub log: PathBuf,
}

/// A running Janus.
pub struct JanusProcess {
    child: Child,
    /// Where its HTTP API answers.
    pub api: SocketAddr,
    dir: PathBuf,
}

impl Drop for JanusProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Install the distribution's `janus` package if the executable is missing.
pub fn ensure_installed() -> anyhow::Result<()> {
    if Path::new(JANUS_BIN).exists() {
        return Ok(());
    }
    eprintln!("installing janus (apt-get install -y janus)");
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "janus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    if !install()?.success() {
        std::process::Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .status()?;
        if !install()?.success() {
            bail!("apt-get install janus failed");
        }
    }
    Ok(())
}

/// The folder holding Janus's `plugins/` and `transports/` on this distribution.
fn modules_dir() -> anyhow::Result<PathBuf> {
    let candidates = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("janus"))
        .chain([
            PathBuf::from("/usr/lib/janus"),
            PathBuf::from("/opt/janus/lib/janus"),
        ]);
    for dir in candidates {
        if dir.join("plugins/libjanus_videoroom.so").exists() {
            return Ok(dir);
        }
    }
    bail!("Janus's VideoRoom plugin not found under /usr/lib/*/janus")
}

/// `janus.jcfg`: our folders, only what the benchmark loads, the given event loops.
fn main_config(dir: &Path, event_loops: usize) -> String {
    let d = dir.display();
    let loops = match event_loops {
        0 => String::new(),
        n => format!("\tevent_loops = {n}\n"),
    };
    format!(
        "general: {{\n\
         \tconfigs_folder = \"{d}\"\n\
         \tplugins_folder = \"{d}/plugins\"\n\
         \ttransports_folder = \"{d}/transports\"\n\
         \tevents_folder = \"{d}/none\"\n\
         \tloggers_folder = \"{d}/none\"\n\
         \tdebug_level = 4\n\
         \tsession_timeout = 60\n\
         {loops}}}\n\
         certificates: {{\n}}\n\
         media: {{\n\
         \trtp_port_range = \"20000-40000\"\n\
         }}\n\
         nat: {{\n\
         \tnice_debug = false\n\
         }}\n\
         plugins: {{\n}}\n\
         transports: {{\n}}\n\
         events: {{\n}}\n\
         loggers: {{\n}}\n"
    )
}

fn http_config(ip: IpAddr, port: u16) -> String {
    format!(
        "general: {{\n\
         \tjson = \"compact\"\n\
         \tbase_path = \"/janus\"\n\
         \thttp = true\n\
         \tport = {port}\n\
         \tip = \"{ip}\"\n\
         \thttps = false\n\
         }}\n\
         admin: {{\n\
         \tadmin_http = false\n\
         \tadmin_https = false\n\
         }}\n\
         cors: {{\n}}\n"
    )
}

impl JanusProcess {
    /// Write a configuration folder, start Janus and wait until its API answers.
    pub async fn start(launch: &JanusLaunch) -> anyhow::Result<JanusProcess> {
        let modules = modules_dir()?;
        let dir = std::env::temp_dir().join(format!("wai-janus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["plugins", "transports", "none"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::os::unix::fs::symlink(
            modules.join("plugins/libjanus_videoroom.so"),
            dir.join("plugins/libjanus_videoroom.so"),
        )?;
        std::os::unix::fs::symlink(
            modules.join("transports/libjanus_http.so"),
            dir.join("transports/libjanus_http.so"),
        )?;
        std::fs::write(
            dir.join("janus.jcfg"),
            main_config(&dir, launch.event_loops),
        )?;
        std::fs::write(
            dir.join("janus.transport.http.jcfg"),
            http_config(launch.ip, launch.port),
        )?;
        std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")?;

        let log = std::fs::File::create(&launch.log)
            .with_context(|| format!("creating {}", launch.log.display()))?;
        let mut argv: Vec<String> = launch.prefix.clone();
        argv.extend([
            JANUS_BIN.to_owned(),
            "-C".into(),
            dir.join("janus.jcfg").display().to_string(),
            "-F".into(),
            dir.display().to_string(),
        ]);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", argv.join(" ")))?;
        let mut janus = JanusProcess {
            child,
            api: SocketAddr::new(launch.ip, launch.port),
            dir,
        };
        for _ in 0..100 {
            if let Ok(Some(status)) = janus.child.try_wait() {
                bail!("janus exited ({status}); see {}", launch.log.display());
            }
            if http::json(janus.api, "/janus/info", None, Duration::from_secs(1))
                .await
                .is_ok()
            {
                return Ok(janus);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("janus API did not answer; see {}", launch.log.display())
    }

    /// Stop Janus and wait until it is gone.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// The process id (of Janus itself: the prefix commands exec it).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_loads_only_our_folders() {
        let c = main_config(Path::new("/tmp/x"), 1);
        assert!(c.contains("plugins_folder = \"/tmp/x/plugins\""));
        assert!(c.contains("event_loops = 1"));
        assert!(!main_config(Path::new("/tmp/x"), 0).contains("event_loops"));
        let h = http_config("198.18.0.2".parse().unwrap(), 8088);
        assert!(h.contains("ip = \"198.18.0.2\"") && h.contains("port = 8088"));
    }
}
