//! Logits → the next token, with candle-transformers' `LogitsProcessor` and repeat penalty.
//!
//! Temperature 0 is greedy (argmax). Otherwise softmax(logits / T), optionally restricted to the
//! top-k tokens and/or the smallest set whose probability reaches top-p, sampled with a seeded
//! `StdRng`: the same seed and settings give the same tokens natively and in the browser.

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::attention::LaneSum;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    /// 1.0 is off; above 1 makes recently seen tokens less likely.
    pub repeat_penalty: f32,
    /// How many of the last tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: None, top_p: None, repeat_penalty: 1.1, repeat_last_n: 64, seed: 299_792_458 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("{field} = {value} is out of range: {why}")]
    Invalid { field: &'static str, value: String, why: &'static str },
    #[error("sampling failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |field, value: String, why| Err(SamplerError::Invalid { field, value, why });
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature.to_string(), "use 0 for greedy or a positive number such as 0.7");
        }
        if self.top_k == Some(0) {
            return bad("top_k", "0".into(), "use at least 1, or leave it unset");
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top_p", p.to_string(), "use a number in (0, 1], or leave it unset");
            }
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", self.repeat_penalty.to_string(), "use 1.0 for none or a number such as 1.1");
        }
        Ok(())
    }

    fn sampling(&self) -> Sampling {
        let temperature = self.temperature;
        match (temperature <= 0.0, self.top_k, self.top_p) {
            (true, _, _) => Sampling::ArgMax,
            (false, None, None) => Sampling::All { temperature },
            (false, Some(k), None) => Sampling::TopK { k, temperature },
            (false, None, Some(p)) => Sampling::TopP { p, temperature },
            (false, Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
        }
    }
}

pub struct Sampler {
    processor: LogitsProcessor,
    params: SamplingParams,
    /// A greedy step's penalized logits, kept so that a step allocates nothing.
    adjusted: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, SamplerError> {
        params.validate()?;
        Ok(Sampler { processor: LogitsProcessor::from_sampling(params.seed, params.sampling()), params, adjusted: Vec::new() })
    }

    /// Picks the next token; `context` is the sequence so far (for the repeat penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> Result<u32, SamplerError> {
        let recent = &context[context.len().saturating_sub(self.params.repeat_last_n)..];
        let penalty = self.params.repeat_penalty;
        if self.params.temperature <= 0.0 && !logits.is_empty() {
            // Greedy: candle's penalty and argmax without its tensors, which copied the
            // vocabulary's logits four times a step (about half a percent of a decode step in
            // Chromium: candle's argmax 0.3% of the worker's samples, memmove 0.2% more).
            if penalty == 1.0 {
                return Ok(first_max(logits));
            }
            self.adjusted.clear();
            self.adjusted.extend_from_slice(logits);
            penalize(&mut self.adjusted, penalty, recent);
            return Ok(first_max(&self.adjusted));
        }
        let logits = Tensor::from_slice(logits, logits.len(), &Device::Cpu)?;
        let logits = if penalty == 1.0 { logits } else { candle_transformers::utils::apply_repeat_penalty(&logits, penalty, recent)? };
        Ok(self.processor.sample(&logits)?)
    }
}

