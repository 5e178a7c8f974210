//! Key layout of the durable store. Numbers are big-endian so byte order is numeric order;
//! a user, group or device id that leads a key is length-prefixed (u16) so that one user's
//! keys never share a prefix with another user's ("al" vs "alice").
//!
//! | partition  | key                                        | value                     |
//! |------------|--------------------------------------------|---------------------------|
//! | `meta`     | `"epoch"`                                  | u64                       |
//! | `messages` | msg_id                                     | message record            |
//! | `inbox`    | id(user) ++ seq                            | msg_id                    |
//! | `dedupe`   | id(user) ++ client_msg_id                  | (msg_id, sender seq)      |
//! | `cursors`  | id(user) ++ device                         | cursor                    |
//! | `groups`   | id(group) ++ 0, id(group) ++ 1 ++ member   | empty                     |

use super::engine::Partition;
use super::record::RecordError;

/// The meta key holding the store's epoch.
pub const EPOCH_KEY: &[u8] = b"epoch";

/// The longest id that can lead a key.
pub const ID_BYTES_MAX: usize = u16::MAX as usize;

const GROUP_EXISTS: u8 = 0;
const GROUP_MEMBER: u8 = 1;

/// `id` with its length in front: the prefix of every key of that user (or group).
pub fn id_prefix(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + id.len() + 8);
    push_id(&mut out, id);
    out
}

fn push_id(out: &mut Vec<u8>, id: &str) {
    let len = u16::try_from(id.len())
        .unwrap_or_else(|_| panic!("id of {} bytes reached the key layout unchecked", id.len()));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(id.as_bytes());
}

/// The key of a message record.
pub fn message_key(msg_id: u64) -> Vec<u8> {
    msg_id.to_be_bytes().to_vec()
}

/// Reads a message key.
pub fn decode_message_key(key: &[u8]) -> Result<u64, RecordError> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| RecordError::new(Partition::Messages, key, "key is not 8 bytes"))
}

/// The key of entry `seq` of `user`'s inbox.
pub fn inbox_key(user: &str, seq: u64) -> Vec<u8> {
    let mut out = id_prefix(user);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// The seq of an inbox key that starts with `prefix`.
pub fn decode_inbox_seq(prefix: &[u8], key: &[u8]) -> Result<u64, RecordError> {
    key.strip_prefix(prefix)
        .and_then(|seq| <[u8; 8]>::try_from(seq).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| RecordError::new(Partition::Inbox, key, "not a user prefix and 8-byte seq"))
}

/// The key of `user`'s dedupe record for `client_msg_id`.
pub fn dedupe_key(user: &str, client_msg_id: &str) -> Vec<u8> {
    let mut out = id_prefix(user);
    out.extend_from_slice(client_msg_id.as_bytes());
    out
}

/// The key of a device's cursor.
pub fn cursor_key(user: &str, device: &str) -> Vec<u8> {
    let mut out = id_prefix(user);
    out.extend_from_slice(device.as_bytes());
    out
}

/// The key recording that `group` exists.
pub fn group_key(group: &str) -> Vec<u8> {
    let mut out = id_prefix(group);
    out.push(GROUP_EXISTS);
    out
}

/// The key recording that `member` is in `group`.
pub fn group_member_key(group: &str, member: &str) -> Vec<u8> {
    let mut out = id_prefix(group);
    out.push(GROUP_MEMBER);
    out.extend_from_slice(member.as_bytes());
    out
}

/// What a key of the `groups` partition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    /// The group exists.
    Group(String),
    /// (group, member): the member is in the group.
    Member(String, String),
}

/// Reads a key of the `groups` partition.
pub fn decode_group_key(key: &[u8]) -> Result<GroupKey, RecordError> {
    let (group, rest) = split_id(Partition::Groups, key)?;
    match rest.split_first() {
        Some((&GROUP_EXISTS, [])) => Ok(GroupKey::Group(group)),
        Some((&GROUP_MEMBER, member)) => Ok(GroupKey::Member(
            group,
            utf8(Partition::Groups, key, member, "member")?,
        )),
        _ => Err(RecordError::new(
            Partition::Groups,
            key,
            "neither a group nor a member key",
        )),
    }
}

/// The id that leads `key`, and the rest of the key.
pub fn split_id(partition: Partition, key: &[u8]) -> Result<(String, &[u8]), RecordError> {
    let (len, rest) = key
        .split_first_chunk::<2>()
        .ok_or_else(|| RecordError::new(partition, key, "key shorter than its id length"))?;
    let len = u16::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(RecordError::new(
            partition,
            key,
            format!("id length {len} runs past the key's end"),
        ));
    }
    let (id, rest) = rest.split_at(len);
    Ok((utf8(partition, key, id, "id")?, rest))
}

fn utf8(partition: Partition, key: &[u8], bytes: &[u8], what: &str) -> Result<String, RecordError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| RecordError::new(partition, key, format!("{what} is not UTF-8")))
}

/// The least key greater than every key starting with `prefix` (`None`: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_separate_users_and_order_seqs_numerically() {
        assert!(!inbox_key("alice", 1).starts_with(&id_prefix("al")));
        assert!(inbox_key("al", 2) < inbox_key("al", 256));
        assert_eq!(
            decode_inbox_seq(&id_prefix("al"), &inbox_key("al", 300)),
            Ok(300)
        );
        assert!(decode_inbox_seq(&id_prefix("al"), &inbox_key("alice", 3)).is_err());
        assert_eq!(prefix_end(&[1, 255, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255]), None);
        let end = prefix_end(&id_prefix("al")).unwrap();
        assert!(inbox_key("al", u64::MAX) < end);
    }

    #[test]
    fn group_keys_round_trip_and_bad_keys_are_errors() {
        assert_eq!(
            decode_group_key(&group_key("g")),
            Ok(GroupKey::Group("g".into()))
        );
        assert_eq!(
            decode_group_key(&group_member_key("g", "")),
            Ok(GroupKey::Member("g".into(), "".into()))
        );
        assert!(decode_group_key(&[0, 9, b'g']).is_err());
        assert!(decode_group_key(&[0]).is_err());
        assert!(decode_group_key(&[0, 1, b'g', 7]).is_err());
        assert!(decode_message_key(&[1, 2]).is_err());
    }
}
