//! The pictures of `ember explain --out`: attention heatmaps, the logit lens grid and the
//! residual norms. Drawn with plotters' bitmap backend; text uses the public-domain 8x8
//! font of `font8x8`, drawn pixel by pixel, so nothing depends on the system's fonts.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{norm, Ctx, Lens, Recorder};

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw_err(p: &Path, e: impl std::fmt::Display) -> ember::Error {
    ember::Error::InvalidArgument(format!("drawing {}: {e}", p.display()))
}

/// `s` at (x, y), each font pixel `scale` screen pixels; only printable ASCII is drawn.
fn text(a: &Area<'_>, x: i32, y: i32, s: &str, scale: i32, color: &RGBColor) {
    for (i, ch) in s.chars().enumerate() {
        let g = font8x8::legacy::BASIC_LEGACY[if ch.is_ascii() {
            ch as usize
        } else {
            b'?' as usize
        }];
        for (r, bits) in g.iter().enumerate() {
            for c in 0..8 {
                if bits >> c & 1 == 0 {
                    continue;
                }
                let (px, py) = (x + (i as i32 * 8 + c) * scale, y + r as i32 * scale);
                for (dx, dy) in (0..scale).flat_map(|dx| (0..scale).map(move |dy| (dx, dy))) {
                    // Off-picture pixels are simply not drawn.
                    let _ = a.draw_pixel((px + dx, py + dy), color);
                }
            }
        }
    }
}