/// candle's `apply_repeat_penalty`, in place: each distinct token of `recent` once, a positive
/// logit divided by the penalty, a negative one multiplied.
fn penalize(logits: &mut [f32], penalty: f32, recent: &[u32]) {
    for (i, &id) in recent.iter().enumerate() {
        if recent[..i].contains(&id) {
            continue;
        }
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l >= 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// candle's argmax: the first of the largest values, a later one winning only when strictly
/// larger (so NaNs never win, unless the first value is one).
///
/// Kept in eight lanes, each the first of its own largest: one running best is a chain of
/// compares through the whole vocabulary, each waiting for the last, on every greedy step. The
/// lanes' bests then give the first of the largest overall.
fn first_max(values: &[f32]) -> u32 {
    if values[0].is_nan() {
        return 0; // nothing is larger than a NaN
    }
    let (v8, rest) = values.as_chunks::<8>();
    let (mut best, mut at) = ([f32::NEG_INFINITY; 8], [0u32; 8]);
    for (c, v) in v8.iter().enumerate() {
        for l in 0..8 {
            let later = best[l] < v[l];
            best[l] = if later { v[l] } else { best[l] };
            at[l] = if later { (8 * c + l) as u32 } else { at[l] };
        }
    }
    // The earliest of the lanes holding the largest. A lane that never rose above −∞ still says
    // 0, so with no value above −∞ (or no whole eight) the first value stands, as it would one
    // at a time.
    let top = crate::attention::max(f32::NEG_INFINITY, best);
    let mut at = (0..8).filter(|&l| best[l] == top).map(|l| at[l]).min().expect("the largest is one of the lanes'");
    let mut top = values[at as usize];
    for (i, &v) in rest.iter().enumerate() {
        if top < v {
            (at, top) = ((8 * v8.len() + i) as u32, v);
        }
    }
    at
}

/// What the sampler sees for one step, for display: the raw softmax and the distribution actually
/// sampled from. Mirrors `LogitsProcessor` (repeat penalty, ÷ temperature, softmax, top-k, then
/// top-p with candle's cut rule) rather than calling it, because it keeps its probabilities private.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
    /// softmax of the raw logits (temperature 1, no penalty).
    pub prob: f32,
    /// probability under the settings, after cuts and renormalization (0 if cut).
    pub prob_final: f32,
}

impl SamplingParams {
    /// The k most likely tokens by the raw logits, each with its raw probability and its
    /// probability as sampled (`sampled`: the token the sampler picked from these logits). Shown
    /// for every generated token, so it touches each of the vocabulary's logits only a few times:
    /// no sort of the whole vocabulary (two of them took 2.8 ms a step natively; without them the
    /// worker decoded 10–15% faster).
    pub fn candidates(&self, logits: &[f32], context: &[u32], sampled: u32, k: usize) -> Vec<Candidate> {
        let raw = Softmax::of(logits, 1.0);
        let top = top_k(logits, k);
        if self.temperature <= 0.0 {
            // Greedy: all of it on the sampler's argmax.
            return top.iter().map(|&i| Candidate { id: i as u32, logit: logits[i], prob: raw.prob(logits[i]), prob_final: if i as u32 == sampled { 1.0 } else { 0.0 } }).collect();
        }
        let mut adjusted = logits.to_vec();
        if self.repeat_penalty != 1.0 {
            penalize(&mut adjusted, self.repeat_penalty, &context[context.len().saturating_sub(self.repeat_last_n)..]);
        }
        let p = softmax(&adjusted, self.temperature as f32);
        let kept_ids = self.kept(&adjusted, &p);
        let mut kept = vec![kept_ids.is_none(); p.len()];
        for i in kept_ids.into_iter().flatten() {
            kept[i] = true;
        }
        // Summed in token order (zeros for the tokens cut), as it always was.
        let total: f32 = p.iter().zip(&kept).map(|(&p, &k)| if k { p } else { 0.0 }).sum();
        top.iter().map(|&i| Candidate { id: i as u32, logit: logits[i], prob: raw.prob(logits[i]), prob_final: if kept[i] { p[i] / total } else { 0.0 } }).collect()
    }

    /// The tokens sampling keeps (`p`: softmax of the adjusted logits), most likely first, or
    /// None when it keeps them all.
    fn kept(&self, adjusted: &[f32], p: &[f32]) -> Option<Vec<usize>> {
        if self.top_k.is_none() && self.top_p.is_none() {
            return None;
        }
        let kept = top_k(adjusted, self.top_k.unwrap_or(adjusted.len()));
        let kept_mass: f32 = kept.iter().map(|&i| p[i]).sum();
        // candle's rule: walk down the kept tokens, dropping each once the mass so far reaches p
        // (with top-k, only when p is below what top-k kept).
        let Some(cut) = self.top_p.map(|tp| tp as f32).filter(|&tp| self.top_k.is_none() || tp < kept_mass) else { return Some(kept) };
        let mut cumsum = 0.0;
        Some(kept.into_iter().take_while(|&i| {
            let keep = cumsum < cut;
            cumsum += p[i];
            keep
        }).collect())
    }
}

/// The indices of the k largest values, largest first (equal values: lower index first),
/// without sorting the rest.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(values.len());
    let by_value = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    if k <= 64 {
        // One pass, keeping the best k in order: nearly every value loses its one comparison
        // with the k-th best so far (in index order, an equal value ranks after it).
        // The plain `v < floor` settles nearly every value in one float comparison (it implies
        // total_cmp's Less; ties, signed zeros and NaNs go on to total_cmp).
        let mut best: Vec<usize> = Vec::with_capacity(k + 1);
        let mut floor = f32::NEG_INFINITY;
        for (i, &v) in values.iter().enumerate() {
            if best.len() == k && (v < floor || best.last().is_none_or(|&last| v.total_cmp(&values[last]).is_le())) {
                continue;
            }
            let at = best.partition_point(|b| by_value(b, &i).is_lt());
            best.insert(at, i);
            best.truncate(k);
            if best.len() == k {
                floor = best.last().map_or(f32::INFINITY, |&last| values[last]);
            }
        }
        return best;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_value);
    }
    order.truncate(k);
    order.sort_unstable_by(by_value);
    order
}

