//! Context behaviour on a real model: KV cache bounds, context shift, state save/load,
//! abort, shared models across threads.

mod common;

use std::sync::OnceLock;

use ember::sampling::argmax;
use ember::{Context, ContextParams, Error, Model, ModelParams, Token};

fn smollm() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        Model::load(common::model("smollm2"), &ModelParams::default()).expect("load SmolLM2")
    })
}

/// "The capital of France is" and some more text, as SmolLM2 token ids.
const PROMPT: [Token; 24] = [
    504, 3575, 282, 4649, 314, 7042, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723, 216,
    35, 34, 33, 2215, 701, 30,
];

fn ctx(n_ctx: usize) -> Context {
    Context::new(
        smollm(),
        ContextParams {
            n_ctx,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap()
}

/// KL(softmax(p) || softmax(q)) in nats.
fn kl_div(p: &[f32], q: &[f32]) -> f64 {
    let lse = |l: &[f32]| {
        let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        m + l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let la = a as f64 - lp;
            la.exp() * (la - (b as f64 - lq))
        })
        .sum()
}

fn greedy(ctx: &mut Context, n: usize) -> Vec<Token> {
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(ctx.logits());
        out.push(t);
        ctx.decode(&[t]).unwrap();
    }
    out
}

#[test]
fn model_is_send_sync_and_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Model>();
    fn assert_send<T: Send>() {}
    assert_send::<Context>();
}

