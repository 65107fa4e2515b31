//! `kmsfs kms serve|principal` and `kmsfs audit` (library calls and printing).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::{fmt_epoch, local_dir, AuditCmd, AuditFilter, KmsCmd, PrincipalCmd, SealCmd};
use crate::kms::Kms;

pub(super) fn run(kms_arg: Option<&str>, cmd: KmsCmd) -> Result<()> {
    match cmd {
        KmsCmd::Serve {
            listen,
            keystore,
            tls_cert,
            tls_key,
            insecure_http,
            max_connections,
            max_per_source,
            idle_timeout,
            region,
            account_id,
            xks_admins,
            max_rate,
            max_request_bytes,
            quotas,
        } => {
            super::logging::init_logging(true);
            crate::kms::local::set_xks_admins(xks_admins);
            if let Some(q) = quotas {
                crate::kms::local::set_quotas(crate::kms::local::Quotas::parse(&q)?);
            }
            let dir = match keystore {
                Some(d) => d,
                None => local_dir(kms_arg)?,
            };
            let regions =
                crate::kms::local::region_list(&region.unwrap_or_else(crate::kms::env_region))?;
            // One view of the keystore per Region (scoped to it when there are several).
            let mut views = Vec::with_capacity(regions.len());
            let mut tickers = Vec::with_capacity(regions.len());
            for r in &regions {
                let kms = crate::kms::local::LocalKms::open(&dir, true)?.serving_one_of(
                    r,
                    &account_id,
                    regions.len() > 1,
                )?;
                // automatic rotations are performed by whoever holds the keystore
                let rot: Arc<dyn Kms> = Arc::new(kms.with_caller(kms.caller().clone()));
                crate::kms::spawn_rotation_ticker(Arc::downgrade(&rot));
                tickers.push(rot);
                views.push(kms);
            }
            let opts = crate::kms::http::server::ServeOpts {
                listen,
                tls: tls_cert.zip(tls_key),
                insecure_http,
                max_connections,
                idle_timeout: std::time::Duration::from_secs(idle_timeout.max(1)),
                max_per_source: max_per_source.unwrap_or(max_connections / 4).max(1),
                limits: crate::kms::http::limits::Limits {
                    rate: max_rate.max(1.0),
                    bytes: (max_request_bytes as f64).max(65536.0),
                },
            };
            let r = crate::kms::http::server::serve(views, opts, |addr| {
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
                // systemd Type=notify: the listener accepts connections now
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            });
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            drop(tickers);
            Ok(r?)
        }
        KmsCmd::Unlock { duration } => {
            let d = humantime::parse_duration(&duration)
                .with_context(|| format!("--for {duration}: not a duration (e.g. 15m, 1h)"))?;
            if d > std::time::Duration::from_secs(24 * 3600) {
                bail!("--for {duration}: at most 24h");
            }
            let dir = local_dir(kms_arg)?;
            crate::seal::unlock_for(&dir, d.as_secs() as u32)?;
            println!(
                "keystore {} unlocked for {}",
                dir.display(),
                humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
            );
            Ok(())
        }
        KmsCmd::Lock => {
            let dir = local_dir(kms_arg)?;
            match crate::seal::lock(&dir) {
                true => println!("keystore {} locked", dir.display()),
                false => println!("keystore {} was not unlocked", dir.display()),
            }
            Ok(())
        }
        KmsCmd::Seal(SealCmd::Show) => {
            println!("{}", crate::seal::describe(&local_dir(kms_arg)?)?);
            Ok(())
        }
        KmsCmd::Seal(SealCmd::Change { to }) => {
            let dir = local_dir(kms_arg)?;
            crate::seal::change(&dir, &crate::seal::SealTarget::parse(&to)?)?;
            println!("{}", crate::seal::describe(&dir)?);
            Ok(())
        }
        KmsCmd::Principal(p) => {
            let kms = crate::kms::local::LocalKms::open(&local_dir(kms_arg)?, false)?;
            match p {
                PrincipalCmd::Create { name, account } => {
                    let (akid, secret) = kms.create_principal(&name, account.as_deref())?;
                    println!("principal {name}");
                    println!("aws_access_key_id = {akid}");
                    println!(
                        "aws_secret_access_key = {}",
                        String::from_utf8_lossy(&secret.0)
                    );
                    eprintln!("kmsfs: the secret is shown only now; store it (e.g. in ~/.aws/credentials)");
                }
                PrincipalCmd::List => {
                    for p in kms.list_principals()? {
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            p.name,
                            p.access_key_id,
                            p.account,
                            if p.enabled { "enabled" } else { "disabled" },
                            fmt_epoch(p.created)
                        );
                    }
                }
                PrincipalCmd::Disable { name } => kms.change_principal(&name, Some(false))?,
                PrincipalCmd::Enable { name } => kms.change_principal(&name, Some(true))?,
                PrincipalCmd::Delete { name } => kms.change_principal(&name, None)?,
            }
            Ok(())
        }
    }
}

