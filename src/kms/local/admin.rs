//! Not AWS operations: due rotations and deletions, refusal records, the server's
//! principals.

use super::*;

impl LocalKms {
    /// Benchmarks only: adds `n` copies of key `like` (new ids, fresh material) in one
    /// commit, so CreateKey can be timed in a store of 100,000 keys without making them
    /// one by one.
    #[doc(hidden)]
    pub fn bench_fill(&self, like: &str, n: usize) -> KmsResult<()> {
        self.run("BenchFill", |info| {
            self.mutate("BenchFill", info, |s, _| {
                let k = s
                    .keys
                    .get(like)
                    .cloned()
                    .ok_or_else(|| messages::key_not_found(like))?;
                for _ in 0..n {
                    let mut c = k.clone();
                    c.id = uuid::Uuid::new_v4().to_string();
                    c.versions = vec![Self::new_version(&c.spec, None)];
                    c.current = 0;
                    s.keys.insert(c.id.clone(), c);
                }
                Ok(())
            })
        })
    }

    /// Every secret this keystore guards — its root key, each key version's material
    /// (AES, HMAC, private keys; pending imports too), import wrapping keys, principals'
    /// secrets and external key stores' proxy credentials — so that a test can scan a
    /// copy of the disk for them (the stolen-disk test). A library call on an opened
    /// keystore only: no command, request or log ever shows these.
    #[doc(hidden)]
    pub fn secrets_for_scan(&self) -> KmsResult<Vec<zeroize::Zeroizing<Vec<u8>>>> {
        let st = self.snapshot()?;
        let mut out = vec![zeroize::Zeroizing::new(self.e.root.as_bytes().to_vec())];
        for k in st.keys.values() {
            for v in k.versions.iter().chain(k.pending_material.iter()) {
                out.push(zeroize::Zeroizing::new(v.material.0.clone()));
            }
        }
        for i in st.imports.values() {
            out.push(zeroize::Zeroizing::new(i.private.0.clone()));
        }
        for p in st.principals.values() {
            out.push(zeroize::Zeroizing::new(p.secret.0.clone()));
        }
        for c in st.custom_key_stores.values() {
            out.push(zeroize::Zeroizing::new(c.secret.0.clone()));
        }
        out.retain(|s| !s.is_empty());
        Ok(out)
    }

    /// A lifecycle change of one key: resolve + authorize + change, audited.
    pub(super) fn change_key<R>(
        &self,
        op: &str,
        key: &str,
        f: impl FnOnce(&LocalKms, &mut KeyRecord) -> KmsResult<R>,
    ) -> KmsResult<R> {
        self.change_key_with(op, key, |me, _, k| f(me, k))
    }

    /// `change_key`, also handing `f` the store as it was before the change (the key's
    /// replicas in other Regions).
    pub(super) fn change_key_in<R>(
        &self,
        op: &str,
        key: &str,
        f: impl FnOnce(&LocalKms, &Store, &mut KeyRecord) -> KmsResult<R>,
    ) -> KmsResult<R> {
        self.run(op, |info| {
            self.mutate(op, info, |s, info| {
                let id = self
                    .authorized(s, key, &format!("kms:{op}"), None, info)?
                    .id
                    .clone();
                let mut k = s.keys.get(&id).expect("resolved").clone();
                let r = f(self, s, &mut k)?;
                info.key(self.arn(&k), k.versions.get(k.current as usize));
                *s.keys.get_mut(&id).expect("resolved") = k;
                Ok(r)
            })
        })
    }

    /// `change_key`, also handing `f` the other Regions holding a replica of the key.
    pub(super) fn change_key_with<R>(
        &self,
        op: &str,
        key: &str,
        f: impl FnOnce(&LocalKms, &[String], &mut KeyRecord) -> KmsResult<R>,
    ) -> KmsResult<R> {
        self.run(op, |info| {
            self.mutate(op, info, |s, info| {
                let id = self
                    .authorized(s, key, &format!("kms:{op}"), None, info)?
                    .id
                    .clone();
                let replicas = self.replica_regions(s, &id);
                let k = s.keys.get_mut(&id).expect("resolved");
                let r = f(self, &replicas, k)?;
                info.key(self.arn(k), k.versions.get(k.current as usize));
                Ok(r)
            })
        })
    }

