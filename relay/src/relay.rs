//! Starting the relay's cores and talking to them: [`Relay`] owns the threads, [`RelayHandle`]
//! is the control plane's in-process client.
//!
//! A command travels through the owning core's crossbeam channel and the core's `Notify` wakes
//! its runtime; the reply comes back on a oneshot channel, so callers on any runtime can await
//! it without blocking a core.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::command::{Command, Reply};
use crate::control::{
    Event, FeedDescription, ParticipantConfig, ParticipantInfo, SessionPlacement, SubscribeOptions,
    SubscriberQuality, SubscriptionInfo, View,
};
use crate::error::{ControlError, Error};
use crate::ids::{FeedId, Sid, Uid};
use crate::io::core::{self, CoreSetup, Peer};
use crate::io::{dtls, socket, Egress};
use crate::layout::{Layout, PublishedFeed};
use crate::sfu::cross_core::FeedRoute;
use crate::sfu::participant::ParticipantUsage;
use crate::sfu::worker::WorkerConfig;
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
    /// Send bursts to one destination with UDP GSO (with [`Egress::Sendmmsg`]).
    pub gso: bool,
    /// Participants of one session a core takes before the session spreads to another core
    /// (its feeds then reach the other core's subscribers through a lock-free queue). 0 keeps
    /// every session on one core.
    pub spread_after: usize,
    /// Data-channel bytes a second each participant may send.
    pub data_rate: u64,
    /// Data-channel bytes a participant may send at once after a quiet spell.
    pub data_burst: u64,
    /// Where recordings are written; None: the relay does not record.
    pub recordings_dir: Option<std::path::PathBuf>,
    /// Packets queued for the recorder at most; past it, recorded packets are dropped for
    /// the recording (never for subscribers).
    pub record_queue: usize,
    /// Listen for ICE-TCP (RFC 6544) on each core's port too, and offer it as a passive
    /// candidate, for participants whose network blocks UDP.
    pub ice_tcp: bool,
    /// Give the cores an edge to exchange packets with ([`Relay::take_edge_port`]), so that
    /// sessions can span nodes.
    pub edge: bool,
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
            gso: true,
            spread_after: DEFAULT_SPREAD_AFTER,
            data_rate: w.data_rate,
            data_burst: w.data_burst,
            recordings_dir: None,
            record_queue: crate::record::writer::QUEUE,
            ice_tcp: true,
            edge: false,
        }
    }
}

/// A session spreads to a second core after this many participants on its first: well below
/// what one core forwards for a broadcast (thousands of subscribers), so a large session
/// shares the machine before its core saturates.
pub const DEFAULT_SPREAD_AFTER: usize = 250;

/// How long placing a new session waits for a core's counters before passing it over.
pub const PLACEMENT_WAIT: Duration = Duration::from_millis(100);

/// Inbox of each core for messages from the others; full means the core is far behind, and
/// packets are dropped (counted) rather than queued without bound.
const CROSS_CORE_QUEUE: usize = 16_384;

struct CoreLink {
    commands: Sender<Command>,
    notify: Arc<Notify>,
    address: SocketAddr,
    /// Whether the core also listens for ICE-TCP at `address`'s port.
    tcp: bool,
}

impl CoreLink {
    /// The passive ICE-TCP candidate, where the core listens for one.
    fn tcp_candidate(&self) -> Option<SocketAddr> {
        self.tcp.then_some(self.address)
    }
}

pub(crate) struct Inner {
    cores: Vec<CoreLink>,
    fingerprint: String,
    advertise: IpAddr,
    /// How each session is laid out over the cores. Control-plane state only: never touched
    /// by packets.
    placement: Mutex<HashMap<Sid, Layout>>,
    spread_after: usize,
    /// Each core's packet counter when placement last looked, to turn it into a rate.
    load_samples: Mutex<Vec<Option<(Instant, u64)>>>,
    /// The recorder, where the relay records.
    pub(crate) recorder: Option<crate::recorder::RecorderLink>,
    /// The edge, where the relay has one.
    pub(crate) edge: Option<crate::trunk::EdgeLink>,
}

/// The control plane's handle to a running relay. Cheap to clone; usable from any thread, on
/// any Tokio runtime with its timer enabled (placement waits a bounded time for busy cores).
#[derive(Clone)]
pub struct RelayHandle {
    pub(crate) inner: Arc<Inner>,
}

