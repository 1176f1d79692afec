"""What the parity scripts share: finding and running `kinglet`, their
command line, and kinglet's own answers to compare against (the
cross-entropy of `kinglet eval`, the text of `kinglet generate
--temperature 0`)."""
import argparse
import os
import re
import shutil
import subprocess
import sys


def run(*args):
    """Runs a command; its stdout, or exit with its stderr."""
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def parse_args(doc):
    """MODEL --text FILE --prompt TEXT [-n N] [--kinglet PATH]."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("model", help="a .klt model")
    p.add_argument("--text", required=True, help="UTF-8 text to score")
    p.add_argument("--prompt", required=True)
    p.add_argument("-n", type=int, default=40, help="tokens to generate")
    p.add_argument("--kinglet", help="the kinglet binary "
                   "(default: target/release/kinglet, else kinglet on PATH)")
    args = p.parse_args()
    if not args.kinglet:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        built = os.path.join(root, "target", "release", "kinglet")
        args.kinglet = built if os.path.exists(built) else shutil.which("kinglet") or "kinglet"
    return args


def kinglet_loss(args):
    """Mean cross-entropy by `kinglet eval` on args.text."""
    out = run(args.kinglet, "eval", args.model, "--text", args.text)
    return float(re.search(r"loss: ([0-9.]+)", out).group(1))


def kinglet_greedy(args):
    """The prompt and its greedy continuation, as `kinglet generate` prints
    them (less the newline it ends its output with)."""
    out = run(args.kinglet, "generate", args.model, "--prompt", args.prompt,
              "-n", str(args.n), "--temperature", "0")
    return out[:-1] if out.endswith("\n") else out


def report(name, loss, reference_loss, tolerance, text, reference_text, windows, ctx):
    """Prints the comparison; exits 1 on a difference."""
    loss_ok = abs(loss - reference_loss) <= tolerance
    print(f"tokens scored: {windows * ctx} in {windows} windows of {ctx}")
    print(f"cross-entropy: kinglet {reference_loss:.6f}, {name} {loss:.6f}, "
          f"difference {loss - reference_loss:+.2e} (tolerance {tolerance:g})")
    print(f"kinglet: {reference_text!r}")
    print(f"{name}: {text!r}")
    text_ok = text == reference_text
    print("greedy text:", "identical" if text_ok else "DIFFERENT")
    sys.exit(0 if loss_ok and text_ok else 1)
