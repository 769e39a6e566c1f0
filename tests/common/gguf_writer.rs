//! A GGUF writer for tests. It writes every metadata value type, nested arrays and tensors
//! of any type, and it can lie about any count, length, type id, dimension or offset, so
//! the corrupt-file tests can build each defect on purpose. It also records where every
//! section starts and which field the reader should blame when the file is cut there.

pub const MAGIC: [u8; 4] = *b"GGUF";

/// Tensor data ending beyond this offset is not written at all.
const PLACE_LIMIT: u64 = 1 << 24;

/// GGUF metadata value type ids.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A metadata value as it will be encoded.
#[derive(Clone, Debug)]
pub enum Val {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array whose header declares element type `.0`; the items are encoded as
    /// themselves, so a declared type that differs from the items is a lie.
    Array(u32, Vec<Val>),
    /// A string whose length prefix says `len` but whose bytes are `bytes`.
    RawStr {
        len: u64,
        bytes: Vec<u8>,
    },
    /// An array header claiming `count` elements of type `elem`, followed by `payload`.
    RawArray {
        elem: u32,
        count: u64,
        payload: Vec<u8>,
    },
    /// A value of type id `.0` whose payload is the raw bytes `.1`.
    Raw(u32, Vec<u8>),
}

impl Val {
    pub fn str(s: &str) -> Val {
        Val::Str(s.to_string())
    }

    pub fn strs(items: &[&str]) -> Val {
        Val::Array(ty::STRING, items.iter().map(|s| Val::str(s)).collect())
    }

    pub fn type_id(&self) -> u32 {
        match self {
            Val::U8(_) => ty::U8,
            Val::I8(_) => ty::I8,
            Val::U16(_) => ty::U16,
            Val::I16(_) => ty::I16,
            Val::U32(_) => ty::U32,
            Val::I32(_) => ty::I32,
            Val::F32(_) => ty::F32,
            Val::Bool(_) => ty::BOOL,
            Val::Str(_) | Val::RawStr { .. } => ty::STRING,
            Val::U64(_) => ty::U64,
            Val::I64(_) => ty::I64,
            Val::F64(_) => ty::F64,
            Val::Array(..) | Val::RawArray { .. } => ty::ARRAY,
            Val::Raw(t, _) => *t,
        }
    }