/// A running relay: its core threads and its event stream.
pub struct Relay {
    handle: RelayHandle,
    threads: Vec<JoinHandle<()>>,
    recorder: Option<JoinHandle<()>>,
    events: Option<mpsc::Receiver<Event>>,
    edge_port: Option<crate::trunk::EdgePort>,
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
        let mut inboxes = Vec::with_capacity(cores);
        let mut peers = Vec::with_capacity(cores);
        for _ in 0..cores {
            let (tx, rx) = crossbeam_channel::bounded(CROSS_CORE_QUEUE);
            let notify = Arc::new(Notify::new());
            peers.push(Peer {
                queue: tx,
                notify: notify.clone(),
            });
            inboxes.push((rx, notify));
        }
        // The edge comes after the cores among their peers.
        let (edge_link, edge_port) = match config.edge {
            true => {
                let (peer, link, mut port) = crate::trunk::queues(cores, CROSS_CORE_QUEUE);
                port.set_cores(peers.clone());
                peers.push(peer);
                (Some(link), Some(port))
            }
            false => (None, None),
        };
        let (record_tx, record_rx) = crossbeam_channel::bounded(config.record_queue.max(1));
        let records = config.recordings_dir.is_some();
        let mut inboxes = inboxes.into_iter();
        for index in 0..cores {
            let (inbox, inbox_notify) = inboxes.next().expect("one inbox per core");
            let port = match config.port {
                0 => 0,
                p => p
                    .checked_add(index as u16)
                    .ok_or_else(|| Error::Config(format!("port {p} + {index} cores overflows")))?,
            };
            let addr = SocketAddr::new(config.bind, port);
            let (sock, tcp) =
                socket::bind_core(addr, config.ice_tcp).map_err(|source| Error::Socket {
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
                tcp,
                commands: rx,
                notify: notify.clone(),
                events: events_tx.clone(),
                certificate: certificate.clone(),
                worker: WorkerConfig {
                    core: index,
                    consent_timeout: config.consent_timeout,
                    dtls_handshake_timeout: config.dtls_handshake_timeout,
                    max_handshakes: config.max_handshakes_per_core,
                    data_rate: config.data_rate,
                    data_burst: config.data_burst,
                    ..WorkerConfig::default()
                },
                egress: config.egress,
                gso: config.gso,
                inbox,
                inbox_notify,
                peers: peers.clone(),
                record: records.then(|| record_tx.clone()),
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
                tcp: config.ice_tcp,
            });
        }
        drop(record_tx);
        let (recorder, recorder_thread) = match &config.recordings_dir {
            Some(dir) => {
                let doors = links
                    .iter()
                    .map(|l| (l.commands.clone(), l.notify.clone()))
                    .collect();
                let r = crate::record::writer::spawn(record_rx, doors, events_tx.clone()).map_err(
                    |source| Error::Thread {
                        core: cores,
                        source,
                    },
                )?;
                (
                    Some(crate::recorder::RecorderLink::new(dir.clone(), r.control)),
                    Some(r.thread),
                )
            }
            None => (None, None),
        };
        Ok(Relay {
            recorder: recorder_thread,
            handle: RelayHandle {
                inner: Arc::new(Inner {
                    cores: links,
                    fingerprint,
                    advertise,
                    placement: Mutex::new(HashMap::new()),
                    spread_after: config.spread_after,
                    load_samples: Mutex::new(vec![None; cores]),
                    recorder,
                    edge: edge_link,
                }),
            },
            threads,
            events: Some(events_rx),
            edge_port,
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

    /// The edge thread's end of its queues with the cores (with [`RelayConfig::edge`]); can
    /// be taken once.
    pub fn take_edge_port(&mut self) -> Option<crate::trunk::EdgePort> {
        self.edge_port.take()
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
        // After the cores: what they handed over is written, and every file finished.
        if let Some(thread) = self.recorder.take() {
            if let Some(r) = &self.handle.inner.recorder {
                r.shutdown();
            }
            let _ = thread.join();
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

    /// Run `make` on `core`, flattening the command's own error into the call's.
    pub(crate) async fn run<T>(
        &self,
        core: usize,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ControlError> {
        self.call(core, make).await?
    }

    fn placement(&self) -> std::sync::MutexGuard<'_, HashMap<Sid, Layout>> {
        // A panic while holding this lock cannot leave the map inconsistent (each change is a
        // single insert, remove or field update), so a poisoned lock is still usable.
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn layout(&self, sid: &Sid) -> Result<Layout, ControlError> {
        self.placement()
            .get(sid)
            .cloned()
            .ok_or_else(|| ControlError::NoSuchSession { sid: sid.clone() })
    }

    /// Wait for this session's earlier changes to finish, so that multi-core steps of two
    /// requests never interleave; returns the guard and the layout as it is now.
    pub(crate) async fn lock_session(
        &self,
        sid: &Sid,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, Layout), ControlError> {
        let ops = self.layout(sid)?.ops;
        let guard = ops.lock_owned().await;
        Ok((guard, self.layout(sid)?))
    }

    pub(crate) fn update_layout(&self, sid: &Sid, change: impl FnOnce(&mut Layout)) {
        if let Some(layout) = self.placement().get_mut(sid) {
            change(layout);
        }
    }

    /// The core a participant is on.
    fn core_of_participant(layout: &Layout, sid: &Sid, uid: &Uid) -> Result<usize, ControlError> {
        layout
            .participants
            .get(uid)
            .copied()
            .ok_or_else(|| ControlError::NoSuchParticipant {
                sid: sid.clone(),
                uid: uid.clone(),
            })
    }

    /// The core a new session should go to: the fewest participants, then the lowest packet
    /// rate since the last placement, then the fewest sessions.
    ///
    /// A core that does not answer within [`PLACEMENT_WAIT`] is busy (a large fan-out, a burst
    /// of handshakes): it is the last place for a new session, and creating one need not wait
    /// for it. When no core answers in time, the session goes to core 0.
    async fn least_loaded_core(&self, exclude: &BTreeSet<usize>) -> Option<usize> {
        let asks = (0..self.cores()).map(|core| {
            tokio::time::timeout(
                PLACEMENT_WAIT,
                self.call(core, |reply| Command::Stats { reply }),
            )
        });
        let stats: Vec<CoreStats> = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|answer| answer.ok()?.ok())
            .collect();
        let now = Instant::now();
        let mut samples = self
            .inner
            .load_samples
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut best: Option<(u64, u64, u64, usize)> = None;
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
            if !exclude.contains(&s.core) && best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        best.map(|b| b.3)
    }

    /// Create a session on the least-loaded core ([`RelayHandle::least_loaded_core`]), or on
    /// `core` if given. It may spread to other cores as it grows (see
    /// [`RelayConfig::spread_after`]); this is its home core.
    pub async fn create_session(
        &self,
        sid: Sid,
        core: Option<usize>,
    ) -> Result<SessionPlacement, ControlError> {
        let least_loaded = match core {
            None => self.least_loaded_core(&BTreeSet::new()).await,
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
            placement.insert(sid.clone(), Layout::new(index));
            index
        };
        let result = self
            .run(index, |reply| Command::CreateSession {
                sid: sid.clone(),
                reply,
            })
            .await;
        match result {
            Ok(()) => {
                if self.edge_index().is_some() {
                    self.share_cores(&sid).await;
                }
                Ok(SessionPlacement {
                    core: index,
                    address: self.inner.cores[index].address,
                })
            }
            Err(e) => {
                self.placement().remove(&sid);
                Err(e)
            }
        }
    }

    /// Remove a session and all its participants, on every core it spans.
    pub async fn remove_session(&self, sid: &Sid) -> Result<(), ControlError> {
        let (_guard, layout) = self.lock_session(sid).await?;
        let mut result = Ok(());
        for &core in &layout.cores {
            let r = self
                .run(core, |reply| Command::RemoveSession {
                    sid: sid.clone(),
                    reply,
                })
                .await;
            if core == layout.home {
                result = r;
            }
        }
        self.placement().remove(sid);
        result
    }

    /// Where a session lives (its home core).
    pub fn placement_of(&self, sid: &Sid) -> Option<SessionPlacement> {
        let home = self.layout(sid).ok()?.home;
        Some(SessionPlacement {
            core: home,
            address: self.inner.cores[home].address,
        })
    }

    /// The cores a session spans, home first.
    pub fn cores_of(&self, sid: &Sid) -> Vec<usize> {
        let Ok(layout) = self.layout(sid) else {
            return Vec::new();
        };
        let mut cores = vec![layout.home];
        cores.extend(layout.cores.iter().filter(|c| **c != layout.home));
        cores
    }

    /// Pick the core for a new participant: the session's cores in turn (home first) until
    /// each holds `spread_after` of its participants, then the least-loaded other core.
    async fn core_for_new_participant(&self, layout: &Layout) -> usize {
        let limit = self.inner.spread_after;
        if limit == 0 || self.cores() == 1 {
            return layout.home;
        }
        if let Some(core) = layout.core_with_room(limit) {
            return core;
        }
        self.least_loaded_core(&layout.cores)
            .await
            .unwrap_or_else(|| layout.least_crowded())
    }

    /// Make `core` hold a replica of the session: the session itself and every feed
    /// published elsewhere.
    async fn extend_to(&self, sid: &Sid, layout: &Layout, core: usize) -> Result<(), ControlError> {
        self.run(core, |reply| Command::CreateSession {
            sid: sid.clone(),
            reply,
        })
        .await?;
        for feed in layout.feeds.values() {
            self.run(core, |reply| Command::AddRemoteFeed {
                sid: sid.clone(),
                feed: feed.description.clone(),
                route: feed.route,
                reply,
            })
            .await?;
        }
        if !layout.speaker_feeds.is_empty() {
            self.run(core, |reply| Command::SetSpeakerFeeds {
                sid: sid.clone(),
                feeds: layout.speaker_feeds.clone(),
                reply,
            })
            .await?;
        }
        self.update_layout(sid, |l| {
            l.cores.insert(core);
        });
        self.share_cores(sid).await;
        Ok(())
    }

    /// Tell each core of `sid` which cores the session spans, so that data-channel messages
    /// reach its participants on all of them; the edge, where there is one, is among them
    /// (it carries the messages to the session's other nodes).
    async fn share_cores(&self, sid: &Sid) {
        let cores = self.cores_of(sid);
        let targets: Vec<usize> = cores.iter().copied().chain(self.edge_index()).collect();
        for &core in &cores {
            // A core that is gone fails its own commands; the others still learn.
            let _ = self
                .run(core, |reply| Command::SessionCores {
                    sid: sid.clone(),
                    cores: targets.clone(),
                    reply,
                })
                .await;
        }
    }

    /// The dominant speaker's video feeds in `sid`, on every core of the session (see
    /// [`crate::sfu::worker::Worker::set_speaker_feeds`]).
    pub async fn set_speaker_feeds(
        &self,
        sid: &Sid,
        feeds: Vec<FeedId>,
    ) -> Result<(), ControlError> {
        let (_guard, layout) = self.lock_session(sid).await?;
        for &core in &layout.cores {
            self.run(core, |reply| Command::SetSpeakerFeeds {
                sid: sid.clone(),
                feeds: feeds.clone(),
                reply,
            })
            .await?;
        }
        self.update_layout(sid, |l| l.speaker_feeds = feeds);
        Ok(())
    }

    /// Add a participant to a session; returns what goes into its SDP answer (with the
    /// candidate of the core it was placed on).
    pub async fn add_participant(
        &self,
        sid: &Sid,
        uid: &Uid,
        config: ParticipantConfig,
    ) -> Result<ParticipantInfo, ControlError> {
        let (_guard, layout) = self.lock_session(sid).await?;
        if layout.participants.contains_key(uid) {
            return Err(ControlError::ParticipantExists {
                sid: sid.clone(),
                uid: uid.clone(),
            });
        }
        let core = self.core_for_new_participant(&layout).await;
        if !layout.cores.contains(&core) {
            self.extend_to(sid, &layout, core).await?;
        }
        let creds = self
            .run(core, |reply| Command::AddParticipant {
                sid: sid.clone(),
                uid: uid.clone(),
                config,
                reply,
            })
            .await?;
        self.update_layout(sid, |l| {
            l.participants.insert(uid.clone(), core);
        });
        Ok(ParticipantInfo {
            ice_ufrag: creds.ufrag,
            ice_pwd: creds.pwd,
            fingerprint: self.inner.fingerprint.clone(),
            candidate: self.inner.cores[core].address,
            tcp_candidate: self.inner.cores[core].tcp_candidate(),
        })
    }

    /// Remove a participant with its feeds and subscriptions (on every core).
    pub async fn remove_participant(&self, sid: &Sid, uid: &Uid) -> Result<(), ControlError> {
        let (_guard, layout) = self.lock_session(sid).await?;
        let core = Self::core_of_participant(&layout, sid, uid)?;
        match self
            .run(core, |reply| Command::RemoveParticipant {
                sid: sid.clone(),
                uid: uid.clone(),
                reply,
            })
            .await
        {
            // The core may have dropped it already (consent or handshake failure, reported as
            // an event): the rest of the session still has to forget it.
            Ok(()) | Err(ControlError::NoSuchParticipant { .. }) => {}
            Err(e) => return Err(e),
        }
        self.stop_idle_sinks(sid, &layout, core).await;
        let gone: Vec<(FeedId, FeedRoute)> = layout
            .feeds
            .iter()
            .filter(|(_, f)| f.uid == *uid)
            .map(|(id, f)| (id.clone(), f.route))
            .collect();
        for (_, route) in &gone {
            self.drop_replicas(&layout, *route).await;
        }
        self.update_layout(sid, |l| {
            l.participants.remove(uid);
            for (id, _) in &gone {
                l.feeds.remove(id);
            }
        });
        // A core other than home that no longer holds any participant of the session leaves it.
        let layout = self.layout(sid)?;
        if core != layout.home && !layout.participants.values().any(|c| *c == core) {
            for feed in layout.feeds.values().filter(|f| f.sinks.contains(&core)) {
                let _ = self.set_sink(feed.route, core, false).await;
            }
            let _ = self
                .run(core, |reply| Command::RemoveSession {
                    sid: sid.clone(),
                    reply,
                })
                .await;
            self.update_layout(sid, |l| {
                l.cores.remove(&core);
                for f in l.feeds.values_mut() {
                    f.sinks.remove(&core);
                }
            });
            self.share_cores(sid).await;
        }
        Ok(())
    }

    /// Stop the flow of feeds to `core` where its replicas of them have no subscriber left,
    /// however the subscribers left (unsubscribed, removed, or dropped by the core itself).
    async fn stop_idle_sinks(&self, sid: &Sid, layout: &Layout, core: usize) {
        if !layout.feeds.values().any(|f| f.sinks.contains(&core)) {
            return;
        }
        let Ok(idle) = self
            .run(core, |reply| Command::IdleReplicas {
                sid: sid.clone(),
                reply,
            })
            .await
        else {
            return;
        };
        let routes: Vec<FeedRoute> = layout
            .feeds
            .values()
            .filter(|f| f.sinks.contains(&core) && idle.contains(&f.route))
            .map(|f| f.route)
            .collect();
        for &route in &routes {
            // The origin may have gone meanwhile (unpublished): nothing flows then anyway.
            let _ = self.set_sink(route, core, false).await;
        }
        self.update_layout(sid, |l| {
            for f in l.feeds.values_mut() {
                if routes.contains(&f.route) {
                    f.sinks.remove(&core);
                }
            }
        });
    }

    /// Remove the replicas of a feed from every core but its origin.
    pub(crate) async fn drop_replicas(&self, layout: &Layout, route: FeedRoute) {
        for &core in layout.cores.iter().filter(|c| **c != route.core) {
            let _ = self
                .call(core, |reply| Command::RemoveRemoteFeed { route, reply })
                .await;
        }
    }

    /// ICE restart: new relay ICE credentials for the participant (its answer then brings
    /// its own new ufrag through [`RelayHandle::update_participant`]).
    pub async fn restart_ice(&self, sid: &Sid, uid: &Uid) -> Result<ParticipantInfo, ControlError> {
        let core = Self::core_of_participant(&self.layout(sid)?, sid, uid)?;
        let creds = self
            .run(core, |reply| Command::RestartIce {
                sid: sid.clone(),
                uid: uid.clone(),
                reply,
            })
            .await?;
        Ok(ParticipantInfo {
            ice_ufrag: creds.ufrag,
            ice_pwd: creds.pwd,
            fingerprint: self.inner.fingerprint.clone(),
            candidate: self.inner.cores[core].address,
            tcp_candidate: self.inner.cores[core].tcp_candidate(),
        })
    }

    /// Set a participant's ICE ufrag and certificate fingerprint (from its answer).
    pub async fn update_participant(
        &self,
        sid: &Sid,
        uid: &Uid,
        config: ParticipantConfig,
    ) -> Result<(), ControlError> {
        let core = Self::core_of_participant(&self.layout(sid)?, sid, uid)?;
        self.run(core, |reply| Command::UpdateParticipant {
            sid: sid.clone(),
            uid: uid.clone(),
            config,
            reply,
        })
        .await
    }

    /// Declare or update a feed the participant publishes; every other core of the session
    /// gets (or updates) a replica of it.
    pub async fn publish(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed: FeedDescription,
    ) -> Result<(), ControlError> {
        let (_guard, layout) = self.lock_session(sid).await?;
        let core = Self::core_of_participant(&layout, sid, uid)?;
        let route = self
            .run(core, |reply| Command::Publish {
                sid: sid.clone(),
                uid: uid.clone(),
                feed: feed.clone(),
                reply,
            })
            .await?;
        self.replicate(sid, &layout, uid, feed, route).await
    }

    /// Give every core of the session but the feed's origin a replica of it (or its new
    /// description), and note it in the layout, keeping the cores it flows to.
    pub(crate) async fn replicate(
        &self,
        sid: &Sid,
        layout: &Layout,
        uid: &Uid,
        feed: FeedDescription,
        route: FeedRoute,
    ) -> Result<(), ControlError> {
        for &other in layout.cores.iter().filter(|c| **c != route.core) {
            self.run(other, |reply| Command::AddRemoteFeed {
                sid: sid.clone(),
                feed: feed.clone(),
                route,
                reply,
            })
            .await?;
        }
        self.update_layout(sid, |l| {
            let sinks = l
                .feeds
                .remove(&feed.feed_id)
                .map(|f| f.sinks)
                .unwrap_or_default();
            l.feeds.insert(
                feed.feed_id.clone(),
                PublishedFeed {
                    uid: uid.clone(),
                    route,
                    description: feed,
                    sinks,
                },
            );
        });
        Ok(())
    }

    /// Remove a feed and its subscriptions (on every core).
    pub async fn unpublish(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let (_guard, layout) = self.lock_session(sid).await?;
        let core = Self::core_of_participant(&layout, sid, uid)?;
        self.run(core, |reply| Command::Unpublish {
            sid: sid.clone(),
            uid: uid.clone(),
            feed_id: feed_id.clone(),
            reply,
        })
        .await?;
        if let Some(feed) = layout.feeds.get(feed_id) {
            self.drop_replicas(&layout, feed.route).await;
        }
        self.update_layout(sid, |l| {
            l.feeds.remove(feed_id);
        });
        Ok(())
    }

    /// Subscribe a participant to a feed; returns the SSRC it will receive the feed with. A
    /// feed published on another core starts flowing to this participant's core.
    pub async fn subscribe(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
        options: SubscribeOptions,
    ) -> Result<SubscriptionInfo, ControlError> {
        let (_guard, layout) = self.lock_session(sid).await?;
        let core = Self::core_of_participant(&layout, sid, uid)?;
        let info = self
            .run(core, |reply| Command::Subscribe {
                sid: sid.clone(),
                uid: uid.clone(),
                feed_id: feed_id.clone(),
                options,
                reply,
            })
            .await?;
        if let Some(feed) = layout.feeds.get(feed_id) {
            let route = feed.route;
            if route.core != core && !feed.sinks.contains(&core) {
                self.set_sink(route, core, true).await?;
                self.update_layout(sid, |l| {
                    if let Some(f) = l.feeds.get_mut(feed_id) {
                        f.sinks.insert(core);
                    }
                });
            }
        }
        Ok(info)
    }

    /// Change a subscription to what the subscriber's answer accepted (see
    /// [`crate::sfu::worker::Worker::update_subscription`]).
    pub async fn update_subscription(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
        options: SubscribeOptions,
    ) -> Result<(), ControlError> {
        let layout = self.layout(sid)?;
        let core = Self::core_of_participant(&layout, sid, uid)?;
        self.run(core, |reply| Command::UpdateSubscription {
            sid: sid.clone(),
            uid: uid.clone(),
            feed_id: feed_id.clone(),
            options,
            reply,
        })
        .await
    }

    /// How `uid` shows its video of `feed_id` (see
    /// [`crate::sfu::worker::Worker::set_view`]).
    pub async fn set_view(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
        view: View,
    ) -> Result<(), ControlError> {
        let layout = self.layout(sid)?;
        let core = Self::core_of_participant(&layout, sid, uid)?;
        self.run(core, |reply| Command::SetView {
            sid: sid.clone(),
            uid: uid.clone(),
            feed_id: feed_id.clone(),
            view,
            reply,
        })
        .await
    }

    /// What `uid` receives: its estimate and its simulcast layers (None for no such
    /// participant).
    pub async fn quality(
        &self,
        sid: &Sid,
        uid: &Uid,
    ) -> Result<Option<SubscriberQuality>, ControlError> {
        let layout = self.layout(sid)?;
        let Ok(core) = Self::core_of_participant(&layout, sid, uid) else {
            return Ok(None);
        };
        self.call(core, |reply| Command::Quality {
            sid: sid.clone(),
            uid: uid.clone(),
            reply,
        })
        .await
    }

    /// Ask a feed's publisher for a keyframe (rate-limited per feed).
    pub async fn request_keyframe(&self, sid: &Sid, feed_id: &FeedId) -> Result<(), ControlError> {
        let layout = self.layout(sid)?;
        let core = layout
            .feeds
            .get(feed_id)
            .map_or(layout.home, |f| f.route.core);
        if Some(core) == self.edge_index() {
            let route = layout.feeds[feed_id].route;
            return self.trunk_keyframe_request(route);
        }
        self.run(core, |reply| Command::RequestKeyframe {
            sid: sid.clone(),
            feed_id: feed_id.clone(),
            reply,
        })
        .await
    }

    /// End a subscription. A feed from another core stops flowing to this participant's core
    /// when nobody there subscribes to it any more.
    pub async fn unsubscribe(
        &self,
        sid: &Sid,
        uid: &Uid,
        feed_id: &FeedId,
    ) -> Result<(), ControlError> {
        let (_guard, layout) = self.lock_session(sid).await?;
        let core = Self::core_of_participant(&layout, sid, uid)?;
        self.run(core, |reply| Command::Unsubscribe {
            sid: sid.clone(),
            uid: uid.clone(),
            feed_id: feed_id.clone(),
            reply,
        })
        .await?;
        self.stop_idle_sinks(sid, &layout, core).await;
        Ok(())
    }

    /// Traffic counters of one participant.
    pub async fn participant_usage(
        &self,
        sid: &Sid,
        uid: &Uid,
    ) -> Result<Option<ParticipantUsage>, ControlError> {
        let layout = self.layout(sid)?;
        let Ok(core) = Self::core_of_participant(&layout, sid, uid) else {
            return Ok(None);
        };
        self.call(core, |reply| Command::Usage {
            sid: sid.clone(),
            uid: uid.clone(),
            reply,
        })
        .await
    }

    /// Traffic counters of every participant of a session, from every core it spans.
    pub async fn session_usage(
        &self,
        sid: &Sid,
    ) -> Result<Vec<(Uid, ParticipantUsage)>, ControlError> {
        let layout = self.layout(sid)?;
        let mut all = Vec::new();
        for &core in &layout.cores {
            all.extend(
                self.run(core, |reply| Command::SessionUsage {
                    sid: sid.clone(),
                    reply,
                })
                .await?,
            );
        }
        Ok(all)
    }

    /// Hold the recorder's thread for `duration`, as a disk that stops answering would: what
    /// the cores hand it meanwhile fills its queue. Returns at once.
    #[cfg(feature = "fault-injection")]
    pub fn stall_recorder(&self, duration: std::time::Duration) -> Result<(), ControlError> {
        self.inner
            .recorder
            .as_ref()
            .ok_or(ControlError::RecordingUnavailable)?
            .stall(duration);
        Ok(())
    }

    /// Hold `core` for `duration` as a large fan-out would: it handles nothing else meanwhile.
    /// For tests of what waits on a core; returns when the core is free again.
    #[cfg(feature = "fault-injection")]
    pub async fn stall_core(
        &self,
        core: usize,
        duration: std::time::Duration,
    ) -> Result<(), ControlError> {
        self.call(core, |reply| Command::Stall { duration, reply })
            .await
    }

    /// Counters of every core.
    pub async fn stats(&self) -> Result<Vec<CoreStats>, ControlError> {
        // Every core at once: a core busy with a large fan-out answers late, and the others
        // need not wait behind it (placement asks this for every new session).
        let asks = (0..self.cores()).map(|core| self.call(core, |reply| Command::Stats { reply }));
        futures::future::join_all(asks).await.into_iter().collect()
    }
}
