//! Helpers for tests that mount real FUSE filesystems through the `kmsfs` binary.
#![allow(dead_code)] // each test module uses its own share of the helpers

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_kmsfs");

/// The binary the tree helpers run: `KMSFS_TEST_BIN` if set (to watch a regression test
/// fail against an older build), else the one cargo built.
pub fn bin() -> String {
    std::env::var("KMSFS_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// The binary as the tree tests run it: their throwaway keystores keep the root key in
/// the clear, chosen explicitly (`KMSFS_SEAL=none`, which only a new keystore reads);
/// tests/it/seal.rs tests the seals and the refusal without a choice.
pub fn command() -> Command {
    let mut c = Command::new(bin());
    c.env("KMSFS_SEAL", "none");
    // Pins go to this test process's own file unless a test names one: never into the
    // host's default keystore directory (/var/lib/kmsfs as root).
    static PINS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let pins = PINS.get_or_init(|| tempfile::tempdir().unwrap());
    c.env("KMSFS_KNOWN_TREES", pins.path().join("known_trees.json"));
    c
}

/// True when the test may mount a tmpfs (root). In CI a missing privilege is a failure.
pub fn can_mount_tmpfs() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("this test mounts a tmpfs and needs root, and CI is set");
        }
        eprintln!("\n!!!!!!!! SKIPPING: mounting a small tmpfs needs root (not CI, so skipping) !!!!!!!!\n");
    }
    root
}

/// True when FUSE mounts can be made here. In CI (CI set) a missing FUSE is a failure,
/// never a skip; elsewhere the test is skipped with a loud message.
pub fn fuse_available() -> bool {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    let root = rustix::process::geteuid().is_root();
    let ok = dev && (root || Path::new("/usr/bin/fusermount3").exists());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("FUSE is not available (/dev/fuse usable: {dev}, root: {root}) but CI is set: FUSE tests must run in CI");
        }
        eprintln!("\n!!!!!!!! SKIPPING FUSE TEST: /dev/fuse is not usable here (not CI, so skipping) !!!!!!!!\n");
    }
    ok
}

#[macro_export]
macro_rules! require_fuse {
    () => {
        if !$crate::common::fuse_available() {
            return;
        }
    };
}

/// A kmsfs tree in a temp dir: keystore, backing dir, mountpoint, daemon log.
pub struct Tree {
    pub dir: tempfile::TempDir,
    pub ks: PathBuf,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub log: PathBuf,
    pub mounted: bool,
    /// A tmpfs the backing tree lives on, unmounted on drop.
    pub tmpfs: Option<PathBuf>,
}

impl Tree {
    pub fn new(init_args: &[&str]) -> Tree {
        Tree::make(init_args, None)
    }

    /// A tree whose backing directory is on a tmpfs of `size_kib` KiB (disk-full tests).
    pub fn on_tmpfs(size_kib: u64, init_args: &[&str]) -> Tree {
        Tree::make(init_args, Some(size_kib))
    }

