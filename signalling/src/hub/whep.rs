//! WHEP: a player (a page, GStreamer's `whepsrc`, any WHEP client) plays one feed of a session
//! with one HTTP request, and stops with another.
//!
//! Like a WHIP encoder ([`super::whip`]), the player is a participant without a websocket,
//! here with the subscribe grant: the others see it join. It gets the feed's tracks in its own
//! payload types and extension ids ([`crate::sdp::playback`]), which the relay writes into
//! every packet sent to it, with the same layer choice, pacing, repair and congestion control
//! as any subscriber. When the feed goes, the player leaves at the next tick; it leaves too on
//! `DELETE`, or when the relay stops hearing from it.

use relay::control::{ParticipantConfig, SubscribeOptions};
use relay::ids::{Sid, Uid};
use tokio::sync::oneshot;

use crate::auth::Identity;
use crate::protocol::ErrorCode;
use crate::sdp::playback::{self, Playback};
use crate::sdp::{self as sdp_text, OfferParams, Role};

use super::whip::{Created, Refusal};
use super::*;

/// A player on its way through the relay.
struct Playing {
    uid: String,
    feed_id: String,
    playback: Playback,
    identity: Identity,
    /// The feed's tracks as subscribers are offered them (the relay's numbers).
    tracks: Vec<(Kind, Vec<Codec>)>,
    reply: oneshot::Sender<Result<Created, Refusal>>,
}

