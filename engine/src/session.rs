//! An inference session: fixed buffers carved from one caller-provided `f32`
//! slice, a KV cache, and the forward pass — one token at a time
//! ([`Session::forward`]) or a prompt in chunks of up to [`PREFILL_CHUNK`]
//! positions ([`Session::prefill`]), whose matrix products read each weight
//! row once per chunk instead of once per token.
//!
//! Matrix products (split by output rows) and attention (split by heads) go
//! through a [`Parallel`] hook, [`Sequential`](crate::parallel::Sequential)
//! unless [`Session::with_parallel`] gives another, one task per thread
//! (fewer when the work is small: [`Parallel::min_task_bytes`]; a token's
//! products of one input are one call, their bytes counted together);
//! each output is computed the same way whatever the split, so the results
//! are the same bits for any number of threads.
//!
//! [`Session::with_packed`] makes the quantized products read copies of the
//! matrices repacked at load time for the x86 kernels
//! ([`crate::packed_weights`]): faster, the same bits.
//!
//! The buffer's exact size is [`session_floats`], a `const fn`, so firmware can
//! size a `static`. A session never allocates, and every failure (buffer too
//! small, token out of range, sequence full) is an `Err`, never a panic.
//!
//! The activation buffers hold a prefill chunk of positions, [`PREFILL_CHUNK`]
//! by default. A program that decodes token by token (or does not mind a
//! slower prompt) can ask for a smaller chunk with
//! [`session_floats_for_chunk`] and [`Session::with_chunk`]: with a chunk of
//! 1 every activation is one position wide. The chunk changes no bit of the
//! results, only the memory and the prefill's speed.
//!
//! ```no_run
//! use kinglet::{session_floats, ModelFile, Sampler, SamplerConfig, Session};
//! # fn main() -> Result<(), kinglet::Error> {
//! # let file_bytes: &[u8] = &[];
//! let model = ModelFile::new_checked(file_bytes)?;
//! let max_seq = 256;
//! // Firmware would use a `static mut [f32; session_floats(&CONFIG, 256)]`.
//! let mut buffer = vec![0.0f32; session_floats(model.config(), max_seq)];
//! let mut session = Session::new(&model, &mut buffer, max_seq)?;
//! let mut sampler = Sampler::new(model.config().vocab_size, SamplerConfig::default())?;
//! let mut token = model.vocab().bos().unwrap_or(0);
//! for _ in 0..32 {
//!     session.forward(token)?;
//!     token = sampler.sample(session.logits_mut());
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;
use crate::error::Error;
use crate::format::ModelFile;
use crate::kernels::{self, packed::PackedMatrix, HeadRun};
use crate::ops::{self, Heads};
use crate::packed_weights::{PackedLayer, PackedWeights};
use crate::parallel::{Parallel, SEQUENTIAL};
use crate::quant::BlockQ8;
use crate::tensor::{Matrix, BLOCK_LEN};

/// Prompt positions [`Session::prefill`] runs together, at most and by
/// default. Every activation buffer holds a chunk of positions, so the chunk
/// sets the session's extra memory (see [`session_floats_for_chunk`]) as
/// well as how often a weight row is reused.
pub const PREFILL_CHUNK: usize = 16;

/// The exact number of `f32` elements a session of `max_seq` positions needs
/// for `config`, with prefill chunks of [`PREFILL_CHUNK`] positions:
/// [`session_floats_for_chunk`]`(config, max_seq, PREFILL_CHUNK)`.
pub const fn session_floats(config: &Config, max_seq: u32) -> usize {
    session_floats_for_chunk(config, max_seq, PREFILL_CHUNK)
}

/// The exact number of `f32` elements a session of `max_seq` positions needs
/// for `config` when its prefill runs `chunk` positions together
/// (`C` = `chunk`, 1 to [`PREFILL_CHUNK`]; 1 for a session that only
/// decodes):
///
/// | region         | elements                          |
/// |----------------|-----------------------------------|
/// | `x`, `xb`, `xb2`, `q` | `C × dim` each             |
/// | `hb`, `hb2`    | `C × hidden_dim` each             |
/// | `att`          | `n_heads × C × (max_seq + head_dim)` (scores of each query, then outputs) |
/// | `logits`       | `vocab_size`                      |
/// | KV cache       | `2 × n_layers × max_seq × kv_dim` |
/// | `products`     | `C × max(dim, hidden_dim)` (matrix products split among threads) |
/// | `xq`           | `C × 9 × ⌈max(dim, hidden_dim) / 32⌉` (Q8 activation blocks) |
/// | `rotations`    | `C × head_dim` (RoPE's cosines and sines)  |
///
/// Saturates at `usize::MAX` (which no buffer can meet) on targets where the
/// size overflows, and for a `chunk` of 0 or more than [`PREFILL_CHUNK`];
/// never panics, even for an unvalidated config.
pub const fn session_floats_for_chunk(config: &Config, max_seq: u32, chunk: usize) -> usize {
    if chunk == 0 || chunk > PREFILL_CHUNK {
        return usize::MAX;
    }
    let dim = config.dim as usize;
    let hidden = config.hidden_dim as usize;
    let seq = max_seq as usize;
    let head_dim = match config.dim.checked_div(config.n_heads) {
        Some(d) => d as usize,
        None => 0,
    };
    let kv_dim = head_dim.saturating_mul(config.n_kv_heads as usize);
    let activations = dim
        .saturating_mul(4)
        .saturating_add(hidden.saturating_mul(2))
        .saturating_mul(chunk);
    let att = (config.n_heads as usize).saturating_mul(attention_stride(chunk, seq, head_dim));
    let kv_cache = (config.n_layers as usize)
        .saturating_mul(2)
        .saturating_mul(seq)
        .saturating_mul(kv_dim);
    activations
        .saturating_add(att)
        .saturating_add(config.vocab_size as usize)
        .saturating_add(kv_cache)
        .saturating_add(widest(dim, hidden).saturating_mul(chunk))
        .saturating_add(activation_block_floats(chunk, dim, hidden))
        .saturating_add(chunk.saturating_mul(head_dim))
}

