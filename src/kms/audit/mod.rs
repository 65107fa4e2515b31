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

mod read;
#[cfg(test)]
mod tests;

use read::{last_byte, last_line, rfind_newline, trim_torn_tail, verify};
pub use read::{read_records, LastUseIndex, VerifyError, VerifyReport, LAST_USE_WINDOW};

use super::EncryptionContext;
use crate::crypto::SecretKey;

/// The log, in the keystore directory.
pub const AUDIT_FILE: &str = "audit.log";
/// The HMAC checkpoints, beside the log.
pub const CHECKPOINT_FILE: &str = "audit.checkpoints";
/// The link before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// A checkpoint is written after this many records or this much time, and at close.
const CHECKPOINT_EVERY: u64 = 1000;
const CHECKPOINT_SECS: u64 = 5;

/// One record as the KMS reports it (seq and hashes are assigned at commit).
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// Who called.
    pub principal: String,
    /// The operation (AWS name).
    pub op: String,
    /// The key it touched.
    pub key_arn: Option<String>,
    /// The key material id (version) it used.
    pub key_version: Option<String>,
    /// The encryption context of the request.
    pub context: Option<EncryptionContext>,
    /// The AWS error name, if refused or failed.
    pub error_code: Option<String>,
    /// A unique id of the request.
    pub request_id: String,
    /// Where the request came from (address, or "local").
    pub source: String,
}

/// The JSON line, in this field order; `hash` is appended after hashing the rest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// Who called.
    pub principal: String,
    /// The operation (AWS name).
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The key it touched.
    pub key_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The key material id (version) it used.
    pub key_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The encryption context of the request.
    pub context: Option<EncryptionContext>,
    /// "allowed" or "denied".
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The AWS error name, if refused or failed.
    pub error_code: Option<String>,
    /// A unique id of the request.
    pub request_id: String,
    /// Where the request came from (address, or "local").
    pub source: String,
    /// The previous record's hash (the chain).
    pub prev_hash: String,
    #[serde(default, skip_serializing)]
    /// SHA-256 of this record's line (kept beside it, not in it).
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

