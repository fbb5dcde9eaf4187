//! What systemd is told, for a `Type=notify` unit: ready once the server listens, stopping
//! when it shuts down, and a watchdog ping only while the hub and every relay core answer, so
//! that a stuck server is restarted (`WatchdogSec=`). Outside systemd (no `NOTIFY_SOCKET`)
//! nothing is sent.

use std::time::Duration;

use relay::Control;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};

use crate::hub::Input;
use crate::relay_link::RelayLink;

/// The server listens and serves.
pub fn ready() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        tracing::warn!("systemd not told of readiness: {e}");
    }
}

/// The server is shutting down.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// Ping systemd's watchdog at half its interval while the hub and the relay answer within
/// that half; nothing where the unit has no watchdog.
pub fn watchdog(hub: mpsc::Sender<Input>, relay: RelayLink) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match alive(&hub, &relay, every).await {
                Ok(()) => {
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                }
                Err(what) => {
                    tracing::error!("watchdog not pinged: {what} did not answer in {every:?}")
                }
            }
        }
    });
}

/// Whether the hub and every relay core answer within `within`.
async fn alive(
    hub: &mpsc::Sender<Input>,
    relay: &RelayLink,
    within: Duration,
) -> Result<(), &'static str> {
    let (tx, rx) = oneshot::channel();
    let asked = hub.send_timeout(Input::Metrics(tx), within).await.is_ok();
    match tokio::time::timeout(within, rx).await {
        Ok(Ok(_)) if asked => {}
        _ => return Err("the hub"),
    }
    match tokio::time::timeout(within, relay.stats()).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err("the relay"),
    }
}
