//! Who may join: a WEB_ONLY key checked against the websocket's `Origin`, or a JWT signed
//! (HS256) with a key's secret. Every refusal says which check failed.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::store::{KeyRecord, Store};

/// What a participant may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Publish feeds.
    #[serde(default)]
    pub publish: bool,
    /// Subscribe to feeds.
    #[serde(default)]
    pub subscribe: bool,
    /// Send on data channels.
    #[serde(default)]
    pub publish_data: bool,
    /// Record the session.
    #[serde(default)]
    pub record: bool,
}

impl Grants {
    /// Parse `publish,subscribe,…`.
    pub fn parse(list: &str) -> Result<Grants, String> {
        let mut g = Grants::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "publish" => g.publish = true,
                "subscribe" => g.subscribe = true,
                "publish_data" => g.publish_data = true,
                "record" => g.record = true,
                other => {
                    return Err(format!(
                        "unknown grant {other:?} (publish, subscribe, publish_data, record)"
                    ))
                }
            }
        }
        Ok(g)
    }
}

/// The claims of a join token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The client.
    pub cid: String,
    /// The session the token is for.
    pub sid: String,
    /// The participant id, if the customer's backend assigns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the participant may do.
    pub grants: Grants,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// In a cluster, the region whose node the participant's media goes to (say, the one
    /// nearest the participant, or where the session's others are), wherever its page
    /// reaches signalling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Who joined, and what they may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The client the session belongs to.
    pub cid: String,
    /// The key used (directly or as the token's `kid`).
    pub key_id: String,
    /// Participant id from the token, if any.
    pub uid: Option<String>,
    /// Display name from the token, if any.
    pub name: Option<String>,
    /// Permissions.
    pub grants: Grants,
    /// Whether the key allows recording (the session may then be recorded from the admin
    /// API, whatever this participant's own grant).
    pub key_records: bool,
    /// The region its media goes to, from the token; else the node's that it reached.
    pub region: Option<String>,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither key nor token.
    #[error("a key or a token is required")]
    MissingCredentials,
    /// The key does not exist.
    #[error("unknown key")]
    UnknownKey,
    /// The key was revoked.
    #[error("the key has been revoked")]
    RevokedKey,
    /// No Origin header on a key join.
    #[error("no Origin header: WEB_ONLY keys work only from web pages on their allowed domains")]
    MissingOrigin,
    /// The Origin is not among the key's domains.
    #[error("origin {0} is not an allowed domain of this key")]
    ForeignOrigin(String),
    /// The token does not decode or verify.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token is for another session.
    #[error("the token is for session {token}, not {requested}")]
    WrongSession {
        /// In the token.
        token: String,
        /// Asked for.
        requested: String,
    },
    /// The database failed.
    #[error("account database: {0}")]
    Store(String),
}

/// Check an `Origin` header against a key's allowed domains.
///
/// An entry is a host (`app.example.com`), a wildcard for its subdomains (`*.example.com`, which
/// does not match `example.com` itself), either optionally with `:port` (then only that port
/// matches). Only `http` and `https` origins are accepted; `localhost` and loopback addresses
/// only when listed.
pub fn origin_allowed(origin: Option<&str>, domains: &[String]) -> Result<(), AuthError> {
    let origin = origin.ok_or(AuthError::MissingOrigin)?;
    let foreign = || AuthError::ForeignOrigin(origin.to_owned());
    let (scheme, rest) = origin.split_once("://").ok_or_else(foreign)?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(foreign()),
    };
    if rest.contains('/') || rest.contains('@') {
        return Err(foreign());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| foreign())?)
        }
        _ => (rest, default_port),
    };
    let host = host.to_ascii_lowercase();
    for entry in domains {
        let entry = entry.trim().to_ascii_lowercase();
        let (pattern, want_port) = match entry.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse::<u16>().ok()),
            _ => (entry.clone(), None),
        };
        if want_port.is_some_and(|p| p != port) {
            continue;
        }
        let matches = match pattern.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == pattern,
        };
        if matches {
            return Ok(());
        }
    }
    Err(foreign())
}

