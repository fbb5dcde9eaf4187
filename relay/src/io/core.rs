//! One core's event loop: a `tokio-uring` runtime on a pinned thread.
//!
//! Four local tasks share the core's [`Worker`] through an `Rc<RefCell<_>>` (one thread, so no
//! lock): the receive loop, the timer, the control loop (woken through a `Notify` after the
//! control plane pushes a command into the core's crossbeam channel) and the DTLS egress loop.
//! No `RefCell` borrow is ever held across an `.await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ::dtls::crypto::Certificate;
use crossbeam_channel::{Receiver, TryRecvError};
use tokio::sync::{mpsc, Notify};
use tokio_uring::net::{TcpListener, UdpSocket};

use crate::command::Command;
use crate::control::Event;
use crate::engine::dtls_record::{RecordLayer, RecordOutput};
use crate::engine::srtp::SrtpProfile;
use crate::ids::ParticipantKey;
use crate::io::batch::{self, BatchSocket, BATCH};
use crate::io::dtls::{self, ChannelConn};
use crate::io::gso::{self, Grouping, Run, Step};
use crate::io::ice_tcp::{self, Connections};
use crate::io::Egress;
use crate::sfu::cross_core::CrossCore;
use crate::sfu::worker::{Output, Transmit, Worker, WorkerConfig};
use nix::errno::Errno;

/// Receive buffer: larger than any datagram a WebRTC peer sends (they stay under the path MTU).
const RECV_BUFFER: usize = 4096;

/// Copies a core lets queue up before sending them, mid-batch if need be: two `sendmmsg`
/// calls. More costs latency (the first copy waits for the last to be made) and buffers, fewer
/// costs system calls: a paced 30-person conference at ~80% of a core measured a p99 forwarding
/// delay of 0.7 – 1.2 ms with 128, no better with 64 or 256, worse with 32 (1.7 – 6.7 ms), and
/// 1024 was worse too when last measured.
const MAX_PENDING_OUTPUTS: usize = 128;

/// DTLS records queued per handshake before further ones are dropped.
const DTLS_QUEUE: usize = 64;

/// When the kernel started and finished taking one flush's datagrams (wall clock, to compare
/// with the kernel's receive stamps).
#[derive(Clone, Copy)]
struct SendSpan {
    started: SystemTime,
    ended: SystemTime,
}

/// Everything a core thread needs, prepared by [`crate::Relay::start`].
pub(crate) struct CoreSetup {
    pub(crate) socket: std::net::UdpSocket,
    /// The ICE-TCP listener on the same address, where ICE-TCP is on.
    pub(crate) tcp: Option<std::net::TcpListener>,
    pub(crate) commands: Receiver<Command>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) certificate: Certificate,
    pub(crate) worker: WorkerConfig,
    pub(crate) pin: Option<core_affinity::CoreId>,
    pub(crate) egress: Egress,
    pub(crate) gso: bool,
    /// Messages from other cores, and what wakes this core for them.
    pub(crate) inbox: Receiver<CrossCore>,
    pub(crate) inbox_notify: Arc<Notify>,
    /// Every core's inbox (indexed by core; this core's own is unused).
    pub(crate) peers: Vec<Peer>,
    /// The recorder's queue, where the relay records.
    pub(crate) record: Option<crossbeam_channel::Sender<crate::record::recording::RecordPacket>>,
    pub(crate) ready: std::sync::mpsc::Sender<()>,
}

/// The sending side of another core's inbox.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) queue: crossbeam_channel::Sender<CrossCore>,
    pub(crate) notify: Arc<Notify>,
}