    /// Adds a version to every key whose automatic rotation is due. Runs under the store
    /// lock, so two processes checking at once rotate a key once. Returns rotated ARNs.
    pub fn rotate_due_keys(&self) -> KmsResult<Vec<String>> {
        let at = now();
        let due = |k: &KeyRecord| {
            k.rotation_enabled
                && !self.is_replica(k)
                && k.state == KeyState::Enabled
                && k.next_rotation.is_some_and(|n| n <= at)
        };
        let snap = self.snapshot()?;
        if snap.keys.values().any(|k| Store::is_destroyed(k, at)) {
            // Deletion dates that passed: the material goes now, not at the next write.
            for arn in self.purge_due_keys()? {
                tracing::info!("key {arn} deleted (its deletion date passed); material destroyed");
            }
        }
        if !snap.keys.values().any(due) {
            return Ok(vec![]);
        }
        self.run("RotateDueKeys", |info| {
            self.mutate("RotateDueKeys", info, |s, _| {
                let mut out = vec![];
                s.keys.update_where(due, |k| {
                    k.versions
                        .push(Self::new_version(&k.spec, Some("AUTOMATIC")));
                    k.current = (k.versions.len() - 1) as u32;
                    let days = k.rotation_period_days.unwrap_or(365) as f64;
                    k.next_rotation = Some(at + days * 86400.0);
                    out.push(self.arn(k));
                });
                Ok(out)
            })
        })
    }

    /// Destroys the material of every key whose deletion date has passed (any write does
    /// that too; this is for quiet keystores: the server and mounts call it on their
    /// maintenance tick, and `kmsfs key purge-due` from cron or a timer). Returns their ARNs.
    pub fn purge_due_keys(&self) -> KmsResult<Vec<String>> {
        let at = now();
        let gone: Vec<String> = self
            .snapshot()?
            .keys
            .values()
            .filter(|k| Store::is_destroyed(k, at))
            .map(|k| self.arn(k))
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        self.run("PurgeDueKeys", |info| {
            self.mutate("PurgeDueKeys", info, |s, _| {
                s.purge_due(now());
                Ok(())
            })
        })?;
        Ok(gone)
    }

    /// Audits a request refused before it reached an operation (authentication failure,
    /// unknown operation, malformed body).
    pub fn record_refusal(&self, op: &str, key: Option<String>, e: &KmsError) -> KmsResult<()> {
        let info = OpInfo {
            key_arn: key,
            ..Default::default()
        };
        self.record(if op.is_empty() { "-" } else { op }, &info, Some(e))
    }

    /// One record standing for `count` refusals of unauthenticated requests from this
    /// caller's source that were not recorded one by one (rate limit of the server).
    pub fn record_refusals_suppressed(&self, count: u64, window_secs: u64) -> KmsResult<()> {
        let mut ctx = EncryptionContext::new();
        ctx.insert("count".into(), count.to_string());
        ctx.insert("window_seconds".into(), window_secs.to_string());
        let info = OpInfo {
            context: Some(ctx),
            ..Default::default()
        };
        let e = KmsError::new(
            ErrorCode::AccessDeniedException,
            "refusals beyond the per-source rate limit",
        );
        self.record("RefusalsSuppressed", &info, Some(&e))
    }

    /// The principal name and secret for an access key id, if it exists and is enabled.
    /// An unreadable store is an error (a fault the client retries), never "unknown key".
    pub fn principal_secret(&self, access_key_id: &str) -> KmsResult<Option<(Caller, Secret)>> {
        let s = self.snapshot()?;
        Ok(s.principals
            .iter()
            .find(|(_, p)| p.enabled && p.access_key_id == access_key_id)
            .map(|(n, p)| {
                let who = Caller {
                    principal: n.clone(),
                    source: String::new(),
                    region: None,
                    account: p.account.clone(),
                };
                (who, p.secret.clone())
            }))
    }

