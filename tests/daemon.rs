//! The `warden` binary as an operator runs it: `serve` on a fresh directory with no key in the
//! environment, SIGTERM, exit codes, `keygen`, `keys rotate`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::needless_pass_by_value
)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn warden(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.current_dir(dir)
        .env_remove("WARDEN_MASTER_KEY")
        .env_remove("WARDEN_PREVIOUS_KEYS")
        .env_remove("WARDEN_DATABASE_URL")
        .env_remove("WARDEN_CONFIG")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

/// Reads the child's stderr until a line contains `needle` (or fails after 30 s); returns all
/// lines read.
fn wait_for_line(child: &mut Child, needle: &str) -> Vec<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(needle);
            lines.push(line);
            if found {
                // Drain the rest in the background so the child never blocks on a full pipe.
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return lines;
            }
        }
    }
    panic!("no line containing {needle:?} within 30 s; got {lines:#?}");
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "warden did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_starts_on_a_fresh_directory_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        dir.path().join("config.toml"),
    )
    .unwrap();
    let mut child = warden(dir.path())
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = wait_for_line(&mut child, "store ready");
    let all = lines.join("\n");
    assert!(
        all.contains("DEVELOPMENT MASTER KEY") && all.contains("WARDEN_MASTER_KEY"),
        "{all}"
    );
    assert!(
        all.contains(&dir.path().join("data/dev-master.key").display().to_string()),
        "key path logged: {all}"
    );
    assert!(
        all.contains(&dir.path().join("data/warden.db").display().to_string()),
        "database logged: {all}"
    );
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), 0);
    let key = std::fs::read_to_string(dir.path().join("data/dev-master.key")).unwrap();

    // A second start reuses the key file.
    let mut child = warden(dir.path())
        .arg("serve")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let all = wait_for_line(&mut child, "store ready").join("\n");
    assert!(all.contains("created=false"), "{all}");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), 0);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/dev-master.key")).unwrap(),
        key
    );
}

#[test]
fn required_env_key_missing_or_malformed_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[keys]\nrequire_env_key = true\n",
    )
    .unwrap();
    let out = warden(dir.path()).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDEN_MASTER_KEY is not set"));
    let out = warden(dir.path())
        .arg("serve")
        .env("WARDEN_MASTER_KEY", "bm90LWEta2V5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARDEN_MASTER_KEY is invalid") && !stderr.contains("bm90LWEta2V5"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing created on a key error"
    );
    // A bad config is exit 64 too.
    std::fs::write(
        dir.path().join("config.toml"),
        "[keys]\nrequire_env_keys = true\n",
    )
    .unwrap();
    assert_eq!(
        warden(dir.path())
            .arg("serve")
            .output()
            .unwrap()
            .status
            .code(),
        Some(64)
    );
}

#[test]
fn keygen_then_rotate_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = || {
        let out = warden(dir.path()).arg("keygen").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (k1, k2) = (keygen(), keygen());
    assert_ne!(k1, k2);
    assert_eq!(k1.len(), 44);
    // Start under k1 so the schema exists, then rotate to k2 with k1 as previous.
    let mut child = warden(dir.path())
        .arg("serve")
        .env("WARDEN_MASTER_KEY", &k1)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut child, "store ready");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), 0);
    let out = warden(dir.path())
        .args(["keys", "rotate"])
        .env("WARDEN_MASTER_KEY", &k2)
        .env("WARDEN_PREVIOUS_KEYS", &k1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("re-sealed 0 rows") && stdout.contains("0 rows remain"),
        "{stdout}"
    );
}
