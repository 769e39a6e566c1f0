//! Special-token partitioning (llama.cpp's `tokenizer_st_partition`): before any
//! pre-tokenization, every occurrence of a control, user-defined or unknown token's text is
//! cut out of the input and becomes that token. Tokens are applied longest first, each over
//! all text fragments left by the previous ones, so a longer token wins over a shorter one
//! it overlaps. llama.cpp orders equal-length tokens with `std::sort`, which is not stable;
//! [`libstdcxx_sort`] reproduces libstdc++'s algorithm so ties fall the same way.

use memchr::memmem;

use super::TokenAttr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text { start: usize, end: usize },
    Token(u32),
}

/// A byte trie over the special tokens' texts, used once per input to find which of them
/// occur at all, so the per-token passes run only for those.
pub(crate) struct SpecialIndex {
    /// Special token ids in llama.cpp's `cache_special_tokens` order.
    pub order: Vec<u32>,
    /// Trie nodes: sorted (byte, child) edges and the position in `order` ending here.
    nodes: Vec<Node>,
    first_byte: [bool; 256],
}

#[derive(Default)]
struct Node {
    edges: Vec<(u8, u32)>,
    terminal: Option<u32>,
}

impl SpecialIndex {
    pub(crate) fn heap_bytes(&self) -> usize {
        use crate::heap::vec_bytes;
        vec_bytes(&self.order)
            + vec_bytes(&self.nodes)
            + self
                .nodes
                .iter()
                .map(|n| vec_bytes(&n.edges))
                .sum::<usize>()
    }

    pub(crate) fn new(order: Vec<u32>, text_of: impl Fn(u32) -> Vec<u8>) -> SpecialIndex {
        let mut nodes = vec![Node::default()];
        let mut first_byte = [false; 256];
        for (rank, &id) in order.iter().enumerate() {
            let text = text_of(id);
            let Some(&b0) = text.first() else { continue };
            first_byte[b0 as usize] = true;
            let mut at = 0usize;
            for &b in &text {
                at = match nodes[at].edges.binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => nodes[at].edges[i].1 as usize,
                    Err(i) => {
                        let child = nodes.len();
                        nodes.push(Node::default());
                        nodes[at].edges.insert(i, (b, child as u32));
                        child
                    }
                };
            }
            // Duplicated texts cannot happen (the vocabulary is unique); keep the first.
            nodes[at].terminal.get_or_insert(rank as u32);
        }
        SpecialIndex {
            order,
            nodes,
            first_byte,
        }
    }

    /// Marks in `present` (indexed like `order`) every special token occurring in `text`.
    fn scan(&self, text: &[u8], present: &mut [bool]) -> bool {
        let mut any = false;
        for start in 0..text.len() {
            if !self.first_byte[text[start] as usize] {
                continue;
            }
            let mut at = 0usize;
            for &b in &text[start..] {
                match self.nodes[at].edges.binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => at = self.nodes[at].edges[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(rank) = self.nodes[at].terminal {
                    present[rank as usize] = true;
                    any = true;
                }
            }
        }
        any
    }
}

/// `isspace` in the C locale.
#[inline]
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

pub(crate) struct PartitionInput<'a> {
    pub index: &'a SpecialIndex,
    pub text_of: &'a dyn Fn(u32) -> &'a [u8],
    pub attr_of: &'a dyn Fn(u32) -> TokenAttr,
}

#[derive(Default)]
pub(crate) struct PartitionScratch {
    present: Vec<bool>,
    next: Vec<Fragment>,
}