pub(super) struct Shell {
    pub(super) worker: RefCell<Worker>,
    peers: Vec<Peer>,
    /// Which peers were handed messages during the current drain (each is woken once).
    peers_to_wake: RefCell<Vec<bool>>,
    socket: UdpSocket,
    /// The send side of batched I/O (the receive side is the receive loop's own).
    batch: RefCell<BatchSocket>,
    fd: std::os::fd::RawFd,
    /// Whether the kernel stamps received datagrams (for the forwarding delay).
    stamped: bool,
    egress: Egress,
    /// Reused between flushes so that collecting a fan-out does not allocate.
    scratch: RefCell<Vec<Transmit>>,
    /// Whether UDP GSO works on this socket (turned off at the first refusal).
    gso: std::cell::Cell<bool>,
    /// Reused between flushes: the steps of the last one's sending and the GSO runs they name.
    gso_plan: RefCell<(Vec<Step>, Vec<Run>)>,
    /// Reused between flushes: sorts a flush's datagrams by destination for the plan.
    grouping: RefCell<Grouping>,
    local: SocketAddr,
    certificate: Certificate,
    events: mpsc::Sender<Event>,
    record: Option<crossbeam_channel::Sender<crate::record::recording::RecordPacket>>,
    dtls_inboxes: RefCell<HashMap<ParticipantKey, mpsc::Sender<Vec<u8>>>>,
    dtls_tasks: RefCell<HashMap<ParticipantKey, tokio::task::JoinHandle<()>>>,
    /// Each connected participant's DTLS record layer, once its handshake is done. Boxed, as
    /// the worker's participants are: a layer is about 2.2 KB, and the map's empty slots then
    /// cost a pointer each.
    dtls_records: RefCell<HashMap<ParticipantKey, Box<RecordLayer>>>,
    dtls_egress: mpsc::UnboundedSender<(ParticipantKey, Vec<u8>)>,
    /// The deadline the timer task sleeps until, and what wakes it when the worker's next
    /// deadline comes earlier than that.
    timer_at: std::cell::Cell<Option<Instant>>,
    timer_rearm: Notify,
    /// The core's ICE-TCP connections (none when ICE-TCP is off).
    pub(super) tcp: Connections,
}

/// Run a core until it receives `Command::Shutdown` or its command channel closes.
pub(crate) fn run(setup: CoreSetup) {
    if let Some(id) = setup.pin {
        core_affinity::set_for_current(id);
    }
    tokio_uring::start(async move {
        let local = match setup.socket.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&setup.socket);
        let stamped = match batch::enable_receive_timestamps(&setup.socket) {
            Ok(()) => true,
            Err(e) => {
                tracing::info!("no receive timestamps ({e}); forwarding delay not measured");
                false
            }
        };
        // Sends need no receive buffers.
        let batch = BatchSocket::new(fd, 0);
        let socket = UdpSocket::from_std(setup.socket);
        let (egress_tx, egress_rx) = mpsc::unbounded_channel();
        let seed = rand::random();
        let shell = Rc::new(Shell {
            worker: RefCell::new(Worker::new(
                setup.worker,
                Instant::now(),
                SystemTime::now(),
                seed,
            )),
            peers_to_wake: RefCell::new(vec![false; setup.peers.len()]),
            peers: setup.peers,
            socket,
            batch: RefCell::new(batch),
            fd,
            stamped,
            egress: setup.egress,
            scratch: RefCell::new(Vec::new()),
            gso_plan: RefCell::new((Vec::new(), Vec::new())),
            grouping: RefCell::new(Grouping::default()),
            gso: std::cell::Cell::new(setup.gso),
            local,
            certificate: setup.certificate,
            events: setup.events,
            record: setup.record,
            dtls_inboxes: RefCell::new(HashMap::new()),
            dtls_tasks: RefCell::new(HashMap::new()),
            dtls_records: RefCell::new(HashMap::new()),
            dtls_egress: egress_tx,
            timer_at: std::cell::Cell::new(None),
            timer_rearm: Notify::new(),
            tcp: Connections::default(),
        });
        let _ = setup.ready.send(());

        let egress = tokio_uring::spawn(dtls_egress_loop(shell.clone(), egress_rx));
        let timer = tokio_uring::spawn(timer_loop(shell.clone()));
        let cross_core = tokio_uring::spawn(cross_core_loop(
            shell.clone(),
            setup.inbox,
            setup.inbox_notify,
        ));
        let tcp = setup.tcp.map(|listener| {
            tokio_uring::spawn(ice_tcp::accept_loop(
                shell.clone(),
                TcpListener::from_std(listener),
            ))
        });
        tokio::select! {
            _ = control_loop(shell.clone(), setup.commands, setup.notify) => {}
            _ = recv_loop(shell.clone()) => {}
        }
        egress.abort();
        timer.abort();
        cross_core.abort();
        if let Some(tcp) = tcp {
            tcp.abort();
        }
        for (_, task) in shell.dtls_tasks.borrow_mut().drain() {
            task.abort();
        }
        shell.dtls_inboxes.borrow_mut().clear();
        shell.dtls_records.borrow_mut().clear();
    });
}

