//! `imlab load --scenario`: a scenario's devices on real sockets. Device groups bring their
//! own carrier, heartbeat strategy, app-state cycle, devices per user and traffic; users,
//! devices and chat groups are laid out by the simulator's own layout (the caller builds the
//! [`Population`] from it), so the simulator and a load test read a scenario file the same
//! way.
//!
//! Traffic stays open loop: the run's messages are planned at a fixed total rate (the sum of
//! every device's rates, times the traffic scale), each given to a device and a kind drawn by
//! rate. Each device then sends a thinned share of one schedule, a Poisson process to a good
//! approximation, and latency is measured from the planned time as for every other load run.

use std::time::Duration;

use imlab_core::heartbeat::AppState;
use imlab_proxy::ScheduledFault;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One device group of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceGroup {
    /// Its name in the scenario.
    pub name: String,
    /// Index of its carrier among the run's carriers.
    pub carrier: usize,
    /// Heartbeat strategy of its devices.
    pub heartbeat: String,
    /// App-state cycle (empty: always in the foreground).
    pub app_states: Vec<(AppState, Duration)>,
    /// One-to-one messages per device per hour, traffic scale applied.
    pub one_to_one_per_hour: f64,
    /// Group messages per device per hour, traffic scale applied.
    pub group_per_hour: f64,
    /// Message body size.
    pub body_bytes: usize,
}

/// One device: its user and device group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSlot {
    /// Its user.
    pub user: u32,
    /// Its device group.
    pub group: usize,
}

/// A scenario's devices, users and chat groups, and its carrier faults.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    /// The scenario's name.
    pub name: String,
    /// Device groups, in file order.
    pub groups: Vec<DeviceGroup>,
    /// Devices by client number.
    pub devices: Vec<DeviceSlot>,
    /// Each user's devices (client numbers).
    pub users: Vec<Vec<u32>>,
    /// Chat groups: member users.
    pub chats: Vec<Vec<u32>>,
    /// Carrier k's faults, on the carrier's clock from the start of the run.
    pub faults: Vec<Vec<ScheduledFault>>,
}

/// What a planned message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    /// To another user.
    Peer(u32),
    /// To a chat group.
    Chat(u32),
}

/// Weighted choice of (device, kind) by rate.
#[derive(Debug, Clone)]
pub struct SendChooser {
    /// Cumulative rate (per second) and the (client, is_group) it ends.
    cumulative: Vec<(f64, u32, bool)>,
    /// Each user's chat groups.
    chats_of_user: Vec<Vec<u32>>,
}

impl Population {
    /// Devices (clients) in all.
    pub fn clients(&self) -> usize {
        self.devices.len()
    }

    /// The device group of `client`.
    pub fn group_of(&self, client: u32) -> &DeviceGroup {
        &self.groups[self.devices[client as usize].group]
    }

    /// The user of `client`.
    pub fn user_of(&self, client: u32) -> u32 {
        self.devices[client as usize].user
    }

    /// The carrier of each client.
    pub fn carriers(&self) -> Vec<u8> {
        self.devices
            .iter()
            .map(|d| self.groups[d.group].carrier as u8)
            .collect()
    }

    /// Chooses senders by their rates; `None` when nobody sends.
    pub fn chooser(&self) -> Option<SendChooser> {
        let mut chats_of_user = vec![Vec::new(); self.users.len()];
        for (chat, members) in self.chats.iter().enumerate() {
            for user in members {
                chats_of_user[*user as usize].push(chat as u32);
            }
        }
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for (client, device) in self.devices.iter().enumerate() {
            let group = &self.groups[device.group];
            // A lone user has nobody to write to, a user in no chat no group to write in.
            let rates = [
                (false, group.one_to_one_per_hour, self.users.len() > 1),
                (
                    true,
                    group.group_per_hour,
                    !chats_of_user[device.user as usize].is_empty(),
                ),
            ];
            for (is_group, per_hour, possible) in rates {
                if possible && per_hour > 0.0 {
                    total += per_hour / 3_600.0;
                    cumulative.push((total, client as u32, is_group));
                }
            }
        }
        (total > 0.0).then_some(SendChooser {
            cumulative,
            chats_of_user,
        })
    }

    /// The devices that must see a message of `sender` in `conversation`: every device of
    /// every user in it, the sender itself not. The sender's other devices see a one-to-one
    /// message only if `sent_synced` (imlab's protocol syncs what a user sent to all their
    /// devices; an MQTT publish to the peer's inbox topic reaches the peer's devices alone); a
    /// chat's, always (they are members).
    pub fn recipients(
        &self,
        sender: u32,
        conversation: Conversation,
        sent_synced: bool,
    ) -> Vec<u32> {
        let sender_user = self.user_of(sender);
        let users: Vec<u32> = match conversation {
            Conversation::Peer(peer) if sent_synced => vec![sender_user, peer],
            Conversation::Peer(peer) => vec![peer],
            Conversation::Chat(chat) => self.chats[chat as usize].clone(),
        };
        users
            .iter()
            .flat_map(|user| self.users[*user as usize].iter().copied())
            .filter(|device| *device != sender)
            .collect()
    }
}