impl Hub {
    /// A WHEP request's turn in its session.
    pub(super) fn whep_start(
        &mut self,
        sid: &str,
        feed_id: String,
        offer: String,
        identity: Identity,
        reply: oneshot::Sender<Result<Created, Refusal>>,
    ) {
        match self.whep_plan(sid, &feed_id, &offer, &identity) {
            Ok((uid, playback, tracks)) => self.whep_add(
                sid,
                Playing {
                    uid,
                    feed_id,
                    playback,
                    identity,
                    tracks,
                    reply,
                },
            ),
            Err(refusal) => {
                let _ = reply.send(Err(refusal));
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn whep_plan(
        &self,
        sid: &str,
        feed_id: &str,
        offer: &str,
        identity: &Identity,
    ) -> Result<(String, Playback, Vec<(Kind, Vec<Codec>)>), Refusal> {
        if !identity.grants.subscribe {
            return Err((
                ErrorCode::Forbidden,
                "this token may not subscribe (no subscribe grant)".into(),
            ));
        }
        let no_feed = || {
            (
                ErrorCode::NoSuchFeed,
                format!("no feed {feed_id} in this session"),
            )
        };
        let room = self.rooms.get(sid).ok_or_else(no_feed)?;
        if room.e2ee {
            return Err((
                ErrorCode::E2eeMismatch,
                "this session is end-to-end encrypted, which a WHEP player cannot decode".into(),
            ));
        }
        let feed = room
            .feeds
            .get(feed_id)
            .filter(|f| f.published)
            .ok_or_else(no_feed)?;
        let tracks: Vec<(Kind, Vec<Codec>)> = feed
            .tracks
            .iter()
            .filter(|t| t.active)
            .map(|t| (t.kind, t.codecs.clone()))
            .collect();
        let uid = self.http_peer_uid(sid, identity)?;
        let offer =
            sdp_text::parse_offer(offer).map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;
        let playback = playback::plan(offer, &tracks, self.repair)
            .map_err(|e| (ErrorCode::InvalidSdp, e.to_string()))?;
        Ok((uid, playback, tracks))
    }

    /// The relay adds the player and subscribes it (a job); the answer follows.
    fn whep_add(&mut self, sid: &str, playing: Playing) {
        let relay = self.relay.clone();
        let (rsid, ruid) = (Sid::from(sid), Uid::from(playing.uid.as_str()));
        let config = ParticipantConfig {
            remote_ufrag: Some(playing.playback.ice_ufrag.clone()),
            remote_fingerprint: Some(playing.playback.fingerprint.clone()),
            publish_data: false,
            max_message_size: None,
            renumbering: Some(Box::new(playing.playback.renumbering.clone())),
        };
        // In the relay's numbers: the participant's renumbering turns them into the player's.
        let asks: Vec<(FeedId, SubscribeOptions)> = playing
            .playback
            .plays
            .iter()
            .map(|p| {
                let options = SubscribeOptions {
                    mid: Some(p.mid.clone()),
                    rtx: p.rtx,
                    playout_delay_extension: p.playout_delay.then_some(sdp_text::PLAYOUT_DELAY.0),
                    transport_cc_extension: p.transport_cc.then_some(sdp_text::TRANSPORT_CC_ID),
                };
                (relay_feed(&playing.feed_id, p.kind), options)
            })
            .collect();
        self.spawn_job(
            sid,
            async move {
                let info = relay
                    .add_participant(rsid.clone(), ruid.clone(), config)
                    .await?;
                let mut ssrcs = Vec::new();
                for (feed, options) in asks {
                    match relay
                        .subscribe(rsid.clone(), ruid.clone(), feed.clone(), options)
                        .await
                    {
                        Ok(info) => ssrcs.push((info.ssrc.0, info.rtx_ssrc.map(|s| s.0))),
                        Err(e) => {
                            let _ = relay.remove_participant(rsid.clone(), ruid.clone()).await;
                            return Err(e);
                        }
                    }
                    let _ = relay.request_keyframe(rsid.clone(), feed).await;
                }
                Ok((info, ssrcs))
            },
            {
                let sid = sid.to_owned();
                move |hub, added| hub.whep_added(&sid, playing, added)
            },
        );
    }

    /// The relay plays the feed to the player: the others are told, the player gets its answer.
    #[allow(clippy::type_complexity)]
    fn whep_added(
        &mut self,
        sid: &str,
        playing: Playing,
        added: Result<(relay::ParticipantInfo, Vec<(u32, Option<u32>)>), relay::ControlError>,
    ) {
        let Playing {
            uid,
            feed_id,
            playback,
            identity,
            tracks,
            reply,
        } = playing;
        let (info, ssrcs) = match added {
            Ok(added) => added,
            Err(e) => {
                let _ = reply.send(Err((ErrorCode::Relay, e.to_string())));
                return;
            }
        };
        if !self.rooms.contains_key(sid) {
            // The session ended while the relay added the player: it goes again.
            let _ = reply.send(Err((
                ErrorCode::NoSuchFeed,
                format!("no feed {feed_id} in this session"),
            )));
            return;
        }
        let mut peer = Peer::new(
            identity.name.clone(),
            identity.grants,
            identity.key_records,
            None,
            info,
            false,
        );
        for (play, &(ssrc, rtx_ssrc)) in playback.plays.iter().zip(&ssrcs) {
            let codecs = tracks
                .iter()
                .find(|(k, _)| *k == play.kind)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            peer.entries.push(Entry {
                section: Section {
                    mid: play.mid.clone(),
                    kind: play.kind,
                    role: Role::Subscribe {
                        feed_id: feed_id.clone(),
                        ssrc,
                        codecs,
                        rtx_ssrc,
                    },
                },
                state: Negotiation::Active,
            });
        }
        let answer = playback.answer(
            &OfferParams {
                session_id: peer.session_id,
                version: peer.version,
                ice_ufrag: &peer.ice_ufrag,
                ice_pwd: &peer.ice_pwd,
                fingerprint: &self.relay.fingerprint(),
                candidate: peer.candidate,
                tcp_candidate: peer.tcp_candidate,
                repair: self.repair,
                data_mid: None,
            },
            &feed_id,
            &ssrcs,
        );
        let Some(resource) = self.http_peer_joined(sid, &uid, peer) else {
            let _ = reply.send(Err((ErrorCode::Relay, "the session ended".into())));
            return;
        };
        tracing::info!(%sid, %uid, %feed_id, "WHEP player playing");
        if reply.send(Ok(Created { resource, answer })).is_err() {
            self.leave_with(sid, &uid, None, None);
        }
    }
}
