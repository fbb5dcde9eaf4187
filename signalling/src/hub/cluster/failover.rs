//! A node that stops: its participants reconnect elsewhere or leave, and a page that moved
//! here is taken back under its old uid.

use super::*;

impl Hub {
    /// Node `node` stopped: its participants in this node's sessions are reconnecting (the
    /// others here are told, and they leave if not back within [`RESUME_WINDOW`]), its feeds
    /// go, and its records of these sessions are removed from Redis.
    pub(in crate::hub) fn node_gone(&mut self, node: &str) {
        self.mark_node_gone(node);
        self.sync_all_data_peers();
    }

    pub(super) fn mark_node_gone(&mut self, node: &str) {
        let now = Instant::now();
        let sids: Vec<String> = self.rooms.keys().cloned().collect();
        for sid in sids {
            let Some(room) = self.rooms.get_mut(&sid) else {
                continue;
            };
            let mut reconnecting = Vec::new();
            for (uid, p) in room.remote.iter_mut() {
                if p.node == node && p.gone_since.is_none() {
                    p.gone_since = Some(now);
                    reconnecting.push(uid.clone());
                }
            }
            let feeds: Vec<String> = room
                .feeds
                .iter()
                .filter(|(_, f)| f.origin.as_ref().is_some_and(|o| o.node == node))
                .map(|(id, _)| id.clone())
                .collect();
            // They no longer speak here until they are back.
            let quiet: Vec<_> = reconnecting
                .iter()
                .flat_map(|uid| room.speakers.remove(now, uid))
                .collect();
            self.tell_speakers(&sid, quiet);
            for uid in reconnecting {
                self.broadcast(
                    &sid,
                    &uid,
                    Event::ParticipantReconnecting { uid: uid.clone() },
                );
            }
            if !feeds.is_empty() {
                let input = jobs::RoomInput::RemoteUnpublished(feeds, Some(node.to_owned()));
                self.room_input(&sid, input);
            }
            if let Some(link) = &self.cluster {
                let directory = link.directory.clone();
                let (sid, node) = (sid.clone(), node.to_owned());
                let _ = link.writes.send(Box::pin(async move {
                    if let Err(e) = directory.remove_node_records(&sid, &node).await {
                        tracing::warn!(%sid, %node, error = %e, "a gone node's records stay");
                    }
                }));
            }
        }
    }

    /// Participants of stopped nodes not back within [`RESUME_WINDOW`] leave.
    pub(in crate::hub) fn expire_remote(&mut self, now: Instant) {
        let mut left = Vec::new();
        for (sid, room) in &mut self.rooms {
            room.remote.retain(|uid, p| {
                let expired = p
                    .gone_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= RESUME_WINDOW);
                if expired {
                    left.push((sid.clone(), uid.clone()));
                }
                !expired
            });
        }
        for (sid, uid) in left {
            self.broadcast(&sid, &uid, Event::ParticipantLeft { uid: uid.clone() });
        }
    }

    /// A join with a resume token this node does not know: look for it in Redis (its
    /// participant's node stopped, and the page moved here). Found, the participant joins
    /// again under its old uid; the job answers the join either way.
    pub(in crate::hub) fn find_rejoin(
        &mut self,
        sid: &str,
        pending: PendingJoin,
        identity: crate::auth::Identity,
        token: String,
    ) -> Option<serde_json::Value> {
        let directory = self.cluster.as_ref()?.directory.clone();
        let sid = sid.to_owned();
        self.spawn_job(
            &sid.clone(),
            {
                let token = token.clone();
                async move { directory.resume(&token).await }
            },
            move |hub, found| {
                let (conn, id) = (pending.conn, pending.id);
                let result = match found {
                    Ok(Some((s, uid))) if s == sid => {
                        let mut pending = pending;
                        pending.resume = None;
                        pending.rejoin = Some(token);
                        let mut identity = identity;
                        identity.uid = Some(uid);
                        hub.join_session(&sid, pending, identity)
                    }
                    Ok(Some(_)) => Err((
                        ErrorCode::ResumeFailed,
                        "the resume token belongs to another session".into(),
                    )),
                    Ok(None) => Err((
                        ErrorCode::ResumeFailed,
                        "unknown or expired resume token".into(),
                    )),
                    // Not a refusal: the page tries again.
                    Err(e) => Err((
                        ErrorCode::Relay,
                        format!("the cluster could not be asked for the resume token: {e}"),
                    )),
                };
                if !(matches!(result, Ok(None)) && hub.busy(&sid)) {
                    joining_over(&mut hub.conns, conn);
                }
                hub.reply(conn, id, result);
            },
        );
        None
    }
}
