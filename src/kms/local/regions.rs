//! Multi-Region keys: ReplicateKey, UpdatePrimaryRegion, DescribeKey's
//! MultiRegionConfiguration, and keeping the shared properties of a key family equal.
//!
//! A multi-Region key (`mrk-` and 32 hex digits) is one row per Region, in that Region's
//! scope of a store several Regions' servers share (`kms::store`). The rows share the
//! key id, the material (every version), the key spec, usage and origin, and the rotation
//! schedule; each Region has its own policy, grants, aliases, tags, description, enabled
//! state and deletion. Only the primary's Region changes shared properties; every change
//! of the primary is copied to its replicas in the same transaction, so a ciphertext made
//! in one Region decrypts in another with no cross-Region call.

use super::*;

/// The prefix of multi-Region key ids.
pub(super) const MRK_PREFIX: &str = "mrk-";

/// Is `id` a multi-Region key id (`mrk-` and 32 lowercase hex digits)?
pub(super) fn is_mrk_id(id: &str) -> bool {
    id.strip_prefix(MRK_PREFIX).is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A new multi-Region key id.
pub(super) fn new_mrk_id() -> String {
    format!("{MRK_PREFIX}{}", hex::encode(random_bytes::<16>()))
}

/// A replica of a key with imported material gets the primary's versions (ids, digests,
/// dates) but never its material: each Region's key holds only what was imported into
/// it (ImportKeyMaterial with the same material, EXISTING_KEY_MATERIAL). Material the
/// replica imported for the primary's pending rotation becomes its version when the
/// primary rotates, and is dropped when the primary's pending material is deleted.
fn mirror_imported(p: &KeyRecord, rep: &mut KeyRecord) {
    let mut had: Vec<KeyVersion> = std::mem::take(&mut rep.versions);
    had.extend(rep.pending_material.take());
    let mut own = |id: &str| {
        had.iter_mut()
            .find(|v| v.material_id == id)
            .map(|v| std::mem::take(&mut v.material))
            .unwrap_or_default()
    };
    rep.versions = p
        .versions
        .iter()
        .map(|v| KeyVersion {
            material: own(&v.material_id),
            ..v.without_material()
        })
        .collect();
    rep.pending_material = p.pending_material.as_ref().and_then(|pv| {
        let m = own(&pv.material_id);
        (!m.0.is_empty()).then(|| KeyVersion {
            material: m,
            ..pv.without_material()
        })
    });
}

/// AWS's rule for a Region name (as `--region` checks it).
fn check_region(r: &str, field: &str) -> KmsResult<()> {
    if r.is_empty()
        || r.len() > 32
        || !r
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value '{r}' at '{field}' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([a-z]+-){{2,3}}\\d+$"
        )));
    }
    Ok(())
}

fn unsupported(m: String) -> KmsError {
    KmsError::new(ErrorCode::UnsupportedOperationException, m)
}

impl LocalKms {
    /// The ARN of key `k` (of its account) in `region`.
    pub(super) fn arn_in(&self, region: &str, k: &KeyRecord) -> String {
        format!("arn:aws:kms:{region}:{}:key/{}", self.owner(k), k.id)
    }

    /// The Regions holding a replica of `id` other than this view's, sorted.
    pub(super) fn replica_regions(&self, s: &Store, id: &str) -> Vec<String> {
        let mut v: Vec<String> = s
            .replicas
            .keys()
            .filter_map(|rid| rid.split_once('/'))
            .filter(|(_, i)| *i == id)
            .map(|(r, _)| r.to_string())
            .collect();
        v.sort();
        v
    }

    /// Whether `k` is a replica here (a multi-Region key whose primary is elsewhere).
    pub(super) fn is_replica(&self, k: &KeyRecord) -> bool {
        k.primary_region
            .as_ref()
            .is_some_and(|p| *p != self.e.region)
    }

    /// The key family `id` (multi-Region, imported material) as seen from any of its
    /// Regions: the material its primary waits to rotate to, and the Regions whose replica
    /// has not imported it yet. None when the primary waits for nothing.
    pub(super) fn family_pending(&self, s: &Store, id: &str) -> Option<(KeyVersion, Vec<String>)> {
        let here = s.keys.get(id).map(|k| (self.e.region.clone(), k));
        let there = s.replicas.iter().filter_map(|(rid, k)| {
            rid.split_once('/')
                .filter(|(_, i)| *i == id)
                .map(|(r, _)| (r.to_string(), k))
        });
        let rows: Vec<(String, &KeyRecord)> = here.into_iter().chain(there).collect();
        let primary = rows
            .iter()
            .find(|(r, k)| k.primary_region.as_ref() == Some(r))?;
        let want = primary.1.pending_material.as_ref()?.without_material();
        let lacking = rows
            .iter()
            .filter(|(r, _)| *r != primary.0)
            .filter(|(_, k)| {
                !k.pending_material
                    .as_ref()
                    .is_some_and(|p| p.material_id == want.material_id && !p.material.0.is_empty())
            })
            .map(|(r, _)| r.clone())
            .collect();
        Some((want, lacking))
    }

