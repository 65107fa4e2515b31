//! Keys: CreateKey, DescribeKey, ListKeys, their life (enable, disable, deletion),
//! rotation and key policies.

use super::operations::paginate;
use super::*;

impl LocalKms {
    /// A new key's policy: the one given (parsed, and held to the lockout check unless
    /// bypassed), else the default one for the caller.
    pub(super) fn new_key_policy(
        &self,
        policy: &Option<String>,
        bypass_lockout_check: Option<bool>,
    ) -> KmsResult<String> {
        Ok(match policy {
            Some(p) => {
                let parsed = Policy::parse(p)?;
                if !bypass_lockout_check.unwrap_or(false) {
                    self.check_lockout(&parsed)?;
                }
                p.clone()
            }
            None => default_policy(&self.caller.principal),
        })
    }

    pub(super) fn do_create_key(&self, req: CreateKeyRequest) -> KmsResult<CreateKeyResponse> {
        self.run(Op::CreateKey.name(), |info| {
            if let Some(r) = self.foreign_region() {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    format!(
                        "this KMS serves region {}; the request was signed for {r}",
                        self.e.region
                    ),
                ));
            }
            let (spec, usage) = spec_and_usage(&req)?;
            check_create_options(&req)?;
            let multi_region = req.multi_region == Some(true);
            if multi_region {
                self.check_multi_region_create(req.origin.as_deref())?;
            }
            let external = req.origin.as_deref() == Some(EXTERNAL);
            if external {
                Self::check_importable(&spec)?;
            }
            let xks = if req.origin.as_deref() == Some(EXTERNAL_KEY_STORE) {
                if spec != SYMMETRIC_DEFAULT || usage != "ENCRYPT_DECRYPT" {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        "keys in an external key store are SYMMETRIC_DEFAULT and ENCRYPT_DECRYPT",
                    ));
                }
                Some(self.check_new_xks_key(&req)?)
            } else {
                if let Some(id) = &req.custom_key_store_id {
                    if !self.snapshot()?.custom_key_stores.get(id).is_some_and(|c| self.is_callers(c)) {
                        return Err(KmsError::new(
                            ErrorCode::CustomKeyStoreNotFoundException,
                            format!("Custom key store {id} does not exist."),
                        ));
                    }
                    return Err(KmsError::validation(
                        "CustomKeyStoreId needs Origin EXTERNAL_KEY_STORE (the only custom key stores here are external key stores)",
                    ));
                }
                None
            };
            let desc = req.description.clone().unwrap_or_default();
            check_description(&desc)?;
            check_tags(req.tags.as_deref().unwrap_or_default())?;
            let policy =
                self.new_key_policy(&req.policy, req.bypass_policy_lockout_safety_check)?;
            let rec = KeyRecord {
                account: self.caller.account.clone(),
                id: if multi_region {
                    new_mrk_id()
                } else {
                    uuid::Uuid::new_v4().to_string()
                },
                description: desc,
                created: now(),
                state: if external {
                    KeyState::PendingImport
                } else {
                    KeyState::Enabled
                },
                deletion_date: None,
                pending_window_days: None,
                versions: if external {
                    vec![]
                } else {
                    vec![Self::new_version(&spec, None)]
                },
                current: 0,
                rotation_enabled: false,
                rotation_period_days: None,
                next_rotation: None,
                tags: req.tags.clone().unwrap_or_default(),
                policy: Some(policy),
                spec,
                usage,
                origin: req.origin.clone().unwrap_or_else(|| "AWS_KMS".into()),
                valid_to: None,
                pending_material: None,
                custom_key_store_id: xks.as_ref().map(|x| x.0.clone()),
                xks_key_id: xks.as_ref().map(|x| x.1.clone()),
                creator: Some(self.caller.principal.clone()),
                primary_region: multi_region.then(|| self.e.region.clone()),
            };
            let mut md = self.metadata(&rec);
            md.multi_region_configuration =
                self.multi_region_configuration(&Store::default(), &rec, &self.e.region);
            info.key(self.arn(&rec), rec.versions.first());
            self.mutate(Op::CreateKey.name(), info, |s, _| {
                self.check_key_quota(s)?;
                if rec.xks_key_id.is_some()
                    && s.keys.values().any(|k| {
                        k.custom_key_store_id == rec.custom_key_store_id
                            && k.xks_key_id == rec.xks_key_id
                    })
                {
                    return Err(KmsError::new(
                        ErrorCode::XksKeyAlreadyInUseException,
                        "The external key is already associated with a KMS key in this custom key store.",
                    ));
                }
                s.keys.insert(rec.id.clone(), rec);
                Ok(())
            })?;
            Ok(CreateKeyResponse { key_metadata: md })
        })
    }

    pub(super) fn do_describe_key(
        &self,
        req: DescribeKeyRequest,
    ) -> KmsResult<DescribeKeyResponse> {
        self.run(Op::DescribeKey.name(), |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::DescribeKey.action(), None, info)?;
            Ok(DescribeKeyResponse {
                key_metadata: self.metadata_in(&s, k),
            })
        })
    }

    pub(super) fn do_list_keys(&self, req: ListKeysRequest) -> KmsResult<ListKeysResponse> {
        self.run(Op::ListKeys.name(), |_| {
            let s = self.snapshot()?;
            let at = now();
            let all: Vec<KeyListEntry> = s
                .keys
                .values()
                .filter(|k| !Store::is_destroyed(k, at) && self.foreign_region().is_none())
                .filter(|k| self.owner(k) == self.caller_account())
                .map(|k| KeyListEntry {
                    key_id: k.id.clone(),
                    key_arn: self.arn(k),
                })
                .collect();
            let (keys, next) = paginate(&all, req.limit, &req.marker)?;
            Ok(ListKeysResponse {
                keys,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    pub(super) fn do_enable_key(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key(Op::EnableKey.name(), &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            me.not_pending_import(k)?;
            k.state = KeyState::Enabled;
            Ok(())
        })
    }

    pub(super) fn do_disable_key(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key(Op::DisableKey.name(), &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            me.not_pending_import(k)?;
            k.state = KeyState::Disabled;
            Ok(())
        })
    }

    pub(super) fn do_schedule_key_deletion(
        &self,
        req: ScheduleKeyDeletionRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse> {
        let days = req.pending_window_in_days.unwrap_or(30);
        if !(7..=30).contains(&days) {
            let e = KmsError::validation(format!("PendingWindowInDays {days} is outside 7..30"));
            self.run(Op::ScheduleKeyDeletion.name(), |info| {
                info.key_arn = Some(req.key_id.clone());
                Err::<(), _>(e.clone())
            })?;
        }
        self.change_key_with(
            Op::ScheduleKeyDeletion.name(),
            &req.key_id,
            |me, replicas, k| {
                if matches!(
                    k.state,
                    KeyState::PendingDeletion | KeyState::PendingReplicaDeletion
                ) {
                    return Err(KmsError::new(
                        ErrorCode::KMSInvalidStateException,
                        format!("{} is already pending deletion.", me.arn(k)),
                    ));
                }
                k.pending_window_days = Some(days);
                if !me.is_replica(k) && !replicas.is_empty() {
                    // A primary waits for its replicas to be deleted; its window starts then.
                    k.state = KeyState::PendingReplicaDeletion;
                    k.deletion_date = None;
                    return Ok(ScheduleKeyDeletionResponse {
                        key_id: me.arn(k),
                        deletion_date: None,
                        key_state: "PendingReplicaDeletion".into(),
                        pending_window_in_days: days,
                    });
                }
                let date = now() + days as f64 * 86400.0;
                k.state = KeyState::PendingDeletion;
                k.deletion_date = Some(date);
                Ok(ScheduleKeyDeletionResponse {
                    key_id: me.arn(k),
                    deletion_date: Some(date),
                    key_state: "PendingDeletion".into(),
                    pending_window_in_days: days,
                })
            },
        )
    }

    pub(super) fn do_cancel_key_deletion(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse> {
        self.change_key(Op::CancelKeyDeletion.name(), &req.key_id, |me, k| {
            if !matches!(
                k.state,
                KeyState::PendingDeletion | KeyState::PendingReplicaDeletion
            ) {
                return Err(KmsError::new(
                    ErrorCode::KMSInvalidStateException,
                    format!("{} is not pending deletion.", me.arn(k)),
                ));
            }
            // As in AWS: a cancelled deletion leaves the key Disabled (PendingImport if
            // it has no material).
            k.state = if has_material(k) {
                KeyState::Disabled
            } else {
                KeyState::PendingImport
            };
            k.deletion_date = None;
            k.pending_window_days = None;
            Ok(KeyIdResponse { key_id: me.arn(k) })
        })
    }

    pub(super) fn do_rotate_key_on_demand(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse> {
        self.change_key_in(Op::RotateKeyOnDemand.name(), &req.key_id, |me, s, k| {
            let lacking = me.family_pending(s, &k.id).map(|(_, l)| l).unwrap_or_default();
            // AWS: the key's state before its kind.
            me.usable(k)?;
            me.check_rotatable(k)?;
            me.not_a_replica(k)?;
            let done = k
                .versions
                .iter()
                .filter(|v| v.rotation_type.as_deref() == Some("ON_DEMAND"))
                .count();
            if done >= MAX_ON_DEMAND_ROTATIONS {
                return Err(messages::on_demand_rotation_limit(
                    &me.arn(k),
                    MAX_ON_DEMAND_ROTATIONS,
                ));
            }
            if k.origin == EXTERNAL {
                // AWS: every replica holds the new material before the family rotates.
                if !lacking.is_empty() && k.pending_material.is_some() {
                    return Err(KmsError::new(
                        ErrorCode::KMSInvalidStateException,
                        format!(
                            "{} cannot rotate yet: import its pending key material into the replica keys in {} first (ImportKeyMaterial, EXISTING_KEY_MATERIAL)",
                            me.arn(k),
                            lacking.join(", ")
                        ),
                    ));
                }
                me.rotate_to_imported(k)?;
            } else {
                k.versions
                    .push(Self::new_version(&k.spec, Some("ON_DEMAND")));
                k.current = (k.versions.len() - 1) as u32;
            }
            Ok(KeyIdResponse { key_id: me.arn(k) })
        })
    }

    pub(super) fn do_enable_key_rotation(&self, req: EnableKeyRotationRequest) -> KmsResult<()> {
        let days = req.rotation_period_in_days.unwrap_or(365);
        if !(90..=2560).contains(&days) {
            let e =
                KmsError::validation(format!("RotationPeriodInDays {days} is outside 90..2560"));
            return self.run(Op::EnableKeyRotation.name(), |info| {
                info.key_arn = Some(req.key_id.clone());
                Err(e.clone())
            });
        }
        self.change_key(Op::EnableKeyRotation.name(), &req.key_id, |me, k| {
            me.usable(k)?;
            me.check_rotatable(k)?;
            me.not_a_replica(k)?;
            if k.origin == EXTERNAL {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    format!(
                        "{} has imported key material: rotate it on demand with new imported material",
                        me.arn(k)
                    ),
                ));
            }
            me.usable(k)?;
            k.rotation_enabled = true;
            k.rotation_period_days = Some(days);
            k.next_rotation = Some(now() + days as f64 * 86400.0);
            Ok(())
        })
    }

    pub(super) fn do_disable_key_rotation(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key(Op::DisableKeyRotation.name(), &req.key_id, |me, k| {
            me.usable(k)?;
            me.not_a_replica(k)?;
            k.rotation_enabled = false;
            k.next_rotation = None;
            Ok(())
        })
    }

    pub(super) fn do_get_key_rotation_status(
        &self,
        req: KeyIdRequest,
    ) -> KmsResult<GetKeyRotationStatusResponse> {
        self.run(Op::GetKeyRotationStatus.name(), |info| {
            let s = self.snapshot()?;
            let k = self.authorized(
                &s,
                &req.key_id,
                Op::GetKeyRotationStatus.action(),
                None,
                info,
            )?;
            Ok(GetKeyRotationStatusResponse {
                key_id: self.arn(k),
                key_rotation_enabled: k.rotation_enabled,
                rotation_period_in_days: k.rotation_period_days.filter(|_| k.rotation_enabled),
                next_rotation_date: k.next_rotation,
            })
        })
    }

    pub(super) fn do_list_key_rotations(
        &self,
        req: ListKeyRotationsRequest,
    ) -> KmsResult<ListKeyRotationsResponse> {
        self.run(Op::ListKeyRotations.name(), |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::ListKeyRotations.action(), None, info)?;
            let all_material = match req.include_key_material.as_deref() {
                None | Some("ROTATIONS_ONLY") => false,
                Some("ALL_KEY_MATERIAL") => true,
                Some(v) => {
                    return Err(KmsError::validation(format!(
                        "1 validation error detected: Value '{v}' at 'includeKeyMaterial' failed to satisfy constraint: Member must satisfy enum value set: [ALL_KEY_MATERIAL, ROTATIONS_ONLY]"
                    )))
                }
            };
            let imported = k.origin == EXTERNAL;
            let entry = |v: &KeyVersion, state: &str, current: bool| RotationEntry {
                key_id: self.arn(k),
                key_material_id: v.material_id.clone(),
                key_material_description: v.description.clone(),
                key_material_state: Some(state.into()),
                import_state: imported.then(|| {
                    if v.material.0.is_empty() { "PENDING_IMPORT" } else { "IMPORTED" }.into()
                }),
                expiration_model: imported.then(|| {
                    if current && k.valid_to.is_some() {
                        "KEY_MATERIAL_EXPIRES"
                    } else {
                        "KEY_MATERIAL_DOES_NOT_EXPIRE"
                    }
                    .into()
                }),
                valid_to: k.valid_to.filter(|_| current && imported),
                rotation_date: (state != "PENDING_ROTATION").then_some(v.created),
                rotation_type: v.rotation_type.clone(),
            };
            let mut all: Vec<RotationEntry> = k
                .versions
                .iter()
                .enumerate()
                .filter(|(_, v)| all_material || v.rotation_type.is_some())
                .map(|(i, v)| {
                    let current = i == k.current as usize;
                    entry(v, if current { "CURRENT" } else { "NON_CURRENT" }, current)
                })
                .collect();
            if all_material {
                // A multi-Region family's next material is pending in every Region until
                // each replica has imported it; a replica lists it before it has it.
                let family = if k.primary_region.is_some() {
                    self.family_pending(&s, &k.id)
                } else {
                    k.pending_material.as_ref().map(|p| (p.without_material(), vec![]))
                };
                if let Some((p, lacking)) = family {
                    let state = if lacking.is_empty() {
                        "PENDING_ROTATION"
                    } else {
                        "PENDING_MULTI_REGION_IMPORT_AND_ROTATION"
                    };
                    let own = k
                        .pending_material
                        .as_ref()
                        .filter(|o| o.material_id == p.material_id);
                    // (a replica lists its primary's material before it has imported it)
                    all.push(entry(own.unwrap_or(&p), state, false));
                }
            }
            let (rotations, next) = paginate(&all, req.limit, &req.marker)?;
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    pub(super) fn do_get_key_policy(
        &self,
        req: GetKeyPolicyRequest,
    ) -> KmsResult<GetKeyPolicyResponse> {
        self.run(Op::GetKeyPolicy.name(), |info| {
            check_policy_name(&req.policy_name)?;
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::GetKeyPolicy.action(), None, info)?;
            Ok(GetKeyPolicyResponse {
                policy: k
                    .policy
                    .clone()
                    .unwrap_or_else(|| default_policy(DEFAULT_PRINCIPAL)),
                policy_name: "default".into(),
            })
        })
    }

    pub(super) fn do_put_key_policy(&self, req: PutKeyPolicyRequest) -> KmsResult<()> {
        self.run(Op::PutKeyPolicy.name(), |info| {
            check_policy_name(&req.policy_name)?;
            let parsed = Policy::parse(&req.policy)?;
            if !req.bypass_policy_lockout_safety_check.unwrap_or(false) {
                self.check_lockout(&parsed)?;
            }
            self.mutate(Op::PutKeyPolicy.name(), info, |s, info| {
                let id = self
                    .authorized(s, &req.key_id, Op::PutKeyPolicy.action(), None, info)?
                    .id
                    .clone();
                s.keys.get_mut(&id).unwrap().policy = Some(req.policy.clone());
                Ok(())
            })
        })
    }
}

/// AWS allows 25 on-demand rotations per key (the API reference since 2025; it was 10),
/// imported material's rotations included.
pub(super) const MAX_ON_DEMAND_ROTATIONS: usize = 25;

/// CreateKey options this KMS does not have: refused with AWS's error, never ignored.
fn check_create_options(req: &CreateKeyRequest) -> KmsResult<()> {
    let unsupported = |m: String| Err(KmsError::new(ErrorCode::UnsupportedOperationException, m));
    match req.origin.as_deref() {
        None | Some("AWS_KMS") | Some(EXTERNAL) | Some(EXTERNAL_KEY_STORE) => {}
        Some(o @ "AWS_CLOUDHSM") => {
            return unsupported(format!(
                "Origin {o} is not supported: this KMS has no CloudHSM key stores (AWS_KMS, EXTERNAL or EXTERNAL_KEY_STORE)"
            ))
        }
        Some(o) => {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{o}' at 'origin' failed to satisfy constraint: Member must satisfy enum value set: [EXTERNAL_KEY_STORE, AWS_CLOUDHSM, AWS_KMS, EXTERNAL]"
            )))
        }
    }
    let xks = req.origin.as_deref() == Some(EXTERNAL_KEY_STORE);
    if !xks && req.xks_key_id.is_some() {
        return Err(KmsError::validation(
            "XksKeyId needs Origin EXTERNAL_KEY_STORE and a custom key store",
        ));
    }
    Ok(())
}

pub(super) fn check_policy_name(name: &Option<String>) -> KmsResult<()> {
    match name.as_deref() {
        None | Some("default") => Ok(()),
        Some(n) => Err(KmsError::not_found(format!(
            "policy {n:?} does not exist (only \"default\")"
        ))),
    }
}
