//! SRTCP in place (RFC 3711 §3.4 for AES_CM_128_HMAC_SHA1_80, RFC 7714 §9 for
//! AEAD_AES_128_GCM), one direction of one participant.
//!
//! The relay used webrtc-srtp for SRTCP, which creates per-SSRC state for the sender SSRC in the
//! clear header *before* it checks the tag: anyone able to send from a participant's address
//! could grow that map without bound. Here unprotecting keeps no state at all (the caller's
//! replay windows, moved only by authenticated packets, are the only per-SSRC state), and
//! protecting keeps a single SRTCP index for every SSRC the relay sends from: the index never
//! repeats under a key, so no (SSRC, index) pair, and so no nonce, is ever used twice, and the
//! peer's per-SSRC replay windows only see gaps. The tests hold both profiles to webrtc-srtp,
//! bit for bit, both ways.

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use sha1::Sha1;

use super::srtp::SrtpProfile;
use super::srtp_kdf::derive;

/// Label of the SRTCP encryption key (RFC 3711 §4.3.2).
const LABEL_SRTCP_ENCRYPTION: u8 = 0x03;
/// Label of the SRTCP authentication key.
const LABEL_SRTCP_AUTHENTICATION: u8 = 0x04;
/// Label of the SRTCP salt.
const LABEL_SRTCP_SALT: u8 = 0x05;

/// RTCP header and sender SSRC: the part that is never encrypted.
const CLEAR_LEN: usize = 8;
/// The E flag and 31-bit SRTCP index.
const INDEX_LEN: usize = 4;
/// Bytes of the GCM tag.
const GCM_TAG_LEN: usize = 16;
/// Bytes of the truncated HMAC-SHA1 tag of SRTCP under AES_CM_128_HMAC_SHA1_80.
const CM_TAG_LEN: usize = 10;
/// The E flag of the SRTCP index word.
const ENCRYPTED: u32 = 1 << 31;
/// The largest SRTCP index; past it the key must not be used again.
const MAX_INDEX: u32 = (1 << 31) - 1;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// Why an SRTCP packet could not be processed.
#[derive(Debug, PartialEq, Eq)]
pub enum SrtcpError {
    /// Shorter than a header, index and tag.
    TooShort,
    /// Authentication failed.
    Auth,
    /// Every SRTCP index of this key has been used (2^31 packets): sending more would repeat
    /// a nonce.
    Exhausted,
}

/// What the cleartext of an SRTCP packet says before anything is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtcpTrailer {
    /// Sender SSRC of the first RTCP packet.
    pub ssrc: u32,
    /// The 31-bit SRTCP index.
    pub index: u32,
}

// One per direction per participant; boxing would only add a pointer chase (as for RTP).
#[allow(clippy::large_enum_variant)]
enum Cipher {
    Gcm {
        key: LessSafeKey,
        salt: [u8; 12],
    },
    Cm {
        aes: aes::Aes128,
        salt: [u8; 14],
        auth: Hmac<Sha1>,
    },
}

/// One direction of SRTCP.
pub struct Srtcp {
    cipher: Cipher,
    /// Index of the next packet protected (from 1, as webrtc-srtp and libsrtp start).
    next_index: u32,
}

