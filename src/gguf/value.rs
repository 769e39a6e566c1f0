//! GGUF metadata values. Strings and arrays are kept as byte ranges into the file and
//! decoded on demand, so opening a model with a 262k-token vocabulary costs no copies.

use crate::error::{Error, Result};

/// The value type ids of the GGUF format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Encoded size of a scalar of this type (`None` for strings and arrays).
    pub fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// A byte range of the file holding a string's bytes (not yet checked as UTF-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

/// An array: its element type, element count, and the byte range of its encoded elements
/// (already walked and bounds-checked at open time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayRef {
    pub elem: ValueType,
    pub len: usize,
    pub bytes: Span,
}

/// One metadata value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(Span),
    Array(ArrayRef),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// The value as a signed 128-bit integer, for any integer type.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v as i128,
            Value::I8(v) => v as i128,
            Value::U16(v) => v as i128,
            Value::I16(v) => v as i128,
            Value::U32(v) => v as i128,
            Value::I32(v) => v as i128,
            Value::U64(v) => v as i128,
            Value::I64(v) => v as i128,
            _ => return None,
        })
    }
}

/// Reads fixed-size little-endian scalars out of an array's bytes.
pub(crate) fn read_scalar(ty: ValueType, b: &[u8]) -> Value {
    match ty {
        ValueType::U8 => Value::U8(b[0]),
        ValueType::I8 => Value::I8(b[0] as i8),
        ValueType::Bool => Value::Bool(b[0] != 0),
        ValueType::U16 => Value::U16(u16::from_le_bytes([b[0], b[1]])),
        ValueType::I16 => Value::I16(i16::from_le_bytes([b[0], b[1]])),
        ValueType::U32 => Value::U32(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::I32 => Value::I32(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::F32 => Value::F32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::U64 => Value::U64(u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))),
        ValueType::I64 => Value::I64(i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))),
        ValueType::F64 => Value::F64(f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))),
        ValueType::String | ValueType::Array => unreachable!("not a fixed-size type"),
    }
}

/// A borrowed view of an array value, with typed accessors whose errors name the key.
#[derive(Clone, Copy)]
pub struct ArrayView<'a> {
    pub(crate) key: &'a str,
    pub(crate) file: &'a [u8],
    pub(crate) arr: ArrayRef,
}

impl<'a> ArrayView<'a> {
    pub fn len(&self) -> usize {
        self.arr.len
    }

    pub fn is_empty(&self) -> bool {
        self.arr.len == 0
    }

    pub fn elem_type(&self) -> ValueType {
        self.arr.elem
    }

    fn raw(&self) -> &'a [u8] {
        &self.file[self.arr.bytes.start..self.arr.bytes.start + self.arr.bytes.len]
    }

    fn expect(&self, what: &str, ok: bool) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::meta(
                self.key,
                format!(
                    "expected an array of {what}, found an array of {}",
                    self.arr.elem.name()
                ),
            ))
        }
    }

    /// The elements of a string array, as raw bytes (vocabularies may hold byte pieces that
    /// are not valid UTF-8 on their own).
    pub fn strings(&self) -> Result<StringIter<'a>> {
        self.expect("strings", self.arr.elem == ValueType::String)?;
        Ok(StringIter {
            rest: self.raw(),
            left: self.arr.len,
        })
    }

    fn numbers<T>(&self, what: &str, conv: impl Fn(Value) -> Option<T>) -> Result<Vec<T>> {
        let size = self.arr.elem.fixed_size().ok_or_else(|| {
            Error::meta(
                self.key,
                format!(
                    "expected an array of {what}, found an array of {}",
                    self.arr.elem.name()
                ),
            )
        })?;
        let mut out = Vec::with_capacity(self.arr.len);
        for (i, c) in self.raw().chunks_exact(size).enumerate() {
            let v = read_scalar(self.arr.elem, c);
            out.push(conv(v).ok_or_else(|| {
                Error::meta(
                    self.key,
                    format!(
                        "element {i}: expected {what}, found {} {:?}",
                        self.arr.elem.name(),
                        v
                    ),
                )
            })?);
        }
        Ok(out)
    }

    /// A numeric array as f32 (f32 or f64 elements).
    pub fn f32s(&self) -> Result<Vec<f32>> {
        self.numbers("f32", |v| match v {
            Value::F32(x) => Some(x),
            Value::F64(x) => Some(x as f32),
            _ => None,
        })
    }

    /// An integer array as i32 (any integer element type whose values fit).
    pub fn i32s(&self) -> Result<Vec<i32>> {
        self.numbers("i32", |v| {
            v.as_integer().and_then(|x| i32::try_from(x).ok())
        })
    }

    /// An integer array as u32 (any integer element type whose values fit).
    pub fn u32s(&self) -> Result<Vec<u32>> {
        self.numbers("u32", |v| {
            v.as_integer().and_then(|x| u32::try_from(x).ok())
        })
    }

    /// An integer array as u64 (any integer element type whose values fit).
    pub fn u64s(&self) -> Result<Vec<u64>> {
        self.numbers("u64", |v| {
            v.as_integer().and_then(|x| u64::try_from(x).ok())
        })
    }

    /// An integer array as i64 (any integer element type whose values fit).
    pub fn i64s(&self) -> Result<Vec<i64>> {
        self.numbers("i64", |v| {
            v.as_integer().and_then(|x| i64::try_from(x).ok())
        })
    }

    /// A float array as f64 (f32 elements are widened exactly).
    pub fn f64s(&self) -> Result<Vec<f64>> {
        self.numbers("f64", |v| match v {
            Value::F32(x) => Some(x as f64),
            Value::F64(x) => Some(x),
            _ => None,
        })
    }

    /// A bool array.
    pub fn bools(&self) -> Result<Vec<bool>> {
        self.numbers("bool", |v| match v {
            Value::Bool(b) => Some(b),
            _ => None,
        })
    }

    /// The elements of an array of arrays, each as its own view.
    pub fn arrays(&self) -> Result<ArrayIter<'a>> {
        self.expect("arrays", self.arr.elem == ValueType::Array)?;
        Ok(ArrayIter {
            key: self.key,
            file: self.file,
            pos: self.arr.bytes.start,
            end: self.arr.bytes.start + self.arr.bytes.len,
            left: self.arr.len,
        })
    }
}