/// softmax(logits / temperature) one probability at a time: its maximum and normalizer, for when
/// a few are wanted.
struct Softmax {
    max: f32,
    sum: f32,
    temperature: f32,
}

impl Softmax {
    /// The maximum alone: `exp` before the normalizer is known.
    fn unnormalized(logits: &[f32], temperature: f32) -> Self {
        Softmax { max: crate::attention::max_by_lanes(logits), sum: 1.0, temperature }
    }

    fn of(logits: &[f32], temperature: f32) -> Self {
        let mut s = Softmax::unnormalized(logits, temperature);
        // The exponentials a chunk at a time in a loop of their own, which vectorizes (fused with
        // the sum, it ran a third as fast); the sum in `softmax`'s order, in eight lanes across
        // the chunks (whole eights, but for the last).
        let (mut sum, mut e, mut rest) = (LaneSum::default(), [0f32; 256], 0..0);
        for chunk in logits.chunks(e.len()) {
            for (e, &l) in e.iter_mut().zip(chunk) {
                *e = s.exp(l);
            }
            let e8 = e[..chunk.len()].as_chunks::<8>().0;
            sum.add(e8);
            rest = 8 * e8.len()..chunk.len();
        }
        s.sum = sum.total(&e[rest]);
        s
    }

    /// e^((logit − max) / T): the attention softmax's exponential, as the argument is never
    /// positive (libm's is a call per element).
    fn exp(&self, logit: f32) -> f32 {
        crate::attention::exp_nonpositive((logit - self.max) / self.temperature)
    }

    /// This logit's probability.
    fn prob(&self, logit: f32) -> f32 {
        self.exp(logit) / self.sum
    }
}

