//! SRTP with AEAD_AES_128_GCM (RFC 7714) in place, for RTP: the forwarding path's hot loop.
//!
//! webrtc-srtp allocates a new buffer for every packet it protects or unprotects; here the
//! packet is encrypted or decrypted inside the caller's buffer (ring's AES-GCM), the tag
//! appended or truncated in place. Session keys come from the RFC 3711 §4.3 AES-CM key
//! derivation ([`super::srtp_kdf`]). The tests prove the output bit-identical to webrtc-srtp
//! both ways, across sequence-number wrap-around (rollover counter).

use crate::FastMap;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

use super::srtp_kdf::{derive, Rollover, LABEL_SRTP_ENCRYPTION, LABEL_SRTP_SALT};

/// Bytes of the GCM authentication tag.
pub const TAG_LEN: usize = 16;

/// One direction of SRTP-GCM for RTP.
pub struct GcmRtp {
    key: LessSafeKey,
    salt: [u8; 12],
    streams: FastMap<u32, Rollover>,
}

/// Why a packet could not be processed.
#[derive(Debug, PartialEq, Eq)]
pub enum GcmError {
    /// Too short for a header and a tag.
    TooShort,
    /// Authentication failed.
    Auth,
}

impl GcmRtp {
    /// Derive the session key and salt from DTLS-exported master key and salt.
    pub fn new(master_key: &[u8], master_salt: &[u8]) -> Option<Self> {
        let master_key: &[u8; 16] = master_key.try_into().ok()?;
        let master_salt: &[u8; 12] = master_salt.try_into().ok()?;
        let mut key = [0u8; 16];
        let mut salt = [0u8; 12];
        derive(master_key, master_salt, LABEL_SRTP_ENCRYPTION, &mut key);
        derive(master_key, master_salt, LABEL_SRTP_SALT, &mut salt);
        Self::with_session_keys(&key, salt)
    }

    /// Around an already derived session key and salt (RFC 7714's test vectors start here).
    fn with_session_keys(key: &[u8; 16], salt: [u8; 12]) -> Option<Self> {
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).ok()?);
        Some(GcmRtp {
            key,
            salt,
            streams: FastMap::default(),
        })
    }

    fn nonce(&self, ssrc: u32, roc: u32, seq: u16) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq.to_be_bytes());
        for (v, s) in iv.iter_mut().zip(self.salt) {
            *v ^= s;
        }
        Nonce::assume_unique_for_key(iv)
    }

    fn ssrc_seq(packet: &[u8]) -> (u32, u16) {
        (
            u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
            u16::from_be_bytes([packet[2], packet[3]]),
        )
    }

    /// Encrypt the payload of the RTP packet in `packet` (header of `header_len` bytes, checked
    /// by the caller) and append the tag.
    pub fn protect(&mut self, packet: &mut Vec<u8>, header_len: usize) -> Result<(), GcmError> {
        if packet.len() < header_len || header_len < 12 {
            return Err(GcmError::TooShort);
        }
        let (ssrc, seq) = Self::ssrc_seq(packet);
        let state = self.streams.entry(ssrc).or_insert(Rollover::first(seq));
        let roc = state.estimate(seq);
        state.update(seq, roc);
        let nonce = self.nonce(ssrc, roc, seq);
        let (header, payload) = packet.split_at_mut(header_len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&*header), payload)
            .map_err(|_| GcmError::Auth)?;
        packet.extend_from_slice(tag.as_ref());
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
    pub fn unprotect(&mut self, packet: &mut Vec<u8>, header_len: usize) -> Result<(), GcmError> {
        if header_len < 12 || packet.len() < header_len + TAG_LEN {
            return Err(GcmError::TooShort);
        }
        let (ssrc, seq) = Self::ssrc_seq(packet);
        let state = self
            .streams
            .get(&ssrc)
            .copied()
            .unwrap_or(Rollover::first(seq));
        let roc = state.estimate(seq);
        let nonce = self.nonce(ssrc, roc, seq);
        let (header, payload) = packet.split_at_mut(header_len);
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(&*header), payload)
            .map_err(|_| GcmError::Auth)?
            .len();
        packet.truncate(header_len + plain_len);
        let mut state = state;
        state.update(seq, roc);
        self.streams.insert(ssrc, state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::srtp_kdf::tests::rtp;
    use webrtc_srtp::context::Context;
    use webrtc_srtp::protection_profile::ProtectionProfile;

    #[test]
    fn rfc7714_16_1_1_rtp_with_aead_aes_128_gcm() {
        use crate::engine::srtp_kdf::tests::hex;
        let key: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        let plain = hex(
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                         20646976 69736120 696e2070 61727465 73207472 6573",
        );
        let sealed = hex(
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                          be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                          6a9152cf 765ee439 0cce",
        );
        let mut tx = GcmRtp::with_session_keys(&key, salt).unwrap();
        let mut p = plain.clone();
        tx.protect(&mut p, 12).unwrap();
        assert_eq!(p, sealed);
        let mut rx = GcmRtp::with_session_keys(&key, salt).unwrap();
        rx.unprotect(&mut p, 12).unwrap();
        assert_eq!(p, plain);
    }

    #[test]
    fn bit_identical_to_webrtc_srtp_both_ways_across_rollover() {
        let key: Vec<u8> = (1..=16).collect();
        let salt: Vec<u8> = (100..112).collect();
        let mut reference_tx =
            Context::new(&key, &salt, ProtectionProfile::AeadAes128Gcm, None, None).unwrap();
        let mut reference_rx =
            Context::new(&key, &salt, ProtectionProfile::AeadAes128Gcm, None, None).unwrap();
        let mut ours_tx = GcmRtp::new(&key, &salt).unwrap();
        let mut ours_rx = GcmRtp::new(&key, &salt).unwrap();
        // Start near the end of the sequence space so the rollover counter increments.
        for i in 0..300u32 {
            let seq = (65_400 + i) as u16;
            let plain = rtp(seq, 0xcafe, 100 + (i as usize % 900));
            let theirs = reference_tx.encrypt_rtp(&plain).unwrap();
            let mut mine = plain.clone();
            ours_tx.protect(&mut mine, 12).unwrap();
            assert_eq!(&mine[..], &theirs[..], "seq {seq}");
            // Ours decrypts theirs, theirs decrypts ours.
            let mut back = theirs.to_vec();
            ours_rx.unprotect(&mut back, 12).unwrap();
            assert_eq!(back, plain);
            assert_eq!(&reference_rx.decrypt_rtp(&mine).unwrap()[..], &plain[..]);
        }
    }

    #[test]
    fn tampering_and_truncation_fail_without_moving_state() {
        let key = [7u8; 16];
        let salt = [9u8; 12];
        let mut tx = GcmRtp::new(&key, &salt).unwrap();
        let mut rx = GcmRtp::new(&key, &salt).unwrap();
        let mut p = rtp(10, 1, 50);
        tx.protect(&mut p, 12).unwrap();
        let mut bad = p.clone();
        bad[20] ^= 1;
        assert_eq!(rx.unprotect(&mut bad, 12), Err(GcmError::Auth));
        let mut short = p[..20].to_vec();
        assert_eq!(rx.unprotect(&mut short, 12), Err(GcmError::TooShort));
        rx.unprotect(&mut p, 12).unwrap();
        assert_eq!(p, rtp(10, 1, 50));
        assert!(GcmRtp::new(&[0; 15], &salt).is_none());
    }
}
