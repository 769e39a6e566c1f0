//! `ember quantize IN OUT TYPE [-t N]`: requantize a model's weight matrices to IQ4_NL,
//! IQ4_XS or the Q4_K_M mix, as `llama-quantize --allow-requantize IN OUT TYPE` does
//! without an importance matrix (see ember::quant::requantize for which tensors change).

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use ember::quant::requantize::{requantize, requantize_q4_k_m};
use ember::{Error, GgmlType, GgufFile};

#[derive(clap::Args)]
pub struct Args {
    /// The source GGUF model.
    input: PathBuf,
    /// The requantized model to write.
    output: PathBuf,
    /// The target: IQ4_NL, IQ4_XS or Q4_K_M (llama-quantize's mix of Q4_K, Q6_K and their
    /// fallbacks).
    #[arg(value_name = "TYPE")]
    ty: String,
    /// Worker threads (0 = all cores); the output does not depend on it.
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> ember::Result<()> {
    // Q4_K_M names a mix of types, not one: None selects it.
    let ty = match a.ty.to_ascii_uppercase().as_str() {
        "Q4_K_M" => None,
        _ => Some(
            GgmlType::from_name(&a.ty)
                .ok_or_else(|| Error::InvalidArgument(format!("unknown tensor type '{}'", a.ty)))?,
        ),
    };
    let threads = match a.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let t0 = Instant::now();
    let f = GgufFile::open(&a.input)?;
    let io = |path: &PathBuf| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    // Written beside the target and renamed at the end: a failed run leaves no half file.
    let mut tmp = a.output.clone().into_os_string();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = match ty {
        Some(ty) => requantize(&f, ty, threads, &mut w),
        None => requantize_q4_k_m(&f, threads, &mut w),
    };
    let plans = match result {
        Ok(p) => p,
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    drop(w);
    std::fs::rename(&tmp, &a.output).map_err(io(&a.output))?;
    let mut changes: Vec<(String, usize)> = Vec::new();
    for p in &plans {
        let what = if p.from == p.to {
            format!("kept {}", p.from)
        } else {
            format!("{} -> {}", p.from, p.to)
        };
        match changes.iter_mut().find(|(w, _)| *w == what) {
            Some((_, n)) => *n += 1,
            None => changes.push((what, 1)),
        }
    }
    for (what, n) in &changes {
        eprintln!("ember quantize: {n:4} tensors {what}");
    }
    eprintln!(
        "ember quantize: wrote {} in {:.1} s ({threads} threads)",
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