/// softmax(logits / temperature), as probabilities summing to 1.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let s = Softmax::unnormalized(logits, temperature);
    let mut out: Vec<f32> = logits.iter().map(|&l| s.exp(l)).collect();
    let sum = crate::attention::sum_by_lanes(&out);
    out.iter_mut().for_each(|x| *x /= sum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100).map(|i| ((i * 37 % 100) as f32) / 20.0).collect()
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let l = logits();
        let argmax = l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        let mut s = Sampler::new(SamplingParams { repeat_penalty: 1.0, ..Default::default() }).unwrap();
        assert_eq!(s.sample(&l, &[]).unwrap(), argmax);
    }

    #[test]
    fn greedy_picks_what_candles_repeat_penalty_and_argmax_pick() {
        let candle = |l: &[f32], penalty: f32, recent: &[u32]| {
            let t = Tensor::from_slice(l, l.len(), &Device::Cpu).unwrap();
            let t = candle_transformers::utils::apply_repeat_penalty(&t, penalty, recent).unwrap();
            LogitsProcessor::from_sampling(0, Sampling::ArgMax).sample(&t).unwrap()
        };
        // Ties, a penalized leader, negative logits, repeated and out-of-range context ids, NaNs.
        let cases: [(Vec<f32>, &[u32]); 6] = [
            (logits(), &[]),
            (logits(), &[19, 19, 40, 99, 1000]),
            (vec![2.0, 5.0, 5.0, 1.0], &[1]),
            (vec![-3.0, -1.0, -1.05, -2.0], &[1, 1, 1]),
            (vec![1.0, f32::NAN, 3.0, 3.0], &[3]),
            (vec![f32::NAN, 4.0, 2.0], &[]),
        ];
        for (l, recent) in cases {
            for penalty in [1.0, 1.1, 2.0] {
                let p = SamplingParams { repeat_penalty: penalty, repeat_last_n: 64, ..Default::default() };
                let ours = Sampler::new(p).unwrap().sample(&l, recent).unwrap();
                assert_eq!(ours, candle(&l, penalty, recent), "{l:?}, penalty {penalty}, context {recent:?}");
            }
        }
    }

    #[test]
    fn argmax_in_lanes_picks_what_one_running_best_picks() {
        let one_at_a_time = |values: &[f32]| {
            let (mut at, mut best) = (0, values[0]);
            for (i, &v) in values.iter().enumerate() {
                if best < v {
                    (at, best) = (i, v);
                }
            }
            at as u32
        };
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        let mut cases: Vec<Vec<f32>> = vec![vec![nan; 40], vec![-inf; 40], vec![0.0; 17], vec![-0.0, 0.0, 0.0], vec![1.0, 0.0, 3.0, 3.0, nan, 3.0, 2.0, 1.0, 3.0, 0.5, 3.0]];
        // Random rows of every length up to 40 (the eights and the rest), with many ties, NaNs
        // and infinities among them, and the leader's first copy anywhere.
        for seed in 0..2000u32 {
            let len = 1 + seed as usize % 40;
            cases.push((0..len).map(|i| match ((i as u32 + 1).wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) >> 3 & 15 {
                0 => nan,
                1 => -inf,
                2 if seed % 3 == 0 => inf,
                r => (r % 5) as f32 - 2.0,
            }).collect());
        }
        for values in &cases {
            assert_eq!(first_max(values), one_at_a_time(values), "{values:?}");
        }
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let l = logits();
        let run = |seed| {
            let p = SamplingParams { temperature: 1.5, top_p: Some(0.95), seed, ..Default::default() };
            let mut s = Sampler::new(p).unwrap();
            (0..32).map(|_| s.sample(&l, &[]).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let l = logits();
        let p = SamplingParams { temperature: 5.0, top_k: Some(1), repeat_penalty: 1.0, ..Default::default() };
        let mut s = Sampler::new(p).unwrap();
        let argmax = l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        assert!((0..20).all(|_| s.sample(&l, &[]).unwrap() == argmax));
    }

    #[test]
    fn repeat_penalty_moves_greedy_off_a_repeated_token() {
        let mut l = vec![0.0f32; 10];
        l[3] = 2.0;
        l[5] = 1.9;
        let p = SamplingParams { repeat_penalty: 1.5, ..Default::default() };
        let mut s = Sampler::new(p).unwrap();
        assert_eq!(s.sample(&l, &[3]).unwrap(), 5);
    }

    #[test]
    fn candidates_show_raw_and_final_probabilities() {
        let l = vec![3.0f32, 2.0, 1.0, 0.0];
        let greedy_params = SamplingParams { repeat_penalty: 1.0, ..Default::default() };
        let picked = Sampler::new(greedy_params.clone()).unwrap().sample(&l, &[]).unwrap();
        let greedy = greedy_params.candidates(&l, &[], picked, 4);
        assert_eq!(greedy[0].prob_final, 1.0);
        assert!((greedy.iter().map(|c| c.prob).sum::<f32>() - 1.0).abs() < 1e-6);
        let top2 = SamplingParams { temperature: 1.0, top_k: Some(2), repeat_penalty: 1.0, ..Default::default() }.candidates(&l, &[], 0, 4);
        assert_eq!(top2[2].prob_final, 0.0);
        assert!((top2[0].prob_final + top2[1].prob_final - 1.0).abs() < 1e-6);
    }

    #[test]
    fn candidates_match_a_full_sort_of_the_vocabulary_for_every_kind_of_sampling() {
        // A vocabulary's worth of logits, with ties.
        let l: Vec<f32> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) % 700) as f32 / 50.0 - 7.0).collect();
        let context: Vec<u32> = (0..300).map(|i| i * 13 % 5000).collect();
        let settings = [(0.0, None, None), (0.8, None, None), (0.8, Some(40), None), (1.3, None, Some(0.9)), (0.7, Some(50), Some(0.5))];
        for (temperature, top_k, top_p) in settings {
            let params = SamplingParams { temperature, top_k, top_p, ..Default::default() };
            let picked = Sampler::new(params.clone()).unwrap().sample(&l, &context).unwrap();
            let got = params.candidates(&l, &context, picked, 10);
            // The definition, plainly: penalty, a stable sort of everything, softmax in f64, the cuts.
            let mut adjusted = l.clone();
            let recent: std::collections::HashSet<u32> = context[context.len() - params.repeat_last_n..].iter().copied().collect();
            for &id in &recent {
                let a = &mut adjusted[id as usize];
                *a = if *a >= 0.0 { *a / params.repeat_penalty } else { *a * params.repeat_penalty };
            }
            let sorted = |v: &[f32]| -> Vec<usize> {
                let mut o: Vec<usize> = (0..v.len()).collect();
                o.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
                o
            };
            let softmax64 = |v: &[f32], t: f64| -> Vec<f64> {
                let max = v.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
                let e: Vec<f64> = v.iter().map(|&x| ((x as f64 - max) / t).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.iter().map(|x| x / sum).collect()
            };
            let (raw, by_raw, by_adjusted) = (softmax64(&l, 1.0), sorted(&l), sorted(&adjusted));
            let mut final_p = vec![0f64; l.len()];
            if temperature == 0.0 {
                // Greedy: all on the first of the equal maxima of the adjusted logits (candle's argmax).
                final_p[by_adjusted[0]] = 1.0;
            } else {
                let p = softmax64(&adjusted, temperature);
                let kept = &by_adjusted[..top_k.unwrap_or(l.len())];
                let mut mass = 0.0;
                for &i in kept {
                    if top_p.is_some_and(|tp| mass >= tp && (top_k.is_none() || tp < kept.iter().map(|&j| p[j]).sum())) {
                        break;
                    }
                    mass += p[i];
                    final_p[i] = p[i];
                }
                let total: f64 = final_p.iter().sum();
                final_p.iter_mut().for_each(|x| *x /= total);
            }
            let ids: Vec<usize> = got.iter().map(|c| c.id as usize).collect();
            assert_eq!(ids, by_raw[..10], "{params:?}");
            for c in &got {
                let i = c.id as usize;
                assert!((c.prob as f64 - raw[i]).abs() < 1e-6 && (c.prob_final as f64 - final_p[i]).abs() < 1e-5, "{params:?}: token {i}: {c:?}, expected {} / {}", raw[i], final_p[i]);
            }
        }
    }

    #[test]
    fn a_probability_one_at_a_time_has_the_bits_of_the_whole_softmax() {
        let l: Vec<f32> = (0..1000u32).map(|i| (i.wrapping_mul(2654435761) % 997) as f32 / 37.0 - 12.0).collect();
        for t in [1.0, 0.7] {
            let (one, all) = (Softmax::of(&l, t), softmax(&l, t));
            assert!(l.iter().zip(&all).all(|(&x, p)| one.prob(x).to_bits() == p.to_bits()), "T = {t}");
        }
    }

    #[test]
    fn top_k_is_a_stable_sort_cut_short_whichever_way_it_is_found() {
        let v: Vec<f32> = (0..3000u32).map(|i| (i.wrapping_mul(2654435761) % 300) as f32).collect();
        let mut sorted: Vec<usize> = (0..v.len()).collect();
        sorted.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        for k in [0, 1, 10, 64, 65, 500, 3000, 4000] {
            assert_eq!(top_k(&v, k), sorted[..k.min(v.len())], "k = {k}");
        }
    }

    #[test]
    fn out_of_range_settings_are_refused_with_the_field() {
        let p = SamplingParams { top_p: Some(1.5), ..Default::default() };
        assert!(Sampler::new(p).err().unwrap().to_string().contains("top_p"));
    }
}
