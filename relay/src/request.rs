//! The control vocabulary: every request a control plane makes of a relay and what each
//! answers, defined once for both paths, in-process ([`RelayHandle::execute`]) and over the
//! control API ([`crate::remote`]), and the [`Control`] trait that a control plane drives
//! either through. Two vocabularies drifted apart: the remote path lacked ICE restarts,
//! participant updates and usage, so a relay in another process could not serve a session.

use std::future::Future;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::{
    FeedDescription, ParticipantConfig, ParticipantInfo, SessionPlacement, SubscribeOptions,
    SubscriberQuality, SubscriptionInfo, View,
};
use crate::error::ControlError;
use crate::ids::{FeedId, Sid, Uid};
use crate::sfu::participant::ParticipantUsage;
use crate::stats::CoreStats;
use crate::{RecordingRequest, RelayHandle};

/// A control request: everything a control plane asks of a relay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Authenticate the connection.
    Hello {
        /// The relay's control token.
        token: String,
    },
    /// Relay-wide facts: fingerprint and core addresses.
    Info,
    /// Create a session (on `core`, or the least loaded one).
    CreateSession {
        /// The session.
        sid: Sid,
        /// Force a core.
        #[serde(default)]
        core: Option<usize>,
    },
    /// Remove a session.
    RemoveSession {
        /// The session.
        sid: Sid,
    },
    /// Add a participant.
    AddParticipant {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
        /// Its ICE ufrag and certificate fingerprint.
        #[serde(default)]
        config: ParticipantConfig,
    },
    /// Remove a participant.
    RemoveParticipant {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
    },
    /// Set a participant's ICE ufrag and certificate fingerprint (from its answer).
    UpdateParticipant {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
        /// Its ICE ufrag and certificate fingerprint now.
        config: ParticipantConfig,
    },
    /// New relay ICE credentials for a participant (an ICE restart).
    RestartIce {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
    },
    /// Declare or update a feed.
    Publish {
        /// The session.
        sid: Sid,
        /// The publisher.
        uid: Uid,
        /// The feed.
        feed: FeedDescription,
    },
    /// Remove a feed.
    Unpublish {
        /// The session.
        sid: Sid,
        /// The publisher.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
    },
    /// Subscribe to a feed.
    Subscribe {
        /// The session.
        sid: Sid,
        /// The subscriber.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
        /// How the subscriber receives it.
        #[serde(flatten)]
        options: SubscribeOptions,
    },
    /// Change a subscription to what the subscriber's answer accepted.
    UpdateSubscription {
        /// The session.
        sid: Sid,
        /// The subscriber.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
        /// How the subscriber receives it now.
        #[serde(flatten)]
        options: SubscribeOptions,
    },
    /// Ask a feed's publisher for a keyframe.
    RequestKeyframe {
        /// The session.
        sid: Sid,
        /// The feed.
        feed_id: FeedId,
    },
    /// End a subscription.
    Unsubscribe {
        /// The session.
        sid: Sid,
        /// The subscriber.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
    },
    /// How a subscriber shows a video feed.
    SetView {
        /// The session.
        sid: Sid,
        /// The subscriber.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
        /// Hidden, its size, a cap.
        #[serde(flatten)]
        view: View,
    },
    /// What a subscriber receives: its estimate and layers.
    Quality {
        /// The session.
        sid: Sid,
        /// The subscriber.
        uid: Uid,
    },
    /// The dominant speaker's video feeds.
    SetSpeakerFeeds {
        /// The session.
        sid: Sid,
        /// Its feeds.
        feeds: Vec<FeedId>,
    },
    /// Check that a recordings subdirectory can be written and has room.
    PrepareRecordings {
        /// Relative to the recordings directory.
        dir: String,
    },
    /// Record a publisher's feeds into one file.
    StartRecording {
        /// The session.
        sid: Sid,
        /// The file and its feeds.
        #[serde(flatten)]
        request: RecordingRequest,
    },
    /// Finish a recording's file.
    StopRecording {
        /// The session.
        sid: Sid,
        /// The recording.
        recording: u64,
    },
    /// Traffic counters of one participant (none if it is not on the relay).
    ParticipantUsage {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
    },
    /// Traffic counters of every participant of a session.
    SessionUsage {
        /// The session.
        sid: Sid,
    },
    /// Counters of every core.
    Stats,
}

/// Relay-wide facts for the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// `sha-256 AB:CD:…`
    pub fingerprint: String,
    /// One UDP address per core.
    pub cores: Vec<SocketAddr>,
    /// Whether it records (it has a recordings directory).
    #[serde(default)]
    pub records: bool,
}

