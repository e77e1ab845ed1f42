//! The forward pass against a plain reference written here with no candle ops: a tiny Llama with
//! deterministic random weights, in both quantized formats, through the real file format.
//!
//! The reference dequantizes the GGML blocks itself (from the bytes, per the GGML layout), then
//! recomputes everything in f64 for the full sequence: RMSNorm, adjacent-pair RoPE, an explicit
//! causal mask with −∞, softmax, GQA by index, SwiGLU, tied output head. Like llama.cpp, the
//! engine rounds each matmul's input to 8 bits per block of 32 values; the
//! reference applies the same rounding (written out here from the GGML definition), so what is
//! left is f32-versus-f64 arithmetic: logits within 0.2% of their range, probabilities within
//! 2e-3 (the capture stores them as f16).

use std::collections::HashMap;

use attnscope::config::{Config, FileConfig};
use attnscope::format::{GgmlKind, QSafetensors, TensorToWrite, write};
use attnscope::model::Transformer;
use attnscope::sampler::{Sampler, SamplingParams};
use attnscope::weights::{Weights, expected_tensors};

fn tiny_config() -> Config {
    Config::try_from(FileConfig {
        model_type: "llama".into(),
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        vocab_size: 97,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_id: None,
    })
    .unwrap()
}

/// A fixed pseudo-random stream (xorshift), so the model is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The tiny model's weights file bytes in the given quantization.
fn tiny_file(c: &Config, kind: GgmlKind) -> Vec<u8> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let tensors = expected_tensors(c)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let t = if shape.len() == 2 {
                let scale = if name.contains("embed") { 1.0 } else { 0.3 };
                let values: Vec<f32> = (0..n).map(|_| rng.next() * scale).collect();
                let m = attnscope::weights::QMatrix::quantize(kind, shape[0], shape[1], &values);
                TensorToWrite::Quantized { kind, rows: shape[0], cols: shape[1], blocks: m.to_bytes() }
            } else {
                TensorToWrite::F32 { shape, values: (0..n).map(|_| 1.0 + 0.2 * rng.next()).collect() }
            };
            (name, t)
        })
        .collect();
    write(tensors, HashMap::new()).unwrap()
}

/// The model as the app loads it: the file's bytes become the weights' storage.
fn engine(c: &Config, file: &[u8], capture: bool) -> Transformer {
    let w = Weights::load_owned("tiny", file.to_vec(), c).unwrap();
    Transformer::new(c.clone(), w, 64, capture.then_some(64))
}

// ---------------------------------------------------------------- the reference, in plain f64

/// GGML block decoding straight from the file bytes.
fn dequantize(kind: GgmlKind, bytes: &[u8]) -> Vec<f64> {
    let mut out = Vec::new();
    for block in bytes.chunks_exact(kind.type_size()) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f64();
        match kind {
            GgmlKind::Q8_0 => out.extend(block[2..34].iter().map(|&q| d * (q as i8) as f64)),
            GgmlKind::Q4_0 => {
                let qs = &block[2..18];
                out.extend(qs.iter().map(|&q| d * ((q & 0x0F) as f64 - 8.0)));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as f64 - 8.0)));
            }
        }
    }
    out
}

