//! Packed copies of a model's quantized matrices, made once at load time in
//! a caller buffer, for the kernels that read them faster (see
//! [`crate::kernels::packed`]): on the x86 paths the Q4_0 and Q8_0 products
//! stop gathering scales and transposing levels for every block. The file keeps ggml's layout, and a session that is not
//! given packed weights reads it as before.
//!
//! The buffer costs as much memory again as the packed matrices (every
//! quantized projection of every layer and the classifier: about the whole
//! model, less the token embedding unless it doubles as the classifier);
//! its exact size is [`packed_weights_bytes`]. The products give the same
//! bits either way.
//!
//! ```no_run
//! use kinglet::{packed_weights_bytes, session_floats, ModelFile, PackedWeights, Session};
//! # fn main() -> Result<(), kinglet::Error> {
//! # let file_bytes: &[u8] = &[];
//! let model = ModelFile::new_checked(file_bytes)?;
//! let mut packed_buffer = vec![0u8; packed_weights_bytes(&model)];
//! let packed = PackedWeights::new(&model, &mut packed_buffer)?;
//! let mut buffer = vec![0.0f32; session_floats(model.config(), 256)];
//! let session = Session::new(&model, &mut buffer, 256)?.with_packed(packed)?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use crate::error::Error;
use crate::format::{LayerWeights, ModelFile};
use crate::kernels::packed::{pack_matrix, packed_bytes, PackedMatrix};
use crate::kernels::Path;
use crate::tensor::Matrix;

/// The bytes [`PackedWeights::new`] needs for `model`: the size of each of
/// its Q8_0 and Q4_0 layer projections and of its classifier if quantized;
/// 0 for a model without quantized matrices. Saturates at `usize::MAX`.
pub fn packed_weights_bytes<T: AsRef<[u8]>>(model: &ModelFile<T>) -> usize {
    packed_matrices(model)
        .map(|w| packed_bytes(&w))
        .fold(0, usize::saturating_add)
}

/// A layer's matrix products, in the order they are packed.
fn projections<'m>(w: &LayerWeights<'m>) -> [Matrix<'m>; 7] {
    [w.wq, w.wk, w.wv, w.wo, w.w1, w.w2, w.w3]
}

/// The matrices packed, in buffer order: each layer's quantized
/// projections, then the classifier if quantized (the token embedding's
/// lookup keeps reading the file).
fn packed_matrices<T: AsRef<[u8]>>(model: &ModelFile<T>) -> impl Iterator<Item = Matrix<'_>> {
    model
        .layers()
        .flat_map(|w| projections(&w))
        .chain(core::iter::once(model.classifier()))
        .filter(|w| w.dtype.is_quantized())
}

/// Packed copies of one model's quantized matrices, in a caller buffer;
/// handed to a session with [`crate::Session::with_packed`].
#[derive(Clone, Copy, Debug)]
pub struct PackedWeights<'a> {
    /// The model file these are copies of (a session checks it is its own).
    source: &'a [u8],
    /// The packed matrices, in [`packed_matrices`] order.
    bytes: &'a [u8],
    /// Whether they are more than [`CACHED_BYTES`], so read from memory at
    /// every token.
    streamed: bool,
}

/// Packed weights up to this size are taken to stay in the last-level
/// cache from one token to the next (32 MiB: AMD Zen 4 and Zen 5's L3 per
/// eight cores); larger ones are marked [`PackedMatrix::streamed`].
pub(crate) const CACHED_BYTES: usize = 32 << 20;

