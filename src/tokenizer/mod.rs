//! Tokenizers identical to llama.cpp's (commit 0c1e570): GPT-2 byte-level BPE with the
//! pre-tokenizer named by `tokenizer.ggml.pre`, and SentencePiece-style BPE (`llama`),
//! with llama.cpp's special-token handling, BOS/EOS rules, end-of-generation set and
//! detokenization. Everything a token renders to is computed once at load, so turning a
//! token into text never allocates.
//!
//! Known divergence: when several tokens match llama.cpp's "looks like EOT/FIM" texts and
//! the file names none, llama.cpp takes whichever its `std::unordered_map` visits first;
//! ember takes the lowest id (this agrees for the test models). `is_eog` is unaffected.

mod bpe;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod unicode;
mod unicode_tables;
mod vocab;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, ValueType};

use bpe::{BpeModel, BpeScratch};
pub use pretokenize::PreTokenizer;
use pretokenize::Splitter;
use special::{Fragment, PartitionInput, PartitionScratch, SpecialIndex};
use spm::{SpmModel, SpmScratch};
pub use stream::StreamDecoder;
use vocab::{BytesMap, PairMap, StrTable};

/// A token id.
pub type Token = u32;

/// Which tokenizer algorithm a model uses (`tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// `gpt2`: byte-level BPE with ranked merges.
    Gpt2Bpe,
    /// `llama`: SentencePiece BPE with scored pieces and byte fallback.
    SentencePiece,
}

/// Token attributes, bit for bit llama.cpp's `llama_token_attr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenAttr(pub u32);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    pub const NORMALIZED: TokenAttr = TokenAttr(1 << 6);
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);
    pub const SINGLE_WORD: TokenAttr = TokenAttr(1 << 9);

    /// All bits of `other` are set.
    pub fn contains(self, other: TokenAttr) -> bool {
        self.0 & other.0 == other.0
    }

    /// Any bit of `other` is set.
    pub fn intersects(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_normal(self) -> bool {
        self.intersects(Self::NORMAL)
    }
    pub fn is_control(self) -> bool {
        self.intersects(Self::CONTROL)
    }
    pub fn is_user_defined(self) -> bool {
        self.intersects(Self::USER_DEFINED)
    }
    pub fn is_byte(self) -> bool {
        self.intersects(Self::BYTE)
    }
    pub fn is_unknown(self) -> bool {
        self.intersects(Self::UNKNOWN)
    }
    pub fn is_unused(self) -> bool {
        self.intersects(Self::UNUSED)
    }
}

impl std::ops::BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, o: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | o.0)
    }
}

/// Per-call encoding options. `None` takes the model's `add_bos_token` / `add_eos_token`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    /// Turn the text of control and unknown tokens (e.g. `<|im_start|>`) into those tokens.
    /// User-defined tokens are matched either way, as in llama.cpp.
    pub parse_special: bool,
}

/// Special token ids (llama.cpp's `special_*_id`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<Token>,
    pub eos: Option<Token>,
    pub eot: Option<Token>,
    pub eom: Option<Token>,
    pub unk: Option<Token>,
    pub sep: Option<Token>,
    pub pad: Option<Token>,
    pub mask: Option<Token>,
    pub fim_pre: Option<Token>,
    pub fim_suf: Option<Token>,
    pub fim_mid: Option<Token>,
    pub fim_pad: Option<Token>,
    pub fim_rep: Option<Token>,
    pub fim_sep: Option<Token>,
}

/// A model's tokenizer: vocabulary, merges or scores, special tokens, and every token's
/// rendering, all owned (the GGUF file can be closed afterwards).
pub struct Tokenizer {
    kind: TokenizerKind,
    pre_name: String,
    n_vocab: u32,
    /// Token texts at ids `0..n_vocab`, then BPE merge strings that are not tokens.
    strings: StrTable,
    scores: Vec<f32>,
    attrs: Vec<TokenAttr>,
    special: SpecialTokens,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    /// Sorted.
    eog: Vec<Token>,
    pieces: Vec<u8>,
    piece_offs: Vec<u32>,
    special_index: SpecialIndex,
    pre: Option<PreTokenizer>,
    bpe: Option<BpeModel>,
    byte_char: [u32; 256],
    /// SentencePiece byte fallback: the token for each byte (`<0xXX>`, else the raw byte).
    byte_token: [Option<u32>; 256],
    /// SentencePiece tokens in which U+2581 follows another character: the only tokens
    /// whose merges can cross a word boundary. `None` when there are too many to track,
    /// which turns off per-word caching.
    crossing: Option<Vec<Token>>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("pre", &self.pre_name)
            .field("n_vocab", &self.n_vocab)
            .field("special", &self.special)
            .finish()
    }
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts llama.cpp always treats as end of generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Selects one id of [`SpecialTokens`], so metadata keys and detection rules can be tables.
type SlotOf = fn(&mut SpecialTokens) -> &mut Option<Token>;

const SPACE_ESCAPE: &[u8] = "\u{2581}".as_bytes();

fn meta_err(key: &str, problem: impl std::fmt::Display) -> Error {
    Error::Metadata {
        key: key.to_string(),
        problem: problem.to_string(),
    }
}

/// A per-token array longer than the vocabulary loads, as in llama.cpp (which reads the
/// first n_vocab entries), but a file that disagrees with itself is worth a warning.
fn longer_than_vocab(key: &str, len: usize, n: usize) -> String {
    format!("'{key}' has {len} entries for {n} tokens; the extra ones are ignored")
}

/// The byte of a byte token, whose text must be exactly `<0xHH>` (two hex digits).
/// llama.cpp reads it with `strtol(text.substr(3, 2), 16)`, which turns `<0x-1>` into
/// 0xFF and `<0xZZ>` into 0 (one of its advisories' inputs); every real vocabulary spells
/// its 256 byte tokens exactly, so anything else is refused by name instead of guessed.
fn byte_token_value(text: &[u8]) -> Option<u8> {
    match text {
        [b'<', b'0', b'x', hi, lo, b'>'] => {
            let hex = |c: u8| (c as char).to_digit(16);
            Some((hex(*hi)? * 16 + hex(*lo)?) as u8)
        }
        _ => None,
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.*` metadata, as llama.cpp's
    /// vocabulary loader does.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let mut warnings = Vec::new();
        let model = f.str("tokenizer.ggml.model")?;
        let kind = match model {
            "gpt2" => TokenizerKind::Gpt2Bpe,
            "llama" => TokenizerKind::SentencePiece,
            other => {
                return Err(Error::Unsupported(format!(
                    "tokenizer model '{other}' (ember supports 'gpt2' and 'llama')"
                )))
            }
        };
        let pre_name = f.str_opt("tokenizer.ggml.pre")?.unwrap_or("").to_string();

        // Vocabulary.
        let tokens = f.array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let n_vocab = u32::try_from(n)
            .ok()
            .filter(|&n| n < i32::MAX as u32)
            .ok_or_else(|| meta_err("tokenizer.ggml.tokens", "too many tokens"))?;
        // llama.cpp renames empty tokens, then refuses duplicated texts.
        let mut renamed: Vec<(usize, Vec<u8>)> = Vec::new();
        let texts = tokens.strings()?.enumerate().map(|(i, t)| {
            if t.is_empty() {
                renamed.push((i, format!("[EMPTY_{i}]").into_bytes()));
            }
            t
        });
        let owned: Vec<&[u8]> = texts.collect();
        for (i, _) in &renamed {
            warnings.push(format!("empty token at index {i}"));
        }
        // Empty tokens meet their replacements in order.
        let mut next_renamed = renamed.iter();
        let all = owned.iter().map(|&t| {
            if t.is_empty() {
                next_renamed.next().map_or(t, |(_, r)| r.as_slice())
            } else {
                t
            }
        });
        let mut strings = match StrTable::from_strings(all, n) {
            Ok(s) => s,
            Err((u32::MAX, _)) => {
                return Err(meta_err(
                    "tokenizer.ggml.tokens",
                    "vocabulary text exceeds 4 GiB",
                ))
            }
            Err((a, b)) => {
                return Err(meta_err(
                    "tokenizer.ggml.tokens",
                    format!("token {b} duplicates token {a} (llama.cpp refuses such vocabularies)"),
                ))
            }
        };
        if strings.len() != n {
            return Err(meta_err(
                "tokenizer.ggml.tokens",
                "array is shorter than its count",
            ));
        }

        let scores = match f.array_opt("tokenizer.ggml.scores")? {
            // SentencePiece merges by score; BPE reads none, and a table of zeros would be
            // memory reported as held (Model::memory) but never written.
            None if kind == TokenizerKind::SentencePiece => vec![0.0; n],
            None => Vec::new(),
            Some(a) => {
                let v: Vec<f32> = match a.elem_type() {
                    ValueType::F32 => a.f32s()?,
                    ValueType::I32 => a.i32s()?.into_iter().map(|x| x as f32).collect(),
                    t => {
                        return Err(meta_err(
                            "tokenizer.ggml.scores",
                            format!("expected f32 or i32 array, found {}", t.name()),
                        ))
                    }
                };
                if v.len() < n {
                    return Err(meta_err(
                        "tokenizer.ggml.scores",
                        format!("{} scores for {n} tokens", v.len()),
                    ));
                }
                if v.len() > n {
                    warnings.push(longer_than_vocab("tokenizer.ggml.scores", v.len(), n));
                }
                v
            }
        };
        let mut attrs = match f.array_opt("tokenizer.ggml.token_type")? {
            None => vec![TokenAttr::NORMAL; n],
            Some(a) => {
                if a.elem_type() != ValueType::I32 {
                    return Err(meta_err(
                        "tokenizer.ggml.token_type",
                        format!("expected i32 array, found {}", a.elem_type().name()),
                    ));
                }
                let v = a.i32s()?;
                if v.len() < n {
                    return Err(meta_err(
                        "tokenizer.ggml.token_type",
                        format!("{} types for {n} tokens", v.len()),
                    ));
                }
                if v.len() > n {
                    warnings.push(longer_than_vocab("tokenizer.ggml.token_type", v.len(), n));
                }
                v[..n]
                    .iter()
                    .map(|&t| match t {
                        1 => TokenAttr::NORMAL,
                        2 => TokenAttr::UNKNOWN,
                        3 => TokenAttr::CONTROL,
                        4 => TokenAttr::USER_DEFINED,
                        5 => TokenAttr::UNUSED,
                        6 => TokenAttr::BYTE,
                        _ => TokenAttr::UNDEFINED,
                    })
                    .collect()
            }
        };

        // Type-specific defaults, then the pre-tokenizer's.
        let mut sp = SpecialTokens::default();
        let (mut add_bos, mut add_eos, mut add_space_prefix, clean_spaces);
        let mut pre = None;
        let mut ignore_merges = false;
        match kind {
            TokenizerKind::SentencePiece => {
                sp.bos = Some(1);
                sp.eos = Some(2);
                sp.unk = Some(0);
                add_bos = true;
                add_eos = false;
                add_space_prefix = true;
                clean_spaces = false;
            }
            TokenizerKind::Gpt2Bpe => {
                sp.bos = Some(11);
                sp.eos = Some(11);
                let cfg = match pretokenize::config_for(&pre_name) {
                    Ok(c) => c,
                    Err(pretokenize::PreError::Unimplemented) => {
                        return Err(Error::Unsupported(format!(
                        "pre-tokenizer '{pre_name}' (known to llama.cpp, not implemented in ember)"
                    )))
                    }
                    Err(pretokenize::PreError::Unknown) => {
                        return Err(Error::Unsupported(format!(
                            "unknown pre-tokenizer type '{pre_name}' (llama.cpp refuses it too)"
                        )))
                    }
                };
                if pre_name.is_empty() {
                    warnings.push(
                        "missing pre-tokenizer type, using 'default'; generation quality will be degraded".into(),
                    );
                }
                if cfg.no_bos {
                    sp.bos = None;
                }
                pre = Some(cfg.pre);
                ignore_merges = cfg.ignore_merges;
                add_bos = cfg.add_bos;
                add_eos = false;
                add_space_prefix = false;
                clean_spaces = cfg.clean_spaces;
            }
        }
        if let Some(v) = f.bool_opt("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        // Special token ids from metadata.
        {
            let slots: [(&str, SlotOf); 17] = [
                ("tokenizer.ggml.bos_token_id", |s| &mut s.bos),
                ("tokenizer.ggml.eos_token_id", |s| &mut s.eos),
                ("tokenizer.ggml.eot_token_id", |s| &mut s.eot),
                ("tokenizer.ggml.eom_token_id", |s| &mut s.eom),
                ("tokenizer.ggml.unknown_token_id", |s| &mut s.unk),
                ("tokenizer.ggml.seperator_token_id", |s| &mut s.sep),
                ("tokenizer.ggml.padding_token_id", |s| &mut s.pad),
                ("tokenizer.ggml.mask_token_id", |s| &mut s.mask),
                ("tokenizer.ggml.fim_pre_token_id", |s| &mut s.fim_pre),
                ("tokenizer.ggml.fim_suf_token_id", |s| &mut s.fim_suf),
                ("tokenizer.ggml.fim_mid_token_id", |s| &mut s.fim_mid),
                ("tokenizer.ggml.fim_pad_token_id", |s| &mut s.fim_pad),
                ("tokenizer.ggml.fim_rep_token_id", |s| &mut s.fim_rep),
                ("tokenizer.ggml.fim_sep_token_id", |s| &mut s.fim_sep),
                ("tokenizer.ggml.prefix_token_id", |s| &mut s.fim_pre),
                ("tokenizer.ggml.suffix_token_id", |s| &mut s.fim_suf),
                ("tokenizer.ggml.middle_token_id", |s| &mut s.fim_mid),
            ];
            for (key, slot) in slots {
                let id = slot(&mut sp);
                if id.is_some_and(|v| v >= n_vocab) {
                    warnings.push(format!(
                        "default special token '{key}' = {} out of vocab range, disabling",
                        id.unwrap_or(0)
                    ));
                    *id = None;
                }
                if let Some(v) = f.u32_opt(key)? {
                    if v >= n_vocab {
                        warnings.push(format!(
                            "bad special token '{key}' = {v}, keeping the default"
                        ));
                    } else {
                        *id = Some(v);
                    }
                }
            }
        }
        if let Some(v) = f.bool_opt("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = f.bool_opt("tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }

        let find = |s: &str| strings.find(s.as_bytes()).filter(|&t| t < n_vocab);
        let force_control = |attrs: &mut Vec<TokenAttr>, t: Token| {
            let a = &mut attrs[t as usize];
            if !a.is_control() {
                *a = *a | TokenAttr::CONTROL;
            }
        };
        // "Looks like" detection for ids the file does not give.
        {
            let detect: [(&[&str], SlotOf); 8] = [
                (EOT_TEXTS, |s| &mut s.eot),
                (EOM_TEXTS, |s| &mut s.eom),
                (FIM_PRE_TEXTS, |s| &mut s.fim_pre),
                (FIM_SUF_TEXTS, |s| &mut s.fim_suf),
                (FIM_MID_TEXTS, |s| &mut s.fim_mid),
                (FIM_PAD_TEXTS, |s| &mut s.fim_pad),
                (FIM_REP_TEXTS, |s| &mut s.fim_rep),
                (FIM_SEP_TEXTS, |s| &mut s.fim_sep),
            ];
            for (texts, slot) in detect {
                let id = slot(&mut sp);
                if id.is_none() {
                    if let Some(t) = texts.iter().filter_map(|s| find(s)).min() {
                        *id = Some(t);
                        force_control(&mut attrs, t);
                    }
                }
            }
        }
        // Control tokens named "unused" are unused.
        let unused = memchr::memmem::Finder::new(b"unused");
        for (t, a) in attrs.iter_mut().enumerate() {
            if a.is_control() && !a.is_unused() && unused.find(strings.get(t as u32)).is_some() {
                *a = *a | TokenAttr::UNUSED;
            }
        }
        // End-of-generation set.
        let mut eog: Vec<Token> = [sp.fim_pad, sp.fim_rep, sp.fim_sep]
            .into_iter()
            .flatten()
            .collect();
        for s in EOG_TEXTS {
            if let Some(t) = find(s) {
                eog.push(t);
                force_control(&mut attrs, t);
            }
        }
        for s in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(t) = find(s) {
                attrs[t as usize] = TokenAttr::USER_DEFINED;
            }
        }
        for (id, what) in [(sp.eos, "eos"), (sp.eot, "eot"), (sp.eom, "eom")] {
            if let Some(t) = id {
                if !eog.contains(&t) {
                    warnings.push(format!("special_{what}_id is not in special_eog_ids - the tokenizer config may be incorrect"));
                    eog.push(t);
                }
            }
        }
        eog.sort_unstable();
        eog.dedup();
        {
            let has = |s: &str| find(s).is_some_and(|t| eog.binary_search(&t).is_ok());
            let call = has("<|call|>") || has("<|calls|>");
            let drop_end = has("<|end|>") && call && (has("<|return|>") || has("<|flush|>"));
            let drop_s = has("</s>") && (has("<|tool_response>") || has("<|plamo:eos|>"));
            if let (true, Some(end)) = (drop_end, find("<|end|>")) {
                eog.retain(|&t| t != end);
                attrs[end as usize] = TokenAttr::USER_DEFINED;
            }
            if let (true, Some(s)) = (drop_s, find("</s>")) {
                eog.retain(|&t| t != s);
                attrs[s as usize] = TokenAttr::NORMAL;
            }
        }

        // Special tokens in llama.cpp's partition order.
        let mut order: Vec<Token> = (0..n_vocab)
            .filter(|&t| {
                attrs[t as usize]
                    .intersects(TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN)
            })
            .collect();
        special::libstdcxx_sort(&mut order, &|a: &Token, b: &Token| {
            strings.get(*a).len() > strings.get(*b).len()
        });

        // Every token's rendering (llama.cpp's token-to-piece cache, special = true).
        let byte_char = unicode::byte_to_char_table();
        let mut pieces = Vec::with_capacity(strings.arena_bytes());
        let mut piece_offs = Vec::with_capacity(n + 1);
        piece_offs.push(0u32);
        for t in 0..n_vocab {
            let a = attrs[t as usize];
            let text = strings.get(t);
            if a.intersects(TokenAttr::UNKNOWN | TokenAttr::CONTROL | TokenAttr::USER_DEFINED) {
                pieces.extend_from_slice(text);
            } else if a.is_normal() {
                match kind {
                    TokenizerKind::SentencePiece => unescape_spaces(text, &mut pieces),
                    TokenizerKind::Gpt2Bpe => {
                        decode_gpt2_text(text, &mut pieces).ok_or_else(|| {
                            meta_err(
                                "tokenizer.ggml.tokens",
                                format!("token {t} encodes a code point above U+10FFFF"),
                            )
                        })?
                    }
                }
            } else if a.is_byte() {
                let b = byte_token_value(text).ok_or_else(|| {
                    meta_err(
                        "tokenizer.ggml.tokens",
                        format!(
                            "byte token {t} has text '{}', not <0xHH>",
                            String::from_utf8_lossy(text)
                        ),
                    )
                })?;
                pieces.push(b);
            }
            let end = u32::try_from(pieces.len()).map_err(|_| {
                meta_err("tokenizer.ggml.tokens", "rendered vocabulary exceeds 4 GiB")
            })?;
            piece_offs.push(end);
        }

        // Per-model attribute fix-ups llama.cpp keys on names.
        {
            let name = f
                .str_opt("general.name")?
                .unwrap_or("")
                .to_ascii_lowercase();
            let arch = f.str_opt("general.architecture")?.unwrap_or("");
            let set =
                |attrs: &mut Vec<TokenAttr>, text: &str, bit: TokenAttr, on: bool| -> Result<()> {
                    let t = find(text).ok_or_else(|| {
                        meta_err(
                            "tokenizer.ggml.tokens",
                            format!("model needs token '{text}', which is missing"),
                        )
                    })?;
                    let a = &mut attrs[t as usize];
                    *a = if on {
                        *a | bit
                    } else {
                        TokenAttr(a.0 & !bit.0)
                    };
                    Ok(())
                };
            if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
                .iter()
                .any(|p| pre_name.contains(p))
                || ["nomic-bert-moe", "jina-bert-v3"]
                    .iter()
                    .any(|p| arch.contains(p))
            {
                if find("<mask>").is_some() {
                    set(&mut attrs, "<mask>", TokenAttr::LSTRIP, true)?;
                } else {
                    warnings.push("mask token is missing in vocab".into());
                }
            } else if name.contains("phi-3") || name.contains("phi3") {
                for &t in &order {
                    attrs[t as usize] = attrs[t as usize] | TokenAttr::RSTRIP;
                }
                set(&mut attrs, "</s>", TokenAttr::RSTRIP, true)?;
                for s in ["<unk>", "<s>", "<|endoftext|>"] {
                    set(&mut attrs, s, TokenAttr::RSTRIP, false)?;
                }
            } else if name.contains("modern-bert") {
                if find("[MASK]").is_some() {
                    set(&mut attrs, "[MASK]", TokenAttr::LSTRIP, true)?;
                } else {
                    warnings.push("mask token missing in vocab".into());
                }
            }
        }

        // BPE merges and byte symbols.
        let mut bpe = None;
        let mut byte_token = [None; 256];
        match kind {
            TokenizerKind::Gpt2Bpe => {
                let merges_arr = f.array("tokenizer.ggml.merges")?;
                let mut merges = PairMap::with_capacity(merges_arr.len());
                let mut buf = Vec::new();
                let too_big = || meta_err("tokenizer.ggml.merges", "merge text exceeds 4 GiB");
                for (rank, m) in merges_arr.strings()?.enumerate() {
                    // llama.cpp splits at the first space after the first byte; a line
                    // without one becomes the pair ("", "").
                    let (a, b) = match m.iter().skip(1).position(|&c| c == b' ') {
                        Some(p) => (&m[..p + 1], &m[p + 2..]),
                        None => (&m[..0], &m[..0]),
                    };
                    let ia = strings.intern(a).ok_or_else(too_big)?;
                    let ib = strings.intern(b).ok_or_else(too_big)?;
                    buf.clear();
                    buf.extend_from_slice(a);
                    buf.extend_from_slice(b);
                    let im = strings.intern(&buf).ok_or_else(too_big)?;
                    let rank = u32::try_from(rank).map_err(|_| too_big())?;
                    merges.insert_first(ia, ib, rank, im);
                }
                let mut byte_sym = [0u32; 256];
                let mut single_byte_token = [None; 256];
                for b in 0..256usize {
                    let mut s = [0u8; 4];
                    let c = char::from_u32(byte_char[b])
                        .unwrap_or('\u{fffd}')
                        .encode_utf8(&mut s);
                    byte_sym[b] = strings.intern(c.as_bytes()).ok_or_else(too_big)?;
                    single_byte_token[b] = strings.find(&[b as u8]).filter(|&t| t < n_vocab);
                }
                bpe = Some(BpeModel {
                    merges,
                    byte_sym,
                    single_byte_token,
                    ignore_merges,
                });
            }
            TokenizerKind::SentencePiece => {
                for (b, slot) in byte_token.iter_mut().enumerate() {
                    let hex = format!("<0x{b:02X}>");
                    *slot =
                        find(&hex).or_else(|| strings.find(&[b as u8]).filter(|&t| t < n_vocab));
                }
            }
        }

        let crossing = match kind {
            TokenizerKind::SentencePiece => {
                let c: Vec<Token> = (0..n_vocab)
                    .filter(|&t| crosses_word_boundary(strings.get(t)))
                    .collect();
                (c.len() <= MAX_CROSSING).then_some(c)
            }
            TokenizerKind::Gpt2Bpe => None,
        };
        let special_index = SpecialIndex::new(order, |t| strings.get(t).to_vec());
        // Built by pushing, these end with up to half their capacity never written: memory
        // the tokenizer would hold (and report in `heap_bytes`) without it ever becoming
        // resident.
        strings.shrink_to_fit();
        pieces.shrink_to_fit();
        piece_offs.shrink_to_fit();
        Ok(Tokenizer {
            kind,
            pre_name,
            n_vocab,
            strings,
            scores,
            attrs,
            special: sp,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            eog,
            pieces,
            piece_offs,
            special_index,
            pre,
            bpe,
            byte_char,
            byte_token,
            crossing,
            warnings,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab as usize
    }

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// `tokenizer.ggml.pre` as given (empty when missing).
    pub fn pre_name(&self) -> &str {
        &self.pre_name
    }

    /// The pre-tokenizer in use (BPE only).
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        self.pre
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn bos(&self) -> Option<Token> {
        self.special.bos
    }

    pub fn eos(&self) -> Option<Token> {
        self.special.eos
    }

    pub fn eot(&self) -> Option<Token> {
        self.special.eot
    }

    /// Whether encoding adds BOS by default (`add_special`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether encoding adds EOS by default (`add_special`).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether `t` ends generation (eos, eot, eom and the tokens llama.cpp recognises).
    pub fn is_eog(&self, t: Token) -> bool {
        self.eog.binary_search(&t).is_ok()
    }

    /// The end-of-generation tokens, sorted.
    pub fn eog_tokens(&self) -> &[Token] {
        &self.eog
    }

    /// Things llama.cpp would log as warnings while loading this vocabulary.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Heap bytes the tokenizer's tables hold.
    pub fn heap_bytes(&self) -> usize {
        use crate::heap::vec_bytes;
        self.pre_name.capacity()
            + self.strings.heap_bytes()
            + vec_bytes(&self.scores)
            + vec_bytes(&self.attrs)
            + vec_bytes(&self.eog)
            + vec_bytes(&self.pieces)
            + vec_bytes(&self.piece_offs)
            + self.special_index.heap_bytes()
            + self.bpe.as_ref().map_or(0, |b| b.merges.heap_bytes())
            + self.crossing.as_ref().map_or(0, vec_bytes)
            + vec_bytes(&self.warnings)
            + self.warnings.iter().map(String::capacity).sum::<usize>()
    }

    fn check(&self, t: Token) -> Result<usize> {
        if t < self.n_vocab {
            Ok(t as usize)
        } else {
            Err(Error::InvalidToken {
                id: t as i64,
                n_vocab: self.n_vocab as usize,
            })
        }
    }

    /// The raw vocabulary entry of `t`.
    pub fn token_text(&self, t: Token) -> Result<&[u8]> {
        self.check(t)?;
        Ok(self.strings.get(t))
    }

    pub fn token_attr(&self, t: Token) -> Result<TokenAttr> {
        Ok(self.attrs[self.check(t)?])
    }

    pub fn token_score(&self, t: Token) -> Result<f32> {
        let i = self.check(t)?;
        Ok(self.scores.get(i).copied().unwrap_or(0.0))
    }

    /// The bytes `t` renders to (llama_token_to_piece with lstrip 0). With `special` false,
    /// control and unknown tokens render as nothing. Never allocates.
    pub fn token_to_piece(&self, t: Token, special: bool) -> Result<&[u8]> {
        let i = self.check(t)?;
        if !special && self.attrs[i].intersects(TokenAttr::UNKNOWN | TokenAttr::CONTROL) {
            return Ok(&[]);
        }
        Ok(&self.pieces[self.piece_offs[i] as usize..self.piece_offs[i + 1] as usize])
    }

    /// The token whose text is exactly `text`, if any.
    pub fn text_to_token(&self, text: &[u8]) -> Option<Token> {
        self.strings.find(text).filter(|&t| t < self.n_vocab)
    }

    /// Encodes `text` like `llama_tokenize`: `add_special` adds BOS/EOS as the model's
    /// metadata says.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        self.encode_with(
            text,
            &EncodeOptions {
                add_bos: Some(add_special && self.add_bos),
                add_eos: Some(add_special && self.add_eos),
                parse_special,
            },
        )
    }

    /// [`encode`](Self::encode) for bytes that must be UTF-8 (`Error::InvalidUtf8` if not).
    pub fn encode_bytes(
        &self,
        bytes: &[u8],
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<Token>> {
        self.encode(utf8(bytes)?, add_special, parse_special)
    }

    /// [`encode_with`](Self::encode_with) for bytes that must be UTF-8.
    pub fn encode_bytes_with(&self, bytes: &[u8], opts: &EncodeOptions) -> Result<Vec<Token>> {
        self.encode_with(utf8(bytes)?, opts)
    }

    /// Encodes with explicit BOS/EOS choices.
    pub fn encode_with(&self, text: &str, opts: &EncodeOptions) -> Result<Vec<Token>> {
        let add_bos = opts.add_bos.unwrap_or(self.add_bos);
        let add_eos = opts.add_eos.unwrap_or(self.add_eos);
        let bytes = text.as_bytes();
        let text_of = |t: Token| self.strings.get(t);
        let attr_of = |t: Token| self.attrs[t as usize];
        let inp = PartitionInput {
            index: &self.special_index,
            text_of: &text_of,
            attr_of: &attr_of,
        };
        let mut frags = Vec::new();
        special::partition(
            &inp,
            bytes,
            opts.parse_special,
            &mut PartitionScratch::default(),
            &mut frags,
        );

        let mut out = Vec::with_capacity(bytes.len() / 3 + 2);
        if add_bos {
            out.push(self.special.bos.ok_or_else(|| {
                Error::InvalidArgument("BOS requested but the model has no BOS token".into())
            })?);
        }
        match self.kind {
            TokenizerKind::SentencePiece => {
                let model = SpmModel {
                    strings: &self.strings,
                    n_vocab: self.n_vocab,
                    scores: &self.scores,
                    byte_token: &self.byte_token,
                };
                let mut sc = SpmScratch::default();
                let mut buf = Vec::new();
                let mut cache = WordCache::default();
                let mut prev_special = true;
                for frag in &frags {
                    match *frag {
                        Fragment::Text { start, end } => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.extend_from_slice(SPACE_ESCAPE);
                            }
                            escape_spaces(&bytes[start..end], &mut buf);
                            self.encode_spm(&model, &buf, &mut sc, &mut cache, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(t) => {
                            out.push(t);
                            prev_special = true;
                        }
                    }
                }
            }
            TokenizerKind::Gpt2Bpe => {
                let (Some(bpe), Some(pre)) = (&self.bpe, self.pre) else {
                    return Err(Error::Unsupported("BPE tokenizer without merges".into()));
                };
                let mut splitter = Splitter::default();
                let mut sc = BpeScratch::default();
                // Words repeat: remember the tokens of short ones for this call.
                let mut cache: BytesMap<'_, (u32, u32)> = BytesMap::default();
                let mut cached: Vec<Token> = Vec::new();
                for frag in &frags {
                    match *frag {
                        Fragment::Text { start, end } => {
                            let words =
                                splitter.split(pre, &bytes[start..end]).ok_or_else(|| {
                                    Error::Unsupported(
                                        "text decodes to a code point above U+10FFFF".into(),
                                    )
                                })?;
                            out.reserve(words.len());
                            for (ws, we) in words.ranges() {
                                let w = &words.source[ws..we];
                                if words.reencoded || w.len() > CACHED_WORD {
                                    bpe.encode_word(
                                        &self.strings,
                                        self.n_vocab,
                                        &self.byte_char,
                                        w,
                                        &mut sc,
                                        &mut out,
                                    );
                                    continue;
                                }
                                let key = &bytes[start + ws..start + we];
                                if let Some(&(a, b)) = cache.get(key) {
                                    out.extend_from_slice(&cached[a as usize..b as usize]);
                                    continue;
                                }
                                let from = out.len();
                                bpe.encode_word(
                                    &self.strings,
                                    self.n_vocab,
                                    &self.byte_char,
                                    w,
                                    &mut sc,
                                    &mut out,
                                );
                                let a = cached.len() as u32;
                                cached.extend_from_slice(&out[from..]);
                                cache.insert(key, (a, cached.len() as u32));
                            }
                        }
                        Fragment::Token(t) => out.push(t),
                    }
                }
            }
        }
        if add_eos {
            out.push(self.special.eos.ok_or_else(|| {
                Error::InvalidArgument("EOS requested but the model has no EOS token".into())
            })?);
        }
        Ok(out)
    }

    /// Turns tokens back into bytes like `llama_detokenize`: `remove_special` drops a
    /// leading BOS and trailing EOS the model adds, `unparse_special` renders control tokens.
    pub fn decode(
        &self,
        tokens: &[Token],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.decode_into(tokens, remove_special, unparse_special, &mut out)?;
        Ok(out)
    }

    /// [`decode`](Self::decode) appending to `out` (cleared first).
    pub fn decode_into(
        &self,
        tokens: &[Token],
        remove_special: bool,
        unparse_special: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        let mut toks = tokens;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && !toks.is_empty() && Some(toks[0]) == self.special.bos {
            remove_space = false;
            toks = &toks[1..];
        }
        if remove_special
            && self.add_eos
            && !toks.is_empty()
            && Some(toks[toks.len() - 1]) == self.special.eos
        {
            toks = &toks[..toks.len() - 1];
        }
        for &t in toks {
            let mut p = self.token_to_piece(t, unparse_special)?;
            if remove_space && p.first() == Some(&b' ') {
                p = &p[1..];
            }
            remove_space = false;
            out.extend_from_slice(p);
        }
        if self.clean_spaces {
            clean_up_spaces(out);
        }
        Ok(())
    }
}

/// Words up to this many bytes are cached per encode call.
const CACHED_WORD: usize = 48;
/// More "crossing" SentencePiece tokens than this and words are not cached.
const MAX_CROSSING: usize = 64;

/// Whether a SentencePiece token has U+2581 right after a character that is not U+2581.
fn crosses_word_boundary(text: &[u8]) -> bool {
    // Vocabulary entries are short: a plain scan beats setting up a SIMD search per token.
    (1..text.len()).any(|i| {
        text[i] == SPACE_ESCAPE[0]
            && text[i..].starts_with(SPACE_ESCAPE)
            && !text[..i].ends_with(SPACE_ESCAPE)
    })
}

/// Per-call cache of SentencePiece segments: owned keys (the escaped text is rebuilt per
/// fragment), tokens in one arena.
#[derive(Default)]
struct WordCache {
    map: std::collections::HashMap<
        Vec<u8>,
        (u32, u32),
        std::hash::BuildHasherDefault<vocab::BytesHasher>,
    >,
    tokens: Vec<Token>,
    unsafe_at: Vec<usize>,
}

impl Tokenizer {
    /// SentencePiece over one escaped fragment. Merges only join pieces that are tokens, so
    /// a position before U+2581 that follows another character can only be merged across
    /// by a "crossing" token occurring there; every other such position splits the text
    /// into segments that merge independently, and repeated segments are looked up.
    fn encode_spm(
        &self,
        model: &SpmModel,
        buf: &[u8],
        sc: &mut SpmScratch,
        cache: &mut WordCache,
        out: &mut Vec<Token>,
    ) -> Result<()> {
        let fail =
            |b: u8| Error::Unsupported(format!("the vocabulary has no token for byte 0x{b:02X}"));
        let Some(crossing) = &self.crossing else {
            return model.encode(buf, sc, out).map_err(fail);
        };
        cache.unsafe_at.clear();
        for &t in crossing {
            let text = self.strings.get(t);
            let finder = memchr::memmem::Finder::new(text);
            // Overlapping occurrences count too, so search again one byte after each.
            let mut from = 0;
            while let Some(m) = finder.find(&buf[from..]).map(|m| m + from) {
                cache.unsafe_at.extend(m + 1..m + text.len());
                from = m + 1;
            }
        }
        cache.unsafe_at.sort_unstable();
        let mut seg_start = 0;
        let mut emit = |seg: &[u8], cache: &mut WordCache, out: &mut Vec<Token>| -> Result<()> {
            if seg.len() > CACHED_WORD {
                return model.encode(seg, sc, out).map_err(fail);
            }
            if let Some(&(a, b)) = cache.map.get(seg) {
                out.extend_from_slice(&cache.tokens[a as usize..b as usize]);
                return Ok(());
            }
            let from = out.len();
            model.encode(seg, sc, out).map_err(fail)?;
            let a = cache.tokens.len() as u32;
            cache.tokens.extend_from_slice(&out[from..]);
            cache
                .map
                .insert(seg.to_vec(), (a, cache.tokens.len() as u32));
            Ok(())
        };
        for i in memchr::memchr_iter(SPACE_ESCAPE[0], buf) {
            if i == 0
                || !buf[i..].starts_with(SPACE_ESCAPE)
                || buf[..i].ends_with(SPACE_ESCAPE)
                || cache.unsafe_at.binary_search(&i).is_ok()
            {
                continue;
            }
            emit(&buf[seg_start..i], cache, out)?;
            seg_start = i;
        }
        emit(&buf[seg_start..], cache, out)
    }
}

fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
        what: "text",
        offset: e.valid_up_to(),
    })
}

fn escape_spaces(text: &[u8], out: &mut Vec<u8>) {
    for &b in text {
        if b == b' ' {
            out.extend_from_slice(SPACE_ESCAPE);
        } else {
            out.push(b);
        }
    }
}

fn unescape_spaces(text: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < text.len() {
        if text[i] == SPACE_ESCAPE[0] && text[i..].starts_with(SPACE_ESCAPE) {
            out.push(b' ');
            i += SPACE_ESCAPE.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// llama.cpp's `llama_decode_text`: GPT-2 characters back to bytes, with its marker for
/// characters that are not in the byte map. `None` for code points above U+10FFFF.
fn decode_gpt2_text(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    let mut utf8 = Vec::with_capacity(4);
    while i < text.len() {
        let (cp, n) = unicode::decode_lenient(text, i);
        i += n;
        match unicode::char_to_byte(cp) {
            Some(b) => out.push(b),
            None => {
                utf8.clear();
                unicode::push_utf8(&mut utf8, cp)?;
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in &utf8 {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text);
                out.push(b']');
            }
        }
    }
    Some(())
}

/// The three clean-up passes of llama.cpp's `detokenize` (`clean_up_tokenization_spaces`),
/// done in place exactly as it does them.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // " ?", " !", " .", " ,"
    let total1 = text.len();
    let mut total = usize::from(total1 > 0);
    for i in 1..total1 {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    // " ' "
    let total2 = total;
    total = usize::from(total2 > 0);
    let mut i = 1;
    while i < total2 {
        let x = text[i];
        if x == b'\'' && i + 1 < total2 && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    // " 's", " 'm", " 're", " 've"
    let total3 = total;
    total = usize::from(total3 > 0);
    for i in 1..total3 {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < total3 {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if x1 != b't' && x1 != b'd' && i + 2 < total3 {
                let x2 = text[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}
