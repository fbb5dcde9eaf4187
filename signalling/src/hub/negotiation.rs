//! Server-side offers and the participants' answers.

use relay::control::{
    FeedDescription, HeaderExtension, MediaKind, ParticipantConfig, PayloadCodec, RtxPayloadType,
    Simulcast, SubscribeOptions,
};
use relay::ids::{FeedId, Sid, Ssrc, Uid};
use serde_json::json;

use crate::protocol::{ErrorCode, Event, ServerMessage, TransceiverInfo};
use crate::sdp::{self, AnsweredSection, Codec, Kind, OfferParams, Role, Section};

use super::*;

impl Hub {
    /// Send an offer if the participant has changes and none is outstanding.
    pub(super) fn negotiate(&mut self, sid: &str, uid: &str) {
        let fingerprint = self.relay.fingerprint();
        let repair = self.repair;
        let Some(peer) = self.peer_mut(sid, uid) else {
            return;
        };
        if (peer.outstanding.is_some() && !peer.answer_refused)
            || peer.conn.is_none()
            || !(peer.ice_restart
                || peer.entries.iter().any(|e| e.state == Negotiation::New)
                || peer
                    .data
                    .as_ref()
                    .is_some_and(|d| d.state == Negotiation::New))
        {
            return;
        }
        peer.ice_restart = false;
        peer.answer_refused = false;
        for e in &mut peer.entries {
            if e.state == Negotiation::New {
                e.state = Negotiation::Offered;
            }
        }
        if let Some(d) = peer.data.as_mut().filter(|d| d.state == Negotiation::New) {
            d.state = Negotiation::Offered;
        }
        peer.version += 1;
        let offer_id = peer.next_offer;
        peer.next_offer += 1;
        peer.outstanding = Some(offer_id);
        let sections: Vec<Section> = peer.entries.iter().map(|e| e.section.clone()).collect();
        let text = sdp::offer(
            &OfferParams {
                session_id: peer.session_id,
                version: peer.version,
                ice_ufrag: &peer.ice_ufrag,
                ice_pwd: &peer.ice_pwd,
                fingerprint: &fingerprint,
                candidate: peer.candidate,
                tcp_candidate: peer.tcp_candidate,
                repair,
                data_mid: peer.data.as_ref().map(|d| d.mid.as_str()),
            },
            &sections,
        );
        let transceivers = sections
            .iter()
            .map(|s| {
                let (role, feed_id) = match &s.role {
                    Role::Publish { feed_id, .. } => ("publish", Some(feed_id.clone())),
                    Role::Subscribe { feed_id, .. } => ("subscribe", Some(feed_id.clone())),
                    Role::Closed => ("closed", None),
                };
                TransceiverInfo {
                    mid: s.mid.clone(),
                    kind: s.kind.as_str().into(),
                    role: role.into(),
                    feed_id,
                }
            })
            .collect();
        self.send_to_peer(
            sid,
            uid,
            &ServerMessage::Offer {
                offer_id,
                sdp: text,
                transceivers,
            },
        );
    }

    /// An answer to the outstanding offer: checked here, applied on the relay in a job, then
    /// taken into the session's state ([`Hub::answer_applied`]); a refused answer changes
    /// nothing and no longer holds back the next offer.
    pub(super) fn answer(
        &mut self,
        sid: &str,
        uid: &str,
        conn: ConnId,
        id: u64,
        offer_id: u64,
        text: &str,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        if self.rooms[sid].peers[uid].outstanding != Some(offer_id) {
            // Late, not wrong: the offer it answers was superseded, and the outstanding one
            // still holds back the next.
            return Err((
                ErrorCode::InvalidSdp,
                format!("offer {offer_id} is not the outstanding offer"),
            ));
        }
        let result = self.apply_answer(sid, uid, conn, id, text);
        if result.is_err() {
            if let Some(peer) = self.peer_mut(sid, uid) {
                peer.answer_refused = true;
            }
        }
        result
    }

