//! The servers the load generator measures, behind one interface: our relay (driven through its
//! control API, as signalling drives it) and Janus's VideoRoom (driven through its HTTP API with
//! SDP offer/answer, as a browser application drives it).
//!
//! Both are started fresh for each run, inside the server namespace of a [`Topology`], pinned
//! to the same CPU, and reached by [`WirePeer`]s bound to the load generator's address. A run
//! publishes first ([`Target::publish`]) and subscribes after ([`Target::subscribe`]): Janus
//! refuses subscriptions to a feed whose PeerConnection is not up yet.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use relay::control::{
    FeedDescription, HeaderExtension, MediaKind as RelayKind, ParticipantConfig, PayloadCodec,
    RtxPayloadType, Simulcast, SubscribeOptions, MID_EXTENSION_URI,
};
use relay::ids::{FeedId, Sid, Ssrc, Uid};
use relay::remote::Client;
use relay::sfu::feed::{REPAIRED_RID_URI, RID_URI};
use relay::Control;
use serde_json::json;
use webrtcai_tests::peer::{IceCredentials, IceRole, PeerConfig, SrtpLink, WirePeer};

use crate::feedback::{
    StreamName, PLAYOUT_DELAY_ID, TRANSPORT_CC_ID, TRANSPORT_CC_URI, VIDEO_RTX_PT,
};
use crate::janus::Session;
use crate::janus_process::{JanusLaunch, JanusProcess};
use crate::jsep::{self, LocalDescription, MediaKind, OfferedStream};
use crate::topology::Topology;
use crate::traffic::StreamSource;
use crate::{RelayLaunch, RelayProcess};

/// Header-extension ids a simulcast publisher names its layers with (Chromium's usual ones).
const MID_ID: u8 = 4;
const RID_ID: u8 = 10;
const REPAIRED_RID_ID: u8 = 11;
/// The MID of a publisher's video m-section.
const VIDEO_MID: &str = "1";

/// Running counters a server reports about itself.
#[derive(Debug, Clone)]
pub struct ServerCounters {
    /// RTP copies forwarded.
    pub forwarded: u64,
    /// Time each sent datagram spent inside the server, as it measured it.
    pub delay: relay::stats::DelayHistogram,
    /// Everything else it counts, summed over its cores.
    pub totals: relay::stats::CoreStats,
    /// RTP copies forwarded, by core.
    pub forwarded_by_core: Vec<u64>,
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// This project's relay.
    Relay,
    /// Janus VideoRoom.
    Janus,
    /// The bare forwarder ([`crate::floor`]): what moving the bytes costs any server.
    Floor,
    /// The bare forwarder sending through AF_XDP ([`crate::xdp`]) instead of `sendmmsg`:
    /// what moving the bytes costs below the kernel's UDP send path.
    FloorXdp,
}

impl ServerKind {
    /// The name records and charts use.
    pub fn label(self) -> &'static str {
        match self {
            ServerKind::Relay => "webrtc.ai relay",
            ServerKind::Janus => "Janus 1.1.2 VideoRoom",
            ServerKind::Floor => "bare sendmmsg forwarder",
            ServerKind::FloorXdp => "bare AF_XDP forwarder",
        }
    }
}

/// SRTP protection profile every peer offers (and so every connection uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// SRTP_AES128_CM_HMAC_SHA1_80.
    Sha1,
    /// SRTP_AEAD_AES_128_GCM.
    Gcm,
}

impl Profile {
    fn dtls(self) -> SrtpProtectionProfile {
        match self {
            Profile::Sha1 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            Profile::Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        }
    }
}

/// How a server is started.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The CPU the whole server process is confined to.
    pub cpu: usize,
    /// The relay's cores: with more than one, the process is confined to that many CPUs from
    /// `cpu` on (wrapping round the machine's) and each core is pinned to one of them.
    pub cores: usize,
    /// The relay's `--spread-after` (None: its default).
    pub spread_after: Option<usize>,
    /// Janus's `event_loops` (0: one thread per handle, its default).
    pub janus_event_loops: usize,
    /// Where Janus's output goes.
    pub janus_log: std::path::PathBuf,
}

/// What a subscriber names to receive a publisher's streams.
#[derive(Clone, Debug)]
pub enum FeedRef {
    /// Relay feed ids, in a session.
    Relay(Sid, Vec<FeedId>),
    /// A Janus publisher id.
    Janus(u64),
}

