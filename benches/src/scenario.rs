//! What a run does: who publishes, who subscribes to whom, and the timed measurement.
//!
//! A run connects everyone first (publishers, then subscribers), then starts every stream at
//! once, lets a warm-up pass, and measures a fixed window: the server's CPU time from `/proc`
//! at both ends, and, on the receiving side, every packet whose probe says it was *sent* inside
//! the window. Counting by send time rather than arrival time makes loss exact (a packet still
//! in flight at the end is waited for during a short drain) and keeps the counts of senders
//! and receivers over the same set of packets.
//!
//! Each peer's receiving side is one task that owns its [`SrtpLink`] and reads its socket.
//! Everything the publishers send leaves from one thread, the pacer, which sleeps until the
//! next packet of any stream is due: the runtime's timers tick in whole milliseconds, so
//! tasks woken by them would send every publisher's packets of a millisecond together, a
//! burst that independent browsers do not make. Nothing is shared between peers but two
//! counters for the progress line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use tokio::time::sleep_until;
use webrtcai_tests::peer::{Incoming, SrtpLink};

use crate::feedback::{MediaSender, ReceiverCounts, ReceiverFeedback, SenderCounts, StreamName};
use crate::jsep::MediaKind;
use crate::latency::Latency;
use crate::measure::Meter;
use crate::record::Record;
use crate::rss_kib;
use crate::target::{FeedRef, Profile, ServerKind, Target};
use crate::topology::Topology;
use crate::traffic::{clock_ns, wall_to_clock_ns, MediaProfile, Probe, StreamSource};

/// Who talks to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// One publisher, `fanout` subscribers.
    Broadcast {
        /// Subscribers.
        fanout: usize,
    },
    /// `participants` people, each publishing and subscribing to everyone else.
    Conference {
        /// Participants.
        participants: usize,
    },
    /// `sessions` sessions side by side, each one publisher and `fanout` subscribers: what
    /// a server with many small rooms does (the relay places each session on a core).
    Sessions {
        /// Sessions.
        sessions: usize,
        /// Subscribers in each.
        fanout: usize,
    },
}

impl Scenario {
    /// `broadcast` or `conference`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Broadcast { .. } => "broadcast",
            Scenario::Conference { .. } => "conference",
            Scenario::Sessions { .. } => "sessions",
        }
    }

    /// Publishers in the room.
    pub fn publishers(self) -> usize {
        match self {
            Scenario::Broadcast { .. } => 1,
            Scenario::Conference { participants } => participants,
            Scenario::Sessions { sessions, .. } => sessions,
        }
    }

    /// Subscribers of each stream.
    pub fn fanout(self) -> usize {
        match self {
            Scenario::Broadcast { fanout } | Scenario::Sessions { fanout, .. } => fanout,
            Scenario::Conference { participants } => participants.saturating_sub(1),
        }
    }
}

/// How a run is timed and what it sends.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Measurement window.
    pub seconds: f64,
    /// Streams run this long before the window opens.
    pub warmup: f64,
    /// What each publisher sends.
    pub media: MediaProfile,
    /// Longest time connecting everyone may take.
    pub setup_timeout: Duration,
    /// Peers connecting at the same time.
    pub concurrency: usize,
    /// Above this share of its core the load generator counts as saturated.
    pub saturation: f64,
    /// Whether peers send what browsers send back ([`crate::feedback`]): receiver reports,
    /// NACKs, congestion feedback, retransmissions. The server must have been started with
    /// it ([`Target::start`]).
    pub feedback: bool,
    /// Share of RTP packets lost on every peer's own link, both ways: a publisher leaves
    /// them unsent (its history keeps them for a NACK), a receiver discards them on arrival.
    pub loss: f64,
    /// Whether video goes out as simulcast layers and receivers send transport-wide feedback
    /// about what they receive (as browsers do): the server estimates each receiver's link,
    /// paces what it sends it and picks its layer. Implies `feedback`.
    pub quality: bool,
}

/// Simulcast layers' bit rates as shares of the top one's (about what Chromium's encoder
/// gives 320x180, 640x360 and 1280x720).
pub const LAYER_SHARES: [f64; 3] = [0.1, 0.3, 1.0];

/// The window, on the probes' clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
}

impl Window {
    pub(crate) fn contains(&self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }
}

