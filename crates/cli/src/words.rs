//! Counts as people write them.

/// `1 hook`, `2 hooks`.
pub(crate) fn hooks(n: u64) -> String {
    count(n, "hook")
}

/// `1 filter`, `0 filters`: a count and its noun.
pub(crate) fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