/// A connected publisher.
pub struct Published {
    /// Its media path.
    pub link: SrtpLink,
    /// What subscribers name to receive it.
    pub feed: FeedRef,
    /// (media SSRC, RTX SSRC) of each stream it repairs.
    pub repaired: Vec<(u32, u32)>,
    /// The header-extension elements that name each of its streams (simulcast layers and
    /// their RTX streams), by SSRC.
    pub names: Vec<(u32, StreamName)>,
}

/// A connected subscriber.
pub struct Subscribed {
    /// The link its media arrives on, unless it arrives on the participant's publishing link.
    pub link: Option<SrtpLink>,
    /// (media SSRC, RTX SSRC) of each stream it receives repairs of.
    pub rtx: Vec<(u32, u32)>,
}

/// A started server, ready for participants.
pub enum Target {
    /// Our relay.
    Relay {
        /// The process.
        process: RelayProcess,
        /// Its control connection.
        client: Client,
        /// The session the run uses (the first, where it uses several).
        sid: Sid,
        /// Its cores.
        cores: usize,
        /// Which of the run's sessions exist yet (the first does; others are made by their
        /// first publisher, on the core the relay picks).
        sessions: tokio::sync::Mutex<Vec<bool>>,
        /// How peers connect.
        peer: PeerConfig,
        /// Whether participants negotiate repair and congestion feedback.
        feedback: bool,
        /// Whether video is published as simulcast layers and subscribers negotiate
        /// transport-wide feedback: the relay estimates, paces and picks layers per subscriber.
        quality: bool,
    },
    /// Janus.
    Janus {
        /// The process.
        process: JanusProcess,
        /// The API session the run uses.
        session: Session,
        /// The VideoRoom room.
        room: u64,
        /// How peers connect.
        peer: PeerConfig,
    },
}

fn pinned(topology: &Topology, cpu: usize) -> Vec<String> {
    confined(topology, cpu, 1)
}

/// Run inside `topology`'s namespace on `count` CPUs from `first` on, wrapping round the
/// machine's.
fn confined(topology: &Topology, first: usize, count: usize) -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let list: Vec<String> = (0..count.max(1))
        .map(|i| ((first + i) % cpus).to_string())
        .collect();
    let mut prefix = topology.exec_prefix();
    prefix.extend(["taskset".into(), "-c".into(), list.join(",")]);
    prefix
}

impl Target {
    /// Start `kind` in `topology`'s namespace and prepare a room for `publishers` publishers;
    /// with `feedback`, its participants negotiate NACK, RTX and transport-wide congestion
    /// feedback (the relay only, so far); with `quality` too, video is simulcast and
    /// subscribers negotiate transport-wide feedback (the relay only).
    pub async fn start(
        kind: ServerKind,
        topology: &Topology,
        profile: Profile,
        publishers: usize,
        (feedback, quality): (bool, bool),
        options: &ServerOptions,
    ) -> anyhow::Result<Target> {
        let peer = PeerConfig {
            profiles: vec![profile.dtls()],
            consent_interval: Duration::from_secs(2),
            bind: topology.client_addr,
            role: IceRole::Controlling,
        };
        match kind {
            ServerKind::Relay => {
                let token = format!("{:032x}", rand::random::<u128>());
                let launch = RelayLaunch {
                    prefix: confined(topology, options.cpu, options.cores),
                    bind: topology.server_addr,
                    control: SocketAddr::new(topology.server_addr, 7000),
                    token: token.clone(),
                    cores: options.cores.max(1),
                    // One core: confined by taskset like Janus (the relay's own pinning would
                    // pick CPU 0). Several: each pinned to a CPU of its own within the set.
                    pin: options.cores > 1,
                    spread_after: options.spread_after,
                };
                let process = RelayProcess::launch(&launch).await?;
                let (client, _events) = Client::connect(process.control, Some(token))
                    .await
                    .context("relay control connection")?;
                let sid = Sid::from("loadgen");
                client.create_session(sid.clone(), Some(0)).await?;
                Ok(Target::Relay {
                    process,
                    client,
                    sid,
                    cores: options.cores.max(1),
                    sessions: tokio::sync::Mutex::new(vec![true]),
                    peer,
                    feedback: feedback || quality,
                    quality,
                })
            }
            ServerKind::Floor | ServerKind::FloorXdp => {
                bail!("the bare forwarder is run by `floor::run`")
            }
            ServerKind::Janus if feedback || quality => {
                bail!("runs with browser feedback are implemented for the relay only")
            }
            ServerKind::Janus => {
                let launch = JanusLaunch {
                    prefix: pinned(topology, options.cpu),
                    ip: topology.server_addr,
                    port: 8088,
                    event_loops: options.janus_event_loops,
                    log: options.janus_log.clone(),
                };
                let process = JanusProcess::start(&launch).await?;
                let session = Session::create(process.api).await?;
                let control = session.attach().await?;
                let room = 4242;
                session
                    .request(
                        &control,
                        json!({"request": "create", "room": room, "publishers": publishers.max(1),
                               "bitrate": 0, "fir_freq": 0, "audiocodec": "opus",
                               "videocodec": "vp8", "permanent": false}),
                    )
                    .await
                    .context("creating the VideoRoom room")?;
                Ok(Target::Janus {
                    process,
                    session,
                    room,
                    peer,
                })
            }
        }
    }