/// The activation rounding: per 32 values, d = max|x| / 127, q = round(x / d) (as GGML's Q8_0,
/// with d kept in f32).
fn q8_round(x: &[f64]) -> Vec<f64> {
    x.chunks(32)
        .flat_map(|block| {
            let amax = block.iter().fold(0f32, |m, v| m.max((*v as f32).abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            block.iter().map(move |v| ((*v as f32) * id).round() as f64 * d as f64)
        })
        .collect()
}

struct Reference {
    logits: Vec<Vec<f64>>,          // [position][vocab]
    patterns: Vec<Vec<Vec<Vec<f64>>>>, // [layer][head][query][key]
}

fn reference(c: &Config, file: &[u8], tokens: &[u32]) -> Reference {
    let st = QSafetensors::read("tiny", file).unwrap();
    let get = |name: &str| -> (Vec<f64>, Vec<usize>) {
        match &st.tensors[name] {
            attnscope::format::StoredTensor::Quantized { kind, rows, cols, blocks } => (dequantize(*kind, blocks), vec![*rows, *cols]),
            attnscope::format::StoredTensor::F32 { shape, bytes } => {
                (bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(), shape.clone())
            }
        }
    };
    // y = W x̂ for W (rows, cols), x̂ = x rounded to Q8_0 as GGML's matmul does.
    let matvec = |w: &(Vec<f64>, Vec<usize>), x: &[f64]| -> Vec<f64> {
        let (rows, cols) = (w.1[0], w.1[1]);
        let x = q8_round(x);
        (0..rows).map(|r| (0..cols).map(|k| w.0[r * cols + k] * x[k]).sum()).collect()
    };
    let rmsnorm = |x: &[f64], w: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + c.rms_norm_eps as f64).sqrt();
        x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        let hd = c.head_dim;
        for head in v.chunks_mut(hd) {
            for i in 0..hd / 2 {
                let theta = pos as f64 * (c.rope_theta as f64).powf(-(2.0 * i as f64) / hd as f64);
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * theta.cos() - b * theta.sin();
                head[2 * i + 1] = a * theta.sin() + b * theta.cos();
            }
        }
    };
    let t = tokens.len();
    let hd = c.head_dim;
    let embed = get("model.embed_tokens.weight");
    let mut x: Vec<Vec<f64>> = tokens.iter().map(|&id| embed.0[id as usize * c.dim..(id as usize + 1) * c.dim].to_vec()).collect();
    let mut patterns = Vec::new();
    for l in 0..c.n_layers {
        let p = format!("model.layers.{l}");
        let w = |s: &str| get(&format!("{p}.{s}.weight"));
        let (wq, wk, wv, wo) = (w("self_attn.q_proj"), w("self_attn.k_proj"), w("self_attn.v_proj"), w("self_attn.o_proj"));
        let (n1, n2) = (w("input_layernorm").0, w("post_attention_layernorm").0);
        let (wg, wu, wd) = (w("mlp.gate_proj"), w("mlp.up_proj"), w("mlp.down_proj"));
        let h: Vec<Vec<f64>> = x.iter().map(|r| rmsnorm(r, &n1)).collect();
        let mut q: Vec<Vec<f64>> = h.iter().map(|r| matvec(&wq, r)).collect();
        let mut k: Vec<Vec<f64>> = h.iter().map(|r| matvec(&wk, r)).collect();
        let mut v: Vec<Vec<f64>> = h.iter().map(|r| matvec(&wv, r)).collect();
        for i in 0..t {
            rope(&mut q[i], i);
            rope(&mut k[i], i);
        }
        // The KV cache keeps keys rounded to Q8_0 per head (its width padded to a block), and each
        // query head is rounded the same way for its scores (attention/keys.rs); values are bf16
        // (attention.rs says why).
        let per_head = |row: &[f64]| row.chunks(hd).flat_map(q8_round).collect::<Vec<f64>>();
        let q: Vec<Vec<f64>> = q.iter().map(|row| per_head(row)).collect();
        let k: Vec<Vec<f64>> = k.iter().map(|row| per_head(row)).collect();
        for row in v.iter_mut() {
            row.iter_mut().for_each(|x| *x = half::bf16::from_f64(*x).to_f64());
        }
        let mut layer_patterns = vec![vec![vec![0.0; t]; t]; c.n_heads];
        let mut attn_out = vec![vec![0.0; c.n_heads * hd]; t];
        for head in 0..c.n_heads {
            let g = head / (c.n_heads / c.n_kv_heads);
            for i in 0..t {
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        if j > i {
                            f64::NEG_INFINITY
                        } else {
                            (0..hd).map(|e| q[i][head * hd + e] * k[j][g * hd + e]).sum::<f64>() / (hd as f64).sqrt()
                        }
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for j in 0..t {
                    let pj = exps[j] / sum;
                    layer_patterns[head][i][j] = pj;
                    for e in 0..hd {
                        attn_out[i][head * hd + e] += pj * v[j][g * hd + e];
                    }
                }
            }
        }
        patterns.push(layer_patterns);
        for i in 0..t {
            let o = matvec(&wo, &attn_out[i]);
            x[i].iter_mut().zip(o).for_each(|(a, b)| *a += b);
            let h2 = rmsnorm(&x[i], &n2);
            let gate = matvec(&wg, &h2);
            let up = matvec(&wu, &h2);
            let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let down = matvec(&wd, &act);
            x[i].iter_mut().zip(down).for_each(|(a, b)| *a += b);
        }
    }
    let norm = get("model.norm.weight").0;
    let logits = x.iter().map(|r| matvec(&embed, &rmsnorm(r, &norm))).collect();
    Reference { logits, patterns }
}

