//! Control requests on their way to a core, and how a core carries them out.

use std::time::Instant;

use tokio::sync::oneshot;

use crate::control::{
    FeedDescription, ParticipantConfig, SubscribeOptions, SubscriberQuality, SubscriptionInfo, View,
};
use crate::engine::ice_lite::IceCredentials;
use crate::error::ControlError;
use crate::ids::{FeedId, Sid, Uid};
use crate::record::timeline::Track;
use crate::sfu::cross_core::FeedRoute;
use crate::sfu::participant::ParticipantUsage;
use crate::sfu::worker::Worker;
use crate::stats::CoreStats;

/// Where a command's result goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// A control request on its way to a core.
pub(crate) enum Command {
    CreateSession {
        sid: Sid,
        reply: Reply<()>,
    },
    RemoveSession {
        sid: Sid,
        reply: Reply<()>,
    },
    AddParticipant {
        sid: Sid,
        uid: Uid,
        config: ParticipantConfig,
        reply: Reply<IceCredentials>,
    },
    RemoveParticipant {
        sid: Sid,
        uid: Uid,
        reply: Reply<()>,
    },
    UpdateParticipant {
        sid: Sid,
        uid: Uid,
        config: ParticipantConfig,
        reply: Reply<()>,
    },
    RestartIce {
        sid: Sid,
        uid: Uid,
        reply: Reply<IceCredentials>,
    },
    Publish {
        sid: Sid,
        uid: Uid,
        feed: FeedDescription,
        reply: Reply<FeedRoute>,
    },
    AddRemoteFeed {
        sid: Sid,
        feed: FeedDescription,
        route: FeedRoute,
        reply: Reply<()>,
    },
    RemoveRemoteFeed {
        route: FeedRoute,
        reply: oneshot::Sender<()>,
    },
    SetSink {
        route: FeedRoute,
        core: usize,
        on: bool,
        reply: Reply<()>,
    },
    Unpublish {
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
        reply: Reply<()>,
    },
    Subscribe {
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
        options: SubscribeOptions,
        reply: Reply<SubscriptionInfo>,
    },
    UpdateSubscription {
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
        options: SubscribeOptions,
        reply: Reply<()>,
    },
    RequestKeyframe {
        sid: Sid,
        feed_id: FeedId,
        reply: Reply<()>,
    },
    Unsubscribe {
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
        reply: Reply<()>,
    },
    IdleReplicas {
        sid: Sid,
        reply: Reply<Vec<FeedRoute>>,
    },
    Usage {
        sid: Sid,
        uid: Uid,
        reply: oneshot::Sender<Option<ParticipantUsage>>,
    },
    Stats {
        reply: oneshot::Sender<CoreStats>,
    },
    Quality {
        sid: Sid,
        uid: Uid,
        reply: oneshot::Sender<Option<SubscriberQuality>>,
    },
    SetSpeakerFeeds {
        sid: Sid,
        feeds: Vec<FeedId>,
        reply: Reply<()>,
    },
    SessionCores {
        sid: Sid,
        cores: Vec<usize>,
        reply: Reply<()>,
    },
    SetView {
        sid: Sid,
        uid: Uid,
        feed_id: FeedId,
        view: View,
        reply: Reply<()>,
    },
    SessionUsage {
        sid: Sid,
        reply: Reply<Vec<(Uid, ParticipantUsage)>>,
    },
    SetRecordTap {
        sid: Sid,
        feed_id: FeedId,
        tap: Option<(u64, Track)>,
        reply: Reply<u64>,
    },
    /// Hold the core for a while, as a large fan-out would (tests of what waits on a core).
    #[cfg(feature = "fault-injection")]
    Stall {
        duration: std::time::Duration,
        reply: oneshot::Sender<()>,
    },
    Shutdown,
}

