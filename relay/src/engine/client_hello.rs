//! The SRTP protection profiles a DTLS ClientHello offers (RFC 5764 §4.1.1 `use_srtp`).
//!
//! The DTLS library picks the first of the *client's* profiles that it supports, and Chromium
//! lists SRTP_AES128_CM_HMAC_SHA1_80 before SRTP_AEAD_AES_128_GCM, so left alone every
//! Chromium participant would get HMAC-SHA1 (about 1 µs per packet here, against 0.2 µs for
//! AES-GCM, on every copy). The relay therefore reassembles the ClientHello from the first
//! records of the handshake before starting it, and configures that handshake with the one
//! profile it prefers among those offered: the server's preference, as RFC 5764 §4.1.2 allows.
//!
//! This reads untrusted bytes from a peer that has passed an ICE check: every length is
//! checked, nothing panics, and anything unexpected reads as "no offer seen".

use super::srtp::SrtpProfile;

/// DTLS record content type of a handshake record.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// TLS extension number of `use_srtp`.
const EXT_USE_SRTP: u16 = 14;
/// RFC 5764 §4.1.2 profile number of SRTP_AES128_CM_HMAC_SHA1_80.
const PROFILE_AES128_CM_HMAC_SHA1_80: u16 = 0x0001;
/// RFC 7714 §14.2 profile number of SRTP_AEAD_AES_128_GCM.
const PROFILE_AEAD_AES_128_GCM: u16 = 0x0007;

/// Largest ClientHello the relay reassembles. Chromium's, with a post-quantum key share, is
/// about 1.4 KiB in two records.
pub const MAX_HELLO_LEN: usize = 16 * 1024;

/// A ClientHello put together from the handshake fragments of the first records of a
/// handshake. A large ClientHello (Chromium's carries an ML-KEM key share) arrives in several
/// records, and `use_srtp` may be in any of them.
#[derive(Debug, Default)]
pub struct ClientHello {
    /// The message's length, from the first fragment seen.
    length: Option<usize>,
    body: Vec<u8>,
    /// Byte ranges of `body` received so far, as (start, end).
    have: Vec<(usize, usize)>,
}

impl ClientHello {
    /// Take the ClientHello fragments (message sequence 0) in one datagram, which may hold
    /// several records, each several fragments. Anything else in it is skipped; a fragment
    /// that contradicts an earlier one's length is ignored.
    pub fn handle_datagram(&mut self, datagram: &[u8]) {
        let mut records = Reader(datagram);
        while !records.0.is_empty() {
            let Some(kind) = records.u8() else { return };
            // Version, epoch, sequence number.
            let Some(()) = records.skip(2 + 2 + 6) else {
                return;
            };
            let Some(record) = records.vec16() else {
                return;
            };
            if kind != CONTENT_HANDSHAKE {
                continue;
            }
            let mut fragments = Reader(record);
            while !fragments.0.is_empty() {
                if self.handle_fragment(&mut fragments).is_none() {
                    break;
                }
            }
        }
    }

    fn handle_fragment(&mut self, r: &mut Reader<'_>) -> Option<()> {
        let kind = r.u8()?;
        let length = r.u24()? as usize;
        let message_seq = r.u16()?;
        let offset = r.u24()? as usize;
        let fragment_len = r.u24()? as usize;
        let fragment = r.take(fragment_len)?;
        if kind != CLIENT_HELLO || message_seq != 0 || length > MAX_HELLO_LEN {
            return Some(());
        }
        if offset + fragment.len() > length || *self.length.get_or_insert(length) != length {
            return Some(());
        }
        if self.body.len() < length {
            self.body.resize(length, 0);
        }
        self.body[offset..offset + fragment.len()].copy_from_slice(fragment);
        self.have.push((offset, offset + fragment.len()));
        Some(())
    }

    /// Whether every byte of the message has arrived.
    pub fn is_complete(&self) -> bool {
        let Some(length) = self.length else {
            return false;
        };
        let mut have = self.have.clone();
        have.sort_unstable();
        let mut covered = 0;
        for (start, end) in have {
            if start > covered {
                return false;
            }
            covered = covered.max(end);
        }
        covered >= length
    }

    /// The profiles offered in the `use_srtp` extension, in the client's order, limited to
    /// those the relay implements. None until the message is complete, or when it does not
    /// parse or has no `use_srtp`.
    pub fn offered_srtp_profiles(&self) -> Option<Vec<SrtpProfile>> {
        if !self.is_complete() {
            return None;
        }
        offered_in_body(&self.body)
    }
}

