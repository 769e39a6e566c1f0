//! Code point classes and UTF-8 handling exactly as llama.cpp's `unicode.cpp` sees them:
//! its category table (Unicode 15.1), its White_Space set, its lenient UTF-8 decoder and
//! GPT-2's byte-to-character mapping.

use super::unicode_tables::{BLOCKS, BLOCK_INDEX, BLOCK_MASK, BLOCK_SHIFT};

/// No code point (a position outside the chunk being split). llama.cpp's empty flags.
pub(crate) const NONE: u8 = 0;
pub(crate) const UNDEFINED: u8 = 1;
pub(crate) const NUMBER: u8 = 2;
pub(crate) const LETTER: u8 = 3;
#[allow(dead_code)] // completes the set; llama.cpp's splitters never test for it
pub(crate) const SEPARATOR: u8 = 4;
pub(crate) const MARK: u8 = 5;
pub(crate) const PUNCT: u8 = 6;
pub(crate) const SYMBOL: u8 = 7;
#[allow(dead_code)] // completes the set; llama.cpp's splitters never test for it
pub(crate) const CONTROL: u8 = 8;
pub(crate) const WHITESPACE: u8 = 0x10;
const CATEGORY: u8 = 0x0f;

/// The class code of a code point: category in the low nibble, `WHITESPACE` bit.
#[inline]
pub(crate) fn class(cp: u32) -> u8 {
    if cp >= 0x11_0000 {
        return UNDEFINED;
    }
    let block = BLOCK_INDEX[(cp >> BLOCK_SHIFT) as usize] as usize;
    BLOCKS[(block << BLOCK_SHIFT) | (cp & BLOCK_MASK) as usize]
}

#[inline]
pub(crate) fn category(code: u8) -> u8 {
    code & CATEGORY
}

#[inline]
pub(crate) fn is_letter(code: u8) -> bool {
    code & CATEGORY == LETTER
}

#[inline]
pub(crate) fn is_number(code: u8) -> bool {
    code & CATEGORY == NUMBER
}

#[inline]
pub(crate) fn is_mark(code: u8) -> bool {
    code & CATEGORY == MARK
}

#[inline]
pub(crate) fn is_whitespace(code: u8) -> bool {
    code & WHITESPACE != 0
}

/// Byte length of a UTF-8 sequence from its lead byte, as llama.cpp's `unicode_len_utf8`
/// (continuation and invalid lead bytes count as one).
#[inline]
pub(crate) fn utf8_len(lead: u8) -> usize {
    const LOOKUP: [u8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(lead >> 4) as usize] as usize
}

/// Decodes the code point at `b[i]` the way llama.cpp's `unicode_cpts_from_utf8` does:
/// structurally complete sequences are accepted as they are (overlong forms included), and
/// anything else becomes U+FFFD consuming one byte. Returns the code point and its length.
#[inline]
pub(crate) fn decode_lenient(b: &[u8], i: usize) -> (u32, usize) {
    let c0 = b[i] as u32;
    let cont = |k: usize| i + k < b.len() && b[i + k] & 0xc0 == 0x80;
    if c0 & 0x80 == 0 {
        (c0, 1)
    } else if c0 & 0x40 == 0 {
        (0xfffd, 1)
    } else if c0 & 0x20 == 0 {
        if cont(1) {
            (((c0 & 0x1f) << 6) | (b[i + 1] as u32 & 0x3f), 2)
        } else {
            (0xfffd, 1)
        }
    } else if c0 & 0x10 == 0 {
        if cont(1) && cont(2) {
            let v =
                ((c0 & 0x0f) << 12) | ((b[i + 1] as u32 & 0x3f) << 6) | (b[i + 2] as u32 & 0x3f);
            (v, 3)
        } else {
            (0xfffd, 1)
        }
    } else if c0 & 0x08 == 0 {
        if cont(1) && cont(2) && cont(3) {
            let v = ((c0 & 0x07) << 18)
                | ((b[i + 1] as u32 & 0x3f) << 12)
                | ((b[i + 2] as u32 & 0x3f) << 6)
                | (b[i + 3] as u32 & 0x3f);
            (v, 4)
        } else {
            (0xfffd, 1)
        }
    } else {
        (0xfffd, 1)
    }
}

