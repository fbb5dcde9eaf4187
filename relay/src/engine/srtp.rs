//! SRTP/SRTCP contexts of one participant (RFC 3711, RFC 7714), keyed from DTLS (RFC 5764).
//!
//! One context per direction: `rx` unprotects what the participant sends (with replay
//! protection), `tx` protects what the relay sends to it. RTP goes through the in-place
//! transforms of [`super::srtp_gcm`] and [`super::srtp_cm`], SRTCP through [`super::srtcp`];
//! this module owns key splitting, profile mapping, replay windows and the classification of
//! failures into drop reasons. No state is created for an SSRC before a packet carrying it has
//! authenticated, and at most [`MAX_REPLAY_SSRCS`] per direction after.

use std::collections::VecDeque;

use crate::FastMap;

use webrtc_srtp::protection_profile::ProtectionProfile;

use super::replay::ReplayWindow;
use super::srtcp::{Srtcp, SrtcpError};
use super::srtp_cm::CmRtp;
use super::srtp_gcm::GcmRtp;
use crate::stats::DropReason;

/// RFC 5764 §4.2 exporter label.
pub const EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// Replay windows kept per direction; SSRCs beyond this (only authenticated ones count) reuse
/// no state and are refused, which bounds memory per participant.
const MAX_REPLAY_SSRCS: usize = 64;

/// SSRCs the caller stopped taking ([`SrtpSession::forget_remote`]) whose windows and rollover
/// counters are still kept, apart from the active ones, so that old packets on them stay
/// refused and a stream that comes back goes on where it was; the oldest beyond this is
/// forgotten for good.
const MAX_RETIRED_SSRCS: usize = 256;

/// The SRTP protection profiles the relay negotiates, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SrtpProfile {
    /// SRTP_AEAD_AES_128_GCM (RFC 7714): ~5× cheaper than HMAC-SHA1 on this class of machine.
    AeadAes128Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711): for peers that offer nothing else.
    Aes128CmHmacSha1_80,
}

impl SrtpProfile {
    /// The relay's order of preference, applied to what each client offers.
    pub const PREFERENCE: [SrtpProfile; 2] =
        [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];

    fn protection_profile(self) -> ProtectionProfile {
        match self {
            SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        self.protection_profile().key_len()
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        self.protection_profile().salt_len()
    }

    /// Bytes of keying material to export: both keys and both salts.
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }
}

/// Master keys and salts for both directions, as seen from one side.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// Negotiated profile.
    pub profile: SrtpProfile,
    /// Key this side protects with.
    pub local_key: Vec<u8>,
    /// Salt this side protects with.
    pub local_salt: Vec<u8>,
    /// Key the peer protects with.
    pub remote_key: Vec<u8>,
    /// Salt the peer protects with.
    pub remote_salt: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl SrtpKeys {
    /// Split exported keying material (RFC 5764 §4.2: client key, server key, client salt,
    /// server salt). Returns None when `material` has the wrong length.
    pub fn from_keying_material(
        profile: SrtpProfile,
        material: &[u8],
        is_client: bool,
    ) -> Option<Self> {
        let (k, s) = (profile.key_len(), profile.salt_len());
        if material.len() != profile.keying_material_len() {
            return None;
        }
        let client_key = &material[..k];
        let server_key = &material[k..2 * k];
        let client_salt = &material[2 * k..2 * k + s];
        let server_salt = &material[2 * k + s..];
        let (lk, ls, rk, rs) = if is_client {
            (client_key, client_salt, server_key, server_salt)
        } else {
            (server_key, server_salt, client_key, client_salt)
        };
        Some(SrtpKeys {
            profile,
            local_key: lk.to_vec(),
            local_salt: ls.to_vec(),
            remote_key: rk.to_vec(),
            remote_salt: rs.to_vec(),
        })
    }
}

/// The in-place RTP transform of the negotiated profile, one per direction.
// One per participant, sized by ring's GCM key tables; boxing would only add a pointer chase
// to every packet.
#[allow(clippy::large_enum_variant)]
enum RtpTransform {
    Gcm { rx: GcmRtp, tx: GcmRtp },
    Cm { rx: CmRtp, tx: CmRtp },
}

/// Both directions of one participant's SRTP.
///
/// RTP, the forwarding path, is processed in place under either profile ([`GcmRtp`],
/// [`CmRtp`]); SRTCP too ([`Srtcp`]).
pub struct SrtpSession {
    rtcp_rx: Srtcp,
    rtcp_tx: Srtcp,
    rtp: RtpTransform,
    /// Replay windows per SSRC, moved only by authenticated packets (see [`super::replay`]).
    rtp_replay: Windows,
    rtcp_replay: Windows,
    /// The SSRCs retired, oldest first.
    retired: VecDeque<u32>,
}

