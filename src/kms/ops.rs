//! The one table of KMS operations. Each line names an operation once, as AWS names it,
//! with its method and shapes; from it come the [`Op`] enumeration (names for the wire,
//! the audit log and policies), the [`Kms`] trait, the server's [`dispatch`] and the
//! HTTP client's implementation. Adding an operation: one line here, its implementation
//! in `local`, and a test.

use zeroize::Zeroizing;

use super::http::client::RemoteKms;
use super::*;

macro_rules! operations {
    ($( $(#[doc = $doc:literal])* $name:ident => $method:ident($req:ty) -> $resp:ty; )*) => {
        /// A KMS operation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $( $(#[doc = $doc])* $name, )*
        }

        impl Op {
            /// Every operation, in table order.
            pub const ALL: &'static [Op] = &[$(Op::$name),*];

            /// AWS's name: the `X-Amz-Target` suffix and the audit record's `op`.
            pub fn name(self) -> &'static str {
                match self {
                    $( Op::$name => stringify!($name), )*
                }
            }

            /// The policy action that allows it (`kms:NAME`). ReEncrypt is the exception:
            /// AWS allows it with two actions, `kms:ReEncryptFrom` on the source key and
            /// `kms:ReEncryptTo` on the destination, which the implementation checks.
            pub fn action(self) -> &'static str {
                match self {
                    $( Op::$name => concat!("kms:", stringify!($name)), )*
                }
            }

            /// The operation called `name`.
            pub fn from_name(name: &str) -> Option<Op> {
                Op::ALL.iter().copied().find(|o| o.name() == name)
            }
        }

        impl Op {
            /// The operation a policy action (`kms:NAME`, or ReEncrypt's `kms:ReEncryptFrom`
            /// / `kms:ReEncryptTo`) belongs to.
            pub fn from_action(action: &str) -> Option<Op> {
                let name = action.strip_prefix("kms:")?;
                let name = name.strip_suffix("From").or_else(|| name.strip_suffix("To")).filter(|n| *n == "ReEncrypt").unwrap_or(name);
                Op::from_name(name)
            }

            /// AWS allows this operation on a key of another account ("Cross-account use:
            /// Yes" in the API reference), named by its key ARN or alias ARN.
            pub fn cross_account(self) -> bool {
                matches!(
                    self,
                    Op::CreateGrant | Op::Decapsulate | Op::Decrypt | Op::DeriveSharedSecret
                        | Op::DescribeKey | Op::Encapsulate | Op::Encrypt | Op::GenerateDataKey
                        | Op::GenerateDataKeyPair | Op::GenerateDataKeyPairWithoutPlaintext
                        | Op::GenerateDataKeyWithoutPlaintext | Op::GenerateMac
                        | Op::GetKeyRotationStatus | Op::GetPublicKey | Op::ListGrants
                        | Op::ReEncrypt | Op::RetireGrant | Op::RevokeGrant | Op::Sign
                        | Op::Verify | Op::VerifyMac
                )
            }
        }

        /// The operations kmsfs needs from a KMS, with AWS KMS names and shapes.
        pub trait Kms: Send + Sync {
            $( $(#[doc = $doc])* fn $method(&self, req: $req) -> KmsResult<$resp>; )*

            /// Not an AWS operation: performs automatic rotations that are due. The
            /// embedded KMS needs whoever holds the keystore to call this; a remote KMS
            /// rotates by itself.
            fn rotate_due(&self) -> KmsResult<Vec<String>> {
                Ok(vec![])
            }

            /// Not an AWS operation: makes what this process recorded verifiable now (the
            /// embedded KMS writes an audit checkpoint; it also does at close).
            fn flush_audit(&self) {}
        }

        /// Runs `op` on `kms` with a JSON request body; the JSON answer.
        pub fn dispatch(kms: &dyn Kms, op: Op, body: &[u8]) -> KmsResult<Zeroizing<Vec<u8>>> {
            match op {
                $( Op::$name => http::call(body, |r| kms.$method(r)), )*
            }
        }

        impl Kms for RemoteKms {
            $( fn $method(&self, req: $req) -> KmsResult<$resp> { self.call(Op::$name, &req) } )*
        }
    };
}

operations! {
    /// Creates a key (symmetric, `SYMMETRIC_DEFAULT`).
    CreateKey => create_key(CreateKeyRequest) -> CreateKeyResponse;
    /// A key's metadata.
    DescribeKey => describe_key(DescribeKeyRequest) -> DescribeKeyResponse;
    /// The keys, paginated.
    ListKeys => list_keys(ListKeysRequest) -> ListKeysResponse;
    /// Names a key.
    CreateAlias => create_alias(CreateAliasRequest) -> ();
    /// Points an alias at another key.
    UpdateAlias => update_alias(UpdateAliasRequest) -> ();
    /// Removes an alias.
    DeleteAlias => delete_alias(DeleteAliasRequest) -> ();
    /// The aliases (of one key, or all).
    ListAliases => list_aliases(ListAliasesRequest) -> ListAliasesResponse;
    /// Encrypts up to 4 KiB under a key.
    Encrypt => encrypt(EncryptRequest) -> EncryptResponse;
    /// Decrypts a ciphertext blob.
    Decrypt => decrypt(DecryptRequest) -> DecryptResponse;
    /// A new data key, in plaintext and wrapped.
    GenerateDataKey => generate_data_key(GenerateDataKeyRequest) -> GenerateDataKeyResponse;
    /// A new data key, wrapped only.
    GenerateDataKeyWithoutPlaintext => generate_data_key_without_plaintext(GenerateDataKeyRequest) -> GenerateDataKeyWithoutPlaintextResponse;
    /// Re-wraps a blob under another key (or another version) without revealing it.
    ReEncrypt => re_encrypt(ReEncryptRequest) -> ReEncryptResponse;
    /// Enables a key.
    EnableKey => enable_key(KeyIdRequest) -> ();
    /// Disables a key.
    DisableKey => disable_key(KeyIdRequest) -> ();
    /// Schedules a key's deletion after a waiting period.
    ScheduleKeyDeletion => schedule_key_deletion(ScheduleKeyDeletionRequest) -> ScheduleKeyDeletionResponse;
    /// Cancels a scheduled deletion (the key is then Disabled).
    CancelKeyDeletion => cancel_key_deletion(KeyIdRequest) -> KeyIdResponse;
    /// Gives a key a new version now.
    RotateKeyOnDemand => rotate_key_on_demand(KeyIdRequest) -> KeyIdResponse;
    /// Turns on scheduled rotation.
    EnableKeyRotation => enable_key_rotation(EnableKeyRotationRequest) -> ();
    /// Turns off scheduled rotation.
    DisableKeyRotation => disable_key_rotation(KeyIdRequest) -> ();
    /// Whether scheduled rotation is on, and when next.
    GetKeyRotationStatus => get_key_rotation_status(KeyIdRequest) -> GetKeyRotationStatusResponse;
    /// A key's versions.
    ListKeyRotations => list_key_rotations(ListKeyRotationsRequest) -> ListKeyRotationsResponse;
    /// A fresh shared secret and its ML-KEM ciphertext under an ML-KEM key's public key.
    Encapsulate => encapsulate(EncapsulateRequest) -> EncapsulateResponse;
    /// The shared secret of an ML-KEM ciphertext (implicit rejection).
    Decapsulate => decapsulate(DecapsulateRequest) -> DecapsulateResponse;
    /// Makes a replica of a multi-Region primary key in another Region (same id and material).
    ReplicateKey => replicate_key(ReplicateKeyRequest) -> ReplicateKeyResponse;
    /// Makes a replica of a multi-Region key its primary (the old primary becomes a replica).
    UpdatePrimaryRegion => update_primary_region(UpdatePrimaryRegionRequest) -> ();
    /// A key's policy.
    GetKeyPolicy => get_key_policy(GetKeyPolicyRequest) -> GetKeyPolicyResponse;
    /// Replaces a key's policy.
    PutKeyPolicy => put_key_policy(PutKeyPolicyRequest) -> ();
    /// The names of a key's policies (always `default`).
    ListKeyPolicies => list_key_policies(ListKeyPoliciesRequest) -> ListKeyPoliciesResponse;
    /// Replaces a key's description.
    UpdateKeyDescription => update_key_description(UpdateKeyDescriptionRequest) -> ();
    /// Adds or replaces tags of a key.
    TagResource => tag_resource(TagResourceRequest) -> ();
    /// Removes tags of a key.
    UntagResource => untag_resource(UntagResourceRequest) -> ();
    /// A key's tags, paginated.
    ListResourceTags => list_resource_tags(ListResourceTagsRequest) -> ListResourceTagsResponse;
    /// 1..1024 random bytes.
    GenerateRandom => generate_random(GenerateRandomRequest) -> GenerateRandomResponse;
    /// HMAC of a message under an HMAC key.
    GenerateMac => generate_mac(GenerateMacRequest) -> GenerateMacResponse;
    /// Checks an HMAC (KMSInvalidMacException if it does not match).
    VerifyMac => verify_mac(VerifyMacRequest) -> VerifyMacResponse;
    /// The public key of an asymmetric key (DER SubjectPublicKeyInfo).
    GetPublicKey => get_public_key(GetPublicKeyRequest) -> GetPublicKeyResponse;
    /// Signs a message or digest with an asymmetric SIGN_VERIFY key.
    Sign => sign(SignRequest) -> SignResponse;
    /// Checks a signature (KMSInvalidSignatureException if it does not verify).
    Verify => verify(VerifyRequest) -> VerifyResponse;
    /// ECDH between a KEY_AGREEMENT key and a peer's public key.
    DeriveSharedSecret => derive_shared_secret(DeriveSharedSecretRequest) -> DeriveSharedSecretResponse;
    /// A new RSA or ECC key pair, its private key also wrapped under a symmetric key.
    GenerateDataKeyPair => generate_data_key_pair(GenerateDataKeyPairRequest) -> GenerateDataKeyPairResponse;
    /// Lets a grantee use a key for some operations (under optional context constraints).
    CreateGrant => create_grant(CreateGrantRequest) -> CreateGrantResponse;
    /// A key's grants.
    ListGrants => list_grants(ListGrantsRequest) -> ListGrantsResponse;
    /// The grants a principal may retire.
    ListRetirableGrants => list_retirable_grants(ListRetirableGrantsRequest) -> ListGrantsResponse;
    /// Ends a grant (by its retiring principal, its grantee or its creator).
    RetireGrant => retire_grant(RetireGrantRequest) -> ();
    /// Ends a grant (by whoever the key policy allows kms:RevokeGrant).
    RevokeGrant => revoke_grant(RevokeGrantRequest) -> ();
    /// The same, without the plaintext private key.
    GenerateDataKeyPairWithoutPlaintext => generate_data_key_pair_without_plaintext(GenerateDataKeyPairRequest) -> GenerateDataKeyPairWithoutPlaintextResponse;
    /// An RSA public key and a token to wrap key material for an EXTERNAL key.
    GetParametersForImport => get_parameters_for_import(GetParametersForImportRequest) -> GetParametersForImportResponse;
    /// Imports wrapped key material into an EXTERNAL key.
    ImportKeyMaterial => import_key_material(ImportKeyMaterialRequest) -> ImportKeyMaterialResponse;
    /// Deletes an EXTERNAL key's material (it is PendingImport until reimported).
    DeleteImportedKeyMaterial => delete_imported_key_material(DeleteImportedKeyMaterialRequest) -> DeleteImportedKeyMaterialResponse;
    /// The last successful cryptographic operation with a key (from the audit log).
    GetKeyLastUsage => get_key_last_usage(GetKeyLastUsageRequest) -> GetKeyLastUsageResponse;
    /// Creates an external key store (keys whose second layer lives behind an XKS proxy).
    CreateCustomKeyStore => create_custom_key_store(CreateCustomKeyStoreRequest) -> CreateCustomKeyStoreResponse;
    /// The custom key stores, with their connection states.
    DescribeCustomKeyStores => describe_custom_key_stores(DescribeCustomKeyStoresRequest) -> DescribeCustomKeyStoresResponse;
    /// Connects a custom key store to its proxy (FAILED with an error code if it cannot).
    ConnectCustomKeyStore => connect_custom_key_store(CustomKeyStoreIdRequest) -> ();
    /// Disconnects a custom key store: its keys are unusable until it is connected again.
    DisconnectCustomKeyStore => disconnect_custom_key_store(CustomKeyStoreIdRequest) -> ();
    /// Changes a custom key store's name, proxy or credential.
    UpdateCustomKeyStore => update_custom_key_store(UpdateCustomKeyStoreRequest) -> ();
    /// Deletes a disconnected custom key store that holds no keys.
    DeleteCustomKeyStore => delete_custom_key_store(CustomKeyStoreIdRequest) -> ();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_actions_are_known_policy_actions() {
        for op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(*op));
            let known = policy::KMS_ACTIONS.contains(&op.action());
            assert_eq!(known, *op != Op::ReEncrypt, "{}", op.action());
        }
        assert_eq!(Op::from_name("Nope"), None);
    }
}
