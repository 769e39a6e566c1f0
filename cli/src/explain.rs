//! `ember explain -m FILE -p PROMPT [--layer L] [--head H] [--temp T] [--top N] [--out DIR]`:
//! runs the prompt once with an observer on the forward pass and walks through the nine
//! stages of a language model with this prompt's real numbers; `--out` adds pictures and
//! one JSON file of everything printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use ember::model::observe::{self, Observer, Stage, View};
use ember::{Context, ContextParams, Model, ModelParams, Sampler, SamplerParams, TokenizerKind};
use serde_json::{json, Value};

mod png;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// The prompt to explain (a repeated phrase shows induction heads at work).
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// The layer whose attention heads are shown (default: the middle one).
    #[arg(long)]
    layer: Option<usize>,
    /// The head drawn large with `--out` (default 0).
    #[arg(long, default_value_t = 0)]
    head: usize,
    /// Sampling temperature of the next-token stage.
    #[arg(long = "temp", default_value_t = 0.8)]
    temp: f32,
    /// How many next-token candidates to list.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Seed of the sampled token.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Write PNG pictures and explain.json here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One layer's numbers, as the observer saw them (rows of the prompt's tokens).
#[derive(Default, Clone)]
pub struct LayerRec {
    /// Residual after RMSNorm: the attention's input.
    pub attn_in: Vec<f32>,
    pub attn_out: Vec<f32>,
    pub ffn_out: Vec<f32>,
    /// Share of near-zero hidden activations (dense feed-forward only).
    pub sparsity: Option<f64>,
    /// The residual after the layer.
    pub residual: Vec<f32>,
    /// Router choices per token (MoE only).
    pub routes: Vec<Vec<(u32, f32)>>,
}

/// Everything one prompt's forward pass showed, kept for the walkthrough.
#[derive(Default)]
pub struct Recorder {
    pub tokens: Vec<u32>,
    pub embed: Vec<f32>,
    pub layers: Vec<LayerRec>,
    /// (layer, head) → one row of weights per query position.
    pub attn: BTreeMap<(usize, usize), Vec<Vec<f32>>>,
    pub final_norm: Vec<f32>,
    pub logits: Vec<f32>,
}

impl Observer for Recorder {
    fn observe(&mut self, v: &View<'_>) {
        if v.layer != observe::NO_LAYER && self.layers.len() <= v.layer {
            self.layers.resize(v.layer + 1, LayerRec::default());
        }
        let data = v.data.to_vec();
        match v.stage {
            Stage::Tokens => self.tokens.extend_from_slice(v.ids),
            Stage::Embedding => self.embed = data,
            Stage::AttnInput => self.layers[v.layer].attn_in = data,
            Stage::AttnOut => self.layers[v.layer].attn_out = data,
            Stage::FfnOut => self.layers[v.layer].ffn_out = data,
            Stage::Residual => self.layers[v.layer].residual = data,
            Stage::FfnHidden => self.layers[v.layer].sparsity = Some(sparsity(v.data, v.rows)),
            Stage::MoeRoute => {
                let r = v.ids.iter().copied().zip(v.data.iter().copied()).collect();
                self.layers[v.layer].routes.push(r);
            }
            Stage::AttnWeights => self.attn.entry((v.layer, v.head)).or_default().push(data),
            Stage::FinalNorm => self.final_norm = data,
            Stage::Logits => self.logits = data,
            Stage::Query | Stage::Key | Stage::ResidualMid | Stage::FfnInput => {}
        }
    }

    /// Every head of every layer: prompts are short, and induction heads can be anywhere.
    fn wants_attention(&self, _layer: usize, _head: usize) -> bool {
        true
    }
}

/// Share of hidden activations under 1% of their row's largest magnitude: how few of the
/// feed-forward's units a token really uses.
fn sparsity(h: &[f32], rows: usize) -> f64 {
    let mut small = 0usize;
    for r in h.chunks_exact(h.len() / rows.max(1)) {
        let max = r.iter().fold(0f32, |m, v| m.max(v.abs()));
        small += r.iter().filter(|v| v.abs() < 0.01 * max).count();
    }
    small as f64 / h.len().max(1) as f64
}

pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Mean over rows of each row's norm.
fn mean_norm(v: &[f32], d: usize) -> f32 {
    let n = v.len() / d;
    v.chunks_exact(d).map(norm).sum::<f32>() / n.max(1) as f32
}

/// Probabilities of `logits / temp`, in f64 so tiny ones still sum to 1.
pub fn softmax(logits: &[f32], temp: f32) -> Vec<f64> {
    let t = if temp > 0.0 { temp as f64 } else { 1e-6 };
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The `n` largest entries as (index, value), largest first.
pub fn top_n<T: Copy + PartialOrd>(v: &[T], n: usize) -> Vec<(usize, T)> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].partial_cmp(&v[a]).unwrap_or(std::cmp::Ordering::Equal));
    idx.into_iter().take(n).map(|i| (i, v[i])).collect()
}

/// Everything the stages need besides the recorder.
pub struct Ctx<'a> {
    pub model: &'a Model,
    pub args: &'a Args,
    pub layer: usize,
    pub pieces: Vec<String>,
    pub json: serde_json::Map<String, Value>,
}

impl Ctx<'_> {
    pub fn piece(&self, t: u32) -> String {
        let p = self
            .model
            .tokenizer()
            .token_to_piece(t, true)
            .unwrap_or(b"?");
        format!("{:?}", String::from_utf8_lossy(p))
    }
}

pub fn run(a: Args) -> ember::Result<()> {
    let model = Model::load(&a.model, &ModelParams::default())?;
    let c = model.config().clone();
    let tokens = model.tokenizer().encode(&a.prompt, true, true)?;
    if tokens.is_empty() {
        return Err(ember::Error::InvalidArgument(
            "the prompt makes no tokens".into(),
        ));
    }
    let layer = a.layer.unwrap_or(c.n_layer / 2);
    if layer >= c.n_layer || a.head >= c.n_head {
        return Err(ember::Error::InvalidArgument(format!(
            "--layer {layer} --head {}: the model has {} layers of {} heads",
            a.head, c.n_layer, c.n_head
        )));
    }
    let params = ContextParams {
        n_ctx: tokens.len() + 8,
        n_batch: tokens.len().max(1),
        ..ContextParams::default()
    };
    let mut ctx = Context::new(&model, params)?;
    let mut rec = Recorder::default();
    let t0 = Instant::now();
    ctx.decode_observed(&tokens, false, &mut rec)?;
    let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut x = Ctx {
        model: &model,
        args: &a,
        layer,
        pieces: Vec::new(),
        json: serde_json::Map::new(),
    };
    x.pieces = tokens.iter().map(|&t| x.piece(t)).collect();
    println!(
        "ember explain: {} ({}), {} layers, prompt of {} tokens\n",
        c.name.as_deref().unwrap_or("model"),
        c.arch_name,
        c.n_layer,
        tokens.len()
    );
    tokenization(&mut x, &rec);
    embeddings(&mut x, &rec)?;
    positions(&mut x);
    attention(&mut x, &rec);
    gqa(&mut x);
    feed_forward(&mut x, &rec);
    let lens = residual(&mut x, &rec)?;
    let next = next_token(&mut x, &rec)?;
    kv_cache(&mut x, &mut ctx, next, prompt_ms)?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        png::draw_all(&x, &rec, &lens, dir)?;
        let path = dir.join("explain.json");
        let text = serde_json::to_string_pretty(&Value::Object(x.json.clone()))
            .map_err(|e| ember::Error::InvalidArgument(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| io_err(&path, e))?;
        println!("\nwrote pictures and explain.json to {}", dir.display());
    }
    Ok(())
}

pub fn io_err(p: &std::path::Path, e: std::io::Error) -> ember::Error {
    ember::Error::Io {
        path: p.display().to_string(),
        source: e,
    }
}

