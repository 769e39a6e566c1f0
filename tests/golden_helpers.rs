//! Tests of the golden-fixture helpers (tests/common/golden.rs) on synthetic data, and sanity
//! checks of the committed fixtures themselves.

mod common;

use common::golden::{
    argmax, compare_greedy, compare_teacher_forced, kl_topk, load_model_fixture, log_softmax,
    logsumexp, parse_fixture, perplexity_llama_style, Greedy, Mismatch, TeacherForced, TopK,
};

/// Deterministic pseudo-random logits (xorshift), spread like a language model's.
fn logits(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 12.0 - 6.0) as f32
        })
        .collect()
}

/// What the oracle stores for a distribution: top-k ids/log-probs, the tail and the next token.
fn topk_of(logits: &[f32], k: usize, next: u32) -> TopK {
    let lp = log_softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let top = &order[..k];
    let tail: f64 = order[k..].iter().map(|&i| lp[i].exp()).sum();
    TopK {
        ids: top.iter().map(|&i| i as u32).collect(),
        logprobs: top.iter().map(|&i| lp[i]).collect(),
        tail_logprob: tail.ln(),
        next_logprob: lp[next as usize],
    }
}

fn full_kl(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

#[test]
fn kl_of_identical_or_shifted_logits_is_zero() {
    let l = logits(1, 300);
    let p = topk_of(&l, 20, 0);
    assert!(kl_topk(&p, &l).unwrap().abs() < 1e-12);
    // Softmax ignores a constant shift of the logits.
    let shifted: Vec<f32> = l.iter().map(|x| x + 3.5).collect();
    assert!(kl_topk(&p, &shifted).unwrap().abs() < 1e-9);
}

#[test]
fn kl_matches_a_hand_computed_value() {
    // P = (1/2, 1/4, 1/4), Q = (1/4, 1/2, 1/4), K = 1: coarsened to {token 0, rest},
    // P' = (1/2, 1/2), Q' = (1/4, 3/4).
    let lp = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
    let lq = [0.25f32.ln(), 0.5f32.ln(), 0.25f32.ln()];
    let p = topk_of(&lp, 1, 0);
    assert_eq!(p.ids, vec![0]);
    let want = 0.5 * 2f64.ln() + 0.5 * (0.5f64 / 0.75).ln();
    let got = kl_topk(&p, &lq).unwrap();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // The full KL is larger: inside the merged bucket P and Q still differ (1/4, 1/4 vs 1/2, 1/4).
    assert!(full_kl(&lp, &lq) > got);
}

#[test]
fn coarse_kl_is_a_lower_bound_that_tightens_with_k() {
    for seed in 0..20 {
        let p = logits(seed, 500);
        let noise = logits(seed + 1000, 500);
        let q: Vec<f32> = p.iter().zip(&noise).map(|(a, b)| a + 0.3 * b).collect();
        let full = full_kl(&p, &q);
        let mut prev = 0.0;
        for k in [1, 5, 20, 100, 499] {
            let c = kl_topk(&topk_of(&p, k, 0), &q).unwrap();
            assert!(c <= full + 1e-12, "seed {seed} k {k}: {c} > {full}");
            assert!(
                c >= prev - 1e-12,
                "seed {seed}: refining to k={k} lowered KL"
            );
            prev = c;
        }
        // With every token but one listed, the coarsening loses nothing.
        assert!((prev - full).abs() < 1e-9);
        assert!(full > 1e-4);
    }
}

#[test]
fn kl_tolerates_rounded_fixture_values() {
    // The fixture rounds log-probs to 4 decimals; that must not look like a divergence.
    let l = logits(7, 1000);
    let mut p = topk_of(&l, 20, 0);
    p.logprobs = p.logprobs.iter().map(|x| (x * 1e4).round() / 1e4).collect();
    p.tail_logprob = (p.tail_logprob * 1e4).round() / 1e4;
    assert!(kl_topk(&p, &l).unwrap() < 1e-6);
}

#[test]
fn kl_rejects_ids_beyond_the_vocabulary() {
    let l = logits(3, 50);
    let mut p = topk_of(&l, 5, 0);
    p.ids[2] = 50;
    assert!(kl_topk(&p, &l).is_err());
}

#[test]
fn argmax_prefers_the_lowest_index_on_ties() {
    assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
    assert_eq!(argmax(&[]), None);
    assert_eq!(argmax(&[f32::NEG_INFINITY, -1.0]), Some(1));
}

#[test]
fn logsumexp_is_stable_for_large_logits() {
    let v = [1000.0f32, 1000.0];
    assert!((logsumexp(&v) - (1000.0 + 2f64.ln())).abs() < 1e-9);
}

#[test]
fn teacher_forced_comparison_counts_agreement_and_reports_mismatches() {
    let n_vocab = 64;
    let tokens: Vec<u32> = (0..6).map(|i| (i * 7) % 64).collect();
    let rows: Vec<Vec<f32>> = (0..5).map(|i| logits(100 + i, n_vocab)).collect();
    let tf = TeacherForced {
        tokens: tokens.clone(),
        positions: rows
            .iter()
            .enumerate()
            .map(|(i, r)| topk_of(r, 20, tokens[i + 1]))
            .collect(),
    };
    let mut ember: Vec<f32> = rows.concat();
    // Position 3: make llama's second choice ember's first.
    let second = tf.positions[3].ids[1] as usize;
    let top = tf.positions[3].ids[0] as usize;
    ember[3 * n_vocab + second] = ember[3 * n_vocab + top] + 0.5;
    // An extra row for the last token is allowed and ignored.
    ember.extend(logits(999, n_vocab));

    let rep = compare_teacher_forced(&tf, &ember, n_vocab).unwrap();
    assert_eq!(rep.positions, 5);
    assert_eq!(rep.top1_agree, 4);
    assert!((rep.top1_agreement() - 0.8).abs() < 1e-12);
    let gap = tf.positions[3].logprobs[0] - tf.positions[3].logprobs[1];
    assert_eq!(
        rep.mismatches,
        vec![Mismatch {
            position: 3,
            llama_top: top as u32,
            ember_top: second as u32,
            llama_gap: Some(gap),
        }]
    );
    assert!(rep.max_kl > 0.0 && rep.mean_kl > 0.0 && rep.mean_kl < rep.max_kl);

    assert!((rep.top1_agreement_within(gap + 1e-9) - 1.0).abs() < 1e-12);
    assert!((rep.top1_agreement_within(gap - 1e-6) - 0.8).abs() < 1e-12);

    assert!(compare_teacher_forced(&tf, &ember[..4 * n_vocab], n_vocab).is_err());
    assert!(compare_teacher_forced(&tf, &ember, 0).is_err());
}

#[test]
fn greedy_comparison_finds_the_first_divergence() {
    let g = Greedy {
        prompt: vec![1, 2, 3],
        tokens: vec![10, 11, 12, 13],
        margins: vec![2.0, 1.5, 0.01, 3.0],
    };
    let same = compare_greedy(&g, &[10, 11, 12, 13]);
    assert!(same.identical);
    assert_eq!(same.first_divergence, None);
    let diff = compare_greedy(&g, &[10, 11, 99, 13]);
    assert!(!diff.identical);
    assert_eq!(diff.first_divergence, Some(2));
    assert_eq!(diff.llama_margin_at_divergence, Some(0.01));
    assert!(diff.identical_or_near_tie(0.05));
    assert!(!diff.identical_or_near_tie(0.005));
    assert!(!compare_greedy(&g, &[10, 99, 12, 13]).identical_or_near_tie(0.05));
    let short = compare_greedy(&g, &[10, 11]);
    assert_eq!(short.first_divergence, Some(2));
    assert_eq!(g.min_margin(), 0.01);
}

#[test]
fn perplexity_scores_the_second_half_of_each_chunk() {
    let n_vocab = 9usize;
    let n_ctx = 8;
    let tokens: Vec<u32> = (0..27).map(|i| (i * 5 % 9) as u32).collect();
    let mut seen = Vec::new();
    // Each row gives the true next token logit ln 2 and every other token 0, so
    // P(next) = 2 / (n_vocab + 1) exactly when rows line up with the scored tokens.
    let res =
        perplexity_llama_style::<String>(&tokens, n_ctx, Some(42), n_vocab, |chunk, first| {
            seen.push(chunk.to_vec());
            let mut out = Vec::new();
            for pos in first..chunk.len() {
                let mut row = vec![0.0f32; n_vocab];
                if pos + 1 < chunk.len() {
                    row[chunk[pos + 1] as usize] = 2f32.ln();
                }
                out.extend(row);
            }
            Ok(out)
        })
        .unwrap();
    // 27 tokens make 3 chunks of 8; the last 3 tokens are dropped.
    assert_eq!(seen.len(), 3);
    for (c, chunk) in seen.iter().enumerate() {
        assert_eq!(chunk[0], 42, "BOS replaces the first token");
        assert_eq!(&chunk[1..], &tokens[c * 8 + 1..c * 8 + 8]);
    }
    // first = 4: positions 4, 5, 6 score tokens 5, 6, 7.
    assert_eq!(res.count, 9);
    assert_eq!(res.chunk_nll.len(), 3);
    assert!(
        (res.ppl - (n_vocab as f64 + 1.0) / 2.0).abs() < 1e-5,
        "{}",
        res.ppl
    );

    let no_bos = perplexity_llama_style::<String>(&tokens, n_ctx, None, n_vocab, |chunk, first| {
        assert_ne!(chunk[0], 42);
        Ok(vec![0.0; (chunk.len() - first) * n_vocab])
    })
    .unwrap();
    assert!((no_bos.ppl - n_vocab as f64).abs() < 1e-9);

    let too_short = perplexity_llama_style::<String>(
        &tokens[..15],
        n_ctx,
        None,
        n_vocab,
        |_, _| Ok(Vec::new()),
    );
    assert!(too_short.is_err());
    let bad_eval =
        perplexity_llama_style::<String>(&tokens, n_ctx, None, n_vocab, |_, _| Ok(vec![0.0; 5]));
    assert!(bad_eval.is_err());
}

#[test]
fn parse_rejects_malformed_fixtures_without_panicking() {
    assert!(parse_fixture("not json").is_err());
    assert!(parse_fixture("{}").is_err());
    assert!(parse_fixture(r#"{"format":"something-else/9"}"#).is_err());
    let good = std::fs::read_to_string(common::golden::fixture_path("smollm2")).unwrap();
    // A token id beyond the vocabulary must be refused, not indexed later.
    let bad = good.replacen("\"tokens\": [", "\"tokens\": [4000000,", 1);
    assert_ne!(bad, good);
    assert!(parse_fixture(&bad).is_err());
}

/// The committed fixtures are internally consistent: what the tests compare against is what
/// the oracle meant to store.
#[test]
fn committed_fixtures_are_consistent() {
    for name in ["smollm2", "gemma3"] {
        let f = load_model_fixture(name).unwrap();
        assert_eq!(f.model.name, name);
        assert_eq!(f.prompts.len(), 10, "{name}");
        assert_eq!(f.top_k, 20);
        for p in &f.prompts {
            let tf = &p.teacher_forced;
            assert_eq!(tf.tokens.len(), 129, "{name}/{}", p.name);
            assert_eq!(tf.positions.len(), 128);
            assert_eq!(&p.ids[..129], &tf.tokens[..]);
            if f.model.add_bos {
                assert_eq!(p.ids[0], f.model.bos, "{name}/{}: BOS first", p.name);
                assert_ne!(p.ids[1], f.model.bos, "{name}/{}: one BOS", p.name);
            } else if !p.parse_special {
                // SmolLM2's BOS id is also <|im_start|>, which the chat prompt starts with.
                assert_ne!(p.ids[0], f.model.bos, "{name}/{}: no BOS", p.name);
            }
            for (i, pos) in tf.positions.iter().enumerate() {
                // Top-K plus tail is a whole distribution (up to rounding), in descending order.
                let mass: f64 =
                    pos.logprobs.iter().map(|x| x.exp()).sum::<f64>() + pos.tail_logprob.exp();
                assert!(
                    (mass - 1.0).abs() < 2e-3,
                    "{name}/{} pos {i}: mass {mass}",
                    p.name
                );
                assert!(pos.logprobs.windows(2).all(|w| w[0] >= w[1]));
                assert!(pos.next_logprob <= pos.logprobs[0] + 1e-9);
                if let Some(j) = pos.ids.iter().position(|&id| id == tf.tokens[i + 1]) {
                    assert!((pos.logprobs[j] - pos.next_logprob).abs() < 1e-9);
                } else {
                    assert!(pos.next_logprob <= pos.logprobs[19] + 1e-9);
                }
            }
            assert_eq!(p.greedy.tokens.len(), 32);
            assert!((20..=40).contains(&p.greedy.prompt.len()));
            assert_eq!(&p.ids[..p.greedy.prompt.len()], &p.greedy.prompt[..]);
            assert!(p.greedy.margins.iter().all(|&m| m >= 0.0));
        }
        let ppl = &f.perplexity;
        assert_eq!(ppl.n_chunk, ppl.tokens.len() / ppl.n_ctx);
        assert_eq!(ppl.llama_running.len(), ppl.n_chunk);
        assert_eq!(ppl.bos_replaces_first_token, f.model.add_bos);
        assert!((ppl.llama_final - ppl.llama_running[ppl.n_chunk - 1]).abs() < 1e-3);
        // The oracle reproduced llama-perplexity's method.
        assert!((ppl.oracle_final / ppl.llama_final - 1.0).abs() < 1e-3);
        let scored = (ppl.n_ctx - 1 - ppl.first) * ppl.n_chunk;
        let from_chunks = (ppl.oracle_chunk_nll.iter().sum::<f64>() / scored as f64).exp();
        assert!((from_chunks / ppl.oracle_final - 1.0).abs() < 1e-4);
        assert!(f.self_check.positions >= 128);
        assert!(f.self_check.mean_coarse_kl <= f.self_check.mean_kl + 1e-9);
        assert_eq!(f.self_check.top1_agreement_within.len(), 3);
        assert!(f
            .self_check
            .top1_agreement_within
            .iter()
            .all(|&(_, a)| a >= f.self_check.top1_agreement));
        assert!(f.self_check.greedy_identical_without_flash_attn <= 10);
    }
}
