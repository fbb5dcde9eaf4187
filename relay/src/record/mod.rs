//! Recording: what a recorder makes of a feed's packets before they are written to a file.

pub mod frames;
