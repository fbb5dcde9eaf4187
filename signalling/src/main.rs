//! `webrtcai`: the whole product in one process: relay, signalling, SDK and demo app.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use clap::Parser;
use relay::{Relay, RelayConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WebRTC.ai media cloud in one process.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,dtls=error".into()),
        )
        .init();
    let args = Args::parse();
    let mut relay = Relay::start(RelayConfig {
        bind: args.media_bind,
        port: args.media_port,
        cores: args.cores,
        pin: !args.no_pin,
        advertise: args.advertise,
        ..Default::default()
    })
    .context("starting the relay")?;
    let handle = relay.handle();
    let events = relay.take_events().context("relay events")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(async move {
        let hub = signalling::start_hub(handle.clone(), events);
        let listener = tokio::net::TcpListener::bind(args.http)
            .await
            .with_context(|| format!("binding {}", args.http))?;
        tracing::info!(
            "WebRTC.ai running: demo at http://{}/ , media on {:?}",
            args.http,
            handle.core_addresses()
        );
        axum::serve(listener, signalling::http::router(hub))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("http server")
    })?;
    relay.shutdown();
    Ok(())
}
