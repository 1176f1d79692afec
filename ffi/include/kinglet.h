/*
 * kinglet.h — C API of the kinglet LLaMA inference engine (C99).
 *
 * Link with libkinglet_ffi.a (plus -lm -lpthread -ldl on Linux, for the Rust
 * standard library the default build links) or libkinglet_ffi.so.
 * For firmware, build the no_std flavor instead, in a target directory of
 * its own (so it does not replace the std build's library):
 *   RUSTFLAGS="-C panic=abort" cargo build --release -p kinglet-ffi --no-default-features --target-dir target/nostd
 * Its target/nostd/release/libkinglet_ffi.a needs only memcpy, memmove, memset, memcmp, bcmp,
 * strlen and abort from the platform (abort only on an internal bug).
 *
 * Memory: kinglet never calls malloc. The caller owns
 *   - the model bytes (a .klt file: in flash, in a const array, mmap'ed or
 *     read into memory), any alignment;
 *   - the arena, one buffer of kinglet_session_bytes() bytes, any alignment,
 *     which holds the session state, the activations, the KV cache, the
 *     prompt tokens and the tokenizer's working space.
 *
 * Lifetimes: the model bytes and the arena must stay valid, unmoved and
 * unmodified for as long as the session is used. A session holds no other
 * resource: to end it, stop using it (and reuse or free the arena). Calling
 * kinglet_session_init again on the same arena starts a new session.
 *
 * Threads: all functions are reentrant; one session must not be used by two
 * threads at once. Distinct sessions (distinct arenas) may share the model.
 *
 * Errors: functions returning int give 0 (or a count) on success and one of
 * the negative KINGLET_E_* codes below on failure; kinglet_strerror() gives
 * its message.
 *
 *   code  name                         meaning
 *     0   KINGLET_OK                   success
 *    -1   KINGLET_E_NULL               a required pointer argument is NULL
 *    -2   KINGLET_E_ARENA_TOO_SMALL    arena_len < kinglet_session_bytes()
 *    -3   KINGLET_E_MAX_SEQ            max_seq is 0 or > the model's max_seq_len
 *    -4   KINGLET_E_PROMPT_UTF8        the prompt is not valid UTF-8
 *    -5   KINGLET_E_PROMPT_TOO_LONG    the prompt has more than 4 * max_seq bytes
 *                                      (kinglet_generate: no NUL within 4 * max_seq + 1)
 *    -6   KINGLET_E_EMPTY_PROMPT       the prompt encodes to no tokens (and no BOS)
 *    -7   KINGLET_E_UNKNOWN_CHAR       a prompt character the vocabulary cannot encode
 *    -8   KINGLET_E_CONTEXT_FULL       the prompt's tokens exceed max_seq positions
 *    -9   KINGLET_E_TEMPERATURE        temperature is NaN, infinite or negative
 *   -10   KINGLET_E_BAD_SESSION        not a session from kinglet_session_init
 *   -11   KINGLET_E_PREFILL_CHUNK      prefill_chunk is 0 or > KINGLET_MAX_PREFILL_CHUNK
 *   -20   KINGLET_E_TRUNCATED          model truncated / length disagrees with header
 *   -21   KINGLET_E_BAD_MAGIC          not a .klt model file
 *   -22   KINGLET_E_VERSION            unsupported .klt format version
 *   -23   KINGLET_E_BAD_CONFIG         invalid model config
 *   -24   KINGLET_E_BAD_TOKENIZER      malformed tokenizer section
 *   -25   KINGLET_E_BAD_TENSORS        tensor directory disagrees with config/bytes
 *   -26   KINGLET_E_BAD_METADATA       malformed metadata entry
 *   -27   KINGLET_E_CHECKSUM           header or tensor checksum mismatch
 *   -28   KINGLET_E_UNSUPPORTED_DTYPE  a tensor dtype without a compute kernel
 *   -29   KINGLET_E_BAD_MODEL          another model file problem: non-zero padding,
 *                                      NaN/inf weights, or weights that drive the
 *                                      activations or logits to inf/NaN
 *   -99   KINGLET_E_INTERNAL           a bug in kinglet; please report it
 *
 * Example:
 *
 *   static int print_piece(const char *piece, size_t len, void *user) {
 *       (void)user;
 *       return fwrite(piece, 1, len, stdout) == len ? 0 : 1;
 *   }
 *   ...
 *   size_t need = kinglet_session_bytes(model, model_len, 256);
 *   void *arena = malloc(need);            // or a static array
 *   kinglet_session *s;
 *   int rc = kinglet_session_init(arena, need, model, model_len, 256, &s);
 *   const char *prompt = "Once upon a time";
 *   if (rc == 0) rc = kinglet_generate_n(s, prompt, strlen(prompt), 100, 0.0f, 42,
 *                                        print_piece, NULL);
 *   if (rc < 0) fprintf(stderr, "kinglet: %s\n", kinglet_strerror(rc));
 */
