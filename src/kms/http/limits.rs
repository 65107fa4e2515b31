//! What one signed principal may cost the server per second: requests (each operation
//! weighted by its cost: a GetParametersForImport makes an RSA key) and request bytes
//! (which bound the audit bytes it causes: every request is an fsync'd record, and a
//! record is at most a bounded context and a few names). Token buckets per principal;
//! beyond them the answer is AWS's `ThrottlingException: Rate exceeded`, with no audit
//! record (a throttled flood must not cost fsyncs).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use crate::kms::{ErrorCode, KmsError, Op};

/// Per-principal limits (`kms serve --max-rate`, `--max-request-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request weight per second (a plain operation weighs 1); the bucket holds two
    /// seconds' worth.
    pub rate: f64,
    /// Request bytes per second; the bucket holds two seconds' worth.
    pub bytes: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: 2000.0,
            bytes: 4.0 * 1024.0 * 1024.0,
        }
    }
}

struct Bucket {
    requests: f64,
    bytes: f64,
    at: Instant,
}

/// The buckets of every principal seen.
pub struct Buckets {
    limits: Limits,
    m: Mutex<HashMap<String, Bucket>>,
}

/// What an operation weighs against the request rate: expensive ones more.
pub fn weight(op: Option<Op>) -> f64 {
    match op {
        // An RSA key pair per call (up to 1.5 s of CPU for RSA_4096).
        Some(Op::GetParametersForImport) => 1000.0,
        Some(Op::GenerateDataKeyPair | Op::GenerateDataKeyPairWithoutPlaintext) => 100.0,
        // Reads the audit trail.
        Some(Op::GetKeyLastUsage) => 20.0,
        _ => 1.0,
    }
}

impl Buckets {
    /// Buckets under `limits`.
    pub fn new(limits: Limits) -> Buckets {
        Buckets {
            limits,
            m: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `weight` requests and `bytes` bytes from `principal`'s buckets, or refuses.
    pub fn admit(&self, principal: &str, weight: f64, bytes: usize) -> Result<(), KmsError> {
        let now = Instant::now();
        let (rcap, bcap) = (self.limits.rate * 2.0, self.limits.bytes * 2.0);
        let mut m = self.m.lock();
        if m.len() > 100_000 {
            m.retain(|_, b| now.duration_since(b.at).as_secs() < 10);
        }
        let b = m.entry(principal.to_string()).or_insert(Bucket {
            requests: rcap,
            bytes: bcap,
            at: now,
        });
        let dt = now.duration_since(b.at).as_secs_f64();
        b.at = now;
        b.requests = (b.requests + dt * self.limits.rate).min(rcap);
        b.bytes = (b.bytes + dt * self.limits.bytes).min(bcap);
        if b.requests < weight || b.bytes < bytes as f64 {
            return Err(KmsError::new(
                ErrorCode::ThrottlingException,
                "Rate exceeded",
            ));
        }
        b.requests -= weight;
        b.bytes -= bytes as f64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_is_throttled_and_recovers_others_are_not() {
        let b = Buckets::new(Limits {
            rate: 10.0,
            bytes: 1000.0,
        });
        let mut ok = 0;
        while b.admit("alice", 1.0, 10).is_ok() {
            ok += 1;
        }
        assert!((20..=21).contains(&ok), "{ok}");
        assert!(b.admit("bob", 1.0, 10).is_ok());
        assert!(
            b.admit("carol", 1.0, 2001).is_err(),
            "bytes beyond the bucket"
        );
        assert!(
            b.admit("dave", 500.0, 1).is_err(),
            "an operation heavier than the bucket"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert!(b.admit("alice", 1.0, 10).is_ok(), "refilled");
    }
}
