//! The control plane's requests to a core: sessions, participants, feeds and subscriptions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;

use crate::control::{
    FeedDescription, ParticipantConfig, Pause, SubscribeOptions, SubscriptionInfo, View,
};
use crate::engine::ice_lite::{IceCredentials, IceLite};
use crate::error::ControlError;
use crate::ids::{FeedId, FeedKey, ParticipantKey, SessionKey, Sid, Ssrc, Uid};

use crate::engine::bwe::BweConfig;
use crate::sfu::consumer::layers::Layers;
use crate::sfu::consumer::retransmit::Retransmits;
use crate::sfu::consumer::Consumer;
use crate::sfu::copy::Paced;
use crate::sfu::cross_core::FeedRoute;
use crate::sfu::data::limiter::Limiter;
use crate::sfu::data::ParticipantData;
use crate::sfu::feed::renumber::Renumber;
use crate::sfu::feed::Feed;
use crate::sfu::participant::Participant;
use crate::sfu::transport::{DtlsState, Transport};

use super::*;

impl Worker {
    pub(super) fn new_key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    /// Create an empty session.
    pub fn create_session(&mut self, sid: Sid) -> Result<(), ControlError> {
        if self.session_keys.contains_key(&sid) {
            return Err(ControlError::SessionExists { sid });
        }
        let key = SessionKey(self.new_key());
        self.session_keys.insert(sid.clone(), key);
        self.sessions.insert(
            key,
            Session {
                sid,
                participants: HashMap::new(),
                feeds: FastMap::default(),
                feed_keys: HashMap::new(),
                speaker_feeds: Vec::new(),
                other_cores: Vec::new(),
                remote_holds: Vec::new(),
            },
        );
        Ok(())
    }

    pub(super) fn session_key(&self, sid: &Sid) -> Result<SessionKey, ControlError> {
        self.session_keys
            .get(sid)
            .copied()
            .ok_or_else(|| ControlError::NoSuchSession { sid: sid.clone() })
    }

    /// Remove a session and every participant in it.
    pub fn remove_session(&mut self, sid: &Sid) -> Result<(), ControlError> {
        let skey = self.session_key(sid)?;
        let keys: Vec<ParticipantKey> = self.sessions[&skey]
            .participants
            .values()
            .copied()
            .collect();
        for key in keys {
            self.remove_participant_by_key(key);
        }
        self.sessions.remove(&skey);
        self.session_keys.remove(sid);
        self.replicas.retain(|_, (s, _)| *s != skey);
        Ok(())
    }

    /// Add a participant; returns the relay's ICE credentials for it.
    pub fn add_participant(
        &mut self,
        sid: &Sid,
        uid: Uid,
        config: ParticipantConfig,
    ) -> Result<IceCredentials, ControlError> {
        let skey = self.session_key(sid)?;
        if self.sessions[&skey].participants.contains_key(&uid) {
            return Err(ControlError::ParticipantExists {
                sid: sid.clone(),
                uid,
            });
        }
        let creds = loop {
            let c = random_credentials(&mut self.rng);
            if !self.by_ufrag.contains_key(&c.ufrag) {
                break c;
            }
        };
        let key = ParticipantKey(self.new_key());
        let ice = IceLite::new(
            creds.clone(),
            config.remote_ufrag,
            self.config.consent_timeout,
        );
        let rtcp_ssrc = self.rng.random();
        self.sessions
            .get_mut(&skey)
            .expect("session_key found it")
            .participants
            .insert(uid.clone(), key);
        self.by_ufrag.insert(creds.ufrag.clone(), key);
        let mut participant = Participant::new(
            sid.clone(),
            skey,
            uid,
            Transport::new(
                ice,
                config.remote_fingerprint,
                self.config.dtls_handshake_timeout,
            ),
            rtcp_ssrc,
            ParticipantData::new(
                config.publish_data,
                config.max_message_size,
                Limiter::new(self.config.data_rate, self.config.data_burst),
            ),
        );
        participant.renumber = config
            .renumbering
            .as_deref()
            .map(|r| Box::new(Renumber::new(r)));
        self.participants.insert(key, Box::new(participant));
        Ok(creds)
    }

