//! Names of the reasons a login or a send was refused, as counted in the ledger and shown in
//! the summary (`auth_failed`, `rate_limited`...): one short, stable word per cause.

use imlab_core::client::{ClientExit, DisconnectCause};
use imlab_core::proto::ErrorCode;

/// Why a login attempt failed, or `None` for a connection that was up (not a login failure).
pub fn login_failure(cause: &DisconnectCause) -> &'static str {
    match cause {
        DisconnectCause::ConnectFailed(text) if text.contains("login timed out") => "login_timeout",
        DisconnectCause::ConnectFailed(text) if text.to_lowercase().contains("refused") => {
            "connection_refused"
        }
        DisconnectCause::ConnectFailed(_) => "connect_failed",
        DisconnectCause::LoginFailed(code, _) => error_code(*code),
        DisconnectCause::ConnectionLost(_) => "connection_lost",
        DisconnectCause::ProtocolError(_) => "protocol_error",
        _ => "other",
    }
}

/// Why a client stopped for good.
pub fn exit(exit: &ClientExit) -> Option<&'static str> {
    match exit {
        ClientExit::Shutdown => None,
        ClientExit::LoginRefused(code, _) => Some(error_code(*code)),
    }
}

/// A server error code as a cause word.
pub fn error_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::AuthFailed => "auth_failed",
        ErrorCode::TokenExpired => "token_expired",
        ErrorCode::Overloaded => "overloaded",
        ErrorCode::LoginTimeout => "login_timeout",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::StoreUnavailable => "store_unavailable",
        ErrorCode::InvalidRequest => "invalid_request",
        _ => "other",
    }
}

/// `auth_failed 3, overloaded 1` (words with spaces for the summary), or `none`.
pub fn list(counts: &std::collections::BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(cause, n)| format!("{} {n}", cause.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to do about a login refused for this cause, if there is advice.
pub fn login_advice(cause: &str) -> Option<&'static str> {
    match cause {
        "auth_failed" => Some(
            "the server checks tokens: pass its secret with --auth-secret or IMLAB_AUTH_SECRET",
        ),
        "token_expired" => Some("the tokens expired: check the clocks of both machines"),
        "connection_refused" => Some("nothing listens there: check --target and the server"),
        "login_timeout" => Some("the server accepted but did not answer the login in time"),
        "overloaded" => Some("the server is at --max-connections or overloaded"),
        "connection_lost" => Some(
            "the server closed the connection during login: an MQTT broker does this to \
             imlab's login (use --protocol mqtt), or the server is at its connection limit",
        ),
        "not_mqtt" => {
            Some("the target does not speak MQTT: an imlab server needs --protocol imlab")
        }
        "closed_before_connack" => Some(
            "the target closed the connection instead of answering CONNECT: is it an MQTT \
             broker (an imlab server does this; use --protocol imlab), at its connection limit?",
        ),
        "connack_timeout" => Some(
            "the target accepted but sent no CONNACK within --ack-timeout: is it an MQTT broker?",
        ),
        "protocol_version" => Some("the broker refused this MQTT version: try --mqtt-version"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_login_refusal_has_a_cause_word() {
        for (cause, word) in [
            (
                DisconnectCause::ConnectFailed("Connection refused (os error 111)".into()),
                "connection_refused",
            ),
            (
                DisconnectCause::ConnectFailed("login timed out".into()),
                "login_timeout",
            ),
            (
                DisconnectCause::LoginFailed(ErrorCode::Overloaded, String::new()),
                "overloaded",
            ),
            (
                DisconnectCause::LoginFailed(ErrorCode::LoginTimeout, String::new()),
                "login_timeout",
            ),
        ] {
            assert_eq!(login_failure(&cause), word, "{cause:?}");
        }
        for (code, word) in [
            (ErrorCode::AuthFailed, "auth_failed"),
            (ErrorCode::TokenExpired, "token_expired"),
        ] {
            let exit = ClientExit::LoginRefused(code, String::new());
            assert_eq!(super::exit(&exit), Some(word));
        }
        assert_eq!(super::exit(&ClientExit::Shutdown), None);
    }
}
