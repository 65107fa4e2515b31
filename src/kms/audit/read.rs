//! Reading the log back: verifying the chain and checkpoints, the records, the tail.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
/// What a verification found.
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The last record's sequence number.
    pub last_seq: u64,
    /// Records after the last checkpoint: a cut inside this tail would not be detected.
    pub unchecked_tail: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log damaged at sequence number {seq}: {reason}")]
/// Where and why a verification failed.
pub struct VerifyError {
    /// The first record (or checkpoint) that does not check.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

/// The complete lines of an append-only file's text: a final line without its newline
/// is a write cut short (a crash, a full disk) that was never acknowledged, not a record.
fn complete_lines(text: &str) -> std::str::Lines<'_> {
    match text.rfind('\n') {
        Some(i) => text[..=i].lines(),
        None => "".lines(),
    }
}

/// Cuts a torn final line (no newline: a write cut short) off an append-only file opened
/// for reading and appending, before anything is appended after it.
pub(super) fn trim_torn_tail(f: &mut File, what: &str) -> std::io::Result<()> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 || last_byte(f, len)? == b'\n' {
        return Ok(());
    }
    let keep = rfind_newline(f, len)?.map_or(0, |p| p + 1);
    tracing::warn!(
        "{what}: cutting a torn final line ({} bytes) left by a write cut short",
        len - keep
    );
    f.set_len(keep)?;
    f.sync_data()
}

