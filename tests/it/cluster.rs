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
#[test]
fn three_servers_on_one_postgres_store() {
    let Some(venv) = python_venv() else { return };
    let Some(pg) = Pg::start() else { return };
    let url = pg.database("three");
    let d = tempfile::tempdir().unwrap();
    let ks: Vec<_> = (0..3).map(|i| d.path().join(format!("ks{i}"))).collect();
    let local = |i: usize| format!("local:{}", ks[i].display());
    ok(pg.kmsfs(&url).args(["--kms", &local(0), "key", "create", "--alias", "seed"]).output().unwrap());
    let out = ok(pg.kmsfs(&url).args(["--kms", &local(0), "kms", "principal", "create", "alice"]).output().unwrap());
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap()
            .to_string()
    };
    let (akid, secret) = (field("aws_access_key_id"), field("aws_secret_access_key"));
    for i in 1..3 {
        member(&ks[0], &ks[i]);
    }
    let servers: Vec<Server> = (0..3)
        .map(|i| Server::spawn_with(pg.kmsfs(&url), &ks[i], "127.0.0.1:0", &[]))
        .collect();
    let py = |script: &str, envs: &[(&str, String)]| {
        let mut c = Command::new(venv.join("bin/python"));
        c.arg(format!("{}/tests/compat/{script}", env!("CARGO_MANIFEST_DIR")))
            .env("AKID", &akid)
            .env("SECRET", &secret);
        for (k, v) in envs {
            c.env(k, v);
        }
        all_ok(&mut c)
    };
    let endpoints: Vec<String> = servers.iter().map(Server::url).collect();
    py("cluster_checks.py", &[("ENDPOINTS", endpoints.join(","))]);
    // boto3's whole compatibility script through each server in turn (bob: a second principal)
    let bob = ok(pg.kmsfs(&url).args(["--kms", &local(1), "kms", "principal", "create", "bob"]).output().unwrap());
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
            ],
        );
    }
    drop(servers);
    // One chain for all three servers, in the database; every record has its place.
    let v = ok(pg.kmsfs(&url).args(["--kms", &local(2), "audit", "verify", "--json"]).output().unwrap());
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
    let shown = ok(pg.kmsfs(&url).args(["--kms", &local(0), "audit", "show", "--json"]).output().unwrap());
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
