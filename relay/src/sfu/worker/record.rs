//! The recorder's side of the packet path: a recorded feed's packets, copied on the feed's own
//! core and handed to the recorder's thread ([`Output::Record`]), which never holds a core up.

use std::time::Instant;

use crate::engine::rtp::RtpHeader;
use crate::error::ControlError;
use crate::ids::{FeedId, FeedKey, SessionKey, Sid};
use crate::record::frames::Codec;
use crate::record::recording::RecordPacket;
use crate::record::timeline::{SenderReport, Track};
use crate::sfu::cross_core::RtpInfo;
use crate::sfu::feed::record_tap::{best_flowing, RecordTap};

use super::{Output, Worker};

impl Worker {
    /// Start (`Some`: the recording and the feed's track in it) or stop handing feed
    /// `feed_id`'s packets to the recorder. The feed must be published on this core. A video
    /// feed is asked for a keyframe at once, which its recording starts from. Returns how many
    /// packets the tap it replaces handed over (0 if none): the recorder counts what its queue
    /// dropped at the end of a recording from it.
    pub fn set_record_tap(
        &mut self,
        now: Instant,
        sid: &Sid,
        feed_id: &FeedId,
        tap: Option<(u64, Track)>,
    ) -> Result<u64, ControlError> {
        let skey = self.session_key(sid)?;
        let session = self.sessions.get_mut(&skey).expect("session_key found it");
        let fkey = session.feed_key(sid, feed_id)?;
        let feed = session.feeds.get_mut(&fkey).expect("feed_key found it");
        if feed.origin.is_some() {
            return Err(ControlError::InvalidFeed {
                reason: format!("feed {feed_id} is recorded on the core it is published on"),
            });
        }
        if let (Some((recording, _)), Some(old)) = (tap, &feed.record) {
            if old.recording != recording {
                return Err(ControlError::InvalidRecording {
                    reason: format!("feed {feed_id} is recorded already"),
                });
            }
        }
        let old = std::mem::replace(
            &mut feed.record,
            tap.map(|(recording, track)| RecordTap::new(recording, track)),
        );
        if feed.record.is_some() && feed.is_video() {
            let best = best_flowing(&feed.layers, feed.layers_off, now);
            self.keyframe_request(now, skey, fkey, Some(usize::from(best)), true);
        }
        Ok(old.map_or(0, |t| t.handed))
    }

    /// The recorder's queue had no room for a packet.
    pub fn handle_record_queue_full(&mut self) {
        self.stats.record.queue_full += 1;
    }

    /// Hand a packet of feed `fkey` to the recorder, if the feed is recorded and the packet
    /// is of the layer it follows.
    pub(super) fn record(
        &mut self,
        now: Instant,
        skey: SessionKey,
        fkey: FeedKey,
        plain: &[u8],
        header: &RtpHeader,
        info: &RtpInfo,
    ) {
        let (layer, keyframe) = (usize::from(info.layer), info.keyframe);
        let Some(feed) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.feeds.get_mut(&fkey))
        else {
            return;
        };
        let Some(tap) = feed.record.as_mut() else {
            return;
        };
        let best = best_flowing(&feed.layers, feed.layers_off, now);
        if !tap.takes(feed.layers.len(), layer as u8, best, keyframe) {
            return;
        }
        let codec = match feed.description.codec_of(header.payload_type) {
            Some(n) if n.eq_ignore_ascii_case("VP8") => Codec::Vp8,
            Some(n) if n.eq_ignore_ascii_case("VP9") => Codec::Vp9,
            Some(n) if n.eq_ignore_ascii_case("AV1") => Codec::Av1,
            Some(n) if n.eq_ignore_ascii_case("opus") => Codec::Opus,
            // Opus is the only audio codec signalling accepts; its description may name no
            // codecs.
            None if tap.track == Track::Audio => Codec::Opus,
            _ => {
                self.stats.record.unsupported += 1;
                return;
            }
        };
        tap.handed += 1;
        let stream = &feed.layers[layer];
        let payload = &plain[header.header_len..header.header_len + header.payload_len];
        self.stats.record.packets += 1;
        self.outputs
            .push_back(Output::Record(Box::new(RecordPacket {
                recording: tap.recording,
                track: tap.track,
                handed: tap.handed,
                arrived: now,
                layer: layer as u8,
                codec,
                sequence: header.sequence,
                timestamp: header.timestamp,
                marker: header.marker,
                clock_rate: feed.description.clock_rate,
                report: stream.last_sr.map(|(ntp, rtp)| SenderReport { ntp, rtp }),
                payload: payload.to_vec(),
            })));
    }

    /// For dynacast: the layers a recording of the feed wants (its best), and a keyframe
    /// request where it waits to move to the best layer flowing.
    pub(super) fn record_wants(&mut self, now: Instant, skey: SessionKey, fkey: FeedKey) -> u8 {
        let Some(feed) = self.sessions.get(&skey).and_then(|s| s.feeds.get(&fkey)) else {
            return 0;
        };
        let Some(tap) = &feed.record else {
            return 0;
        };
        let best = best_flowing(&feed.layers, feed.layers_off, now);
        let top = feed.layers.len().saturating_sub(1).min(7);
        if feed.is_video() && tap.wants_keyframe_of(best) {
            self.keyframe_request(now, skey, fkey, Some(usize::from(best)), false);
        }
        1 << top
    }
}