/// Mint a token for `claims` with a key's id and secret.
pub fn mint(key_id: &str, secret: &str, claims: &Claims) -> Result<String, String> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key_id.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// Where authentication finds keys: the database itself, or the key cache of
/// [`crate::accounts`] in front of it.
pub trait Keys {
    /// The key `key_id` with its secret, revoked or not; None when there is no such key.
    fn key(&mut self, key_id: &str) -> Result<Option<KeyRecord>, AuthError>;
}

impl Keys for &Store {
    fn key(&mut self, key_id: &str) -> Result<Option<KeyRecord>, AuthError> {
        Store::key(self, key_id).map_err(|e| AuthError::Store(e.to_string()))
    }
}

fn usable_key(keys: &mut impl Keys, key_id: &str) -> Result<KeyRecord, AuthError> {
    let key = keys.key(key_id)?.ok_or(AuthError::UnknownKey)?;
    if key.info.revoked_at.is_some() {
        return Err(AuthError::RevokedKey);
    }
    Ok(key)
}

/// Authenticate a join with a WEB_ONLY key from a page at `origin`.
pub fn with_key(
    mut keys: impl Keys,
    key_id: &str,
    origin: Option<&str>,
) -> Result<Identity, AuthError> {
    let key = usable_key(&mut keys, key_id)?;
    origin_allowed(origin, &key.info.domains)?;
    Ok(Identity {
        key_records: key.info.recording,
        cid: key.info.cid,
        key_id: key.info.key_id,
        uid: None,
        name: None,
        region: None,
        grants: Grants {
            publish: true,
            subscribe: true,
            publish_data: true,
            record: key.info.recording,
        },
    })
}

/// The `alg` a token's header declares, read without trusting anything else in it.
fn declared_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let first = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(v.get("alg")?.as_str()?.to_owned())
}

