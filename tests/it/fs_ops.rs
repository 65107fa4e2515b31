//! The filesystem operations driven directly, without `/dev/fuse`: what the FUSE handlers
//! answer, tested at the layer that decides it (like mountpoint-s3's fs tests).

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::Errno;
use kmsfs::envelope::Envelope;
use kmsfs::format::{TreeConfig, HEADER_XATTR};
use kmsfs::fs::{Caller, FsOptions, KmsFs, SetAttr, Xattr, ROOT_INO};
use kmsfs::kms::local::LocalKms;
use kmsfs::kms::Kms;

struct Fs {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    fs: KmsFs,
    env: Arc<Envelope>,
}

const ME: Caller = Caller { uid: 0, gid: 0 };

/// This test process's pins: never the host's own (/var/lib/kmsfs as root).
fn own_pins() {
    static PINS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let d = PINS.get_or_init(|| tempfile::tempdir().unwrap());
    kmsfs::trust::set_known_trees_path(d.path().join("known_trees.json"));
}

/// A tree in a temp dir (embedded KMS, default key) and the filesystem over it.
fn fs() -> Fs {
    fs_with(|e| e)
}

/// `fs()` with the envelope set up by `env` (its key cache, for one).
fn fs_with(env: impl FnOnce(Envelope) -> Envelope) -> Fs {
    fs_opts(env, true)
}

/// The handle names the file: no inode needed.
const NOINO: u64 = u64::MAX;

/// `fs_with`, with OPEN requests (handles) or lazy opens (`open_requests` false).
fn fs_opts(env: impl FnOnce(Envelope) -> Envelope, open_requests: bool) -> Fs {
    fs_made(env, open_requests, false)
}

