//! The tamper-evident audit log of the embedded KMS: one JSON line per operation, allowed
//! or denied, SHA-256 hash-chained, made durable before the operation answers (fail
//! closed) with group commit (many records, one fsync), plus HMAC checkpoints keyed from
//! the root key so a cut-off tail, a deleted, edited or reordered line is detected.
//!
//! Files in the keystore directory: `audit.log` (records) and `audit.checkpoints`.
//! Writers in several processes serialise on `flock` of the log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why the audit log could not be written or does not reach what the keystore vouches
/// for (one line naming the log).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AuditError(String);

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::EncryptionContext;
use crate::crypto::SecretKey;

pub const AUDIT_FILE: &str = "audit.log";
pub const CHECKPOINT_FILE: &str = "audit.checkpoints";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// A checkpoint is written after this many records or this much time, and at close.
const CHECKPOINT_EVERY: u64 = 1000;
const CHECKPOINT_SECS: u64 = 5;

/// One record as the KMS reports it (seq and hashes are assigned at commit).
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub principal: String,
    pub op: String,
    pub key_arn: Option<String>,
    pub key_version: Option<String>,
    pub context: Option<EncryptionContext>,
    pub error_code: Option<String>,
    pub request_id: String,
    pub source: String,
}

/// The JSON line, in this field order; `hash` is appended after hashing the rest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub time: String,
    pub principal: String,
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub context: Option<EncryptionContext>,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_code: Option<String>,
    pub request_id: String,
    pub source: String,
    pub prev_hash: String,
    #[serde(default, skip_serializing)]
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
    hash: String,
    time: String,
    /// The MAC of the previous checkpoint ("" for the first): checkpoints form a chain, so
    /// one removed from the middle is detected. Absent in checkpoints written before the
    /// chain existed (accepted only before the first chained one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<String>,
    mac: String,
}

impl Checkpoint {
    fn mac_input(&self) -> Vec<Vec<u8>> {
        let mut v = vec![
            self.seq.to_be_bytes().to_vec(),
            self.hash.as_bytes().to_vec(),
            self.time.as_bytes().to_vec(),
        ];
        if let Some(p) = &self.prev {
            v.insert(0, b"chained v2".to_vec());
            v.push(p.as_bytes().to_vec());
        }
        v
    }

    fn verify_mac(&self, key: &SecretKey) -> bool {
        let parts = self.mac_input();
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        hex::decode(&self.mac)
            .map(|m| key.verify_hmac(&parts, &m))
            .unwrap_or(false)
    }
}

/// Where a copy of every checkpoint goes besides the keystore directory (a directory the
/// keystore's writer does not control): `KMSFS_AUDIT_ANCHOR`.
pub const ANCHOR_ENV: &str = "KMSFS_AUDIT_ANCHOR";

struct Queue {
    pending: Vec<Event>,
    /// id of the batch now collecting events
    collecting: u64,
    /// highest batch id written (or failed)
    done: u64,
    flushing: bool,
    failures: Vec<(u64, String)>,
}

/// State only the flushing leader touches.
struct Writer {
    file: Option<File>,
    /// (file length, last seq, last hash) after our last write; re-read if the length moved.
    tail: Option<(u64, u64, String)>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// (seq, hash) of the last record we wrote and not yet checkpointed
    uncheckpointed: Option<(u64, String)>,
}