#ifndef KINGLET_H
#define KINGLET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KINGLET_OK (0)
#define KINGLET_E_NULL (-1)
#define KINGLET_E_ARENA_TOO_SMALL (-2)
#define KINGLET_E_MAX_SEQ (-3)
#define KINGLET_E_PROMPT_UTF8 (-4)
#define KINGLET_E_PROMPT_TOO_LONG (-5)
#define KINGLET_E_EMPTY_PROMPT (-6)
#define KINGLET_E_UNKNOWN_CHAR (-7)
#define KINGLET_E_CONTEXT_FULL (-8)
#define KINGLET_E_TEMPERATURE (-9)
#define KINGLET_E_BAD_SESSION (-10)
#define KINGLET_E_PREFILL_CHUNK (-11)
#define KINGLET_E_TRUNCATED (-20)
#define KINGLET_E_BAD_MAGIC (-21)
#define KINGLET_E_VERSION (-22)
#define KINGLET_E_BAD_CONFIG (-23)
#define KINGLET_E_BAD_TOKENIZER (-24)
#define KINGLET_E_BAD_TENSORS (-25)
#define KINGLET_E_BAD_METADATA (-26)
#define KINGLET_E_CHECKSUM (-27)
#define KINGLET_E_UNSUPPORTED_DTYPE (-28)
#define KINGLET_E_BAD_MODEL (-29)
#define KINGLET_E_INTERNAL (-99)

/* Messages returned by kinglet_strerror (static strings):
 *    0  "success"
 *   -1  "a required pointer argument is NULL"
 *   -2  "the arena is smaller than kinglet_session_bytes() says"
 *   -3  "max_seq must be between 1 and the model's max_seq_len"
 *   -4  "the prompt is not valid UTF-8"
 *   -5  "the prompt is longer than 4 * max_seq bytes"
 *   -6  "the prompt encodes to no tokens and the model has no BOS token"
 *   -7  "the prompt has a character the model's vocabulary cannot encode"
 *   -8  "the prompt does not fit in the session's max_seq positions"
 *   -9  "temperature must be finite and non-negative"
 *  -10  "the session pointer does not point at an initialized session"
 *  -11  "prefill_chunk must be between 1 and 16"
 *  -20  "the model bytes are truncated or their length disagrees with the header"
 *  -21  "not a .klt model file (bad magic)"
 *  -22  "unsupported .klt format version"
 *  -23  "the model config is invalid"
 *  -24  "the model's tokenizer section is malformed"
 *  -25  "the model's tensor directory disagrees with its config or its bytes"
 *  -26  "a model metadata entry is malformed"
 *  -27  "a model checksum does not match: the bytes are damaged"
 *  -28  "a tensor has a dtype this library cannot compute with"
 *  -29  "the model file is malformed"
 *  -99  "internal error in kinglet (a bug; please report it)"
 *  any other code: "unknown kinglet error code"
 */

/* An opaque session. It lives inside the caller's arena; never copy it. */
typedef struct kinglet_session kinglet_session;

/* Receives generated text: `len` bytes of UTF-8 at `piece` (whole characters,
 * NOT NUL-terminated, valid only during the call) and the `user` pointer given
 * to kinglet_generate. Return 0 to continue, non-zero to stop generation. */
typedef int (*kinglet_emit_fn)(const char *piece, size_t len, void *user);

/* The library version, e.g. "0.1.0" (static string). */
const char *kinglet_version(void);

/* The message of an error code: a static NUL-terminated string, never NULL. */
const char *kinglet_strerror(int code);

/* Validates the model completely: layout, header checksum, the checksum of
 * every tensor and that no weight is NaN or infinite (reads all `len` bytes;
 * run it once, e.g. after flashing).
 * Returns 0, or a negative code (KINGLET_E_NULL for a NULL model). */
int kinglet_check(const uint8_t *model, size_t len);

/* The model's max_seq_len: the largest max_seq a session may have.
 * 0 if the model is NULL or invalid. */
uint32_t kinglet_model_max_seq(const uint8_t *model, size_t len);

/* The most prompt positions a session runs together (its prefill chunk),
 * and the default of kinglet_session_bytes and kinglet_session_init. */
#define KINGLET_MAX_PREFILL_CHUNK 16

