//! `webrtcai`: the whole product in one process (relay, signalling, SDK and demo app), and the
//! administration commands for clients, keys and tokens on the same database file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use relay::{Control, Relay, RelayConfig};
use signalling::auth::{self, Claims, Grants};
use signalling::limits::JoinLimits;
use signalling::relay_link::{RelayLink, RemoteRelay};
use signalling::store::Store;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WebRTC.ai media cloud in one process. Without a subcommand it serves; the subcommands
/// administer the account database.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// A TOML file of settings: each key is a flag's long name (`media_port = 40000`). A flag
    /// beats its environment variable (`WEBRTCAI_MEDIA_PORT`), which beats the file, which
    /// beats the default; `webrtcai config show` prints what is in force.
    #[arg(long, global = true, env = "WEBRTCAI_CONFIG")]
    config: Option<PathBuf>,
    /// The account database (SQLite; created on first use).
    #[arg(long, global = true, default_value = "webrtcai.db")]
    db: PathBuf,
    /// How log lines are written to stderr: `text` for people, `json` (one object a line)
    /// for a log pipeline.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// HTTP and websocket address (demo app at /, SDK at /sdk/webrtcai.js, websocket at /ws).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Address the relay's media sockets bind to.
    #[arg(long, default_value = "127.0.0.1")]
    media_bind: IpAddr,
    /// UDP port of relay core 0 (core i uses port + i; 0 picks free ports).
    #[arg(long, default_value_t = 40000)]
    media_port: u16,
    /// Address put in ICE candidates (needed when binding 0.0.0.0).
    #[arg(long)]
    advertise: Option<IpAddr>,
    /// Relay cores; 0 = every CPU.
    #[arg(long, default_value_t = 0)]
    cores: usize,
    /// Do not pin relay threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Do not listen for ICE-TCP (RFC 6544) on the media ports, the fallback for participants
    /// whose network blocks UDP.
    #[arg(long)]
    no_ice_tcp: bool,
    /// Log the relay's counters, summed over its cores, as one JSON line every this many
    /// seconds (0: never).
    #[arg(long, default_value_t = 0)]
    stats_interval: u64,
    /// Do not negotiate packet repair (NACK and RTX): lost video packets are then only
    /// recovered by the next keyframe. For comparisons.
    #[arg(long)]
    no_repair: bool,
    /// Participants of one session a core takes before the session spreads to another core
    /// (0 = every session stays on one core).
    #[arg(long, default_value_t = relay::DEFAULT_SPREAD_AFTER)]
    spread_after: usize,
    /// Data-channel bytes a second each participant may send; past it, its messages wait.
    #[arg(long, default_value_t = relay::sfu::worker::DEFAULT_DATA_RATE)]
    data_rate: u64,
    /// Data-channel bytes a participant may send at once after a quiet spell.
    #[arg(long, default_value_t = relay::sfu::worker::DEFAULT_DATA_BURST)]
    data_burst: u64,
    /// Join attempts allowed per key per minute.
    #[arg(long, default_value_t = JoinLimits::default().per_key_per_minute)]
    joins_per_key: u32,
    /// Secret for the HTTP admin API (`Authorization: Bearer …`); the API is off without it.
    #[arg(long, env = "WEBRTCAI_ADMIN_SECRET", hide_env_values = true)]
    admin_secret: Option<String>,
    /// Seconds between usage writes to the database (a crash loses at most this much).
    #[arg(long, default_value_t = 10)]
    usage_flush_secs: u64,
    /// Join attempts allowed per source address per minute.
    #[arg(long, default_value_t = JoinLimits::default().per_address_per_minute)]
    joins_per_address: u32,
    /// Where recordings are written (`<cid>/<session>/<file>.webm` under it; created when the
    /// first recording starts).
    #[arg(long, default_value = "recordings")]
    recordings_dir: PathBuf,
    /// Do not record on this server (a `record` request is then answered
    /// `recording_unavailable`).
    #[arg(long)]
    no_recording: bool,
    /// Drive a relay that runs in another process (the `relay` binary, on this machine or
    /// another) through its control API at this address, instead of starting one in this
    /// process; the media options above are then the relay's own. Recordings are written on
    /// the relay's machine: admin downloads read them from `--recordings-dir` here, so point
    /// it at the same directory (or a shared mount).
    #[arg(long, conflicts_with = "redis")]
    relay_control: Option<SocketAddr>,
    /// Serve https and wss with this certificate chain (PEM) instead of plain HTTP; read
    /// again on SIGHUP (a renewal), without dropping a connection.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// On SIGTERM (or the admin API's drain) the server takes no new session and waits this
    /// many seconds at most for its participants to leave before it stops (0: stop at once).
    /// Ctrl-C stops at once.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Serve `/metrics` (Prometheus's text format) on this address; without it, no metrics
    /// are served. Bind it where only the scraper reaches.
    #[arg(long)]
    metrics_http: Option<SocketAddr>,
    /// The token the relay's control API asks for (its `--control-token`).
    #[arg(
        long,
        env = "RELAY_CONTROL_TOKEN",
        hide_env_values = true,
        requires = "relay_control"
    )]
    relay_control_token: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Running as one node of a cluster: sessions span the nodes where their participants are.
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// The cluster's Redis (`redis://host:port`, `redis+unix:///path`); without it the server
    /// runs alone and needs no Redis.
    #[arg(long, env = "WEBRTCAI_REDIS")]
    redis: Option<String>,
    /// This node's id, as its certificate names it (`webrtcai cluster node ID`).
    #[arg(long, requires = "redis")]
    node_id: Option<String>,
    /// This node's region.
    #[arg(long, default_value = "default")]
    region: String,
    /// Where the cluster's CA certificate and this node's certificate and key are.
    #[arg(long, default_value = "cluster")]
    cluster_dir: PathBuf,
    /// The edge's QUIC address (trunks to the other nodes).
    #[arg(long, default_value = "127.0.0.1:7400")]
    edge_bind: SocketAddr,
    /// The edge address other nodes reach (needed when binding 0.0.0.0).
    #[arg(long)]
    edge_advertise: Option<SocketAddr>,
    /// Participants this node takes at most.
    #[arg(long, default_value_t = 1000)]
    capacity: u32,
    /// Where browsers reach this node's signalling (`https://eu-1.example.com`): where other
    /// nodes send a page whose session lives here, and where a page goes on when its node
    /// stops. Default: `http://` and the `--http` address (needed when that is 0.0.0.0).
    #[arg(long)]
    public_url: Option<String>,
    /// Accept participants but home no session: their media enters the cloud here and
    /// crosses to the nodes that home their sessions (a node near the users of a region
    /// without a full node of its own).
    #[arg(long)]
    edge_only: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Clients (organisations that own keys and sessions).
    #[command(subcommand)]
    Client(ClientCommand),
    /// WEB_ONLY API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Join tokens (JWT, HS256).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Recordings.
    #[command(subcommand)]
    Recording(RecordingCommand),
    /// The cluster's certificate authority and its nodes' certificates, with which nodes
    /// authenticate each other on the trunks between them.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Usage of a client: participant-minutes, bytes, peak participants, recording minutes.
    Usage {
        /// The client.
        #[arg(long)]
        cid: String,
        /// Start of the period (RFC 3339, or YYYY-MM-DD); default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// End of the period (exclusive); default: now.
        #[arg(long)]
        to: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .with_context(|| format!("{s:?} is not a date (YYYY-MM-DD) or RFC 3339 time"))?;
    Ok(t.duration_since(UNIX_EPOCH)?.as_secs() as i64)
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the configuration in force (flags, environment, `--config` file, defaults) as a
    /// TOML file that gives it again, with where each value came from; secrets redacted.
    Show,
}