pub struct AuditLog {
    dir: PathBuf,
    /// A directory outside the keystore's that receives a copy of every checkpoint.
    anchor: Option<PathBuf>,
    mac_key: SecretKey,
    queue: Mutex<Queue>,
    cond: Condvar,
    writer: Mutex<Writer>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

fn hash_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// `{..."prev_hash":"…"}` → `{..."prev_hash":"…","hash":"…"}`
fn seal_line(body: &str, hash: &str) -> String {
    format!("{},\"hash\":\"{}\"}}\n", &body[..body.len() - 1], hash)
}

/// Splits a line into (body that was hashed, claimed hash).
fn split_line(line: &str) -> Option<(String, &str)> {
    const SUFFIX_LEN: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    if line.len() < SUFFIX_LEN || !line.ends_with("\"}") {
        return None;
    }
    let cut = line.len() - SUFFIX_LEN;
    let suffix = &line[cut..];
    if !suffix.starts_with(",\"hash\":\"") {
        return None;
    }
    let hash = &suffix[9..9 + 64];
    Some((format!("{}}}", &line[..cut]), hash))
}

impl AuditLog {
    /// Opens the log of a keystore directory; checkpoints are also copied to the anchor
    /// directory named by `KMSFS_AUDIT_ANCHOR`, if set.
    pub fn open(dir: &Path, root: &SecretKey) -> AuditLog {
        let anchor = std::env::var_os(ANCHOR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        Self::open_with_anchor(dir, root, anchor)
    }

    pub fn open_with_anchor(dir: &Path, root: &SecretKey, anchor: Option<PathBuf>) -> AuditLog {
        AuditLog {
            anchor,
            dir: dir.to_path_buf(),
            mac_key: root.derive(b"kmsfs audit", b"kmsfs audit checkpoint v1"),
            queue: Mutex::new(Queue {
                pending: vec![],
                collecting: 1,
                done: 0,
                flushing: false,
                failures: vec![],
            }),
            cond: Condvar::new(),
            writer: Mutex::new(Writer {
                file: None,
                tail: None,
                since_checkpoint: 0,
                last_checkpoint: Instant::now(),
                uncheckpointed: None,
            }),
        }
    }

    /// Appends one record and returns once it is durable (fsynced), or the reason it
    /// could not be made durable. Concurrent callers share one write and one fsync.
    pub fn append(&self, ev: Event) -> Result<(), AuditError> {
        let mut q = self.queue.lock();
        q.pending.push(ev);
        let mine = q.collecting;
        loop {
            if q.done >= mine {
                return match q.failures.iter().find(|(b, _)| *b == mine) {
                    Some((_, e)) => Err(AuditError(e.clone())),
                    None => Ok(()),
                };
            }
            if !q.flushing {
                // Become the leader for everything queued so far.
                q.flushing = true;
                let batch = std::mem::take(&mut q.pending);
                let id = q.collecting;
                q.collecting += 1;
                drop(q);
                let r = self.write_batch(batch);
                q = self.queue.lock();
                q.done = id;
                q.flushing = false;
                if let Err(e) = r {
                    q.failures.push((id, e.0));
                }
                let keep_from = q.done.saturating_sub(64);
                q.failures.retain(|(b, _)| *b >= keep_from);
                self.cond.notify_all();
                continue;
            }
            self.cond.wait(&mut q);
        }
    }

    fn open_log(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(self.dir.join(AUDIT_FILE))
    }

    /// Last (seq, hash) in the log; a torn last line (a writer died mid-append, so its
    /// operation never answered) is cut off.
    /// The end offset, sequence number and hash of the last complete record; a torn final
    /// record (a crashed writer) is cut off. Correct for records of any length: the file
    /// is searched backwards, a block at a time, for the line breaks around the last record.
    fn read_tail(file: &mut File) -> std::io::Result<(u64, u64, String)> {
        let len = file.seek(SeekFrom::End(0))?;
        if len == 0 {
            return Ok((0, 0, GENESIS.to_string()));
        }
        let mut end = len;
        if last_byte(file, len)? != b'\n' {
            let keep = rfind_newline(file, len)?.map_or(0, |p| p + 1);
            tracing::warn!(
                "audit log: cutting a torn final record ({} bytes) left by a crashed writer",
                len - keep
            );
            file.set_len(keep)?;
            file.sync_data()?;
            if keep == 0 {
                return Ok((0, 0, GENESIS.to_string()));
            }
            end = keep;
        }
        // the last record is [start, end - 1)
        let start = rfind_newline(file, end - 1)?.map_or(0, |p| p + 1);
        let mut line = vec![0u8; (end - 1 - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut line)?;
        let last = std::str::from_utf8(&line).map_err(std::io::Error::other)?;
        let rec: Record = serde_json::from_str(last).map_err(std::io::Error::other)?;
        let hash = split_line(last)
            .map(|(_, h)| h.to_string())
            .ok_or_else(|| std::io::Error::other("last audit line has no hash"))?;
        let cur = file.seek(SeekFrom::End(0))?;
        Ok((cur, rec.seq, hash))
    }

    fn write_batch(&self, batch: Vec<Event>) -> Result<(), AuditError> {
        let mut w = self.writer.lock();
        let r = self.write_batch_locked(&mut w, batch);
        if r.is_err() {
            w.file = None;
            w.tail = None;
        }
        r.map_err(|e| {
            AuditError(format!(
                "audit log {} cannot be written: {e}",
                self.dir.join(AUDIT_FILE).display()
            ))
        })
    }

    fn write_batch_locked(&self, w: &mut Writer, batch: Vec<Event>) -> std::io::Result<()> {
        if w.file.is_none() {
            w.file = Some(self.open_log()?);
        }
        let file = w.file.as_mut().unwrap();
        rustix::fs::flock(&*file, rustix::fs::FlockOperation::LockExclusive)?;
        let result = (|| -> std::io::Result<()> {
            let len = file.seek(SeekFrom::End(0))?;
            let (mut seq, mut prev) = match &w.tail {
                Some((l, s, h)) if *l == len => (*s, h.clone()),
                _ => {
                    let (_, s, h) = Self::read_tail(file)?;
                    (s, h)
                }
            };
            let time = now_rfc3339();
            let mut out = String::with_capacity(batch.len() * 400);
            for ev in batch {
                seq += 1;
                let rec = Record {
                    seq,
                    time: time.clone(),
                    principal: ev.principal,
                    op: ev.op,
                    key_arn: ev.key_arn,
                    key_version: ev.key_version,
                    context: ev.context,
                    outcome: if ev.error_code.is_some() {
                        "error".into()
                    } else {
                        "ok".into()
                    },
                    error_code: ev.error_code,
                    request_id: ev.request_id,
                    source: ev.source,
                    prev_hash: prev,
                    hash: String::new(),
                };
                let body = serde_json::to_string(&rec).map_err(std::io::Error::other)?;
                let h = hash_hex(body.as_bytes());
                out.push_str(&seal_line(&body, &h));
                prev = h;
                w.since_checkpoint += 1;
            }
            file.write_all(out.as_bytes())?;
            file.sync_data()?;
            let end = file.seek(SeekFrom::End(0))?;
            w.tail = Some((end, seq, prev.clone()));
            w.uncheckpointed = Some((seq, prev));
            Ok(())
        })();
        let _ = rustix::fs::flock(&*file, rustix::fs::FlockOperation::Unlock);
        result?;
        if w.since_checkpoint >= CHECKPOINT_EVERY
            || w.last_checkpoint.elapsed().as_secs() >= CHECKPOINT_SECS
        {
            self.checkpoint_locked(w)?;
        }
        Ok(())
    }

    fn checkpoint_locked(&self, w: &mut Writer) -> std::io::Result<()> {
        let Some((seq, hash)) = w.uncheckpointed.take() else {
            return Ok(());
        };
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(self.dir.join(CHECKPOINT_FILE))?;
        // Several processes may checkpoint into one file: the link to the previous
        // checkpoint is read and the new one appended under one lock.
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
        let prev = last_line(&mut f)?
            .and_then(|l| serde_json::from_str::<Checkpoint>(&l).ok())
            .map(|c| c.mac)
            .unwrap_or_default();
        let mut ck = Checkpoint {
            seq,
            hash,
            time: now_rfc3339(),
            prev: Some(prev),
            mac: String::new(),
        };
        let parts = ck.mac_input();
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        ck.mac = hex::encode(self.mac_key.hmac(&parts));
        let line = serde_json::to_string(&ck).map_err(std::io::Error::other)?;
        f.write_all(format!("{line}\n").as_bytes())?;
        f.sync_data()?;
        let _ = rustix::fs::flock(&f, rustix::fs::FlockOperation::Unlock);
        // Copies outside the keystore directory: the journal (via the log) and the anchor
        // directory, so cutting the log and the checkpoints together is detectable.
        tracing::info!(
            "audit checkpoint seq={} hash={} mac={}",
            ck.seq,
            ck.hash,
            ck.mac
        );
        if let Some(dir) = &self.anchor {
            let r = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(dir.join(CHECKPOINT_FILE))
                .and_then(|mut a| {
                    a.write_all(format!("{line}\n").as_bytes())?;
                    a.sync_data()
                });
            if let Err(e) = r {
                tracing::warn!("cannot copy the audit checkpoint to {}: {e}", dir.display());
            }
        }
        w.since_checkpoint = 0;
        w.last_checkpoint = Instant::now();
        Ok(())
    }

    /// (sequence number, record hash) of the newest checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Option<(u64, String)> {
        let mut f = File::open(self.dir.join(CHECKPOINT_FILE)).ok()?;
        let ck: Checkpoint = serde_json::from_str(&last_line(&mut f).ok()??).ok()?;
        Some((ck.seq, ck.hash))
    }

    /// Fails when the log is older than `seq` (the checkpoint the keystore vouches for):
    /// cut off, or missing beside an existing keystore. Cheap: reads only the tail.
    pub fn check_reaches(&self, seq: u64) -> Result<(), AuditError> {
        let last = match File::open(self.dir.join(AUDIT_FILE)) {
            Ok(mut f) => last_line(&mut f)
                .map_err(|e| AuditError(format!("cannot read the audit log: {e}")))?
                .and_then(|l| {
                    split_line(&l).and_then(|(b, _)| serde_json::from_str::<Record>(&b).ok())
                })
                .map_or(0, |r| r.seq),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(AuditError(format!("cannot open the audit log: {e}"))),
        };
        if last < seq {
            return Err(AuditError(format!(
                "the audit log ends at record {last} but the keystore vouches for record {seq}: it was cut off or removed"
            )));
        }
        Ok(())
    }

    /// Writes a checkpoint for the last record this process wrote (clean shutdown).
    pub fn checkpoint(&self) -> std::io::Result<()> {
        let mut w = self.writer.lock();
        self.checkpoint_locked(&mut w)
    }

    /// Checks the whole chain and every checkpoint.
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        verify(&self.dir, &self.mac_key, None, None)
    }

