//! The DTLS 1.2 record layer of an association whose handshake is done (RFC 6347 §4.1).
//!
//! The handshake runs in the DTLS library, as an async task with its own read loop, channels,
//! buffers and handshake transcript: tens of kilobytes per participant, kept for as long as the
//! association lives. Once the handshake is done a WebRTC association needs only a little of
//! it: open and protect the application-data records that carry the data channels' SCTP, notice
//! the peer's close, and send the relay's last flight again to a peer that missed it (the peer
//! then repeats its own last flight; RFC 6347 §4.2.4). So the handshake's task is dropped when
//! it finishes and this keeps the rest: the record keys, the next sequence number, a replay
//! window and the last flight's datagrams.
//!
//! Only TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 is negotiated, the suite RFC 8827 §6.5 requires
//! of every WebRTC endpoint, so the keys follow from the master secret and the two randoms.
//! Records are opened with the DTLS library's own cipher suite (`CipherSuiteAes128GcmSha256`).
//! They are sealed here, with ring's AES-GCM: the library draws each record's explicit nonce
//! at random, and 64 random bits make a repeat likely enough after some millions of records
//! for a fleet to meet one (a repeated GCM nonce lets an attacker forge records). The explicit
//! nonce here is the record's epoch and sequence number, which never repeat under one key
//! (RFC 5288 §3 allows it; OpenSSL and BoringSSL do the same). The key expansion is TLS 1.2's
//! PRF (RFC 5246 §5, §6.3), checked against the library: what one side seals the other opens.
//!
//! Sans-IO: [`RecordLayer::handle_datagram`] takes what the peer sent, with `now`;
//! [`RecordLayer::poll_output`] gives back plaintext, datagrams to send and the close.

use std::collections::VecDeque;
use std::io::Cursor;
use std::time::{Duration, Instant};

use dtls::cipher_suite::cipher_suite_aes_128_gcm_sha256::CipherSuiteAes128GcmSha256;
use dtls::cipher_suite::{CipherSuite, CipherSuiteId};
use dtls::content::ContentType;
use dtls::record_layer::record_layer_header::{
    RecordLayerHeader, MAX_SEQUENCE_NUMBER, PROTOCOL_VERSION1_2, RECORD_LAYER_HEADER_SIZE,
};

use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use sha2::Sha256;

use crate::engine::replay::ReplayWindow;

/// The one cipher suite the relay negotiates.
pub const CIPHER_SUITE: CipherSuiteId = CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256;

/// The epoch of every record after the handshake (no renegotiation in WebRTC).
const EPOCH: u16 = 1;

/// The peer's repeated flight is answered at most this often: a flight of several datagrams
/// is answered once, and a peer cannot make the relay send more than it receives.
const RETRANSMIT_INTERVAL: Duration = Duration::from_millis(100);

/// What AES-GCM adds to a record's plaintext: the explicit nonce and the tag (RFC 5288 §3).
/// The library's `decrypt` checks only for the nonce and would subtract past zero without it.
const GCM_OVERHEAD: usize = 8 + 16;

/// Plaintext, datagrams and the close are queued up to this many outputs (and one notice of a
/// drop beyond); past it a datagram's further records are dropped (a datagram holds a handful
/// of records, not thousands).
pub const MAX_QUEUED: usize = 64;

/// The relay's last flight is sent again at most this many times: a peer that still has not
/// got it has gone, and anyone can forge the records that ask for it.
const MAX_RETRANSMITS: u32 = 8;

/// The largest plaintext of a record (RFC 5246 §6.2.1).
const MAX_PLAINTEXT: usize = 1 << 14;

const ALERT_WARNING: u8 = 1;
const ALERT_FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;