/// Where records and checkpoints are kept when a database holds the store (several
/// servers, one chain): `kms::store`'s PostgreSQL engine. Lines are the same JSON lines
/// the file log holds, without their newline.
pub trait AuditDb: Send + Sync {
    /// Names the database in messages (never a password).
    fn describe(&self) -> String;
    /// One transaction under the chain's one lock: `build` is handed the last record's
    /// (seq, hash) and the last checkpoint line, and returns the records (seq, line) and
    /// the checkpoint line to append; both are durable when this returns.
    fn append(&self, build: &mut BuildBatch<'_>) -> std::io::Result<()>;
    /// The records with seq > `after`, in order, at most `limit`.
    fn records_after(&self, after: u64, limit: usize) -> std::io::Result<Vec<String>>;
    /// The last record line.
    fn last_record(&self) -> std::io::Result<Option<String>>;
    /// Every checkpoint line, in order.
    fn checkpoints(&self) -> std::io::Result<Vec<String>>;
    /// The last checkpoint line.
    fn last_checkpoint(&self) -> std::io::Result<Option<String>>;
}

/// Records as (seq, line).
pub type Lines = Vec<(u64, String)>;

/// Builds one batch from the chain's tail: (last seq, last hash, last checkpoint line) →
/// (records, checkpoint line).
pub type BuildBatch<'a> = dyn FnMut(u64, &str, Option<&str>) -> std::io::Result<(Vec<(u64, String)>, Option<String>)>
    + 'a;

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

/// The audit log of one keystore directory.
pub struct AuditLog {
    dir: PathBuf,
    /// Records in a database instead of the directory's files.
    db: Option<std::sync::Arc<dyn AuditDb>>,
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

/// The (seq, hash) of a record line: the chain's tail.
pub fn tail_of(line: &str) -> std::io::Result<(u64, String)> {
    let (body, hash) = split_line(line)
        .ok_or_else(|| std::io::Error::other("the last audit record has no hash"))?;
    let rec: Record = serde_json::from_str(&body).map_err(std::io::Error::other)?;
    Ok((rec.seq, hash.to_string()))
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

    /// The log of a store kept in a database (`KMSFS_AUDIT_ANCHOR` applies as for files).
    pub fn open_db(dir: &Path, root: &SecretKey, db: std::sync::Arc<dyn AuditDb>) -> AuditLog {
        let mut log = Self::open(dir, root);
        log.db = Some(db);
        log
    }

    /// Where the records are, for messages.
    pub fn describe(&self) -> String {
        match &self.db {
            Some(db) => format!("the audit log in {}", db.describe()),
            None => format!("audit log {}", self.dir.join(AUDIT_FILE).display()),
        }
    }

    /// The log of `dir`, its checkpoints also copied to the `anchor` directory.
    pub fn open_with_anchor(dir: &Path, root: &SecretKey, anchor: Option<PathBuf>) -> AuditLog {
        AuditLog {
            anchor,
            db: None,
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
        r.map_err(|e| AuditError(format!("{} cannot be written: {e}", self.describe())))
    }

    /// Builds the lines of `batch` after (seq, prev); returns them, with the last seq and hash.
    fn build_lines(
        batch: Vec<Event>,
        mut seq: u64,
        mut prev: String,
    ) -> std::io::Result<(Lines, u64, String)> {
        let time = now_rfc3339();
        let mut out = Vec::with_capacity(batch.len());
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
            let mut line = seal_line(&body, &h);
            line.pop(); // the newline
            out.push((seq, line));
            prev = h;
        }
        Ok((out, seq, prev))
    }

    /// A checkpoint for record (seq, hash), chained to the checkpoint line `prev`.
    fn make_checkpoint(
        &self,
        seq: u64,
        hash: String,
        prev: Option<&str>,
    ) -> std::io::Result<String> {
        let prev = prev
            .and_then(|l| serde_json::from_str::<Checkpoint>(l).ok())
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
        tracing::info!(
            "audit checkpoint seq={} hash={} mac={}",
            ck.seq,
            ck.hash,
            ck.mac
        );
        serde_json::to_string(&ck).map_err(std::io::Error::other)
    }

    /// A copy of a checkpoint in the anchor directory, if one is set (best effort).
    fn anchor_copy(&self, line: &str) {
        if let Some(dir) = &self.anchor {
            let r = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .read(true)
                .open(dir.join(CHECKPOINT_FILE))
                .and_then(|mut a| {
                    trim_torn_tail(&mut a, "anchored audit checkpoints")?;
                    a.write_all(format!("{line}\n").as_bytes())?;
                    a.sync_data()
                });
            if let Err(e) = r {
                tracing::warn!("cannot copy the audit checkpoint to {}: {e}", dir.display());
            }
        }
    }

    /// Appends a batch to the database's chain, with a checkpoint when one is due.
    fn write_batch_db(
        &self,
        db: &dyn AuditDb,
        w: &mut Writer,
        batch: Vec<Event>,
    ) -> std::io::Result<()> {
        let n = batch.len() as u64;
        let due = w.since_checkpoint + n >= CHECKPOINT_EVERY
            || w.last_checkpoint.elapsed().as_secs() >= CHECKPOINT_SECS;
        let mut batch = Some(batch);
        let mut ck_line = None;
        db.append(&mut |seq, prev, last_ck| {
            let (lines, seq, hash) =
                Self::build_lines(batch.take().unwrap_or_default(), seq, prev.to_string())?;
            let ck = if due && seq > 0 {
                Some(self.make_checkpoint(seq, hash, last_ck)?)
            } else {
                None
            };
            ck_line = ck.clone();
            Ok((lines, ck))
        })?;
        if let Some(line) = ck_line {
            self.anchor_copy(&line);
            w.since_checkpoint = 0;
            w.last_checkpoint = Instant::now();
        } else {
            w.since_checkpoint += n;
        }
        Ok(())
    }

    fn write_batch_locked(&self, w: &mut Writer, batch: Vec<Event>) -> std::io::Result<()> {
        if let Some(db) = &self.db {
            return self.write_batch_db(db.as_ref(), w, batch);
        }
        if w.file.is_none() {
            w.file = Some(self.open_log()?);
        }
        let file = w.file.as_mut().unwrap();
        rustix::fs::flock(&*file, rustix::fs::FlockOperation::LockExclusive)?;
        let result = (|| -> std::io::Result<()> {
            let len = file.seek(SeekFrom::End(0))?;
            let (mut seq, mut prev): (u64, String) = match &w.tail {
                Some((l, s, h)) if *l == len => (*s, h.clone()),
                _ => {
                    let (_, s, h) = Self::read_tail(file)?;
                    (s, h)
                }
            };
            let n = batch.len() as u64;
            let (lines, last, hash) = Self::build_lines(batch, seq, prev)?;
            let mut out = String::with_capacity(lines.iter().map(|(_, l)| l.len() + 1).sum());
            for (_, l) in &lines {
                out.push_str(l);
                out.push('\n');
            }
            (seq, prev) = (last, hash);
            w.since_checkpoint += n;
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
        if let Some(db) = &self.db {
            // A checkpoint of the chain's tail, if records came since the last one.
            if w.since_checkpoint == 0 {
                return Ok(());
            }
            let mut made = None;
            db.append(&mut |seq, prev, last_ck| {
                let behind = last_ck
                    .and_then(|l| serde_json::from_str::<Checkpoint>(l).ok())
                    .is_none_or(|c| c.seq < seq);
                let ck = if seq > 0 && behind {
                    Some(self.make_checkpoint(seq, prev.to_string(), last_ck)?)
                } else {
                    None
                };
                made = ck.clone();
                Ok((vec![], ck))
            })?;
            if let Some(line) = made {
                self.anchor_copy(&line);
            }
            w.since_checkpoint = 0;
            w.last_checkpoint = Instant::now();
            return Ok(());
        }
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
        trim_torn_tail(&mut f, "audit checkpoints")?;
        let prev = last_line(&mut f)?;
        let line = self.make_checkpoint(seq, hash, prev.as_deref())?;
        f.write_all(format!("{line}\n").as_bytes())?;
        f.sync_data()?;
        let _ = rustix::fs::flock(&f, rustix::fs::FlockOperation::Unlock);
        // Copies outside the keystore directory: the journal (via the log) and the anchor
        // directory, so cutting the log and the checkpoints together is detectable.
        self.anchor_copy(&line);
        w.since_checkpoint = 0;
        w.last_checkpoint = Instant::now();
        Ok(())
    }

    /// (sequence number, record hash) of the newest checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Option<(u64, String)> {
        let line = match &self.db {
            Some(db) => db.last_checkpoint().ok()??,
            None => last_line(&mut File::open(self.dir.join(CHECKPOINT_FILE)).ok()?).ok()??,
        };
        let ck: Checkpoint = serde_json::from_str(&line).ok()?;
        Some((ck.seq, ck.hash))
    }

    /// Fails when the log is older than `seq` (the checkpoint the keystore vouches for):
    /// cut off, or missing beside an existing keystore. Cheap: reads only the tail.
    pub fn check_reaches(&self, seq: u64) -> Result<(), AuditError> {
        let last = match &self.db {
            Some(db) => db
                .last_record()
                .map_err(|e| AuditError(format!("cannot read {}: {e}", self.describe())))?
                .and_then(|l| {
                    split_line(&l).and_then(|(b, _)| serde_json::from_str::<Record>(&b).ok())
                })
                .map_or(0, |r| r.seq),
            None => self.file_last_seq()?,
        };
        if last < seq {
            return Err(AuditError(format!(
                "the audit log ends at record {last} but the keystore vouches for record {seq}: it was cut off or removed"
            )));
        }
        Ok(())
    }

    fn file_last_seq(&self) -> Result<u64, AuditError> {
        Ok(match File::open(self.dir.join(AUDIT_FILE)) {
            Ok(mut f) => last_line(&mut f)
                .map_err(|e| AuditError(format!("cannot read the audit log: {e}")))?
                .and_then(|l| {
                    split_line(&l).and_then(|(b, _)| serde_json::from_str::<Record>(&b).ok())
                })
                .map_or(0, |r| r.seq),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(AuditError(format!("cannot open the audit log: {e}"))),
        })
    }

    /// Writes a checkpoint for the last record this process wrote (clean shutdown).
    pub fn checkpoint(&self) -> std::io::Result<()> {
        let mut w = self.writer.lock();
        self.checkpoint_locked(&mut w)
    }

    /// Checks the whole chain and every checkpoint.
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        self.verify_with(None, None)
    }

    /// `verify`, also against the checkpoint the keystore vouches for and the copies of
    /// the checkpoints kept in an anchor directory.
    pub fn verify_with(
        &self,
        vouched: Option<&(u64, String)>,
        anchor: Option<&Path>,
    ) -> Result<VerifyReport, VerifyError> {
        let (log, cks) = self.texts().map_err(|e| VerifyError {
            seq: 0,
            reason: format!("cannot read {}: {e}", self.describe()),
        })?;
        verify(&log, &cks, &self.mac_key, vouched, anchor)
    }

    /// The records and the checkpoints, as the text of the files (newline-terminated lines).
    fn texts(&self) -> std::io::Result<(String, String)> {
        let Some(db) = &self.db else {
            let read = |name: &str| match std::fs::read_to_string(self.dir.join(name)) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(e),
            };
            return Ok((read(AUDIT_FILE)?, read(CHECKPOINT_FILE)?));
        };
        let mut log = String::new();
        let mut after = 0;
        loop {
            let lines = db.records_after(after, 10_000)?;
            if lines.is_empty() {
                break;
            }
            after += lines.len() as u64;
            for l in lines {
                log.push_str(&l);
                log.push('\n');
            }
        }
        let mut cks = String::new();
        for l in db.checkpoints()? {
            cks.push_str(&l);
            cks.push('\n');
        }
        Ok((log, cks))
    }

    /// Every record (for `audit show`); does not verify.
    pub fn records(&self) -> std::io::Result<Vec<Record>> {
        Ok(read::parse_records(&self.texts()?.0))
    }

    /// GetKeyLastUsage's answer from `index`, caught up with this log.
    pub fn last_use(
        &self,
        index: &mut LastUseIndex,
        key_id: &str,
        ops: &[&str],
    ) -> std::io::Result<(Option<Record>, Option<String>)> {
        match &self.db {
            Some(db) => index.lookup_db(db.as_ref(), key_id, ops),
            None => index.lookup(&self.dir, key_id, ops),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::warn!("audit checkpoint at shutdown failed: {e}");
        }
    }
}