/// What a request answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Done; nothing to tell.
    Done,
    /// [`Request::Info`].
    Info(RelayInfo),
    /// [`Request::CreateSession`]: where the session lives.
    Placement(SessionPlacement),
    /// [`Request::AddParticipant`], [`Request::RestartIce`]: what the participant's offer needs.
    Participant(ParticipantInfo),
    /// [`Request::Subscribe`].
    Subscription(SubscriptionInfo),
    /// [`Request::Quality`].
    Quality(Option<SubscriberQuality>),
    /// [`Request::StartRecording`]: the recording's id.
    Recording(u64),
    /// [`Request::ParticipantUsage`].
    Usage(Option<ParticipantUsage>),
    /// [`Request::SessionUsage`].
    SessionUsage(Vec<(Uid, ParticipantUsage)>),
    /// [`Request::Stats`].
    Stats(Vec<CoreStats>),
}

/// Which [`Reply`] a request gets: what reads a reply off the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// [`Reply::Done`].
    Done,
    /// [`Reply::Info`].
    Info,
    /// [`Reply::Placement`].
    Placement,
    /// [`Reply::Participant`].
    Participant,
    /// [`Reply::Subscription`].
    Subscription,
    /// [`Reply::Quality`].
    Quality,
    /// [`Reply::Recording`].
    Recording,
    /// [`Reply::Usage`].
    Usage,
    /// [`Reply::SessionUsage`].
    SessionUsage,
    /// [`Reply::Stats`].
    Stats,
}

impl Request {
    /// What this request answers.
    pub fn reply_kind(&self) -> ReplyKind {
        match self {
            Request::Info => ReplyKind::Info,
            Request::CreateSession { .. } => ReplyKind::Placement,
            Request::AddParticipant { .. } | Request::RestartIce { .. } => ReplyKind::Participant,
            Request::Subscribe { .. } => ReplyKind::Subscription,
            Request::Quality { .. } => ReplyKind::Quality,
            Request::StartRecording { .. } => ReplyKind::Recording,
            Request::ParticipantUsage { .. } => ReplyKind::Usage,
            Request::SessionUsage { .. } => ReplyKind::SessionUsage,
            Request::Stats => ReplyKind::Stats,
            Request::Hello { .. }
            | Request::RemoveSession { .. }
            | Request::RemoveParticipant { .. }
            | Request::UpdateParticipant { .. }
            | Request::Publish { .. }
            | Request::Unpublish { .. }
            | Request::UpdateSubscription { .. }
            | Request::RequestKeyframe { .. }
            | Request::Unsubscribe { .. }
            | Request::SetView { .. }
            | Request::SetSpeakerFeeds { .. }
            | Request::PrepareRecordings { .. }
            | Request::StopRecording { .. } => ReplyKind::Done,
        }
    }
}

impl Reply {
    /// The reply as the control API carries it (the `ok` of a reply line).
    pub fn to_value(&self) -> Value {
        let v = match self {
            Reply::Done => Ok(Value::Object(Default::default())),
            Reply::Info(i) => serde_json::to_value(i),
            Reply::Placement(p) => serde_json::to_value(p),
            Reply::Participant(p) => serde_json::to_value(p),
            Reply::Subscription(s) => serde_json::to_value(s),
            Reply::Quality(q) => serde_json::to_value(q),
            Reply::Recording(r) => serde_json::to_value(r),
            Reply::Usage(u) => serde_json::to_value(u),
            Reply::SessionUsage(u) => serde_json::to_value(u),
            Reply::Stats(s) => serde_json::to_value(s),
        };
        // Our own types, which serialise.
        v.unwrap_or(Value::Null)
    }

    /// Read a reply of `kind` from the control API's `ok` value.
    pub fn from_value(kind: ReplyKind, v: Value) -> Result<Reply, serde_json::Error> {
        Ok(match kind {
            ReplyKind::Done => Reply::Done,
            ReplyKind::Info => Reply::Info(serde_json::from_value(v)?),
            ReplyKind::Placement => Reply::Placement(serde_json::from_value(v)?),
            ReplyKind::Participant => Reply::Participant(serde_json::from_value(v)?),
            ReplyKind::Subscription => Reply::Subscription(serde_json::from_value(v)?),
            ReplyKind::Quality => Reply::Quality(serde_json::from_value(v)?),
            ReplyKind::Recording => Reply::Recording(serde_json::from_value(v)?),
            ReplyKind::Usage => Reply::Usage(serde_json::from_value(v)?),
            ReplyKind::SessionUsage => Reply::SessionUsage(serde_json::from_value(v)?),
            ReplyKind::Stats => Reply::Stats(serde_json::from_value(v)?),
        })
    }
}

