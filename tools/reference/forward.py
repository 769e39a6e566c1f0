"""The exact reference forward pass, in float64, of every model family ember runs.

    from reference import forward
    m = forward.load("model.gguf")
    lp = forward.logprobs(m, [token ids])   # (n_tokens, n_vocab) float64 log-softmax, teacher-forced

What is "exact" here: the weights are the file's weights, dequantized by the gguf package
(gguf.quants.dequantize, the same f32 arithmetic as ggml's dequantize_row_*), widened to
float64; from there every operation is float64 with the textbook formula: RMSNorm, RoPE with
float64 angles, softmax over all keys, SiLU x*sigmoid(x), GELU with the tanh approximation
(what Gemma's `gelu_pytorch_tanh` is; ggml's CPU GELU uses a table of that same function), no
quantization of activations, no f16 KV cache. llama.cpp's source (src/models/<arch>.cpp,
llama-graph.cpp, llama-model.cpp at commit 0c1e570) is the specification of the GGUF layout
(tensor names, metadata keys, defaults); the model papers / HF definitions decide semantics
where llama.cpp knowingly deviates (sliding window on arch llama: see attention()).

Families (by general.architecture and tensors present):
  llama     RMSNorm pre-norm, separate q/k/v, "normal" RoPE (GPT-J style adjacent pairs),
            SwiGLU FFN; optional rope_freqs.weight (Llama 3: per-frequency divisors);
            optional llama.attention.sliding_window (Mistral: each query sees its last W keys,
            itself included); experts when llama.expert_count > 0 (Mixtral: softmax router,
            top-k, weights renormalised over the chosen k)
  qwen2     llama block + q/k/v biases, NEOX RoPE (rotate halves)
  qwen3     NEOX RoPE, per-head RMSNorm of q and k before RoPE (attn_q_norm/attn_k_norm [head])
  qwen2moe  qwen2 attention; MoE with softmax router, top-k, NOT renormalised
            (Qwen1.5-MoE norm_topk_prob = false) + a shared expert whose output is scaled by
            sigmoid(x . ffn_gate_inp_shexp)
  qwen3moe  qwen3 attention; MoE softmax router, top-k, renormalised (llama.cpp always
            renormalises for qwen3moe, as the released configs' norm_topk_prob = true)
  olmoe     NEOX RoPE; RMSNorm of the whole q vector and whole k vector (weights [n_head*head]
            and [n_head_kv*head]) before splitting into heads and RoPE; MoE softmax router,
            top-k, NOT renormalised (OLMoE norm_topk_prob = false)
  phi3      fused attn_qkv (q | k | v rows), fused ffn_up (gate rows first, then up), NEOX
            RoPE, LongRoPE: rope_factors_short/long divide the frequencies; llama.cpp picks
            long iff the context size n_ctx > rope.scaling.original_context_length (not by
            position), so the reference takes n_ctx (default 512, the fixtures' context);
            cos and sin are multiplied by rope.scaling.attn_factor (HF's LongRoPE scaling_factor)
  gemma2    embeddings * sqrt(n_embd); NEOX RoPE; q scaled by 1/sqrt(head_dim) (query_pre_attn_scalar
            = head_dim for all but 27B); attention logits soft-capped c*tanh(s/c); post-attention
            and post-FFN RMSNorms (sandwich); GELU(tanh) gated FFN; final logits soft-capped;
            sliding window on layers with il % 2 == 0 (llama.cpp's default pattern 2)
  gemma3    gemma2 without soft-caps (final cap only if the key is present); per-head q/k
            RMSNorm; sliding layers il % 6 < 5 (pattern 6), which use rope base
            rope.freq_base_swa (default 10000), global layers rope.freq_base
GQA: query head h uses KV head h // (n_head / n_head_kv) (ggml's broadcast).
Gemma's norm weights are stored with the +1 already added by the converter, so every RMSNorm
here is x / sqrt(mean(x^2) + eps) * w.
"""
import math

import numpy as np
import gguf


