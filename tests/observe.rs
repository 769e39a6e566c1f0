//! The observer hook: what it is shown is what the pass computed. Its logits are the
//! context's bit for bit, an observed decode gives the same logits as an unobserved one,
//! attention rows are softmax rows over the causal (or sliding) window, the logit lens at
//! the last layer picks the model's own top token, stages come in the pass's order, and an
//! MoE router shows k experts per token and layer.

mod common;

use std::path::PathBuf;

use ember::model::observe::{self, Observer, Stage, View, NO_LAYER};
use ember::sampling::argmax;
use ember::{Context, ContextParams, Model, ModelParams};

#[derive(Default)]
struct Rec {
    seen: Vec<(Stage, usize)>,
    logits: Vec<f32>,
    residual_last: Vec<f32>,
    n_layer: usize,
    /// (layer, head, query position, weights)
    attn: Vec<(usize, usize, usize, Vec<f32>)>,
    /// (layer, position, experts, weights)
    routes: Vec<(usize, usize, Vec<u32>, Vec<f32>)>,
    only_head: Option<(usize, usize)>,
}

impl Observer for Rec {
    fn observe(&mut self, v: &View<'_>) {
        self.seen.push((v.stage, v.layer));
        match v.stage {
            Stage::Logits => self.logits = v.data.to_vec(),
            Stage::Residual if v.layer + 1 == self.n_layer => self.residual_last = v.data.to_vec(),
            Stage::AttnWeights => self.attn.push((v.layer, v.head, v.pos0, v.data.to_vec())),
            Stage::MoeRoute => self
                .routes
                .push((v.layer, v.pos0, v.ids.to_vec(), v.data.to_vec())),
            _ => {}
        }
    }

    fn wants_attention(&self, layer: usize, head: usize) -> bool {
        self.only_head.is_none_or(|o| o == (layer, head))
    }
}

fn models() -> Vec<PathBuf> {
    let mut v = vec![common::model("smollm2")];
    v.extend(common::model_list("synthetic").into_iter().filter(|p| {
        let s = p.file_stem().unwrap().to_string_lossy();
        s.ends_with("q8_0")
    }));
    v
}

fn prompt(model: &Model) -> Vec<u32> {
    let text = "One two three four. One two three four. One two";
    model.tokenizer().encode(text, true, false).unwrap()
}

