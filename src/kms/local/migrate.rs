//! The keystore before the store engines: one sealed JSON file (`keystore.sealed`),
//! rewritten whole on every change. It is read once, moved into the store in one
//! transaction, checked row by row, and only then removed.

use super::*;

/// The root key's check row: a store made under another root key is refused at open,
/// before anything is written into it.
const META_ROOT: &str = "root-check";

impl LocalKms {
    /// Reads the legacy sealed store file.
    pub(super) fn read_legacy(&self, path: &Path) -> KmsResult<Store> {
        let mut data = fs::read(path)
            .map_err(|e| KmsError::internal(format!("cannot read {}: {e}", path.display())))?;
        if data.len() < NONCE_LEN + TAG_LEN {
            return Err(KmsError::internal(format!(
                "{} is truncated",
                path.display()
            )));
        }
        let nonce: [u8; NONCE_LEN] = data[..NONCE_LEN].try_into().unwrap();
        let aead = Backend::AwsLc.key(self.e.root.as_bytes());
        aead.open(&nonce, STORE_AAD, &mut data[NONCE_LEN..])
            .map_err(|_| {
                KmsError::internal(format!(
                    "{} does not authenticate under the root key (wrong root.key or damaged file)",
                    path.display()
                ))
            })?;
        let plain = &data[NONCE_LEN..data.len() - TAG_LEN];
        let store: Result<Store, _> = serde_json::from_slice(plain);
        zeroize::Zeroizing::new(data);
        store.map_err(|e| KmsError::internal(format!("{}: invalid store: {e}", path.display())))
    }

    /// The store as committed, read whole (tests).
    #[cfg(test)]
    pub(super) fn stored(&self) -> Store {
        let (_, rows) = self.e.store.changes_since(0).unwrap();
        let mut s = Store::default();
        self.load_rows(&mut s, rows).unwrap();
        s
    }

    /// Every row of `s`, as if all were new.
    fn all_rows(&self, s: &Store) -> KmsResult<Vec<Row>> {
        let mut s = s.clone();
        fn mark<V: Clone>(t: &mut Table<V>) {
            let ids: Vec<String> = t.keys().cloned().collect();
            for id in ids {
                t.get_mut(&id);
            }
        }
        mark(&mut s.keys);
        mark(&mut s.aliases);
        mark(&mut s.principals);
        mark(&mut s.grants);
        mark(&mut s.imports);
        mark(&mut s.custom_key_stores);
        let mut rows = self.dirty_rows(&mut s)?;
        if let Some(ck) = &s.audit_checkpoint {
            rows.push(self.checkpoint_row(ck)?);
        }
        Ok(rows)
    }

    fn root_row(&self) -> Row {
        Row {
            kind: KIND_META.into(),
            id: META_ROOT.into(),
            data: Some(self.e.rows.seal(KIND_META, META_ROOT, b"kmsfs")),
        }
    }

    /// At open: the store is bound to this root key (its check row is written into an
    /// empty store, and must open under it otherwise), and a legacy keystore file beside
    /// an empty store is moved in.
    pub(super) fn adopt_store(&self) -> crate::Result<()> {
        let legacy = self.e.dir.join(STORE_FILE);
        let shown = self.e.store.describe();
        // One process migrates; the others wait on the keystore's lock and find it done.
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.e.dir.join(LOCK_FILE))
            .map_err(|e| crate::error::err!("cannot open keystore lock: {e}"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        // Temp files of the legacy store file exist only while a writer holds this lock:
        // any seen now was left by a writer killed mid-write.
        if let Ok(rd) = fs::read_dir(&self.e.dir) {
            let stray = format!(".{STORE_FILE}.tmp.");
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&stray) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let (gen, rows) = self.e.store.changes_since(0)?;
        if let Some(r) = rows
            .iter()
            .find(|r| r.kind == KIND_META && r.id == META_ROOT)
        {
            self.e
                .rows
                .open(KIND_META, META_ROOT, r.data.as_deref().unwrap_or_default())
                .map_err(|_| {
                    crate::error::err!(
                        "store {shown} was made under another root key than keystore {}'s",
                        self.e.dir.display()
                    )
                })?;
            if legacy.exists() {
                // A migration committed, then stopped before removing the old file.
                self.finish_migration(&legacy)?;
                return Ok(());
            }
            // What was read to check the root key is the whole store: it becomes the
            // cache, so the open does not read the store a second time.
            let mut st = Store::scoped(self.e.scope.clone());
            self.load_rows(&mut st, rows).map_err(crate::Error::from)?;
            *self.e.cache.write() = Cached {
                store: Arc::new(st),
                gen,
            };
            return Ok(());
        }
        if !rows.is_empty() {
            crate::error::fail!("store {shown} holds rows but no root check: not a kmsfs store");
        }
        let mut writes = vec![self.root_row()];
        let old = if legacy.exists() {
            let old = self.read_legacy(&legacy).map_err(crate::Error::from)?;
            writes.extend(self.all_rows(&old)?);
            Some(old)
        } else {
            None
        };
        if self
            .e
            .store
            .write(0, &mut |now, _| (now == 0).then(|| writes.clone()))?
            .is_none()
        {
            // Another server bound the store first: check it is ours.
            drop(lock);
            return self.adopt_store();
        }
        if let Some(old) = old {
            self.finish_migration(&legacy)?;
            tracing::info!(
                "keystore {}: moved {} keys from {STORE_FILE} into {shown}",
                self.e.dir.display(),
                old.keys.len()
            );
        }
        Ok(())
    }

    /// Checks that every row of the legacy file reads back from the store the same, then
    /// removes the file (it holds every secret, sealed, and would roll the store back).
    fn finish_migration(&self, legacy: &Path) -> crate::Result<()> {
        let old = self.read_legacy(legacy).map_err(crate::Error::from)?;
        let (_, rows) = self.e.store.changes_since(0)?;
        let mut new = Store::default();
        self.load_rows(&mut new, rows).map_err(crate::Error::from)?;
        let same = |a: &Store, b: &Store| -> crate::Result<bool> {
            let j = |s: &Store| -> crate::Result<zeroize::Zeroizing<Vec<u8>>> {
                Ok(zeroize::Zeroizing::new(serde_json::to_vec(s)?))
            };
            Ok(*j(a)? == *j(b)?)
        };
        if !same(&old, &new)? {
            crate::error::fail!(
                "keystore {}: the store {} does not hold what {STORE_FILE} holds; {STORE_FILE} is kept (move one of them away to choose)",
                self.e.dir.display(),
                self.e.store.describe()
            );
        }
        fs::remove_file(legacy)?;
        File::open(&self.e.dir)?.sync_all()?;
        Ok(())
    }
}
