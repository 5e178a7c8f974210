//! The ledger's verdict: a delivery owed to a recipient that is not back (logged in and
//! synced) is pending, not lost; a send the server refused is refused, not lost; only a
//! message absent from a recipient that is connected and synced after the drain is lost.

use imlab_loadgen::ledger::{LoadLedger, RemoteRepeat, Repeat, Verdict};
use imlab_loadgen::protocol::MsgId;

/// Three clients, logged in with empty inboxes.
fn ledger() -> LoadLedger {
    let mut ledger = LoadLedger::new(3);
    for client in 0..3 {
        ledger.connected(client, 0);
    }
    ledger
}

/// Client 0's `n`th send (from 1: its number is `n - 1`), to `to`.
fn send(ledger: &mut LoadLedger, n: u64, to: u32) -> MsgId {
    let id = MsgId {
        sender: 0,
        number: n - 1,
    };
    ledger.planned(id, n, vec![to]);
    id
}

#[test]
fn a_recipient_not_back_is_pending_and_a_synced_one_without_the_message_is_lost() {
    let mut ledger = ledger();
    let delivered = send(&mut ledger, 1, 1);
    ledger.acked(delivered);
    ledger.delivered(1, delivered);
    ledger.processed(1, 1);
    let to_offline = send(&mut ledger, 2, 2);
    ledger.acked(to_offline);
    // Client 2 loses its connection (a server restart) before the message reaches it.
    ledger.disconnected(2, "ConnectionLost", true);
    let expected = Verdict {
        expected: 2,
        delivered: 1,
        pending: 1,
        ..Verdict::default()
    };
    assert_eq!(ledger.verdict(true), expected);
    assert_eq!(
        ledger.recipients_pending(),
        1,
        "the drain waits for client 2"
    );

    // Back, but its inbox at login holds 5 entries it has not processed: still syncing.
    ledger.connected(2, 5);
    ledger.processed(2, 3);
    assert_eq!(ledger.verdict(true), expected);

    // Synced past its login and the message is not there: lost.
    ledger.processed(2, 5);
    assert_eq!(ledger.recipients_pending(), 0);
    assert_eq!(
        ledger.verdict(true),
        Verdict {
            pending: 0,
            lost: 1,
            ..expected
        }
    );
    // Mid-run (or cut short by Ctrl-C) nothing is lost yet.
    assert_eq!(ledger.verdict(false), expected);
}

#[test]
fn refused_unacked_and_failed_sends_are_told_apart() {
    let mut ledger = ledger();
    // Client 1 sends once and is never answered: unacked, not refused.
    ledger.planned(
        MsgId {
            sender: 1,
            number: 0,
        },
        0,
        vec![2],
    );
    let refused = send(&mut ledger, 1, 1);
    ledger.send_refused(refused, "rate_limited");
    ledger.send_refused(refused, "rate_limited");
    let refused_then_acked = send(&mut ledger, 2, 1);
    ledger.send_refused(refused_then_acked, "overloaded");
    ledger.acked(refused_then_acked);
    ledger.delivered(1, refused_then_acked);
    let failed = send(&mut ledger, 3, 1);
    ledger.send_failed(failed);
    // Queued behind client 0's refused sends: held back by the server too.
    let _queued_behind = send(&mut ledger, 4, 1);
    assert_eq!(
        ledger.verdict(true),
        Verdict {
            refused: 2,
            unacked: 1,
            expected: 1,
            delivered: 1,
            ..Verdict::default()
        }
    );
    assert_eq!(ledger.failed, 1);
    let causes: Vec<(&str, u64)> = ledger
        .send_refusals
        .iter()
        .map(|(c, n)| (c.as_str(), *n))
        .collect();
    assert_eq!(causes, [("overloaded", 1), ("rate_limited", 2)]);
}

#[test]
fn clients_refused_for_good_are_not_waited_for() {
    let mut ledger = LoadLedger::new(3);
    ledger.connected(0, 0);
    ledger.connected(1, 0);
    ledger.login_failed(2, "auth_failed");
    ledger.client_stopped(2);
    let id = send(&mut ledger, 1, 2);
    ledger.acked(id);
    assert_eq!(ledger.clients_refused(), 1);
    assert!(ledger.all_synced(), "a stopped client cannot come back");
    assert_eq!(ledger.recipients_pending(), 0);
    assert_eq!(
        ledger.verdict(true).pending,
        1,
        "its delivery is pending, not lost"
    );
}

