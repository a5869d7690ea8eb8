//! Migration versions: `20260101_120000`, `0001`, … ordered numerically by digit groups.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A migration version as written in a file name or a history row.
///
/// A version is one or more groups of ASCII digits separated by `_`. Versions compare
/// numerically group by group, so `0002` < `0010` and `20260101_120000` < `20260101_120001`;
/// leading zeros do not matter (`0001` equals `1`). The original spelling is kept for display
/// and for the history table. Cloning is cheap (a shared string): a version is copied into
/// every target's plan, progress and report.
#[derive(Clone)]
pub struct Version {
    text: std::sync::Arc<str>,
}

impl Version {
    /// Parses `text` as a version; `None` when it is not `_`-separated digit groups.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = !text.is_empty()
            && text
                .split('_')
                .all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()));
        valid.then(|| Self {
            text: std::sync::Arc::from(text),
        })
    }

    /// The version as originally written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn groups(&self) -> impl Iterator<Item = &str> {
        self.text.split('_').map(|g| {
            let trimmed = g.trim_start_matches('0');
            if trimmed.is_empty() { "0" } else { trimmed }
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let mut left = self.groups();
        let mut right = other.groups();
        loop {
            match (left.next(), right.next()) {
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                // Digit strings without leading zeros: the longer is larger, else lexicographic.
                (Some(a), Some(b)) => match a.len().cmp(&b.len()).then_with(|| a.cmp(b)) {
                    Ordering::Equal => continue,
                    unequal => return unequal,
                },
            }
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for group in self.groups() {
            group.hash(state);
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.text)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Version::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a migration version")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("valid version")
    }

    #[test]
    fn orders_numerically_by_group() {
        let mut versions = [
            v("0010"),
            v("2"),
            v("0001"),
            v("20260101_120000"),
            v("20260101_9"),
        ];
        versions.sort();
        let texts: Vec<_> = versions.iter().map(Version::as_str).collect();
        assert_eq!(
            texts,
            ["0001", "2", "0010", "20260101_9", "20260101_120000"]
        );
    }

    #[test]
    fn leading_zeros_do_not_distinguish() {
        assert_eq!(v("0001"), v("1"));
        assert_eq!(v("20260101_000100"), v("20260101_100"));
        assert_ne!(v("1_0"), v("1"));
        assert!(v("1") < v("1_0"));
    }

    #[test]
    fn huge_groups_do_not_overflow() {
        assert!(v("99999999999999999999999999") < v("100000000000000000000000000"));
    }

    #[test]
    fn rejects_non_versions() {
        for bad in ["", "_1", "1_", "1__2", "v1", "1.2", "12a"] {
            assert!(Version::parse(bad).is_none(), "{bad:?} should be rejected");
        }
    }
}