pub(super) fn audit(kms_arg: Option<&str>, cmd: AuditCmd) -> Result<()> {
    let dir = local_dir(kms_arg)?;
    match cmd {
        AuditCmd::Verify { json, anchor } => {
            let kms = crate::kms::local::LocalKms::open_unchecked(&dir, false)?;
            let vouched = kms.audit_vouched();
            match kms.audit().verify_with(vouched.as_ref(), anchor.as_deref()) {
                Ok(r) => {
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!(
                            "audit log OK: {} records, {} checkpoints, {} records after the last checkpoint",
                            r.records, r.checkpoints, r.unchecked_tail
                        );
                    }
                    Ok(())
                }
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": false, "seq": e.seq, "reason": e.reason})
                        );
                    }
                    bail!("{e}")
                }
            }
        }
        AuditCmd::Show(f) => show_audit(&dir, &f, None),
        AuditCmd::Tail { n, filter } => show_audit(&dir, &filter, Some(n)),
    }
}

fn show_audit(dir: &Path, f: &AuditFilter, last: Option<usize>) -> Result<()> {
    // A log in the keystore directory is read without unsealing the keystore; one in a
    // database is reached through the keystore (its root key opens the store).
    let recs = match crate::kms::store::chosen()? {
        Some(l) if l.is_shared() => crate::kms::local::LocalKms::open_unchecked(dir, false)?
            .audit()
            .records()?,
        _ => crate::kms::audit::read_records(dir)?,
    };
    print_audit(recs, f, last)
}

fn print_audit(
    recs: Vec<crate::kms::audit::Record>,
    f: &AuditFilter,
    last: Option<usize>,
) -> Result<()> {
    let parse_time = |s: &Option<String>| -> Result<Option<std::time::SystemTime>> {
        s.as_deref()
            .map(|t| {
                humantime::parse_rfc3339_weak(t).with_context(|| format!("invalid time {t:?}"))
            })
            .transpose()
    };
    let (since, until) = (parse_time(&f.since)?, parse_time(&f.until)?);
    let recs: Vec<_> = recs
        .into_iter()
        .filter(|r| {
            f.key
                .as_ref()
                .is_none_or(|k| r.key_arn.as_deref().is_some_and(|a| a.contains(k.as_str())))
        })
        .filter(|r| f.principal.as_ref().is_none_or(|p| &r.principal == p))
        .filter(|r| f.op.as_ref().is_none_or(|o| r.op.eq_ignore_ascii_case(o)))
        .filter(|r| {
            let t = humantime::parse_rfc3339_weak(&r.time).ok();
            since.is_none_or(|s| t.is_some_and(|t| t >= s))
                && until.is_none_or(|u| t.is_some_and(|t| t <= u))
        })
        .collect();
    let skip = last.map(|n| recs.len().saturating_sub(n)).unwrap_or(0);
    for r in &recs[skip..] {
        if f.json {
            let mut v = serde_json::to_value(r)?;
            v["hash"] = serde_json::Value::String(r.hash.clone());
            println!("{v}");
        } else {
            println!(
                "{:>6} {} {:<14} {:<28} {:<6} {} {}",
                r.seq,
                r.time,
                r.principal,
                r.op,
                r.error_code.as_deref().unwrap_or(&r.outcome),
                r.key_arn.as_deref().unwrap_or("-"),
                r.source
            );
        }
    }
    Ok(())
}