/// What one peer saw.
#[derive(Default)]
struct PeerReport {
    latency: Latency,
    received_in_window: u64,
    srtp_errors: u64,
    unprobed: u64,
    feedback: ReceiverCounts,
}

/// What the peers sent back over a whole run (warm-up included), in feedback runs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FeedbackCounts {
    /// Receiver reports the receivers sent.
    pub reports_sent: u64,
    /// Sequence numbers the receivers NACKed.
    pub nacked_by_receivers: u64,
    /// Congestion-feedback messages the receivers sent.
    pub twcc_sent_by_receivers: u64,
    /// Sequence numbers the server NACKed to publishers.
    pub nacked_by_server: u64,
    /// Retransmissions the publishers sent.
    pub rtx_sent_by_publishers: u64,
    /// Congestion-feedback messages the publishers received.
    pub twcc_received_by_publishers: u64,
    /// The server's own counts (where it reports them): NACKs it received.
    pub server_nacks_received: Option<u64>,
    /// Retransmissions it sent to receivers.
    pub server_retransmissions_sent: Option<u64>,
    /// Congestion-feedback messages it sent to publishers.
    pub server_twcc_feedback_sent: Option<u64>,
    /// NACK packets it sent to publishers.
    pub server_nacks_sent: Option<u64>,
}

/// What the relay counted of estimating, pacing and picking layers over a run (warm-up
/// included), in quality runs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct QualityCounts {
    /// Congestion-feedback messages it took from receivers.
    pub twcc_feedback_received: u64,
    /// Simulcast layers' SSRCs it learnt from their rid.
    pub simulcast_ssrcs_learnt: u64,
    /// Receivers moved between layers.
    pub layer_switches: u64,
    /// Copies not sent because the receiver gets another layer.
    pub rtp_other_layer: u64,
    /// Copies that waited in a receiver's pacer.
    pub rtp_paced: u64,
    /// How long they waited: the median, µs.
    pub pacing_delay_p50_us: u64,
    /// And the longest, µs.
    pub pacing_delay_max_us: u64,
    /// Probe packets sent.
    pub probe_packets_sent: u64,
    /// Videos paused for want of room.
    pub subscriptions_paused: u64,
}

/// Counters the progress line reads.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) delivered: AtomicU64,
    pub(crate) sent: AtomicU64,
}

/// Where the pacer hands a publisher's packets.
pub(crate) trait PacketSink {
    /// Send one marshalled RTP packet now; false if it did not leave.
    fn send(&mut self, packet: &[u8]) -> bool;
}

impl PacketSink for Arc<Mutex<MediaSender>> {
    fn send(&mut self, packet: &[u8]) -> bool {
        self.lock().is_ok_and(|mut s| s.send_media(packet).is_ok())
    }
}