/// The wider of the two matrix inputs, `dim` or `hidden_dim`.
const fn widest(dim: usize, hidden: usize) -> usize {
    if dim > hidden {
        dim
    } else {
        hidden
    }
}

/// Floats of one head's attention workspace: its scores over `max_seq`
/// positions for each query of a chunk, `[chunk × max_seq]`, then its
/// outputs for a chunk, `[chunk × head_dim]`.
const fn attention_stride(chunk: usize, max_seq: usize, head_dim: usize) -> usize {
    chunk.saturating_mul(max_seq.saturating_add(head_dim))
}

/// Floats holding the Q8 blocks of a chunk of the widest matrix input.
const fn activation_block_floats(chunk: usize, dim: usize, hidden: usize) -> usize {
    widest(dim, hidden)
        .div_ceil(BLOCK_LEN)
        .saturating_mul(kernels::FLOATS_PER_BLOCK_Q8)
        .saturating_mul(chunk)
}

/// [`session_floats`] in bytes.
pub const fn session_bytes(config: &Config, max_seq: u32) -> usize {
    session_bytes_for_chunk(config, max_seq, PREFILL_CHUNK)
}

/// [`session_floats_for_chunk`] in bytes.
pub const fn session_bytes_for_chunk(config: &Config, max_seq: u32, chunk: usize) -> usize {
    session_floats_for_chunk(config, max_seq, chunk).saturating_mul(core::mem::size_of::<f32>())
}

/// One sequence being decoded: the model, the activations and the KV cache.
///
/// Activation buffers hold a prefill chunk of `C` positions (up to
/// [`PREFILL_CHUNK`], see [`with_chunk`](Self::with_chunk)),
/// position-major (`[C × width]`); a single-token
/// [`forward`](Self::forward) uses their first row.
pub struct Session<'a, T: AsRef<[u8]>> {
    model: &'a ModelFile<T>,
    /// Runs the row-split matrix products and the per-head attention.
    parallel: &'a dyn Parallel,
    /// Packed copies of the quantized matrices, read instead of the file's.
    packed: Option<PackedWeights<'a>>,
    /// Positions the KV cache holds.
    max_seq: u32,
    /// Positions a prefill runs together (`C`), 1 to [`PREFILL_CHUNK`].
    chunk: usize,
    /// Positions already run (the next token goes at this position).
    pos: u32,
    /// Residual stream, `[C × dim]`.
    x: &'a mut [f32],
    /// Normalized input of a sublayer, then attention output, `[C × dim]`.
    xb: &'a mut [f32],
    /// Output of a projection back into the residual stream, `[C × dim]`.
    xb2: &'a mut [f32],
    /// Queries, `[C × dim]` (= `n_heads × head_dim` per position).
    q: &'a mut [f32],
    /// SwiGLU gate `w1·x`, then the gated hidden vector, `[C × hidden_dim]`.
    hb: &'a mut [f32],
    /// SwiGLU up projection `w3·x`, `[C × hidden_dim]`.
    hb2: &'a mut [f32],
    /// Per attention task's run of `k` heads: their attention weights for
    /// each query of a chunk, `[C × k × max_seq]`, then their outputs
    /// `[C × k × head_dim]`; `[n_heads × C × (max_seq + head_dim)]` in all.
    att: &'a mut [f32],
    /// Output of the last forward or prefill, `[vocab_size]`.
    logits: &'a mut [f32],
    /// Keys, `[n_layers × max_seq × kv_dim]`.
    key_cache: &'a mut [f32],
    /// Values, `[n_layers × max_seq × kv_dim]`.
    value_cache: &'a mut [f32],
    /// A chunk's matrix product split among threads, each task's
    /// `[C × task rows]` (rows ≤ `max(dim, hidden_dim)` in all), before it
    /// is copied into place.
    products: &'a mut [f32],
    /// The inputs of a quantized matrix, as Q8 blocks,
    /// `[C × ⌈max(dim, hidden) / 32⌉]`.
    xq: &'a mut [BlockQ8],
    /// RoPE's rotations of a chunk's positions, `[C × head_dim]`: computed
    /// once per position, used by every layer.
    rotations: &'a mut [f32],
}

impl<'a, T: AsRef<[u8]>> Session<'a, T> {
    /// Starts an empty session of up to `max_seq` positions in `buffer`, which
    /// must hold at least [`session_floats`]`(model.config(), max_seq)`
    /// elements (any excess is left unused), with prefill chunks of
    /// [`PREFILL_CHUNK`] positions. The buffer's contents do not
    /// matter: every element is written before it is read. The session runs
    /// on the calling thread until [`with_parallel`](Self::with_parallel).
    ///
    /// Errors: [`Error::InvalidInput`] when `max_seq` is 0 or larger than the
    /// model's `max_seq_len`; [`Error::BufferTooSmall`].
    pub fn new(
        model: &'a ModelFile<T>,
        buffer: &'a mut [f32],
        max_seq: u32,
    ) -> Result<Self, Error> {
        Self::with_chunk(model, buffer, max_seq, PREFILL_CHUNK)
    }

