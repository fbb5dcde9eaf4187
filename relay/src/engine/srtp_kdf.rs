//! What the in-place SRTP transforms share: RFC 3711 §4.3 key derivation and the rollover
//! counter that extends 16-bit sequence numbers to the 48-bit packet index.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};

/// Label of the session encryption key.
pub(crate) const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
/// Label of the session authentication key.
pub(crate) const LABEL_SRTP_AUTHENTICATION: u8 = 0x01;
/// Label of the session salt.
pub(crate) const LABEL_SRTP_SALT: u8 = 0x02;

/// RFC 3711 §4.3.1 key derivation (AES-CM PRF) with key derivation rate 0, as DTLS-SRTP uses.
/// `master_salt` is 14 bytes for AES-CM profiles and 12 for AEAD-GCM (RFC 7714 §12); both
/// are placed at the front of the block with the label at byte 7.
pub(crate) fn derive(master_key: &[u8; 16], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let aes = aes::Aes128::new(GenericArray::from_slice(master_key));
    let mut x = [0u8; 16];
    x[..master_salt.len()].copy_from_slice(master_salt);
    x[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        let b = GenericArray::from_mut_slice(&mut block);
        aes.encrypt_block(b);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// Rollover-counter tracking of one SSRC (RFC 3711 §3.3.1, appendix A).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rollover {
    pub(crate) roc: u32,
    pub(crate) highest: u16,
}

impl Rollover {
    /// State for a stream whose first packet has sequence number `seq`.
    pub(crate) fn first(seq: u16) -> Self {
        Rollover {
            roc: 0,
            highest: seq,
        }
    }

    /// The ROC to use for `seq`, given the highest sequence number seen.
    pub(crate) fn estimate(&self, seq: u16) -> u32 {
        let s_l = self.highest as i32;
        let seq = seq as i32;
        if s_l < 0x8000 {
            if seq - s_l > 0x8000 {
                self.roc.wrapping_sub(1)
            } else {
                self.roc
            }
        } else if s_l - 0x8000 > seq {
            self.roc.wrapping_add(1)
        } else {
            self.roc
        }
    }

    /// Record an authenticated (or sent) packet.
    pub(crate) fn update(&mut self, seq: u16, roc: u32) {
        let newer = roc > self.roc || (roc == self.roc && seq > self.highest);
        if newer {
            self.roc = roc;
            self.highest = seq;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// An RTP packet with a 12-byte header and a payload that differs per sequence number.
    pub(crate) fn rtp(seq: u16, ssrc: u32, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..len).map(|i| (i as u8).wrapping_mul(seq as u8 | 1)));
        p
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let key: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139").try_into().unwrap();
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut cipher_key = [0u8; 16];
        let mut cipher_salt = [0u8; 14];
        let mut auth_key = [0u8; 20];
        derive(&key, &salt, LABEL_SRTP_ENCRYPTION, &mut cipher_key);
        derive(&key, &salt, LABEL_SRTP_SALT, &mut cipher_salt);
        derive(&key, &salt, LABEL_SRTP_AUTHENTICATION, &mut auth_key);
        assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth_key.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn rollover_follows_wrap_around_and_reordering() {
        let mut r = Rollover::first(65_534);
        for seq in [65_534u16, 65_535, 0, 1] {
            let roc = r.estimate(seq);
            r.update(seq, roc);
        }
        assert_eq!((r.roc, r.highest), (1, 1));
        // A late packet from before the wrap belongs to the previous cycle.
        assert_eq!(r.estimate(65_535), 0);
        assert_eq!(r.estimate(2), 1);
    }
}
