//! ICE-lite (RFC 8445 §2.5) connectivity checks and consent freshness (RFC 7675).
//!
//! The relay never sends checks; it answers Binding requests (RFC 5389) whose USERNAME is
//! `<relay-ufrag>:<remote-ufrag>` and whose MESSAGE-INTEGRITY verifies with the participant's
//! short-term password. A request that fails any check is reported as a [`DropReason`] and
//! changes no state: only a fully verified request can select an address or refresh consent.
//!
//! Address selection: the first verified request selects its source address; later a verified
//! request carrying USE-CANDIDATE from another address migrates the participant there (the
//! controlling peer nominates the new pair after a network change). Consent is refreshed only by
//! verified requests from the selected address, and expires after `consent_timeout`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun::attributes::{ATTR_USERNAME, ATTR_USE_CANDIDATE};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{Message, Setter, BINDING_REQUEST, BINDING_SUCCESS};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;

use crate::stats::DropReason;

/// RFC 7675 §5.1: consent expires 30 s after the last verified check.
pub const DEFAULT_CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest STUN message we look at; a Binding request from a browser is about 100 bytes.
pub const MAX_STUN_LEN: usize = 548;

/// ICE credentials of one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceCredentials {
    /// Username fragment (RFC 8445 §5.3: at least 4 characters).
    pub ufrag: String,
    /// Password (at least 22 characters).
    pub pwd: String,
}

impl IceCredentials {
    /// Random credentials with the lengths browsers use (ufrag 8, pwd 24 characters of
    /// ice-chars).
    pub fn random() -> Self {
        use rand::distr::{Alphanumeric, SampleString};
        let mut rng = rand::rng();
        IceCredentials {
            ufrag: Alphanumeric.sample_string(&mut rng, 8),
            pwd: Alphanumeric.sample_string(&mut rng, 24),
        }
    }
}

/// A decoded Binding request whose integrity is not yet checked.
pub struct BindingRequest {
    msg: Message,
    local_ufrag_len: usize,
    use_candidate: bool,
}

impl BindingRequest {
    /// Decode a datagram classified as STUN. Only the framing and USERNAME are looked at here;
    /// the participant is found by [`BindingRequest::local_ufrag`] and checks the rest.
    pub fn parse(datagram: &[u8]) -> Result<Self, DropReason> {
        if datagram.len() > MAX_STUN_LEN {
            return Err(DropReason::StunMalformed);
        }
        let mut msg = Message::new();
        msg.raw = datagram.to_vec();
        msg.decode().map_err(|_| DropReason::StunMalformed)?;
        if msg.typ != BINDING_REQUEST {
            return Err(DropReason::StunNotBindingRequest);
        }
        let username = TextAttribute::get_from_as(&msg, ATTR_USERNAME)
            .map_err(|_| DropReason::StunUnknownUfrag)?;
        let local_ufrag_len = username
            .text
            .find(':')
            .ok_or(DropReason::StunUnknownUfrag)?;
        let use_candidate = msg.contains(ATTR_USE_CANDIDATE);
        Ok(BindingRequest {
            msg,
            local_ufrag_len,
            use_candidate,
        })
    }

    fn username(&self) -> String {
        // Parse checked that USERNAME is present and decodes; an absent one reads as "".
        TextAttribute::get_from_as(&self.msg, ATTR_USERNAME)
            .map(|t| t.text)
            .unwrap_or_default()
    }

    /// The relay's ufrag (the part of USERNAME before the colon), which names the participant.
    pub fn local_ufrag(&self) -> String {
        let mut u = self.username();
        u.truncate(self.local_ufrag_len);
        u
    }