/// The replay windows of one kind of packet from the peer: at most [`MAX_REPLAY_SSRCS`]
/// active, and those of retired SSRCs kept apart, where they count against no bound but still
/// refuse what they saw or what is too old.
struct Windows {
    modulus: u64,
    active: FastMap<u32, ReplayWindow>,
    retired: FastMap<u32, ReplayWindow>,
}

impl Windows {
    fn new(modulus: u64) -> Self {
        Windows {
            modulus,
            active: FastMap::default(),
            retired: FastMap::default(),
        }
    }

    fn check(&self, ssrc: u32, seq: u64) -> Result<(), DropReason> {
        let window = match self.active.get(&ssrc) {
            Some(w) => Some(w),
            None if self.active.len() >= MAX_REPLAY_SSRCS => return Err(DropReason::SrtpReplay),
            None => self.retired.get(&ssrc),
        };
        match window {
            Some(w) if !w.check(seq) => Err(DropReason::SrtpReplay),
            _ => Ok(()),
        }
    }

    /// Record an authenticated `seq`; a retired SSRC's window becomes active again.
    fn accept(&mut self, ssrc: u32, seq: u64) {
        // One lookup for every packet of a known stream.
        if let Some(w) = self.active.get_mut(&ssrc) {
            w.accept(seq);
            return;
        }
        let mut window = self
            .retired
            .remove(&ssrc)
            .unwrap_or_else(|| ReplayWindow::new(self.modulus));
        window.accept(seq);
        self.active.insert(ssrc, window);
    }

    fn retire(&mut self, ssrc: u32) {
        if let Some(w) = self.active.remove(&ssrc) {
            self.retired.insert(ssrc, w);
        }
    }
}

/// Key lengths that do not fit the negotiated profile.
#[derive(Debug, thiserror::Error)]
#[error("SRTP master key or salt of the wrong length for {0:?}")]
pub struct BadKeyLength(pub SrtpProfile);

impl SrtpSession {
    /// Build the contexts; fails only on key lengths that do not fit the profile.
    pub fn new(keys: &SrtpKeys) -> Result<Self, BadKeyLength> {
        let bad = || BadKeyLength(keys.profile);
        let rtp = match keys.profile {
            SrtpProfile::AeadAes128Gcm => GcmRtp::new(&keys.remote_key, &keys.remote_salt)
                .zip(GcmRtp::new(&keys.local_key, &keys.local_salt))
                .map(|(rx, tx)| RtpTransform::Gcm { rx, tx }),
            SrtpProfile::Aes128CmHmacSha1_80 => CmRtp::new(&keys.remote_key, &keys.remote_salt)
                .zip(CmRtp::new(&keys.local_key, &keys.local_salt))
                .map(|(rx, tx)| RtpTransform::Cm { rx, tx }),
        }
        .ok_or_else(bad)?;
        Ok(SrtpSession {
            rtcp_rx: Srtcp::new(keys.profile, &keys.remote_key, &keys.remote_salt)
                .ok_or_else(bad)?,
            rtcp_tx: Srtcp::new(keys.profile, &keys.local_key, &keys.local_salt).ok_or_else(bad)?,
            rtp,
            rtp_replay: Windows::new(1 << 16),
            rtcp_replay: Windows::new(1 << 31),
            retired: VecDeque::new(),
        })
    }

    /// Retire `ssrc` in what the peer sends: the caller no longer takes packets on it. Replay
    /// windows are kept for at most [`MAX_REPLAY_SSRCS`] active SSRCs a direction, and an SSRC
    /// past that is refused, so a publisher whose SSRCs change all through a long call needs
    /// the old ones out of the way. A retired SSRC's windows and rollover counter are kept
    /// apart ([`MAX_RETIRED_SSRCS`] of the latest): an old packet replayed on it is still
    /// refused, and a stream that comes back on it (declared or learnt again) goes on with its
    /// counter where it was.
    pub fn forget_remote(&mut self, ssrc: u32) {
        self.rtp_replay.retire(ssrc);
        self.rtcp_replay.retire(ssrc);
        if !self.retired.contains(&ssrc) {
            self.retired.push_back(ssrc);
        }
        while self.retired.len() > MAX_RETIRED_SSRCS {
            let Some(old) = self.retired.pop_front() else {
                break;
            };
            self.rtp_replay.retired.remove(&old);
            self.rtcp_replay.retired.remove(&old);
            // Unless it came back meanwhile.
            if !self.rtp_replay.active.contains_key(&old) {
                match &mut self.rtp {
                    RtpTransform::Gcm { rx, .. } => rx.forget(old),
                    RtpTransform::Cm { rx, .. } => rx.forget(old),
                }
            }
        }
    }