/// The profiles of `use_srtp` in a whole ClientHello body.
fn offered_in_body(body: &[u8]) -> Option<Vec<SrtpProfile>> {
    let mut body = Reader(body);
    // client_version, random, session_id, cookie, cipher_suites, compression_methods.
    body.skip(2 + 32)?;
    body.vec8()?;
    body.vec8()?;
    body.vec16()?;
    body.vec8()?;
    let mut extensions = Reader(body.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != EXT_USE_SRTP {
            continue;
        }
        let mut ext = Reader(data);
        let mut ids = Reader(ext.vec16()?);
        let mut profiles = Vec::new();
        while !ids.0.is_empty() {
            let profile = match ids.u16()? {
                PROFILE_AEAD_AES_128_GCM => SrtpProfile::AeadAes128Gcm,
                PROFILE_AES128_CM_HMAC_SHA1_80 => SrtpProfile::Aes128CmHmacSha1_80,
                _ => continue,
            };
            if !profiles.contains(&profile) {
                profiles.push(profile);
            }
        }
        return Some(profiles);
    }
    None
}

/// The profile the relay chooses from an offer: the first of `preference` that was offered.
pub fn choose(preference: &[SrtpProfile], offered: &[SrtpProfile]) -> Option<SrtpProfile> {
    preference.iter().copied().find(|p| offered.contains(p))
}

/// A cursor over untrusted bytes whose reads fail instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<u32> {
        self.take(3)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::{
        client_hello_record as client_hello, fragmented_client_hello as fragmented, use_srtp,
    };

    fn offer(datagrams: &[&[u8]]) -> Option<Vec<SrtpProfile>> {
        let mut hello = ClientHello::default();
        for d in datagrams {
            hello.handle_datagram(d);
        }
        hello.offered_srtp_profiles()
    }

    #[test]
    fn chromium_order_yields_gcm_by_the_relay_preference() {
        // SHA1_80 listed first, as Chromium does, with profiles the relay lacks between.
        let record = client_hello(&[
            (0x0017, vec![]), // extended master secret
            use_srtp(&[0x0001, 0x0008, 0x0007, 0x0002]),
            (0x000a, vec![0, 2, 0, 0x17]),
        ]);
        let offered = offer(&[&record]).unwrap();
        assert_eq!(
            offered,
            [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm]
        );
        let preference = SrtpProfile::PREFERENCE;
        assert_eq!(
            choose(&preference, &offered),
            Some(SrtpProfile::AeadAes128Gcm)
        );
        // A client that offers only SHA1_80 (aiortc) gets it.
        let record = client_hello(&[use_srtp(&[0x0001])]);
        let offered = offer(&[&record]).unwrap();
        assert_eq!(
            choose(&preference, &offered),
            Some(SrtpProfile::Aes128CmHmacSha1_80)
        );
        // Nothing the relay implements.
        let record = client_hello(&[use_srtp(&[0x0002])]);
        assert_eq!(choose(&preference, &offer(&[&record]).unwrap()), None);
    }

    #[test]
    fn a_hello_in_fragments_is_read_once_whole_in_any_order() {
        // A large key share before use_srtp pushes it into the last fragment, as Chromium's
        // ML-KEM share does.
        let record = client_hello(&[(0x0033, vec![0x5a; 1200]), use_srtp(&[0x0001, 0x0007])]);
        let parts = fragmented(&record, 500);
        assert_eq!(parts.len(), 3);
        assert_eq!(offer(&[&parts[0], &parts[1]]), None);
        let want = Some(vec![
            SrtpProfile::Aes128CmHmacSha1_80,
            SrtpProfile::AeadAes128Gcm,
        ]);
        assert_eq!(offer(&[&parts[0], &parts[1], &parts[2]]), want);
        assert_eq!(offer(&[&parts[2], &parts[0], &parts[0], &parts[1]]), want);
        // Two records in one datagram.
        let both = [parts[1].clone(), parts[2].clone()].concat();
        assert_eq!(offer(&[&parts[0], &both]), want);
        // A fragment claiming another total length is ignored.
        let mut liar = parts[2].clone();
        liar[13 + 3] ^= 1;
        assert_eq!(offer(&[&parts[0], &parts[1], &liar]), None);
    }

    #[test]
    fn anything_but_a_whole_client_hello_reads_as_no_offer() {
        assert_eq!(offer(&[&client_hello(&[])]), None);
        let record = client_hello(&[use_srtp(&[0x0007])]);
        for n in 0..record.len() {
            assert_eq!(offer(&[&record[..n]]), None, "{n} bytes");
        }
        // Not a handshake record, not a ClientHello, a fragment past the message's end.
        let mut other = record.clone();
        other[0] = 23;
        assert_eq!(offer(&[&other]), None);
        let mut other = record.clone();
        other[13] = 2;
        assert_eq!(offer(&[&other]), None);
        let mut other = record.clone();
        other[13 + 8] = 1; // fragment offset
        assert_eq!(offer(&[&other]), None);
        // An odd-length profile list.
        let mut ext = use_srtp(&[0x0007]);
        ext.1 = vec![0, 3, 0, 7, 0, 0];
        assert_eq!(offer(&[&client_hello(&[ext])]), None);
        // A length beyond the limit.
        let mut huge = record.clone();
        huge[13 + 1] = 0xff;
        assert_eq!(offer(&[&huge]), None);
    }
}
