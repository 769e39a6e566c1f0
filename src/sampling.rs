//! Choosing the next token from logits: logit bias, repetition penalties, top-k, top-p,
//! min-p, temperature, then a seeded draw (or greedy), in llama.cpp's order.
//!
//! A sampler is made once and reused: its buffers are sized on first use and never grow,
//! so sampling in a generation loop does not allocate.

use crate::error::{Error, Result};
use crate::tokenizer::Token;

/// Sampling settings. `Default` gives llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// 0 or less: greedy (argmax after bias and penalties).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens (1 = off).
    pub repeat_penalty: f32,
    /// Subtract count * this from recent tokens' logits (0 = off).
    pub frequency_penalty: f32,
    /// Subtract this once from every recent token's logit (0 = off).
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Added to the logits of the given tokens (use `f32::NEG_INFINITY` to ban one).
    pub logit_bias: Vec<(Token, f32)>,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0x5EED,
        }
    }
}

impl SamplerParams {
    /// Plain argmax.
    pub fn greedy() -> SamplerParams {
        SamplerParams {
            temperature: 0.0,
            ..SamplerParams::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidArgument(format!("sampler: {what}")));
        if self.temperature.is_nan() {
            return bad("temperature is NaN");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty must be positive");
        }
        if !self.frequency_penalty.is_finite() || !self.presence_penalty.is_finite() {
            return bad("penalties must be finite");
        }
        if self.logit_bias.iter().any(|(_, b)| b.is_nan()) {
            return bad("a logit bias is NaN");
        }
        Ok(())
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[derive(Clone, Copy, Debug)]
struct Cand {
    id: Token,
    logit: f32,
    p: f32,
}

/// A configured sampling chain with its own RNG and token history.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplerParams,
    rng: Rng,
    /// Ring buffer of the last `penalty_last_n` accepted tokens.
    history: Vec<Token>,
    hist_start: usize,
    cand: Vec<Cand>,
    sorted_hist: Vec<Token>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Result<Sampler> {
        params.validate()?;
        Ok(Sampler {
            rng: Rng::new(params.seed),
            history: Vec::with_capacity(params.penalty_last_n),
            sorted_hist: Vec::with_capacity(params.penalty_last_n),
            hist_start: 0,
            cand: Vec::new(),
            params,
        })
    }

    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Forgets the history and reseeds the RNG.
    pub fn reset(&mut self) {
        self.history.clear();
        self.hist_start = 0;
        self.rng = Rng::new(self.params.seed);
    }

    /// Records a token as part of the text (for the repetition penalties).
    pub fn accept(&mut self, t: Token) {
        let n = self.params.penalty_last_n;
        if n == 0 {
            return;
        }
        if self.history.len() < n {
            self.history.push(t);
        } else {
            self.history[self.hist_start] = t;
            self.hist_start = (self.hist_start + 1) % n;
        }
    }

    /// Chooses the next token from `logits` (one per vocabulary entry).
    pub fn sample(&mut self, logits: &[f32]) -> Result<Token> {
        if logits.is_empty() {
            return Err(Error::InvalidArgument(
                "no logits to sample from (decode first)".into(),
            ));
        }
        if self.cand.capacity() < logits.len() {
            self.cand.reserve_exact(logits.len() - self.cand.len());
        }
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| Cand {
                id: i as Token,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
                p: 0.0,
            }));
        for &(t, b) in &self.params.logit_bias {
            if let Some(c) = self.cand.get_mut(t as usize) {
                c.logit += b;
            }
        }
        self.apply_penalties();

        let p = &self.params;
        if p.temperature <= 0.0 {
            let best = self
                .cand
                .iter()
                .fold(None::<&Cand>, |b, c| match b {
                    Some(b) if b.logit >= c.logit => Some(b),
                    _ => Some(c),
                })
                .map_or(0, |c| c.id);
            return Ok(best);
        }

        let cand = &mut self.cand;
        let by_logit = |a: &Cand, b: &Cand| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(by_logit);
        if cand[0].logit == f32::NEG_INFINITY {
            return Err(Error::InvalidArgument(
                "every token is banned by the logit bias".into(),
            ));
        }

        if p.top_p < 1.0 {
            softmax(cand, 1.0);
            let mut cum = 0.0f32;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                cum += c.p;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let min_logit = cand[0].logit + p.min_p.ln();
            let keep = cand.iter().take_while(|c| c.logit >= min_logit).count();
            cand.truncate(keep.max(1));
        }