    /// As [`new`](Self::new), with a prefill that runs `chunk` positions
    /// together (1 to [`PREFILL_CHUNK`]) in a `buffer` of at least
    /// [`session_floats_for_chunk`]`(model.config(), max_seq, chunk)`
    /// elements: a smaller chunk needs less memory and reads the weights
    /// more often in a prefill. A chunk of 1 suits a session that decodes
    /// token by token. Every chunk gives the same bits.
    ///
    /// Errors: as `new`, and [`Error::InvalidInput`] when `chunk` is 0 or
    /// larger than [`PREFILL_CHUNK`].
    pub fn with_chunk(
        model: &'a ModelFile<T>,
        buffer: &'a mut [f32],
        max_seq: u32,
        chunk: usize,
    ) -> Result<Self, Error> {
        let config = *model.config();
        if max_seq == 0 || max_seq > config.max_seq_len {
            return Err(Error::InvalidInput {
                reason: "max_seq must be between 1 and the model's max_seq_len",
            });
        }
        if chunk == 0 || chunk > PREFILL_CHUNK {
            return Err(Error::InvalidInput {
                reason: "the prefill chunk must be between 1 and PREFILL_CHUNK (16) positions",
            });
        }
        let needed = session_floats_for_chunk(&config, max_seq, chunk);
        if buffer.len() < needed {
            return Err(Error::BufferTooSmall {
                needed,
                available: buffer.len(),
            });
        }
        let chunk_dim = chunk * config.dim as usize;
        let chunk_hidden = chunk * config.hidden_dim as usize;
        let seq = max_seq as usize;
        let dim = config.dim as usize;
        let hidden = config.hidden_dim as usize;
        let att = config.n_heads as usize * attention_stride(chunk, seq, config.head_dim());
        let cache = config.n_layers as usize * seq * config.kv_dim();
        // Every size below sums to `needed`, which fits in `buffer`.
        let (x, rest) = buffer.split_at_mut(chunk_dim);
        let (xb, rest) = rest.split_at_mut(chunk_dim);
        let (xb2, rest) = rest.split_at_mut(chunk_dim);
        let (q, rest) = rest.split_at_mut(chunk_dim);
        let (hb, rest) = rest.split_at_mut(chunk_hidden);
        let (hb2, rest) = rest.split_at_mut(chunk_hidden);
        let (att, rest) = rest.split_at_mut(att);
        let (logits, rest) = rest.split_at_mut(config.vocab_size as usize);
        let (key_cache, rest) = rest.split_at_mut(cache);
        let (value_cache, rest) = rest.split_at_mut(cache);
        let (products, rest) = rest.split_at_mut(chunk * widest(dim, hidden));
        let (xq, rest) = rest.split_at_mut(activation_block_floats(chunk, dim, hidden));
        let xq = kernels::blocks_in_floats(xq);
        let (rotations, _unused) = rest.split_at_mut(chunk * config.head_dim());
        Ok(Session {
            model,
            parallel: &SEQUENTIAL,
            packed: None,
            max_seq,
            chunk,
            pos: 0,
            x,
            xb,
            xb2,
            q,
            hb,
            hb2,
            att,
            logits,
            key_cache,
            value_cache,
            products,
            xq,
            rotations,
        })
    }

    /// Runs the session's matrix products and attention heads through
    /// `parallel` (e.g. a thread pool). The results do not change: every
    /// hook computes the same chunks with the same code.
    pub fn with_parallel(mut self, parallel: &'a dyn Parallel) -> Self {
        self.parallel = parallel;
        self
    }

    /// Multiplies by `packed`'s copies of the quantized matrices instead of
    /// the file's (see [`crate::packed_weights`]), in decode and prefill
    /// alike. The results do not change, bit for bit.
    ///
    /// Errors: [`Error::InvalidInput`] when `packed` was made from another
    /// model (another file's bytes).
    pub fn with_packed(mut self, packed: PackedWeights<'a>) -> Result<Self, Error> {
        if !packed.is_of(self.model) {
            return Err(Error::InvalidInput {
                reason: "packed weights made from another model",
            });
        }
        self.packed = Some(packed);
        Ok(self)
    }

