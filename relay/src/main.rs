//! `relay`: run the media relay as its own process, controlled over TCP.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use relay::io::Egress;
use relay::{Relay, RelayConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WebRTC.ai media relay: thread-per-core ICE-lite / DTLS / SRTP forwarding.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum EgressArg {
    Sendmmsg,
    Uring,
}

#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A TOML file of settings (each key a flag's name: `control_token = "…"`); flags and
    /// `RELAY_<NAME>` environment variables override it.
    #[arg(long, env = "RELAY_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Address the media sockets bind to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// UDP port of core 0; core i listens on port + i. 0 picks free ports.
    #[arg(long, default_value_t = 40000)]
    port: u16,
    /// Number of cores (one pinned thread each); 0 = every CPU.
    #[arg(long, default_value_t = 0)]
    cores: usize,
    /// Address announced in ICE candidates (needed when binding 0.0.0.0).
    #[arg(long)]
    advertise: Option<IpAddr>,
    /// Do not pin core threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Do not listen for ICE-TCP (RFC 6544) on the cores' ports, the fallback for
    /// participants whose network blocks UDP.
    #[arg(long)]
    no_ice_tcp: bool,
    /// Where the control API (newline-delimited JSON over TCP) listens.
    #[arg(long, default_value = "127.0.0.1:7000")]
    control: SocketAddr,
    /// Token a control connection must present first; required unless the control address
    /// is loopback.
    #[arg(long, env = "RELAY_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// ICE consent timeout in seconds (RFC 7675).
    #[arg(long, default_value_t = 30)]
    consent_timeout: u64,
    /// How cores hand datagrams to the kernel: one sendmmsg per batch, or one io_uring
    /// operation per datagram.
    #[arg(long, value_enum, default_value_t = EgressArg::Sendmmsg)]
    egress: EgressArg,
    /// Do not send bursts to one destination with UDP GSO.
    #[arg(long)]
    no_gso: bool,
    /// Participants of one session a core takes before the session spreads to another core
    /// (0 = every session stays on one core).
    #[arg(long, default_value_t = relay::DEFAULT_SPREAD_AFTER)]
    spread_after: usize,
    /// Log per-core counters every N seconds (0 = never).
    #[arg(long, default_value_t = 10)]
    stats_interval: u64,
    /// Data-channel bytes a second each participant may send; past it, its messages wait.
    #[arg(long, default_value_t = relay::sfu::worker::DEFAULT_DATA_RATE)]
    data_rate: u64,
    /// Data-channel bytes a participant may send at once after a quiet spell.
    #[arg(long, default_value_t = relay::sfu::worker::DEFAULT_DATA_BURST)]
    data_burst: u64,
    /// Where recordings are written; without it the relay does not record.
    #[arg(long)]
    recordings_dir: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,dtls=error".into()),
        )
        .init();
    let args = {
        use clap::{CommandFactory, FromArgMatches};
        let (_, matches, _) = relay::config::parse(Args::command(), "RELAY");
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    };
    if args.control_token.is_none() && !args.control.ip().is_loopback() {
        anyhow::bail!("--control on a non-loopback address needs --control-token");
    }
    let mut relay = Relay::start(RelayConfig {
        bind: args.bind,
        port: args.port,
        cores: args.cores,
        pin: !args.no_pin,
        ice_tcp: !args.no_ice_tcp,
        advertise: args.advertise,
        consent_timeout: Duration::from_secs(args.consent_timeout),
        spread_after: args.spread_after,
        data_rate: args.data_rate,
        data_burst: args.data_burst,
        recordings_dir: args.recordings_dir.clone(),
        gso: !args.no_gso,
        egress: match args.egress {
            EgressArg::Sendmmsg => Egress::Sendmmsg,
            EgressArg::Uring => Egress::Uring,
        },
        ..Default::default()
    })
    .context("starting the relay")?;
    let handle = relay.handle();
    let events = relay.take_events().context("events")?;
    tracing::info!(
        cores = handle.cores(),
        addresses = ?handle.core_addresses(),
        fingerprint = handle.fingerprint(),
        control = %args.control,
        "relay running"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("control runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.control)
            .await
            .with_context(|| format!("binding control address {}", args.control))?;
        let stats_handle = handle.clone();
        if args.stats_interval > 0 {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(args.stats_interval));
                tick.tick().await;
                // Each core's previous snapshot, for the forwarding delay of the interval.
                let mut previous: Vec<relay::stats::CoreStats> = Vec::new();
                loop {
                    tick.tick().await;
                    if let Ok(all) = stats_handle.stats().await {
                        for s in &all {
                            let delay = match previous.iter().find(|p| p.core == s.core) {
                                Some(p) => s.forwarding_delay.since(&p.forwarding_delay),
                                None => s.forwarding_delay.clone(),
                            };
                            tracing::info!(
                                core = s.core,
                                sessions = s.sessions,
                                participants = s.participants,
                                packets_in = s.packets_in,
                                packets_out = s.packets_out,
                                forwarded = s.rtp_forwarded,
                                dropped = s.total_dropped(),
                                delay_p50_us = delay.quantile(0.5),
                                delay_p99_us = delay.quantile(0.99),
                                delay_max_us = delay.quantile(1.0),
                                "counters"
                            );
                        }
                        previous = all;
                    }
                }
            });
        }
        tokio::select! {
            _ = relay::remote::serve(listener, handle, events, args.control_token) => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
        }
        anyhow::Ok(())
    })?;
    relay.shutdown();
    Ok(())
}
