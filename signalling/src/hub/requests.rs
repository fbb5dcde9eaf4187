//! What a joined participant asks for: publish, subscribe and the rest.

use relay::control::SubscribeOptions;
use relay::ids::{Sid, Uid};
use serde_json::json;

use crate::protocol::{ErrorCode, Request};
use crate::sdp::{Codec, Kind, Role, Section};

use super::*;

impl Hub {
    pub(super) async fn request(
        &mut self,
        sid: &str,
        uid: &str,
        request: Request,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        match request {
            Request::Join { .. } => Err((
                ErrorCode::AlreadyJoined,
                "this connection has joined already".into(),
            )),
            // Answered before a request reaches here.
            Request::Ping { .. } => Ok(Some(json!({}))),
            Request::Publish {
                source,
                audio,
                video,
                ..
            } => {
                if !self.rooms[sid].peers[uid].grants.publish {
                    return Err((
                        ErrorCode::Forbidden,
                        "this participant may not publish (no publish grant)".into(),
                    ));
                }
                if !audio && !video {
                    return Err((
                        ErrorCode::NothingToPublish,
                        "publish needs audio or video".into(),
                    ));
                }
                let feed_id = random_id("f-");
                let kinds: Vec<Kind> = [(video, Kind::Video), (audio, Kind::Audio)]
                    .into_iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, k)| k)
                    .collect();
                let room = self.rooms.get_mut(sid).expect("joined room");
                room.feeds.insert(
                    feed_id.clone(),
                    Feed {
                        owner: uid.to_owned(),
                        source,
                        tracks: kinds
                            .iter()
                            .map(|k| Track {
                                kind: *k,
                                codecs: Vec::new(),
                                active: false,
                            })
                            .collect(),
                        published: false,
                    },
                );
                let peer = room.peers.get_mut(uid).expect("joined peer");
                for kind in kinds {
                    let mid = peer.next_mid.to_string();
                    peer.next_mid += 1;
                    peer.entries.push(Entry {
                        section: Section {
                            mid,
                            kind,
                            role: Role::Publish {
                                feed_id: feed_id.clone(),
                            },
                        },
                        state: Negotiation::New,
                    });
                }
                Ok(Some(json!({ "feed_id": feed_id })))
            }
            Request::Subscribe { feed_id, .. } => {
                let room = self.rooms.get(sid).expect("joined room");
                if !room.peers[uid].grants.subscribe {
                    return Err((
                        ErrorCode::Forbidden,
                        "this participant may not subscribe (no subscribe grant)".into(),
                    ));
                }
                let Some(feed) = room.feeds.get(&feed_id).filter(|f| f.published) else {
                    return Err((
                        ErrorCode::NoSuchFeed,
                        format!("no feed {feed_id} in this session"),
                    ));
                };
                if feed.owner == uid {
                    return Err((
                        ErrorCode::OwnFeed,
                        "a participant cannot subscribe to its own feed".into(),
                    ));
                }
                let peer = &room.peers[uid];
                let already = peer.entries.iter().any(|e| {
                    matches!(&e.section.role, Role::Subscribe { feed_id: f, .. } if *f == feed_id)
                });
                if already {
                    return Err((
                        ErrorCode::SubscriptionState,
                        format!("already subscribed to {feed_id}"),
                    ));
                }
                let tracks: Vec<(Kind, Vec<Codec>)> = feed
                    .tracks
                    .iter()
                    .filter(|t| t.active)
                    .map(|t| (t.kind, t.codecs.clone()))
                    .collect();
                let mut next_mid = peer.next_mid;
                let mut sections = Vec::new();
                for (kind, codecs) in tracks {
                    let mid = next_mid.to_string();
                    next_mid += 1;
                    let info = self
                        .relay
                        .subscribe(
                            &Sid::from(sid),
                            &Uid::from(uid),
                            &relay_feed(&feed_id, kind),
                            SubscribeOptions {
                                mid: Some(mid.clone()),
                            },
                        )
                        .await
                        .map_err(|e| (ErrorCode::Relay, e.to_string()))?;
                    sections.push(Section {
                        mid,
                        kind,
                        role: Role::Subscribe {
                            feed_id: feed_id.clone(),
                            ssrc: info.ssrc.0,
                            codecs,
                        },
                    });
                }
                let mids: Vec<String> = sections.iter().map(|s| s.mid.clone()).collect();
                let peer = self.peer_mut(sid, uid).expect("joined peer");
                peer.next_mid = next_mid;
                peer.entries
                    .extend(sections.into_iter().map(|section| Entry {
                        section,
                        state: Negotiation::New,
                    }));
                Ok(Some(json!({ "feed_id": feed_id, "mids": mids })))
            }
            Request::Unsubscribe { feed_id, .. } => {
                let peer = self.peer_mut(sid, uid).expect("joined peer");
                let mut found = false;
                for e in &mut peer.entries {
                    if matches!(&e.section.role, Role::Subscribe { feed_id: f, .. } if *f == feed_id)
                    {
                        e.section.role = Role::Closed;
                        e.state = Negotiation::New;
                        found = true;
                    }
                }
                if !found {
                    return Err((
                        ErrorCode::SubscriptionState,
                        format!("not subscribed to {feed_id}"),
                    ));
                }
                for kind in [Kind::Audio, Kind::Video] {
                    let _ = self
                        .relay
                        .unsubscribe(
                            &Sid::from(sid),
                            &Uid::from(uid),
                            &relay_feed(&feed_id, kind),
                        )
                        .await;
                }
                Ok(Some(json!({ "feed_id": feed_id })))
            }
            Request::Unpublish { feed_id, .. } => {
                let owned = self
                    .rooms
                    .get(sid)
                    .and_then(|r| r.feeds.get(&feed_id))
                    .map(|f| f.owner == uid);
                match owned {
                    None => Err((
                        ErrorCode::NoSuchFeed,
                        format!("no feed {feed_id} in this session"),
                    )),
                    Some(false) => Err((
                        ErrorCode::NoSuchFeed,
                        format!("feed {feed_id} is not yours"),
                    )),
                    Some(true) => {
                        self.unpublish(sid, &feed_id).await;
                        Ok(Some(json!({ "feed_id": feed_id })))
                    }
                }
            }
            Request::Answer { offer_id, sdp, .. } => self.answer(sid, uid, offer_id, &sdp).await,
            Request::RestartIce { .. } => {
                let info = self
                    .relay
                    .restart_ice(&Sid::from(sid), &Uid::from(uid))
                    .await
                    .map_err(|e| (ErrorCode::Relay, e.to_string()))?;
                let peer = self.peer_mut(sid, uid).expect("joined peer");
                peer.ice_ufrag = info.ice_ufrag;
                peer.ice_pwd = info.ice_pwd;
                peer.ice_restart = true;
                Ok(Some(json!({})))
            }
            Request::Record { .. } => {
                if !self.rooms[sid].peers[uid].grants.record {
                    return Err((
                        ErrorCode::Forbidden,
                        "recording is not permitted: the key does not allow recording, or the \
                         token has no record grant"
                            .into(),
                    ));
                }
                Err((
                    ErrorCode::RecordingUnavailable,
                    "recording is permitted but no recorder runs on this server".into(),
                ))
            }
            Request::Leave { .. } => {
                self.leave(sid, uid).await;
                Ok(Some(json!({})))
            }
        }
    }
}