    /// Creates a principal for remote callers; returns (access key id, secret). The secret
    /// is shown once by the CLI and otherwise only kept sealed in the keystore.
    /// `account`: the principal's AWS account (12 digits) when it is not this KMS's own:
    /// its keys and aliases are that account's, and another account's keys answer it only
    /// by key ARN, for the operations AWS allows across accounts, when their key policy
    /// names it or its account.
    pub fn create_principal(
        &self,
        name: &str,
        account: Option<&str>,
    ) -> KmsResult<(String, Secret)> {
        self.run("CreatePrincipal", |info| {
            if let Some(a) = account {
                if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(KmsError::validation(format!(
                        "account {a:?} must be 12 digits"
                    )));
                }
            }
            // Kept as given: the home account is the server's `--account-id`, which this
            // command (run on the keystore, not the server) does not know.
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_.@-".contains(&c))
            {
                return Err(KmsError::validation(format!(
                    "principal name {name:?} must be 1-64 characters of a-zA-Z0-9_.@-"
                )));
            }
            info.context = Some(
                [("principal".to_string(), name.to_string())]
                    .into_iter()
                    .collect(),
            );
            const AKID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
            let akid: String = "AKKF"
                .chars()
                .chain(
                    random_bytes::<16>()
                        .iter()
                        .map(|b| AKID_CHARS[(*b % 32) as usize] as char),
                )
                .collect();
            let secret = Secret(
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD_NO_PAD,
                    random_bytes::<30>(),
                )
                .into_bytes(),
            );
            self.mutate("CreatePrincipal", info, |s, _| {
                if s.principals.contains_key(name) {
                    return Err(KmsError::new(
                        ErrorCode::AlreadyExistsException,
                        format!("principal {name} already exists"),
                    ));
                }
                s.principals.insert(
                    name.to_string(),
                    PrincipalRecord {
                        access_key_id: akid.clone(),
                        secret: secret.clone(),
                        created: now(),
                        enabled: true,
                        account: account.map(str::to_string),
                    },
                );
                Ok(())
            })?;
            Ok((akid, secret))
        })
    }

    /// The server's principals (never their secrets).
    pub fn list_principals(&self) -> KmsResult<Vec<PrincipalInfo>> {
        let s = self.snapshot()?;
        Ok(s.principals
            .iter()
            .map(|(n, p)| PrincipalInfo {
                name: n.clone(),
                access_key_id: p.access_key_id.clone(),
                created: p.created,
                enabled: p.enabled,
                account: p.account.clone().unwrap_or_else(|| self.e.account.clone()),
            })
            .collect())
    }

    /// Enables, disables (`Some(bool)`) or deletes (`None`) a principal.
    pub fn change_principal(&self, name: &str, enabled: Option<bool>) -> KmsResult<()> {
        let op = match enabled {
            Some(true) => "EnablePrincipal",
            Some(false) => "DisablePrincipal",
            None => "DeletePrincipal",
        };
        self.run(op, |info| {
            info.context = Some(
                [("principal".to_string(), name.to_string())]
                    .into_iter()
                    .collect(),
            );
            self.mutate(op, info, |s, _| {
                let p = s.principals.get_mut(name).ok_or_else(|| {
                    KmsError::not_found(format!("principal {name} does not exist"))
                })?;
                match enabled {
                    Some(e) => p.enabled = e,
                    None => {
                        s.principals.remove(name);
                    }
                }
                Ok(())
            })
        })
    }

    /// Test hook: moves a key's next automatic rotation to `at` (epoch seconds).
    #[doc(hidden)]
    pub fn set_next_rotation_for_test(&self, key: &str, at: f64) -> KmsResult<()> {
        let mut info = OpInfo::default();
        self.mutate("TestSetNextRotation", &mut info, |s, _| {
            let id = self.resolve(s, key)?;
            s.keys.get_mut(&id).unwrap().next_rotation = Some(at);
            Ok(())
        })
    }
}
