//! Replays the edge fuzz targets' corpora (`fuzz/corpus/<target>/`) on stable Rust.

use std::path::Path;

#[test]
fn replay_fuzz_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in edge::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_file() {
                target(&std::fs::read(&path).unwrap());
                n += 1;
            }
        }
        assert!(n > 0, "fuzz target {name} has an empty corpus");
    }
}