impl Shell {
    /// Drain the worker's outputs; returns the datagrams to send.
    fn drain(self: &Rc<Self>) -> Vec<Transmit> {
        let mut sends = std::mem::take(&mut *self.scratch.borrow_mut());
        // Read once, when a record layer first needs it.
        let mut now = None;
        loop {
            // The borrow ends with this statement, before any branch below re-enters.
            let output = self.worker.borrow_mut().poll_output();
            match output {
                None => break,
                Some(Output::Transmit(t)) => sends.push(t),
                Some(Output::DtlsStart {
                    key,
                    remote_fingerprint,
                    profiles,
                }) => self.start_dtls(key, remote_fingerprint, &profiles),
                Some(Output::DtlsRecord { key, data }) => {
                    if let Some(layer) = self.dtls_records.borrow_mut().get_mut(&key) {
                        layer.handle_datagram(*now.get_or_insert_with(Instant::now), &data);
                    } else {
                        let full = match self.dtls_inboxes.borrow().get(&key) {
                            Some(inbox) => inbox.try_send(data).is_err(),
                            None => false,
                        };
                        if full {
                            self.worker.borrow_mut().handle_dtls_queue_full();
                        }
                        continue;
                    }
                    self.take_records(*now.get_or_insert_with(Instant::now), key, &mut sends);
                }
                Some(Output::Sctp { key, packet }) => {
                    let sealed = self
                        .dtls_records
                        .borrow_mut()
                        .get_mut(&key)
                        .and_then(|layer| layer.seal(&packet).ok());
                    match sealed {
                        Some(record) => self.push_dtls(key, record, &mut sends),
                        None => self.worker.borrow_mut().handle_sctp_not_sent(),
                    }
                }
                Some(Output::DtlsClose(key)) => {
                    self.dtls_inboxes.borrow_mut().remove(&key);
                    self.dtls_records.borrow_mut().remove(&key);
                    if let Some(task) = self.dtls_tasks.borrow_mut().remove(&key) {
                        task.abort();
                    }
                }
                Some(Output::Event(e)) => {
                    if self.events.try_send(e).is_err() {
                        tracing::warn!("event queue full or closed; event dropped");
                    }
                }
                Some(Output::Record(packet)) => {
                    let handed = match &self.record {
                        Some(queue) => queue.try_send(*packet).is_ok(),
                        None => false,
                    };
                    if !handed {
                        self.worker.borrow_mut().handle_record_queue_full();
                    }
                }
                Some(Output::CrossCore { core, message }) => {
                    let Some(peer) = self.peers.get(core) else {
                        continue;
                    };
                    if peer.queue.try_send(message).is_ok() {
                        self.peers_to_wake.borrow_mut()[core] = true;
                    } else {
                        self.worker.borrow_mut().handle_cross_core_queue_full();
                    }
                }
            }
        }
        // An input may have brought a deadline earlier than the one the timer sleeps for.
        let next = self.worker.borrow().poll_timeout();
        if comes_before(next, self.timer_at.get()) {
            self.timer_at.set(next);
            self.timer_rearm.notify_one();
        }
        // One wake-up per peer per drain, not per packet.
        for (core, wake) in self.peers_to_wake.borrow_mut().iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.peers[core].notify.notify_one();
            }
        }
        sends
    }

    /// Act on what `key`'s record layer made of a datagram: plaintext to the worker's data
    /// channels, datagrams to the participant, the close to the worker.
    fn take_records(self: &Rc<Self>, now: Instant, key: ParticipantKey, sends: &mut Vec<Transmit>) {
        loop {
            // The borrow ends with this statement, before the worker is called.
            let output = self
                .dtls_records
                .borrow_mut()
                .get_mut(&key)
                .and_then(|layer| layer.poll_output());
            match output {
                None => break,
                Some(RecordOutput::Data(packet)) => {
                    self.worker.borrow_mut().handle_sctp(now, key, &packet)
                }
                Some(RecordOutput::Transmit(datagram)) => self.push_dtls(key, datagram, sends),
                Some(RecordOutput::Closed) => {
                    self.dtls_records.borrow_mut().remove(&key);
                    self.worker.borrow_mut().handle_dtls_closed(key);
                }
                Some(RecordOutput::Dropped(reason)) => {
                    tracing::debug!(?key, %reason, "DTLS record dropped");
                    self.worker.borrow_mut().handle_dtls_record_dropped();
                }
            }
        }
    }

    /// A DTLS datagram for `key`, to its current address, counted as sent.
    fn push_dtls(&self, key: ParticipantKey, datagram: Vec<u8>, sends: &mut Vec<Transmit>) {
        let dst = self
            .worker
            .borrow_mut()
            .dtls_destination(key, datagram.len());
        if let Some(destination) = dst {
            sends.push(Transmit {
                destination,
                contents: datagram,
            });
        }
    }

    /// Send what is queued if a batch's fan-out has grown past [`MAX_PENDING_OUTPUTS`], so a
    /// burst to many subscribers does not hold thousands of buffers at once. None if it did not
    /// send, else as [`Shell::flush_with`].
    async fn flush_if_full(self: &Rc<Self>) -> Option<SendSpan> {
        if self.worker.borrow().pending_outputs() >= MAX_PENDING_OUTPUTS {
            return self.flush_with(true).await;
        }
        None
    }

    /// Hand a received datagram to the worker, noting when it arrived and how many
    /// datagrams it made the worker send, for [`Shell::account_delays`] after the flush.
    pub(super) fn receive(
        &self,
        now: Instant,
        arrived: Option<SystemTime>,
        src: SocketAddr,
        datagram: &[u8],
        waiting: &mut Vec<(SystemTime, u64)>,
    ) {
        let mut worker = self.worker.borrow_mut();
        let before = worker.packets_out();
        worker.handle_receive(now, arrived, src, datagram);
        note_wait(waiting, arrived, worker.packets_out() - before);
    }

    /// The datagrams of `waiting` have just been handed to the kernel, in that order, during
    /// `span`: record how long each spent in the relay.
    fn account_delays(&self, waiting: &mut Vec<(SystemTime, u64)>, span: Option<SendSpan>) {
        if let Some(span) = span {
            let mut worker = self.worker.borrow_mut();
            for delay in copy_delays(waiting, span) {
                worker.record_forwarding_delay(delay);
            }
        }
        waiting.clear();
    }

    /// Drain outputs and send them, then return their buffers to the worker's pool.
    pub(super) async fn flush(self: &Rc<Self>) {
        self.flush_with(false).await;
    }

    /// [`Shell::flush`] after handling several datagrams: copies to one destination may be
    /// several, worth sending together with GSO. Returns when the kernel started and finished
    /// taking the datagrams, if there were any and the core measures forwarding delay.
    async fn flush_with(self: &Rc<Self>, bursty: bool) -> Option<SendSpan> {
        let mut sends = self.drain();
        self.divert_tcp(&mut sends);
        if sends.is_empty() {
            *self.scratch.borrow_mut() = sends;
            return None;
        }
        let started = self.stamped.then(SystemTime::now);
        match self.egress {
            Egress::Sendmmsg if bursty && self.gso.get() && sends.len() > 1 => {
                self.send_grouped(&mut sends).await
            }
            Egress::Sendmmsg => self.send_batched(&mut sends).await,
            Egress::Uring => self.send_uring(&mut sends).await,
        }
        let span = started.map(|started| SendSpan {
            started,
            ended: SystemTime::now(),
        });
        let mut worker = self.worker.borrow_mut();
        for t in sends.drain(..) {
            worker.recycle(t.contents);
        }
        drop(worker);
        *self.scratch.borrow_mut() = sends;
        span
    }

    /// Queue what goes to ICE-TCP connections on them; the rest stays for the UDP socket.
    fn divert_tcp(&self, sends: &mut Vec<Transmit>) {
        let mut worker = self.worker.borrow_mut();
        let dropped = self.tcp.divert(sends, |buffer| worker.recycle(buffer));
        worker.ice_tcp_stats().frames_dropped += dropped;
    }

    /// `sendmmsg` in batches; when the socket's send buffer is full, wait for room through the
    /// ring with the datagram that did not fit, then carry on.
    async fn send_batched(self: &Rc<Self>, sends: &mut [Transmit]) {
        let mut from = 0;
        let mut failed = 0;
        while from < sends.len() {
            let report = self.batch.borrow_mut().send(&sends[from..]);
            failed += report.failed;
            let Some(blocked) = report.blocked_at else {
                break;
            };
            let t = &mut sends[from + blocked];
            let (sent, buffer) = self
                .socket
                .send_to(std::mem::take(&mut t.contents), t.destination)
                .await;
            if let Err(e) = sent {
                tracing::debug!("send to {}: {e}", t.destination);
                failed += 1;
            }
            t.contents = buffer;
            from += blocked + 1;
        }
        if failed > 0 {
            self.worker.borrow_mut().handle_send_failed(failed);
        }
    }

    /// Copies to the same destination go together as one GSO send (a keyframe burst to a
    /// subscriber), and GSO sends of one segment size together in one `sendmmsg` (the same
    /// burst to every subscriber); the rest by `sendmmsg` ([`gso::plan`]). Reorders across
    /// destinations, never within one.
    async fn send_grouped(self: &Rc<Self>, sends: &mut Vec<Transmit>) {
        // Each destination's packets keep their order.
        self.grouping.borrow_mut().group(sends);
        // Taken, not borrowed, across the awaits below.
        let (mut steps, mut runs) = std::mem::take(&mut *self.gso_plan.borrow_mut());
        gso::plan(sends, &mut steps, &mut runs);
        for step in &steps {
            match *step {
                Step::Singles(start, end) => self.send_batched(&mut sends[start..end]).await,
                Step::Runs(start, end) => self.send_runs(sends, &runs[start..end]).await,
            }
        }
        *self.gso_plan.borrow_mut() = (steps, runs);
    }

    /// GSO runs of one segment size ([`BatchSocket::send_runs`]); what the kernel cannot take
    /// now, or at all, goes datagram by datagram.
    async fn send_runs(self: &Rc<Self>, sends: &mut [Transmit], runs: &[Run]) {
        // The group's segment size, from its first run (two or more datagrams: `gso::plan`),
        // kept for what is left after a partial send.
        let size = runs
            .first()
            .map_or(0, |&(start, _)| sends[start].contents.len()) as u16;
        let mut from = 0;
        while from < runs.len() && self.gso.get() {
            let result = self
                .batch
                .borrow_mut()
                .send_runs(sends, &runs[from..], size);
            match result {
                // Nothing taken cannot happen for a run within the kernel's limits (`gso_run`
                // keeps to them); were it to, the rest goes one by one.
                Ok(0) => break,
                Ok(n) => {
                    let datagrams = runs[from..from + n].iter().map(|(s, e)| e - s).sum();
                    self.worker.borrow_mut().handle_gso_sent(datagrams);
                    from += n;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => break,
                // One destination refused (a participant's network went away, or its path's
                // MTU is under the segment size): the rest of this flush goes datagram by
                // datagram, which fragments or counts what is refused; GSO stays on.
                Err(e) if BatchSocket::refused_for_destination(e) => break,
                Err(e) => {
                    // No GSO here (old kernel, or a device without it): stop trying.
                    tracing::info!("UDP GSO unavailable ({e}); sending datagrams one by one");
                    self.gso.set(false);
                }
            }
        }
        for &(start, end) in &runs[from..] {
            self.send_batched(&mut sends[start..end]).await;
        }
    }

    /// One io_uring operation per datagram, all submitted before any is awaited.
    async fn send_uring(self: &Rc<Self>, sends: &mut [Transmit]) {
        let ops = sends.iter_mut().map(|t| {
            let contents = std::mem::take(&mut t.contents);
            self.socket.send_to(contents, t.destination)
        });
        let results = futures::future::join_all(ops).await;
        let mut failed = 0;
        for (t, (sent, buffer)) in sends.iter_mut().zip(results) {
            if let Err(e) = sent {
                tracing::debug!("send to {}: {e}", t.destination);
                failed += 1;
            }
            t.contents = buffer;
        }
        if failed > 0 {
            self.worker.borrow_mut().handle_send_failed(failed);
        }
    }

    fn start_dtls(
        self: &Rc<Self>,
        key: ParticipantKey,
        remote_fingerprint: Option<String>,
        profiles: &[SrtpProfile],
    ) {
        let (tx, rx) = mpsc::channel(DTLS_QUEUE);
        self.dtls_inboxes.borrow_mut().insert(key, tx);
        let conn = Arc::new(ChannelConn::new(
            rx,
            self.dtls_egress.clone(),
            key,
            self.local,
            self.local,
        ));
        let config = dtls::config(&self.certificate, profiles, remote_fingerprint);
        let shell = self.clone();
        let task = tokio_uring::spawn(async move {
            let result = async {
                let dtls = ::dtls::conn::DTLSConn::new(conn.clone(), config, false, None)
                    .await
                    .map_err(|e| e.to_string())?;
                dtls::finish(&dtls, &conn).await
                // The library's connection drops here, and its tasks end with it (no
                // close_notify: the association goes on in the record layer).
            }
            .await;
            // Not registered any more means the participant was removed meanwhile.
            if shell.dtls_inboxes.borrow_mut().remove(&key).is_none() {
                return;
            }
            shell.dtls_tasks.borrow_mut().remove(&key);
            let now = Instant::now();
            match result.and_then(|(keys, established)| {
                let layer = RecordLayer::new(established).map_err(|e| e.to_string())?;
                Ok((keys, layer))
            }) {
                Ok((keys, layer)) => {
                    shell.dtls_records.borrow_mut().insert(key, Box::new(layer));
                    shell
                        .worker
                        .borrow_mut()
                        .handle_dtls_connected(now, key, keys);
                }
                Err(detail) => shell.worker.borrow_mut().handle_dtls_failed(key, detail),
            }
            shell.flush().await;
        });
        self.dtls_tasks.borrow_mut().insert(key, task);
    }
}

