//! The content layer against a model (a plain byte vector), and its edge cases.

use super::*;
use crate::crypto::{Backend, SecretKey};
use proptest::prelude::*;

struct Fixture {
    _dir: tempfile::TempDir,
    file: File,
    aead: Box<dyn Aead>,
    id: [u8; 16],
    geo: Geometry,
}

fn fixture(chunk: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("f"))
        .unwrap();
    Fixture {
        _dir: dir,
        file,
        aead: Backend::AwsLc.key(SecretKey::random().as_bytes()),
        id: [5; 16],
        geo: Geometry::new(chunk),
    }
}

impl Fixture {
    fn c(&self) -> Content<'_> {
        Content {
            file: &self.file,
            aead: &*self.aead,
            file_id: &self.id,
            geo: self.geo,
            direct: None,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u64..40_000,
            proptest::collection::vec(any::<u8>(), 1..12_000)
        )
            .prop_map(|(o, d)| Op::Write(o, d)),
        (0u64..40_000).prop_map(Op::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        let f = fixture(4096);
        let c = f.c();
        let mut model: Vec<u8> = vec![];
        for o in ops {
            match o {
                Op::Write(off, d) => {
                    let size = c.write(model.len() as u64, off, &d).unwrap();
                    let end = off as usize + d.len();
                    if model.len() < end { model.resize(end, 0); }
                    model[off as usize..end].copy_from_slice(&d);
                    prop_assert_eq!(size, model.len() as u64);
                }
                Op::Truncate(n) => {
                    c.truncate(model.len() as u64, n).unwrap();
                    model.resize(n as usize, 0);
                }
            }
            prop_assert_eq!(f.file.metadata().unwrap().len(), f.geo.backing_size(model.len() as u64));
            let all = c.read(model.len() as u64, 0, u64::MAX / 2).unwrap();
            prop_assert_eq!(&all, &model);
        }
    }
}

#[test]
fn detects_truncation_at_chunk_boundary_and_swaps() {
    let f = fixture(4096);
    let c = f.c();
    let data: Vec<u8> = (0..3 * 4096).map(|i| i as u8).collect();
    c.write(0, 0, &data).unwrap();
    // cut the last chunk off: the new last chunk is not final
    f.file.set_len(2 * 4124).unwrap();
    assert!(matches!(
        c.read(2 * 4096, 4096, 10),
        Err(ContentError::Corrupt { chunk: 1, .. })
    ));
    assert!(c.read(2 * 4096, 0, 10).is_ok(), "chunk 0 is still fine");
    // swap chunks 0 and 1 in a fresh file
    let f = fixture(4096);
    let c = f.c();
    c.write(0, 0, &data).unwrap();
    let mut a = vec![0u8; 4124];
    let mut b = vec![0u8; 4124];
    f.file.read_exact_at(&mut a, 0).unwrap();
    f.file.read_exact_at(&mut b, 4124).unwrap();
    f.file.write_all_at(&b, 0).unwrap();
    f.file.write_all_at(&a, 4124).unwrap();
    assert!(matches!(
        c.read(3 * 4096, 0, 10),
        Err(ContentError::Corrupt { chunk: 0, .. })
    ));
}

#[test]
fn restore_undoes_a_growth_that_resealed_the_old_last_chunk() {
    for (old_len, grow_to) in [(5000u64, 9000u64), (4096, 20_000), (1, 3 << 20), (0, 100)] {
        let f = fixture(4096);
        let c = f.c();
        let data: Vec<u8> = (0..old_len).map(|i| (i * 7) as u8).collect();
        c.write(0, 0, &data).unwrap();
        // the growth went through (old last chunk now sealed as an inner chunk) ...
        c.write(old_len, grow_to - 1, b"z").unwrap();
        // ... and is then undone as if it had failed
        c.restore(old_len).unwrap();
        assert_eq!(
            f.file.metadata().unwrap().len(),
            f.geo.backing_size(old_len)
        );
        assert_eq!(
            c.read(old_len, 0, u64::MAX / 2).unwrap(),
            data,
            "{old_len} -> {grow_to}"
        );
        // an undo of a growth that never touched the file changes nothing
        c.restore(old_len).unwrap();
        assert_eq!(c.read(old_len, 0, u64::MAX / 2).unwrap(), data);
    }
}

#[test]
fn sizes_past_a_file_offset_are_too_large() {
    let f = fixture(4096);
    let c = f.c();
    let max = f.geo.max_plain_size();
    assert!(f.geo.backing_size(max) <= i64::MAX as u64);
    assert!(matches!(
        c.truncate(0, max + 1),
        Err(ContentError::TooLarge)
    ));
    assert!(matches!(c.write(0, max, b"x"), Err(ContentError::TooLarge)));
    assert!(matches!(
        c.write(0, u64::MAX, b"x"),
        Err(ContentError::TooLarge)
    ));
    assert_eq!(f.file.metadata().unwrap().len(), 0);
}

#[test]
fn large_parallel_round_trip() {
    let f = fixture(4096);
    let c = f.c();
    let data: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 31) as u8).collect();
    c.write(0, 0, &data).unwrap();
    assert_eq!(
        c.read(data.len() as u64, 0, data.len() as u64).unwrap(),
        data
    );
    assert_eq!(
        c.read(data.len() as u64, 5000, 300_000).unwrap(),
        &data[5000..305_000]
    );
}