#[test]
fn out_of_range_token_and_empty_batch_are_errors() {
    let mut c = ctx(64);
    match c.decode(&[49152]) {
        Err(Error::InvalidToken {
            id: 49152,
            n_vocab: 49152,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(c.decode(&[]).is_err());
    assert_eq!(c.n_past(), 0);
    c.decode(&PROMPT[..3]).unwrap();
    assert_eq!(c.n_past(), 3);
}

#[test]
fn full_context_is_an_error_and_leaves_state_intact() {
    let mut c = ctx(16);
    c.decode(&PROMPT[..10]).unwrap();
    let before = c.logits().to_vec();
    match c.decode(&PROMPT[10..20]) {
        Err(Error::ContextFull {
            needed: 20,
            n_ctx: 16,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(c.n_past(), 10);
    assert_eq!(c.logits(), &before[..]);
}

#[test]
fn batched_prompt_equals_token_by_token() {
    let mut a = Context::new(
        smollm(),
        ContextParams {
            n_ctx: 64,
            n_batch: 5,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    a.decode(&PROMPT[..12]).unwrap();
    let mut b = ctx(64);
    for t in &PROMPT[..12] {
        b.decode(&[*t]).unwrap();
    }
    // Batched and one-at-a-time passes use different kernels (tiled products vs
    // matrix-vector), so the 8-bit activation roundings differ a little; llama.cpp's two
    // modes differ the same way. The distributions must still agree closely.
    let kl = kl_div(a.logits(), b.logits());
    assert!(kl < 0.01, "batched vs sequential: KL {kl}");
}

#[test]
fn state_round_trip_continues_identically_and_bad_states_are_rejected() {
    let mut a = ctx(64);
    a.decode(&PROMPT[..8]).unwrap();
    let state = a.save_state();
    assert_eq!(state.len(), a.state_size());
    let cont_a = greedy(&mut a, 6);

    let mut b = ctx(64);
    b.decode(&PROMPT[..3]).unwrap();
    b.load_state(&state).unwrap();
    assert_eq!(b.n_past(), 8);
    assert_eq!(greedy(&mut b, 6), cont_a);

    let mut c = ctx(64);
    c.decode(&PROMPT[..2]).unwrap();
    let snapshot = c.save_state();
    for bad in [
        state[..state.len() - 1].to_vec(),
        state[..10].to_vec(),
        Vec::new(),
        {
            let mut s = state.clone();
            s[0] = b'X';
            s
        },
        {
            let mut s = state.clone();
            let mid = s.len() / 2;
            s[mid] ^= 0x40;
            s
        },
        {
            // n_past claims more than the context holds
            let mut s = state.clone();
            s[36..44].copy_from_slice(&1_000_000u64.to_le_bytes());
            s
        },
    ] {
        assert!(matches!(c.load_state(&bad), Err(Error::State(_))));
        assert_eq!(
            c.save_state(),
            snapshot,
            "a failed load must not change the context"
        );
    }
    // A smaller context cannot take a state with more positions than it holds.
    let mut small = ctx(4);
    assert!(small.load_state(&state).is_err());
}

#[test]
fn context_shift_drops_positions_and_keeps_decoding() {
    // The kept keys were computed while attending to the dropped tokens, so a shifted
    // context is not identical to a fresh one (llama.cpp's shift has the same property);
    // the rotation itself is checked exactly in model::ops tests.
    let mut a = ctx(32);
    a.decode(&PROMPT).unwrap();
    assert!(matches!(
        a.decode(&PROMPT[..10]),
        Err(Error::ContextFull { .. })
    ));
    a.shift(4, 10).unwrap();
    assert_eq!(a.n_past(), 14);
    let mut kept: Vec<Token> = PROMPT[..4].to_vec();
    kept.extend_from_slice(&PROMPT[14..]);
    assert_eq!(a.tokens(), &kept[..]);
    a.decode(&PROMPT[..10]).unwrap();
    assert_eq!(a.n_past(), 24);
    assert!(a.logits().iter().all(|v| v.is_finite()));
    assert!(a.shift(20, 10).is_err());
    // Keeping everything before the shift point unchanged: with nothing after the
    // discarded range, the context equals a fresh one on the kept prefix exactly.
    let mut b = ctx(32);
    b.decode(&PROMPT[..12]).unwrap();
    b.shift(6, 6).unwrap();
    b.decode(&[198]).unwrap();
    let mut c = ctx(32);
    c.decode(&PROMPT[..6]).unwrap();
    c.decode(&[198]).unwrap();
    let kl = kl_div(b.logits(), c.logits());
    assert!(
        kl < 0.01,
        "shifted vs fresh context on the kept prefix: KL {kl}"
    );
}

#[test]
fn abort_stops_decode_and_leaves_the_context_usable() {
    let mut c = ctx(64);
    c.decode(&PROMPT[..4]).unwrap();
    let expect = {
        let mut d = ctx(64);
        d.decode(&PROMPT[..10]).unwrap();
        argmax(d.logits())
    };
    let h = c.abort_handle();
    let t = std::thread::spawn(move || {
        for _ in 0..2000 {
            h.abort();
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    });
    let mut aborted = 0;
    for _ in 0..50 {
        // Once the aborting thread is done every decode runs to the end: no point going on
        // (under qemu each costs seconds).
        if aborted > 0 && t.is_finished() {
            break;
        }
        match c.decode(&PROMPT[4..10]) {
            Err(Error::Aborted) => {
                aborted += 1;
                assert_eq!(c.n_past(), 4);
            }
            Ok(()) => c.truncate(4),
            Err(e) => panic!("{e}"),
        }
    }
    t.join().unwrap();
    assert!(aborted > 0, "the abort flag never stopped a decode");
    c.truncate(4);
    c.decode(&PROMPT[4..10]).unwrap();
    assert_eq!(argmax(c.logits()), expect);
}

/// The 8 greedy tokens after each prompt, each in a context of its own on this thread: what
/// the threaded runs must reproduce.
fn greedy_alone(prompts: &[Vec<Token>]) -> Vec<Vec<Token>> {
    prompts
        .iter()
        .map(|p| {
            let mut c = ctx(64);
            c.decode(p).unwrap();
            greedy(&mut c, 8)
        })
        .collect()
}

#[test]
fn one_model_four_threads_same_tokens_as_alone() {
    let prompts: Vec<Vec<Token>> = (0..4).map(|i| PROMPT[i..i + 8].to_vec()).collect();
    let alone = greedy_alone(&prompts);
    let handles: Vec<_> = prompts
        .into_iter()
        .map(|p| {
            let model = smollm().clone();
            std::thread::spawn(move || {
                let mut c = Context::new(
                    &model,
                    ContextParams {
                        n_ctx: 64,
                        n_threads: 1,
                        ..Default::default()
                    },
                )
                .unwrap();
                c.decode(&p).unwrap();
                greedy(&mut c, 8)
            })
        })
        .collect();
    let together: Vec<Vec<Token>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(alone, together);
}

/// The q8_0 KV cache: same logits as f16 within the cache's rounding, a state round trip
/// that continues identically, a shift that keeps decoding, and states of one cache type
/// refused by a context of the other.
#[test]
fn q8_0_kv_cache_decodes_saves_and_shifts() {
    let q8 = |n_ctx| {
        Context::new(
            smollm(),
            ContextParams {
                n_ctx,
                n_threads: 2,
                kv_type: ember::KvType::Q8_0,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (mut a, mut f) = (q8(64), ctx(64));
    a.decode(&PROMPT).unwrap();
    f.decode(&PROMPT).unwrap();
    let kl = kl_div(f.logits(), a.logits());
    assert!(kl < 0.01, "q8_0 vs f16 KV cache: KL {kl}");
    assert!(a.size_bytes() < f.size_bytes());

    let state = a.save_state();
    assert_eq!(state.len(), a.state_size());
    let cont = greedy(&mut a, 6);
    let mut b = q8(64);
    b.load_state(&state).unwrap();
    assert_eq!(greedy(&mut b, 6), cont);
    assert!(matches!(ctx(64).load_state(&state), Err(Error::State(_))));

    b.shift(4, 8).unwrap();
    assert_eq!(b.n_past(), PROMPT.len() + 6 - 8);
    greedy(&mut b, 4);
}

/// The caller's model handle goes while contexts made from it still work on other
/// threads: each context keeps the weights alive, and whichever thread drops the last
/// context unmaps the file. (Run under ThreadSanitizer by tools/tsan.)
#[test]
fn model_dropped_while_its_contexts_decode_on_other_threads() {
    let prompts: Vec<Vec<Token>> = (0..2).map(|i| PROMPT[i..i + 8].to_vec()).collect();
    let alone = greedy_alone(&prompts);
    // Its own load, not the shared one: this model must really be freed.
    let model = Model::load(common::model("smollm2"), &ModelParams::default()).unwrap();
    let start = std::sync::Arc::new(std::sync::Barrier::new(prompts.len() + 1));
    let handles: Vec<_> = prompts
        .into_iter()
        .map(|p| {
            let mut c = Context::new(
                &model,
                ContextParams {
                    n_ctx: 64,
                    n_threads: 2,
                    ..Default::default()
                },
            )
            .unwrap();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                c.decode(&p).unwrap();
                greedy(&mut c, 8)
            })
        })
        .collect();
    drop(model);
    start.wait();
    let after: Vec<Vec<Token>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(alone, after);
}
