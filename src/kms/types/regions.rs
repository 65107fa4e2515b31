//! Shapes of the multi-Region key operations (ReplicateKey, UpdatePrimaryRegion) and of
//! DescribeKey's MultiRegionConfiguration.
#![allow(missing_docs)]

use serde::{Deserialize, Serialize};

use super::{KeyMetadata, Tag};

/// One key of a multi-Region family: its ARN and Region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRegionKey {
    pub arn: String,
    pub region: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRegionConfiguration {
    /// PRIMARY or REPLICA.
    pub multi_region_key_type: String,
    pub primary_key: MultiRegionKey,
    pub replica_keys: Vec<MultiRegionKey>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicateKeyRequest {
    pub key_id: String,
    pub replica_region: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tags: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicateKeyResponse {
    pub replica_key_metadata: KeyMetadata,
    pub replica_policy: String,
    pub replica_tags: Vec<Tag>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdatePrimaryRegionRequest {
    pub key_id: String,
    pub primary_region: String,
}