    /// Stop the server and wait until it is gone (its ports are free again).
    pub async fn stop(self) {
        match self {
            Target::Relay {
                mut process,
                client,
                ..
            } => {
                drop(client);
                let _ = process.child.kill().await;
            }
            Target::Janus {
                process, session, ..
            } => {
                drop(session);
                process.stop().await;
            }
        }
    }

    /// The server's cores (the relay's; 1 for Janus, confined to one CPU).
    pub fn cores(&self) -> usize {
        match self {
            Target::Relay { cores, .. } => *cores,
            Target::Janus { .. } => 1,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        match self {
            Target::Relay { process, .. } => process.pid(),
            Target::Janus { process, .. } => process.pid(),
        }
    }

    /// What the server counts about itself so far, where it does (the relay, through its
    /// control API).
    pub async fn counters(&self) -> Option<ServerCounters> {
        match self {
            Target::Relay { client, .. } => {
                let cores = client.stats().await.ok()?;
                let mut total = relay::stats::CoreStats::default();
                for c in &cores {
                    total.accumulate(c);
                }
                Some(ServerCounters {
                    forwarded_by_core: cores.iter().map(|c| c.rtp_forwarded).collect(),
                    forwarded: total.rtp_forwarded,
                    delay: total.forwarding_delay.clone(),
                    totals: total,
                })
            }
            Target::Janus { .. } => None,
        }
    }

    /// Connect a publisher of `streams` as participant `uid` in the run's session number
    /// `session` (the first is 0; Janus has only that one).
    pub async fn publish(
        &self,
        session: usize,
        uid: &str,
        streams: &[StreamSource],
    ) -> anyhow::Result<Published> {
        match self {
            Target::Relay {
                client,
                sid,
                sessions,
                peer,
                feedback,
                quality,
                ..
            } => {
                let sid = &if session == 0 {
                    sid.clone()
                } else {
                    Sid::from(format!("{sid}-{session}"))
                };
                {
                    let mut made = sessions.lock().await;
                    if made.len() <= session {
                        made.resize(session + 1, false);
                    }
                    if !made[session] {
                        client.create_session(sid.clone(), None).await?;
                        made[session] = true;
                    }
                }
                let link = relay_join(client, sid, uid, peer).await?;
                let mut feeds = Vec::new();
                let mut repaired = Vec::new();
                let mut names = Vec::new();
                let layers: Vec<&StreamSource> = streams
                    .iter()
                    .filter(|s| s.kind == MediaKind::Video)
                    .collect();
                let simulcast = *quality && layers.len() > 1;
                for s in streams {
                    if simulcast && s.kind == MediaKind::Video && s.ssrc != layers[0].ssrc {
                        // Published with the first layer, as one feed.
                        continue;
                    }
                    let (kind, clock_rate, pt) = match s.kind {
                        MediaKind::Audio => (RelayKind::Audio, 48_000, 111),
                        MediaKind::Video => (RelayKind::Video, 90_000, 96),
                    };
                    let feed_id = FeedId::from(format!("{uid}-{}", s.kind.sdp_name()));
                    let mut feed = FeedDescription {
                        feed_id: feed_id.clone(),
                        kind,
                        ssrc: Some(Ssrc(s.ssrc)),
                        clock_rate,
                        payload_types: vec![pt],
                        header_extensions: vec![],
                        nack: false,
                        rtx_ssrc: None,
                        rtx_payload_types: vec![],
                        codecs: vec![],
                        simulcast: None,
                        screen: false,
                        renumbering: None,
                    };
                    if *feedback {
                        feed.header_extensions.push(HeaderExtension {
                            id: TRANSPORT_CC_ID,
                            uri: TRANSPORT_CC_URI.into(),
                        });
                        if s.kind == MediaKind::Video {
                            feed.nack = true;
                            feed.rtx_payload_types = vec![RtxPayloadType {
                                pt: VIDEO_RTX_PT,
                                apt: pt,
                            }];
                        }
                    }
                    if s.kind == MediaKind::Video && simulcast {
                        // As a browser publishes simulcast: the layers named by rid (and
                        // their repairs by repaired rid) under one MID, SSRCs learnt from
                        // the first packets; the codec named so that keyframes are found.
                        feed.ssrc = None;
                        feed.codecs = vec![PayloadCodec {
                            pt,
                            name: "VP8".into(),
                        }];
                        feed.header_extensions.extend([
                            HeaderExtension {
                                id: MID_ID,
                                uri: MID_EXTENSION_URI.into(),
                            },
                            HeaderExtension {
                                id: RID_ID,
                                uri: RID_URI.into(),
                            },
                            HeaderExtension {
                                id: REPAIRED_RID_ID,
                                uri: REPAIRED_RID_URI.into(),
                            },
                        ]);
                        let rids: Vec<String> =
                            (0..layers.len()).map(|i| format!("r{i}")).collect();
                        for (layer, rid) in layers.iter().zip(&rids) {
                            let rtx = rand::random::<u32>() | 1;
                            repaired.push((layer.ssrc, rtx));
                            let mid = (MID_ID, VIDEO_MID.as_bytes().to_vec());
                            names.push((
                                layer.ssrc,
                                vec![mid.clone(), (RID_ID, rid.as_bytes().to_vec())],
                            ));
                            names
                                .push((rtx, vec![mid, (REPAIRED_RID_ID, rid.as_bytes().to_vec())]));
                        }
                        feed.simulcast = Some(Simulcast {
                            mid: VIDEO_MID.into(),
                            rids,
                        });
                    } else if *feedback && s.kind == MediaKind::Video {
                        let rtx = rand::random::<u32>() | 1;
                        feed.rtx_ssrc = Some(Ssrc(rtx));
                        repaired.push((s.ssrc, rtx));
                    }
                    client.publish(sid.clone(), Uid::from(uid), feed).await?;
                    feeds.push(feed_id);
                }
                Ok(Published {
                    link,
                    feed: FeedRef::Relay(sid.clone(), feeds),
                    repaired,
                    names,
                })
            }
            Target::Janus { .. } if session > 0 => {
                bail!("runs with several sessions are implemented for the relay only")
            }
            Target::Janus {
                session,
                room,
                peer,
                ..
            } => {
                let mut handle = session.attach().await?;
                let (joined, _) = session
                    .message(
                        &handle,
                        json!({"request": "join", "ptype": "publisher", "room": room,
                               "display": uid}),
                        None,
                    )
                    .await
                    .context("joining as publisher")?;
                let id = joined["id"]
                    .as_u64()
                    .with_context(|| format!("no publisher id in {joined}"))?;
                let (socket, local, cert) = local_side(peer)?;
                let offered: Vec<OfferedStream> = streams
                    .iter()
                    .map(|s| OfferedStream {
                        kind: s.kind,
                        ssrc: s.ssrc,
                    })
                    .collect();
                let offer = jsep::publisher_offer(&local, &offered);
                let (_, answer) = session
                    .message(
                        &handle,
                        json!({"request": "publish"}),
                        Some(json!({"type": "offer", "sdp": offer})),
                    )
                    .await
                    .context("publishing")?;
                let answer = answer.context("publish answered without SDP")?;
                let remote = jsep::parse(answer["sdp"].as_str().unwrap_or(""))?;
                let wire =
                    WirePeer::connect_on(socket, &remote.endpoint, local.ice, cert, peer.clone())
                        .await
                        .context("publisher ICE/DTLS")?;
                handle.webrtc_up(Duration::from_secs(10)).await?;
                Ok(Published {
                    link: wire.into_link(),
                    feed: FeedRef::Janus(id),
                    repaired: Vec::new(),
                    names: Vec::new(),
                })
            }
        }
    }

    /// Subscribe participant `uid` to `feeds`. A relay participant that already publishes
    /// (`publishing`) receives on its publishing connection and gets no new link; everyone
    /// else gets the link the subscriptions arrive on.
    pub async fn subscribe(
        &self,
        uid: &str,
        feeds: &[FeedRef],
        publishing: bool,
    ) -> anyhow::Result<Subscribed> {
        match self {
            Target::Relay {
                client,
                sid,
                peer,
                feedback,
                quality,
                ..
            } => {
                // The session of the feeds (a subscriber joins the one its feeds are in).
                let sid = match feeds.first() {
                    Some(FeedRef::Relay(sid, _)) => sid,
                    _ => sid,
                };
                let link = if publishing {
                    None
                } else {
                    Some(relay_join(client, sid, uid, peer).await?)
                };
                let mut rtx = Vec::new();
                for feed in feeds {
                    let FeedRef::Relay(_, ids) = feed else {
                        bail!("a Janus feed given to the relay");
                    };
                    for id in ids {
                        let options = SubscribeOptions {
                            mid: None,
                            rtx: *feedback,
                            // As a browser's subscription negotiates it.
                            playout_delay_extension: feedback.then_some(PLAYOUT_DELAY_ID),
                            transport_cc_extension: quality.then_some(TRANSPORT_CC_ID),
                        };
                        let info = client
                            .subscribe(sid.clone(), Uid::from(uid), id.clone(), options)
                            .await?;
                        if let Some(r) = info.rtx_ssrc {
                            rtx.push((info.ssrc.0, r.0));
                        }
                    }
                }
                Ok(Subscribed { link, rtx })
            }
            Target::Janus {
                session,
                room,
                peer,
                ..
            } => {
                let streams: Vec<_> = feeds
                    .iter()
                    .map(|f| match f {
                        FeedRef::Janus(id) => Ok(json!({"feed": id})),
                        FeedRef::Relay(..) => Err(anyhow::anyhow!("a relay feed given to Janus")),
                    })
                    .collect::<Result<_, _>>()?;
                let handle = session.attach().await?;
                let (_, offer) = session
                    .message(
                        &handle,
                        json!({"request": "join", "ptype": "subscriber", "room": room,
                               "streams": streams}),
                        None,
                    )
                    .await
                    .context("joining as subscriber")?;
                let offer = offer.context("subscription without an offer")?;
                let remote = jsep::parse(offer["sdp"].as_str().unwrap_or(""))?;
                let (socket, local, cert) = local_side(peer)?;
                let answer = jsep::subscriber_answer(&local, &remote);
                session
                    .message(
                        &handle,
                        json!({"request": "start"}),
                        Some(json!({"type": "answer", "sdp": answer})),
                    )
                    .await
                    .context("starting the subscription")?;
                // Janus made the offer, so it controls ICE and nominates.
                let config = PeerConfig {
                    role: IceRole::Controlled,
                    ..peer.clone()
                };
                let wire = WirePeer::connect_on(socket, &remote.endpoint, local.ice, cert, config)
                    .await
                    .context("subscriber ICE/DTLS")?;
                Ok(Subscribed {
                    link: Some(wire.into_link()),
                    rtx: Vec::new(),
                })
            }
        }
    }
}

/// A bound socket, fresh ICE credentials and a certificate, described for an SDP.
fn local_side(
    peer: &PeerConfig,
) -> anyhow::Result<(
    tokio::net::UdpSocket,
    LocalDescription,
    dtls::crypto::Certificate,
)> {
    let socket = WirePeer::bind(peer.bind)?;
    let (cert, fingerprint) = WirePeer::certificate();
    let local = LocalDescription {
        ice: IceCredentials::random(),
        fingerprint,
        candidate: socket.local_addr()?,
    };
    Ok((socket, local, cert))
}

/// Add `uid` to the relay session and connect its peer.
async fn relay_join(
    client: &Client,
    sid: &Sid,
    uid: &str,
    peer: &PeerConfig,
) -> anyhow::Result<SrtpLink> {
    let (cert, fp) = WirePeer::certificate();
    let ufrag = WirePeer::random_ufrag();
    let info = client
        .add_participant(
            sid.clone(),
            Uid::from(uid),
            ParticipantConfig {
                remote_ufrag: Some(ufrag.clone()),
                remote_fingerprint: Some(fp),
                ..Default::default()
            },
        )
        .await?;
    let wire = WirePeer::connect(&info, ufrag, cert, peer.clone())
        .await
        .with_context(|| format!("{uid} ICE/DTLS"))?;
    Ok(wire.into_link())
}