#[test]
fn observer_sees_the_pass_exactly() {
    for path in models() {
        let name = path.display().to_string();
        let model = Model::load(&path, &ModelParams::default()).unwrap();
        let c = model.config().clone();
        let tokens = prompt(&model);
        let n = tokens.len();

        let mut plain = Context::new(&model, ContextParams::default()).unwrap();
        plain.decode(&tokens).unwrap();

        let mut ctx = Context::new(&model, ContextParams::default()).unwrap();
        let mut rec = Rec {
            n_layer: c.n_layer,
            ..Rec::default()
        };
        ctx.decode_observed(&tokens, false, &mut rec).unwrap();
        let bits = |l: &[f32]| l.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&rec.logits),
            bits(ctx.logits()),
            "{name}: observer logits"
        );
        assert_eq!(
            bits(plain.logits()),
            bits(ctx.logits()),
            "{name}: observing changes nothing"
        );

        // Attention: one softmax row per layer, head and query, over the visible keys.
        assert_eq!(rec.attn.len(), c.n_layer * c.n_head * n, "{name}");
        for (il, h, pos, w) in &rec.attn {
            let window = if c.swa_layers[*il] {
                c.sliding_window
            } else {
                0
            };
            let visible = if window > 0 {
                (pos + 1).min(window)
            } else {
                pos + 1
            };
            assert_eq!(w.len(), visible, "{name}: layer {il} head {h} query {pos}");
            let s: f64 = w.iter().map(|&x| x as f64).sum();
            assert!((s - 1.0).abs() < 1e-4, "{name}: row sums to {s}");
            assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0), "{name}");
        }

        // The logit lens after the last layer is the model's output.
        let d = c.n_embd;
        let lens = observe::logit_lens(&model, &rec.residual_last[(n - 1) * d..]).unwrap();
        assert_eq!(
            argmax(&lens),
            argmax(ctx.logits()),
            "{name}: lens at the last layer"
        );
        let max_diff = lens
            .iter()
            .zip(ctx.logits())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            max_diff < 1e-3,
            "{name}: lens differs from the logits by {max_diff}"
        );

        // Stages in the pass's order: tokens, embeddings, then each layer's stages.
        assert_eq!(rec.seen[0], (Stage::Tokens, NO_LAYER), "{name}");
        assert_eq!(rec.seen[1], (Stage::Embedding, NO_LAYER), "{name}");
        let last = rec.seen.len();
        assert_eq!(rec.seen[last - 2].0, Stage::FinalNorm, "{name}");
        assert_eq!(rec.seen[last - 1].0, Stage::Logits, "{name}");
        let layers: Vec<usize> = rec
            .seen
            .iter()
            .filter(|s| s.0 == Stage::Residual)
            .map(|s| s.1)
            .collect();
        assert_eq!(layers, (0..c.n_layer).collect::<Vec<_>>(), "{name}");
        for il in 0..c.n_layer {
            let order: Vec<Stage> = rec
                .seen
                .iter()
                .filter(|s| s.1 == il && s.0 != Stage::AttnWeights && s.0 != Stage::FfnHidden)
                .map(|s| s.0)
                .collect();
            let mut want = vec![
                Stage::AttnInput,
                Stage::Query,
                Stage::Key,
                Stage::AttnOut,
                Stage::ResidualMid,
                Stage::FfnInput,
            ];
            want.extend(std::iter::repeat_n(
                Stage::MoeRoute,
                if c.moe.is_some() { n } else { 0 },
            ));
            want.extend([Stage::FfnOut, Stage::Residual]);
            assert_eq!(order, want, "{name}: layer {il}");
        }

        // MoE: k experts per token and layer, distinct, weights as the router gave them.
        if let Some(m) = c.moe {
            assert_eq!(rec.routes.len(), c.n_layer * n, "{name}");
            for (il, pos, ids, w) in &rec.routes {
                assert_eq!(ids.len(), m.n_expert_used, "{name}: layer {il} pos {pos}");
                let mut u = ids.clone();
                u.sort();
                u.dedup();
                assert_eq!(u.len(), ids.len(), "{name}: experts repeat");
                assert!(ids.iter().all(|&e| (e as usize) < m.n_expert), "{name}");
                let s: f32 = w.iter().sum();
                assert!(s > 0.0 && s <= 1.0 + 1e-5, "{name}: weights sum to {s}");
                if m.norm_weights {
                    assert!(
                        (s - 1.0).abs() < 1e-5,
                        "{name}: renormalised weights sum to {s}"
                    );
                }
            }
        } else {
            assert!(rec.routes.is_empty(), "{name}");
        }
    }
}

#[test]
fn attention_is_materialised_only_for_the_heads_asked_for() {
    let model = Model::load(common::model("smollm2"), &ModelParams::default()).unwrap();
    let tokens = prompt(&model);
    let mut ctx = Context::new(&model, ContextParams::default()).unwrap();
    let mut rec = Rec {
        only_head: Some((2, 1)),
        n_layer: model.config().n_layer,
        ..Rec::default()
    };
    ctx.decode_observed(&tokens, false, &mut rec).unwrap();
    assert_eq!(rec.attn.len(), tokens.len());
    assert!(rec.attn.iter().all(|a| (a.0, a.1) == (2, 1)));
}

#[test]
fn a_boxed_observer_sees_every_decode_until_removed() {
    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Observer for Count {
        fn observe(&mut self, v: &View<'_>) {
            if v.stage == Stage::Logits {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    let model = Model::load(common::model("smollm2"), &ModelParams::default()).unwrap();
    let tokens = prompt(&model);
    let mut ctx = Context::new(&model, ContextParams::default()).unwrap();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    ctx.set_observer(Some(Box::new(Count(n.clone()))));
    ctx.decode(&tokens).unwrap();
    ctx.decode(&tokens[..1]).unwrap();
    assert!(ctx.take_observer().is_some());
    ctx.decode(&tokens[..1]).unwrap();
    assert_eq!(n.load(std::sync::atomic::Ordering::Relaxed), 2);
}