/// Byte length of `n` encoded elements of type `elem` at the start of `b`, or `None` when
/// they do not fit. Only used on arrays the parser already walked, so `None` means a bug,
/// never a panic.
fn encoded_len(b: &[u8], elem: ValueType, n: usize) -> Option<usize> {
    if let Some(size) = elem.fixed_size() {
        let len = n.checked_mul(size)?;
        return (len <= b.len()).then_some(len);
    }
    let mut pos = 0usize;
    for _ in 0..n {
        match elem {
            ValueType::String => {
                let len = usize::try_from(u64::from_le_bytes(
                    b.get(pos..pos.checked_add(8)?)?.try_into().ok()?,
                ))
                .ok()?;
                pos = pos.checked_add(8)?.checked_add(len)?;
            }
            _ => {
                let (inner, inner_n, header) = array_header(b.get(pos..)?)?;
                pos = pos.checked_add(header)?.checked_add(encoded_len(
                    b.get(pos + header..)?,
                    inner,
                    inner_n,
                )?)?;
            }
        }
        if pos > b.len() {
            return None;
        }
    }
    Some(pos)
}

/// Element type, element count and header length (12 bytes) of a nested array.
fn array_header(b: &[u8]) -> Option<(ValueType, usize, usize)> {
    let ty = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
    let n = u64::from_le_bytes(b.get(4..12)?.try_into().ok()?);
    Some((ValueType::from_id(ty)?, usize::try_from(n).ok()?, 12))
}

/// Iterates the elements of an array of arrays.
pub struct ArrayIter<'a> {
    key: &'a str,
    file: &'a [u8],
    pos: usize,
    end: usize,
    left: usize,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = ArrayView<'a>;

    fn next(&mut self) -> Option<ArrayView<'a>> {
        if self.left == 0 {
            return None;
        }
        let b = self.file.get(self.pos..self.end)?;
        let (elem, len, header) = array_header(b)?;
        let body = encoded_len(b.get(header..)?, elem, len)?;
        let start = self.pos + header;
        self.pos = start + body;
        self.left -= 1;
        Some(ArrayView {
            key: self.key,
            file: self.file,
            arr: ArrayRef {
                elem,
                len,
                bytes: Span { start, len: body },
            },
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Iterates the elements of a string array as byte slices. The lengths were validated when
/// the file was opened, so iteration cannot run past the array.
pub struct StringIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for StringIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 || self.rest.len() < 8 {
            return None;
        }
        let n = usize::try_from(u64::from_le_bytes(self.rest[..8].try_into().ok()?)).ok()?;
        let end = n.checked_add(8)?;
        let s = self.rest.get(8..end)?;
        self.rest = &self.rest[end..];
        self.left -= 1;
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}
