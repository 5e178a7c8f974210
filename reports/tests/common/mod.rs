//! Helpers shared by the report tests.

use std::path::Path;

/// A fresh, empty directory made by `tempfile`, removed when the test passes; kept for
/// inspection when it fails, or always when IMLAB_KEEP_TEST_OUTPUT is set.
pub struct TempDir(Option<tempfile::TempDir>);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("imlab-reports-{test}-"))
            .tempdir()
            .unwrap();
        TempDir(Some(dir))
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.as_ref().expect("held until dropped").path()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let keep = std::thread::panicking() || std::env::var_os("IMLAB_KEEP_TEST_OUTPUT").is_some();
        if let (true, Some(dir)) = (keep, self.0.take()) {
            eprintln!("test output kept in {}", dir.keep().display());
        }
    }
}
