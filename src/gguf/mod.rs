//! The GGUF container: header, metadata, tensor infos and the data section, parsed from
//! untrusted bytes. Every count, length, offset and dimension is checked against the file
//! size with checked arithmetic before it is used, and nothing is allocated in proportion
//! to a count the file has not proved it can hold.

mod storage;
mod value;

use std::collections::HashMap;
use std::path::Path;

pub use storage::{LoadOptions, Storage};
pub use value::{ArrayIter, ArrayRef, ArrayView, Span, StringIter, Value, ValueType};

use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// "GGUF" read as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
const DEFAULT_ALIGNMENT: u64 = 32;
/// Larger alignments only serve to push the data section past the end of a crafted file.
const MAX_ALIGNMENT: u64 = 1 << 20;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;
/// ggml's GGML_MAX_NAME: tensor names must be shorter than this.
const MAX_NAME: usize = 64;
/// Nested arrays deeper than this are refused (they would only exhaust the stack).
const MAX_ARRAY_DEPTH: usize = 8;
/// Smallest possible encodings, used to bound counts before allocating.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// One metadata entry.
#[derive(Clone, Debug)]
pub struct MetaKv {
    pub key: String,
    pub value: Value,
}

/// Where one tensor lives and what it holds.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (contiguous), unused dims are 1.
    pub dims: [u64; MAX_DIMS],
    pub n_dims: usize,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// The shape as llama.cpp prints it (`ne0, ne1, ...`).
    pub fn shape(&self) -> &[u64] {
        &self.dims[..self.n_dims]
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows (everything but the first dimension).
    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }
}

/// An opened GGUF file: parsed and validated header, metadata and tensor infos over the
/// file's bytes, which stay where they are.
pub struct GgufFile {
    storage: Storage,
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Bytes of header, metadata and tensor infos (everything before the data section).
    pub header_bytes: u64,
    kvs: Vec<MetaKv>,
    kv_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("n_kv", &self.kvs.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::gguf(
                field(),
                format!(
                    "needs {n} bytes at offset {} but the file ends at {}",
                    self.pos,
                    self.buf.len()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length-prefixed string, returned as its span in the file.
    fn string(&mut self, field: &dyn Fn() -> String) -> Result<Span> {
        let n = self.u64(&|| format!("{} (length)", field()))?;
        if n > self.remaining() {
            return Err(Error::gguf(
                field(),
                format!(
                    "string length {n} at offset {} runs past the end of the file ({} bytes)",
                    self.pos - 8,
                    self.buf.len()
                ),
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(Span {
            start,
            len: n as usize,
        })
    }
}

/// How many entries to reserve in a Vec for a count read from the file. The count was
/// checked against the minimum encoded size, but an entry takes more memory than its
/// smallest encoding, so reserving the full count could still allocate several times the
/// file size before the entries turn out to be missing. Reserving at most a quarter of the
/// remaining bytes' worth (and for the name index below, about a third) keeps the up-front
/// allocations together below the file size; a genuine file past that bound simply grows
/// its tables as it is parsed.
fn prealloc<T>(count: u64, remaining: u64) -> usize {
    let per_entry = 4 * std::mem::size_of::<T>().max(1) as u64;
    usize::try_from(count.min(remaining / per_entry)).unwrap_or(0)
}

/// The same bound for a name index: a hash table holds up to 8/7 buckets per entry, rounded
/// up to a power of two, each a (String, usize) plus a control byte: at most 76 bytes per
/// reserved entry.
fn prealloc_index(count: u64, remaining: u64) -> usize {
    usize::try_from(count.min(remaining / 256)).unwrap_or(0)
}

fn utf8<'a>(bytes: &'a [u8], field: &dyn Fn() -> String) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        Error::gguf(
            field(),
            format!("not valid UTF-8 (byte {})", e.valid_up_to()),
        )
    })
}

impl GgufFile {
    /// Opens and validates a GGUF file by memory map.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        GgufFile::open_with(path, LoadOptions::default())
    }

    /// Opens a GGUF file with explicit load options.
    pub fn open_with(path: impl AsRef<Path>, opts: LoadOptions) -> Result<GgufFile> {
        GgufFile::from_storage(Storage::open(path.as_ref(), opts)?)
    }

    /// Parses GGUF bytes already in memory (they are copied once into an aligned buffer).
    pub fn from_bytes(data: &[u8]) -> Result<GgufFile> {
        GgufFile::from_storage(Storage::from_bytes(data))
    }

    /// Parses and validates the file held by `storage`.
    pub fn from_storage(storage: Storage) -> Result<GgufFile> {
        let buf = storage.bytes();
        let mut c = Cursor { buf, pos: 0 };
        let magic = c.u32(&|| "magic".into())?;
        if magic != MAGIC {
            return Err(Error::gguf(
                "magic",
                format!(
                    "expected 'GGUF', found {:?}",
                    String::from_utf8_lossy(&magic.to_le_bytes())
                ),
            ));
        }
        let version = c.u32(&|| "version".into())?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(Error::gguf(
                    "version",
                    "GGUF version 1 is not supported (only 2 and 3)",
                ))
            }
            // A big-endian writer stores 2 or 3 as 0x02000000 or 0x03000000.
            v if (1..=3).contains(&v.swap_bytes()) => {
                return Err(Error::gguf(
                    "version",
                    "big-endian GGUF files are not supported",
                ))
            }
            v => {
                return Err(Error::gguf(
                    "version",
                    format!("unknown version {v} (only 2 and 3)"),
                ))
            }
        }
        let n_tensors = c.u64(&|| "n_tensors".into())?;
        let n_kv = c.u64(&|| "n_kv".into())?;
        if n_kv
            .checked_mul(MIN_KV_BYTES)
            .is_none_or(|b| b > c.remaining())
        {
            return Err(Error::gguf(
                "n_kv",
                format!(
                    "{n_kv} key-value pairs cannot fit in the {} bytes left in the file",
                    c.remaining()
                ),
            ));
        }
        if n_tensors
            .checked_mul(MIN_TENSOR_INFO_BYTES)
            .is_none_or(|b| b > c.remaining())
        {
            return Err(Error::gguf(
                "n_tensors",
                format!(
                    "{n_tensors} tensor infos cannot fit in the {} bytes left in the file",
                    c.remaining()
                ),
            ));
        }

