//! Model-based property test: random write/truncate/read/reopen sequences through a real
//! mount, checked against an in-memory model after every step.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use crate::common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write { off: u64, len: usize, seed: u64 },
    Truncate(u64),
    Read { off: u64, len: usize },
    Reopen,
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..70_000, 1usize..20_000, any::<u64>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        2 => (0u64..70_000).prop_map(Op::Truncate),
        3 => (0u64..80_000, 1usize..30_000).prop_map(|(off, len)| Op::Read { off, len }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Remount),
    ]
}

fn open(t: &Tree) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(t.p("model"))
        .unwrap()
}

/// A mounted tree and a proptest runner of `KMSFS_MODEL_CASES` (else `default`) cases.
fn mounted_runner(default: u32) -> (Tree, proptest::test_runner::TestRunner) {
    let mut t = Tree::new(&[]);
    t.mount();
    let cases = std::env::var("KMSFS_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    (t, runner)
}

#[test]
fn mount_matches_model() {
    require_fuse!();
    let (t, mut runner) = mounted_runner(24);
    let t = std::cell::RefCell::new(t);
    runner
        .run(&proptest::collection::vec(op(), 1..30), |ops| {
            let mut t = t.borrow_mut();
            let _ = std::fs::remove_file(t.p("model"));
            let mut f = open(&t);
            let mut model: Vec<u8> = vec![];
            for o in ops {
                match o {
                    Op::Write { off, len, seed } => {
                        let d = random_bytes(len, seed);
                        f.write_all_at(&d, off).unwrap();
                        let end = off as usize + len;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[off as usize..end].copy_from_slice(&d);
                    }
                    Op::Truncate(n) => {
                        f.set_len(n).unwrap();
                        model.resize(n as usize, 0);
                    }
                    Op::Read { off, len } => {
                        let mut buf = vec![0u8; len];
                        let mut got = 0;
                        while got < len {
                            let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                        let lo = (off as usize).min(model.len());
                        let hi = (off as usize + len).min(model.len());
                        prop_assert_eq!(&buf[..got], &model[lo..hi]);
                    }
                    Op::Reopen => {
                        drop(f);
                        f = open(&t);
                    }
                    Op::Remount => {
                        drop(f);
                        t.remount();
                        f = open(&t);
                    }
                }
                prop_assert_eq!(f.metadata().unwrap().len(), model.len() as u64);
            }
            drop(f);
            prop_assert_eq!(std::fs::read(t.p("model")).unwrap(), model);
            Ok(())
        })
        .unwrap();
}

/// One step of the namespace model: names from a small pool (short and hashed long
/// ones), in three directories, so renames and links across directories meet each other.
#[derive(Debug, Clone)]
enum NsOp {
    Create {
        dir: usize,
        name: usize,
        seed: u8,
    },
    Symlink {
        dir: usize,
        name: usize,
        seed: u8,
    },
    Rename {
        from: (usize, usize),
        to: (usize, usize),
    },
    Link {
        from: (usize, usize),
        to: (usize, usize),
    },
    Unlink {
        dir: usize,
        name: usize,
    },
    Remount,
}

const NS_DIRS: [&str; 3] = ["", "d1", "d1/d2"];

fn ns_name(i: usize) -> String {
    match i {
        0 => "a".into(),
        1 => "b.txt".into(),
        2 => "x".repeat(161),
        _ => format!("{}{}", "long-", "y".repeat(250)),
    }
}

fn ns_op() -> impl Strategy<Value = NsOp> {
    let at = || (0..NS_DIRS.len(), 0usize..4);
    prop_oneof![
        4 => (0..NS_DIRS.len(), 0usize..4, any::<u8>()).prop_map(|(dir, name, seed)| NsOp::Create { dir, name, seed }),
        2 => (0..NS_DIRS.len(), 0usize..4, any::<u8>()).prop_map(|(dir, name, seed)| NsOp::Symlink { dir, name, seed }),
        4 => (at(), at()).prop_map(|(from, to)| NsOp::Rename { from, to }),
        2 => (at(), at()).prop_map(|(from, to)| NsOp::Link { from, to }),
        2 => at().prop_map(|(dir, name)| NsOp::Unlink { dir, name }),
        1 => Just(NsOp::Remount),
    ]
}

/// #14: creates, symlinks, renames and hard links across directories, with short and
/// hashed long names, through a real mount of a format 2 tree, checked against a model
/// (listing, type, content or target of every entry) after every step and remount.
#[test]
fn names_match_model() {
    use std::collections::BTreeMap;
    require_fuse!();
    let (t, mut runner) = mounted_runner(32);
    #[derive(Debug, Clone, PartialEq)]
    enum E {
        File(u32),
        /// (identity, target): hard links of one symlink share the identity
        Link(u32, String),
    }
    let t = std::cell::RefCell::new(t);
    runner
        .run(&proptest::collection::vec(ns_op(), 1..40), |ops| {
            let mut t = t.borrow_mut();
            let _ = std::fs::remove_dir_all(t.p("d1"));
            for n in 0..4 {
                let _ = std::fs::remove_file(t.p(&ns_name(n)));
            }
            std::fs::create_dir_all(t.p("d1/d2")).unwrap();
            let path = |t: &Tree, (d, n): (usize, usize)| t.p(NS_DIRS[d]).join(ns_name(n));
            // (dir, name) -> entry; hard links share content, which never changes.
            let mut model: BTreeMap<(usize, usize), E> = BTreeMap::new();
            let mut content: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
            // identities of files and symlinks, for their hard links
            let mut next_id = 0u32;
            for o in ops {
                match o {
                    NsOp::Create { dir, name, seed } => {
                        let data = vec![seed; 100 + seed as usize];
                        match model.get(&(dir, name)).cloned() {
                            // (a write through a symlink would create its target: not modelled)
                            Some(E::Link(..)) => continue,
                            // overwritten: every hard link of it sees the new content
                            Some(E::File(id)) => {
                                std::fs::write(path(&t, (dir, name)), &data).unwrap();
                                content.insert(id, data);
                            }
                            None => {
                                std::fs::write(path(&t, (dir, name)), &data).unwrap();
                                next_id += 1;
                                content.insert(next_id, data);
                                model.insert((dir, name), E::File(next_id));
                            }
                        }
                    }
                    NsOp::Symlink { dir, name, seed } => {
                        let target = format!("target-{seed}");
                        let r = std::os::unix::fs::symlink(&target, path(&t, (dir, name)));
                        match model.entry((dir, name)) {
                            std::collections::btree_map::Entry::Occupied(_) => {
                                prop_assert!(r.is_err())
                            }
                            std::collections::btree_map::Entry::Vacant(v) => {
                                r.unwrap();
                                next_id += 1;
                                v.insert(E::Link(next_id, target));
                            }
                        }
                    }
                    NsOp::Rename { from, to } => {
                        let r = std::fs::rename(path(&t, from), path(&t, to));
                        match model.get(&from).cloned() {
                            None => prop_assert!(r.is_err()),
                            Some(e) => {
                                r.unwrap();
                                // two links of one file: rename(2) does nothing
                                // (a symlink's hard links too)
                                let same_file = matches!(
                                    (&e, model.get(&to)),
                                    (E::File(a), Some(E::File(b))) | (E::Link(a, _), Some(E::Link(b, _))) if a == b
                                );
                                if from != to && !same_file {
                                    model.remove(&from);
                                    model.insert(to, e);
                                }
                            }
                        }
                    }
                    NsOp::Link { from, to } => {
                        let r = std::fs::hard_link(path(&t, from), path(&t, to));
                        match (model.get(&from).cloned(), model.contains_key(&to)) {
                            (Some(e), false) => {
                                r.unwrap();
                                model.insert(to, e);
                            }
                            _ => prop_assert!(r.is_err()),
                        }
                    }
                    NsOp::Unlink { dir, name } => {
                        let r = std::fs::remove_file(path(&t, (dir, name)));
                        prop_assert_eq!(r.is_ok(), model.remove(&(dir, name)).is_some());
                    }
                    NsOp::Remount => t.remount(),
                }
                for (d, dir) in NS_DIRS.iter().enumerate() {
                    let mut got: Vec<String> = std::fs::read_dir(t.p(dir))
                        .unwrap()
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with("d1") && !n.starts_with("d2"))
                        .collect();
                    got.sort();
                    let mut want: Vec<String> = model
                        .keys()
                        .filter(|(md, _)| *md == d)
                        .map(|(_, n)| ns_name(*n))
                        .collect();
                    want.sort();
                    prop_assert_eq!(got, want, "listing of /{}", dir);
                }
                for (k, e) in &model {
                    let p = path(&t, *k);
                    match e {
                        E::File(id) => prop_assert_eq!(&std::fs::read(&p).unwrap(), &content[id]),
                        E::Link(_, target) => prop_assert_eq!(
                            std::fs::read_link(&p).unwrap().to_string_lossy().into_owned(),
                            target.clone()
                        ),
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
