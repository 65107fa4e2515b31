//! Shapes of key import (BYOK): GetParametersForImport, ImportKeyMaterial,
//! DeleteImportedKeyMaterial.
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};

use super::b64;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportRequest {
    pub key_id: String,
    pub wrapping_algorithm: String,
    pub wrapping_key_spec: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    pub key_id: String,
    #[serde(with = "b64")]
    pub import_token: Vec<u8>,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    pub parameters_valid_to: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialRequest {
    pub key_id: String,
    #[serde(with = "b64")]
    pub import_token: Vec<u8>,
    #[serde(with = "b64")]
    pub encrypted_key_material: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub valid_to: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expiration_model: Option<String>,
    /// NEW_KEY_MATERIAL (for a rotation) or EXISTING_KEY_MATERIAL (a reimport).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub import_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialResponse {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteImportedKeyMaterialRequest {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteImportedKeyMaterialResponse {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_material_id: Option<String>,
}