/// A datagram (or another core's packet) that arrived at `arrived` made the worker send `sent`
/// datagrams: they wait for the next flush to have their delay counted.
fn note_wait(waiting: &mut Vec<(SystemTime, u64)>, arrived: Option<SystemTime>, sent: u64) {
    if let (Some(at), true) = (arrived, sent > 0) {
        waiting.push((at, sent));
    }
}

/// How long each datagram of `waiting` (arrival time, datagrams sent in response) spent in the
/// relay, in send order, when the kernel took them all during `span`. The kernel's time per
/// datagram is about the same for each, so the k-th of n is taken to have left k/n into the
/// span. A wall clock stepped backwards reads as no wait.
fn copy_delays(
    waiting: &[(SystemTime, u64)],
    span: SendSpan,
) -> impl Iterator<Item = Duration> + '_ {
    let total: u64 = waiting.iter().map(|w| w.1).sum();
    let sending = span.ended.duration_since(span.started).unwrap_or_default();
    let sending_ns = u64::try_from(sending.as_nanos()).unwrap_or(u64::MAX);
    let mut position = 0u64;
    waiting.iter().flat_map(move |&(arrived, datagrams)| {
        let queued = span.started.duration_since(arrived).unwrap_or_default();
        let first = position;
        position += datagrams;
        (first + 1..=first + datagrams)
            .map(move |k| queued + Duration::from_nanos(sending_ns.saturating_mul(k) / total))
    })
}