#[test]
fn losses_and_repeats_the_protocol_allows_are_told_apart_from_real_ones() {
    let mut ledger = ledger();
    // An at-most-once message never arrives: lost, but allowed.
    let at_most_once = send(&mut ledger, 1, 1);
    ledger.acked(at_most_once);
    ledger.loss_allowed(at_most_once);
    // A message to client 2 sent while it was away, then it came back without a session:
    // allowed. One sent after it came back and never delivered: lost.
    let while_away = send(&mut ledger, 2, 2);
    ledger.acked(while_away);
    ledger.disconnected(2, "ConnectionLost", true);
    // The return must come after the message's planned time (2 µs on the ledger's clock):
    // wait for the clock to pass it, not for a guessed time.
    while ledger.now_us() <= 2 {
        std::hint::spin_loop();
    }
    ledger.connected(2, 0);
    ledger.session_reset(2);
    let after_return = MsgId {
        sender: 0,
        number: 2,
    };
    ledger.planned(after_return, ledger.now_us(), vec![2]);
    ledger.acked(after_return);
    assert_eq!(
        ledger.verdict(true),
        Verdict {
            expected: 3,
            lost: 1,
            lost_allowed: 2,
            ..Verdict::default()
        }
    );

    // Repeats: a DUP redelivery is allowed; a plain repeat to a device that never
    // reconnected is a duplicate; after a reconnect (client 2) it is allowed.
    let repeated = send(&mut ledger, 4, 1);
    ledger.acked(repeated);
    ledger.delivered(1, repeated);
    ledger.delivered_as(1, repeated, Repeat::Redelivery);
    ledger.delivered_as(1, repeated, Repeat::RedeliveryAfterReconnect);
    ledger.delivered_as(1, repeated, Repeat::Duplicate);
    ledger.delivered(2, after_return);
    ledger.delivered_as(2, after_return, Repeat::RedeliveryAfterReconnect);
    assert_eq!((ledger.redelivered, ledger.duplicated), (2, 2));
    // A message its sender sent again may repeat at a device that never reconnected, whether
    // it was sent again after it settled or before.
    ledger.resent(repeated);
    ledger.delivered_as(1, repeated, Repeat::RedeliveryAfterReconnect);
    assert_eq!((ledger.redelivered, ledger.duplicated), (3, 2));
    let resent_early = send(&mut ledger, 5, 1);
    ledger.resent(resent_early);
    ledger.acked(resent_early);
    ledger.delivered(1, resent_early);
    ledger.delivered_as(1, resent_early, Repeat::RedeliveryAfterReconnect);
    assert_eq!((ledger.redelivered, ledger.duplicated), (4, 2));
}

#[test]
fn the_drain_waits_for_sends_still_on_their_way_and_not_for_refused_failed_or_stopped_ones() {
    let mut ledger = ledger();
    let first = send(&mut ledger, 1, 1);
    let second = send(&mut ledger, 2, 2);
    assert_eq!(ledger.sends_in_flight(), 2);
    ledger.acked(first);
    assert_eq!(
        ledger.sends_in_flight(),
        1,
        "the second is still owed an ack"
    );
    ledger.send_failed(second);
    assert_eq!(ledger.sends_in_flight(), 0, "a failed send is not coming");

    // A refused send (rate limited) holds its sender's later sends back too.
    let refused = send(&mut ledger, 3, 1);
    let behind = send(&mut ledger, 4, 2);
    ledger.send_refused(refused, "rate_limited");
    assert_eq!(
        ledger.sends_in_flight(),
        0,
        "{behind:?} waits behind a refusal"
    );

    // Another sender's unacked send, until that client stops for good.
    let other = MsgId {
        sender: 1,
        number: 0,
    };
    ledger.planned(other, 9, vec![2]);
    assert_eq!(ledger.sends_in_flight(), 1);
    ledger.client_stopped(1);
    assert_eq!(ledger.sends_in_flight(), 0);
}

