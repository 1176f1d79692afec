"""Writes a small llama model with ggml's own writer (the `gguf` package),
its tensors in F32, F16, BF16, Q8_0 and Q4_0 as ggml quantizes them, and a
SentencePiece vocabulary with control, byte and normal tokens. Prints JSON
with the SHA-256 of each tensor's bytes as written.

Usage: python3 write_model.py OUT.gguf [q4_k]
  q4_k: dim 256, and blk.0.attn_q.weight stored as Q4_K (random raw
        blocks), for the refusal test.
"""
import hashlib
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter, TokenType, quants

out = sys.argv[1]
with_q4_k = len(sys.argv) > 2 and sys.argv[2] == "q4_k"
dim = 256 if with_q4_k else 64
hidden, layers, heads, kv_heads, ctx = 96, 2, 4, 2, 32
rng = np.random.default_rng(7)

pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
pieces += ["\u2581", "e", "t", "a", "o", "\u2581t", "he", "\u2581the", "\u2581a", "n", "d", "\u2581and"]
types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
types += [TokenType.NORMAL] * (len(pieces) - len(types))
scores = [0.0] * 259 + [-float(i) for i in range(len(pieces) - 259)]
vocab = len(pieces)

w = GGUFWriter(out, "llama")
w.add_name("gguf-py test model")
w.add_context_length(ctx)
w.add_embedding_length(dim)
w.add_block_count(layers)
w.add_feed_forward_length(hidden)
w.add_rope_dimension_count(dim // heads)
w.add_head_count(heads)
w.add_head_count_kv(kv_heads)
w.add_rope_freq_base(500000.0)
w.add_layer_norm_rms_eps(1e-6)
w.add_tokenizer_model("llama")
w.add_token_list(pieces)
w.add_token_scores(scores)
w.add_token_types(types)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)

expected = {}


def add(name, shape, qtype):
    x = (rng.standard_normal(shape) * 0.2).astype(np.float32)
    if qtype == T.F32:
        data = x
    elif qtype == T.F16:
        data = x.astype(np.float16)
    else:
        data = quants.quantize(x, qtype)
    w.add_tensor(name, data, raw_dtype=qtype if qtype != T.F32 and qtype != T.F16 else None)
    expected[name] = {"type": qtype.name, "sha256": hashlib.sha256(data.tobytes()).hexdigest()}


add("token_embd.weight", (vocab, dim), T.Q8_0)
kv = dim // heads * kv_heads
for l in range(layers):
    add(f"blk.{l}.attn_norm.weight", (dim,), T.F32)
    if with_q4_k and l == 0:
        raw = rng.integers(0, 256, size=(dim, dim // 256 * 144), dtype=np.uint8)
        w.add_tensor(f"blk.{l}.attn_q.weight", raw, raw_dtype=T.Q4_K)
    else:
        add(f"blk.{l}.attn_q.weight", (dim, dim), T.Q4_0)
    add(f"blk.{l}.attn_k.weight", (kv, dim), T.Q8_0)
    add(f"blk.{l}.attn_v.weight", (kv, dim), T.F16)
    add(f"blk.{l}.attn_output.weight", (dim, dim), T.BF16)
    add(f"blk.{l}.ffn_norm.weight", (dim,), T.F32)
    add(f"blk.{l}.ffn_gate.weight", (hidden, dim), T.Q8_0)
    add(f"blk.{l}.ffn_down.weight", (dim, hidden), T.F16)
    add(f"blk.{l}.ffn_up.weight", (hidden, dim), T.Q4_0)
add("output_norm.weight", (dim,), T.F32)
add("output.weight", (vocab, dim), T.F16)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
json.dump({"vocab": vocab, "tensors": expected}, sys.stdout)
