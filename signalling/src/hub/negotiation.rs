//! Server-side offers and the participants' answers.

use relay::control::{FeedDescription, HeaderExtension, MediaKind, ParticipantConfig};
use relay::ids::{Sid, Ssrc, Uid};
use serde_json::json;

use crate::protocol::{ErrorCode, Event, ServerMessage, TransceiverInfo};
use crate::sdp::{self, Kind, OfferParams, Role, Section};

use super::*;

impl Hub {
    /// Send an offer if the participant has changes and none is outstanding.
    pub(super) fn negotiate(&mut self, sid: &str, uid: &str) {
        let fingerprint = self.fingerprint.clone();
        let Some(peer) = self.peer_mut(sid, uid) else {
            return;
        };
        if (peer.outstanding.is_some() && !peer.answer_refused)
            || peer.conn.is_none()
            || !(peer.ice_restart || peer.entries.iter().any(|e| e.state == Negotiation::New))
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
            },
            &sections,
        );
        let transceivers = sections
            .iter()
            .map(|s| {
                let (role, feed_id) = match &s.role {
                    Role::Publish { feed_id } => ("publish", Some(feed_id.clone())),
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

    pub(super) async fn answer(
        &mut self,
        sid: &str,
        uid: &str,
        offer_id: u64,
        text: &str,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        if self.rooms[sid].peers[uid].outstanding != Some(offer_id) {
            return Err((
                ErrorCode::InvalidSdp,
                format!("offer {offer_id} is not the outstanding offer"),
            ));
        }
        let result = self.apply_answer(sid, uid, text).await;
        if result.is_err() {
            if let Some(peer) = self.peer_mut(sid, uid) {
                peer.answer_refused = true;
            }
        }
        result
    }

    /// Check an answer to the outstanding offer and apply it; an error changes nothing.
    pub(super) async fn apply_answer(
        &mut self,
        sid: &str,
        uid: &str,
        text: &str,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        let peer = &self.rooms[sid].peers[uid];
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
        let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
        self.relay
            .update_participant(
                &rsid,
                &ruid,
                ParticipantConfig {
                    remote_ufrag: Some(answer.ice_ufrag.clone()),
                    remote_fingerprint: Some(answer.fingerprint.clone()),
                },
            )
            .await
            .map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;

        // Apply each offered section.
        let offered: Vec<Section> = peer
            .entries
            .iter()
            .filter(|e| e.state == Negotiation::Offered)
            .map(|e| e.section.clone())
            .collect();
        let mut failed_publish = Vec::new();
        for section in &offered {
            let a = answer
                .sections
                .iter()
                .find(|a| a.mid == section.mid)
                .expect("checked above");
            match &section.role {
                Role::Publish { feed_id } => {
                    let (Some(ssrc), false, Some(first)) = (a.ssrc, a.rejected, a.codecs.first())
                    else {
                        failed_publish.push(feed_id.clone());
                        continue;
                    };
                    let description = FeedDescription {
                        feed_id: relay_feed(feed_id, section.kind),
                        kind: match section.kind {
                            Kind::Audio => MediaKind::Audio,
                            Kind::Video => MediaKind::Video,
                        },
                        ssrc: Ssrc(ssrc),
                        clock_rate: first.clock_rate,
                        payload_types: a.codecs.iter().map(|c| c.pt).collect(),
                        header_extensions: a
                            .extensions
                            .iter()
                            .map(|(id, uri)| HeaderExtension {
                                id: *id,
                                uri: uri.clone(),
                            })
                            .collect(),
                    };
                    if let Err(e) = self.relay.publish(&rsid, &ruid, description).await {
                        tracing::warn!(%feed_id, "relay refused a feed: {e}");
                        failed_publish.push(feed_id.clone());
                        continue;
                    }
                    if let Some(track) = self
                        .rooms
                        .get_mut(sid)
                        .and_then(|r| r.feeds.get_mut(feed_id))
                        .and_then(|f| f.tracks.iter_mut().find(|t| t.kind == section.kind))
                    {
                        track.codecs = a.codecs.clone();
                        track.active = true;
                    }
                }
                Role::Subscribe { feed_id, .. } => {
                    if !a.rejected {
                        let _ = self
                            .relay
                            .request_keyframe(&rsid, &relay_feed(feed_id, section.kind))
                            .await;
                    }
                }
                Role::Closed => {}
            }
        }
        let peer = self.peer_mut(sid, uid).expect("joined peer");
        for e in &mut peer.entries {
            if e.state == Negotiation::Offered {
                e.state = Negotiation::Active;
            }
        }
        peer.outstanding = None;
        peer.answer_refused = false;
        let mut published = Vec::new();
        let mut subscribed = Vec::new();
        for section in &offered {
            match &section.role {
                Role::Publish { feed_id }
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
        failed_publish.dedup();
        for feed_id in &failed_publish {
            self.unpublish(sid, feed_id).await;
        }
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
                self.broadcast(sid, uid, Event::FeedPublished(info));
            }
        }
        Ok(Some(json!({
            "published": published,
            "failed": failed_publish,
            "subscribed": subscribed,
        })))
    }
}