    /// The encoding without the leading type id (the form array elements take).
    pub fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            Val::U8(v) => out.push(*v),
            Val::I8(v) => out.push(*v as u8),
            Val::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Val::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Val::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Val::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Val::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Val::Bool(v) => out.push(*v as u8),
            Val::Str(s) => {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Val::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Val::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Val::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Val::Array(elem, items) => {
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for it in items {
                    // Nested arrays carry their own element type and count.
                    it.write_payload(out);
                }
            }
            Val::RawStr { len, bytes } => {
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Val::RawArray {
                elem,
                count,
                payload,
            } => {
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(payload);
            }
            Val::Raw(_, bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// One tensor: its info and its data.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ty: u32,
    pub data: Vec<u8>,
    /// Offset relative to the data section; `None` lays tensors out one after another,
    /// each padded to the alignment.
    pub offset: Option<u64>,
    /// Written instead of `dims.len()` when set.
    pub n_dims: Option<u32>,
}

impl Tensor {
    /// A tensor of ggml type `ty` whose data is the right size for `dims`, filled by `fill`.
    pub fn filled(
        name: &str,
        dims: &[u64],
        ty: ember::GgmlType,
        fill: impl FnMut() -> u8,
    ) -> Tensor {
        let n: u64 = dims.iter().product();
        let size = ty.row_bytes(n).expect("whole blocks") as usize;
        let mut fill = fill;
        Tensor::new(name, dims, ty.id(), (0..size).map(|_| fill()).collect())
    }

    pub fn new(name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Tensor {
        Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            data,
            offset: None,
            n_dims: None,
        }
    }
}

/// A GGUF file to write.
#[derive(Clone, Debug)]
pub struct Gguf {
    pub magic: [u8; 4],
    pub version: u32,
    /// Written instead of the real counts when set.
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
    pub kvs: Vec<(String, Val)>,
    pub tensors: Vec<Tensor>,
    /// Alignment used to lay out the data section; defaults to `general.alignment` when it
    /// is a u32, else 32 (as a reader would compute it).
    pub layout_alignment: Option<u64>,
    /// Bytes appended after the last tensor.
    pub trailer: Vec<u8>,
}

/// A written file and a map of its sections.
pub struct Written {
    pub bytes: Vec<u8>,
    /// (start offset, field the reader names when the file ends inside this section).
    pub sections: Vec<(usize, String)>,
    /// End of the tensor infos.
    pub header_end: usize,
    /// Start of the data section.
    pub data_offset: usize,
    /// Absolute data range of each tensor, in file order.
    pub tensor_ranges: Vec<(String, usize, usize)>,
}

impl Written {
    /// The field a reader should name when the file is cut to its first `cut` bytes (cut
    /// shorter than the file).
    pub fn field_at_cut(&self, cut: usize) -> String {
        if cut >= self.header_end {
            if cut < self.data_offset && !self.tensor_ranges.is_empty() {
                return "data section".into();
            }
            // The reader checks tensors in file order: the first one that no longer fits.
            if let Some((name, _, _)) = self.tensor_ranges.iter().find(|(_, _, end)| *end > cut) {
                return format!("tensor '{name}'");
            }
        }
        self.sections
            .iter()
            .rev()
            .find(|(start, _)| *start <= cut)
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| "magic".into())
    }
}

impl Default for Gguf {
    fn default() -> Self {
        Gguf {
            magic: MAGIC,
            version: 3,
            n_tensors: None,
            n_kv: None,
            kvs: Vec::new(),
            tensors: Vec::new(),
            layout_alignment: None,
            trailer: Vec::new(),
        }
    }
}

impl Gguf {
    pub fn kv(mut self, key: &str, v: Val) -> Self {
        self.kvs.push((key.to_string(), v));
        self
    }

    pub fn tensor(mut self, t: Tensor) -> Self {
        self.tensors.push(t);
        self
    }

    pub fn alignment(&self) -> u64 {
        if let Some(a) = self.layout_alignment {
            return a;
        }
        match self.kvs.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Val::U32(a))) if *a != 0 => *a as u64,
            _ => 32,
        }
    }

    pub fn write(&self) -> Written {
        let mut b = Vec::new();
        let mut sections = Vec::new();
        sections.push((0, "magic".to_string()));
        b.extend_from_slice(&self.magic);
        sections.push((b.len(), "version".to_string()));
        b.extend_from_slice(&self.version.to_le_bytes());
        sections.push((b.len(), "n_tensors".to_string()));
        b.extend_from_slice(
            &self
                .n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        sections.push((b.len(), "n_kv".to_string()));
        b.extend_from_slice(&self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for (i, (k, v)) in self.kvs.iter().enumerate() {
            sections.push((b.len(), format!("metadata key #{i}")));
            Val::str(k).write_payload(&mut b);
            sections.push((b.len(), format!("metadata '{k}'")));
            b.extend_from_slice(&v.type_id().to_le_bytes());
            v.write_payload(&mut b);
        }
        let align = self.alignment().max(1);
        let mut next = 0u64;
        let mut rel_offsets = Vec::new();
        for (i, t) in self.tensors.iter().enumerate() {
            sections.push((b.len(), format!("tensor #{i} name")));
            Val::str(&t.name).write_payload(&mut b);
            sections.push((b.len(), format!("tensor #{i} '{}'", t.name)));
            b.extend_from_slice(&t.n_dims.unwrap_or(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ty.to_le_bytes());
            let off = t.offset.unwrap_or(next);
            b.extend_from_slice(&off.to_le_bytes());
            rel_offsets.push(off);
            next = off
                .saturating_add(t.data.len() as u64)
                .saturating_add(align - 1)
                / align
                * align;
        }
        let header_end = b.len();
        // Without tensors there is no data section to align, and leaving the padding out
        // lets a test make the last value run into the end of the file.
        let data_offset = if self.tensors.is_empty() {
            header_end
        } else {
            (header_end as u64).next_multiple_of(align) as usize
        };
        b.resize(data_offset, 0);
        let mut tensor_ranges = Vec::new();
        for (t, &off) in self.tensors.iter().zip(&rel_offsets) {
            let start = (data_offset as u64).saturating_add(off);
            let end = start.saturating_add(t.data.len() as u64);
            tensor_ranges.push((t.name.clone(), start as usize, end as usize));
            // A test that points a tensor far past the end wants the data missing, not a
            // giant buffer.
            if end > PLACE_LIMIT {
                continue;
            }
            let (start, end) = (start as usize, end as usize);
            if b.len() < end {
                b.resize(end, 0);
            }
            b[start..end].copy_from_slice(&t.data);
        }
        b.extend_from_slice(&self.trailer);
        Written {
            bytes: b,
            sections,
            header_end,
            data_offset,
            tensor_ranges,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.write().bytes
    }
}
