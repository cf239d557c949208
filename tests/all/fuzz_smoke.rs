//! The fuzz targets (`estate::fuzzing`) in every test run: each over its committed
//! corpus (`fuzz/corpus/NAME/`) and over a fixed number of seeded mutations of it (bit
//! flips, interesting bytes and lengths, truncations, insertions, deletions, copies,
//! splices), in well under a second per target in a debug build. A target panics on a
//! decoder that panics or breaks the target's invariant; the test names the target,
//! the input and how it was made. The coverage-guided campaigns run from `fuzz/`
//! (docs/security.md, "Fuzzing").
//!
//! The corpus seeds are written by the project's own encoders
//! (`estate::fuzzing::seeds`); after a format change, write them again with
//! `cargo test -p estate --test all fuzz_smoke::write_corpus -- --ignored`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use estate::fuzzing::{TARGETS, Target, seeds};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus");
/// Mutated inputs per target.
const MUTATIONS: usize = 2_000;
/// Seed files are named `seed-NN`; other files (inputs found by campaigns, crashes
/// that were fixed) are kept as they are.
const SEED_PREFIX: &str = "seed-";

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(CORPUS).join(name)
}

/// The files of a target's corpus, sorted by name.
fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(name);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// xorshift64*: seeded, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 for `n` = 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING_BYTES: [u8; 12] = [0, 1, 0x7f, 0x80, 0xfb, 0xfc, 0xfd, 0xff, b'=', b'\n', b'#', b'"'];
const INTERESTING_WORDS: [u64; 6] = [0, 0xffff, 0xffff_ffff, u64::MAX, 1 << 31, 0x7fff_ffff_ffff_ffff];

/// One to four mutations of `input`; `other` is another input of the same corpus to
/// splice with.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        let last = data.len().saturating_sub(1);
        match rng.below(8) {
            0 if !data.is_empty() => data[at.min(last)] ^= 1 << rng.below(8),
            1 if !data.is_empty() => data[at.min(last)] = INTERESTING_BYTES[rng.below(12)],
            2 => data.truncate(at),
            3 => {
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            5 if !data.is_empty() => {
                let from = rng.below(data.len());
                let chunk = data[from..(from + 1 + rng.below(16)).min(data.len())].to_vec();
                data.splice(at..at, chunk);
            }
            6 => {
                let cut = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[cut..]);
            }
            _ => {
                let word = INTERESTING_WORDS[rng.below(6)].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let end = (at + width).min(data.len());
                data.splice(at..end, word[..width].iter().copied());
            }
        }
    }
    data
}

fn run(name: &str, target: Target, input: &[u8], made: &str) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        let shown: String = input.iter().take(512).map(|b| format!("{b:02x}")).collect();
        panic!("fuzz target {name} failed on {made} ({} bytes): {shown}", input.len());
    }
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let started = std::time::Instant::now();
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        let files = corpus(name);
        assert!(!files.is_empty(), "fuzz/corpus/{name} has inputs");
        for (file, bytes) in &files {
            run(name, *target, bytes, &format!("corpus file {file}"));
        }
        let seed = 0x9e37_79b9_7f4a_7c15 ^ i as u64;
        let mut rng = Rng(seed);
        for n in 0..MUTATIONS {
            let (file, input) = &files[rng.below(files.len())];
            let (_, other) = &files[rng.below(files.len())];
            let mutant = mutate(&mut rng, input, other);
            run(name, *target, &mutant, &format!("mutation {n} of {file} (rng seed {seed:#x})"));
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed.as_secs() < 10, "the smoke run took {elapsed:?}");
}

#[test]
fn the_corpus_holds_every_target_and_its_current_seeds() {
    let mut dirs: Vec<String> =
        std::fs::read_dir(CORPUS).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    dirs.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names, "one corpus directory per target");
    for (name, _) in TARGETS {
        let files = corpus(name);
        for seed in seeds(name) {
            assert!(
                files.iter().any(|(_, bytes)| *bytes == seed),
                "fuzz/corpus/{name} lacks a current seed: write the corpus again \
                 (cargo test -p estate --test all fuzz_smoke::write_corpus -- --ignored)"
            );
        }
        let size: usize = files.iter().map(|(_, b)| b.len()).sum();
        assert!(size <= 16 << 10, "fuzz/corpus/{name} stays small: {size} bytes");
    }
}

/// Writes every target's seeds to `fuzz/corpus/NAME/seed-NN`, replacing the seed files
/// there and keeping every other file.
#[test]
#[ignore = "writes the committed corpus; run by hand after a format change"]
fn write_corpus() {
    for (name, _) in TARGETS {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with(SEED_PREFIX) {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (i, seed) in seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("{SEED_PREFIX}{i:02}")), seed).unwrap();
        }
    }
}