/// Appends the UTF-8 encoding of `cp` (llama.cpp's `unicode_cpt_to_utf8`, which also
/// encodes surrogates). `None` for values above U+10FFFF, which llama.cpp rejects.
pub(crate) fn push_utf8(out: &mut Vec<u8>, cp: u32) -> Option<()> {
    match cp {
        0..=0x7f => out.push(cp as u8),
        0x80..=0x7ff => out.extend_from_slice(&[0xc0 | (cp >> 6) as u8, 0x80 | (cp & 0x3f) as u8]),
        0x800..=0xffff => out.extend_from_slice(&[
            0xe0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3f) as u8,
            0x80 | (cp & 0x3f) as u8,
        ]),
        0x1_0000..=0x10_ffff => out.extend_from_slice(&[
            0xf0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3f) as u8,
            0x80 | ((cp >> 6) & 0x3f) as u8,
            0x80 | (cp & 0x3f) as u8,
        ]),
        _ => return None,
    }
    Some(())
}

/// GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the other
/// 68 bytes are moved to U+0100.. in byte order.
pub(crate) fn byte_to_char_table() -> [u32; 256] {
    let mut map = [0u32; 256];
    let mut n = 0;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        map[b as usize] = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
    }
    map
}

/// The inverse of [`byte_to_char_table`]: the byte a GPT-2 character stands for.
pub(crate) fn char_to_byte(cp: u32) -> Option<u8> {
    match cp {
        0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => Some(cp as u8),
        0x100..=0x143 => {
            let n = cp - 0x100;
            // The 68 non-printable bytes, in order: 0x00-0x20, 0x7f-0xa0, 0xad.
            let b = if n <= 0x20 {
                n
            } else if n <= 0x20 + 34 {
                0x7f + (n - 0x21)
            } else {
                0xad
            };
            Some(b as u8)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_round_trips() {
        let map = byte_to_char_table();
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(map[b as usize]), Some(b), "byte {b:#x}");
        }
        assert_eq!(map[b' ' as usize], 0x120); // 'Ġ'
        assert_eq!(map[b'\n' as usize], 0x10a); // 'Ċ'
        assert_eq!(char_to_byte(0x144), None);
    }

    #[test]
    fn classes_of_known_code_points() {
        assert!(is_letter(class('a' as u32)));
        assert!(is_number(class('7' as u32)));
        assert!(is_number(class(0xb2))); // superscript two
        assert!(is_whitespace(class(0x3000)));
        assert!(is_whitespace(class(0x85)));
        assert!(!is_whitespace(class(0x200b))); // zero width space is Cf, not White_Space
        assert_eq!(category(class(0x200d)), CONTROL); // ZWJ
        assert!(is_mark(class(0x301)));
        assert_eq!(category(class(0x1f600)), SYMBOL);
        assert_eq!(category(class(0xe000)), CONTROL); // private use
        assert_eq!(category(class(0x0378)), UNDEFINED);
        assert_eq!(class(0x11_0000), UNDEFINED);
    }

    #[test]
    fn lenient_decoder_matches_llama() {
        assert_eq!(decode_lenient("é".as_bytes(), 0), (0xe9, 2));
        assert_eq!(decode_lenient(b"\x80", 0), (0xfffd, 1));
        assert_eq!(decode_lenient(b"\xc3", 0), (0xfffd, 1));
        assert_eq!(decode_lenient(b"\xc0\x80", 0), (0, 2)); // overlong, accepted as llama.cpp does
        assert_eq!(decode_lenient(b"\xff", 0), (0xfffd, 1));
    }
}