    /// The model this session runs.
    pub fn model(&self) -> &'a ModelFile<T> {
        self.model
    }

    /// Positions already run; the next [`forward`](Self::forward) runs this one.
    pub fn pos(&self) -> u32 {
        self.pos
    }

    /// Positions the session can hold.
    pub fn max_seq(&self) -> u32 {
        self.max_seq
    }

    /// Positions a [`prefill`](Self::prefill) runs together, 1 to
    /// [`PREFILL_CHUNK`].
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Forgets the sequence: the next token goes at position 0.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// The logits of the last [`forward`](Self::forward) or
    /// [`prefill`](Self::prefill), `[vocab_size]` (unspecified before the
    /// first one).
    pub fn logits(&self) -> &[f32] {
        &*self.logits
    }

    /// Mutable logits, e.g. for a sampler that works in place.
    pub fn logits_mut(&mut self) -> &mut [f32] {
        self.logits
    }

    /// Runs `token` at position [`pos`](Self::pos), appends its keys and
    /// values to the cache, advances the position and returns the logits for
    /// the next token, `[vocab_size]`.
    ///
    /// Errors: [`Error::TokenOutOfRange`], [`Error::SequenceFull`],
    /// [`Error::ActivationsOverflowed`] when the activations or the logits
    /// overflow to infinity or NaN; the position is unchanged when one is
    /// returned.
    pub fn forward(&mut self, token: u32) -> Result<&[f32], Error> {
        self.check_tokens(&[token])?;
        self.run_chunk(&[token], Logits::Last)?;
        Ok(&*self.logits)
    }

    /// Runs `tokens` at positions [`pos`](Self::pos)`..pos + tokens.len()`,
    /// [`chunk`](Self::chunk) at a time, appends their keys and values to the
    /// cache, advances the position and returns the logits after the last
    /// one, `[vocab_size]`: what as many [`forward`](Self::forward) calls
    /// would give, bit for bit, with every weight row read once per chunk.
    ///
    /// Errors: [`Error::EmptyPrompt`] for no tokens, and as `forward`; the
    /// position is unchanged when one is returned.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], Error> {
        self.run_chunks(tokens, None)?;
        Ok(&*self.logits)
    }

    /// Runs `tokens` as [`prefill`](Self::prefill) does and writes the
    /// logits after each one into `logits`: row `i` (`[vocab_size]`) is what
    /// [`forward`](Self::forward) would return after `tokens[i]`, bit for
    /// bit, with every weight row, the classifier's too, read once per
    /// chunk (a model's loss on a text, say). `logits`: at least
    /// `tokens.len() × vocab_size` floats; the session's own logits are
    /// left as `prefill` leaves them. Split over threads, the classifier's
    /// tasks take the chunk's positions, each reading every row (the
    /// session's buffers do not hold a split by rows).
    ///
    /// Errors: [`Error::BufferTooSmall`] for too few `logits`, and as
    /// `prefill`; the position is unchanged when one is returned, and
    /// `logits` unspecified.
    pub fn prefill_logits(&mut self, tokens: &[u32], logits: &mut [f32]) -> Result<(), Error> {
        let vocab = self.logits.len();
        let needed = tokens.len().saturating_mul(vocab);
        let Some(logits) = logits.get_mut(..needed) else {
            return Err(Error::BufferTooSmall {
                needed,
                available: logits.len(),
            });
        };
        self.run_chunks(tokens, Some(&mut *logits))?;
        // `tokens` is not empty: `run_chunks` refuses that.
        self.logits.copy_from_slice(&logits[needed - vocab..]);
        Ok(())
    }

    /// `tokens` (checked here) a [`chunk`](Self::chunk) at a time from
    /// [`pos`](Self::pos): the logits after every one into `rows`
    /// (`[tokens.len() × vocab_size]`) when given, else the last one's into
    /// the session's. The position is back where it was on an error.
    fn run_chunks(&mut self, tokens: &[u32], rows: Option<&mut [f32]>) -> Result<(), Error> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        self.check_tokens(tokens)?;
        let (start, chunk) = (self.pos, self.chunk);
        let last = (tokens.len() - 1) / chunk;
        let mut rows = rows.map(|rows| rows.chunks_mut(chunk * self.logits.len()));
        for (i, piece) in tokens.chunks(chunk).enumerate() {
            let wanted = match rows.as_mut() {
                // One chunk of rows per chunk of tokens, by the caller's size.
                Some(rows) => Logits::Every(rows.next().unwrap_or_default()),
                None if i == last => Logits::Last,
                None => Logits::None,
            };
            if let Err(e) = self.run_chunk(piece, wanted) {
                self.pos = start;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether every token is in the vocabulary and they all fit.
    fn check_tokens(&self, tokens: &[u32]) -> Result<(), Error> {
        let vocab_size = self.model.config().vocab_size;
        if let Some(&token) = tokens.iter().find(|&&t| t >= vocab_size) {
            return Err(Error::TokenOutOfRange { token, vocab_size });
        }
        if tokens.len() > (self.max_seq - self.pos) as usize {
            return Err(Error::SequenceFull {
                max_seq_len: self.max_seq,
            });
        }
        Ok(())
    }

    /// The forward pass of `tokens` (checked, 1 to [`chunk`](Self::chunk)
    /// of them, fitting in the cache) at positions `pos..pos + n`, and the
    /// logits `wanted`. Advances `pos` on success.
    fn run_chunk(&mut self, tokens: &[u32], wanted: Logits<'_>) -> Result<(), Error> {
        let config = *self.model.config();
        let model = self.model;
        let parallel = self.parallel;
        let heads = Heads::of(&config);
        let (dim, hidden, kv_dim) = (
            config.dim as usize,
            config.hidden_dim as usize,
            config.kv_dim(),
        );
        let seq = self.max_seq as usize;
        let start = self.pos as usize;
        let n = tokens.len();
        let eps = config.norm_eps;
        // This chunk's rows of each activation buffer.
        let x = &mut self.x[..n * dim];
        let xb = &mut self.xb[..n * dim];
        let xb2 = &mut self.xb2[..n * dim];
        let q = &mut self.q[..n * dim];
        let hb = &mut self.hb[..n * hidden];
        let hb2 = &mut self.hb2[..n * hidden];
        let mut scratch = Scratch {
            parallel,
            products: self.products,
            xq: self.xq,
        };

        let rotations = &mut self.rotations[..n * heads.head_dim];
        for (t, r) in rotations.chunks_exact_mut(heads.head_dim).enumerate() {
            ops::rope_rotations(r, (start + t) as u32, config.rope_theta);
        }

        let embedding = model.token_embedding();
        for (&token, x_row) in tokens.iter().zip(x.chunks_exact_mut(dim)) {
            kernels::row_to_f32(&embedding, token as usize, x_row)?;
        }

        // The packed copies, taken in the order they were packed.
        let mut packed = on_packing_path(self.packed).map(|p| p.matrices());
        for (layer, w) in model.layers().enumerate() {
            let p = packed
                .as_mut()
                .map_or(PackedLayer::default(), |c| c.layer(&w));
            // This layer's cache, `[max_seq × kv_dim]` each; rows
            // `start..start + n` are new.
            let layer_cache = layer * seq * kv_dim..(layer + 1) * seq * kv_dim;
            let keys = &mut self.key_cache[layer_cache.clone()];
            let values = &mut self.value_cache[layer_cache];
            let new_rows = start * kv_dim..(start + n) * kv_dim;

            // Attention: project, rotate, write k and v into the cache, attend.
            ops::rmsnorm_rows(xb, x, &w.attn_norm, eps, dim);
            scratch.project(
                [
                    (q, &w.wq, p.wq),
                    (&mut keys[new_rows.clone()], &w.wk, p.wk),
                    (&mut values[new_rows.clone()], &w.wv, p.wv),
                ],
                xb,
                n,
            )?;
            let new_keys = keys[new_rows].chunks_exact_mut(kv_dim);
            let position_rotations = rotations.chunks_exact(heads.head_dim);
            for ((q_row, k_row), r) in q
                .chunks_exact_mut(dim)
                .zip(new_keys)
                .zip(position_rotations)
            {
                ops::rope(q_row, r);
                ops::rope(k_row, r);
            }
            let visible = ..(start + n) * kv_dim; // positions 0..start + n
            attend(
                parallel,
                xb,
                q,
                &keys[visible],
                &values[visible],
                self.att,
                heads,
                start,
                seq,
                self.chunk,
            )?;
            scratch.project([(xb2, &w.wo, p.wo)], xb, n)?;
            ops::add_assign(x, xb2);

            // SwiGLU MLP: w2(silu(w1 x) * w3 x).
            ops::rmsnorm_rows(xb, x, &w.ffn_norm, eps, dim);
            scratch.project([(hb, &w.w1, p.w1), (hb2, &w.w3, p.w3)], xb, n)?;
            ops::silu_mul(hb, hb2);
            scratch.project([(xb2, &w.w2, p.w2)], hb, n)?;
            ops::add_assign(x, xb2);
        }

        // The positions whose logits are wanted, and where they go.
        let (first, out) = match wanted {
            Logits::None => (n, None),
            Logits::Last => (n - 1, Some(&mut *self.logits)),
            Logits::Every(rows) => (0, Some(rows)),
        };
        if let Some(out) = out {
            let normed = &mut xb[first * dim..n * dim];
            let wanted_rows = &x[first * dim..];
            ops::rmsnorm_rows(normed, wanted_rows, &model.final_norm(), eps, dim);
            let classifier = model.classifier();
            let packed_classifier = packed.as_mut().and_then(|c| c.next(&classifier));
            scratch.project([(out, &classifier, packed_classifier)], normed, n - first)?;
            // One check per token: NaN or inf weights (their checksums can
            // be valid) end here, and no sampler or loss should see them.
            if !ops::all_finite(out) {
                return Err(Error::ActivationsOverflowed);
            }
        }
        self.pos += n as u32;
        Ok(())
    }
}

/// The logits a chunk's forward pass computes: none, the last position's
/// (into the session's logits), or every position's (`[n × vocab_size]`).
enum Logits<'o> {
    None,
    Last,
    Every(&'o mut [f32]),
}

/// Tasks to cut work reading `bytes` into: one per thread, but none
/// reading fewer than the hook's [`Parallel::min_task_bytes`], and at
/// least one.
fn task_count(bytes: usize, parallel: &dyn Parallel) -> usize {
    let worth = bytes
        .checked_div(parallel.min_task_bytes())
        .unwrap_or(usize::MAX);
    worth.clamp(1, parallel.threads().max(1))
}

/// Rows per task: the rows split evenly among `tasks` tasks, rounded up
/// to a multiple of 16 so that kernels taking rows in groups see whole
/// groups. Which rows go together changes no bit.
fn rows_per_task(rows: usize, tasks: usize) -> usize {
    rows.div_ceil(tasks.max(1)).next_multiple_of(16).max(1)
}

/// What a matrix product needs besides its operands.
struct Scratch<'s> {
    parallel: &'s dyn Parallel,
    /// `[n × task rows]` products of each task of a product split among
    /// threads, before they are copied into place.
    products: &'s mut [f32],
    /// `[n × cols / 32]` quantized inputs.
    xq: &'s mut [BlockQ8],
}

