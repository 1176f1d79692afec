#!/usr/bin/env python3
"""Checks a kinglet model exported to GGUF against kinglet itself, in
llama.cpp (through the `llama-cpp-python` package, which builds llama.cpp
from source):

1. tokens: the prompt as llama.cpp's tokenizer encodes it;
2. logits: the mean cross-entropy on a text under the protocol of
   `kinglet eval` (windows of the context length), from llama.cpp's
   logits, against `kinglet eval`;
3. generation: the greedy continuation (temperature 0) of the prompt in
   llama.cpp and in `kinglet generate --temperature 0`.

Exits 1 when the texts differ or the losses differ by more than 1e-3
(llama.cpp's kernels round differently from kinglet's).

Usage:
  scripts/llama_cpp_parity.py MODEL.klt --text FILE --prompt TEXT [-n 40]
      [--kinglet PATH]   (default: target/release/kinglet, else `kinglet`)
  e.g. scripts/llama_cpp_parity.py stories260K.klt --text story.txt \
           --prompt "Once upon a time" -n 60
"""
import os
import tempfile

import numpy as np
from llama_cpp import Llama

from kinglet_reference import kinglet_greedy, kinglet_loss, parse_args, report, run


def main():
    args = parse_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = os.path.join(tmp, "model.gguf")
        print(run(args.kinglet, "convert", args.model, "-o", gguf).strip())
        llm = Llama(model_path=gguf, n_ctx=0, n_batch=512, logits_all=True,
                    n_threads=2, seed=0, verbose=False)
        # kinglet eval's windows are the model's context length; llama.cpp
        # may round its own context up (to 256 at least), so the window is
        # the file's context length, not llm.n_ctx().
        ctx = int(llm.metadata["llama.context_length"])
        add_bos = llm._model.add_bos_token()
        print(f"llama.cpp: window {ctx}, vocabulary {llm.n_vocab()}, add BOS {add_bos}")

        # 1. The prompt's tokens.
        prompt_tokens = llm.tokenize(args.prompt.encode(), add_bos=add_bos)
        print(f"prompt tokens (llama.cpp): {prompt_tokens}")

        # 2. Cross-entropy under kinglet eval's windows (no BOS, dummy prefix).
        text = open(args.text, encoding="utf-8").read()
        ids = llm.tokenize(text.encode(), add_bos=False)
        windows = (len(ids) - 1) // ctx
        total = 0.0
        for k in range(windows):
            w = ids[k * ctx : (k + 1) * ctx + 1]
            llm.reset()
            llm.eval(w[:-1])
            logits = np.asarray(llm.scores[:ctx], dtype=np.float64)
            top = logits.max(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
            total += float((lse - logits[np.arange(ctx), w[1:]]).sum())

        # 3. Greedy continuation.
        llm.reset()
        done = llm.create_completion(args.prompt, max_tokens=args.n, temperature=0.0,
                                     top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
        report("llama.cpp", total / (windows * ctx), kinglet_loss(args), 1e-3,
               args.prompt + done["choices"][0]["text"], kinglet_greedy(args), windows, ctx)


if __name__ == "__main__":
    main()
