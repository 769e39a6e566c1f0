//! Valid GGUF files, written by the test writer and read back through the typed API:
//! every metadata value type, nested arrays, GGUF versions 2 and 3, alignment, tensors.
//! The real models are opened too, to check that tensors are views into the map.

mod common;

use common::gguf_writer::{Gguf, Tensor, Val};
use common::{rich_file, NESTED};
use ember::gguf::{GgufFile, LoadOptions, Value, ValueType};
use ember::GgmlType;

fn check_every_type(f: &GgufFile, w: &common::gguf_writer::Written) {
    assert_eq!(f.alignment, 64);
    assert_eq!(f.header_bytes as usize, w.header_end);
    assert_eq!(f.data_offset as usize, w.data_offset);
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(f.metadata().len(), 32);

    assert_eq!(f.str("general.architecture").unwrap(), "llama");
    assert_eq!(f.u32("test.u8").unwrap(), 255);
    assert_eq!(f.i32("test.i8").unwrap(), -128);
    assert_eq!(f.u32("test.u16").unwrap(), 65535);
    assert_eq!(f.i32("test.i16").unwrap(), -32768);
    assert_eq!(f.u32("test.u32").unwrap(), u32::MAX);
    assert_eq!(f.i32("test.i32").unwrap(), i32::MIN);
    assert_eq!(f.f32("test.f32").unwrap().to_bits(), (-1.5e-7f32).to_bits());
    assert!(f.bool("test.bool").unwrap());
    assert!(!f.bool("test.bool_false").unwrap());
    assert_eq!(f.str("test.string").unwrap(), "héllo ✓ <|im_start|>");
    assert_eq!(f.str("test.empty_string").unwrap(), "");
    assert_eq!(f.u64("test.u64").unwrap(), u64::MAX);
    assert_eq!(f.i64("test.i64").unwrap(), i64::MIN);
    assert_eq!(f.f64("test.f64").unwrap(), std::f64::consts::PI);
    assert_eq!(f.f32("test.f64").unwrap(), std::f32::consts::PI);
    assert_eq!(f.u32("test.after_nested").unwrap(), 42);

    // The raw values keep their exact type.
    assert_eq!(f.get("test.u8"), Some(&Value::U8(255)));
    assert_eq!(f.get("test.i8"), Some(&Value::I8(-128)));
    assert_eq!(f.get("test.u16"), Some(&Value::U16(65535)));
    assert_eq!(f.get("test.i16"), Some(&Value::I16(-32768)));
    assert_eq!(f.get("test.u32"), Some(&Value::U32(u32::MAX)));
    assert_eq!(f.get("test.i32"), Some(&Value::I32(i32::MIN)));
    assert_eq!(f.get("test.u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(f.get("test.i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(f.get("test.bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("test.f64"), Some(&Value::F64(std::f64::consts::PI)));
    assert_eq!(
        f.get("test.string").map(|v| v.value_type()),
        Some(ValueType::String)
    );

    assert_eq!(f.array("arr.u8").unwrap().u32s().unwrap(), [0, 200]);
    assert_eq!(f.array("arr.u8").unwrap().elem_type(), ValueType::U8);
    assert_eq!(f.array("arr.i8").unwrap().i32s().unwrap(), [-1, 127]);
    assert_eq!(f.array("arr.u16").unwrap().u32s().unwrap(), [1, 65535]);
    assert_eq!(f.array("arr.i16").unwrap().i32s().unwrap(), [-300, 300]);
    assert_eq!(f.array("arr.u32").unwrap().u32s().unwrap(), [7, u32::MAX]);
    assert_eq!(f.array("arr.i32").unwrap().i32s().unwrap(), [i32::MIN, 3]);
    assert_eq!(
        f.array("arr.f32").unwrap().f32s().unwrap(),
        [0.5, -2.25, 1e30]
    );
    assert_eq!(f.array("arr.bool").unwrap().bools().unwrap(), [true, false]);
    let strings: Vec<&[u8]> = f.array("arr.string").unwrap().strings().unwrap().collect();
    assert_eq!(strings, [&b"a"[..], b"", b"<0x0A>", "▁the".as_bytes()]);
    assert_eq!(f.array("arr.u64").unwrap().u64s().unwrap(), [u64::MAX, 1]);
    assert_eq!(f.array("arr.i64").unwrap().i64s().unwrap(), [i64::MIN, -1]);
    let f64s = f.array("arr.f64").unwrap().f64s().unwrap();
    assert_eq!(f64s[0], 1.0 / 3.0);
    assert_eq!(f64s[1].to_bits(), (-0.0f64).to_bits());
    assert!(f.array("arr.empty").unwrap().is_empty());
    assert_eq!(
        f.array("arr.empty").unwrap().u32s().unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(
        f.array("arr.empty_strings")
            .unwrap()
            .strings()
            .unwrap()
            .count(),
        0
    );

    let nested = f.array(NESTED).unwrap();
    assert_eq!(nested.elem_type(), ValueType::Array);
    assert_eq!(nested.len(), 4);
    let items: Vec<_> = nested.arrays().unwrap().collect();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0].u32s().unwrap(), [1, 2, 3]);
    let s: Vec<&[u8]> = items[1].strings().unwrap().collect();
    assert_eq!(s, [&b"x"[..], b"yz"]);
    let inner: Vec<_> = items[2].arrays().unwrap().collect();
    assert_eq!(inner.len(), 2);
    assert_eq!(inner[0].f64s().unwrap(), [2.5]);
    assert!(inner[1].is_empty());
    assert_eq!(inner[1].elem_type(), ValueType::I8);
    assert!(items[3].is_empty());
    assert!(f.value_to_string(NESTED, 8).unwrap().contains("4 x array"));

    // Tensors: infos as written, data as views at aligned offsets.
    let expect: [(&str, &[u64], GgmlType); 6] = [
        ("t.f32", &[4, 3], GgmlType::F32),
        ("t.f16", &[8], GgmlType::F16),
        ("t.q4_0", &[64, 2], GgmlType::Q4_0),
        ("t.q8_0", &[32, 1, 2], GgmlType::Q8_0),
        ("t.q4_k", &[256, 2, 1, 2], GgmlType::Q4_K),
        ("t.q6_k", &[512], GgmlType::Q6_K),
    ];
    assert_eq!(f.tensors().len(), expect.len());
    for ((name, shape, ty), (wname, start, end)) in expect.iter().zip(&w.tensor_ranges) {
        let t = f.tensor(name).unwrap();
        assert_eq!(&t.name, wname);
        assert_eq!(t.shape(), *shape, "{name}");
        assert_eq!(t.ty, *ty);
        assert_eq!(t.n_elements(), shape.iter().product::<u64>());
        assert_eq!(t.n_rows(), shape[1..].iter().product::<u64>());
        assert_eq!(t.offset as usize, *start);
        assert_eq!(t.size as usize, end - start);
        assert_eq!(t.offset % 64, 0);
        assert_eq!(f.tensor_data(t), &w.bytes[*start..*end]);
        let data = f.tensor_data(t).as_ptr() as usize;
        assert_eq!(
            data,
            f.bytes().as_ptr() as usize + *start,
            "a view, not a copy"
        );
    }
}

#[test]
fn every_value_type_reads_back_in_v2_and_v3() {
    for version in [2, 3] {
        let w = rich_file(version).write();
        let f = GgufFile::from_bytes(&w.bytes).unwrap();
        assert_eq!(f.version, version);
        check_every_type(&f, &w);
    }
}

/// GGUF v2 and v3 differ only in that v3 allows big-endian files (the version field tells
/// a reader which byte order it has); a little-endian v2 file has exactly the layout of v3.
#[test]
fn v2_and_v3_files_differ_only_in_the_version_field() {
    let v2 = rich_file(2).bytes();
    let v3 = rich_file(3).bytes();
    let differing: Vec<usize> = (0..v2.len()).filter(|&i| v2[i] != v3[i]).collect();
    // The tensor bytes come from a generator seeded with the version, so compare headers.
    let header_end = rich_file(3).write().header_end;
    assert_eq!(
        differing
            .iter()
            .filter(|&&i| i < header_end)
            .collect::<Vec<_>>(),
        [&4]
    );
    let f2 = GgufFile::from_bytes(&v2).unwrap();
    let f3 = GgufFile::from_bytes(&v3).unwrap();
    assert_eq!((f2.version, f3.version), (2, 3));
    assert_eq!(f2.data_offset, f3.data_offset);
    assert_eq!(f2.metadata().len(), f3.metadata().len());
}

#[test]
fn mapped_and_heap_files_read_the_same() {
    let w = rich_file(3).write();
    let dir = std::env::temp_dir().join(format!("ember-gguf-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("every-type.gguf");
    std::fs::write(&path, &w.bytes).unwrap();
    let mapped = GgufFile::open(&path).unwrap();
    assert!(mapped.is_mapped());
    check_every_type(&mapped, &w);
    let heap = GgufFile::open_with(
        &path,
        LoadOptions {
            no_mmap: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(!heap.is_mapped());
    check_every_type(&heap, &w);
    assert_eq!(heap.file_size(), w.bytes.len() as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each typed getter, called on a key of another type, names the key and what it expected.
#[test]
fn wrong_type_getters_name_the_key_and_the_expected_type() {
    let f = GgufFile::from_bytes(&rich_file(3).bytes()).unwrap();
    let cases: Vec<(&str, &str, ember::Error)> = vec![
        ("test.string", "u32", f.u32("test.string").unwrap_err()),
        ("test.string", "u32", f.u32_opt("test.string").unwrap_err()),
        ("test.f32", "i32", f.i32("test.f32").unwrap_err()),
        ("test.bool", "i32", f.i32_opt("test.bool").unwrap_err()),
        ("test.f64", "u64", f.u64("test.f64").unwrap_err()),
        ("arr.u32", "i64", f.i64("arr.u32").unwrap_err()),
        ("test.u32", "f32", f.f32("test.u32").unwrap_err()),
        ("test.string", "f32", f.f32_opt("test.string").unwrap_err()),
        ("test.i32", "f64", f.f64("test.i32").unwrap_err()),
        ("test.u8", "bool", f.bool("test.u8").unwrap_err()),
        ("test.u8", "bool", f.bool_opt("test.u8").unwrap_err()),
        ("test.u32", "string", f.str("test.u32").unwrap_err()),
        ("arr.string", "string", f.str_opt("arr.string").unwrap_err()),
        (
            "test.string",
            "array",
            f.array("test.string").err().unwrap(),
        ),
        ("test.u64", "array", f.array_opt("test.u64").err().unwrap()),
        // Values that do not fit the asked type.
        ("test.u32", "i32", f.i32("test.u32").unwrap_err()),
        ("test.i8", "u32", f.u32("test.i8").unwrap_err()),
        ("test.i64", "u64", f.u64("test.i64").unwrap_err()),
        ("test.u64", "i64", f.i64("test.u64").unwrap_err()),
        // Array element types.
        (
            "arr.u32",
            "strings",
            f.array("arr.u32").unwrap().strings().err().unwrap(),
        ),
        (
            "arr.string",
            "f32",
            f.array("arr.string").unwrap().f32s().unwrap_err(),
        ),
        (
            "arr.f32",
            "i32",
            f.array("arr.f32").unwrap().i32s().unwrap_err(),
        ),
        (
            "arr.i32",
            "u32",
            f.array("arr.i32").unwrap().u32s().unwrap_err(),
        ),
        (
            "arr.u32",
            "i32",
            f.array("arr.u32").unwrap().i32s().unwrap_err(),
        ),
        (
            "arr.i64",
            "u64",
            f.array("arr.i64").unwrap().u64s().unwrap_err(),
        ),
        (
            "arr.u64",
            "i64",
            f.array("arr.u64").unwrap().i64s().unwrap_err(),
        ),
        (
            "arr.u8",
            "f64",
            f.array("arr.u8").unwrap().f64s().unwrap_err(),
        ),
        (
            "arr.u8",
            "bool",
            f.array("arr.u8").unwrap().bools().unwrap_err(),
        ),
        (
            "arr.u8",
            "arrays",
            f.array("arr.u8").unwrap().arrays().err().unwrap(),
        ),
        (NESTED, "u32", f.array(NESTED).unwrap().u32s().unwrap_err()),
        // Missing keys say what was wanted too.
        ("no.such.key", "u32", f.u32("no.such.key").unwrap_err()),
        ("no.such.key", "string", f.str("no.such.key").unwrap_err()),
        (
            "no.such.key",
            "array",
            f.array("no.such.key").err().unwrap(),
        ),
        ("no.such.key", "f32", f.f32("no.such.key").unwrap_err()),
        ("no.such.key", "bool", f.bool("no.such.key").unwrap_err()),
    ];
    for (key, expected, err) in cases {
        let msg = err.to_string();
        assert!(matches!(err, ember::Error::Metadata { .. }), "{key}: {msg}");
        assert!(msg.contains(&format!("'{key}'")), "{msg} should name {key}");
        assert!(
            msg.contains(expected),
            "{msg} should say it expected {expected}"
        );
    }
    // Optional getters on absent keys are not errors.
    assert_eq!(f.u32_opt("no.such.key").unwrap(), None);
    assert_eq!(f.str_opt("no.such.key").unwrap(), None);
    assert!(f.array_opt("no.such.key").unwrap().is_none());
    assert_eq!(f.f32_opt("no.such.key").unwrap(), None);
    assert_eq!(f.bool_opt("no.such.key").unwrap(), None);
    assert_eq!(f.i64_opt("no.such.key").unwrap(), None);
}

#[test]
fn alignment_defaults_to_32_and_a_file_without_tensors_is_valid() {
    let g = Gguf::default()
        .kv("general.architecture", Val::str("x"))
        .tensor(Tensor::filled("a", &[3], GgmlType::F32, || 1))
        .tensor(Tensor::filled("b", &[5], GgmlType::F32, || 2));
    let w = g.write();
    let f = GgufFile::from_bytes(&w.bytes).unwrap();
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.tensor("b").unwrap().offset - f.data_offset, 32);

    let empty = Gguf::default().bytes();
    let f = GgufFile::from_bytes(&empty).unwrap();
    assert_eq!(f.version, 3);
    assert!(f.metadata().is_empty());
    assert!(f.tensors().is_empty());
}

/// Tensors may be stored in any order and with gaps, as long as each is aligned and none
/// overlaps another.
#[test]
fn tensors_in_any_order_with_gaps_are_accepted() {
    let mut a = Tensor::filled("a", &[32], GgmlType::Q8_0, || 3);
    let mut b = Tensor::filled("b", &[8], GgmlType::F32, || 4);
    a.offset = Some(128);
    b.offset = Some(0);
    let w = Gguf::default().tensor(a).tensor(b).write();
    let f = GgufFile::from_bytes(&w.bytes).unwrap();
    assert_eq!(f.tensor("a").unwrap().offset, f.data_offset + 128);
    assert_eq!(f.tensor_data(f.tensor("a").unwrap()), &[3u8; 34][..]);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()), &[4u8; 32][..]);
}

/// The real models open with every tensor a view into the read-only map.
#[test]
fn real_models_are_views_into_the_map() {
    for (name, n_tensors, n_vocab) in [("smollm2", 272, 49152), ("gemma3", 236, 262144)] {
        let f = GgufFile::open(common::model(name)).unwrap();
        assert!(f.is_mapped());
        assert_eq!(f.version, 3);
        assert_eq!(f.tensors().len(), n_tensors);
        assert_eq!(f.array("tokenizer.ggml.tokens").unwrap().len(), n_vocab);
        let base = f.bytes().as_ptr() as usize;
        let mut end = 0;
        for t in f.tensors() {
            let d = f.tensor_data(t);
            assert_eq!(d.len() as u64, t.size);
            assert_eq!(d.as_ptr() as usize - base, t.offset as usize);
            assert_eq!((t.offset - f.data_offset) % f.alignment, 0);
            end = end.max(t.offset + t.size);
        }
        assert!(end <= f.file_size());
    }
}