/// One matrix product of [`Scratch::project`]: where it goes, the matrix,
/// and the matrix in the packed layout when there is one.
type Product<'o, 'w> = (&'o mut [f32], &'o Matrix<'w>, Option<PackedMatrix<'w>>);

impl Scratch<'_> {
    /// `out[t] = W x[t]` for `n` positions and each `(out, W, packed)` of
    /// `products` (matrices of any dtype, `x`'s width), split by rows of
    /// `W` over the parallel hook. `out`: `[n × w.rows]`, `x`: `[n ×
    /// w.cols]`. Quantized weights multiply the positions quantized on the
    /// fly to Q8 blocks (once for all the products, which share `x`), with
    /// integer dot products per block. One position goes through the
    /// matrix-vector kernels straight into `out`; more go through the
    /// matrix-matrix kernels (each weight row read once for all of them),
    /// which write position-major `[n × rows]` as `out` is: straight into
    /// it on one thread, else each task into its part of `products`, then
    /// copied into place (a matrix taller than `products` holds, the
    /// classifier, splits the positions instead, straight into `out`).
    ///
    /// `packed`, when given, is `W` in the packed layout, and the products
    /// read it instead (the same bits); the thread split gives each task
    /// whole groups of its rows.
    ///
    /// Shapes were checked when the model was opened, so the kernels' length
    /// errors cannot occur; they are passed on rather than unwrapped.
    fn project<const K: usize>(
        &mut self,
        mut products: [Product<'_, '_>; K],
        x: &[f32],
        n: usize,
    ) -> Result<(), Error> {
        let cols = products.first().map_or(0, |(_, w, _)| w.cols);
        if products.iter().any(|(_, w, _)| w.cols != cols) {
            return Err(Error::InvalidInput {
                reason: "matrices of one input differ in width",
            });
        }
        let quantized = products.iter().any(|(_, w, _)| w.dtype.is_quantized());
        let xq: &[BlockQ8] = if quantized && cols > 0 && n > 0 {
            let blocks = cols / BLOCK_LEN;
            let xq = self.xq.get_mut(..n * blocks).ok_or(Error::InvalidInput {
                reason: "matrix input wider than the session's buffers",
            })?;
            for (x_row, q_row) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(blocks.max(1))) {
                // Only non-finite or absurdly large inputs fail: overflow.
                kernels::quantize_activations(x_row, q_row)
                    .map_err(|_| Error::ActivationsOverflowed)?;
            }
            xq
        } else {
            &[]
        };
        if n == 1 && matvecs_in_one_call(self.parallel, self.products, &mut products, x, xq)? {
            return Ok(());
        }
        for (out, w, packed) in products {
            multiply(self.parallel, self.products, out, w, packed, x, xq, n)?;
        }
        Ok(())
    }
}

