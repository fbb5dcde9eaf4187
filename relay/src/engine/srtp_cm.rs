//! SRTP with AES_CM_128_HMAC_SHA1_80 (RFC 3711) in place, for RTP.
//!
//! The profile every WebRTC endpoint supports (aiortc offers nothing else), so it is on the
//! forwarding path as often as GCM. Like [`super::srtp_gcm`], the packet is transformed inside
//! the caller's buffer: AES-128 in counter mode (RustCrypto `ctr` over `aes`, AES-NI when
//! present) encrypts the payload, HMAC-SHA1 (RustCrypto `hmac` over `sha1`, which uses the
//! SHA extensions when present; ring's SHA-1 has no assembly and is ~3× slower here)
//! authenticates header, payload and rollover counter, and the 80-bit tag is appended or
//! checked and cut off. Key schedules and the keyed HMAC state are computed once per
//! session and cloned per packet. The tests
//! hold it to the RFC 3711 test vectors and to webrtc-srtp, bit for bit, both ways.

use crate::FastMap;

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::srtp_kdf::{
    derive, Rollover, LABEL_SRTP_AUTHENTICATION, LABEL_SRTP_ENCRYPTION, LABEL_SRTP_SALT,
};

/// Bytes of the truncated HMAC-SHA1 tag.
pub const TAG_LEN: usize = 10;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// Why a packet could not be processed.
#[derive(Debug, PartialEq, Eq)]
pub enum CmError {
    /// Too short for a header and a tag.
    TooShort,
    /// Authentication failed.
    Auth,
}

/// One direction of SRTP AES-CM/HMAC-SHA1-80 for RTP.
pub struct CmRtp {
    aes: aes::Aes128,
    salt: [u8; 14],
    auth: Hmac<Sha1>,
    streams: FastMap<u32, Rollover>,
}

impl CmRtp {
    /// Derive the session keys and salt from DTLS-exported master key (16 bytes) and salt
    /// (14 bytes).
    pub fn new(master_key: &[u8], master_salt: &[u8]) -> Option<Self> {
        let master_key: &[u8; 16] = master_key.try_into().ok()?;
        if master_salt.len() != 14 {
            return None;
        }
        let mut key = [0u8; 16];
        let mut salt = [0u8; 14];
        let mut auth = [0u8; 20];
        derive(master_key, master_salt, LABEL_SRTP_ENCRYPTION, &mut key);
        derive(master_key, master_salt, LABEL_SRTP_SALT, &mut salt);
        derive(
            master_key,
            master_salt,
            LABEL_SRTP_AUTHENTICATION,
            &mut auth,
        );
        Self::with_session_keys(&key, salt, &auth)
    }

    /// Around already derived session keys (RFC 3711's keystream vector starts here).
    fn with_session_keys(key: &[u8; 16], salt: [u8; 14], auth: &[u8]) -> Option<Self> {
        Some(CmRtp {
            aes: aes::Aes128::new(key.into()),
            salt,
            auth: <Hmac<Sha1> as Mac>::new_from_slice(auth).ok()?,
            streams: FastMap::default(),
        })
    }

