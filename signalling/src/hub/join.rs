//! Joining a session: the checks done on the hub, the credentials checked off it, then
//! resume or a new participant.

use std::collections::HashMap;
use std::time::Instant;

use rand::Rng;
use relay::control::ParticipantConfig;
use relay::ids::{Sid, Uid};
use serde_json::json;

use crate::accounts::Credentials;
use crate::auth::{AuthError, Identity};
use crate::protocol::{self, ErrorCode, Event, FeedInfo, ParticipantInfo, ServerMessage};

use super::*;

impl Hub {
    /// Check what a join can be checked for here, then hand its credentials to the accounts
    /// thread; the join goes on in [`Hub::finish_join`] when they come back.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join(
        &mut self,
        conn: ConnId,
        id: u64,
        v: u32,
        sid: String,
        name: Option<String>,
        key: Option<String>,
        token: Option<String>,
        resume: Option<String>,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        if v != protocol::VERSION {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported (this server speaks {})",
                    protocol::VERSION
                ),
            ));
        }
        if sid.is_empty() || sid.len() > 128 {
            return Err((
                ErrorCode::InvalidMessage,
                "sid must be 1 to 128 characters".into(),
            ));
        }
        let meta = self
            .conns
            .get(&conn)
            .map(|c| c.meta.clone())
            .ok_or((ErrorCode::NotJoined, "connection closed".to_owned()))?;
        if let Err(why) = self.limiter.check_address(Instant::now(), meta.ip) {
            return Err((ErrorCode::RateLimited, why));
        }
        if key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN)
            || token.as_ref().is_some_and(|t| t.len() > MAX_TOKEN_LEN)
        {
            return Err((
                ErrorCode::Unauthorized,
                format!("keys are at most {MAX_KEY_LEN} characters and tokens {MAX_TOKEN_LEN}"),
            ));
        }
        let credentials = match (key, token) {
            (_, Some(token)) => Credentials::Token {
                token,
                sid: sid.clone(),
            },
            (Some(key_id), None) => Credentials::Key {
                key_id,
                origin: meta.origin,
            },
            (None, None) => {
                return Err((
                    ErrorCode::Unauthorized,
                    AuthError::MissingCredentials.to_string(),
                ))
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.joining = true;
        }
        let pending = Box::new(PendingJoin {
            conn,
            id,
            sid,
            name,
            resume,
        });
        let inputs = self.inputs.clone();
        self.accounts.authenticate(credentials, move |identity| {
            // The hub may be gone (shutting down); then so is the connection.
            let _ = inputs.blocking_send(Input::Authenticated(pending, identity));
        });
        Ok(None)
    }

    /// The rest of a join once its credentials are good: resume, or create the session if
    /// need be and add the participant.
    pub(super) async fn finish_join(
        &mut self,
        pending: PendingJoin,
        identity: Identity,
    ) -> Result<Option<serde_json::Value>, (ErrorCode, String)> {
        let PendingJoin {
            conn,
            id,
            sid,
            name,
            resume,
        } = pending;
        // Limited per key, now that the key is known to be real: attempts with made-up keys
        // and other tenants' joins never count against it.
        if let Err(why) = self.limiter.check_key(Instant::now(), &identity.key_id) {
            return Err((ErrorCode::RateLimited, why));
        }
        // Session names are per client: the same name under two clients is two sessions.
        let public_sid = sid;
        let sid = format!("{}/{public_sid}", identity.cid);
        if let Some(token) = resume {
            let Some((rsid, uid)) = self.resume.get(&token).cloned() else {
                return Err((
                    ErrorCode::ResumeFailed,
                    "unknown or expired resume token".into(),
                ));
            };
            if rsid != sid {
                return Err((
                    ErrorCode::ResumeFailed,
                    "the resume token belongs to another session".into(),
                ));
            }
            let Some(peer) = self.rooms.get_mut(&sid).and_then(|r| r.peers.get_mut(&uid)) else {
                return Err((ErrorCode::ResumeFailed, "the participant has left".into()));
            };
            let old = peer.conn.replace(conn);
            peer.disconnected_at = None;
            // A half-done negotiation is offered again on the new connection.
            peer.outstanding = None;
            peer.answer_refused = false;
            for e in &mut peer.entries {
                if e.state == Negotiation::Offered {
                    e.state = Negotiation::New;
                }
            }
            if let Some(c) = old.and_then(|old| self.conns.get_mut(&old)) {
                c.joined = None;
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.joined = Some((sid.clone(), uid.clone()));
            }
            let snapshot = self.snapshot(&sid, &uid, &token);
            self.send(conn, ServerMessage::ok(id, snapshot));
            self.negotiate(&sid, &uid);
            return Ok(None);
        }

        if !self.rooms.contains_key(&sid) {
            match self
                .relay
                .create_session(Sid::from(sid.as_str()), None)
                .await
            {
                Ok(_) | Err(relay::ControlError::SessionExists { .. }) => {}
                Err(e) => return Err((ErrorCode::Relay, e.to_string())),
            }
            self.rooms.insert(
                sid.clone(),
                Room {
                    cid: identity.cid.clone(),
                    public_sid: public_sid.clone(),
                    started_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0),
                    peers: HashMap::new(),
                    feeds: HashMap::new(),
                    meter: Meter::new(Instant::now()),
                },
            );
        }
        let uid = match identity.uid {
            Some(uid)
                if self
                    .rooms
                    .get(&sid)
                    .is_some_and(|r| r.peers.contains_key(&uid)) =>
            {
                return Err((
                    ErrorCode::AlreadyJoined,
                    format!("participant {uid} is already in the session"),
                ));
            }
            Some(uid) => uid,
            None => random_id("u-"),
        };
        let name = name.or(identity.name);
        let info = self
            .relay
            .add_participant(
                &Sid::from(sid.as_str()),
                &Uid::from(uid.as_str()),
                ParticipantConfig::default(),
            )
            .await
            .map_err(|e| (ErrorCode::Relay, e.to_string()))?;
        let token = random_id("r-") + &random_id("");
        let peer = Peer {
            name: name.clone(),
            grants: identity.grants,
            conn: Some(conn),
            disconnected_at: None,
            resume_token: token.clone(),
            ice_ufrag: info.ice_ufrag,
            ice_pwd: info.ice_pwd,
            candidate: info.candidate,
            entries: Vec::new(),
            next_mid: 0,
            session_id: rand::rng().random::<u64>() >> 2,
            version: 1,
            next_offer: 1,
            outstanding: None,
            answer_refused: false,
            ice_restart: false,
        };
        let room = self.rooms.get_mut(&sid).expect("inserted above");
        room.peers.insert(uid.clone(), peer);
        room.meter.metered_until.insert(uid.clone(), Instant::now());
        room.meter.peak = room.meter.peak.max(room.peers.len() as u32);
        self.resume
            .insert(token.clone(), (sid.clone(), uid.clone()));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.joined = Some((sid.clone(), uid.clone()));
        }
        self.broadcast(
            &sid,
            &uid,
            Event::ParticipantJoined(ParticipantInfo {
                uid: uid.clone(),
                name,
            }),
        );
        Ok(Some(self.snapshot(&sid, &uid, &token)))
    }

    pub(super) fn snapshot(&self, sid: &str, uid: &str, token: &str) -> serde_json::Value {
        let room = &self.rooms[sid];
        let participants: Vec<ParticipantInfo> = room
            .peers
            .iter()
            .filter(|(u, _)| *u != uid)
            .map(|(u, p)| ParticipantInfo {
                uid: u.clone(),
                name: p.name.clone(),
            })
            .collect();
        let feeds: Vec<FeedInfo> = room
            .feeds
            .iter()
            .filter(|(_, f)| f.published && f.owner != uid)
            .map(|(id, f)| f.info(id))
            .collect();
        let public_sid = sid.split_once('/').map_or(sid, |(_, s)| s);
        json!({ "uid": uid, "sid": public_sid, "participants": participants, "feeds": feeds, "resume_token": token })
    }
}