impl RelayHandle {
    /// Carry out `request`: the one place the control vocabulary meets the relay, for the
    /// in-process path and the control API alike.
    pub async fn execute(&self, request: Request) -> Result<Reply, ControlError> {
        let done = |r: Result<(), ControlError>| r.map(|()| Reply::Done);
        match request {
            Request::Hello { .. } => Ok(Reply::Done),
            Request::Info => Ok(Reply::Info(RelayInfo {
                fingerprint: self.fingerprint().to_owned(),
                cores: self.core_addresses(),
                records: self.recordings_dir().is_some(),
            })),
            Request::CreateSession { sid, core } => {
                self.create_session(sid, core).await.map(Reply::Placement)
            }
            Request::RemoveSession { sid } => done(self.remove_session(&sid).await),
            Request::AddParticipant { sid, uid, config } => self
                .add_participant(&sid, &uid, config)
                .await
                .map(Reply::Participant),
            Request::RemoveParticipant { sid, uid } => {
                done(self.remove_participant(&sid, &uid).await)
            }
            Request::UpdateParticipant { sid, uid, config } => {
                done(self.update_participant(&sid, &uid, config).await)
            }
            Request::RestartIce { sid, uid } => {
                self.restart_ice(&sid, &uid).await.map(Reply::Participant)
            }
            Request::Publish { sid, uid, feed } => done(self.publish(&sid, &uid, feed).await),
            Request::Unpublish { sid, uid, feed_id } => {
                done(self.unpublish(&sid, &uid, &feed_id).await)
            }
            Request::Subscribe {
                sid,
                uid,
                feed_id,
                options,
            } => self
                .subscribe(&sid, &uid, &feed_id, options)
                .await
                .map(Reply::Subscription),
            Request::UpdateSubscription {
                sid,
                uid,
                feed_id,
                options,
            } => done(
                self.update_subscription(&sid, &uid, &feed_id, options)
                    .await,
            ),
            Request::RequestKeyframe { sid, feed_id } => {
                done(self.request_keyframe(&sid, &feed_id).await)
            }
            Request::Unsubscribe { sid, uid, feed_id } => {
                done(self.unsubscribe(&sid, &uid, &feed_id).await)
            }
            Request::SetView {
                sid,
                uid,
                feed_id,
                view,
            } => done(self.set_view(&sid, &uid, &feed_id, view).await),
            Request::Quality { sid, uid } => self.quality(&sid, &uid).await.map(Reply::Quality),
            Request::SetSpeakerFeeds { sid, feeds } => {
                done(self.set_speaker_feeds(&sid, feeds).await)
            }
            Request::PrepareRecordings { dir } => done(self.prepare_recordings(&dir)),
            Request::StartRecording { sid, request } => self
                .start_recording(&sid, request)
                .await
                .map(Reply::Recording),
            Request::StopRecording { sid, recording } => {
                done(self.stop_recording(&sid, recording).await)
            }
            Request::ParticipantUsage { sid, uid } => {
                self.participant_usage(&sid, &uid).await.map(Reply::Usage)
            }
            Request::SessionUsage { sid } => {
                self.session_usage(&sid).await.map(Reply::SessionUsage)
            }
            Request::Stats => self.stats().await.map(Reply::Stats),
        }
    }
}

/// A relay as a control plane drives it: in this process ([`RelayHandle`]) or another one
/// ([`crate::remote::Client`]). Each typed method is one [`Request`] through [`Control::call`].
pub trait Control: Send + Sync {
    /// Why a request failed: the relay's refusal, or (remote) the connection's.
    type Error: From<ControlError> + std::error::Error + Send + Sync + 'static;

    /// Carry out `request`.
    fn call(&self, request: Request) -> impl Future<Output = Result<Reply, Self::Error>> + Send;