    fn make(init_args: &[&str], tmpfs_kib: Option<u64>) -> Tree {
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-test-")
            .tempdir()
            .unwrap();
        // others (pjdfstest's users) must be able to reach the mountpoint
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut t = Tree {
            ks: dir.path().join("keystore"),
            backing: dir.path().join("backing"),
            mnt: dir.path().join("mnt"),
            log: dir.path().join("kmsfs.log"),
            dir,
            mounted: false,
            tmpfs: None,
        };
        std::fs::create_dir(&t.mnt).unwrap();
        if let Some(kib) = tmpfs_kib {
            let fs = t.dir.path().join("tmpfs");
            std::fs::create_dir(&fs).unwrap();
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
                .arg(&fs)
                .status()
                .unwrap();
            assert!(st.success(), "mount tmpfs");
            t.backing = fs.join("backing");
            t.tmpfs = Some(fs);
        }
        let mut args = vec!["init", t.backing.to_str().unwrap()];
        args.extend_from_slice(init_args);
        let out = t.kmsfs(&args);
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    pub fn kms_arg(&self) -> String {
        format!("local:{}", self.ks.display())
    }

    pub fn kmsfs(&self, args: &[&str]) -> Output {
        command()
            .args(args)
            .env("KMSFS_KMS", self.kms_arg())
            .env(
                "KMSFS_KNOWN_TREES",
                self.dir.path().join("known_trees.json"),
            )
            .env_remove("KMSFS_AEAD")
            .output()
            .expect("run kmsfs")
    }

    pub fn try_mount(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "mount",
            self.backing.to_str().unwrap(),
            self.mnt.to_str().unwrap(),
            "--log-file",
            self.log.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.kmsfs(&args)
    }

    pub fn mount(&mut self) {
        self.mount_with(&[]);
    }

    pub fn mount_with(&mut self, extra: &[&str]) {
        let out = self.try_mount(extra);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
    }

    pub fn umount(&mut self) {
        let out = self.kmsfs(&["umount", self.mnt.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "umount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = false;
        // the daemon exits once the kernel drops the connection; give it a moment
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    pub fn remount(&mut self) {
        self.umount();
        self.mount();
    }

    pub fn p(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    /// The backing path of plaintext path `name` (`kmsfs path`: names are sealed in a
    /// format 2 tree); kmsfs's own names, and paths below a missing directory, as given.
    pub fn b(&self, name: &str) -> PathBuf {
        if name.is_empty() || name == "kmsfs.json" {
            return self.backing.join(name);
        }
        // A rekey temp file: kmsfs's own name, in the backing directory of its parent.
        if let Some((dir, last)) = name.rsplit_once('/').or(Some(("", name))) {
            if last.starts_with(".kmsfs-tmp-") {
                return self.b(dir).join(last);
            }
        }
        let out = self.kmsfs(&["path", &self.backing.display().to_string(), name]);
        if out.status.success() {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim_end())
        } else {
            self.backing.join(name)
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // A failing test shows what its mount daemon said (the tree's directory goes away).
        if std::thread::panicking() {
            let log = self.log();
            if !log.is_empty() {
                eprintln!("---- kmsfs daemon log ({}) ----\n{log}", self.log.display());
            }
        }
        if self.mounted {
            let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::DETACH);
        }
        if let Some(fs) = &self.tmpfs {
            let _ = rustix::mount::unmount(fs, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; n];
    r.fill_bytes(&mut v);
    v
}

/// Is `needle` anywhere in any file under `dir`?
pub fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    for e in walk(dir) {
        if let Ok(data) = std::fs::read(&e) {
            if data.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn is_eio<T: std::fmt::Debug>(r: std::io::Result<T>) -> bool {
    match r {
        Err(e) => e.raw_os_error() == Some(libc::EIO),
        Ok(v) => {
            eprintln!("expected EIO, got Ok({v:?})");
            false
        }
    }
}

/// A `kmsfs kms serve` child on a free loopback port, with one principal.
pub struct Server {
    pub child: std::process::Child,
    pub ks: PathBuf,
    pub addr: String,
    pub akid: String,
    pub secret: String,
    pub extra: Vec<String>,
}

impl Server {
    /// Starts a server over `ks` (created if needed) with principal `alice`.
    pub fn start(ks: &Path, extra: &[&str]) -> Server {
        let out = command()
            .args([
                "--kms",
                &format!("local:{}", ks.display()),
                "key",
                "create",
                "--alias",
                "seed",
            ])
            .output()
            .unwrap();
        let _ = out;
        let out = command()
            .args([
                "--kms",
                &format!("local:{}", ks.display()),
                "kms",
                "principal",
                "create",
                "alice",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .unwrap_or_else(|| panic!("no {k} in {text}"))
                .to_string()
        };
        let (akid, secret) = (field("aws_access_key_id"), field("aws_secret_access_key"));
        let mut s = Server::spawn(ks, "127.0.0.1:0", extra);
        s.akid = akid;
        s.secret = secret;
        s
    }

    pub fn spawn(ks: &Path, listen: &str, extra: &[&str]) -> Server {
        Server::spawn_with(command(), ks, listen, extra)
    }

    /// `spawn`, from a command carrying its own environment (e.g. `Pg::kmsfs`).
    pub fn spawn_with(mut cmd: Command, ks: &Path, listen: &str, extra: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = cmd
            .args([
                "--kms",
                &format!("local:{}", ks.display()),
                "kms",
                "serve",
                "--listen",
                listen,
            ])
            .args(extra)
            // the documented default region (us-east-1), whatever this shell says
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .to_string();
        Server {
            child,
            ks: ks.to_path_buf(),
            addr,
            akid: String::new(),
            secret: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.extra.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Restarts on the same address.
    pub fn restart(&mut self) {
        self.stop();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut s = Server::spawn(&self.ks.clone(), &self.addr.clone(), &extra);
        std::mem::swap(&mut self.child, &mut s.child);
        drop(s); // holds the old, already stopped child
    }

    /// A command for the kmsfs binary talking to this server as alice.
    pub fn cmd(&self) -> Command {
        let mut c = command();
        c.env("KMSFS_KMS", self.url())
            .env("AWS_ACCESS_KEY_ID", &self.akid)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("KMSFS_KMS_TIMEOUT", "1");
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `python tests/compat/SCRIPT` with the interpreter of `venv` (see `python_venv`).
pub fn python_script(venv: &Path, script: &str) -> Command {
    let mut c = Command::new(venv.join("bin/python"));
    c.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/compat")
            .join(script),
    );
    c
}

/// Python with boto3/awscli/moto (the venv .ci/run makes), or None (with a loud skip
/// message outside CI; a panic in CI).
pub fn python_venv() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KMSFS_VENV").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kmsfs-venv")),
    ];
    let found = candidates.into_iter().flatten().find(|v| {
        [
            "bin/python",
            "bin/moto_server",
            "bin/aws",
            "bin/aws-encryption-cli",
        ]
        .iter()
        .all(|b| v.join(b).exists())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("the Python venv with boto3, awscli, moto and aws-encryption-sdk-cli is missing; .ci/run creates it");
        }
        eprintln!("\n!!!!!!!! SKIPPING: no Python venv with boto3/awscli/moto/aws-encryption-sdk-cli (set KMSFS_VENV; .ci/run makes one) !!!!!!!!\n");
    }
    found
}

/// Runs a check script (Python from the venv, or any program that prints "ALL OK" when
/// every check passed): its output is shown, and it must succeed and say so.
pub fn all_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success() && text.contains("ALL OK"), "{text}");
    text
}

/// The stdout of a command that must succeed (else a panic with its output).
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The lines of `stderr` that are not the keystore-seal warning (a keystore made here
/// without a passphrase keeps its root key in the clear and says so on every open):
/// what "one line per error" counts.
pub fn error_lines(stderr: &str) -> usize {
    stderr
        .trim()
        .lines()
        .filter(|l| !l.starts_with("kmsfs: warning: keystore "))
        .count()
}

/// SoftHSM2's PKCS#11 module (Debian's softhsm2).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token "kmsfs-test" (user PIN 4321) in a temp dir: (dir, token dir, config
/// file). None (loudly) only where SoftHSM2 is missing and CI is not set.
pub fn softhsm() -> Option<(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)> {
    if !Path::new(MODULE).exists()
        || Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "SoftHSM2 is missing but CI is set: .ci/run installs softhsm2"
        );
        eprintln!("\n!!!!!!!! SKIPPING PKCS#11 TEST: SoftHSM2 ({MODULE}) is not installed (not CI) !!!!!!!!\n");
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let tokens = d.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = d.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    let st = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "kmsfs-test",
            "--pin",
            "4321",
            "--so-pin",
            "87654321",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    Some((d, tokens, conf))
}

/// A PostgreSQL cluster of the tests' own (Debian's postgresql, initdb in a temp dir as an
/// unprivileged user, its own loopback port, password authentication), stopped on drop.
pub struct Pg {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub port: u16,
    /// The password file (KMSFS_STORE_PASSWORD_FILE).
    pub password_file: PathBuf,
    as_user: Option<String>,
}

/// Debian's PostgreSQL binaries (the newest installed), if any.
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

impl Pg {
    /// A fresh cluster; None (loudly) only where PostgreSQL is missing and CI is not set.
    pub fn start() -> Option<Pg> {
        let Some(bin) = pg_bin() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is missing but CI is set: .ci/run installs postgresql"
            );
            eprintln!("\n!!!!!!!! SKIPPING POSTGRESQL TEST: /usr/lib/postgresql/*/bin/initdb is not installed (not CI) !!!!!!!!\n");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // initdb refuses root: the cluster runs as nobody.
        let as_user = rustix::process::geteuid()
            .is_root()
            .then(|| "nobody".to_string());
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&sock).unwrap();
        let password = format!("pw-{}", std::process::id());
        let pwfile = dir.path().join("password");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        if as_user.is_some() {
            for p in [&data, &sock, &pwfile] {
                Command::new("chown")
                    .args(["nobody:nogroup", p.to_str().unwrap()])
                    .status()
                    .unwrap();
            }
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pg = Pg {
            dir,
            bin,
            port,
            password_file: pwfile.clone(),
            as_user,
        };
        let out = pg
            .run("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", "kmsfs", "--no-sync"])
            .args(["-A", "scram-sha-256", "--pwfile", pwfile.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.ctl("start");
        Some(pg)
    }

    fn run(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = match &self.as_user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={u}"),
                    "--regid=nogroup",
                    "--clear-groups",
                    "--",
                    exe.to_str().unwrap(),
                ]);
                c
            }
            None => Command::new(exe),
        };
        c.current_dir(self.dir.path()).env_remove("PGDATA");
        c
    }

    /// `pg_ctl start|stop|restart` (waits; `stop` is immediate, as a crash).
    pub fn ctl(&self, what: &str) {
        let data = self.dir.path().join("data");
        let sock = self.dir.path().join("sock");
        let mut c = self.run("pg_ctl");
        c.args(["-D", data.to_str().unwrap(), "-w", "-l"])
            .arg(self.dir.path().join("sock/log"))
            .args(["-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                self.port,
                sock.display()
            ))
            .arg(what);
        if what != "start" {
            c.args(["-m", "immediate"]);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new database in this cluster, as a `--store` URL.
    pub fn database(&self, name: &str) -> String {
        let out = self
            .run("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "kmsfs",
                "-d",
                "postgres",
            ])
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .env(
                "PGPASSWORD",
                std::fs::read_to_string(&self.password_file).unwrap().trim(),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://kmsfs@127.0.0.1:{}/{name}", self.port)
    }

    /// A command for the kmsfs binary whose store is `url`.
    pub fn kmsfs(&self, url: &str) -> Command {
        let mut c = command();
        c.env("KMSFS_STORE", url)
            .env("KMSFS_STORE_PASSWORD_FILE", &self.password_file);
        c
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .run("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}
