#!/usr/bin/env python3
"""Writes tiny llama2.c checkpoints (versions 0, 1 and 2) and a tokenizer.bin
into the folder given as argument: small seeds the fuzzers mutate quickly.

Shape: dim 32, hidden 32, 1 layer, 4 heads, 2 KV heads, vocab 16, seq 8."""
import random
import struct
import sys

DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, SEQ = 32, 32, 1, 4, 2, 16, 8
HEAD_DIM = DIM // HEADS
KV_DIM = HEAD_DIM * KV_HEADS
PIECES = [b"<unk>", b"<s>", b"</s>", b"<0x41>", b"<0xE6>", b" ", b"a", b"b",
          b"c", b"ab", b" a", b"ba", b"abc", b"\xe6\x97\xa5", b"\n", b"z"]
rng = random.Random(7)


def floats(n):
    return struct.pack(f"<{n}f", *(rng.uniform(-0.5, 0.5) for _ in range(n)))


def ones(n):
    return struct.pack(f"<{n}f", *([1.0] * n))


def params(vocab):
    return struct.pack("<7i", DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, vocab, SEQ)


def matrices():
    """Element counts of the matrices in version 1/2 order (tied classifier)."""
    counts = [VOCAB * DIM]
    for n in [DIM * DIM, KV_DIM * DIM, KV_DIM * DIM, DIM * DIM,
              HIDDEN * DIM, DIM * HIDDEN, HIDDEN * DIM]:
        counts += [n] * LAYERS
    return counts


def v0(untied):
    out = params(-VOCAB if untied else VOCAB)
    out += floats(VOCAB * DIM) + ones(LAYERS * DIM)
    out += floats(LAYERS * (2 * DIM * DIM + 2 * KV_DIM * DIM))
    out += ones(LAYERS * DIM) + floats(LAYERS * 3 * HIDDEN * DIM) + ones(DIM)
    out += floats(SEQ * HEAD_DIM)  # freq_cis_real and freq_cis_imag
    if untied:
        out += floats(VOCAB * DIM)
    return out


def ak42(version, extra):
    head = struct.pack("<Ii", 0x616B3432, version) + params(VOCAB) + b"\x01" + extra
    return head + bytes(256 - len(head))


def v1():
    norms = ones(LAYERS * DIM) * 2 + ones(DIM)
    return ak42(1, b"") + norms + b"".join(floats(n) for n in matrices())


def v2(group=32):
    out = ak42(2, struct.pack("<i", group)) + ones(LAYERS * DIM) * 2 + ones(DIM)
    for n in matrices():
        out += bytes(rng.randrange(256) for _ in range(n))
        out += struct.pack(f"<{n // group}f", *([0.01] * (n // group)))
    return out


def tokenizer():
    out = struct.pack("<i", max(len(p) for p in PIECES))
    for i, p in enumerate(PIECES):
        out += struct.pack("<fi", -float(i), len(p)) + p
    return out


folder = sys.argv[1]
for name, data in [("tiny_v0.bin", v0(False)), ("tiny_v0_untied.bin", v0(True)),
                   ("tiny_v1.bin", v1()), ("tiny_v2.bin", v2()),
                   ("tiny_tok.bin", tokenizer())]:
    with open(f"{folder}/{name}", "wb") as f:
        f.write(data)