    /// ICE restart: fresh relay credentials for the participant (DTLS and SRTP are kept).
    pub fn restart_ice(&mut self, sid: &Sid, uid: &Uid) -> Result<IceCredentials, ControlError> {
        let (_, key) = self.key_of(sid, uid)?;
        let creds = loop {
            let c = random_credentials(&mut self.rng);
            if !self.by_ufrag.contains_key(&c.ufrag) {
                break c;
            }
        };
        let p = self.participants.get_mut(&key).expect("participant of key");
        self.by_ufrag.remove(&p.transport.ice.local().ufrag);
        self.by_ufrag.insert(creds.ufrag.clone(), key);
        p.transport.ice.restart(creds.clone());
        Ok(creds)
    }

    /// Tell the relay the participant's ICE ufrag and certificate fingerprint once signalling
    /// has them (from the browser's answer). The fingerprint can be set until DTLS starts and
    /// never changed afterwards.
    pub fn update_participant(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        config: ParticipantConfig,
    ) -> Result<(), ControlError> {
        let (_, key) = self.key_of(sid, uid)?;
        let p = self.participants.get_mut(&key).expect("participant of key");
        p.transport
            .set_remote_fingerprint(config.remote_fingerprint)
            .map_err(|_| ControlError::DtlsStarted)?;
        p.transport.ice.set_remote_ufrag(config.remote_ufrag);
        p.data.may_send = config.publish_data;
        if let Some(max) = config.max_message_size {
            p.data.channels.set_max_send(max as usize);
        }
        if let Some(r) = &config.renumbering {
            p.renumber = Some(Box::new(Renumber::new(r)));
        }
        Ok(())
    }

    /// The cores `sid` spans (this one among them): its data-channel messages go to the
    /// others.
    pub fn set_session_cores(&mut self, sid: &Sid, cores: &[usize]) -> Result<(), ControlError> {
        let skey = self.session_key(sid)?;
        let me = self.config.core;
        let session = self.sessions.get_mut(&skey).expect("session_key found it");
        session.other_cores = cores.iter().copied().filter(|c| *c != me).collect();
        // A core that left holds no one here any more; one that joined learns of the holds
        // of this core's receivers, if there are any.
        let others = &session.other_cores;
        session.remote_holds.retain(|(c, _)| others.contains(c));
        let session = &self.sessions[&skey];
        let holding = session.participants.values().any(|r| {
            self.participants
                .get(r)
                .is_some_and(|p| p.data.congested_since.is_some())
        });
        if holding {
            self.announce_hold(skey);
        }
        Ok(())
    }

    /// Remove a participant, its feeds and its subscriptions. No event is emitted.
    pub fn remove_participant(&mut self, sid: &Sid, uid: &Uid) -> Result<(), ControlError> {
        let (_, key) = self.key_of(sid, uid)?;
        self.remove_participant_by_key(key);
        Ok(())
    }

    /// The replicas of other cores' feeds in `sid` that have no subscriber here, however
    /// their subscribers left: the control plane stops their flow to this core.
    pub fn idle_replicas(&self, sid: &Sid) -> Result<Vec<FeedRoute>, ControlError> {
        let skey = self.session_key(sid)?;
        Ok(self.sessions[&skey]
            .feeds
            .values()
            .filter_map(Feed::idle_replica)
            .collect())
    }

    pub(super) fn key_of(
        &self,
        sid: &Sid,
        uid: &Uid,
    ) -> Result<(SessionKey, ParticipantKey), ControlError> {
        let skey = self.session_key(sid)?;
        let key = self.sessions[&skey]
            .participants
            .get(uid)
            .copied()
            .ok_or_else(|| ControlError::NoSuchParticipant {
                sid: sid.clone(),
                uid: uid.clone(),
            })?;
        Ok((skey, key))
    }

