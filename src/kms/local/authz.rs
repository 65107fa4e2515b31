//! Resolving key ids, ARNs and aliases; key policies; key states.

use super::*;
use crate::kms::policy::{Decision, Who};

impl LocalKms {
    /// Resolves a key id, key ARN, alias name or alias ARN to a key id of the caller's
    /// account.
    pub(super) fn resolve(&self, store: &Store, key: &str) -> KmsResult<String> {
        self.resolve_as(store, key, false)
    }

    /// Resolves `key` to a key id. A key id, `key/ID` or alias name means the caller's
    /// account; a key ARN or alias ARN names its account, which may be another only when
    /// `across` (the operation is one AWS allows on another account's key) — AWS's rule:
    /// another account's key is reached by ARN, never by its id or alias name.
    pub(super) fn resolve_as(&self, store: &Store, key: &str, across: bool) -> KmsResult<String> {
        let mine = self.caller_account();
        let (name, account) = if let Some(rest) = key.strip_prefix("arn:aws:kms:") {
            // arn:aws:kms:REGION:ACCOUNT:key/ID or :alias/NAME
            let mut parts = rest.splitn(3, ':');
            let (region, account, res) = (parts.next(), parts.next(), parts.next());
            let res = res.ok_or_else(|| messages::invalid_key_id(key))?;
            let (region, account) = (region.unwrap_or(""), account.unwrap_or(""));
            // The embedded KMS is not regional and has one account; `local` ARNs of the
            // default account are what it wrote into trees of the same keystore.
            let account =
                if !self.e.regional || (region == LOCAL_REGION && account == DEFAULT_ACCOUNT) {
                    mine
                } else if region == self.e.region {
                    account
                } else {
                    return Err(messages::key_not_found(key));
                };
            if account != mine && !across {
                return Err(messages::key_not_found(key));
            }
            (res, account)
        } else {
            (key, mine)
        };
        let id = if name.starts_with("alias/") {
            self.alias_target_in(store, account, name)?
        } else {
            let bare = name.strip_prefix("key/").unwrap_or(name);
            if uuid::Uuid::parse_str(bare).is_err() && !is_mrk_id(bare) {
                // AWS's wording for what is neither a key id, an ARN nor an alias.
                return Err(messages::invalid_key_id(key));
            }
            bare.to_string()
        };
        self.live_key(store, id, account)
    }

    /// `id` if it is a live key of `account` this view sees (NotFoundException otherwise).
    fn live_key(&self, store: &Store, id: String, account: &str) -> KmsResult<String> {
        match store.keys.get(&id) {
            Some(k)
                if !Store::is_destroyed(k, now())
                    && self.foreign_region().is_none()
                    && self.owner(k) == account =>
            {
                Ok(id)
            }
            _ => Err(messages::key_not_found(&self.arn_as_seen(account, &id))),
        }
    }

    /// Does `action` belong to an operation AWS allows on another account's key?
    fn across(action: &str) -> bool {
        Op::from_action(action).is_some_and(Op::cross_account)
    }

    /// Key `id` of `account`'s ARN in the region the caller signed for (for "does not
    /// exist" messages).
    pub(super) fn arn_as_seen(&self, account: &str, id: &str) -> String {
        let region = self.foreign_region().unwrap_or(&self.e.region);
        format!("arn:aws:kms:{region}:{account}:key/{id}")
    }

