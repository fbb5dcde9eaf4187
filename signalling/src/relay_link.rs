//! The relay a hub drives: the one in this process, or one in another process (or on another
//! machine) over the relay's control API (the `relay` binary). Both speak the one control
//! vocabulary ([`relay::Request`]) through [`relay::Control`], so the hub does not know which
//! it has.
//!
//! A remote relay outlives its control connection: the relay keeps its sessions when the
//! connection drops or signalling restarts, and a link reconnects on the next request. Events
//! from every connection the link opens arrive on the one receiver [`RemoteRelay::connect`]
//! returns.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use relay::remote::{Client, RemoteError};
use relay::request::RelayInfo;
use relay::{Control, ControlError, Event, RelayHandle, Reply, Request};
use tokio::sync::mpsc;

/// How long a (re)connection to a remote relay may take before a request fails with
/// [`ControlError::RelayUnreachable`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Relay events waiting for the hub; as many as the in-process relay queues.
const EVENTS: usize = 4096;

/// The relay a hub drives.
#[derive(Clone)]
pub enum RelayLink {
    /// In this process.
    Local(RelayHandle),
    /// In another process, over the control API.
    Remote(Arc<RemoteRelay>),
}

impl RelayLink {
    /// The relay's DTLS certificate fingerprint, `sha-256 AB:CD:…`, for the answers' SDP.
    pub fn fingerprint(&self) -> String {
        match self {
            RelayLink::Local(h) => h.fingerprint().to_owned(),
            RelayLink::Remote(r) => r.info().fingerprint,
        }
    }

    /// Whether the relay can record (it has a recordings directory).
    pub fn records(&self) -> bool {
        match self {
            RelayLink::Local(h) => h.recordings_dir().is_some(),
            RelayLink::Remote(r) => r.info().records,
        }
    }

    /// The in-process relay, for what only it offers (the edge, the cluster's load report).
    pub fn local(&self) -> Option<&RelayHandle> {
        match self {
            RelayLink::Local(h) => Some(h),
            RelayLink::Remote(_) => None,
        }
    }
}

impl Control for RelayLink {
    type Error = ControlError;

    async fn call(&self, request: Request) -> Result<Reply, ControlError> {
        match self {
            RelayLink::Local(h) => h.execute(request).await,
            RelayLink::Remote(r) => r.call(request).await,
        }
    }
}

/// A relay in another process: where it is, how to authenticate, and the connection now.
pub struct RemoteRelay {
    addr: SocketAddr,
    token: Option<String>,
    /// What the relay said of itself on the latest connection.
    info: RwLock<RelayInfo>,
    /// The connection; replaced when it closes.
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    events: mpsc::Sender<Event>,
}

impl RemoteRelay {
    /// Connect to the relay's control API at `addr` (authenticating with `token`) and learn its
    /// fingerprint and cores. Fails, with the relay's reason, where it cannot be reached or
    /// refuses the token: a server that starts without its relay would refuse every join.
    pub async fn connect(
        addr: SocketAddr,
        token: Option<String>,
    ) -> Result<(RelayLink, mpsc::Receiver<Event>), RemoteError> {
        let (events, events_rx) = mpsc::channel(EVENTS);
        let (client, info) = open(addr, token.clone(), events.clone()).await?;
        let remote = RemoteRelay {
            addr,
            token,
            info: RwLock::new(info),
            client: tokio::sync::Mutex::new(Some(client)),
            events,
        };
        Ok((RelayLink::Remote(Arc::new(remote)), events_rx))
    }

    /// What the relay said of itself.
    pub fn info(&self) -> RelayInfo {
        self.info.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The open connection, or a new one where it closed.
    async fn client(&self) -> Result<Arc<Client>, ControlError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *slot = None;
        let (client, info) = open(self.addr, self.token.clone(), self.events.clone())
            .await
            .map_err(unreachable)?;
        let mut known = self.info.write().unwrap_or_else(|e| e.into_inner());
        if known.fingerprint != info.fingerprint {
            // A restarted relay: its sessions are gone, and new answers carry its new
            // certificate.
            tracing::warn!(relay = %self.addr, "the relay restarted (its certificate changed)");
        }
        *known = info;
        drop(known);
        tracing::info!(relay = %self.addr, "control connection to the relay open again");
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn call(&self, request: Request) -> Result<Reply, ControlError> {
        let client = self.client().await?;
        client.call(request).await.map_err(|e| match e {
            RemoteError::Refused(c) => c,
            other => unreachable(other),
        })
    }
}

/// Open a control connection, with its events forwarded to `events`, and ask for the relay's
/// facts.
async fn open(
    addr: SocketAddr,
    token: Option<String>,
    events: mpsc::Sender<Event>,
) -> Result<(Arc<Client>, RelayInfo), RemoteError> {
    let timed_out = || RemoteError::Io(std::io::ErrorKind::TimedOut.into());
    let (client, mut rx) = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(addr, token))
        .await
        .map_err(|_| timed_out())??;
    let info = tokio::time::timeout(CONNECT_TIMEOUT, client.info())
        .await
        .map_err(|_| timed_out())??;
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if events.send(e).await.is_err() {
                return;
            }
        }
    });
    Ok((Arc::new(client), info))
}

fn unreachable(e: RemoteError) -> ControlError {
    ControlError::RelayUnreachable {
        reason: e.to_string(),
    }
}
