//! Saving and restoring a context: the tokens, their keys and values, and the last logits.
//!
//! A state is untrusted input when it comes back (a file on disk can be truncated or
//! crafted), so loading checks the format, the model it was made with, every size and a
//! checksum before anything in the context changes.
//!
//! Layout (little-endian): magic "EMBS", version u32, model fingerprint u64, kv type u32,
//! k_dim u32, v_dim u32, n_layer u32, n_vocab u32, n_past u64, n_logits u32 (0 or n_vocab),
//! tokens [u32; n_past], per layer K rows then V rows of n_past positions, logits
//! [f32; n_logits], then FNV-1a-64 of everything before it.

use std::path::Path;

use crate::error::{Error, Result};

use super::context::Context;
use crate::fnv::{fnv1a, FNV_INIT};

const MAGIC: &[u8; 4] = b"EMBS";
const VERSION: u32 = 1;
const HEADER: usize = 4 + 4 + 8 + 4 + 4 + 4 + 4 + 4 + 8 + 4;

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::State(format!(
                    "truncated: {what} runs past the end ({} bytes)",
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

impl Context {
    fn kv_row_bytes(&self) -> (usize, usize) {
        (
            self.kv.ty.row_bytes(self.kv.k_dim),
            self.kv.ty.row_bytes(self.kv.v_dim),
        )
    }

    fn saved_logits(&self) -> &[f32] {
        self.logits()
    }

    /// Bytes [`Context::save_state`] writes for the current contents.
    pub fn state_size(&self) -> usize {
        let n_past = self.n_past();
        let (kb, vb) = self.kv_row_bytes();
        HEADER
            + 4 * n_past
            + self.kv.layers.len() * n_past * (kb + vb)
            + 4 * self.saved_logits().len()
            + 8
    }

    /// Writes the state into `out`, returning the bytes written; fails (writing nothing
    /// useful) when `out` is smaller than [`Context::state_size`].
    pub fn save_state_into(&self, out: &mut [u8]) -> Result<usize> {
        let size = self.state_size();
        if out.len() < size {
            return Err(Error::InvalidArgument(format!(
                "state needs {size} bytes, buffer has {}",
                out.len()
            )));
        }
        let n_past = self.n_past();
        let (kb, vb) = self.kv_row_bytes();
        let logits = self.saved_logits();
        let c = self.model().config();
        let mut w = Writer {
            buf: &mut out[..size],
            pos: 0,
        };
        w.put(MAGIC);
        w.put(&VERSION.to_le_bytes());
        w.put(&self.model().fingerprint().to_le_bytes());
        w.put(&(self.kv.ty as u32).to_le_bytes());
        w.put(&(self.kv.k_dim as u32).to_le_bytes());
        w.put(&(self.kv.v_dim as u32).to_le_bytes());
        w.put(&(c.n_layer as u32).to_le_bytes());
        w.put(&(c.n_vocab as u32).to_le_bytes());
        w.put(&(n_past as u64).to_le_bytes());
        w.put(&(logits.len() as u32).to_le_bytes());
        for t in self.tokens() {
            w.put(&t.to_le_bytes());
        }
        for l in &self.kv.layers {
            w.put(&l.k.bytes()[..n_past * kb]);
            w.put(&l.v.bytes()[..n_past * vb]);
        }
        for v in logits {
            w.put(&v.to_le_bytes());
        }
        let h = fnv1a(FNV_INIT, &w.buf[..w.pos]);
        w.put(&h.to_le_bytes());
        Ok(size)
    }

    /// The state as a new byte vector.
    pub fn save_state(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.state_size()];
        // The buffer has exactly the size needed, so this cannot fail.
        let n = self.save_state_into(&mut v).unwrap_or(0);
        v.truncate(n);
        v
    }

    /// Replaces this context's contents with a saved state. On any error the context is
    /// left exactly as it was.
    pub fn load_state(&mut self, data: &[u8]) -> Result<()> {
        if data.len() < HEADER + 8 {
            return Err(Error::State(format!(
                "{} bytes is too short for a state",
                data.len()
            )));
        }
        let (body, sum) = data.split_at(data.len() - 8);
        let mut r = Reader { buf: body, pos: 0 };
        if r.take(4, "magic")? != MAGIC {
            return Err(Error::State("not an ember state (bad magic)".into()));
        }
        let version = r.u32("version")?;
        if version != VERSION {
            return Err(Error::State(format!(
                "state version {version}, this ember reads {VERSION}"
            )));
        }
        let fp = r.u64("model fingerprint")?;
        if fp != self.model().fingerprint() {
            return Err(Error::State(
                "state was saved with a different model".into(),
            ));
        }
        let ty = r.u32("kv type")?;
        if ty != self.kv.ty as u32 {
            return Err(Error::State(format!(
                "state has KV type {ty}, this context uses {}",
                self.kv.ty as u32
            )));
        }
        let c = self.model().config();
        let dims = [
            ("k_dim", r.u32("k_dim")? as usize, self.kv.k_dim),
            ("v_dim", r.u32("v_dim")? as usize, self.kv.v_dim),
            ("n_layer", r.u32("n_layer")? as usize, c.n_layer),
            ("n_vocab", r.u32("n_vocab")? as usize, c.n_vocab),
        ];
        for (what, got, want) in dims {
            if got != want {
                return Err(Error::State(format!(
                    "{what} is {got}, the model has {want}"
                )));
            }
        }
        let n_past = r.u64("n_past")?;
        if n_past > self.n_ctx() as u64 {
            return Err(Error::State(format!(
                "{n_past} positions do not fit n_ctx {}",
                self.n_ctx()
            )));
        }
        let n_past = n_past as usize;
        let n_logits = r.u32("n_logits")? as usize;
        if n_logits != 0 && n_logits != c.n_vocab {
            return Err(Error::State(format!(
                "{n_logits} logits, expected 0 or {}",
                c.n_vocab
            )));
        }
        if n_logits != 0 && n_past == 0 {
            return Err(Error::State("logits without any position".into()));
        }
        let (kb, vb) = self.kv_row_bytes();
        let expected = (kb + vb)
            .checked_mul(n_past)
            .and_then(|x| x.checked_mul(c.n_layer))
            .and_then(|x| x.checked_add(HEADER + 4 * n_past + 4 * n_logits))
            .ok_or_else(|| Error::State("sizes overflow".into()))?;
        if body.len() != expected {
            return Err(Error::State(format!(
                "size is {} bytes, the header implies {}",
                data.len(),
                expected + 8
            )));
        }
        let mut want_sum = [0u8; 8];
        want_sum.copy_from_slice(sum);
        if fnv1a(FNV_INIT, body) != u64::from_le_bytes(want_sum) {
            return Err(Error::State("checksum mismatch (corrupted state)".into()));
        }
        let tok_bytes = r.take(4 * n_past, "tokens")?;
        let n_vocab = c.n_vocab;
        for (i, t) in tok_bytes.chunks_exact(4).enumerate() {
            let t = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
            if t as usize >= n_vocab {
                return Err(Error::State(format!(
                    "token {i} is {t}, outside the vocabulary of {n_vocab}"
                )));
            }
        }
        // Everything is checked: now the context changes.
        self.restore(n_past, tok_bytes, &mut r, kb, vb, n_logits)
    }

    fn restore(
        &mut self,
        n_past: usize,
        tok_bytes: &[u8],
        r: &mut Reader<'_>,
        kb: usize,
        vb: usize,
        n_logits: usize,
    ) -> Result<()> {
        let mut tokens = Vec::with_capacity(n_past);
        tokens.extend(
            tok_bytes
                .chunks_exact(4)
                .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]])),
        );
        for l in self.kv.layers.iter_mut() {
            let k = r.take(n_past * kb, "keys")?;
            l.k.bytes_mut()[..n_past * kb].copy_from_slice(k);
            let v = r.take(n_past * vb, "values")?;
            l.v.bytes_mut()[..n_past * vb].copy_from_slice(v);
        }
        let lb = r.take(4 * n_logits, "logits")?;
        let logits: Vec<f32> = lb
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        self.set_restored(tokens, &logits);
        Ok(())
    }

    /// Saves the state to a file.
    pub fn save_state_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.save_state()).map_err(|e| Error::io(path.display(), e))
    }

    /// The size of the largest state this context can hold (every position filled).
    pub fn max_state_size(&self) -> usize {
        let n = self.n_ctx();
        let (kb, vb) = self.kv_row_bytes();
        HEADER + 4 * n + self.kv.layers.len() * n * (kb + vb) + 4 * self.model().n_vocab() + 8
    }

    /// Loads a state saved with [`Context::save_state_file`]. A file larger than any state
    /// this context can hold is refused before it is read (it may be huge or endless).
    pub fn load_state_file(&mut self, path: impl AsRef<Path>) -> Result<()> {
        use std::io::Read;
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let max = self.max_state_size();
        let mut data = Vec::new();
        file.take(max as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::io(path.display(), e))?;
        if data.len() > max {
            return Err(Error::State(format!(
                "{} is larger than any state of this context ({max} bytes)",
                path.display()
            )));
        }
        self.load_state(&data)
    }
}
