//! Every input of every fuzz corpus (`fuzz/corpus/<target>`) through its target, once: what the
//! libFuzzer harness (`scripts/fuzz.sh`) would find on those inputs, without its sanitizer
//! build. Also keeps the harness and this crate in step: every `[[bin]]` in `fuzz/Cargo.toml`
//! has a module here, a corpus, and a harness file that calls the module.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use pylon_fuzz_targets as targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs `name`'s whole corpus through `run`; names every input that panicked (the panic
/// message itself is printed by the panic hook, above the failure).
fn replay(name: &str, run: fn(&[u8])) {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "{} is empty: seed it (scripts/fuzz.sh --merge)",
        dir.display()
    );
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable corpus file");
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {name} failed:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}

#[test]
fn every_harness_binary_has_a_target_a_corpus_and_calls_its_module() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .filter(|n| *n != "pylon-fuzz")
        .collect();
    bins.sort_unstable();
    assert_eq!(
        bins, TARGETS,
        "fuzz/Cargo.toml's [[bin]]s and this file's targets differ"
    );
    for name in bins {
        let harness = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
        let call = format!("pylon_fuzz_targets::{name}::run(data)");
        assert!(
            harness.contains(&call),
            "fuzz/fuzz_targets/{name}.rs does not call {call}"
        );
        assert!(
            fuzz_dir().join("corpus").join(name).is_dir(),
            "fuzz/corpus/{name} is missing"
        );
    }
}

/// One test per target, so they run in parallel and a failure names its target, and
/// `TARGETS`, their names in order: one list of targets for both.
macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        const TARGETS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), targets::$name::run);
            }
        )*
    };
}

corpus_tests!(
    config,
    connected_peer,
    data_packet,
    ice_tcp_frames,
    join_request,
    keyframe,
    red,
    relay_direct,
    relay_frame,
    shard_admin,
    shard_datagram,
    shard_signal,
    token,
    turn,
);