impl Population {
    /// The deliveries a planned message owes to the devices of a one-to-one peer, on average
    /// over the messages as the chooser draws them (0 for a chat message): the deliveries
    /// that may go to any worker's devices with `--workers`, the peer being any other user. A
    /// chat's members are consecutive users and a user's devices consecutive clients, so a
    /// chat and the sender's own devices are mostly within the sender's worker; they are left
    /// out, and the merge's memory is not overestimated (see
    /// [`crate::run::check_merge_memory`]). 0 when nobody sends.
    pub fn peer_devices_per_message(&self) -> f64 {
        let Some(chooser) = self.chooser() else {
            return 0.0;
        };
        let all_devices = self.devices.len() as f64;
        let mut before = 0.0;
        let mut sum = 0.0;
        for (end, client, is_group) in &chooser.cumulative {
            let weight = end - before;
            before = *end;
            if *is_group {
                continue;
            }
            // The peer is any other user, each alike.
            let own = self.users[self.user_of(*client) as usize].len() as f64;
            sum += weight * (all_devices - own) / (self.users.len() - 1) as f64;
        }
        sum / chooser.rate()
    }
}

impl SendChooser {
    /// Messages per second over all devices.
    pub fn rate(&self) -> f64 {
        self.cumulative.last().map_or(0.0, |(total, _, _)| *total)
    }

    /// The next message: its sender and conversation, drawn by rate.
    pub fn next(&self, population: &Population, rng: &mut ChaCha8Rng) -> (u32, Conversation) {
        let x = rng.random_range(0.0..self.rate());
        let index = self
            .cumulative
            .partition_point(|(end, _, _)| *end <= x)
            .min(self.cumulative.len() - 1);
        let (client, is_group) = (self.cumulative[index].1, self.cumulative[index].2);
        let user = population.user_of(client);
        if is_group {
            let chats = &self.chats_of_user[user as usize];
            return (
                client,
                Conversation::Chat(chats[rng.random_range(0..chats.len())]),
            );
        }
        let users = population.users.len() as u32;
        let mut peer = rng.random_range(0..users - 1);
        if peer >= user {
            peer += 1;
        }
        (client, Conversation::Peer(peer))
    }
}

/// A run's device settings, each either the run's own or, with `--scenario`, the device's
/// group's: what every protocol asks of its devices.
pub trait PerDevice {
    /// The scenario's population, if the run has one.
    fn population(&self) -> Option<&Population>;

    /// The user of `client`: itself, or its scenario user.
    fn user_of(&self, client: u32) -> u32 {
        self.population()
            .map_or(client, |population| population.user_of(client))
    }

    /// The heartbeat strategy of `client`: its device group's, or `run`'s.
    fn heartbeat_of<'a>(&'a self, client: u32, run: &'a str) -> &'a str {
        match self.population() {
            Some(population) => &population.group_of(client).heartbeat,
            None => run,
        }
    }

    /// The message body size of `client`'s sends: its device group's, or `run`'s.
    fn body_bytes_of(&self, client: u32, run: usize) -> usize {
        self.population()
            .map_or(run, |population| population.group_of(client).body_bytes)
    }
}

impl PerDevice for Option<std::sync::Arc<Population>> {
    fn population(&self) -> Option<&Population> {
        self.as_deref()
    }
}