/// `fs_opts`, with files made ahead (`--files-ahead`) or not.
fn fs_made(env: impl FnOnce(Envelope) -> Envelope, open_requests: bool, files_ahead: bool) -> Fs {
    own_pins();
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("b");
    std::fs::create_dir(&backing).unwrap();
    // A throwaway keystore: its root key in the clear, chosen here.
    kmsfs::seal::allow_clear_by_default();
    let kms: Arc<dyn Kms> = Arc::new(LocalKms::open(&dir.path().join("ks"), true).unwrap());
    let (arn, created) = kmsfs::tree::default_key(&*kms).unwrap();
    assert!(created);
    let cfg = TreeConfig::new(4096, vec![arn], None);
    let t = kmsfs::trust::TrustedTree::create(cfg, kms.clone(), "test".into()).unwrap();
    t.cfg.save(&backing).unwrap();
    let env = Arc::new(env(Envelope::new(kms, t.cfg.clone())));
    let opts = FsOptions {
        backing: backing.clone(),
        writeback_cache: false,
        attr_timeout: Duration::from_secs(1),
        mountpoint: dir.path().join("mnt"),
        open_requests,
        files_ahead,
    };
    let fs = KmsFs::new(&opts, env.clone(), 64).unwrap();
    Fs {
        _dir: dir,
        backing,
        fs,
        env,
    }
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

impl Fs {
    /// Creates `n` in `parent` with `data`; returns its inode.
    fn file(&self, parent: u64, n: &str, data: &[u8]) -> u64 {
        let (attr, fh) = self
            .fs
            .create(ME, parent, name(n), 0o100644, libc::O_RDWR)
            .unwrap();
        assert_eq!(
            self.fs.write(NOINO, fh, 0, 0, data, false, false).unwrap() as usize,
            data.len()
        );
        self.fs.release(fh);
        attr.ino.0
    }

    fn read_all(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let fh = self.fs.open(ino, libc::O_RDONLY, 0).map_err(|e| e.errno)?;
        let mut buf = vec![];
        let r = self
            .fs
            .read(NOINO, fh, 0, 1 << 20, &mut buf)
            .map_err(|e| e.errno);
        self.fs.release(fh);
        Ok(buf[r?].to_vec())
    }

    fn names(&self, dir: u64) -> Vec<String> {
        let fh = self.fs.opendir(dir).unwrap();
        let mut out = vec![];
        self.fs
            .readdir(dir, fh, 0, |_, _, _, n| {
                out.push(n.to_string_lossy().into_owned());
                false
            })
            .unwrap();
        self.fs.releasedir(fh);
        out
    }

    fn b(&self, rel: &str) -> PathBuf {
        self.backing.join(rel)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn write_read_getattr_and_the_backing_file_is_ciphertext_with_a_header() {
    let f = fs();
    let data = b"attack at dawn, attack at dawn".repeat(500);
    let ino = f.file(ROOT_INO, "secret", &data);
    assert_eq!(f.read_all(ino).unwrap(), data);
    assert_eq!(f.fs.getattr(ino).unwrap().size, data.len() as u64);
    let raw = std::fs::read(f.b("secret")).unwrap();
    assert!(!contains(&raw, b"attack at dawn"));
    assert!(raw.len() > data.len(), "chunks carry nonce and tag");
    assert!(xattr_len(&f.b("secret"), HEADER_XATTR) > 0);
}

/// The length of xattr `n` of `p` (0 if absent). A real buffer: rustix answers 0 to a
/// zero-length one instead of the size.
fn xattr_len(p: &Path, n: &str) -> usize {
    rustix::fs::getxattr(p, n, &mut [0u8; 8192][..]).unwrap_or(0)
}

#[test]
fn kmsfs_own_names_and_xattrs_are_hidden_and_protected() {
    let f = fs();
    let ino = f.file(ROOT_INO, "a", b"x");
    assert_eq!(
        f.fs.lookup(ROOT_INO, name("kmsfs.json")).unwrap_err().errno,
        Errno::ENOENT
    );
    assert!(!f.names(ROOT_INO).contains(&"kmsfs.json".to_string()));
    let e =
        f.fs.create(ME, ROOT_INO, name("kmsfs.json"), 0o100644, 0)
            .unwrap_err();
    assert_eq!(e.errno, Errno::EPERM);
    assert_eq!(
        f.fs.setxattr(ino, name(HEADER_XATTR), b"forged", 0)
            .unwrap_err()
            .errno,
        Errno::EPERM
    );
    assert_eq!(
        f.fs.removexattr(ino, name(HEADER_XATTR)).unwrap_err().errno,
        Errno::EPERM
    );
    assert_eq!(
        f.fs.getxattr(ino, name(HEADER_XATTR), 0).unwrap_err().errno,
        Errno::NO_XATTR
    );
    f.fs.setxattr(ino, name("user.mine"), b"value", 0).unwrap();
    assert_eq!(
        f.fs.getxattr(ino, name("user.mine"), 0).unwrap(),
        Xattr::Size(5)
    );
    assert_eq!(
        f.fs.getxattr(ino, name("user.mine"), 64).unwrap(),
        Xattr::Data(b"value".to_vec())
    );
    match f.fs.listxattr(ino, 4096).unwrap() {
        Xattr::Data(list) => assert_eq!(list, b"user.mine\0"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.fs.listxattr(ino, 3).unwrap_err().errno, Errno::ERANGE);
}

#[test]
fn a_tampered_chunk_is_eio_with_one_log_line_naming_the_file() {
    let f = fs();
    let ino = f.file(ROOT_INO, "t", &[7u8; 10000]);
    let mut raw = std::fs::read(f.b("t")).unwrap();
    raw[5000] ^= 1;
    std::fs::write(f.b("t"), &raw).unwrap();
    let fh = f.fs.open(ino, libc::O_RDONLY, 0).unwrap();
    let mut buf = vec![];
    // The first chunk is intact, the second is not.
    assert_eq!(f.fs.read(NOINO, fh, 0, 4096, &mut buf).unwrap().len(), 4096);
    let e = f.fs.read(NOINO, fh, 4096, 4096, &mut buf).unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    let (level, line) = e.log.expect("a log line");
    assert_eq!(level, tracing::Level::ERROR);
    assert!(line.contains(&f.b("t").display().to_string()), "{line}");
    assert!(line.contains("failed authentication"), "{line}");
}

#[test]
fn a_header_from_another_file_or_none_is_eio_at_open() {
    let f = fs();
    f.file(ROOT_INO, "a", b"alpha");
    let b = f.file(ROOT_INO, "b", b"bravo");
    let c = f.file(ROOT_INO, "c", b"charlie");
    // b gets a's header (copied, as whoever writes the backing tree could).
    let mut h = vec![0u8; 8192];
    let n = rustix::fs::getxattr(f.b("a"), HEADER_XATTR, &mut h[..]).unwrap();
    let f2 = fs_reopen(&f);
    rustix::fs::setxattr(
        f.b("b"),
        HEADER_XATTR,
        &h[..n],
        rustix::fs::XattrFlags::REPLACE,
    )
    .unwrap();
    rustix::fs::removexattr(f.b("c"), HEADER_XATTR).unwrap();
    let ino_b = f2.lookup(ROOT_INO, name("b")).unwrap().ino.0;
    let ino_c = f2.lookup(ROOT_INO, name("c")).unwrap().ino.0;
    let _ = (b, c);
    let fh = f2.open(ino_b, libc::O_RDONLY, 0).unwrap();
    let mut buf = vec![];
    assert_eq!(
        f2.read(NOINO, fh, 0, 100, &mut buf).unwrap_err().errno,
        Errno::EIO
    );
    let e = f2.open(ino_c, libc::O_RDONLY, 0).unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    assert!(e.log.unwrap().1.contains("no kmsfs header"));
}

/// A re-open needs the header only when the file's keys have left the key cache: the
/// mount keeps file ids, not headers, so once the keys expire (TTL) or are evicted the
/// header is read and checked again rather than trusted from the first open. With the
/// header removed from the backing file after it was made, a re-open works while the keys
/// are cached and is EIO once they are not.
#[test]
fn a_reopen_reads_the_header_again_once_its_keys_left_the_cache() {
    for (ttl, readable) in [(Duration::from_secs(3600), true), (Duration::ZERO, false)] {
        let f = fs_with(|e| e.with_ttl(ttl));
        let ino = f.file(ROOT_INO, "a", b"alpha");
        assert_eq!(f.read_all(ino).as_deref(), Ok(&b"alpha"[..]), "ttl {ttl:?}");
        rustix::fs::removexattr(f.b("a"), HEADER_XATTR).unwrap();
        if readable {
            assert_eq!(f.read_all(ino).as_deref(), Ok(&b"alpha"[..]), "ttl {ttl:?}");
        } else {
            let e = f.fs.open(ino, libc::O_RDONLY, 0).unwrap_err();
            assert_eq!(e.errno, Errno::EIO);
            assert!(e.log.unwrap().1.contains("no kmsfs header"));
        }
    }
    // Evicted rather than expired: a cache of one file's keys, a second file opened.
    let f = fs_with(|e| e.with_cache(1));
    let a = f.file(ROOT_INO, "a", b"alpha");
    let b = f.file(ROOT_INO, "b", b"bravo");
    assert_eq!(f.read_all(b).as_deref(), Ok(&b"bravo"[..]));
    rustix::fs::removexattr(f.b("a"), HEADER_XATTR).unwrap();
    assert_eq!(f.read_all(a), Err(Errno::EIO));
}

/// A second filesystem over the same tree (nothing cached).
fn fs_reopen(f: &Fs) -> KmsFs {
    let cfg = TreeConfig::load(&f.backing).unwrap();
    // A throwaway keystore: its root key in the clear, chosen here.
    kmsfs::seal::allow_clear_by_default();
    let kms: Arc<dyn Kms> = Arc::new(LocalKms::open(&f._dir.path().join("ks"), false).unwrap());
    let env = Arc::new(Envelope::new(kms, cfg));
    let opts = FsOptions {
        backing: f.backing.clone(),
        writeback_cache: false,
        attr_timeout: Duration::from_secs(1),
        mountpoint: f._dir.path().join("mnt"),
        open_requests: true,
        files_ahead: false,
    };
    KmsFs::new(&opts, env, 64).unwrap()
}

#[test]
fn names_dirs_links_and_renames() {
    let f = fs();
    let d1 = f.fs.mkdir(ME, ROOT_INO, name("d1"), 0o755).unwrap().ino.0;
    let d2 = f.fs.mkdir(ME, ROOT_INO, name("d2"), 0o700).unwrap().ino.0;
    let ino = f.file(d1, "f", b"content");
    f.fs.rename(d1, name("f"), d2, name("g"), 0).unwrap();
    assert!(f.names(d1).iter().all(|n| n == "." || n == ".."));
    assert_eq!(f.names(d2), [".", "..", "g"]);
    assert_eq!(f.read_all(ino).unwrap(), b"content");
    let l = f.fs.link(ino, ROOT_INO, name("hard")).unwrap();
    assert_eq!(l.ino.0, ino);
    assert_eq!(l.nlink, 2);
    let s =
        f.fs.symlink(ME, d1, name("s"), Path::new("../d2/g"))
            .unwrap();
    assert_eq!(f.fs.readlink(s.ino.0).unwrap(), b"../d2/g");
    assert_eq!(
        f.fs.rmdir(ROOT_INO, name("d2")).unwrap_err().errno,
        Errno::ENOTEMPTY
    );
    f.fs.unlink(d2, name("g")).unwrap();
    assert_eq!(f.read_all(ino).unwrap(), b"content", "still linked as hard");
    f.fs.rmdir(ROOT_INO, name("d2")).unwrap();
    assert_eq!(
        f.fs.lookup(ROOT_INO, name("d2")).unwrap_err().errno,
        Errno::ENOENT
    );
    // RENAME_NOREPLACE onto an existing name
    f.file(ROOT_INO, "x", b"1");
    let e =
        f.fs.rename(
            ROOT_INO,
            name("hard"),
            ROOT_INO,
            name("x"),
            libc::RENAME_NOREPLACE,
        )
        .unwrap_err();
    assert_eq!(e.errno, Errno::EEXIST);
}

#[test]
fn truncate_extend_fallocate_and_append() {
    let f = fs();
    let ino = f.file(ROOT_INO, "t", &[1u8; 9000]);
    let set = |size| SetAttr {
        size: Some(size),
        ..Default::default()
    };
    assert_eq!(f.fs.setattr(0, ino, set(100)).unwrap().size, 100);
    assert_eq!(f.read_all(ino).unwrap(), vec![1u8; 100]);
    assert_eq!(f.fs.setattr(0, ino, set(5000)).unwrap().size, 5000);
    let mut want = vec![1u8; 100];
    want.resize(5000, 0);
    assert_eq!(f.read_all(ino).unwrap(), want);
    let fh = f.fs.open(ino, libc::O_RDWR | libc::O_APPEND, 0).unwrap();
    f.fs.write(NOINO, fh, 0, 0, b"tail", false, false).unwrap();
    assert_eq!(
        f.fs.fallocate(
            NOINO,
            fh,
            0,
            10,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        )
        .unwrap_err()
        .errno,
        Errno::EOPNOTSUPP
    );
    f.fs.fallocate(NOINO, fh, 0, 8192, 0).unwrap();
    f.fs.release(fh);
    want.extend_from_slice(b"tail");
    want.resize(8192, 0);
    assert_eq!(f.read_all(ino).unwrap(), want);
    let d = f.fs.mkdir(ME, ROOT_INO, name("d"), 0o755).unwrap().ino.0;
    assert_eq!(f.fs.setattr(0, d, set(0)).unwrap_err().errno, Errno::EISDIR);
}

#[test]
fn new_nodes_belong_to_the_caller() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED new_nodes_belong_to_the_caller: needs root (chown)");
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    let f = fs();
    let u = Caller {
        uid: 1234,
        gid: 4321,
    };
    f.fs.create(u, ROOT_INO, name("f"), 0o100600, libc::O_RDWR)
        .unwrap();
    f.fs.mkdir(u, ROOT_INO, name("d"), 0o755).unwrap();
    f.fs.symlink(u, ROOT_INO, name("s"), Path::new("f"))
        .unwrap();
    f.fs.mknod(u, ROOT_INO, name("p"), libc::S_IFIFO | 0o644, 0)
        .unwrap();
    for n in ["f", "d", "s", "p"] {
        let md = std::fs::symlink_metadata(f.b(n)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 4321), "{n}");
    }
    // A file made by mknod (S_IFREG) gets its header like one made by create.
    f.fs.mknod(u, ROOT_INO, name("r"), libc::S_IFREG | 0o600, 0)
        .unwrap();
    assert!(xattr_len(&f.b("r"), HEADER_XATTR) > 0);
}

/// The tree commands are library calls too: rotate, fsck, cat, decrypt and rekey on files
/// the filesystem wrote, without spawning the binary.
#[test]
fn tree_commands_as_library_calls() {
    let f = fs();
    let d = f.fs.mkdir(ME, ROOT_INO, name("d"), 0o755).unwrap().ino.0;
    f.file(ROOT_INO, "a", b"alpha");
    f.file(d, "b", &[9u8; 20000]);
    // A throwaway keystore: its root key in the clear, chosen here.
    kmsfs::seal::allow_clear_by_default();
    let kms: Arc<dyn Kms> = Arc::new(LocalKms::open(&f._dir.path().join("ks"), false).unwrap());
    let cfg = TreeConfig::load(&f.backing).unwrap();
    let key = cfg.keys[0].clone();
    let before = kmsfs::tree::read_header_at(&f.b("a")).unwrap();
    kms.rotate_key_on_demand(kmsfs::kms::KeyIdRequest {
        key_id: key.clone(),
    })
    .unwrap();
    let s = kmsfs::tree::rewrap(&f.backing, &cfg, &*kms, &cfg.keys, 2, false).unwrap();
    assert_eq!((s.files, s.changed, s.failed), (2, 2, 0));
    let after = kmsfs::tree::read_header_at(&f.b("a")).unwrap();
    assert_eq!(after.file_id, before.file_id, "no data rewritten");
    assert_ne!(after.wraps[0].material_id, before.wraps[0].material_id);
    let env = Arc::new(Envelope::new(kms.clone(), cfg.clone()));
    let rep = kmsfs::tree::fsck(&f.backing, &cfg, Some(&env), None, None, false).unwrap();
    assert_eq!(
        (rep.files, rep.problems.len()),
        (2, 0),
        "{:?}",
        rep.problems
    );
    let mut out = vec![];
    kmsfs::tree::cat(&env, &f.b("d/b"), &mut out).unwrap();
    assert_eq!(out, [9u8; 20000]);
    let restored = f._dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    let r = kmsfs::tree::decrypt_tree(
        &env,
        &kmsfs::tree::TreeNames::for_walk(&env.config),
        &f.backing,
        std::slice::from_ref(&f.backing),
        &restored,
        false,
        false,
    )
    .unwrap();
    assert_eq!((r.files, r.failed.len()), (2, 0));
    assert_eq!(std::fs::read(restored.join("a")).unwrap(), b"alpha");
    let s = kmsfs::tree::rekey(&f.backing, &env, vec![f.b("a")], false).unwrap();
    assert_eq!((s.changed, s.failed), (1, 0));
    assert_ne!(
        kmsfs::tree::read_header_at(&f.b("a")).unwrap().file_id,
        before.file_id
    );
    // A flipped byte is found by fsck, and named.
    let mut raw = std::fs::read(f.b("d/b")).unwrap();
    raw[100] ^= 1;
    std::fs::write(f.b("d/b"), &raw).unwrap();
    let rep = kmsfs::tree::fsck(&f.backing, &cfg, Some(&env), None, None, false).unwrap();
    assert_eq!(rep.damaged_files, 1);
    assert!(rep.problems[0].path.ends_with("d/b"), "{:?}", rep.problems);
    assert_eq!(rep.problems[0].chunk, Some(0));
}

/// An encrypt-only tree (#13): its key is an RSA ENCRYPT_DECRYPT key, and the backup
/// host's principal may call GetPublicKey and nothing else. It creates and fills files,
/// replaces one whole (O_TRUNC), and reads or changes nothing it did not just write;
/// a principal allowed Decrypt reads every byte.
/// An encrypt-only tree of one RSA_3072 key: `backup` may only GetPublicKey, `restore`
/// may Decrypt; the backup host made the tree.
struct EncryptOnly {
    dir: tempfile::TempDir,
    backing: PathBuf,
    admin: LocalKms,
    key: String,
}

impl EncryptOnly {
    fn new() -> EncryptOnly {
        EncryptOnly::with("RSA_3072", "ENCRYPT_DECRYPT")
    }

    /// An encrypt-only tree of one `spec` key (RSA ENCRYPT_DECRYPT or ML-KEM
    /// ENCAPSULATE_DECAPSULATE).
    fn with(spec: &str, usage: &str) -> EncryptOnly {
        own_pins();
        // its throwaway keystore keeps its root key in the clear (not only when another
        // test of this process said so first)
        kmsfs::seal::allow_clear_by_default();
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("b");
        std::fs::create_dir(&backing).unwrap();
        let admin = LocalKms::open(&dir.path().join("ks"), true).unwrap();
        let t = EncryptOnly {
            backing,
            admin,
            key: String::new(),
            dir,
        };
        let key = t.key_of(spec, usage);
        let t = EncryptOnly { key, ..t };
        let backup = t.on(&t.key, "backup", &["GetPublicKey"]);
        // The backup host makes the tree itself: DescribeKey is denied, GetPublicKey is enough.
        let (arns, public_keys) =
            kmsfs::trust::tree_keys(&*backup, std::slice::from_ref(&t.key)).unwrap();
        assert_eq!(arns, std::slice::from_ref(&t.key));
        let mut cfg = TreeConfig::new(4096, arns, None);
        cfg.public_keys = public_keys;
        let tt = kmsfs::trust::TrustedTree::create(cfg, backup, "test".into()).unwrap();
        assert!(tt.cfg.mac.is_none() && tt.cfg.tree_key.is_empty());
        tt.cfg.save(&t.backing).unwrap();
        t
    }

    fn rsa(&self, spec: &str) -> String {
        self.key_of(spec, "ENCRYPT_DECRYPT")
    }

    fn key_of(&self, spec: &str, usage: &str) -> String {
        self.admin
            .create_key(kmsfs::kms::CreateKeyRequest {
                key_spec: Some(spec.into()),
                key_usage: Some(usage.into()),
                ..Default::default()
            })
            .unwrap()
            .key_metadata
            .arn
    }

    /// Principal `who`, granted `ops` on `key`.
    fn on(&self, key: &str, who: &str, ops: &[&str]) -> Arc<dyn Kms> {
        self.admin
            .create_grant(kmsfs::kms::CreateGrantRequest {
                key_id: key.into(),
                grantee_principal: who.into(),
                operations: ops.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .unwrap();
        Arc::new(self.admin.with_caller(kmsfs::kms::local::Caller {
            principal: who.into(),
            source: "test".into(),
            region: None,
            account: None,
        }))
    }

    /// A fresh mount of the tree (no keys held) as `kms`'s principal.
    fn mount(&self, kms: Arc<dyn Kms>) -> Fs {
        let opts = FsOptions {
            backing: self.backing.clone(),
            writeback_cache: false,
            attr_timeout: Duration::from_secs(1),
            mountpoint: self.dir.path().join("mnt"),
            open_requests: true,
            files_ahead: false,
        };
        let cfg = TreeConfig::load(&self.backing).unwrap();
        let env = Arc::new(Envelope::new(kms, cfg).with_pool(4));
        Fs {
            _dir: tempfile::tempdir().unwrap(),
            backing: self.backing.clone(),
            fs: KmsFs::new(&opts, env.clone(), 64).unwrap(),
            env,
        }
    }
}

#[test]
fn an_encrypt_only_tree_is_filled_by_a_host_that_cannot_read_it() {
    use kmsfs::kms::CreateKeyRequest;
    let e = EncryptOnly::new();
    let (backing, admin, key) = (&e.backing, &e.admin, &e.key);
    let rsa = |spec: &str| e.rsa(spec);
    let on = |key: &str, who: &str, ops: &[&str]| e.on(key, who, ops);
    let mount = |kms: Arc<dyn Kms>| e.mount(kms);
    let backup = on(key, "backup2", &["GetPublicKey"]);
    let restore = on(key, "restore", &["Decrypt"]);
    let b = mount(backup.clone());
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    let ino = b.file(ROOT_INO, "archive.tar", &data);
    let small = b.file(ROOT_INO, "small", b"first version");
    // A fresh mount holds no keys from writing: nothing can be read or changed in place.
    let b = mount(backup.clone());
    let ino2 = b.fs.lookup(ROOT_INO, name("archive.tar")).unwrap().ino.0;
    let small2 = b.fs.lookup(ROOT_INO, name("small")).unwrap().ino.0;
    assert_eq!(b.read_all(ino2), Err(Errno::EACCES));
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_WRONLY | libc::O_APPEND,
    ] {
        let e = b.fs.open(small2, flags, 0).unwrap_err();
        assert_eq!(e.errno, Errno::EACCES, "open with {flags:#o}");
        assert!(e.log.is_some(), "one log line");
    }
    // ... but replaced whole, it is.
    let fh =
        b.fs.open(small2, libc::O_WRONLY | libc::O_TRUNC, 0)
            .unwrap();
    b.fs.write(NOINO, fh, 0, 0, b"second version", false, false)
        .unwrap();
    b.fs.release(fh);
    // What it just wrote it still holds the key of (it drew it).
    assert_eq!(b.read_all(small2).unwrap(), b"second version");
    assert_eq!(b.read_all(ino2), Err(Errno::EACCES));
    let _ = (ino, small);
    // The principal allowed Decrypt reads every byte.
    let r = mount(restore);
    let ino3 = r.fs.lookup(ROOT_INO, name("archive.tar")).unwrap().ino.0;
    assert_eq!(r.read_all(ino3).unwrap(), data);
    let small3 = r.fs.lookup(ROOT_INO, name("small")).unwrap().ino.0;
    assert_eq!(r.read_all(small3).unwrap(), b"second version");
    // Nothing in the backing file names the key's plaintext; the wrap is RSA-sized.
    let raw = std::fs::read(backing.join("archive.tar")).unwrap();
    assert!(!contains(&raw, &data[..64]));
    let f = std::fs::File::open(backing.join("archive.tar")).unwrap();
    let h = kmsfs::backing::read_header(&f).unwrap();
    assert_eq!(h.wraps.len(), 1);
    assert_eq!(h.wraps[0].blob.len(), 384);
    // A recovery key added later (by a host allowed Decrypt): every file gets a wrap
    // under it, and a principal allowed Decrypt on it alone reads them.
    let admin_kms: Arc<dyn Kms> = Arc::new(admin.with_caller(admin.caller().clone()));
    let recovery = rsa("RSA_2048");
    let mut t2 = kmsfs::trust::TrustedTree::create(
        TreeConfig::load(backing).unwrap(),
        admin_kms,
        "test".into(),
    )
    .unwrap();
    let sum = kmsfs::tree::change_key(
        &mut t2,
        backing,
        kmsfs::tree::KeyChange::Add,
        &recovery,
        false,
    )
    .unwrap();
    assert_eq!((sum.changed, sum.failed), (2, 0), "{sum:?}");
    assert_eq!(t2.cfg.public_keys.len(), 2);
    let r2 = mount(on(&recovery, "r2", &["Decrypt"]));
    let ino4 = r2.fs.lookup(ROOT_INO, name("archive.tar")).unwrap().ino.0;
    assert_eq!(r2.read_all(ino4).unwrap(), data);
    // A symmetric key cannot join an RSA tree.
    let sym = admin
        .create_key(CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .arn;
    let mut t3 = t2;
    let e = kmsfs::tree::change_key(&mut t3, backing, kmsfs::tree::KeyChange::Add, &sym, false)
        .unwrap_err();
    assert!(
        e.to_string().contains("all symmetric or all public-key"),
        "{e}"
    );
}

/// A post-quantum encrypt-only tree: its key is ML-KEM-768 (ENCAPSULATE_DECAPSULATE).
/// The backup host (GetPublicKey only) encapsulates locally and fills it; nothing it did
/// not just write opens for it; the principal allowed Decapsulate reads every byte; a
/// wrap copied onto another file does not open there (its key is bound to tree and file).
#[test]
fn an_ml_kem_encrypt_only_tree_is_filled_by_a_host_that_cannot_read_it() {
    let e = EncryptOnly::with("ML_KEM_768", "ENCAPSULATE_DECAPSULATE");
    let backup = e.on(&e.key, "backup2", &["GetPublicKey"]);
    let restore = e.on(&e.key, "restore", &["Decapsulate"]);
    let b = e.mount(backup.clone());
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 11) as u8).collect();
    b.file(ROOT_INO, "archive.tar", &data);
    b.file(ROOT_INO, "other", b"another file");
    let b = e.mount(backup);
    let ino = b.fs.lookup(ROOT_INO, name("archive.tar")).unwrap().ino.0;
    assert_eq!(b.read_all(ino), Err(Errno::EACCES));
    let r = e.mount(restore.clone());
    let ino = r.fs.lookup(ROOT_INO, name("archive.tar")).unwrap().ino.0;
    assert_eq!(r.read_all(ino).unwrap(), data);
    // The wrap: an ML-KEM-768 ciphertext (1,088 bytes) and the AES-KW'd key (40).
    let f = std::fs::File::open(e.backing.join("archive.tar")).unwrap();
    let h = kmsfs::backing::read_header(&f).unwrap();
    assert_eq!(h.wraps.len(), 1);
    assert_eq!(h.wraps[0].blob.len(), 1088 + 40);
    assert!(!contains(
        &std::fs::read(e.backing.join("archive.tar")).unwrap(),
        &data[..64]
    ));
    // One file's wrap planted in another's header: the KMS decapsulates it, but the key
    // it unwraps is bound to the first file, so the second does not open.
    let g = std::fs::File::open(e.backing.join("other")).unwrap();
    let mut h2 = kmsfs::backing::read_header(&g).unwrap();
    h2.wraps[0].blob = h.wraps[0].blob.clone();
    let env = Envelope::new(restore, TreeConfig::load(&e.backing).unwrap());
    let err = env
        .open_header(&h2)
        .err()
        .expect("a moved wrap must not open");
    assert!(err.to_string().contains("not bound"), "{err}");
}

/// #20: whoever writes the backing tree of an encrypt-only tree has its public key, so
/// it can give a file a header wrapping a key it chose (and cut the file to nothing).
/// The host that can unwrap saw an empty file and wrote into it under that key (`>`
/// kept the header on e418955): the attacker then read what was written. A mount seals
/// new data only under keys it drew itself.
#[test]
fn an_encrypt_only_host_never_writes_under_a_key_it_did_not_draw() {
    let e = EncryptOnly::new();
    let backup = e.on(&e.key, "backup", &["GetPublicKey"]);
    let restore = e.on(&e.key, "restore", &["Decrypt"]);
    let b = e.mount(backup.clone());
    b.file(ROOT_INO, "diary", b"written by the backup host");
    b.file(ROOT_INO, "log", b"first line\n");
    drop(b);
    // The attacker (public key only) wraps a key of its own for each file.
    let attacker = Arc::new(Envelope::new(backup, TreeConfig::load(&e.backing).unwrap()));
    let geo = kmsfs::format::Geometry::new(4096);
    let plant = |file: &str, content: &[u8]| {
        let (h, keys) = attacker.take_header().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(e.backing.join(file))
            .unwrap();
        f.set_len(0).unwrap();
        kmsfs::backing::replace_header(&f, &h).unwrap();
        if !content.is_empty() {
            let sealed = kmsfs::backing::SealedFile::open(f.try_clone().unwrap(), geo).unwrap();
            sealed.content(&keys, geo).write(0, 0, content).unwrap();
        }
        keys
    };
    let read_with = |file: &str, keys: &kmsfs::envelope::FileKeys| -> Option<Vec<u8>> {
        let f = std::fs::File::open(e.backing.join(file)).unwrap();
        let sealed = kmsfs::backing::SealedFile::open(f, geo).ok()?;
        let size = sealed.plain_size(geo).ok()?;
        let mut out = vec![];
        sealed
            .content(keys, geo)
            .copy_plaintext(size, |_, d| {
                out.extend_from_slice(d);
                Ok(())
            })
            .ok()?;
        Some(out)
    };
    // `>` (O_TRUNC), and an append to the empty file: both under a new key.
    for flags in [
        libc::O_WRONLY | libc::O_TRUNC,
        libc::O_WRONLY | libc::O_APPEND,
    ] {
        let diary_keys = plant("diary", b"");
        let r = e.mount(restore.clone());
        let ino = r.fs.lookup(ROOT_INO, name("diary")).unwrap().ino.0;
        let fh = r.fs.open(ino, flags, 0).unwrap();
        r.fs.write(NOINO, fh, 0, 0, b"the owner's secret", false, false)
            .unwrap();
        r.fs.release(fh);
        assert_eq!(r.read_all(ino).unwrap(), b"the owner's secret");
        assert_eq!(
            read_with("diary", &diary_keys),
            None,
            "written under the attacker's key (flags {flags:#o})"
        );
    }
    let log_keys = plant("log", b"planted line\n");
    let r = e.mount(restore);
    // A whole file planted under the attacker's key: not written into in place.
    let ino = r.fs.lookup(ROOT_INO, name("log")).unwrap().ino.0;
    assert_eq!(r.read_all(ino).unwrap(), b"planted line\n");
    for flags in [libc::O_WRONLY | libc::O_APPEND, libc::O_RDWR] {
        let err = r.fs.open(ino, flags, 0).unwrap_err();
        assert_eq!(err.errno, Errno::EACCES, "{flags:#o}");
        assert!(err.log.is_some());
    }
    assert_eq!(
        read_with("log", &log_keys).unwrap(),
        b"planted line\n",
        "nothing added under the attacker's key"
    );
    // Replaced whole, it gets a key of the host's own.
    let fh = r.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, 0).unwrap();
    r.fs.write(NOINO, fh, 0, 0, b"new log", false, false)
        .unwrap();
    r.fs.release(fh);
    assert_eq!(read_with("log", &log_keys), None);
    // ... and what this mount drew it may append to.
    let fh = r.fs.open(ino, libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    r.fs.write(NOINO, fh, 0, 7, b"!", false, false).unwrap();
    r.fs.release(fh);
    assert_eq!(r.read_all(ino).unwrap(), b"new log!");
}

/// Lazy opens (no OPEN from the kernel): reads and writes come by inode with no handle;
/// a file removed while the kernel may still have it open stays readable and writable,
/// also once its open state was let go for others (through the descriptor its removal
/// parked), until the kernel forgets it.
#[test]
fn lazy_opens_keep_a_removed_file_usable_until_it_is_forgotten() {
    let f = fs_opts(|e| e, false);
    let fs = &f.fs;
    assert!(fs.lazy_open());
    let (attr, fh) = fs
        .create(ME, ROOT_INO, name("a"), 0o100644, libc::O_RDWR)
        .unwrap();
    assert_eq!(fh, 0, "no handle: the inode's own open state");
    let a = attr.ino.0;
    fs.write(a, 0, 0, 0, b"alpha", false, false).unwrap();
    let mut buf = vec![];
    // The next one pushes every other out of the held set.
    let (battr, _) = fs
        .create(ME, ROOT_INO, name("b"), 0o100644, libc::O_RDWR)
        .unwrap();
    let b = battr.ino.0;
    fs.write(b, 0, 0, 0, b"bravo", false, false).unwrap();
    for i in 0..1100 {
        fs.create(ME, ROOT_INO, name(&format!("x{i}")), 0o100644, libc::O_RDWR)
            .unwrap();
    }
    fs.unlink(ROOT_INO, name("a")).unwrap();
    fs.unlink(ROOT_INO, name("b")).unwrap();
    assert!(!f.b("a").exists() && !f.b("b").exists());
    for (ino, want) in [(a, &b"alpha"[..]), (b, &b"bravo"[..])] {
        let r = fs.read(ino, 0, 0, 100, &mut buf).unwrap();
        assert_eq!(&buf[r], want);
        assert_eq!(fs.getattr(ino).unwrap().size, 5);
    }
    fs.write(b, 0, 0, 5, b"!", false, false).unwrap();
    let r = fs.read(b, 0, 0, 100, &mut buf).unwrap();
    assert_eq!(&buf[r], b"bravo!");
    fs.forget(a, 1);
    fs.forget(b, 1);
    assert_eq!(
        fs.read(b, 0, 0, 100, &mut buf).unwrap_err().errno,
        Errno::ESTALE
    );
}

#[test]
fn files_made_ahead_and_dropped_leave_their_keys_nowhere() {
    // Their keys are cached when their headers are made; dropped unused, they must not
    // keep places in the key cache (an untarred tree's worth pushed real files' keys out
    // of it: the readback then called the KMS for a third of the files).
    let f = fs_made(|e| e, false, true);
    let fs = &f.fs;
    fs.create(ME, ROOT_INO, name("a"), 0o100644, libc::O_RDWR)
        .unwrap();
    fs.create(ME, ROOT_INO, name("b"), 0o100644, libc::O_RDWR)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(f.env.cached_count(), 3, "a, b and one made ahead");
    // an xattr on the directory drops what was made ahead there
    fs.setxattr(ROOT_INO, name("user.x"), b"1", 0).unwrap();
    assert_eq!(f.env.cached_count(), 2, "only a's and b's keys");
    assert_eq!(fs.premade_taken(), 0);
}

/// How many files are made ahead follows the run of creates in a directory: none for a
/// lone create, one from the second in a row, two in a long run (`premade::DEEP_AFTER`,
/// 32), and a pause ends the run.
#[test]
fn files_made_ahead_ramp_with_the_run_of_creates() {
    let f = fs_made(|e| e, false, true);
    let fs = &f.fs;
    let settle = || std::thread::sleep(Duration::from_millis(1200));
    let made_ahead = |files: usize| f.env.cached_count() - files;
    fs.create(ME, ROOT_INO, name("lone"), 0o100644, libc::O_RDWR)
        .unwrap();
    settle();
    assert_eq!(made_ahead(1), 0, "a lone create makes nothing ahead");
    for i in 0..31 {
        fs.create(ME, ROOT_INO, name(&format!("r{i}")), 0o100644, libc::O_RDWR)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(made_ahead(32), 1, "31 in a row: one ahead");
    fs.create(ME, ROOT_INO, name("r31"), 0o100644, libc::O_RDWR)
        .unwrap();
    settle();
    assert_eq!(made_ahead(33), 2, "the 32nd in a row: two ahead");
    let taken = fs.premade_taken();
    assert!(taken >= 1, "the run used files made ahead ({taken})");
    // After a pause the run starts again: the next create takes one, asks for none.
    fs.create(ME, ROOT_INO, name("later"), 0o100644, libc::O_RDWR)
        .unwrap();
    settle();
    assert_eq!(fs.premade_taken(), taken + 1);
    assert_eq!(
        made_ahead(34),
        1,
        "a new run is not refilled before its second create"
    );
}

/// A directory the kernel forgets keeps its files made ahead (freeing them there put
/// disk reads in the way of the lookups after memory pressure), and they are used when it
/// is looked up again; one removed drops them.
#[test]
fn files_made_ahead_outlive_the_kernel_forgetting_their_directory() {
    let f = fs_made(|e| e, false, true);
    let fs = &f.fs;
    let d = fs.mkdir(ME, ROOT_INO, name("d"), 0o755).unwrap().ino.0;
    for n in ["a", "b"] {
        fs.create(ME, d, name(n), 0o100644, libc::O_RDWR).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(f.env.cached_count(), 3, "a, b and one made ahead");
    fs.forget(d, 1);
    assert_eq!(f.env.cached_count(), 3, "kept");
    let d = fs.lookup(ROOT_INO, name("d")).unwrap().ino.0;
    fs.create(ME, d, name("c"), 0o100644, libc::O_RDWR).unwrap();
    assert_eq!(fs.premade_taken(), 1, "c was made ahead before the forget");
    let c = fs.lookup(d, name("c")).unwrap().ino.0;
    fs.write(c, 0, 0, 0, b"c", false, false).unwrap();
    // another run, then the directory's files are removed and it is: nothing is kept
    for n in ["e", "g"] {
        fs.create(ME, d, name(n), 0o100644, libc::O_RDWR).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(f.env.cached_count() > 5, "one more made ahead");
    for n in ["a", "b", "c", "e", "g"] {
        fs.unlink(d, name(n)).unwrap();
    }
    let before = f.env.cached_count();
    fs.rmdir(ROOT_INO, name("d")).unwrap();
    assert!(!f.b("d").exists());
    assert_eq!(
        f.env.cached_count(),
        before - 1,
        "the one made ahead is dropped"
    );
    assert_eq!(fs.premade_taken(), 1);
}

/// Creates one after another in a directory link in files made ahead (see
/// `fs::premade`): such a file gets the mode asked for, times of its create (not of when
/// it was made), a working header, and its name; a lone create makes nothing ahead; a
/// change of the directory's mode or extended attributes drops what was made before it.
#[test]
fn files_made_ahead_are_new_files_in_every_way() {
    // Off (`--no-files-ahead`): a run of creates makes nothing ahead.
    let off = fs_opts(|e| e, false);
    for n in ["x", "y", "z"] {
        off.fs
            .create(ME, ROOT_INO, name(n), 0o100644, libc::O_RDWR)
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(off.fs.premade_taken(), 0);
    let f = fs_made(|e| e, false, true);
    let fs = &f.fs;
    let create = |n: &str, mode: u32| {
        fs.create(ME, ROOT_INO, name(n), mode, libc::O_RDWR)
            .unwrap()
    };
    // A pause (what came before is not part of the run), two creates in a row, then a
    // pause long enough that stale times would show: one file is made ahead meanwhile.
    let run_of_two = |a: &str, b: &str| {
        std::thread::sleep(Duration::from_millis(1100));
        create(a, 0o100644);
        create(b, 0o100644);
        std::thread::sleep(Duration::from_millis(1500));
    };
    create("lone", 0o100644);
    run_of_two("a", "b");
    assert_eq!(fs.premade_taken(), 0);
    let before = std::time::SystemTime::now() - Duration::from_millis(50);
    let (attr, _) = create("c", 0o100640);
    assert_eq!(fs.premade_taken(), 1, "c was made ahead");
    let c = attr.ino.0;
    assert_eq!(attr.perm, 0o640);
    assert!(attr.mtime >= before && attr.atime >= before, "{attr:?}");
    fs.write(c, 0, 0, 0, b"charlie", false, false).unwrap();
    let md = std::fs::metadata(f.b("c")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.nlink()), (0o640, 1));
    // read back through a fresh mount of the tree: the header authenticates
    let f2 = fs_reopen(&f);
    let ino = f2.lookup(ROOT_INO, name("c")).unwrap().ino.0;
    let fh = f2.open(ino, libc::O_RDONLY, 0).unwrap();
    let mut buf = vec![];
    let r = f2.read(NOINO, fh, 0, 100, &mut buf).unwrap();
    assert_eq!(&buf[r], b"charlie");
    // One more is made ahead; the directory's mode changes (set-group-ID, say), and
    // what was made before is not used.
    run_of_two("c1", "c2");
    let chmod = SetAttr {
        mode: Some(0o2755),
        ..Default::default()
    };
    fs.setattr(0, ROOT_INO, chmod).unwrap();
    create("d", 0o100644);
    assert_eq!(fs.premade_taken(), 1, "made before the chmod: not used");
    // Made ahead again, under the new mode, and used.
    run_of_two("d1", "d2");
    create("e", 0o100644);
    assert_eq!(fs.premade_taken(), 2, "e was made ahead, after the chmod");
    // An extended attribute set on the directory (a default ACL, say, that new files
    // inherit) drops what was made before it.
    run_of_two("e1", "e2");
    fs.setxattr(ROOT_INO, name("user.inherit"), b"1", 0)
        .unwrap();
    create("f", 0o100644);
    assert_eq!(fs.premade_taken(), 2, "made before the xattr: not used");
    // And so does one removed.
    run_of_two("f1", "f2");
    fs.removexattr(ROOT_INO, name("user.inherit")).unwrap();
    create("g", 0o100644);
    assert_eq!(fs.premade_taken(), 2, "made before the removal: not used");
    // control: without a change in between, the one made ahead is used
    run_of_two("g1", "g2");
    create("h", 0o100644);
    assert_eq!(fs.premade_taken(), 3, "h was made ahead");
}