fn tokenization(x: &mut Ctx<'_>, rec: &Recorder) {
    let tk = x.model.tokenizer();
    let kind = match tk.kind() {
        TokenizerKind::Gpt2Bpe => "byte-level BPE (GPT-2 style merges)",
        TokenizerKind::SentencePiece => "SentencePiece (scored pieces, byte fallback)",
    };
    println!("== 1. Tokenization ==");
    println!(
        "tokenizer: {kind}, pre-tokenizer '{}', vocabulary of {} tokens",
        tk.pre_name(),
        tk.n_vocab()
    );
    println!("the text became {} tokens:", rec.tokens.len());
    for (i, (&t, p)) in rec.tokens.iter().zip(&x.pieces).enumerate() {
        println!("  {i:>3}  id {t:>6}  {p}");
    }
    let toks: Vec<Value> = rec
        .tokens
        .iter()
        .zip(&x.pieces)
        .map(|(&t, p)| json!({"id": t, "piece": p}))
        .collect();
    x.json.insert(
        "tokenization".into(),
        json!({"tokenizer": kind, "pre": tk.pre_name(), "tokens": toks}),
    );
}

fn embeddings(x: &mut Ctx<'_>, rec: &Recorder) -> ember::Result<()> {
    let c = x.model.config();
    let d = c.n_embd;
    println!("\n== 2. Embeddings ==");
    println!(
        "each token id selects one row of a {} x {d} table: a vector of {d} numbers{}",
        c.n_vocab,
        c.embed_scale
            .map_or(String::new(), |s| format!(", scaled by {s:.2}"))
    );
    let norms: Vec<f32> = rec.embed.chunks_exact(d).map(norm).collect();
    for (p, n) in x.pieces.iter().zip(&norms) {
        println!("  |e| = {n:>7.3}  {p}");
    }
    // Nearest tokens of the last token's vector, by cosine over the whole table.
    let last = *rec.tokens.last().unwrap_or(&0);
    let mut e = vec![0.0; d];
    observe::embedding_row(x.model, last, &mut e)?;
    let en = norm(&e).max(1e-12);
    let mut row = vec![0.0; d];
    let mut cos = vec![f32::NEG_INFINITY; c.n_vocab];
    for (t, cs) in cos.iter_mut().enumerate() {
        if t as u32 == last {
            continue;
        }
        observe::embedding_row(x.model, t as u32, &mut row)?;
        let dot: f32 = row.iter().zip(&e).map(|(a, b)| a * b).sum();
        *cs = dot / (norm(&row).max(1e-12) * en);
    }
    let near = top_n(&cos, 5);
    println!("nearest tokens to {} by cosine similarity:", x.piece(last));
    for &(t, s) in &near {
        println!("  {s:>6.3}  {}", x.piece(t as u32));
    }
    let near: Vec<Value> = near
        .iter()
        .map(|&(t, s)| json!({"id": t, "piece": x.piece(t as u32), "cosine": s}))
        .collect();
    x.json.insert(
        "embeddings".into(),
        json!({"dim": d, "norms": norms, "nearest_to": x.piece(last), "nearest": near}),
    );
    Ok(())
}

fn positions(x: &mut Ctx<'_>) {
    let c = x.model.config();
    let r = &c.rope;
    let pairs = r.n_dims / 2;
    println!("\n== 3. Positional encoding (RoPE) ==");
    println!(
        "q and k of each head are rotated by angles that grow with the position: base {}, \
         {} of {} head dimensions in {pairs} pairs",
        r.base, r.n_dims, c.head_dim
    );
    println!("pair i turns by pos * base^(-2i/{}) radians:", r.n_dims);
    let mut rows = Vec::new();
    let mut shown: Vec<usize> = vec![0, 1, 2, pairs / 4, pairs / 2, 3 * pairs / 4, pairs - 1];
    shown.dedup();
    for i in shown.into_iter().filter(|&i| i < pairs) {
        let theta = (r.base as f64).powf(-2.0 * i as f64 / r.n_dims as f64);
        let wave = 2.0 * std::f64::consts::PI / theta;
        println!("  pair {i:>3}: {theta:>10.6} rad/token, wavelength {wave:>12.1} tokens");
        rows.push(json!({"pair": i, "rad_per_token": theta, "wavelength": wave}));
    }
    if c.sliding_window > 0 {
        println!(
            "sliding-window layers see the last {} tokens, with RoPE base {}",
            c.sliding_window, c.rope_swa.base
        );
    }
    x.json.insert(
        "rope".into(),
        json!({"base": r.base, "dims": r.n_dims, "pairs": rows}),
    );
}