    /// Whether RTP was protected toward the peer under `ssrc`.
    pub fn has_sent_on(&self, ssrc: u32) -> bool {
        match &self.rtp {
            RtpTransform::Gcm { tx, .. } => tx.knows(ssrc),
            RtpTransform::Cm { tx, .. } => tx.knows(ssrc),
        }
    }

    /// SSRCs with SRTCP replay state (only ever created by authenticated packets).
    pub fn rtcp_ssrcs(&self) -> usize {
        self.rtcp_replay.active.len()
    }

    /// Authenticate and decrypt an SRTP packet from the peer into `plain` (cleared first; a
    /// pooled buffer on the forwarding path, so this copy is the only one on the way in).
    pub fn unprotect_rtp(&mut self, packet: &[u8], plain: &mut Vec<u8>) -> Result<(), DropReason> {
        let (Some(ssrc), Some(header_len)) = (
            super::rtp::peek_ssrc(packet),
            super::rtp::header_len(packet),
        ) else {
            return Err(DropReason::SrtpAuthFailed);
        };
        let seq = u16::from_be_bytes([packet[2], packet[3]]) as u64;
        self.rtp_replay.check(ssrc, seq)?;
        plain.clear();
        plain.extend_from_slice(packet);
        let opened = match &mut self.rtp {
            RtpTransform::Gcm { rx, .. } => rx.unprotect(plain, header_len).is_ok(),
            RtpTransform::Cm { rx, .. } => rx.unprotect(plain, header_len).is_ok(),
        };
        if !opened {
            return Err(DropReason::SrtpAuthFailed);
        }
        self.rtp_replay.accept(ssrc, seq);
        Ok(())
    }

