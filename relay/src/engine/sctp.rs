//! One participant's data channels: an SCTP association (RFC 8261, over the participant's
//! DTLS) with its channels set up by DCEP (RFC 8832), as a sans-IO state machine.
//!
//! SCTP itself is `sctp-proto`, the sans-IO implementation maintained with str0m: it takes
//! packets and `now` and gives packets and deadlines, so it runs inside the core's worker
//! like everything else, and a fault in one participant's association can only concern that
//! participant. DCEP and the channel table are ours.
//!
//! The peer (a browser, the DTLS client) sends the INIT; the relay, the DTLS server, opens its
//! own channels on odd stream ids once the association is up, and accepts any channel the
//! peer opens on even ones. Messages are read only when [`DataChannels::read`] is called, so
//! the worker decides how fast a participant's messages are taken in: what it leaves unread
//! stays in the SCTP receive buffer, the advertised window shrinks, and the sender's
//! `bufferedAmount` grows. That is how a sender that is too fast is slowed down without
//! losing anything on a reliable channel.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    Payload, PayloadProtocolIdentifier as Ppi, ReliabilityType, ServerConfig, StreamEvent,
    TransportConfig,
};
use thiserror::Error;

use super::dcep::{self, Delivery, Open, Reliability};

/// The largest message the relay takes from a participant, advertised as SDP's
/// `a=max-message-size` (RFC 8841): browsers advertise and accept the same.
pub const MAX_MESSAGE_SIZE: u32 = 256 * 1024;

/// The SCTP port on both sides (`a=sctp-port`), as every browser uses.
pub const SCTP_PORT: u16 = 5000;

/// Bytes of SCTP payload per packet: with the SCTP, DTLS, UDP and IP headers a packet stays
/// under the 1,280 bytes any path carries, as browsers' own SCTP packets do.
const MAX_PAYLOAD: u32 = 1120;

/// The longest retransmission timeout, backed off or not (Chromium's data channels use the
/// same 3 s).
const MAX_BACKOFF_MS: u64 = 3_000;

/// Receive buffer for all of a participant's streams: four of the largest messages, so that
/// a throttled reliable channel still leaves room for the lossy one.
const RECEIVE_BUFFER: u32 = 4 * MAX_MESSAGE_SIZE;

/// The association's peer address, which sctp-proto needs and nothing reads: an association
/// is one participant's, over its DTLS. A documentation address (RFC 5737), since sctp-proto
/// refuses an unspecified one.
const PEER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    SCTP_PORT,
);

/// What a data-channel operation was refused for.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DataError {
    /// The association is not up (yet, or any more).
    #[error("the data association is not established")]
    NotConnected,
    /// No such channel, or it is not open.
    #[error("no open data channel on stream {0}")]
    NoChannel(u16),
    /// A message over the peer's maximum.
    #[error("message of {0} bytes over the maximum")]
    TooLarge(usize),
    /// SCTP refused it.
    #[error("SCTP: {0}")]
    Sctp(String),
}

/// A channel on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Its name.
    pub label: String,
    /// Ordering and reliability.
    pub delivery: Delivery,
    /// Whether this side opened it.
    pub ours: bool,
    /// Whether the peer has acknowledged it (always true for the peer's own).
    pub acknowledged: bool,
}

/// A message taken from a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The stream it came on.
    pub stream: u16,
    /// That channel's delivery.
    pub delivery: Delivery,
    /// The application sent a string.
    pub text: bool,
    /// Its bytes (empty for an empty message).
    pub data: Vec<u8>,
}

/// What happened on the association, for the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEvent {
    /// The association is up: the relay's own channels are being opened.
    Connected,
    /// A channel opened, by either side.
    ChannelOpened {
        /// Its stream.
        stream: u16,
    },
    /// A channel closed (the peer reset its stream).
    ChannelClosed {
        /// Its stream.
        stream: u16,
    },
    /// A DCEP message that could not be read, or a message on a stream no DCEP opened: it
    /// was dropped.
    Malformed(String),
    /// The association ended (the peer aborted it, or it failed).
    Lost(String),
}

