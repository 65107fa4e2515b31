use super::*;
use std::sync::Arc;

fn ev(i: usize) -> Event {
    Event {
        principal: "p".into(),
        op: "Decrypt".into(),
        key_arn: Some(format!("arn:{i}")),
        request_id: format!("r{i}"),
        source: "test".into(),
        ..Default::default()
    }
}

fn fill(n: usize) -> (tempfile::TempDir, SecretKey) {
    let d = tempfile::tempdir().unwrap();
    let k = SecretKey::random();
    let log = Arc::new(AuditLog::open(d.path(), &k));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..n / 4 {
                    log.append(ev(t * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(log); // checkpoint at close
    (d, k)
}

fn lines(d: &Path) -> Vec<String> {
    std::fs::read_to_string(d.join(AUDIT_FILE))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(d: &Path, l: &[String]) {
    std::fs::write(
        d.join(AUDIT_FILE),
        l.iter().map(|x| format!("{x}\n")).collect::<String>(),
    )
    .unwrap();
}

/// On e663627 a 70 KB record (an unauthenticated request with a huge access key id)
/// made every later open of the keystore fail: the tail was read from the last 64 KiB.
#[test]
fn a_record_longer_than_any_read_block_reopens() {
    let d = tempfile::tempdir().unwrap();
    let k = SecretKey::random();
    {
        let log = AuditLog::open(d.path(), &k);
        log.append(ev(1)).unwrap();
        log.append(Event {
            principal: format!("akid:{}", "A".repeat(200_000)),
            ..ev(2)
        })
        .unwrap();
    }
    let log = AuditLog::open(d.path(), &k);
    log.append(ev(3)).unwrap();
    drop(log);
    let log = AuditLog::open(d.path(), &k);
    assert_eq!(log.verify().unwrap().records, 3);
    // a torn final record after a long one is cut back to the long one
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path().join(AUDIT_FILE))
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":4,\"torn").unwrap();
    drop(f);
    let log = AuditLog::open(d.path(), &k);
    log.append(ev(5)).unwrap();
    assert_eq!(log.verify().unwrap().records, 4);
}

/// On e663627 the checkpoints were independent: removing some went unnoticed, and
/// cutting the log and the checkpoints back together verified OK.
#[test]
fn checkpoints_are_chained_and_anchored_copies_catch_a_cut() {
    let d = tempfile::tempdir().unwrap();
    let anchor = tempfile::tempdir().unwrap();
    let k = SecretKey::random();
    for round in 0..4 {
        let log = AuditLog::open_with_anchor(d.path(), &k, Some(anchor.path().to_path_buf()));
        for i in 0..10 {
            log.append(ev(round * 100 + i)).unwrap();
        }
        drop(log); // one checkpoint per process lifetime
    }
    let log = AuditLog::open(d.path(), &k);
    let rep = log.verify_with(None, Some(anchor.path())).unwrap();
    assert_eq!((rep.records, rep.checkpoints), (40, 4));
    assert_eq!(log.latest_checkpoint().unwrap().0, 40);
    let (orig_log, orig_ck) = (
        lines(d.path()),
        std::fs::read_to_string(d.path().join(CHECKPOINT_FILE)).unwrap(),
    );
    // a checkpoint removed from the middle
    let mut ck: Vec<&str> = orig_ck.lines().collect();
    ck.remove(1);
    std::fs::write(d.path().join(CHECKPOINT_FILE), ck.join("\n") + "\n").unwrap();
    let e = log.verify().unwrap_err();
    assert!(e.reason.contains("does not follow"), "{e}");
    // log and checkpoints cut back together to 10 records: consistent in the keystore
    // directory, but the anchored copies and the keystore's vouch know better
    write_lines(d.path(), &orig_log[..10]);
    std::fs::write(
        d.path().join(CHECKPOINT_FILE),
        orig_ck.lines().next().unwrap().to_string() + "\n",
    )
    .unwrap();
    assert!(log.verify().is_ok(), "the directory alone cannot tell");
    let e = log.verify_with(None, Some(anchor.path())).unwrap_err();
    assert!(
        e.reason.contains("an anchored checkpoint vouches for"),
        "{e}"
    );
    let e = log
        .verify_with(Some(&(40, String::new())), None)
        .unwrap_err();
    assert!(e.reason.contains("the keystore vouches for 40"), "{e}");
    assert!(log.check_reaches(40).is_err() && log.check_reaches(10).is_ok());
    // both removed
    std::fs::remove_file(d.path().join(AUDIT_FILE)).unwrap();
    std::fs::remove_file(d.path().join(CHECKPOINT_FILE)).unwrap();
    assert!(log.verify_with(None, Some(anchor.path())).is_err());
    assert!(log
        .check_reaches(40)
        .unwrap_err()
        .to_string()
        .contains("ends at record 0"));
}

#[test]
fn chain_verifies_and_tampering_names_the_first_bad_seq() {
    let (d, k) = fill(200);
    let log = AuditLog::open(d.path(), &k);
    let rep = log.verify().unwrap();
    assert_eq!(rep.records, 200);
    assert_eq!(rep.unchecked_tail, 0);
    let orig = lines(d.path());

    // edited line
    let mut l = orig.clone();
    l[49] = l[49].replace("\"op\":\"Decrypt\"", "\"op\":\"Encrypt\"");
    write_lines(d.path(), &l);
    assert_eq!(log.verify().unwrap_err().seq, 50);
    // deleted line
    let mut l = orig.clone();
    l.remove(99);
    write_lines(d.path(), &l);
    assert_eq!(log.verify().unwrap_err().seq, 100);
    // reordered lines
    let mut l = orig.clone();
    l.swap(10, 11);
    write_lines(d.path(), &l);
    assert_eq!(log.verify().unwrap_err().seq, 11);
    // cut-off tail (the closing checkpoint vouches for 200)
    write_lines(d.path(), &orig[..150]);
    assert_eq!(log.verify().unwrap_err().seq, 151);
    // a forged checkpoint
    write_lines(d.path(), &orig);
    let ck = std::fs::read_to_string(d.path().join(CHECKPOINT_FILE)).unwrap();
    std::fs::write(
        d.path().join(CHECKPOINT_FILE),
        ck.replace("\"mac\":\"", "\"mac\":\"00"),
    )
    .unwrap();
    assert!(log.verify().is_err());
}

#[test]
fn torn_tail_is_cut_and_chain_continues() {
    let (d, k) = fill(8);
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.path().join(AUDIT_FILE))
        .unwrap();
    f.write_all(b"{\"seq\":9,\"time\":\"half").unwrap();
    drop(f);
    let log = AuditLog::open(d.path(), &k);
    log.append(ev(99)).unwrap();
    let rep = log.verify().unwrap();
    assert_eq!(rep.records, 9);
}

#[test]
fn two_writers_in_one_file_keep_one_chain() {
    let d = tempfile::tempdir().unwrap();
    let k = SecretKey::random();
    let a = AuditLog::open(d.path(), &k);
    let b = AuditLog::open(d.path(), &k);
    for i in 0..20 {
        if i % 3 == 0 { &a } else { &b }.append(ev(i)).unwrap();
    }
    drop((a, b));
    let rep = AuditLog::open(d.path(), &k).verify().unwrap();
    assert_eq!(rep.records, 20);
}

/// A checkpoint line cut short (a full disk) is not a tamper alarm: verify ignores the
/// unfinished line, and the next checkpoint cuts it off and continues the chain (on
/// e418955 `audit verify` failed for good with "checkpoint N is unparsable").
#[test]
fn a_torn_checkpoint_line_is_not_a_tamper_alarm() {
    let anchor = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let k = SecretKey::random();
    {
        let log = AuditLog::open_with_anchor(d.path(), &k, Some(anchor.path().to_path_buf()));
        for i in 0..4 {
            log.append(ev(i)).unwrap();
        }
    }
    for dir in [d.path(), anchor.path()] {
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(CHECKPOINT_FILE))
            .unwrap();
        f.write_all(b"{\"seq\":4,\"hash\":\"ab").unwrap();
    }
    let log = AuditLog::open_with_anchor(d.path(), &k, Some(anchor.path().to_path_buf()));
    log.verify_with(None, Some(anchor.path()))
        .expect("a torn final line is no record");
    for i in 4..8 {
        log.append(ev(i)).unwrap();
    }
    log.checkpoint().unwrap();
    let rep = log.verify_with(None, Some(anchor.path())).unwrap();
    assert_eq!((rep.records, rep.checkpoints), (8, 2));
    for dir in [d.path(), anchor.path()] {
        let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).unwrap();
        assert!(!text.contains("\"ab{"), "the torn line was cut: {text}");
        assert!(text.ends_with('\n'));
    }
}