    /// RFC 3711 §4.1.1: IV = (salt · 2^16) ⊕ (SSRC · 2^64) ⊕ (index · 2^16).
    fn iv(&self, ssrc: u32, roc: u32, seq: u16) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (v, b) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *v ^= b;
        }
        for (v, b) in iv[8..12].iter_mut().zip(roc.to_be_bytes()) {
            *v ^= b;
        }
        for (v, b) in iv[12..14].iter_mut().zip(seq.to_be_bytes()) {
            *v ^= b;
        }
        iv
    }

    fn crypt(&self, ssrc: u32, roc: u32, seq: u16, payload: &mut [u8]) {
        let iv = self.iv(ssrc, roc, seq);
        let core = ctr::CtrCore::inner_iv_init(self.aes.clone(), &iv.into());
        Aes128Ctr::from_core(core).apply_keystream(payload);
    }

    /// HMAC-SHA1 over the authenticated portion and the ROC (RFC 3711 §4.2).
    fn tag(&self, authenticated: &[u8], roc: u32) -> [u8; 20] {
        let mut mac = self.auth.clone();
        mac.update(authenticated);
        mac.update(&roc.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    fn ssrc_seq(packet: &[u8]) -> (u32, u16) {
        (
            u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
            u16::from_be_bytes([packet[2], packet[3]]),
        )
    }

    /// Encrypt the payload of the RTP packet in `packet` (header of `header_len` bytes, checked
    /// by the caller) and append the tag.
    pub fn protect(&mut self, packet: &mut Vec<u8>, header_len: usize) -> Result<(), CmError> {
        if packet.len() < header_len || header_len < 12 {
            return Err(CmError::TooShort);
        }
        let (ssrc, seq) = Self::ssrc_seq(packet);
        let state = self.streams.entry(ssrc).or_insert(Rollover::first(seq));
        let roc = state.estimate(seq);
        state.update(seq, roc);
        self.crypt(ssrc, roc, seq, &mut packet[header_len..]);
        let tag = self.tag(packet, roc);
        packet.extend_from_slice(&tag[..TAG_LEN]);
        Ok(())
    }

    /// Whether there is rollover state for `ssrc` (a packet was protected or opened on it).
    pub fn knows(&self, ssrc: u32) -> bool {
        self.streams.contains_key(&ssrc)
    }

    /// Forget the rollover state of `ssrc`.
    pub fn forget(&mut self, ssrc: u32) {
        self.streams.remove(&ssrc);
    }

    /// Authenticate and decrypt in place; on success `packet` is the plaintext RTP packet.
    /// The rollover state moves only for authenticated packets.
    pub fn unprotect(&mut self, packet: &mut Vec<u8>, header_len: usize) -> Result<(), CmError> {
        if header_len < 12 || packet.len() < header_len + TAG_LEN {
            return Err(CmError::TooShort);
        }
        let (ssrc, seq) = Self::ssrc_seq(packet);
        let mut state = self
            .streams
            .get(&ssrc)
            .copied()
            .unwrap_or(Rollover::first(seq));
        let roc = state.estimate(seq);
        let body = packet.len() - TAG_LEN;
        let expected = self.tag(&packet[..body], roc);
        if !constant_time_eq(&expected[..TAG_LEN], &packet[body..]) {
            return Err(CmError::Auth);
        }
        packet.truncate(body);
        self.crypt(ssrc, roc, seq, &mut packet[header_len..]);
        state.update(seq, roc);
        self.streams.insert(ssrc, state);
        Ok(())
    }
}

/// Tag comparison whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::srtp_kdf::tests::{hex, rtp};
    use webrtc_srtp::context::Context;
    use webrtc_srtp::protection_profile::ProtectionProfile;

    #[test]
    fn rfc3711_b2_keystream() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let salt = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let cm = CmRtp::with_session_keys(&key, salt, &[0; 20]).unwrap();
        assert_eq!(
            cm.iv(0, 0, 0).to_vec(),
            hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
        );
        let mut zeros = [0u8; 48];
        cm.crypt(0, 0, 0, &mut zeros);
        assert_eq!(
            zeros.to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4
                 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0")
        );
    }

    #[test]
    fn bit_identical_to_webrtc_srtp_both_ways_across_rollover() {
        let key: Vec<u8> = (1..=16).collect();
        let salt: Vec<u8> = (100..114).collect();
        let p = ProtectionProfile::Aes128CmHmacSha1_80;
        let mut reference_tx = Context::new(&key, &salt, p, None, None).unwrap();
        let mut reference_rx = Context::new(&key, &salt, p, None, None).unwrap();
        let mut ours_tx = CmRtp::new(&key, &salt).unwrap();
        let mut ours_rx = CmRtp::new(&key, &salt).unwrap();
        for i in 0..300u32 {
            let seq = (65_400 + i) as u16;
            let plain = rtp(seq, 0xcafe, 100 + (i as usize % 900));
            let theirs = reference_tx.encrypt_rtp(&plain).unwrap();
            let mut mine = plain.clone();
            ours_tx.protect(&mut mine, 12).unwrap();
            assert_eq!(&mine[..], &theirs[..], "seq {seq}");
            let mut back = theirs.to_vec();
            ours_rx.unprotect(&mut back, 12).unwrap();
            assert_eq!(back, plain);
            assert_eq!(&reference_rx.decrypt_rtp(&mine).unwrap()[..], &plain[..]);
        }
    }

    #[test]
    fn tampering_and_truncation_fail_without_moving_state() {
        let key = [7u8; 16];
        let salt = [9u8; 14];
        let mut tx = CmRtp::new(&key, &salt).unwrap();
        let mut rx = CmRtp::new(&key, &salt).unwrap();
        let mut p = rtp(10, 1, 50);
        tx.protect(&mut p, 12).unwrap();
        for at in [3, 20, p.len() - 1] {
            let mut bad = p.clone();
            bad[at] ^= 1;
            assert_eq!(rx.unprotect(&mut bad, 12), Err(CmError::Auth));
        }
        let mut short = p[..21].to_vec();
        assert_eq!(rx.unprotect(&mut short, 12), Err(CmError::TooShort));
        assert!(rx.streams.is_empty());
        rx.unprotect(&mut p, 12).unwrap();
        assert_eq!(p, rtp(10, 1, 50));
        assert!(CmRtp::new(&[0; 15], &salt).is_none());
        assert!(CmRtp::new(&key, &[0; 12]).is_none());
    }
}
