//! FNV-1a, the hash behind model fingerprints and saved-state checksums. It sits below
//! both `model` and `runtime` so that neither has to reach into the other for it.

/// The FNV-1a offset basis: the starting value of a fresh hash.
pub(crate) const FNV_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds `bytes` into the running hash `h`.
pub(crate) fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    let mut h = h;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