/// Splits `text` into fragments as llama.cpp does.
pub(crate) fn partition(
    inp: &PartitionInput,
    text: &[u8],
    parse_special: bool,
    sc: &mut PartitionScratch,
    out: &mut Vec<Fragment>,
) {
    out.clear();
    if text.is_empty() {
        return;
    }
    out.push(Fragment::Text {
        start: 0,
        end: text.len(),
    });
    let order = &inp.index.order;
    sc.present.clear();
    sc.present.resize(order.len(), false);
    if !inp.index.scan(text, &mut sc.present) {
        return;
    }
    for (rank, &id) in order.iter().enumerate() {
        if !sc.present[rank] {
            continue;
        }
        let attr = (inp.attr_of)(id);
        if !parse_special && attr.intersects(TokenAttr::CONTROL | TokenAttr::UNKNOWN) {
            continue;
        }
        let needle = (inp.text_of)(id);
        let finder = memmem::Finder::new(needle);
        sc.next.clear();
        for &frag in out.iter() {
            let Fragment::Text { start, end } = frag else {
                sc.next.push(frag);
                continue;
            };
            let mut cur = start;
            loop {
                let Some(m) = finder.find(&text[cur..end]).map(|m| m + cur) else {
                    if cur < end {
                        sc.next.push(Fragment::Text { start: cur, end });
                    }
                    break;
                };
                let mut left_end = m;
                if attr.contains(TokenAttr::LSTRIP) {
                    while left_end > cur && c_isspace(text[left_end - 1]) {
                        left_end -= 1;
                    }
                }
                if left_end > cur {
                    sc.next.push(Fragment::Text {
                        start: cur,
                        end: left_end,
                    });
                }
                sc.next.push(Fragment::Token(id));
                let mut r = m + needle.len();
                if r >= end {
                    break;
                }
                if attr.contains(TokenAttr::RSTRIP) {
                    while r < end && c_isspace(text[r]) {
                        r += 1;
                    }
                }
                cur = r;
            }
        }
        std::mem::swap(out, &mut sc.next);
    }
}

/// libstdc++'s `std::sort` (introsort: median-of-three quicksort down to 16 elements with a
/// heapsort fallback, then insertion sort), step for step, so that elements comparing
/// equal end up where llama.cpp's build puts them.
pub(crate) fn libstdcxx_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    if v.len() > 1 {
        let depth = 2 * (usize::BITS - 1 - v.len().leading_zeros()) as usize;
        introsort_loop(v, 0, v.len(), depth, less);
        final_insertion_sort(v, 0, v.len(), less);
    }
}

const THRESHOLD: usize = 16;

fn introsort_loop<T: Copy>(
    v: &mut [T],
    first: usize,
    mut last: usize,
    mut depth: usize,
    less: &impl Fn(&T, &T) -> bool,
) {
    while last - first > THRESHOLD {
        if depth == 0 {
            heap_sort(v, first, last, less);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(v, first, last, less);
        introsort_loop(v, cut, last, depth, less);
        last = cut;
    }
}

fn partition_pivot<T: Copy>(
    v: &mut [T],
    first: usize,
    last: usize,
    less: &impl Fn(&T, &T) -> bool,
) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(v, first, first + 1, mid, last - 1, less);
    unguarded_partition(v, first + 1, last, first, less)
}

