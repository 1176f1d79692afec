"""kinglet-train's model and optimizer step in plain PyTorch (CPU, float32,
eager: no torch.compile, no TorchScript), to measure tokens/s against
kinglet-train on the same CPU with the same threads
(benches/train_vs_pytorch.sh runs both).

The same computation as trainer/src/model.rs and trainer/src/trainer.rs:
character vocabulary of the corpus (sorted distinct characters), the first
90% of its tokens to train on, random windows of `context` tokens; token
embedding, then per block `x += Wo·attn(rope(Wq·n1(x)), rope(Wk·n1(x)),
Wv·n1(x))` and `x += W2·(silu(W1·n2(x)) · W3·n2(x))`, final RMSNorm and a
classifier (tied to the embedding with --tied true); no biases; RMSNorm
`x / sqrt(mean(x²) + eps) · g`; RoPE on adjacent pairs (x[2i], x[2i+1]),
angle pos · theta^(-2i/head_dim); causal attention scaled by
1/sqrt(head_dim); mean cross-entropy; AdamW (PyTorch's update, as
trainer/src/adamw.rs) with decay on the 2-D tensors only; init N(0, std)
with wo and w2 scaled by 1/sqrt(2·layers), norm gains 1. The random numbers
(init, batches) are PyTorch's, not kinglet's: losses agree in distribution,
not bit for bit.

PyTorch gets its fastest stock pieces: F.scaled_dot_product_attention
(is_causal) for attention and the fused AdamW (--adamw picks another). Work
kinglet-train does per step and this script does not: the global gradient
norm (kinglet's divergence check and log).

    python3 benches/pytorch_train.py --preset seed --threads 1 --steps 600
    python3 benches/pytorch_train.py --preset nanogpt --threads 2 --steps 8

Prints the loss every --log-every steps, then one final line
`tokens/s N`, N = batch · context · timed steps / their wall time; the
--warmup steps run first and are not timed.
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

# kinglet-train's `seed` preset (trainer/src/config.rs), and nanoGPT's
# shakespeare-char size with kinglet's SwiGLU and the seed preset's
# optimizer settings. `steps` is a default for this bench, not the preset's.
PRESETS = {
    "seed": dict(context=16, dim=128, layers=4, heads=8, hidden=352, batch=32,
                 tied=False, steps=600),
    "nanogpt": dict(context=256, dim=384, layers=6, heads=6, hidden=1024, batch=16,
                    tied=True, steps=8),
}
# The seed preset's optimization (both presets above use it).
LR, BETAS, EPS, WEIGHT_DECAY, INIT_STD, SEED = 1e-3, (0.9, 0.95), 1e-8, 0.1, 0.02, 1337
ROPE_THETA, NORM_EPS = 10000.0, 1e-5


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * self.weight


def rope_tables(context, head_dim):
    """cos and sin of every (position, pair) angle, as kinglet::ops::rope_rotation
    (f32: freq = 1/theta^(2i/head_dim), angle = pos·freq). [context, head_dim/2]"""
    pair = torch.arange(head_dim // 2, dtype=torch.float32)
    freq = 1.0 / torch.pow(torch.tensor(ROPE_THETA), 2 * pair / head_dim)
    angle = torch.arange(context, dtype=torch.float32)[:, None] * freq[None, :]
    return torch.cos(angle), torch.sin(angle)


def rope(x, cos, sin):
    """Rotates the adjacent pairs of each head. x: [B, T, H, hd]; cos, sin: [T, hd/2]."""
    pairs = x.unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.heads = heads
        self.attn_norm = RMSNorm(dim)
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.ffn_norm = RMSNorm(dim)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        xn = self.attn_norm(x)
        q = rope(self.wq(xn).view(b, t, self.heads, -1), cos, sin)
        k = rope(self.wk(xn).view(b, t, self.heads, -1), cos, sin)
        v = self.wv(xn).view(b, t, self.heads, -1)
        # [B, H, T, hd]; the default scale is 1/sqrt(hd), as kinglet's.
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.wo(y.transpose(1, 2).reshape(b, t, d))
        xn = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(xn)) * self.w3(xn))


class Model(nn.Module):
    def __init__(self, vocab, context, dim, layers, heads, hidden, tied):
        super().__init__()
        self.tok_embedding = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, heads, hidden) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.classifier = nn.Linear(dim, vocab, bias=False)
        if tied:
            self.classifier.weight = self.tok_embedding.weight
        cos, sin = rope_tables(context, dim // heads)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        # As ParamLayout::init: matrices N(0, std), the residual outputs
        # scaled by 1/sqrt(2·layers), norm gains 1 (their constructor's).
        residual_scale = 1.0 / math.sqrt(2 * layers)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                scale = residual_scale if name.endswith(("wo.weight", "w2.weight")) else 1.0
                nn.init.normal_(p, std=INIT_STD * scale)

    def forward(self, inputs, targets):
        x = self.tok_embedding(inputs)
        for block in self.layers:
            x = block(x, self.cos, self.sin)
        logits = self.classifier(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=PRESETS, default="seed")
    p.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    for flag in ("context", "dim", "layers", "heads", "hidden", "batch", "steps"):
        p.add_argument(f"--{flag}", type=int, help="overrides the preset")
    p.add_argument("--tied", choices=("true", "false"), help="overrides the preset")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--log-every", type=int, default=0,
                   help="print the training loss every N steps (0: first and last)")
    p.add_argument("--adamw", choices=("fused", "foreach", "loop"), default="fused",
                   help="PyTorch's AdamW implementation (fused: one kernel over all "
                   "tensors, the fastest on CPU; same update)")
    args = p.parse_args()
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be at least 1")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if isinstance(args.tied, str):
        args.tied = args.tied == "true"
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_train = len(tokens) // 10 * 9 + len(tokens) % 10 * 9 // 10
    train = tokens[:n_train]

    model = Model(len(chars), args.context, args.dim, args.layers, args.heads,
                  args.hidden, args.tied)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    impl = {"fused": dict(fused=True), "foreach": dict(foreach=True),
            "loop": dict(foreach=False)}[args.adamw]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=BETAS, eps=EPS, **impl)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"vocab {len(chars)}, {n_params} parameters, {vars(args)}")

    offsets = torch.arange(args.context)
    total = args.warmup + args.steps
    start = None
    for step in range(1, total + 1):
        if step == args.warmup + 1:
            start = time.perf_counter()
        starts = torch.randint(len(train) - args.context, (args.batch,))
        window = starts[:, None] + offsets
        loss = model(train[window], train[window + 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        every = args.log_every
        if step == 1 or step == total or (every > 0 and step % every == 0):
            print(f"step {step} loss {loss.item():.4f}")
    elapsed = time.perf_counter() - start
    print(f"tokens/s {args.batch * args.context * args.steps / elapsed:.0f}")


if __name__ == "__main__":
    main()