/// Drops the clean pages of `f` from the page cache (after writing them out).
fn evict(f: &File) {
    f.sync_all().unwrap();
    rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

#[test]
fn large_cold_reads_go_direct_and_match_buffered_ones() {
    let f = fixture(4096);
    let direct = Direct::default();
    let c = f.c().with_direct(&direct);
    let data: Vec<u8> = (0..(3 << 20) + 17)
        .map(|i| (i * 131 + i / 7) as u8)
        .collect();
    let size = data.len() as u64;
    c.write(0, 0, &data).unwrap();
    // Sealed chunks are 4,124 bytes: these ranges start and end off the 4 KiB grid.
    for (off, len) in [
        (0, size),
        (5000, 300_000),
        (4096 * 7 + 1, 1 << 20),
        (size - 400_000, 1 << 20),
    ] {
        evict(&f.file);
        let before = direct.taken();
        let mut buf = vec![0u8; 3]; // scratch of any size and alignment
        let r = c.read_in(size, off, len, &mut buf).unwrap();
        assert_eq!(
            direct.taken(),
            before + 1,
            "read of {len} at {off} was not direct"
        );
        let end = (off + len).min(size) as usize;
        assert_eq!(&buf[r], &data[off as usize..end], "read of {len} at {off}");
    }
    // Small reads and cached data stay buffered, and a small read opens no twin.
    let small = Direct::default();
    evict(&f.file);
    assert_eq!(
        f.c().with_direct(&small).read(size, 100, 8192).unwrap(),
        &data[100..8292]
    );
    assert!(
        small.fd.get().is_none(),
        "a small read opened the O_DIRECT twin"
    );
    let before = direct.taken();
    assert_eq!(c.read(size, 100, 8192).unwrap(), &data[100..8292]);
    assert_eq!(c.read(size, 0, 1 << 20).unwrap(), &data[..1 << 20]);
    assert_eq!(direct.taken(), before);
}

#[test]
fn a_direct_read_never_misses_bytes_still_in_the_cache() {
    let f = fixture(4096);
    let direct = Direct::default();
    let c = f.c().with_direct(&direct);
    let mut data: Vec<u8> = (0..2 << 20).map(|i| (i * 7) as u8).collect();
    let size = data.len() as u64;
    c.write(0, 0, &data).unwrap();
    evict(&f.file);
    // One chunk rewritten: its pages are dirty in the cache, the disk holds the old ones.
    data[600_000..600_100].fill(0xAB);
    c.write(size, 600_000, &[0xAB; 100]).unwrap();
    assert_eq!(c.read(size, 0, size).unwrap(), data);
    // A range holding a cached page is read through the cache, not around it.
    assert_eq!(direct.taken(), 0);
}

#[test]
fn a_direct_read_of_a_cut_file_is_corruption() {
    let f = fixture(4096);
    let direct = Direct::default();
    let c = f.c().with_direct(&direct);
    let data = vec![9u8; 1 << 20];
    c.write(0, 0, &data).unwrap();
    let blen = f.file.metadata().unwrap().len();
    f.file.set_len(blen - 5000).unwrap();
    evict(&f.file);
    match c.read(data.len() as u64, 0, 1 << 20) {
        Err(ContentError::Corrupt { .. }) => {}
        r => panic!("expected corruption, got {:?}", r.map(|v| v.len())),
    }
    assert_eq!(direct.taken(), 0);
}

/// The scratch pool keeps at most `SCRATCH_KEPT` buffers, never one grown past 4 MiB, and
/// hands out buffers whatever another request left in them (callers size them).
#[test]
fn the_scratch_pool_is_bounded() {
    std::thread::scope(|s| {
        for t in 0..32u8 {
            s.spawn(move || {
                for i in 0..20usize {
                    super::with_scratch(|buf| {
                        let n = if t == 0 && i == 0 {
                            5 << 20
                        } else {
                            4096 * (1 + i)
                        };
                        buf.clear();
                        buf.resize(n, t);
                        assert!(buf.iter().all(|&b| b == t));
                    });
                }
            });
        }
    });
    let pool = super::SCRATCH.lock();
    assert!(pool.len() <= super::SCRATCH_KEPT, "{} kept", pool.len());
    assert!(pool.iter().all(|b| b.capacity() <= 4 << 20));
}

#[test]
fn large_writes_reach_the_backing_file_whole_in_pieces() {
    // Unaligned start, several piece boundaries, an unaligned end: every byte lands
    // where it belongs, none twice, none missing.
    let f = fixture(4096);
    let data: Vec<u8> = (0..(3 * WRITE_PIECE as usize + 12_345))
        .map(|i| (i * 7 + i / 4099) as u8)
        .collect();
    for at in [0u64, 100_003, WRITE_PIECE - 1, WRITE_PIECE] {
        f.file.set_len(0).unwrap();
        write_in_pieces(&f.file, &data, at).unwrap();
        assert_eq!(f.file.metadata().unwrap().len(), at + data.len() as u64);
        let mut back = vec![0u8; data.len()];
        f.file.read_exact_at(&mut back, at).unwrap();
        assert!(back == data, "write at {at} came back different");
    }
}
