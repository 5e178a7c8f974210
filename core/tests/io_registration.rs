//! What a socket registered with tokio's I/O driver costs on the heap: the vendored tokio's one
//! edit (`vendor/README.md`) keeps its registration unpadded, 96 bytes where upstream's
//! cache-line alignment made 256, in every connection of `imlab serve` and of `imlab load`.
//!
//! A counting global allocator sums the sizes asked for while sockets are registered; the
//! sockets are std's, bound before counting and handed to tokio, so what is counted is tokio's
//! registration alone.

mod counting_alloc;

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

/// Sockets registered per measurement.
const SOCKETS: usize = 64;

fn bound_std_sockets(n: usize) -> Vec<std::net::UdpSocket> {
    (0..n)
        .map(|_| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback port");
            socket.set_nonblocking(true).expect("nonblocking");
            socket
        })
        .collect()
}

#[test]
fn a_registered_socket_costs_at_most_128_heap_bytes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime");
    let per_socket = runtime.block_on(async {
        // The driver's first registration may set up what every later one shares.
        let warm_up = tokio::net::UdpSocket::from_std(bound_std_sockets(1).remove(0))
            .expect("register the first socket");
        let sockets = bound_std_sockets(SOCKETS);
        let mut registered = Vec::with_capacity(SOCKETS);
        let ((), live, _) = counting_alloc::count(|| {
            for socket in sockets {
                registered
                    .push(tokio::net::UdpSocket::from_std(socket).expect("register a socket"));
            }
        });
        drop((warm_up, registered));
        live as usize / SOCKETS
    });
    // Upstream tokio: 256 bytes (an `Arc` of a 128-byte-aligned `ScheduledIo`).
    assert!(
        per_socket <= 128,
        "a registered socket holds {per_socket} heap bytes (upstream's padded registration: 256)"
    );
    assert!(per_socket > 0, "no registration was counted");
}