/// The verdict judges a settled front of messages once and remembers it: asked after every
/// event, it must say what one pass over the whole run says at the end.
#[test]
fn a_verdict_asked_after_every_event_equals_one_asked_at_the_end() {
    let mut asked_often = ledger();
    let mut asked_once = ledger();
    let mut n = 0;
    for round in 0..40u64 {
        for ledger in [&mut asked_often, &mut asked_once] {
            n = round + 1;
            let id = send(ledger, n, 1 + (round % 2) as u32);
            // Every third message stays unacked, every fifth undelivered, a few arrive twice.
            if round % 3 != 0 {
                ledger.acked(id);
            }
            if round % 5 != 0 {
                ledger.delivered(1 + (round % 2) as u32, id);
            }
            if round % 7 == 0 {
                ledger.delivered_as(1 + (round % 2) as u32, id, Repeat::Duplicate);
            }
        }
        let _ = asked_often.verdict(false);
        let _ = asked_often.acked_count();
        let _ = asked_often.lost_deliveries(false, 10);
    }
    // Late acks and deliveries of messages behind the settled front.
    for ledger in [&mut asked_often, &mut asked_once] {
        let late = MsgId {
            sender: 0,
            number: 3,
        };
        ledger.acked(late);
        ledger.delivered(2, late);
        for client in 1..3 {
            ledger.processed(client, n);
        }
    }
    for drained in [false, true] {
        assert_eq!(asked_often.verdict(drained), asked_once.verdict(drained));
        assert_eq!(
            asked_often.lost_deliveries(drained, 100),
            asked_once.lost_deliveries(drained, 100)
        );
    }
    assert_eq!(asked_often.acked_count(), asked_once.acked_count());
    assert!(asked_once.verdict(true).delivered > 0 && asked_once.verdict(true).unacked > 0);
}

/// A message to several devices is owed to each: the devices it reached are told apart from
/// those it did not, a repeat at a device it reached is a duplicate, and so is a delivery to a
/// device it was not for (the server misrouted it), before and after the message settled.
/// Past 64 recipients as well as below.
#[test]
fn a_message_to_many_devices_is_owed_to_each_and_its_repeats_are_told_apart() {
    for n_recipients in [3u32, 64, 100] {
        let n_clients = n_recipients as usize + 2;
        let mut ledger = LoadLedger::new(n_clients);
        for client in 0..n_clients as u32 {
            ledger.connected(client, 0);
        }
        // Client 0 to clients 1..=n; the last client is not a recipient.
        let outsider = n_recipients + 1;
        let id = MsgId {
            sender: 0,
            number: 0,
        };
        ledger.planned(id, 1, (1..=n_recipients).collect());
        ledger.acked(id);
        // Every recipient but the second and the last (the 100th: past the 64th).
        let missed = [2, n_recipients];
        for device in (1..=n_recipients).filter(|d| !missed.contains(d)) {
            ledger.delivered(device, id);
        }
        ledger.delivered(outsider, id);
        assert_eq!(ledger.duplicated, 1, "{n_recipients} recipients");
        for client in 0..n_clients as u32 {
            ledger.processed(client, 1);
        }
        let expected = Verdict {
            expected: u64::from(n_recipients),
            delivered: u64::from(n_recipients) - 2,
            lost: 2,
            ..Verdict::default()
        };
        assert_eq!(ledger.verdict(true), expected, "{n_recipients} recipients");
        assert_eq!(ledger.lost_deliveries(true, 10).len(), 2);
        // Repeats at a recipient reached before the outsider, and at the outsider.
        ledger.delivered(1, id);
        ledger.delivered(outsider, id);
        assert_eq!(ledger.duplicated, 3, "{n_recipients} recipients");
        // The missed ones arrive late: first deliveries, not repeats; the message settles.
        for device in missed {
            ledger.delivered(device, id);
        }
        assert_eq!(ledger.duplicated, 3, "{n_recipients} recipients");
        // Settled: a repeat at a recipient, a repeat the protocol allows, and the outsider.
        ledger.delivered(n_recipients, id);
        ledger.delivered_as(2, id, Repeat::Redelivery);
        ledger.delivered(outsider, id);
        ledger.delivered(0, id);
        assert_eq!(
            (ledger.duplicated, ledger.redelivered),
            (5, 1),
            "{n_recipients} recipients"
        );
        assert_eq!(
            ledger.verdict(true),
            Verdict {
                delivered: u64::from(n_recipients),
                lost: 0,
                ..expected
            }
        );
    }
}

