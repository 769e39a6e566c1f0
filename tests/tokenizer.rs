//! Golden tests: ember's tokenizers against llama.cpp's output on the committed corpus
//! (fixtures made by tools/make-tokenizer-fixtures), on the two test models.

mod common;

use std::path::{Path, PathBuf};

use ember::tokenizer::StreamDecoder;
use ember::{EncodeOptions, Error, GgufFile, TokenAttr, Tokenizer, TokenizerKind};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(name: &str) -> Tokenizer {
    let f = GgufFile::open(common::model(name)).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn corpus() -> Vec<String> {
    let v = read_json(&root().join("tests/fixtures/tokenizer/corpus.json"));
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn ids(s: &str) -> Vec<u32> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(|x| x.parse().unwrap()).collect()
}

fn bytes_of(v: Option<&Value>, default: &str) -> Vec<u8> {
    match v {
        None => default.as_bytes().to_vec(),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        Some(Value::Object(o)) => {
            let h = o["hex"].as_str().unwrap();
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        }
        Some(other) => panic!("bad fixture value {other}"),
    }
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x100000001b3);
    }
}

fn golden(name: &str) {
    let tok = load(name);
    let fx = read_json(&root().join(format!("tests/fixtures/tokenizer/{name}.json")));
    let v = &fx["vocab"];
    assert_eq!(tok.n_vocab() as i64, v["n_vocab"].as_i64().unwrap());
    let id = |t: Option<u32>| t.map_or(-1, |t| t as i64);
    assert_eq!(id(tok.bos()), v["bos"].as_i64().unwrap(), "bos");
    assert_eq!(id(tok.eos()), v["eos"].as_i64().unwrap(), "eos");
    assert_eq!(id(tok.eot()), v["eot"].as_i64().unwrap(), "eot");
    assert_eq!(tok.add_bos() as i64, v["add_bos"].as_i64().unwrap());
    assert_eq!(tok.add_eos() as i64, v["add_eos"].as_i64().unwrap());
    let eog: Vec<u32> = v["eog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(tok.eog_tokens(), &eog[..], "end-of-generation set");

    // Every token's attributes and rendering, digested as the oracle does.
    let (mut ha, mut hs, mut hp) = (
        0xcbf29ce484222325u64,
        0xcbf29ce484222325u64,
        0xcbf29ce484222325u64,
    );
    for t in 0..tok.n_vocab() as u32 {
        fnv(&mut ha, &tok.token_attr(t).unwrap().0.to_le_bytes());
        let p = tok.token_to_piece(t, true).unwrap();
        fnv(&mut hs, &(p.len() as i32).to_le_bytes());
        fnv(&mut hs, p);
        let p = tok.token_to_piece(t, false).unwrap();
        fnv(&mut hp, &(p.len() as i32).to_le_bytes());
        fnv(&mut hp, p);
    }
    let h = &v["hashes"];
    assert_eq!(
        format!("{ha:016x}"),
        h["attr"].as_str().unwrap(),
        "token attributes"
    );
    assert_eq!(
        format!("{hs:016x}"),
        h["piece_special"].as_str().unwrap(),
        "pieces (special)"
    );
    assert_eq!(
        format!("{hp:016x}"),
        h["piece_plain"].as_str().unwrap(),
        "pieces (plain)"
    );

    let corpus = corpus();
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        corpus.len(),
        "fixture is stale: rerun tools/make-tokenizer-fixtures"
    );
    let mut failures = Vec::new();
    for (s, c) in corpus.iter().zip(cases) {
        let t0 = ids(c["t0"].as_str().unwrap());
        let t1 = c
            .get("t1")
            .map_or_else(|| t0.clone(), |x| ids(x.as_str().unwrap()));
        let got0 = tok.encode(s, true, false).unwrap();
        let got1 = tok.encode(s, true, true).unwrap();
        if got0 != t0 {
            failures.push(format!("encode {s:?}:\n  want {t0:?}\n  got  {got0:?}"));
        }
        if got1 != t1 {
            failures.push(format!(
                "encode special {s:?}:\n  want {t1:?}\n  got  {got1:?}"
            ));
        }
        for (key, toks, rm, unparse) in [
            ("d0", &t0, false, false),
            ("d1", &t1, false, true),
            ("d2", &t1, true, true),
        ] {
            let want = bytes_of(c.get(key), s);
            let got = tok.decode(toks, rm, unparse).unwrap();
            if got != want {
                failures.push(format!(
                    "decode {key} {s:?}:\n  want {:?}\n  got  {:?}",
                    String::from_utf8_lossy(&want),
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    if !failures.is_empty() {
        let n = failures.len();
        failures.truncate(12);
        panic!(
            "{name}: {n} mismatches with llama.cpp, first ones:\n{}",
            failures.join("\n")
        );
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    golden("smollm2");
}

#[test]
fn gemma3_matches_llama_cpp() {
    golden("gemma3");
}

#[test]
fn kinds_and_special_tokens() {
    let s = load("smollm2");
    assert_eq!(s.kind(), TokenizerKind::Gpt2Bpe);
    assert_eq!(s.pre_name(), "smollm");
    assert_eq!(s.encode("<|im_start|>", false, true).unwrap(), vec![1]);
    assert!(s.encode("<|im_start|>", false, false).unwrap().len() > 1);
    assert!(s.is_eog(2) && s.is_eog(0) && !s.is_eog(1) && !s.is_eog(u32::MAX));
    assert!(s.token_attr(1).unwrap().is_control());
    assert_eq!(s.token_text(1).unwrap(), b"<|im_start|>");

    let g = load("gemma3");
    assert_eq!(g.kind(), TokenizerKind::SentencePiece);
    let t = g.encode("<start_of_turn>user", true, true).unwrap();
    assert_eq!(t[0], g.bos().unwrap());
    assert_eq!(t[1], 105);
    // User-defined tokens are split out even without parse_special, as in llama.cpp.
    let ws = g.encode("a\n\nb", false, false).unwrap();
    assert!(ws.contains(&108), "{ws:?}");
    assert!(g.token_attr(108).unwrap().contains(TokenAttr::USER_DEFINED));
    // Byte fallback renders single bytes.
    let b = g.text_to_token(b"<0x0A>").unwrap();
    assert!(g.token_attr(b).unwrap().is_byte());
    assert_eq!(g.token_to_piece(b, false).unwrap(), b"\n");
}

#[test]
fn bos_eos_overrides() {
    let g = load("gemma3");
    let bos = g.bos().unwrap();
    let eos = g.eos().unwrap();
    let plain = g.encode("hi", false, false).unwrap();
    let with = |add_bos, add_eos| {
        g.encode_with(
            "hi",
            &EncodeOptions {
                add_bos,
                add_eos,
                parse_special: false,
            },
        )
        .unwrap()
    };
    assert_eq!(with(None, None), [&[bos][..], &plain].concat());
    assert_eq!(with(Some(false), None), plain);
    assert_eq!(
        with(Some(true), Some(true)),
        [&[bos][..], &plain, &[eos]].concat()
    );
    assert_eq!(
        g.encode("hi", true, false).unwrap(),
        [&[bos][..], &plain].concat()
    );
    assert_eq!(g.encode("", true, false).unwrap(), vec![bos]);
    assert_eq!(g.encode("", false, false).unwrap(), Vec::<u32>::new());

    let s = load("smollm2");
    assert!(!s.add_bos());
    let t = s
        .encode_with(
            "hi",
            &EncodeOptions {
                add_bos: Some(true),
                add_eos: Some(true),
                parse_special: false,
            },
        )
        .unwrap();
    assert_eq!(t.first(), s.bos().as_ref());
    assert_eq!(t.last(), s.eos().as_ref());
}

#[test]
fn invalid_utf8_and_ids_are_errors() {
    for name in ["smollm2", "gemma3"] {
        let tok = load(name);
        for bad in [
            &b"abc\xff"[..],
            b"\xc3",
            b"\xed\xa0\x80",
            b"ok \xf0\x9f\x99",
        ] {
            assert!(
                matches!(
                    tok.encode_bytes(bad, true, true),
                    Err(Error::InvalidUtf8 { .. })
                ),
                "{name} {bad:?}"
            );
            assert!(matches!(
                tok.encode_bytes_with(bad, &EncodeOptions::default()),
                Err(Error::InvalidUtf8 { .. })
            ));
        }
        assert_eq!(
            tok.encode_bytes(b"hello", false, false).unwrap(),
            tok.encode("hello", false, false).unwrap()
        );
        let n = tok.n_vocab() as u32;
        assert!(matches!(
            tok.token_to_piece(n, true),
            Err(Error::InvalidToken { .. })
        ));
        assert!(matches!(
            tok.decode(&[0, n], false, false),
            Err(Error::InvalidToken { .. })
        ));
        assert!(tok.token_text(u32::MAX).is_err());
        assert!(tok.token_attr(n).is_err());
        let mut d = StreamDecoder::new(false);
        assert!(d.push(&tok, n, |_| {}).is_err());
    }
}

#[test]
fn stream_decoder_releases_whole_characters() {
    for name in ["smollm2", "gemma3"] {
        let tok = load(name);
        for s in ["héllo wörld 🙂👍🏽 中文字符 👨‍👩‍👧‍👦 done", "😀😃😄😁😆😅🤣😂🙂🙃"]
        {
            let ids = tok.encode(s, false, false).unwrap();
            let mut d = StreamDecoder::new(false);
            let mut out = String::new();
            let mut calls = 0;
            for &t in &ids {
                d.push(&tok, t, |piece| {
                    calls += 1;
                    out.push_str(piece);
                })
                .unwrap();
            }
            d.flush(|p| out.push_str(p));
            assert!(d.pending().is_empty());
            assert_eq!(
                out.as_bytes(),
                tok.decode(&ids, false, false).unwrap(),
                "{name}"
            );
            assert_eq!(out, s);
            assert!(calls > 0);
        }
    }
}

#[test]
fn no_quadratic_blowup() {
    for name in ["smollm2", "gemma3"] {
        let tok = load(name);
        for s in [
            "x".repeat(100_000),
            "🙂".repeat(25_000),
            " ".repeat(100_000),
            "1".repeat(100_000),
        ] {
            let t = std::time::Instant::now();
            let ids = tok.encode(&s, false, false).unwrap();
            let dt = t.elapsed();
            assert!(!ids.is_empty());
            assert_eq!(tok.decode(&ids, false, false).unwrap(), s.as_bytes());
            assert!(
                dt.as_secs_f64() < 1.0,
                "{name}: {} bytes took {dt:?}",
                s.len()
            );
        }
    }
}
