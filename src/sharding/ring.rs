//! The consistent-hash ring: shard names to points on the 64-bit hash space, hashes to owners, and
//! the ranges of the space that change hands between two rings.
//!
//! The function, exactly:
//! - `hash(key) = XXH3_64(canonical_bytes(key), seed = 0)` (canonical bytes: see
//!   [`ShardKey::with_canonical_bytes`]).
//! - Shard `name` owns the points `XXH3_64("{name}#{i}", seed = 0)` for `i` in
//!   `0..vnodes_per_shard`, where `"{name}#{i}"` is the name's UTF-8 bytes, `#`, and `i` in decimal
//!   without leading zeros (`"shard_a#0"`, `"shard_a#1"`, …).
//! - All shards' points are sorted ascending (equal points, astronomically rare, by shard name).
//!   A hash belongs to the first point `>= hash`; a hash above the highest point wraps around to
//!   the lowest point.
//!
//! A shard's points depend only on its own name and the vnode count, never on its position in the
//! list or on the other shards, so renaming, adding or removing one shard only moves keys to or
//! from that shard. A [`Ring`] is immutable: a running proxy swaps in a new one whole (e.g. behind
//! an `ArcSwap`), and resharding compares the two with [`Ring::moved_ranges`].

use std::io::Write;

use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

use super::key::ShardKey;

/// Virtual nodes per shard when the config does not say. A shard's share of the hash space strays
/// from even by about `1/sqrt(vnodes)` (one standard deviation): 4096 keeps the worst of 4–32 shards
/// within ~3.5% (256 would leave ~15%), for a ring of 32 KiB of points per shard and a binary search
/// of ~17 steps at 32 shards.
pub const DEFAULT_VNODES_PER_SHARD: u32 = 4096;

/// Upper bound on `shards × vnodes_per_shard`, so a typo in a config cannot exhaust memory.
pub const MAX_POINTS: u64 = 1 << 24;

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    #[error("a ring needs at least one shard")]
    NoShards,
    #[error("vnodes_per_shard must be at least 1")]
    NoVnodes,
    #[error("shard names must not be empty")]
    EmptyShardName,
    #[error("shard {0:?} is listed twice")]
    DuplicateShard(String),
    #[error("{shards} shards × {vnodes} vnodes is more than {MAX_POINTS} ring points")]
    TooManyPoints { shards: usize, vnodes: u32 },
}

/// An inclusive range `start..=end` of the 64-bit hash space (inclusive so that the whole space,
/// `0..=u64::MAX`, is one range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashRange {
    pub start: u64,
    pub end: u64,
}

impl HashRange {
    /// Whether `hash` falls in the range.
    pub fn contains(&self, hash: u64) -> bool {
        self.start <= hash && hash <= self.end
    }

    /// The range's share of the whole hash space, in `(0, 1]`.
    pub fn fraction(&self) -> f64 {
        // The +1 for the inclusive end is below f64 precision except for tiny ranges.
        ((self.end - self.start) as f64 + 1.0) / 18_446_744_073_709_551_616.0
    }
}

/// A range of the hash space whose owner differs between two rings, by shard name (indices are
/// not comparable across rings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub range: HashRange,
    pub from: String,
    pub to: String,
}

/// The hash of a shard key: XXH3-64 with seed 0 over its canonical bytes.
pub fn hash_key(key: &ShardKey) -> u64 {
    key.with_canonical_bytes(xxh3_64)
}

/// The ring point of virtual node `i` of shard `name`: XXH3-64 with seed 0 of `"{name}#{i}"`.
pub fn vnode_point(name: &str, i: u32) -> u64 {
    let mut buffer = Vec::with_capacity(name.len() + 11);
    push_label(&mut buffer, name, i);
    xxh3_64(&buffer)
}

/// Writes `"{name}#{i}"` into `buffer` (cleared first).
fn push_label(buffer: &mut Vec<u8>, name: &str, i: u32) {
    buffer.clear();
    buffer.extend_from_slice(name.as_bytes());
    buffer.push(b'#');
    // Writing to a Vec cannot fail.
    let _ = write!(buffer, "{i}");
}

/// An immutable consistent-hash ring over named shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// Shard names in the order given; owners are indices into this.
    shards: Vec<String>,
    vnodes_per_shard: u32,
    /// Ring points, ascending.
    points: Vec<u64>,
    /// `owners[k]` owns `points[k]` and the hashes just below it.
    owners: Vec<u32>,
}