    /// CreateKey MultiRegion=true needs a view of one Region on a store servers of other
    /// Regions can share.
    pub(super) fn check_multi_region_create(&self, origin: Option<&str>) -> KmsResult<()> {
        if self.e.scope.is_none() {
            return Err(unsupported(
                "multi-Region keys need several Regions on one store: kmsfs kms serve --region A,B (one server), or --region R --store postgres://… (a server per Region)".into(),
            ));
        }
        match origin {
            None | Some("AWS_KMS" | EXTERNAL) => Ok(()),
            Some(o) => Err(unsupported(format!(
                "multi-Region keys cannot have Origin {o} (AWS_KMS or EXTERNAL)"
            ))),
        }
    }

    /// DescribeKey's MultiRegionConfiguration of `k` as seen from `region`.
    pub(super) fn multi_region_configuration(
        &self,
        s: &Store,
        k: &KeyRecord,
        region: &str,
    ) -> Option<MultiRegionConfiguration> {
        let primary = k.primary_region.clone()?;
        let mut regions = self.replica_regions(s, &k.id);
        if s.keys.contains_key(&k.id) {
            regions.push(self.e.region.clone());
        }
        regions.sort();
        regions.dedup();
        Some(MultiRegionConfiguration {
            multi_region_key_type: if primary == region {
                "PRIMARY"
            } else {
                "REPLICA"
            }
            .into(),
            primary_key: MultiRegionKey {
                arn: self.arn_in(&primary, k),
                region: primary.clone(),
            },
            replica_keys: regions
                .into_iter()
                .filter(|r| *r != primary)
                .map(|r| MultiRegionKey {
                    arn: self.arn_in(&r, k),
                    region: r,
                })
                .collect(),
        })
    }

    /// `metadata` with the key family (DescribeKey).
    pub(super) fn metadata_in(&self, s: &Store, k: &KeyRecord) -> KeyMetadata {
        let mut md = self.metadata(k);
        md.multi_region_configuration = self.multi_region_configuration(s, k, &self.e.region);
        md
    }

    /// Copies the shared properties of every primary changed in this write to its
    /// replicas in other Regions (same transaction).
    pub(super) fn sync_families(&self, s: &mut Store) {
        let changed: Vec<String> = s
            .keys
            .dirty_ids()
            .filter(|id| is_mrk_id(id))
            .cloned()
            .collect();
        for id in changed {
            let Some(p) = s.keys.get(&id).cloned() else {
                continue;
            };
            if p.primary_region.as_deref() != Some(self.e.region.as_str()) {
                continue;
            }
            for r in self.replica_regions(s, &id) {
                if let Some(rep) = s.replicas.get_mut(&format!("{r}/{id}")) {
                    if p.origin == EXTERNAL {
                        mirror_imported(&p, rep);
                    } else {
                        rep.versions = p.versions.clone();
                    }
                    rep.current = p.current;
                    rep.spec = p.spec.clone();
                    rep.usage = p.usage.clone();
                    rep.origin = p.origin.clone();
                    rep.rotation_enabled = p.rotation_enabled;
                    rep.rotation_period_days = p.rotation_period_days;
                    rep.next_rotation = p.next_rotation;
                    rep.primary_region = p.primary_region.clone();
                    if !has_material(rep)
                        && matches!(rep.state, KeyState::Enabled | KeyState::Disabled)
                    {
                        rep.state = KeyState::PendingImport;
                    }
                }
            }
        }
    }

    /// The Region of `k`'s primary, once `k` is checked to be a multi-Region primary key
    /// here, Enabled or Disabled (else AWS's refusals; `then` says what to do instead).
    fn primary_here(&self, k: &KeyRecord, then: &str) -> KmsResult<String> {
        let arn = self.arn(k);
        let Some(primary) = k.primary_region.clone() else {
            return Err(unsupported(format!("{arn} is not a multi-Region key")));
        };
        if primary != self.e.region {
            return Err(unsupported(format!(
                "{arn} is a replica key; {then} in {primary}"
            )));
        }
        match self.state_of(k) {
            KeyState::Enabled | KeyState::Disabled => Ok(primary),
            st => Err(KmsError::new(
                ErrorCode::KMSInvalidStateException,
                format!("{arn} is {}", st.name()),
            )),
        }
    }