    fn apply_answer(
        &mut self,
        sid: &str,
        uid: &str,
        conn: ConnId,
        id: u64,
        text: &str,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        let room = &self.rooms[sid];
        let peer = &room.peers[uid];
        let answer = sdp::parse_answer(text).map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;
        for e in peer
            .entries
            .iter()
            .filter(|e| e.state == Negotiation::Offered)
        {
            if !answer.sections.iter().any(|a| a.mid == e.section.mid) {
                return Err((
                    ErrorCode::InvalidSdp,
                    format!("the answer has no m-section for mid {}", e.section.mid),
                ));
            }
        }
        // What the relay is to do for each offered section.
        let offered: Vec<Section> = peer
            .entries
            .iter()
            .filter(|e| e.state == Negotiation::Offered)
            .map(|e| e.section.clone())
            .collect();
        let mut steps = Vec::new();
        for section in &offered {
            let a = answer
                .sections
                .iter()
                .find(|a| a.mid == section.mid)
                .expect("checked above");
            let step = match &section.role {
                Role::Publish { feed_id, simulcast } => match (
                    publish_streams(section, *simulcast, a),
                    a.rejected,
                    a.codecs.first(),
                ) {
                    (Some((ssrc, simulcast)), false, Some(first)) => Step::Publish {
                        feed_id: feed_id.clone(),
                        kind: section.kind,
                        codecs: a.codecs.clone(),
                        description: FeedDescription {
                            feed_id: relay_feed(feed_id, section.kind),
                            kind: match section.kind {
                                Kind::Audio => MediaKind::Audio,
                                Kind::Video => MediaKind::Video,
                            },
                            ssrc: ssrc.map(Ssrc),
                            clock_rate: first.clock_rate,
                            payload_types: a
                                .codecs
                                .iter()
                                .filter(|c| !sdp::is_rtx(c))
                                .map(|c| c.pt)
                                .collect(),
                            header_extensions: a
                                .extensions
                                .iter()
                                .map(|(id, uri)| HeaderExtension {
                                    id: *id,
                                    uri: uri.clone(),
                                })
                                .collect(),
                            // Asked for only where it was offered, and only of a
                            // publisher that said it answers them.
                            nack: self.repair
                                && a.codecs
                                    .iter()
                                    .any(|c| c.feedback.iter().any(|f| f == "nack")),
                            rtx_ssrc: a
                                .rtx_ssrc
                                .filter(|_| self.repair && ssrc.is_some())
                                .map(Ssrc),
                            rtx_payload_types: sdp::rtx_payload_types(&a.codecs)
                                .into_iter()
                                .filter(|_| self.repair)
                                .map(|(pt, apt)| RtxPayloadType { pt, apt })
                                .collect(),
                            codecs: a
                                .codecs
                                .iter()
                                .filter(|c| !sdp::is_rtx(c))
                                .map(|c| PayloadCodec {
                                    pt: c.pt,
                                    name: c.name.clone(),
                                })
                                .collect(),
                            simulcast,
                            screen: room
                                .feeds
                                .get(feed_id)
                                .is_some_and(|f| f.source == Source::Screen),
                            renumbering: None,
                        },
                    },
                    _ => Step::Refused(feed_id.clone()),
                },
                Role::Subscribe {
                    feed_id, rtx_ssrc, ..
                } if !a.rejected => Step::Subscribed {
                    feed: relay_feed(feed_id, section.kind),
                    update: accepted_subscription(section, *rtx_ssrc, self.repair, a),
                },
                Role::Subscribe { .. } | Role::Closed => continue,
            };
            steps.push(step);
        }
        // The largest data-channel message the browser takes, from its data section.
        let max_message_size = peer.data.as_ref().and_then(|d| {
            answer
                .sections
                .iter()
                .find(|a| a.mid == d.mid && !a.rejected)
                .and_then(|a| a.data)
        });
        let config = ParticipantConfig {
            remote_ufrag: Some(answer.ice_ufrag.clone()),
            remote_fingerprint: Some(answer.fingerprint.clone()),
            publish_data: peer.grants.publish_data,
            max_message_size,
            renumbering: None,
        };
        let relay = self.relay.clone();
        let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
        let (sid, uid) = (sid.to_owned(), uid.to_owned());
        self.spawn_job(
            &sid.clone(),
            async move {
                relay
                    .update_participant(rsid.clone(), ruid.clone(), config)
                    .await?;
                let mut outcomes = Vec::new();
                for step in steps {
                    let ok = match &step {
                        Step::Publish {
                            feed_id,
                            description,
                            ..
                        } => match relay
                            .publish(rsid.clone(), ruid.clone(), description.clone())
                            .await
                        {
                            Ok(_) => true,
                            Err(e) => {
                                tracing::warn!(%feed_id, "relay refused a feed: {e}");
                                false
                            }
                        },
                        Step::Refused(_) => false,
                        Step::Subscribed { feed, update } => {
                            if let Some(options) = update {
                                // What the answer left out is not sent; should the relay
                                // refuse, the subscription still works as offered.
                                if let Err(e) = relay
                                    .update_subscription(
                                        rsid.clone(),
                                        ruid.clone(),
                                        feed.clone(),
                                        options.clone(),
                                    )
                                    .await
                                {
                                    tracing::warn!(%feed, "relay kept a subscription: {e}");
                                }
                            }
                            let _ = relay.request_keyframe(rsid.clone(), feed.clone()).await;
                            true
                        }
                    };
                    outcomes.push((step, ok));
                }
                Ok(outcomes)
            },
            move |hub, outcomes: Result<Vec<(Step, bool)>, relay::ControlError>| {
                let result = match outcomes {
                    Ok(outcomes) => Ok(hub.answer_applied(&sid, &uid, &offered, outcomes)),
                    Err(e) => {
                        if let Some(peer) = hub.peer_mut(&sid, &uid) {
                            peer.answer_refused = true;
                        }
                        Err((ErrorCode::InvalidSdp, e.to_string()))
                    }
                };
                hub.reply(conn, id, result);
                hub.negotiate(&sid, &uid);
            },
        );
        Ok(None)
    }

