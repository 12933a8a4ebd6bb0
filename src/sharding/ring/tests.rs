//! The ring: pinned values, determinism, stability under unrelated changes, balance and movement
//! with a million keys, and the range listings resharding will use.

use super::*;
use crate::sharding::KeyType;

const SHARDS: [&str; 4] = ["s0", "s1", "s2", "s3"];

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("shard_{i}")).collect()
}

/// The documented function re-implemented naively: the smallest point `>= hash` over every
/// shard's vnodes, else the smallest point overall.
fn reference_owner(shards: &[&str], vnodes: u32, hash: u64) -> &'static str {
    let mut points: Vec<(u64, &str)> = Vec::new();
    for name in shards {
        for i in 0..vnodes {
            let label = format!("{name}#{i}");
            points.push((xxh3_64(label.as_bytes()), name));
        }
    }
    let above = points.iter().filter(|(p, _)| *p >= hash).min();
    let (_, owner) = above.or(points.iter().min()).copied().expect("points");
    SHARDS
        .into_iter()
        .find(|s| *s == owner)
        .expect("known shard")
}

#[test]
fn hash_is_standard_xxh3_and_pinned() {
    // The XXH3-64 reference value of the empty input, seed 0.
    assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
    let uuid =
        ShardKey::from_text(KeyType::Uuid, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").expect("uuid");
    let ring = Ring::new(&SHARDS, 256).expect("ring");
    for (key, hash, shard) in [
        (ShardKey::Int(1), 0xf36b_4a1a_44f7_8bf3, "s1"),
        (ShardKey::Int(42), 0x2e4f_e982_b689_10ac, "s1"),
        (ShardKey::Int(-1), 0x5111_c7e4_7d78_4413, "s0"),
        (ShardKey::Text("bob".into()), 0x1403_c0c4_0f49_b8e5, "s1"),
        (uuid, 0x55df_6948_2c6d_3767, "s2"),
    ] {
        assert_eq!(hash_key(&key), hash, "{key:?}");
        assert_eq!(ring.owner_name(hash), shard, "{key:?}");
        assert_eq!(reference_owner(&SHARDS, 256, hash), shard, "{key:?}");
    }
    assert_eq!(vnode_point("s0", 0), xxh3_64(b"s0#0"));
    assert_eq!(vnode_point("s0", 0), 0x3ca1_8f17_0a22_0936);
    assert_eq!(vnode_point("s1", 255), xxh3_64(b"s1#255"));
}

#[test]
fn owner_matches_the_reference_everywhere() {
    let ring = Ring::new(&SHARDS, 16).expect("ring");
    let mut hashes = vec![0, 1, u64::MAX, u64::MAX - 1];
    for &p in &ring.points {
        hashes.extend([p.wrapping_sub(1), p, p.wrapping_add(1)]);
    }
    hashes.extend((0..2000).map(|i| hash_key(&ShardKey::Int(i))));
    for hash in hashes {
        assert_eq!(
            ring.owner_name(hash),
            reference_owner(&SHARDS, 16, hash),
            "{hash:#x}"
        );
    }
}

#[test]
fn the_three_input_forms_land_on_one_shard() {
    let ring = Ring::new(&names(8), 64).expect("ring");
    for value in [-5i64, 0, 7, 1000, 123_456] {
        let literal = ShardKey::from_literal(KeyType::Integer, &value.to_string()).expect("lit");
        let text = ShardKey::from_text(KeyType::BigInt, value.to_string().as_bytes()).expect("t");
        let int4 = i32::try_from(value).expect("int4").to_be_bytes();
        let binary = ShardKey::from_binary(KeyType::Integer, &int4).expect("bin");
        let shard = ring.shard_of(&literal);
        assert_eq!(ring.shard_of(&text), shard);
        assert_eq!(ring.shard_of(&binary), shard);
    }
}

#[test]
fn building_is_deterministic_and_order_independent() {
    let a = Ring::new(&["a", "b", "c"], 128).expect("ring");
    assert_eq!(a, Ring::new(&["a", "b", "c"], 128).expect("ring"));
    let reversed = Ring::new(&["c", "b", "a"], 128).expect("ring");
    assert_eq!(a.points, reversed.points);
    for i in 0..10_000 {
        let hash = hash_key(&ShardKey::Int(i));
        assert_eq!(a.owner_name(hash), reversed.owner_name(hash));
    }
    assert!(Ring::moved_ranges(&a, &reversed).is_empty());
}

#[test]
fn bad_configs_are_typed_errors() {
    let none: [&str; 0] = [];
    assert_eq!(Ring::new(&none, 8), Err(RingError::NoShards));
    assert_eq!(Ring::new(&["a"], 0), Err(RingError::NoVnodes));
    assert_eq!(Ring::new(&["a", ""], 8), Err(RingError::EmptyShardName));
    assert_eq!(
        Ring::new(&["a", "b", "a"], 8),
        Err(RingError::DuplicateShard("a".into()))
    );
    assert_eq!(
        Ring::new(&["a", "b"], u32::MAX),
        Err(RingError::TooManyPoints {
            shards: 2,
            vnodes: u32::MAX
        })
    );
}

#[test]
fn ranges_cover_the_space_and_agree_with_owner() {
    let ring = Ring::new(&SHARDS, 32).expect("ring");
    let ranges = ring.ranges();
    assert_eq!(ranges.first().map(|r| r.0.start), Some(0));
    assert_eq!(ranges.last().map(|r| r.0.end), Some(u64::MAX));
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].0.end + 1, pair[1].0.start);
        assert_ne!(
            pair[0].1, pair[1].1,
            "adjacent ranges of one owner are merged"
        );
    }
    for (range, owner) in &ranges {
        for hash in [range.start, range.end, range.start / 2 + range.end / 2] {
            assert_eq!(ring.owner(hash), *owner);
        }
    }
    let total: f64 = ring.shares().iter().sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
    let one = Ring::new(&["only"], 4).expect("ring");
    assert_eq!(
        one.ranges(),
        vec![(
            HashRange {
                start: 0,
                end: u64::MAX
            },
            0
        )]
    );
}