/// A delivery older than one already delivered from the same sender to the same device is
/// reordered; senders and devices are judged apart, and a repeat is a duplicate, not a
/// reorder. Another worker's messages are recorded, repeats too, and judged at the merge
/// (`crossings.rs`), not here.
#[test]
fn a_delivery_older_than_one_its_device_had_from_the_same_sender_is_reordered() {
    let mut ledger = ledger();
    let first = send(&mut ledger, 1, 1);
    let second = send(&mut ledger, 2, 1);
    let third = send(&mut ledger, 3, 2);
    for id in [first, second, third] {
        ledger.acked(id);
    }
    ledger.delivered(1, second);
    ledger.delivered(2, third);
    assert_eq!(ledger.reordered, 0);
    ledger.delivered(1, first);
    assert_eq!(ledger.reordered, 1);
    ledger.delivered(1, second);
    assert_eq!((ledger.reordered, ledger.duplicated), (1, 1));
    // Client 2's own order is its own: client 1's newest says nothing of it.
    let to_two = MsgId {
        sender: 1,
        number: 0,
    };
    ledger.planned(to_two, 4, vec![2]);
    ledger.delivered(2, to_two);
    assert_eq!(ledger.reordered, 1);

    // Another worker's client 7: every delivery recorded for the merge, none judged here.
    let elsewhere = |number| MsgId { sender: 7, number };
    ledger.delivered(1, elsewhere(5));
    ledger.delivered(1, elsewhere(6));
    ledger.delivered(1, elsewhere(4));
    ledger.delivered_as(1, elsewhere(4), Repeat::Redelivery);
    // After a reconnect the protocol's rule allows it; before one, only if it was resent.
    ledger.delivered_as(1, elsewhere(5), Repeat::RedeliveryAfterReconnect);
    ledger.disconnected(1, "ConnectionLost", true);
    ledger.connected(1, 0);
    ledger.delivered_as(1, elsewhere(6), Repeat::RedeliveryAfterReconnect);
    assert_eq!((ledger.reordered, ledger.duplicated), (1, 1));
    let recorded: Vec<(u64, RemoteRepeat)> = ledger
        .received
        .iter()
        .map(|r| (u64::from(r.number), r.repeat))
        .collect();
    assert_eq!(
        recorded,
        vec![
            (5, RemoteRepeat::Duplicate),
            (6, RemoteRepeat::Duplicate),
            (4, RemoteRepeat::Duplicate),
            (4, RemoteRepeat::Redelivery),
            (5, RemoteRepeat::RedeliveryIfResent),
            (6, RemoteRepeat::Redelivery),
        ]
    );
}

