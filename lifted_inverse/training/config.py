"""One training configuration for every task and method, with layered defaults.

A :class:`TrainConfig` field left at ``None`` is *unset*. :func:`resolve` fills the unset fields
from three layers, later layers winning:

1. :data:`ENGINE_DEFAULTS` (the engine's own values, the same for every task);
2. the task's presets, ``task.presets``: ``{"all": {...}, "lifted": {...}, "backprop": {...},
   (method, solver): {...}}`` applied in that order (a preset of the exact method/solver pair
   wins over the family's);
3. what the caller set (every field not ``None``).

The resolved config records, per field, which layer its value came from (``sources``); it goes
into ``metrics.json`` and the checkpoint. An option that does not apply to the chosen method
(e.g. a state-block option with backprop) is an error naming the option, never silently dropped.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

from ..lifted.penalties import PENALTIES
from ..lifted.solvers import SOLVERS, STATE_INITS, STATE_ORDERS

METHODS = tuple(PENALTIES) + ("backprop",)
BACKPROP_SOLVERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")

#: engine values of the options the caller and the task left unset
ENGINE_DEFAULTS: dict = {
    "method": "bregman", "solver": "adam", "epochs": 20, "batch_size": 64, "seed": 0,
    "state_steps": 1, "state_init": "store", "state_order": "bottom-up", "state_lr": 1.0,
    "state_sweeps": 1, "state_tol": 0.0,
    "lam": 1.0, "rho": 1.0, "tau": 1.0, "inner_sweeps": 3, "momentum": 0.9,
    "power_iterations": 3, "reg_strength": 1e-4, "checkpoint_every": 1, "eval_every": 1,
    "select": "best-val", "lr_schedule": "constant", "fresh_noise": True,
}
#: default step per (family, solver) when neither the task nor the caller gives one
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05, "bcd": 1.0, "nesterov": 1.0, "heavyball": 1.0, "isgm": 1.0}

#: options that only lifted training reads (an error with backprop)
LIFTED_ONLY = ("state_steps", "state_init", "state_order", "state_lr", "state_sweeps", "state_tol",
               "lam", "rho", "tau", "penalty_growth", "penalty_max",
               "inner_sweeps", "momentum", "power_iterations", "batched_layers")
SELECTIONS = ("best-val", "last")
#: options only ISGM reads: its proximal parameter τ ((1/2τ)‖θ − θ^k‖², τ = inf drops the term)
#: and its inner sweeps per mini-batch
ISGM_ONLY = ("tau", "inner_sweeps")


@dataclass
class TrainConfig:
    """Options of one training run; ``None`` means unset (see the module docstring).

    Training length: ``epochs`` and/or ``time_budget`` (seconds of training, evaluation excluded;
    whichever ends first). ``select``: ``'best-val'`` returns the weights of the epoch with the
    best validation metric, ``'last'`` the last ones. ``checkpoint_every``: a checkpoint every N
    epochs and at the end. ``batch_size`` 0 means the full training set.
    """

    method: str | None = None
    solver: str | None = None
    epochs: int | None = None
    time_budget: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_schedule: str | None = None
    seed: int | None = None
    # lifted engine
    state_steps: int | None = None
    state_init: str | None = None
    state_order: str | None = None
    state_lr: float | None = None
    #: state sweeps per state phase at most (an int or 'auto': one per free state), and the
    #: relative decrease of the state objective below which the phase stops (0: never early)
    state_sweeps: int | str | None = None
    state_tol: float | None = None
    #: penalty continuation: the hidden and coupling penalty weights λ, ρ times
    #: ``μ_k = min(penalty_max, penalty_growth^k)`` at epoch k (unset: none, MAC its own schedule)
    penalty_growth: float | None = None
    penalty_max: float | None = None
    lam: float | None = None
    rho: float | None = None
    tau: float | None = None
    inner_sweeps: int | None = None
    momentum: float | None = None
    power_iterations: int | None = None
    batched_layers: bool | None = None
    regularizer: str | None = None
    reg_strength: float | None = None
    # loop
    checkpoint_every: int | None = None
    eval_every: int | None = None
    select: str | None = None
    fresh_noise: bool | None = None
    distributed: bool = False
    #: layer-parallel lifted training (lifted.layer_parallel): the number of stages of layers, one
    #: per rank (0: off); with ``distributed`` the ranks form a grid of stages × data replicas
    layer_parallel: int = 0
    #: where each resolved value came from: 'engine', 'task' or 'user' (filled by resolve)
    sources: dict = field(default_factory=dict)
    reduce_fn: Callable | None = field(default=None, repr=False)

    def user_fields(self) -> dict:
        """The fields the caller set (not None), bookkeeping excluded."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("sources", "reduce_fn", "distributed", "layer_parallel") and getattr(self, f.name) is not None}

    def as_json(self) -> dict:
        d = asdict(self)
        d.pop("reduce_fn")
        return d

    @property
    def lifted(self) -> bool:
        return self.method != "backprop"