/// What a finished handshake leaves for the record layer.
#[derive(Clone, Debug)]
pub struct Established {
    /// The relay's role in the handshake.
    pub is_client: bool,
    /// The master secret (48 bytes).
    pub master_secret: Vec<u8>,
    /// The ClientHello's random.
    pub client_random: [u8; 32],
    /// The ServerHello's random.
    pub server_random: [u8; 32],
    /// One past the highest epoch-1 sequence number the handshake sent.
    pub next_sequence: u64,
    /// The datagrams of the relay's last flight, sent again if the peer repeats its own.
    pub last_flight: Vec<Vec<u8>>,
}

/// Why a record was dropped or could not be protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The key block could not be derived.
    #[error("record keys could not be derived")]
    Keys,
    /// Shorter than its header says, or than a header.
    #[error("truncated record")]
    Truncated,
    /// Not DTLS 1.2, or an epoch other than the current one for protected content.
    #[error("record of another version or epoch")]
    Epoch,
    /// Did not authenticate.
    #[error("record failed authentication")]
    Authentication,
    /// Already received, or too far behind.
    #[error("replayed record")]
    Replayed,
    /// A content type the association does not carry after its handshake.
    #[error("unexpected content type")]
    ContentType,
    /// The 48-bit sequence space is used up (the association must end).
    #[error("sequence numbers exhausted")]
    Exhausted,
    /// More than a record's plaintext may hold.
    #[error("plaintext longer than a record holds")]
    TooLong,
    /// More outputs are waiting than one datagram may produce.
    #[error("too many records in one datagram")]
    Overflow,
}

/// What the record layer has for the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordOutput {
    /// The plaintext of an application-data record.
    Data(Vec<u8>),
    /// A datagram to send to the peer.
    Transmit(Vec<u8>),
    /// The peer closed the association (close_notify or a fatal alert).
    Closed,
    /// A record was dropped.
    Dropped(RecordError),
}

/// One association's record layer after its handshake.
pub struct RecordLayer {
    /// Opens the peer's records.
    cipher: CipherSuiteAes128GcmSha256,
    /// Seals the relay's: its write key and the implicit part of its nonces.
    write_key: LessSafeKey,
    write_salt: [u8; 4],
    next_sequence: u64,
    replay: ReplayWindow,
    /// Dropped at the first record the peer protected after its Finished: then it has the
    /// relay's Finished.
    last_flight: Option<Vec<Vec<u8>>>,
    retransmitted_at: Option<Instant>,
    retransmits: u32,
    closed: bool,
    outputs: VecDeque<RecordOutput>,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLayer")
            .field("next_sequence", &self.next_sequence)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl RecordLayer {
    /// The record layer that goes on from a finished handshake.
    pub fn new(established: Established) -> Result<Self, RecordError> {
        let mut cipher = CipherSuiteAes128GcmSha256::new(false);
        cipher
            .init(
                &established.master_secret,
                &established.client_random,
                &established.server_random,
                established.is_client,
            )
            .map_err(|_| RecordError::Keys)?;
        let (write_key, write_salt) = write_key(&established).ok_or(RecordError::Keys)?;
        Ok(RecordLayer {
            cipher,
            write_key,
            write_salt,
            next_sequence: established.next_sequence,
            replay: ReplayWindow::new(MAX_SEQUENCE_NUMBER + 1),
            last_flight: Some(established.last_flight).filter(|f| !f.is_empty()),
            retransmitted_at: None,
            retransmits: 0,
            closed: false,
            outputs: VecDeque::new(),
        })
    }

    /// Whether the peer has closed the association.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A datagram from the peer: each record in it is opened, answered or dropped.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        let mut rest = datagram;
        while !rest.is_empty() && !self.closed {
            let Some(len) = record_len(rest) else {
                self.push(RecordOutput::Dropped(RecordError::Truncated));
                return;
            };
            let (record, after) = rest.split_at(len);
            rest = after;
            if let Err(e) = self.handle_record(now, record) {
                self.push(RecordOutput::Dropped(e));
            }
        }
    }