/* Bytes of arena a session of `max_seq` positions needs, whatever the arena's
 * alignment (it includes up to 63 bytes skipped to reach a 64-byte boundary),
 * with a prefill chunk of KINGLET_MAX_PREFILL_CHUNK positions:
 * kinglet_session_bytes_chunk(model, len, max_seq, 16).
 * 0 if the model is NULL or invalid, or max_seq is 0 or
 * larger than the model's max_seq_len. */
size_t kinglet_session_bytes(const uint8_t *model, size_t len, uint32_t max_seq);

/* Bytes of arena a session of `max_seq` positions needs (at any alignment)
 * when its prompt runs `prefill_chunk` positions at a time, 1 to
 * KINGLET_MAX_PREFILL_CHUNK: 1 is the smallest session, for a program that
 * decodes token by token or whose prompts are short; 16 runs long prompts
 * fastest. The text generated is the same for every chunk.
 * It is the engine's buffer (activations, attention scores and the KV cache:
 * 4 * (C*(4*dim + 2*hidden + max(dim, hidden) + 9*ceil(max(dim, hidden)/32)
 *         + head_dim) + n_heads*C*(max_seq + head_dim) + vocab
 *      + 2*n_layers*max_seq*kv_dim) bytes, C = prefill_chunk)
 * plus the session state (a few hundred bytes), 4*t bytes of prompt token
 * slots and 4*(5*t + 3*c) bytes for the tokenizer to merge them in, where
 * t = 4*max_seq + 2 and c is the largest power of two <= t, at most 4096.
 * 0 if the model is NULL or invalid, max_seq is 0 or larger than the
 * model's max_seq_len, or prefill_chunk is 0 or larger than
 * KINGLET_MAX_PREFILL_CHUNK. */
size_t kinglet_session_bytes_chunk(const uint8_t *model, size_t len, uint32_t max_seq,
                                   uint32_t prefill_chunk);

/* Opens the model (its layout and header checksum; kinglet_check also
 * verifies the tensor data) and starts a session of `max_seq` positions in
 * `arena` (arena_len >= kinglet_session_bytes(model, len, max_seq), any
 * alignment). On success stores the session, which points into the arena,
 * in *out and returns 0; otherwise returns a negative code and leaves *out
 * unchanged.
 * The model bytes and the arena must outlive the session (see the top). */
int kinglet_session_init(void *arena, size_t arena_len, const uint8_t *model, size_t len,
                         uint32_t max_seq, kinglet_session **out);

/* kinglet_session_init for a session whose prompt runs `prefill_chunk`
 * positions at a time (arena_len >= kinglet_session_bytes_chunk(model, len,
 * max_seq, prefill_chunk)); KINGLET_E_PREFILL_CHUNK when prefill_chunk is 0
 * or larger than KINGLET_MAX_PREFILL_CHUNK. */
int kinglet_session_init_chunk(void *arena, size_t arena_len, const uint8_t *model,
                               size_t len, uint32_t max_seq, uint32_t prefill_chunk,
                               kinglet_session **out);

/* Generates text from the `prompt_len` bytes of UTF-8 at `prompt` (no NUL
 * needed; `prompt` may be NULL when prompt_len is 0). Prefer it to
 * kinglet_generate: it reads exactly the bytes it is given, and refuses a
 * prompt_len over 4 * max_seq before reading any.
 * It starts the session afresh (nothing of an earlier call is kept), runs
 * BOS when the model has one and the prompt (at most 4 * max_seq bytes),
 * then samples up to `max_new_tokens` tokens; it stops earlier at an
 * end-of-text token or when the context is full. All text, the prompt's
 * included, goes to `emit`; `emit` returning non-zero stops generation (and
 * is not called again).
 * temperature 0 picks the most likely token (greedy); otherwise logits are
 * divided by it and a token is drawn with llama2.c's xorshift generator from
 * `seed` (no top-k/top-p filtering). The same model, prompt, temperature and
 * seed give the same text.
 * Returns the number of tokens sampled (>= 0), or a negative code. */
int kinglet_generate_n(kinglet_session *s, const char *prompt, size_t prompt_len,
                       uint32_t max_new_tokens, float temperature, uint64_t seed,
                       kinglet_emit_fn emit, void *user);

/* kinglet_generate_n with a NUL-terminated prompt. It reads up to the NUL
 * but never more than 4 * max_seq + 1 bytes: a prompt with no NUL within
 * them is KINGLET_E_PROMPT_TOO_LONG. */
int kinglet_generate(kinglet_session *s, const char *prompt, uint32_t max_new_tokens,
                     float temperature, uint64_t seed, kinglet_emit_fn emit, void *user);

#ifdef __cplusplus
}
#endif

#endif /* KINGLET_H */