    /// Resolves `key`, records it in `info`, and checks the key policy for `action`.
    pub(super) fn authorized<'s>(
        &self,
        store: &'s Store,
        key: &str,
        action: &str,
        ctx: Option<&EncryptionContext>,
        info: &mut OpInfo,
    ) -> KmsResult<&'s KeyRecord> {
        check_context(ctx)?;
        let id = self.resolve_as(store, key, Self::across(action))?;
        self.allowed(store, id, action, ctx, info)
    }

    /// `authorized` for the key a ciphertext blob names by its id: the key of whichever
    /// account holds it, when `action` may reach another account's key (the blob is the
    /// ARN's equivalent), else only the caller's own.
    pub(super) fn authorized_blob_key<'s>(
        &self,
        store: &'s Store,
        id: &str,
        action: &str,
        ctx: Option<&EncryptionContext>,
        info: &mut OpInfo,
    ) -> KmsResult<&'s KeyRecord> {
        check_context(ctx)?;
        let mine = self.caller_account();
        let account = match store.keys.get(id) {
            Some(k) if Self::across(action) => self.owner(k),
            _ => mine,
        };
        let id = self.live_key(store, id.to_string(), account)?;
        self.allowed(store, id, action, ctx, info)
    }

    /// Records key `id` in `info` and checks its policy and grants for `action`.
    fn allowed<'s>(
        &self,
        store: &'s Store,
        id: String,
        action: &str,
        ctx: Option<&EncryptionContext>,
        info: &mut OpInfo,
    ) -> KmsResult<&'s KeyRecord> {
        let k = &store.keys[&id];
        info.key(self.arn(k), k.versions.get(k.current as usize));
        let allowed = match self.policy_of(k)?.decision(self.who(), action, ctx) {
            Decision::Allow => true,
            Decision::Deny => false,
            Decision::NotMentioned => self.granted(store, &id, action, ctx),
        };
        if !allowed {
            return Err(KmsError::new(
                ErrorCode::AccessDeniedException,
                format!(
                    "User: {} is not authorized to perform: {action} on resource: {} because no key policy statement or grant allows it",
                    self.caller.principal,
                    self.arn(k)
                ),
            ));
        }
        Ok(k)
    }

    /// The caller, as key policies and grants name principals.
    pub(super) fn who(&self) -> Who<'_> {
        Who {
            name: &self.caller.principal,
            account: self.caller_account(),
        }
    }

    pub(super) fn policy_of(&self, k: &KeyRecord) -> KmsResult<Arc<Policy>> {
        let text = match &k.policy {
            Some(p) => p.clone(),
            None => default_policy(DEFAULT_PRINCIPAL),
        };
        let mut cache = self.e.policies.lock();
        if let Some((t, p)) = cache.get(&k.id) {
            if *t == text {
                return Ok(p.clone());
            }
        }
        let p = Arc::new(Policy::parse(&text).map_err(|e| {
            KmsError::internal(format!(
                "stored policy of {} is invalid: {}",
                self.arn(k),
                e.message
            ))
        })?);
        cache.insert(k.id.clone(), (text, p.clone()));
        Ok(p)
    }

    /// A new policy must still let its author manage the key (AWS's lockout safety check).
    pub(super) fn check_lockout(&self, policy: &Policy) -> KmsResult<()> {
        if !policy.allows(self.who(), Op::PutKeyPolicy.action(), None) {
            return Err(KmsError::new(
                ErrorCode::MalformedPolicyDocumentException,
                format!(
                    "The new key policy will not allow you ({}) to update the key policy in the future (lockout safety check)",
                    self.caller.principal
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn usable<'a>(&self, k: &'a KeyRecord) -> KmsResult<&'a KeyRecord> {
        match self.state_of(k) {
            KeyState::Enabled => Ok(k),
            KeyState::Disabled => Err(messages::disabled(&self.arn(k))),
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => {
                Err(messages::pending_deletion(&self.arn(k)))
            }
            KeyState::PendingImport => Err(messages::pending_import(&self.arn(k))),
        }
    }

    /// A key's state now: imported material past its ValidTo makes it PendingImport even
    /// before a writer removes the material.
    pub(super) fn state_of(&self, k: &KeyRecord) -> KeyState {
        match k.state {
            KeyState::Enabled | KeyState::Disabled if Store::material_expired(k, now()) => {
                KeyState::PendingImport
            }
            s => s,
        }
    }

    pub(super) fn not_pending_deletion(&self, k: &KeyRecord) -> KmsResult<()> {
        if matches!(
            k.state,
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion
        ) {
            return Err(messages::pending_deletion(&self.arn(k)));
        }
        Ok(())
    }

    pub(super) fn metadata(&self, k: &KeyRecord) -> KeyMetadata {
        KeyMetadata {
            aws_account_id: self.owner(k).to_string(),
            key_id: k.id.clone(),
            arn: self.arn(k),
            creation_date: k.created,
            enabled: self.state_of(k) == KeyState::Enabled,
            description: k.description.clone(),
            key_usage: k.usage.clone(),
            key_state: self.state_of(k).name().into(),
            deletion_date: k.deletion_date,
            pending_deletion_window_in_days: k.pending_window_days,
            origin: k.origin.clone(),
            key_manager: "CUSTOMER".into(),
            key_spec: k.spec.clone(),
            customer_master_key_spec: k.spec.clone(),
            encryption_algorithms: encryption_algorithms(&k.spec, &k.usage),
            mac_algorithms: mac_algorithms(&k.spec),
            signing_algorithms: signing_algorithms(&k.spec, &k.usage),
            key_agreement_algorithms: key_agreement_algorithms(&k.usage),
            encapsulation_algorithms: encapsulation_algorithms(&k.usage),
            current_key_material_id: k
                .versions
                .get(k.current as usize)
                .map(|v| v.material_id.clone()),
            multi_region: k.primary_region.is_some(),
            multi_region_configuration: None,
            expiration_model: (k.origin == EXTERNAL && !k.versions.is_empty()).then(|| {
                if k.valid_to.is_some() {
                    "KEY_MATERIAL_EXPIRES".into()
                } else {
                    "KEY_MATERIAL_DOES_NOT_EXPIRE".into()
                }
            }),
            valid_to: k.valid_to,
            custom_key_store_id: k.custom_key_store_id.clone(),
            xks_key_configuration: k
                .xks_key_id
                .as_ref()
                .map(|id| XksKeyConfiguration { id: id.clone() }),
        }
    }
}

pub(super) fn check_alias_name(name: &str) -> KmsResult<()> {
    let rest = name.strip_prefix("alias/").ok_or_else(|| {
        KmsError::validation(format!(
            "Alias must start with the prefix \"alias/\": {name:?}"
        ))
    })?;
    if rest.is_empty()
        || rest.len() > 250
        || !rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_-".contains(&c))
    {
        return Err(KmsError::validation(format!(
            "Alias name {name:?} must be 1-256 characters of a-zA-Z0-9/_-"
        )));
    }
    if rest.starts_with("aws/") {
        return Err(KmsError::new(
            ErrorCode::InvalidAliasNameException,
            format!("{name} is reserved for AWS managed keys"),
        ));
    }
    Ok(())
}

/// The most an encryption context may hold, keys and values together (as AWS caps it):
/// a context is AAD, stored in every audit record and matched by policies, so it is
/// bounded before any of that.
pub(crate) const MAX_CONTEXT_BYTES: usize = 8192;

/// Refuses an encryption context larger than `MAX_CONTEXT_BYTES`.
pub(crate) fn check_context(ctx: Option<&EncryptionContext>) -> KmsResult<()> {
    let n = context_bytes(ctx);
    if n > MAX_CONTEXT_BYTES {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at 'encryptionContext' failed to satisfy constraint: the total size of its keys and values must be at most {MAX_CONTEXT_BYTES} bytes (it is {n})"
        )));
    }
    Ok(())
}

/// The bytes of an encryption context's keys and values.
pub(crate) fn context_bytes(ctx: Option<&EncryptionContext>) -> usize {
    ctx.map_or(0, |c| c.iter().map(|(k, v)| k.len() + v.len()).sum())
}
