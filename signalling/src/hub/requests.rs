//! What a joined participant asks for: publish, subscribe and the rest.

use relay::control::{SubscribeOptions, View};
use relay::ids::{FeedId, Sid, Uid};
use serde_json::json;

use crate::protocol::{ErrorCode, Request};
use crate::sdp::{self, Codec, Kind, Role, Section};

use super::*;

/// The largest width or height a view may give, in device pixels.
const MAX_VIEW: u32 = 16_384;

impl Hub {
    /// Handle a joined participant's request. `Ok(None)`: a job finishes it, with the reply
    /// to `conn` (request `id`) and the next offer.
    pub(super) fn request(
        &mut self,
        sid: &str,
        uid: &str,
        conn: ConnId,
        id: u64,
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
                simulcast,
                feed_id: kept,
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
                let keep = kept.filter(|f| {
                    f.len() <= 64
                        && f.starts_with("f-")
                        && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !self.rooms[sid].feeds.contains_key(f)
                });
                let feed_id = keep.unwrap_or_else(|| random_id("f-"));
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
                                muted: false,
                                description: None,
                            })
                            .collect(),
                        published: false,
                        origin: None,
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
                                simulcast: simulcast && kind == Kind::Video,
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
                let first_mid = peer.next_mid;
                let tracks: Vec<(String, Kind, Vec<Codec>)> = tracks
                    .into_iter()
                    .zip(first_mid..)
                    .map(|((kind, codecs), mid)| (mid.to_string(), kind, codecs))
                    .collect();
                let asks: Vec<(String, Kind, FeedId)> = tracks
                    .iter()
                    .map(|(mid, kind, _)| (mid.clone(), *kind, relay_feed(&feed_id, *kind)))
                    .collect();
                let relay = self.relay.clone();
                let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
                let (sid, uid) = (sid.to_owned(), uid.to_owned());
                let rtx = self.repair;
                self.spawn_job(
                    &sid.clone(),
                    async move {
                        let mut ssrcs = Vec::new();
                        for (mid, kind, feed) in &asks {
                            // The subscription's offer has the extension where this holds
                            // (sdp::offer).
                            let playout = rtx && *kind == Kind::Video;
                            let options = SubscribeOptions {
                                mid: Some(mid.clone()),
                                rtx,
                                playout_delay_extension: playout.then_some(sdp::PLAYOUT_DELAY.0),
                                transport_cc_extension: Some(sdp::TRANSPORT_CC_ID),
                            };
                            match relay
                                .subscribe(rsid.clone(), ruid.clone(), feed.clone(), options)
                                .await
                            {
                                Ok(info) => ssrcs.push((info.ssrc.0, info.rtx_ssrc.map(|s| s.0))),
                                Err(e) => {
                                    // All of the feed or none of it.
                                    for (_, _, done) in asks.iter().take(ssrcs.len()) {
                                        let _ = relay
                                            .unsubscribe(rsid.clone(), ruid.clone(), done.clone())
                                            .await;
                                    }
                                    return Err(e);
                                }
                            }
                        }
                        Ok(ssrcs)
                    },
                    move |hub, result| {
                        let result =
                            result
                                .map_err(|e| (ErrorCode::Relay, e.to_string()))
                                .map(|ssrcs| {
                                    let mids: Vec<String> =
                                        tracks.iter().map(|(mid, _, _)| mid.clone()).collect();
                                    if let Some(peer) = hub.peer_mut(&sid, &uid) {
                                        peer.next_mid = first_mid + tracks.len() as u32;
                                        peer.entries.extend(tracks.into_iter().zip(ssrcs).map(
                                            |((mid, kind, codecs), (ssrc, rtx_ssrc))| Entry {
                                                section: Section {
                                                    mid,
                                                    kind,
                                                    role: Role::Subscribe {
                                                        feed_id: feed_id.clone(),
                                                        ssrc,
                                                        codecs,
                                                        rtx_ssrc,
                                                    },
                                                },
                                                state: Negotiation::New,
                                            },
                                        ));
                                    }
                                    Some(json!({ "feed_id": feed_id, "mids": mids }))
                                });
                        hub.reply(conn, id, result);
                        hub.negotiate(&sid, &uid);
                    },
                );
                Ok(None)
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
                let relay = self.relay.clone();
                let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
                let feeds = [Kind::Audio, Kind::Video].map(|kind| relay_feed(&feed_id, kind));
                self.spawn_job(
                    sid,
                    async move {
                        for feed in feeds {
                            let _ = relay.unsubscribe(rsid.clone(), ruid.clone(), feed).await;
                        }
                    },
                    |_, ()| {},
                );
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
                        self.unpublish(sid, std::slice::from_ref(&feed_id));
                        Ok(Some(json!({ "feed_id": feed_id })))
                    }
                }
            }
            Request::Mute {
                feed_id,
                kind,
                muted,
                ..
            } => self.mute(sid, uid, &feed_id, &kind, muted),
            Request::SetView {
                feed_id,
                hidden,
                width,
                height,
                max_layer,
                ..
            } => {
                let size = match (width, height) {
                    (None, None) => None,
                    (Some(w), Some(h))
                        if (1..=MAX_VIEW).contains(&w) && (1..=MAX_VIEW).contains(&h) =>
                    {
                        Some((w, h))
                    }
                    _ => {
                        return Err((
                            ErrorCode::InvalidMessage,
                            format!("width and height come together, each 1 to {MAX_VIEW}"),
                        ))
                    }
                };
                let subscribed = self.rooms[sid].peers[uid].entries.iter().any(|e| {
                    e.section.kind == Kind::Video
                        && matches!(&e.section.role, Role::Subscribe { feed_id: f, .. } if *f == feed_id)
                });
                if !subscribed {
                    return Err((
                        ErrorCode::SubscriptionState,
                        format!("no video of {feed_id} is subscribed to"),
                    ));
                }
                let relay = self.relay.clone();
                let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
                let feed = relay_feed(&feed_id, Kind::Video);
                let view = View {
                    hidden,
                    size,
                    max_layer,
                };
                self.spawn_job(
                    sid,
                    async move {
                        relay
                            .set_view(rsid.clone(), ruid.clone(), feed.clone(), view)
                            .await
                    },
                    move |hub, result| {
                        let result = result
                            .map(|()| Some(json!({ "feed_id": feed_id })))
                            .map_err(|e| (ErrorCode::Relay, e.to_string()));
                        hub.reply(conn, id, result);
                    },
                );
                Ok(None)
            }
            Request::Quality { .. } => {
                let relay = self.relay.clone();
                let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
                self.spawn_job(
                    sid,
                    async move { relay.quality(rsid.clone(), ruid.clone()).await },
                    move |hub, result| {
                        let result = result
                            .map_err(|e| (ErrorCode::Relay, e.to_string()))
                            .map(|q| Some(quality_reply(q)));
                        hub.reply(conn, id, result);
                    },
                );
                Ok(None)
            }
            Request::Answer { offer_id, sdp, .. } => {
                self.answer(sid, uid, conn, id, offer_id, &sdp)
            }
            Request::RestartIce { .. } => {
                let relay = self.relay.clone();
                let (rsid, ruid) = (Sid::from(sid), Uid::from(uid));
                let (sid, uid) = (sid.to_owned(), uid.to_owned());
                self.spawn_job(
                    &sid.clone(),
                    async move { relay.restart_ice(rsid.clone(), ruid.clone()).await },
                    move |hub, info| {
                        let result =
                            info.map_err(|e| (ErrorCode::Relay, e.to_string()))
                                .map(|info| {
                                    if let Some(peer) = hub.peer_mut(&sid, &uid) {
                                        peer.ice_ufrag = info.ice_ufrag;
                                        peer.ice_pwd = info.ice_pwd;
                                        peer.ice_restart = true;
                                    }
                                    Some(json!({}))
                                });
                        hub.reply(conn, id, result);
                        hub.negotiate(&sid, &uid);
                    },
                );
                Ok(None)
            }
            Request::Record { enable, .. } => {
                if !self.rooms[sid].peers[uid].grants.record {
                    return Err((
                        ErrorCode::Forbidden,
                        "recording is not permitted: the key does not allow recording, or the \
                         token has no record grant"
                            .into(),
                    ));
                }
                if enable {
                    self.start_recording(sid, uid, recording::Replier::Conn(conn, id));
                    Ok(None)
                } else {
                    self.stop_recording(sid, Some(uid), None);
                    Ok(Some(json!({ "recording": false })))
                }
            }
            Request::Leave { .. } => {
                self.leave_with(sid, uid, None, Some((conn, id)));
                Ok(None)
            }
        }
    }
}