/// Per-shard counts of the keys `0..n` as bigints.
fn counts(ring: &Ring, n: i64) -> Vec<u64> {
    let mut counts = vec![0u64; ring.shards().len()];
    for i in 0..n {
        counts[ring.shard_of(&ShardKey::Int(i))] += 1;
    }
    counts
}

/// The largest relative deviation from an even split.
fn worst_deviation(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let mean = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - mean).abs() / mean)
        .fold(0.0, f64::max)
}

#[test]
fn a_million_keys_balance_across_shards() {
    // Spread shrinks as 1/sqrt(vnodes): 256 vnodes leave a shard ~15% off, the default ~3.5%.
    for (shards, vnodes, bound) in [
        (8, 256, 0.20),
        (4, DEFAULT_VNODES_PER_SHARD, 0.05),
        (8, DEFAULT_VNODES_PER_SHARD, 0.05),
        (16, DEFAULT_VNODES_PER_SHARD, 0.05),
        (32, DEFAULT_VNODES_PER_SHARD, 0.05),
    ] {
        let ring = Ring::new(&names(shards), vnodes).expect("ring");
        let keys = worst_deviation(&counts(&ring, 1_000_000));
        let shares: Vec<u64> = ring.shares().iter().map(|s| (s * 1e9) as u64).collect();
        let space = worst_deviation(&shares);
        println!(
            "balance: {shards} shards x {vnodes} vnodes: worst shard {:.2}% off even \
             (1M keys), {:.2}% (hash space)",
            keys * 100.0,
            space * 100.0
        );
        assert!(keys < bound, "{shards}x{vnodes}: {keys}");
    }
}