async fn recv_loop(shell: Rc<Shell>) {
    let mut buf = vec![0u8; RECV_BUFFER];
    // The receive side of batched I/O belongs to this task alone.
    let mut receiver = BatchSocket::new(shell.fd, RECV_BUFFER);
    if shell.stamped {
        receiver.expect_timestamps();
    }
    // When each datagram handled since the last send arrived, and how many datagrams it made
    // the worker send.
    let mut waiting: Vec<(SystemTime, u64)> = Vec::with_capacity(MAX_PENDING_OUTPUTS);
    loop {
        // Sleep in the ring until a datagram arrives...
        let (result, b) = shell.socket.recv_from(buf).await;
        buf = b;
        let now = Instant::now();
        match result {
            // The ring does not return the kernel's stamp. This datagram woke an idle core,
            // so it waited in the socket only as long as the wake-up took, which is not
            // counted.
            Ok((n, src)) => shell.receive(
                now,
                shell.stamped.then(SystemTime::now),
                src,
                &buf[..n],
                &mut waiting,
            ),
            Err(e) => {
                // ICMP errors from earlier sends surface here (ECONNREFUSED); they concern
                // one peer, not the socket.
                tracing::debug!("recv_from: {e}");
            }
        }
        // ...then take what queued up meanwhile, a batch at a time, sending each batch's
        // output before reading the next so that latency and buffers stay bounded.
        let mut held = 1;
        loop {
            let taken = receiver.recv();
            let now = Instant::now();
            for i in 0..taken {
                if let Some((src, datagram)) = receiver.datagram(i) {
                    let arrived = receiver.received_at(i);
                    shell.receive(now, arrived, src, datagram, &mut waiting);
                }
                if let Some(span) = shell.flush_if_full().await {
                    shell.account_delays(&mut waiting, Some(span));
                }
            }
            let span = shell.flush_with(held + taken > 1).await;
            shell.account_delays(&mut waiting, span);
            if taken < BATCH {
                break;
            }
            held = 0;
        }
    }
}