    /// Authenticate and decrypt an SRTCP compound packet from the peer.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut plain = Vec::with_capacity(packet.len());
        self.unprotect_rtcp_into(packet, &mut plain)?;
        Ok(plain)
    }

    /// [`SrtpSession::unprotect_rtcp`] into `out` (cleared first), so that a pooled buffer
    /// serves instead of an allocation per packet.
    pub fn unprotect_rtcp_into(
        &mut self,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        out.clear();
        let trailer = self
            .rtcp_rx
            .peek(packet)
            .ok_or(DropReason::SrtpAuthFailed)?;
        self.rtcp_replay.check(trailer.ssrc, trailer.index as u64)?;
        out.extend_from_slice(packet);
        self.rtcp_rx
            .unprotect(out)
            .map_err(|_| DropReason::SrtpAuthFailed)?;
        self.rtcp_replay.accept(trailer.ssrc, trailer.index as u64);
        Ok(())
    }

    /// Encrypt an RTP packet toward the peer in place, appending the tag; the buffer keeps its
    /// allocation, so a pooled buffer goes out and comes back without touching the allocator.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), DropReason> {
        let header_len = super::rtp::header_len(packet).ok_or(DropReason::SrtpProtectFailed)?;
        let sealed = match &mut self.rtp {
            RtpTransform::Gcm { tx, .. } => tx.protect(packet, header_len).is_ok(),
            RtpTransform::Cm { tx, .. } => tx.protect(packet, header_len).is_ok(),
        };
        if sealed {
            Ok(())
        } else {
            Err(DropReason::SrtpProtectFailed)
        }
    }

    /// Encrypt an RTCP compound packet toward the peer.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut sealed = Vec::with_capacity(packet.len() + 32);
        self.protect_rtcp_into(packet, &mut sealed)?;
        Ok(sealed)
    }

    /// [`SrtpSession::protect_rtcp`] into `out` (cleared first): a pooled buffer goes out.
    pub fn protect_rtcp_into(
        &mut self,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        out.clear();
        out.extend_from_slice(packet);
        match self.rtcp_tx.protect(out) {
            Ok(()) => Ok(()),
            Err(SrtcpError::TooShort | SrtcpError::Auth | SrtcpError::Exhausted) => {
                Err(DropReason::SrtpProtectFailed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(profile: SrtpProfile) -> (SrtpSession, SrtpSession) {
        let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
        let client = SrtpKeys::from_keying_material(profile, &material, true).unwrap();
        let server = SrtpKeys::from_keying_material(profile, &material, false).unwrap();
        assert_eq!(client.local_key, server.remote_key);
        assert_eq!(client.local_salt, server.remote_salt);
        (
            SrtpSession::new(&client).unwrap(),
            SrtpSession::new(&server).unwrap(),
        )
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 1, 0, 0, 0, 42];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend(std::iter::repeat_n(0xab, 100));
        p
    }

    fn seal(s: &mut SrtpSession, mut packet: Vec<u8>) -> Result<Vec<u8>, DropReason> {
        s.protect_rtp(&mut packet).map(|()| packet)
    }

    fn open(s: &mut SrtpSession, packet: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut plain = Vec::new();
        s.unprotect_rtp(packet, &mut plain).map(|()| plain)
    }

    fn on(ssrc: u32, seq: u16) -> Vec<u8> {
        let mut p = rtp(seq);
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn a_forgotten_ssrc_makes_room_and_a_sent_one_is_known() {
        for profile in SrtpProfile::PREFERENCE {
            let (mut client, mut server) = pair(profile);
            for ssrc in 0..MAX_REPLAY_SSRCS as u32 {
                let sealed = seal(&mut client, on(ssrc, 1)).unwrap();
                open(&mut server, &sealed).unwrap();
            }
            let past = seal(&mut client, on(1000, 1)).unwrap();
            assert_eq!(open(&mut server, &past), Err(DropReason::SrtpReplay));
            // Retired, SSRC 0 makes room; its old packet is still refused, and its stream
            // goes on where it was if it comes back.
            let old = seal(&mut client, on(0, 1)).unwrap();
            server.forget_remote(0);
            open(&mut server, &past).unwrap();
            server.forget_remote(1000);
            assert_eq!(open(&mut server, &old), Err(DropReason::SrtpReplay));
            let later = seal(&mut client, on(0, 2)).unwrap();
            open(&mut server, &later).unwrap();
            assert_eq!(open(&mut server, &later), Err(DropReason::SrtpReplay));

            assert!(!server.has_sent_on(7));
            seal(&mut server, on(7, 1)).unwrap();
            assert!(server.has_sent_on(7));
            assert!(!server.has_sent_on(8));
        }
    }

    #[test]
    fn roundtrip_replay_and_tamper_both_profiles() {
        for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
            let (mut client, mut server) = pair(profile);
            let plain = rtp(7);
            let sealed = seal(&mut client, plain.clone()).unwrap();
            assert_eq!(&open(&mut server, &sealed).unwrap()[..], &plain[..]);
            assert_eq!(
                open(&mut server, &sealed).err(),
                Some(DropReason::SrtpReplay)
            );
            let mut bad = seal(&mut client, rtp(8)).unwrap();
            let last = bad.len() - 1;
            bad[last] ^= 0x55;
            assert_eq!(
                open(&mut server, &bad).err(),
                Some(DropReason::SrtpAuthFailed)
            );
            assert_eq!(
                open(&mut server, &bad[..5]).err(),
                Some(DropReason::SrtpAuthFailed)
            );
            // Forged SRTCP cannot move the replay window, and short SRTCP of every length below
            // a valid one is refused, never indexed past.
            let rtcp = [0x80, 201, 0, 1, 0, 0, 0, 1];
            let mut forged = client.protect_rtcp(&rtcp).unwrap();
            let at = match profile {
                SrtpProfile::AeadAes128Gcm => forged.len() - 4,
                SrtpProfile::Aes128CmHmacSha1_80 => forged.len() - 10 - 4,
            };
            forged[at..at + 4].copy_from_slice(&0xf000_0000u32.to_be_bytes());
            assert_eq!(
                server.unprotect_rtcp(&forged).err(),
                Some(DropReason::SrtpAuthFailed)
            );
            let sealed = client.protect_rtcp(&rtcp).unwrap();
            for n in 0..sealed.len() {
                assert!(server.unprotect_rtcp(&sealed[..n]).is_err(), "{n} bytes");
            }
            assert_eq!(&server.unprotect_rtcp(&sealed).unwrap()[..], &rtcp[..]);
            assert_eq!(
                server.unprotect_rtcp(&sealed).err(),
                Some(DropReason::SrtpReplay)
            );
        }
    }

    #[test]
    fn wrong_material_length_is_refused() {
        assert!(
            SrtpKeys::from_keying_material(SrtpProfile::AeadAes128Gcm, &[0; 10], false).is_none()
        );
        assert_eq!(SrtpProfile::AeadAes128Gcm.keying_material_len(), 56);
        assert_eq!(SrtpProfile::Aes128CmHmacSha1_80.keying_material_len(), 60);
    }
}
