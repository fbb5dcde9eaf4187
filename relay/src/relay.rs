//! Starting the relay's cores and talking to them: [`Relay`] owns the threads, [`RelayHandle`]
//! is the control plane's in-process client.
//!
//! A command travels through the owning core's crossbeam channel and the core's `Notify` wakes
//! its runtime; the reply comes back on a oneshot channel, so callers on any runtime can await
//! it without blocking a core.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::control::{
    Event, FeedDescription, ParticipantConfig, ParticipantInfo, SessionPlacement, SubscribeOptions,
    SubscriptionInfo,
};
use crate::engine::ice_lite::IceCredentials;
use crate::error::{ControlError, Error};
use crate::ids::{FeedId, Sid, Uid};
use crate::io::core::{self, CoreSetup};
use crate::io::{dtls, socket, Egress};
use crate::sfu::participant::ParticipantUsage;
use crate::sfu::worker::{Worker, WorkerConfig};
use crate::stats::CoreStats;

/// How a relay process runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address the cores' sockets bind to.
    pub bind: IpAddr,
    /// Port of core 0; core `i` uses `port + i`. 0 lets the OS pick each port.
    pub port: u16,
    /// Number of cores (threads); 0 means one per available CPU.
    pub cores: usize,
    /// Pin each core's thread to a CPU.
    pub pin: bool,
    /// The address put in ICE candidates; required when `bind` is unspecified (0.0.0.0).
    pub advertise: Option<IpAddr>,
    /// RFC 7675 consent timeout.
    pub consent_timeout: Duration,
    /// DTLS handshakes still running after this are abandoned.
    pub dtls_handshake_timeout: Duration,
    /// DTLS handshakes allowed in flight per core.
    pub max_handshakes_per_core: usize,
    /// How cores hand datagrams to the kernel.
    pub egress: Egress,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let w = WorkerConfig::default();
        RelayConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            cores: 0,
            pin: true,
            advertise: None,
            consent_timeout: w.consent_timeout,
            dtls_handshake_timeout: w.dtls_handshake_timeout,
            max_handshakes_per_core: w.max_handshakes,
            egress: Egress::default(),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

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
    Usage {
        sid: Sid,
        uid: Uid,
        reply: oneshot::Sender<Option<ParticipantUsage>>,
    },
    Stats {
        reply: oneshot::Sender<CoreStats>,
    },
    SessionUsage {
        sid: Sid,
        reply: Reply<Vec<(Uid, ParticipantUsage)>>,
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
            Command::Usage { sid, uid, reply } => {
                let _ = reply.send(w.participant_usage(&sid, &uid));
            }
            Command::SessionUsage { sid, reply } => {
                let _ = reply.send(w.session_usage(&sid));
            }
            Command::Stats { reply } => {
                let _ = reply.send(w.stats());
            }
            Command::Shutdown => {}
        }
    }
}

struct CoreLink {
    commands: Sender<Command>,
    notify: Arc<Notify>,
    address: SocketAddr,
}

struct Inner {
    cores: Vec<CoreLink>,
    fingerprint: String,
    advertise: IpAddr,
    /// Which core owns each session. Control-plane state only: never touched by packets.
    placement: Mutex<HashMap<Sid, usize>>,
    /// Each core's packet counter when placement last looked, to turn it into a rate.
    load_samples: Mutex<Vec<Option<(Instant, u64)>>>,
}

/// The control plane's handle to a running relay. Cheap to clone; usable from any thread or
/// runtime.
#[derive(Clone)]
pub struct RelayHandle {
    inner: Arc<Inner>,
}

/// A running relay: its core threads and its event stream.
pub struct Relay {
    handle: RelayHandle,
    threads: Vec<JoinHandle<()>>,
    events: Option<mpsc::Receiver<Event>>,
}

