//! Key layout of the durable store. Numbers are big-endian so byte order is numeric order;
//! a user, group or device id that leads a key is length-prefixed (u16) so that one user's
//! keys never share a prefix with another user's ("al" vs "alice"), and led by the id's
//! [`lead`]: four bytes of its hash.
//!
//! | partition  | key                                        | value                     |
//! |------------|--------------------------------------------|---------------------------|
//! | `meta`     | `"epoch"`                                  | u64                       |
//! | `messages` | msg_id                                     | message record            |
//! | `inbox`    | id(user) ++ seq                            | msg_id                    |
//! | `dedupe`   | id(user) ++ client_msg_id                  | (msg_id, sender seq)      |
//! | `cursors`  | id(user) ++ device                         | cursor                    |
//! | `groups`   | id(group) ++ 0, id(group) ++ 1 ++ member   | empty                     |
//!
//! where id(x) is lead(x) ++ len(x) as u16 ++ x. Why the lead: fjall's memtables are skip
//! lists whose keys compare their first four bytes (kept in the key's handle) before the rest
//! (kept elsewhere once a key is over 20 bytes). Ids of one deployment share their first
//! bytes (`r1733...u17`, `user1`, a tenant's prefix), so without the lead every comparison of
//! an insert's descent read the other key's bytes from another cache line; with it, keys of
//! different users differ in those four bytes and only the last few comparisons, among one
//! user's keys, read further. The order of one user's keys is unchanged (they share the lead);
//! users are ordered by hash, which nothing reads.

use super::engine::Partition;
use super::record::RecordError;

/// The meta key holding the store's epoch.
pub const EPOCH_KEY: &[u8] = b"epoch";

/// The longest id that can lead a key.
pub const ID_BYTES_MAX: usize = u16::MAX as usize;

/// Bytes of an id's [`lead`].
pub const LEAD_BYTES: usize = 4;

const GROUP_EXISTS: u8 = 0;
const GROUP_MEMBER: u8 = 1;

/// The first four bytes of every key of `id`: the high half of its XXH3-64 (a published,
/// seedless hash, so every build and platform agrees).
pub fn lead(id: &str) -> [u8; LEAD_BYTES] {
    let hash = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
    ((hash >> 32) as u32).to_be_bytes()
}

/// `id` with its lead and length in front: the prefix of every key of that user (or group).
pub fn id_prefix(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEAD_BYTES + 2 + id.len() + 8);
    push_id(&mut out, id);
    out
}

fn push_id(out: &mut Vec<u8>, id: &str) {
    let len = u16::try_from(id.len())
        .unwrap_or_else(|_| panic!("id of {} bytes reached the key layout unchecked", id.len()));
    out.extend_from_slice(&lead(id));
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

/// The id that leads `key`, and the rest of the key. A lead that is not the id's is an
/// error: the key was not written by this layout.
pub fn split_id(partition: Partition, key: &[u8]) -> Result<(String, &[u8]), RecordError> {
    let (found_lead, rest) = key
        .split_first_chunk::<LEAD_BYTES>()
        .ok_or_else(|| RecordError::new(partition, key, "key shorter than its id's lead"))?;
    let (len, rest) = rest
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
    let id = utf8(partition, key, id, "id")?;
    if *found_lead != lead(&id) {
        return Err(RecordError::new(
            partition,
            key,
            format!("the key's lead is not the hash of its id {id:?}"),
        ));
    }
    Ok((id, rest))
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
    fn ids_with_a_common_start_differ_in_their_first_four_bytes() {
        // What the lead is for: the ids of a load run share their first 17 bytes.
        let keys: Vec<Vec<u8>> = (0..1_000)
            .map(|user| inbox_key(&format!("r1733400000000w0u{user}"), 1))
            .collect();
        let mut firsts: Vec<&[u8]> = keys.iter().map(|key| &key[..LEAD_BYTES]).collect();
        firsts.sort_unstable();
        firsts.dedup();
        // 1,000 draws of 2^32 values: a collision is a one in 8,600 chance, and XXH3 is fixed.
        assert_eq!(firsts.len(), 1_000);
        // Pinned (computed by Python's `xxhash` package, `xxh3_64_intdigest`): a lead that
        // changed would make every store written before unreadable.
        assert_eq!(lead("alice"), [77, 161, 13, 214]);
        assert_eq!(lead(""), [45, 6, 128, 5]);
        assert_eq!(&id_prefix("al")[LEAD_BYTES..], &[0, 2, b'a', b'l']);
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
        let g = lead("g");
        assert!(decode_group_key(&[&g[..], &[0, 9, b'g']].concat()).is_err());
        assert!(decode_group_key(&[0]).is_err());
        assert!(decode_group_key(&[&g[..], &[0]].concat()).is_err());
        assert!(decode_group_key(&[&g[..], &[0, 1, b'g', 7]].concat()).is_err());
        // The layout before the lead (format 1): the same key without it is refused.
        assert!(decode_group_key(&[0, 1, b'g', 0]).is_err());
        assert!(decode_group_key(&[&g[..], &[0, 1, b'g', 0]].concat()).is_ok());
        // A lead that is not the id's.
        let mut wrong = group_key("g");
        wrong[0] ^= 1;
        assert!(decode_group_key(&wrong).is_err());
        assert!(decode_message_key(&[1, 2]).is_err());
    }
}
