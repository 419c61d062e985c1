"""Command line: ``python -m qlib.captioning evaluate|train`` (paper Sec. VI-C).

Examples
--------
CI scale (the defaults: shipped tiny GIT, generated shapes test set)::

    python -m qlib.captioning evaluate --json --n-samples 50
    python -m qlib.captioning evaluate --bit-width 4 --quantizer pot
    python -m qlib.captioning train --out my-tiny-git            # the recipe of the shipped checkpoint

Paper scale (a GPU box with the hub and the data)::

    python -m qlib.captioning evaluate --model Salesforce/blip2-opt-2.7b \\
        --data annotations/dataset_coco.json --image-root coco --split test --n-samples 5000 \\
        --device cuda --dtype float16 --bit-width 8
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qlib.captioning", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="caption a data set through the split model and score it")
    ev.add_argument("--model", default=None, help="tiny-git | tiny-git-video | local folder | hub id "
                    "(default: the tiny model matching --data)")
    ev.add_argument("--data", default="shapes", help="shapes | shapes-video | COCO-format or VaTeX-style JSON")
    ev.add_argument("--image-root", default=None, help="folder of the images/clips (default: the JSON's folder)")
    ev.add_argument("--split", default=None, help="split to keep (Karpathy file: 'test')")
    ev.add_argument("--bit-width", type=int, default=None, help="agent encoder bit-width 1..16 (default: full precision)")
    ev.add_argument("--quantizer", choices=("uniform", "pot"), default="uniform")
    ev.add_argument("--n-samples", type=int, default=None, help="first K samples (default: all)")
    ev.add_argument("--device", default="cpu", help="cpu | cuda")
    ev.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    ev.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ev.add_argument("--metrics", default="CIDEr,BLEU-4,ROUGE-L",
                    help="comma-separated subset of CIDEr,BLEU-4,METEOR,ROUGE-L (default: all but METEOR, whose "
                    "Java VM takes ~6 s to start); SPICE is not offered, it downloads a model at run time")
    ev.add_argument("--json", action="store_true", help="print one JSON object with the metric names as keys and, "
                    "for each metric M, M_ci95 = [low, high]: a 95 %% bootstrap interval over the samples "
                    "(2000 resamples, seed 0)")
    tr = sub.add_parser("train", help="train the CI-scale tiny GIT on the generated shapes data")
    tr.add_argument("--out", required=True, help="output folder (config, safetensors, vocab.json, train_log.json)")
    tr.add_argument("--kind", choices=("image", "video"), default="image")
    tr.add_argument("--epochs", type=int, default=70)
    tr.add_argument("--patch-size", type=int, default=8, help="vision patch size in pixels (8: the shipped recipe)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--n-train", type=int, default=None, help="first N training samples (default: all 4,000)")
    tr.add_argument("--threads", type=int, default=1)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import qlib

    if args.command == "train":
        from qlib.captioning.train import train_captioner

        train_captioner(args.out, kind=args.kind, epochs=args.epochs, seed=args.seed, n_train=args.n_train,
                        threads=args.threads, patch_size=args.patch_size)
        return 0
    try:
        # Deterministic kernels only matter on a GPU: asking torch for them imports its compiler
        # stack (~0.8 s), and greedy CPU inference of the split model is deterministic anyway.
        qlib.setup(seed=0, threads=args.threads, device=args.device, deterministic=args.device != "cpu")
        from qlib.captioning.sweep import evaluate

        chosen = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
        result = evaluate(args.model, args.data, args.bit_width, args.quantizer, args.n_samples, args.device,
                          args.dtype, args.split, args.image_root, metrics=chosen)
    except json.JSONDecodeError as exc:  # a JSON file read without qlib.captioning.data.read_json
        print(f"error: {args.data!r} (or a file it names) is not valid JSON: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:  # bad arguments, no GPU, no Java: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, allow_nan=False))  # no NaN anywhere: an absent score is null
        return 0
    bits = "full precision" if result["bit_width"] is None else f"{result['bit_width']}-bit {result['quantizer']}"
    print(f"{result['model']} on {result['data']} ({result['n_samples']} samples), agent encoder at {bits}")
    for k, v in result.items():
        if isinstance(v, float):
            ci = result.get(f"{k}_ci95")
            print(f"  {k:<18} {v:.4f}" + (f"  95 % interval [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        elif v is None and k.endswith("_accuracy"):
            print(f"  {k:<18} n/a (no caption states it)")
    for ex in result["examples"]:
        print(f"  caption: {ex['caption']!r}\n    refs: {ex['references'][:2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