/// Checks the records (`text`) and the checkpoints (`ck_text`), as files hold them.
pub(super) fn verify(
    text: &str,
    ck_text: &str,
    mac_key: &SecretKey,
    vouched: Option<&(u64, String)>,
    anchor: Option<&Path>,
) -> Result<VerifyReport, VerifyError> {
    let bad = |seq: u64, reason: String| VerifyError { seq, reason };
    let mut hashes: Vec<String> = Vec::new();
    let mut prev = GENESIS.to_string();
    for (i, line) in complete_lines(text).enumerate() {
        let expect = i as u64 + 1;
        let (body, claimed) =
            split_line(line).ok_or_else(|| bad(expect, "line has no hash field".into()))?;
        let rec: Record = serde_json::from_str(&body)
            .map_err(|e| bad(expect, format!("unparsable record: {e}")))?;
        if rec.seq != expect {
            return Err(bad(
                expect,
                format!(
                    "found sequence number {} here (line deleted or reordered)",
                    rec.seq
                ),
            ));
        }
        if hash_hex(body.as_bytes()) != claimed {
            return Err(bad(
                expect,
                "record does not match its hash (edited)".into(),
            ));
        }
        if rec.prev_hash != prev {
            return Err(bad(
                expect,
                "prev_hash does not match the previous record".into(),
            ));
        }
        prev = claimed.to_string();
        hashes.push(prev.clone());
    }
    let last_seq = hashes.len() as u64;
    let vouch = |seq: u64, hash: &str, who: &str| -> Result<(), VerifyError> {
        if seq > last_seq {
            return Err(bad(
                last_seq + 1,
                format!("log ends at {last_seq} but {who} vouches for {seq} (tail cut off or log replaced)"),
            ));
        }
        if seq > 0 && hashes[(seq - 1) as usize] != hash {
            return Err(bad(
                seq,
                format!("record differs from the one {who} vouched for"),
            ));
        }
        Ok(())
    };
    if let Some((seq, hash)) = vouched {
        vouch(*seq, hash, "the keystore")?;
    }
    if let Some(a) = anchor {
        let text = std::fs::read_to_string(a.join(CHECKPOINT_FILE))
            .map_err(|e| bad(0, format!("cannot read anchor {}: {e}", a.display())))?;
        for line in complete_lines(&text) {
            let ck: Checkpoint = serde_json::from_str(line)
                .map_err(|e| bad(0, format!("anchored checkpoint is unparsable: {e}")))?;
            if !ck.verify_mac(mac_key) {
                return Err(bad(ck.seq, "anchored checkpoint has a bad MAC".into()));
            }
            vouch(ck.seq, &ck.hash, "an anchored checkpoint")?;
        }
    }
    let mut checkpoints = 0;
    let mut last_ck = 0;
    let mut prev_mac: Option<String> = None; // Some once the chain has started
    for (i, line) in complete_lines(ck_text).enumerate() {
        let ck: Checkpoint = serde_json::from_str(line).map_err(|e| {
            bad(
                last_seq + 1,
                format!("checkpoint {} is unparsable: {e}", i + 1),
            )
        })?;
        match (&ck.prev, &prev_mac) {
            (Some(p), Some(want)) if p != want => {
                return Err(bad(
                    ck.seq,
                    format!(
                        "checkpoint {} does not follow the one before it (checkpoints removed)",
                        i + 1
                    ),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(ck.seq, format!("checkpoint {} is not chained", i + 1)))
            }
            _ => {}
        }
        if !ck.verify_mac(mac_key) {
            return Err(bad(
                ck.seq,
                format!("checkpoint {} has a bad MAC (forged or edited)", i + 1),
            ));
        }
        if ck.seq > last_seq {
            return Err(bad(
                last_seq + 1,
                format!(
                    "log ends at {last_seq} but a checkpoint vouches for {} (tail cut off)",
                    ck.seq
                ),
            ));
        }
        if ck.seq == 0 || hashes[(ck.seq - 1) as usize] != ck.hash {
            return Err(bad(
                ck.seq,
                "record differs from the one its checkpoint vouched for".into(),
            ));
        }
        checkpoints += 1;
        last_ck = last_ck.max(ck.seq);
        if ck.prev.is_some() {
            prev_mac = Some(ck.mac.clone());
        }
    }
    Ok(VerifyReport {
        records: last_seq,
        checkpoints,
        last_seq,
        unchecked_tail: last_seq - last_ck,
    })
}

/// Reads all records of the log in `dir` (for `audit show`); does not verify.
pub fn read_records(dir: &Path) -> std::io::Result<Vec<Record>> {
    match std::fs::read_to_string(dir.join(AUDIT_FILE)) {
        Ok(t) => Ok(parse_records(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// The records of a log's text (for `audit show`); does not verify.
pub(super) fn parse_records(text: &str) -> Vec<Record> {
    text.lines().filter_map(parse_record).collect()
}

fn parse_record(l: &str) -> Option<Record> {
    let (body, h) = split_line(l)?;
    let mut r: Record = serde_json::from_str(&body).ok()?;
    r.hash = h.to_string();
    Some(r)
}

/// How far back `LastUseIndex` first reads the log: the newest 64 MiB (≈ 200,000 records).
pub const LAST_USE_WINDOW: u64 = 64 << 20;

/// How many of the newest records `LastUseIndex` first reads from a database.
const LAST_USE_RECORDS: u64 = 200_000;

/// The newest tracked use of every key, kept up to date by reading only what was appended
/// to the log since the last look: a GetKeyLastUsage costs the records written since the
/// previous one, not a scan of the log (e418955 read up to 64 MiB into memory per call).
/// The first look reads the newest `LAST_USE_WINDOW` bytes once, line by line.
#[derive(Default)]
pub struct LastUseIndex {
    /// Where the next look starts reading (a line boundary), and the log's inode.
    offset: u64,
    ino: u64,
    /// The oldest record time seen (where tracking starts).
    oldest: Option<String>,
    /// Key id -> its newest successful tracked record.
    newest: std::collections::HashMap<String, Record>,
}

impl LastUseIndex {
    fn note(&mut self, rec: Record, ops: &[&str]) {
        if self.oldest.is_none() {
            self.oldest = Some(rec.time.clone());
        }
        if rec.outcome == "ok" && ops.contains(&rec.op.as_str()) {
            if let Some(arn) = &rec.key_arn {
                let id = arn.rsplit_once(":key/").map_or(arn.as_str(), |(_, id)| id);
                self.newest.insert(id.to_string(), rec);
            }
        }
    }

    /// `lookup` for a log kept in a database: `offset` is the last seq read.
    pub(super) fn lookup_db(
        &mut self,
        db: &dyn AuditDb,
        key_id: &str,
        ops: &[&str],
    ) -> std::io::Result<(Option<Record>, Option<String>)> {
        if self.offset == 0 && self.oldest.is_none() {
            let last = db
                .last_record()?
                .and_then(|l| parse_record(&l))
                .map_or(0, |r| r.seq);
            self.offset = last.saturating_sub(LAST_USE_RECORDS);
        }
        loop {
            let lines = db.records_after(self.offset, 10_000)?;
            if lines.is_empty() {
                break;
            }
            for l in lines {
                if let Some(rec) = parse_record(&l) {
                    self.offset = self.offset.max(rec.seq);
                    self.note(rec, ops);
                }
            }
        }
        Ok((self.newest.get(key_id).cloned(), self.oldest.clone()))
    }
}

impl LastUseIndex {
    /// Reads what was appended since the last look; (newest use of `key_id`, oldest time).
    pub fn lookup(
        &mut self,
        dir: &Path,
        key_id: &str,
        ops: &[&str],
    ) -> std::io::Result<(Option<Record>, Option<String>)> {
        use std::io::BufRead;
        use std::os::unix::fs::MetadataExt;
        let f = match File::open(dir.join(AUDIT_FILE)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
            Err(e) => return Err(e),
        };
        let md = f.metadata()?;
        if md.ino() != self.ino || md.len() < self.offset {
            // A new or shorter log (restored, replaced): start again.
            *self = LastUseIndex {
                ino: md.ino(),
                offset: md.len().saturating_sub(LAST_USE_WINDOW),
                ..Default::default()
            };
        }
        let mut r = std::io::BufReader::new(f);
        r.seek(SeekFrom::Start(self.offset))?;
        let mut skip_partial = self.offset > 0 && self.oldest.is_none();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break; // the end, or a record being written: read it next time
            }
            self.offset += n as u64;
            if std::mem::take(&mut skip_partial) {
                continue; // the window began inside this line
            }
            let text = String::from_utf8_lossy(&line[..n - 1]);
            let Some(rec) =
                split_line(&text).and_then(|(b, _)| serde_json::from_str::<Record>(&b).ok())
            else {
                continue;
            };
            self.note(rec, ops);
        }
        Ok((self.newest.get(key_id).cloned(), self.oldest.clone()))
    }
}

/// The last complete line of a file (without its newline), read from the end.
pub(super) fn last_line(f: &mut File) -> std::io::Result<Option<String>> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let end = match last_byte(f, len)? {
        b'\n' => len - 1,
        _ => match rfind_newline(f, len)? {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    let start = rfind_newline(f, end)?.map_or(0, |p| p + 1);
    let mut buf = vec![0u8; (end - start) as usize];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut buf)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

pub(super) fn last_byte(file: &mut File, len: u64) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut b)?;
    Ok(b[0])
}

/// The offset of the last `\n` before `before`, searching backwards 64 KiB at a time.
pub(super) fn rfind_newline(file: &mut File, before: u64) -> std::io::Result<Option<u64>> {
    const BLOCK: u64 = 64 * 1024;
    let mut hi = before;
    let mut buf = vec![0u8; BLOCK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(BLOCK);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(chunk)?;
        if let Some(p) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + p as u64));
        }
        hi = lo;
    }
    Ok(None)
}
