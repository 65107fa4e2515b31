//! `kmsfs xks ...`: the XKS proxy, its keys and credentials.

use std::io::Write;

use anyhow::{bail, Result};

use super::{XksCmd, XksCredentialCmd, XksKeyCmd};

pub(super) fn run(cmd: XksCmd) -> Result<()> {
    match cmd {
        XksCmd::Serve { config, listen } => {
            super::logging::init_logging(true);
            let mut cfg = crate::xks::Config::load(&config)?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            let r = crate::xks::serve(cfg, |addr| {
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            });
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            Ok(r?)
        }
        XksCmd::Key {
            cmd:
                XksKeyCmd::Create {
                    label,
                    token,
                    usage,
                },
        } => {
            if !crate::xks::config::valid_key_id(&label) || label == crate::xks::token::HEALTH_KEY {
                bail!("key label {label:?}: at most 128 characters, letters, digits, '-', '.' and '_' (and not {})", crate::xks::token::HEALTH_KEY);
            }
            let uri = crate::hsm::Uri::parse_token(&token)?;
            crate::xks::token::create_key(&uri, &label, usage != "decrypt", usage != "encrypt")?;
            println!("{label}");
            Ok(())
        }
        XksCmd::Credential {
            cmd:
                XksCredentialCmd::Create {
                    secret_file,
                    aws_json,
                    path_prefix,
                },
        } => {
            let (akid, secret) = crate::xks::config::new_credential();
            write_private(&secret_file, format!("{}\n", secret.as_str()).as_bytes())?;
            if let Some(j) = aws_json {
                let doc =
                    zeroize::Zeroizing::new(serde_json::to_string_pretty(&serde_json::json!({
                        "XksProxyUriPath": format!("{path_prefix}/kms/xks/v1"),
                        "XksProxyAuthenticationCredential": {
                            "AccessKeyId": akid,
                            "RawSecretAccessKey": secret.as_str(),
                        }
                    }))?);
                write_private(&j, doc.as_bytes())?;
            }
            println!("{akid}");
            Ok(())
        }
    }
}

/// Creates `p` (0600) with `data`; an existing file is not replaced.
fn write_private(p: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
