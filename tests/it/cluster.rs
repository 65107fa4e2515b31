//! The KMS beyond one machine: servers sharing one PostgreSQL store (a real cluster the
//! test starts from Debian's packages, as an unprivileged user, in a temp dir).

use std::process::Command;

use crate::common::*;

/// A keystore directory for a cluster member: the same root key (sealed: none in tests,
/// as `command()` says) and nothing else; the keys are in the database.
fn member(first: &std::path::Path, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(first.join("root.key"), dir.join("root.key")).unwrap();
}

/// Three servers on one database: boto3's checks pass through each; a key made on one is
/// usable on the others at once; two servers racing CreateAlias give one success and one
/// AlreadyExistsException; a DisableKey on one is refused by the others at the next
/// request; afterwards `audit verify` finds one gap-free chain holding every server's records.
/// `n` servers over one database of `pg`, each with its own keystore directory holding
/// the same root key, and principal alice.
struct Cluster {
    url: String,
    d: tempfile::TempDir,
    ks: Vec<std::path::PathBuf>,
    servers: Vec<Server>,
    akid: String,
    secret: String,
}

impl Cluster {
    fn start(pg: &Pg, db: &str, n: usize) -> Cluster {
        let url = pg.database(db);
        let d = tempfile::tempdir().unwrap();
        let ks: Vec<_> = (0..n).map(|i| d.path().join(format!("ks{i}"))).collect();
        let local0 = format!("local:{}", ks[0].display());
        ok(pg
            .kmsfs(&url)
            .args(["--kms", &local0, "key", "create", "--alias", "seed"])
            .output()
            .unwrap());
        let out = ok(pg
            .kmsfs(&url)
            .args(["--kms", &local0, "kms", "principal", "create", "alice"])
            .output()
            .unwrap());
        let field = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .unwrap()
                .to_string()
        };
        let (akid, secret) = (field("aws_access_key_id"), field("aws_secret_access_key"));
        for k in &ks[1..] {
            member(&ks[0], k);
        }
        let servers = ks
            .iter()
            // API checks run as fast as they can: no per-principal rate bound here
            .map(|k| {
                Server::spawn_with(pg.kmsfs(&url), k, "127.0.0.1:0", &["--max-rate", "1000000"])
            })
            .collect();
        Cluster {
            url,
            d,
            ks,
            servers,
            akid,
            secret,
        }
    }

    fn local(&self, i: usize) -> String {
        format!("local:{}", self.ks[i].display())
    }

    /// Every server's URL, as one `--kms` list.
    fn endpoints(&self) -> String {
        self.servers
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The kmsfs binary as alice, through every server.
    fn cmd(&self) -> Command {
        let mut c = command();
        c.env("KMSFS_KMS", self.endpoints())
            .env("AWS_ACCESS_KEY_ID", &self.akid)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("KMSFS_KMS_TIMEOUT", "2");
        c
    }
}

