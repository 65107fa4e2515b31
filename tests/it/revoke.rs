//! Revocation that revokes (#20): a former grantee of `kmsfs share` keeps everything it
//! obtained while it had access (the tree key it could Decrypt, data keys it generated)
//! and the backing folder it synced. After `share --revoke` it reads no name or target
//! written afterwards and plants nothing the owner's mount or fsck accepts; an old or
//! downgraded `kmsfs.json` is refused by the owner's pin. On e418955 each attack here
//! succeeded (the tree key was never replaced).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use kmsfs::crypto::SecretKey;
use kmsfs::format::names::{node_kind, node_size, NameKey, Node, NodeKind};
use kmsfs::format::{Geometry, TreeConfig};
use kmsfs::kms::{DecryptRequest, EncryptRequest, Kms, Secret};

use crate::common::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// What the grantee takes home: the tree key, unwrapped while its grant lived.
fn take_tree_key(kms: &dyn Kms, backing: &Path) -> SecretKey {
    let cfg = TreeConfig::load(backing).unwrap();
    let w = &cfg.tree_key[0];
    let r = kms
        .decrypt(DecryptRequest {
            ciphertext_blob: base64::engine::general_purpose::STANDARD
                .decode(&w.blob)
                .unwrap(),
            encryption_context: Some(kmsfs::trust::tree_context(&cfg.fs_id, cfg.generation)),
            key_id: Some(w.key.clone()),
            ..Default::default()
        })
        .expect("a grantee can unwrap the tree key while shared");
    SecretKey::from_slice(&r.plaintext.0).unwrap()
}

/// Every (directory, entry name) of a format 2 backing tree, with the directory's id.
fn entries(root: &Path) -> Vec<(PathBuf, [u8; 16], Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut id = [0u8; 16];
        rustix::fs::lgetxattr(&d, "user.kmsfs.dirid", &mut id[..]).unwrap();
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().as_bytes().to_vec();
            if d == root && n == b"kmsfs.json" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push((d.clone(), id, n));
        }
    }
    out
}

/// A symlink node file sealed under `names` as `name` in backing directory `dir` (id
/// `id`); its backing path.
fn plant_symlink(
    names: &NameKey,
    dir: &Path,
    id: &[u8; 16],
    name: &[u8],
    target: &[u8],
    geo: Geometry,
) -> PathBuf {
    let planted = names.seal(id, name).unwrap();
    let rec = names
        .seal_node(&Node {
            kind: NodeKind::Symlink,
            rdev: 0,
            target: target.to_vec(),
        })
        .unwrap();
    let pp = dir.join(std::ffi::OsStr::from_bytes(&planted.backing));
    fs::write(&pp, &rec).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&pp)
        .unwrap()
        .set_len(node_size(NodeKind::Symlink, rec.len() as u64, geo.cchunk()))
        .unwrap();
    pp
}

/// The config MAC, as anyone holding a tree key can compute it (docs/FORMAT.md).
fn remac(cfg: &mut TreeConfig, tk: &SecretKey) {
    cfg.mac = None;
    let body = serde_json::to_vec(&cfg).unwrap();
    let k = tk.derive(cfg.fs_id.as_bytes(), b"kmsfs config mac v1");
    cfg.mac = Some(hex::encode(k.hmac(&[b"kmsfs config v1", &body])));
}