        let mut kvs = Vec::with_capacity(prealloc::<MetaKv>(n_kv, c.remaining()));
        let mut kv_index = HashMap::with_capacity(prealloc_index(n_kv, c.remaining()));
        for i in 0..n_kv as usize {
            let kspan = c.string(&|| format!("metadata key #{i}"))?;
            let key = utf8(&buf[kspan.start..kspan.start + kspan.len], &|| {
                format!("metadata key #{i}")
            })?
            .to_string();
            if key.is_empty() {
                return Err(Error::gguf(format!("metadata key #{i}"), "empty key"));
            }
            let field = || format!("metadata '{key}'");
            let ty_id = c.u32(&|| format!("{} (type)", field()))?;
            let ty = ValueType::from_id(ty_id)
                .ok_or_else(|| Error::gguf(field(), format!("unknown value type id {ty_id}")))?;
            let value = read_value(&mut c, ty, 0, &field)?;
            if kv_index.insert(key.clone(), i).is_some() {
                return Err(Error::gguf(field(), "duplicate key"));
            }
            kvs.push(MetaKv { key, value });
        }

        let alignment = match kv_index.get("general.alignment").map(|&i| kvs[i].value) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => {
                let a = match v {
                    Value::U32(a) => a as u64,
                    other => {
                        return Err(Error::gguf(
                            "general.alignment",
                            format!("expected u32, found {}", other.value_type().name()),
                        ))
                    }
                };
                if a == 0 || !a.is_power_of_two() {
                    return Err(Error::gguf(
                        "general.alignment",
                        format!("{a} is not a power of two"),
                    ));
                }
                if a > MAX_ALIGNMENT {
                    return Err(Error::gguf(
                        "general.alignment",
                        format!("{a} is larger than the maximum {MAX_ALIGNMENT}"),
                    ));
                }
                a
            }
        };

        struct Raw {
            name: String,
            dims: [u64; MAX_DIMS],
            n_dims: usize,
            ty: GgmlType,
            rel: u64,
            size: u64,
        }
        let mut raws = Vec::with_capacity(prealloc::<Raw>(n_tensors, c.remaining()));
        let mut tensor_index = HashMap::with_capacity(prealloc_index(n_tensors, c.remaining()));
        for i in 0..n_tensors as usize {
            let nspan = c.string(&|| format!("tensor #{i} name"))?;
            let name = utf8(&buf[nspan.start..nspan.start + nspan.len], &|| {
                format!("tensor #{i} name")
            })?
            .to_string();
            let field = || format!("tensor #{i} '{name}'");
            if name.len() >= MAX_NAME {
                return Err(Error::gguf(
                    field(),
                    format!(
                        "name is {} bytes, the limit is {}",
                        name.len(),
                        MAX_NAME - 1
                    ),
                ));
            }
            let n_dims = c.u32(&|| format!("{} n_dims", field()))? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::gguf(
                    field(),
                    format!("n_dims is {n_dims}, must be 1 to {MAX_DIMS}"),
                ));
            }
            let mut dims = [1u64; MAX_DIMS];
            for (d, dim) in dims.iter_mut().enumerate().take(n_dims) {
                *dim = c.u64(&|| format!("{} dim {d}", field()))?;
                if *dim == 0 {
                    return Err(Error::gguf(field(), format!("dimension {d} is 0")));
                }
            }
            let ty_id = c.u32(&|| format!("{} type", field()))?;
            let ty = GgmlType::from_id(ty_id)
                .map_err(|_| Error::gguf(field(), format!("unknown tensor type id {ty_id}")))?;
            let rel = c.u64(&|| format!("{} offset", field()))?;
            let n_elems = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    Error::gguf(
                        field(),
                        format!("element count {:?} overflows", &dims[..n_dims]),
                    )
                })?;
            if dims[0] % ty.block_size() as u64 != 0 {
                return Err(Error::gguf(
                    field(),
                    format!(
                        "row length {} is not a multiple of the {} block size {}",
                        dims[0],
                        ty,
                        ty.block_size()
                    ),
                ));
            }
            let size = ty
                .row_bytes(n_elems)
                .ok_or_else(|| Error::gguf(field(), "byte size overflows"))?;
            if rel % alignment != 0 {
                return Err(Error::gguf(
                    field(),
                    format!("data offset {rel} is not a multiple of the alignment {alignment}"),
                ));
            }
            if tensor_index.insert(name.clone(), i).is_some() {
                return Err(Error::gguf(field(), "duplicate tensor name"));
            }
            raws.push(Raw {
                name,
                dims,
                n_dims,
                ty,
                rel,
                size,
            });
        }

        let header_bytes = c.pos as u64;
        let file_len = buf.len() as u64;
        let data_offset = header_bytes
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| Error::gguf("data section", "offset overflows"))?;
        if !raws.is_empty() && data_offset > file_len {
            return Err(Error::gguf(
                "data section",
                format!("starts at {data_offset}, past the end of the file ({file_len} bytes)"),
            ));
        }
        let mut tensors = Vec::with_capacity(raws.len());
        for r in raws {
            let offset = data_offset
                .checked_add(r.rel)
                .filter(|o| o.checked_add(r.size).is_some_and(|end| end <= file_len))
                .ok_or_else(|| {
                    Error::gguf(
                        format!("tensor '{}'", r.name),
                        format!(
                            "data ({} bytes at data offset {}) runs past the end of the file ({file_len} bytes)",
                            r.size, r.rel
                        ),
                    )
                })?;
            tensors.push(TensorInfo {
                name: r.name,
                dims: r.dims,
                n_dims: r.n_dims,
                ty: r.ty,
                offset,
                size: r.size,
            });
        }
        // Overlapping tensors would let one weight alias another: refuse them.
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if a.offset + a.size > b.offset {
                return Err(Error::gguf(
                    format!("tensor '{}'", b.name),
                    format!("data overlaps tensor '{}'", a.name),
                ));
            }
        }

        Ok(GgufFile {
            storage,
            version,
            alignment,
            data_offset,
            header_bytes,
            kvs,
            kv_index,
            tensors,
            tensor_index,
        })
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// Heap bytes of the metadata and tensor index (the file's own bytes, when read
    /// rather than mapped, are [`GgufFile::heap_bytes_of_storage`]).
    pub fn heap_bytes(&self) -> usize {
        use crate::heap::{map_bytes, vec_bytes};
        let keys = |it: &mut dyn Iterator<Item = &String>| it.map(String::capacity).sum::<usize>();
        vec_bytes(&self.kvs)
            + keys(&mut self.kvs.iter().map(|kv| &kv.key))
            + map_bytes(&self.kv_index)
            + keys(&mut self.kv_index.keys())
            + vec_bytes(&self.tensors)
            + keys(&mut self.tensors.iter().map(|t| &t.name))
            + map_bytes(&self.tensor_index)
            + keys(&mut self.tensor_index.keys())
    }

    /// Heap bytes of the file's own bytes: 0 when mapped, the copy when read.
    pub fn heap_bytes_of_storage(&self) -> u64 {
        self.storage.heap_bytes() as u64
    }

    /// Whether the file is memory-mapped.
    pub fn is_mapped(&self) -> bool {
        self.storage.is_mapped()
    }

    /// Metadata entries in file order.
    pub fn metadata(&self) -> &[MetaKv] {
        &self.kvs
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Looks up a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor, in place in the file.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        // Bounds were checked at open; a TensorInfo built by hand (its fields are public)
        // gets an empty slice instead of a panic or an overflow.
        let range = usize::try_from(t.offset).ok().zip(
            t.offset
                .checked_add(t.size)
                .and_then(|e| usize::try_from(e).ok()),
        );
        match range {
            Some((start, end)) => self.bytes().get(start..end).unwrap_or(&[]),
            None => &[],
        }
    }

    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv_index.get(key).map(|&i| &self.kvs[i].value)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.kv_index.contains_key(key)
    }

    fn require(&self, key: &str, what: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| Error::meta(key, format!("missing (expected {what})")))
    }

    fn int_as<T: TryFrom<i128>>(&self, key: &str, what: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_integer() {
                Some(x) => T::try_from(x).map(Some).map_err(|_| {
                    Error::meta(key, format!("expected {what}, value {x} is out of range"))
                }),
                None => Err(Error::meta(
                    key,
                    format!("expected {what}, found {}", v.value_type().name()),
                )),
            },
        }
    }

    /// An unsigned 32-bit value (any integer type whose value fits).
    pub fn u32(&self, key: &str) -> Result<u32> {
        self.u32_opt(key)?
            .ok_or_else(|| Error::meta(key, "missing (expected u32)"))
    }

    pub fn u32_opt(&self, key: &str) -> Result<Option<u32>> {
        self.int_as::<u32>(key, "u32")
    }

    /// A signed 32-bit value (any integer type whose value fits).
    pub fn i32(&self, key: &str) -> Result<i32> {
        self.i32_opt(key)?
            .ok_or_else(|| Error::meta(key, "missing (expected i32)"))
    }

    pub fn i32_opt(&self, key: &str) -> Result<Option<i32>> {
        self.int_as::<i32>(key, "i32")
    }

    /// An unsigned 64-bit value (any integer type whose value fits).
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.u64_opt(key)?
            .ok_or_else(|| Error::meta(key, "missing (expected u64)"))
    }

    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>> {
        self.int_as::<u64>(key, "u64")
    }

    /// A signed 64-bit value (any integer type whose value fits).
    pub fn i64(&self, key: &str) -> Result<i64> {
        self.i64_opt(key)?
            .ok_or_else(|| Error::meta(key, "missing (expected i64)"))
    }

    pub fn i64_opt(&self, key: &str) -> Result<Option<i64>> {
        self.int_as::<i64>(key, "i64")
    }

    /// A double (f64, or f32 widened exactly).
    pub fn f64(&self, key: &str) -> Result<f64> {
        match self.require(key, "f64")? {
            Value::F64(x) => Ok(*x),
            Value::F32(x) => Ok(*x as f64),
            v => Err(Error::meta(
                key,
                format!("expected f64, found {}", v.value_type().name()),
            )),
        }
    }

    /// A float (f32, or f64 narrowed).
    pub fn f32(&self, key: &str) -> Result<f32> {
        self.f32_opt(key)?
            .ok_or_else(|| Error::meta(key, "missing (expected f32)"))
    }

    pub fn f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(Error::meta(
                key,
                format!("expected f32, found {}", v.value_type().name()),
            )),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool> {
        self.bool_opt(key)?
            .ok_or_else(|| Error::meta(key, "missing (expected bool)"))
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Error::meta(
                key,
                format!("expected bool, found {}", v.value_type().name()),
            )),
        }
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Result<&str> {
        match self.require(key, "string")? {
            Value::Str(s) => self.span_str(key, *s),
            v => Err(Error::meta(
                key,
                format!("expected string, found {}", v.value_type().name()),
            )),
        }
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        if self.contains(key) {
            self.str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    fn span_str(&self, key: &str, s: Span) -> Result<&str> {
        let bytes = &self.bytes()[s.start..s.start + s.len];
        std::str::from_utf8(bytes).map_err(|e| {
            Error::meta(
                key,
                format!("string is not valid UTF-8 (byte {})", e.valid_up_to()),
            )
        })
    }

    /// An array value.
    pub fn array<'a>(&'a self, key: &'a str) -> Result<ArrayView<'a>> {
        match self.require(key, "array")? {
            Value::Array(arr) => Ok(ArrayView {
                key,
                file: self.bytes(),
                arr: *arr,
            }),
            v => Err(Error::meta(
                key,
                format!("expected array, found {}", v.value_type().name()),
            )),
        }
    }

    pub fn array_opt<'a>(&'a self, key: &'a str) -> Result<Option<ArrayView<'a>>> {
        if self.contains(key) {
            self.array(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The value of `key` rendered as text, for display and for the C API's
    /// "any key as a string". Arrays show their type and length and up to `max_items` items.
    pub fn value_to_string(&self, key: &str, max_items: usize) -> Option<String> {
        let v = self.get(key)?;
        Some(self.render(key, v, max_items))
    }

    fn render(&self, key: &str, v: &Value, max_items: usize) -> String {
        match v {
            Value::Str(s) => match self.span_str(key, *s) {
                Ok(s) => s.to_string(),
                Err(_) => {
                    String::from_utf8_lossy(&self.bytes()[s.start..s.start + s.len]).into_owned()
                }
            },
            Value::Array(a) => {
                let view = ArrayView {
                    key,
                    file: self.bytes(),
                    arr: *a,
                };
                let mut items: Vec<String> = Vec::new();
                if a.elem == ValueType::String {
                    if let Ok(it) = view.strings() {
                        items = it
                            .take(max_items)
                            .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
                            .collect();
                    }
                } else if let Some(size) = a.elem.fixed_size() {
                    let raw = &self.bytes()[a.bytes.start..a.bytes.start + a.bytes.len];
                    items = raw
                        .chunks_exact(size)
                        .take(max_items)
                        .map(|c| scalar_to_string(&value::read_scalar(a.elem, c)))
                        .collect();
                } else {
                    items.push("...".into());
                }
                let more = if a.len > items.len() { ", ..." } else { "" };
                format!(
                    "[{}{}] ({} x {})",
                    items.join(", "),
                    more,
                    a.len,
                    a.elem.name()
                )
            }
            other => scalar_to_string(other),
        }
    }
}

fn scalar_to_string(v: &Value) -> String {
    match v {
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
        Value::Str(_) | Value::Array(_) => String::new(),
    }
}

fn read_value(
    c: &mut Cursor<'_>,
    ty: ValueType,
    depth: usize,
    field: &dyn Fn() -> String,
) -> Result<Value> {
    if let Some(size) = ty.fixed_size() {
        let b = c.take(size as u64, field)?;
        let v = value::read_scalar(ty, b);
        if ty == ValueType::Bool && b[0] > 1 {
            return Err(Error::gguf(
                field(),
                format!("bool value is {}, must be 0 or 1", b[0]),
            ));
        }
        return Ok(v);
    }
    match ty {
        ValueType::String => Ok(Value::Str(c.string(field)?)),
        ValueType::Array => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(Error::gguf(
                    field(),
                    format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
                ));
            }
            let elem_id = c.u32(&|| format!("{} (array element type)", field()))?;
            let elem = ValueType::from_id(elem_id).ok_or_else(|| {
                Error::gguf(field(), format!("unknown array element type id {elem_id}"))
            })?;
            let n = c.u64(&|| format!("{} (array length)", field()))?;
            let start = c.pos;
            // The smallest element of each type bounds how many the rest of the file can hold.
            let min_elem = match elem {
                ValueType::String => 8,
                ValueType::Array => 12,
                t => t.fixed_size().unwrap_or(1) as u64,
            };
            if n.checked_mul(min_elem).is_none_or(|b| b > c.remaining()) {
                return Err(Error::gguf(
                    field(),
                    format!(
                        "array of {n} {} elements cannot fit in the {} bytes left in the file",
                        elem.name(),
                        c.remaining()
                    ),
                ));
            }
            match elem {
                ValueType::String => {
                    for i in 0..n {
                        c.string(&|| format!("{} element {i}", field()))?;
                    }
                }
                ValueType::Array => {
                    for i in 0..n {
                        let f = || format!("{} element {i}", field());
                        read_value(c, ValueType::Array, depth + 1, &f)?;
                    }
                }
                ValueType::Bool => {
                    let b = c.take(n, field)?;
                    if let Some(i) = b.iter().position(|&x| x > 1) {
                        return Err(Error::gguf(
                            field(),
                            format!("bool element {i} is {}, must be 0 or 1", b[i]),
                        ));
                    }
                }
                t => {
                    c.take(n * t.fixed_size().unwrap_or(1) as u64, field)?;
                }
            }
            Ok(Value::Array(ArrayRef {
                elem,
                len: n as usize,
                bytes: Span {
                    start,
                    len: c.pos - start,
                },
            }))
        }
        _ => unreachable!("fixed-size types handled above"),
    }
}