    /// `verify`, also against the checkpoint the keystore vouches for and the copies of
    /// the checkpoints kept in an anchor directory.
    pub fn verify_with(
        &self,
        vouched: Option<&(u64, String)>,
        anchor: Option<&Path>,
    ) -> Result<VerifyReport, VerifyError> {
        verify(&self.dir, &self.mac_key, vouched, anchor)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::warn!("audit checkpoint at shutdown failed: {e}");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub checkpoints: u64,
    pub last_seq: u64,
    /// Records after the last checkpoint: a cut inside this tail would not be detected.
    pub unchecked_tail: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log damaged at sequence number {seq}: {reason}")]
pub struct VerifyError {
    pub seq: u64,
    pub reason: String,
}

fn verify(
    dir: &Path,
    mac_key: &SecretKey,
    vouched: Option<&(u64, String)>,
    anchor: Option<&Path>,
) -> Result<VerifyReport, VerifyError> {
    let bad = |seq: u64, reason: String| VerifyError { seq, reason };
    let text = match std::fs::read_to_string(dir.join(AUDIT_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(bad(0, format!("cannot read the log: {e}"))),
    };
    let mut hashes: Vec<String> = Vec::new();
    let mut prev = GENESIS.to_string();
    for (i, line) in text.lines().enumerate() {
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
        for line in text.lines() {
            let ck: Checkpoint = serde_json::from_str(line)
                .map_err(|e| bad(0, format!("anchored checkpoint is unparsable: {e}")))?;
            if !ck.verify_mac(mac_key) {
                return Err(bad(ck.seq, "anchored checkpoint has a bad MAC".into()));
            }
            vouch(ck.seq, &ck.hash, "an anchored checkpoint")?;
        }
    }
    let ck_text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).unwrap_or_default();
    let mut checkpoints = 0;
    let mut last_ck = 0;
    let mut prev_mac: Option<String> = None; // Some once the chain has started
    for (i, line) in ck_text.lines().enumerate() {
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

/// Reads all records (for `audit show`); does not verify.
pub fn read_records(dir: &Path) -> std::io::Result<Vec<Record>> {
    let text = match std::fs::read_to_string(dir.join(AUDIT_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let (body, h) = split_line(l)?;
            let mut r: Record = serde_json::from_str(&body).ok()?;
            r.hash = h.to_string();
            Some(r)
        })
        .collect())
}

/// The last complete line of a file (without its newline), read from the end.
fn last_line(f: &mut File) -> std::io::Result<Option<String>> {
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

fn last_byte(file: &mut File, len: u64) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut b)?;
    Ok(b[0])
}

/// The offset of the last `\n` before `before`, searching backwards 64 KiB at a time.
fn rfind_newline(file: &mut File, before: u64) -> std::io::Result<Option<u64>> {
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

#[cfg(test)]
mod tests {
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
}
