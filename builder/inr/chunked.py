"""A whole video as one decoder: per-chunk INRs (GOPs) behind global frame indices.

A long video is encoded as chunks of consecutive frames, each its own INR of the same architecture (each chunk
warm-starts from the previous chunk's weights, so the shapes match). :class:`ChunkedINR` makes them look like one
:class:`~builder.inr.base.INR` to every consumer (decode, eval, the NVP path, adapters, Triton): ``forward``,
``features``, ``forward_intermediates`` and ``decode_all`` take *global* frame indices, split each batch by chunk,
run each chunk's decoder on its local indices and put the results back in request order. Per-block features have
the same shape in every chunk, so one adapter serves them all.
"""
from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from typing import Sequence

import torch
from torch import Tensor, nn

from .base import INR, check_frame_indices
from .coding import DecodedINR, decode_inr

__all__ = ["ChunkedINR", "chunk_plan", "decode_chunked"]


def chunk_plan(total: int, chunk_frames: int) -> list[tuple[int, int]]:
    """``(start, frames)`` of each chunk: ``ceil(total / chunk_frames)`` chunks of as equal a length as possible
    (lengths differ by at most one frame, so every chunk's model has the same size and no tail chunk is tiny)."""
    if total < 1 or chunk_frames < 1:
        raise ValueError(f"need total >= 1 and chunk_frames >= 1, got {total} / {chunk_frames}")
    n = math.ceil(total / chunk_frames)
    base, extra = divmod(total, n)
    plan, at = [], 0
    for k in range(n):
        size = base + (k < extra)
        plan.append((at, size))
        at += size
    return plan


class ChunkedINR(nn.Module):
    """Chunk decoders ``chunks[k]`` covering global frames ``starts[k] .. starts[k] + chunks[k].config.frames - 1``.

    ``config`` is the first chunk's with ``frames`` = the whole video's: what consumers read for the frame count,
    the output size, the blocks and their cost per frame."""

    def __init__(self, chunks: Sequence[INR], starts: Sequence[int] | None = None) -> None:
        super().__init__()
        if not chunks:
            raise ValueError("a chunked INR needs at least one chunk")
        self.chunks = nn.ModuleList(chunks)
        sizes = [int(c.config.frames) for c in chunks]
        if starts is None:
            starts = [sum(sizes[:k]) for k in range(len(sizes))]
        starts = [int(s) for s in starts]
        if len(starts) != len(sizes) or any(s != sum(sizes[:k]) for k, s in enumerate(starts)):
            raise ValueError(f"chunk starts {starts} do not tile chunks of {sizes} frames from 0")
        first = chunks[0].config
        for k, c in enumerate(chunks[1:], start=1):
            if dataclasses.replace(c.config, frames=first.frames) != first:
                raise ValueError(f"chunk {k}'s architecture differs from chunk 0's: chunks must share one")
        self.starts = starts
        self.sizes = sizes
        self.config = dataclasses.replace(first, frames=sum(sizes))
        self.recipe = chunks[0].recipe

    # --- the index mapping ----------------------------------------------------------------------------------
    @property
    def num_chunks(self) -> int:
        return len(self.chunks)

    def chunk_of(self, index: int) -> int:
        """The chunk that holds global frame ``index``."""
        return bisect_right(self.starts, int(index)) - 1

    def frame_indices(self, idx: int | Sequence[int] | Tensor) -> Tensor:
        """Validate global frame indices (the same errors as a single INR's) as a 1-D LongTensor on the CPU."""
        return check_frame_indices(torch.as_tensor(idx).cpu(), self.config.frames)

    def locate(self, idx: int | Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """``(chunk, local index)`` of each global index, in request order."""
        t = self.frame_indices(idx)
        starts = torch.tensor(self.starts, dtype=torch.long)
        chunk = torch.bucketize(t, starts, right=True) - 1
        return chunk, t - starts[chunk]

    def _per_chunk(self, idx, run) -> list[Tensor | None]:
        """Run ``run(chunk_model, local_idx, positions)`` for each chunk a batch touches and scatter every output
        tensor back to the request's order (positions along dim 0)."""
        chunk, local = self.locate(idx)
        n = chunk.numel()
        outs: list[Tensor | None] | None = None
        for k in torch.unique(chunk).tolist():
            pos = (chunk == k).nonzero().reshape(-1)
            model = self.chunks[k]
            dev = model.head.weight.device
            got = run(model, local[pos].to(dev), pos)
            if outs is None:
                outs = [None if g is None else g.new_empty((n, *g.shape[1:])) for g in got]
            for o, g in zip(outs, got):
                if o is not None:
                    o[pos.to(o.device)] = g
        return outs

    # --- the INR interface -------------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self.config.num_blocks

    @property
    def block_info(self):
        return self.config.block_info()

    @property
    def total_gflops(self) -> float:
        return math.fsum(b.gflops for b in self.block_info)

    @property
    def head(self) -> nn.Module:  # the device of the decoder (some callers read ``model.head.weight.device``)
        return self.chunks[0].head

    def forward(self, idx: int | Sequence[int] | Tensor, frames: Tensor | None = None) -> Tensor:
        def run(model, local, pos):
            return [model(local, None if frames is None else frames[pos.to(frames.device)])]
        return self._per_chunk(idx, run)[0]

    def forward_intermediates(self, idx: int | Sequence[int] | Tensor, indices: int | Sequence[int] | None = None,
                              stop_early: bool = False, frames: Tensor | None = None
                              ) -> tuple[Tensor | None, list[Tensor]]:
        def run(model, local, pos):
            rgb, feats = model.forward_intermediates(local, indices, stop_early,
                                                     None if frames is None else frames[pos.to(frames.device)])
            return [rgb, *feats]
        out = self._per_chunk(idx, run)
        return out[0], out[1:]

    def features(self, idx: int | Sequence[int] | Tensor, exit_block: int) -> Tensor:
        return self.forward_intermediates(idx, [exit_block], stop_early=True)[1][0]

    @torch.no_grad()
    def decode_all(self, batch_size: int = 8) -> Tensor:
        """All frames ``(T, 3, H, W)`` in [0, 1], chunk after chunk."""
        return torch.cat([c.decode_all(batch_size) for c in self.chunks])

    def num_params(self) -> int:
        return sum(c.num_params() for c in self.chunks)


def decode_chunked(blobs: Sequence[bytes], starts: Sequence[int] | None = None,
                   device: str | torch.device = "cpu") -> DecodedINR:
    """One :class:`DecodedINR` over the chunks' bitstreams (in chunk order): ``model`` is a :class:`ChunkedINR`,
    ``num_bytes`` the sum, ``quant`` / ``format_version`` the first chunk's."""
    decoded = [decode_inr(b, device=device) for b in blobs]
    model = ChunkedINR([d.model for d in decoded], starts).to(device).eval()
    return DecodedINR(model, model.config, decoded[0].quant, decoded[0].format_version,
                      sum(d.num_bytes for d in decoded))