impl Srtcp {
    /// Derive the SRTCP session keys from DTLS-exported master key and salt; None when their
    /// lengths do not fit the profile.
    pub fn new(profile: SrtpProfile, master_key: &[u8], master_salt: &[u8]) -> Option<Self> {
        let master_key: &[u8; 16] = master_key.try_into().ok()?;
        if master_salt.len() != profile.salt_len() {
            return None;
        }
        let mut key = [0u8; 16];
        derive(master_key, master_salt, LABEL_SRTCP_ENCRYPTION, &mut key);
        let cipher = match profile {
            SrtpProfile::AeadAes128Gcm => {
                let mut salt = [0u8; 12];
                derive(master_key, master_salt, LABEL_SRTCP_SALT, &mut salt);
                Cipher::Gcm {
                    key: LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).ok()?),
                    salt,
                }
            }
            SrtpProfile::Aes128CmHmacSha1_80 => {
                let mut salt = [0u8; 14];
                let mut auth = [0u8; 20];
                derive(master_key, master_salt, LABEL_SRTCP_SALT, &mut salt);
                derive(
                    master_key,
                    master_salt,
                    LABEL_SRTCP_AUTHENTICATION,
                    &mut auth,
                );
                Cipher::Cm {
                    aes: aes::Aes128::new(&key.into()),
                    salt,
                    auth: <Hmac<Sha1> as Mac>::new_from_slice(&auth).ok()?,
                }
            }
        };
        Some(Srtcp {
            cipher,
            next_index: 1,
        })
    }

    fn tag_len(&self) -> usize {
        match self.cipher {
            Cipher::Gcm { .. } => GCM_TAG_LEN,
            Cipher::Cm { .. } => CM_TAG_LEN,
        }
    }

    /// The sender SSRC and SRTCP index of `packet`, read from the clear parts without
    /// verifying anything (for a replay check before the crypto); None when too short.
    pub fn peek(&self, packet: &[u8]) -> Option<SrtcpTrailer> {
        let tag_len = match self.cipher {
            // GCM's tag is part of the ciphertext, before the index.
            Cipher::Gcm { .. } => 0,
            Cipher::Cm { .. } => CM_TAG_LEN,
        };
        if packet.len() < CLEAR_LEN + INDEX_LEN + self.tag_len() {
            return None;
        }
        let at = packet.len() - tag_len - INDEX_LEN;
        let word = u32::from_be_bytes(packet[at..at + INDEX_LEN].try_into().ok()?);
        Some(SrtcpTrailer {
            ssrc: u32::from_be_bytes(packet[4..8].try_into().ok()?),
            index: word & MAX_INDEX,
        })
    }

    /// Encrypt the RTCP compound packet in `packet` in place and append index and tag.
    pub fn protect(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtcpError> {
        if packet.len() < CLEAR_LEN {
            return Err(SrtcpError::TooShort);
        }
        if self.next_index > MAX_INDEX {
            return Err(SrtcpError::Exhausted);
        }
        let index = self.next_index;
        self.next_index += 1;
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let word = (index | ENCRYPTED).to_be_bytes();
        match &self.cipher {
            Cipher::Gcm { key, salt } => {
                let aad = gcm_aad(&packet[..CLEAR_LEN], word);
                let (_, payload) = packet.split_at_mut(CLEAR_LEN);
                let tag = key
                    .seal_in_place_separate_tag(
                        gcm_nonce(salt, ssrc, index),
                        Aad::from(aad),
                        payload,
                    )
                    .map_err(|_| SrtcpError::Auth)?;
                packet.extend_from_slice(tag.as_ref());
                packet.extend_from_slice(&word);
            }
            Cipher::Cm { aes, salt, auth } => {
                cm_crypt(aes, salt, ssrc, index, &mut packet[CLEAR_LEN..]);
                packet.extend_from_slice(&word);
                let tag = cm_tag(auth, packet);
                packet.extend_from_slice(&tag[..CM_TAG_LEN]);
            }
        }
        Ok(())
    }

    /// Authenticate and decrypt in place; on success `packet` is the plain RTCP compound
    /// packet and the trailer says which SSRC and index it carried. Nothing changes on failure
    /// (the caller's replay window moves only after success).
    pub fn unprotect(&self, packet: &mut Vec<u8>) -> Result<SrtcpTrailer, SrtcpError> {
        let trailer = self.peek(packet).ok_or(SrtcpError::TooShort)?;
        match &self.cipher {
            Cipher::Gcm { key, salt } => {
                let at = packet.len() - INDEX_LEN;
                let word: [u8; 4] = packet[at..].try_into().map_err(|_| SrtcpError::TooShort)?;
                packet.truncate(at);
                let nonce = gcm_nonce(salt, trailer.ssrc, trailer.index);
                if u32::from_be_bytes(word) & ENCRYPTED != 0 {
                    let aad = gcm_aad(&packet[..CLEAR_LEN], word);
                    let (_, sealed) = packet.split_at_mut(CLEAR_LEN);
                    let plain_len = key
                        .open_in_place(nonce, Aad::from(aad), sealed)
                        .map_err(|_| SrtcpError::Auth)?
                        .len();
                    packet.truncate(CLEAR_LEN + plain_len);
                } else {
                    // RFC 7714 §9: unencrypted, the whole packet and the index word are the
                    // associated data of an empty plaintext.
                    let body = packet.len() - GCM_TAG_LEN;
                    let mut aad = packet[..body].to_vec();
                    aad.extend_from_slice(&word);
                    let (_, tag) = packet.split_at_mut(body);
                    key.open_in_place(nonce, Aad::from(&aad[..]), tag)
                        .map_err(|_| SrtcpError::Auth)?;
                    packet.truncate(body);
                }
            }
            Cipher::Cm { aes, salt, auth } => {
                let body = packet.len() - CM_TAG_LEN;
                let expected = cm_tag(auth, &packet[..body]);
                if !constant_time_eq(&expected[..CM_TAG_LEN], &packet[body..]) {
                    return Err(SrtcpError::Auth);
                }
                let word = u32::from_be_bytes(
                    packet[body - INDEX_LEN..body]
                        .try_into()
                        .map_err(|_| SrtcpError::TooShort)?,
                );
                packet.truncate(body - INDEX_LEN);
                if word & ENCRYPTED != 0 {
                    cm_crypt(
                        aes,
                        salt,
                        trailer.ssrc,
                        trailer.index,
                        &mut packet[CLEAR_LEN..],
                    );
                }
            }
        }
        Ok(trailer)
    }
}

