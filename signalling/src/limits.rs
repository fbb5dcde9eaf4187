//! Join rate limits per key and per source address (token buckets), so that a leaked key or a
//! busy script cannot flood the relay with participants.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many joins are allowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JoinLimits {
    /// Joins per minute per key (or for all token joins together per key id).
    pub per_key_per_minute: u32,
    /// Joins per minute per source address.
    pub per_address_per_minute: u32,
}

impl Default for JoinLimits {
    fn default() -> Self {
        JoinLimits {
            per_key_per_minute: 600,
            per_address_per_minute: 60,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets for join attempts.
#[derive(Debug)]
pub struct JoinLimiter {
    limits: JoinLimits,
    keys: HashMap<String, Bucket>,
    addresses: HashMap<IpAddr, Bucket>,
}

fn take(bucket: &mut Bucket, now: Instant, per_minute: u32) -> bool {
    let rate = per_minute as f64 / 60.0;
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(per_minute as f64);
    bucket.at = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        true
    } else {
        false
    }
}

impl JoinLimiter {
    /// Limits as configured.
    pub fn new(limits: JoinLimits) -> Self {
        JoinLimiter {
            limits,
            keys: HashMap::new(),
            addresses: HashMap::new(),
        }
    }

    /// Count one attempt; the error says which limit was hit.
    pub fn check(&mut self, now: Instant, key: Option<&str>, ip: IpAddr) -> Result<(), String> {
        // Forget buckets that have been full for a while, so the maps stay small.
        if self.addresses.len() > 10_000 {
            self.addresses
                .retain(|_, b| now.saturating_duration_since(b.at) < Duration::from_secs(120));
        }
        let full = |n: u32| Bucket {
            tokens: n as f64,
            at: now,
        };
        let per_ip = self.limits.per_address_per_minute;
        let ip_bucket = self.addresses.entry(ip).or_insert_with(|| full(per_ip));
        if !take(ip_bucket, now, per_ip) {
            return Err(format!(
                "too many join attempts from {ip}: the limit is {per_ip} per minute"
            ));
        }
        if let Some(key) = key {
            let per_key = self.limits.per_key_per_minute;
            let bucket = self
                .keys
                .entry(key.to_owned())
                .or_insert_with(|| full(per_key));
            if !take(bucket, now, per_key) {
                return Err(format!(
                    "too many join attempts with this key: the limit is {per_key} per minute"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_over_time() {
        let t0 = Instant::now();
        let mut l = JoinLimiter::new(JoinLimits {
            per_key_per_minute: 3,
            per_address_per_minute: 60,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            l.check(t0, Some("k"), ip).unwrap();
        }
        assert!(l.check(t0, Some("k"), ip).unwrap_err().contains("this key"));
        l.check(t0, Some("other"), ip).unwrap();
        // One token back after 20 s (3 per minute).
        l.check(t0 + Duration::from_secs(20), Some("k"), ip)
            .unwrap();
        let mut l = JoinLimiter::new(JoinLimits {
            per_key_per_minute: 100,
            per_address_per_minute: 2,
        });
        l.check(t0, None, ip).unwrap();
        l.check(t0, None, ip).unwrap();
        assert!(l.check(t0, None, ip).unwrap_err().contains("127.0.0.1"));
    }
}