/// Send every publisher's packets as they fall due until `stop_sending`, sleeping in between
/// (a thread of its own, so that sends are timed to the kernel's high-resolution timers, not
/// to the runtime's millisecond ticks). Returns how many packets it sent inside `window`, and
/// how late after their due time.
pub(crate) fn pace<S: PacketSink>(
    mut publishers: Vec<(S, Vec<StreamSource>)>,
    window: Window,
    stop_sending: Instant,
    progress: &Progress,
) -> (u64, Latency) {
    // The pacer shares its core with the tasks that receive; at the default priority it waits
    // behind them for milliseconds at a time and then sends a burst. A real-time priority lets
    // it preempt them the moment a packet is due (it sleeps between packets, so it takes
    // little).
    let tid = nix::unistd::gettid().to_string();
    let fifo = std::process::Command::new("chrt")
        .args(["--fifo", "--pid", "10", &tid])
        .status();
    if !fifo.is_ok_and(|s| s.success()) {
        eprintln!("  (could not give the pacer a real-time priority: sends may come in bursts)");
    }
    let mut sent_in_window = 0;
    let mut lateness = Latency::new();
    loop {
        let now = Instant::now();
        if now >= stop_sending {
            return (sent_in_window, lateness);
        }
        let mut next = stop_sending;
        for (sender, sources) in publishers.iter_mut() {
            for source in sources.iter_mut() {
                while source.due() <= now {
                    let late = now.saturating_duration_since(source.due());
                    let packets = source.take_due(now);
                    for packet in packets {
                        // A full socket buffer (or an SRTP failure) means the packet was not
                        // sent, so it is not offered either.
                        if sender.send(&packet) && source.offered {
                            progress.sent.fetch_add(1, Ordering::Relaxed);
                            if Probe::read(&packet).is_some_and(|p| window.contains(p.sent_ns)) {
                                sent_in_window += 1;
                                lateness.record_ns(late.as_nanos() as u64);
                            }
                        }
                    }
                }
                next = next.min(source.due());
            }
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// What a peer sends back while it receives, in feedback runs.
struct PeerFeedback {
    receiver: ReceiverFeedback,
    /// The publisher's sending side, through which its RTCP leaves too (the link's own was
    /// handed to the pacer); None for a peer that only receives.
    sender: Option<Arc<Mutex<MediaSender>>>,
}

impl PeerFeedback {
    /// Send what is due at `now`.
    async fn flush(&mut self, link: &mut SrtpLink, now: Instant, out: &mut Vec<u8>) {
        while self.receiver.poll_rtcp(now, out) {
            // A full socket buffer loses this packet, as it would a browser's.
            let _ = match &self.sender {
                Some(sender) => match sender.lock() {
                    Ok(mut s) => s.send_rtcp(out).map_err(|_| ()),
                    Err(_) => Err(()),
                },
                None => link.send_rtcp(out).await.map_err(|_| ()),
            };
        }
    }

    /// Act on RTCP from the server.
    fn handle_rtcp(
        &mut self,
        now: Instant,
        plain: &[u8],
        scratch: &mut Vec<relay::engine::rtcp::Feedback>,
    ) {
        self.receiver.handle_rtcp(now, plain);
        if let Some(Ok(mut s)) = self.sender.as_ref().map(|s| s.lock()) {
            s.handle_rtcp(plain, scratch);
        }
    }
}

/// Read the link until `stop`, recording what arrives (and, with `feedback`, answering it).
async fn receive(
    mut link: SrtpLink,
    mut feedback: Option<PeerFeedback>,
    loss: f64,
    window: Window,
    stop: Instant,
    progress: Arc<Progress>,
) -> PeerReport {
    let mut report = PeerReport::default();
    let deadline = sleep_until(stop.into());
    tokio::pin!(deadline);
    let next_feedback = |f: &Option<PeerFeedback>| {
        f.as_ref()
            .map_or(stop, |f| f.receiver.poll_timeout().min(stop))
    };
    let timer = sleep_until(next_feedback(&feedback).into());
    tokio::pin!(timer);
    let (mut out, mut scratch) = (Vec::with_capacity(1500), Vec::new());
    loop {
        tokio::select! {
            biased;
            incoming = link.recv() => match incoming {
                Ok(Incoming::Rtp(_)) if loss > 0.0 && rand::random::<f64>() < loss => {}
                Ok(Incoming::Rtp(plain)) => {
                    if let Some(f) = feedback.as_mut() {
                        f.receiver.handle_rtp(Instant::now(), &plain);
                        let due = tokio::time::Instant::from(next_feedback(&feedback));
                        if due < timer.deadline() {
                            timer.as_mut().reset(due);
                        }
                    }
                    match Probe::read(&plain) {
                    Some(probe) => {
                        // Arrival at the socket if the kernel stamped it: the load generator's
                        // own queueing (hundreds of sockets read one after another) is then
                        // not counted as the server's latency.
                        let now_ns = link
                            .arrival()
                            .and_then(wall_to_clock_ns)
                            .unwrap_or_else(clock_ns);
                        progress.delivered.fetch_add(1, Ordering::Relaxed);
                        if window.contains(probe.sent_ns) {
                            report.received_in_window += 1;
                            report.latency.record_ns(now_ns.saturating_sub(probe.sent_ns));
                        }
                    }
                    None => report.unprobed += 1,
                    }
                }
                Ok(Incoming::Rtcp) => {
                    if let Some(f) = feedback.as_mut() {
                        match link.decrypt_rtcp() {
                            Ok(plain) => f.handle_rtcp(Instant::now(), &plain, &mut scratch),
                            Err(_) => report.srtp_errors += 1,
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => report.srtp_errors += 1,
            },
            _ = &mut deadline => {
                report.feedback = feedback.map(|f| f.receiver.counts).unwrap_or_default();
                return report;
            }
            _ = &mut timer, if feedback.is_some() => {
                if let Some(f) = feedback.as_mut() {
                    f.flush(&mut link, Instant::now(), &mut out).await;
                }
                timer.as_mut().reset(next_feedback(&feedback).into());
            }
        }
    }
}

/// Run `f` over `items`, `concurrency` at a time, collecting results in order.
async fn in_batches<T, R, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    label: &str,
    f: F,
) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    let total = items.len();
    let mut out = Vec::with_capacity(total);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch: Vec<T> = items.by_ref().take(concurrency.max(1)).collect();
        for r in join_all(batch.into_iter().map(&f)).await {
            out.push(r?);
        }
        if total >= 20 {
            eprint!("\r  {label}: {}/{total} connected", out.len());
        }
    }
    if total >= 20 {
        eprintln!();
    }
    Ok(out)
}

/// A connected peer, ready to start.
struct Peer {
    link: SrtpLink,
    /// What it sends (possibly nothing).
    sources: Vec<StreamSource>,
    /// (media SSRC, RTX SSRC) of what it sends and repairs.
    repaired: Vec<(u32, u32)>,
    /// Header-extension elements naming what it sends, by SSRC.
    names: Vec<(u32, StreamName)>,
    /// (media SSRC, RTX SSRC) of what it receives and gets repairs of.
    rtx: Vec<(u32, u32)>,
}

/// Everyone connected, ready to start.
struct Room {
    peers: Vec<Peer>,
}

async fn connect_everyone(
    target: &Target,
    scenario: Scenario,
    media: MediaProfile,
    concurrency: usize,
    quality: bool,
) -> anyhow::Result<Room> {
    let now = Instant::now();
    let publishers: Vec<(String, Vec<StreamSource>)> = (0..scenario.publishers())
        .map(|p| {
            // Stream ids: 4p + layer for video (the top layer, or the only one, is 4p + 2),
            // 4p + 3 for audio.
            let shares: &[f64] = if quality { &LAYER_SHARES } else { &[1.0] };
            let top = shares.len() - 1;
            let mut sources: Vec<StreamSource> = shares
                .iter()
                .enumerate()
                .map(|(layer, share)| {
                    let profile = MediaProfile {
                        video_bitrate: (media.video_bitrate as f64 * share) as u64,
                        ..media
                    };
                    let stream = (4 * p + 2 - (top - layer)) as u32;
                    let mut s = StreamSource::new(stream, MediaKind::Video, profile, now);
                    s.offered = layer == top;
                    s
                })
                .collect();
            if media.audio {
                sources.push(StreamSource::new(
                    (4 * p + 3) as u32,
                    MediaKind::Audio,
                    media,
                    now,
                ));
            }
            (format!("p{p}"), sources)
        })
        .collect();
    // Each publisher in a session of its own where the scenario has several.
    let session_of = |p: usize| match scenario {
        Scenario::Sessions { .. } => p,
        _ => 0,
    };
    let publishers: Vec<(usize, (String, Vec<StreamSource>))> =
        publishers.into_iter().enumerate().collect();
    let published = in_batches(
        publishers,
        concurrency,
        "publishers",
        |(p, (uid, sources))| async move {
            let p = target
                .publish(session_of(p), &uid, &sources)
                .await
                .with_context(|| format!("publisher {uid}"))?;
            anyhow::Ok((uid, sources, p))
        },
    )
    .await?;
    let feeds: Vec<FeedRef> = published.iter().map(|(_, _, p)| p.feed.clone()).collect();

    let subscriptions: Vec<(String, Vec<FeedRef>, bool)> = match scenario {
        Scenario::Broadcast { fanout } => (0..fanout)
            .map(|i| (format!("s{i}"), vec![feeds[0].clone()], false))
            .collect(),
        Scenario::Sessions { sessions, fanout } => (0..sessions)
            .flat_map(|p| {
                let feed = feeds[p].clone();
                (0..fanout).map(move |i| (format!("s{p}-{i}"), vec![feed.clone()], false))
            })
            .collect(),
        Scenario::Conference { participants } => (0..participants)
            .map(|i| {
                let others = feeds
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, f)| f.clone())
                    .collect();
                (format!("p{i}"), others, true)
            })
            .collect(),
    };
    let receivers = in_batches(
        subscriptions,
        concurrency,
        "subscribers",
        |(uid, feeds, publishing)| async move {
            target
                .subscribe(&uid, &feeds, publishing)
                .await
                .with_context(|| format!("subscriber {uid}"))
        },
    )
    .await?;
    let mut peers: Vec<Peer> = published
        .into_iter()
        .map(|(_, sources, p)| Peer {
            link: p.link,
            sources,
            repaired: p.repaired,
            names: p.names,
            rtx: Vec::new(),
        })
        .collect();
    for (i, r) in receivers.into_iter().enumerate() {
        match r.link {
            Some(link) => peers.push(Peer {
                link,
                sources: Vec::new(),
                repaired: Vec::new(),
                names: Vec::new(),
                rtx: r.rtx,
            }),
            // A conference's participant `i` receives on the link it publishes on.
            None => {
                if let Some(p) = peers.get_mut(i) {
                    p.rtx = r.rtx;
                }
            }
        }
    }
    Ok(Room { peers })
}

/// Run `scenario` against `target` and measure it.
pub async fn run(
    target: &Target,
    topology: &Topology,
    kind: ServerKind,
    profile: Profile,
    scenario: Scenario,
    opts: &RunOptions,
) -> anyhow::Result<Record> {
    let setup_started = Instant::now();
    let room = tokio::time::timeout(
        opts.setup_timeout,
        connect_everyone(target, scenario, opts.media, opts.concurrency, opts.quality),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting everyone took over {:?}", opts.setup_timeout))??;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let receivers = match scenario {
        Scenario::Broadcast { fanout } => fanout,
        Scenario::Conference { participants } => participants,
        Scenario::Sessions { sessions, fanout } => sessions * fanout,
    };

    let base = Instant::now();
    let base_ns = clock_ns();
    let at_ns = |t: Instant| base_ns + t.duration_since(base).as_nanos() as u64;
    let start = base + Duration::from_millis(200);
    let t0 = start + Duration::from_secs_f64(opts.warmup);
    let t1 = t0 + Duration::from_secs_f64(opts.seconds);
    let stop = t1 + Duration::from_millis(500);
    let window = Window {
        start_ns: at_ns(t0),
        end_ns: at_ns(t1),
    };
    let progress = Arc::new(Progress::default());
    let publishers = scenario.publishers().max(1) as u32;
    let feedback = opts.feedback || opts.quality;
    let mut tasks = Vec::with_capacity(room.peers.len());
    let mut senders = Vec::new();
    let mut publisher_sides = Vec::new();
    let now = Instant::now();
    for (i, peer) in room.peers.into_iter().enumerate() {
        let Peer {
            mut link,
            mut sources,
            repaired,
            names,
            rtx,
        } = peer;
        // Publishers start spread over one video frame, so that their frames do not leave
        // together, and their keyframes spread over a keyframe interval, as independent
        // encoders' do.
        let share = f64::from(i as u32 % publishers) / f64::from(publishers);
        let phase = Duration::from_secs_f64(share / f64::from(opts.media.fps));
        for s in sources.iter_mut() {
            s.schedule_from(start + phase);
            s.shift_keyframes(share);
        }
        let sender = if sources.is_empty() {
            None
        } else {
            let mut s = MediaSender::new(link.split_sender()?, feedback, &repaired, &names);
            s.set_loss(opts.loss);
            let s = Arc::new(Mutex::new(s));
            senders.push((s.clone(), sources));
            publisher_sides.push(s.clone());
            Some(s)
        };
        let feedback_of_peer = feedback.then(|| {
            // Without `quality`, the subscriptions negotiated no transport-wide congestion
            // control, so the receiver sends none.
            let mut receiver = ReceiverFeedback::new(now, opts.quality);
            for &(media, r) in &rtx {
                receiver.pair_rtx(media, r);
            }
            PeerFeedback { receiver, sender }
        });
        tasks.push(tokio::spawn(receive(
            link,
            feedback_of_peer,
            opts.loss,
            window,
            stop,
            progress.clone(),
        )));
    }
    let pacer = {
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || pace(senders, window, t1, &progress))
            .context("starting the pacer thread")?
    };

    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = (0, 0);
            let mut tick = tokio::time::interval_at(start.into(), Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = (
                    progress.sent.load(Ordering::Relaxed),
                    progress.delivered.load(Ordering::Relaxed),
                );
                let phase = match Instant::now() {
                    t if t < t0 => "warm-up",
                    t if t < t1 => "measuring",
                    _ => "draining",
                };
                eprintln!(
                    "  {phase:>9}: sent {:>7} pkt/s, delivered {:>8} pkt/s",
                    now.0 - last.0,
                    now.1 - last.1
                );
                last = now;
            }
        })
    };

    let pid = target.pid();
    sleep_until(t0.into()).await;
    let (start_meter, fwd0) = (Meter::read(pid, topology)?, target.counters().await);
    sleep_until(t1.into()).await;
    let (end_meter, fwd1) = (Meter::read(pid, topology)?, target.counters().await);
    let measured = end_meter.since(&start_meter);
    let elapsed = measured.elapsed;
    let rss = rss_kib(pid);
    let mut latency = Latency::new();
    let (mut received, mut srtp_errors, mut unprobed) = (0, 0, 0);
    let mut counts = FeedbackCounts::default();
    let (sent, lateness) = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .context("waiting for the pacer")?
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    for t in tasks {
        let r = t.await.context("peer task")?;
        latency.merge(&r.latency);
        received += r.received_in_window;
        srtp_errors += r.srtp_errors;
        unprobed += r.unprobed;
        counts.reports_sent += r.feedback.reports;
        counts.nacked_by_receivers += r.feedback.nacked;
        counts.twcc_sent_by_receivers += r.feedback.twcc_sent;
    }
    ticker.abort();
    for s in &publisher_sides {
        let c: SenderCounts = s.lock().map(|s| s.counts).unwrap_or_default();
        counts.nacked_by_server += c.nacked;
        counts.rtx_sent_by_publishers += c.rtx_sent;
        counts.twcc_received_by_publishers += c.twcc_received;
    }
    if let Some(end) = &fwd1 {
        let t = &end.totals;
        counts.server_nacks_received = Some(t.nacks_received);
        counts.server_retransmissions_sent = Some(t.retransmissions_sent);
        counts.server_twcc_feedback_sent = Some(t.twcc_feedback_sent);
        counts.server_nacks_sent = Some(t.nacks_sent);
    }

    let base = Record::of(crate::record::Run {
        kind,
        cores: target.cores(),
        scenario,
        receivers,
        profile,
        topology: topology.delivery,
        opts,
        setup_seconds,
        sent,
        received,
        latency: &latency,
        lateness: &lateness,
        measured: &measured,
        rss_kib: rss,
        unprobed,
    });
    Ok(Record {
        server_forwarded_pps: match (&fwd0, &fwd1) {
            (Some(a), Some(b)) => Some(b.forwarded.saturating_sub(a.forwarded) as f64 / elapsed),
            _ => None,
        },
        server_forwarded_pps_by_core: match (&fwd0, &fwd1) {
            (Some(a), Some(b)) => b
                .forwarded_by_core
                .iter()
                .zip(&a.forwarded_by_core)
                .map(|(b, a)| b.saturating_sub(*a) as f64 / elapsed)
                .collect(),
            _ => Vec::new(),
        },
        server_delay: match (&fwd0, &fwd1) {
            (Some(a), Some(b)) => Some(Latency::summary_of(&b.delay.since(&a.delay))),
            _ => None,
        },
        srtp_errors,
        feedback,
        link_loss: opts.loss,
        feedback_counts: feedback.then_some(counts),
        quality: opts.quality,
        quality_counts: fwd1.as_ref().filter(|_| opts.quality).map(|end| {
            let t = &end.totals;
            QualityCounts {
                twcc_feedback_received: t.twcc_feedback_received,
                simulcast_ssrcs_learnt: t.simulcast_ssrcs_learnt,
                layer_switches: t.layer_switches,
                rtp_other_layer: t.rtp_other_layer,
                rtp_paced: t.rtp_paced,
                pacing_delay_p50_us: t.pacing_delay.quantile(0.5),
                pacing_delay_max_us: t.pacing_delay.quantile(1.0),
                probe_packets_sent: t.probe_packets_sent,
                subscriptions_paused: t.subscriptions_paused,
            }
        }),
        ..base
    })
}
