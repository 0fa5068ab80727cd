"""Data-parallel lifted training over ``torch.distributed`` (method §2, "samples are independent").

Each of the ``P`` ranks holds a contiguous shard of the ``N`` training samples and *their* lifted
states ``x_i^l`` (never communicated). A block sweep needs, besides rank-local tensor work, only
sums over samples, all routed through the solver's single ``reduce_fn`` hook
(:class:`~lifted_inverse.lifted.solvers.LiftedSolver`); :class:`AllReduce` implements it with
``torch.distributed.all_reduce(SUM)`` on one flattened buffer per call:

* W-block gradients ``Σ_i (∂z_l/∂θ_l)ᵀ ∇_z P_l`` — ``Σ_l |W_l| + |b_l|`` numbers per sweep;
* batch statistics ``[|S|, Σ_i Σ_l P_l]`` — 2 numbers per sweep (the mean objective drives the
  restart / divergence decisions, so every rank takes the same one);
* W-block Lipschitz constants: each power-iteration step applies ``Σ_i x̃_i x̃_iᵀ`` to a vector —
  ``Σ_l (d_in,l + 1)`` numbers per iteration (``power_iterations`` per sweep, 20 on the first).

Everything else (state Lipschitz constants ``‖W_l‖²``, restart tests, Adam moments, regulariser
proxes) is a function of the weights and reduced quantities only, hence bitwise identical on all
ranks as long as the weights start identical (:func:`broadcast_parameters`). The sums are the
single-process sums regrouped, so a P-rank run equals the 1-rank run up to rounding.

Launch: ``torchrun --nproc-per-node P ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``; :func:`init_from_env` reads them and picks ``nccl`` for CUDA
devices, ``gloo`` otherwise.

Checkpoints: the states are gathered to rank 0 *by global sample id* (:func:`gather_rows`), so a
checkpoint holds exactly what a 1-process run holds and resumes on any number of ranks (each
rank slices its new shard, :func:`Shard.rows`). Rank 0 writes the file atomically.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def backend_for(device: torch.device | str) -> str:
    """``'nccl'`` for CUDA devices, ``'gloo'`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str | torch.device = "cpu", backend: str | None = None,
                  timeout_s: float = 600.0, what: str = "distributed") -> DistributedInfo:
    """Initialise the default process group from torchrun's environment variables.

    ``device='cuda'`` becomes ``cuda:LOCAL_RANK`` (one GPU per process). Reuses an already
    initialised group. Raises ``ValueError`` naming the missing variables when not launched by
    torchrun (or an equivalent launcher); its message starts with ``what`` (the option that
    asked for the process group).
    """
    device = torch.device(device)
    if not dist.is_available():
        raise ValueError(f"{what}: this torch build has no torch.distributed support")
    if not dist.is_initialized():
        missing = [v for v in ENV_VARS if v not in os.environ]
        if missing:
            raise ValueError(f"{what}: environment variables {', '.join(missing)} are not set; "
                             "launch with `torchrun --nproc-per-node N -m lifted_inverse train ...`")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: CUDA requested but not available")
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    backend = backend or backend_for(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistributedInfo(dist.get_rank(), dist.get_world_size(), local_rank, device,
                           dist.get_backend())


def rank_and_world(group=None) -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


class AllReduce:
    """``reduce_fn`` for :class:`LiftedSolver`: sum a list of tensors over all ranks.

    The tensors of one call are packed into one contiguous buffer per dtype and reduced by a single
    ``all_reduce`` (one latency per call, not one per tensor), then unpacked into new tensors of
    the original shapes. ``log`` records one entry per call: the list of per-tensor element counts
    and the element size, so callers can account the bytes (:func:`communication_summary`).
    With ``world_size == 1`` (or no process group) nothing is sent and the tensors are returned
    as they are, but the call is still logged. While ``absent`` is set this rank contributes
    zeros (it runs a sweep on a stand-in sample only to join the collectives of a batch that
    holds none of its samples).
    """

    def __init__(self, group=None, record: bool = True):
        self.group = group
        self.record = record
        self.absent = False
        self.log: list[tuple[list[int], int]] = []

    def reset(self) -> None:
        self.log.clear()

    @property
    def bytes(self) -> int:
        """Payload bytes handed to ``all_reduce`` since the last :meth:`reset`."""
        return sum(sum(n) * size for n, size in self.log)

    @property
    def calls(self) -> int:
        return len(self.log)

    def __call__(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        tensors = list(tensors)
        if not tensors:
            return tensors
        if self.record:
            self.log.append(([t.numel() for t in tensors], tensors[0].element_size()))
        _, world = rank_and_world(self.group)
        if world == 1:
            return tensors
        if self.absent:
            tensors = [torch.zeros_like(t) for t in tensors]
        out: list[torch.Tensor | None] = [None] * len(tensors)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        for idx in by_dtype.values():
            buf = torch.cat([tensors[i].reshape(-1) for i in idx])
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
            for i, part in zip(idx, buf.split([tensors[i].numel() for i in idx])):
                out[i] = part.view(tensors[i].shape)
        return out


def communication_summary(log: Sequence[tuple[list[int], int]], params: Sequence[torch.Tensor]) -> dict:
    """Split an :class:`AllReduce` log into W-gradient, statistics and Lipschitz bytes.

    The gradient call is recognised by its layout, one tensor per parameter (same element
    counts, in order) followed by the statistics vector; every other call is a power-iteration
    Gram product. Returns ``{'gradient_bytes', 'statistics_bytes', 'lipschitz_bytes',
    'total_bytes', 'calls', 'gradient_calls', 'expected_gradient_bytes'}`` where the last is
    ``Σ_l (|W_l| + |b_l|)·element size`` from ``params``.
    """
    sizes = [p.numel() for p in params]
    grad = stats = lip = gcalls = 0
    elem = params[0].element_size() if params else 0
    for counts, size in log:
        if len(counts) == len(sizes) + 1 and counts[:-1] == sizes:
            grad += sum(counts[:-1]) * size
            stats += counts[-1] * size
            gcalls += 1
        else:
            lip += sum(counts) * size
    return {"gradient_bytes": grad, "statistics_bytes": stats, "lipschitz_bytes": lip,
            "total_bytes": grad + stats + lip, "calls": len(log), "gradient_calls": gcalls,
            "expected_gradient_bytes": sum(sizes) * elem}


@dataclass(frozen=True)
class Shard:
    """The contiguous block ``[start, stop)`` of global sample ids owned by one rank.

    ``Shard.of(n, rank, world)`` splits ``n`` samples as evenly as ``torch.tensor_split`` does
    (the first ``n mod world`` ranks get one more).
    """

    start: int
    stop: int
    total: int

    @classmethod
    def of(cls, n: int, rank: int, world: int) -> Shard:
        if n < 1:
            raise ValueError(f"n: need at least one sample, got {n}")
        if not 0 <= rank < world:
            raise ValueError(f"rank: expected 0 <= rank < world_size={world}, got {rank}")
        base, extra = divmod(n, world)
        start = rank * base + min(rank, extra)
        return cls(start, start + base + (1 if rank < extra else 0), n)

    def __len__(self) -> int:
        return self.stop - self.start

    def select(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a batch of global ids, the ones this rank owns (batch order kept) and their local
        ids ``id − start`` (indices into this rank's state store)."""
        if ids.ndim != 1:
            raise ValueError(f"ids: expected a 1-D tensor of sample ids, got shape {tuple(ids.shape)}")
        mine = ids[(ids >= self.start) & (ids < self.stop)]
        return mine, mine - self.start

    def rows(self, full: torch.Tensor) -> torch.Tensor:
        """This shard's rows of a tensor indexed by global sample id, shape ``(len, ...)``."""
        if full.shape[0] != self.total:
            raise ValueError(f"full: expected {self.total} rows (one per sample), got {full.shape[0]}")
        return full[self.start:self.stop].clone()


def gather_rows(local: torch.Tensor, shard: Shard, dst: int = 0, group=None) -> torch.Tensor | None:
    """Assemble the ``(N, ...)`` tensor of all ranks' rows on rank ``dst`` (None elsewhere).

    Each rank writes its rows into a zero buffer and the buffers are summed onto ``dst``
    (``dist.reduce``): ``N × row`` numbers, paid at checkpoint time only, never during a sweep.
    """
    if local.shape[0] != len(shard):
        raise ValueError(f"local: expected {len(shard)} rows for shard {shard}, got {local.shape[0]}")
    rank, world = rank_and_world(group)
    if world == 1:
        return local.clone()
    buf = torch.zeros((shard.total, *local.shape[1:]), dtype=local.dtype, device=local.device)
    buf[shard.start:shard.stop] = local
    dist.reduce(buf, dst=dst, op=dist.ReduceOp.SUM, group=group)
    return buf if rank == dst else None


@torch.no_grad()
def broadcast_parameters(params: Sequence[torch.Tensor], src: int = 0, group=None) -> None:
    """Copy rank ``src``'s values of ``params`` to every rank (identical start, in place)."""
    if rank_and_world(group)[1] == 1:
        return
    for p in params:
        dist.broadcast(p.data, src=src, group=group)


@torch.no_grad()
def max_parameter_spread(params: Sequence[torch.Tensor], group=None) -> float:
    """``max_l ‖θ_l − θ_l^{rank 0}‖_∞`` over ranks (0.0 when the replicas agree bitwise)."""
    if rank_and_world(group)[1] == 1:
        return 0.0
    spread = torch.zeros((), dtype=torch.float64, device=params[0].device)
    for p in params:
        ref = p.detach().clone()
        dist.broadcast(ref, src=0, group=group)
        spread = torch.maximum(spread, (p.detach() - ref).abs().max().double())
    dist.all_reduce(spread, op=dist.ReduceOp.MAX, group=group)
    return float(spread)
