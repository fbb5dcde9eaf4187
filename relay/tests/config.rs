//! The `relay` binary reads a TOML file of settings under its flags and environment, as
//! `webrtcai` does: a key that names no setting stops it with the key, and a good file's
//! settings are used.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_unknown_key_stops_the_relay_with_the_key() {
    let path = file("unknown", "cores = 1\ncontrl = \"127.0.0.1:7000\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown key `contrl` (did you mean `control`?)"),
        "{err}"
    );
}

#[test]
fn the_files_settings_are_used_and_a_flag_beats_them() {
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (from_file, from_flag) = (free(), free());
    let path = file(
        "good",
        &format!(
            "control = \"{from_file}\"\ncores = 1\nno_pin = true\nport = 0\nstats_interval = 0\n"
        ),
    );
    for (args, listens) in [
        (vec![], from_file),
        (
            vec!["--control".to_owned(), from_flag.to_string()],
            from_flag,
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
            .arg("--config")
            .arg(&path)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut up = false;
        while Instant::now() < deadline {
            if TcpStream::connect(listens).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        let _ = child.wait();
        assert!(up, "the control API did not listen on {listens}: {err}");
    }
}
