//! Key tags and description, the list of a key's policy names, GenerateRandom; and the
//! request checks AWS applies to many operations (tags, grant tokens, DryRun).

use super::operations::paginate;
use super::*;

/// AWS's limits on tags: 50 per key, keys 1..=128 and values 0..=256 characters, the
/// `aws:` prefix reserved, no key twice in one request.
pub(super) fn check_tags(tags: &[Tag]) -> KmsResult<()> {
    // AWS's order: duplicates and count (TagException), then each tag's lengths (the
    // model's ValidationException) and the reserved prefix (TagException).
    for (i, t) in tags.iter().enumerate() {
        if tags[..i].iter().any(|o| o.tag_key == t.tag_key) {
            return Err(messages::duplicate_tag_keys());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(messages::too_many_tags());
    }
    for (i, t) in tags.iter().enumerate() {
        let at = |field: &str| format!("tags.{}.member.{field}", i + 1);
        let k = t.tag_key.encode_utf16().count();
        if !(1..=128).contains(&k) {
            return Err(messages::model_violation(
                &at("tagKey"),
                &t.tag_key,
                length_rule(k, 1, 128),
            ));
        }
        let v = t.tag_value.encode_utf16().count();
        if v > 256 {
            return Err(messages::model_violation(
                &at("tagValue"),
                &t.tag_value,
                length_rule(v, 0, 256),
            ));
        }
        if t.tag_key.to_ascii_lowercase().starts_with("aws:") {
            return Err(messages::reserved_tag());
        }
    }
    Ok(())
}

/// The model's rule a length `n` outside `min..=max` breaks.
pub(super) fn length_rule(n: usize, min: usize, max: usize) -> String {
    bound_rule("length", n < min, min as i64, max as i64)
}

/// The model's rule a value `n` outside `min..=max` breaks.
pub(super) fn value_rule(n: i64, min: i64, max: i64) -> String {
    bound_rule("value", n < min, min, max)
}

fn bound_rule(what: &str, below: bool, min: i64, max: i64) -> String {
    if below {
        format!("Member must have {what} greater than or equal to {min}")
    } else {
        format!("Member must have {what} less than or equal to {max}")
    }
}

/// A Sign, Verify or MAC message: 1..4096 bytes (a sensitive member: AWS does not echo it).
pub(super) fn check_message_len(message: &[u8]) -> KmsResult<()> {
    if message.is_empty() || message.len() > 4096 {
        return Err(messages::model_violations(&[Violation::maybe(
            "message",
            None,
            length_rule(message.len(), 1, 4096),
        )]));
    }
    Ok(())
}

const MAX_TAGS: usize = 50;

/// `DryRun: true`: everything was checked and would have succeeded; nothing is done.
pub(super) fn dry_run(flag: Option<bool>) -> KmsResult<()> {
    if flag == Some(true) {
        return Err(messages::dry_run());
    }
    Ok(())
}

impl LocalKms {
    pub(super) fn do_tag_resource(&self, req: TagResourceRequest) -> KmsResult<()> {
        check_tags(&req.tags)?;
        self.change_key(Op::TagResource.name(), &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            let mut tags = k.tags.clone();
            for t in req.tags {
                match tags.iter_mut().find(|o| o.tag_key == t.tag_key) {
                    Some(o) => o.tag_value = t.tag_value,
                    None => tags.push(t),
                }
            }
            if tags.len() > MAX_TAGS {
                return Err(messages::quota("tags on a key", MAX_TAGS));
            }
            k.tags = tags;
            Ok(())
        })
    }

    pub(super) fn do_untag_resource(&self, req: UntagResourceRequest) -> KmsResult<()> {
        if req.tag_keys.is_empty() || req.tag_keys.len() > MAX_TAGS {
            return Err(KmsError::validation(format!(
                "TagKeys must list 1..{MAX_TAGS} keys"
            )));
        }
        self.change_key(Op::UntagResource.name(), &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            k.tags.retain(|t| !req.tag_keys.contains(&t.tag_key));
            Ok(())
        })
    }

    pub(super) fn do_list_resource_tags(
        &self,
        req: ListResourceTagsRequest,
    ) -> KmsResult<ListResourceTagsResponse> {
        if req.limit.is_some_and(|l| l > MAX_TAGS as u32) {
            return Err(KmsError::validation(format!("Limit must be 1..{MAX_TAGS}")));
        }
        self.run(Op::ListResourceTags.name(), |info| {
            let s = self.snapshot()?;
            let k = self.authorized(&s, &req.key_id, Op::ListResourceTags.action(), None, info)?;
            let (tags, next) = paginate(&k.tags, req.limit.or(Some(MAX_TAGS as u32)), &req.marker)?;
            Ok(ListResourceTagsResponse {
                tags,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    pub(super) fn do_update_key_description(
        &self,
        req: UpdateKeyDescriptionRequest,
    ) -> KmsResult<()> {
        check_description(&req.description)?;
        self.change_key(Op::UpdateKeyDescription.name(), &req.key_id, |me, k| {
            me.not_pending_deletion(k)?;
            k.description = req.description;
            Ok(())
        })
    }

    pub(super) fn do_list_key_policies(
        &self,
        req: ListKeyPoliciesRequest,
    ) -> KmsResult<ListKeyPoliciesResponse> {
        self.run(Op::ListKeyPolicies.name(), |info| {
            let s = self.snapshot()?;
            self.authorized(&s, &req.key_id, Op::ListKeyPolicies.action(), None, info)?;
            let (names, next) = paginate(&["default".to_string()], req.limit, &req.marker)?;
            Ok(ListKeyPoliciesResponse {
                policy_names: names,
                truncated: next.is_some(),
                next_marker: next,
            })
        })
    }

    /// Random bytes need no key, so no key policy: any caller the KMS admits may ask.
    pub(super) fn do_generate_random(
        &self,
        req: GenerateRandomRequest,
    ) -> KmsResult<GenerateRandomResponse> {
        self.run(Op::GenerateRandom.name(), |_| {
            if let Some(id) = &req.custom_key_store_id {
                // Random bytes from a custom key store come from a CloudHSM cluster; the
                // only custom key stores here are external key stores.
                if self.snapshot()?.custom_key_stores.get(id).is_some_and(|c| self.is_callers(c)) {
                    return Err(KmsError::new(
                        ErrorCode::UnsupportedOperationException,
                        format!("{id} is an external key store: GenerateRandom takes random bytes only from a CloudHSM key store"),
                    ));
                }
                return Err(KmsError::new(
                    ErrorCode::CustomKeyStoreNotFoundException,
                    format!("Custom key store {id} does not exist."),
                ));
            }
            if req.recipient.is_some() {
                return Err(KmsError::new(
                    ErrorCode::UnsupportedOperationException,
                    "Recipient (Nitro Enclaves attestation) is not supported",
                ));
            }
            let n = match req.number_of_bytes {
                Some(n @ 1..=1024) => n as usize,
                Some(n) => return Err(super::blob::number_of_bytes(n as i64)),
                None => return Err(KmsError::validation("NumberOfBytes is required")),
            };
            let mut plaintext = Secret(vec![0u8; n]);
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut plaintext.0);
            Ok(GenerateRandomResponse { plaintext })
        })
    }
}

/// AWS's limit on a key's description.
pub(super) fn check_description(d: &str) -> KmsResult<()> {
    if d.chars().count() > 8192 {
        return Err(KmsError::validation(
            "Description is longer than 8192 characters",
        ));
    }
    Ok(())
}

/// The operations GetKeyLastUsage tracks (AWS's KeyLastUsageTrackingOperation).
const TRACKED: &[&str] = &[
    "Decrypt",
    "DeriveSharedSecret",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
];

fn epoch(rfc3339: &str) -> Option<f64> {
    humantime::parse_rfc3339(rfc3339)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

impl LocalKms {
    /// GetKeyLastUsage from the audit log: the newest successful tracked operation on the
    /// key within the newest `LAST_USE_WINDOW` bytes; tracking starts at the oldest record
    /// read (or the key's creation, if later). Aliases are refused, as AWS does.
    pub(super) fn do_get_key_last_usage(
        &self,
        req: GetKeyLastUsageRequest,
    ) -> KmsResult<GetKeyLastUsageResponse> {
        self.run(Op::GetKeyLastUsage.name(), |info| {
            if req.key_id.starts_with("alias/") || req.key_id.contains(":alias/") {
                return Err(KmsError::validation(
                    "GetKeyLastUsage takes a key id or key ARN, not an alias",
                ));
            }
            let s = self.snapshot()?;
            let op = Op::GetKeyLastUsage;
            let k = self.authorized(&s, &req.key_id, op.action(), None, info)?;
            let (found, oldest) = self
                .e
                .audit
                .last_use(&mut self.e.last_use.lock(), &k.id, TRACKED)
                .map_err(|e| KmsError::internal(format!("cannot read the audit log: {e}")))?;
            let start = oldest.as_deref().and_then(epoch).unwrap_or(k.created);
            Ok(GetKeyLastUsageResponse {
                key_id: self.arn(k),
                key_last_usage: found
                    .map(|r| KeyLastUsageData {
                        operation: Some(r.op),
                        timestamp: epoch(&r.time),
                        kms_request_id: Some(r.request_id),
                    })
                    .unwrap_or_default(),
                tracking_start_date: Some(start.max(k.created)),
                key_creation_date: Some(k.created),
            })
        })
    }
}
