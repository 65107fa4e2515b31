//! The sealed-store transaction: read (cached by inode), mutate under the file lock,
//! write atomically; every operation runs and is audited through `run`.

use super::*;

impl LocalKms {
    /// The key's ARN: this view's Region, the key's account.
    pub(super) fn arn(&self, k: &KeyRecord) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{}",
            self.e.region,
            self.owner(k),
            k.id
        )
    }

    /// The ARN of key `id` of `s` (in the caller's account if `s` has no such key).
    pub(super) fn arn_id(&self, s: &Store, id: &str) -> String {
        match s.keys.get(id) {
            Some(k) => self.arn(k),
            None => format!(
                "arn:aws:kms:{}:{}:key/{id}",
                self.e.region,
                self.caller_account()
            ),
        }
    }

    /// The account that owns `k`.
    pub(super) fn owner<'k>(&'k self, k: &'k KeyRecord) -> &'k str {
        k.account.as_deref().unwrap_or(&self.e.account)
    }

    /// The caller's account.
    pub(super) fn caller_account(&self) -> &str {
        self.caller.account.as_deref().unwrap_or(&self.e.account)
    }

    /// The ARN of the caller's alias `name`.
    pub(super) fn alias_arn(&self, name: &str) -> String {
        self.alias_arn_in(self.caller_account(), name)
    }

    /// The ARN of alias `name` of `account`.
    pub(super) fn alias_arn_in(&self, account: &str, name: &str) -> String {
        format!("arn:aws:kms:{}:{account}:{name}", self.e.region)
    }

    /// The aliases table's row for alias `name` of `account`: the name itself for this
    /// KMS's own account, `ACCOUNT/alias/NAME` for another (alias names start with
    /// `alias/`, so the two never meet).
    pub(super) fn alias_row(&self, account: &str, name: &str) -> String {
        if account == self.e.account {
            name.to_string()
        } else {
            format!("{account}/{name}")
        }
    }

    /// The account and alias name of an aliases-table row.
    pub(super) fn alias_of_row<'r>(&'r self, row: &'r str) -> (&'r str, &'r str) {
        match row.split_once('/') {
            Some((account, name)) if !row.starts_with("alias/") => (account, name),
            _ => (&self.e.account, row),
        }
    }

    /// The key id an existing alias points at (NotFoundException otherwise).
    pub(super) fn alias_target(&self, store: &Store, name: &str) -> KmsResult<String> {
        self.alias_target_in(store, self.caller_account(), name)
    }

    /// The key id alias `name` of `account` points at (NotFoundException otherwise).
    pub(super) fn alias_target_in(
        &self,
        store: &Store,
        account: &str,
        name: &str,
    ) -> KmsResult<String> {
        store
            .aliases
            .get(&self.alias_row(account, name))
            .filter(|_| self.foreign_region().is_none())
            .map(|a| a.target.clone())
            .ok_or_else(|| messages::alias_not_found(&self.alias_arn_in(account, name)))
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

    /// The current store, caught up with what other processes and servers committed.
    pub(super) fn snapshot(&self) -> KmsResult<Arc<Store>> {
        let gen = self.e.store.generation().map_err(store_error)?;
        let base = {
            let c = self.e.cache.read();
            if c.gen == gen {
                return Ok(c.store.clone());
            }
            c.clone()
        };
        let (now, rows) = self.e.store.changes_since(base.gen).map_err(store_error)?;
        let mut s = (*base.store).clone();
        self.load_rows(&mut s, rows)?;
        let s = Arc::new(s);
        let mut c = self.e.cache.write();
        if now > c.gen {
            c.store = s.clone();
            c.gen = now;
        }
        Ok(s)
    }

    /// Applies rows read from the store to `s` (as loaded, not as changes).
    pub(super) fn load_rows(&self, s: &mut Store, rows: Vec<Row>) -> KmsResult<()> {
        fn put<V: Clone + serde::de::DeserializeOwned>(
            t: &mut Table<V>,
            id: String,
            row: &Row,
            plain: Option<&[u8]>,
            scoped: bool,
        ) -> KmsResult<()> {
            let v = match plain {
                Some(p) => Some(serde_json::from_slice(p).map_err(|e| {
                    KmsError::internal(format!("store row {}/{}: {e}", row.kind, row.id))
                })?),
                None => None,
            };
            t.load_in(id, v, scoped);
            Ok(())
        }
        let lower_due = |s: &Store, id: &str| {
            if let Some(d) = s.keys.get(id).and_then(Store::due) {
                let mut due = self.e.next_due.lock();
                *due = due.min(d);
            }
        };
        for row in rows {
            let plain = match &row.data {
                Some(d) => Some(
                    self.e
                        .rows
                        .open(&row.kind, &row.id, d)
                        .map_err(store_error)?,
                ),
                None => None,
            };
            let p = plain.as_deref().map(Vec::as_slice);
            // `KIND@REGION`: a row of one Region's scope. This view's Region is read into
            // the tables; other Regions' keys are kept as replicas (multi-Region keys).
            let (kind, scoped) = match row.kind.split_once('@') {
                None => (row.kind.as_str(), false),
                Some((k, r)) if Some(r) == s.scope.as_deref() => (k, true),
                Some((KIND_KEY, r)) if is_mrk_id(&row.id) => {
                    let id = format!("{r}/{}", row.id);
                    put(&mut s.replicas, id, &row, p, false)?;
                    continue;
                }
                Some(_) => continue,
            };
            let id = row.id.clone();
            match kind {
                KIND_KEY => {
                    put(&mut s.keys, id, &row, p, scoped)?;
                    lower_due(s, &row.id);
                }
                KIND_ALIAS => put(&mut s.aliases, id, &row, p, scoped)?,
                KIND_PRINCIPAL => put(&mut s.principals, id, &row, p, scoped)?,
                KIND_GRANT => put(&mut s.grants, id, &row, p, scoped)?,
                KIND_IMPORT => put(&mut s.imports, id, &row, p, scoped)?,
                KIND_CKS => put(&mut s.custom_key_stores, id, &row, p, scoped)?,
                KIND_META if row.id == META_CHECKPOINT => {
                    s.audit_checkpoint = match p {
                        Some(p) => serde_json::from_slice(p)
                            .map_err(|e| KmsError::internal(format!("store row meta/{}: {e}", row.id)))?,
                        None => None,
                    }
                }
                KIND_META => {}
                k => {
                    return Err(KmsError::internal(format!(
                        "store {} holds rows of kind {k:?}, which this kmsfs does not know (upgrade kmsfs)",
                        self.e.store.describe()
                    )))
                }
            }
        }
        Ok(())
    }

    /// The rows a change touched, sealed, ready to commit.
    pub(super) fn dirty_rows(&self, s: &mut Store) -> KmsResult<Vec<Row>> {
        fn take<V: Clone + Serialize>(
            seal: &RowSeal,
            kind: &str,
            scope: Option<&str>,
            t: &mut Table<V>,
            out: &mut Vec<Row>,
        ) -> KmsResult<()> {
            for id in t.take_dirty() {
                let kind = match scope {
                    Some(r) if t.is_scoped(&id) => format!("{kind}@{r}"),
                    _ => kind.to_string(),
                };
                let data = match t.get(&id) {
                    Some(v) => {
                        let json = zeroize::Zeroizing::new(
                            serde_json::to_vec(v).map_err(|e| KmsError::internal(e.to_string()))?,
                        );
                        Some(seal.seal(&kind, &id, &json))
                    }
                    None => None,
                };
                t.forget_scope(&id);
                out.push(Row { kind, id, data });
            }
            Ok(())
        }
        self.sync_families(s);
        let seal = &self.e.rows;
        let scope = s.scope.clone();
        let scope = scope.as_deref();
        let mut out = vec![];
        // other Regions' replicas: `key@REGION`
        for rid in s.replicas.take_dirty() {
            let Some((r, id)) = rid.split_once('/') else {
                continue;
            };
            let kind = format!("{KIND_KEY}@{r}");
            let data = match s.replicas.get(&rid) {
                Some(v) => {
                    let json = zeroize::Zeroizing::new(
                        serde_json::to_vec(v).map_err(|e| KmsError::internal(e.to_string()))?,
                    );
                    Some(seal.seal(&kind, id, &json))
                }
                None => None,
            };
            out.push(Row {
                kind,
                id: id.to_string(),
                data,
            });
        }
        take(seal, KIND_KEY, scope, &mut s.keys, &mut out)?;
        for row in out.iter().filter(|r| r.kind.starts_with(KIND_KEY)) {
            if let Some(d) = s.keys.get(&row.id).and_then(Store::due) {
                let mut due = self.e.next_due.lock();
                *due = due.min(d);
            }
        }
        take(seal, KIND_ALIAS, scope, &mut s.aliases, &mut out)?;
        take(seal, KIND_PRINCIPAL, scope, &mut s.principals, &mut out)?;
        take(seal, KIND_GRANT, scope, &mut s.grants, &mut out)?;
        take(seal, KIND_IMPORT, scope, &mut s.imports, &mut out)?;
        take(seal, KIND_CKS, scope, &mut s.custom_key_stores, &mut out)?;
        Ok(out)
    }

    /// The meta row vouching for an audit checkpoint.
    pub(super) fn checkpoint_row(&self, ck: &(u64, String)) -> KmsResult<Row> {
        let json = serde_json::to_vec(ck).map_err(|e| KmsError::internal(e.to_string()))?;
        Ok(Row {
            kind: KIND_META.into(),
            id: META_CHECKPOINT.into(),
            data: Some(self.e.rows.seal(KIND_META, META_CHECKPOINT, &json)),
        })
    }

    /// Runs `f` on the freshest store under the store's write lock (one writer at a time,
    /// across processes and servers); the audit record is made durable, then the rows `f`
    /// touched are committed in one transaction. Nothing is written if `f` fails.
    pub(super) fn mutate<R>(
        &self,
        op: &str,
        info: &mut OpInfo,
        f: impl FnOnce(&mut Store, &mut OpInfo) -> KmsResult<R>,
    ) -> KmsResult<R> {
        let base = self.e.cache.read().clone();
        let mut f = Some(f);
        let mut result: Option<KmsResult<R>> = None;
        let mut changed: Option<Store> = None;
        let outcome = self.e.store.write(base.gen, &mut |_now, rows| {
            let mut s = (*base.store).clone();
            if let Err(e) = self.load_rows(&mut s, rows) {
                result = Some(Err(e));
                return None;
            }
            let at = now();
            {
                let mut due = self.e.next_due.lock();
                if at >= *due {
                    *due = s.purge_due(at);
                }
            }
            let f = f.take().expect("decide runs once");
            let r = match f(&mut s, info) {
                Ok(r) => r,
                Err(e) => {
                    result = Some(Err(e));
                    return None;
                }
            };
            let mut rows = match self.dirty_rows(&mut s) {
                Ok(rows) => rows,
                Err(e) => {
                    result = Some(Err(e));
                    return None;
                }
            };
            if let Some(ck) = self.e.audit.latest_checkpoint() {
                if s.audit_checkpoint
                    .as_ref()
                    .is_none_or(|(seq, _)| ck.0 > *seq)
                {
                    match self.checkpoint_row(&ck) {
                        Ok(row) => rows.push(row),
                        Err(e) => {
                            result = Some(Err(e));
                            return None;
                        }
                    }
                    s.audit_checkpoint = Some(ck);
                }
            }
            // Last before the commit: the record is durable before anything is written,
            // and nothing can fail between them but the commit (recorded then by run()).
            if let Err(e) = self.record(op, info, None) {
                result = Some(Err(e));
                return None;
            }
            info.recorded = true;
            result = Some(Ok(r));
            changed = Some(s);
            Some(rows)
        });
        match outcome {
            Err(e) => {
                info.recorded = false; // run() records the failure too
                Err(store_error(e))
            }
            Ok(None) => {
                result.unwrap_or_else(|| Err(KmsError::internal("the store write did not run")))
            }
            Ok(Some(gen)) => {
                if let Some(s) = changed {
                    let mut c = self.e.cache.write();
                    if gen > c.gen {
                        c.store = Arc::new(s);
                        c.gen = gen;
                    }
                }
                result.unwrap_or_else(|| Err(KmsError::internal("the store write did not run")))
            }
        }
    }
}

/// A store that cannot be read or written fails the operation (500, like AWS's
/// KMSInternalException), naming the store.
pub(super) fn store_error(e: crate::kms::store::StoreError) -> KmsError {
    KmsError::internal(e.0)
}

pub(super) const KIND_KEY: &str = "key";
pub(super) const KIND_ALIAS: &str = "alias";
pub(super) const KIND_PRINCIPAL: &str = "principal";
pub(super) const KIND_GRANT: &str = "grant";
pub(super) const KIND_IMPORT: &str = "import";
pub(super) const KIND_CKS: &str = "custom-key-store";
pub(super) const KIND_META: &str = "meta";
pub(super) const META_CHECKPOINT: &str = "audit-checkpoint";