    /// Relay-wide facts.
    fn info(&self) -> impl Future<Output = Result<RelayInfo, Self::Error>> + Send {
        async move {
            match self.call(Request::Info).await? {
                Reply::Info(i) => Ok(i),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::create_session`].
    fn create_session(
        &self,
        sid: Sid,
        core: Option<usize>,
    ) -> impl Future<Output = Result<SessionPlacement, Self::Error>> + Send {
        async move {
            match self.call(Request::CreateSession { sid, core }).await? {
                Reply::Placement(p) => Ok(p),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::add_participant`].
    fn add_participant(
        &self,
        sid: Sid,
        uid: Uid,
        config: ParticipantConfig,
    ) -> impl Future<Output = Result<ParticipantInfo, Self::Error>> + Send {
        async move {
            match self
                .call(Request::AddParticipant { sid, uid, config })
                .await?
            {
                Reply::Participant(p) => Ok(p),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::restart_ice`].
    fn restart_ice(
        &self,
        sid: Sid,
        uid: Uid,
    ) -> impl Future<Output = Result<ParticipantInfo, Self::Error>> + Send {
        async move {
            match self.call(Request::RestartIce { sid, uid }).await? {
                Reply::Participant(p) => Ok(p),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::subscribe`].
    fn subscribe(
        &self,
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
        options: SubscribeOptions,
    ) -> impl Future<Output = Result<SubscriptionInfo, Self::Error>> + Send {
        async move {
            let request = Request::Subscribe {
                sid,
                uid,
                feed_id,
                options,
            };
            match self.call(request).await? {
                Reply::Subscription(s) => Ok(s),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::quality`].
    fn quality(
        &self,
        sid: Sid,
        uid: Uid,
    ) -> impl Future<Output = Result<Option<SubscriberQuality>, Self::Error>> + Send {
        async move {
            match self.call(Request::Quality { sid, uid }).await? {
                Reply::Quality(q) => Ok(q),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::start_recording`].
    fn start_recording(
        &self,
        sid: Sid,
        request: RecordingRequest,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send {
        async move {
            match self.call(Request::StartRecording { sid, request }).await? {
                Reply::Recording(r) => Ok(r),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::participant_usage`].
    fn participant_usage(
        &self,
        sid: Sid,
        uid: Uid,
    ) -> impl Future<Output = Result<Option<ParticipantUsage>, Self::Error>> + Send {
        async move {
            match self.call(Request::ParticipantUsage { sid, uid }).await? {
                Reply::Usage(u) => Ok(u),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::session_usage`].
    fn session_usage(
        &self,
        sid: Sid,
    ) -> impl Future<Output = Result<Vec<(Uid, ParticipantUsage)>, Self::Error>> + Send {
        async move {
            match self.call(Request::SessionUsage { sid }).await? {
                Reply::SessionUsage(u) => Ok(u),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::stats`].
    fn stats(&self) -> impl Future<Output = Result<Vec<CoreStats>, Self::Error>> + Send {
        async move {
            match self.call(Request::Stats).await? {
                Reply::Stats(s) => Ok(s),
                other => Err(unexpected(other)),
            }
        }
    }

    /// See [`RelayHandle::remove_session`].
    fn remove_session(&self, sid: Sid) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::RemoveSession { sid })
    }

    /// See [`RelayHandle::remove_participant`].
    fn remove_participant(
        &self,
        sid: Sid,
        uid: Uid,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::RemoveParticipant { sid, uid })
    }

    /// See [`RelayHandle::update_participant`].
    fn update_participant(
        &self,
        sid: Sid,
        uid: Uid,
        config: ParticipantConfig,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::UpdateParticipant { sid, uid, config })
    }

    /// See [`RelayHandle::publish`].
    fn publish(
        &self,
        sid: Sid,
        uid: Uid,
        feed: FeedDescription,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::Publish { sid, uid, feed })
    }

    /// See [`RelayHandle::unpublish`].
    fn unpublish(
        &self,
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::Unpublish { sid, uid, feed_id })
    }

    /// See [`RelayHandle::update_subscription`].
    fn update_subscription(
        &self,
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
        options: SubscribeOptions,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::UpdateSubscription {
            sid,
            uid,
            feed_id,
            options,
        })
    }

    /// See [`RelayHandle::unsubscribe`].
    fn unsubscribe(
        &self,
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::Unsubscribe { sid, uid, feed_id })
    }

    /// See [`RelayHandle::request_keyframe`].
    fn request_keyframe(
        &self,
        sid: Sid,
        feed_id: FeedId,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::RequestKeyframe { sid, feed_id })
    }

    /// See [`RelayHandle::set_view`].
    fn set_view(
        &self,
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
        view: View,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::SetView {
            sid,
            uid,
            feed_id,
            view,
        })
    }

    /// See [`RelayHandle::set_speaker_feeds`].
    fn set_speaker_feeds(
        &self,
        sid: Sid,
        feeds: Vec<FeedId>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::SetSpeakerFeeds { sid, feeds })
    }

    /// See [`RelayHandle::stop_recording`].
    fn stop_recording(
        &self,
        sid: Sid,
        recording: u64,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.run(Request::StopRecording { sid, recording })
    }

    /// A request that answers nothing ([`Reply::Done`]): publish, unpublish, set a view …
    fn run(&self, request: Request) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async move {
            match self.call(request).await? {
                Reply::Done => Ok(()),
                other => Err(unexpected(other)),
            }
        }
    }
}

/// A reply of another kind than the request's: the relay and its control plane disagree on
/// the vocabulary (different versions).
fn unexpected<E: From<ControlError>>(reply: Reply) -> E {
    ControlError::UnexpectedReply {
        reply: format!("{reply:?}").chars().take(80).collect(),
    }
    .into()
}

impl Control for RelayHandle {
    type Error = ControlError;

    fn call(&self, request: Request) -> impl Future<Output = Result<Reply, ControlError>> + Send {
        self.execute(request)
    }
}
