//! Logits → the next token, with candle-transformers' `LogitsProcessor` and repeat penalty.
//!
//! Temperature 0 is greedy (argmax). Otherwise softmax(logits / T), optionally restricted to the
//! top-k tokens and/or the smallest set whose probability reaches top-p, sampled with a seeded
//! `StdRng`: the same seed and settings give the same tokens natively and in the browser.

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

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
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, SamplerError> {
        params.validate()?;
        Ok(Sampler { processor: LogitsProcessor::from_sampling(params.seed, params.sampling()), params })
    }

    /// Picks the next token; `context` is the sequence so far (for the repeat penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> Result<u32, SamplerError> {
        let logits = Tensor::from_slice(logits, logits.len(), &Device::Cpu)?;
        let logits = if self.params.repeat_penalty == 1.0 {
            logits
        } else {
            let start = context.len().saturating_sub(self.params.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(&logits, self.params.repeat_penalty, &context[start..])?
        };
        Ok(self.processor.sample(&logits)?)
    }
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
    pub fn candidates(&self, logits: &[f32], context: &[u32], k: usize) -> Vec<Candidate> {
        let raw = softmax(logits, 1.0);
        let mut adjusted = logits.to_vec();
        if self.repeat_penalty != 1.0 {
            let start = context.len().saturating_sub(self.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &id in &context[start..] {
                if seen.insert(id) {
                    if let Some(l) = adjusted.get_mut(id as usize) {
                        *l = if *l >= 0.0 { *l / self.repeat_penalty } else { *l * self.repeat_penalty };
                    }
                }
            }
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_unstable_by(|&a, &b| adjusted[b].total_cmp(&adjusted[a]));
        let mut final_p = vec![0f32; logits.len()];
        if self.temperature <= 0.0 {
            final_p[order[0]] = 1.0;
        } else {
            let p = softmax(&adjusted, self.temperature as f32);
            let keep = self.top_k.unwrap_or(order.len()).min(order.len());
            let kept = &order[..keep];
            let kept_mass: f32 = kept.iter().map(|&i| p[i]).sum();
            // candle's rule: walk down the kept tokens, dropping each once the mass so far reaches p
            // (with top-k, only when p is below what top-k kept).
            let cut = self.top_p.map(|tp| tp as f32).filter(|&tp| self.top_k.is_none() || tp < kept_mass);
            let mut cumsum = 0.0;
            for &i in kept {
                if cut.is_some_and(|tp| cumsum >= tp) {
                    continue;
                }
                cumsum += p[i];
                final_p[i] = p[i];
            }
            let total: f32 = final_p.iter().sum();
            final_p.iter_mut().for_each(|x| *x /= total);
        }
        let mut by_raw: Vec<usize> = (0..logits.len()).collect();
        by_raw.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        by_raw.iter().take(k).map(|&i| Candidate { id: i as u32, logit: logits[i], prob: raw[i], prob_final: final_p[i] }).collect()
    }
}

/// softmax(logits / temperature), as probabilities summing to 1.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = crate::attention::max(f32::NEG_INFINITY, logits.iter().copied());
    let mut out: Vec<f32> = logits.iter().map(|&l| libm::expf((l - max) / temperature)).collect();
    let sum: f32 = out.iter().sum();
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
        let greedy = SamplingParams { repeat_penalty: 1.0, ..Default::default() }.candidates(&l, &[], 4);
        assert_eq!(greedy[0].prob_final, 1.0);
        assert!((greedy.iter().map(|c| c.prob).sum::<f32>() - 1.0).abs() < 1e-6);
        let top2 = SamplingParams { temperature: 1.0, top_k: Some(2), repeat_penalty: 1.0, ..Default::default() }.candidates(&l, &[], 4);
        assert_eq!(top2[2].prob_final, 0.0);
        assert!((top2[0].prob_final + top2[1].prob_final - 1.0).abs() < 1e-6);
    }

    #[test]
    fn out_of_range_settings_are_refused_with_the_field() {
        let p = SamplingParams { top_p: Some(1.5), ..Default::default() };
        assert!(Sampler::new(p).err().unwrap().to_string().contains("top_p"));
    }
}