fn move_median_to_first<T: Copy>(
    v: &mut [T],
    result: usize,
    a: usize,
    b: usize,
    c: usize,
    less: &impl Fn(&T, &T) -> bool,
) {
    let pick = if less(&v[a], &v[b]) {
        if less(&v[b], &v[c]) {
            b
        } else if less(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if less(&v[a], &v[c]) {
        a
    } else if less(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(result, pick);
}

fn unguarded_partition<T: Copy>(
    v: &mut [T],
    mut first: usize,
    mut last: usize,
    pivot: usize,
    less: &impl Fn(&T, &T) -> bool,
) -> usize {
    loop {
        while less(&v[first], &v[pivot]) {
            first += 1;
        }
        last -= 1;
        while less(&v[pivot], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn final_insertion_sort<T: Copy>(
    v: &mut [T],
    first: usize,
    last: usize,
    less: &impl Fn(&T, &T) -> bool,
) {
    if last - first > THRESHOLD {
        insertion_sort(v, first, first + THRESHOLD, less);
        for i in first + THRESHOLD..last {
            unguarded_linear_insert(v, i, less);
        }
    } else {
        insertion_sort(v, first, last, less);
    }
}

fn insertion_sort<T: Copy>(v: &mut [T], first: usize, last: usize, less: &impl Fn(&T, &T) -> bool) {
    if first == last {
        return;
    }
    for i in first + 1..last {
        if less(&v[i], &v[first]) {
            let val = v[i];
            v.copy_within(first..i, first + 1);
            v[first] = val;
        } else {
            unguarded_linear_insert(v, i, less);
        }
    }
}

fn unguarded_linear_insert<T: Copy>(v: &mut [T], mut last: usize, less: &impl Fn(&T, &T) -> bool) {
    let val = v[last];
    let mut next = last - 1;
    while less(&val, &v[next]) {
        v[last] = v[next];
        last = next;
        next -= 1;
    }
    v[last] = val;
}

fn heap_sort<T: Copy>(v: &mut [T], first: usize, last: usize, less: &impl Fn(&T, &T) -> bool) {
    // __partial_sort(first, last, last): make_heap, then sort_heap.
    let len = last - first;
    if len >= 2 {
        let mut parent = (len - 2) / 2;
        loop {
            let value = v[first + parent];
            adjust_heap(v, first, parent, len, value, less);
            if parent == 0 {
                break;
            }
            parent -= 1;
        }
    }
    let mut end = last;
    while end - first > 1 {
        end -= 1;
        let value = v[end];
        v[end] = v[first];
        adjust_heap(v, first, 0, end - first, value, less);
    }
}

fn adjust_heap<T: Copy>(
    v: &mut [T],
    first: usize,
    mut hole: usize,
    len: usize,
    value: T,
    less: &impl Fn(&T, &T) -> bool,
) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(&v[first + child], &v[first + child - 1]) {
            child -= 1;
        }
        v[first + hole] = v[first + child];
        hole = child;
    }
    if len & 1 == 0 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[first + hole] = v[first + child - 1];
        hole = child - 1;
    }
    // __push_heap
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && less(&v[first + parent], &value) {
        v[first + hole] = v[first + parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    v[first + hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Orders produced by g++ 12's `std::sort` (the compiler of the reference build) with
    /// llama.cpp's "longer first" comparator, digested: (n, FNV-1a of the ids, first, second, last).
    #[test]
    fn sort_orders_like_std_sort() {
        let cases: [(u32, u64, u32, u32, u32); 4] = [
            (200, 0x4b59a7f80f0a1109, 58, 97, 52),
            (6421, 0xe6c0723bba6ca1fd, 3397, 631, 2244),
            (40, 0x5708b53ec283742d, 32, 19, 39),
            (17, 0xdab4d7343c8aad1f, 6, 12, 13),
        ];
        // Under Miri (~100x slower) the 6421-element case is left out; the small ones still
        // go through partitioning and the insertion sort.
        for (n, hash, first, second, last) in cases {
            if n as usize > crate::test_rounds(6421) {
                continue;
            }
            let lens: Vec<u32> = (0..n)
                .map(|i| {
                    if n == 6421 {
                        (i.wrapping_mul(2654435761) >> 7) % 29
                    } else {
                        i.wrapping_mul(7919) % 13
                    }
                })
                .collect();
            let mut ids: Vec<u32> = (0..n).collect();
            libstdcxx_sort(&mut ids, &|a: &u32, b: &u32| {
                lens[*a as usize] > lens[*b as usize]
            });
            let mut h = 1469598103934665603u64;
            for &x in &ids {
                h ^= x as u64;
                h = h.wrapping_mul(1099511628211);
            }
            assert_eq!(
                (h, ids[0], ids[1], ids[n as usize - 1]),
                (hash, first, second, last),
                "n = {n}"
            );
        }
    }
}