/// Messages from other cores: packets of feeds published there, keyframe requests for feeds
/// published here. Drained a batch at a time like the socket.
async fn cross_core_loop(shell: Rc<Shell>, inbox: Receiver<CrossCore>, notify: Arc<Notify>) {
    // As in the receive loop, for the forwarding delay: packets carry the origin core's
    // receive stamp.
    let mut waiting: Vec<(SystemTime, u64)> = Vec::with_capacity(MAX_PENDING_OUTPUTS);
    loop {
        notify.notified().await;
        loop {
            let now = Instant::now();
            let mut taken = 0;
            {
                let mut worker = shell.worker.borrow_mut();
                while taken < BATCH {
                    let Ok(message) = inbox.try_recv() else {
                        break;
                    };
                    let arrived = match &message {
                        CrossCore::Rtp { packet, .. } => packet.arrived,
                        CrossCore::KeyframeRequest { .. }
                        | CrossCore::LayersWanted { .. }
                        | CrossCore::Data(_)
                        | CrossCore::DataHold { .. } => None,
                    };
                    let before = worker.packets_out();
                    worker.handle_cross_core(now, message);
                    note_wait(&mut waiting, arrived, worker.packets_out() - before);
                    taken += 1;
                    if worker.pending_outputs() >= MAX_PENDING_OUTPUTS {
                        break;
                    }
                }
            }
            let span = shell.flush_with(taken > 1).await;
            shell.account_delays(&mut waiting, span);
            if taken == 0 {
                break;
            }
        }
    }
}