impl Ring {
    /// Builds the ring for `shards` (names, in the order indices should refer to) with
    /// `vnodes_per_shard` points each. Deterministic: the same names and count give the same ring
    /// in any process, and the order of `shards` only changes which index names a shard.
    pub fn new<S: AsRef<str>>(shards: &[S], vnodes_per_shard: u32) -> Result<Ring, RingError> {
        if shards.is_empty() {
            return Err(RingError::NoShards);
        }
        if vnodes_per_shard == 0 {
            return Err(RingError::NoVnodes);
        }
        if shards.len() as u64 * u64::from(vnodes_per_shard) > MAX_POINTS {
            return Err(RingError::TooManyPoints {
                shards: shards.len(),
                vnodes: vnodes_per_shard,
            });
        }
        let names: Vec<String> = shards.iter().map(|s| s.as_ref().to_owned()).collect();
        let mut seen = std::collections::HashSet::new();
        for name in &names {
            if name.is_empty() {
                return Err(RingError::EmptyShardName);
            }
            if !seen.insert(name.as_str()) {
                return Err(RingError::DuplicateShard(name.clone()));
            }
        }

        let mut entries: Vec<(u64, u32)> =
            Vec::with_capacity(names.len() * vnodes_per_shard as usize);
        let mut buffer = Vec::new();
        for (index, name) in (0u32..).zip(&names) {
            for i in 0..vnodes_per_shard {
                push_label(&mut buffer, name, i);
                entries.push((xxh3_64(&buffer), index));
            }
        }
        // Ties broken by name, not index, so that list order never changes an owner.
        entries.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| names[a.1 as usize].cmp(&names[b.1 as usize]))
        });
        let (points, owners) = entries.into_iter().unzip();
        Ok(Ring {
            shards: names,
            vnodes_per_shard,
            points,
            owners,
        })
    }

    /// Shard names; owners are indices into this.
    pub fn shards(&self) -> &[String] {
        &self.shards
    }

    pub fn vnodes_per_shard(&self) -> u32 {
        self.vnodes_per_shard
    }

    /// The index of the shard owning `hash`: the owner of the first point `>= hash`, wrapping to
    /// the lowest point.
    pub fn owner(&self, hash: u64) -> usize {
        let k = self.points.partition_point(|&p| p < hash);
        // A ring always has points, so the wrapped index 0 exists.
        self.owners
            .get(k)
            .or(self.owners.first())
            .copied()
            .unwrap_or(0) as usize
    }

    /// The name of the shard owning `hash`.
    pub fn owner_name(&self, hash: u64) -> &str {
        self.shards.get(self.owner(hash)).map_or("", String::as_str)
    }

    /// The index of the shard owning `key`.
    pub fn shard_of(&self, key: &ShardKey) -> usize {
        self.owner(hash_key(key))
    }

    /// The whole hash space as ascending, contiguous ranges with their owners (shard indices),
    /// adjacent ranges of one owner merged. The wrap-around arc appears as two ranges, one
    /// starting at 0 and one ending at `u64::MAX`.
    pub fn ranges(&self) -> Vec<(HashRange, usize)> {
        let mut out: Vec<(HashRange, usize)> = Vec::new();
        let mut start = 0u64;
        for (&point, &owner) in self.points.iter().zip(&self.owners) {
            push_merged(&mut out, HashRange { start, end: point }, owner as usize);
            if point == u64::MAX {
                return out;
            }
            start = point + 1;
        }
        let first = self.owners.first().copied().unwrap_or(0) as usize;
        push_merged(
            &mut out,
            HashRange {
                start,
                end: u64::MAX,
            },
            first,
        );
        out
    }

    /// Each shard's share of the hash space (by index), summing to 1.
    pub fn shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.shards.len()];
        for (range, owner) in self.ranges() {
            if let Some(share) = shares.get_mut(owner) {
                *share += range.fraction();
            }
        }
        shares
    }

    /// The ranges whose owner differs between `old` and `new`, ascending, by shard name, adjacent
    /// ranges with the same `from` and `to` merged. Keys outside these ranges stay where they are.
    pub fn moved_ranges(old: &Ring, new: &Ring) -> Vec<Move> {
        let (a, b) = (old.ranges(), new.ranges());
        let mut moves: Vec<Move> = Vec::new();
        let (mut i, mut j, mut start) = (0, 0, 0u64);
        while let (Some(&(ra, oa)), Some(&(rb, ob))) = (a.get(i), b.get(j)) {
            let end = ra.end.min(rb.end);
            let from = old.shards.get(oa).map_or("", String::as_str);
            let to = new.shards.get(ob).map_or("", String::as_str);
            if from != to {
                match moves.last_mut() {
                    Some(last)
                        if last.range.end.checked_add(1) == Some(start)
                            && last.from == from
                            && last.to == to =>
                    {
                        last.range.end = end;
                    }
                    _ => moves.push(Move {
                        range: HashRange { start, end },
                        from: from.to_owned(),
                        to: to.to_owned(),
                    }),
                }
            }
            if end == u64::MAX {
                break;
            }
            start = end + 1;
            if ra.end == end {
                i += 1;
            }
            if rb.end == end {
                j += 1;
            }
        }
        moves
    }
}

/// Appends `range` for `owner`, extending the last range instead if it has the same owner.
fn push_merged(out: &mut Vec<(HashRange, usize)>, range: HashRange, owner: usize) {
    match out.last_mut() {
        Some((last, last_owner)) if *last_owner == owner => last.end = range.end,
        _ => out.push((range, owner)),
    }
}

#[cfg(test)]
mod tests;