// ---------------------------------------------------------------- the specifications

const PROMPT: [u32; 12] = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26];

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn logits_and_patterns_match_the_reference(kind: GgmlKind) {
    let c = tiny_config();
    let file = tiny_file(&c, kind);
    let reference = reference(&c, &file, &PROMPT);
    let mut m = engine(&c, &file, true);
    let logits: Vec<f64> = m.forward(&PROMPT).unwrap().iter().map(|&v| v as f64).collect();
    let want = reference.logits.last().unwrap();
    let tolerance = 2e-3 * max_abs(want);
    for (i, (a, b)) in logits.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tolerance, "{kind:?} logit {i}: engine {a}, reference {b}, tolerance {tolerance}");
    }
    let argmax = |v: &[f64]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax(&logits), argmax(want), "{kind:?}: the top token differs");
    let cap = m.capture().unwrap();
    for l in 0..c.n_layers {
        for h in 0..c.n_heads {
            let (t, got) = cap.pattern(l, h);
            assert_eq!(t, PROMPT.len());
            for i in 0..t {
                for j in 0..t {
                    let (a, b) = (got[i * t + j] as f64, reference.patterns[l][h][i][j]);
                    assert!((a - b).abs() < 2e-3, "{kind:?} layer {l} head {h} [{i},{j}]: engine {a}, reference {b}");
                }
            }
        }
    }
}

#[test]
fn q8_0_logits_and_attention_match_a_plain_reference() {
    logits_and_patterns_match_the_reference(GgmlKind::Q8_0);
}

#[test]
fn q4_0_logits_and_attention_match_a_plain_reference() {
    logits_and_patterns_match_the_reference(GgmlKind::Q4_0);
}

#[test]
fn kv_cached_steps_match_a_full_recompute() {
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q8_0);
    let mut stepped = engine(&c, &file, false);
    stepped.forward(&PROMPT[..7]).unwrap();
    let mut last = Vec::new();
    for &id in &PROMPT[7..] {
        last = stepped.forward(&[id]).unwrap().to_vec();
    }
    let mut full = engine(&c, &file, false);
    let all = full.forward(&PROMPT).unwrap();
    for (i, (a, b)) in last.iter().zip(all).enumerate() {
        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "logit {i}: stepped {a}, full {b}");
    }
}

#[test]
fn after_a_reset_the_cache_is_written_over_as_by_a_fresh_model() {
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q8_0);
    let mut reused = engine(&c, &file, false);
    reused.forward(&PROMPT).unwrap();
    reused.reset();
    // Shorter than the first sequence, then past its end: positions written over, then new ones.
    let second: Vec<u32> = PROMPT.iter().rev().copied().collect();
    reused.forward(&second[..3]).unwrap();
    let mut fresh = engine(&c, &file, false);
    fresh.forward(&second[..3]).unwrap();
    for &id in &second[3..] {
        assert_eq!(reused.forward(&[id]).unwrap(), fresh.forward(&[id]).unwrap());
    }
    reused.forward(&[1, 2]).unwrap();
    assert_eq!(reused.forward(&[3]).unwrap(), fresh.forward(&[1, 2, 3]).unwrap());
}

#[test]
fn captured_attention_is_causal_and_rows_are_probabilities() {
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q8_0);
    let mut m = engine(&c, &file, true);
    m.forward(&PROMPT[..5]).unwrap();
    m.forward(&PROMPT[5..6]).unwrap(); // one generated-style step adds one row
    let cap = m.capture().unwrap();
    let (t, p) = cap.pattern(1, 3);
    assert_eq!(t, 6);
    for i in 0..t {
        let row = &p[i * t..(i + 1) * t];
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 2e-3, "row {i} sums to {}", row.iter().sum::<f32>());
        assert!(row[i + 1..].iter().all(|&x| x == 0.0), "row {i} attends to the future");
    }
    // Changing the last token changes nothing about earlier rows.
    let mut other = engine(&c, &file, true);
    let mut altered = PROMPT[..6].to_vec();
    altered[5] = 1;
    other.forward(&altered).unwrap();
    let (_, q) = other.capture().unwrap().pattern(1, 3);
    assert_eq!(p[..5 * t], q[..5 * t]);
}