class Model:
    """A GGUF file's metadata and lazily dequantized float64 tensors."""

    def __init__(self, path):
        self.path = path
        r = gguf.GGUFReader(path)
        self.meta = {}
        for k, f in r.fields.items():
            if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores",
                     "tokenizer.ggml.token_type"):
                continue
            self.meta[k] = f.contents()
        self.arch = self.meta["general.architecture"]
        self._t = {t.name: t for t in r.tensors}
        self._cache = {}
        a = self.arch
        g = lambda k, d=None: self.meta.get(f"{a}.{k}", d)  # noqa: E731
        self.n_embd = g("embedding_length")
        self.n_layer = g("block_count")
        self.n_head = g("attention.head_count")
        self.n_head_kv = g("attention.head_count_kv", self.n_head)
        self.head_k = g("attention.key_length", self.n_embd // self.n_head)
        self.head_v = g("attention.value_length", self.n_embd // self.n_head)
        self.n_rot = g("rope.dimension_count", self.head_k)
        self.eps = g("attention.layer_norm_rms_epsilon")
        self.rope_base = g("rope.freq_base", 10000.0)
        scale = g("rope.scaling.factor", 0.0) or 0.0
        self.rope_freq_scale = 1.0 / scale if scale else 1.0
        self.n_expert = g("expert_count", 0)
        self.n_expert_used = g("expert_used_count", 0)
        self.n_swa = g("attention.sliding_window", 0)
        self.attn_softcap = g("attn_logit_softcapping")
        self.final_softcap = g("final_logit_softcapping")
        self.n_ctx_orig = g("rope.scaling.original_context_length", g("context_length"))
        self.rope_attn_factor = g("rope.scaling.attn_factor", 1.0)
        self.rope_base_swa = g("rope.freq_base_swa", 10000.0)

    def has(self, name):
        return name in self._t

    def w(self, name):
        """float64 numpy array in numpy order (ggml {ne0, ne1, ne2} -> shape (ne2, ne1, ne0))."""
        if name not in self._cache:
            t = self._t[name]
            a = gguf.quants.dequantize(t.data, t.tensor_type)
            shape = tuple(int(x) for x in reversed(t.shape))
            self._cache[name] = np.asarray(a, dtype=np.float64).reshape(shape)
        return self._cache[name]


def load(path):
    return Model(path)


# ---------------------------------------------------------------- shared operations

def rms_norm(x, w, eps):
    """RMSNorm (Zhang & Sennrich 2019) over the last axis, as ggml_rms_norm then * w."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def rope(x, pos, n_rot, base, neox, factors=None, freq_scale=1.0, mscale=1.0):
    """Rotary embedding (Su et al. 2021) of x (T, H, d) at positions pos (T,), as ggml_rope_ext
    with ext_factor = 0: angle = pos * freq_scale * base^(-2i/n_rot) / factors[i];
    cos and sin scaled by mscale (LongRoPE's attention factor). neox pairs (i, i + n_rot/2),
    otherwise (2i, 2i + 1). Dimensions past n_rot pass through."""
    half = n_rot // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / n_rot)
    if factors is not None:
        inv = inv / np.asarray(factors, dtype=np.float64)
    ang = (np.asarray(pos, dtype=np.float64) * freq_scale)[:, None] * inv[None, :]  # (T, half)
    c = (np.cos(ang) * mscale)[:, None, :]
    s = (np.sin(ang) * mscale)[:, None, :]
    out = x.copy()
    if neox:
        x0, x1 = x[..., :half], x[..., half:n_rot]
        out[..., :half] = x0 * c - x1 * s
        out[..., half:n_rot] = x0 * s + x1 * c
    else:
        x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = x0 * c - x1 * s
        out[..., 1:n_rot:2] = x0 * s + x1 * c
    return out


def attention(q, k, v, scale, window=0, softcap=None):
    """Causal multi-head attention with GQA. q (T, H, d), k/v (T, Hkv, d). window > 0: query i
    sees keys j with i - W < j <= i (llama.cpp's LLAMA_SWA_TYPE_STANDARD masks p1 - p0 >= W;
    Mistral's / Gemma's sliding window). softcap: scores -> c * tanh(scores / c) (Gemma 2)."""
    T, H, _ = q.shape
    hkv = k.shape[1]
    rep = H // hkv
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    mask = j <= i
    if window:
        mask &= (i - j) < window
    out = np.empty((T, H, v.shape[2]))
    for h in range(H):
        s = (q[:, h, :] @ k[:, h // rep, :].T) * scale
        if softcap:
            s = softcap * np.tanh(s / softcap)
        s = np.where(mask, s, -np.inf)
        out[:, h, :] = softmax(s) @ v[:, h // rep, :]
    return out.reshape(T, -1)


def linear(x, m, name):
    y = x @ m.w(name + ".weight").T
    if m.has(name + ".bias"):
        y = y + m.w(name + ".bias")
    return y


def moe(x, m, p, norm_w, gaps=None):
    """Sparse MoE FFN (Shazeer et al. 2017; Mixtral): router softmax over all experts, the top-k
    (ties: lower expert id) weighted by their softmax probabilities, renormalised to sum 1 iff
    norm_w; each expert is a SwiGLU FFN. gaps (a list) receives, per token, the probability
    gap between the k-th and (k+1)-th expert: how close the selection is to flipping."""
    probs = softmax(x @ m.w(p + "ffn_gate_inp.weight").T)  # (T, n_expert)
    if gaps is not None:
        srt = -np.sort(-probs, axis=1)
        k = m.n_expert_used
        gaps.append(srt[:, k - 1] - srt[:, k] if k < srt.shape[1] else np.ones(x.shape[0]))
    gate, up, down = m.w(p + "ffn_gate_exps.weight"), m.w(p + "ffn_up_exps.weight"), m.w(p + "ffn_down_exps.weight")
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        sel = np.argsort(-probs[t], kind="stable")[:m.n_expert_used]
        wts = probs[t, sel]
        if norm_w:
            wts = wts / wts.sum()
        for e, we in zip(sel, wts):
            h = silu(gate[e] @ x[t]) * (up[e] @ x[t])
            out[t] += we * (down[e] @ h)
    return out


# ---------------------------------------------------------------- the forward pass

NEOX = {"qwen2", "qwen3", "qwen2moe", "qwen3moe", "olmoe", "phi3", "gemma2", "gemma3"}
SUPPORTED = NEOX | {"llama"}


def logprobs(m, tokens, n_ctx=512, trace=None):
    """Teacher-forced log-softmax (T, n_vocab) of the next token after each prefix of tokens.
    n_ctx is the context size the engine runs with; it matters only for phi3's LongRoPE
    (short factors iff n_ctx <= original_context_length). trace (a dict) receives, for MoE
    models, "router_gap": per position the smallest k-th vs (k+1)-th router probability gap
    over the layers."""
    gaps = [] if trace is not None else None
    a = m.arch
    if a not in SUPPORTED:
        raise ValueError(f"reference: architecture {a} not supported")
    tokens = np.asarray(tokens)
    T = len(tokens)
    pos = np.arange(T)
    gemma = a in ("gemma2", "gemma3")
    x = m.w("token_embd.weight")[tokens].copy()
    if gemma:
        x *= math.sqrt(m.n_embd)  # Gemma scales the embeddings by sqrt(hidden size)
    neox = a in NEOX
    hq, hk = m.n_head * m.head_k, m.n_head_kv * m.head_k
    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = rms_norm(x, m.w(p + "attn_norm.weight"), m.eps)
        if m.has(p + "attn_qkv.weight"):  # phi3: fused projection, rows q | k | v
            qkv = linear(h, m, p + "attn_qkv")
            q, k, v = qkv[:, :hq], qkv[:, hq:hq + hk], qkv[:, hq + hk:]
        else:
            q, k, v = linear(h, m, p + "attn_q"), linear(h, m, p + "attn_k"), linear(h, m, p + "attn_v")
        if a == "olmoe":  # norm over the whole projection, before splitting into heads
            q = rms_norm(q, m.w(p + "attn_q_norm.weight"), m.eps)
            k = rms_norm(k, m.w(p + "attn_k_norm.weight"), m.eps)
        q = q.reshape(T, m.n_head, m.head_k)
        k = k.reshape(T, m.n_head_kv, m.head_k)
        v = v.reshape(T, m.n_head_kv, m.head_v)
        if a in ("qwen3", "qwen3moe", "gemma3"):  # per-head norms, before RoPE
            q = rms_norm(q, m.w(p + "attn_q_norm.weight"), m.eps)
            k = rms_norm(k, m.w(p + "attn_k_norm.weight"), m.eps)

        # Which layers slide, and their rope base (llama.cpp's hparams.is_swa / get_rope_freq_base).
        window = 0
        base = m.rope_base
        if a == "gemma2":
            window = m.n_swa if m.n_swa and il % 2 == 0 else 0
        elif a == "gemma3":
            if m.n_swa and il % 6 < 5:
                window, base = m.n_swa, m.rope_base_swa
        elif a == "llama":
            window = m.n_swa  # Mistral semantics; llama.cpp ignores the key for arch llama
        factors, mscale = None, 1.0
        if m.has("rope_freqs.weight"):
            factors = m.w("rope_freqs.weight")
        elif m.has("rope_factors_short.weight") or m.has("rope_factors_long.weight"):
            long = n_ctx > m.n_ctx_orig
            factors = m.w("rope_factors_long.weight" if long else "rope_factors_short.weight")
        if a == "phi3":
            mscale = m.rope_attn_factor
        q = rope(q, pos, m.n_rot, base, neox, factors, m.rope_freq_scale, mscale)
        k = rope(k, pos, m.n_rot, base, neox, factors, m.rope_freq_scale, mscale)
        # gemma: query_pre_attn_scalar = head_dim (llama.cpp: 1/sqrt(n_embd/n_head) only for 27B)
        scale = 1.0 / math.sqrt(m.head_k)
        softcap = (m.attn_softcap or 50.0) if a == "gemma2" else None  # llama.cpp default 50
        o = attention(q, k, v, scale, window, softcap)
        o = linear(o, m, p + "attn_output")
        if gemma:
            o = rms_norm(o, m.w(p + "post_attention_norm.weight"), m.eps)
        x = x + o

        h = rms_norm(x, m.w(p + "ffn_norm.weight"), m.eps)
        if a == "phi3":  # fused ffn_up: first half gate, second half up (ggml_swiglu)
            gu = linear(h, m, p + "ffn_up")
            n = gu.shape[1] // 2
            f = linear(silu(gu[:, :n]) * gu[:, n:], m, p + "ffn_down")
        elif m.has(p + "ffn_gate_inp.weight"):
            norm_w = a in ("llama", "qwen3moe")  # mixtral, qwen3moe renormalise; qwen2moe, olmoe don't
            f = moe(h, m, p, norm_w, gaps)
            if m.has(p + "ffn_gate_inp_shexp.weight"):  # qwen2moe shared expert, sigmoid-gated
                g = 1.0 / (1.0 + np.exp(-(h @ m.w(p + "ffn_gate_inp_shexp.weight"))))
                sh = linear(silu(linear(h, m, p + "ffn_gate_shexp")) * linear(h, m, p + "ffn_up_shexp"),
                            m, p + "ffn_down_shexp")
                f = f + g[:, None] * sh
        else:
            act = gelu_tanh if gemma else silu
            f = linear(act(linear(h, m, p + "ffn_gate")) * linear(h, m, p + "ffn_up"), m, p + "ffn_down")
        if gemma:
            f = rms_norm(f, m.w(p + "post_ffw_norm.weight"), m.eps)
        x = x + f

    if gaps:
        trace["router_gap"] = np.min(np.stack(gaps), axis=0)
    x = rms_norm(x, m.w("output_norm.weight"), m.eps)
    out = m.w("output.weight") if m.has("output.weight") else m.w("token_embd.weight")
    logits = x @ out.T
    if a == "gemma2" or (a == "gemma3" and m.final_softcap):
        c = m.final_softcap if m.final_softcap else 30.0
        logits = c * np.tanh(logits / c)
    return log_softmax(logits)
