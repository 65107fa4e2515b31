//! The AWS operations of the embedded KMS.

use super::*;

impl Kms for LocalKms {
    fn create_key(&self, req: CreateKeyRequest) -> KmsResult<CreateKeyResponse> {
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
                    if !self.snapshot()?.custom_key_stores.contains_key(id) {
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
            let policy = match &req.policy {
                Some(p) => {
                    let parsed = Policy::parse(p)?;
                    if !req.bypass_policy_lockout_safety_check.unwrap_or(false) {
                        self.check_lockout(&parsed)?;
                    }
                    p.clone()
                }
                None => default_policy(&self.caller.principal),
            };
            let rec = KeyRecord {
                id: uuid::Uuid::new_v4().to_string(),
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
            };
            let md = self.metadata(&rec);
            info.key(self.arn(&rec.id), rec.versions.first());
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

    fn describe_key(&self, req: DescribeKeyRequest) -> KmsResult<DescribeKeyResponse> {
        self.run(Op::DescribeKey.name(), |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::DescribeKey.action(), None, info)?;
            Ok(DescribeKeyResponse {
                key_metadata: self.metadata(k),
            })
        })
    }

    fn list_keys(&self, req: ListKeysRequest) -> KmsResult<ListKeysResponse> {
        self.run(Op::ListKeys.name(), |_| {
            let s = self.snapshot()?;
            let at = now();
            let all: Vec<KeyListEntry> = s
                .keys
                .values()
                .filter(|k| !Store::is_destroyed(k, at) && self.foreign_region().is_none())
                .map(|k| KeyListEntry {
                    key_id: k.id.clone(),
                    key_arn: self.arn(&k.id),
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

    fn create_alias(&self, req: CreateAliasRequest) -> KmsResult<()> {
        self.run(Op::CreateAlias.name(), |info| {
            check_alias_name(&req.alias_name)?;
            if req.target_key_id.starts_with("alias/") || req.target_key_id.contains(":alias/") {
                return Err(KmsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            self.mutate(Op::CreateAlias.name(), info, |s, info| {
                self.check_alias_quota(s)?;
                if s.aliases.contains_key(&req.alias_name) {
                    return Err(KmsError::new(
                        ErrorCode::AlreadyExistsException,
                        format!(
                            "An alias with the name {} already exists",
                            self.alias_arn(&req.alias_name)
                        ),
                    ));
                }
                let id = self
                    .authorized(s, &req.target_key_id, Op::CreateAlias.action(), None, info)?
                    .id
                    .clone();
                s.aliases.insert(
                    req.alias_name.clone(),
                    AliasRecord {
                        target: id,
                        created: now(),
                        creator: Some(self.caller.principal.clone()),
                    },
                );
                Ok(())
            })
        })
    }

    fn update_alias(&self, req: UpdateAliasRequest) -> KmsResult<()> {
        self.run(Op::UpdateAlias.name(), |info| {
            check_alias_name(&req.alias_name)?;
            if req.target_key_id.starts_with("alias/") || req.target_key_id.contains(":alias/") {
                return Err(KmsError::validation(
                    "TargetKeyId must be a key id or key ARN, not an alias",
                ));
            }
            self.mutate(Op::UpdateAlias.name(), info, |s, info| {
                let current = self.alias_target(s, &req.alias_name)?;
                // Like AWS: the caller needs kms:UpdateAlias on the key the alias points
                // at now *and* on the new one, or anyone allowed on their own key could
                // repoint another principal's alias at it.
                if s.keys.contains_key(&current) {
                    self.authorized(s, &current, Op::UpdateAlias.action(), None, info)?;
                }
                let id = self
                    .authorized(s, &req.target_key_id, Op::UpdateAlias.action(), None, info)?
                    .id
                    .clone();
                if let Some(a) = s.aliases.get_mut(&req.alias_name) {
                    a.target = id;
                }
                Ok(())
            })
        })
    }

    fn delete_alias(&self, req: DeleteAliasRequest) -> KmsResult<()> {
        self.run(Op::DeleteAlias.name(), |info| {
            check_alias_name(&req.alias_name)?;
            self.mutate(Op::DeleteAlias.name(), info, |s, info| {
                let target = self.alias_target(s, &req.alias_name)?;
                if s.keys.contains_key(&target) {
                    self.authorized(s, &target, Op::DeleteAlias.action(), None, info)?;
                }
                s.aliases.remove(&req.alias_name);
                Ok(())
            })
        })
    }

    fn list_aliases(&self, req: ListAliasesRequest) -> KmsResult<ListAliasesResponse> {
        self.run(Op::ListAliases.name(), |_| {
            let s = self.snapshot()?;
            let filter = match &req.key_id {
                Some(k) => Some(self.resolve(&s, k)?),
                None => None,
            };
            let at = now();
            let all: Vec<AliasListEntry> = s
                .aliases
                .iter()
                .filter(|(_, a)| filter.as_ref().is_none_or(|f| *f == a.target))
                .filter(|_| self.foreign_region().is_none())
                .filter(|(_, a)| {
                    s.keys
                        .get(&a.target)
                        .is_some_and(|k| !Store::is_destroyed(k, at))
                })
                .map(|(name, a)| AliasListEntry {
                    alias_name: name.clone(),
                    alias_arn: self.alias_arn(name),
                    target_key_id: a.target.clone(),
                    creation_date: a.created,
                })
                .collect();
            let (aliases, next) = paginate(&all, req.limit, &req.marker)?;
            Ok(ListAliasesResponse {
                aliases,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    fn encrypt(&self, req: EncryptRequest) -> KmsResult<EncryptResponse> {
        self.run(Op::Encrypt.name(), |info| {
            info.context = req.encryption_context.clone();
            let s = self.snapshot()?;
            let k = self.authorized(
                &s,
                &req.key_id,
                Op::Encrypt.action(),
                req.encryption_context.as_ref(),
                info,
            )?;
            self.ready_for(k, Op::Encrypt)?;
            self.check_grant_tokens(&req.grant_tokens)?;
            if is_rsa_encryption(k) {
                let alg = req.encryption_algorithm.as_deref();
                let blob = self.rsa_encrypt(k, alg, &req.plaintext.0, &req.encryption_context)?;
                dry_run(req.dry_run)?;
                return Ok(EncryptResponse {
                    ciphertext_blob: blob,
                    key_id: self.arn(&k.id),
                    encryption_algorithm: alg.unwrap_or_default().into(),
                    key_material_id: None,
                });
            }
            check_algorithm(&req.encryption_algorithm)?;
            if req.plaintext.0.is_empty() || req.plaintext.0.len() > 4096 {
                return Err(KmsError::validation("Plaintext must be 1..4096 bytes"));
            }
            self.check_symmetric(k)?;
            self.usable(k)?;
            dry_run(req.dry_run)?;
            Ok(EncryptResponse {
                ciphertext_blob: self.seal_blob(
                    k,
                    &req.plaintext.0,
                    &req.encryption_context,
                    Op::Encrypt.name(),
                )?,
                key_id: self.arn(&k.id),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                key_material_id: Some(k.versions[k.current as usize].material_id.clone()),
            })
        })
    }

    fn decrypt(&self, req: DecryptRequest) -> KmsResult<DecryptResponse> {
        self.run(Op::Decrypt.name(), |info| {
            self.check_grant_tokens(&req.grant_tokens)?;
            if let Some(alg) = req
                .encryption_algorithm
                .as_deref()
                .filter(|a| a.starts_with("RSAES_"))
            {
                return self.decrypt_asymmetric(&req, alg, info);
            }
            check_algorithm(&req.encryption_algorithm)?;
            let s = self.snapshot()?;
            let (id, version, plaintext) = self.open_blob(
                &s,
                &req.ciphertext_blob,
                &req.encryption_context,
                req.key_id.as_deref(),
                Op::Decrypt.action(),
                info,
            )?;
            dry_run(req.dry_run)?;
            Ok(DecryptResponse {
                key_id: self.arn(&id),
                plaintext,
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                key_material_id: Some(s.keys[&id].versions[version as usize].material_id.clone()),
            })
        })
    }

    fn generate_data_key(&self, req: GenerateDataKeyRequest) -> KmsResult<GenerateDataKeyResponse> {
        self.generate(
            Op::GenerateDataKey.name(),
            Op::GenerateDataKey.action(),
            req,
        )
    }

    fn generate_data_key_without_plaintext(
        &self,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyWithoutPlaintextResponse> {
        let r = self.generate(
            Op::GenerateDataKeyWithoutPlaintext.name(),
            Op::GenerateDataKeyWithoutPlaintext.action(),
            req,
        )?;
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: r.ciphertext_blob.clone(),
            key_id: r.key_id.clone(),
            key_material_id: r.key_material_id.clone(),
        })
    }

    fn re_encrypt(&self, req: ReEncryptRequest) -> KmsResult<ReEncryptResponse> {
        self.run(Op::ReEncrypt.name(), |info| {
            check_algorithm(&req.source_encryption_algorithm)?;
            check_algorithm(&req.destination_encryption_algorithm)?;
            self.check_grant_tokens(&req.grant_tokens)?;
            let s = self.snapshot()?;
            let (src, version, plaintext) = self.open_blob(
                &s,
                &req.ciphertext_blob,
                &req.source_encryption_context,
                req.source_key_id.as_deref(),
                "kms:ReEncryptFrom",
                info,
            )?;
            let mut dinfo = OpInfo::default();
            let dk = self.authorized(
                &s,
                &req.destination_key_id,
                "kms:ReEncryptTo",
                req.destination_encryption_context.as_ref(),
                &mut dinfo,
            )?;
            self.usable(dk)?;
            self.check_symmetric(dk)?;
            dry_run(req.dry_run)?;
            // the record names the destination (key and version the new blob is under)
            info.key_arn = dinfo.key_arn;
            info.key_version = dinfo.key_version;
            info.context = req.destination_encryption_context.clone();
            Ok(ReEncryptResponse {
                ciphertext_blob: self.seal_blob(
                    dk,
                    &plaintext.0,
                    &req.destination_encryption_context,
                    Op::ReEncrypt.name(),
                )?,
                source_key_id: self.arn(&src),
                key_id: self.arn(&dk.id),
                source_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                source_key_material_id: Some(
                    s.keys[&src].versions[version as usize].material_id.clone(),
                ),
                destination_key_material_id: Some(
                    dk.versions[dk.current as usize].material_id.clone(),
                ),
            })
        })
    }

    fn enable_key(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key(Op::EnableKey.name(), &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            me.not_pending_import(k)?;
            k.state = KeyState::Enabled;
            Ok(())
        })
    }

    fn disable_key(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key(Op::DisableKey.name(), &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            me.not_pending_import(k)?;
            k.state = KeyState::Disabled;
            Ok(())
        })
    }

    fn schedule_key_deletion(
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
        self.change_key(Op::ScheduleKeyDeletion.name(), &req.key_id, |me, k| {
            if k.state == KeyState::PendingDeletion {
                return Err(KmsError::new(
                    ErrorCode::KMSInvalidStateException,
                    format!("{} is already pending deletion.", me.arn(&k.id)),
                ));
            }
            let date = now() + days as f64 * 86400.0;
            k.state = KeyState::PendingDeletion;
            k.deletion_date = Some(date);
            k.pending_window_days = Some(days);
            Ok(ScheduleKeyDeletionResponse {
                key_id: me.arn(&k.id),
                deletion_date: date,
                key_state: "PendingDeletion".into(),
                pending_window_in_days: days,
            })
        })
    }

    fn cancel_key_deletion(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse> {
        self.change_key(Op::CancelKeyDeletion.name(), &req.key_id, |me, k| {
            if k.state != KeyState::PendingDeletion {
                return Err(KmsError::new(
                    ErrorCode::KMSInvalidStateException,
                    format!("{} is not pending deletion.", me.arn(&k.id)),
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
            Ok(KeyIdResponse {
                key_id: me.arn(&k.id),
            })
        })
    }

    fn rotate_key_on_demand(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse> {
        self.change_key(Op::RotateKeyOnDemand.name(), &req.key_id, |me, k| {
            // AWS: the key's state before its kind.
            me.usable(k)?;
            me.check_rotatable(k)?;
            let done = k
                .versions
                .iter()
                .filter(|v| v.rotation_type.as_deref() == Some("ON_DEMAND"))
                .count();
            if done >= MAX_ON_DEMAND_ROTATIONS && k.origin != EXTERNAL {
                return Err(KmsError::new(
                    ErrorCode::LimitExceededException,
                    format!(
                        "The key {} has been rotated on demand {MAX_ON_DEMAND_ROTATIONS} times, the most AWS KMS allows",
                        me.arn(&k.id)
                    ),
                ));
            }
            if k.origin == EXTERNAL {
                me.rotate_to_imported(k)?;
            } else {
                k.versions.push(Self::new_version(&k.spec, Some("ON_DEMAND")));
                k.current = (k.versions.len() - 1) as u32;
            }
            Ok(KeyIdResponse {
                key_id: me.arn(&k.id),
            })
        })
    }

    fn enable_key_rotation(&self, req: EnableKeyRotationRequest) -> KmsResult<()> {
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
            if k.origin == EXTERNAL {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    format!(
                        "{} has imported key material: rotate it on demand with new imported material",
                        me.arn(&k.id)
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

    fn disable_key_rotation(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.change_key(Op::DisableKeyRotation.name(), &req.key_id, |me, k| {
            me.usable(k)?;
            k.rotation_enabled = false;
            k.next_rotation = None;
            Ok(())
        })
    }

    fn get_key_rotation_status(
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
                key_id: self.arn(&k.id),
                key_rotation_enabled: k.rotation_enabled,
                rotation_period_in_days: k.rotation_period_days.filter(|_| k.rotation_enabled),
                next_rotation_date: k.next_rotation,
            })
        })
    }

    fn list_key_rotations(
        &self,
        req: ListKeyRotationsRequest,
    ) -> KmsResult<ListKeyRotationsResponse> {
        self.run(Op::ListKeyRotations.name(), |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::ListKeyRotations.action(), None, info)?;
            let all: Vec<RotationEntry> = k
                .versions
                .iter()
                .filter_map(|v| {
                    v.rotation_type.as_ref().map(|t| RotationEntry {
                        key_id: self.arn(&k.id),
                        key_material_id: v.material_id.clone(),
                        rotation_date: v.created,
                        rotation_type: t.clone(),
                    })
                })
                .collect();
            let (rotations, next) = paginate(&all, req.limit, &req.marker)?;
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    fn get_key_policy(&self, req: GetKeyPolicyRequest) -> KmsResult<GetKeyPolicyResponse> {
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

    fn put_key_policy(&self, req: PutKeyPolicyRequest) -> KmsResult<()> {
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

    fn list_key_policies(&self, req: ListKeyPoliciesRequest) -> KmsResult<ListKeyPoliciesResponse> {
        self.do_list_key_policies(req)
    }

    fn update_key_description(&self, req: UpdateKeyDescriptionRequest) -> KmsResult<()> {
        self.do_update_key_description(req)
    }

    fn tag_resource(&self, req: TagResourceRequest) -> KmsResult<()> {
        self.do_tag_resource(req)
    }

    fn untag_resource(&self, req: UntagResourceRequest) -> KmsResult<()> {
        self.do_untag_resource(req)
    }

    fn list_resource_tags(
        &self,
        req: ListResourceTagsRequest,
    ) -> KmsResult<ListResourceTagsResponse> {
        self.do_list_resource_tags(req)
    }

    fn generate_random(&self, req: GenerateRandomRequest) -> KmsResult<GenerateRandomResponse> {
        self.do_generate_random(req)
    }

    fn generate_mac(&self, req: GenerateMacRequest) -> KmsResult<GenerateMacResponse> {
        self.do_generate_mac(req)
    }

    fn verify_mac(&self, req: VerifyMacRequest) -> KmsResult<VerifyMacResponse> {
        self.do_verify_mac(req)
    }

    fn get_public_key(&self, req: GetPublicKeyRequest) -> KmsResult<GetPublicKeyResponse> {
        self.do_get_public_key(req)
    }

    fn sign(&self, req: SignRequest) -> KmsResult<SignResponse> {
        self.do_sign(req)
    }

    fn verify(&self, req: VerifyRequest) -> KmsResult<VerifyResponse> {
        self.do_verify(req)
    }

    fn derive_shared_secret(
        &self,
        req: DeriveSharedSecretRequest,
    ) -> KmsResult<DeriveSharedSecretResponse> {
        self.do_derive_shared_secret(req)
    }

    fn create_grant(&self, req: CreateGrantRequest) -> KmsResult<CreateGrantResponse> {
        self.do_create_grant(req)
    }

    fn list_grants(&self, req: ListGrantsRequest) -> KmsResult<ListGrantsResponse> {
        self.do_list_grants(req)
    }

    fn list_retirable_grants(
        &self,
        req: ListRetirableGrantsRequest,
    ) -> KmsResult<ListGrantsResponse> {
        self.do_list_retirable_grants(req)
    }

    fn retire_grant(&self, req: RetireGrantRequest) -> KmsResult<()> {
        self.do_retire_grant(req)
    }

    fn revoke_grant(&self, req: RevokeGrantRequest) -> KmsResult<()> {
        self.do_revoke_grant(req)
    }

    fn generate_data_key_pair(
        &self,
        req: GenerateDataKeyPairRequest,
    ) -> KmsResult<GenerateDataKeyPairResponse> {
        self.do_generate_data_key_pair(Op::GenerateDataKeyPair, req)
    }

    fn generate_data_key_pair_without_plaintext(
        &self,
        req: GenerateDataKeyPairRequest,
    ) -> KmsResult<GenerateDataKeyPairWithoutPlaintextResponse> {
        let r = self.do_generate_data_key_pair(Op::GenerateDataKeyPairWithoutPlaintext, req)?;
        Ok(GenerateDataKeyPairWithoutPlaintextResponse {
            private_key_ciphertext_blob: r.private_key_ciphertext_blob.clone(),
            public_key: r.public_key.clone(),
            key_id: r.key_id.clone(),
            key_pair_spec: r.key_pair_spec.clone(),
            key_material_id: r.key_material_id.clone(),
        })
    }

    fn get_parameters_for_import(
        &self,
        req: GetParametersForImportRequest,
    ) -> KmsResult<GetParametersForImportResponse> {
        self.do_get_parameters_for_import(req)
    }

    fn import_key_material(
        &self,
        req: ImportKeyMaterialRequest,
    ) -> KmsResult<ImportKeyMaterialResponse> {
        self.do_import_key_material(req)
    }

    fn delete_imported_key_material(
        &self,
        req: DeleteImportedKeyMaterialRequest,
    ) -> KmsResult<DeleteImportedKeyMaterialResponse> {
        self.do_delete_imported_key_material(req)
    }

    fn get_key_last_usage(
        &self,
        req: GetKeyLastUsageRequest,
    ) -> KmsResult<GetKeyLastUsageResponse> {
        self.do_get_key_last_usage(req)
    }

    fn create_custom_key_store(
        &self,
        req: CreateCustomKeyStoreRequest,
    ) -> KmsResult<CreateCustomKeyStoreResponse> {
        self.do_create_custom_key_store(req)
    }

    fn describe_custom_key_stores(
        &self,
        req: DescribeCustomKeyStoresRequest,
    ) -> KmsResult<DescribeCustomKeyStoresResponse> {
        self.do_describe_custom_key_stores(req)
    }

    fn connect_custom_key_store(&self, req: CustomKeyStoreIdRequest) -> KmsResult<()> {
        self.do_connect_custom_key_store(req)
    }

    fn disconnect_custom_key_store(&self, req: CustomKeyStoreIdRequest) -> KmsResult<()> {
        self.do_disconnect_custom_key_store(req)
    }

    fn update_custom_key_store(&self, req: UpdateCustomKeyStoreRequest) -> KmsResult<()> {
        self.do_update_custom_key_store(req)
    }

    fn delete_custom_key_store(&self, req: CustomKeyStoreIdRequest) -> KmsResult<()> {
        self.do_delete_custom_key_store(req)
    }

    fn rotate_due(&self) -> KmsResult<Vec<String>> {
        self.rotate_due_keys()
    }

    fn flush_audit(&self) {
        if let Err(e) = self.audit().checkpoint() {
            tracing::warn!("audit checkpoint failed: {e}");
        }
    }
}

/// AWS allows ten on-demand rotations per key.
const MAX_ON_DEMAND_ROTATIONS: usize = 10;

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
    if req.multi_region == Some(true) {
        return unsupported("MultiRegion keys are not supported yet".into());
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

pub(super) fn check_algorithm(alg: &Option<String>) -> KmsResult<()> {
    match alg.as_deref() {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(a) => Err(KmsError::validation(format!(
            "EncryptionAlgorithm {a} is not supported"
        ))),
    }
}

pub(super) fn paginate<T: Clone>(
    items: &[T],
    limit: Option<u32>,
    marker: &Option<String>,
) -> KmsResult<(Vec<T>, Option<String>)> {
    let limit = match limit {
        None => 100,
        Some(l) if (1..=1000).contains(&l) => l as usize,
        Some(l) => {
            return Err(KmsError::validation(format!(
                "Limit {l} is outside 1..1000"
            )))
        }
    };
    let start = match marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&s| s <= items.len())
            .ok_or_else(|| KmsError::validation(format!("invalid Marker {m:?}")))?,
    };
    let end = (start + limit).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items[start..end].to_vec(), next))
}