/// Where a device is in its app-state cycle at `elapsed` since the run started, from a
/// phase drawn per device (so devices do not switch in lockstep): its state and how long
/// until the next switch. `None` for an empty cycle.
pub fn app_state_at(
    cycle: &[(AppState, Duration)],
    phase: Duration,
    elapsed: Duration,
) -> Option<(AppState, Duration)> {
    let period: Duration = cycle.iter().map(|(_, d)| *d).sum();
    if period.is_zero() {
        return None;
    }
    let mut t = Duration::from_nanos(((phase + elapsed).as_nanos() % period.as_nanos()) as u64);
    for (state, duration) in cycle {
        if t < *duration {
            return Some((*state, *duration - t));
        }
        t -= *duration;
    }
    unreachable!("t is below the period's sum")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn group(one_to_one_per_hour: f64, group_per_hour: f64) -> DeviceGroup {
        DeviceGroup {
            name: "g".into(),
            carrier: 0,
            heartbeat: "fixed:30s".into(),
            app_states: Vec::new(),
            one_to_one_per_hour,
            group_per_hour,
            body_bytes: 100,
        }
    }

    /// Two users of two devices each (clients 0-3, group 0) in one chat, and a lone-device
    /// user (client 4, group 1) who only writes one-to-one.
    fn population() -> Population {
        let slot = |user, group| DeviceSlot { user, group };
        Population {
            name: "t".into(),
            groups: vec![group(10.0, 30.0), group(60.0, 0.0)],
            devices: vec![slot(0, 0), slot(0, 0), slot(1, 0), slot(1, 0), slot(2, 1)],
            users: vec![vec![0, 1], vec![2, 3], vec![4]],
            chats: vec![vec![0, 1]],
            faults: Vec::new(),
        }
    }

    #[test]
    fn recipients_are_every_device_of_the_conversation_but_the_sender() {
        let p = population();
        assert_eq!(p.recipients(0, Conversation::Peer(2), true), vec![1, 4]);
        assert_eq!(p.recipients(2, Conversation::Chat(0), true), vec![0, 1, 3]);
        assert_eq!(p.recipients(4, Conversation::Peer(1), true), vec![2, 3]);
        // Without the sender's devices synced: the peer's devices alone; a chat the same.
        assert_eq!(p.recipients(0, Conversation::Peer(2), false), vec![4]);
        assert_eq!(p.recipients(1, Conversation::Peer(1), false), vec![2, 3]);
        assert_eq!(p.recipients(2, Conversation::Chat(0), false), vec![0, 1, 3]);
    }

    #[test]
    fn senders_are_drawn_by_their_rates() {
        let p = population();
        let chooser = p.chooser().unwrap();
        // Four devices at 40/h and one at 60/h.
        assert!((chooser.rate() - 220.0 / 3_600.0).abs() < 1e-12);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut by_client, mut chats) = ([0u32; 5], 0u32);
        let n = 22_000;
        for _ in 0..n {
            let (client, conversation) = chooser.next(&p, &mut rng);
            by_client[client as usize] += 1;
            match conversation {
                Conversation::Chat(chat) => {
                    assert_eq!(chat, 0);
                    assert!(client < 4, "client {client} is in no chat");
                    chats += 1;
                }
                Conversation::Peer(peer) => assert_ne!(peer, p.user_of(client)),
            }
        }
        // Shares by rate: 40/220 each for clients 0-3, 60/220 for client 4; chats 120/220.
        let share = |count: u32| f64::from(count) / f64::from(n);
        for client in 0..4 {
            assert!(
                (share(by_client[client]) - 40.0 / 220.0).abs() < 0.015,
                "{by_client:?}"
            );
        }
        assert!(
            (share(by_client[4]) - 60.0 / 220.0).abs() < 0.015,
            "{by_client:?}"
        );
        assert!((share(chats) - 120.0 / 220.0).abs() < 0.015, "{chats}");
        // Nobody sends: no chooser.
        let mut quiet = p.clone();
        quiet.groups = vec![group(0.0, 0.0), group(0.0, 0.0)];
        assert!(quiet.chooser().is_none());
    }

    /// Clients 0-3 (users 0 and 1, two devices each) write 10/h one-to-one, to user 2 or the
    /// other two-device user, and 30/h in their chat (not counted); client 4 (user 2, one
    /// device) 60/h to user 0 or 1 (two devices either way).
    #[test]
    fn peer_devices_a_message_owes_are_averaged_by_rate() {
        let p = population();
        // Users 0 and 1: a peer of 1 or 2 devices, 1.5 on average.
        let by_rate = (4.0 * 10.0 * 1.5 + 60.0 * 2.0) / 220.0;
        assert!(
            (p.peer_devices_per_message() - by_rate).abs() < 1e-12,
            "{} against {by_rate}",
            p.peer_devices_per_message()
        );
        let mut quiet = p.clone();
        quiet.groups = vec![group(0.0, 0.0), group(0.0, 0.0)];
        assert_eq!(quiet.peer_devices_per_message(), 0.0);
    }

    #[test]
    fn the_app_state_cycle_follows_the_phase() {
        let s = Duration::from_secs;
        let cycle = [(AppState::Foreground, s(10)), (AppState::Inactive, s(50))];
        assert_eq!(
            app_state_at(&cycle, s(0), s(0)),
            Some((AppState::Foreground, s(10)))
        );
        assert_eq!(
            app_state_at(&cycle, s(5), s(0)),
            Some((AppState::Foreground, s(5)))
        );
        assert_eq!(
            app_state_at(&cycle, s(5), s(10)),
            Some((AppState::Inactive, s(45)))
        );
        // One period later it is the same again.
        assert_eq!(
            app_state_at(&cycle, s(5), s(70)),
            Some((AppState::Inactive, s(45)))
        );
        assert_eq!(app_state_at(&[], s(5), s(70)), None);
    }
}