#[test]
fn a_revoked_principal_learns_nothing_new_and_plants_nothing() {
    require_fuse!();
    let ks = tempfile::tempdir().unwrap();
    let server = Server::start(&ks.path().join("ks"), &[]);
    let d = tempfile::tempdir().unwrap();
    ok(server
        .cmd()
        .args(["key", "create", "--alias", "shared"])
        .output()
        .unwrap());
    let (a, mnt, log) = (
        d.path().join("a"),
        d.path().join("mnt"),
        d.path().join("log"),
    );
    fs::create_dir(&mnt).unwrap();
    let pins = d.path().join("alice-pins.json");
    let alice = || {
        let mut c = server.cmd();
        c.env("KMSFS_KNOWN_TREES", &pins);
        c
    };
    let mount = || {
        alice()
            .args(["mount", &s(&a), &s(&mnt), "--log-file", &s(&log)])
            .output()
            .unwrap()
    };
    let umount = || ok(command().args(["umount", &s(&mnt)]).output().unwrap());
    ok(alice()
        .args(["init", &s(&a), "--key", "alias/shared"])
        .output()
        .unwrap());
    ok(mount());
    fs::write(mnt.join("before.txt"), b"written before the revoke").unwrap();
    fs::create_dir(mnt.join("dir")).unwrap();
    umount();

    // Bob, shared read-only, then read-write, takes home what he could.
    let creds = {
        let out = ok(command()
            .args([
                "--kms",
                &format!("local:{}", ks.path().join("ks").display()),
            ])
            .args(["kms", "principal", "create", "bob"])
            .output()
            .unwrap());
        let v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(" = ").nth(1))
            .map(str::to_string)
            .collect();
        kmsfs::kms::remote::Credentials {
            access_key_id: v[0].clone(),
            secret_access_key: v[1].clone().into(),
            session_token: None,
        }
    };
    let bob: Arc<dyn Kms> = Arc::new(
        kmsfs::kms::remote::RemoteKms::new(
            &server.url(),
            "us-east-1",
            creds,
            None,
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    ok(alice()
        .args(["share", &s(&a), "--with", "bob", "--read-only"])
        .output()
        .unwrap());
    let tk = take_tree_key(&*bob, &a);
    let bob_names = NameKey::derive(&tk, &TreeConfig::load(&a).unwrap().fs_id);
    // Read-only is read-only cryptographically: with the tree key his share lets him
    // unwrap, he seals a symlink record and makes a directory with a sealed name and an
    // id, while his grant lives. The owner's mount accepts neither (both need the write
    // key, which a read-only share may not unwrap).
    let geo0 = Geometry::new(4096);
    let mut rid = [0u8; 16];
    rustix::fs::lgetxattr(&a, "user.kmsfs.dirid", &mut rid[..]).unwrap();
    let ro_link = plant_symlink(&bob_names, &a, &rid, b"ro-link", b"/etc/shadow", geo0);
    let ro_dir = a.join(std::ffi::OsStr::from_bytes(
        &bob_names.seal(&rid, b"ro-dir").unwrap().backing,
    ));
    fs::create_dir(&ro_dir).unwrap();
    rustix::fs::lsetxattr(
        &ro_dir,
        "user.kmsfs.dirid",
        &[9u8; 16],
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    ok(mount());
    assert!(
        is_eio(fs::symlink_metadata(mnt.join("ro-link"))),
        "a read-only grantee's symlink"
    );
    assert!(
        is_eio(fs::symlink_metadata(mnt.join("ro-dir"))),
        "a read-only grantee's directory"
    );
    umount();
    fs::remove_file(&ro_link).unwrap();
    fs::remove_dir(&ro_dir).unwrap();
    // Nor can he unwrap the write key.
    let cfg0 = TreeConfig::load(&a).unwrap();
    let w = &cfg0.write_key[0];
    assert!(bob
        .decrypt(DecryptRequest {
            ciphertext_blob: base64::engine::general_purpose::STANDARD
                .decode(&w.blob)
                .unwrap(),
            encryption_context: Some(kmsfs::trust::write_context(&cfg0.fs_id, cfg0.generation)),
            key_id: Some(w.key.clone()),
            ..Default::default()
        })
        .is_err());
    ok(alice()
        .args(["share", &s(&a), "--with", "bob"])
        .output()
        .unwrap());
    let cfg1 = TreeConfig::load(&a).unwrap();
    let old_config = fs::read(a.join("kmsfs.json")).unwrap();
    // A data key with the tree's context, kept for later.
    let bob_env = Arc::new(kmsfs::Envelope::new(bob.clone(), cfg1.clone()));
    let (stock_h, stock_keys) = bob_env.new_header().unwrap();
    let stock_auth =
        kmsfs::format::auth::AuthKey::derive(&tk, &cfg1.fs_id, cfg1.generation).seal(&stock_h);
    // A tree key of his own choosing, wrapped while he may Encrypt (his file-key grant
    // lets him only if the context holds kmsfs:fs, so it is never the tree key's).
    let own_tk = SecretKey([7; 32]);
    let mut ctx = kmsfs::trust::tree_context(&cfg1.fs_id, cfg1.generation + 5);
    ctx.insert("kmsfs:fs".into(), cfg1.fs_id.clone());
    let own_wrap = bob
        .encrypt(EncryptRequest {
            key_id: cfg1.keys[0].clone(),
            plaintext: Secret(own_tk.0.to_vec()),
            encryption_context: Some(ctx),
            ..Default::default()
        })
        .ok();
    let exact = bob.encrypt(EncryptRequest {
        key_id: cfg1.keys[0].clone(),
        plaintext: Secret(own_tk.0.to_vec()),
        encryption_context: Some(kmsfs::trust::tree_context(&cfg1.fs_id, cfg1.generation + 5)),
        ..Default::default()
    });
    assert!(
        exact.is_err(),
        "a grantee wrapped a tree key in the tree key's context"
    );

    // Revoked: the tree moves on to a new tree key.
    let out = ok(alice()
        .args(["share", &s(&a), "--revoke", "bob"])
        .output()
        .unwrap());
    assert!(out.contains("revoked 3 grant(s) of bob"), "{out}");
    assert!(out.contains("tree key generation"), "{out}");
    let cfg2 = TreeConfig::load(&a).unwrap();
    assert!(cfg2.generation > cfg1.generation && cfg2.previous.is_none());
    ok(mount());
    assert_eq!(
        fs::read(mnt.join("before.txt")).unwrap(),
        b"written before the revoke"
    );
    fs::write(mnt.join("dir/after-secret-name.txt"), b"after").unwrap();
    std::os::unix::fs::symlink("after-secret-target", mnt.join("after-link")).unwrap();
    umount();

    // 1. His tree key opens no name and no symlink record of the tree any more.
    let geo = Geometry::new(cfg2.chunk_size);
    for (dir, id, name) in entries(&a) {
        assert!(
            bob_names.open(&id, &name, None).is_err(),
            "bob reads {} in {}",
            String::from_utf8_lossy(&name),
            dir.display()
        );
        let p = dir.join(std::ffi::OsStr::from_bytes(&name));
        let len = fs::symlink_metadata(&p).unwrap().len();
        if let Some(kind) = node_kind(len, geo.cchunk()) {
            let rec = fs::read(&p).unwrap();
            let want = if kind == NodeKind::Symlink {
                16 + 9 + 4096
            } else {
                25
            };
            assert!(
                bob_names.open_node(&rec[..want], kind).is_err(),
                "bob reads a target"
            );
        }
    }

    // 2. He plants a symlink sealed under his key, under any name.
    let mut rid = [0u8; 16];
    rustix::fs::lgetxattr(&a, "user.kmsfs.dirid", &mut rid[..]).unwrap();
    let pp = plant_symlink(&bob_names, &a, &rid, b"planted-link", b"/etc/shadow", geo);

    // 3. He builds a complete file from the data key he kept (header, authentication of
    // his generation, content) and puts it behind the name of an existing file.
    let victim = {
        let out = alice()
            .args(["path", &s(&a), "before.txt"])
            .output()
            .unwrap();
        PathBuf::from(ok(out).trim())
    };
    fs::remove_file(&victim).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&victim)
        .unwrap();
    let set = |name: &str, v: &[u8]| {
        rustix::fs::fsetxattr(&f, name, v, rustix::fs::XattrFlags::empty()).unwrap()
    };
    set("user.kmsfs.header", &stock_h.encode().unwrap());
    set("user.kmsfs.auth", &stock_auth);
    kmsfs::content::Content::new(&f, &stock_keys, &stock_h.file_id, geo)
        .write(0, 0, b"bob's forged content")
        .unwrap();
    drop(f);

    ok(mount());
    let names: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !names.iter().any(|n| n == "planted-link"),
        "a planted symlink is listed: {names:?}"
    );
    assert!(
        is_eio(fs::read(mnt.join("before.txt"))),
        "a forged file from a kept data key is served"
    );
    assert_eq!(
        fs::read(mnt.join("dir/after-secret-name.txt")).unwrap(),
        b"after"
    );
    umount();
    let l = fs::read_to_string(&log).unwrap();
    assert!(l.contains("not authenticated under the tree key"), "{l}");
    let f = alice().args(["fsck", &s(&a)]).output().unwrap();
    assert!(!f.status.success());
    let fo = String::from_utf8_lossy(&f.stdout);
    assert!(
        fo.contains(&s(&victim)) && fo.contains("generation"),
        "{fo}"
    );
    assert!(fo.contains(&s(&pp)), "{fo}");

    // 4. An old kmsfs.json put back, or one he re-MACs as format 1 with the tree key
    // he holds, is refused by the owner's host: its pin says what must not go back.
    fs::write(a.join("kmsfs.json"), &old_config).unwrap();
    let e = mount();
    assert!(!e.status.success());
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        err.contains("generation") && err.contains("put back"),
        "{err}"
    );
    let mut downgraded = cfg1.clone();
    downgraded.version = 1;
    downgraded.filenames = "plaintext".into();
    remac(&mut downgraded, &tk);
    fs::write(
        a.join("kmsfs.json"),
        serde_json::to_string_pretty(&downgraded).unwrap(),
    )
    .unwrap();
    let e = mount();
    assert!(!e.status.success());
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(err.contains("downgrade"), "{err}");
    // The same at the current generation cannot be made: its tree key is not his.
    let mut forged = cfg2.clone();
    forged.version = 1;
    forged.filenames = "plaintext".into();
    remac(&mut forged, &tk);
    fs::write(
        a.join("kmsfs.json"),
        serde_json::to_string_pretty(&forged).unwrap(),
    )
    .unwrap();
    let e = mount();
    assert!(
        !e.status.success(),
        "a config MAC'd under a revoked tree key"
    );
    // Nor with a newer generation and the tree key he wrapped himself.
    if let Some(w) = own_wrap {
        let mut forged = cfg2.clone();
        forged.generation = cfg1.generation + 5;
        forged.tree_key = vec![kmsfs::format::TreeKeyWrap {
            key: cfg1.keys[0].clone(),
            blob: base64::engine::general_purpose::STANDARD.encode(&w.ciphertext_blob),
        }];
        remac(&mut forged, &own_tk);
        fs::write(
            a.join("kmsfs.json"),
            serde_json::to_string_pretty(&forged).unwrap(),
        )
        .unwrap();
        let e = mount();
        assert!(!e.status.success(), "a config under a tree key bob wrapped");
        let err = String::from_utf8_lossy(&e.stderr);
        assert!(err.contains("cannot unwrap the tree key"), "{err}");
    }
}

