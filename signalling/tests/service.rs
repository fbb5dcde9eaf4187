//! Running under systemd, as an operator deploys it (deploy/): readiness, the watchdog and
//! stopping on the notify socket systemd reads, JSON logs, SIGTERM, and the unit files and
//! example configuration checked by the tools that read them.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_webrtcai");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webrtcai-service-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join(file)
}

/// The next message on the notify socket, within `within`.
fn next(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_watchdog_and_stopping_reach_systemd_and_logs_are_json() {
    let dir = scratch("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let started = Instant::now();
    // systemd names the process its watchdog watches (WATCHDOG_PID): the shell's pid is the
    // server's once it execs.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "WATCHDOG_PID=$$ exec {BIN} --db {} --http 127.0.0.1:0 --media-port 0 --cores 1 --no-pin --log-format json",
            dir.join("a.db").display()
        ))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = next(&socket, Duration::from_secs(20));
    assert_eq!(ready.as_deref(), Some("READY=1\n"));
    let ready_after = started.elapsed();
    // Pinged every 200 ms while the hub and the relay answer.
    for _ in 0..3 {
        assert_eq!(
            next(&socket, Duration::from_secs(2)).as_deref(),
            Some("WATCHDOG=1\n")
        );
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stopping = None;
    while let Some(m) = next(&socket, Duration::from_secs(5)) {
        if m != "WATCHDOG=1\n" {
            stopping = Some(m);
            break;
        }
    }
    assert_eq!(stopping.as_deref(), Some("STOPPING=1\n"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "shutting down" && l["level"] == "INFO"),
        "{logs}"
    );
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["target"].is_string()));
    eprintln!(
        "ready {ready_after:?} after start; {} JSON log lines",
        lines.len()
    );
}

#[test]
fn the_example_configuration_reads_and_the_units_verify() {
    // Every key of deploy/webrtcai.toml is a setting, with a value it takes.
    let out = Command::new(BIN)
        .args([
            "--config",
            deploy("webrtcai.toml").to_str().unwrap(),
            "config",
            "show",
        ])
        .env_remove("WEBRTCAI_CONFIG")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("http = \"0.0.0.0:443\"") && l.ends_with("# file")),
        "{shown}"
    );

    // systemd's own checker, on the units with this build's binaries in their ExecStart.
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is needed (Debian: systemd); ./scripts/test installs it");
    };
    assert!(probe.status.success());
    let dir = scratch("units");
    let bin_dir = Path::new(BIN).parent().unwrap();
    for unit in ["webrtcai.service", "webrtcai-relay.service"] {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{unit}"))).unwrap();
        let local = text
            .replace("/usr/local/bin/", &format!("{}/", bin_dir.display()))
            .replace("EnvironmentFile=/etc/webrtcai/relay.env", "");
        let path = dir.join(unit);
        std::fs::write(&path, local).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", path.to_str().unwrap()])
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Lines about the unit itself (not about the host's other units).
        let about: Vec<&str> = said.lines().filter(|l| l.contains(unit)).collect();
        assert!(about.is_empty(), "{unit}: {said}");
    }
}
