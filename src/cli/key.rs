//! `kmsfs key ...`: keys, aliases, policies, rotation and deletion (library calls and
//! printing).

use std::io::Read;

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::{fmt_epoch, local_dir, AliasCmd, KeyCmd, PolicyCmd};
use crate::kms::{
    CreateAliasRequest, CreateKeyRequest, DeleteAliasRequest, DescribeKeyRequest,
    EnableKeyRotationRequest, GenerateMacRequest, GetKeyPolicyRequest, GetPublicKeyRequest,
    KeyIdRequest, KmsLocation, ListAliasesRequest, ListKeyRotationsRequest, ListKeysRequest,
    ListResourceTagsRequest, PutKeyPolicyRequest, ReplicateKeyRequest, ScheduleKeyDeletionRequest,
    Secret, SignRequest, Tag, TagResourceRequest, UntagResourceRequest, VerifyMacRequest,
    VerifyRequest,
};

/// `--algorithm`, else the key's first signing algorithm.
fn signing_algorithm(
    kms: &dyn crate::kms::Kms,
    key: &str,
    given: Option<String>,
) -> Result<String> {
    if let Some(a) = given {
        return Ok(a);
    }
    let md = kms
        .describe_key(DescribeKeyRequest {
            key_id: key.to_string(),
        })
        .with_context(|| format!("key {key}"))?
        .key_metadata;
    md.signing_algorithms.first().cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not a signing key (KeyUsage {})",
            md.arn,
            md.key_usage
        )
    })
}

/// The bytes of FILE, or of stdin without one.
fn read_input(file: Option<&std::path::Path>) -> Result<Vec<u8>> {
    match file {
        Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display())),
        None => {
            let mut v = vec![];
            std::io::stdin().read_to_end(&mut v)?;
            Ok(v)
        }
    }
}

fn normalize_alias(a: &str) -> String {
    if a.starts_with("alias/") {
        a.to_string()
    } else {
        format!("alias/{a}")
    }
}

