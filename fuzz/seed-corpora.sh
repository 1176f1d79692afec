#!/usr/bin/env bash
# Builds the seed corpora of the fuzz targets in fuzz/corpus/<target>/ from
# real files: the bundled model, stories260K converted to .klt (f32, q8_0,
# q4_0), tiny llama2.c checkpoints (versions 0, 1, 2) and their .klt
# conversions in every dtype, stories260K.bin + tok512.bin, some text, and
# GGUF and Hugging Face exports of the small models.
# Nothing here is committed (fuzz/.gitignore); rerun it on a fresh checkout.
#
# Usage: fuzz/seed-corpora.sh   (KINGLET_DATA overrides ../shared/data)
set -euo pipefail

fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
data=${KINGLET_DATA:-$root/../shared/data}
corpus=$fuzz/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for f in stories260K.bin tok512.bin tinyshakespeare.txt; do
    [[ -f $data/$f ]] || { echo "seed-corpora: $data/$f is missing (set KINGLET_DATA)" >&2; exit 1; }
done
(cd "$root" && cargo build -q -p kinglet-tools --bin kinglet)
kinglet=$root/target/debug/kinglet

mkdir -p "$corpus"/{klt_reader,llama2c_import,tokenizer,c_api,gguf_import,hf_import}

# llama2.c checkpoints: stories260K and the tiny ones.
python3 "$fuzz/tiny_llama2c.py" "$work"
# llama2c_import seeds: u32 checkpoint length, checkpoint, tokenizer.
pack() { # checkpoint tokenizer output
    python3 -c 'import struct,sys; c=open(sys.argv[1],"rb").read(); t=open(sys.argv[2],"rb").read(); open(sys.argv[3],"wb").write(struct.pack("<I",len(c))+c+t)' "$@"
}
pack "$data/stories260K.bin" "$data/tok512.bin" "$corpus/llama2c_import/stories260K"
for v in v0 v0_untied v1 v2; do
    pack "$work/tiny_$v.bin" "$work/tiny_tok.bin" "$corpus/llama2c_import/tiny_$v"
done

# .klt seeds.
cp "$root/tools/models/shakespeare.klt" "$corpus/klt_reader/shakespeare.klt"
for dtype in f32 q8_0 q4_0; do
    "$kinglet" convert "$data/stories260K.bin" --tokenizer "$data/tok512.bin" \
        --dtype $dtype -o "$corpus/klt_reader/stories260K_$dtype.klt" >/dev/null
done
for v in v0 v0_untied v2; do
    for dtype in f32 f16 bf16 q8_0 q4_0; do
        "$kinglet" convert "$work/tiny_$v.bin" --tokenizer "$work/tiny_tok.bin" \
            --dtype $dtype -o "$corpus/klt_reader/tiny_${v}_$dtype.klt" >/dev/null
    done
done

# gguf_import seeds: GGUF exports of the bundled model and of small .klt
# files; hf_import seeds: u32 length + config.json, u32 length +
# tokenizer.json, then model.safetensors, of the same models' HF exports.
hfpack() { # hf-directory output
    python3 -c 'import struct,sys; d=sys.argv[1]; c=open(d+"/config.json","rb").read(); t=open(d+"/tokenizer.json","rb").read(); s=open(d+"/model.safetensors","rb").read(); open(sys.argv[2],"wb").write(struct.pack("<I",len(c))+c+struct.pack("<I",len(t))+t+s)' "$@"
}
for f in "$root/models/shakespeare.klt" "$corpus"/klt_reader/stories260K_q4_0.klt \
         "$corpus"/klt_reader/tiny_v0_*.klt "$corpus"/klt_reader/tiny_v2_q8_0.klt; do
    name=$(basename "$f" .klt)
    "$kinglet" convert "$f" -o "$corpus/gguf_import/$name.gguf" >/dev/null
    "$kinglet" convert "$f" --format hf -o "$work/$name-hf" >/dev/null
    hfpack "$work/$name-hf" "$corpus/hf_import/$name"
done

# c_api seeds: u32 max_seq, the arena byte, the model. Tiny models with
# several arena offsets and repaired or not; the real models once each.
cap() { # model max_seq arena_byte output
    python3 -c 'import struct,sys; m=open(sys.argv[1],"rb").read(); open(sys.argv[4],"wb").write(struct.pack("<IB",int(sys.argv[2]),int(sys.argv[3]))+m)' "$@"
}
i=0
for f in "$corpus"/klt_reader/tiny_*.klt; do
    cap "$f" $((1 + i % 8)) $(((i * 37) % 256)) "$corpus/c_api/$(basename "$f" .klt)"
    i=$((i + 1))
done
cap "$root/tools/models/shakespeare.klt" 16 0 "$corpus/c_api/shakespeare"
cap "$corpus/klt_reader/stories260K_q8_0.klt" 8 3 "$corpus/c_api/stories260K_q8_0"

# tokenizer seeds: a mode byte (bit 0: BPE vocabulary, bit 1: decode,
# bit 2: add BOS), then text or u16 ids.
t=$corpus/tokenizer
head -c 400 "$data/tinyshakespeare.txt" > "$work/shakespeare.txt"
for mode in 0 1 5; do
    { printf "\\x0$mode"; cat "$work/shakespeare.txt"; } > "$t/text_$mode"
    { printf "\\x0$mode"; printf 'Once upon a time, there was a little girl named Lily.'; } > "$t/story_$mode"
    { printf "\\x0$mode"; printf 'héllo 日本 🦀 \xff\xfe <0x41> <s>\t\r\n'; } > "$t/unicode_$mode"
done
# Decode: stories260K's greedy ids, and every id of each vocabulary.
python3 - "$root/tests/data/stories260K_greedy.ids" "$t" <<'PY'
import struct, sys
ids = [int(w) for line in open(sys.argv[1]) if not line.startswith("#")
       for w in line.split()[1:]]
out = sys.argv[2]
open(f"{out}/decode_story", "wb").write(b"\x03" + struct.pack(f"<{len(ids)}H", *ids))
open(f"{out}/decode_all_bpe", "wb").write(b"\x03" + struct.pack("<512H", *range(512)))
open(f"{out}/decode_all_char", "wb").write(b"\x02" + struct.pack("<70H", *range(70)))
PY
for d in "$corpus"/*/; do
    echo "$(basename "$d"): $(ls "$d" | wc -l) seeds, $(du -sh "$d" | cut -f1)"
done