    fn handle_record(&mut self, now: Instant, record: &[u8]) -> Result<(), RecordError> {
        let header = RecordLayerHeader::unmarshal(&mut Cursor::new(record))
            .map_err(|_| RecordError::Truncated)?;
        match header.content_type {
            // The peer repeats its last flight (its handshake messages, ChangeCipherSpec, then
            // its Finished under the new epoch): it did not get the relay's.
            ContentType::Handshake | ContentType::ChangeCipherSpec => {
                let Some(flight) = &self.last_flight else {
                    return Err(RecordError::ContentType);
                };
                let due = self
                    .retransmitted_at
                    .is_none_or(|at| now >= at + RETRANSMIT_INTERVAL);
                if due && self.retransmits < MAX_RETRANSMITS {
                    self.retransmitted_at = Some(now);
                    self.retransmits += 1;
                    for datagram in flight.clone() {
                        self.push(RecordOutput::Transmit(datagram));
                    }
                }
                Ok(())
            }
            ContentType::ApplicationData | ContentType::Alert => {
                if header.epoch != EPOCH || header.protocol_version != PROTOCOL_VERSION1_2 {
                    return Err(RecordError::Epoch);
                }
                if record.len() < RECORD_LAYER_HEADER_SIZE + GCM_OVERHEAD {
                    return Err(RecordError::Truncated);
                }
                // Refused before it moves the replay window, so that SCTP sends it again.
                if self.outputs.len() >= MAX_QUEUED {
                    return Err(RecordError::Overflow);
                }
                if !self.replay.check(header.sequence_number) {
                    return Err(RecordError::Replayed);
                }
                let opened = self
                    .cipher
                    .decrypt(record)
                    .map_err(|_| RecordError::Authentication)?;
                self.replay.accept(header.sequence_number);
                self.last_flight = None;
                let plaintext = &opened[RECORD_LAYER_HEADER_SIZE..];
                if header.content_type == ContentType::ApplicationData {
                    self.push(RecordOutput::Data(plaintext.to_vec()));
                    return Ok(());
                }
                match plaintext {
                    [ALERT_WARNING, CLOSE_NOTIFY] => {
                        // Answered in kind (RFC 5246 §7.2.1).
                        if let Ok(reply) =
                            self.seal_as(ContentType::Alert, &[ALERT_WARNING, CLOSE_NOTIFY])
                        {
                            self.outputs.push_back(RecordOutput::Transmit(reply));
                        }
                        self.closed = true;
                        self.outputs.push_back(RecordOutput::Closed);
                        Ok(())
                    }
                    [ALERT_FATAL, _] => {
                        self.closed = true;
                        self.outputs.push_back(RecordOutput::Closed);
                        Ok(())
                    }
                    // Other warnings change nothing (RFC 5246 §7.2.2).
                    [ALERT_WARNING, _] => Ok(()),
                    _ => Err(RecordError::Truncated),
                }
            }
            _ => Err(RecordError::ContentType),
        }
    }

    fn push(&mut self, output: RecordOutput) {
        let room = match output {
            RecordOutput::Dropped(_) => MAX_QUEUED + 1,
            _ => MAX_QUEUED,
        };
        if self.outputs.len() < room {
            self.outputs.push_back(output);
        }
    }

    /// The next thing the caller has to do something with.
    pub fn poll_output(&mut self) -> Option<RecordOutput> {
        self.outputs.pop_front()
    }

    /// Protect `payload` as an application-data record, one datagram.
    pub fn seal(&mut self, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
        self.seal_as(ContentType::ApplicationData, payload)
    }

