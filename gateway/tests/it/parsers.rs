//! Every parser a pod can reach, fuzzed for a bounded time in every `cargo test` (CI runs no
//! nightly toolchain): the checks of [`chokepoint::fuzz`] — the same the cargo-fuzz targets
//! run — over the seed corpus in `fuzz/seeds/<target>/`, every prefix of each seed, and a
//! fixed-seed mutation loop, so a failure is reproducible. `scripts/fuzz.sh` runs the real
//! coverage-guided fuzzers for longer.

use std::path::PathBuf;

use chokepoint::fuzz::TARGETS;

/// Mutated inputs per target and run.
const MUTATIONS: usize = 20_000;
/// Longest input the loop makes (the fuzz script's `-max_len` is larger).
const MAX_LEN: usize = 70_000;

/// xorshift64*: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a seed").path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("a seed"))
        .collect();
    assert!(seeds.len() >= 5, "{}: too few seeds", dir.display());
    seeds
}

/// One mutation of the kinds libFuzzer uses: flip, set, insert, erase, duplicate, splice.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                // Interesting bytes: lengths' edges, separators.
                out[i] =
                    [0, 1, 0x7f, 0x80, 0xff, b'\r', b'\n', b':', b'.', b'_', 0xc0][rng.below(11)];
            }
            2 => {
                let n = rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if at < out.len() => {
                let end = (at + rng.below(32)).min(out.len());
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = (at + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + rng.below(256)).min(other.len());
                out.splice(at.., other[from..end].iter().copied());
            }
            _ => out.truncate(at),
        }
    }
    out.truncate(MAX_LEN);
    out
}

#[test]
fn every_parser_a_pod_reaches_survives_its_corpus_every_prefix_and_mutations() {
    for (index, (target, check)) in TARGETS.iter().enumerate() {
        let seeds = seeds(target);
        for seed in &seeds {
            check(seed);
            // Incremental parsers see every prefix as the bytes arrive.
            for n in 0..seed.len().min(2048) {
                check(&seed[..n]);
            }
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ index as u64);
        let mut input = seeds[0].clone();
        for i in 0..MUTATIONS {
            // Mostly stack mutations on the last input; restart from a seed now and then.
            if i % 8 == 0 {
                input = seeds[rng.below(seeds.len())].clone();
            }
            let other = &seeds[rng.below(seeds.len())];
            input = mutate(&mut rng, &input, other);
            check(&input);
        }
    }
}

#[test]
fn the_fuzz_targets_are_exactly_the_checks() {
    // Each check has its cargo-fuzz target of the same name, run by scripts/fuzz.sh.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let source = std::fs::read_to_string(&path).unwrap();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                source.contains(&format!("chokepoint::fuzz::{name}(")),
                "{} does not run its check",
                path.display()
            );
            name
        })
        .collect();
    targets.sort();
    let mut checks: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    checks.sort();
    assert_eq!(targets, checks);
    let script = std::fs::read_to_string(dir.join("../../scripts/fuzz.sh")).unwrap();
    for name in &checks {
        assert!(
            script.contains(name.as_str()),
            "scripts/fuzz.sh does not run {name}"
        );
    }
}
