//! The configuration file as an operator meets it: the `webrtcai` binary with `--config`,
//! environment variables and flags, `config show`, the refusals at start, and a server that
//! serves where its file says.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_webrtcai");

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webrtcai-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `webrtcai` with no WEBRTCAI_* variables but `env`.
fn webrtcai(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("WEBRTCAI_") || k == "RELAY_CONTROL_TOKEN" {
            c.env_remove(k);
        }
    }
    c.args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "error");
    c
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    webrtcai(args, env).output().unwrap()
}

fn line<'a>(shown: &'a str, key: &str) -> &'a str {
    shown
        .lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("no {key} in {shown}"))
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_and_secrets_are_not_shown() {
    let dir = scratch("show");
    let file = dir.join("webrtcai.toml");
    std::fs::write(
        &file,
        "http = \"0.0.0.0:80\"\nmedia_port = 41000\ncores = 3\nno-pin = true\n\
         admin_secret = \"file-secret\"\nregion = \"eu-west\"\n",
    )
    .unwrap();
    let out = run(
        &[
            "--config",
            file.to_str().unwrap(),
            "--http",
            "127.0.0.1:9000",
            "config",
            "show",
        ],
        &[("WEBRTCAI_CORES", "2"), ("WEBRTCAI_MEDIA_BIND", "0.0.0.0")],
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(line(&shown, "http").starts_with("http = \"127.0.0.1:9000\""));
    assert!(line(&shown, "http").ends_with("# flag"));
    assert!(line(&shown, "cores").starts_with("cores = 2"));
    assert!(line(&shown, "cores").ends_with("# environment, WEBRTCAI_CORES"));
    assert!(line(&shown, "media_bind").ends_with("# environment, WEBRTCAI_MEDIA_BIND"));
    assert!(line(&shown, "media_port").starts_with("media_port = 41000"));
    assert!(line(&shown, "media_port").ends_with("# file"));
    assert!(line(&shown, "no_pin").starts_with("no_pin = true"));
    assert!(line(&shown, "region").starts_with("region = \"eu-west\""));
    assert!(line(&shown, "usage_flush_secs").ends_with("# default"));
    assert!(line(&shown, "admin_secret").starts_with("admin_secret = \"(redacted)\""));
    assert!(!shown.contains("file-secret"), "{shown}");

    // What it prints is a configuration file that gives the same again.
    let again = dir.join("again.toml");
    std::fs::write(&again, shown.replace("admin_secret = \"(redacted)\"", "")).unwrap();
    let out = run(
        &["--config", again.to_str().unwrap(), "config", "show"],
        &[],
    );
    let shown_again = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "http",
        "cores",
        "media_bind",
        "media_port",
        "no_pin",
        "region",
    ] {
        let value = |s: &str| line(s, key).split('#').next().unwrap().trim().to_owned();
        assert_eq!(value(&shown_again), value(&shown), "{key}");
    }
}

#[test]
fn a_bad_file_stops_the_start_with_the_key_and_the_reason() {
    let dir = scratch("refused");
    let cases = [
        (
            "media_prot = 1\n",
            "unknown key `media_prot` (did you mean `media_port`?)",
        ),
        ("media_port = \"x\"\n", "`media_port`: invalid value 'x'"),
        (
            "media_port = 70000\n",
            "`media_port`: invalid value '70000'",
        ),
        ("no_pin = 1\n", "`no_pin`: expects true or false, not 1"),
        ("http = \n", "not TOML"),
    ];
    for (text, reason) in cases {
        let file = dir.join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let db = dir.join("accounts.db");
        let out = run(
            &[
                "--config",
                file.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(reason), "{text}: {stderr}");
        assert!(!db.exists(), "nothing started for {text}");
    }
    let out = run(
        &["--config", dir.join("missing.toml").to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    // A bad environment variable is refused as a bad flag is.
    let out = run(&["config", "show"], &[("WEBRTCAI_MEDIA_PORT", "many")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'many'"));
}

#[test]
fn the_server_serves_where_its_file_says() {
    let dir = scratch("serve");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let file = dir.join("webrtcai.toml");
    std::fs::write(
        &file,
        format!(
            "http = \"127.0.0.1:{port}\"\ndb = \"{}\"\nmedia_port = 0\ncores = 1\nno_pin = true\n\
             recordings_dir = \"{}\"\n",
            dir.join("accounts.db").display(),
            dir.join("recordings").display()
        ),
    )
    .unwrap();
    let mut child = webrtcai(&["--config", file.to_str().unwrap()], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answer = String::new();
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            answer.clear();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        dir.join("accounts.db").exists(),
        "the database is where the file says"
    );
}
