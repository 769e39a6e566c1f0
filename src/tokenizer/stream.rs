//! Streaming detokenization for generation loops: text is released only as whole UTF-8
//! characters; a token ending inside a character is held (at most three bytes, in a fixed
//! buffer) until the next token completes it. Nothing is allocated per token.

use super::{Token, Tokenizer};
use crate::error::Result;

/// Turns a stream of tokens into text, one whole character at a time.
///
/// Pieces are rendered as [`Tokenizer::token_to_piece`] does (no leading-space strip and
/// no clean-up of spaces, as llama.cpp's streaming examples). Bytes that can never form a
/// character (a stray continuation byte, a byte token such as `<0xFF>`) are released as
/// U+FFFD, one per invalid sequence, as `String::from_utf8_lossy` would.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: [u8; 4],
    n_pending: usize,
    special: bool,
}

const REPLACEMENT: &str = "\u{fffd}";

impl StreamDecoder {
    /// `special`: render control tokens (like `<|im_end|>`) instead of dropping them.
    pub fn new(special: bool) -> StreamDecoder {
        StreamDecoder {
            pending: [0; 4],
            n_pending: 0,
            special,
        }
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending[..self.n_pending]
    }

    /// Adds `t`'s piece and passes every completed run of text to `out` (possibly several
    /// calls, possibly none).
    pub fn push(&mut self, tok: &Tokenizer, t: Token, mut out: impl FnMut(&str)) -> Result<()> {
        let piece = tok.token_to_piece(t, self.special)?;
        self.push_bytes(piece, &mut out);
        Ok(())
    }

    /// Adds raw bytes, as [`push`](Self::push) does with a token's piece.
    pub fn push_bytes(&mut self, mut bytes: &[u8], out: &mut impl FnMut(&str)) {
        // First finish (or give up on) the held character, byte by byte.
        while self.n_pending > 0 && !bytes.is_empty() {
            self.pending[self.n_pending] = bytes[0];
            self.n_pending += 1;
            bytes = &bytes[1..];
            match std::str::from_utf8(&self.pending[..self.n_pending]) {
                Ok(s) => {
                    out(s);
                    self.n_pending = 0;
                }
                Err(e) if e.error_len().is_some() => {
                    // Not a character after all: one replacement for the bad sequence,
                    // then re-scan whatever followed it.
                    let bad_end = e.valid_up_to() + e.error_len().unwrap_or(1);
                    out(REPLACEMENT);
                    let rest_len = self.n_pending - bad_end;
                    let mut rest = [0u8; 4];
                    rest[..rest_len].copy_from_slice(&self.pending[bad_end..self.n_pending]);
                    self.n_pending = 0;
                    self.push_bytes(&rest[..rest_len], out);
                }
                Err(_) => {} // still incomplete
            }
        }
        loop {
            match std::str::from_utf8(bytes) {
                Ok(s) => {
                    if !s.is_empty() {
                        out(s);
                    }
                    return;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    if good > 0 {
                        // `valid_up_to` bytes are valid UTF-8, so this never falls back.
                        out(std::str::from_utf8(&bytes[..good]).unwrap_or_default());
                    }
                    match e.error_len() {
                        Some(n) => {
                            out(REPLACEMENT);
                            bytes = &bytes[good + n..];
                        }
                        None => {
                            let tail = &bytes[good..];
                            self.pending[..tail.len()].copy_from_slice(tail);
                            self.n_pending = tail.len();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: a character left incomplete is released as U+FFFD.
    pub fn flush(&mut self, mut out: impl FnMut(&str)) {
        if self.n_pending > 0 {
            self.n_pending = 0;
            out(REPLACEMENT);
        }
    }

    /// Forgets any held bytes.
    pub fn reset(&mut self) {
        self.n_pending = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> String {
        let mut d = StreamDecoder::new(false);
        let mut s = String::new();
        for c in chunks {
            d.push_bytes(c, &mut |t: &str| s.push_str(t));
        }
        d.flush(|t| s.push_str(t));
        s
    }

    #[test]
    fn holds_split_characters() {
        let e = "é🙂".as_bytes();
        assert_eq!(run(&[&e[..1], &e[1..3], &e[3..4], &e[4..]]), "é🙂");
        let mut d = StreamDecoder::new(false);
        let mut got = Vec::new();
        d.push_bytes(&e[..3], &mut |t: &str| got.push(t.to_string()));
        assert_eq!(got, ["é"]);
        assert_eq!(d.pending(), &e[2..3]);
    }

    #[test]
    fn invalid_bytes_become_replacements() {
        assert_eq!(run(&[b"a\xffb"]), "a\u{fffd}b");
        assert_eq!(run(&[b"\xe2\x82", b"x"]), "\u{fffd}x");
        assert_eq!(run(&[b"\xf0\x9f"]), "\u{fffd}");
        assert_eq!(run(&[b"\xc3", b"\xa9\xc3", b"\xa9"]), "éé");
    }
}
