//! Prompt → prefill → one token per step: the generation loop the CLI and the browser share, so
//! the same prompt, settings and seed give the same tokens in both.
//!
//! `Generation::begin` tokenizes and runs the prefill; each `next` samples one token from the
//! logits at hand and feeds it back lazily (at the following call), so the caller can stop between
//! any two tokens and a finished generation has not paid for a forward pass nobody reads.

use crate::model::{ModelError, Transformer};
use crate::sampler::{Sampler, SamplerError, SamplingParams};
use crate::tokenizer::{StreamDecoder, TextTokenizer, TokenizerError};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GenerateOptions {
    pub chat: bool,
    pub max_tokens: usize,
    /// Keep going past end-of-text tokens (they are emitted like any other): long runs and
    /// benchmarks that must reach `max_tokens`.
    pub ignore_eos: bool,
    #[serde(flatten)]
    pub sampling: SamplingParams,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { chat: false, max_tokens: 64, ignore_eos: false, sampling: SamplingParams::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-turn or end-of-text token.
    Eos,
    MaxTokens,
    /// The context window is full.
    ContextFull,
}

/// One call of `next`: a token (unless `id` is None) and whether generation has ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub id: Option<u32>,
    /// The text this token completes (empty while a UTF-8 character is incomplete).
    pub text: String,
    pub label: String,
    pub done: bool,
    pub reason: Option<StopReason>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty: type some text first")]
    EmptyPrompt,
    #[error("the prompt is {prompt_tokens} tokens but the context holds {max_context} (one more is needed to answer): shorten the prompt by at least {} tokens", prompt_tokens + 1 - max_context)]
    PromptTooLong { prompt_tokens: usize, max_context: usize },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
}

pub struct Generation {
    sampler: Sampler,
    decoder: StreamDecoder,
    /// Prompt and generated ids: the repeat penalty's context.
    sequence: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    ignore_eos: bool,
    /// The last sampled token, not yet fed to the model.
    unfed: Option<u32>,
    finished: Option<StopReason>,
    params: SamplingParams,
    /// Logits and context of the latest step, kept so its candidates can be shown on request.
    last_step: Option<(usize, u32, Vec<f32>, Vec<u32>)>,
}

/// The candidates of one generated step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Predictions {
    pub position: usize,
    pub sampled: u32,
    pub top: Vec<crate::sampler::Candidate>,
}

impl Generation {
    /// Tokenizes the prompt and runs the prefill; returns the generation and the prompt's ids.
    pub fn begin(model: &mut Transformer, tok: &TextTokenizer, prompt: &str, opts: &GenerateOptions) -> Result<Self, GenerateError> {
        let sampler = Sampler::new(opts.sampling.clone())?;
        let ids = tok.encode(prompt, opts.chat)?;
        if ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if ids.len() >= model.max_context() {
            return Err(GenerateError::PromptTooLong { prompt_tokens: ids.len(), max_context: model.max_context() });
        }
        model.reset();
        model.forward(&ids)?;
        Ok(Generation {
            sampler,
            decoder: StreamDecoder::default(),
            prompt_len: ids.len(),
            sequence: ids,
            max_tokens: opts.max_tokens,
            ignore_eos: opts.ignore_eos,
            unfed: None,
            finished: None,
            params: opts.sampling.clone(),
            last_step: None,
        })
    }

    pub fn prompt_ids(&self) -> &[u32] {
        &self.sequence[..self.prompt_len]
    }

    pub fn generated_ids(&self) -> &[u32] {
        &self.sequence[self.prompt_len..]
    }

    pub fn sequence(&self) -> &[u32] {
        &self.sequence
    }

    pub fn finished(&self) -> Option<StopReason> {
        self.finished
    }

    /// The k most likely next tokens of the latest step, raw and as sampled.
    pub fn predictions(&self, k: usize) -> Option<Predictions> {
        let (position, sampled, logits, context) = self.last_step.as_ref()?;
        Some(Predictions { position: *position, sampled: *sampled, top: self.params.candidates(logits, context, *sampled, k) })
    }

    /// Produces the next token, or says why there is none.
    pub fn next(&mut self, model: &mut Transformer, tok: &TextTokenizer) -> Result<Step, GenerateError> {
        let end = |reason| Step { id: None, text: String::new(), label: String::new(), done: true, reason: Some(reason) };
        if let Some(reason) = self.finished {
            return Ok(end(reason));
        }
        if self.generated_ids().len() >= self.max_tokens {
            self.finished = Some(StopReason::MaxTokens);
            return Ok(end(StopReason::MaxTokens));
        }
        if let Some(id) = self.unfed.take() {
            if model.position() >= model.max_context() {
                self.finished = Some(StopReason::ContextFull);
                return Ok(end(StopReason::ContextFull));
            }
            model.forward(&[id])?;
        }
        let id = self.sampler.sample(model.logits(), &self.sequence)?;
        let kept = self.last_step.take().map(|(_, _, mut l, mut c)| {
            l.clear();
            c.clear();
            (l, c)
        });
        let (mut logits, mut context) = kept.unwrap_or_default();
        logits.extend_from_slice(model.logits());
        context.extend_from_slice(&self.sequence);
        self.last_step = Some((self.sequence.len(), id, logits, context));
        self.sequence.push(id);
        self.unfed = Some(id);
        let label = tok.label(id);
        if !self.ignore_eos && tok.stop_ids().contains(&id) {
            self.finished = Some(StopReason::Eos);
            return Ok(Step { id: Some(id), text: String::new(), label, done: true, reason: Some(StopReason::Eos) });
        }
        let text = self.decoder.step(tok, id);
        let (done, reason) = if self.generated_ids().len() >= self.max_tokens {
            (true, Some(StopReason::MaxTokens))
        } else if model.position() >= model.max_context() {
            (true, Some(StopReason::ContextFull))
        } else {
            (false, None)
        };
        if done {
            self.finished = reason;
        }
        Ok(Step { id: Some(id), text, label, done, reason })
    }
}