/// The reorder map forgets a pair once no delivery in flight could be checked against it,
/// so it holds about the pairs with messages in flight however many pairs of clients met; a
/// pair with an older message still owed keeps its entry, and that reorder is still caught.
#[test]
fn the_reorder_map_keeps_only_pairs_a_delivery_in_flight_could_reorder() {
    let n = 400u32;
    let mut ledger = LoadLedger::new(n as usize);
    for client in 0..n {
        ledger.connected(client, 0);
    }
    let mut numbers = vec![0u64; n as usize];
    let mut send = |ledger: &mut LoadLedger, sender: u32, to: u32| {
        let number = &mut numbers[sender as usize];
        let id = MsgId {
            sender,
            number: *number,
        };
        *number += 1;
        ledger.planned(id, 1, vec![to]);
        ledger.acked(id);
        id
    };
    // Client 0's first message to client 1 is still on its way when its second gets there.
    let late = send(&mut ledger, 0, 1);
    let early = send(&mut ledger, 0, 1);
    ledger.delivered(1, early);
    // Every other ordered pair of clients exchanges a message, delivered at once: 159,600
    // pairs met, more than twice the map's 65,536 below which it is not swept.
    let mut pairs_peak = 0;
    for sender in 0..n {
        for to in (0..n).filter(|to| *to != sender && (sender, *to) != (0, 1)) {
            let id = send(&mut ledger, sender, to);
            ledger.delivered(to, id);
            pairs_peak = pairs_peak.max(ledger.pairs_held());
        }
    }
    assert!(
        pairs_peak <= 1 << 16,
        "{pairs_peak} pairs held for 159,600 that met"
    );
    assert_eq!(ledger.reordered, 0);
    ledger.delivered(1, late);
    assert_eq!(
        ledger.reordered, 1,
        "the pair with a message in flight kept"
    );
    // A pair forgotten starts again at its next delivery: a reorder after it is caught.
    let (a, b) = (send(&mut ledger, 5, 6), send(&mut ledger, 5, 6));
    ledger.delivered(6, b);
    ledger.delivered(6, a);
    assert_eq!(ledger.reordered, 2);
    assert_eq!(ledger.duplicated, 0);
}

/// A settled message drops its record: a ledger holds at most as many records as messages
/// were ever open at once, however long the run, and a message that cannot settle yet (its
/// recipient is away) keeps its own without holding back the others.
#[test]
fn a_settled_message_drops_its_record() {
    let mut ledger = ledger();
    let away = send(&mut ledger, 1, 2);
    ledger.acked(away);
    ledger.disconnected(2, "ConnectionLost", true);
    for n in 2..=1_000 {
        let id = send(&mut ledger, n, 1);
        ledger.acked(id);
        ledger.delivered(1, id);
    }
    assert_eq!(ledger.open_peak(), 2);
    assert_eq!(ledger.acked_count(), 1_000);
    assert_eq!(
        ledger.verdict(false),
        Verdict {
            expected: 1_000,
            delivered: 999,
            pending: 1,
            ..Verdict::default()
        }
    );
    // Client 2 comes back and gets it: every message settled, still two places.
    ledger.connected(2, 1);
    ledger.delivered(2, away);
    ledger.processed(2, 1);
    let id = send(&mut ledger, 1_001, 1);
    assert_eq!(ledger.open_peak(), 2);
    assert_eq!(ledger.sends_in_flight(), 1);
    ledger.acked(id);
    ledger.delivered(1, id);
    assert_eq!(
        ledger.verdict(true),
        Verdict {
            expected: 1_001,
            delivered: 1_001,
            ..Verdict::default()
        }
    );
}

/// The lost deliveries listed are the first ones in planned order, at most as many as asked,
/// whatever order their messages settled or stayed open in.
#[test]
fn the_lost_deliveries_listed_are_the_first_planned() {
    let mut ledger = ledger();
    // Client 0's sends 1-6 to clients 1 and 2 alternately; only sends 2 and 4 arrive.
    let ids: Vec<MsgId> = (1..=6)
        .map(|n| send(&mut ledger, n, 1 + n as u32 % 2))
        .collect();
    for id in &ids {
        ledger.acked(*id);
    }
    ledger.delivered(1, ids[1]);
    ledger.delivered(1, ids[3]);
    ledger.processed(1, 6);
    ledger.processed(2, 6);
    let listed = |ledger: &LoadLedger, max| -> Vec<(u64, u32)> {
        ledger
            .lost_deliveries(true, max)
            .iter()
            .map(|lost| (lost.number, lost.recipient))
            .collect()
    };
    assert_eq!(listed(&ledger, 3), vec![(0, 2), (2, 2), (4, 2)]);
    assert_eq!(listed(&ledger, 2), vec![(0, 2), (2, 2)]);
    assert_eq!(listed(&ledger, 10), vec![(0, 2), (2, 2), (4, 2), (5, 1)]);
    assert!(
        ledger.lost_deliveries(false, 10).is_empty(),
        "nothing lost mid-run"
    );
}

