//! The AWS operations of the embedded KMS.

use super::*;

impl Kms for LocalKms {
    fn create_key(&self, req: CreateKeyRequest) -> KmsResult<CreateKeyResponse> {
        self.do_create_key(req)
    }

    fn describe_key(&self, req: DescribeKeyRequest) -> KmsResult<DescribeKeyResponse> {
        self.do_describe_key(req)
    }

    fn list_keys(&self, req: ListKeysRequest) -> KmsResult<ListKeysResponse> {
        self.do_list_keys(req)
    }

    fn create_alias(&self, req: CreateAliasRequest) -> KmsResult<()> {
        self.do_create_alias(req)
    }

    fn update_alias(&self, req: UpdateAliasRequest) -> KmsResult<()> {
        self.do_update_alias(req)
    }

    fn delete_alias(&self, req: DeleteAliasRequest) -> KmsResult<()> {
        self.do_delete_alias(req)
    }

    fn list_aliases(&self, req: ListAliasesRequest) -> KmsResult<ListAliasesResponse> {
        self.do_list_aliases(req)
    }

    fn encrypt(&self, req: EncryptRequest) -> KmsResult<EncryptResponse> {
        self.do_encrypt(req)
    }

    fn decrypt(&self, req: DecryptRequest) -> KmsResult<DecryptResponse> {
        self.do_decrypt(req)
    }

    fn generate_data_key(&self, req: GenerateDataKeyRequest) -> KmsResult<GenerateDataKeyResponse> {
        self.do_generate_data_key(req)
    }

    fn generate_data_key_without_plaintext(
        &self,
        req: GenerateDataKeyRequest,
    ) -> KmsResult<GenerateDataKeyWithoutPlaintextResponse> {
        self.do_generate_data_key_without_plaintext(req)
    }

    fn re_encrypt(&self, req: ReEncryptRequest) -> KmsResult<ReEncryptResponse> {
        self.do_re_encrypt(req)
    }

    fn enable_key(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.do_enable_key(req)
    }

    fn disable_key(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.do_disable_key(req)
    }

    fn schedule_key_deletion(
        &self,
        req: ScheduleKeyDeletionRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse> {
        self.do_schedule_key_deletion(req)
    }

    fn cancel_key_deletion(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse> {
        self.do_cancel_key_deletion(req)
    }

    fn rotate_key_on_demand(&self, req: KeyIdRequest) -> KmsResult<KeyIdResponse> {
        self.do_rotate_key_on_demand(req)
    }

    fn enable_key_rotation(&self, req: EnableKeyRotationRequest) -> KmsResult<()> {
        self.do_enable_key_rotation(req)
    }

    fn disable_key_rotation(&self, req: KeyIdRequest) -> KmsResult<()> {
        self.do_disable_key_rotation(req)
    }

    fn get_key_rotation_status(
        &self,
        req: KeyIdRequest,
    ) -> KmsResult<GetKeyRotationStatusResponse> {
        self.do_get_key_rotation_status(req)
    }

    fn list_key_rotations(
        &self,
        req: ListKeyRotationsRequest,
    ) -> KmsResult<ListKeyRotationsResponse> {
        self.do_list_key_rotations(req)
    }

    fn encapsulate(&self, req: EncapsulateRequest) -> KmsResult<EncapsulateResponse> {
        self.do_encapsulate(req)
    }

    fn decapsulate(&self, req: DecapsulateRequest) -> KmsResult<DecapsulateResponse> {
        self.do_decapsulate(req)
    }

    fn replicate_key(&self, req: ReplicateKeyRequest) -> KmsResult<ReplicateKeyResponse> {
        self.do_replicate_key(req)
    }

    fn update_primary_region(&self, req: UpdatePrimaryRegionRequest) -> KmsResult<()> {
        self.do_update_primary_region(req)
    }

    fn get_key_policy(&self, req: GetKeyPolicyRequest) -> KmsResult<GetKeyPolicyResponse> {
        self.do_get_key_policy(req)
    }

    fn put_key_policy(&self, req: PutKeyPolicyRequest) -> KmsResult<()> {
        self.do_put_key_policy(req)
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
