//! A bounded table of per-network heartbeat state, keyed by network label.
//!
//! NAT timeouts belong to a network, not to a device, so adaptive strategies remember what they
//! learnt per label and reload it when the device comes back. The table holds at most
//! [`NETWORKS_LEN_MAX`](super::NETWORKS_LEN_MAX) labels; when a new one arrives the entry with the
//! oldest stamp goes (ties: the smallest label, so eviction is deterministic). What a stamp
//! means is the caller's choice: Mars stamps the last write, `imlab-adaptive` the last use.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    stamp_ms: u64,
}

/// Per-network values plus the label in use.
#[derive(Debug, Clone)]
pub(crate) struct NetworkTable<T> {
    entries: BTreeMap<String, Entry<T>>,
    current: Option<String>,
    len_max: usize,
}

impl<T> NetworkTable<T> {
    pub(crate) fn new(len_max: usize) -> NetworkTable<T> {
        assert!(len_max > 0, "a network table must hold the current network");
        NetworkTable {
            entries: BTreeMap::new(),
            current: None,
            len_max,
        }
    }

    /// Makes `label` current, creating its entry with `make()` (stamped `now_ms`) if it is new.
    /// Returns true when the entry was created.
    pub(crate) fn switch_to(&mut self, label: &str, now_ms: u64, make: impl FnOnce() -> T) -> bool {
        self.current = Some(label.to_owned());
        if self.entries.contains_key(label) {
            return false;
        }
        while self.entries.len() >= self.len_max {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(label, entry)| (entry.stamp_ms, label.as_str()))
                .map(|(label, _)| label.clone())
                .expect("a full table has entries");
            self.entries.remove(&oldest);
        }
        let value = make();
        self.entries.insert(
            label.to_owned(),
            Entry {
                value,
                stamp_ms: now_ms,
            },
        );
        true
    }

    #[cfg(test)]
    pub(crate) fn current_label(&self) -> Option<&str> {
        self.current.as_deref()
    }

    pub(crate) fn current(&self) -> Option<&T> {
        let label = self.current.as_ref()?;
        self.entries.get(label).map(|entry| &entry.value)
    }

    pub(crate) fn current_mut(&mut self) -> Option<&mut T> {
        let label = self.current.as_ref()?;
        self.entries.get_mut(label).map(|entry| &mut entry.value)
    }

    /// Stamps the current entry.
    pub(crate) fn stamp_current(&mut self, now_ms: u64) {
        if let Some(label) = &self.current
            && let Some(entry) = self.entries.get_mut(label)
        {
            entry.stamp_ms = now_ms;
        }
    }

    pub(crate) fn current_stamp_ms(&self) -> Option<u64> {
        let label = self.current.as_ref()?;
        self.entries.get(label).map(|entry| entry.stamp_ms)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn get(&self, label: &str) -> Option<&T> {
        self.entries.get(label).map(|entry| &entry.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_stamp_is_evicted_at_the_limit() {
        let mut table = NetworkTable::new(3);
        assert!(table.switch_to("a", 10, || 1));
        assert!(table.switch_to("b", 20, || 2));
        assert!(table.switch_to("c", 30, || 3));
        table.switch_to("a", 40, || 0);
        table.stamp_current(40);
        assert!(table.switch_to("d", 50, || 4));
        assert_eq!(table.len(), 3);
        assert_eq!(table.get("b"), None, "b had the oldest stamp");
        assert_eq!(
            table.get("a"),
            Some(&1),
            "a was refreshed at 40 and kept its value"
        );
        assert_eq!(table.current_label(), Some("d"));
        assert_eq!(table.current(), Some(&4));
        *table.current_mut().unwrap() = 5;
        assert!(!table.switch_to("d", 60, || 0));
        assert_eq!(table.current(), Some(&5));
        assert_eq!(table.current_stamp_ms(), Some(50));
    }

    #[test]
    fn ties_evict_the_smallest_label() {
        let mut table = NetworkTable::new(2);
        table.switch_to("y", 0, || ());
        table.switch_to("x", 0, || ());
        table.switch_to("z", 0, || ());
        assert!(table.get("x").is_none());
        assert!(table.get("y").is_some() && table.get("z").is_some());
    }
}