    /// The relay has taken an answer: the offered sections are active, the feeds whose every
    /// track is in are published, the refused ones go.
    fn answer_applied(
        &mut self,
        sid: &str,
        uid: &str,
        offered: &[Section],
        outcomes: Vec<(Step, bool)>,
    ) -> Option<serde_json::Value> {
        let mut failed_publish = Vec::new();
        for (step, ok) in outcomes {
            match step {
                Step::Publish {
                    feed_id,
                    kind,
                    codecs,
                    description,
                } if ok => {
                    if let Some(track) = self
                        .rooms
                        .get_mut(sid)
                        .and_then(|r| r.feeds.get_mut(&feed_id))
                        .and_then(|f| f.tracks.iter_mut().find(|t| t.kind == kind))
                    {
                        track.codecs = codecs;
                        track.active = true;
                        track.description = Some(description);
                    }
                }
                Step::Publish { feed_id, .. } | Step::Refused(feed_id) => {
                    if !failed_publish.contains(&feed_id) {
                        failed_publish.push(feed_id);
                    }
                }
                Step::Subscribed { .. } => {}
            }
        }
        let peer = self.peer_mut(sid, uid)?;
        for e in &mut peer.entries {
            if e.state == Negotiation::Offered {
                e.state = Negotiation::Active;
            }
        }
        if let Some(d) = peer
            .data
            .as_mut()
            .filter(|d| d.state == Negotiation::Offered)
        {
            d.state = Negotiation::Active;
        }
        peer.outstanding = None;
        peer.answer_refused = false;
        let mut published = Vec::new();
        let mut subscribed = Vec::new();
        for section in offered {
            match &section.role {
                Role::Publish { feed_id, .. }
                    if !failed_publish.contains(feed_id) && !published.contains(feed_id) =>
                {
                    published.push(feed_id.clone());
                }
                Role::Subscribe { feed_id, .. } if !subscribed.contains(feed_id) => {
                    subscribed.push(feed_id.clone());
                }
                _ => {}
            }
        }
        self.unpublish(sid, &failed_publish);
        for feed_id in &published {
            let info = self
                .rooms
                .get_mut(sid)
                .and_then(|r| r.feeds.get_mut(feed_id))
                .and_then(|f| {
                    let ready = f.tracks.iter().all(|t| t.active) && !f.published;
                    ready.then(|| {
                        f.published = true;
                        f.info(feed_id)
                    })
                });
            if let Some(info) = info {
                self.webhook(sid, "feed_published", json!({ "feed": info }));
                self.broadcast(sid, uid, Event::FeedPublished(info));
                self.record_feed(sid, feed_id);
                self.announce_feed(sid, feed_id);
            }
        }
        Some(json!({
            "published": published,
            "failed": failed_publish,
            "subscribed": subscribed,
        }))
    }
}

/// What the relay does for one section of an answer.
enum Step {
    /// A published track: the feed to add, and the codecs the answer chose.
    Publish {
        feed_id: String,
        kind: Kind,
        codecs: Vec<Codec>,
        description: FeedDescription,
    },
    /// A published track the answer refused (rejected, no SSRC, no codec).
    Refused(String),
    /// A subscription the answer took: the relay is told what the answer left out of the
    /// offer (`update`), then its publisher sends a keyframe.
    Subscribed {
        feed: FeedId,
        update: Option<SubscribeOptions>,
    },
}

