"""Layer-parallel lifted training: contiguous stages of layers, one per process (method §2).

Given the states, the W-block of a layer depends only on its input and output states, and the
block of a state only on the layers that write and read it. Split the layers into contiguous
stages ``S_0, …, S_{P−1}`` (:func:`stage_bounds`; layers that share a weight stay in one stage).
Stage ``r`` owns the weights of its layers and the free states they produce; the operator and
the fixed inputs (``y``, ``x_0``) are replicated. One sweep on a batch of ``B`` samples is
**Jacobi across stages** (every stage works at once, on the values its neighbours had at the
start of the sweep) and the solver's usual order inside a stage:

1. *forward exchange*: stage ``r`` sends stage ``r+1`` the states ``h`` it owns that ``S_{r+1}``
   reads (the boundary states), ``B·|h|`` numbers;
2. *backward exchange*: for every boundary state ``s`` it received, stage ``r+1`` returns the
   part of ``s``'s state block that its layers carry, at the sweep's start values,

       g_s = Σ_{c ∈ S_{r+1} reads s as input k} A_{c,k}ᵀ ∇_z P_c(x^{out(c)}, z_c)   (B, *shape_s)
       L_s = Σ_c L_z(P_c) ‖A_{c,k}‖²                                              (one number),

   ``B·|s| + 1`` numbers;
3. every stage runs the solver's state phase on its own free states (producer and local
   consumers as in :class:`~.solvers.LiftedSolver`, plus the frozen ``g_s``, ``L_s`` for its
   boundary states), then its W-step on its own layers (boundary inputs at the sweep's start
   values), and writes its states back. A state phase of several sweeps (``state_sweeps``)
   repeats the stage's own sweep with the boundary values and terms frozen, and ``state_tol``
   tests the stage's part of the state objective.

The transfers overlap the work (:meth:`LayerParallelSolver.step`): the forward message is sent
as soon as the stage has gathered its states, and the backward one is waited for only when the
state phase first reads a boundary term; with the default bottom-up state order that is after
every other state of the stage, so a stage never idles while its successor computes the terms.

Per sweep, each boundary carries ``2·B·Σ_s|s| + n_s`` numbers by point-to-point send/recv, and
one all-reduce of a single number sums the stages' objectives (``step(total=False)`` skips it:
the trainer sums a whole epoch's parts at once, so no rank waits for the others at the end of a
sweep); no weight travels during
training (:meth:`LayerParallelSolver.sync_model` copies them once per epoch, for evaluation and
checkpoints). With a single stage a sweep is exactly the :class:`~.solvers.LiftedSolver` sweep.
On a 2-D :class:`ProcessGrid` (stages × data replicas) each stage is also data parallel: the
sums over samples inside a stage go through the solver's ``reduce_fn`` over the stage's replicas
(:mod:`.distributed`), the boundary messages stay within a replica.

The order does not depend on processes: :class:`StagedSolver` runs all ``P`` stages in one
process, exchanging in memory, and computes what ``P`` processes compute with
:class:`LayerParallelSolver` (the equality the tests check). The per-sample states live with
their stage (``state_init='store'``); a forward pass per batch (``state_init='forward'``, ISGM)
would run the stages one after another and is refused.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .distributed import AllReduce, Shard
from .objective import LiftedObjective
from .solvers import LiftedSolver, StateStore


def _weight_groups(net) -> list[list[int]]:
    """Consecutive runs of layer indices that must stay in one stage: layers reading one tensor
    (e.g. an unrolled network's ``L_k`` in its dual and image layer) join, and so does every
    layer between them."""
    first: dict[int, int] = {}
    reach = list(range(len(net.layers)))    # reach[i]: last layer that shares a weight with i
    for layer in net.layers:
        for p in layer.parameters():
            j = first.setdefault(id(p), layer.index)
            reach[j] = max(reach[j], layer.index)
    groups, start, end = [], 0, -1
    for i in range(len(net.layers)):
        end = max(end, reach[i])
        if i == end:
            groups.append(list(range(start, i + 1)))
            start = i + 1
    return groups


def stage_bounds(net, stages: int) -> list[tuple[int, int]]:
    """``stages`` contiguous layer ranges ``[a_r, b_r)`` covering ``net.layers``, cut only
    between weight groups, with as equal numbers of groups as possible (``ValueError`` when the
    network has fewer groups than stages)."""
    groups = _weight_groups(net)
    if not 1 <= stages <= len(groups):
        raise ValueError(f"layer_parallel: cannot split {len(groups)} weight blocks into {stages} stages")
    cuts = [round(len(groups) * r / stages) for r in range(stages + 1)]
    return [(groups[cuts[r]][0], groups[cuts[r + 1] - 1][-1] + 1) for r in range(stages)]


class StageNetwork:
    """The part of a :class:`~.model.LiftedNetwork` one stage updates: its ``layers``, the free
    states they produce (``free_states``, ``colors`` filtered) and only local ``consumers``; state
    indices, shapes, producers and the fixed inputs are the whole network's."""

    def __init__(self, net, layer_ids: Sequence[int]):
        self.full = net
        self.layers = [net.layers[i] for i in layer_ids]
        local = {layer.index for layer in self.layers}
        own = {layer.output for layer in self.layers}
        self.free_states = [s for s in net.free_states if s in own]
        self.colors = [g for g in ([s for s in group if s in own] for group in net.colors) if g]
        self.consumers = [[(c, k) for c, k in cs if c.index in local] for cs in net.consumers]

    def __getattr__(self, name):
        # shapes, producers, inputs, the weight hook: those of the whole network
        return getattr(self.full, name)


class StageObjective:
    """A :class:`~.objective.LiftedObjective` seen through a :class:`StageNetwork` (the penalties,
    indexed by global layer index, and the epoch schedule stay the whole objective's)."""

    def __init__(self, objective: LiftedObjective, net: StageNetwork):
        self.full = objective
        self.net = net

    def __getattr__(self, name):
        return getattr(self.full, name)


class StageSolver(LiftedSolver):
    """:class:`~.solvers.LiftedSolver` on one stage: the state gradient of a boundary state gains
    the frozen term ``(g_s, L_s)`` its readers in the next stage sent (``boundary_terms``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.boundary_terms: dict[int, tuple[torch.Tensor, float]] = {}
        self.expected_terms: set[int] = set()
        #: called once, the first time a boundary term is read, to deliver the terms that are
        #: still in flight (:meth:`Stage.expect_terms`); None when they are all in place
        self.pending_terms = None

    def resolve_terms(self) -> None:
        """Wait for the boundary terms still in flight, if any, and set them."""
        pending, self.pending_terms = self.pending_terms, None
        if pending is not None:
            pending()

    @torch.no_grad()
    def state_gradient(self, states, s, cache=None):
        # the local part first: the next stage's term may still be on its way (overlap)
        g, lip = super().state_gradient(states, s, cache)
        if self.pending_terms is not None and s in self.expected_terms:
            self.resolve_terms()
        term = self.boundary_terms.get(s)
        if term is not None:
            g.add_(term[0])
            lip += term[1]
        return g, lip


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else None


class Stage:
    """Layers ``[a, b)`` of a lifted objective with their solver, the per-sample states they own
    and the boundary bookkeeping of one sweep (the steps of the module docstring).

    ``receives``: free states read here but owned by the previous stage; ``sends``: states owned
    here that the next stage reads. A state read two or more stages away is refused.
    """

    def __init__(self, objective: LiftedObjective, bounds: Sequence[tuple[int, int]], index: int,
                 solver: str = "bcd", **options):
        net = objective.net
        self.index, self.bounds = index, [tuple(b) for b in bounds]
        a, b = self.bounds[index]
        self.view = StageNetwork(net, range(a, b))
        owner = {}
        for r, (lo, hi) in enumerate(self.bounds):
            for layer in net.layers[lo:hi]:
                owner[layer.output] = r
        for s in net.free_states:
            for c, _ in net.consumers[s]:
                r = next(r for r, (lo, hi) in enumerate(self.bounds) if lo <= c.index < hi)
                if r not in (owner[s], owner[s] + 1):
                    raise ValueError(f"layer_parallel: state {s} (stage {owner[s]}) is read by layer "
                                     f"{c.index} in stage {r}; stages exchange with neighbours only")
        mine = {layer.index for layer in self.view.layers}
        self.receives = [s for s in net.free_states if owner[s] == index - 1
                         and any(c.index in mine for c, _ in net.consumers[s])]
        self.sends = [s for s in self.view.free_states if any(c.index >= b for c, _ in net.consumers[s])]
        if solver == "isgm" or options.get("state_init", "store") != "store":
            raise ValueError("layer_parallel: needs per-sample states (state_init='store', not isgm): "
                             "a forward pass would run the stages one after another")
        self.objective = objective
        self.solver = StageSolver(StageObjective(objective, self.view), solver, **options)
        if self.solver.sweeps_per_batch != 1:
            raise ValueError("sweeps: layer-parallel training runs one sweep per batch")
        self.store: StateStore | None = None
        self._batch: tuple | None = None
        self._hidden: dict | None = None
        self._states: list | None = None
        self._cache: dict = {}
        self._ids = None

    # ---- the per-sample states of this stage --------------------------------------------------
    def init_store(self, x: torch.Tensor) -> None:
        """This stage's states of the forward pass of the training inputs ``x`` (N, *input)."""
        full = StateStore.from_forward(self.objective, x)
        self.store = StateStore({s: full.states[s] for s in self.view.free_states})
        self.samples, self.dtype, self.device = x.shape[0], x.dtype, x.device

    def numel(self, states: Sequence[int], batch: int) -> int:
        return batch * sum(int(torch.Size(self.view.state_shapes[s]).numel()) for s in states)

    # ---- one sweep, in the steps of the module docstring --------------------------------------
    def start(self, x: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor | None:
        """Gather the batch's ``sends`` states and return them, flat: the forward message. The
        stage's other states wait for :meth:`gather`, so the message leaves first."""
        if self.store is None:
            raise ValueError("store: call init_store with the training inputs first")
        self._ids = ids
        self._cache = {}
        self._states = None
        self._batch = (x, target)
        self._hidden = self.store.gather(ids, self.sends)
        return _flat([self._hidden[s] for s in self.sends])

    def gather(self) -> None:
        """Gather the batch's other states (a no-op once done): a rank calls it while its
        forward message travels, and :meth:`take_states` calls it in any case."""
        if self._batch is None:
            return
        (x, target), self._batch = self._batch, None
        rest = [s for s in self.view.free_states if s not in self._hidden]
        self._hidden.update(self.store.gather(self._ids, rest))
        self._states = self.solver.batch_states(x, target, self._hidden)
        self._hidden = None

    def take_states(self, message: torch.Tensor | None) -> None:
        """Place the previous stage's boundary states (its forward message)."""
        self.gather()
        if not self.receives:
            return
        batch = self._states[0].shape[0]
        sizes = [self.numel([s], batch) for s in self.receives]
        for s, part in zip(self.receives, message.split(sizes)):
            self._states[s] = part.view(batch, *self.view.state_shapes[s])

    @torch.no_grad()
    def boundary_terms(self) -> torch.Tensor | None:
        """The backward message: ``g_s`` of every received state, then the ``L_s``."""
        if not self.receives:
            return None
        states, pens = self._states, self.objective.penalties
        grads, lips = [], []
        for s in self.receives:
            g, lip = torch.zeros_like(states[s]), 0.0
            for c, k in self.view.consumers[s]:
                r = pens[c.index].grad_z(c.activation, states[c.output], self.solver._z(c, states, self._cache))
                g.add_(c.input_adjoint(k, r))
                lip += pens[c.index].lipschitz_z(c.activation) * c.input_lipschitz(k)
            grads.append(g)
            lips.append(lip)
        return torch.cat([_flat(grads), torch.tensor(lips, dtype=grads[0].dtype, device=grads[0].device)])

    def expect_terms(self, deliver) -> None:
        """The next stage's message is in flight: ``deliver()`` waits for it and returns it.
        The state phase calls it when it first reads a boundary term, so everything before
        (with the default bottom-up order, every state below the boundary) overlaps the
        transfer and the next stage's work on the message. The values are those
        :meth:`take_terms` would set at once."""
        self.solver.boundary_terms = {}
        self.solver.expected_terms = set(self.sends)
        self.solver.pending_terms = (lambda: self.take_terms(deliver())) if self.sends else None

    def take_terms(self, message: torch.Tensor | None) -> None:
        """Set the frozen ``(g_s, L_s)`` of the ``sends`` states (the next stage's message)."""
        self.solver.boundary_terms = {}
        self.solver.expected_terms = set(self.sends)
        self.solver.pending_terms = None
        if not self.sends:
            return
        batch = self._states[0].shape[0]
        sizes = [self.numel([s], batch) for s in self.sends]
        parts = message.split(sizes + [len(self.sends)])
        lips = parts[-1].tolist()
        for s, g, lip in zip(self.sends, parts[:-1], lips):
            self.solver.boundary_terms[s] = (g.view(batch, *self.view.state_shapes[s]), lip)

    @torch.no_grad()
    def finish(self) -> float:
        """State phase and W-step of this stage; returns its part of the batch objective."""
        states, cache = self._states, self._cache
        self.solver.solve_states(states, cache)
        self.solver.resolve_terms()       # a message no state read still completes this sweep
        value = self.solver.weight_step(states, cache)
        self.store.scatter(self._ids, {s: states[s] for s in self.view.free_states})
        self._states, self._cache = None, {}
        return value

    def message_sizes(self, batch: int) -> tuple[int, int]:
        """(numbers received forward, numbers received backward) per sweep of ``batch`` samples."""
        return self.numel(self.receives, batch), self.numel(self.sends, batch) + len(self.sends)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.solver.flat_params)


class StagedSolver:
    """All stages of :func:`stage_bounds` (or ``bounds``) in one process, in the layer-parallel
    order (module docstring): the reference :class:`LayerParallelSolver` equals."""

    def __init__(self, objective: LiftedObjective, solver: str = "bcd", *, stages: int = 2,
                 bounds: Sequence[tuple[int, int]] | None = None, **options):
        bounds = list(bounds) if bounds is not None else stage_bounds(objective.net, stages)
        self.stages = [Stage(objective, bounds, r, solver, **options) for r in range(len(bounds))]

    def init_store(self, x: torch.Tensor) -> None:
        for st in self.stages:
            st.init_store(x)

    def step(self, x: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None = None) -> float:
        """One sweep; returns the batch objective ``Σ_r`` (stage ``r``'s part)."""
        forward = [st.start(x, target, ids) for st in self.stages]
        for r, st in enumerate(self.stages):
            st.take_states(forward[r - 1] if r > 0 else None)
        backward = [st.boundary_terms() for st in self.stages]
        for r, st in enumerate(self.stages):
            st.take_terms(backward[r + 1] if r + 1 < len(self.stages) else None)
        return sum(st.finish() for st in self.stages)


class PipelineLink:
    """Point-to-point messages between neighbouring ranks of ``group`` (rank ``r`` talks to
    ``r − 1`` and ``r + 1``); ``bytes_sent`` counts the payload this rank sent."""

    def __init__(self, group=None):
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.bytes_sent = 0
        self._sending: list = []

    def _global(self, r: int) -> int:
        return r if self.group is None else dist.get_global_rank(self.group, r)

    def send(self, tensor: torch.Tensor | None, to: int) -> None:
        """Start sending ``tensor`` to rank ``rank + to`` (when that rank exists); :meth:`flush`
        waits for it."""
        if tensor is None or not 0 <= self.rank + to < self.world:
            return
        tensor = tensor.contiguous()
        self._sending.append((dist.isend(tensor, self._global(self.rank + to), self.group), tensor))
        self.bytes_sent += tensor.numel() * tensor.element_size()

    def receive(self, numel: int, source: int, like: torch.Tensor):
        """Start receiving ``numel`` numbers (dtype and device of ``like``) from rank
        ``rank + source``; returns ``wait()``, which blocks until they are here and returns
        them (None when there is nothing to receive)."""
        if not numel or not 0 <= self.rank + source < self.world:
            return lambda: None
        buf = torch.empty(numel, dtype=like.dtype, device=like.device)
        req = dist.irecv(buf, self._global(self.rank + source), self.group)

        def wait() -> torch.Tensor:
            req.wait()
            return buf
        return wait

    def flush(self) -> None:
        """Wait until every message this rank started sending has left."""
        for req, _ in self._sending:
            req.wait()
        self._sending = []


@dataclass(frozen=True)
class ProcessGrid:
    """The world as ``stages × replicas`` ranks, ``rank = replica·stages + stage``: ``pipeline``
    is the group of one replica's stages (neighbouring stages on neighbouring ranks), ``data``
    the group of the ranks that hold one stage (data parallel over sample shards)."""

    stages: int
    replicas: int
    stage: int
    replica: int
    pipeline: object
    data: object

    @classmethod
    def of(cls, stages: int) -> ProcessGrid:
        """Build the groups (a collective: every rank calls it with the same ``stages``)."""
        rank, world = dist.get_rank(), dist.get_world_size()
        if stages < 1 or world % stages:
            raise ValueError(f"stages: {world} ranks do not form a grid of {stages} stages")
        replicas = world // stages
        pipeline = data = None
        for d in range(replicas):
            ranks = [d * stages + r for r in range(stages)]
            group = dist.new_group(ranks)
            pipeline = group if rank in ranks else pipeline
        for r in range(stages):
            ranks = [d * stages + r for d in range(replicas)]
            group = dist.new_group(ranks)
            data = group if rank in ranks else data
        return cls(stages, replicas, rank % stages, rank // stages, pipeline, data)


class LayerParallelSolver:
    """One stage per rank of ``group`` (module docstring); every rank holds the whole model,
    identical at the start, and updates only its stage's weights.

    ``step(x, target, ids)`` is one sweep on a batch every rank is given in full; it returns the
    batch objective summed over the stages (the same number on every rank). ``link.bytes_sent``:
    boundary bytes this rank sent; ``statistics_bytes``: bytes of the objective all-reduces.

    With ``grid`` (a :class:`ProcessGrid`) the stages run over ``grid.pipeline`` and each
    replica owns a contiguous shard of the samples (:class:`~.distributed.Shard`) and their
    states: a sweep works on the batch's samples of its shard, and every sum over samples in the
    stage solver is all-reduced over ``grid.data`` (``comm``), so a sweep equals the sweep of the
    whole batch in the layer-parallel order. A replica whose shard has no sample in the batch
    runs the sweep on a stand-in sample contributing zeros (``AllReduce.absent``).
    """

    def __init__(self, objective: LiftedObjective, solver: str = "bcd", *,
                 bounds: Sequence[tuple[int, int]] | None = None, group=None,
                 grid: ProcessGrid | None = None, **options):
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("layer_parallel: no torch.distributed process group is initialised")
        self.grid, self.comm = grid, None
        if grid is not None:
            group = grid.pipeline
            self.comm = AllReduce(grid.data)
            options = {**options, "reduce_fn": self.comm}
        self.group = group
        self.link = PipelineLink(group)
        bounds = list(bounds) if bounds is not None else stage_bounds(objective.net, self.link.world)
        if len(bounds) != self.link.world:
            raise ValueError(f"bounds: {len(bounds)} stages for {self.link.world} ranks")
        self.bounds = bounds
        self.stage = Stage(objective, bounds, self.link.rank, solver, **options)
        self.solver = self.stage.solver
        self.statistics_bytes = 0
        self.shard: Shard | None = None

    @property
    def rank(self) -> int:
        return self.link.rank

    def init_store(self, x: torch.Tensor) -> None:
        """The states of this rank's stage (and, on a grid, its replica's shard) of the forward
        pass of all training inputs ``x`` (N, *input)."""
        if self.grid is None:
            self.stage.init_store(x)
            return
        self.shard = Shard.of(x.shape[0], self.grid.replica, self.grid.replicas)
        self.stage.init_store(x[self.shard.start:self.shard.stop])

    def step(self, x: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None = None,
             total: bool = True) -> float:
        """One sweep. ``total=False`` returns this stage's part of the batch objective and skips
        the all-reduce that sums the stages: no rank then waits for the others at the end of a
        sweep (a trainer sums the parts once per epoch, :meth:`sum_stages`)."""
        if self.grid is None:
            return self._sweep(x, target, ids, total)
        shard = self.shard
        everyone = torch.arange(x.shape[0], device=x.device) if ids is None else ids
        mine = (everyone >= shard.start) & (everyone < shard.stop)
        if bool(mine.any()):
            return self._sweep(x[mine], target[mine], everyone[mine] - shard.start, total)
        st = self.stage                  # no sample of this shard: a stand-in joins the collectives
        kept = st.store
        st.store = StateStore(kept.gather(torch.zeros(1, dtype=torch.long, device=x.device)))
        self.comm.absent = True
        try:
            return self._sweep(x[:1], target[:1], None, total)
        finally:
            st.store, self.comm.absent = kept, False

    def _sweep(self, x: torch.Tensor, target: torch.Tensor, ids: torch.Tensor | None,
               total: bool = True) -> float:
        st, link = self.stage, self.link
        down = st.start(x, target, ids)
        n_states, n_terms = st.message_sizes(x.shape[0])
        like = target       # messages are states: the target's dtype and device
        # between two neighbours the ops come in the same order on both sides (states r → r+1,
        # then terms r+1 → r): NCCL runs a pair's point-to-point ops in issue order, and a receive
        # of the terms posted before the send of the states would wait for ever
        states_in = link.receive(n_states, -1, like)
        link.send(down, +1)
        terms_in = link.receive(n_terms, +1, like)
        st.gather()                         # the other states, while the message travels
        st.take_states(states_in())
        link.send(st.boundary_terms(), -1)
        # the terms are waited for only when the state phase first reads one (overlap)
        st.expect_terms(terms_in)
        value = st.finish()
        link.flush()
        return self.sum_stages([value])[0] if total else value

    def sum_stages(self, values: Sequence[float]) -> list[float]:
        """Each entry of ``values`` (this stage's parts of some batch objectives) summed over the
        stages: one all-reduce of ``len(values)`` numbers."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.stage.device)
        dist.all_reduce(t, group=self.group)
        self.statistics_bytes += t.numel() * t.element_size()
        return t.tolist()

    @torch.no_grad()
    def sync_model(self) -> None:
        """Copy every stage's weights (and what the weight hook derives from them, e.g. the PNN's
        step sizes) from their owner to all ranks: ``Σ_l |W_l| + |b_l|`` numbers, once per call."""
        net = self.stage.objective.net
        hook = net.weight_hook
        for r, (a, b) in enumerate(self.bounds):
            src = r if self.group is None else dist.get_global_rank(self.group, r)
            params = list({id(p): p for layer in net.layers[a:b] for p in layer.parameters()}.values())
            for p in params:
                dist.broadcast(p.data, src=src, group=self.group)
            if hook is not None:
                snapshot = hook.snapshot(params)
                for t in _tensors(snapshot):
                    dist.broadcast(t, src=src, group=self.group)
                hook.restore(snapshot)

    def gather_states(self) -> dict[int, torch.Tensor]:
        """The per-sample states of every stage, ``{state: (N, *shape)}`` on every rank (on a
        grid, the shards are summed into zero buffers over ``grid.data`` first)."""
        net, st = self.stage.objective.net, self.stage
        n = st.samples if self.shard is None else self.shard.total
        out = {}
        for r, (a, b) in enumerate(self.bounds):
            src = r if self.group is None else dist.get_global_rank(self.group, r)
            for s in [layer.output for layer in net.layers[a:b] if layer.output in net.free_states]:
                if r != self.rank:
                    t = torch.empty((n, *net.state_shapes[s]), dtype=st.dtype, device=st.device)
                elif self.shard is None:
                    t = st.store.states[s]
                else:
                    t = torch.zeros((n, *net.state_shapes[s]), dtype=st.dtype, device=st.device)
                    t[self.shard.start:self.shard.stop] = st.store.states[s]
                    dist.all_reduce(t, group=self.grid.data)
                dist.broadcast(t, src=src, group=self.group)
                out[s] = t
        return out


def _tensors(obj) -> list[torch.Tensor]:
    """The tensors inside nested tuples / lists (a weight hook's snapshot), in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []
