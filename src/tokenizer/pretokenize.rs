//! Pre-tokenizers for GPT-2-style BPE: the split of text into words that llama.cpp makes
//! before merging, chosen by `tokenizer.ggml.pre`.
//!
//! llama.cpp runs each pre-tokenizer as a list of regexes, each re-splitting every chunk
//! the previous one produced (matches and the gaps between them both become chunks). Three
//! of its regexes have hand-written matchers in llama.cpp (GPT-2, Llama 3, Qwen 2); the
//! rest run through `std::regex` on a "collapsed" text in which every non-ASCII code point
//! is replaced by one byte standing for its category (`\p{L}` -> 0xD2 and so on, White_Space
//! -> 0x0B), or through `std::wregex` on the code points (non-ASCII White_Space -> 0x0B)
//! when the regex names no category. Each stage below reproduces one of those regexes under
//! exactly those rules, with ECMAScript's ordered, backtracking alternation worked out by
//! hand, in linear time.

use super::unicode::{
    category, class, decode_lenient, is_letter, is_mark, is_number, is_whitespace, push_utf8,
    LETTER, MARK, NONE, NUMBER, PUNCT, SYMBOL,
};

/// The pre-tokenizer regex families ember implements, named after llama.cpp's
/// `LLAMA_VOCAB_PRE_TYPE_*` that introduced them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// No or `default` pre-tokenizer: punctuation runs, GPT-2, digit runs, digit triples.
    Default,
    /// GPT-2's regex (gpt-2, mpt, olmo, jais, phi-2, ...).
    Gpt2,
    /// Llama 3's regex: case-insensitive contractions, digits in groups of up to three.
    Llama3,
    /// Qwen 2's regex: Llama 3's with single digits.
    Qwen2,
    /// Qwen 3.5: Qwen 2's with combining marks kept in letter runs.
    Qwen35,
    /// Every digit alone, then GPT-2's regex (starcoder, smollm, refact, command-r, ...).
    Starcoder,
    /// Falcon: punctuation runs, GPT-2's regex, digit triples.
    Falcon,
    /// DeepSeek LLM's six-regex chain.
    DeepseekLlm,
    /// DeepSeek Coder's five-regex chain.
    DeepseekCoder,
    /// Mistral's Tekken regex (case-aware letter runs, single digits).
    Tekken,
    /// GPT-4o / Llama 4 regex (Tekken's with contractions and digit triples).
    Gpt4o,
    /// Poro / BLOOM / GPT-3 Finnish: runs of anything but spaces and some punctuation.
    Poro,
    /// Viking: Poro's regex, then every digit alone.
    Viking,
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    Gpt2,
    Llama3,
    Qwen2,
    Qwen35,
    Tekken,
    Gpt4o,
    /// `\p{N}` (collapsed)
    EachNumber,
    /// `\p{N}+` (collapsed)
    NumberRun,
    /// `[\p{P}\$\+<=>\^~\|]+`, with a backtick in the class for Falcon (collapsed)
    PunctRun {
        backtick: bool,
    },
    /// `[0-9][0-9][0-9]` (wide)
    ThreeDigits,
    /// `[\r\n]` (wide)
    CrLf,
    /// `\s?[A-Za-zµÀ-Ö...]+` (wide)
    DeepseekLetters,
    /// `\s?[!-/:-~！-／：-～‘-‟　-。]+` (wide)
    DeepseekPunct,
    /// `\s+$` (wide)
    TrailingSpace,
    /// `[一-龥ࠀ-一가-퟿]+` (wide)
    Cjk,
    /// `\s?\p{L}+` (collapsed)
    SpaceLetters,
    /// `\s?\p{P}+` (collapsed)
    SpacePunct,
    /// ` ?[^(\s|.,!?…。，、।۔،)]+` (wide)
    Poro,
}

impl PreTokenizer {
    fn stages(self) -> &'static [Stage] {
        use Stage::*;
        match self {
            PreTokenizer::Default => &[PunctRun { backtick: false }, Gpt2, NumberRun, ThreeDigits],
            PreTokenizer::Gpt2 => &[Gpt2],
            PreTokenizer::Llama3 => &[Llama3],
            PreTokenizer::Qwen2 => &[Qwen2],
            PreTokenizer::Qwen35 => &[Qwen35],
            PreTokenizer::Starcoder => &[EachNumber, Gpt2],
            PreTokenizer::Falcon => &[PunctRun { backtick: true }, Gpt2, ThreeDigits],
            PreTokenizer::DeepseekLlm => &[
                CrLf,
                DeepseekLetters,
                DeepseekPunct,
                TrailingSpace,
                Cjk,
                NumberRun,
            ],
            PreTokenizer::DeepseekCoder => &[CrLf, SpaceLetters, SpacePunct, Cjk, EachNumber],
            PreTokenizer::Tekken => &[Tekken],
            PreTokenizer::Gpt4o => &[Gpt4o],
            PreTokenizer::Poro => &[Poro],
            PreTokenizer::Viking => &[Poro, EachNumber],
        }
    }
}

/// Per-`pre` settings llama.cpp attaches to the pre-tokenizer name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreConfig {
    pub pre: PreTokenizer,
    pub clean_spaces: bool,
    pub ignore_merges: bool,
    pub add_bos: bool,
    pub no_bos: bool,
}

/// Why a `tokenizer.ggml.pre` value cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreError {
    /// llama.cpp knows it, ember does not implement it.
    Unimplemented,
    /// llama.cpp rejects it too.
    Unknown,
}

/// Maps `tokenizer.ggml.pre` as llama.cpp's vocabulary loader does.
pub(crate) fn config_for(name: &str) -> Result<PreConfig, PreError> {
    use PreTokenizer as P;
    let c = |pre, clean_spaces| PreConfig {
        pre,
        clean_spaces,
        ignore_merges: false,
        add_bos: false,
        no_bos: false,
    };
    Ok(match name {
        "" | "default" => c(P::Default, true),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreConfig {
            ignore_merges: true,
            add_bos: true,
            ..c(P::Llama3, true)
        },
        "deepseek-llm" => c(P::DeepseekLlm, false),
        "deepseek-coder" => c(P::DeepseekCoder, false),
        "falcon" => c(P::Falcon, true),
        "mpt" | "olmo" | "jais" | "exaone4" => c(P::Gpt2, true),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            c(P::Starcoder, true)
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => {
            c(P::Gpt2, true)
        }
        "trillion" | "granite-docling" => c(P::Gpt2, false),
        "command-r" | "smollm" => c(P::Starcoder, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
        | "grok-2" => c(P::Qwen2, false),
        "stablelm2" | "megrez" => c(P::Qwen2, true),
        "qwen35" => c(P::Qwen35, false),
        "dbrx" | "smaug-bpe" => c(P::Llama3, true),
        "chatglm-bpe" => PreConfig {
            no_bos: true,
            ..c(P::Llama3, true)
        },
        "glm4" | "glm5" => PreConfig {
            no_bos: true,
            ignore_merges: true,
            ..c(P::Llama3, true)
        },
        "poro-chat" => c(P::Poro, false),
        "bloom" | "gpt3-finnish" => c(P::Poro, true),
        "viking" => c(P::Viking, false),
        "tekken" => PreConfig {
            ignore_merges: true,
            add_bos: true,
            ..c(P::Tekken, false)
        },
        "gpt-4o" | "llama4" | "kanana2" | "talkie" => c(P::Gpt4o, false),
        "minicpm5"
        | "deepseek-v3"
        | "spark2_5"
        | "youtu"
        | "jais-2"
        | "gemma4"
        | "granite-embed-multi-311m"
        | "sarvam-moe"
        | "whitespace"
        | "exaone-moe"
        | "chameleon"
        | "granite-embed-multi-97m"
        | "tiny_aya"
        | "cohere2moe"
        | "superbpe"
        | "bailingmoe"
        | "bailingmoe2"
        | "llada-moe"
        | "seed-coder"
        | "hunyuan-dense"
        | "hy_v4"
        | "joyai-llm"
        | "kimi-k2"
        | "ufakzeka"
        | "afmoe"
        | "laguna"
        | "minimax-m2" => return Err(PreError::Unimplemented),
        _ => return Err(PreError::Unknown),
    })
}

/// Out-of-chunk code point, as llama.cpp's `OUT_OF_RANGE`.
const OOR: u32 = u32::MAX;

/// Reusable buffers for splitting one text fragment.
#[derive(Default)]
pub(crate) struct Splitter {
    cpts: Vec<u32>,
    codes: Vec<u8>,
    /// Byte offset of each code point in `source`, plus the end.
    offs: Vec<u32>,
    /// The fragment re-encoded from its code points, when it was not valid UTF-8.
    reencoded: Vec<u8>,
    chunks: Vec<u32>,
    next: Vec<u32>,
}

/// The words of a split: byte ranges into either the original text or a re-encoding.
pub(crate) struct Words<'a> {
    pub source: &'a [u8],
    /// `source` is a re-encoding, not the text that was split.
    pub reencoded: bool,
    offs: &'a [u32],
    chunks: &'a [u32],
}

impl<'a> Words<'a> {
    /// The words as byte ranges of `source`.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut at = 0usize;
        self.chunks.iter().map(move |&n| {
            let (s, e) = (at, at + n as usize);
            at = e;
            (self.offs[s] as usize, self.offs[e] as usize)
        })
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let mut at = 0usize;
        self.chunks.iter().map(move |&n| {
            let (s, e) = (at, at + n as usize);
            at = e;
            &self.source[self.offs[s] as usize..self.offs[e] as usize]
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.chunks.len()
    }
}

impl Splitter {
    /// Splits `text` into words. `None` only when a (malformed) fragment decodes to a
    /// value above U+10FFFF, which llama.cpp cannot encode either.
    pub(crate) fn split<'a>(&'a mut self, pre: PreTokenizer, text: &'a [u8]) -> Option<Words<'a>> {
        self.cpts.clear();
        self.codes.clear();
        self.offs.clear();
        let valid = std::str::from_utf8(text).is_ok();
        if valid {
            // Valid UTF-8 decodes identically under both decoders; std's is faster.
            let s = std::str::from_utf8(text).unwrap_or_default();
            for (i, ch) in s.char_indices() {
                self.cpts.push(ch as u32);
                self.offs.push(i as u32);
            }
            self.offs.push(text.len() as u32);
        } else {
            self.reencoded.clear();
            let mut i = 0;
            while i < text.len() {
                let (cp, n) = decode_lenient(text, i);
                self.offs.push(self.reencoded.len() as u32);
                push_utf8(&mut self.reencoded, cp)?;
                self.cpts.push(cp);
                i += n;
            }
            self.offs.push(self.reencoded.len() as u32);
        }
        self.codes.extend(self.cpts.iter().map(|&c| class(c)));

        self.chunks.clear();
        if !self.cpts.is_empty() {
            self.chunks.push(self.cpts.len() as u32);
        }
        let cx = Ctx {
            cpts: &self.cpts,
            codes: &self.codes,
        };
        for &stage in pre.stages() {
            self.next.clear();
            let mut s = 0usize;
            for &n in &self.chunks {
                let e = s + n as usize;
                run_stage(stage, &cx, s, e, &mut self.next);
                s = e;
            }
            std::mem::swap(&mut self.chunks, &mut self.next);
        }
        Some(Words {
            source: if valid { text } else { &self.reencoded },
            reencoded: !valid,
            offs: &self.offs,
            chunks: &self.chunks,
        })
    }
}

struct Ctx<'a> {
    cpts: &'a [u32],
    codes: &'a [u8],
}

impl Ctx<'_> {
    /// The byte standing for code point `i` in llama.cpp's collapsed text.
    #[inline]
    fn collapsed(&self, i: usize) -> u8 {
        let cp = self.cpts[i];
        if cp < 128 {
            return cp as u8;
        }
        let code = self.codes[i];
        if is_whitespace(code) {
            return 0x0b;
        }
        match category(code) {
            NUMBER => 0xd1,
            LETTER => 0xd2,
            PUNCT => 0xd3,
            MARK => 0xd4,
            SYMBOL => 0xd5,
            _ => 0xd0,
        }
    }

    /// The code point as llama.cpp's `std::wregex` fallback sees it.
    #[inline]
    fn wide(&self, i: usize) -> u32 {
        let cp = self.cpts[i];
        if cp > 0x7f && is_whitespace(self.codes[i]) {
            0x0b
        } else {
            cp
        }
    }
}

/// `\s` of `std::regex` in the C locale, on collapsed bytes or wide characters.
#[inline]
fn re_space(c: u32) -> bool {
    (9..=13).contains(&c) || c == 32
}

#[inline]
fn c_letter(x: u8) -> bool {
    x == 0xd2 || x.is_ascii_alphabetic()
}

#[inline]
fn c_number(x: u8) -> bool {
    x == 0xd1 || x.is_ascii_digit()
}

/// `\p{P}` in collapsed form: 0xD3 and ASCII `!-#%-*,-/:-;?-@[-]_{}`.
#[inline]
fn c_punct(x: u8) -> bool {
    x == 0xd3
        || matches!(x, b'!'..=b'#' | b'%'..=b'*' | b','..=b'/' | b':' | b';' | b'?' | b'@' | b'['..=b']' | b'_' | b'{' | b'}')
}

fn run_stage(stage: Stage, cx: &Ctx, s: usize, e: usize, out: &mut Vec<u32>) {
    match stage {
        Stage::Gpt2 => gpt2(cx, s, e, out),
        Stage::Llama3 => llama3(cx, s, e, out, Digits::UpTo3, false),
        Stage::Qwen2 => llama3(cx, s, e, out, Digits::One, false),
        Stage::Qwen35 => llama3(cx, s, e, out, Digits::One, true),
        Stage::Tekken => split_matches(s, e, out, |p| tekken(cx, p, e, false)),
        Stage::Gpt4o => split_matches(s, e, out, |p| tekken(cx, p, e, true)),
        Stage::EachNumber => {
            split_matches(s, e, out, |p| c_number(cx.collapsed(p)).then_some(p + 1))
        }
        Stage::NumberRun => split_matches(s, e, out, |p| run(p, e, |i| c_number(cx.collapsed(i)))),
        Stage::PunctRun { backtick } => split_matches(s, e, out, |p| {
            run(p, e, |i| {
                let x = cx.collapsed(i);
                c_punct(x)
                    || matches!(x, b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'~' | b'|')
                    || (backtick && x == b'`')
            })
        }),
        Stage::ThreeDigits => split_matches(s, e, out, |p| {
            (p + 3 <= e && (p..p + 3).all(|i| (b'0' as u32..=b'9' as u32).contains(&cx.wide(i))))
                .then_some(p + 3)
        }),
        Stage::CrLf => split_matches(s, e, out, |p| {
            matches!(cx.wide(p), 0x0d | 0x0a).then_some(p + 1)
        }),
        Stage::DeepseekLetters => split_matches(s, e, out, |p| {
            optional_space_then_run(
                p,
                e,
                |i| re_space(cx.wide(i)),
                |i| deepseek_letter(cx.wide(i)),
            )
        }),
        Stage::DeepseekPunct => split_matches(s, e, out, |p| {
            optional_space_then_run(
                p,
                e,
                |i| re_space(cx.wide(i)),
                |i| deepseek_punct(cx.wide(i)),
            )
        }),
        Stage::TrailingSpace => {
            let mut t = e;
            while t > s && re_space(cx.wide(t - 1)) {
                t -= 1;
            }
            if t > s {
                out.push((t - s) as u32);
            }
            if t < e {
                out.push((e - t) as u32);
            }
        }
        Stage::Cjk => split_matches(s, e, out, |p| {
            run(
                p,
                e,
                |i| matches!(cx.wide(i), 0x0800..=0x9fa5 | 0xac00..=0xd7ff),
            )
        }),
        Stage::SpaceLetters => split_matches(s, e, out, |p| {
            optional_space_then_run(
                p,
                e,
                |i| re_space(cx.collapsed(i) as u32),
                |i| c_letter(cx.collapsed(i)),
            )
        }),
        Stage::SpacePunct => split_matches(s, e, out, |p| {
            optional_space_then_run(
                p,
                e,
                |i| re_space(cx.collapsed(i) as u32),
                |i| c_punct(cx.collapsed(i)),
            )
        }),
        Stage::Poro => split_matches(s, e, out, |p| {
            optional_space_then_run(p, e, |i| cx.wide(i) == 0x20, |i| poro_char(cx.wide(i)))
        }),
    }
}

/// Emulates `std::regex_iterator` over `[s, e)`: matches and the gaps between them become
/// chunks. `at(p)` is the end of the match starting at `p`, if any; none is empty.
#[inline]
fn split_matches(
    s: usize,
    e: usize,
    out: &mut Vec<u32>,
    mut at: impl FnMut(usize) -> Option<usize>,
) {
    let mut gap = s;
    let mut p = s;
    while p < e {
        match at(p) {
            Some(end) => {
                if p > gap {
                    out.push((p - gap) as u32);
                }
                out.push((end - p) as u32);
                p = end;
                gap = p;
            }
            None => p += 1,
        }
    }
    if gap < e {
        out.push((e - gap) as u32);
    }
}

/// `X+` at `p`: the end of the run, or `None` if `p` is not in `X`.
#[inline]
fn run(p: usize, e: usize, x: impl Fn(usize) -> bool) -> Option<usize> {
    let mut i = p;
    while i < e && x(i) {
        i += 1;
    }
    (i > p).then_some(i)
}

/// `S?X+` at `p`, backtracking as ECMAScript does: the optional `S` is taken only if `X+`
/// can follow it.
#[inline]
fn optional_space_then_run(
    p: usize,
    e: usize,
    sp: impl Fn(usize) -> bool,
    x: impl Fn(usize) -> bool,
) -> Option<usize> {
    if sp(p) && p + 1 < e && x(p + 1) {
        return run(p + 1, e, x);
    }
    run(p, e, x)
}

/// The letter class of DeepSeek LLM's second regex, as code point ranges.
fn deepseek_letter(c: u32) -> bool {
    #[rustfmt::skip]
    const RANGES: &[(u32, u32)] = &[
        (0x41, 0x5a), (0x61, 0x7a), (0xb5, 0xb5), (0xc0, 0xd6), (0xd8, 0xf6), (0xf8, 0x1ba),
        (0x1bc, 0x1bf), (0x1c4, 0x293), (0x295, 0x2af), (0x370, 0x373), (0x376, 0x376),
        (0x377, 0x377), (0x37b, 0x37d), (0x37f, 0x37f), (0x386, 0x386), (0x388, 0x38a),
        (0x38c, 0x38c), (0x38e, 0x3a1), (0x3a3, 0x3f5), (0x3f7, 0x481), (0x48a, 0x52f),
        (0x531, 0x556), (0x10a0, 0x10c5), (0x13a0, 0x13f5), (0x13f8, 0x13fd), (0x1c90, 0x1cba),
        (0x1cbd, 0x1cbf), (0x1d00, 0x1d2b), (0x1d6b, 0x1d77), (0x1d79, 0x1d9a), (0x1e00, 0x1f15),
        (0x1f18, 0x1f1d), (0x1f20, 0x1f45), (0x1f48, 0x1f4d), (0x1f50, 0x1f57), (0x1f59, 0x1f59),
        (0x1f5b, 0x1f5b), (0x1f5d, 0x1f5d), (0x1f5f, 0x1f7d), (0x1f80, 0x1fb4), (0x1fb6, 0x1fbc),
        (0x1fbe, 0x1fbe), (0x1fc2, 0x1fc4), (0x1fc6, 0x1fcc), (0x1fd0, 0x1fd3), (0x1fd6, 0x1fdb),
        (0x1fe0, 0x1fec), (0x1ff2, 0x1ff4), (0x1ff6, 0x1ffc), (0x2102, 0x2102), (0x2107, 0x2107),
        (0x210a, 0x2113), (0x2115, 0x2115), (0x2119, 0x211d), (0x2124, 0x2124), (0x2126, 0x2126),
        (0x2128, 0x2128), (0x212a, 0x212d), (0x212f, 0x2134), (0x2139, 0x2139), (0x213c, 0x213f),
        (0x2145, 0x2149), (0x214e, 0x214e), (0x2183, 0x2183), (0x2184, 0x2184), (0x2c00, 0x2c7b),
        (0x2c7e, 0x2ce4), (0x2ceb, 0x2cee), (0x2cf2, 0x2cf2), (0x2cf3, 0x2cf3), (0xa640, 0xa66d),
        (0xa680, 0xa69b), (0xa722, 0xa76f), (0xa771, 0xa787), (0xa78b, 0xa78e), (0xab70, 0xabbf),
        (0xfb00, 0xfb06), (0xfb13, 0xfb17), (0xff21, 0xff3a), (0xff41, 0xff5a),
        (0x10400, 0x1044f), (0x104b0, 0x104d3), (0x104d8, 0x104fb), (0x10c80, 0x10cb2),
        (0x10cc0, 0x10cf2), (0x118a0, 0x118df), (0x1e900, 0x1e943),
    ];
    in_ranges(RANGES, c)
}

/// The class of DeepSeek LLM's third regex: `[!-/:-~！-／：-～‘-‟　-。]`.
fn deepseek_punct(c: u32) -> bool {
    matches!(c, 0x21..=0x2f | 0x3a..=0x7e | 0xff01..=0xff0f | 0xff1a..=0xff5e | 0x2018..=0x201f | 0x3000..=0x3002)
}

/// Not in Poro's excluded class `[(\s|.,!?…。，、।۔،)]` (wide `\s` is ASCII only).
fn poro_char(c: u32) -> bool {
    !(re_space(c)
        || matches!(
            c,
            0x28 | 0x29
                | 0x7c
                | 0x2e
                | 0x2c
                | 0x21
                | 0x3f
                | 0x2026
                | 0x3002
                | 0xff0c
                | 0x3001
                | 0x0964
                | 0x06d4
                | 0x060c
        ))
}

fn in_ranges(ranges: &[(u32, u32)], c: u32) -> bool {
    match ranges.binary_search_by(|&(lo, _)| lo.cmp(&c)) {
        Ok(_) => true,
        Err(0) => false,
        Err(i) => c <= ranges[i - 1].1,
    }
}

/// Tekken's (and, with `gpt4o`, GPT-4o's) regex at `p`, on collapsed text:
/// `[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+` `|` the same with `+` and
/// `*` swapped (GPT-4o: each followed by an optional contraction), `|\p{N}` (GPT-4o:
/// `\p{N}{1,3}`) `| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
/// In collapsed text a letter that is not a-z is A-Z or 0xD2, one that is not A-Z is a-z
/// or 0xD2; the backtracking of the two letter alternatives resolves as commented below.
fn tekken(cx: &Ctx, p: usize, e: usize, gpt4o: bool) -> Option<usize> {
    let c = |i: usize| cx.collapsed(i);
    let upper = |x: u8| x == 0xd2 || x.is_ascii_uppercase();
    let lower = |x: u8| x == 0xd2 || x.is_ascii_lowercase();
    let x = c(p);
    let lead = !(x == b'\r' || x == b'\n' || c_letter(x) || c_number(x));
    let q = p + lead as usize;
    if q < e {
        // Greedy run of "not a-z" letters.
        let mut r = q;
        let mut last_d2 = None;
        while r < e && upper(c(r)) {
            if c(r) == 0xd2 {
                last_d2 = Some(r);
            }
            r += 1;
        }
        let end = if r < e && c(r).is_ascii_lowercase() {
            // First alternative: the "not A-Z" run follows the greedy run.
            let mut t = r;
            while t < e && lower(c(t)) {
                t += 1;
            }
            Some(t)
        } else if let Some(k) = last_d2 {
            // First alternative after backtracking: the last 0xD2 starts the second run.
            Some(k + 1)
        } else if r > q {
            // Second alternative: the "not a-z" run alone (nothing "not A-Z" follows it).
            Some(r)
        } else {
            None
        };
        if let Some(end) = end {
            return Some(if gpt4o { contraction(cx, end, e) } else { end });
        }
    }
    if c_number(x) {
        if !gpt4o {
            return Some(p + 1);
        }
        let mut t = p + 1;
        while t < e && t < p + 3 && c_number(c(t)) {
            t += 1;
        }
        return Some(t);
    }
    let not_word = |y: u8| !(re_space(y as u32) || c_letter(y) || c_number(y));
    let q = p + (x == b' ' && p + 1 < e && not_word(c(p + 1))) as usize;
    if not_word(c(q)) {
        let mut t = q + 1;
        while t < e && not_word(c(t)) {
            t += 1;
        }
        while t < e && matches!(c(t), b'\r' | b'\n' | b'/') {
            t += 1;
        }
        return Some(t);
    }
    whitespace_alternatives(
        p,
        e,
        |i| re_space(c(i) as u32),
        |i| matches!(c(i), b'\r' | b'\n'),
    )
}

/// `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?` at `p`.
fn contraction(cx: &Ctx, p: usize, e: usize) -> usize {
    if p + 1 < e && cx.cpts[p] == '\'' as u32 {
        let l = |i: usize| if i < e { ascii_lower(cx.cpts[i]) } else { OOR };
        let a = l(p + 1);
        if [b's', b't', b'm', b'd'].iter().any(|&k| a == k as u32) {
            return p + 2;
        }
        let b = l(p + 2);
        if (a == 'r' as u32 || a == 'v' as u32) && b == 'e' as u32
            || a == 'l' as u32 && b == 'l' as u32
        {
            return p + 3;
        }
    }
    p
}

/// `\s*[\r\n]+|\s+(?!\S)|\s+` at `p`.
#[inline]
fn whitespace_alternatives(
    p: usize,
    e: usize,
    space: impl Fn(usize) -> bool,
    crlf: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut r = p;
    let mut last_crlf = None;
    while r < e && space(r) {
        if crlf(r) {
            last_crlf = Some(r);
        }
        r += 1;
    }
    if let Some(k) = last_crlf {
        return Some(k + 1);
    }
    if r == p {
        return None;
    }
    if r == e || r - p == 1 {
        Some(r)
    } else {
        Some(r - 1)
    }
}

/// llama.cpp's `unicode_tolower` restricted to what the contraction tests can observe:
/// no code point outside A-Z lower-cases to one of the ASCII letters they compare with.
#[inline]
fn ascii_lower(c: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&c) {
        c + 32
    } else {
        c
    }
}