/// A move to a new tree key killed at any point leaves a tree that refuses to mount
/// until the move is run again, and then reads back whole.
#[test]
fn a_killed_tree_key_move_is_finished_by_the_next() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    for i in 0..40 {
        let dir = t.p(&format!("d{i}"));
        fs::create_dir(&dir).unwrap();
        for j in 0..50 {
            fs::write(dir.join(format!("f{j}")), format!("{i}/{j}")).unwrap();
        }
        std::os::unix::fs::symlink(format!("target-{i}"), dir.join("l")).unwrap();
        fs::write(dir.join("x".repeat(200)), b"long").unwrap();
    }
    t.umount();
    let mut kills = 0;
    for round in 0..50 {
        let mut child = command()
            .args(["tree-key", "rotate", &s(&t.backing)])
            .env("KMSFS_KMS", t.kms_arg())
            .env("KMSFS_KNOWN_TREES", t.dir.path().join("known_trees.json"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + (round * 7) % 60));
        let done = child.try_wait().unwrap().is_some();
        if !done {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        let cfg = TreeConfig::load(&t.backing).unwrap();
        if cfg.previous.is_some() {
            let e = t.try_mount(&[]);
            assert!(!e.status.success());
            assert!(String::from_utf8_lossy(&e.stderr).contains("did not finish"));
        } else if done && round > 0 {
            break;
        }
    }
    assert!(kills > 0, "never interrupted a move");
    let out = ok(t.kmsfs(&["tree-key", "rotate", &s(&t.backing)]));
    assert!(out.contains("tree key generation"), "{out}");
    t.mount();
    for i in 0..40 {
        for j in 0..50 {
            assert_eq!(
                fs::read_to_string(t.p(&format!("d{i}/f{j}"))).unwrap(),
                format!("{i}/{j}")
            );
        }
        assert_eq!(
            fs::read_link(t.p(&format!("d{i}/l"))).unwrap(),
            Path::new(&format!("target-{i}"))
        );
        assert_eq!(
            fs::read(t.p(&format!("d{i}/{}", "x".repeat(200)))).unwrap(),
            b"long"
        );
    }
    t.umount();
    ok(t.kmsfs(&["fsck", &s(&t.backing)]));
    // A kill between linking a re-sealed node under its temp name and renaming it over
    // the entry leaves the temp file (as CI once hit): the next move removes it.
    let d0 = t.b("d0");
    fs::write(d0.join(".kmsfs-tmp-node.0123456789ab"), b"half done").unwrap();
    fs::create_dir(d0.join(".kmsfs-tmp-dir.0123456789abcdef")).unwrap();
    assert!(!t.kmsfs(&["fsck", &s(&t.backing)]).status.success());
    ok(t.kmsfs(&["tree-key", "rotate", &s(&t.backing)]));
    ok(t.kmsfs(&["fsck", &s(&t.backing)]));
}