/// One participant's SCTP association and data channels.
pub struct DataChannels {
    /// The DTLS client's channels take even stream ids, the server's odd ones (RFC 8832 §6).
    dtls_client: bool,
    endpoint: Endpoint,
    association: Option<(AssociationHandle, Association)>,
    connected: bool,
    channels: HashMap<u16, Channel>,
    /// Channels the relay opens once connected.
    to_open: Vec<(u16, Open)>,
    /// Streams with messages waiting, in the order they became readable (each once).
    readable: VecDeque<u16>,
    events: VecDeque<DataEvent>,
    transmits: VecDeque<Bytes>,
    /// The peer's maximum message size, from its SDP.
    max_send: usize,
}

impl std::fmt::Debug for DataChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataChannels")
            .field("connected", &self.connected)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Default for DataChannels {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_SIZE as usize)
    }
}

impl DataChannels {
    /// An association waiting for the peer's INIT; `max_send` is the peer's maximum message
    /// size (its `a=max-message-size`).
    pub fn new(max_send: usize) -> Self {
        let mut endpoint_config = EndpointConfig::new();
        endpoint_config.max_payload_size(MAX_PAYLOAD);
        DataChannels {
            dtls_client: false,
            endpoint: Endpoint::new(Arc::new(endpoint_config), Some(server_config(max_send))),
            association: None,
            connected: false,
            channels: HashMap::new(),
            to_open: Vec::new(),
            readable: VecDeque::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            max_send,
        }
    }

    /// The DTLS client's side, which sends the INIT at once: what a browser is, for the
    /// relay's tests and the load generator.
    pub fn client(now: Instant, max_send: usize) -> Self {
        let mut channels = Self::new(max_send);
        channels.dtls_client = true;
        let mut config = ClientConfig::new();
        config.transport = server_config(max_send).transport.clone();
        if let Ok((handle, association)) = channels.endpoint.connect(config, PEER) {
            channels.association = Some((handle, association));
        }
        channels.drive(now);
        channels
    }

    /// Whether `stream` is one this side opens (even for the DTLS client, odd for the server).
    fn is_ours(&self, stream: u16) -> bool {
        stream.is_multiple_of(2) == self.dtls_client
    }

    /// Open channel `label` on `stream` (one of this side's: odd for the relay) with `delivery` once the association is up (at
    /// once if it is).
    pub fn open(&mut self, stream: u16, label: &str, delivery: Delivery) {
        debug_assert!(
            self.is_ours(stream),
            "stream {stream} is the peer's to open"
        );
        self.to_open.push((
            stream,
            Open {
                delivery,
                priority: 256,
                label: label.to_owned(),
                protocol: String::new(),
            },
        ));
        if self.connected {
            self.open_pending();
        }
    }

    /// The peer's maximum message size changed (its SDP came).
    pub fn set_max_send(&mut self, max: usize) {
        self.max_send = max;
        self.endpoint.set_server_config(Some(server_config(max)));
        if let Some((_, a)) = self.association.as_mut() {
            a.set_max_send_message_size(max as u32);
        }
    }

    /// Whether the association is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The channel on `stream`, if one is open there.
    pub fn channel(&self, stream: u16) -> Option<&Channel> {
        self.channels.get(&stream)
    }

