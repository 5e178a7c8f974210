//! Frame encode + decode speed for a Send with a 200-byte body.
//!
//! Run: `cargo bench -p imlab-core --bench codec`

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imlab_core::codec::{DEFAULT_MAX_FRAME_BYTES, Decoded, decode, encode};
use imlab_core::proto::{Body, Frame, Send, send};

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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