pub(super) fn run(kms_arg: Option<&str>, cmd: KeyCmd) -> Result<()> {
    let loc = KmsLocation::resolve(kms_arg)?;
    match cmd {
        KeyCmd::Create {
            alias,
            description,
            spec,
            usage,
            multi_region,
        } => {
            let kms = loc.open(true)?;
            let md = kms
                .create_key(CreateKeyRequest {
                    description,
                    key_spec: spec,
                    key_usage: usage,
                    multi_region: multi_region.then_some(true),
                    ..Default::default()
                })?
                .key_metadata;
            if let Some(a) = alias {
                let a = normalize_alias(&a);
                kms.create_alias(CreateAliasRequest {
                    alias_name: a.clone(),
                    target_key_id: md.key_id.clone(),
                })
                .with_context(|| format!("key {} was created, but alias {a} was not", md.arn))?;
            }
            println!("{}", md.arn);
        }
        KeyCmd::Replicate {
            key,
            region,
            description,
        } => {
            let r = loc
                .open(false)?
                .replicate_key(ReplicateKeyRequest {
                    key_id: key.clone(),
                    replica_region: region,
                    description,
                    ..Default::default()
                })
                .with_context(|| format!("key {key}"))?;
            println!("{}", r.replica_key_metadata.arn);
        }
        KeyCmd::Mac { key, file, verify } => {
            let kms = loc.open(false)?;
            let message = Secret(read_input(file.as_deref())?);
            // The algorithm is the key's own (an HMAC key has exactly one).
            let md = kms
                .describe_key(DescribeKeyRequest {
                    key_id: key.clone(),
                })
                .with_context(|| format!("key {key}"))?
                .key_metadata;
            let Some(alg) = md.mac_algorithms.first().cloned() else {
                anyhow::bail!("{} is not an HMAC key (KeySpec {})", md.arn, md.key_spec);
            };
            match verify {
                None => {
                    let r = kms.generate_mac(GenerateMacRequest {
                        key_id: key,
                        message,
                        mac_algorithm: alg,
                        ..Default::default()
                    })?;
                    println!("{}", B64.encode(r.mac));
                }
                Some(mac) => {
                    let mac = B64.decode(mac.trim()).context("--verify: not base64")?;
                    kms.verify_mac(VerifyMacRequest {
                        key_id: key,
                        message,
                        mac_algorithm: alg,
                        mac,
                        ..Default::default()
                    })?;
                    println!("MAC valid");
                }
            }
        }
        KeyCmd::PublicKey { key, pem } => {
            let r = loc.open(false)?.get_public_key(GetPublicKeyRequest {
                key_id: key,
                ..Default::default()
            })?;
            let b64 = B64.encode(&r.public_key);
            if pem {
                println!("-----BEGIN PUBLIC KEY-----");
                for line in b64.as_bytes().chunks(64) {
                    println!("{}", String::from_utf8_lossy(line));
                }
                println!("-----END PUBLIC KEY-----");
            } else {
                println!("{b64}");
            }
        }
        KeyCmd::Sign {
            key,
            file,
            algorithm,
            digest,
        } => {
            let kms = loc.open(false)?;
            let alg = signing_algorithm(&*kms, &key, algorithm)?;
            let r = kms.sign(SignRequest {
                key_id: key,
                message: Secret(read_input(file.as_deref())?),
                message_type: Some(if digest { "DIGEST" } else { "RAW" }.into()),
                signing_algorithm: alg,
                ..Default::default()
            })?;
            println!("{}", B64.encode(r.signature));
        }
        KeyCmd::Verify {
            key,
            signature,
            file,
            algorithm,
            digest,
        } => {
            let kms = loc.open(false)?;
            let alg = signing_algorithm(&*kms, &key, algorithm)?;
            kms.verify(VerifyRequest {
                key_id: key,
                message: Secret(read_input(file.as_deref())?),
                message_type: Some(if digest { "DIGEST" } else { "RAW" }.into()),
                signature: B64
                    .decode(signature.trim())
                    .context("SIGNATURE: not base64")?,
                signing_algorithm: alg,
                ..Default::default()
            })?;
            println!("signature valid");
        }
        KeyCmd::Tag { key, tags } => {
            let tags = super::grant::pairs(&tags)?
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| Tag {
                    tag_key: k,
                    tag_value: v,
                })
                .collect();
            loc.open(false)?
                .tag_resource(TagResourceRequest { key_id: key, tags })?;
        }
        KeyCmd::Untag { key, tag_keys } => {
            loc.open(false)?.untag_resource(UntagResourceRequest {
                key_id: key,
                tag_keys,
            })?
        }
        KeyCmd::Tags { key } => {
            let kms = loc.open(false)?;
            let mut marker = None;
            loop {
                let r = kms.list_resource_tags(ListResourceTagsRequest {
                    key_id: key.clone(),
                    limit: None,
                    marker,
                })?;
                for t in r.tags {
                    println!("{}={}", t.tag_key, t.tag_value);
                }
                if !r.truncated {
                    break;
                }
                marker = r.next_marker;
            }
        }
        KeyCmd::List { json } => {
            let kms = loc.open(false)?;
            let mut keys = vec![];
            let mut marker = None;
            loop {
                let r = kms.list_keys(ListKeysRequest {
                    limit: Some(1000),
                    marker,
                })?;
                keys.extend(r.keys);
                if !r.truncated {
                    break;
                }
                marker = r.next_marker;
            }
            let aliases = kms.list_aliases(ListAliasesRequest::default())?.aliases;
            let mut rows = vec![];
            for k in keys {
                let md = match kms.describe_key(DescribeKeyRequest {
                    key_id: k.key_id.clone(),
                }) {
                    Ok(r) => r.key_metadata,
                    Err(e) => {
                        // a key the caller may not describe is listed, not fatal
                        if !json {
                            println!("{}\t({})", k.key_arn, e.code.name());
                        }
                        continue;
                    }
                };
                let names: Vec<String> = aliases
                    .iter()
                    .filter(|a| a.target_key_id == md.key_id)
                    .map(|a| a.alias_name.clone())
                    .collect();
                rows.push((md, names));
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(md, names)| serde_json::json!({"KeyMetadata": md, "Aliases": names}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (md, names) in rows {
                    println!(
                        "{}\t{}\t{}\t{}",
                        md.arn,
                        md.key_state,
                        names.join(","),
                        md.description
                    );
                }
            }
        }
        KeyCmd::Describe { key } => {
            let kms = loc.open(false)?;
            let md = kms
                .describe_key(DescribeKeyRequest {
                    key_id: key.clone(),
                })
                .with_context(|| format!("key {key}"))?;
            let id = md.key_metadata.key_id.clone();
            // Extras the caller may not be allowed to see are left out, not fatal.
            let rot = kms
                .get_key_rotation_status(KeyIdRequest { key_id: id.clone() })
                .ok();
            let rots = kms
                .list_key_rotations(ListKeyRotationsRequest {
                    key_id: id.clone(),
                    ..Default::default()
                })
                .ok()
                .map(|r| r.rotations);
            let aliases = kms
                .list_aliases(ListAliasesRequest {
                    key_id: Some(id),
                    ..Default::default()
                })
                .ok()
                .map(|r| {
                    r.aliases
                        .into_iter()
                        .map(|a| a.alias_name)
                        .collect::<Vec<_>>()
                });
            let v = serde_json::json!({
                "KeyMetadata": md.key_metadata,
                "Aliases": aliases,
                "Rotation": rot,
                "Rotations": rots,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        KeyCmd::Rotate { key } => {
            let kms = loc.open(false)?;
            let r = kms.rotate_key_on_demand(KeyIdRequest {
                key_id: key.clone(),
            })?;
            let md = kms
                .describe_key(DescribeKeyRequest {
                    key_id: r.key_id.clone(),
                })?
                .key_metadata;
            println!(
                "{} now at key material {}",
                r.key_id,
                md.current_key_material_id.unwrap_or_default()
            );
        }
        KeyCmd::EnableRotation { key, days } => {
            loc.open(false)?
                .enable_key_rotation(EnableKeyRotationRequest {
                    key_id: key,
                    rotation_period_in_days: Some(days),
                })?;
        }
        KeyCmd::DisableRotation { key } => loc
            .open(false)?
            .disable_key_rotation(KeyIdRequest { key_id: key })?,
        KeyCmd::Rotations { key } => {
            let r = loc
                .open(false)?
                .list_key_rotations(ListKeyRotationsRequest {
                    key_id: key,
                    ..Default::default()
                })?;
            for e in r.rotations {
                println!(
                    "{}\t{}\t{}",
                    e.rotation_date.map(fmt_epoch).unwrap_or_else(|| "-".into()),
                    e.rotation_type.as_deref().unwrap_or("-"),
                    e.key_material_id
                );
            }
        }
        KeyCmd::PurgeDue => {
            let dir = local_dir(kms_arg)?;
            for arn in crate::kms::local::LocalKms::open(&dir, false)?.purge_due_keys()? {
                println!("deleted {arn}");
            }
        }
        KeyCmd::RotateDue => {
            for arn in loc.open(false)?.rotate_due()? {
                println!("rotated {arn}");
            }
        }
        KeyCmd::Enable { key } => loc.open(false)?.enable_key(KeyIdRequest { key_id: key })?,
        KeyCmd::Disable { key } => loc.open(false)?.disable_key(KeyIdRequest { key_id: key })?,
        KeyCmd::ScheduleDeletion { key, days } => {
            let r = loc
                .open(false)?
                .schedule_key_deletion(ScheduleKeyDeletionRequest {
                    key_id: key,
                    pending_window_in_days: Some(days),
                })?;
            match r.deletion_date {
                Some(d) => println!("{} will be deleted at {}", r.key_id, fmt_epoch(d)),
                None => println!(
                    "{} will be deleted once its replicas in other Regions are ({})",
                    r.key_id, r.key_state
                ),
            }
        }
        KeyCmd::CancelDeletion { key } => {
            let r = loc
                .open(false)?
                .cancel_key_deletion(KeyIdRequest { key_id: key })?;
            println!("{} deletion cancelled; the key is Disabled", r.key_id);
        }
        KeyCmd::Alias(a) => {
            let kms = loc.open(false)?;
            match a {
                AliasCmd::Create { name, key } => kms.create_alias(CreateAliasRequest {
                    alias_name: normalize_alias(&name),
                    target_key_id: key,
                })?,
                AliasCmd::Update { name, key } => kms.update_alias(CreateAliasRequest {
                    alias_name: normalize_alias(&name),
                    target_key_id: key,
                })?,
                AliasCmd::Delete { name } => kms.delete_alias(DeleteAliasRequest {
                    alias_name: normalize_alias(&name),
                })?,
                AliasCmd::List => {
                    for a in kms.list_aliases(ListAliasesRequest::default())?.aliases {
                        println!("{}\t{}", a.alias_name, a.target_key_id);
                    }
                }
            }
        }
        KeyCmd::Policy(p) => {
            let kms = loc.open(false)?;
            match p {
                PolicyCmd::Get { key } => {
                    let r = kms.get_key_policy(GetKeyPolicyRequest {
                        key_id: key,
                        policy_name: None,
                    })?;
                    let pretty = serde_json::from_str::<serde_json::Value>(&r.policy)
                        .and_then(|v| serde_json::to_string_pretty(&v))
                        .unwrap_or(r.policy);
                    println!("{pretty}");
                }
                PolicyCmd::Put { key, file } => {
                    let text = match file {
                        Some(f) => std::fs::read_to_string(&f)
                            .with_context(|| format!("cannot read {}", f.display()))?,
                        None => {
                            let mut s = String::new();
                            std::io::stdin().read_to_string(&mut s)?;
                            s
                        }
                    };
                    kms.put_key_policy(PutKeyPolicyRequest {
                        key_id: key,
                        policy: text,
                        policy_name: None,
                        bypass_policy_lockout_safety_check: None,
                    })?;
                }
            }
        }
    }
    Ok(())
}