/// Score of a previous-token head: mean weight of each query on the token just before it.
fn prev_score(rows: &[Vec<f32>]) -> f32 {
    let s: f32 = rows.iter().skip(1).map(|r| r[r.len() - 2]).sum();
    s / (rows.len().saturating_sub(1)).max(1) as f32
}

/// Score of an induction head: for each token seen before, the mean weight on the token
/// that followed its earlier occurrence ("A B ... A" attends to B). None without repeats.
fn induction_score(rows: &[Vec<f32>], toks: &[u32]) -> Option<f32> {
    let (mut s, mut n) = (0f32, 0usize);
    for t in 1..rows.len() {
        if let Some(j) = (0..t - 1).rev().find(|&j| toks[j] == toks[t]) {
            let row = &rows[t];
            let key0 = t + 1 - row.len();
            if j + 1 >= key0 {
                s += row[j + 1 - key0];
                n += 1;
            }
        }
    }
    (n > 0).then(|| s / n as f32)
}

const NAME_AT: f32 = 0.4;

fn attention(x: &mut Ctx<'_>, rec: &Recorder) {
    let c = x.model.config();
    let l = x.layer;
    println!("\n== 4. Attention (layer {l}) ==");
    println!(
        "each head scores every earlier token by q.k / sqrt({}), softmax makes the scores \
         weights summing to 1; per position, the earlier token it attends to most:",
        c.head_dim
    );
    let mut heads = Vec::new();
    for h in 0..c.n_head {
        let rows = &rec.attn[&(l, h)];
        let mut line = format!("  head {h:>2}:");
        let mut maxes = Vec::new();
        for (t, r) in rows.iter().enumerate() {
            let (j, w) = top_n(r, 1)[0];
            let key = t + 1 - r.len() + j;
            line += &format!(" {t}->{key}({w:.2})");
            maxes.push(json!({"pos": t, "key": key, "weight": w}));
        }
        println!("{line}");
        heads.push(json!({"head": h, "max": maxes}));
    }
    let mut prev = Vec::new();
    let mut ind = Vec::new();
    for (&(il, h), rows) in &rec.attn {
        prev.push((il, h, prev_score(rows)));
        if let Some(s) = induction_score(rows, &rec.tokens) {
            ind.push((il, h, s));
        }
    }
    let mut named = Vec::new();
    for (kind, list, what) in [
        (
            "previous-token",
            &mut prev,
            "mean weight on the token just before",
        ),
        (
            "induction",
            &mut ind,
            "mean weight on the token after the earlier occurrence",
        ),
    ] {
        list.sort_by(|a, b| b.2.total_cmp(&a.2));
        println!("{kind} heads (score: {what}; named at >= {NAME_AT}):");
        if list.is_empty() {
            println!("  none to score: the prompt repeats no token (repeat a phrase to see them)");
        }
        for &(il, h, s) in list.iter().take(3) {
            let tag = if s >= NAME_AT { kind } else { "below the bar" };
            println!("  layer {il:>2} head {h:>2}: {s:.2}  {tag}");
            if s >= NAME_AT {
                named.push(json!({"kind": kind, "layer": il, "head": h, "score": s}));
            }
        }
    }
    x.json.insert(
        "attention".into(),
        json!({"layer": l, "heads": heads, "named": named}),
    );
}

