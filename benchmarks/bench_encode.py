"""`encode` as a user runs it: the defaults against the old ones, NeRV against HNeRV, and rate targets hit or missed.

  PYTHONPATH=. python benchmarks/bench_encode.py defaults            # 4 clips x 3 configs, 60 s each
  PYTHONPATH=. python benchmarks/bench_encode.py defaults --budgets 300 --clips bikes
  PYTHONPATH=. python benchmarks/bench_encode.py rate                # --bpp 0.1-1.0 on bikes, NeRV and HNeRV
  PYTHONPATH=. python benchmarks/bench_encode.py quant               # 8/6/5 bits, with and without --qat
  PYTHONPATH=. python benchmarks/bench_encode.py chunks              # whole videos: chunk length, warm start

`defaults` runs `encode_video` exactly as `python -m builder encode CLIP --id X --time-budget S` does (plus the
frame range and size below), for three configs on every clip:
  old      the defaults before the rate target: NeRV sized by the seed's Table 1 (--arch nerv --table1)
  nerv     --arch nerv with the default rate target (the source file's bytes for the frames)
  hnerv    --arch hnerv with the default rate target
and reports PSNR, bpp, epochs and the H.264 twin at the same bytes. `rate` asks for 0.1, 0.2, 0.5 and 1.0 bpp
and reports the stored bpp against the target. `quant` encodes the same clip at the same --bpp and time budget with
8-bit and 6-bit post-training quantisation and 6-bit and 5-bit quantisation-aware fine-tuning (--qat 0.2): fewer
bits buy a larger model at equal bytes; QAT spends a fifth of the time training through the quantiser. `chunks`
encodes one longer clip (--chunk-clip, default 64 frames of bikes at 160x68: a 2-core CPU trains little more) whole with chunk lengths
--chunk-lengths (0: one INR for all frames) at the same default rate target (the source's bytes for the frames) and
the same total --chunk-budget of training seconds, warm-started, and the default length again from scratch
(--no-warm-start): PSNR, bpp, encode time, the spread of the chunks' PSNR. Rows are cached in <out>/rows (--force
recomputes).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from builder.api import encode_video
from builder.config import QuantConfig
from builder.inr import get_inr_family
from builder.inr.rate import RateTooLow
from builder.samples import sample_path
from builder.store import VideoStore
from training.config import TrainConfig

# clip -> (frames, step, size): four real clips of different content and size, 32-48 frames each
CLIPS = {
    "bikes": (32, 2, (320, 136)),
    "carphone": (32, 1, (176, 144)),
    "bigbuckbunny": (32, 4, (320, 180)),
    "world": (48, 4, (240, 136)),
}
CONFIGS = {"old": ("nerv", True), "nerv": ("nerv", False), "hnerv": ("hnerv", False)}
RATE_TARGETS = (0.1, 0.2, 0.5, 1.0)
# chunks mode: clip -> (frames, step, size)
CHUNK_CLIPS = {"bikes": (64, 1, (160, 68)), "world": (96, 1, (240, 136)), "gradio_a": (209, 1, (720, 404))}
QUANT = {"8-bit": (8, 0.0), "6-bit": (6, 0.0), "6-bit qat": (6, 0.2), "5-bit qat": (5, 0.2)}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def encode_row(store: VideoStore, cache: Path, key: str, clip: str, arch: str, budget: float, force: bool,
               qat: float = 0.0, spec: tuple | None = None, epochs: int | None = None, **kw) -> dict:
    key = key.replace(".", "p")  # a video ID: no dots
    path = cache / f"{key}.json"
    if path.exists() and not force:
        return json.loads(path.read_text())
    frames, step, size = spec or CLIPS[clip]
    train = TrainConfig(recipe=get_inr_family(arch).model.recipe, time_budget=budget, qat=qat,
                        **({} if epochs is None else {"epochs": epochs}))
    plain = {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in kw.items()}
    try:
        m = encode_video(sample_path(clip), key, store=store, arch=arch, count=frames, step=step, size=size,
                         train=train, overwrite=True, progress=False, **kw)
    except RateTooLow as e:
        row = {"key": key, "clip": clip, "arch": arch, "budget": budget, "error": str(e), **plain}
    else:
        row = {"key": key, "clip": clip, "arch": arch, "budget": budget, "qat": qat, **plain,
               **{k: m[k] for k in ("params", "bytes", "bpp", "psnr", "ms_ssim", "epochs", "train_seconds",
                                    "stopped_by", "width", "height", "frames", "encode_seconds")},
               "h264_psnr": m["h264"]["psnr"], "h264_bpp": m["h264"]["bpp"], "sizing": m.get("sizing", {}),
               "chunks": m.get("chunks")}
    path.write_text(json.dumps(row, indent=1))
    return row


def cmd_defaults(args, store: VideoStore, cache: Path) -> list[str]:
    rows = []
    for budget in args.budgets:
        for clip in args.clips:
            for name in args.configs:
                arch, table1 = CONFIGS[name]
                r = encode_row(store, cache, f"{clip}-{name}-{budget:g}s", clip, arch, budget, args.force,
                               table1=table1)
                rows.append({**r, "config": name})
                print(f"{clip} {name} {budget:g}s: {r.get('psnr', '-')} dB at {r.get('bpp', '-')} bpp", flush=True)
    md = ["| clip | frames | budget s | config | params | bpp (target) | PSNR dB | epochs | H.264 twin dB |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tgt = r["sizing"].get("target_bpp")
        md.append(f"| {r['clip']} | {r['frames']} x {r['width']}x{r['height']} | {r['budget']:g} | {r['config']} | "
                  f"{r['params']:,} | {r['bpp']:.3f}" + (f" ({tgt:.3f})" if tgt else "") +
                  f" | **{r['psnr']:.2f}** | {r['epochs']} | {r['h264_psnr']:.2f} |")
    return md


def cmd_rate(args, store: VideoStore, cache: Path) -> list[str]:
    md = ["| clip | arch | --bpp | stored bpp | stored / target | params | PSNR dB | pruned |",
          "|---|---|---|---|---|---|---|---|"]
    for clip in args.clips:
        for arch in ("nerv", "hnerv"):
            for bpp in RATE_TARGETS:
                r = encode_row(store, cache, f"rate-{clip}-{arch}-{bpp:g}", clip, arch, args.rate_budget,
                               args.force, bpp=bpp)
                if "error" in r:
                    md.append(f"| {clip} | {arch} | {bpp:g} | refused: {r['error'].split(':')[0]} | | | | |")
                    continue
                md.append(f"| {clip} | {arch} | {bpp:g} | {r['bpp']:.3f} | {r['bpp'] / bpp:.2f} | {r['params']:,} | "
                          f"{r['psnr']:.2f} | {r['sizing'].get('pruned', 0):.3f} |")
                print(md[-1], flush=True)
    return md


def cmd_quant(args, store: VideoStore, cache: Path) -> list[str]:
    md = ["| clip | arch | --bpp | quantisation | params | stored bpp | PSNR dB | epochs (QAT) |", "|---|---|---|---|---|---|---|---|"]
    for clip in args.clips:
        for name, (bits, qat) in QUANT.items():
            r = encode_row(store, cache, f"quant-{clip}-{args.quant_bpp:g}-{name.replace(' ', '-')}", clip, "hnerv",
                           args.budgets[0], args.force, qat=qat, bpp=args.quant_bpp, quant=QuantConfig(bits=bits))
            md.append(f"| {clip} | hnerv | {args.quant_bpp:g} | {name} | {r['params']:,} | {r['bpp']:.3f} | "
                      f"**{r['psnr']:.2f}** | {r['epochs']} |")
            print(md[-1], flush=True)
    return md


def cmd_chunks(args, store: VideoStore, cache: Path) -> list[str]:
    from builder.api import DEFAULT_CHUNK_FRAMES

    clip = args.chunk_clip
    spec = CHUNK_CLIPS[clip]
    runs = [(n, True) for n in args.chunk_lengths] + [(DEFAULT_CHUNK_FRAMES, False)] * args.cold
    rate = {} if args.chunk_bpp is None else {"bpp": args.chunk_bpp}
    md = ["| clip | chunk frames | warm start | chunks | params / chunk | bpp | PSNR dB | chunk PSNR min-max | "
          "train s | encode s | H.264 twin dB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, warm in runs:
        budget = None if args.chunk_epochs else args.chunk_budget
        key = (f"chunks-{clip}-{spec[0]}-{n}-{'warm' if warm else 'cold'}-"
               + (f"{args.chunk_epochs}ep" if args.chunk_epochs else f"{args.chunk_budget:g}s")
               + (f"-{args.chunk_bpp:g}bpp" if rate else ""))
        r = encode_row(store, cache, key, clip, "hnerv", budget, args.force, spec=spec, chunk_frames=n,
                       warm_start=warm, epochs=args.chunk_epochs, **rate)
        if "error" in r:
            md.append(f"| {clip} | {n} | {'yes' if warm else 'no'} | refused: {r['error'][:90]} |||||||")
            print(md[-1], flush=True)
            continue
        ch = r.get("chunks") or [{"psnr": r["psnr"], "params": r["params"]}]
        lo, hi = min(c["psnr"] for c in ch), max(c["psnr"] for c in ch)
        md.append(f"| {clip} {r['frames']} x {r['width']}x{r['height']} | {n or r['frames']} | "
                  f"{'yes' if warm else 'no'} | {len(ch)} | {ch[0]['params']:,} | {r['bpp']:.3f} | "
                  f"**{r['psnr']:.2f}** | {lo:.2f}-{hi:.2f} | {r['train_seconds']:.0f} | {r['encode_seconds']:.0f} | "
                  f"{r['h264_psnr']:.2f} |")
        print(md[-1], flush=True)
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("defaults", "rate", "quant", "chunks"))
    p.add_argument("--clips", nargs="+", choices=sorted(CLIPS), help="default: all four (rate: bikes)")
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    p.add_argument("--budgets", nargs="+", type=float, default=[60.0], help="training seconds (default 60)")
    p.add_argument("--rate-budget", type=float, default=30.0, help="rate mode: training seconds (default 30)")
    p.add_argument("--quant-bpp", type=float, default=0.4, help="quant mode: the rate target (default 0.4)")
    p.add_argument("--chunk-clip", choices=sorted(CHUNK_CLIPS), default="bikes", help="chunks mode: the clip")
    p.add_argument("--chunk-lengths", nargs="+", type=int, default=[16, 32, 0],
                   help="chunks mode: frames per chunk (0: one INR; default 16 32 0)")
    p.add_argument("--chunk-budget", type=float, default=90.0,
                   help="chunks mode: training seconds for the whole clip (default 90)")
    p.add_argument("--chunk-bpp", type=float, help="chunks mode: an explicit --bpp for every row (default: none, "
                   "the default target, which the time budget may shrink differently per chunk length)")
    p.add_argument("--chunk-epochs", type=int, help="chunks mode: a fixed number of epochs for every chunk instead "
                   "of --chunk-budget (the same passes over every frame whatever the chunk length: a comparison a "
                   "busy shared CPU cannot skew)")
    p.add_argument("--cold", type=int, choices=(0, 1), default=1,
                   help="chunks mode: 1 adds the default chunk length without warm start (default 1)")
    p.add_argument("--out", type=Path, default=Path("bench_out/encode"))
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    args.clips = args.clips or (["bikes"] if args.mode in ("rate", "quant") else list(CLIPS))
    cache = args.out / "rows"
    cache.mkdir(parents=True, exist_ok=True)
    store = VideoStore(args.out / "store")
    md = {"defaults": cmd_defaults, "rate": cmd_rate, "quant": cmd_quant, "chunks": cmd_chunks}[args.mode](args, store, cache)
    text = "\n".join([f"Machine: {machine()}", "", *md]) + "\n"
    (args.out / f"{args.mode}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
