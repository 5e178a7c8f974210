//! The vendored tokio's clock edits (`vendor/README.md`): a frozen (paused) clock is read
//! without its lock, from a value stored whenever the clock is paused, advanced or resumed, and
//! a current-thread runtime whose clock is frozen does not measure its busy time. The simulator
//! runs every host on such a runtime and reads the clock on every event; the tests here pin
//! what the edits must keep (the time a paused clock reads) and what they change (the busy-time
//! metric, zero while frozen, measured otherwise).

use std::time::Duration;

use tokio::time::Instant;

/// Keeps the thread busy (polling, not sleeping) for `how_long` of real time.
fn spin(how_long: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < how_long {
        std::hint::spin_loop();
    }
}

/// The busy time a current-thread runtime reports after its tasks spun for 20 ms in all.
fn busy_time_after_work(start_paused: bool) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(start_paused)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for _ in 0..4 {
            tokio::spawn(async { spin(Duration::from_millis(5)) })
                .await
                .expect("the task ran");
            // A park between tasks hands the scheduler's metrics to the runtime's.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    runtime.metrics().worker_total_busy_duration(0)
}

#[test]
fn a_running_runtime_measures_its_busy_time_a_paused_one_does_not() {
    let running = busy_time_after_work(false);
    assert!(
        running >= Duration::from_millis(10),
        "a runtime on the real clock reports its tasks' 20 ms of work as busy time, got {running:?}"
    );
    let paused = busy_time_after_work(true);
    assert_eq!(
        paused,
        Duration::ZERO,
        "a runtime whose clock is frozen does not read the real clock to measure busy time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_frozen_clock_reads_what_pause_advance_and_sleep_set_and_a_resumed_one_runs() {
    let t0 = Instant::now();
    spin(Duration::from_millis(2));
    assert_eq!(
        Instant::now(),
        t0,
        "a frozen clock does not move with real time"
    );

    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        Instant::now() - t0,
        Duration::from_secs(5),
        "advance moves it exactly"
    );

    // The runtime, idle, advances the clock to the sleep's deadline (rounded up to its
    // timer's millisecond).
    tokio::time::sleep(Duration::from_secs(60)).await;
    let slept = Instant::now() - t0;
    assert!(
        slept >= Duration::from_secs(65) && slept <= Duration::from_millis(65_001),
        "auto-advance moved the frozen clock to {slept:?}, not to the sleep's deadline at 65 s"
    );

    tokio::time::resume();
    let t1 = Instant::now();
    spin(Duration::from_millis(2));
    let ran = Instant::now() - t1;
    assert!(
        ran >= Duration::from_millis(2),
        "a resumed clock runs with real time, moved {ran:?}"
    );

    tokio::time::pause();
    let t2 = Instant::now();
    assert!(t2 >= t1 + ran, "pausing keeps the time that ran");
    spin(Duration::from_millis(2));
    assert_eq!(Instant::now(), t2, "paused again, it stands still");
    tokio::time::advance(Duration::from_millis(7)).await;
    assert_eq!(Instant::now() - t2, Duration::from_millis(7));
}
