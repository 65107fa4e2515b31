//! AWS KMS request/response shapes (field names as on the wire, base64 blobs, epoch-second
//! timestamps). Plaintext fields are `Secret`: zeroized on drop, redacted in Debug.
//!
//! Each shape and field is AWS's, under AWS's name (serde renames it on the wire), and
//! documented by the AWS KMS API reference; restating that per field here would only
//! drift, so this module alone is exempt from `missing_docs`.
#![allow(missing_docs)]

mod asym;
mod grants;
mod import;
mod regions;
mod xks;
pub use asym::*;
pub use grants::*;
pub use import::*;
pub use regions::*;
pub use xks::*;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub type EncryptionContext = BTreeMap<String, String>;

/// Secret bytes (a plaintext or a data key): base64 on the wire, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq, Default)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        b64::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        b64::deserialize(d).map(Secret)
    }
}

/// Emulators send `null` for fields AWS always fills; read those as the default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// serde helper: Vec<u8> as standard base64.
pub mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateKeyRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_usage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass_policy_lockout_safety_check: Option<bool>,
    /// AWS_KMS, or EXTERNAL (a key without material until ImportKeyMaterial).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// A multi-Region primary key (`mrk-` id): replicas in other Regions share its
    /// id and material (ReplicateKey).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_region: Option<bool>,
    /// The custom key store (an external key store) of an EXTERNAL_KEY_STORE key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    /// The external key (its id at the store's XKS proxy) of an EXTERNAL_KEY_STORE key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xks_key_id: Option<String>,
    /// The deprecated name of KeySpec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_master_key_spec: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    #[serde(default, deserialize_with = "null_default")]
    pub aws_account_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub key_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub arn: String,
    #[serde(default, deserialize_with = "null_default")]
    pub creation_date: f64,
    #[serde(default, deserialize_with = "null_default")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub description: String,
    #[serde(default, deserialize_with = "null_default")]
    pub key_usage: String,
    #[serde(default, deserialize_with = "null_default")]
    pub key_state: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deletion_date: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pending_deletion_window_in_days: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub origin: String,
    #[serde(default, deserialize_with = "null_default")]
    pub key_manager: String,
    #[serde(default, deserialize_with = "null_default")]
    pub key_spec: String,
    #[serde(default, deserialize_with = "null_default")]
    pub customer_master_key_spec: String,
    #[serde(default, deserialize_with = "null_default")]
    pub encryption_algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub current_key_material_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub multi_region: bool,
    /// A multi-Region key: its primary and replicas.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub multi_region_configuration: Option<MultiRegionConfiguration>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub mac_algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub signing_algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub key_agreement_algorithms: Vec<String>,
    /// ML-KEM keys: ML_KEM.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub encapsulation_algorithms: Vec<String>,
    /// Imported material: KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expiration_model: Option<String>,
    /// When imported material expires.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub valid_to: Option<f64>,
    /// A key in a custom key store: its id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub custom_key_store_id: Option<String>,
    /// A key in an external key store: its external key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_key_configuration: Option<XksKeyConfiguration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyResponse {
    pub key_metadata: KeyMetadata,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyRequest {
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyResponse {
    pub key_metadata: KeyMetadata,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListKeysRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    pub keys: Vec<KeyListEntry>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateAliasRequest {
    pub alias_name: String,
    pub target_key_id: String,
}

pub type UpdateAliasRequest = CreateAliasRequest;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteAliasRequest {
    pub alias_name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListAliasesRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AliasListEntry {
    pub alias_name: String,
    pub alias_arn: String,
    pub target_key_id: String,
    pub creation_date: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasListEntry>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptRequest {
    pub key_id: String,
    pub plaintext: Secret,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encryption_algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    pub key_id: String,
    #[serde(default)]
    pub encryption_algorithm: String,
    /// Not in AWS's Encrypt response, so never on the wire: the embedded KMS fills it for
    /// its in-process callers (a tree's recovery wraps record their key material).
    #[serde(skip_serializing, default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encryption_algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    pub key_id: String,
    pub plaintext: Secret,
    #[serde(default)]
    pub encryption_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_spec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub number_of_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    pub plaintext: Secret,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyWithoutPlaintextResponse {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptRequest {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_encryption_context: Option<EncryptionContext>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_key_id: Option<String>,
    pub destination_key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination_encryption_context: Option<EncryptionContext>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_encryption_algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination_encryption_algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    #[serde(with = "b64")]
    pub ciphertext_blob: Vec<u8>,
    pub source_key_id: String,
    pub key_id: String,
    #[serde(default)]
    pub source_encryption_algorithm: String,
    #[serde(default)]
    pub destination_encryption_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_key_material_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination_key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdRequest {
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdResponse {
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionRequest {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pending_window_in_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    pub key_id: String,
    /// None while a multi-Region primary waits for its replicas (PendingReplicaDeletion).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deletion_date: Option<f64>,
    pub key_state: String,
    pub pending_window_in_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnableKeyRotationRequest {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rotation_period_in_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyRotationStatusResponse {
    pub key_id: String,
    pub key_rotation_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rotation_period_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_rotation_date: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsRequest {
    pub key_id: String,
    /// ROTATIONS_ONLY (default) or ALL_KEY_MATERIAL (also the first material and
    /// imported material pending rotation).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub include_key_material: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEntry {
    pub key_id: String,
    pub key_material_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_description: Option<String>,
    /// CURRENT, NON_CURRENT or PENDING_ROTATION.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_state: Option<String>,
    /// Imported material: IMPORTED or PENDING_IMPORT (deleted or expired).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub import_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expiration_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub valid_to: Option<f64>,
    /// When the material became current (absent for material pending rotation).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rotation_date: Option<f64>,
    /// AUTOMATIC or ON_DEMAND (absent for the first material).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rotation_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsResponse {
    pub rotations: Vec<RotationEntry>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyRequest {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyResponse {
    pub policy: String,
    pub policy_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutKeyPolicyRequest {
    pub key_id: String,
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResourceRequest {
    pub key_id: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagResourceRequest {
    pub key_id: String,
    pub tag_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsRequest {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsResponse {
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_marker: Option<String>,
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateKeyDescriptionRequest {
    pub key_id: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesRequest {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesResponse {
    #[serde(default)]
    pub policy_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_marker: Option<String>,
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GenerateRandomRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    /// Nitro Enclaves attestation: not supported (refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    pub plaintext: Secret,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacRequest {
    pub key_id: String,
    pub message: Secret,
    pub mac_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacResponse {
    #[serde(with = "b64")]
    pub mac: Vec<u8>,
    pub mac_algorithm: String,
    pub key_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacRequest {
    pub key_id: String,
    pub message: Secret,
    pub mac_algorithm: String,
    #[serde(with = "b64")]
    pub mac: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacResponse {
    pub key_id: String,
    pub mac_valid: bool,
    pub mac_algorithm: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyLastUsageRequest {
    pub key_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyLastUsageData {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timestamp: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kms_request_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyLastUsageResponse {
    pub key_id: String,
    #[serde(default)]
    pub key_last_usage: KeyLastUsageData,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tracking_start_date: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_creation_date: Option<f64>,
}