    fn seal_as(
        &mut self,
        content_type: ContentType,
        payload: &[u8],
    ) -> Result<Vec<u8>, RecordError> {
        if self.next_sequence > MAX_SEQUENCE_NUMBER {
            return Err(RecordError::Exhausted);
        }
        if payload.len() > MAX_PLAINTEXT {
            return Err(RecordError::TooLong);
        }
        // The epoch and sequence number: the explicit nonce, and the start of the additional
        // data (RFC 5246 §6.2.3.3).
        let mut sequence = self.next_sequence.to_be_bytes();
        sequence[..2].copy_from_slice(&EPOCH.to_be_bytes());
        let len = payload.len() as u16;
        let mut aad = [0u8; 13];
        aad[..8].copy_from_slice(&sequence);
        aad[8] = content_type as u8;
        aad[9] = PROTOCOL_VERSION1_2.major;
        aad[10] = PROTOCOL_VERSION1_2.minor;
        aad[11..].copy_from_slice(&len.to_be_bytes());
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.write_salt);
        nonce[4..].copy_from_slice(&sequence);
        let mut record =
            Vec::with_capacity(RECORD_LAYER_HEADER_SIZE + GCM_OVERHEAD + payload.len());
        record.extend_from_slice(&aad[8..11]);
        record.extend_from_slice(&sequence);
        record.extend_from_slice(&(len + GCM_OVERHEAD as u16).to_be_bytes());
        record.extend_from_slice(&sequence);
        record.extend_from_slice(payload);
        let tag = self
            .write_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut record[RECORD_LAYER_HEADER_SIZE + 8..],
            )
            .map_err(|_| RecordError::Keys)?;
        record.extend_from_slice(tag.as_ref());
        self.next_sequence += 1;
        Ok(record)
    }
}

/// The relay's write key and salt: TLS 1.2's key expansion (RFC 5246 §6.3) for an AEAD suite,
/// no MAC keys, a 16-byte key and a 4-byte salt for each side, client first.
fn write_key(established: &Established) -> Option<(LessSafeKey, [u8; 4])> {
    let mut seed = b"key expansion".to_vec();
    seed.extend_from_slice(&established.server_random);
    seed.extend_from_slice(&established.client_random);
    let block = p_sha256(&established.master_secret, &seed, 40)?;
    let (key, salt) = if established.is_client {
        (&block[..16], &block[32..36])
    } else {
        (&block[16..32], &block[36..40])
    };
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).ok()?);
    Some((key, salt.try_into().ok()?))
}

/// P_SHA256 (RFC 5246 §5): `len` bytes from `secret` and `seed`.
fn p_sha256(secret: &[u8], seed: &[u8], len: usize) -> Option<Vec<u8>> {
    let hmac = |parts: &[&[u8]]| -> Option<[u8; 32]> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        for part in parts {
            mac.update(part);
        }
        Some(mac.finalize().into_bytes().into())
    };
    let mut out = Vec::with_capacity(len + 32);
    let mut a = hmac(&[seed])?;
    while out.len() < len {
        out.extend_from_slice(&hmac(&[&a, seed])?);
        a = hmac(&[&a])?;
    }
    out.truncate(len);
    Some(out)
}

/// The length of the record at the start of `bytes`, header included, if it is whole.
fn record_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..RECORD_LAYER_HEADER_SIZE)?;
    let len = RECORD_LAYER_HEADER_SIZE + usize::from(u16::from_be_bytes([header[11], header[12]]));
    (len <= bytes.len()).then_some(len)
}

/// The cipher suite a ServerHello in `datagram` (one the relay sent) names, if it holds one
/// whole: the handshake message's header (12 bytes in DTLS), then the version, the random, the
/// session id and the suite (RFC 6347 §4.2.2, RFC 5246 §7.4.1.3).
pub fn server_hello_suite(datagram: &[u8]) -> Option<u16> {
    const SERVER_HELLO: u8 = 2;
    let mut rest = datagram;
    while let Some(len) = record_len(rest) {
        let (record, after) = rest.split_at(len);
        rest = after;
        let body = &record[RECORD_LAYER_HEADER_SIZE..];
        // Handshake, epoch 0, a ServerHello's first fragment.
        if record[0] != ContentType::Handshake as u8
            || record[3..5] != [0, 0]
            || body.first() != Some(&SERVER_HELLO)
            || body.get(6..9) != Some(&[0, 0, 0])
        {
            continue;
        }
        let hello = body.get(12..)?;
        let session_id = usize::from(*hello.get(34)?);
        let suite = hello.get(35 + session_id..37 + session_id)?;
        return Some(u16::from_be_bytes([suite[0], suite[1]]));
    }
    None
}