    /// The peer's ufrag (after the colon).
    pub fn remote_ufrag(&self) -> String {
        self.username()
            .get(self.local_ufrag_len + 1..)
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether the peer nominates this pair.
    pub fn use_candidate(&self) -> bool {
        self.use_candidate
    }
}

/// What a verified Binding request did.
#[derive(Debug, PartialEq, Eq)]
pub struct BindingOutcome {
    /// The Binding success response to send back to the request's source.
    pub response: Vec<u8>,
    /// Set when the selected address changed: the previous one (None on first selection).
    pub selected_changed: Option<Option<SocketAddr>>,
}

/// ICE-lite state of one participant.
pub struct IceLite {
    local: IceCredentials,
    remote_ufrag: Option<String>,
    integrity: MessageIntegrity,
    selected: Option<SocketAddr>,
    last_consent: Option<Instant>,
    consent_timeout: Duration,
}

impl IceLite {
    /// `remote_ufrag` is the peer's ufrag from its offer, if known; then requests naming another
    /// one (a stale ICE generation) are refused.
    pub fn new(
        local: IceCredentials,
        remote_ufrag: Option<String>,
        consent_timeout: Duration,
    ) -> Self {
        let integrity = MessageIntegrity::new_short_term_integrity(local.pwd.clone());
        IceLite {
            local,
            remote_ufrag,
            integrity,
            selected: None,
            last_consent: None,
            consent_timeout,
        }
    }

    /// ICE restart (RFC 8445 §9): new local credentials; the peer's new ufrag follows with its
    /// answer. The selected address and consent stay until checks on the new credentials
    /// select one, so media does not stop while the restart runs.
    pub fn restart(&mut self, local: IceCredentials) {
        self.integrity = MessageIntegrity::new_short_term_integrity(local.pwd.clone());
        self.local = local;
        self.remote_ufrag = None;
    }

    /// Set the peer's ufrag once its answer is known (None accepts any).
    pub fn set_remote_ufrag(&mut self, remote_ufrag: Option<String>) {
        self.remote_ufrag = remote_ufrag;
    }

    /// The relay's credentials for this participant.
    pub fn local(&self) -> &IceCredentials {
        &self.local
    }

    /// The address media is sent to, once a check has succeeded.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Verify a Binding request from `src` and build the response.
    pub fn handle_binding(
        &mut self,
        now: Instant,
        src: SocketAddr,
        req: &mut BindingRequest,
    ) -> Result<BindingOutcome, DropReason> {
        if req.local_ufrag() != self.local.ufrag {
            return Err(DropReason::StunUnknownUfrag);
        }
        if let Some(remote) = &self.remote_ufrag {
            if req.remote_ufrag() != *remote {
                return Err(DropReason::StunUnknownUfrag);
            }
        }
        // RFC 8445 §7.2.2: FINGERPRINT is mandatory in ICE checks.
        FINGERPRINT
            .check(&req.msg)
            .map_err(|_| DropReason::StunBadFingerprint)?;
        self.integrity
            .check(&mut req.msg)
            .map_err(|_| DropReason::StunBadIntegrity)?;

        let response = self.response(&req.msg, src)?;

        let mut selected_changed = None;
        let migrate = match self.selected {
            None => true,
            Some(current) => current != src && req.use_candidate,
        };
        if migrate {
            selected_changed = Some(self.selected);
            self.selected = Some(src);
        }
        if self.selected == Some(src) {
            self.last_consent = Some(now);
        }
        Ok(BindingOutcome {
            response,
            selected_changed,
        })
    }

    fn response(&self, req: &Message, src: SocketAddr) -> Result<Vec<u8>, DropReason> {
        let mut out = Message::new();
        let setters: [Box<dyn Setter>; 5] = [
            Box::new(req.transaction_id),
            Box::new(BINDING_SUCCESS),
            Box::new(XorMappedAddress {
                ip: src.ip(),
                port: src.port(),
            }),
            Box::new(self.integrity.clone()),
            Box::new(FINGERPRINT),
        ];
        // Building only fails on attribute overflow, which these fixed-size attributes cannot
        // reach; report it as malformed rather than trusting that.
        out.build(&setters).map_err(|_| DropReason::StunMalformed)?;
        Ok(out.raw)
    }