/// The command line, with the `--config` file layered under it: exits with the reason (and
/// the key) where the file is refused, as clap does for a bad flag.
fn parse_cli() -> (
    clap::Command,
    clap::ArgMatches,
    std::collections::BTreeSet<String>,
) {
    use clap::CommandFactory;
    signalling::config::parse(Cli::command(), "WEBRTCAI")
}

/// Where the running server's admin API is, for what needs a running session.
#[derive(clap::Args, Debug)]
struct AdminApi {
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The server's admin secret.
    #[arg(long, env = "WEBRTCAI_ADMIN_SECRET", hide_env_values = true)]
    admin_secret: String,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Make the cluster's CA: DIR/ca.pem (for every node) and DIR/ca.key (for whoever adds
    /// nodes; no node needs it).
    Init {
        /// Where the files go.
        #[arg(long, default_value = "cluster")]
        dir: PathBuf,
        /// The cluster's name, in the CA's certificate.
        #[arg(long, default_value = "webrtcai")]
        name: String,
    },
    /// Sign a node's certificate with the CA: DIR/ID.pem and DIR/ID.key, for node ID (with
    /// DIR/ca.pem).
    Node {
        /// The node's id: lowercase letters, digits and dashes.
        id: String,
        /// Where the CA is and the files go.
        #[arg(long, default_value = "cluster")]
        dir: PathBuf,
    },
}