    /// An SCTP packet from the peer (the plaintext of a DTLS application-data record).
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        let data = Bytes::copy_from_slice(packet);
        match self.endpoint.handle(now, PEER, None, None, data) {
            Some((handle, DatagramEvent::NewAssociation(association))) => {
                // A new INIT: the peer restarted its side; what was open is gone.
                if self.association.is_some() {
                    self.reset("the peer started a new association".into());
                }
                self.association = Some((handle, association));
            }
            Some((handle, DatagramEvent::AssociationEvent(event))) => {
                if let Some((h, a)) = self.association.as_mut() {
                    if *h == handle {
                        a.handle_event(event);
                    }
                }
            }
            None => {}
        }
        self.drive(now);
    }

    /// Run SCTP's timers (retransmission, delayed acknowledgement).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, a)) = self.association.as_mut() {
            a.handle_timeout(now);
        }
        self.drive(now);
    }

    /// When [`DataChannels::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.association
            .as_ref()
            .and_then(|(_, a)| a.poll_timeout())
    }

    /// The next SCTP packet for the peer's DTLS.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<DataEvent> {
        self.events.pop_front()
    }

    /// Whether a message waits to be read.
    pub fn has_readable(&self) -> bool {
        !self.readable.is_empty()
    }

    /// Take the next application message, from the streams in turn. DCEP messages on the way
    /// are handled here (the channel opened, acknowledged); a stream that fails is dropped
    /// from the turn with an event.
    pub fn read(&mut self, now: Instant) -> Option<Message> {
        while let Some(stream) = self.readable.pop_front() {
            let Some((_, a)) = self.association.as_mut() else {
                self.readable.clear();
                return None;
            };
            let chunks = match a.stream(stream).and_then(|mut s| s.read_sctp()) {
                Ok(Some(chunks)) => chunks,
                // Nothing complete yet, or the stream is gone.
                Ok(None) | Err(_) => continue,
            };
            // More may wait on this stream: it takes its turn again after the others.
            self.readable.push_back(stream);
            let mut data = vec![0; chunks.len()];
            if chunks.read(&mut data).is_err() {
                continue;
            }
            let message = match chunks.ppi {
                Ppi::Dcep => {
                    self.handle_dcep(stream, &data);
                    None
                }
                Ppi::String | Ppi::Binary | Ppi::StringEmpty | Ppi::BinaryEmpty => {
                    match self.channels.get(&stream) {
                        Some(channel) => {
                            let empty = matches!(chunks.ppi, Ppi::StringEmpty | Ppi::BinaryEmpty);
                            Some(Message {
                                stream,
                                delivery: channel.delivery,
                                text: matches!(chunks.ppi, Ppi::String | Ppi::StringEmpty),
                                data: if empty { Vec::new() } else { data },
                            })
                        }
                        None => {
                            self.events.push_back(DataEvent::Malformed(format!(
                                "message on stream {stream}, which no DCEP opened"
                            )));
                            None
                        }
                    }
                }
                other => {
                    self.events.push_back(DataEvent::Malformed(format!(
                        "payload protocol {other} on stream {stream}"
                    )));
                    None
                }
            };
            // Reading may have opened the window, and a DCEP answer waits to go.
            self.drive(now);
            if message.is_some() {
                return message;
            }
        }
        None
    }

    /// Send `data` on the channel on `stream`, as a string or binary message. The bytes are
    /// shared, not copied, however many participants a message goes to.
    pub fn send(
        &mut self,
        now: Instant,
        stream: u16,
        text: bool,
        data: &Bytes,
    ) -> Result<(), DataError> {
        if !self.connected {
            return Err(DataError::NotConnected);
        }
        if data.len() > self.max_send {
            return Err(DataError::TooLarge(data.len()));
        }
        if !self.channels.contains_key(&stream) {
            return Err(DataError::NoChannel(stream));
        }
        let (_, a) = self.association.as_mut().ok_or(DataError::NotConnected)?;
        let mut s = a.stream(stream).map_err(|_| DataError::NoChannel(stream))?;
        // SCTP cannot carry an empty message: one zero byte with the "empty" identifier.
        let result = match (text, data.is_empty()) {
            (true, false) => s.write_sctp(data, Ppi::String),
            (false, false) => s.write_sctp(data, Ppi::Binary),
            (true, true) => s.write_sctp(&Bytes::from_static(&[0]), Ppi::StringEmpty),
            (false, true) => s.write_sctp(&Bytes::from_static(&[0]), Ppi::BinaryEmpty),
        };
        result.map_err(|e| DataError::Sctp(e.to_string()))?;
        self.drive(now);
        Ok(())
    }

    /// Bytes queued on `stream` that the peer has not acknowledged.
    pub fn buffered(&mut self, stream: u16) -> usize {
        self.association
            .as_mut()
            .and_then(|(_, a)| a.stream(stream).ok()?.buffered_amount().ok())
            .unwrap_or(0)
    }

    fn handle_dcep(&mut self, stream: u16, data: &[u8]) {
        match dcep::Message::parse(data) {
            Ok(dcep::Message::Open(open)) => {
                if self.is_ours(stream) {
                    self.events.push_back(DataEvent::Malformed(format!(
                        "DATA_CHANNEL_OPEN on stream {stream}, which is this side's to open"
                    )));
                    return;
                }
                if let Some((_, a)) = self.association.as_mut() {
                    if let Ok(mut s) = a.stream(stream) {
                        let (kind, value) = reliability(open.delivery);
                        let _ = s.set_reliability_params(!open.delivery.ordered, kind, value);
                        // The ACK goes ordered, before any message on the stream (RFC 8832 §6).
                        let _ =
                            s.write_sctp(&Bytes::from(dcep::Message::Ack.to_bytes()), Ppi::Dcep);
                    }
                }
                self.channels.insert(
                    stream,
                    Channel {
                        label: open.label,
                        delivery: open.delivery,
                        ours: false,
                        acknowledged: true,
                    },
                );
                self.events.push_back(DataEvent::ChannelOpened { stream });
            }
            Ok(dcep::Message::Ack) => match self.channels.get_mut(&stream) {
                Some(c) if c.ours && !c.acknowledged => {
                    c.acknowledged = true;
                    if let Some(mut s) = self
                        .association
                        .as_mut()
                        .and_then(|(_, a)| a.stream(stream).ok())
                    {
                        let (kind, value) = reliability(c.delivery);
                        let _ = s.set_reliability_params(!c.delivery.ordered, kind, value);
                    }
                }
                Some(c) if c.ours => {}
                _ => self.events.push_back(DataEvent::Malformed(format!(
                    "DATA_CHANNEL_ACK on stream {stream}, which this side did not open"
                ))),
            },
            Err(e) => self.events.push_back(DataEvent::Malformed(e.to_string())),
        }
    }

    /// Move what the association produced into the queues: packets, events, readable streams.
    fn drive(&mut self, now: Instant) {
        let Some((handle, a)) = self.association.as_mut() else {
            return;
        };
        while let Some(e) = a.poll_endpoint_event() {
            if let Some(back) = self.endpoint.handle_event(*handle, e) {
                a.handle_event(back);
            }
        }
        let mut lost = None;
        let mut opened = false;
        while let Some(event) = a.poll() {
            match event {
                Event::Connected => opened = true,
                Event::Stream(StreamEvent::Readable { id }) if !self.readable.contains(&id) => {
                    self.readable.push_back(id);
                }
                Event::Stream(StreamEvent::Opened { .. }) => {
                    // The peer's new stream: its DCEP OPEN arrives as its first message.
                    while a.accept_stream().is_some() {}
                }
                Event::Stream(StreamEvent::Finished { id } | StreamEvent::Stopped { id, .. })
                    if self.channels.remove(&id).is_some() =>
                {
                    self.events
                        .push_back(DataEvent::ChannelClosed { stream: id });
                }
                Event::AssociationLost { reason } | Event::HandshakeFailed { reason } => {
                    lost = Some(reason.to_string());
                }
                _ => {}
            }
        }
        if opened && !self.connected {
            self.connected = true;
            self.events.push_back(DataEvent::Connected);
            self.open_pending();
        }
        if let Some((_, a)) = self.association.as_mut() {
            while let Some(t) = a.poll_transmit(now) {
                if let Payload::RawEncode(packets) = t.payload {
                    self.transmits.extend(packets);
                }
            }
        }
        if let Some(reason) = lost {
            self.reset(reason);
        }
    }

    /// Open the relay's channels that wait: DATA_CHANNEL_OPEN on each stream, which may
    /// carry messages at once.
    fn open_pending(&mut self) {
        let Some((_, a)) = self.association.as_mut() else {
            return;
        };
        for (stream, open) in std::mem::take(&mut self.to_open) {
            let Ok(mut s) = a.open_stream(stream, Ppi::Binary) else {
                continue;
            };
            // The OPEN goes reliably and in order, and so does everything after it until the
            // ACK (RFC 8832 §6): an unordered message could otherwise overtake the OPEN and
            // reach a peer that does not know the channel yet. The channel's own delivery
            // applies from the ACK on.
            let _ = s.write_sctp(
                &Bytes::from(dcep::Message::Open(open.clone()).to_bytes()),
                Ppi::Dcep,
            );
            self.channels.insert(
                stream,
                Channel {
                    label: open.label.clone(),
                    delivery: open.delivery,
                    ours: true,
                    acknowledged: false,
                },
            );
            self.events.push_back(DataEvent::ChannelOpened { stream });
        }
    }

    /// Forget the association and its channels; the relay's own are opened again on the next
    /// association.
    fn reset(&mut self, reason: String) {
        let reopen: Vec<(u16, Open)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.ours)
            .map(|(&stream, c)| {
                (
                    stream,
                    Open {
                        delivery: c.delivery,
                        priority: 256,
                        label: c.label.clone(),
                        protocol: String::new(),
                    },
                )
            })
            .collect();
        self.to_open.extend(reopen);
        self.to_open.sort_by_key(|(s, _)| *s);
        self.to_open.dedup_by_key(|(s, _)| *s);
        self.association = None;
        self.connected = false;
        self.channels.clear();
        self.readable.clear();
        self.events.push_back(DataEvent::Lost(reason));
    }
}

