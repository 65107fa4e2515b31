//! Where the KMS is (`--kms`, `KMSFS_KMS`), and opening it.

use super::{local, remote, Kms};

/// Where the KMS is: `local:DIR` (embedded, the default), an endpoint `https://HOST:PORT`
/// (our `kmsfs kms serve`, moto, ...), or `aws:REGION` (AWS KMS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsLocation {
    /// The embedded KMS over a keystore directory.
    Local(std::path::PathBuf),
    /// An AWS-KMS-compatible endpoint, and the region requests are signed for.
    Remote {
        /// `https://HOST[:PORT]/`.
        endpoint: String,
        /// The region requests are signed for.
        region: String,
    },
}

/// The region from AWS_REGION or AWS_DEFAULT_REGION, else us-east-1 (the AWS tools' rule).
pub fn env_region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".into())
}

impl KmsLocation {
    /// Parses `local:DIR`, `local`, `https://HOST[:PORT]` or `aws:REGION`.
    pub fn parse(s: &str) -> crate::Result<KmsLocation> {
        if let Some(dir) = s.strip_prefix("local:") {
            if dir.is_empty() {
                crate::error::fail!("--kms local: needs a directory (local:/path/to/keystore)");
            }
            return Ok(KmsLocation::Local(dir.into()));
        }
        if s == "local" {
            return Ok(KmsLocation::Local(local::default_keystore_dir()?));
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            // One endpoint, or several servers of one cluster (`,` or `;` between them).
            let eps: Vec<String> = remote::split_endpoints(s)
                .map(|e| e.trim_end_matches('/').to_string() + "/")
                .collect();
            if let Some(bad) = eps
                .iter()
                .find(|e| !(e.starts_with("https://") || e.starts_with("http://")))
            {
                crate::error::fail!("KMS endpoint {bad:?} in {s:?} is not an http(s) URL");
            }
            return Ok(KmsLocation::Remote {
                endpoint: eps.join(","),
                region: env_region(),
            });
        }
        if let Some(region) = s.strip_prefix("aws:") {
            if region.is_empty()
                || !region
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            {
                crate::error::fail!("--kms aws:REGION needs a region such as aws:eu-west-1");
            }
            return Ok(KmsLocation::Remote {
                endpoint: format!("https://kms.{region}.amazonaws.com/"),
                region: region.to_string(),
            });
        }
        crate::error::fail!(
            "unsupported KMS location {s:?}: use local:DIR, https://HOST:PORT or aws:REGION"
        )
    }

    /// The location the user named: `--kms` if given, else `KMSFS_KMS` if set.
    pub fn named(arg: Option<&str>) -> Option<String> {
        arg.map(str::to_string)
            .or_else(|| std::env::var("KMSFS_KMS").ok().filter(|s| !s.is_empty()))
    }

    /// The location the user named (`named`), else the default keystore directory.
    pub fn resolve(arg: Option<&str>) -> crate::Result<KmsLocation> {
        match KmsLocation::named(arg) {
            Some(s) => KmsLocation::parse(&s),
            None => Ok(KmsLocation::Local(local::default_keystore_dir()?)),
        }
    }

    /// How to name it back (`local:DIR`, `aws:REGION`, the endpoint).
    pub fn describe(&self) -> String {
        match self {
            KmsLocation::Local(d) => format!("local:{}", d.display()),
            KmsLocation::Remote { endpoint, region }
                if endpoint == &format!("https://kms.{region}.amazonaws.com/") =>
            {
                format!("aws:{region}")
            }
            KmsLocation::Remote { endpoint, .. } => remote::split_endpoints(endpoint)
                .map(|e| e.trim_end_matches('/'))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Opens the KMS; `create` makes a missing embedded keystore (only `init` and
    /// `key create` do that). A remote KMS takes its credentials from the usual AWS
    /// sources (see `remote::Credentials::discover`), an extra CA from `KMSFS_KMS_CA` or
    /// `AWS_CA_BUNDLE`, and a per-request timeout from `KMSFS_KMS_TIMEOUT` (seconds, 5).
    pub fn open(&self, create: bool) -> crate::Result<std::sync::Arc<dyn Kms>> {
        match self {
            KmsLocation::Local(dir) => Ok(std::sync::Arc::new(local::LocalKms::open(dir, create)?)),
            KmsLocation::Remote { endpoint, region } => {
                let creds = remote::Credentials::discover()?;
                let ca =
                    std::env::var_os("KMSFS_KMS_CA").or_else(|| std::env::var_os("AWS_CA_BUNDLE"));
                let timeout = std::env::var("KMSFS_KMS_TIMEOUT")
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or(5.0);
                Ok(std::sync::Arc::new(remote::RemoteKms::new(
                    endpoint,
                    region,
                    creds,
                    ca.as_deref().map(std::path::Path::new),
                    std::time::Duration::from_secs_f64(timeout),
                )?))
            }
        }
    }
}
