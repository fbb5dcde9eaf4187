//! Recording: what a recorder makes of a feed's packets, and the file it writes them to.
//!
//! A core hands each packet of a recorded feed to the recorder's thread ([`writer`]) through
//! a bounded queue; there the packets become frames ([`frames`]), the frames get their place
//! on the feed's timeline ([`timeline`], [`recording`]) and go into its WebM file ([`file`]).

pub mod file;
pub mod frames;
pub mod recording;
pub mod stream_clock;
pub mod timeline;
pub(crate) mod writer;
