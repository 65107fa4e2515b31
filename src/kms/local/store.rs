//! The sealed-store transaction: read (cached by inode), mutate under the file lock,
//! write atomically; every operation runs and is audited through `run`.

use super::*;

impl LocalKms {
    pub(super) fn arn(&self, id: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{}",
            self.e.region, self.e.account, id
        )
    }

    pub(super) fn alias_arn(&self, name: &str) -> String {
        format!("arn:aws:kms:{}:{}:{}", self.e.region, self.e.account, name)
    }

    /// The key id an existing alias points at (NotFoundException otherwise).
    pub(super) fn alias_target(&self, store: &Store, name: &str) -> KmsResult<String> {
        store
            .aliases
            .get(name)
            .filter(|_| self.foreign_region().is_none())
            .map(|a| a.target.clone())
            .ok_or_else(|| {
                KmsError::not_found(format!("Alias {} is not found.", self.alias_arn(name)))
            })
    }

    /// Runs one operation: the record (allowed or not) is durable in the audit log before
    /// the result is returned; if it cannot be made durable the operation fails.
    pub(super) fn run<R>(
        &self,
        op: &str,
        f: impl FnOnce(&mut OpInfo) -> KmsResult<R>,
    ) -> KmsResult<R> {
        let mut info = OpInfo::default();
        let r = f(&mut info);
        if info.recorded && r.is_ok() {
            return r;
        }
        self.record(op, &info, r.as_ref().err())?;
        r
    }

    pub(super) fn record(&self, op: &str, info: &OpInfo, err: Option<&KmsError>) -> KmsResult<()> {
        self.e
            .audit
            .append(Event {
                principal: self.caller.principal.clone(),
                op: op.to_string(),
                key_arn: info.key_arn.clone(),
                key_version: info.key_version.clone(),
                // A context too large for a request is not copied whole into the
                // fsync'd record either (the refusal is recorded, bounded).
                context: match &info.context {
                    Some(c) if authz::context_bytes(Some(c)) > authz::MAX_CONTEXT_BYTES => {
                        let mut m = EncryptionContext::new();
                        m.insert(
                            "kmsfs:context-omitted".into(),
                            format!("{} pairs, {} bytes", c.len(), authz::context_bytes(Some(c))),
                        );
                        Some(m)
                    }
                    c => c.clone(),
                },
                error_code: err.map(|e| e.code.name().to_string()),
                request_id: uuid::Builder::from_random_bytes(random_bytes::<16>())
                    .into_uuid()
                    .to_string(),
                source: self.caller.source.clone(),
            })
            .map_err(|e| {
                tracing::error!("{e}; failing the {op} request (audit is fail-closed)");
                KmsError::internal(format!("audit log unavailable: {e}"))
            })
    }

    pub(super) fn stamp(&self) -> KmsResult<Option<Stamp>> {
        match fs::metadata(self.e.dir.join(STORE_FILE)) {
            Ok(md) => Ok(Some(Stamp {
                ino: md.ino(),
                mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
                size: md.size(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KmsError::internal(format!("cannot stat keystore: {e}"))),
        }
    }

    pub(super) fn read_store(&self) -> KmsResult<Store> {
        let path = self.e.dir.join(STORE_FILE);
        let mut data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::default()),
            Err(e) => {
                return Err(KmsError::internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
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
        zeroize::Zeroize::zeroize(&mut data);
        store.map_err(|e| KmsError::internal(format!("{}: invalid store: {e}", path.display())))
    }

    pub(super) fn write_store(&self, store: &Store) -> KmsResult<()> {
        let mut json = serde_json::to_vec(store).map_err(|e| KmsError::internal(e.to_string()))?;
        let nonce = random_nonce();
        let aead = Backend::AwsLc.key(self.e.root.as_bytes());
        let tag = aead.seal(&nonce, STORE_AAD, &mut json);
        let mut out = Vec::with_capacity(NONCE_LEN + json.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&json);
        out.extend_from_slice(&tag);
        zeroize::Zeroize::zeroize(&mut json);
        let r = write_private_atomic(&self.e.dir, STORE_FILE, &out).map_err(|e| {
            KmsError::internal(format!(
                "cannot write keystore {}: {e}",
                self.e.dir.display()
            ))
        });
        zeroize::Zeroize::zeroize(&mut out);
        r
    }

    /// The current store, reloaded if another process replaced it.
    pub(super) fn snapshot(&self) -> KmsResult<Arc<Store>> {
        let stamp = self.stamp()?;
        {
            let c = self.e.cache.read();
            if c.stamp == stamp && (stamp.is_some() || c.store.keys.is_empty()) {
                return Ok(c.store.clone());
            }
        }
        let store = Arc::new(self.read_store()?);
        let mut c = self.e.cache.write();
        c.store = store.clone();
        c.stamp = stamp;
        Ok(store)
    }

    /// Runs `f` on the freshest store under an exclusive cross-process lock; the audit
    /// record is made durable, then the store is replaced atomically. Nothing is written
    /// if `f` fails.
    pub(super) fn mutate<R>(
        &self,
        op: &str,
        info: &mut OpInfo,
        f: impl FnOnce(&mut Store, &mut OpInfo) -> KmsResult<R>,
    ) -> KmsResult<R> {
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.e.dir.join(LOCK_FILE))
            .map_err(|e| KmsError::internal(format!("cannot open keystore lock: {e}")))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| KmsError::internal(format!("cannot lock keystore: {e}")))?;
        // A store temp file exists only while its writer holds this lock: any seen now
        // was left by a writer killed mid-write.
        if let Ok(rd) = fs::read_dir(&self.e.dir) {
            let stray = format!(".{STORE_FILE}.tmp.");
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&stray) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let mut store = self.read_store()?;
        store.purge_due(now());
        let r = f(&mut store, info)?;
        self.record(op, info, None)?;
        info.recorded = true;
        store.version += 1;
        if let Some(ck) = self.e.audit.latest_checkpoint() {
            if store
                .audit_checkpoint
                .as_ref()
                .is_none_or(|(seq, _)| ck.0 > *seq)
            {
                store.audit_checkpoint = Some(ck);
            }
        }
        if let Err(e) = self.write_store(&store) {
            info.recorded = false; // run() records the failure too
            return Err(e);
        }
        let stamp = self.stamp()?;
        let mut c = self.e.cache.write();
        c.store = Arc::new(store);
        c.stamp = stamp;
        Ok(r)
    }
}
