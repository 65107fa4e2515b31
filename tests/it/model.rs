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

#[test]
fn mount_matches_model() {
    require_fuse!();
    let mut t = Tree::new(&[]);
    t.mount();
    let cases = std::env::var("KMSFS_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
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