/// A product's kernel refused its shapes (checked when the model was
/// opened, so not expected).
const MISMATCHED_WEIGHTS: Error = Error::InvalidInput {
    reason: "a weight matrix does not match its input",
};

/// One position through every product of one input (`K` ≥ 2) in a single
/// parallel call, each task taking its share of every matrix's rows into
/// its stretch of `scratch`, the shares copied into place after. The
/// products count together toward [`Parallel::min_task_bytes`]: 15M q8_0's
/// `wq`, `wk` and `wv` (88 KB each) ran on one thread one by one; split
/// together, two threads decode it at 5,139–5,299 tok/s against
/// 3,884–4,384 (`cargo bench --bench decode`, six alternating pairs on
/// Zen 4; docs/PERFORMANCE.md, 2026-12-05). Returns whether it ran: not
/// when one task would do, or `scratch` cannot hold the shares.
fn matvecs_in_one_call<const K: usize>(
    parallel: &dyn Parallel,
    scratch: &mut [f32],
    products: &mut [Product<'_, '_>; K],
    x: &[f32],
    xq: &[BlockQ8],
) -> Result<bool, Error> {
    let bytes = products
        .iter()
        .fold(0usize, |sum, (_, w, _)| sum.saturating_add(w.data.len()));
    let tasks = task_count(bytes, parallel);
    if K < 2 || tasks < 2 {
        return Ok(false);
    }
    let shares: [usize; K] = core::array::from_fn(|k| rows_per_task(products[k].1.rows, tasks));
    let stride: usize = shares.iter().sum();
    let Some(scratch) = scratch.get_mut(..tasks * stride) else {
        return Ok(false);
    };
    let heights: [usize; K] = core::array::from_fn(|k| products[k].1.rows);
    // Task `t`'s rows of product `k`, and where they sit in its stretch.
    let share = |t: usize, k: usize| {
        let rows = heights[k];
        let first = (t * shares[k]).min(rows);
        let offset: usize = shares[..k].iter().sum();
        (first..(first + shares[k]).min(rows), offset)
    };
    let failed = AtomicBool::new(false);
    {
        let products = &*products;
        parallel.for_each_chunk(scratch, stride, &|first, stretch| {
            for (k, (_, w, packed)) in products.iter().enumerate() {
                let (rows, offset) = share(first / stride, k);
                let part = &mut stretch[offset..offset + rows.len()];
                if !rows.is_empty() && !matvec_rows(part, w, *packed, rows, x, xq) {
                    failed.store(true, Ordering::Relaxed);
                }
            }
        });
    }
    if failed.load(Ordering::Relaxed) {
        return Err(MISMATCHED_WEIGHTS);
    }
    for (t, stretch) in scratch.chunks_exact(stride).enumerate() {
        for (k, (out, _, _)) in products.iter_mut().enumerate() {
            let (rows, offset) = share(t, k);
            out[rows.clone()].copy_from_slice(&stretch[offset..offset + rows.len()]);
        }
    }
    Ok(true)
}

/// `packed` on a path with packed kernels, else `None`. Only such a path
/// has packed weights (`PackedWeights::new` refuses the others), but asking
/// where they are taken and where each product reads them lets a build whose
/// path is fixed at compile time leave out the packed code it never runs:
/// 2,307 bytes of the bare build's engine (`cargo test --release --test
/// bare`).
fn on_packing_path<T>(packed: Option<T>) -> Option<T> {
    packed.filter(|_| kernels::Path::active().packs_weights())
}

/// `part = W[rows] x` for one position: the packed copy's rows when there
/// is one, else the matrix's, quantized (`xq`) or float (`x`). False when
/// the rows or shapes do not fit.
fn matvec_rows(
    part: &mut [f32],
    w: &Matrix<'_>,
    packed: Option<PackedMatrix<'_>>,
    rows: core::ops::Range<usize>,
    x: &[f32],
    xq: &[BlockQ8],
) -> bool {
    match (on_packing_path(packed), w.rows(rows.clone())) {
        (Some(p), _) => p
            .row_range(rows)
            .is_some_and(|part_p| kernels::matvec_packed(part, &part_p, xq).is_ok()),
        (None, Some(part_w)) if w.dtype.is_quantized() => {
            kernels::matvec_quantized(part, &part_w, xq).is_ok()
        }
        (None, Some(part_w)) => kernels::matvec(part, &part_w, x).is_ok(),
        (None, None) => false,
    }
}

