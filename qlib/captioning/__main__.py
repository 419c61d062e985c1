"""Command line: ``python -m qlib.captioning evaluate|sweep|train`` (paper Sec. VI-C).

Examples
--------
CI scale (the defaults: shipped tiny GIT, generated shapes test set)::

    python -m qlib.captioning evaluate --json --n-samples 50
    python -m qlib.captioning evaluate --bit-width 4 --quantizer pot
    python -m qlib.captioning evaluate --bit-width 2 --allocation per-layer --per-channel --json
    python -m qlib.captioning train     # the recipe of the shipped checkpoint (--out: where to; default in the cache)
    python -m qlib.captioning sweep --bit-widths 2,8 --quantizers uniform,pot --n-samples 50 --json --workers 2

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
    ev.add_argument("--model", default=None, help="tiny-git[-seed1|-seed2] | tiny-git-video[-seed1|-seed2] | "
                    "local folder | hub id (default: the tiny model matching --data)")
    ev.add_argument("--data", default="shapes", help="shapes | shapes-video | COCO-format or VaTeX-style JSON")
    ev.add_argument("--image-root", default=None, help="folder of the images/clips (default: the JSON's folder)")
    ev.add_argument("--split", default=None, help="split to keep (Karpathy file: 'test')")
    ev.add_argument("--bit-width", type=int, default=None, help="agent encoder bit-width 1..16 (default: full precision)")
    ev.add_argument("--quantizer", choices=("uniform", "pot"), default="uniform")
    ev.add_argument("--allocation", choices=("uniform", "per-layer"), default="uniform",
                    help="per-layer: bit-widths per agent layer, parameter-weighted average <= --bit-width, "
                    "chosen from a sensitivity table measured on training data (qlib.captioning.mixed)")
    ev.add_argument("--per-channel", action="store_true", help="per-output-channel scales (default per tensor)")
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
    _add_sweep_parser(sub)
    tr = sub.add_parser("train", help="train the CI-scale tiny GIT on the generated shapes data")
    tr.add_argument("--out", default=None, help="output folder (config, safetensors, vocab.json, train_log.json); "
                    "default: captioners/tiny-git[-video]-seed<seed> under the cache ($QBOOK_CACHE or ~/.cache/qbook)")
    tr.add_argument("--kind", choices=("image", "video"), default="image")
    tr.add_argument("--epochs", type=int, default=70)
    tr.add_argument("--patch-size", type=int, default=8, help="vision patch size in pixels (8: the shipped recipe)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--n-train", type=int, default=None, help="first N training samples (default: all 4,000)")
    tr.add_argument("--threads", type=int, default=1)
    return p


def _add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="caption and score a grid of bit-widths x quantizers (cached; Ray with "
                        "--workers)")
    sw.add_argument("--bit-widths", default="1,2,4,8", help="comma-separated, 1..16; 'fp' = full precision")
    sw.add_argument("--quantizers", default="uniform,pot", help="comma-separated subset of uniform,pot")
    sw.add_argument("--model", default=None, help="as for evaluate")
    sw.add_argument("--data", default="shapes", help="as for evaluate")
    sw.add_argument("--image-root", default=None)
    sw.add_argument("--split", default=None)
    sw.add_argument("--n-samples", type=int, default=None, help="first K samples (default: all)")
    sw.add_argument("--device", default="cpu", help="cpu | cuda (with --workers: the workers' device)")
    sw.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    sw.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    sw.add_argument("--metrics", default="CIDEr,BLEU-4,ROUGE-L", help="as for evaluate (METEOR only when asked)")
    sw.add_argument("--batch-size", type=int, default=50)
    sw.add_argument("--cache", default="auto", help="cache folder ('auto': $QBOOK_CACHE/captioning/sweeps; "
                    "'none': no cache)")
    sw.add_argument("--workers", type=int, default=0, help="0: serial (default); N: N Ray workers, each loading "
                    "the model once")
    sw.add_argument("--address", default=None, help="join this Ray cluster ('auto' inside `ray job submit`); "
                    "default: a local Ray of --workers processes")
    sw.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs Ray reserves per worker "
                    "(default: 1 with --device cuda, else 0)")
    sw.add_argument("--max-retries", type=int, default=2, help="restarts of a dead worker / retries of its setting")
    sw.add_argument("--json", action="store_true", help="one JSON object per setting and line (keys of "
                    "evaluate --json)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _sweep_command(args: argparse.Namespace) -> int:
    """Print each setting's record as soon as it and every setting before it are done (a stable order
    that still streams); exit 1 naming each setting that failed on every try."""
    from qlib.captioning import sweep as sw

    try:
        settings = sw.parse_settings(args.bit_widths, args.quantizers)
        chosen = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
        samples, kind, _ = sw.load_samples(args.data, args.n_samples, args.split, args.image_root)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = args.model or ("tiny-git-video" if kind == "video" else "tiny-git")
    done: dict = {}
    printed = [0]

    def emit(setting, result) -> None:
        done[setting] = result
        while printed[0] < len(settings) and settings[printed[0]] in done:
            s = settings[printed[0]]
            rec = sw.result_record(done[s], s, samples, model, args.data)
            if args.json:
                print(json.dumps(rec, allow_nan=False), flush=True)
            else:
                bits = "full precision" if s[0] is None else f"{s[0]:>2}-bit {s[1]:<7}"
                print(bits + "  " + "  ".join(f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float)),
                      flush=True)
            printed[0] += 1

    try:
        sw.run_sweep(model, args.data, settings, n_samples=args.n_samples, split=args.split,
                     image_root=args.image_root, device=args.device, dtype=args.dtype, metrics=chosen,
                     cache=None if args.cache == "none" else args.cache, batch_size=args.batch_size,
                     workers=args.workers, address=args.address, gpus_per_worker=args.gpus_per_worker,
                     threads=args.threads, max_retries=args.max_retries, progress=not args.no_progress,
                     on_result=emit)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (sw.SweepFailed, RuntimeError) as exc:
        failed = getattr(exc, "failed", {})
        for s in settings:  # the settings after a failed one were held back to keep the order
            if s in done and settings.index(s) >= printed[0]:
                rec = sw.result_record(done[s], s, samples, model, args.data)
                print(json.dumps(rec, allow_nan=False) if args.json else rec, flush=True)
        print(f"error: {exc}", file=sys.stderr)
        for s, msg in failed.items():
            print(f"error: bit_width={s[0]} quantizer={s[1]} failed: {msg}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import qlib

    if args.command == "train":
        from qlib.captioning.data import cache_dir
        from qlib.captioning.train import train_captioner

        out = args.out or cache_dir() / "captioners" / f"tiny-git{'-video' * (args.kind == 'video')}-seed{args.seed}"
        print(f"training into {out}", file=sys.stderr)
        train_captioner(out, kind=args.kind, epochs=args.epochs, seed=args.seed, n_train=args.n_train,
                        threads=args.threads, patch_size=args.patch_size)
        return 0
    if args.command == "sweep":
        qlib.setup(seed=0, threads=args.threads, device="cpu")  # --device is checked where it runs
        return _sweep_command(args)
    try:
        # Deterministic kernels only matter on a GPU: asking torch for them imports its compiler
        # stack (~0.8 s), and greedy CPU inference of the split model is deterministic anyway.
        qlib.setup(seed=0, threads=args.threads, device=args.device, deterministic=args.device != "cpu")
        from qlib.captioning.sweep import evaluate

        chosen = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
        if args.allocation == "per-layer" or args.per_channel:
            from qlib.captioning.mixed import evaluate_mixed

            result = evaluate_mixed(args.model, args.data, args.bit_width, args.quantizer, args.allocation,
                                    args.per_channel, args.n_samples, args.device, args.dtype, args.split,
                                    args.image_root)
        else:
            result = evaluate(args.model, args.data, args.bit_width, args.quantizer, args.n_samples, args.device,
                              args.dtype, args.split, args.image_root, metrics=chosen)
            result.update(average_bits=result["bit_width"], bits_per_layer=None)  # None: all at bit_width
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
    if result.get("allocation") == "per-layer":
        bits += f" per layer (average {result['average_bits']:.3f} bits)"
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
