//! Join rate limits per key and per source address (token buckets), so that a leaked key or a
//! busy script cannot flood the relay with participants.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many joins are allowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JoinLimits {
    /// Joins per minute per key: a WEB_ONLY key, or the key that signed a token.
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

/// Source addresses (IPv6: /64 prefixes) tracked at once. Past this, idle buckets are dropped;
/// if every one is busy, joins from new addresses are refused until some go idle, so memory
/// stays bounded whatever the number of addresses a flood comes from.
pub const MAX_ADDRESSES: usize = 65_536;

/// Keys tracked at once (only keys that authenticated get a bucket).
pub const MAX_KEYS: usize = 65_536;

/// A bucket untouched for this long is full again and can be forgotten.
const IDLE: Duration = Duration::from_secs(60);

/// How often a full table may be swept for idle buckets (a sweep is O(n)).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Token buckets of one kind, bounded in number.
#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
    max: usize,
    swept: Option<Instant>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new(max: usize) -> Self {
        Buckets {
            map: HashMap::new(),
            max,
            swept: None,
        }
    }

    /// Take a token from `key`'s bucket; Err(true) when it is empty, Err(false) when the
    /// table is full of busy buckets and `key` has none.
    fn take(&mut self, now: Instant, key: &K, per_minute: u32) -> Result<(), bool> {
        if !self.map.contains_key(key) && self.map.len() >= self.max {
            if self
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_INTERVAL)
            {
                self.swept = Some(now);
                self.map
                    .retain(|_, b| now.saturating_duration_since(b.at) < IDLE);
            }
            if self.map.len() >= self.max {
                return Err(false);
            }
        }
        let bucket = self.map.entry(key.clone()).or_insert(Bucket {
            tokens: per_minute as f64,
            at: now,
        });
        if take(bucket, now, per_minute) {
            Ok(())
        } else {
            Err(true)
        }
    }
}

/// Token buckets for join attempts: per source address before authentication (the only
/// thing known then), per key after it, so that one tenant's traffic, or attempts with made-up
/// keys, never use up another tenant's allowance.
#[derive(Debug)]
pub struct JoinLimiter {
    limits: JoinLimits,
    keys: Buckets<String>,
    addresses: Buckets<IpAddr>,
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

/// The unit an address is limited in: the address itself for IPv4, its /64 for IPv6 (one
/// host usually has a whole /64).
fn address_unit(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl JoinLimiter {
    /// Limits as configured.
    pub fn new(limits: JoinLimits) -> Self {
        JoinLimiter {
            limits,
            keys: Buckets::new(MAX_KEYS),
            addresses: Buckets::new(MAX_ADDRESSES),
        }
    }

    /// Count one join attempt from `ip`, before its credentials are checked; the error says
    /// which limit was hit.
    pub fn check_address(&mut self, now: Instant, ip: IpAddr) -> Result<(), String> {
        let per_ip = self.limits.per_address_per_minute;
        match self.addresses.take(now, &address_unit(ip), per_ip) {
            Ok(()) => Ok(()),
            Err(true) => Err(format!(
                "too many join attempts from {ip}: the limit is {per_ip} per minute"
            )),
            Err(false) => {
                Err("too many addresses are joining at once: try again in a minute".to_owned())
            }
        }
    }

    /// Count one join with key `key_id` (a WEB_ONLY key, or the key that signed a token),
    /// once it has authenticated.
    pub fn check_key(&mut self, now: Instant, key_id: &str) -> Result<(), String> {
        let per_key = self.limits.per_key_per_minute;
        match self.keys.take(now, &key_id.to_owned(), per_key) {
            Ok(()) => Ok(()),
            Err(_) => Err(format!(
                "too many joins with key {key_id}: the limit is {per_key} per minute"
            )),
        }
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
        for _ in 0..3 {
            l.check_key(t0, "k").unwrap();
        }
        assert!(l.check_key(t0, "k").unwrap_err().contains("key k"));
        l.check_key(t0, "other").unwrap();
        // One token back after 20 s (3 per minute).
        l.check_key(t0 + Duration::from_secs(20), "k").unwrap();
        let mut l = JoinLimiter::new(JoinLimits {
            per_key_per_minute: 100,
            per_address_per_minute: 2,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        l.check_address(t0, ip).unwrap();
        l.check_address(t0, ip).unwrap();
        assert!(l.check_address(t0, ip).unwrap_err().contains("127.0.0.1"));
        // An IPv6 host's whole /64 shares one bucket.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        l.check_address(t0, a).unwrap();
        l.check_address(t0, b).unwrap();
        assert!(l.check_address(t0, a).is_err());
    }

    #[test]
    fn tables_stay_bounded_and_forget_idle_buckets() {
        let t0 = Instant::now();
        let mut b: Buckets<u32> = Buckets::new(100);
        for k in 0..100 {
            b.take(t0, &k, 10).unwrap();
        }
        // Full of busy buckets: a newcomer is refused, known keys still work.
        assert_eq!(b.take(t0, &1000, 10), Err(false));
        b.take(t0, &5, 10).unwrap();
        // A minute later they are idle and make room.
        let later = t0 + IDLE + Duration::from_secs(1);
        b.take(later, &1000, 10).unwrap();
        assert_eq!(b.map.len(), 1);
        for k in 0..10_000 {
            let _ = b.take(later + Duration::from_millis(k as u64), &(k + 2000), 10);
        }
        assert!(b.map.len() <= 100);
    }
}
