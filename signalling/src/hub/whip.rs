//! WHIP (RFC 9725): an encoder (OBS, GStreamer, a browser page) publishes into a session with
//! one HTTP request, and ends with another.
//!
//! The request carries a token for the session (the same JWT a page joins with; it needs the
//! publish grant) and the encoder's offer. The encoder becomes a participant without a
//! websocket: the others see it join and its feed published, as for a page, and its feed is
//! subscribed, recorded and metered as any. It leaves when it deletes its resource, or when
//! the relay stops hearing from it (ICE consent, 30 s). Its offer's numbers are its own
//! ([`crate::sdp::ingest`]); the relay renumbers its packets.

use std::time::Instant;

use relay::control::ParticipantConfig;
use relay::ids::{Sid, Uid};
use serde_json::json;
use tokio::sync::oneshot;

use crate::accounts::Credentials;
use crate::auth::{AuthError, Identity};
use crate::protocol::{ErrorCode, Event, ParticipantInfo};
use crate::sdp::ingest::{self, Ingest};
use crate::sdp::{self as sdp_text, OfferParams, Role};

use super::jobs::RoomInput;
use super::*;

/// Why a WHIP request was refused: the code (which the HTTP layer turns into a status) and the
/// reason.
pub type Refusal = (ErrorCode, String);

/// A WHIP request for the hub.
#[derive(Debug)]
pub enum WhipRequest {
    /// `POST`: publish the offer's tracks into session `sid` (the public name).
    Publish {
        /// The session's public name (from the URL).
        sid: String,
        /// The bearer token.
        token: String,
        /// Where the request came from (joins are limited per address).
        ip: std::net::IpAddr,
        /// The encoder's SDP offer.
        offer: String,
        /// Where the answer (or the refusal) goes.
        reply: oneshot::Sender<Result<Created, Refusal>>,
    },
    /// WHEP's `POST`: play feed `feed_id` of session `sid` to the offer's player.
    Play {
        /// The session's public name (from the URL).
        sid: String,
        /// The feed (from the URL).
        feed_id: String,
        /// The bearer token.
        token: String,
        /// Where the request came from (joins are limited per address).
        ip: std::net::IpAddr,
        /// The player's SDP offer.
        offer: String,
        /// Where the answer (or the refusal) goes.
        reply: oneshot::Sender<Result<Created, Refusal>>,
    },
    /// `DELETE` of a resource: its encoder or player leaves.
    End {
        /// The session's public name (from the URL).
        sid: String,
        /// The bearer token.
        token: String,
        /// Where the request came from (joins are limited per address).
        ip: std::net::IpAddr,
        /// The resource id (from the URL).
        resource: String,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
}

/// A published encoder: its resource (the last part of its URL) and the SDP answer.
#[derive(Debug)]
pub struct Created {
    /// The resource id.
    pub resource: String,
    /// The answer.
    pub answer: String,
}

impl WhipRequest {
    fn credentials(&self) -> Credentials {
        let (WhipRequest::Publish { sid, token, .. }
        | WhipRequest::Play { sid, token, .. }
        | WhipRequest::End { sid, token, .. }) = self;
        Credentials::Token {
            token: token.clone(),
            sid: sid.clone(),
        }
    }

    fn refuse(self, refusal: Refusal) {
        match self {
            WhipRequest::Publish { reply, .. } | WhipRequest::Play { reply, .. } => {
                let _ = reply.send(Err(refusal));
            }
            WhipRequest::End { reply, .. } => {
                let _ = reply.send(Err(refusal));
            }
        }
    }
}

/// An encoder on its way through the relay.
struct Adding {
    uid: String,
    name: Option<String>,
    feed_id: String,
    ingest: Ingest,
    identity: Identity,
    public_sid: String,
    reply: oneshot::Sender<Result<Created, Refusal>>,
}

impl Hub {
    /// A WHIP request arrived: its token is checked off the hub first, within the limits a
    /// websocket join has (per address, and on the token's size).
    pub(super) fn whip(&mut self, request: WhipRequest) {
        let (WhipRequest::Publish { ip, token, .. }
        | WhipRequest::Play { ip, token, .. }
        | WhipRequest::End { ip, token, .. }) = &request;
        if let Err(why) = self.limiter.check_address(Instant::now(), *ip) {
            return request.refuse((ErrorCode::RateLimited, why));
        }
        if token.len() > super::MAX_TOKEN_LEN {
            return request.refuse((
                ErrorCode::Unauthorized,
                format!("a token is at most {} bytes", super::MAX_TOKEN_LEN),
            ));
        }
        let inputs = self.inputs.clone();
        self.accounts
            .authenticate(request.credentials(), move |identity| {
                let _ = inputs.try_send(Input::WhipAuthenticated(Box::new(request), identity));
            });
    }