    /// Refuses a change of shared properties (rotation) on a replica.
    pub(super) fn not_a_replica(&self, k: &KeyRecord) -> KmsResult<()> {
        if let Some(p) = k.primary_region.as_ref().filter(|_| self.is_replica(k)) {
            return Err(unsupported(format!(
                "{} is a multi-Region replica key: change its shared properties on its primary key in {p}",
                self.arn(k)
            )));
        }
        Ok(())
    }

    pub(super) fn do_replicate_key(
        &self,
        req: ReplicateKeyRequest,
    ) -> KmsResult<ReplicateKeyResponse> {
        let op = Op::ReplicateKey;
        self.run(op.name(), |info| {
            self.mutate(op.name(), info, |s, info| {
                let k = self
                    .authorized(s, &req.key_id, op.action(), None, info)?
                    .clone();
                let arn = self.arn(&k);
                self.primary_here(&k, "replicate its primary key")?;
                let r = req.replica_region.as_str();
                check_region(r, "replicaRegion")?;
                if r == self.e.region {
                    return Err(KmsError::validation(format!(
                        "ReplicaRegion {r} is the Region of the primary key {arn}"
                    )));
                }
                if s.replicas.contains_key(&format!("{r}/{}", k.id)) {
                    return Err(KmsError::new(
                        ErrorCode::AlreadyExistsException,
                        format!("A replica of {arn} already exists in {r}"),
                    ));
                }
                let desc = req
                    .description
                    .clone()
                    .unwrap_or_else(|| k.description.clone());
                check_description(&desc)?;
                let tags = req.tags.clone().unwrap_or_default();
                check_tags(&tags)?;
                let policy =
                    self.new_key_policy(&req.policy, req.bypass_policy_lockout_safety_check)?;
                let replica = KeyRecord {
                    description: desc,
                    created: now(),
                    state: KeyState::Enabled,
                    deletion_date: None,
                    pending_window_days: None,
                    tags: tags.clone(),
                    policy: Some(policy.clone()),
                    creator: Some(self.caller.principal.clone()),
                    ..k.clone()
                };
                // AWS: a replica of a key with imported material is made without it;
                // each Region's key is given the same material by its own import.
                let replica = if k.origin == EXTERNAL {
                    KeyRecord {
                        versions: k
                            .versions
                            .iter()
                            .map(KeyVersion::without_material)
                            .collect(),
                        pending_material: None,
                        valid_to: None,
                        state: KeyState::PendingImport,
                        ..replica
                    }
                } else {
                    replica
                };
                let mut md = self.metadata(&replica);
                md.arn = self.arn_in(r, &k);
                // As AWS answers: the replica is Creating until it is usable in its Region.
                md.key_state = "Creating".into();
                md.enabled = false;
                s.replicas.insert(format!("{r}/{}", k.id), replica.clone());
                md.multi_region_configuration = self.multi_region_configuration(s, &replica, r);
                Ok(ReplicateKeyResponse {
                    replica_key_metadata: md,
                    replica_policy: policy,
                    replica_tags: tags,
                })
            })
        })
    }

    pub(super) fn do_update_primary_region(
        &self,
        req: UpdatePrimaryRegionRequest,
    ) -> KmsResult<()> {
        let op = Op::UpdatePrimaryRegion;
        self.run(op.name(), |info| {
            self.mutate(op.name(), info, |s, info| {
                let k = self
                    .authorized(s, &req.key_id, op.action(), None, info)?
                    .clone();
                let arn = self.arn(&k);
                let primary =
                    self.primary_here(&k, "call UpdatePrimaryRegion on its primary key")?;
                let to = req.primary_region.as_str();
                check_region(to, "primaryRegion")?;
                if to == primary {
                    return Err(KmsError::validation(format!(
                        "{to} is already the primary Region of {arn}"
                    )));
                }
                let rid = format!("{to}/{}", k.id);
                match s.replicas.get(&rid).map(|r| self.state_of(r)) {
                    None => {
                        return Err(KmsError::not_found(format!("{arn} has no replica in {to}")))
                    }
                    Some(KeyState::Enabled | KeyState::Disabled) => {}
                    Some(st) => {
                        return Err(KmsError::new(
                            ErrorCode::KMSInvalidStateException,
                            format!("{} is {}", self.arn_in(to, &k), st.name()),
                        ))
                    }
                }
                for r in self.replica_regions(s, &k.id) {
                    if let Some(rep) = s.replicas.get_mut(&format!("{r}/{}", k.id)) {
                        rep.primary_region = Some(to.to_string());
                    }
                }
                if let Some(own) = s.keys.get_mut(&k.id) {
                    own.primary_region = Some(to.to_string());
                }
                Ok(())
            })
        })
    }
}