#[test]
fn the_step_view_recomputes_exactly_what_the_model_attended() {
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q8_0);
    let mut m = engine(&c, &file, true);
    m.forward(&PROMPT).unwrap();
    for (l, h, q) in [(0, 0, 0), (1, 3, 7), (1, 2, 11)] {
        let e = m.explain(l, h, q).unwrap();
        let row = m.capture().unwrap().row(l, h, q).unwrap();
        assert_eq!(e.pattern.len(), q + 1);
        for (a, b) in e.pattern.iter().zip(&row) {
            assert_eq!(half::f16::from_f32(*a).to_f32(), *b, "the captured row is this pattern, rounded to f16");
        }
        for (d, s) in e.dots.iter().zip(&e.scores) {
            assert!((d * e.scale - s).abs() <= 1e-6 * (1.0 + s.abs()));
        }
    }
    assert!(m.explain(2, 0, 0).is_none() && m.explain(0, 0, 12).is_none());
}

#[test]
fn the_logit_lens_ends_with_the_models_own_logits() {
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q4_0);
    let mut m = engine(&c, &file, true);
    let logits = m.forward(&PROMPT).unwrap().to_vec();
    let mut lens = Vec::new();
    m.logit_lens(|_, l| lens.push(l.to_vec())).unwrap();
    assert_eq!(lens.len(), c.n_layers);
    assert_eq!(lens.last().unwrap(), &logits);
    assert_ne!(lens[0], logits);
}

#[test]
fn weights_split_in_place_compute_what_copied_weights_compute() {
    let c = tiny_config();
    let tokens = [3, 14, 15, 92, 65, 35];
    for kind in GgmlKind::ALL {
        let file = tiny_file(&c, kind);
        let st = QSafetensors::read("tiny", &file).unwrap();
        let mut copied = Transformer::new(c.clone(), Weights::load("tiny", &st, &c).unwrap(), 64, None);
        let mut in_place = engine(&c, &file, false);
        assert_eq!(copied.forward(&tokens).unwrap(), in_place.forward(&tokens).unwrap(), "{kind:?}");
    }
}

#[test]
fn attention_shared_over_threads_gives_one_threads_bits() {
    // Past 32 keys each thread takes a run of query heads; with three threads and four heads in
    // two groups, runs cut a group in two.
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q8_0);
    let tokens: Vec<u32> = (0..41).map(|i| (i * 37 % 97) as u32).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut m = engine(&c, &file, true);
            let prefill = m.forward(&tokens[..40]).unwrap().to_vec();
            let step = m.forward(&tokens[40..]).unwrap().to_vec();
            (prefill, step, m.capture().unwrap().pattern(1, 3))
        })
    };
    let alone = run(1);
    for threads in [2, 3] {
        assert!(run(threads) == alone, "{threads} threads differ from one");
    }
}

#[test]
fn capture_off_holds_nothing_and_gives_the_same_logits() {
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q4_0);
    let mut with = engine(&c, &file, true);
    let mut without = engine(&c, &file, false);
    assert!(without.capture().is_none());
    assert_eq!(with.forward(&PROMPT).unwrap(), without.forward(&PROMPT).unwrap());
}

#[test]
fn seeded_sampling_repeats_exactly() {
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q8_0);
    let run = |seed: u64| {
        let mut m = engine(&c, &file, false);
        let params = SamplingParams { temperature: 1.0, top_p: Some(0.9), seed, ..Default::default() };
        let mut s = Sampler::new(params).unwrap();
        let mut seq = PROMPT[..4].to_vec();
        m.forward(&seq).unwrap();
        for _ in 0..20 {
            let id = s.sample(m.logits(), &seq).unwrap();
            seq.push(id);
            m.forward(&[id]).unwrap();
        }
        seq
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn the_context_limit_is_an_error_not_a_panic() {
    let c = tiny_config();
    let file = tiny_file(&c, GgmlKind::Q8_0);
    let mut m = engine(&c, &file, false);
    let long = vec![1u32; 65];
    let err = m.forward(&long).err().unwrap().to_string();
    assert!(err.contains("65") && err.contains("64"), "{err}");
    assert!(m.forward(&[200]).err().unwrap().to_string().contains("vocabulary"));
}

#[test]
fn hf_half_split_rows_become_adjacent_pairs() {
    // One head of 4: HF rows [a0 a1 b0 b1] pair (a_i, b_i); GGUF order is [a0 b0 a1 b1].
    let w: Vec<f32> = vec![0.0, 1.0, 2.0, 3.0];
    assert_eq!(attnscope::convert::half_split_to_pairs(&w, 1, 4, 1), vec![0.0, 2.0, 1.0, 3.0]);
}