impl Command {
    /// Run the command against a core's worker. A dropped receiver only means the caller gave
    /// up waiting.
    pub(crate) fn apply(self, w: &mut Worker, now: Instant) {
        match self {
            Command::CreateSession { sid, reply } => {
                let _ = reply.send(w.create_session(sid));
            }
            Command::RemoveSession { sid, reply } => {
                let _ = reply.send(w.remove_session(&sid));
            }
            Command::AddParticipant {
                sid,
                uid,
                config,
                reply,
            } => {
                let _ = reply.send(w.add_participant(&sid, uid, config));
            }
            Command::RemoveParticipant { sid, uid, reply } => {
                let _ = reply.send(w.remove_participant(&sid, &uid));
            }
            Command::RestartIce { sid, uid, reply } => {
                let _ = reply.send(w.restart_ice(&sid, &uid));
            }
            Command::UpdateParticipant {
                sid,
                uid,
                config,
                reply,
            } => {
                let _ = reply.send(w.update_participant(&sid, &uid, config));
            }
            Command::Publish {
                sid,
                uid,
                feed,
                reply,
            } => {
                let _ = reply.send(w.publish(&sid, &uid, feed));
            }
            Command::AddRemoteFeed {
                sid,
                feed,
                route,
                reply,
            } => {
                let _ = reply.send(w.add_remote_feed(&sid, feed, route));
            }
            Command::RemoveRemoteFeed { route, reply } => {
                w.remove_remote_feed(route);
                let _ = reply.send(());
            }
            Command::SetSink {
                route,
                core,
                on,
                reply,
            } => {
                let _ = reply.send(w.set_sink(route, core, on));
            }
            Command::Unpublish {
                sid,
                uid,
                feed_id,
                reply,
            } => {
                let _ = reply.send(w.unpublish(&sid, &uid, &feed_id));
            }
            Command::Subscribe {
                sid,
                uid,
                feed_id,
                options,
                reply,
            } => {
                let _ = reply.send(w.subscribe(now, &sid, &uid, &feed_id, options));
            }
            Command::UpdateSubscription {
                sid,
                uid,
                feed_id,
                options,
                reply,
            } => {
                let _ = reply.send(w.update_subscription(&sid, &uid, &feed_id, options));
            }
            Command::RequestKeyframe {
                sid,
                feed_id,
                reply,
            } => {
                let _ = reply.send(w.request_keyframe(now, &sid, &feed_id));
            }
            Command::Unsubscribe {
                sid,
                uid,
                feed_id,
                reply,
            } => {
                let _ = reply.send(w.unsubscribe(&sid, &uid, &feed_id));
            }
            Command::IdleReplicas { sid, reply } => {
                let _ = reply.send(w.idle_replicas(&sid));
            }
            Command::Usage { sid, uid, reply } => {
                let _ = reply.send(w.participant_usage(&sid, &uid));
            }
            Command::SessionUsage { sid, reply } => {
                let _ = reply.send(w.session_usage(&sid));
            }
            Command::Stats { reply } => {
                let mut stats = w.stats();
                // This runs on the core's own thread: its CPU clock is the core's.
                if let Ok(t) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
                {
                    stats.cpu_time_us = t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000;
                }
                let _ = reply.send(stats);
            }
            Command::Quality { sid, uid, reply } => {
                let _ = reply.send(w.quality(&sid, &uid));
            }
            Command::SetSpeakerFeeds { sid, feeds, reply } => {
                let _ = reply.send(w.set_speaker_feeds(&sid, feeds));
            }
            Command::SessionCores { sid, cores, reply } => {
                let _ = reply.send(w.set_session_cores(&sid, &cores));
            }
            Command::SetView {
                sid,
                uid,
                feed_id,
                view,
                reply,
            } => {
                let _ = reply.send(w.set_view(now, &sid, &uid, &feed_id, view));
            }
            Command::SetRecordTap {
                sid,
                feed_id,
                tap,
                reply,
            } => {
                let _ = reply.send(w.set_record_tap(now, &sid, &feed_id, tap));
            }
            #[cfg(feature = "fault-injection")]
            Command::Stall { duration, reply } => {
                std::thread::sleep(duration);
                let _ = reply.send(());
            }
            Command::Shutdown => {}
        }
    }
}
