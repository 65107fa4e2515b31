//! Resource quotas per principal (AWS's resource quotas are per account; here a server's
//! principals share one account, so each gets its own): keys and aliases it created,
//! grants it issued, grants on one key. Beyond: `LimitExceededException`. The keystore's
//! own host (the local caller) is not limited. Tags are limited per key (50) elsewhere.

use std::sync::OnceLock;

use super::*;

/// The quotas (`kms serve --quotas keys=N,aliases=N,grants=N,grants-per-key=N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Keys one principal created that still exist (PendingDeletion counts, as in AWS).
    pub keys: usize,
    /// Aliases one principal may have created.
    pub aliases: usize,
    /// Grants one principal may have issued.
    pub grants: usize,
    /// Grants on one key (AWS: 50,000).
    pub grants_per_key: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            keys: 10_000,
            aliases: 10_000,
            grants: 10_000,
            grants_per_key: 50_000,
        }
    }
}

impl Quotas {
    /// Parses `keys=N,aliases=N,grants=N,grants-per-key=N` (any subset; others default).
    pub fn parse(s: &str) -> crate::Result<Quotas> {
        let mut q = Quotas::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| crate::error::err!("quota {part:?}: write NAME=N"))?;
            let n: usize = v
                .parse()
                .map_err(|_| crate::error::err!("quota {part:?}: N must be a number"))?;
            match k {
                "keys" => q.keys = n,
                "aliases" => q.aliases = n,
                "grants" => q.grants = n,
                "grants-per-key" => q.grants_per_key = n,
                _ => crate::error::fail!(
                    "unknown quota {k:?}: keys, aliases, grants, grants-per-key"
                ),
            }
        }
        Ok(q)
    }
}

static QUOTAS: OnceLock<Quotas> = OnceLock::new();

/// Sets this process's quotas (once, at server start).
pub fn set_quotas(q: Quotas) {
    let _ = QUOTAS.set(q);
}

fn quotas() -> Quotas {
    QUOTAS.get().copied().unwrap_or_default()
}

fn exceeded(what: &str, n: usize) -> KmsError {
    messages::quota(what, n)
}

impl LocalKms {
    fn limited(&self) -> bool {
        !self.caller.source.starts_with("local:")
    }

    /// Before CreateKey.
    pub(super) fn check_key_quota(&self, s: &Store) -> KmsResult<()> {
        let q = quotas().keys;
        let me = Some(self.caller.principal.as_str());
        if self.limited()
            && s.keys
                .values()
                .filter(|k| k.creator.as_deref() == me)
                .count()
                >= q
        {
            return Err(exceeded("keys per principal", q));
        }
        Ok(())
    }

    /// Before CreateAlias.
    pub(super) fn check_alias_quota(&self, s: &Store) -> KmsResult<()> {
        let q = quotas().aliases;
        let me = Some(self.caller.principal.as_str());
        if self.limited()
            && s.aliases
                .values()
                .filter(|a| a.creator.as_deref() == me)
                .count()
                >= q
        {
            return Err(exceeded("aliases per principal", q));
        }
        Ok(())
    }

    /// Before CreateGrant on `key_id`.
    pub(super) fn check_grant_quota(&self, s: &Store, key_id: &str) -> KmsResult<()> {
        let q = quotas();
        if s.grants.values().filter(|g| g.key_id == key_id).count() >= q.grants_per_key {
            return Err(exceeded("grants per key", q.grants_per_key));
        }
        let me = self.caller.principal.as_str();
        if self.limited() && s.grants.values().filter(|g| g.issuer == me).count() >= q.grants {
            return Err(exceeded("grants per principal", q.grants));
        }
        Ok(())
    }
}