/// One product of [`Scratch::project`], its input `x` already quantized
/// to `xq` when `w` is quantized; `products` is the scratch of a product
/// split among threads, `[n × task rows]` per task.
#[allow(clippy::too_many_arguments)]
fn multiply(
    parallel: &dyn Parallel,
    products: &mut [f32],
    out: &mut [f32],
    w: &Matrix<'_>,
    packed: Option<PackedMatrix<'_>>,
    x: &[f32],
    xq: &[BlockQ8],
    n: usize,
) -> Result<(), Error> {
    let (rows, cols) = (w.rows, w.cols);
    if rows == 0 || cols == 0 || n == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let quantized = w.dtype.is_quantized();
    let tasks = task_count(w.data.len().saturating_mul(n), parallel);
    // Only `out` holds every position's rows of a matrix taller than the
    // session's buffers (a chunk's logits): its tasks split the positions
    // instead, each reading every row.
    let split_positions = n > 1 && tasks > 1 && products.len() < rows.saturating_mul(n);
    let rows_per_task = rows_per_task(rows, tasks);
    let failed = AtomicBool::new(false);
    if n == 1 {
        parallel.for_each_chunk(out, rows_per_task, &|first, part| {
            let rows = first..first + part.len();
            if !matvec_rows(part, w, packed, rows, x, xq) {
                failed.store(true, Ordering::Relaxed);
            }
        });
    } else {
        // Rows `rows` of positions `at`, `[at.len() × rows.len()]`.
        let blocks = xq.len() / n;
        let product =
            |part: &mut [f32], rows: core::ops::Range<usize>, at: core::ops::Range<usize>| {
                let m = at.len();
                let xq = xq.get(at.start * blocks..at.end * blocks).unwrap_or(&[]);
                let x = x.get(at.start * cols..at.end * cols).unwrap_or(&[]);
                match (on_packing_path(packed), w.rows(rows.clone())) {
                    (Some(p), _) => p
                        .row_range(rows)
                        .is_some_and(|part_p| kernels::matmul_packed(part, &part_p, xq, m).is_ok()),
                    (None, Some(part_w)) if quantized => {
                        kernels::matmul_quantized(part, &part_w, xq, m).is_ok()
                    }
                    (None, Some(part_w)) => kernels::matmul(part, &part_w, x, m).is_ok(),
                    (None, None) => false,
                }
            };
        if split_positions {
            let positions_per_task = n.div_ceil(tasks);
            parallel.for_each_chunk(out, positions_per_task * rows, &|first, part| {
                let at = first / rows..(first + part.len()) / rows;
                if !product(part, 0..rows, at) {
                    failed.store(true, Ordering::Relaxed);
                }
            });
        } else if rows_per_task >= rows {
            if !product(out, 0..rows, 0..n) {
                failed.store(true, Ordering::Relaxed);
            }
        } else {
            // Each task's rows for every position, `[n × task rows]`, into
            // `products`, then each position's stretch of them copied into
            // place.
            let products = products.get_mut(..rows * n).ok_or(Error::InvalidInput {
                reason: "matrix output taller than the session's buffers",
            })?;
            parallel.for_each_chunk(products, rows_per_task * n, &|first, part| {
                let first_row = first / n;
                if !product(part, first_row..first_row + part.len() / n, 0..n) {
                    failed.store(true, Ordering::Relaxed);
                }
            });
            for (task, part) in products.chunks(rows_per_task * n).enumerate() {
                let task_rows = part.len() / n;
                let parts = part.chunks_exact(task_rows);
                for (out_row, p) in out.chunks_exact_mut(rows).zip(parts) {
                    out_row[task * rows_per_task..][..task_rows].copy_from_slice(p);
                }
            }
        }
    }
    if failed.load(Ordering::Relaxed) {
        return Err(MISMATCHED_WEIGHTS);
    }
    Ok(())
}

