//! Recording: what a recorder makes of a feed's packets, and the file it writes them to.

pub mod file;
pub mod frames;