fn gqa(x: &mut Ctx<'_>) {
    let c = x.model.config();
    let group = c.n_head / c.n_head_kv.max(1);
    // f16 cache, keys and values, every layer.
    let per_tok = 2 * c.n_layer * (c.kv_dim() + c.kv_dim_v());
    let without = 2 * c.n_layer * c.n_head * (c.head_dim + c.head_dim_v);
    println!("\n== 5. Multi-head attention and GQA ==");
    println!(
        "{} query heads of {} dimensions, {} key/value heads: {group} query heads share each \
         key/value head",
        c.n_head, c.head_dim, c.n_head_kv
    );
    println!(
        "KV cache: {per_tok} bytes per token (f16), {without} without GQA ({:.1}x smaller)",
        without as f64 / per_tok.max(1) as f64
    );
    x.json.insert(
        "gqa".into(),
        json!({"n_head": c.n_head, "n_head_kv": c.n_head_kv, "group": group,
               "kv_bytes_per_token": per_tok, "kv_bytes_without_gqa": without}),
    );
}

fn feed_forward(x: &mut Ctx<'_>, rec: &Recorder) {
    let c = x.model.config();
    let d = c.n_embd;
    println!("\n== 6. Feed-forward ==");
    match &c.moe {
        Some(m) => println!(
            "Mixture of Experts: a router picks {} of {} experts per token and layer",
            m.n_expert_used, m.n_expert
        ),
        None => println!(
            "gated feed-forward of {} hidden units; sparsity = share of units under 1% of \
             the token's largest",
            c.n_ff
        ),
    }
    println!("layer  |attn out|  |ffn out|  sparsity");
    let mut rows = Vec::new();
    for (il, lr) in rec.layers.iter().enumerate() {
        let (an, fnn) = (mean_norm(&lr.attn_out, d), mean_norm(&lr.ffn_out, d));
        let sp = lr
            .sparsity
            .map_or("-".to_string(), |s| format!("{:.1}%", 100.0 * s));
        println!("{il:>5}  {an:>10.3}  {fnn:>9.3}  {sp:>8}");
        rows.push(
            json!({"layer": il, "attn_out_norm": an, "ffn_out_norm": fnn,
                         "sparsity": lr.sparsity}),
        );
    }
    let mut experts = Vec::new();
    if c.moe.is_some() {
        let l = x.layer;
        println!("experts per token at layer {l} (expert:weight):");
        for (t, r) in rec.layers[l].routes.iter().enumerate() {
            let s: Vec<String> = r.iter().map(|(e, w)| format!("{e}:{w:.2}")).collect();
            println!("  {t:>3} {:<16} {}", x.pieces[t], s.join(" "));
            experts.push(json!({"pos": t, "experts": r}));
        }
        let mut used = std::collections::BTreeSet::new();
        for (il, lr) in rec.layers.iter().enumerate() {
            for r in &lr.routes {
                used.extend(r.iter().map(|&(e, _)| (il, e)));
            }
        }
        println!(
            "{} (layer, expert) pairs ran for this prompt, of {}",
            used.len(),
            c.n_layer * c.moe.as_ref().map_or(0, |m| m.n_expert)
        );
    }
    x.json.insert(
        "feed_forward".into(),
        json!({"layers": rows, "experts_at_layer": experts}),
    );
}

/// The logit lens of every layer and position: (top token, its probability).
pub type Lens = Vec<Vec<(u32, f64)>>;