impl Relay {
    /// Bind every core's socket, generate the DTLS certificate and start the cores.
    pub fn start(config: RelayConfig) -> Result<Relay, Error> {
        let cpus = core_affinity::get_core_ids().unwrap_or_default();
        let cores = match config.cores {
            0 => cpus.len().max(1),
            n => n,
        };
        let advertise = match (config.advertise, config.bind.is_unspecified()) {
            (Some(ip), _) => ip,
            (None, false) => config.bind,
            (None, true) => {
                return Err(Error::Config(
                    "binding to an unspecified address needs an advertised address".into(),
                ))
            }
        };
        let certificate = dtls::generate_certificate().map_err(Error::Certificate)?;
        let fingerprint = dtls::fingerprint(certificate.certificate[0].as_ref());
        let (events_tx, events_rx) = mpsc::channel(65_536);

        let mut links = Vec::with_capacity(cores);
        let mut threads = Vec::with_capacity(cores);
        for index in 0..cores {
            let port = match config.port {
                0 => 0,
                p => p
                    .checked_add(index as u16)
                    .ok_or_else(|| Error::Config(format!("port {p} + {index} cores overflows")))?,
            };
            let addr = SocketAddr::new(config.bind, port);
            let sock = socket::bind(addr).map_err(|source| Error::Socket {
                core: index,
                addr,
                source,
            })?;
            let local = sock.local_addr().map_err(|source| Error::Socket {
                core: index,
                addr,
                source,
            })?;
            let (tx, rx) = crossbeam_channel::unbounded();
            let notify = Arc::new(Notify::new());
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let setup = CoreSetup {
                socket: sock,
                commands: rx,
                notify: notify.clone(),
                events: events_tx.clone(),
                certificate: certificate.clone(),
                worker: WorkerConfig {
                    core: index,
                    consent_timeout: config.consent_timeout,
                    dtls_handshake_timeout: config.dtls_handshake_timeout,
                    max_handshakes: config.max_handshakes_per_core,
                    ..WorkerConfig::default()
                },
                egress: config.egress,
                pin: if config.pin && !cpus.is_empty() {
                    Some(cpus[index % cpus.len()])
                } else {
                    None
                },
                ready: ready_tx,
            };
            let thread = std::thread::Builder::new()
                .name(format!("relay-core-{index}"))
                .spawn(move || core::run(setup))
                .map_err(|source| Error::Thread {
                    core: index,
                    source,
                })?;
            ready_rx
                .recv()
                .map_err(|_| Error::CoreStart { core: index })?;
            threads.push(thread);
            links.push(CoreLink {
                commands: tx,
                notify,
                address: SocketAddr::new(advertise, local.port()),
            });
        }
        Ok(Relay {
            handle: RelayHandle {
                inner: Arc::new(Inner {
                    cores: links,
                    fingerprint,
                    advertise,
                    placement: Mutex::new(HashMap::new()),
                    load_samples: Mutex::new(vec![None; cores]),
                }),
            },
            threads,
            events: Some(events_rx),
        })
    }

    /// The control handle.
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// The stream of relay events; can be taken once.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<Event>> {
        self.events.take()
    }

    /// Stop every core and wait for its thread. Call from outside the cores' runtimes.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for core in &self.handle.inner.cores {
            let _ = core.commands.send(Command::Shutdown);
            core.notify.notify_one();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

