//! The Python that end-to-end tests drive real clients with: the venv `.ci/run` creates at
//! `target/py` (or `AGENT_SECRET_STORE_TEST_PYTHON`), with `requests`, `openai` and `mcp`.

use std::path::PathBuf;
use std::process::Command;

/// The test Python if it can `import` each of `modules` (comma-separated, as Python writes
/// them); otherwise `None` with a visible skip note, or a panic under `CI=true`, where a
/// missing client must fail the run rather than skip it.
pub fn venv_python(modules: &str) -> Option<PathBuf> {
    let path = std::env::var_os("AGENT_SECRET_STORE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py/bin/python")
        });
    let usable = Command::new(&path)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    match usable {
        true => Some(path),
        false if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but {} cannot import {modules}", path.display())
        }
        false => {
            eprintln!(
                "skipped: no Python with {modules} at {} (bash .ci/run creates it)",
                path.display()
            );
            None
        }
    }
}

/// A script under `tests/scripts/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scripts")
        .join(name)
}
