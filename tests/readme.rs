//! README.md's `console` blocks run for real (trycmd): each `$ imlab ...` command's output
//! must match what the README shows, `[..]` standing for what varies (wall times, tokens
//! that embed the clock). Blocks shown as `text` are illustrations of long or networked runs
//! and are not run. The commands run in a fresh temporary directory with `scenarios/` linked
//! in, so relative `--out` paths land there, never in the repository.

use std::path::Path;

#[test]
fn readme_console_examples_match_real_output() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo.join("scenarios"), work.path().join("scenarios")).unwrap();
    // This test binary holds this one test, so changing its working directory is safe.
    std::env::set_current_dir(work.path()).unwrap();
    trycmd::TestCases::new()
        .register_bin("imlab", Path::new(env!("CARGO_BIN_EXE_imlab")))
        .env("NO_COLOR", "1")
        .case(repo.join("README.md"));
}
