//! Shapes of the custom key store operations (external key stores, XKS).
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XksProxyAuthenticationCredential {
    pub access_key_id: String,
    pub raw_secret_access_key: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateCustomKeyStoreRequest {
    pub custom_key_store_name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub custom_key_store_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_uri_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_uri_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_vpc_endpoint_service_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_authentication_credential: Option<XksProxyAuthenticationCredential>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_connectivity: Option<String>,
    /// CloudHSM key stores are not built: refused.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cloud_hsm_cluster_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trust_anchor_certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_store_password: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateCustomKeyStoreResponse {
    pub custom_key_store_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeCustomKeyStoresRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_key_store_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XksProxyConfiguration {
    pub connectivity: String,
    pub access_key_id: String,
    pub uri_endpoint: String,
    pub uri_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomKeyStoreEntry {
    pub custom_key_store_id: String,
    pub custom_key_store_name: String,
    pub custom_key_store_type: String,
    pub connection_state: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connection_error_code: Option<String>,
    pub creation_date: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_configuration: Option<XksProxyConfiguration>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeCustomKeyStoresResponse {
    pub custom_key_stores: Vec<CustomKeyStoreEntry>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomKeyStoreIdRequest {
    pub custom_key_store_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCustomKeyStoreRequest {
    pub custom_key_store_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub new_custom_key_store_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_uri_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_uri_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_vpc_endpoint_service_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_authentication_credential: Option<XksProxyAuthenticationCredential>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xks_proxy_connectivity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cloud_hsm_cluster_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_store_password: Option<String>,
}

/// The key's external key, in DescribeKey.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XksKeyConfiguration {
    pub id: String,
}
