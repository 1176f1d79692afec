#!/usr/bin/env python3
"""Checks a kinglet model exported to Hugging Face form against kinglet
itself, in `transformers`:

1. logits: the mean cross-entropy of the model on a text, under the
   protocol of `kinglet eval` (non-overlapping windows of the context
   length, each predicting its tokens from its own prefix), computed by
   `transformers` from its logits and by `kinglet eval`;
2. generation: the greedy continuation of a prompt decoded by
   `transformers` (`generate`, `do_sample=False`) and printed by
   `kinglet generate --temperature 0`.

Exits 1 when the texts differ or the losses differ by more than 1e-4.
Needs `pip install torch transformers` (heavy: not run in CI).

Usage:
  scripts/transformers_parity.py MODEL.klt --text FILE --prompt TEXT [-n 40]
      [--kinglet PATH]   (default: target/release/kinglet, else `kinglet`)
  e.g. scripts/transformers_parity.py stories260K.klt --text story.txt \
           --prompt "Once upon a time" -n 60
"""
import os
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kinglet_reference import kinglet_greedy, kinglet_loss, parse_args, report, run


def main():
    args = parse_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        hf = os.path.join(tmp, "hf")
        print(run(args.kinglet, "convert", args.model, "--format", "hf", "-o", hf).strip())
        tok = AutoTokenizer.from_pretrained(hf)
        model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
        model.eval()

        # 1. Cross-entropy under kinglet eval's windows (no BOS, dummy prefix).
        text = open(args.text, encoding="utf-8").read()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ctx = model.config.max_position_embeddings
        windows = (len(ids) - 1) // ctx
        total = 0.0
        with torch.no_grad():
            for k in range(windows):
                w = torch.tensor([ids[k * ctx : (k + 1) * ctx + 1]])
                logits = model(w[:, :-1]).logits.double()
                total += torch.nn.functional.cross_entropy(
                    logits[0], w[0, 1:], reduction="sum"
                ).item()

        # 2. Greedy continuation.
        prompt_ids = tok(args.prompt, return_tensors="pt")["input_ids"]
        print(f"prompt tokens (transformers): {prompt_ids[0].tolist()}")
        with torch.no_grad():
            generated = model.generate(prompt_ids, max_new_tokens=args.n, do_sample=False,
                                       pad_token_id=tok.eos_token_id or 0)
        text_out = tok.decode(generated[0], skip_special_tokens=True)
        report("transformers", total / (windows * ctx), kinglet_loss(args), 1e-4,
               text_out, kinglet_greedy(args), windows, ctx)


if __name__ == "__main__":
    main()