impl RelayHandle {
    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.inner.cores.len()
    }

    /// The relay's DTLS certificate fingerprint (`sha-256 AB:CD:…`).
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// The UDP address of each core, as advertised in candidates.
    pub fn core_addresses(&self) -> Vec<SocketAddr> {
        self.inner.cores.iter().map(|c| c.address).collect()
    }

    /// The address put into candidates.
    pub fn advertised_ip(&self) -> IpAddr {
        self.inner.advertise
    }

    async fn call<T>(
        &self,
        core: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ControlError> {
        let link = self
            .inner
            .cores
            .get(core)
            .ok_or(ControlError::CoreGone { core })?;
        let (tx, rx) = oneshot::channel();
        link.commands
            .send(make(tx))
            .map_err(|_| ControlError::CoreGone { core })?;
        link.notify.notify_one();
        rx.await.map_err(|_| ControlError::CoreGone { core })
    }

    fn core_of(&self, sid: &Sid) -> Result<usize, ControlError> {
        self.placement()
            .get(sid)
            .copied()
            .ok_or_else(|| ControlError::NoSuchSession { sid: sid.clone() })
    }

    fn placement(&self) -> std::sync::MutexGuard<'_, HashMap<Sid, usize>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The core a new session should go to: the fewest participants, then the lowest packet
    /// rate since the last placement, then the fewest sessions.
    async fn least_loaded_core(&self) -> usize {
        let Ok(stats) = self.stats().await else {
            return 0;
        };
        let now = Instant::now();
        let mut samples = self
            .inner
            .load_samples
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut best = (u64::MAX, u64::MAX, u64::MAX, 0);
        for s in &stats {
            let rate = match samples.get(s.core).copied().flatten() {
                Some((at, packets)) => {
                    let secs = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
                    (s.packets_in.saturating_sub(packets) as f64 / secs) as u64
                }
                None => 0,
            };
            if let Some(slot) = samples.get_mut(s.core) {
                *slot = Some((now, s.packets_in));
            }
            let key = (s.participants, rate, s.sessions, s.core);
            if key < best {
                best = key;
            }
        }
        best.3
    }

    /// Create a session on the least-loaded core ([`RelayHandle::least_loaded_core`]), or on
    /// `core` if given.
    pub async fn create_session(
        &self,
        sid: Sid,
        core: Option<usize>,
    ) -> Result<SessionPlacement, ControlError> {
        let least_loaded = match core {
            None => Some(self.least_loaded_core().await),
            Some(_) => None,
        };
        let index = {
            let mut placement = self.placement();
            if placement.contains_key(&sid) {
                return Err(ControlError::SessionExists { sid });
            }
            let index = match core {
                Some(c) if c < self.cores() => c,
                Some(c) => return Err(ControlError::CoreGone { core: c }),
                None => least_loaded.unwrap_or(0),
            };
            // Reserve the sid before the core confirms, so two racing creates cannot both
            // succeed on different cores.
            placement.insert(sid.clone(), index);
            index
        };
        let result = self
            .call(index, |reply| Command::CreateSession {
                sid: sid.clone(),
                reply,
            })
            .await
            .and_then(|r| r);
        match result {
            Ok(()) => Ok(SessionPlacement {
                core: index,
                address: self.inner.cores[index].address,
            }),
            Err(e) => {
                self.placement().remove(&sid);
                Err(e)
            }
        }
    }

    /// Remove a session and all its participants.
    pub async fn remove_session(&self, sid: &Sid) -> Result<(), ControlError> {
        let core = self.core_of(sid)?;
        let r = self
            .call(core, |reply| Command::RemoveSession {
                sid: sid.clone(),
                reply,
            })
            .await
            .and_then(|r| r);
        self.placement().remove(sid);
        r
    }

    /// Where a session lives.
    pub fn placement_of(&self, sid: &Sid) -> Option<SessionPlacement> {
        let core = self.core_of(sid).ok()?;
        Some(SessionPlacement {
            core,
            address: self.inner.cores[core].address,
        })
    }

    /// Add a participant to a session; returns what goes into its SDP answer.
    pub async fn add_participant(
        &self,
        sid: &Sid,
        uid: &Uid,
        config: ParticipantConfig,
    ) -> Result<ParticipantInfo, ControlError> {
        let core = self.core_of(sid)?;
        let creds = self
            .call(core, |reply| Command::AddParticipant {
                sid: sid.clone(),
                uid: uid.clone(),
                config,
                reply,
            })
            .await??;
        Ok(ParticipantInfo {
            ice_ufrag: creds.ufrag,
            ice_pwd: creds.pwd,
            fingerprint: self.inner.fingerprint.clone(),
            candidate: self.inner.cores[core].address,
        })
    }

    /// Remove a participant with its feeds and subscriptions.
    pub async fn remove_participant(&self, sid: &Sid, uid: &Uid) -> Result<(), ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::RemoveParticipant {
            sid: sid.clone(),
            uid: uid.clone(),
            reply,
        })
        .await?
    }

    /// ICE restart: new relay ICE credentials for the participant (its answer then brings
    /// its own new ufrag through [`RelayHandle::update_participant`]).
    pub async fn restart_ice(&self, sid: &Sid, uid: &Uid) -> Result<ParticipantInfo, ControlError> {
        let core = self.core_of(sid)?;
        let creds = self
            .call(core, |reply| Command::RestartIce {
                sid: sid.clone(),
                uid: uid.clone(),
                reply,
            })
            .await??;
        Ok(ParticipantInfo {
            ice_ufrag: creds.ufrag,
            ice_pwd: creds.pwd,
            fingerprint: self.inner.fingerprint.clone(),
            candidate: self.inner.cores[core].address,
        })
    }

    /// Set a participant's ICE ufrag and certificate fingerprint (from its answer).
    pub async fn update_participant(
        &self,
        sid: &Sid,
        uid: &Uid,
        config: ParticipantConfig,
    ) -> Result<(), ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::UpdateParticipant {
            sid: sid.clone(),
            uid: uid.clone(),
            config,
            reply,
        })
        .await?
    }

    /// Declare or update a feed the participant publishes.
    pub async fn publish(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed: FeedDescription,
    ) -> Result<(), ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::Publish {
            sid: sid.clone(),
            uid: uid.clone(),
            feed,
            reply,
        })
        .await?
    }

    /// Remove a feed and its subscriptions.
    pub async fn unpublish(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::Unpublish {
            sid: sid.clone(),
            uid: uid.clone(),
            feed_id: feed_id.clone(),
            reply,
        })
        .await?
    }

    /// Subscribe a participant to a feed; returns the SSRC it will receive the feed with.
    pub async fn subscribe(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
        options: SubscribeOptions,
    ) -> Result<SubscriptionInfo, ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::Subscribe {
            sid: sid.clone(),
            uid: uid.clone(),
            feed_id: feed_id.clone(),
            options,
            reply,
        })
        .await?
    }

    /// Ask a feed's publisher for a keyframe (rate-limited per feed).
    pub async fn request_keyframe(&self, sid: &Sid, feed_id: &FeedId) -> Result<(), ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::RequestKeyframe {
            sid: sid.clone(),
            feed_id: feed_id.clone(),
            reply,
        })
        .await?
    }

    /// End a subscription.
    pub async fn unsubscribe(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::Unsubscribe {
            sid: sid.clone(),
            uid: uid.clone(),
            feed_id: feed_id.clone(),
            reply,
        })
        .await?
    }

    /// Traffic counters of one participant.
    pub async fn participant_usage(
        &self,
        sid: &Sid,
        uid: &Uid,
    ) -> Result<Option<ParticipantUsage>, ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::Usage {
            sid: sid.clone(),
            uid: uid.clone(),
            reply,
        })
        .await
    }

    /// Traffic counters of every participant of a session.
    pub async fn session_usage(
        &self,
        sid: &Sid,
    ) -> Result<Vec<(Uid, ParticipantUsage)>, ControlError> {
        let core = self.core_of(sid)?;
        self.call(core, |reply| Command::SessionUsage {
            sid: sid.clone(),
            reply,
        })
        .await?
    }

    /// Counters of every core.
    pub async fn stats(&self) -> Result<Vec<CoreStats>, ControlError> {
        let mut out = Vec::with_capacity(self.cores());
        for core in 0..self.cores() {
            out.push(self.call(core, |reply| Command::Stats { reply }).await?);
        }
        Ok(out)
    }
}