/// The relay's view of what a subscriber receives, with the session's feed ids (a video
/// subscription's relay feed is the feed's id with `/video`).
fn quality_reply(q: Option<relay::control::SubscriberQuality>) -> serde_json::Value {
    let Some(q) = q else {
        return json!({ "estimate_bps": null, "subscriptions": [] });
    };
    let subscriptions: Vec<serde_json::Value> = q
        .subscriptions
        .iter()
        .filter_map(|s| {
            let feed_id = s.feed_id.0.strip_suffix("/video")?;
            Some(json!({
                "feed_id": feed_id,
                "layers": s.layers,
                "temporal_layers": s.temporal_layers,
                "target": s.target,
                "current": s.current,
                "switches": s.switches,
                "paused": s.paused,
                "pauses": s.pauses,
            }))
        })
        .collect();
    json!({ "estimate_bps": q.estimate_bps.map(|e| e.round()), "subscriptions": subscriptions })
}

impl Hub {
    /// Mute or unmute a track of a feed `uid` publishes; the others are told when it changes.
    fn mute(
        &mut self,
        sid: &str,
        uid: &str,
        feed_id: &str,
        kind: &str,
        muted: bool,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        let Some(feed) = self
            .rooms
            .get_mut(sid)
            .and_then(|r| r.feeds.get_mut(feed_id))
        else {
            return Err((
                ErrorCode::NoSuchFeed,
                format!("no feed {feed_id} in this session"),
            ));
        };
        if feed.owner != uid {
            return Err((
                ErrorCode::NoSuchFeed,
                format!("feed {feed_id} is not yours"),
            ));
        }
        let Some(track) = feed.tracks.iter_mut().find(|t| t.kind.as_str() == kind) else {
            return Err((
                ErrorCode::InvalidMessage,
                format!("feed {feed_id} has no {kind} track (kind is audio or video)"),
            ));
        };
        let changed = track.muted != muted;
        track.muted = muted;
        let published = feed.published;
        let (feed_id_owned, kind_owned) = (feed_id.to_owned(), kind.to_owned());
        if changed && published {
            let (feed_id, uid, kind) = (feed_id.to_owned(), uid.to_owned(), kind.to_owned());
            let event = if muted {
                crate::protocol::Event::FeedMuted {
                    feed_id,
                    uid: uid.clone(),
                    kind,
                }
            } else {
                crate::protocol::Event::FeedUnmuted {
                    feed_id,
                    uid: uid.clone(),
                    kind,
                }
            };
            self.broadcast(sid, &uid, event);
            self.announce_mute(sid, &feed_id_owned, &kind_owned, muted);
        }
        Ok(Some(
            json!({ "feed_id": feed_id, "kind": kind, "muted": muted }),
        ))
    }
}