    pub(super) fn remove_participant_by_key(&mut self, key: ParticipantKey) {
        let Some(mut p) = self.participants.remove(&key) else {
            return;
        };
        self.timers.disarm(Timer::Participant(key));
        self.timers.disarm(Timer::Pacer(key));
        self.timers.disarm(Timer::Data(key));
        for paced in p.pacer.clear() {
            if let Paced::Built(out) = paced {
                self.pool.give(out.packet);
            }
        }
        self.by_ufrag.remove(&p.transport.ice.local().ufrag);
        if let Some(addr) = p.transport.ice.selected() {
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
        match p.transport.dtls() {
            DtlsState::Idle => {}
            DtlsState::Handshaking { .. } => {
                self.handshakes -= 1;
                self.outputs.push_back(Output::DtlsClose(key));
            }
            DtlsState::Connected { .. } => self.outputs.push_back(Output::DtlsClose(key)),
        }
        if p.data.congested_since.is_some() {
            // The senders it held go on at once, not when their hold runs out.
            self.release_held(p.session, key);
            for held in std::mem::take(&mut self.data_wake) {
                self.timers.arm(Timer::Data(held), self.epoch);
            }
        }
        let Some(session) = self.sessions.get_mut(&p.session) else {
            return;
        };
        session.participants.remove(&p.uid);
        // Its subscriptions.
        for fkey in p.subscriptions.values() {
            if let Some(feed) = session.feeds.get_mut(fkey) {
                feed.consumers.remove(key);
            }
        }
        // Its feeds, and every subscription to them.
        for fkey in p.feeds.clone() {
            remove_feed(session, &mut self.participants, fkey);
        }
    }

    /// Declare (or update) a feed the participant publishes.
    ///
    /// Declaring an existing feed id again replaces its description (e.g. a new SSRC after
    /// renegotiation); subscribers keep their subscription and see a continuous stream.
    ///
    /// Returns where the feed lives relay-wide, for replicas on other cores.
    pub fn publish(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        description: FeedDescription,
    ) -> Result<FeedRoute, ControlError> {
        let (skey, key) = self.key_of(sid, uid)?;
        if description.clock_rate == 0 {
            return Err(ControlError::InvalidFeed {
                reason: "clock_rate must not be 0".into(),
            });
        }
        if description.payload_types.iter().any(|pt| *pt > 127) {
            return Err(ControlError::InvalidFeed {
                reason: "payload types are 0..=127".into(),
            });
        }
        let existing = self.sessions[&skey]
            .feed_keys
            .get(&description.feed_id)
            .copied();
        let fkey = existing.unwrap_or_else(|| FeedKey(self.new_key()));
        // key_of found both.
        let session = self.sessions.get_mut(&skey).expect("session of key");
        let p = self.participants.get_mut(&key).expect("participant of key");
        if description.rtx_ssrc.is_some() && description.rtx_ssrc == description.ssrc {
            return Err(ControlError::InvalidFeed {
                reason: "the retransmission SSRC must differ from the media SSRC".into(),
            });
        }
        check_layers(&description)?;
        if description
            .rtx_payload_types
            .iter()
            .any(|r| r.pt > 127 || r.apt > 127)
        {
            return Err(ControlError::InvalidFeed {
                reason: "payload types are 0..=127".into(),
            });
        }
        for ssrc in description.ssrcs() {
            if let Some(other) = p.published.get(&ssrc) {
                if *other != fkey {
                    return Err(ControlError::SsrcInUse { ssrc });
                }
            }
        }
        match session.feeds.get_mut(&fkey) {
            Some(feed) if feed.publisher != key => {
                return Err(ControlError::FeedOwnedByOther {
                    feed_id: description.feed_id,
                })
            }
            Some(feed) => {
                let before = p.published_ssrcs(fkey);
                p.published.retain(|_, f| *f != fkey);
                let layers_before = feed.layers.len();
                feed.update(description);
                let top = feed.layers.len().saturating_sub(1) as u8;
                for c in &mut feed.consumers {
                    c.rewriter.request_resync();
                    c.layers.reset();
                    // Other layers than before: what was chosen among the old ones means
                    // nothing among the new.
                    if feed.layers.len() != layers_before {
                        c.layers = Layers::new(top);
                    }
                }
                // Declared, or learnt and kept for the same rids.
                for layer in &feed.layers {
                    p.published.extend(
                        layer
                            .ssrc
                            .into_iter()
                            .chain(layer.rtx_ssrc)
                            .map(|s| (s, fkey)),
                    );
                }
                // An SSRC kept keeps its SRTP state (its rollover counter goes on).
                let gone: Vec<u32> = before
                    .into_iter()
                    .filter(|s| !p.published.contains_key(s))
                    .collect();
                p.forget_published(gone);
            }
            None => {
                p.published.extend(description.ssrcs().map(|s| (s, fkey)));
                p.feeds.push(fkey);
                session.feed_keys.insert(description.feed_id.clone(), fkey);
                session.feeds.insert(fkey, Feed::new(key, description));
            }
        }
        Ok(FeedRoute {
            core: self.config.core,
            session: skey,
            feed: fkey,
        })
    }

    /// Declare (or update) the replica of a feed published on another core, so that
    /// participants here can subscribe to it.
    pub fn add_remote_feed(
        &mut self,
        sid: &Sid,
        description: FeedDescription,
        route: FeedRoute,
    ) -> Result<(), ControlError> {
        // A replica's description may come from another node (over Redis): checked as a
        // publisher's is, since the layer logic shifts by its layer count.
        check_layers(&description)?;
        let skey = self.session_key(sid)?;
        if let Some(&(_, fkey)) = self.replicas.get(&route) {
            let session = self.sessions.get_mut(&skey).expect("session_key found it");
            if let Some(feed) = session.feeds.get_mut(&fkey) {
                session.feed_keys.remove(&feed.description.feed_id);
                session.feed_keys.insert(description.feed_id.clone(), fkey);
                for c in &mut feed.consumers {
                    c.rewriter.request_resync();
                }
                feed.update(description);
            }
            return Ok(());
        }
        if self.sessions[&skey]
            .feed_keys
            .contains_key(&description.feed_id)
        {
            return Err(ControlError::FeedOwnedByOther {
                feed_id: description.feed_id,
            });
        }
        let fkey = FeedKey(self.new_key());
        let session = self.sessions.get_mut(&skey).expect("session_key found it");
        session.feed_keys.insert(description.feed_id.clone(), fkey);
        session
            .feeds
            .insert(fkey, Feed::replica(route, description));
        self.replicas.insert(route, (skey, fkey));
        Ok(())
    }

    /// Remove the replica of a feed and every subscription to it here.
    pub fn remove_remote_feed(&mut self, route: FeedRoute) {
        let Some((skey, fkey)) = self.replicas.remove(&route) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(&skey) {
            remove_feed(session, &mut self.participants, fkey);
        }
    }

    /// Forward a feed published here to `core` too (it has subscribers of the feed), or stop.
    pub fn set_sink(
        &mut self,
        route: FeedRoute,
        core: usize,
        on: bool,
    ) -> Result<(), ControlError> {
        let feed = self
            .sessions
            .get_mut(&route.session)
            .and_then(|s| s.feeds.get_mut(&route.feed))
            .filter(|f| f.origin.is_none())
            .ok_or(ControlError::NoSuchRoute)?;
        feed.sinks.retain(|c| *c != core);
        if on && core != self.config.core {
            feed.sinks.push(core);
        }
        Ok(())
    }

    /// Remove a feed and every subscription to it.
    pub fn unpublish(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let (skey, key) = self.key_of(sid, uid)?;
        let session = self.sessions.get_mut(&skey).expect("session of key");
        let fkey = session.feed_key(sid, feed_id)?;
        if session.feeds[&fkey].publisher != key {
            return Err(ControlError::FeedOwnedByOther {
                feed_id: feed_id.clone(),
            });
        }
        remove_feed(session, &mut self.participants, fkey);
        Ok(())
    }

    /// Subscribe a participant to a feed of the same session.
    pub fn subscribe(
        &mut self,
        now: Instant,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
        options: SubscribeOptions,
    ) -> Result<SubscriptionInfo, ControlError> {
        let (skey, key) = self.key_of(sid, uid)?;
        check_extension_ids(&options)?;
        if let Some(id) = options.playout_delay_extension {
            if !(1..=14).contains(&id) {
                return Err(ControlError::InvalidSubscription {
                    reason: format!("playout-delay extension id {id} is not 1-14"),
                });
            }
        }
        let session = self.sessions.get_mut(&skey).expect("session of key");
        let fkey = session.feed_key(sid, feed_id)?;
        let feed = session.feeds.get_mut(&fkey).expect("feed_key found it");
        if feed.publisher == key {
            return Err(ControlError::OwnFeed { uid: uid.clone() });
        }
        if feed.consumers.contains(key) {
            return Err(ControlError::AlreadySubscribed {
                uid: uid.clone(),
                feed_id: feed_id.clone(),
            });
        }
        let p = self.participants.get_mut(&key).expect("participant of key");
        let ssrc = fresh_ssrc(&mut self.rng, |s| !p.may_send_with(s));
        p.subscriptions.insert(ssrc, fkey);
        // The retransmission stream has an SSRC of its own, never one the subscriber's
        // other streams use (it shares their SRTP session).
        let rtx_ssrc =
            (options.rtx && feed.is_video() && !feed.description.rtx_payload_types.is_empty())
                .then(|| fresh_ssrc(&mut self.rng, |s| !p.may_send_with(s)));
        if let Some(rtx) = rtx_ssrc {
            // Reserved so that no later subscription takes it; NACKs never name it.
            p.subscriptions.insert(rtx, fkey);
        }
        let mut consumer = Consumer::new(key, Ssrc(ssrc), self.rng.random(), self.rng.random());
        consumer.mid = options.mid.map(|m| Arc::from(m.into_bytes()));
        consumer.playout_delay_extension = options.playout_delay_extension;
        consumer.retransmits = Retransmits::new(rtx_ssrc, self.rng.random());
        // The best layer, until something says the subscriber should have less.
        consumer.layers = Layers::new(feed.layers.len().saturating_sub(1) as u8);
        if let Some(id) = options.transport_cc_extension {
            p.transport.enable_bwe(id, BweConfig::default());
            consumer.transport_wide = !(feed.is_video() && rtx_ssrc.is_none());
        }
        // Checked above: it has none yet.
        let pushed = feed.consumers.push(consumer);
        debug_assert!(pushed.is_some(), "one consumer per subscriber");
        let info = SubscriptionInfo {
            feed_id: feed_id.clone(),
            ssrc: Ssrc(ssrc),
            kind: feed.description.kind,
            feed: feed.description.clone(),
            rtx_ssrc: rtx_ssrc.map(Ssrc),
        };
        // No keyframe request yet: the subscriber cannot use one before it has applied the
        // description of this stream. The control plane calls `request_keyframe` when it has
        // (signalling: when the answer arrives), and a first DTLS connection asks by itself.
        let _ = now;
        Ok(info)
    }

    /// The subscription of `uid` to `feed_id`: the keys of its session and feed, and the
    /// index of its consumer in the feed.
    fn subscription(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(SessionKey, ParticipantKey, FeedKey, usize), ControlError> {
        let (skey, key) = self.key_of(sid, uid)?;
        let not_subscribed = || ControlError::NotSubscribed {
            uid: uid.clone(),
            feed_id: feed_id.clone(),
        };
        let session = &self.sessions[&skey];
        let fkey = *session.feed_keys.get(feed_id).ok_or_else(not_subscribed)?;
        let feed = session.feeds.get(&fkey).ok_or_else(not_subscribed)?;
        let index = feed.consumers.position(key).ok_or_else(not_subscribed)?;
        Ok((skey, key, fkey, index))
    }

    /// A feed that [`Self::subscription`] found.
    fn feed_mut(&mut self, skey: SessionKey, fkey: FeedKey) -> &mut Feed {
        self.sessions
            .get_mut(&skey)
            .and_then(|s| s.feeds.get_mut(&fkey))
            .expect("a feed that was just found")
    }

    /// Change a subscription to what the subscriber's answer accepted of its offer: a
    /// subscriber that left RTX or the playout-delay extension out of its answer gets plain
    /// retransmissions or no playout delay. Nothing can be added that the offer did not have:
    /// asking for RTX where the subscription has none, or for another MID, is refused.
    pub fn update_subscription(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
        options: SubscribeOptions,
    ) -> Result<(), ControlError> {
        let (skey, key, fkey, index) = self.subscription(sid, uid, feed_id)?;
        check_extension_ids(&options)?;
        let feed = self.feed_mut(skey, fkey);
        let video = feed.is_video();
        let c = &mut feed.consumers[index];
        if options.mid.as_deref().map(str::as_bytes) != c.mid.as_deref() {
            return Err(ControlError::InvalidSubscription {
                reason: "the mid of a subscription cannot change".into(),
            });
        }
        if options.rtx && c.retransmits.rtx_ssrc.is_none() {
            return Err(ControlError::InvalidSubscription {
                reason: "the subscription has no RTX stream to turn on".into(),
            });
        }
        let dropped_rtx = c.retransmits.rtx_ssrc.take_if(|_| !options.rtx);
        c.playout_delay_extension = options.playout_delay_extension;
        // Numbers stop where the answer left the extension out, or where repairs will now be
        // plain retransmissions (which must repeat the first packet exactly).
        let plain_repairs = video && c.retransmits.rtx_ssrc.is_none();
        c.transport_wide &= options.transport_cc_extension.is_some() && !plain_repairs;
        if plain_repairs {
            // What was sent before this went out with elements (or a playout delay) the
            // packets no longer get: it cannot be repeated exactly.
            c.rewriter.forget_sent();
        }
        if let (Some(rtx), Some(p)) = (dropped_rtx, self.participants.get_mut(&key)) {
            p.subscriptions.remove(&rtx);
        }
        Ok(())
    }

    /// How `uid` shows its video of feed `feed_id` ([`View`]): it is sent no layer larger
    /// than that covers, and nothing while hidden. Where its link is estimated the allocator
    /// keeps it within that; where not, the best layer within it is what it gets. A move down
    /// happens at the next keyframe of a lower layer, which is asked for now.
    pub fn set_view(
        &mut self,
        now: Instant,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
        view: View,
    ) -> Result<(), ControlError> {
        let (skey, key, fkey, index) = self.subscription(sid, uid, feed_id)?;
        // Where the subscriber's link is estimated, the allocator moves it up to the cap when
        // the link allows; where not, the cap is what it gets.
        let estimated = self
            .participants
            .get(&key)
            .is_some_and(|p| p.transport.estimate().is_some());
        let feed = self.feed_mut(skey, fkey);
        // Only where its packets count in the estimate (see `Worker::allocate`).
        let estimated = estimated && feed.consumers[index].transport_wide;
        if !feed.is_video() {
            return Err(ControlError::InvalidSubscription {
                reason: "only a video subscription has a view".into(),
            });
        }
        let best_before = super::quality::max_layer(feed, &feed.consumers[index]);
        let c = &mut feed.consumers[index];
        let before = c.layers.paused();
        // No cap is no cap: those who read it take it up to the layers there are (streams
        // for simulcast, spatial layers for SVC, which has one stream).
        c.layers.set_max(view.max_layer.unwrap_or(u8::MAX));
        c.layers.set_view(view.hidden, view.size);
        let best = super::quality::max_layer(feed, &feed.consumers[index]);
        let c = &mut feed.consumers[index];
        if !estimated || c.layers.target() > best {
            c.layers.set_target(best);
        }
        let (after, wanted) = (c.layers.paused(), c.layers.awaiting_keyframe());
        if let Some(wanted) = wanted {
            self.keyframe_request(now, skey, fkey, Some(usize::from(wanted)), false);
        }
        self.pause_changed(sid, uid, feed_id.clone(), before, after);
        // A view that allows a better layer (or shows a hidden video) is acted on now, not at
        // the next feedback; one that does not leaves the allocator's choice alone (on a
        // fresh subscriber's unproven estimate it would only move down). A video shown again
        // that is still paused for its link is looked at too: the allocator skipped it while
        // hidden, and its look while paused starts at a decision.
        let raised =
            best > best_before || (before == Some(Pause::Hidden) && after != Some(Pause::Hidden));
        if estimated && raised {
            self.allocate(now, key);
        }
        Ok(())
    }

    /// The dominant speaker's video feeds in session `sid` (signalling decides who that is):
    /// where a subscriber's link cannot carry every video, they come right after screen
    /// shares. A new speaker is served at the next decision: the wait before a move up is
    /// for probing new room, not for a change of who comes first.
    pub fn set_speaker_feeds(&mut self, sid: &Sid, feeds: Vec<FeedId>) -> Result<(), ControlError> {
        let skey = self.session_key(sid)?;
        let session = self.sessions.get_mut(&skey).expect("session_key found it");
        if session.speaker_feeds != feeds {
            session.speaker_feeds = feeds;
            for p in self.participants.values_mut().filter(|p| p.session == skey) {
                p.allocator.reorder();
            }
        }
        Ok(())
    }

    /// Ask the publisher of a feed for a keyframe (rate-limited like subscribers' requests).
    /// Signalling calls this once a subscriber has applied the description of a new feed.
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        sid: &Sid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let skey = self.session_key(sid)?;
        let session = self.sessions.get_mut(&skey).expect("session_key found it");
        let fkey = session.feed_key(sid, feed_id)?;
        self.keyframe_request(now, skey, fkey, None, false);
        Ok(())
    }

    /// End a subscription.
    pub fn unsubscribe(
        &mut self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let (skey, key, fkey, index) = self.subscription(sid, uid, feed_id)?;
        let feed = self.feed_mut(skey, fkey);
        let c = feed.consumers.swap_remove(index);
        if let Some(p) = self.participants.get_mut(&key) {
            for ssrc in c.ssrcs() {
                p.subscriptions.remove(&ssrc);
            }
        }
        Ok(())
    }
}

/// The extension ids the relay writes must fit one-byte header extension elements.
fn check_extension_ids(options: &SubscribeOptions) -> Result<(), ControlError> {
    for (name, id) in [
        ("playout-delay", options.playout_delay_extension),
        (
            "transport-wide sequence number",
            options.transport_cc_extension,
        ),
    ] {
        match id {
            Some(id) if !(1..=14).contains(&id) => {
                return Err(ControlError::InvalidSubscription {
                    reason: format!("{name} extension id {id} is not 1-14"),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`FeedDescription::check_layers`] as the control plane's error.
fn check_layers(d: &crate::control::FeedDescription) -> Result<(), ControlError> {
    d.check_layers()
        .map_err(|reason| ControlError::InvalidFeed { reason })
}

/// A random SSRC that `taken` does not refuse.
fn fresh_ssrc(rng: &mut StdRng, taken: impl Fn(u32) -> bool) -> u32 {
    loop {
        let s: u32 = rng.random();
        if !taken(s) {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_fresh_ssrc_is_none_that_is_taken() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut ahead = rng.clone();
        let first: Vec<u32> = (0..3).map(|_| ahead.random()).collect();
        let fourth: u32 = ahead.random();
        assert_eq!(fresh_ssrc(&mut rng, |s| first.contains(&s)), fourth);
    }
}