#[test]
fn adding_a_shard_moves_about_one_in_n_plus_one_keys_all_to_it() {
    const KEYS: i64 = 1_000_000;
    for n in [1usize, 3, 7, 15] {
        let old = Ring::new(&names(n), DEFAULT_VNODES_PER_SHARD).expect("ring");
        let new = Ring::new(&names(n + 1), DEFAULT_VNODES_PER_SHARD).expect("ring");
        let added = n; // index and name of the new shard: shard_{n}
        let mut moved = 0u64;
        for i in 0..KEYS {
            let key = ShardKey::Int(i);
            let (before, after) = (old.shard_of(&key), new.shard_of(&key));
            if before != after {
                assert_eq!(after, added, "key {i} moved between old shards");
                moved += 1;
            }
        }
        let fraction = moved as f64 / KEYS as f64;
        let ideal = 1.0 / (n + 1) as f64;
        let moves = Ring::moved_ranges(&old, &new);
        let range_fraction: f64 = moves.iter().map(|m| m.range.fraction()).sum();
        println!(
            "movement: {n} -> {} shards: {:.2}% of 1M keys moved (ideal {:.2}%), \
             {:.2}% of the hash space in {} ranges",
            n + 1,
            fraction * 100.0,
            ideal * 100.0,
            range_fraction * 100.0,
            moves.len()
        );
        assert!((fraction - ideal).abs() < 0.1 * ideal, "{n}: {fraction}");
        assert!((range_fraction - fraction).abs() < 0.01, "{n}");
        let new_name = format!("shard_{added}");
        assert!(moves.iter().all(|m| m.to == new_name && m.from != new_name));
    }
}

#[test]
fn renaming_or_adding_another_shard_leaves_other_keys_alone() {
    let base = Ring::new(&["a", "b", "c", "d"], 256).expect("ring");
    let renamed = Ring::new(&["a", "b", "c", "e"], 256).expect("ring");
    let grown = Ring::new(&["x", "a", "b", "c", "d"], 256).expect("ring");
    for i in 0..100_000 {
        let hash = hash_key(&ShardKey::Int(i));
        let before = base.owner_name(hash);
        // Renaming is removing "d" and adding "e": a key moves only off "d" or onto "e".
        let after = renamed.owner_name(hash);
        assert!(after == before || before == "d" || after == "e");
        let after = grown.owner_name(hash);
        assert!(after == before || after == "x");
    }
    let moves = Ring::moved_ranges(&base, &renamed);
    assert!(moves.iter().all(|m| m.from == "d" || m.to == "e"));
    // Everything "d" owned moves; "e" takes its own share.
    let off_d: f64 = moves
        .iter()
        .filter(|m| m.from == "d")
        .map(|m| m.range.fraction())
        .sum();
    assert!((off_d - base.shares()[3]).abs() < 1e-9);
    let onto_e: f64 = moves
        .iter()
        .filter(|m| m.to == "e")
        .map(|m| m.range.fraction())
        .sum();
    assert!((onto_e - renamed.shares()[3]).abs() < 1e-9);
    // Changing anything but names and the vnode count (hosts, pool sizes) cannot move a key: the
    // ring is built from nothing else.
    assert!(
        Ring::moved_ranges(&base, &Ring::new(&["d", "c", "b", "a"], 256).expect("ring")).is_empty()
    );
}

#[test]
fn moved_ranges_are_exactly_where_owners_differ() {
    let old = Ring::new(&["a", "b", "c"], 16).expect("ring");
    let new = Ring::new(&["a", "c", "d"], 24).expect("ring");
    let moves = Ring::moved_ranges(&old, &new);
    for pair in moves.windows(2) {
        assert!(pair[0].range.end < pair[1].range.start);
    }
    let mut probes: Vec<u64> = vec![0, u64::MAX];
    for m in &moves {
        assert_ne!(m.from, m.to);
        probes.extend([m.range.start, m.range.end, m.range.start.wrapping_sub(1)]);
        probes.push(m.range.end.wrapping_add(1));
        for hash in [m.range.start, m.range.end] {
            assert_eq!(old.owner_name(hash), m.from);
            assert_eq!(new.owner_name(hash), m.to);
        }
    }
    probes.extend((0..20_000).map(|i| hash_key(&ShardKey::Int(i))));
    for hash in probes {
        let moved = moves.iter().find(|m| m.range.contains(hash));
        let differs = old.owner_name(hash) != new.owner_name(hash);
        assert_eq!(moved.is_some(), differs, "{hash:#x}");
    }
    assert!(Ring::moved_ranges(&old, &old).is_empty());
}