/// The ledger is full at its bound of records: messages open (unacked, or acked and not at
/// every recipient) and settled ones the protocol sent again (kept to judge their repeats);
/// a message settling makes room.
#[test]
fn the_ledger_is_full_at_its_bound_of_open_and_resent_messages() {
    let mut ledger = ledger();
    ledger.set_open_max(2);
    let resent = send(&mut ledger, 1, 1);
    ledger.acked(resent);
    ledger.delivered(1, resent);
    // Settled, then sent again by its protocol: its record is kept.
    ledger.resent(resent);
    assert!(!ledger.full());
    let open = send(&mut ledger, 2, 2);
    ledger.acked(open);
    assert!(ledger.full(), "one open and one resent: two records");
    assert_eq!(ledger.full_at_us(), None, "full, but nothing stopped yet");
    ledger.stop_sending_full();
    let (_, max) = ledger.full_at_us().expect("stopped");
    assert_eq!(max, 2);
    ledger.delivered(2, open);
    assert!(!ledger.full(), "the open one settled");
}

/// The verdict mid-run and the drain's checks come from counts kept as the events come
/// (debug builds also compare them with a scan of the records at every read): each event
/// moves them as a scan would see it. Every expected value is by hand.
#[test]
fn the_counts_behind_the_verdict_follow_every_event() {
    let mut ledger = ledger();
    let id = |sender, number| MsgId { sender, number };
    let mid_run = |ledger: &LoadLedger, refused, unacked, expected, delivered| {
        let verdict = ledger.verdict(false);
        let counts = (
            verdict.refused,
            verdict.unacked,
            verdict.expected,
            verdict.delivered,
            verdict.pending,
        );
        let want = (refused, unacked, expected, delivered, expected - delivered);
        assert_eq!(
            counts, want,
            "(refused, unacked, expected, delivered, pending)"
        );
    };
    // Client 0: three sends, none acked.
    for (number, to) in [(0, 1), (1, 2), (2, 1)] {
        ledger.planned(id(0, number), 1 + number, vec![to]);
    }
    mid_run(&ledger, 0, 3, 0, 0);
    assert_eq!(ledger.sends_in_flight(), 3);
    // One refused: every send of its sender not acked is held back.
    ledger.send_refused(id(0, 1), "rate_limited");
    mid_run(&ledger, 3, 0, 0, 0);
    assert_eq!(ledger.sends_in_flight(), 0);
    // Another sender's send is still unacked, and in flight.
    ledger.planned(id(1, 0), 5, vec![2]);
    mid_run(&ledger, 3, 1, 0, 0);
    assert_eq!(ledger.sends_in_flight(), 1);
    // A failed send is neither.
    ledger.send_failed(id(0, 2));
    mid_run(&ledger, 2, 1, 0, 0);
    // Acked: its delivery is owed, pending until it comes; then it settles.
    ledger.acked(id(0, 0));
    mid_run(&ledger, 1, 1, 1, 0);
    ledger.delivered(1, id(0, 0));
    mid_run(&ledger, 1, 1, 1, 1);
    // Client 2 is away, then back and syncing (not synced): owed a delivery, it is waited for.
    ledger.disconnected(2, "ConnectionLost", true);
    ledger.acked(id(1, 0));
    mid_run(&ledger, 1, 0, 2, 1);
    assert_eq!(ledger.recipients_pending(), 1);
    ledger.connected(2, 5);
    assert_eq!(ledger.recipients_pending(), 1);
    ledger.delivered(2, id(1, 0));
    mid_run(&ledger, 1, 0, 2, 2);
    assert_eq!(ledger.recipients_pending(), 0, "it has what it was owed");
    // Delivered before its ack: counted once the ack comes.
    ledger.planned(id(1, 1), 6, vec![0]);
    ledger.delivered(0, id(1, 1));
    mid_run(&ledger, 1, 1, 2, 2);
    ledger.acked(id(1, 1));
    mid_run(&ledger, 1, 0, 3, 3);
    // A send the client core refused never counts.
    ledger.planned(id(1, 2), 7, vec![0]);
    ledger.refused_locally(id(1, 2));
    mid_run(&ledger, 1, 0, 3, 3);
    assert_eq!(ledger.sends_in_flight(), 0);
}