/// Sleeps until the worker's next deadline, re-armed by [`Shell::drain`] whenever an input
/// brings an earlier one, so no deadline waits for a fixed tick.
async fn timer_loop(shell: Rc<Shell>) {
    loop {
        let at = shell.worker.borrow().poll_timeout();
        shell.timer_at.set(at);
        let Some(at) = at else {
            shell.timer_rearm.notified().await;
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = shell.timer_rearm.notified() => continue,
        }
        shell.worker.borrow_mut().handle_timeout(Instant::now());
        shell.flush().await;
    }
}

/// Whether deadline `next` must wake a timer that sleeps until `armed`: it is earlier, or the
/// timer sleeps with no deadline at all.
fn comes_before(next: Option<Instant>, armed: Option<Instant>) -> bool {
    match (next, armed) {
        (Some(next), Some(armed)) => next < armed,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

async fn control_loop(shell: Rc<Shell>, commands: Receiver<Command>, notify: Arc<Notify>) {
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return,
                Ok(cmd) => cmd.apply(&mut shell.worker.borrow_mut(), Instant::now()),
                Err(TryRecvError::Empty) => break,
            }
        }
        shell.flush().await;
        notify.notified().await;
    }
}

async fn dtls_egress_loop(
    shell: Rc<Shell>,
    mut egress: mpsc::UnboundedReceiver<(ParticipantKey, Vec<u8>)>,
) {
    // Handshake records that queued up while the last batch was sent go out together, with
    // one `sendmmsg`.
    let mut sends: Vec<Transmit> = Vec::new();
    while let Some(first) = egress.recv().await {
        let mut next = Some(first);
        while let Some((key, record)) = next.take().or_else(|| egress.try_recv().ok()) {
            shell.push_dtls(key, record, &mut sends);
            if sends.len() == BATCH {
                break;
            }
        }
        shell.divert_tcp(&mut sends);
        shell.send_batched(&mut sends).await;
        sends.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_deadline_rearms_the_timer() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(50);
        assert!(comes_before(Some(t0), Some(later)));
        assert!(comes_before(Some(t0), None));
        assert!(!comes_before(Some(later), Some(t0)));
        assert!(!comes_before(Some(t0), Some(t0)));
        assert!(!comes_before(None, Some(t0)));
        assert!(!comes_before(None, None));
    }

    #[test]
    fn copies_are_spread_over_the_send_and_keep_their_wait() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ms = Duration::from_millis;
        let span = SendSpan {
            started: t0 + ms(2),
            ended: t0 + ms(6),
        };
        // Two datagrams each from one that arrived at t0 and one at t0 + 1 ms; four datagrams
        // sent over 4 ms, so one leaves every millisecond.
        let waiting = [(t0, 2), (t0 + ms(1), 2)];
        let delays: Vec<Duration> = copy_delays(&waiting, span).collect();
        assert_eq!(delays, [ms(3), ms(4), ms(4), ms(5)]);
        // Stamped after the send began (the wall clock stepped back): no wait, only the send.
        let waiting = [(t0 + ms(10), 1)];
        assert_eq!(copy_delays(&waiting, span).collect::<Vec<_>>(), [ms(4)]);
        // A span that ends before it starts counts no sending time.
        let backwards = SendSpan {
            started: t0 + ms(2),
            ended: t0,
        };
        assert_eq!(
            copy_delays(&[(t0, 1)], backwards).collect::<Vec<_>>(),
            [ms(2)]
        );
        assert_eq!(copy_delays(&[], span).count(), 0);
    }
}