    /// When consent expires if no further check arrives.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.last_consent.map(|t| t + self.consent_timeout)
    }

    /// Whether consent has expired at `now` (RFC 7675 §5.1).
    pub fn consent_expired(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|t| now >= t)
    }
}

/// A Binding request as a controlling agent sends it: USERNAME, ICE-CONTROLLING, optional
/// USE-CANDIDATE, MESSAGE-INTEGRITY with `pwd`, FINGERPRINT. For tests and fuzzing; peers
/// build their own.
pub fn binding_request(username: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
    use stun::attributes::{RawAttribute, ATTR_ICE_CONTROLLING};
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(stun::agent::TransactionId::new()),
        Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
        Box::new(RawAttribute {
            typ: ATTR_ICE_CONTROLLING,
            length: 8,
            value: vec![1, 2, 3, 4, 5, 6, 7, 8],
        }),
    ];
    if use_candidate {
        setters.push(Box::new(RawAttribute {
            typ: ATTR_USE_CANDIDATE,
            length: 0,
            value: vec![],
        }));
    }
    setters.push(Box::new(MessageIntegrity::new_short_term_integrity(
        pwd.to_owned(),
    )));
    setters.push(Box::new(FINGERPRINT));
    // Building fails only on attribute overflow; a USERNAME longer than 763 bytes is the
    // caller's mistake, and yields a request without it.
    let _ = m.build(&setters);
    m.raw
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use stun::message::Getter;

    pub(crate) use super::binding_request as request;

    fn creds() -> IceCredentials {
        IceCredentials {
            ufrag: "relay1".into(),
            pwd: "relaypasswordrelaypassword".into(),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// RFC 5769 §2.1 sample request: USERNAME "evtj:h6vY", password "VOkJxbRl1RmTxUk/WvJxBt".
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    #[test]
    fn rfc5769_sample_request_verifies() {
        let mut req = BindingRequest::parse(&RFC5769_REQUEST).unwrap();
        assert_eq!(req.local_ufrag(), "evtj");
        assert_eq!(req.remote_ufrag(), "h6vY");
        assert!(!req.use_candidate());
        let mut ice = IceLite::new(
            IceCredentials {
                ufrag: "evtj".into(),
                pwd: "VOkJxbRl1RmTxUk/WvJxBt".into(),
            },
            None,
            DEFAULT_CONSENT_TIMEOUT,
        );
        let now = Instant::now();
        let out = ice.handle_binding(now, addr(32853), &mut req).unwrap();
        assert_eq!(out.selected_changed, Some(None));

        // The response is a Binding success for the same transaction, with our integrity and
        // the request's source as XOR-MAPPED-ADDRESS.
        let mut resp = Message::new();
        resp.raw = out.response;
        resp.decode().unwrap();
        assert_eq!(resp.typ, BINDING_SUCCESS);
        assert_eq!(&resp.transaction_id.0[..], &RFC5769_REQUEST[8..20]);
        MessageIntegrity::new_short_term_integrity("VOkJxbRl1RmTxUk/WvJxBt".into())
            .check(&mut resp)
            .unwrap();
        FINGERPRINT.check(&resp).unwrap();
        let mut xor = XorMappedAddress::default();
        xor.get_from(&resp).unwrap();
        assert_eq!(SocketAddr::new(xor.ip, xor.port), addr(32853));
    }

    #[test]
    fn tampered_sample_is_refused_without_state() {
        let mut bytes = RFC5769_REQUEST;
        bytes[30] ^= 1; // inside SOFTWARE, covered by integrity and fingerprint
        let mut req = BindingRequest::parse(&bytes).unwrap();
        let mut ice = IceLite::new(
            IceCredentials {
                ufrag: "evtj".into(),
                pwd: "VOkJxbRl1RmTxUk/WvJxBt".into(),
            },
            None,
            DEFAULT_CONSENT_TIMEOUT,
        );
        assert_eq!(
            ice.handle_binding(Instant::now(), addr(1), &mut req),
            Err(DropReason::StunBadFingerprint)
        );
        assert_eq!(ice.selected(), None);
        assert_eq!(ice.poll_timeout(), None);
    }

    #[test]
    fn wrong_password_is_bad_integrity() {
        let bytes = request("relay1:peer", "not-the-password-at-all", true);
        let mut req = BindingRequest::parse(&bytes).unwrap();
        let mut ice = IceLite::new(creds(), None, DEFAULT_CONSENT_TIMEOUT);
        assert_eq!(
            ice.handle_binding(Instant::now(), addr(1), &mut req),
            Err(DropReason::StunBadIntegrity)
        );
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn stale_remote_ufrag_is_refused() {
        let bytes = request("relay1:old", &creds().pwd, true);
        let mut req = BindingRequest::parse(&bytes).unwrap();
        let mut ice = IceLite::new(creds(), Some("new".into()), DEFAULT_CONSENT_TIMEOUT);
        assert_eq!(
            ice.handle_binding(Instant::now(), addr(1), &mut req),
            Err(DropReason::StunUnknownUfrag)
        );
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(
            BindingRequest::parse(&[0, 1, 0]).err(),
            Some(DropReason::StunMalformed)
        );
        let mut long = request("relay1:peer", &creds().pwd, false);
        long.resize(MAX_STUN_LEN + 1, 0);
        assert_eq!(
            BindingRequest::parse(&long).err(),
            Some(DropReason::StunMalformed)
        );
        let no_colon = request("relay1peer", &creds().pwd, false);
        assert_eq!(
            BindingRequest::parse(&no_colon).err(),
            Some(DropReason::StunUnknownUfrag)
        );
        let mut resp = Message::new();
        resp.build(&[
            Box::new(BINDING_SUCCESS),
            Box::new(stun::agent::TransactionId::new()),
        ])
        .unwrap();
        assert_eq!(
            BindingRequest::parse(&resp.raw).err(),
            Some(DropReason::StunNotBindingRequest)
        );
    }

    #[test]
    fn consent_and_migration_in_virtual_time() {
        let pwd = creds().pwd;
        let t0 = Instant::now();
        let mut ice = IceLite::new(creds(), Some("peer".into()), Duration::from_secs(30));
        let check = |ice: &mut IceLite, now, port, uc| {
            let bytes = request("relay1:peer", &pwd, uc);
            let mut req = BindingRequest::parse(&bytes).unwrap();
            ice.handle_binding(now, addr(port), &mut req).unwrap()
        };

        // First verified check selects its address.
        let o = check(&mut ice, t0, 1000, false);
        assert_eq!(o.selected_changed, Some(None));
        assert_eq!(ice.selected(), Some(addr(1000)));
        assert_eq!(ice.poll_timeout(), Some(t0 + Duration::from_secs(30)));

        // A check from elsewhere without nomination neither migrates nor refreshes consent.
        let o = check(&mut ice, t0 + Duration::from_secs(10), 2000, false);
        assert_eq!(o.selected_changed, None);
        assert_eq!(ice.poll_timeout(), Some(t0 + Duration::from_secs(30)));

        // Refresh from the selected address.
        check(&mut ice, t0 + Duration::from_secs(20), 1000, false);
        assert!(!ice.consent_expired(t0 + Duration::from_secs(49)));

        // Nomination from a new address migrates.
        let o = check(&mut ice, t0 + Duration::from_secs(25), 2000, true);
        assert_eq!(o.selected_changed, Some(Some(addr(1000))));
        assert_eq!(ice.selected(), Some(addr(2000)));

        // Then silence: consent expires 30 s after the last verified check.
        assert!(!ice.consent_expired(t0 + Duration::from_secs(54)));
        assert!(ice.consent_expired(t0 + Duration::from_secs(55)));
    }
}
