"""Reads a GGUF file with ggml's own reader (the `gguf` package) and prints
what it found as JSON: the metadata (arrays in full), and each tensor's
name, ggml type, shape and the SHA-256 of its bytes.

Usage: python3 read_export.py MODEL.gguf
"""
import hashlib
import json
import sys

from gguf import GGUFReader, GGUFValueType

reader = GGUFReader(sys.argv[1])
fields = {}
for name, field in reader.fields.items():
    if name.startswith("GGUF."):
        continue
    value = field.contents()
    if field.types and field.types[0] == GGUFValueType.FLOAT32 and len(field.types) == 1:
        value = float(value)
    fields[name] = value
tensors = [
    {
        "name": t.name,
        "type": t.tensor_type.name,
        "shape": [int(d) for d in t.shape],
        "sha256": hashlib.sha256(t.data.tobytes()).hexdigest(),
    }
    for t in reader.tensors
]
json.dump({"fields": fields, "tensors": tensors}, sys.stdout)
