//! Counting the heap bytes a structure holds, for the memory a loaded model reports
//! (`Model::memory`). Capacities, not lengths: what the allocator handed out.

use std::collections::HashMap;

/// Bytes of a vector's buffer.
pub(crate) fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// Bytes of a hash map's table (keys' own heap not included). The standard map
/// (hashbrown) keeps a power-of-two number of buckets, at most 7/8 full from 8 buckets up,
/// and one control byte per bucket plus a group's worth (16) more.
pub(crate) fn map_bytes<K, V, S>(m: &HashMap<K, V, S>) -> usize {
    let cap = m.capacity();
    if cap == 0 {
        return 0;
    }
    let buckets = if cap < 4 {
        4
    } else if cap < 8 {
        8
    } else {
        (cap * 8 / 7).next_power_of_two()
    };
    buckets * size_of::<(K, V)>() + buckets + 16
}
