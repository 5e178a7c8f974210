//! The wire messages, generated from `proto/imlab.proto` by prost (`tools/protogen`, checked in
//! as `proto/imlab.v1.rs`, so a build compiles no protobuf compiler).
//!
//! Every frame on the wire is one [`Frame`]; the helpers here name a frame's kind for logs and
//! errors without printing its payload.

#![allow(clippy::all, missing_docs)]

include!("proto/imlab.v1.rs");

pub use frame::Body;

impl Frame {
    /// Wraps a body into a frame.
    pub fn new(body: Body) -> Frame {
        Frame { body: Some(body) }
    }

    /// A short name of the frame's kind (`"login"`, `"send"`, ...), for logs and errors.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            None => "empty",
            Some(body) => body.kind(),
        }
    }
}

impl Body {
    /// A short name of the body's kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Login(_) => "login",
            Body::LoginReply(_) => "login_reply",
            Body::Ping(_) => "ping",
            Body::Pong(_) => "pong",
            Body::Send(_) => "send",
            Body::SendAck(_) => "send_ack",
            Body::NotifyData(_) => "notify_data",
            Body::Notify(_) => "notify",
            Body::DeviceAck(_) => "device_ack",
            Body::SyncRequest(_) => "sync_request",
            Body::SyncResponse(_) => "sync_response",
            Body::GroupCreate(_) => "group_create",
            Body::GroupJoin(_) => "group_join",
            Body::GroupLeave(_) => "group_leave",
            Body::GroupReply(_) => "group_reply",
            Body::Kick(_) => "kick",
            Body::Error(_) => "error",
        }
    }
}

impl Error {
    /// An error frame body answering nothing in particular.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Error {
        Error {
            code: code as i32,
            text: text.into(),
            client_msg_id: String::new(),
            request_id: 0,
        }
    }
}

/// The conversation a message belongs to, as seen by one side.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A 1:1 conversation with this user.
    Peer(String),
    /// A group conversation.
    Group(String),
}

impl Target {
    /// The `to` field of a `Send`.
    pub fn to_send_to(&self) -> send::To {
        match self {
            Target::Peer(user) => send::To::PeerUser(user.clone()),
            Target::Group(group) => send::To::GroupId(group.clone()),
        }
    }

    /// The `to` field of a `Message`.
    pub fn to_message_to(&self) -> message::To {
        match self {
            Target::Peer(user) => message::To::PeerUser(user.clone()),
            Target::Group(group) => message::To::GroupId(group.clone()),
        }
    }

    /// Reads the `to` field of a `Send`.
    pub fn from_send_to(to: &send::To) -> Target {
        match to {
            send::To::PeerUser(user) => Target::Peer(user.clone()),
            send::To::GroupId(group) => Target::Group(group.clone()),
        }
    }

    /// Reads the `to` field of a `Message`.
    pub fn from_message_to(to: &message::To) -> Target {
        match to {
            message::To::PeerUser(user) => Target::Peer(user.clone()),
            message::To::GroupId(group) => Target::Group(group.clone()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Peer(user) => write!(f, "user:{user}"),
            Target::Group(group) => write!(f, "group:{group}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The digest `tools/protogen` recorded in the checked-in code's header.
    fn recorded_digest(generated: &str) -> Option<&str> {
        generated
            .lines()
            .take_while(|line| line.starts_with("//"))
            .find_map(|line| line.strip_prefix("// schema-sha256: "))
    }

    #[test]
    fn generated_code_matches_the_schema() {
        let schema = include_bytes!("../proto/imlab.proto");
        let generated = include_str!("proto/imlab.v1.rs");
        let digest: String = Sha256::digest(schema)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            recorded_digest(generated),
            Some(digest.as_str()),
            "core/src/proto/imlab.v1.rs was not generated from this core/proto/imlab.proto: \
             run `cargo run --manifest-path tools/protogen/Cargo.toml`"
        );
    }
}