/// A token piece fit for a label: spaces shown as '_', other characters outside ASCII
/// as '?', at most `max` characters.
fn label(ctx: &Ctx<'_>, t: u32, max: usize) -> String {
    let p = ctx
        .model
        .tokenizer()
        .token_to_piece(t, true)
        .unwrap_or(b"?");
    String::from_utf8_lossy(p)
        .chars()
        .map(|c| match c {
            ' ' | '\u{0120}' | '\u{2581}' => '_',
            '\n' => '/',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .take(max)
        .collect()
}

/// White through light blue to dark blue for 0..1.
fn heat(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let stops = [
        (255.0, 255.0, 255.0),
        (107.0, 174.0, 214.0),
        (8.0, 48.0, 107.0),
    ];
    let (i, f) = if v < 0.5 {
        (0, v * 2.0)
    } else {
        (1, v * 2.0 - 1.0)
    };
    let mix = |a: f64, b: f64| (a + (b - a) * f) as u8;
    let (a, b) = (stops[i], stops[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Text colour readable on `heat(v)`.
fn ink(v: f64) -> RGBColor {
    if v > 0.55 {
        WHITE
    } else {
        BLACK
    }
}

pub fn draw_all(ctx: &Ctx<'_>, rec: &Recorder, lens: &Lens, dir: &Path) -> ember::Result<()> {
    let l = ctx.layer;
    heads_grid(rec, l, &dir.join(format!("attention_L{l}.png")))?;
    let h = ctx.args.head;
    one_head(
        ctx,
        rec,
        l,
        h,
        &dir.join(format!("attention_L{l}_H{h}.png")),
    )?;
    lens_grid(ctx, rec, lens, &dir.join("logit_lens.png"))?;
    residual_plot(ctx, rec, &dir.join("residual_norms.png"))
}

/// Every head of layer `l`, small: rows are query positions, columns keys.
fn heads_grid(rec: &Recorder, l: usize, path: &Path) -> ember::Result<()> {
    let n_head = rec.attn.keys().filter(|k| k.0 == l).count();
    let n = rec.tokens.len();
    let cell = (120 / n.max(1)).clamp(2, 16) as i32;
    let side = cell * n as i32;
    let cols = (n_head as f64).sqrt().ceil() as i32;
    let rows = (n_head as i32 + cols - 1) / cols;
    let (pw, ph) = (side + 16, side + 28);
    let (w, h) = ((cols * pw + 16).max(8 * 36), rows * ph + 40);
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    text(
        &root,
        8,
        6,
        &format!("layer {l}: attention of each head"),
        1,
        &BLACK,
    );
    text(
        &root,
        8,
        18,
        "row = query, column = key",
        1,
        &RGBColor(90, 90, 90),
    );
    for hd in 0..n_head {
        let (x0, y0) = (8 + (hd as i32 % cols) * pw, 34 + (hd as i32 / cols) * ph);
        text(&root, x0, y0, &format!("head {hd}"), 1, &BLACK);
        for (t, r) in rec.attn[&(l, hd)].iter().enumerate() {
            let key0 = t + 1 - r.len();
            for (j, &wt) in r.iter().enumerate() {
                let (x, y) = (x0 + (key0 + j) as i32 * cell, y0 + 12 + t as i32 * cell);
                let rect = Rectangle::new([(x, y), (x + cell, y + cell)], heat(wt as f64).filled());
                root.draw(&rect).map_err(|e| draw_err(path, e))?;
            }
        }
        let frame = Rectangle::new([(x0, y0 + 12), (x0 + side, y0 + 12 + side)], BLACK);
        root.draw(&frame).map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))
}

/// One head large, each cell labelled with its weight.
fn one_head(ctx: &Ctx<'_>, rec: &Recorder, l: usize, h: usize, path: &Path) -> ember::Result<()> {
    let n = rec.tokens.len() as i32;
    let cell = 28;
    let left = 8 + 14 * 8;
    let top = 50;
    let (w, hgt) = (left + n * cell + 16, top + n * cell + 16);
    let root = BitMapBackend::new(path, (w as u32, hgt as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    text(
        &root,
        8,
        8,
        &format!("layer {l}, head {h}: query row attends to key column"),
        1,
        &BLACK,
    );
    for (t, r) in rec.attn[&(l, h)].iter().enumerate() {
        let y = top + t as i32 * cell;
        let lab = format!("{t:>2} {}", label(ctx, rec.tokens[t], 10));
        text(&root, 8, y + 10, &lab, 1, &BLACK);
        let key0 = t + 1 - r.len();
        for (j, &wt) in r.iter().enumerate() {
            let x = left + (key0 + j) as i32 * cell;
            let rect = Rectangle::new([(x, y), (x + cell, y + cell)], heat(wt as f64).filled());
            root.draw(&rect).map_err(|e| draw_err(path, e))?;
            let v = format!("{:02}", ((wt * 100.0).round() as i32).min(99));
            text(&root, x + 6, y + 10, &v, 1, &ink(wt as f64));
        }
    }
    for t in 0..n {
        text(
            &root,
            left + t * cell + 6,
            top - 12,
            &format!("{t:>2}"),
            1,
            &BLACK,
        );
    }
    text(
        &root,
        8,
        20,
        "weights x100 (99 = 0.99 or more)",
        1,
        &RGBColor(90, 90, 90),
    );
    root.present().map_err(|e| draw_err(path, e))
}

/// Layers down, positions across: the top token of the logit lens, shaded by its probability.
fn lens_grid(ctx: &Ctx<'_>, rec: &Recorder, lens: &Lens, path: &Path) -> ember::Result<()> {
    let n = rec.tokens.len() as i32;
    let (cw, ch) = (64, 16);
    let (left, top) = (40, 44);
    let w = left + n * cw + 8;
    let h = top + lens.len() as i32 * ch + 8;
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let title =
        "logit lens: top next token if the model stopped after layer L (shade = probability)";
    text(&root, 8, 8, title, 1, &BLACK);
    for t in 0..n {
        text(
            &root,
            left + t * cw + 2,
            28,
            &label(ctx, rec.tokens[t as usize], 7),
            1,
            &RGBColor(150, 0, 0),
        );
    }
    for (il, row) in lens.iter().enumerate() {
        let y = top + il as i32 * ch;
        text(&root, 4, y + 4, &format!("L{il}"), 1, &BLACK);
        for (t, &(tok, p)) in row.iter().enumerate() {
            let x = left + t as i32 * cw;
            let rect = Rectangle::new([(x, y), (x + cw - 1, y + ch - 1)], heat(p).filled());
            root.draw(&rect).map_err(|e| draw_err(path, e))?;
            text(&root, x + 4, y + 4, &label(ctx, tok, 7), 1, &ink(p));
        }
    }
    root.present().map_err(|e| draw_err(path, e))
}

/// Per layer at the last token: the residual's norm, its norm after RMSNorm, and the norms
/// of what attention and the feed-forward added.
fn residual_plot(ctx: &Ctx<'_>, rec: &Recorder, path: &Path) -> ember::Result<()> {
    let d = ctx.model.config().n_embd;
    let n = rec.tokens.len();
    let last = |v: &[f32]| norm(&v[(n - 1) * d..n * d]) as f64;
    let series: [(&str, RGBColor, Vec<f64>); 4] = [
        (
            "residual after layer",
            RGBColor(200, 30, 30),
            rec.layers.iter().map(|l| last(&l.residual)).collect(),
        ),
        (
            "after RMSNorm (attn input)",
            RGBColor(30, 110, 200),
            rec.layers.iter().map(|l| last(&l.attn_in)).collect(),
        ),
        (
            "attention output",
            RGBColor(40, 160, 60),
            rec.layers.iter().map(|l| last(&l.attn_out)).collect(),
        ),
        (
            "feed-forward output",
            RGBColor(150, 80, 180),
            rec.layers.iter().map(|l| last(&l.ffn_out)).collect(),
        ),
    ];
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter())
        .fold(1e-9f64, |m, &v| m.max(v))
        * 1.05;
    let (w, h) = (720i32, 400i32);
    let (left, right, top, bottom) = (64, 16, 40, 60);
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    text(&root, 8, 8, "norms at the last token, per layer", 1, &BLACK);
    let nl = rec.layers.len().max(2) - 1;
    let px = |i: usize| left + ((w - left - right) as f64 * i as f64 / nl as f64) as i32;
    let py = |v: f64| h - bottom - ((h - top - bottom) as f64 * v / ymax) as i32;
    let grey = RGBColor(200, 200, 200);
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let y = py(v);
        root.draw(&PathElement::new(vec![(left, y), (w - right, y)], grey))
            .map_err(|e| draw_err(path, e))?;
        text(&root, 4, y - 4, &format!("{v:>6.1}"), 1, &BLACK);
    }
    let step = nl.div_ceil(10).max(1);
    for i in (0..=nl).step_by(step) {
        text(
            &root,
            px(i) - 8,
            h - bottom + 6,
            &format!("{i:>2}"),
            1,
            &BLACK,
        );
    }
    text(&root, w / 2 - 20, h - bottom + 20, "layer", 1, &BLACK);
    for (k, (name, color, vals)) in series.iter().enumerate() {
        let pts: Vec<(i32, i32)> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| (px(i), py(v)))
            .collect();
        root.draw(&PathElement::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| draw_err(path, e))?;
        for p in pts {
            root.draw(&Circle::new(p, 2, color.filled()))
                .map_err(|e| draw_err(path, e))?;
        }
        let (lx, ly) = (
            left + (k as i32 % 2) * 300,
            h - 24 + (k as i32 / 2) * 12 - 6,
        );
        root.draw(&Rectangle::new(
            [(lx, ly), (lx + 10, ly + 8)],
            color.filled(),
        ))
        .map_err(|e| draw_err(path, e))?;
        text(&root, lx + 16, ly, name, 1, &BLACK);
    }
    root.present().map_err(|e| draw_err(path, e))
}
