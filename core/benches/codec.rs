//! Frame encode + decode speed for a Send with a 200-byte body; and the server's cost of
//! writing one delivery of a stored 200-byte message to a group of 6: a NotifyData built and
//! encoded per member (as before) against the message encoded once and framed per member with
//! its seq (`encode_message_without_seq` + `encode_notify_data`, what the server does).
//!
//! Run: `cargo bench -p imlab-core --bench codec`

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imlab_core::codec::{
    DEFAULT_MAX_FRAME_BYTES, Decoded, decode, encode, encode_message_without_seq,
    encode_notify_data,
};
use imlab_core::proto::{Body, Frame, NotifyData, Send, Target, send};
use imlab_core::store::StoredMessage;

fn send_frame() -> Frame {
    Frame::new(Body::Send(Send {
        client_msg_id: "phone-123456".into(),
        to: Some(send::To::PeerUser("bob".into())),
        body: Bytes::from(vec![b'x'; 200]),
    }))
}

fn bench(c: &mut Criterion) {
    let frame = send_frame();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_decode_send_200B", |b| {
        let mut buffer = Vec::with_capacity(512);
        b.iter(|| {
            buffer.clear();
            encode(std::hint::black_box(&frame), &mut buffer);
            match decode(std::hint::black_box(&buffer), DEFAULT_MAX_FRAME_BYTES) {
                Ok(Decoded::Frame { frame, .. }) => frame,
                other => panic!("{other:?}"),
            }
        });
    });
    let stored = StoredMessage {
        msg_id: 123_456,
        from_user: "alice-0001".into(),
        from_device: "phone".into(),
        client_msg_id: "phone-123456".into(),
        to: Target::Group("team-0042".into()),
        body: Bytes::from(vec![b'x'; 200]),
        server_time_ms: 1_700_000_000_000,
    };
    const MEMBERS: u64 = 6;
    group.throughput(Throughput::Elements(MEMBERS));
    group.bench_function("notify_data_group_of_6_built_per_member", |b| {
        let mut buffer = Vec::with_capacity(4_096);
        b.iter(|| {
            buffer.clear();
            for seq in 1..=MEMBERS {
                let frame = Frame::new(Body::NotifyData(NotifyData {
                    message: Some(std::hint::black_box(&stored).to_proto(seq)),
                }));
                encode(&frame, &mut buffer);
            }
        });
    });
    group.bench_function("notify_data_group_of_6_encoded_once", |b| {
        let mut buffer = Vec::with_capacity(4_096);
        b.iter(|| {
            buffer.clear();
            let encoded = encode_message_without_seq(std::hint::black_box(&stored));
            for seq in 1..=MEMBERS {
                encode_notify_data(seq, &encoded, &mut buffer);
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