/// llama.cpp's hand-written matcher for GPT-2's regex
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn gpt2(cx: &Ctx, s: usize, e: usize, out: &mut Vec<u32>) {
    let cpt = |p: usize| if p < e { cx.cpts[p] } else { OOR };
    let fl = |p: usize| if p < e { cx.codes[p] } else { NONE };
    let other = |f: u8| !(is_whitespace(f) || is_letter(f) || is_number(f)) && f != NONE;
    let mut pos = s;
    let mut emit = |from: usize, to: usize| {
        if to > from {
            out.push((to - from) as u32);
        }
    };
    while pos < e {
        let start = pos;
        let c = cpt(pos);
        let f = fl(pos);
        if c == '\'' as u32 && pos + 1 < e {
            let n = cpt(pos + 1);
            if [b's', b't', b'm', b'd'].iter().any(|&k| n == k as u32) {
                pos += 2;
                emit(start, pos);
                continue;
            }
            if pos + 2 < e {
                let nn = cpt(pos + 2);
                if (n == 'r' as u32 || n == 'v' as u32) && nn == 'e' as u32
                    || n == 'l' as u32 && nn == 'l' as u32
                {
                    pos += 3;
                    emit(start, pos);
                    continue;
                }
            }
        }
        let space = c == ' ' as u32;
        let f2 = if space { fl(pos + 1) } else { f };
        if is_letter(f2) || is_number(f2) || other(f2) {
            let keep: fn(u8) -> bool = if is_letter(f2) {
                is_letter
            } else if is_number(f2) {
                is_number
            } else {
                |f| !(is_whitespace(f) || is_letter(f) || is_number(f)) && f != NONE
            };
            pos += space as usize;
            while keep(fl(pos)) {
                pos += 1;
            }
            emit(start, pos);
            continue;
        }
        let mut n = 0;
        while is_whitespace(fl(pos + n)) {
            n += 1;
        }
        if n > 1 && cpt(pos + n) != OOR {
            pos += n - 1;
        } else if n > 0 {
            pos += n;
        } else {
            pos += 1;
        }
        emit(start, pos);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Digits {
    One,
    UpTo3,
}

/// llama.cpp's hand-written matchers for the Llama 3 regex
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// and Qwen 2's (`\p{N}` instead of `\p{N}{1,3}`); with `marks`, Qwen 3.5's, whose letter
/// runs are `[\p{L}\p{M}]+` and whose punctuation excludes `\p{M}`.
fn llama3(cx: &Ctx, s: usize, e: usize, out: &mut Vec<u32>, digits: Digits, marks: bool) {
    let cpt = |p: usize| if p < e { cx.cpts[p] } else { OOR };
    let fl = |p: usize| if p < e { cx.codes[p] } else { NONE };
    let wordish = |f: u8| is_letter(f) || (marks && is_mark(f));
    let mut pos = s;
    let mut prev = s;
    let mut emit = |to: usize, prev: &mut usize| {
        if to > *prev {
            out.push((to - *prev) as u32);
        }
        *prev = to;
    };
    while pos < e {
        let c = cpt(pos);
        let f = fl(pos);
        if c == '\'' as u32 && pos + 1 < e {
            let n = ascii_lower(cpt(pos + 1));
            if [b's', b't', b'm', b'd'].iter().any(|&k| n == k as u32) {
                pos += 2;
                emit(pos, &mut prev);
                continue;
            }
            if pos + 2 < e {
                let nn = ascii_lower(cpt(pos + 2));
                if (n == 'r' as u32 || n == 'v' as u32) && nn == 'e' as u32
                    || n == 'l' as u32 && nn == 'l' as u32
                {
                    pos += 3;
                    emit(pos, &mut prev);
                    continue;
                }
            }
        }
        if !(c == '\r' as u32 || c == '\n' as u32 || is_number(f))
            && (wordish(f) || wordish(fl(pos + 1)))
        {
            pos += 1;
            while wordish(fl(pos)) {
                pos += 1;
            }
            emit(pos, &mut prev);
            continue;
        }
        if is_number(f) {
            match digits {
                Digits::One => pos += 1,
                Digits::UpTo3 => {
                    let mut ini = pos;
                    while is_number(fl(pos)) {
                        pos += 1;
                        if pos - ini >= 3 {
                            emit(pos, &mut prev);
                            ini = pos;
                        }
                    }
                }
            }
            emit(pos, &mut prev);
            continue;
        }
        let other = |f: u8| !(is_whitespace(f) || wordish(f) || is_letter(f) || is_number(f));
        let f2 = if c == ' ' as u32 { fl(pos + 1) } else { f };
        if other(f2) && f != NONE {
            pos += (c == ' ' as u32) as usize;
            let mut f2 = f2;
            while other(f2) && f2 != NONE {
                pos += 1;
                f2 = fl(pos);
            }
            while matches!(cpt(pos), 0x0d | 0x0a) {
                pos += 1;
            }
            emit(pos, &mut prev);
            continue;
        }
        let mut n = 0;
        let mut last_crlf = 0;
        while is_whitespace(fl(pos + n)) {
            if matches!(cpt(pos + n), 0x0d | 0x0a) {
                last_crlf = pos + n + 1;
            }
            n += 1;
        }
        if last_crlf > 0 {
            pos = last_crlf;
        } else if n > 1 && cpt(pos + n) != OOR {
            pos += n - 1;
        } else if n > 0 {
            pos += n;
        } else {
            pos += 1;
        }
        emit(pos, &mut prev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    // Compiled in rather than read at run time, so the tests need no file access (Miri
    // runs them with its isolation on).
    const PRETOK: &str = include_str!("../../tests/fixtures/tokenizer/pretok.json");
    const CORPUS: &str = include_str!("../../tests/fixtures/tokenizer/corpus.json");

    fn fixture(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    fn family(name: &str) -> PreTokenizer {
        match name {
            "default" => PreTokenizer::Default,
            "gpt2" => PreTokenizer::Gpt2,
            "llama3" => PreTokenizer::Llama3,
            "qwen2" => PreTokenizer::Qwen2,
            "qwen35" => PreTokenizer::Qwen35,
            "starcoder" => PreTokenizer::Starcoder,
            "falcon" => PreTokenizer::Falcon,
            "deepseek-llm" => PreTokenizer::DeepseekLlm,
            "deepseek-coder" => PreTokenizer::DeepseekCoder,
            "tekken" => PreTokenizer::Tekken,
            "gpt4o" => PreTokenizer::Gpt4o,
            "poro" => PreTokenizer::Poro,
            "viking" => PreTokenizer::Viking,
            other => panic!("fixture has unknown family {other}"),
        }
    }

    fn split(pre: PreTokenizer, s: &str) -> Vec<String> {
        let mut sp = Splitter::default();
        let w = sp.split(pre, s.as_bytes()).unwrap();
        w.iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    /// Every code point's class equals llama.cpp's (ranges dumped from libllama).
    #[test]
    fn classes_match_llama_cpp() {
        let fx = fixture(PRETOK);
        let ranges = fx["flags"].as_array().unwrap();
        // Every code point natively; under Miri the first and last of each range and a
        // sample in between.
        let step = (0x11_0000 / crate::test_rounds(0x11_0000)).max(1);
        for (i, r) in ranges.iter().enumerate() {
            let start = r[0].as_u64().unwrap() as u32;
            let code = r[1].as_u64().unwrap() as u8;
            let end = ranges
                .get(i + 1)
                .map_or(0x11_0000, |n| n[0].as_u64().unwrap() as u32);
            let sample = (start..end).step_by(step).chain([end - 1]);
            for cp in sample {
                assert_eq!(class(cp), code, "code point {cp:#x}");
            }
        }
    }

    /// Every corpus string splits exactly as llama.cpp's `unicode_regex_split` splits it,
    /// for every pre-tokenizer family.
    #[test]
    fn splits_match_llama_cpp() {
        let fx = fixture(PRETOK);
        let corpus = fixture(CORPUS);
        let corpus: Vec<&str> = corpus
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let mut failures = Vec::new();
        let mut checked = 0;
        for (name, lists) in fx["splits"].as_object().unwrap() {
            let pre = family(name);
            let mut sp = Splitter::default();
            let every = corpus.len() / crate::test_rounds(corpus.len());
            for (s, want) in corpus.iter().zip(lists.as_array().unwrap()).step_by(every) {
                let Some(want) = want.as_str() else { continue };
                let want: Vec<u32> = if want.is_empty() {
                    Vec::new()
                } else {
                    want.split(',').map(|x| x.parse().unwrap()).collect()
                };
                let words = sp.split(pre, s.as_bytes()).unwrap();
                let got: Vec<u32> = words.iter().map(|w| w.len() as u32).collect();
                checked += 1;
                if got != want {
                    failures.push(format!("{name} {s:?}:\n  want {want:?}\n  got  {got:?}"));
                }
            }
        }
        let at_least = 13 * crate::test_rounds(300);
        assert!(checked > at_least, "only {checked} splits checked");
        if !failures.is_empty() {
            let n = failures.len();
            failures.truncate(10);
            panic!("{n} splits differ from llama.cpp:\n{}", failures.join("\n"));
        }
    }

    // Documented behaviour of each family, independent of the fixtures.

    #[test]
    fn llama3_groups_digits_by_three_and_folds_contractions() {
        let pre = PreTokenizer::Llama3;
        assert_eq!(split(pre, "1234567"), ["123", "456", "7"]);
        assert_eq!(split(pre, "I'M here"), ["I", "'M", " here"]);
        assert_eq!(split(pre, "a  \n\n b"), ["a", "  \n\n", " b"]);
        assert_eq!(split(pre, "(hello)"), ["(hello", ")"]);
    }

    #[test]
    fn qwen2_splits_single_digits() {
        assert_eq!(
            split(PreTokenizer::Qwen2, "x 2024!"),
            ["x", " ", "2", "0", "2", "4", "!"]
        );
    }

    #[test]
    fn gpt2_keeps_space_with_word_and_case_sensitive_contractions() {
        let pre = PreTokenizer::Gpt2;
        assert_eq!(
            split(pre, "Hello  world's 42"),
            ["Hello", " ", " world", "'s", " 42"]
        );
        assert_eq!(split(pre, "IT'S"), ["IT", "'", "S"]);
        assert_eq!(split(pre, "a\t\tb "), ["a", "\t", "\t", "b", " "]);
    }

    #[test]
    fn starcoder_isolates_every_digit() {
        assert_eq!(
            split(PreTokenizer::Starcoder, "v12 x"),
            ["v", "1", "2", " x"]
        );
    }

    #[test]
    fn falcon_and_default_split_punctuation_and_digit_triples() {
        assert_eq!(
            split(PreTokenizer::Falcon, "a,b 12345"),
            ["a", ",", "b", " ", "123", "45"]
        );
        assert_eq!(split(PreTokenizer::Default, "x`y"), ["x", "`", "y"]);
        assert_eq!(split(PreTokenizer::Default, "1234"), ["123", "4"]);
    }

    #[test]
    fn deepseek_chains() {
        assert_eq!(
            split(PreTokenizer::DeepseekLlm, "Hi 中文\n12"),
            ["Hi", " ", "中文", "\n", "12"]
        );
        // `=` is a symbol, not `\p{P}`: it stays in the gap with its spaces.
        assert_eq!(
            split(PreTokenizer::DeepseekCoder, "x = 10;"),
            ["x", " = ", "1", "0", ";"]
        );
    }

    #[test]
    fn tekken_and_gpt4o_split_case_runs() {
        assert_eq!(
            split(PreTokenizer::Tekken, "HTTPServer isOK"),
            ["HTTPServer", " is", "OK"]
        );
        assert_eq!(
            split(PreTokenizer::Gpt4o, "we'll 12345"),
            ["we'll", " ", "123", "45"]
        );
    }

    #[test]
    fn names_map_like_llama_cpp() {
        assert_eq!(config_for("smollm").unwrap().pre, PreTokenizer::Starcoder);
        assert!(!config_for("smollm").unwrap().clean_spaces);
        assert!(config_for("llama-bpe").unwrap().ignore_merges);
        assert!(config_for("llama-bpe").unwrap().add_bos);
        assert_eq!(config_for("").unwrap().pre, PreTokenizer::Default);
        assert_eq!(config_for("kimi-k2").unwrap_err(), PreError::Unimplemented);
        assert_eq!(config_for("no-such-thing").unwrap_err(), PreError::Unknown);
    }
}
