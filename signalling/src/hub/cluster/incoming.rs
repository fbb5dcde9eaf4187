//! What the other nodes tell of a session: their participants and feeds, imported through the
//! edge, in the session's turn where an import may be under way.

use super::*;

impl Hub {
    /// What `sid` has on other live nodes, for a node new to it: read from Redis in the join's
    /// job, after the relay has the session, with the feeds imported through the edge.
    pub(in crate::hub) fn load_remote(
        &self,
        sid: &str,
    ) -> Option<impl Future<Output = RemoteState> + Send> {
        let link = self.cluster.as_ref()?;
        let (directory, edge, me) = (link.directory.clone(), link.edge.clone(), link.node.clone());
        let sid = sid.to_owned();
        Some(async move {
            let read = async {
                let started_at = directory
                    .session_started(&sid, super::recording::unix_now())
                    .await?;
                let alive = directory.nodes().await?;
                let members = directory.members(&sid).await?;
                let feeds = directory.feeds(&sid).await?;
                Ok::<_, crate::cluster::ClusterError>((started_at, alive, members, feeds))
            };
            let (started_at, alive, members, feeds) = match read.await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%sid, error = %e, "the session's other nodes are not known yet");
                    return RemoteState::default();
                }
            };
            let elsewhere = |node: &str| node != me && alive.iter().any(|n| n.id == node);
            let mut state = RemoteState {
                started_at: Some(started_at),
                ..Default::default()
            };
            for (uid, json) in members {
                match serde_json::from_str::<MemberRecord>(&json) {
                    Ok(m) if elsewhere(&m.node) => state.members.push((uid, m)),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%sid, %uid, error = %e, "unreadable member record"),
                }
            }
            let rsid = Sid::from(sid.as_str());
            for (feed_id, json) in feeds {
                let f = match serde_json::from_str::<FeedRecord>(&json) {
                    Ok(f) if elsewhere(&f.node) => f,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(%sid, %feed_id, error = %e, "unreadable feed record");
                        continue;
                    }
                };
                let peer = PeerNode {
                    node: f.node.clone(),
                    addr: f.edge,
                };
                let uid = Uid::from(f.info.uid.as_str());
                let mut imported = true;
                for t in &f.tracks {
                    if let Err(e) = edge
                        .import(peer.clone(), &rsid, &uid, t.description.clone())
                        .await
                    {
                        tracing::warn!(%sid, %feed_id, error = %e, "a feed of another node was not imported");
                        imported = false;
                    }
                }
                if imported {
                    state.feeds.push(f);
                }
            }
            state
        })
    }

    /// Take in what a node new to `sid` found of it on other nodes.
    pub(in crate::hub) fn apply_remote(&mut self, sid: &str, state: RemoteState) {
        self.apply_remote_state(sid, state);
        self.sync_data_peers(sid);
    }

    pub(super) fn apply_remote_state(&mut self, sid: &str, state: RemoteState) {
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        for (uid, m) in state.members {
            if !room.peers.contains_key(&uid) {
                room.remote.insert(
                    uid,
                    RemotePeer {
                        name: m.name,
                        node: m.node,
                        gone_since: None,
                        heard_at: Instant::now(),
                        quality: None,
                    },
                );
            }
        }
        for f in state.feeds {
            let feed_id = f.info.feed_id.clone();
            room.feeds.entry(feed_id).or_insert_with(|| Feed {
                owner: f.info.uid.clone(),
                source: f.info.source,
                tracks: remote_tracks(&f.info, &f.tracks),
                published: true,
                origin: Some(Origin {
                    node: f.node,
                    edge: f.edge,
                }),
            });
        }
    }

    /// Another node told of a change to a session this node follows.
    pub(in crate::hub) fn cluster_event(&mut self, envelope: Envelope<SessionEvent>) {
        let sid = envelope.sid.clone();
        self.handle_cluster_event(envelope);
        self.sync_data_peers(&sid);
    }

    pub(super) fn handle_cluster_event(&mut self, envelope: Envelope<SessionEvent>) {
        let Envelope { from, sid, event } = envelope;
        let Some(room) = self.rooms.get_mut(&sid) else {
            return;
        };
        match event {
            SessionEvent::Sync => self.say_again(&sid),
            SessionEvent::Joined { uid, name } => {
                if let Some(peer) = room.peers.get_mut(&uid) {
                    // One of this node's participants, joined again through that node: its
                    // page lost this one (a network that failed for a while). It goes from
                    // here now if its websocket or media connection here is gone, else as
                    // soon as one is seen to end (the page has left it).
                    if peer.conn.is_none() || peer.dropped.is_some() {
                        self.room_input(&sid, jobs::RoomInput::MovedAway { uid, node: from });
                    } else {
                        peer.claimed_by = Some(from);
                    }
                    return;
                }
                if let Some(peer) = room.remote.get_mut(&uid) {
                    // Back on another node after its own stopped: a reconnect, not a join.
                    let back = peer.gone_since.take().is_some();
                    peer.heard_at = Instant::now();
                    let moved = peer.node != from;
                    if moved {
                        // What its old node said of it (speech, quality) no longer holds.
                        peer.quality = None;
                    }
                    peer.node = from;
                    let quiet = if moved {
                        room.speakers.remove(Instant::now(), &uid)
                    } else {
                        Vec::new()
                    };
                    self.tell_speakers(&sid, quiet);
                    if back {
                        self.broadcast(
                            &sid,
                            &uid,
                            Event::ParticipantReconnected { uid: uid.clone() },
                        );
                    }
                    return;
                }
                room.remote.insert(
                    uid.clone(),
                    RemotePeer {
                        name: name.clone(),
                        node: from,
                        gone_since: None,
                        heard_at: Instant::now(),
                        quality: None,
                    },
                );
                room.meter.peak = room
                    .meter
                    .peak
                    .max((room.peers.len() + room.remote.len()) as u32);
                self.broadcast(
                    &sid,
                    &uid,
                    Event::ParticipantJoined(ParticipantInfo {
                        uid: uid.clone(),
                        name,
                        quality: None,
                    }),
                );
            }
            SessionEvent::Left { uid } => self.remote_left(&sid, &uid, &from),
            SessionEvent::Quality { uid, quality } => {
                let Some(p) = room
                    .remote
                    .get_mut(&uid)
                    .filter(|p| p.node == from && p.present())
                else {
                    return;
                };
                p.quality = Some(quality);
                self.broadcast(
                    &sid,
                    &uid,
                    Event::ConnectionQuality {
                        uid: uid.clone(),
                        quality,
                    },
                );
            }
            SessionEvent::Speech {
                uid,
                speaking,
                loudness,
            } => {
                if !room
                    .remote
                    .get(&uid)
                    .is_some_and(|p| p.node == from && p.present())
                {
                    return;
                }
                let changes = room
                    .speakers
                    .handle_report(Instant::now(), &uid, speaking, loudness);
                self.tell_speakers(&sid, changes);
            }
            SessionEvent::Roster { members, feeds } => {
                // In its turn: a feed of that node whose import waits for the session's job
                // is among what the roster may take away.
                let input = jobs::RoomInput::Roster {
                    from,
                    members,
                    feeds,
                    at: Instant::now(),
                };
                self.room_input(&sid, input);
            }
            SessionEvent::FeedPublished { info, tracks, edge } => {
                match room.feeds.get(&info.feed_id).map(|f| f.origin.as_ref()) {
                    // Published again through another node (its publisher moved): the old
                    // one goes first.
                    Some(Some(o)) if o.node != from => {
                        let stale = vec![info.feed_id.clone()];
                        let node = Some(o.node.clone());
                        self.room_input(&sid, jobs::RoomInput::RemoteUnpublished(stale, node));
                    }
                    Some(_) => return,
                    None => {}
                }
                let origin = Origin { node: from, edge };
                self.room_input(
                    &sid,
                    jobs::RoomInput::RemoteFeed(Box::new((info, tracks, origin))),
                );
            }
            SessionEvent::FeedMuted {
                feed_id,
                kind,
                muted,
            } => {
                // In its turn: an import of the feed may be waiting for the session's job.
                let input = jobs::RoomInput::RemoteMuted {
                    feed_id,
                    kind,
                    muted,
                    from,
                };
                self.room_input(&sid, input);
            }
            SessionEvent::FeedUnpublished { feed_id } => {
                // In its turn: an import of the feed may be waiting for the session's job.
                let input = jobs::RoomInput::RemoteUnpublished(vec![feed_id], Some(from));
                self.room_input(&sid, input);
            }
        }
    }

    /// Node `from`'s roster of `sid` (everything it has of the session): what this node
    /// holds of it beyond that went while this node could not hear, and goes now; its
    /// tracks are muted or not as the roster says.
    pub(in crate::hub) fn apply_roster(
        &mut self,
        sid: &str,
        from: String,
        members: Vec<String>,
        feeds: Vec<(String, Vec<String>)>,
        at: Instant,
    ) {
        let Some(room) = self.rooms.get(sid) else {
            return;
        };
        let left: Vec<String> = room
            .remote
            .iter()
            .filter(|(uid, p)| {
                // One heard joining after the roster came is newer than the roster.
                p.node == from
                    && p.gone_since.is_none()
                    && p.heard_at < at
                    && !members.contains(uid)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        let unpublished: Vec<String> = room
            .feeds
            .iter()
            .filter(|(id, f)| {
                f.origin.as_ref().is_some_and(|o| o.node == from)
                    && !feeds.iter().any(|(f, _)| f == *id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !left.is_empty() || !unpublished.is_empty() {
            tracing::info!(%sid, node = %from, ?left, ?unpublished, "repaired from a node's roster");
        }
        for uid in left {
            self.remote_left(sid, &uid, &from);
        }
        if !unpublished.is_empty() {
            let input = jobs::RoomInput::RemoteUnpublished(unpublished, Some(from.clone()));
            self.room_input(sid, input);
        }
        for (feed_id, muted) in feeds {
            for kind in ["audio", "video"] {
                let input = jobs::RoomInput::RemoteMuted {
                    feed_id: feed_id.clone(),
                    kind: kind.to_owned(),
                    muted: muted.iter().any(|m| m == kind),
                    from: from.clone(),
                };
                self.room_input(sid, input);
            }
        }
        self.sync_data_peers(sid);
    }

    /// A participant of node `from` left: its feeds go, and the others here are told.
    pub(super) fn remote_left(&mut self, sid: &str, uid: &str, from: &str) {
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        if room.remote.get(uid).is_none_or(|p| p.node != from) {
            return;
        }
        room.remote.remove(uid);
        let quiet = room.speakers.remove(Instant::now(), uid);
        let owned: Vec<String> = room
            .feeds
            .iter()
            .filter(|(_, f)| f.owner == uid && f.origin.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let input = jobs::RoomInput::RemoteUnpublished(owned, Some(from.to_owned()));
        self.room_input(sid, input);
        let uid = uid.to_owned();
        self.broadcast(sid, &uid, Event::ParticipantLeft { uid: uid.clone() });
        self.tell_speakers(sid, quiet);
    }

    /// Take a feed of another node: the relay gets a replica of each track through the edge,
    /// then this node's participants are told it is there.
    pub(in crate::hub) fn import_feed(
        &mut self,
        sid: &str,
        info: FeedInfo,
        tracks: Vec<RemoteTrack>,
        origin: Origin,
    ) {
        let Some(link) = &self.cluster else {
            return;
        };
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        if room.feeds.contains_key(&info.feed_id) || tracks.is_empty() {
            return;
        }
        room.feeds.insert(
            info.feed_id.clone(),
            Feed {
                owner: info.uid.clone(),
                source: info.source,
                tracks: remote_tracks(&info, &tracks),
                published: false,
                origin: Some(origin.clone()),
            },
        );
        let edge = link.edge.clone();
        let peer = PeerNode {
            node: origin.node,
            addr: origin.edge,
        };
        let (rsid, ruid) = (Sid::from(sid), Uid::from(info.uid.as_str()));
        let sid = sid.to_owned();
        let feed_id = info.feed_id.clone();
        self.spawn_job(
            &sid.clone(),
            async move {
                for t in tracks {
                    edge.import(peer.clone(), &rsid, &ruid, t.description).await?;
                }
                Ok::<_, edge::EdgeError>(())
            },
            move |hub, imported| {
                if let Err(e) = imported {
                    tracing::warn!(%sid, %feed_id, error = %e, "a feed of another node was not imported");
                    hub.unpublish(&sid, &[feed_id]);
                    return;
                }
                let Some(feed) = hub.rooms.get_mut(&sid).and_then(|r| r.feeds.get_mut(&feed_id))
                else {
                    return;
                };
                feed.published = true;
                let info = feed.info(&feed_id);
                let owner = feed.owner.clone();
                hub.broadcast(&sid, &owner, Event::FeedPublished(info));
            },
        );
    }

    /// A track of a feed of node `from` was muted or unmuted: the others here are told.
    pub(in crate::hub) fn remote_muted(
        &mut self,
        sid: &str,
        feed_id: String,
        kind: String,
        muted: bool,
        from: &str,
    ) {
        let Some(feed) = self
            .rooms
            .get_mut(sid)
            .and_then(|r| r.feeds.get_mut(&feed_id))
            .filter(|f| f.origin.as_ref().is_some_and(|o| o.node == from))
        else {
            return;
        };
        let Some(track) = feed.tracks.iter_mut().find(|t| t.kind.as_str() == kind) else {
            return;
        };
        if track.muted == muted {
            return;
        }
        track.muted = muted;
        let (uid, published) = (feed.owner.clone(), feed.published);
        if published {
            let event = if muted {
                Event::FeedMuted {
                    feed_id,
                    uid: uid.clone(),
                    kind,
                }
            } else {
                Event::FeedUnmuted {
                    feed_id,
                    uid: uid.clone(),
                    kind,
                }
            };
            self.broadcast(sid, &uid, event);
        }
    }

    /// Of `feed_ids`, those that came from `node` (all of them for None).
    pub(in crate::hub) fn feeds_of_origin(
        &self,
        sid: &str,
        feed_ids: Vec<String>,
        node: Option<&str>,
    ) -> Vec<String> {
        let Some(room) = self.rooms.get(sid) else {
            return Vec::new();
        };
        feed_ids
            .into_iter()
            .filter(|id| {
                room.feeds.get(id).is_some_and(|f| match node {
                    Some(n) => f.origin.as_ref().is_some_and(|o| o.node == n),
                    None => true,
                })
            })
            .collect()
    }

    /// A participant that went from this node to `node`: the others here see it there, and
    /// the feeds it publishes there (announced perhaps while it was still here) are asked for
    /// again.
    pub(in crate::hub) fn now_remote(
        &mut self,
        sid: &str,
        uid: &str,
        node: &str,
        name: Option<String>,
    ) {
        self.follow_session(sid);
        let Some(room) = self.rooms.get_mut(sid) else {
            return;
        };
        room.remote.insert(
            uid.to_owned(),
            RemotePeer {
                name,
                node: node.to_owned(),
                quality: None,
                gone_since: None,
                heard_at: Instant::now(),
            },
        );
        self.sync_data_peers(sid);
    }
}