/// Causal attention of the chunk's `n` query positions (`start..start + n`)
/// over the cache, the query heads split among the hook's threads in runs of
/// consecutive heads, each run by [`ops::attend_queries`] (or, for one
/// position, [`ops::attend_heads`]: the bits of [`ops::attend_head`] per
/// head, as `attend_queries` gives), so a chunk gives the bits of as many
/// single positions, whatever the split.
///
/// - `out`: `[n × dim]`, the heads' outputs;
/// - `q`: `[n × dim]`, the queries (RoPE applied);
/// - `keys`, `values`: `[(start + n) × kv_dim]`, this layer's cache rows;
/// - `att`: `[n_heads × C × (max_seq + head_dim)]` workspace (`C` =
///   `chunk` ≥ `n`), one region per run of `k` heads: their scores
///   `[C × k × max_seq]` (query after query), then their outputs
///   `[C × k × head_dim]`.
#[allow(clippy::too_many_arguments)]
fn attend(
    parallel: &dyn Parallel,
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    att: &mut [f32],
    heads: Heads,
    start: usize,
    max_seq: usize,
    chunk: usize,
) -> Result<(), Error> {
    let Heads {
        n_heads,
        n_kv_heads,
        head_dim,
    } = heads;
    let mismatch = Err(Error::InvalidInput {
        reason: "attention heads do not match the cache",
    });
    if n_heads == 0 || n_kv_heads == 0 || head_dim == 0 {
        return mismatch;
    }
    let dim = n_heads * head_dim;
    let stride = attention_stride(chunk, max_seq, head_dim);
    let Some(att) = att.get_mut(..n_heads * stride) else {
        return mismatch;
    };
    let whole_run = HeadRun {
        positions: 0,
        row_floats: heads.kv_dim(),
        head_dim,
        first_head: 0,
        heads: n_heads,
        group: (n_heads / n_kv_heads).max(1), // query heads per KV head
        score_stride: max_seq,
    };
    let failed = AtomicBool::new(false);
    // One task per thread, each a run of whole heads, unless the keys and
    // values the chunk's positions read are too few to pay for a hand-off.
    let n = q.len() / dim;
    let cache_bytes = keys
        .len()
        .saturating_add(values.len())
        .saturating_mul(size_of::<f32>());
    let tasks = task_count(cache_bytes.saturating_mul(n), parallel);
    let heads_per_task = n_heads.div_ceil(tasks);
    let task_floats = heads_per_task * stride;
    parallel.for_each_chunk(att, task_floats, &|first, task| {
        let run = HeadRun {
            first_head: first / stride,
            heads: task.len() / stride,
            ..whole_run
        };
        if run.heads == 0 {
            return; // a hook that splits chunks, against its contract
        }
        let (scores, outputs) = task.split_at_mut(run.heads * chunk * max_seq);
        let run_width = run.heads * head_dim;
        // Past the end only for a hook that moves chunks: then the
        // attention refuses the empty queries.
        let q_heads = q.get(run.first_head * head_dim..).unwrap_or_default();
        let outputs = outputs.get_mut(..n * run_width).unwrap_or_default();
        // Causal: query t sees positions 0..=start + t. One query (a
        // decoded token) reads its keys and values once either way.
        let attended = if n == 1 {
            let run = HeadRun {
                positions: start + 1,
                ..run
            };
            let q_run = q_heads.get(..run_width).unwrap_or_default();
            ops::attend_heads(outputs, scores, q_run, keys, values, run)
        } else {
            ops::attend_queries(
                outputs,
                scores,
                q_heads,
                dim,
                keys,
                values,
                run,
                start + 1,
                n,
            )
        };
        if attended.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
    });
    if failed.load(Ordering::Relaxed) {
        return mismatch;
    }
    // Each run's `[n × k × head_dim]` outputs into the position-major `out`.
    for (task, region) in att.chunks(task_floats).enumerate() {
        let run_heads = region.len() / stride;
        let run_width = run_heads * head_dim;
        let run_outputs = region[run_heads * chunk * max_seq..].chunks_exact(run_width);
        for (out_row, o) in out.chunks_exact_mut(dim).zip(run_outputs) {
            out_row[task * heads_per_task * head_dim..][..run_width].copy_from_slice(o);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::stories::STORIES15M;

    // Usable where firmware needs it: in a const context.
    const STORIES15M_FLOATS: usize = session_floats(&STORIES15M, 256);
    const STORIES15M_DECODE_FLOATS: usize = session_floats_for_chunk(&STORIES15M, 256, 1);

    #[test]
    fn session_floats_counts_every_region() {
        let (dim, hidden, heads, seq, vocab, layers) = (288, 768, 6, 256, 32000, 6);
        let (head_dim, kv_dim, c) = (48, 288, PREFILL_CHUNK);
        let activations = c * (4 * dim + 2 * hidden);
        let products = c * hidden; // the widest matrix input
        let xq = c * 9 * (hidden / 32); // Q8 blocks of a chunk of the widest input
        let rotations = c * head_dim;
        let want = activations
            + heads * c * (seq + head_dim)
            + vocab
            + 2 * layers * seq * kv_dim
            + products
            + xq
            + rotations;
        assert_eq!(STORIES15M_FLOATS, want);
        assert_eq!(session_bytes(&STORIES15M, 256), 4 * want);
        let gqa = Config {
            n_kv_heads: 2,
            ..STORIES15M
        };
        assert_eq!(
            session_floats(&gqa, 10),
            activations
                + heads * c * (10 + head_dim)
                + vocab
                + 2 * layers * 10 * 96
                + products
                + xq
                + rotations
        );
    }

    #[test]
    fn session_floats_for_chunk_scales_every_chunk_region() {
        let (dim, hidden, heads, seq, vocab, layers) = (288, 768, 6, 256, 32000, 6);
        let (head_dim, kv_dim) = (48, 288);
        for c in [1, 3, PREFILL_CHUNK] {
            let want = c * (4 * dim + 2 * hidden)
                + heads * c * (seq + head_dim)
                + vocab
                + 2 * layers * seq * kv_dim
                + c * hidden
                + c * 9 * (hidden / 32)
                + c * head_dim;
            assert_eq!(session_floats_for_chunk(&STORIES15M, 256, c), want);
            if c == 1 {
                assert_eq!(STORIES15M_DECODE_FLOATS, want);
            }
            assert_eq!(session_bytes_for_chunk(&STORIES15M, 256, c), 4 * want);
        }
        assert_eq!(
            session_floats_for_chunk(&STORIES15M, 256, PREFILL_CHUNK),
            STORIES15M_FLOATS
        );
        for c in [0, PREFILL_CHUNK + 1, usize::MAX] {
            assert_eq!(session_floats_for_chunk(&STORIES15M, 256, c), usize::MAX);
            assert_eq!(session_bytes_for_chunk(&STORIES15M, 256, c), usize::MAX);
        }
    }

    #[test]
    fn session_floats_never_panics_on_absurd_configs() {
        let zero_heads = Config {
            n_heads: 0,
            ..STORIES15M
        };
        let c = PREFILL_CHUNK;
        assert_eq!(
            session_floats(&zero_heads, 4),
            c * (4 * 288 + 2 * 768) + 32000 + c * 768 + c * 9 * 768 / 32
        );
        let huge = Config {
            dim: u32::MAX,
            hidden_dim: u32::MAX,
            n_layers: u32::MAX,
            n_heads: 1,
            n_kv_heads: u32::MAX,
            vocab_size: u32::MAX,
            ..STORIES15M
        };
        assert_eq!(session_floats(&huge, u32::MAX), usize::MAX);
        assert_eq!(session_bytes(&huge, u32::MAX), usize::MAX);
    }

    #[test]
    fn rows_per_task_splits_evenly_in_whole_groups() {
        assert_eq!(rows_per_task(768, 1), 768);
        assert_eq!(rows_per_task(768, 2), 384);
        assert_eq!(rows_per_task(288, 2), 144);
        assert_eq!(rows_per_task(32000, 3), 10672);
        assert_eq!(rows_per_task(5, 2), 16);
        assert_eq!(rows_per_task(0, 2), 1);
        assert_eq!(rows_per_task(100, 0), 112);
    }
}
