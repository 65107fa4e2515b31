//! The store's promises: rows open only under their root key, kind (with its Region) and
//! id; a commit writes only what it names; readers catch up by generation.

use super::*;
use crate::crypto::SecretKey;

#[test]
fn a_row_opens_only_under_its_root_key_kind_region_and_id() {
    let root = SecretKey::random();
    let seal = RowSeal::new(&root);
    let data = seal.seal("key@us-east-1", "mrk-1", b"{\"secret\":1}");
    assert_eq!(
        &*seal.open("key@us-east-1", "mrk-1", &data).unwrap(),
        b"{\"secret\":1}"
    );
    // moved to another name, kind or Region's scope, or opened under another root key
    assert!(seal.open("key@us-east-1", "mrk-2", &data).is_err());
    assert!(seal.open("alias@us-east-1", "mrk-1", &data).is_err());
    assert!(seal.open("key@eu-west-1", "mrk-1", &data).is_err());
    assert!(seal.open("key", "mrk-1", &data).is_err());
    assert!(RowSeal::new(&SecretKey::random())
        .open("key@us-east-1", "mrk-1", &data)
        .is_err());
    let mut edited = data.clone();
    edited[20] ^= 1;
    assert!(seal.open("key@us-east-1", "mrk-1", &edited).is_err());
    assert!(seal.open("key@us-east-1", "mrk-1", &data[..10]).is_err());
    // nothing of the plaintext is visible in the sealed row
    assert!(!data.windows(6).any(|w| w == b"secret"));
}

#[test]
fn sqlite_commits_what_it_is_told_and_readers_catch_up_by_generation() {
    let d = tempfile::tempdir().unwrap();
    let db = sqlite::Sqlite::open(&d.path().join("s.sqlite"), true).unwrap();
    let row = |id: &str, data: Option<&[u8]>| Row {
        kind: "key".into(),
        id: id.into(),
        data: data.map(<[u8]>::to_vec),
    };
    assert_eq!(db.generation().unwrap(), 0);
    let g1 = db
        .write(0, &mut |now, seen| {
            assert_eq!((now, seen.len()), (0, 0));
            Some(vec![row("a", Some(b"1")), row("b", Some(b"2"))])
        })
        .unwrap();
    assert_eq!(g1, Some(1));
    // a write that decides nothing leaves no trace
    assert_eq!(db.write(1, &mut |_, _| None).unwrap(), None);
    assert_eq!(db.generation().unwrap(), 1);
    // a writer holding an older generation is shown what it missed
    let g2 = db
        .write(0, &mut |now, seen| {
            assert_eq!(now, 1);
            assert_eq!(seen.len(), 2, "{seen:?}");
            Some(vec![row("a", None)])
        })
        .unwrap();
    assert_eq!(g2, Some(2));
    let (now, changed) = db.changes_since(1).unwrap();
    assert_eq!(now, 2);
    assert_eq!(changed, vec![row("a", None)], "only the tombstone is newer");
    let (_, all) = db.changes_since(0).unwrap();
    assert_eq!(all.len(), 2);
    // the file is private
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path().join("s.sqlite"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
}

#[test]
fn locations_parse_and_never_carry_a_password() {
    assert_eq!(
        Location::parse("sqlite:/x/y.sqlite").unwrap(),
        Location::Sqlite("/x/y.sqlite".into())
    );
    assert!(Location::parse("postgres://kmsfs@db:5432/kms")
        .unwrap()
        .is_shared());
    let e = Location::parse("postgres://kmsfs:hunter2@db:5432/kms")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
    assert!(Location::parse("mysql://x").is_err());
    assert!(Location::parse("sqlite:").is_err());
}
