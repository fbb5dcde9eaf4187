//! Datagrams from the network and packets from other cores: demultiplexing, ICE-lite, routing
//! of DTLS records to their handshake, SRTP in, fan-out, RTCP feedback.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use rtcp::packet::Packet;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

use crate::control::Event;
use crate::engine::demux::{classify, PacketKind};
use crate::engine::ice_lite::BindingRequest;
use crate::engine::rtcp::{parse_feedback, Feedback};
use crate::engine::rtx::{self, Unwrapped};
use crate::engine::{rtcp as rtcp_engine, rtp};
use crate::ids::{FeedKey, ParticipantKey, SessionKey};
use crate::sfu::feed::{nack, speech};
use crate::stats::DropReason;

use crate::sfu::cross_core::{CrossCore, FeedRoute, RtpInfo};
use crate::sfu::participant::Participant;
use crate::sfu::transport::{DtlsInput, DtlsState};

use super::*;

impl Worker {
    /// A datagram arrived from `src`; `arrived` is the kernel's receive stamp, if any, passed
    /// on with packets for other cores.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        arrived: Option<SystemTime>,
        src: SocketAddr,
        datagram: &[u8],
    ) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let result = match classify(datagram) {
            PacketKind::Stun => self.handle_stun(now, src, datagram),
            PacketKind::Dtls => self.handle_dtls_record(now, src, datagram),
            PacketKind::Rtp => self.handle_rtp(now, arrived, src, datagram),
            PacketKind::Rtcp => self.handle_rtcp(now, src, datagram),
            PacketKind::Unknown => Err(DropReason::UnknownProtocol),
        };
        if let Err(reason) = result {
            self.stats.drop(reason);
        }
    }

    fn handle_stun(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let mut req = BindingRequest::parse(datagram)?;
        let key = *self
            .by_ufrag
            .get(&req.local_ufrag())
            .ok_or(DropReason::StunUnknownUfrag)?;
        // by_ufrag only holds live participants.
        let p = self
            .participants
            .get_mut(&key)
            .expect("participant of ufrag");
        let outcome = p.transport.ice.handle_binding(now, src, &mut req)?;
        p.usage.packets_in += 1;
        p.usage.bytes_in += datagram.len() as u64;
        // The response is traffic to the participant like any other.
        p.usage.packets_out += 1;
        p.usage.bytes_out += outcome.response.len() as u64;
        let consent = p.transport.ice.poll_timeout();
        if let Some(previous) = outcome.selected_changed {
            if let Some(old) = previous {
                // An operator asking why a participant's media paused finds it here.
                tracing::info!(sid = %p.sid, uid = %p.uid, from = %old, to = %src, "participant moved to a new address");
                self.outputs
                    .push_back(Output::Event(Event::ParticipantMigrated {
                        sid: p.sid.clone(),
                        uid: p.uid.clone(),
                        from: old,
                        to: src,
                    }));
                if self.by_addr.get(&old) == Some(&key) {
                    self.by_addr.remove(&old);
                }
            }
            self.by_addr.insert(src, key);
        }
        if let Some(consent) = consent {
            self.arm(key, consent);
        }
        self.transmit(src, outcome.response);
        Ok(())
    }

    fn handle_dtls_record(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (key, p) = authenticated_source(
            &self.by_addr,
            &mut self.participants,
            src,
            datagram.len(),
            DropReason::DtlsUnknownSource,
        )?;
        if p.transport.dtls() == DtlsState::Idle {
            if self.handshakes >= self.config.max_handshakes {
                return Err(DropReason::DtlsHandshakeLimit);
            }
            self.handshakes += 1;
            let at = now + self.config.dtls_handshake_timeout;
            self.timers.arm(Timer::Participant(key), at);
        }
        match p.transport.handle_dtls_record(now, datagram) {
            DtlsInput::Held => {}
            DtlsInput::Forward => self.outputs.push_back(Output::DtlsRecord {
                key,
                data: datagram.to_vec(),
            }),
            DtlsInput::Start {
                profiles,
                remote_fingerprint,
                records,
            } => {
                self.outputs.push_back(Output::DtlsStart {
                    key,
                    remote_fingerprint,
                    profiles,
                });
                for data in records {
                    self.outputs.push_back(Output::DtlsRecord { key, data });
                }
            }
        }
        Ok(())
    }

    fn handle_rtp(
        &mut self,
        now: Instant,
        arrived: Option<SystemTime>,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (key, p) = authenticated_source(
            &self.by_addr,
            &mut self.participants,
            src,
            datagram.len(),
            DropReason::RtpUnknownSource,
        )?;
        let srtp = p.transport.srtp_mut().ok_or(DropReason::SrtpNotReady)?;
        // Route by the cleartext SSRC before decrypting, so that undeclared SSRCs cost no
        // crypto and create no SRTP state: only a declared SSRC, or one whose cleartext header
        // names a simulcast layer of one of the participant's feeds that is still to be learnt.
        let ssrc = rtp::peek_ssrc(datagram).ok_or(DropReason::RtpMalformed)?;
        // `published` and `feeds` only name feeds that exist in the participant's session;
        // a participant without one has nothing a packet could be for.
        let skey = p.session;
        let session = self
            .sessions
            .get_mut(&skey)
            .ok_or(DropReason::RtpUnknownSsrc)?;
        let (fkey, learning) = match p.published.get(&ssrc) {
            Some(&fkey) => (fkey, None),
            None => {
                let (fkey, layer, rtx) = p
                    .feeds
                    .iter()
                    .find_map(|&f| Some(f).zip(session.feeds[&f].layer_named_in(datagram)))
                    .map(|(f, (layer, rtx))| (f, layer, rtx))
                    .ok_or(DropReason::RtpUnknownSsrc)?;
                (fkey, Some((layer, rtx)))
            }
        };
        // The SRTP library parses the cleartext header itself and trusts its length fields.
        rtp::header_len(datagram).ok_or(DropReason::RtpMalformed)?;
        let mut plain = self.pool.take();
        if let Err(reason) = srtp.unprotect_rtp(datagram, &mut plain) {
            self.pool.give(plain);
            return Err(reason);
        }
        let feed = session.feeds.get_mut(&fkey).expect("feed of participant");
        // From here on the packet carries the relay's numbers, whoever chose the publisher's.
        if let Some(renumber) = &feed.renumber {
            if !renumber.apply(&mut plain) {
                self.pool.give(plain);
                return Err(DropReason::RtpUnknownPayloadType);
            }
        }
        let Some(mut header) = rtp::parse(&plain) else {
            self.pool.give(plain);
            return Err(DropReason::RtpMalformed);
        };
        if let Some((layer, rtx)) = learning {
            // Authentic: the SSRC is the layer's from now on (a browser that changes one
            // replaces it; the layer keeps at most one of each).
            let l = &mut feed.layers[layer];
            let slot = if rtx { &mut l.rtx_ssrc } else { &mut l.ssrc };
            if let Some(old) = slot.replace(ssrc) {
                p.forget_published([old]);
            }
            p.published.insert(ssrc, fkey);
            self.stats.simulcast_ssrcs_learnt += 1;
        }
        // `published` names only SSRCs of the feed's layers (declared or learnt above).
        let Some((layer, on_rtx)) = feed.layer_of(ssrc) else {
            self.pool.give(plain);
            return Err(DropReason::RtpUnknownSsrc);
        };
        let desc = &feed.description;
        let media_ssrc = feed.layers[layer].ssrc;
        // On a layer's RTX stream: the payload type it repairs.
        let repair_of = on_rtx.then(|| desc.apt_of(header.payload_type));
        let accepted = match repair_of {
            Some(apt) => apt.is_some(),
            None => {
                desc.payload_types.is_empty() || desc.payload_types.contains(&header.payload_type)
            }
        };
        if !accepted {
            self.pool.give(plain);
            return Err(DropReason::RtpUnknownPayloadType);
        }
        // Every authentic packet counts for the publisher's congestion control, whatever
        // becomes of it after: retransmissions and probes use the path too.
        if let Some(seq) = feed
            .twcc_extension
            .and_then(|id| rtp::transport_sequence(&plain, id))
        {
            if let Some(at) = p.transport.handle_transport_sequence(now, seq) {
                self.timers.arm(Timer::Participant(key), at);
            }
        }
        let nack_due = feed.nack_timeout();
        let generates_nacks = feed.generates_nacks();
        let stream = &mut feed.layers[layer];
        if let Some(Some(apt)) = repair_of {
            // A repair is rebuilt under its layer's media SSRC, which an RTX stream learnt
            // first does not know yet.
            let Some(media_ssrc) = media_ssrc else {
                self.pool.give(plain);
                return Err(DropReason::RtpUnknownSsrc);
            };
            let mut original = self.pool.take();
            let unwrapped = rtx::unwrap(&plain, apt, media_ssrc, &mut original);
            self.pool.give(std::mem::replace(&mut plain, original));
            match unwrapped {
                Some(Unwrapped::Repair { original_sequence }) => {
                    self.stats.rtx_received += 1;
                    if generates_nacks {
                        stream.nack.handle_packet(now, original_sequence);
                    }
                    // Whether the relay asked for it or not: Chromium's probes resend recent
                    // packets too, and one whose original was lost is as good as a repair.
                    // Only what was forwarded already (or is too old) is dropped.
                    if !stream.cache.is_news(media_ssrc, original_sequence) {
                        self.stats.rtx_redundant += 1;
                        self.pool.give(plain);
                        return Ok(());
                    }
                    self.stats.repairs_used += 1;
                }
                Some(Unwrapped::Probe) => {
                    self.stats.rtx_probes_dropped += 1;
                    self.pool.give(plain);
                    return Ok(());
                }
                None => {
                    self.pool.give(plain);
                    return Err(DropReason::RtpMalformed);
                }
            }
            // unwrap() writes a packet rtp::parse accepts; should it not, it is dropped.
            let Some(rebuilt) = rtp::parse(&plain) else {
                self.pool.give(plain);
                return Err(DropReason::RtpMalformed);
            };
            header = rebuilt;
        } else {
            if generates_nacks {
                stream.nack.handle_packet(now, header.sequence);
            }
            stream.last_packet_at = Some(now);
            // Receiver reports describe the path: repairs are not counted as received.
            let arrival = (now.saturating_duration_since(self.epoch).as_secs_f64()
                * feed.description.clock_rate as f64) as i64;
            stream
                .recv
                .on_packet(header.sequence, header.timestamp, arrival);
        }
        if let Some(at) = feed.nack_timeout() {
            if nack_due.is_none_or(|was| at < was) {
                self.timers.arm(Timer::Repair(skey, fkey), at);
            }
        }
        // Who speaks: from the level the publisher's browser wrote into its audio.
        if let Some(level) = feed
            .audio_level_extension
            .and_then(|id| rtp::extension(&plain, id))
            .and_then(speech::level)
        {
            feed.speech.handle_level(now, level);
            if let Some(r) = feed.speech.poll_report(now) {
                self.outputs.push_back(Output::Event(Event::Speech {
                    sid: p.sid.clone(),
                    uid: p.uid.clone(),
                    feed_id: feed.description.feed_id.clone(),
                    speaking: r.speaking,
                    loudness: r.loudness,
                }));
            }
        }
        let desc = &feed.description;
        if feed.last_packet_at.is_none() {
            self.outputs.push_back(Output::Event(Event::FeedStarted {
                sid: p.sid.clone(),
                uid: p.uid.clone(),
                feed_id: desc.feed_id.clone(),
            }));
        }
        // Read for video: a simulcast subscriber switches layers at a keyframe, and any
        // subscriber's request for a keyframe waits for one on its way to it.
        let keyframe = feed.is_video() && feed.starts_keyframe(&plain, &header);
        // An SVC frame's layers, where its descriptor can be read (one that cannot, its
        // structure lost, goes to everyone as it would without SVC).
        // Not for simulcast: each layer's stream would have descriptors of its own.
        let svc = match feed
            .svc_extension
            .filter(|_| feed.layers.len() == 1)
            .and_then(|id| feed.svc.handle_packet(&plain, id))
        {
            Some(Ok(frame)) => Some(frame),
            Some(Err(_)) => {
                self.stats.svc_descriptors_unreadable += 1;
                None
            }
            None => None,
        };
        let info = RtpInfo {
            ssrc: header.ssrc,
            sequence: header.sequence,
            timestamp: header.timestamp,
            payload_len: header.payload_len,
            playout_delay: feed.playout_delay(now),
            layer: layer as u8,
            keyframe,
            frame_size: keyframe
                .then(|| feed.keyframe_size(&plain, &header))
                .flatten(),
            layers_off: feed.layers_off,
            reference_timestamp: feed.reference_timestamp(layer, header.timestamp),
            svc,
        };
        self.fan_out(now, skey, fkey, &plain, info);
        // fan_out found it.
        let mut feed = &self.sessions[&skey].feeds[&fkey];
        if feed.record.is_some() {
            // Only a recorded feed pays for a second look-up.
            self.record(now, skey, fkey, &plain, &header, &info);
            feed = &self.sessions[&skey].feeds[&fkey];
        }
        if feed.sinks.is_empty() {
            self.pool.give(plain);
        } else {
            // Other cores have subscribers: hand them the decrypted packet, shared.
            let route = FeedRoute {
                core: self.config.core,
                session: skey,
                feed: fkey,
            };
            let (packet, previous) = self.relayed.wrap(plain, info, arrived);
            self.pool.give(previous);
            for &core in &feed.sinks {
                self.outputs.push_back(Output::CrossCore {
                    core,
                    message: CrossCore::Rtp {
                        route,
                        packet: packet.clone(),
                    },
                });
            }
        }
        Ok(())
    }

    /// A message from another core.
    pub fn handle_cross_core(&mut self, now: Instant, message: CrossCore) {
        match message {
            CrossCore::Data(relayed) => self.handle_cross_core_data(now, relayed),
            CrossCore::DataHold { sid, core, until } => {
                self.handle_data_hold(now, &sid, core, until)
            }
            CrossCore::Rtp { route, packet } => {
                self.stats.cross_core_rtp_in += 1;
                let Some(&(skey, fkey)) = self.replicas.get(&route) else {
                    // The replica went away while the packet was queued.
                    return;
                };
                self.fan_out(now, skey, fkey, &packet.plain, packet.info);
            }
            CrossCore::LayersWanted { route, core, mask } => {
                if route.core == self.config.core {
                    if let Some(feed) = self
                        .sessions
                        .get_mut(&route.session)
                        .and_then(|s| s.feeds.get_mut(&route.feed))
                    {
                        feed.dynacast.handle_wanted(core, mask);
                    }
                }
            }
            CrossCore::KeyframeRequest {
                route,
                layer,
                bypass_limit,
            } => {
                if route.core == self.config.core {
                    let layer = layer.map(usize::from);
                    self.keyframe_request(now, route.session, route.feed, layer, bypass_limit);
                }
            }
        }
    }

    /// The layer of feed `fkey` that `subscriber` decodes, or waits to: the one a keyframe is
    /// wanted of when it asks for one.
    pub(super) fn wanted_layer(
        &self,
        skey: SessionKey,
        fkey: FeedKey,
        subscriber: ParticipantKey,
    ) -> Option<usize> {
        let feed = self.sessions.get(&skey)?.feeds.get(&fkey)?;
        let c = feed.consumers.find(subscriber)?;
        Some(usize::from(c.layers.current().unwrap_or(c.layers.target())))
    }

    /// Ask a feed's publisher for a keyframe of `layer` (None: of every layer): directly when
    /// it is on this core, through its origin core for a replica. Rate-limited per layer
    /// unless `bypass_limit`.
    pub(super) fn keyframe_request(
        &mut self,
        now: Instant,
        skey: SessionKey,
        fkey: FeedKey,
        layer: Option<usize>,
        bypass_limit: bool,
    ) {
        let Some(feed) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.feeds.get_mut(&fkey))
        else {
            return;
        };
        let layers = match layer {
            Some(l) => l..(l + 1).min(feed.layers.len()),
            None => 0..feed.layers.len(),
        };
        let mut plis = Vec::new();
        for l in layers {
            let stream = &mut feed.layers[l];
            if bypass_limit {
                stream.last_keyframe_request = Some(now);
            } else if !stream.allow_keyframe_request(now) {
                self.stats.keyframe_requests_suppressed += 1;
                continue;
            }
            match feed.origin {
                Some(route) => self.outputs.push_back(Output::CrossCore {
                    core: route.core,
                    message: CrossCore::KeyframeRequest {
                        route,
                        layer: Some(l as u8),
                        bypass_limit,
                    },
                }),
                None => plis.extend(stream.ssrc),
            }
        }
        let publisher = feed.publisher;
        if !plis.is_empty() {
            tracing::debug!(
                feed = fkey.0,
                ?layer,
                bypass_limit,
                "keyframe asked of the publisher"
            );
        }
        for ssrc in plis {
            self.send_pli(publisher, ssrc);
        }
    }

    fn handle_rtcp(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let (key, p) = authenticated_source(
            &self.by_addr,
            &mut self.participants,
            src,
            datagram.len(),
            DropReason::RtcpUnknownSource,
        )?;
        let srtp = p.transport.srtp_mut().ok_or(DropReason::SrtpNotReady)?;
        let mut plain = self.pool.take();
        if let Err(reason) = srtp.unprotect_rtcp_into(datagram, &mut plain) {
            self.pool.give(plain);
            return Err(reason);
        }
        let mut feedback = std::mem::take(&mut self.feedback);
        feedback.clear();
        let parsed = parse_feedback(&plain, &mut feedback);
        if parsed.is_none() {
            self.pool.give(plain);
            self.feedback = feedback;
            return Err(DropReason::RtcpMalformed);
        }
        for fb in feedback.drain(..) {
            match fb {
                Feedback::TransportFeedback { start, len } => {
                    self.transport_feedback(now, key, &plain[start..start + len]);
                }
                fb => self.apply_feedback(now, key, fb),
            }
        }
        self.pool.give(plain);
        self.feedback = feedback;
        Ok(())
    }

    /// A subscriber's transport-wide feedback about what the relay sent it.
    fn transport_feedback(&mut self, now: Instant, key: ParticipantKey, packet: &[u8]) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let mut statuses = std::mem::take(&mut self.statuses);
        let parsed = rtcp_engine::twcc::parse(packet, &mut statuses).is_some();
        if parsed {
            self.stats.twcc_feedback_received += 1;
            p.transport
                .handle_transport_feedback(now, &statuses, &mut self.feedback_results);
        } else {
            self.stats.twcc_feedback_malformed += 1;
        }
        self.statuses = statuses;
        if parsed {
            // The estimate moved: the layers it affords may have.
            self.allocate(now, key);
        }
    }

    fn apply_feedback(&mut self, now: Instant, key: ParticipantKey, fb: Feedback) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&p.session) else {
            return;
        };
        match fb {
            Feedback::SenderReport {
                ssrc,
                ntp,
                rtp_time,
            } => {
                let Some(feed) = p
                    .published
                    .get(&ssrc)
                    .and_then(|f| session.feeds.get_mut(f))
                else {
                    return;
                };
                if let Some((layer, false)) = feed.layer_of(ssrc) {
                    let stream = &mut feed.layers[layer];
                    stream.recv.on_sender_report(ntp, now);
                    stream.last_sr = Some((ntp, rtp_time));
                }
            }
            Feedback::KeyframeRequest { media_ssrc } => {
                let Some(&fkey) = p.subscriptions.get(&media_ssrc) else {
                    return;
                };
                let skey = p.session;
                // A keyframe sent to it may still be on its way: asking the publisher for
                // another would only send a new one behind it.
                let estimate = p.transport.estimate();
                let arriving = session
                    .feeds
                    .get(&fkey)
                    .and_then(|f| f.consumers.find(key))
                    .is_some_and(|c| c.keyframe.arriving(now, c.retransmits.rtt(), estimate));
                if arriving {
                    self.stats.keyframe_requests_suppressed += 1;
                    return;
                }
                let layer = self.wanted_layer(skey, fkey, key);
                self.keyframe_request(now, skey, fkey, layer, false);
            }
            Feedback::Nack { media_ssrc, entry } => {
                self.answer_nack(now, key, media_ssrc, entry.sequences());
            }
            Feedback::ReceiverTime(time) => {
                if let Some(p) = self.participants.get_mut(&key) {
                    p.transport.handle_receiver_time(now, time);
                }
            }
            Feedback::TransportFeedback { .. } => {} // read by handle_rtcp
            Feedback::Dlrr(block) => {
                // The relay's round trip to a publisher, for its NACK retries.
                if block.ssrc != p.rtcp_ssrc {
                    return;
                }
                let arrival = rtcp_engine::ntp_middle(self.ntp.ntp(now));
                let Some(rtt) = block.rtt(arrival) else {
                    return;
                };
                for fkey in &p.feeds {
                    if let Some(feed) = session.feeds.get_mut(fkey) {
                        for layer in &mut feed.layers {
                            layer.nack.set_rtt(rtt);
                        }
                    }
                }
                if let Some(p) = self.participants.get_mut(&key) {
                    p.link.handle_rtt(rtt);
                }
            }
            Feedback::Report(block) => {
                // The subscriber's round trip, from a sender report the relay sent it.
                let Some(&fkey) = p.subscriptions.get(&block.ssrc) else {
                    return;
                };
                let arrival = rtcp_engine::ntp_middle(self.ntp.ntp(now));
                let rtt = block.rtt(arrival);
                if let Some((rtt, c)) = rtt.zip(
                    session
                        .feeds
                        .get_mut(&fkey)
                        .and_then(|f| f.consumers.find_mut(key)),
                ) {
                    c.retransmits.set_rtt(rtt);
                }
                if let Some(p) = self.participants.get_mut(&key) {
                    p.link.handle_downlink_loss(block.fraction_lost);
                    if let Some(rtt) = rtt {
                        p.transport.set_rtt(rtt);
                        p.link.handle_rtt(rtt);
                    }
                }
            }
        }
    }

    /// Ask the publisher of feed `fkey` for the packets it is missing now, on each layer;
    /// returns when to ask again, if anything is still missing.
    pub(super) fn send_nacks(
        &mut self,
        now: Instant,
        skey: SessionKey,
        fkey: FeedKey,
    ) -> Option<Instant> {
        let layers = self.sessions.get(&skey)?.feeds.get(&fkey)?.layers.len();
        for layer in 0..layers {
            self.send_layer_nacks(now, skey, fkey, layer);
        }
        self.sessions.get(&skey)?.feeds.get(&fkey)?.nack_timeout()
    }

    /// What [`Self::send_nacks`] does for one layer.
    fn send_layer_nacks(
        &mut self,
        now: Instant,
        skey: SessionKey,
        fkey: FeedKey,
        layer: usize,
    ) -> Option<()> {
        let feed = self.sessions.get_mut(&skey)?.feeds.get_mut(&fkey)?;
        let stream = &mut feed.layers[layer];
        let media_ssrc = stream.ssrc?;
        let mut seqs = std::mem::take(&mut self.nack_seqs);
        let mut entries = std::mem::take(&mut self.nack_entries);
        seqs.clear();
        entries.clear();
        stream.nack.poll_nacks(now, &mut seqs);
        if !seqs.is_empty() {
            feed.repair_wait.handle_request(now);
        }
        nack::pack(&seqs, &mut entries);
        let publisher = feed.publisher;
        if let Some(p) = self
            .participants
            .get_mut(&publisher)
            .filter(|_| !entries.is_empty())
        {
            if let Some(dst) = p.transport.media_destination() {
                let mut plain = self.pool.take();
                let mut rest = &entries[..];
                while !rest.is_empty() {
                    plain.clear();
                    let n = rtcp_engine::nack::write(p.rtcp_ssrc, media_ssrc, rest, &mut plain);
                    rest = &rest[n..];
                    let Some(srtp) = p.transport.srtp_mut() else {
                        break;
                    };
                    let mut sealed = self.pool.take();
                    match srtp.protect_rtcp_into(&plain, &mut sealed) {
                        Ok(()) => {
                            p.usage.packets_out += 1;
                            p.usage.bytes_out += sealed.len() as u64;
                            self.stats.nacks_sent += 1;
                            transmit(&mut self.stats, &mut self.outputs, dst, sealed);
                        }
                        Err(reason) => {
                            self.pool.give(sealed);
                            self.stats.drop(reason);
                        }
                    }
                }
                self.pool.give(plain);
                self.stats.nack_packets_requested += seqs.len() as u64;
            }
        }
        self.nack_seqs = seqs;
        self.nack_entries = entries;
        Some(())
    }

    pub(super) fn send_pli(&mut self, publisher: ParticipantKey, media_ssrc: u32) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(dst) = p.transport.media_destination() else {
            return;
        };
        let pli: Vec<Box<dyn Packet + Send + Sync>> = vec![Box::new(PictureLossIndication {
            sender_ssrc: p.rtcp_ssrc,
            media_ssrc,
        })];
        let Some(plain) = rtcp_engine::marshal(&pli) else {
            return;
        };
        let Some(srtp) = p.transport.srtp_mut() else {
            return; // media_destination implies keyed
        };
        match srtp.protect_rtcp(&plain) {
            Ok(sealed) => {
                p.usage.packets_out += 1;
                p.usage.bytes_out += sealed.len() as u64;
                self.stats.keyframe_requests_forwarded += 1;
                self.transmit(dst, sealed);
            }
            Err(reason) => self.stats.drop(reason),
        }
    }
}

/// The participant whose ICE-selected address is `src`, with the datagram counted to it;
/// `unknown` if there is none. Only addresses that passed a verified check are in `by_addr`.
fn authenticated_source<'a>(
    by_addr: &FastMap<SocketAddr, ParticipantKey>,
    participants: &'a mut Participants,
    src: SocketAddr,
    len: usize,
    unknown: DropReason,
) -> Result<(ParticipantKey, &'a mut Participant), DropReason> {
    let key = *by_addr.get(&src).ok_or(unknown)?;
    // Every by_addr entry names a live participant: removal deletes its entry.
    let p = participants.get_mut(&key).expect("participant of address");
    p.usage.packets_in += 1;
    p.usage.bytes_in += len as u64;
    Ok((key, p))
}
