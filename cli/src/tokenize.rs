//! `ember tokenize -m FILE [--no-bos] [--special] [--ids] [--bench] (TEXT | -f FILE)`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ember::{EncodeOptions, GgufFile, Tokenizer};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model whose tokenizer to use.
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// Do not add BOS (or EOS), whatever the model's metadata says.
    #[arg(long)]
    no_bos: bool,
    /// Parse special-token text such as `<|im_start|>` into those tokens.
    #[arg(long)]
    special: bool,
    /// Print one line of comma-separated ids instead of `id 'piece'` lines.
    #[arg(long)]
    ids: bool,
    /// Read the text from this file instead of the command line.
    #[arg(short = 'f', long = "file", conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Time encoding (median of 5 runs, load excluded) instead of printing tokens.
    #[arg(long)]
    bench: bool,
    /// The text to tokenize.
    #[arg(required_unless_present = "file")]
    text: Option<String>,
}

pub fn run(a: Args) -> ember::Result<()> {
    let bytes = match (&a.file, &a.text) {
        (Some(p), _) => std::fs::read(p).map_err(|e| ember::Error::Io {
            path: p.display().to_string(),
            source: e,
        })?,
        (None, Some(t)) => t.clone().into_bytes(),
        (None, None) => unreachable!("clap requires TEXT or --file"),
    };
    let t0 = Instant::now();
    let f = GgufFile::open(&a.model)?;
    let open = t0.elapsed();
    let t1 = Instant::now();
    let tok = Tokenizer::from_gguf(&f)?;
    let build = t1.elapsed();
    for w in tok.warnings() {
        eprintln!("ember: warning: {w}");
    }
    let opts = EncodeOptions {
        add_bos: if a.no_bos { Some(false) } else { None },
        add_eos: if a.no_bos { Some(false) } else { None },
        parse_special: a.special,
    };
    if a.bench {
        // Building is measured again, best of 5, since one cold run mostly measures the
        // machine's other load and page faults.
        let mut builds: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let _ = Tokenizer::from_gguf(&f);
                t.elapsed()
            })
            .collect();
        builds.sort();
        let mut times: Vec<Duration> = Vec::new();
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            n = tok.encode_bytes_with(&bytes, &opts)?.len();
            times.push(t.elapsed());
        }
        times.sort();
        let med = times[2].as_secs_f64();
        println!(
            "gguf open {:.1} ms, tokenizer build {:.1} ms (best of 5: {:.1} ms); encoded {} bytes into {} tokens: median {:.2} ms, {:.2} MB/s",
            open.as_secs_f64() * 1e3,
            build.as_secs_f64() * 1e3,
            builds[0].as_secs_f64() * 1e3,
            bytes.len(),
            n,
            med * 1e3,
            bytes.len() as f64 / med / 1e6
        );
        return Ok(());
    }
    let ids = tok.encode_bytes_with(&bytes, &opts)?;
    let mut out = String::new();
    if a.ids {
        let list: Vec<String> = ids.iter().map(|t| t.to_string()).collect();
        out.push_str(&list.join(","));
        out.push('\n');
    } else {
        for &t in &ids {
            let piece = tok.token_to_piece(t, true)?;
            out.push_str(&format!("{t:6} '{}'\n", String::from_utf8_lossy(piece)));
        }
    }
    print!("{out}");
    Ok(())
}