fn residual(x: &mut Ctx<'_>, rec: &Recorder) -> ember::Result<Lens> {
    let c = x.model.config();
    let d = c.n_embd;
    let n = rec.tokens.len();
    println!("\n== 7. Residual stream, normalization, logit lens ==");
    println!(
        "each block adds its output to the residual stream; RMSNorm rescales the block's \
         input to norm ~sqrt({d}) = {:.1} times its weights. At the last token:",
        (d as f32).sqrt()
    );
    println!("layer  |x| before norm  |norm(x)|  |x| after layer  logit lens (top token if the model stopped here)");
    let mut lens = Vec::new();
    let mut rows = Vec::new();
    for (il, lr) in rec.layers.iter().enumerate() {
        let before = if il == 0 {
            &rec.embed
        } else {
            &rec.layers[il - 1].residual
        };
        let logits = observe::logit_lens(x.model, &lr.residual)?;
        let tops: Vec<(u32, f64)> = logits
            .chunks_exact(c.n_vocab)
            .map(|l| {
                let p = softmax(l, 1.0);
                let (t, pr) = top_n(&p, 1)[0];
                (t as u32, pr)
            })
            .collect();
        let last = |v: &[f32]| norm(&v[(n - 1) * d..n * d]);
        let (b, a, r) = (last(before), last(&lr.attn_in), last(&lr.residual));
        let (t, p) = tops[n - 1];
        println!(
            "{il:>5}  {b:>14.2}  {a:>9.2}  {r:>15.2}  {} ({p:.2})",
            x.piece(t)
        );
        rows.push(json!({"layer": il, "before_norm": b, "after_norm": a, "after_layer": r,
            "lens": tops.iter().map(|&(t, p)| json!({"id": t, "piece": x.piece(t), "p": p})).collect::<Vec<_>>()}));
        lens.push(tops);
    }
    let model_top = top_n(&rec.logits, 1)[0].0 as u32;
    let lens_top = lens.last().map(|l| l[n - 1].0);
    println!(
        "the lens at the last layer gives {}, the model's own top token is {}{}",
        lens_top.map_or("-".into(), |t| x.piece(t)),
        x.piece(model_top),
        if lens_top == Some(model_top) {
            ": the same, as it must be"
        } else {
            ": DIFFERENT"
        }
    );
    println!(
        "final norm of the last token: {:.2}",
        norm(&rec.final_norm[..d.min(rec.final_norm.len())])
    );
    x.json.insert(
        "residual".into(),
        json!({"layers": rows, "model_top": model_top}),
    );
    Ok(lens)
}

fn next_token(x: &mut Ctx<'_>, rec: &Recorder) -> ember::Result<u32> {
    let a = x.args;
    println!("\n== 8. Next-token prediction ==");
    println!(
        "softmax(logits / T) turns {} logits into probabilities; top {}:",
        rec.logits.len(),
        a.top
    );
    let p1 = softmax(&rec.logits, 1.0);
    let pt = softmax(&rec.logits, a.temp);
    println!("  {:>8}  {:>8}  token", "T=1", format!("T={}", a.temp));
    let mut cands = Vec::new();
    for (t, p) in top_n(&p1, a.top) {
        println!("  {p:>8.4}  {:>8.4}  {}", pt[t], x.piece(t as u32));
        cands.push(json!({"id": t, "piece": x.piece(t as u32), "p_t1": p, "p_temp": pt[t]}));
    }
    let mut s = Sampler::new(SamplerParams {
        temperature: a.temp,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: a.seed,
        ..SamplerParams::default()
    })?;
    let tok = s.sample(&rec.logits)?;
    println!(
        "sampled at T={} (seed {}): {} (p = {:.4})",
        a.temp,
        a.seed,
        x.piece(tok),
        pt[tok as usize]
    );
    x.json.insert(
        "next_token".into(),
        json!({"temp": a.temp, "sum_p_t1": p1.iter().sum::<f64>(), "top": cands,
               "sampled": {"id": tok, "piece": x.piece(tok)}}),
    );
    Ok(tok)
}

fn kv_cache(x: &mut Ctx<'_>, ctx: &mut Context, tok: u32, prompt_ms: f64) -> ember::Result<()> {
    let n = ctx.n_past();
    let t0 = Instant::now();
    ctx.decode(&[tok])?;
    let step_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!("\n== 9. KV cache: generation is sequential ==");
    println!(
        "the prompt's {n} tokens ran in one batch ({prompt_ms:.1} ms, observer on); their keys \
         and values stay in the cache, so the sampled token needs one new position only \
         ({step_ms:.1} ms): the cache now holds {} positions, and each next token must wait \
         for the one before it",
        ctx.n_past()
    );
    x.json.insert(
        "kv_cache".into(),
        json!({"prompt_tokens": n, "prompt_ms": prompt_ms, "step_ms": step_ms,
               "n_past": ctx.n_past()}),
    );
    Ok(())
}