        softmax(cand, p.temperature);
        let r = self.rng.next_f64() as f32;
        let mut cum = 0.0f32;
        for c in cand.iter() {
            cum += c.p;
            if r < cum {
                return Ok(c.id);
            }
        }
        Ok(cand[cand.len() - 1].id)
    }

    fn apply_penalties(&mut self) {
        let p = &self.params;
        if self.history.is_empty()
            || (p.repeat_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0)
        {
            return;
        }
        self.sorted_hist.clear();
        self.sorted_hist.extend_from_slice(&self.history);
        self.sorted_hist.sort_unstable();
        let mut i = 0;
        while i < self.sorted_hist.len() {
            let t = self.sorted_hist[i];
            let mut j = i;
            while j < self.sorted_hist.len() && self.sorted_hist[j] == t {
                j += 1;
            }
            let count = (j - i) as f32;
            if let Some(c) = self.cand.get_mut(t as usize) {
                if c.logit <= 0.0 {
                    c.logit *= p.repeat_penalty;
                } else {
                    c.logit /= p.repeat_penalty;
                }
                c.logit -= count * p.frequency_penalty + p.presence_penalty;
            }
            i = j;
        }
    }
}

/// Probabilities of sorted candidates at a temperature (cand[0] has the largest logit).
fn softmax(cand: &mut [Cand], temp: f32) {
    let max = cand[0].logit / temp;
    let mut sum = 0.0f64;
    for c in cand.iter_mut() {
        c.p = (c.logit / temp - max).exp();
        sum += c.p as f64;
    }
    let inv = (1.0 / sum) as f32;
    for c in cand.iter_mut() {
        c.p *= inv;
    }
}

/// Index of the largest logit (ties go to the lowest id).
pub fn argmax(logits: &[f32]) -> Token {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as Token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_after_bias() {
        let mut s = Sampler::new(SamplerParams {
            logit_bias: vec![(2, -10.0)],
            ..SamplerParams::greedy()
        })
        .unwrap();
        assert_eq!(s.sample(&[0.0, 1.0, 5.0, 2.0]).unwrap(), 3);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_differs() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplerParams {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..SamplerParams::default()
            })
            .unwrap();
            (0..50)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerParams {
            temperature: 5.0,
            top_k: 1,
            ..SamplerParams::default()
        })
        .unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 0.3, 0.2]).unwrap(), 1);
        }
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        // p = softmax([10, 9, 0, ...]): the tail is far below 5% of the top.
        let mut logits = vec![0.0f32; 50];
        logits[7] = 10.0;
        logits[8] = 9.0;
        for params in [
            SamplerParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.05,
                ..Default::default()
            },
            SamplerParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.99,
                min_p: 0.0,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(params).unwrap();
            for _ in 0..200 {
                let t = s.sample(&logits).unwrap();
                assert!(t == 7 || t == 8, "{t}");
            }
        }
    }

    #[test]
    fn repetition_penalty_discourages_recent_tokens() {
        let mut s = Sampler::new(SamplerParams {
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            ..SamplerParams::greedy()
        })
        .unwrap();
        s.accept(0);
        // 3.0 / 2 - 0.5 = 1.0 < 1.2
        assert_eq!(s.sample(&[3.0, 1.2]).unwrap(), 1);
    }

    #[test]
    fn invalid_params_are_errors() {
        assert!(Sampler::new(SamplerParams {
            top_p: 2.0,
            ..Default::default()
        })
        .is_err());
        assert!(Sampler::new(SamplerParams {
            repeat_penalty: 0.0,
            ..Default::default()
        })
        .is_err());
        let mut s = Sampler::new(SamplerParams::default()).unwrap();
        assert!(s.sample(&[]).is_err());
    }

    #[test]
    fn sampling_does_not_reallocate_after_first_call() {
        let logits = vec![0.5f32; 1000];
        let mut s = Sampler::new(SamplerParams::default()).unwrap();
        s.sample(&logits).unwrap();
        let cap = s.cand.capacity();
        for i in 0..100 {
            s.accept(i);
            s.sample(&logits).unwrap();
        }
        assert_eq!(cap, s.cand.capacity());
    }
}