impl<'a> PackedWeights<'a> {
    /// Packs every quantized layer projection and the classifier of `model`
    /// into `buffer`, which must hold at least
    /// [`packed_weights_bytes`]`(model)` bytes (any excess is left unused).
    /// Float matrices are not packed: for a model without quantized
    /// matrices nothing is, and any buffer will do.
    ///
    /// Errors: [`Error::BufferTooSmall`] (in bytes); [`Error::InvalidInput`]
    /// when the model has quantized matrices and the active kernel path
    /// has no kernels for the packed layout ([`Path::packs_weights`]: the
    /// portable path, where packing would only slow it down).
    pub fn new<T: AsRef<[u8]>>(
        model: &'a ModelFile<T>,
        buffer: &'a mut [u8],
    ) -> Result<Self, Error> {
        let needed = packed_weights_bytes(model);
        if needed > 0 && !Path::active().packs_weights() {
            return Err(Error::InvalidInput {
                reason: "the active kernel path has no kernels for packed weights",
            });
        }
        if buffer.len() < needed {
            return Err(Error::BufferTooSmall {
                needed,
                available: buffer.len(),
            });
        }
        let (buffer, _unused) = buffer.split_at_mut(needed);
        let mut rest = &mut *buffer;
        for w in packed_matrices(model) {
            let (dst, tail) = core::mem::take(&mut rest).split_at_mut(packed_bytes(&w));
            pack_matrix(&w, dst)?;
            rest = tail;
        }
        Ok(PackedWeights {
            source: model.as_bytes(),
            streamed: buffer.len() > CACHED_BYTES,
            bytes: buffer,
        })
    }

    /// Bytes of packed matrices held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was packed (a model without quantized matrices).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether the packed matrices total more than 32 MiB, so that the
    /// products take them as read from memory at every token and, on a CPU
    /// where that pays, request their bytes ahead
    /// ([`PackedMatrix::streamed`]).
    pub fn is_streamed(&self) -> bool {
        self.streamed
    }

    /// Whether these are copies of `model`'s matrices.
    pub(crate) fn is_of<T: AsRef<[u8]>>(&self, model: &ModelFile<T>) -> bool {
        core::ptr::eq(self.source, model.as_bytes())
    }

    /// The packed matrices, to be taken in buffer order.
    pub(crate) fn matrices(&self) -> PackedCursor<'a> {
        PackedCursor {
            rest: self.bytes,
            // Streamed matrices request their bytes ahead on a CPU where
            // that pays.
            requests_ahead: self.streamed && Path::requests_ahead(),
        }
    }
}

/// Walks [`PackedWeights`] in buffer order: a forward pass takes each
/// layer's copies ([`layer`](Self::layer)), then the classifier's.
pub(crate) struct PackedCursor<'a> {
    rest: &'a [u8],
    requests_ahead: bool,
}

/// The packed copies of one layer's projections (`None` for a float one).
#[derive(Clone, Copy, Default)]
pub(crate) struct PackedLayer<'a> {
    pub wq: Option<PackedMatrix<'a>>,
    pub wk: Option<PackedMatrix<'a>>,
    pub wv: Option<PackedMatrix<'a>>,
    pub wo: Option<PackedMatrix<'a>>,
    pub w1: Option<PackedMatrix<'a>>,
    pub w2: Option<PackedMatrix<'a>>,
    pub w3: Option<PackedMatrix<'a>>,
}

impl<'a> PackedCursor<'a> {
    /// The packed copy of `w`, the next matrix in buffer order; `None` for a
    /// float matrix (or past the end, which a cursor of this model's
    /// weights never reaches).
    pub(crate) fn next(&mut self, w: &Matrix<'_>) -> Option<PackedMatrix<'a>> {
        if !w.dtype.is_quantized() {
            return None;
        }
        let bytes = self.rest.get(..packed_bytes(w))?;
        self.rest = &self.rest[bytes.len()..];
        PackedMatrix::from_packed_bytes(w.dtype, w.rows, w.cols, bytes)
            .map(|m| m.streamed(self.requests_ahead))
    }

    /// The packed copies of the next layer's projections, `w` its weights.
    pub(crate) fn layer(&mut self, w: &LayerWeights<'_>) -> PackedLayer<'a> {
        let [wq, wk, wv, wo, w1, w2, w3] = projections(w).map(|m| self.next(&m));
        PackedLayer {
            wq,
            wk,
            wv,
            wo,
            w1,
            w2,
            w3,
        }
    }
}