/// Authenticate a join with a token for session `sid`.
pub fn with_token(mut keys: impl Keys, token: &str, sid: &str) -> Result<Identity, AuthError> {
    let invalid = |why: &str| AuthError::InvalidToken(why.to_owned());
    let header = jsonwebtoken::decode_header(token).map_err(|_| match declared_alg(token) {
        // `alg: none` and other names the library does not know.
        Some(alg) => AuthError::InvalidToken(format!(
            "unexpected algorithm {alg} (only HS256 is accepted)"
        )),
        None => invalid("not a JWT"),
    })?;
    if header.alg != Algorithm::HS256 {
        return Err(AuthError::InvalidToken(format!(
            "unexpected algorithm {:?} (only HS256 is accepted)",
            header.alg
        )));
    }
    let kid = header
        .kid
        .ok_or_else(|| invalid("no kid (key id) in the header"))?;
    let key = usable_key(&mut keys, &kid)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_nbf = true;
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(key.secret.as_bytes()),
        &validation,
    )
    .map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => invalid("bad signature"),
            K::ExpiredSignature => invalid("expired"),
            K::ImmatureSignature => invalid("not yet valid (nbf)"),
            K::InvalidAlgorithm => invalid("unexpected algorithm (only HS256 is accepted)"),
            K::MissingRequiredClaim(c) => AuthError::InvalidToken(format!("missing claim {c}")),
            _ => AuthError::InvalidToken(e.to_string()),
        }
    })?;
    let claims = data.claims;
    if claims.cid != key.info.cid {
        return Err(invalid("the token's cid does not own its key"));
    }
    if claims.sid != sid {
        return Err(AuthError::WrongSession {
            token: claims.sid,
            requested: sid.to_owned(),
        });
    }
    Ok(Identity {
        key_records: key.info.recording,
        cid: claims.cid,
        key_id: key.info.key_id,
        uid: claims.uid,
        name: claims.name,
        region: claims.region,
        grants: Grants {
            record: claims.grants.record && key.info.recording,
            ..claims.grants
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn origins() {
        let domains = d(&["app.example.com", "*.example.org", "localhost:8080"]);
        let ok = |o: &str| origin_allowed(Some(o), &domains).is_ok();
        assert!(ok("https://app.example.com"));
        assert!(ok("https://APP.example.com:443"));
        assert!(ok("http://app.example.com:8443"));
        assert!(ok("https://a.example.org"));
        assert!(ok("https://deep.a.example.org"));
        assert!(!ok("https://example.org"), "wildcard excludes the apex");
        assert!(!ok("https://evilexample.org"));
        assert!(!ok("https://app.example.com.evil.net"));
        assert!(ok("http://localhost:8080"));
        assert!(!ok("http://localhost:9090"));
        assert!(!ok("http://127.0.0.1:8080"), "loopback only when listed");
        assert!(!ok("null"));
        assert!(!ok("file://app.example.com"));
        assert!(!ok("chrome-extension://app.example.com"));
        assert!(!ok("https://user@app.example.com"));
        assert_eq!(
            origin_allowed(None, &domains),
            Err(AuthError::MissingOrigin)
        );
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn token_lifecycle_and_refusals() {
        use base64::Engine;
        let dir = std::env::temp_dir().join(format!("webrtcai-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(dir.join("a.db")).unwrap();
        let client = store.create_client("Acme").unwrap();
        let key = store
            .create_key(&client.cid, &d(&["app.example.com"]), false)
            .unwrap();
        let kid = key.info.key_id.clone();
        let claims = |sid: &str, exp: u64, nbf: Option<u64>| Claims {
            cid: client.cid.clone(),
            sid: sid.into(),
            uid: Some("alice".into()),
            name: None,
            grants: Grants::parse("publish,subscribe,record").unwrap(),
            exp,
            nbf,
            region: None,
        };
        let good = mint(&kid, &key.secret, &claims("room", now() + 3600, None)).unwrap();
        let id = with_token(&store, &good, "room").unwrap();
        assert_eq!(id.uid.as_deref(), Some("alice"));
        assert!(id.grants.publish && id.grants.subscribe);
        assert!(!id.grants.record, "the key does not allow recording");

        let why = |t: &str, sid: &str| with_token(&store, t, sid).unwrap_err().to_string();
        assert!(why(&good, "other").contains("not other"));
        let expired = mint(&kid, &key.secret, &claims("room", now() - 60, None)).unwrap();
        assert!(why(&expired, "room").contains("expired"));
        let early = mint(
            &kid,
            &key.secret,
            &claims("room", now() + 3600, Some(now() + 600)),
        )
        .unwrap();
        assert!(why(&early, "room").contains("not yet valid"));
        let forged = mint(
            &kid,
            "sk_not_the_secret",
            &claims("room", now() + 3600, None),
        )
        .unwrap();
        assert!(why(&forged, "room").contains("bad signature"));
        let unknown = mint("wk_nope", &key.secret, &claims("room", now() + 3600, None)).unwrap();
        assert!(why(&unknown, "room").contains("unknown key"));

        // alg none: header and payload with an empty signature.
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let payload = serde_json::to_value(claims("room", now() + 3600, None)).unwrap();
        let none = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg":"none","kid":kid})),
            b64(payload.clone())
        );
        assert!(why(&none, "room").contains("unexpected algorithm none"));
        // HS512 with the right secret is still refused.
        let mut h = Header::new(Algorithm::HS512);
        h.kid = Some(kid.clone());
        let hs512 = jsonwebtoken::encode(
            &h,
            &payload,
            &EncodingKey::from_secret(key.secret.as_bytes()),
        )
        .unwrap();
        assert!(why(&hs512, "room").contains("unexpected algorithm"));
        assert!(why("garbage", "room").contains("not a JWT"));

        store.revoke_key(&kid).unwrap();
        assert!(why(&good, "room").contains("revoked"));
        assert_eq!(
            with_key(&store, &kid, Some("https://app.example.com")).unwrap_err(),
            AuthError::RevokedKey
        );
    }

    #[test]
    fn grants_parse() {
        let g = Grants::parse("publish, subscribe,record").unwrap();
        assert!(g.publish && g.subscribe && g.record && !g.publish_data);
        assert!(Grants::parse("fly").unwrap_err().contains("fly"));
    }
}
