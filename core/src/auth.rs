//! Login tokens: `v1.<user>.<expiry unix seconds>.<hex HMAC-SHA256>`.
//!
//! The signature covers `v1.<user>.<expiry>` with the server's secret. With no secret the
//! server is in dev mode: any token is accepted and the user is whoever the Login names.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const TOKEN_VERSION: &str = "v1";

/// The longest user or device id the server accepts, in bytes.
pub const ID_LEN_MAX: usize = 128;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not `v1.<user>.<expiry>.<signature>`.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// The signature does not match the secret.
    #[error("token signature does not match")]
    BadSignature,
    /// The token was minted for someone else.
    #[error("token is for user {token_user:?}, not {login_user:?}")]
    WrongUser {
        /// User inside the token.
        token_user: String,
        /// User named by the Login.
        login_user: String,
    },
    /// The token's expiry has passed.
    #[error("token expired at unix time {expiry_unix_s} (now {now_unix_s})")]
    Expired {
        /// Expiry inside the token.
        expiry_unix_s: u64,
        /// The server's clock.
        now_unix_s: u64,
    },
}

/// Checks that a user or device id is 1 to [`ID_LEN_MAX`] bytes of `[A-Za-z0-9_-]`, which
/// keeps ids printable, usable in tokens, and safe as store keys.
pub fn validate_id(kind: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{kind} id is empty"));
    }
    if id.len() > ID_LEN_MAX {
        return Err(format!(
            "{kind} id is {} bytes, over {ID_LEN_MAX}",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "{kind} id {id:?} contains {bad:?}; use [A-Za-z0-9_-]"
        ));
    }
    Ok(())
}

/// How the server checks tokens.
#[derive(Clone)]
pub enum Authenticator {
    /// Dev mode: every token is accepted.
    Dev,
    /// Tokens must carry an HMAC-SHA256 signature made with this secret.
    Hmac {
        /// The shared secret.
        secret: Vec<u8>,
    },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authenticator::Dev => write!(f, "Authenticator::Dev"),
            Authenticator::Hmac { .. } => write!(f, "Authenticator::Hmac {{ secret: <hidden> }}"),
        }
    }
}

impl Authenticator {
    /// Dev mode when `secret` is `None`.
    pub fn from_secret(secret: Option<&str>) -> Authenticator {
        match secret {
            None => Authenticator::Dev,
            Some(secret) => Authenticator::Hmac {
                secret: secret.as_bytes().to_vec(),
            },
        }
    }

    /// True when unsigned tokens are accepted.
    pub fn is_dev(&self) -> bool {
        matches!(self, Authenticator::Dev)
    }

    /// Checks `token` for `login_user` at `now_unix_s`.
    pub fn verify(&self, token: &str, login_user: &str, now_unix_s: u64) -> Result<(), AuthError> {
        let secret = match self {
            Authenticator::Dev => return Ok(()),
            Authenticator::Hmac { secret } => secret,
        };
        let (signed, signature_hex) = token
            .rsplit_once('.')
            .ok_or(AuthError::Malformed("no signature"))?;
        let mut parts = signed.split('.');
        let (Some(version), Some(token_user), Some(expiry), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected v1.<user>.<expiry>.<signature>",
            ));
        };
        if version != TOKEN_VERSION {
            return Err(AuthError::Malformed("unknown token version"));
        }
        let signature =
            hex::decode(signature_hex).map_err(|_| AuthError::Malformed("signature is not hex"))?;
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;
        let expiry_unix_s: u64 = expiry
            .parse()
            .map_err(|_| AuthError::Malformed("expiry is not a number"))?;
        if token_user != login_user {
            return Err(AuthError::WrongUser {
                token_user: token_user.to_string(),
                login_user: login_user.to_string(),
            });
        }
        if expiry_unix_s <= now_unix_s {
            return Err(AuthError::Expired {
                expiry_unix_s,
                now_unix_s,
            });
        }
        Ok(())
    }
}

/// Mints a token for `user`, valid until `expiry_unix_s`.
pub fn mint_token(secret: &str, user: &str, expiry_unix_s: u64) -> Result<String, String> {
    validate_id("user", user)?;
    let signed = format!("{TOKEN_VERSION}.{user}.{expiry_unix_s}");
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(signed.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    Ok(format!("{signed}.{signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: &str, login_user: &str, now_unix_s: u64) -> Result<(), AuthError> {
        Authenticator::from_secret(Some("s3cret")).verify(token, login_user, now_unix_s)
    }

    #[test]
    fn signed_token_round_trips_and_rejects_tampering() {
        let token = mint_token("s3cret", "alice", 1_000).unwrap();
        assert_eq!(check(&token, "alice", 999), Ok(()));
        assert_eq!(
            check(&token, "alice", 1_000),
            Err(AuthError::Expired {
                expiry_unix_s: 1_000,
                now_unix_s: 1_000
            })
        );
        assert_eq!(
            check(&token, "bob", 10),
            Err(AuthError::WrongUser {
                token_user: "alice".into(),
                login_user: "bob".into()
            })
        );
        let forged = token.replace("alice", "bob");
        assert_eq!(check(&forged, "bob", 10), Err(AuthError::BadSignature));
        let other_secret = mint_token("other", "alice", 1_000).unwrap();
        assert_eq!(
            check(&other_secret, "alice", 10),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            check("garbage", "alice", 10),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            check("v1.alice.zz.00", "alice", 10),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn dev_mode_accepts_anything() {
        assert_eq!(Authenticator::Dev.verify("", "alice", 5), Ok(()));
    }

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("user", "alice_01-x").is_ok());
        assert_eq!(validate_id("user", ""), Err("user id is empty".to_string()));
        assert!(validate_id("user", "a.b").unwrap_err().contains("'.'"));
        assert!(
            validate_id("device", &"x".repeat(129))
                .unwrap_err()
                .contains("over 128")
        );
        assert!(mint_token("s", "a.b", 1).is_err());
    }
}