/// Write `contents` to a new file, readable by its owner only where it is a key.
fn write_new(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    use edge::cluster::ClusterCa;
    match command {
        ClusterCommand::Init { dir, name } => {
            std::fs::create_dir_all(&dir)?;
            let ca = ClusterCa::generate(&name)?;
            write_new(&dir.join("ca.key"), &ca.key_pem(), true)?;
            write_new(&dir.join("ca.pem"), &ca.cert_pem(), false)?;
            println!(
                "cluster CA in {0}/ca.pem (give it to every node) and {0}/ca.key (keep it safe)",
                dir.display()
            );
        }
        ClusterCommand::Node { id, dir } => {
            let read = |f: &str| {
                std::fs::read_to_string(dir.join(f))
                    .with_context(|| format!("reading {}", dir.join(f).display()))
            };
            let ca = ClusterCa::from_pem(&read("ca.pem")?, &read("ca.key")?)?;
            let node = ca.issue(&id)?;
            write_new(&dir.join(format!("{id}.key")), &node.key_pem, true)?;
            write_new(&dir.join(format!("{id}.pem")), &node.cert_pem, false)?;
            println!(
                "node {id}: {0}/{id}.pem and {0}/{id}.key, with {0}/ca.pem",
                dir.display()
            );
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
enum RecordingCommand {
    /// Start recording a running session (through the server's admin API): each published
    /// feed into a file of its own; everyone in the session is told.
    Start {
        /// The client.
        #[arg(long)]
        cid: String,
        /// The session, as the client names it.
        #[arg(long)]
        sid: String,
        #[command(flatten)]
        api: AdminApi,
    },
    /// Stop recording a running session (through the server's admin API).
    Stop {
        /// The client.
        #[arg(long)]
        cid: String,
        /// The session.
        #[arg(long)]
        sid: String,
        #[command(flatten)]
        api: AdminApi,
    },
    /// List finished recordings: one file per recorded feed, with its duration, size and
    /// start time.
    List {
        /// Only this client's.
        #[arg(long)]
        cid: Option<String>,
        /// Only this session's (as the client names it).
        #[arg(long)]
        sid: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Create a client.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List clients.
    List,
    /// Where a client's session events go (POSTed as JSON, signed with a key's secret):
    /// set it with `--url` and `--key`, stop it with `--clear`, or show it.
    Webhook {
        /// The client.
        #[arg(long)]
        cid: String,
        /// The receiver's URL (http:// or https://).
        #[arg(long, requires = "key", conflicts_with = "clear")]
        url: Option<String>,
        /// The client's key whose secret signs each delivery.
        #[arg(long, requires = "url")]
        key: Option<String>,
        /// Stop sending them.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// The owning client.
        #[arg(long)]
        cid: String,
        /// An allowed Origin host (`app.example.com`, `*.example.com`, optionally `:port`);
        /// repeat for several.
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// Allow recording of sessions joined with this key.
        #[arg(long)]
        recording: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Only this client's.
        #[arg(long)]
        cid: Option<String>,
    },
    /// Revoke a key: new joins with it, or with tokens it signed, are refused at once.
    Revoke {
        /// The key.
        key: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Mint a join token signed with a key's secret.
    Mint {
        /// The signing key.
        #[arg(long)]
        key: String,
        /// The session.
        #[arg(long)]
        sid: String,
        /// The participant id (else assigned at join).
        #[arg(long)]
        uid: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Grants: publish,subscribe,publish_data,record.
        #[arg(long, default_value = "publish,subscribe")]
        grant: String,
        /// Lifetime, e.g. 30m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// In a cluster, the region whose node the participant's media goes to.
        #[arg(long)]
        region: Option<String>,
    },
}

fn print(v: impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn admin(store: &Store, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Client(ClientCommand::Create { name }) => print(store.create_client(&name)?),
        Command::Client(ClientCommand::List) => print(store.clients()?),
        Command::Client(ClientCommand::Webhook {
            cid,
            url,
            key,
            clear,
        }) => match (url, key, clear) {
            (Some(url), Some(key), _) => print(store.set_webhook(&cid, &url, &key)?),
            (_, _, true) => print(serde_json::json!({ "cleared": store.clear_webhook(&cid)? })),
            _ => match store.webhook(&cid)? {
                Some(w) => print(w),
                None => anyhow::bail!("client {cid} has no webhook"),
            },
        },
        Command::Cluster(command) => cluster(command),
        // Printed from the parsed command line, before any database is opened.
        Command::Config(ConfigCommand::Show) => {
            anyhow::bail!("`config show` reads the command line, not the database")
        }
        Command::Key(KeyCommand::Create {
            cid,
            domains,
            recording,
        }) => {
            let k = store.create_key(&cid, &domains, recording)?;
            print(serde_json::json!({ "key": k.info, "secret": k.secret }))
        }
        Command::Key(KeyCommand::List { cid }) => print(store.keys(cid.as_deref())?),
        Command::Key(KeyCommand::Revoke { key }) => print(store.revoke_key(&key)?),
        Command::Recording(RecordingCommand::Start { cid, sid, api }) => {
            record(&api, &cid, &sid, true)
        }
        Command::Recording(RecordingCommand::Stop { cid, sid, api }) => {
            record(&api, &cid, &sid, false)
        }
        Command::Recording(RecordingCommand::List { cid, sid, json }) => {
            let all = store.recordings(cid.as_deref(), sid.as_deref())?;
            if json {
                return print(all);
            }
            println!(
                "{:>5} {:<20} {:<16} {:<12} {:<14} {:>20} {:>9} {:>12}  path",
                "id", "session", "participant", "feed", "kinds", "started", "seconds", "bytes"
            );
            for r in all {
                let started = humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_secs(r.started_at.max(0) as u64),
                );
                println!(
                    "{:>5} {:<20} {:<16} {:<12} {:<14} {:>20} {:>9.1} {:>12}  {}{}",
                    r.id.unwrap_or_default(),
                    r.sid,
                    r.uid,
                    r.feed_id,
                    r.kinds.join("+"),
                    started.to_string(),
                    r.duration_ms as f64 / 1000.0,
                    r.bytes,
                    r.path,
                    r.error.map(|e| format!("  ({e})")).unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Usage {
            cid,
            from,
            to,
            json,
        } => {
            let from = from.as_deref().map(parse_time).transpose()?.unwrap_or(0);
            let to = match to.as_deref() {
                Some(t) => parse_time(t)?,
                None => SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64 + 1,
            };
            let report = store.usage(&cid, from, to)?;
            if json {
                print(report)
            } else {
                print!("{}", report.table());
                Ok(())
            }
        }
        Command::Token(TokenCommand::Mint {
            key,
            sid,
            uid,
            name,
            grant,
            ttl,
            region,
        }) => {
            let record = store.key(&key)?.with_context(|| format!("no key {key}"))?;
            let grants = Grants::parse(&grant).map_err(anyhow::Error::msg)?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let claims = Claims {
                cid: record.info.cid.clone(),
                sid,
                uid,
                name,
                grants,
                exp: now + Duration::from(ttl).as_secs(),
                nbf: None,
                region,
            };
            let token = auth::mint(&key, &record.secret, &claims).map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
    }
}

/// Start or stop a running session's recording through the admin API.
fn record(api: &AdminApi, cid: &str, sid: &str, enable: bool) -> anyhow::Result<()> {
    let url = format!(
        "{}/admin/sessions/{}/recording",
        api.server.trim_end_matches('/'),
        sid
    );
    let body = serde_json::json!({ "cid": cid, "enable": enable });
    let mut response = ureq::post(&url)
        .header("Authorization", &format!("Bearer {}", api.admin_secret))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(&body)
        .with_context(|| format!("reaching {url}"))?;
    let status = response.status();
    let reply: serde_json::Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("reading the answer of {url} ({status})"))?;
    if !status.is_success() {
        anyhow::bail!(
            "{}: {}",
            reply["error"]["code"].as_str().unwrap_or("error"),
            reply["error"]["reason"].as_str().unwrap_or("")
        );
    }
    print(reply)
}

/// On first start, a development client and key that work from this machine's own pages.
fn development_key(store: &Store) -> anyhow::Result<String> {
    let clients = store.clients()?;
    if let Some(dev) = clients.iter().find(|c| c.name == "development") {
        if let Some(k) = store
            .keys(Some(&dev.cid))?
            .into_iter()
            .find(|k| k.revoked_at.is_none())
        {
            return Ok(k.key_id);
        }
    }
    if !clients.is_empty() {
        return Ok(String::new());
    }
    let client = store.create_client("development")?;
    let key = store.create_key(
        &client.cid,
        &["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
        true,
    )?;
    println!(
        "Created the development client {} with WEB_ONLY key {} (allowed on localhost and 127.0.0.1).\n\
         Its secret, for minting tokens, is shown only now: {}",
        client.cid, key.info.key_id, key.secret
    );
    Ok(key.info.key_id)
}

fn main() -> anyhow::Result<()> {
    let (cmd, matches, from_file) = parse_cli();
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,dtls=error".into()),
        );
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    if let Some(Command::Config(ConfigCommand::Show)) = cli.command {
        print!("{}", signalling::config::show(&cmd, &matches, &from_file));
        return Ok(());
    }
    if let Some(Command::Cluster(command)) =
        cli.command.take_if(|c| matches!(c, Command::Cluster(_)))
    {
        return cluster(command);
    }
    let store = Store::open(&cli.db)?;
    if let Some(command) = cli.command {
        return admin(&store, command);
    }
    let args = cli.serve;
    let dev_key = development_key(&store)?;
    let store = Arc::new(store);
    let clustered = args.cluster.redis.is_some();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(signalling::tls::Tls::load(cert, key)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("runtime")?;
    // The relay in this process, or the link to one in another.
    let (mut local, link, events) = match args.relay_control {
        None => {
            let mut relay = Relay::start(RelayConfig {
                bind: args.media_bind,
                port: args.media_port,
                cores: args.cores,
                pin: !args.no_pin,
                ice_tcp: !args.no_ice_tcp,
                advertise: args.advertise,
                spread_after: args.spread_after,
                data_rate: args.data_rate,
                data_burst: args.data_burst,
                recordings_dir: (!args.no_recording).then(|| args.recordings_dir.clone()),
                edge: clustered,
                ..Default::default()
            })
            .context("starting the relay")?;
            let events = relay.take_events().context("relay events")?;
            let link = RelayLink::Local(relay.handle());
            (Some(relay), link, events)
        }
        Some(addr) => {
            let token = args.relay_control_token.clone();
            let (link, events) = rt
                .block_on(RemoteRelay::connect(addr, token))
                .with_context(|| format!("reaching the relay's control API at {addr}"))?;
            (None, link, events)
        }
    };
    let edge = match (
        local.as_mut().and_then(|r| r.take_edge_port()),
        link.local(),
    ) {
        (Some(port), Some(handle)) => Some(start_edge(&args, port, handle.clone())?),
        _ => None,
    };
    let edge_handle = edge.as_ref().map(|e| e.handle());
    rt.block_on(async move {
        let limits = JoinLimits {
            per_key_per_minute: args.joins_per_key,
            per_address_per_minute: args.joins_per_address,
        };
        let cluster = match (&args.cluster.redis, edge_handle.clone(), link.local()) {
            (Some(url), Some(edge), Some(handle)) => {
                let node = node_info(&args, handle, edge.local_addr())?;
                tracing::info!(node = %node.id, region = %node.region, edge = %node.edge, "joining the cluster");
                let cluster = signalling::cluster::node::join(url, node, handle.clone(), edge)
                    .await
                    .context("joining the cluster")?;
                Some(cluster)
            }
            _ => None,
        };
        let hub = signalling::start_hub(
            link.clone(),
            events,
            store.clone(),
            limits,
            Duration::from_secs(args.usage_flush_secs.max(1)),
            !args.no_repair,
            cluster,
        )
        .context("account database")?;
        if let Some(addr) = args.metrics_http {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-http {addr}"))?;
            let sources = signalling::metrics::Sources {
                relay: link.clone(),
                hub: hub.clone(),
                edge: edge_handle.clone(),
            };
            tracing::info!(
                "metrics at {}",
                signalling::metrics::describe(listener.local_addr()?)
            );
            tokio::spawn(async move {
                if let Err(e) = signalling::metrics::serve(listener, sources).await {
                    tracing::error!("the metrics server stopped: {e}");
                }
            });
        }
        // SIGTERM, Ctrl-C or the admin API's drain: stop taking sessions, let the calls end.
        let drain = Arc::new(tokio::sync::Notify::new());
        let admin = signalling::admin::Admin {
            store,
            secret: args.admin_secret.clone(),
            hub: Some(hub.clone()),
            recordings_dir: match link.local() {
                Some(handle) => handle.recordings_dir().map(|d| d.to_path_buf()),
                None => link.records().then(|| args.recordings_dir.clone()),
            },
            edge: edge_handle,
            drain: Some(drain.clone()),
        };
        let listener = tokio::net::TcpListener::bind(args.http)
            .await
            .with_context(|| format!("binding {}", args.http))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if dev_key.is_empty() {
            tracing::info!("WebRTC.ai running on {scheme}://{}/", args.http);
        } else {
            tracing::info!(
                "WebRTC.ai running: demo at {scheme}://{}/?key={dev_key}",
                args.http
            );
        }
        match &link {
            RelayLink::Local(handle) => {
                tracing::info!(media = ?handle.core_addresses(), "relay cores")
            }
            RelayLink::Remote(remote) => {
                tracing::info!(media = ?remote.info().cores, control = ?args.relay_control, "relay in another process")
            }
        }
        if args.stats_interval > 0 {
            let stats_handle = link.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(args.stats_interval));
                loop {
                    tick.tick().await;
                    if let Ok(all) = stats_handle.stats().await {
                        let mut total = relay::stats::CoreStats::default();
                        for s in &all {
                            total.accumulate(s);
                        }
                        total.forwarding_delay = Default::default();
                        total.pacing_delay = Default::default();
                        if let Ok(line) = serde_json::to_string(&total) {
                            tracing::info!(target: "webrtcai::stats", "{line}");
                        }
                    }
                }
            });
        }
        // Ready first: the watchdog's first ping comes at once, and systemd (and the
        // service test) expect READY=1 before any WATCHDOG=1.
        signalling::systemd::ready();
        signalling::systemd::watchdog(hub.clone(), link.clone());
        let finish = hub.clone();
        // Ctrl-C, or SIGTERM (what systemd and container runtimes send to stop a service).
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        let drain_timeout = Duration::from_secs(args.drain_timeout_secs);
        let shutdown = async move {
            // Ctrl-C stops at once (a server run by hand); SIGTERM (systemd, a container
            // runtime) and the admin API's drain let the calls end first.
            let drain_for = tokio::select! {
                _ = tokio::signal::ctrl_c() => Duration::ZERO,
                _ = terminate.recv() => drain_timeout,
                _ = drain.notified() => drain_timeout,
            };
            signalling::systemd::stopping();
            // No new session; the calls here go on until they end or the time is up.
            let _ = finish.send(signalling::hub::Input::Drain).await;
            let started = tokio::time::Instant::now();
            loop {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let left = match finish.send(signalling::hub::Input::Metrics(tx)).await {
                    Ok(()) => rx.await.map(|m| m.participants).unwrap_or(0),
                    Err(_) => 0,
                };
                if left == 0 || started.elapsed() >= drain_for {
                    tracing::info!(participants = left, "shutting down");
                    break;
                }
                if left > 0 && started.elapsed() < Duration::from_millis(300) {
                    tracing::info!(participants = left, timeout = ?drain_for, "draining: waiting for the calls to end (Ctrl-C or SIGTERM again to stop now)");
                }
                // A second Ctrl-C or SIGTERM stops at once.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                    _ = terminate.recv() => break,
                }
            }
            // Recordings are finished, listed and metered before the hub goes.
            let (done, finished) = tokio::sync::oneshot::channel();
            if finish
                .send(signalling::hub::Input::FinishRecordings(done))
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout(Duration::from_secs(10), finished).await;
            }
        };
        match tls {
            Some(tls) => {
                reload_on_sighup(tls.clone())?;
                signalling::http::serve_tls(listener, hub, admin, shutdown, tls).await
            }
            None => signalling::http::serve(listener, hub, admin, shutdown).await,
        }
        .context("http server")
    })?;
    drop(edge);
    if let Some(relay) = local {
        relay.shutdown();
    }
    Ok(())
}

/// Read the certificate again on each SIGHUP; a pair that cannot be used leaves the one in
/// use, and the log says why.
fn reload_on_sighup(tls: signalling::tls::Tls) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate read again"),
                Err(e) => tracing::error!("TLS certificate not reloaded, the old one stays: {e}"),
            }
        }
    });
    Ok(())
}