/// The records of a datagram the relay sent, as (content type, epoch, sequence number); stops
/// at the first that is not whole.
pub fn records_of(datagram: &[u8]) -> impl Iterator<Item = (u8, u16, u64)> + '_ {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = record_len(rest)?;
        let h = &rest[..RECORD_LAYER_HEADER_SIZE];
        let epoch = u16::from_be_bytes([h[3], h[4]]);
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&h[5..11]);
        let record = (h[0], epoch, u64::from_be_bytes(seq));
        rest = &rest[len..];
        Some(record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn established(is_client: bool, next_sequence: u64, last_flight: Vec<Vec<u8>>) -> Established {
        Established {
            is_client,
            master_secret: (0..48).collect(),
            client_random: [1; 32],
            server_random: [2; 32],
            next_sequence,
            last_flight,
        }
    }

    fn pair() -> (RecordLayer, RecordLayer) {
        let server = RecordLayer::new(established(false, 1, vec![vec![20, 1, 2]])).unwrap();
        let client = RecordLayer::new(established(true, 1, vec![])).unwrap();
        (server, client)
    }

    fn outputs(layer: &mut RecordLayer) -> Vec<RecordOutput> {
        std::iter::from_fn(|| layer.poll_output()).collect()
    }

    #[test]
    fn what_one_side_seals_the_other_opens_once() {
        let (mut server, mut client) = pair();
        let now = Instant::now();
        let sealed = client.seal(b"sctp packet").unwrap();
        assert_eq!(records_of(&sealed).collect::<Vec<_>>(), vec![(23, 1, 1)]);
        server.handle_datagram(now, &sealed);
        assert_eq!(
            outputs(&mut server),
            vec![RecordOutput::Data(b"sctp packet".to_vec())]
        );
        server.handle_datagram(now, &sealed);
        assert_eq!(
            outputs(&mut server),
            vec![RecordOutput::Dropped(RecordError::Replayed)]
        );
        let back = server.seal(b"answer").unwrap();
        client.handle_datagram(now, &back);
        assert_eq!(
            outputs(&mut client),
            vec![RecordOutput::Data(b"answer".to_vec())]
        );
    }

    #[test]
    fn a_tampered_record_is_dropped_and_moves_nothing() {
        let (mut server, mut client) = pair();
        let now = Instant::now();
        let sealed = client.seal(b"x").unwrap();
        let mut forged = sealed.clone();
        *forged.last_mut().unwrap() ^= 1;
        // A forged sequence number far ahead must not move the window either.
        forged[5] = 0x7f;
        server.handle_datagram(now, &forged);
        assert_eq!(
            outputs(&mut server),
            vec![RecordOutput::Dropped(RecordError::Authentication)]
        );
        server.handle_datagram(now, &sealed);
        assert_eq!(
            outputs(&mut server),
            vec![RecordOutput::Data(b"x".to_vec())]
        );
    }

    #[test]
    fn a_repeated_flight_is_answered_with_the_last_one_until_the_peer_protects_a_record() {
        let (mut server, mut client) = pair();
        let t0 = Instant::now();
        // Flight 5 again: a handshake record of epoch 0, then ChangeCipherSpec.
        let mut flight5 = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 7];
        flight5.extend_from_slice(&[20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 10, 0, 1, 1]);
        server.handle_datagram(t0, &flight5);
        assert_eq!(
            outputs(&mut server),
            vec![RecordOutput::Transmit(vec![20, 1, 2])]
        );
        // Its next datagram, within the interval, is not answered again.
        server.handle_datagram(t0 + Duration::from_millis(10), &flight5);
        assert_eq!(outputs(&mut server), vec![]);
        server.handle_datagram(t0 + RETRANSMIT_INTERVAL, &flight5);
        assert_eq!(
            outputs(&mut server),
            vec![RecordOutput::Transmit(vec![20, 1, 2])]
        );
        let sealed = client.seal(b"init").unwrap();
        server.handle_datagram(t0 + RETRANSMIT_INTERVAL, &sealed);
        outputs(&mut server);
        server.handle_datagram(t0 + RETRANSMIT_INTERVAL * 3, &flight5);
        assert_eq!(
            outputs(&mut server),
            vec![
                RecordOutput::Dropped(RecordError::ContentType),
                RecordOutput::Dropped(RecordError::ContentType)
            ]
        );
    }

    #[test]
    fn close_notify_is_answered_and_closes_and_a_fatal_alert_closes() {
        let (mut server, mut client) = pair();
        let sealed = client
            .seal_as(ContentType::Alert, &[ALERT_WARNING, CLOSE_NOTIFY])
            .unwrap();
        server.handle_datagram(Instant::now(), &sealed);
        let out = outputs(&mut server);
        let [RecordOutput::Transmit(reply), RecordOutput::Closed] = &out[..] else {
            panic!("{out:?}");
        };
        assert!(server.is_closed());
        // The reply is the relay's own close_notify, which the peer opens.
        client.handle_datagram(Instant::now(), reply);
        assert!(client.is_closed());

        let (mut server, mut client) = pair();
        let sealed = client
            .seal_as(ContentType::Alert, &[ALERT_FATAL, 40])
            .unwrap();
        server.handle_datagram(Instant::now(), &sealed);
        assert_eq!(outputs(&mut server), vec![RecordOutput::Closed]);
        assert!(server.is_closed());

        let (mut server, mut client) = pair();
        let sealed = client
            .seal_as(ContentType::Alert, &[ALERT_WARNING, 90])
            .unwrap();
        server.handle_datagram(Instant::now(), &sealed);
        assert_eq!(outputs(&mut server), vec![]);
        assert!(!server.is_closed());
    }

    #[test]
    fn the_last_flight_is_sent_again_a_bounded_number_of_times() {
        let (mut server, _) = pair();
        let t0 = Instant::now();
        let repeat = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 7];
        let mut sent = 0;
        for i in 0..100 {
            server.handle_datagram(t0 + RETRANSMIT_INTERVAL * i, &repeat);
            sent += outputs(&mut server)
                .iter()
                .filter(|o| matches!(o, RecordOutput::Transmit(_)))
                .count();
        }
        assert_eq!(sent, MAX_RETRANSMITS as usize);
    }

    #[test]
    fn a_datagram_of_more_records_than_the_queue_holds_leaves_the_rest_to_be_sent_again() {
        let (mut server, mut client) = pair();
        let now = Instant::now();
        let records: Vec<Vec<u8>> = (0..MAX_QUEUED + 6)
            .map(|i| client.seal(&[i as u8; 30]).unwrap())
            .collect();
        server.handle_datagram(now, &records.concat());
        let out = outputs(&mut server);
        assert_eq!(out.len(), MAX_QUEUED + 1);
        assert_eq!(
            out[MAX_QUEUED],
            RecordOutput::Dropped(RecordError::Overflow)
        );
        // What did not fit moved no window: sent again, it opens.
        server.handle_datagram(now, &records[MAX_QUEUED]);
        assert_eq!(
            outputs(&mut server),
            vec![RecordOutput::Data(vec![MAX_QUEUED as u8; 30])]
        );
    }

    #[test]
    fn the_explicit_nonce_is_the_epoch_and_sequence_number() {
        let (mut server, mut client) = pair();
        for seq in 1..4u64 {
            let sealed = server.seal(b"x").unwrap();
            let mut expected = seq.to_be_bytes();
            expected[..2].copy_from_slice(&EPOCH.to_be_bytes());
            assert_eq!(&sealed[3..11], &expected);
            assert_eq!(
                &sealed[RECORD_LAYER_HEADER_SIZE..RECORD_LAYER_HEADER_SIZE + 8],
                &expected
            );
            // Opened by the DTLS library's own cipher suite on the other side.
            client.handle_datagram(Instant::now(), &sealed);
            assert_eq!(
                client.poll_output(),
                Some(RecordOutput::Data(b"x".to_vec()))
            );
        }
    }

    #[test]
    fn a_plaintext_longer_than_a_record_is_refused() {
        let (mut server, _) = pair();
        assert!(server.seal(&vec![0; MAX_PLAINTEXT]).is_ok());
        assert_eq!(
            server.seal(&vec![0; MAX_PLAINTEXT + 1]),
            Err(RecordError::TooLong)
        );
    }

    #[test]
    fn truncated_and_foreign_records_are_dropped() {
        let (mut server, mut client) = pair();
        let now = Instant::now();
        let sealed = client.seal(b"abc").unwrap();
        server.handle_datagram(now, &sealed[..sealed.len() - 1]);
        server.handle_datagram(now, &sealed[..5]);
        let mut epoch0 = sealed.clone();
        epoch0[4] = 0;
        server.handle_datagram(now, &epoch0);
        let mut heartbeat = sealed.clone();
        heartbeat[0] = 24;
        server.handle_datagram(now, &heartbeat);
        assert_eq!(
            outputs(&mut server),
            vec![
                RecordOutput::Dropped(RecordError::Truncated),
                RecordOutput::Dropped(RecordError::Truncated),
                RecordOutput::Dropped(RecordError::Epoch),
                RecordOutput::Dropped(RecordError::ContentType),
            ]
        );
    }

    #[test]
    fn a_record_too_short_for_its_nonce_and_tag_is_dropped() {
        let (mut server, _) = pair();
        // Header, explicit nonce, and less than a tag (the library's decrypt would subtract
        // past zero).
        for body in [9, 23, 8] {
            let mut record = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7, 0, body as u8];
            record.extend(vec![0; body]);
            server.handle_datagram(Instant::now(), &record);
            assert_eq!(
                outputs(&mut server),
                vec![RecordOutput::Dropped(RecordError::Truncated)]
            );
        }
    }

    #[test]
    fn two_records_in_one_datagram_are_both_opened() {
        let (mut server, mut client) = pair();
        let mut datagram = client.seal(b"one").unwrap();
        datagram.extend(client.seal(b"two").unwrap());
        server.handle_datagram(Instant::now(), &datagram);
        assert_eq!(
            outputs(&mut server),
            vec![
                RecordOutput::Data(b"one".to_vec()),
                RecordOutput::Data(b"two".to_vec())
            ]
        );
    }

    #[test]
    fn the_suite_is_read_from_a_whole_server_hello() {
        let hello = |session_id: usize, offset: u8| {
            let mut body = vec![2, 0, 0, 0, 0, 0, 0, 0, offset, 0, 0, 0];
            body.extend([0xfe, 0xfd]);
            body.extend([7; 32]);
            body.push(session_id as u8);
            body.extend(vec![9; session_id]);
            body.extend([0xc0, 0x2b, 0]);
            let mut record = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
            record.extend((body.len() as u16).to_be_bytes());
            record.extend(body);
            record
        };
        assert_eq!(server_hello_suite(&hello(0, 0)), Some(0xc02b));
        // After another record, with a session id.
        let mut datagram = vec![20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        datagram.extend(hello(32, 0));
        assert_eq!(server_hello_suite(&datagram), Some(0xc02b));
        // A later fragment, or a cut one, names none.
        assert_eq!(server_hello_suite(&hello(0, 5)), None);
        let whole = hello(32, 0);
        assert_eq!(server_hello_suite(&whole[..whole.len() - 10]), None);
    }

    #[test]
    fn sequence_numbers_end_at_48_bits() {
        let mut layer = RecordLayer::new(established(false, MAX_SEQUENCE_NUMBER, vec![])).unwrap();
        assert!(layer.seal(b"last").is_ok());
        assert_eq!(layer.seal(b"one more"), Err(RecordError::Exhausted));
    }
}
