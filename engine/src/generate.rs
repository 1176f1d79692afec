//! Streaming generation, one token per call, for firmware and CLIs alike: the
//! prompt is run through the session in one [`Session::prefill`] (at the
//! first step; its tokens are still handed out one per step), then tokens are
//! sampled until the
//! caller's limit, an end-of-text token, or a full context. Text comes out as
//! whole UTF-8 characters as soon as they are complete.
//!
//! ```no_run
//! use kinglet::generate::Generator;
//! use kinglet::{session_floats, tokenizer, ModelFile, Sampler, SamplerConfig, Session};
//! # fn main() -> Result<(), kinglet::Error> {
//! # let file_bytes: &[u8] = &[];
//! let model = ModelFile::new_checked(file_bytes)?;
//! let text = "Once upon a time";
//! // [max_tokens] ids and their merge scratch, which a static could hold too.
//! let mut prompt = vec![0u32; tokenizer::max_tokens(text, true)];
//! let mut scratch = vec![0u32; tokenizer::scratch_words(prompt.len())];
//! let n = tokenizer::encode_with_scratch(&model.vocab(), text, true, &mut prompt, &mut scratch)?;
//! let mut buffer = vec![0.0f32; session_floats(model.config(), 256)];
//! let mut session = Session::new(&model, &mut buffer, 256)?;
//! let mut sampler = Sampler::new(model.config().vocab_size, SamplerConfig::default())?;
//! let mut generator = Generator::new(&mut session, &mut sampler, &prompt[..n], 100)?;
//! while generator.step(|text| print!("{text}"))?.is_some() {}
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use crate::error::Error;
use crate::sampler::Sampler;
use crate::session::Session;
use crate::tokenizer::Decoder;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The requested number of new tokens was produced.
    Length,
    /// The model produced its end-of-text token (EOS, or BOS as llama2.c
    /// treats it: the start of another sequence).
    EndOfText,
    /// The session's context is full.
    ContextFull,
}

/// One token of the output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// The token id.
    pub id: u32,
    /// Whether it came from the prompt rather than the sampler.
    pub from_prompt: bool,
}

/// Drives a session and a sampler through a prompt and then sampled tokens.
pub struct Generator<'g, 'a, T: AsRef<[u8]>> {
    session: &'g mut Session<'a, T>,
    sampler: &'g mut Sampler,
    prompt: &'g [u32],
    decoder: Decoder,
    /// Prompt tokens handed out so far.
    prompt_done: usize,
    /// Whether the prompt has been run through the session.
    prompt_run: bool,
    new_tokens: u32,
    max_new_tokens: u32,
    stop: Option<Stop>,
}

impl<'g, 'a, T: AsRef<[u8]>> Generator<'g, 'a, T> {
    /// Prepares to run `prompt` (token ids, at least one: for BPE models
    /// usually BOS and the encoded text) and then sample up to
    /// `max_new_tokens` tokens, continuing the session from its current
    /// position.
    ///
    /// Errors: [`Error::EmptyPrompt`]; [`Error::TokenOutOfRange`] for a
    /// prompt token; [`Error::SequenceFull`] when the prompt does not fit in
    /// the session's remaining positions.
    pub fn new(
        session: &'g mut Session<'a, T>,
        sampler: &'g mut Sampler,
        prompt: &'g [u32],
        max_new_tokens: u32,
    ) -> Result<Self, Error> {
        let vocab_size = session.model().config().vocab_size;
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if let Some(&token) = prompt.iter().find(|&&t| t >= vocab_size) {
            return Err(Error::TokenOutOfRange { token, vocab_size });
        }
        if prompt.len() > (session.max_seq() - session.pos()) as usize {
            return Err(Error::SequenceFull {
                max_seq_len: session.max_seq(),
            });
        }
        Ok(Generator {
            session,
            sampler,
            prompt,
            decoder: Decoder::new(),
            prompt_done: 0,
            prompt_run: false,
            new_tokens: 0,
            max_new_tokens,
            stop: None,
        })
    }

    /// Produces the next token — the next prompt token, then sampled ones —
    /// and passes its text to `emit` (zero or more calls; a multi-byte
    /// character held back until complete). Returns `None` once generation
    /// has ended; [`stop`](Self::stop) says why.
    pub fn step(&mut self, mut emit: impl FnMut(&str)) -> Result<Option<Token>, Error> {
        if self.stop.is_some() {
            return Ok(None);
        }
        if !self.prompt_run {
            // Every prompt token but the last feeds the next one; the last
            // only when something will be sampled from its logits.
            let run = if self.max_new_tokens > 0 {
                self.prompt
            } else {
                &self.prompt[..self.prompt.len() - 1]
            };
            if !run.is_empty() {
                self.session.prefill(run)?;
            }
            self.prompt_run = true;
        }
        let vocab = self.session.model().vocab();
        let token = if let Some(&id) = self.prompt.get(self.prompt_done) {
            self.prompt_done += 1;
            Token {
                id,
                from_prompt: true,
            }
        } else if self.new_tokens == self.max_new_tokens {
            return Ok(self.finish(Stop::Length, emit));
        } else {
            let id = self.sampler.sample(self.session.logits_mut());
            if Some(id) == vocab.eos() || Some(id) == vocab.bos() {
                return Ok(self.finish(Stop::EndOfText, emit));
            }
            self.new_tokens += 1;
            Token {
                id,
                from_prompt: false,
            }
        };
        self.decoder.push(&vocab, token.id, &mut emit)?;
        // Run a sampled token to get the logits for the next one, unless
        // nothing more will be sampled from them (the prompt ran above).
        if !token.from_prompt && self.new_tokens < self.max_new_tokens {
            if self.session.pos() < self.session.max_seq() {
                self.session.forward(token.id)?;
            } else {
                self.stop = Some(Stop::ContextFull);
                self.decoder.finish(&mut emit);
            }
        }
        Ok(Some(token))
    }

    fn finish(&mut self, stop: Stop, emit: impl FnMut(&str)) -> Option<Token> {
        self.stop = Some(stop);
        self.decoder.finish(emit);
        None
    }

    /// Why generation ended, once it has.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// Tokens sampled so far (prompt tokens not counted).
    pub fn new_tokens(&self) -> u32 {
        self.new_tokens
    }

    /// Prompt tokens handed out so far.
    pub fn prompt_tokens_done(&self) -> usize {
        self.prompt_done
    }
}