/// Start this node's edge, with its certificate from the cluster directory.
fn start_edge(
    args: &ServeArgs,
    port: relay::trunk::EdgePort,
    relay: relay::RelayHandle,
) -> anyhow::Result<edge::node::Edge> {
    let c = &args.cluster;
    let id = c
        .node_id
        .as_deref()
        .context("--node-id is needed with --redis")?;
    let dir = &c.cluster_dir;
    let identity = edge::cluster::NodeIdentity::load(
        &dir.join("ca.pem"),
        &dir.join(format!("{id}.pem")),
        &dir.join(format!("{id}.key")),
    )?;
    if identity.node != id {
        anyhow::bail!("{id}.pem names node {:?}, not {id:?}", identity.node);
    }
    let config = edge::node::EdgeConfig {
        bind: c.edge_bind,
        identity,
        region: c.region.clone(),
    };
    Ok(edge::node::Edge::start(config, port, relay)?)
}

/// This node as it registers in the cluster.
fn node_info(
    args: &ServeArgs,
    relay: &relay::RelayHandle,
    edge: SocketAddr,
) -> anyhow::Result<signalling::cluster::NodeInfo> {
    let c = &args.cluster;
    let edge = match (c.edge_advertise, edge.ip().is_unspecified()) {
        (Some(a), _) => a,
        (None, false) => edge,
        (None, true) => anyhow::bail!("--edge-advertise is needed when the edge binds {edge}"),
    };
    let signalling = match (&c.public_url, args.http.ip().is_unspecified()) {
        (Some(url), _) if url.starts_with("http://") || url.starts_with("https://") => {
            url.trim_end_matches('/').to_owned()
        }
        (Some(url), _) => anyhow::bail!("--public-url {url}: an http:// or https:// URL is needed"),
        (None, false) if args.tls_cert.is_some() => format!("https://{}", args.http),
        (None, false) => format!("http://{}", args.http),
        (None, true) => anyhow::bail!("--public-url is needed when signalling binds {}", args.http),
    };
    Ok(signalling::cluster::NodeInfo {
        id: c.node_id.clone().unwrap_or_default(),
        region: c.region.clone(),
        signalling,
        edge,
        media: relay.advertised_ip(),
        capacity: c.capacity,
        load: 0,
        homes_sessions: !c.edge_only,
    })
}