/// A tree made before tree-key generations (generation 0: its tree key wrapped in the
/// file keys' context, no write key, no file authentication or directory places) mounts
/// as it is, and its first move gives it all of them without losing an entry.
#[test]
fn a_tree_made_before_generations_moves_to_one() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    let arn = TreeConfig::load(&t.backing).unwrap().keys[0].clone();
    // The same keystore, a tree of the old kind beside it.
    let old = t.dir.path().join("old");
    fs::create_dir(&old).unwrap();
    {
        let kms: Arc<dyn Kms> = Arc::new(kmsfs::kms::local::LocalKms::open(&t.ks, false).unwrap());
        let cfg = TreeConfig::new(4096, vec![arn], None).with_encrypted_names();
        assert_eq!(cfg.generation, 0);
        let tt = kmsfs::TrustedTree::create(cfg, kms, t.kms_arg()).unwrap();
        assert!(tt.cfg.write_key.is_empty());
        tt.cfg.save(&old).unwrap();
        rustix::fs::lsetxattr(
            &old,
            "user.kmsfs.dirid",
            &[5u8; 16],
            rustix::fs::XattrFlags::CREATE,
        )
        .unwrap();
    }
    t.backing = old.clone();
    t.mount();
    fs::create_dir_all(t.p("d/e")).unwrap();
    fs::write(t.p("d/e/f"), b"made at generation 0").unwrap();
    std::os::unix::fs::symlink("target", t.p("d/l")).unwrap();
    t.umount();
    assert_eq!(fs::read_dir(&old).unwrap().count(), 2);
    let out = ok(t.kmsfs(&["tree-key", "rotate", &s(&old)]));
    assert!(out.contains("generation 0 -> 1"), "{out}");
    let cfg = TreeConfig::load(&old).unwrap();
    assert_eq!(cfg.generation, 1);
    assert!(!cfg.write_key.is_empty());
    t.mount();
    assert_eq!(fs::read(t.p("d/e/f")).unwrap(), b"made at generation 0");
    assert_eq!(fs::read_link(t.p("d/l")).unwrap(), Path::new("target"));
    fs::write(t.p("d/new"), b"new").unwrap();
    t.umount();
    ok(t.kmsfs(&["fsck", &s(&old)]));
    // ... and now its files and directories are authenticated.
    let f = ok(t.kmsfs(&["path", &s(&old), "d/e/f"]));
    assert!(rustix::fs::lgetxattr(f.trim(), "user.kmsfs.auth", &mut [0u8; 64][..]).is_ok());
    let d = ok(t.kmsfs(&["path", &s(&old), "d/e"]));
    assert!(rustix::fs::lgetxattr(d.trim(), "user.kmsfs.place", &mut [0u8; 128][..]).is_ok());
}
