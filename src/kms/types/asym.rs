//! Shapes of the asymmetric operations (Sign, Verify, GetPublicKey, data key pairs).
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};

use super::{b64, EncryptionContext, Secret};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyRequest {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    pub key_id: String,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    pub customer_master_key_spec: String,
    pub key_spec: String,
    pub key_usage: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub encryption_algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub signing_algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub key_agreement_algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub encapsulation_algorithms: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignRequest {
    pub key_id: String,
    pub message: Secret,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_type: Option<String>,
    pub signing_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignResponse {
    pub key_id: String,
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    pub signing_algorithm: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyRequest {
    pub key_id: String,
    pub message: Secret,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_type: Option<String>,
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    pub signing_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyResponse {
    pub key_id: String,
    pub signature_valid: bool,
    pub signing_algorithm: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairRequest {
    pub key_id: String,
    pub key_pair_spec: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encryption_context: Option<EncryptionContext>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
    /// Nitro Enclaves attestation: not supported (refused).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recipient: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairResponse {
    #[serde(with = "b64")]
    pub private_key_ciphertext_blob: Vec<u8>,
    pub private_key_plaintext: Secret,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    pub key_id: String,
    pub key_pair_spec: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairWithoutPlaintextResponse {
    #[serde(with = "b64")]
    pub private_key_ciphertext_blob: Vec<u8>,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    pub key_id: String,
    pub key_pair_spec: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretRequest {
    pub key_id: String,
    pub key_agreement_algorithm: String,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
    /// Nitro Enclaves attestation: not supported (refused).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recipient: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretResponse {
    pub key_id: String,
    pub shared_secret: Secret,
    pub key_agreement_algorithm: String,
    pub key_origin: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncapsulateRequest {
    pub key_id: String,
    /// ML_KEM (the only one).
    #[serde(default)]
    pub encapsulation_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncapsulateResponse {
    pub key_id: String,
    pub shared_secret: Secret,
    #[serde(with = "b64")]
    pub shared_secret_ciphertext_blob: Vec<u8>,
    pub encapsulation_algorithm: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecapsulateRequest {
    pub key_id: String,
    #[serde(with = "b64")]
    pub shared_secret_ciphertext_blob: Vec<u8>,
    #[serde(default)]
    pub encapsulation_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant_tokens: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecapsulateResponse {
    pub key_id: String,
    pub shared_secret: Secret,
    pub encapsulation_algorithm: String,
}