/// What a subscriber's answer section `a` accepted of the offered subscription `section`
/// (with an RTX stream `rtx_ssrc`, under `repair`), as the relay's options for it; None when
/// it accepted everything the relay was asked for at subscribe time.
fn accepted_subscription(
    section: &Section,
    rtx_ssrc: Option<u32>,
    repair: bool,
    a: &sdp::AnsweredSection,
) -> Option<SubscribeOptions> {
    let rtx_offered = repair && rtx_ssrc.is_some();
    let rtx = rtx_offered && !sdp::rtx_payload_types(&a.codecs).is_empty();
    let (id, uri) = sdp::PLAYOUT_DELAY;
    let playout_offered = repair && section.kind == Kind::Video;
    let playout = playout_offered && a.extensions.iter().any(|(i, u)| *i == id && u == uri);
    let cc = a
        .extensions
        .iter()
        .any(|(i, u)| *i == sdp::TRANSPORT_CC_ID && u == sdp::TRANSPORT_CC);
    (rtx != rtx_offered || playout != playout_offered || !cc).then(|| SubscribeOptions {
        mid: Some(section.mid.clone()),
        rtx,
        playout_delay_extension: playout.then_some(id),
        transport_cc_extension: cc.then_some(sdp::TRANSPORT_CC_ID),
    })
}

/// How the browser sends a published section: with one SSRC, or as the simulcast layers it
/// accepted where they were offered (their SSRCs are then learnt by the relay from the
/// packets); None when it sends nothing the relay could route.
fn publish_streams(
    section: &Section,
    offered_simulcast: bool,
    a: &AnsweredSection,
) -> Option<(Option<u32>, Option<Simulcast>)> {
    if offered_simulcast && !a.simulcast.is_empty() {
        let simulcast = Simulcast {
            mid: section.mid.clone(),
            rids: a.simulcast.clone(),
        };
        return Some((None, Some(simulcast)));
    }
    Some((Some(a.ssrc?), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video_subscription() -> Section {
        Section {
            mid: "3".into(),
            kind: Kind::Video,
            role: Role::Subscribe {
                feed_id: "f".into(),
                ssrc: 5,
                codecs: sdp::publish_codecs(Kind::Video, true),
                rtx_ssrc: Some(6),
            },
        }
    }

    fn answered(codecs: Vec<Codec>, extensions: Vec<(u8, String)>) -> sdp::AnsweredSection {
        sdp::AnsweredSection {
            codecs,
            extensions,
            ..Default::default()
        }
    }

    #[test]
    fn the_relay_is_told_what_an_answer_left_out() {
        let section = video_subscription();
        let all = sdp::publish_codecs(Kind::Video, true);
        let without_rtx: Vec<Codec> = all.iter().filter(|c| !sdp::is_rtx(c)).cloned().collect();
        let (id, uri) = sdp::PLAYOUT_DELAY;
        let cc = (sdp::TRANSPORT_CC_ID, sdp::TRANSPORT_CC.to_string());
        let playout = vec![(id, uri.to_string()), cc.clone()];
        // Everything accepted: nothing to change.
        let a = answered(all.clone(), playout.clone());
        assert_eq!(accepted_subscription(&section, Some(6), true, &a), None);
        // RTX left out: plain retransmissions, the playout delay kept.
        let a = answered(without_rtx.clone(), playout.clone());
        assert_eq!(
            accepted_subscription(&section, Some(6), true, &a),
            Some(SubscribeOptions {
                mid: Some("3".into()),
                rtx: false,
                playout_delay_extension: Some(id),
                transport_cc_extension: Some(sdp::TRANSPORT_CC_ID),
            })
        );
        // The extensions left out (or under another id): none written.
        let a = answered(all.clone(), vec![(id + 1, uri.to_string()), cc.clone()]);
        assert_eq!(
            accepted_subscription(&section, Some(6), true, &a),
            Some(SubscribeOptions {
                mid: Some("3".into()),
                rtx: true,
                playout_delay_extension: None,
                transport_cc_extension: Some(sdp::TRANSPORT_CC_ID),
            })
        );
        let a = answered(all.clone(), vec![(id, uri.to_string())]);
        assert_eq!(
            accepted_subscription(&section, Some(6), true, &a),
            Some(SubscribeOptions {
                mid: Some("3".into()),
                rtx: true,
                playout_delay_extension: Some(id),
                transport_cc_extension: None,
            })
        );
        // Without repair nothing was offered, so nothing is missing.
        let a = answered(without_rtx, vec![cc]);
        assert_eq!(accepted_subscription(&section, Some(6), false, &a), None);
    }
}