    /// Its token was checked: on to its session.
    pub(super) fn whip_authenticated(
        &mut self,
        request: WhipRequest,
        identity: Result<Identity, AuthError>,
    ) {
        let identity = match identity {
            Ok(identity) => identity,
            Err(e) => return request.refuse((ErrorCode::Unauthorized, e.to_string())),
        };
        let (WhipRequest::Publish { sid, .. }
        | WhipRequest::Play { sid, .. }
        | WhipRequest::End { sid, .. }) = &request;
        let sid = format!("{}/{sid}", identity.cid);
        match request {
            WhipRequest::Publish { .. } | WhipRequest::Play { .. } => {
                if let Err(why) = self.limiter.check_key(Instant::now(), &identity.key_id) {
                    return request.refuse((ErrorCode::RateLimited, why));
                }
                self.room_input(&sid, RoomInput::Whip(Box::new(request), identity));
            }
            WhipRequest::End { .. } => {
                self.room_input(&sid, RoomInput::Whip(Box::new(request), identity))
            }
        }
    }

    /// A WHIP request's turn in its session.
    pub(super) fn whip_in_session(&mut self, sid: &str, request: WhipRequest, identity: Identity) {
        match request {
            WhipRequest::Publish {
                sid: public_sid,
                offer,
                reply,
                ..
            } => match self.whip_plan(sid, &offer, &identity) {
                Ok((uid, feed_id, ingest)) => self.whip_add(
                    sid,
                    Adding {
                        uid,
                        name: identity.name.clone(),
                        feed_id,
                        ingest,
                        identity,
                        public_sid,
                        reply,
                    },
                ),
                Err(refusal) => {
                    let _ = reply.send(Err(refusal));
                }
            },
            WhipRequest::Play {
                feed_id,
                offer,
                reply,
                ..
            } => self.whep_start(sid, feed_id, offer, identity, reply),
            WhipRequest::End {
                resource, reply, ..
            } => {
                let Some(uid) = self
                    .whip_resources
                    .get(&resource)
                    .filter(|(s, _)| s == sid)
                    .map(|(_, uid)| uid.clone())
                else {
                    let _ = reply.send(Err((
                        ErrorCode::NotJoined,
                        "no such WHIP or WHEP resource in this session".into(),
                    )));
                    return;
                };
                self.leave_with(sid, &uid, None, None);
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// The uid a WHIP or WHEP peer takes in `sid`: its token's, unless that is in the session
    /// already, or a new one.
    pub(super) fn http_peer_uid(&self, sid: &str, identity: &Identity) -> Result<String, Refusal> {
        match &identity.uid {
            Some(uid)
                if self
                    .rooms
                    .get(sid)
                    .is_some_and(|r| r.peers.contains_key(uid))
                    || self.joined_elsewhere(sid, uid) =>
            {
                Err((
                    ErrorCode::AlreadyJoined,
                    format!("participant {uid} is already in the session"),
                ))
            }
            Some(uid) => Ok(uid.clone()),
            None => Ok(random_id("u-")),
        }
    }

    /// A participant without a websocket (a WHIP encoder, a WHEP player) is in: it is
    /// metered, the others are told, and its resource is recorded. Returns the resource id.
    /// None where the session is gone (the caller checked it is not).
    pub(super) fn http_peer_joined(&mut self, sid: &str, uid: &str, peer: Peer) -> Option<String> {
        let name = peer.name.clone();
        let room = self.rooms.get_mut(sid)?;
        self.counters.borrow_mut().joins += 1;
        room.peers.insert(uid.to_owned(), peer);
        room.meter
            .metered_until
            .insert(uid.to_owned(), Instant::now());
        room.meter.peak = room.meter.peak.max(room.peers.len() as u32);
        let resource = random_id("w-") + &random_id("");
        self.whip_resources
            .insert(resource.clone(), (sid.to_owned(), uid.to_owned()));
        let participant = json!({ "participant": { "uid": uid, "name": name } });
        self.webhook(sid, "participant_joined", participant);
        self.broadcast(
            sid,
            uid,
            Event::ParticipantJoined(ParticipantInfo {
                uid: uid.to_owned(),
                name: name.clone(),
                quality: None,
            }),
        );
        self.announce_join(sid, uid, name);
        Some(resource)
    }

    /// What the encoder may do and what the relay takes of its offer.
    fn whip_plan(
        &self,
        sid: &str,
        offer: &str,
        identity: &Identity,
    ) -> Result<(String, String, Ingest), Refusal> {
        let room = self.rooms.get(sid);
        if self.draining && room.is_none() {
            return Err(super::join::draining());
        }
        if room.is_some_and(|r| r.e2ee) {
            return Err((
                ErrorCode::E2eeMismatch,
                "this session is end-to-end encrypted, which a WHIP encoder cannot take part in"
                    .into(),
            ));
        }
        if !identity.grants.publish {
            return Err((
                ErrorCode::Forbidden,
                "this token may not publish (no publish grant)".into(),
            ));
        }
        let uid = self.http_peer_uid(sid, identity)?;
        let feed_id = random_id("f-");
        let offer =
            sdp_text::parse_offer(offer).map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;
        let ingest = ingest::plan(offer, self.repair, |kind| relay_feed(&feed_id, kind))
            .map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;
        Ok((uid, feed_id, ingest))
    }

    /// The relay adds the encoder and its feed (a job); the answer follows.
    fn whip_add(&mut self, sid: &str, adding: Adding) {
        let exists = self.rooms.contains_key(sid);
        let relay = self.relay.clone();
        let (rsid, ruid) = (Sid::from(sid), Uid::from(adding.uid.as_str()));
        let config = ParticipantConfig {
            remote_ufrag: Some(adding.ingest.ice_ufrag.clone()),
            remote_fingerprint: Some(adding.ingest.fingerprint.clone()),
            publish_data: false,
            max_message_size: None,
            renumbering: None,
        };
        let descriptions: Vec<relay::FeedDescription> = adding
            .ingest
            .tracks
            .iter()
            .map(|t| t.description.clone())
            .collect();
        self.spawn_job(
            sid,
            async move {
                if !exists {
                    match relay.create_session(rsid.clone(), None).await {
                        Ok(_) | Err(relay::ControlError::SessionExists { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                let added = async {
                    let info = relay
                        .add_participant(rsid.clone(), ruid.clone(), config)
                        .await?;
                    for description in descriptions {
                        if let Err(e) = relay.publish(rsid.clone(), ruid.clone(), description).await
                        {
                            let _ = relay.remove_participant(rsid.clone(), ruid.clone()).await;
                            return Err(e);
                        }
                    }
                    Ok(info)
                }
                .await;
                if added.is_err() && !exists {
                    let _ = relay.remove_session(rsid.clone()).await;
                }
                added
            },
            {
                let sid = sid.to_owned();
                move |hub, added| hub.whip_added(&sid, adding, added)
            },
        );
    }

    /// The relay has the encoder and its feed: everyone is told, and it gets its answer.
    fn whip_added(
        &mut self,
        sid: &str,
        adding: Adding,
        added: Result<relay::ParticipantInfo, relay::ControlError>,
    ) {
        let Adding {
            uid,
            name,
            feed_id,
            ingest,
            identity,
            public_sid,
            reply,
        } = adding;
        let info = match added {
            Ok(info) => info,
            Err(e) => {
                let _ = reply.send(Err((ErrorCode::Relay, e.to_string())));
                return;
            }
        };
        if !self.rooms.contains_key(sid) {
            self.rooms.insert(
                sid.to_owned(),
                Room::new(
                    identity.cid.clone(),
                    public_sid,
                    super::recording::unix_now(),
                    false,
                ),
            );
            self.follow_session(sid);
            self.webhook(sid, "session_started", json!({}));
        }
        let mut peer = Peer::new(
            name.clone(),
            identity.grants,
            identity.key_records,
            None,
            info,
            false,
        );
        for track in &ingest.tracks {
            peer.entries.push(Entry {
                section: Section {
                    mid: track.mid.clone(),
                    kind: track.kind,
                    role: Role::Publish {
                        feed_id: feed_id.clone(),
                        simulcast: track.description.simulcast.is_some(),
                    },
                },
                state: Negotiation::Active,
            });
        }
        let answer = ingest.answer(&OfferParams {
            session_id: peer.session_id,
            version: peer.version,
            ice_ufrag: &peer.ice_ufrag,
            ice_pwd: &peer.ice_pwd,
            fingerprint: &self.relay.fingerprint(),
            candidate: peer.candidate,
            tcp_candidate: peer.tcp_candidate,
            repair: self.repair,
            data_mid: None,
        });
        let (Some(resource), Some(room)) = (
            self.http_peer_joined(sid, &uid, peer),
            self.rooms.get_mut(sid),
        ) else {
            let _ = reply.send(Err((ErrorCode::Relay, "the session ended".into())));
            return;
        };
        room.feeds.insert(
            feed_id.clone(),
            Feed {
                owner: uid.clone(),
                source: crate::protocol::Source::Webcam,
                tracks: ingest
                    .tracks
                    .iter()
                    .map(|t| Track {
                        kind: t.kind,
                        codecs: t.codecs.clone(),
                        active: true,
                        muted: false,
                        description: Some(t.description.clone()),
                    })
                    .collect(),
                published: true,
                origin: None,
            },
        );
        let info = room.feeds[&feed_id].info(&feed_id);
        self.webhook(sid, "feed_published", json!({ "feed": info }));
        self.broadcast(sid, &uid, Event::FeedPublished(info));
        self.record_feed(sid, &feed_id);
        self.announce_feed(sid, &feed_id);
        tracing::info!(%sid, %uid, %feed_id, "WHIP encoder publishing");
        if reply.send(Ok(Created { resource, answer })).is_err() {
            // The request was given up on (its client went): the encoder goes again.
            self.leave_with(sid, &uid, None, None);
        }
    }
}