#[test]
fn three_servers_on_one_postgres_store() {
    let Some(venv) = python_venv() else { return };
    let Some(pg) = Pg::start() else { return };
    let c = Cluster::start(&pg, "three", 3);
    let (url, ks) = (c.url.clone(), c.ks.clone());
    let local0 = (0..3).map(|i| c.local(i)).collect::<Vec<_>>();
    let local = |i: usize| local0[i].clone();
    let (akid, secret) = (c.akid.clone(), c.secret.clone());
    let py = |script: &str, envs: &[(&str, String)]| {
        let mut c = python_script(&venv, script);
        c.env("AKID", &akid).env("SECRET", &secret);
        for (k, v) in envs {
            c.env(k, v);
        }
        all_ok(&mut c)
    };
    let endpoints: Vec<String> = c.servers.iter().map(Server::url).collect();
    py("cluster_checks.py", &[("ENDPOINTS", endpoints.join(","))]);
    // boto3's whole compatibility script through each server in turn (bob: a second principal)
    let bob = ok(pg
        .kmsfs(&url)
        .args(["--kms", &local(1), "kms", "principal", "create", "bob"])
        .output()
        .unwrap());
    let bob: Vec<&str> = bob.lines().filter_map(|l| l.split(" = ").nth(1)).collect();
    for (i, ep) in endpoints.iter().enumerate() {
        py(
            "boto3_compat.py",
            &[
                ("ENDPOINT", ep.clone()),
                ("BOB_AKID", bob[0].to_string()),
                ("BOB_SECRET", bob[1].to_string()),
                ("AWS_CLI", venv.join("bin/aws").display().to_string()),
                ("PREFIX", format!("s{i}-")),
                ("SHARED_STORE", "1".into()),
            ],
        );
    }
    let mut c = c;
    c.servers.clear();
    // One chain for all three servers, in the database; every record has its place.
    let v = ok(pg
        .kmsfs(&url)
        .args(["--kms", &local(2), "audit", "verify", "--json"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(v.trim()).unwrap();
    let records = v["records"].as_u64().unwrap();
    assert!(records > 300, "{v}");
    assert!(v["checkpoints"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["last_seq"].as_u64(), Some(records), "{v}");
    // nothing went to the keystore directories
    for k in &ks {
        assert!(!k.join("audit.log").exists(), "{}", k.display());
        assert!(!k.join("keystore.sqlite").exists(), "{}", k.display());
    }
    // both sides of every CreateAlias race are in it, the refusal too
    let shown = ok(pg
        .kmsfs(&url)
        .args(["--kms", &local(0), "audit", "show", "--json"])
        .output()
        .unwrap());
    let races: Vec<serde_json::Value> = shown
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["op"] == "CreateAlias")
        .filter(|r| r["error_code"].is_null() || r["error_code"] == "AlreadyExistsException")
        .collect();
    let refused = races
        .iter()
        .filter(|r| r["error_code"] == "AlreadyExistsException")
        .count();
    assert!(refused >= 20, "{refused} refusals recorded");
}

/// A mount and a client through all three servers (`--kms URL,URL,URL`) under a steady
/// load: `kill -9` of the server they were using loses no acknowledged file or key and the
/// mount keeps creating and opening files; then a PostgreSQL restart under the same load
/// gives errors for a while, then recovery, and `audit verify` finds one gap-free chain.
#[test]
fn kill_9_of_a_server_and_a_database_restart_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    require_fuse!();
    let Some(pg) = Pg::start() else { return };
    let mut c = Cluster::start(&pg, "failover", 3);
    let tree = c.d.path().join("tree");
    let mnt = c.d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    ok(c.cmd()
        .args(["key", "create", "--alias", "tree"])
        .output()
        .unwrap());
    ok(c.cmd()
        .args(["init", tree.to_str().unwrap(), "--key", "alias/tree"])
        .output()
        .unwrap());
    ok(c.cmd()
        .args(["mount", tree.to_str().unwrap(), mnt.to_str().unwrap()])
        .args(["--log-file", c.d.path().join("log").to_str().unwrap()])
        .output()
        .unwrap());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _guard = Unmount(mnt.clone());

    // The load: files created through the mount (a GenerateDataKey each), and keys made
    // with the CLI (CreateKey), each remembered once acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let files: Acked = Default::default();
    let keys: Arc<Mutex<Vec<String>>> = Default::default();
    let failures = Arc::new(Mutex::new(vec![]));
    let stall = Arc::new(Mutex::new(Duration::ZERO));
    let writer = {
        let (stop, files, failures, stall, mnt) = (
            stop.clone(),
            files.clone(),
            failures.clone(),
            stall.clone(),
            mnt.clone(),
        );
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let name = format!("f{i}");
                let data = random_bytes(5000 + i * 13, i as u64);
                let t = Instant::now();
                let r = (|| -> std::io::Result<()> {
                    use std::io::Write;
                    let mut f = std::fs::File::create(mnt.join(&name))?;
                    f.write_all(&data)?;
                    f.sync_all()
                })();
                let took = t.elapsed();
                let mut s = stall.lock().unwrap();
                *s = (*s).max(took);
                match r {
                    Ok(()) => files.lock().unwrap().push((name, data)),
                    Err(e) => failures.lock().unwrap().push(format!("{name}: {e}")),
                }
            }
        })
    };
    let maker = {
        let (stop, keys, failures) = (stop.clone(), keys.clone(), failures.clone());
        let mut cmd = c.cmd();
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        let _ = &mut cmd;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = command()
                    .envs(envs.clone())
                    .args(["key", "create"])
                    .output()
                    .unwrap();
                if out.status.success() {
                    keys.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
                } else {
                    failures
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&out.stderr).to_string());
                }
            }
        })
    };
    let wait_for = |what: &str, n: usize, files: &Acked| {
        let t = Instant::now();
        let start = files.lock().unwrap().len();
        while files.lock().unwrap().len() < start + n {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{what}: the load stopped"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("before the kill", 20, &files);
    // kill -9 the first server (every client prefers the first endpoint until it fails)
    c.servers[0].stop();
    *stall.lock().unwrap() = Duration::ZERO;
    let killed_at = files.lock().unwrap().len();
    wait_for("after the kill", 40, &files);
    let after_kill = failures.lock().unwrap().clone();
    let kill_stall = *stall.lock().unwrap();
    assert!(
        after_kill.is_empty(),
        "failed after the kill: {after_kill:?}"
    );
    // a PostgreSQL restart (immediate: a crash) under the same load
    pg.ctl("restart");
    wait_for("after the database restart", 40, &files);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    maker.join().unwrap();
    eprintln!(
        "failover: {} files before the kill, {} after; longest create+fsync after the kill {:?}; {} keys made; {} failures across the database restart",
        killed_at,
        files.lock().unwrap().len() - killed_at,
        kill_stall,
        keys.lock().unwrap().len(),
        failures.lock().unwrap().len()
    );
    // Every acknowledged file reads back after a remount (its key unwrapped again, through
    // the servers still up), and every acknowledged key exists.
    ok(command()
        .args(["umount", mnt.to_str().unwrap()])
        .output()
        .unwrap());
    ok(c.cmd()
        .args(["mount", tree.to_str().unwrap(), mnt.to_str().unwrap()])
        .output()
        .unwrap());
    for (name, data) in files.lock().unwrap().iter() {
        assert_eq!(&std::fs::read(mnt.join(name)).unwrap(), data, "{name}");
    }
    let listed = ok(c.cmd().args(["key", "list", "--json"]).output().unwrap());
    for k in keys.lock().unwrap().iter() {
        let id = k.rsplit('/').next().unwrap();
        assert!(listed.contains(id), "acknowledged key {k} is gone");
    }
    ok(command()
        .args(["umount", mnt.to_str().unwrap()])
        .output()
        .unwrap());
    c.servers.clear();
    let v = ok(pg
        .kmsfs(&c.url)
        .args(["--kms", &c.local(1), "audit", "verify", "--json"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(v.trim()).unwrap();
    assert_eq!(v["last_seq"], v["records"], "{v}");
    assert!(v["records"].as_u64().unwrap() > 100, "{v}");
}

/// The embedded KMS's library suite (`kms::local`), run again with every keystore's rows
/// and audit chain in a fresh PostgreSQL database: both engines pass the same tests.
#[test]
fn the_kms_library_suite_passes_on_postgres() {
    let Some(pg) = Pg::start() else { return };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["test", "--lib", "--", "kms::local::", "--test-threads=2"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "KMSFS_TEST_PG",
            format!("postgres://kmsfs@127.0.0.1:{}/postgres", pg.port),
        )
        .env("KMSFS_STORE_PASSWORD_FILE", &pg.password_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the suite failed on PostgreSQL");
    let passed: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    // every test of the suite ran (none filtered or skipped)
    let listed = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--lib", "--", "kms::local::", "--list"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.ends_with(": test"))
        .count();
    assert!(listed >= 30, "{listed} tests listed");
    assert_eq!(
        passed, listed,
        "{passed} of {listed} tests passed on PostgreSQL"
    );
}

/// Two Regions' servers on one database: multi-Region keys through boto3
/// (tests/compat/multi_region.py: replicas, where AWS refuses, what is shared and what is
/// per Region, UpdatePrimaryRegion, deletion), then a tree whose key is multi-Region,
/// written through one Region and mounted through the other.
#[test]
fn multi_region_keys_across_two_regions() {
    let Some(venv) = python_venv() else { return };
    let Some(pg) = Pg::start() else { return };
    let mut c = Cluster::start(&pg, "regions", 2);
    // the cluster's two servers, restarted as two Regions
    c.servers.clear();
    let (ra, rb) = ("us-east-1", "eu-west-1");
    c.servers = vec![
        Server::spawn_with(pg.kmsfs(&c.url), &c.ks[0], "127.0.0.1:0", &["--region", ra]),
        Server::spawn_with(pg.kmsfs(&c.url), &c.ks[1], "127.0.0.1:0", &["--region", rb]),
    ];
    all_ok(
        python_script(&venv, "multi_region.py")
            .env("ENDPOINT_A", c.servers[0].url())
            .env("REGION_A", ra)
            .env("ENDPOINT_B", c.servers[1].url())
            .env("REGION_B", rb)
            .env("AKID", &c.akid)
            .env("SECRET", &c.secret),
    );
    if !fuse_available() {
        return;
    }
    // A tree on a multi-Region key made in A, written through A, mounted through B.
    let region_cmd = |i: usize, region: &str| {
        let mut cmd = command();
        cmd.env("KMSFS_KMS", c.servers[i].url())
            .env("AWS_ACCESS_KEY_ID", &c.akid)
            .env("AWS_SECRET_ACCESS_KEY", &c.secret)
            .env("AWS_REGION", region)
            .env("KMSFS_KMS_TIMEOUT", "2");
        cmd
    };
    let arn = ok(region_cmd(0, ra)
        .args(["key", "create", "--multi-region"])
        .output()
        .unwrap());
    let arn = arn.trim().to_string();
    assert!(arn.contains(":key/mrk-"), "{arn}");
    let tree = c.d.path().join("tree");
    let mnt = c.d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    ok(region_cmd(0, ra)
        .args(["init", tree.to_str().unwrap(), "--key", &arn])
        .output()
        .unwrap());
    let mount = |i: usize, region: &str| {
        ok(region_cmd(i, region)
            .args(["mount", tree.to_str().unwrap(), mnt.to_str().unwrap()])
            .output()
            .unwrap());
    };
    let umount = || {
        ok(command()
            .args(["umount", mnt.to_str().unwrap()])
            .output()
            .unwrap());
    };
    mount(0, ra);
    std::fs::write(mnt.join("written-in-a"), b"a").unwrap();
    umount();
    // Not replicated yet: B cannot open it.
    let out = region_cmd(1, rb)
        .args(["mount", tree.to_str().unwrap(), mnt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "mounted through B before the key was replicated"
    );
    let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
    ok(region_cmd(0, ra)
        .args(["key", "replicate", &arn, "--region", rb])
        .output()
        .unwrap());
    mount(1, rb);
    assert_eq!(std::fs::read(mnt.join("written-in-a")).unwrap(), b"a");
    std::fs::write(mnt.join("written-in-b"), b"b").unwrap();
    umount();
    mount(0, ra);
    assert_eq!(std::fs::read(mnt.join("written-in-b")).unwrap(), b"b");
    umount();
}