def _check_positive_int(name: str, v, allow_zero: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
        raise ValueError(f"{name}: must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")


def _check_positive(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name}: must be a positive finite number, got {v!r}")


def validate(cfg: TrainConfig) -> None:
    """Check every set field's value (unset fields are skipped)."""
    if cfg.method is not None and cfg.method not in METHODS:
        raise ValueError(f"method: unknown {cfg.method!r}; expected one of {list(METHODS)}")
    if cfg.solver is not None and cfg.method is not None:
        allowed = BACKPROP_SOLVERS if cfg.method == "backprop" else SOLVERS
        if cfg.solver not in allowed:
            raise ValueError(f"solver: {cfg.solver!r} is not available for method {cfg.method!r}; "
                             f"expected one of {list(allowed)}")
    for name in ("epochs", "state_steps", "inner_sweeps", "power_iterations", "checkpoint_every",
                 "eval_every"):
        v = getattr(cfg, name)
        if v is not None:
            _check_positive_int(name, v, allow_zero=(name == "epochs"))
    if cfg.batch_size is not None:
        _check_positive_int("batch_size", cfg.batch_size, allow_zero=True)
    if cfg.seed is not None:
        _check_positive_int("seed", cfg.seed, allow_zero=True)
    for name in ("time_budget", "lr", "lam", "rho"):
        v = getattr(cfg, name)
        if v is not None:
            _check_positive(name, v)
    if cfg.tau is not None and (isinstance(cfg.tau, bool) or not cfg.tau > 0):
        raise ValueError(f"tau: must be positive (inf: no proximal term), got {cfg.tau!r}")
    for name in ("penalty_growth", "penalty_max"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not (v >= 1 and math.isfinite(v))):
            raise ValueError(f"{name}: must be a finite number >= 1, got {v!r}")
    if cfg.penalty_max is not None and cfg.penalty_growth is None:
        raise ValueError("penalty_max: caps the continuation; set penalty_growth too")
    if cfg.reg_strength is not None and not (cfg.reg_strength >= 0 and math.isfinite(cfg.reg_strength)):
        raise ValueError(f"reg_strength: must be >= 0 and finite, got {cfg.reg_strength!r}")
    if cfg.state_init is not None and cfg.state_init not in STATE_INITS:
        raise ValueError(f"state_init: expected one of {list(STATE_INITS)}, got {cfg.state_init!r}")
    if cfg.state_order is not None and cfg.state_order not in STATE_ORDERS:
        raise ValueError(f"state_order: expected one of {list(STATE_ORDERS)}, got {cfg.state_order!r}")
    if cfg.state_lr is not None and not 0 < cfg.state_lr < 2:
        raise ValueError(f"state_lr: expected a number in (0, 2) (a descent step), got {cfg.state_lr!r}")
    if cfg.state_sweeps is not None and cfg.state_sweeps != "auto":
        _check_positive_int("state_sweeps", cfg.state_sweeps)
    if cfg.state_tol is not None and (isinstance(cfg.state_tol, bool) or not isinstance(cfg.state_tol, (int, float))
                                      or not (cfg.state_tol >= 0 and math.isfinite(cfg.state_tol))):
        raise ValueError(f"state_tol: must be a finite number >= 0, got {cfg.state_tol!r}")
    if cfg.momentum is not None and not 0 <= cfg.momentum < 1:
        raise ValueError(f"momentum: must lie in [0, 1), got {cfg.momentum!r}")
    if cfg.regularizer is not None and cfg.regularizer not in ("l1", "l2"):
        raise ValueError(f"regularizer: expected 'l1' or 'l2', got {cfg.regularizer!r}")
    if cfg.lr_schedule is not None and cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: expected one of {list(LR_SCHEDULES)}, got {cfg.lr_schedule!r}")
    if cfg.select is not None and cfg.select not in SELECTIONS:
        raise ValueError(f"select: expected one of {list(SELECTIONS)}, got {cfg.select!r}")


def _preset_layers(presets: dict, method: str, solver: str) -> list[dict]:
    family = "backprop" if method == "backprop" else "lifted"
    return [presets.get("all", {}), presets.get(family, {}), presets.get((method, solver), {})]


def resolve(cfg: TrainConfig, presets: dict | None = None, task_name: str = "task") -> TrainConfig:
    """The config with every unset field filled (engine < task presets < caller), checked.

    Raises ``ValueError`` naming the option when the caller set an option that the chosen method
    does not read, or when a value is out of range.
    """
    validate(cfg)
    presets = presets or {}
    user = cfg.user_fields()
    method = user.get("method") or presets.get("all", {}).get("method") or ENGINE_DEFAULTS["method"]
    solver = user.get("solver") or next((layer["solver"] for layer in reversed(
        _preset_layers(presets, method, "")) if "solver" in layer), ENGINE_DEFAULTS["solver"])
    if method == "backprop":
        for name in LIFTED_ONLY:
            if name in user:
                raise ValueError(f"{name}: applies to lifted training only, not --method backprop")
    else:
        for name in ISGM_ONLY:
            if name in user and solver != "isgm":
                raise ValueError(f"{name}: applies to --solver isgm only, not {solver!r}")
        if "momentum" in user and solver not in ("nesterov", "heavyball"):
            raise ValueError(f"momentum: applies to --solver nesterov and heavyball only, not {solver!r}")
        if user.get("regularizer") == "l1":
            raise ValueError("regularizer: l1 is available for lifted training only (backprop: l2 "
                             "as weight decay)")
    values: dict = {}
    sources: dict = {}
    for k, v in ENGINE_DEFAULTS.items():
        values[k], sources[k] = v, "engine"
    for layer in _preset_layers(presets, method, solver):
        for k, v in layer.items():
            values[k], sources[k] = v, "task"
    for k, v in user.items():
        values[k], sources[k] = v, "user"
    values["method"], values["solver"] = method, solver
    if values.get("lr") is None:
        values["lr"], sources["lr"] = DEFAULT_LR[solver], "engine"
    if method == "backprop":            # lifted-only options are not part of a backprop run
        for name in LIFTED_ONLY:
            values.pop(name, None)
            sources.pop(name, None)
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"presets: task {task_name!r} sets unknown options {sorted(unknown)}")
    out = replace(cfg, **values, sources=sources)
    validate(out)
    if out.lr_schedule != "constant" and out.solver not in ("adam", "sgd"):
        raise ValueError(f"lr_schedule: {out.lr_schedule!r} schedules Adam's or SGD's step; solver "
                         f"{out.solver!r} sets its own steps")
    return out
