//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`) on stable Rust, so that inputs
//! that once crashed or reached new code keep being checked without a fuzzer.

use std::path::Path;

#[test]
fn replay_fuzz_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (name, target) in relay::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus of fuzz target {name} at {}: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                let data = std::fs::read(&path).unwrap();
                target(&data);
                n += 1;
            }
        }
        assert!(n > 0, "fuzz target {name} has an empty corpus");
        total += n;
    }
    println!("replayed {total} corpus inputs");
}