/// How the relay accepts a participant's association.
fn server_config(max_send: usize) -> Arc<ServerConfig> {
    let transport = TransportConfig::default()
        .with_max_receive_message_size(MAX_MESSAGE_SIZE)
        .with_max_send_message_size(max_send as u32)
        .with_max_receive_buffer_size(RECEIVE_BUFFER)
        // As browsers: a data channel outlives a long disconnection (an ICE restart).
        .with_max_data_retransmits(None)
        // As Chromium: retransmissions back off to 3 s at most, not 60. A receiver whose
        // window was closed for a while (its reader fell behind, or the relay held a sender
        // for one) is probed again within 3 s of opening it: sctp-proto sends no SACK of its
        // own to say that its window opened, so the peer learns it only from a probe.
        .with_rto_max_ms(MAX_BACKOFF_MS);
    let mut server = ServerConfig::new();
    server.transport = Arc::new(transport);
    Arc::new(server)
}

/// sctp-proto's reliability parameters for a channel's delivery.
fn reliability(delivery: Delivery) -> (ReliabilityType, u32) {
    match delivery.reliability {
        Reliability::Reliable => (ReliabilityType::Reliable, 0),
        Reliability::MaxRetransmits(n) => (ReliabilityType::Rexmit, n),
        Reliability::MaxLifetimeMs(ms) => (ReliabilityType::Timed, ms),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sctp_proto::Transmit;

    use super::*;

    /// A browser's side: an SCTP client that answers DCEP as a browser does.
    struct Browser {
        endpoint: Endpoint,
        handle: AssociationHandle,
        association: Association,
        /// Messages read, per stream: (ppi, bytes).
        got: HashMap<u16, Vec<(Ppi, Vec<u8>)>>,
    }

    impl Browser {
        fn connect() -> Browser {
            let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::new()), None);
            let transport = TransportConfig::default()
                .with_max_send_message_size(MAX_MESSAGE_SIZE)
                .with_max_receive_message_size(MAX_MESSAGE_SIZE);
            let mut config = ClientConfig::new();
            config.transport = Arc::new(transport);
            let (handle, association) = endpoint.connect(config, PEER).unwrap();
            Browser {
                endpoint,
                handle,
                association,
                got: HashMap::new(),
            }
        }

        fn handle_packet(&mut self, now: Instant, packet: Bytes) {
            if let Some((_, DatagramEvent::AssociationEvent(e))) =
                self.endpoint.handle(now, PEER, None, None, packet)
            {
                self.association.handle_event(e);
            }
            self.drain();
        }

        /// Read everything readable; answer the relay's OPENs with ACKs.
        fn drain(&mut self) {
            while let Some(e) = self.association.poll_endpoint_event() {
                if let Some(back) = self.endpoint.handle_event(self.handle, e) {
                    self.association.handle_event(back);
                }
            }
            while let Some(event) = self.association.poll() {
                match event {
                    Event::Stream(StreamEvent::Opened { .. }) => {
                        while self.association.accept_stream().is_some() {}
                    }
                    Event::Stream(StreamEvent::Readable { id }) => {
                        let mut s = self.association.stream(id).unwrap();
                        while let Ok(Some(chunks)) = s.read_sctp() {
                            let mut data = vec![0; chunks.len()];
                            chunks.read(&mut data).unwrap();
                            if chunks.ppi == Ppi::Dcep
                                && matches!(dcep::Message::parse(&data), Ok(dcep::Message::Open(_)))
                            {
                                let ack = Bytes::from(dcep::Message::Ack.to_bytes());
                                s.write_sctp(&ack, Ppi::Dcep).unwrap();
                            }
                            self.got.entry(id).or_default().push((chunks.ppi, data));
                        }
                    }
                    _ => {}
                }
            }
        }

        fn open(&mut self, stream: u16, label: &str, delivery: Delivery) {
            let mut s = self.association.open_stream(stream, Ppi::Binary).unwrap();
            let (kind, value) = reliability(delivery);
            s.set_reliability_params(!delivery.ordered, kind, value)
                .unwrap();
            let open = dcep::Message::Open(Open {
                delivery,
                priority: 256,
                label: label.into(),
                protocol: String::new(),
            });
            s.write_sctp(&Bytes::from(open.to_bytes()), Ppi::Dcep)
                .unwrap();
        }

        fn send(&mut self, stream: u16, ppi: Ppi, data: &[u8]) -> usize {
            let mut s = self.association.stream(stream).unwrap();
            s.write_sctp(&Bytes::copy_from_slice(data), ppi).unwrap()
        }

        fn buffered(&mut self, stream: u16) -> usize {
            self.association
                .stream(stream)
                .unwrap()
                .buffered_amount()
                .unwrap()
        }

        fn messages(&self, stream: u16) -> Vec<Vec<u8>> {
            let got = self.got.get(&stream).map(Vec::as_slice).unwrap_or_default();
            got.iter()
                .filter(|(ppi, _)| *ppi != Ppi::Dcep)
                .map(|(_, d)| d.clone())
                .collect()
        }
    }

    /// A browser and the relay's side, joined by a link that loses every `drop_every`-th
    /// packet (0: none), in virtual time.
    struct Pair {
        now: Instant,
        relay: DataChannels,
        browser: Browser,
        drop_every: usize,
        sent: usize,
    }

    impl Pair {
        fn new() -> Pair {
            let mut relay = DataChannels::default();
            relay.open(1, "reliable", Delivery::RELIABLE);
            relay.open(3, "lossy", Delivery::LOSSY);
            let mut pair = Pair {
                now: Instant::now(),
                relay,
                browser: Browser::connect(),
                drop_every: 0,
                sent: 0,
            };
            pair.pump();
            pair
        }

        fn lost(&mut self) -> bool {
            self.sent += 1;
            self.drop_every > 0 && self.sent.is_multiple_of(self.drop_every)
        }

        /// Move packets both ways until neither side has any.
        fn pump(&mut self) {
            for _ in 0..10_000 {
                let mut moved = false;
                while let Some(Transmit { payload, .. }) =
                    self.browser.association.poll_transmit(self.now)
                {
                    if let Payload::RawEncode(packets) = payload {
                        for p in packets {
                            moved = true;
                            if !self.lost() {
                                self.relay.handle_packet(self.now, &p);
                            }
                        }
                    }
                }
                while let Some(p) = self.relay.poll_transmit() {
                    moved = true;
                    if !self.lost() {
                        self.browser.handle_packet(self.now, p);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("packets never stopped");
        }

        /// Let `d` pass in 10 ms steps, running both sides' timers.
        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now += Duration::from_millis(10);
                self.browser.association.handle_timeout(self.now);
                self.browser.drain();
                self.relay.handle_timeout(self.now);
                self.pump();
            }
        }

        fn events(&mut self) -> Vec<DataEvent> {
            std::iter::from_fn(|| self.relay.poll_event()).collect()
        }

        fn read_all(&mut self) -> Vec<Message> {
            let now = self.now;
            let messages = std::iter::from_fn(|| self.relay.read(now)).collect();
            self.pump();
            messages
        }
    }

    #[test]
    fn the_relay_opens_its_channels_on_odd_streams_once_the_browser_connects() {
        let mut pair = Pair::new();
        assert_eq!(
            pair.events(),
            [
                DataEvent::Connected,
                DataEvent::ChannelOpened { stream: 1 },
                DataEvent::ChannelOpened { stream: 3 }
            ]
        );
        // The browser got both OPENs and acknowledged them.
        for (stream, label, delivery) in [
            (1, "reliable", Delivery::RELIABLE),
            (3, "lossy", Delivery::LOSSY),
        ] {
            let (ppi, bytes) = &pair.browser.got[&stream][0];
            assert_eq!(*ppi, Ppi::Dcep);
            let Ok(dcep::Message::Open(open)) = dcep::Message::parse(bytes) else {
                panic!("no OPEN on {stream}");
            };
            assert_eq!((open.label.as_str(), open.delivery), (label, delivery));
        }
        assert!(pair.read_all().is_empty(), "ACKs are not messages");
        assert!(pair.relay.channel(1).unwrap().acknowledged);
        assert!(pair.relay.channel(3).unwrap().acknowledged);
        // Messages of every kind reach the browser.
        let now = pair.now;
        pair.relay
            .send(now, 1, true, &Bytes::from_static(b"hello"))
            .unwrap();
        pair.relay.send(now, 1, false, &Bytes::new()).unwrap();
        pair.relay
            .send(now, 3, false, &Bytes::from(vec![7; 70_000]))
            .unwrap();
        pair.pump();
        assert_eq!(pair.browser.got[&1][1], (Ppi::String, b"hello".to_vec()));
        assert_eq!(pair.browser.got[&1][2].0, Ppi::BinaryEmpty);
        assert_eq!(pair.browser.messages(3), [vec![7; 70_000]]);
        assert_eq!(
            pair.relay.send(now, 5, false, &Bytes::new()),
            Err(DataError::NoChannel(5))
        );
        assert_eq!(
            pair.relay.send(
                now,
                1,
                false,
                &Bytes::from(vec![0; MAX_MESSAGE_SIZE as usize + 1])
            ),
            Err(DataError::TooLarge(MAX_MESSAGE_SIZE as usize + 1))
        );
    }

    #[test]
    fn a_channel_the_browser_opens_is_acknowledged_and_its_messages_come_in_order() {
        let mut pair = Pair::new();
        pair.events();
        pair.browser.open(0, "chat", Delivery::RELIABLE);
        // Messages may follow the OPEN before its ACK.
        for i in 0..50u8 {
            pair.browser.send(0, Ppi::Binary, &[i; 300]);
        }
        pair.browser.send(0, Ppi::StringEmpty, &[0]);
        pair.pump();
        let got = pair.read_all();
        assert_eq!(got.len(), 51);
        for (i, m) in got[..50].iter().enumerate() {
            assert_eq!(
                (m.stream, m.delivery, m.text),
                (0, Delivery::RELIABLE, false)
            );
            assert_eq!(m.data, [i as u8; 300]);
        }
        assert!(got[50].text && got[50].data.is_empty(), "an empty string");
        assert_eq!(pair.events(), [DataEvent::ChannelOpened { stream: 0 }]);
        assert_eq!(pair.relay.channel(0).unwrap().label, "chat");
        // The browser got the ACK.
        assert_eq!(
            pair.browser.got[&0][0],
            (Ppi::Dcep, dcep::Message::Ack.to_bytes())
        );
    }

    #[test]
    fn what_the_relay_does_not_read_slows_the_sender_and_nothing_is_lost() {
        let mut pair = Pair::new();
        pair.browser.open(0, "bulk", Delivery::RELIABLE);
        pair.pump();
        // 4 MiB offered while the relay reads nothing.
        let message = vec![1u8; 16 * 1024];
        for _ in 0..256 {
            pair.browser.send(0, Ppi::Binary, &message);
        }
        pair.run_for(Duration::from_secs(2));
        // The receive buffer is full: most of it still waits at the sender.
        let waiting = pair.browser.buffered(0);
        assert!(waiting > 2 * 1024 * 1024, "only {waiting} bytes held back");
        // Reading lets the rest come, all of it, in order.
        let mut got = 0;
        for _ in 0..100 {
            got += pair.read_all().len();
            pair.run_for(Duration::from_millis(50));
        }
        assert_eq!(got, 256);
        assert_eq!(pair.browser.buffered(0), 0);
    }

    #[test]
    fn under_loss_reliable_messages_all_arrive_in_order_and_lossy_ones_partly() {
        let mut pair = Pair::new();
        pair.browser.open(0, "reliable", Delivery::RELIABLE);
        pair.browser.open(2, "lossy", Delivery::LOSSY);
        pair.pump();
        pair.read_all();
        pair.drop_every = 10;
        let mut reliable = Vec::new();
        let mut lossy = 0;
        for i in 0..200u16 {
            pair.browser.send(0, Ppi::Binary, &i.to_be_bytes());
            pair.browser.send(2, Ppi::Binary, &i.to_be_bytes());
            pair.run_for(Duration::from_millis(20));
            for m in pair.read_all() {
                if m.delivery.is_reliable() {
                    reliable.push(u16::from_be_bytes([m.data[0], m.data[1]]));
                } else {
                    lossy += 1;
                }
            }
        }
        pair.drop_every = 0;
        pair.run_for(Duration::from_secs(5));
        for m in pair.read_all() {
            if m.delivery.is_reliable() {
                reliable.push(u16::from_be_bytes([m.data[0], m.data[1]]));
            }
        }
        assert_eq!(reliable, (0..200).collect::<Vec<_>>());
        assert!((100..200).contains(&lossy), "{lossy} lossy messages of 200");
    }

    #[test]
    fn bad_dcep_and_messages_without_a_channel_are_dropped_with_a_reason() {
        let mut pair = Pair::new();
        pair.events();
        // A message on a stream nobody opened.
        pair.browser
            .association
            .open_stream(4, Ppi::Binary)
            .unwrap();
        pair.browser.send(4, Ppi::Binary, b"who?");
        // An OPEN with an unknown channel type.
        pair.browser
            .association
            .open_stream(6, Ppi::Binary)
            .unwrap();
        pair.browser
            .send(6, Ppi::Dcep, &[0x03, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // An OPEN on the relay's side of the id space.
        pair.browser
            .association
            .open_stream(7, Ppi::Binary)
            .unwrap();
        let open = dcep::Message::Open(Open {
            delivery: Delivery::RELIABLE,
            priority: 0,
            label: "odd".into(),
            protocol: String::new(),
        });
        pair.browser.send(7, Ppi::Dcep, &open.to_bytes());
        pair.pump();
        assert!(pair.read_all().is_empty());
        let events = pair.events();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(
            events.iter().all(|e| matches!(e, DataEvent::Malformed(_))),
            "{events:?}"
        );
        // The association carries on.
        let now = pair.now;
        pair.relay
            .send(now, 1, true, &Bytes::from_static(b"still here"))
            .unwrap();
        pair.pump();
        assert_eq!(pair.browser.messages(1), [b"still here".to_vec()]);
    }

    #[test]
    fn two_sides_of_this_module_talk_both_ways() {
        let mut now = Instant::now();
        let mut server = DataChannels::default();
        server.open(1, "reliable", Delivery::RELIABLE);
        let mut client = DataChannels::client(now, MAX_MESSAGE_SIZE as usize);
        client.open(0, "mine", Delivery::LOSSY);
        let exchange = |now: Instant, a: &mut DataChannels, b: &mut DataChannels| {
            for _ in 0..100 {
                let mut moved = false;
                while let Some(p) = a.poll_transmit() {
                    b.handle_packet(now, &p);
                    moved = true;
                }
                while let Some(p) = b.poll_transmit() {
                    a.handle_packet(now, &p);
                    moved = true;
                }
                if !moved {
                    return;
                }
            }
        };
        exchange(now, &mut client, &mut server);
        assert!(client.is_connected() && server.is_connected());
        server
            .send(now, 1, true, &Bytes::from_static(b"to the client"))
            .unwrap();
        client
            .send(now, 0, false, &Bytes::from_static(b"to the server"))
            .unwrap();
        exchange(now, &mut client, &mut server);
        let got = client.read(now).unwrap();
        assert_eq!(
            (got.stream, got.text, got.data.as_slice()),
            (1, true, &b"to the client"[..])
        );
        assert_eq!(got.delivery, Delivery::RELIABLE);
        let got = server.read(now).unwrap();
        assert_eq!((got.stream, got.delivery), (0, Delivery::LOSSY));
        assert_eq!(got.data, b"to the server");
        // Both sides' channels acknowledged (the ACKs are read like messages, and are none).
        now += std::time::Duration::from_millis(10);
        exchange(now, &mut client, &mut server);
        assert_eq!((server.read(now), client.read(now)), (None, None));
        assert!(server.channel(1).unwrap().acknowledged && client.channel(0).unwrap().acknowledged);
        assert!(!client.channel(1).unwrap().ours && client.channel(0).unwrap().ours);
    }

    #[test]
    fn garbage_is_ignored_before_and_after_the_association() {
        let mut relay = DataChannels::default();
        let now = Instant::now();
        for garbage in [&[][..], &[0; 11], &[0xff; 64], &[0; 12]] {
            relay.handle_packet(now, garbage);
        }
        assert!(!relay.is_connected());
        assert!(relay.poll_transmit().is_none());
        assert_eq!(relay.read(now), None);
        let mut pair = Pair::new();
        let now = pair.now;
        pair.relay.handle_packet(now, &[0xff; 200]);
        pair.relay
            .send(now, 1, false, &Bytes::from_static(b"ok"))
            .unwrap();
        pair.pump();
        assert_eq!(pair.browser.messages(1), [b"ok".to_vec()]);
    }
}
