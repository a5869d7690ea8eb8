//! Sharding a plan across machines: shard `i` of `N` takes the environments whose name hashes
//! to `i`. The hash is FNV-1a over the name's bytes — fixed by this file, not by a library or
//! a platform — so every machine computes the same split, and every environment lands in
//! exactly one shard whatever order or subset the machines list them in.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count` (0-based: `0/4` … `3/4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: u32,
    /// How many shards.
    pub count: u32,
}

/// The most shards a plan may be split into.
pub const MAX_SHARDS: u32 = 10_000;

impl Shard {
    /// Shard `index` of `count`, when `index < count ≤ MAX_SHARDS`.
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "a shard count is from 1 to {MAX_SHARDS}, got {count}"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count} does not exist: shards are numbered from 0 to {}",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// Whether the environment called `name` belongs to this shard.
    pub fn contains(&self, name: &str) -> bool {
        fnv1a(name.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `i/N`, 0-based.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            || format!("`{text}` is not a shard: write i/N, for example 0/4 (shards count from 0)");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index = index.trim().parse().map_err(|_| bad())?;
        let count = count.trim().parse().map_err(|_| bad())?;
        Self::new(index, count)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_lands_in_exactly_one_shard_and_the_split_is_even() {
        let names: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
        for count in [1, 2, 3, 4, 7, 16] {
            let mut sizes = vec![0usize; count as usize];
            for name in &names {
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard::new(i, count).expect("shard").contains(name))
                    .collect();
                assert_eq!(owners.len(), 1, "{name} in {owners:?} of {count}");
                sizes[owners[0] as usize] += 1;
            }
            let fair = names.len() / count as usize;
            for size in sizes {
                assert!(
                    size.abs_diff(fair) * 10 < fair.max(10),
                    "{count} shards: {size} vs {fair}"
                );
            }
        }
    }

    #[test]
    fn the_split_is_fixed_by_the_name_alone() {
        // A change to the hash would move environments between shards of a running
        // deployment: these values pin it.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(
            Shard::new(0, 2).expect("shard").contains("a")
                != Shard::new(1, 2).expect("shard").contains("a")
        );
    }

    #[test]
    fn shards_parse_and_bad_ones_are_refused_with_the_rule() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!("0/1".parse::<Shard>().expect("shard").to_string(), "0/1");
        for (text, says) in [
            ("4/4", "numbered from 0 to 3"),
            ("1/0", "from 1 to"),
            ("x/4", "write i/N"),
            ("3", "write i/N"),
            ("-1/4", "write i/N"),
        ] {
            let error = text.parse::<Shard>().expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