/// RFC 7714 §9.1: salt ⊕ (0x0000 ‖ SSRC ‖ 0x0000 ‖ 0 ‖ 31-bit index).
fn gcm_nonce(salt: &[u8; 12], ssrc: u32, index: u32) -> Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&index.to_be_bytes());
    for (v, s) in iv.iter_mut().zip(salt) {
        *v ^= s;
    }
    Nonce::assume_unique_for_key(iv)
}

/// RFC 7714 §9.2: the clear header and sender SSRC, then the E flag and index.
fn gcm_aad(clear: &[u8], word: [u8; 4]) -> [u8; CLEAR_LEN + INDEX_LEN] {
    let mut aad = [0u8; CLEAR_LEN + INDEX_LEN];
    aad[..CLEAR_LEN].copy_from_slice(clear);
    aad[CLEAR_LEN..].copy_from_slice(&word);
    aad
}

/// RFC 3711 §4.1.1 with the SRTCP index in place of the packet index.
fn cm_crypt(aes: &aes::Aes128, salt: &[u8; 14], ssrc: u32, index: u32, payload: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (v, b) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *v ^= b;
    }
    // index · 2^16: the 48-bit field at bytes 8..14, of which the index fills the low 31 bits.
    for (v, b) in iv[10..14].iter_mut().zip(index.to_be_bytes()) {
        *v ^= b;
    }
    let core = ctr::CtrCore::inner_iv_init(aes.clone(), &iv.into());
    Aes128Ctr::from_core(core).apply_keystream(payload);
}

