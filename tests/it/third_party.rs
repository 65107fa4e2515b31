//! The third-party POSIX suites on a real mount: pjdfstest (allow_other, run as root with
//! its own unprivileged users) and fsx. .ci/run installs both; the tests look for them
//! in $KMSFS_TOOLS/bin, ~/.cache/kmsfs-tools/bin (where .ci/run puts them), then on PATH. Missing tools fail in CI and skip loudly elsewhere.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// The two suites run one after the other: on two cores, running them side by side made
/// pjdfstest's timing-sensitive checks less telling.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec![];
    if let Some(d) = std::env::var_os("KMSFS_TOOLS") {
        dirs.push(PathBuf::from(d).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cache/kmsfs-tools/bin"));
    }
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    let found = dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} not found (set KMSFS_TOOLS or PATH); .ci/run installs it");
        }
        eprintln!("\n!!!!!!!! SKIPPING: {name} is not installed (cargo install {name} --locked) !!!!!!!!\n");
    }
    found
}

#[test]
fn pjdfstest_has_no_failures() {
    require_fuse!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pjd) = tool("pjdfstest") else { return };
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "pjdfstest needs root in CI"
        );
        eprintln!("!!!!!!!! SKIPPING pjdfstest: needs root !!!!!!!!");
        return;
    }
    let mut t = Tree::new(&[]);
    t.mount_with(&["--allow-other"]);
    let conf = t.dir.path().join("pjdfstest.toml");
    std::fs::write(
        &conf,
        "[features]\nposix_fallocate = {}\nutime_now = {}\nutimensat = {}\nrename_ctime = {}\n\
         [settings]\nnaptime = 0.01\n[dummy_auth]\nentries = [[\"nobody\",\"nogroup\"],[\"daemon\",\"daemon\"]]\n",
    )
    .unwrap();
    let out = Command::new(pjd)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&t.mnt)
        .current_dir(&t.mnt)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rfind(|l| l.starts_with("Summary"))
        .unwrap_or("no summary")
        .to_string();
    eprintln!("pjdfstest: {summary}");
    // each failure with the lines after it (pjdfstest prints the assertion there)
    let lines: Vec<&str> = stdout.lines().collect();
    let failures: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("FAILED"))
        .map(|(i, _)| lines[i..(i + 6).min(lines.len())].join("\n"))
        .collect();
    assert!(
        out.status.success() && summary.contains(" 0 failed"),
        "pjdfstest failed: {summary}\n{}\n{}",
        failures.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fsx_50k_operations() {
    fsx_with(&[]);
}

/// fsx with the kernel's page cache writing through (no writeback cache): another set of
/// requests reaches the daemon (every write, no cached sizes or times).
#[test]
fn fsx_50k_operations_without_the_writeback_cache() {
    fsx_with(&["--no-writeback-cache"]);
}

fn fsx_with(mount_args: &[&str]) {
    require_fuse!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fsx) = tool("fsx") else { return };
    let mut t = Tree::new(&[]);
    t.mount_with(mount_args);
    let ops = std::env::var("KMSFS_FSX_OPS").unwrap_or_else(|_| "50000".into());
    let out = Command::new(fsx)
        .args(["-N", &ops, "-S", "20261122", "-P"])
        .arg(t.dir.path())
        .arg(t.p("fsx.data"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("A-OK"),
        "fsx failed:\n{text}\nlog:\n{}",
        t.log()
    );
    eprintln!("fsx {mount_args:?}: {ops} operations A-OK");
}
