//! Messages in and out of the connections: decoding, dispatch, replies, events.

use serde_json::json;
use tokio::sync::mpsc;

use crate::protocol::{self, ErrorCode, Event, Request, ServerMessage};

use super::jobs::RoomInput;
use super::*;

impl Hub {
    pub(super) fn send(&self, conn: ConnId, msg: ServerMessage) {
        if let ServerMessage::Reply {
            error: Some(error), ..
        } = &msg
        {
            let code = serde_json::to_value(error.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *self.counters.borrow_mut().errors.entry(code).or_default() += 1;
        }
        if let Some(c) = self.conns.get(&conn) {
            self.queue(conn, c, msg.to_text());
        }
    }

    /// Queue a message without waiting: a full queue marks the connection slow.
    pub(super) fn queue(&self, conn: ConnId, c: &Conn, text: String) {
        if c.close.is_none() {
            return; // being closed
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(text) {
            self.slow.borrow_mut().push(conn);
        }
    }

    pub(super) fn send_to_peer(&self, sid: &str, uid: &str, msg: &ServerMessage) {
        let conn = self
            .rooms
            .get(sid)
            .and_then(|r| r.peers.get(uid))
            .and_then(|p| p.conn);
        if let Some((conn, c)) = conn.and_then(|id| Some((id, self.conns.get(&id)?))) {
            self.queue(conn, c, msg.to_text());
        }
    }

    pub(super) fn broadcast(&self, sid: &str, except: &str, event: Event) {
        let msg = ServerMessage::Event(event);
        if let Some(room) = self.rooms.get(sid) {
            for uid in room.peers.keys().filter(|u| *u != except) {
                self.send_to_peer(sid, uid, &msg);
            }
        }
    }

    /// Tell every page of `sid` who started or stopped speaking and who the dominant
    /// speaker is now, and the relay which video feeds are the dominant speaker's (they come
    /// right after screen shares where a subscriber's link cannot carry every video).
    pub(super) fn tell_speakers(&mut self, sid: &str, changes: Vec<super::speakers::Change>) {
        use super::speakers::Change;
        for change in changes {
            let event = match change {
                Change::Speaking { uid, speaking } => Event::Speaking { uid, speaking },
                Change::ActiveSpeaker { uid } => {
                    let feeds: Vec<FeedId> = self
                        .rooms
                        .get(sid)
                        .map(|room| {
                            room.feeds
                                .iter()
                                .filter(|(_, f)| Some(&f.owner) == uid.as_ref())
                                .filter(|(_, f)| f.tracks.iter().any(|t| t.kind == Kind::Video))
                                .map(|(id, _)| relay_feed(id, Kind::Video))
                                .collect()
                        })
                        .unwrap_or_default();
                    self.room_input(sid, RoomInput::SpeakerFeeds(feeds));
                    Event::ActiveSpeaker { uid }
                }
            };
            self.broadcast(sid, "", event);
        }
    }

    pub(super) fn peer_mut(&mut self, sid: &str, uid: &str) -> Option<&mut Peer> {
        self.rooms.get_mut(sid)?.peers.get_mut(uid)
    }

    pub(super) fn message(&mut self, conn: ConnId, text: String) {
        if text.len() > protocol::MAX_MESSAGE {
            self.send(
                conn,
                ServerMessage::error(
                    protocol::request_id(&text),
                    ErrorCode::MessageTooLarge,
                    format!("messages are limited to {} bytes", protocol::MAX_MESSAGE),
                ),
            );
            return;
        }
        let request = match protocol::decode(&text) {
            Ok(r) => r,
            Err(reason) => {
                let id = protocol::request_id(&text);
                self.send(
                    conn,
                    ServerMessage::error(id, ErrorCode::InvalidMessage, reason),
                );
                return;
            }
        };
        let id = request.id();
        let joined = self.conns.get(&conn).and_then(|c| c.joined.clone());
        let result = match (request, joined) {
            (
                Request::Join {
                    v,
                    sid,
                    name,
                    key,
                    token,
                    resume,
                    data,
                    e2ee,
                    placed,
                    ..
                },
                None,
            ) if !self.conns.get(&conn).is_some_and(|c| c.joining) => {
                let asked = super::join::JoinAsked {
                    v,
                    name,
                    resume,
                    data,
                    e2ee,
                    placed,
                };
                self.join(conn, id, sid, key, token, asked)
            }
            (Request::Join { .. }, None) => Err((
                ErrorCode::AlreadyJoined,
                "this connection is joining already".into(),
            )),
            (Request::Ping { .. }, _) => Ok(Some(json!({}))),
            (Request::Join { .. }, Some(_)) => Err((
                ErrorCode::AlreadyJoined,
                "this connection has joined already".into(),
            )),
            (_, None) => Err((ErrorCode::NotJoined, "join a session first".into())),
            (request, Some((sid, _))) => {
                // In the session's turn: after the relay calls of its earlier requests.
                self.room_input(&sid, RoomInput::Request { conn, id, request });
                return;
            }
        };
        self.reply(conn, id, result);
    }

    pub(super) fn reply(
        &self,
        conn: ConnId,
        id: u64,
        result: Result<Option<serde_json::Value>, (ErrorCode, String)>,
    ) {
        match result {
            Ok(Some(value)) => self.send(conn, ServerMessage::ok(id, value)),
            Ok(None) => {}
            Err((code, reason)) => self.send(conn, ServerMessage::error(Some(id), code, reason)),
        }
    }

    /// The hub's figures for `/metrics`.
    pub(super) fn metrics(&self) -> crate::metrics::HubMetrics {
        let counters = self.counters.borrow();
        crate::metrics::HubMetrics {
            sessions: self.rooms.values().filter(|r| !r.peers.is_empty()).count() as u64,
            participants: self.rooms.values().map(|r| r.peers.len() as u64).sum(),
            websockets: self.conns.len() as u64,
            websockets_opened: counters.websockets_opened,
            joins: counters.joins,
            errors: counters.errors.clone(),
            db: self.accounts.latency(),
            draining: self.draining,
            webhooks: self.webhooks.counts(),
        }
    }

    /// Tell session `sid`'s client of `event` through its webhook: the session and `fields`.
    pub(super) fn webhook(&self, sid: &str, event: &str, fields: serde_json::Value) {
        let Some(room) = self.rooms.get(sid) else {
            return;
        };
        let mut body = json!({
            "session": { "sid": room.public_sid, "started_at": room.started_at },
        });
        if let (Some(b), serde_json::Value::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        self.webhooks.notify(&room.cid, event, body);
    }
}