/// HMAC-SHA1 over the authenticated portion (header, encrypted part, index word).
fn cm_tag(auth: &Hmac<Sha1>, authenticated: &[u8]) -> [u8; 20] {
    let mut mac = auth.clone();
    mac.update(authenticated);
    mac.finalize().into_bytes().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc_srtp::context::Context;
    use webrtc_srtp::protection_profile::ProtectionProfile;

    fn rtcp(ssrc: u32, len: usize) -> Vec<u8> {
        // A receiver report header followed by filler, as the SRTCP layer sees any compound.
        let mut p = vec![0x81, 201, 0, 7];
        p.extend(ssrc.to_be_bytes());
        p.extend((0..len).map(|i| i as u8));
        p
    }

    fn reference(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Context {
        let p = match profile {
            SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        };
        Context::new(key, salt, p, None, None).unwrap()
    }

    #[test]
    fn bit_identical_to_webrtc_srtp_both_ways() {
        for profile in SrtpProfile::PREFERENCE {
            let key: Vec<u8> = (1..=16).collect();
            let salt: Vec<u8> = (100..100 + profile.salt_len() as u8).collect();
            let mut theirs_tx = reference(profile, &key, &salt);
            let mut theirs_rx = reference(profile, &key, &salt);
            let mut ours_tx = Srtcp::new(profile, &key, &salt).unwrap();
            let ours_rx = Srtcp::new(profile, &key, &salt).unwrap();
            for i in 0..50usize {
                let plain = rtcp(0xcafe_f00d, 4 + i * 7);
                let sealed_theirs = theirs_tx.encrypt_rtcp(&plain).unwrap();
                let mut sealed_ours = plain.clone();
                ours_tx.protect(&mut sealed_ours).unwrap();
                assert_eq!(
                    &sealed_ours[..],
                    &sealed_theirs[..],
                    "{profile:?} packet {i}"
                );
                let mut back = sealed_theirs.to_vec();
                let trailer = ours_rx.unprotect(&mut back).unwrap();
                assert_eq!(back, plain);
                assert_eq!(trailer.ssrc, 0xcafe_f00d);
                assert_eq!(trailer.index, i as u32 + 1);
                assert_eq!(
                    &theirs_rx.decrypt_rtcp(&sealed_ours).unwrap()[..],
                    &plain[..]
                );
            }
        }
    }

    #[test]
    fn one_index_for_every_ssrc_sent_from() {
        for profile in SrtpProfile::PREFERENCE {
            let key = [3u8; 16];
            let salt = vec![4u8; profile.salt_len()];
            let mut tx = Srtcp::new(profile, &key, &salt).unwrap();
            let rx = Srtcp::new(profile, &key, &salt).unwrap();
            let mut seen = Vec::new();
            for ssrc in [1u32, 2, 1, 3, 2] {
                let mut p = rtcp(ssrc, 20);
                tx.protect(&mut p).unwrap();
                let t = rx.unprotect(&mut p).unwrap();
                assert_eq!(t.ssrc, ssrc);
                seen.push(t.index);
            }
            assert_eq!(seen, [1, 2, 3, 4, 5]);
            tx.next_index = MAX_INDEX + 1;
            assert_eq!(tx.protect(&mut rtcp(1, 20)), Err(SrtcpError::Exhausted));
        }
    }

    #[test]
    fn tampered_truncated_and_unencrypted_packets() {
        for profile in SrtpProfile::PREFERENCE {
            let key = [7u8; 16];
            let salt = vec![9u8; profile.salt_len()];
            let mut tx = Srtcp::new(profile, &key, &salt).unwrap();
            let rx = Srtcp::new(profile, &key, &salt).unwrap();
            let mut sealed = rtcp(5, 30);
            tx.protect(&mut sealed).unwrap();
            for at in [0, 4, 9, sealed.len() / 2, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[at] ^= 0x20;
                assert_eq!(
                    rx.unprotect(&mut bad),
                    Err(SrtcpError::Auth),
                    "{profile:?} byte {at}"
                );
            }
            for n in 0..sealed.len() {
                let mut short = sealed[..n].to_vec();
                assert!(rx.unprotect(&mut short).is_err(), "{profile:?} {n} bytes");
            }
            // The E flag cleared on an encrypted packet: it no longer authenticates.
            let mut flag = sealed.clone();
            let tail = match profile {
                SrtpProfile::AeadAes128Gcm => flag.len() - INDEX_LEN,
                SrtpProfile::Aes128CmHmacSha1_80 => flag.len() - CM_TAG_LEN - INDEX_LEN,
            };
            flag[tail] &= 0x7f;
            assert_eq!(rx.unprotect(&mut flag), Err(SrtcpError::Auth));
        }
        // A packet sent unencrypted (E = 0) by a peer, CM: authenticated and left as it is.
        let key = [1u8; 16];
        let salt = [2u8; 14];
        let Cipher::Cm { auth, .. } = Srtcp::new(SrtpProfile::Aes128CmHmacSha1_80, &key, &salt)
            .unwrap()
            .cipher
        else {
            unreachable!()
        };
        let plain = rtcp(8, 12);
        let mut p = plain.clone();
        p.extend(9u32.to_be_bytes());
        let tag = cm_tag(&auth, &p);
        p.extend(&tag[..CM_TAG_LEN]);
        let rx = Srtcp::new(SrtpProfile::Aes128CmHmacSha1_80, &key, &salt).unwrap();
        assert_eq!(rx.unprotect(&mut p), Ok(SrtcpTrailer { ssrc: 8, index: 9 }));
        assert_eq!(p, plain);
    }
}
