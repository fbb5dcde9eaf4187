//! Data channels between the participants of a session: the envelope that says who a
//! message is for and who sent it, and how fast a participant may send.

pub mod envelope;
