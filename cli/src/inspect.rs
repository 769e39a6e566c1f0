//! `ember inspect FILE [--tensors] [--stats]`

use std::path::PathBuf;
use std::time::Instant;

use ember::gguf::{GgufFile, ValueType};

use crate::sys::{fmt_bytes, print_stdout, rss_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    file: PathBuf,
    /// List every tensor with its type, shape and size.
    #[arg(long)]
    tensors: bool,
    /// Show the time to open the file and the resident memory after opening.
    #[arg(long)]
    stats: bool,
}

/// Appends a line to the report (writing to a String cannot fail).
macro_rules! outln {
    ($o:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($o, $($arg)*);
    }};
}

pub fn run(a: Args) -> ember::Result<()> {
    let rss_before = rss_bytes();
    let t0 = Instant::now();
    let f = GgufFile::open(&a.file)?;
    let open_time = t0.elapsed();
    let rss_after = rss_bytes();

    // The report is built whole and written once, so a reader that stops early (`| head`)
    // ends the output quietly instead of interrupting it halfway.
    let mut o = String::new();
    let arch = f.str_opt("general.architecture")?.unwrap_or("(none)");
    outln!(o, "file:          {}", a.file.display());
    outln!(
        o,
        "file size:     {} ({} bytes)",
        fmt_bytes(f.file_size()),
        f.file_size()
    );
    outln!(o, "gguf version:  {}", f.version);
    if let Some(name) = f.str_opt("general.name")? {
        outln!(o, "name:          {name}");
    }
    outln!(o, "architecture:  {arch}");
    // The configuration ember would run the file with; reading it touches no weights.
    match ember::ModelConfig::from_gguf(&f) {
        Ok(c) => {
            outln!(o, "family:        {}", c.family);
            if let Some(m) = c.moe {
                let shared = if m.n_ff_shexp > 0 {
                    format!(", shared expert FFN {}", m.n_ff_shexp)
                } else {
                    String::new()
                };
                outln!(
                    o,
                    "experts:       {} ({} used per token, expert FFN {}{shared}, weights {})",
                    m.n_expert,
                    m.n_expert_used,
                    m.n_ff_exp,
                    if m.norm_weights {
                        "renormalised"
                    } else {
                        "as routed"
                    }
                );
            }
        }
        Err(e) => outln!(o, "family:        not run by ember ({e})"),
    }
    let prefix = format!("{arch}.");
    let mut hp: Vec<(&str, String)> = f
        .metadata()
        .iter()
        .filter(|kv| kv.key.starts_with(&prefix))
        .map(|kv| {
            (
                &kv.key[prefix.len()..],
                f.value_to_string(&kv.key, 8).unwrap_or_default(),
            )
        })
        .collect();
    hp.sort();
    if !hp.is_empty() {
        outln!(o, "hyper-parameters:");
        for (k, v) in hp {
            outln!(o, "  {k:<40} {v}");
        }
    }
    if let Some(ft) = f.u32_opt("general.file_type")? {
        outln!(o, "file type:     {ft}");
    }
    let tok_model = f.str_opt("tokenizer.ggml.model")?;
    let n_vocab = match f.array_opt("tokenizer.ggml.tokens")? {
        Some(arr) if arr.elem_type() == ValueType::String => Some(arr.len()),
        _ => None,
    };
    let kind = match tok_model {
        Some("gpt2") => "GPT-2 byte-level BPE (gpt2)",
        Some("llama") => "SentencePiece (llama)",
        Some(other) => other,
        None => "(none)",
    };
    outln!(o, "tokenizer:     {kind}");
    if let Some(pre) = f.str_opt("tokenizer.ggml.pre")? {
        outln!(o, "pre-tokenizer: {pre}");
    }
    if let Some(n) = n_vocab {
        outln!(o, "vocab size:    {n}");
    }
    outln!(
        o,
        "chat template: {}",
        if f.contains("tokenizer.chat_template") {
            "present"
        } else {
            "absent"
        }
    );

    let mut by_type: Vec<(String, usize)> = Vec::new();
    for t in f.tensors() {
        match by_type.iter_mut().find(|(n, _)| n == t.ty.name()) {
            Some((_, c)) => *c += 1,
            None => by_type.push((t.ty.name().to_string(), 1)),
        }
    }
    let types: Vec<String> = by_type.iter().map(|(n, c)| format!("{n} x{c}")).collect();
    let total: u64 = f.tensors().iter().map(|t| t.size).sum();
    let params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    outln!(
        o,
        "tensors:       {} ({})",
        f.tensors().len(),
        types.join(", ")
    );
    outln!(o, "parameters:    {params}");
    outln!(o, "tensor bytes:  {}", fmt_bytes(total));
    outln!(
        o,
        "metadata:      {} (header, key-values and tensor infos)",
        fmt_bytes(f.header_bytes)
    );
    if a.tensors {
        o.push('\n');
        outln!(
            o,
            "{:<5} {:<40} {:<8} {:<28} {:>12}",
            "#",
            "name",
            "type",
            "shape",
            "bytes"
        );
        for (i, t) in f.tensors().iter().enumerate() {
            let shape: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
            outln!(
                o,
                "{:<5} {:<40} {:<8} {:<28} {:>12}",
                i,
                t.name,
                t.ty.name(),
                format!("[{}]", shape.join(", ")),
                t.size
            );
        }
    }
    if a.stats {
        o.push('\n');
        outln!(o, "open time:     {:.2} ms", open_time.as_secs_f64() * 1e3);
        match (rss_before, rss_after) {
            (Some(b), Some(after)) => {
                outln!(
                    o,
                    "resident:      {} after open ({} before)",
                    fmt_bytes(after),
                    fmt_bytes(b)
                );
                outln!(
                    o,
                    "budget:        metadata + 8 MiB = {} -> {}",
                    fmt_bytes(f.header_bytes + 8 * 1024 * 1024),
                    if after < f.header_bytes + 8 * 1024 * 1024 {
                        "within"
                    } else {
                        "EXCEEDED"
                    }
                );
            }
            _ => outln!(o, "resident:      unknown on this platform"),
        }
    }
    print_stdout(&o)
}
