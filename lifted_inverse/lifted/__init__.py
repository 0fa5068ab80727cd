"""The lifted training engine (no imaging knowledge; imports only torch).

* :mod:`.activations`  σ = prox_Ψ with Ψ, prox, F*, Bregman penalty B_Ψ
* :mod:`.penalties`    MAC-QP, Fenchel, lifted Bregman: one ``Penalty`` interface
* :mod:`.layers`       ``ResidualBlock`` (a torch module the engine lifts)
* :mod:`.model`        ``lift(model) -> LiftedNetwork``: the lifted view of a torch model
* :mod:`.unrolled`     lifted layers of unrolled proximal algorithms (PNN dual layers, data step
                       with a fixed operator A, image layers), built by a model's ``lifted_network``
* :mod:`.objective`    ``LiftedObjective`` (per-layer penalties, λ, ρ, homotopy), ``WeightRegularizer``
* :mod:`.inverse`      ``LiftedInversion``: the same objective with the input free (+ αJ), the output
                       fixed to the data and the weights frozen (inversion of a trained network)
* :mod:`.distributed`  data parallel over ``torch.distributed`` (the solvers' ``reduce_fn`` hook)
* :mod:`.solvers`      ``LiftedSolver`` (bcd, nesterov, heavyball, adam, isgm; W-blocks grouped by
                       shared parameter, backtracked steps for layers not affine in their weights),
                       ``StateStore``

A new layer type plugs in by implementing the :class:`LiftedLayer` protocol (``pre_activation``,
``input_adjoint``, ``input_lipschitz``, ``parameters``, ``weight_grad`` and, when affine in its
weights, ``weight_probe``/``weight_gram_apply``) and appending it to ``LiftedNetwork.layers``;
a model with its own lifted form implements ``lifted_network(input_shape=..., operator=...)``.
"""
from .activations import (
    ACTIVATIONS,
    Clip,
    Identity,
    LeakyReLU,
    ProximalActivation,
    ReLU,
    Sigmoid,
    Softmax,
    SoftThreshold,
    Tanh,
    as_proximal,
    make_activation,
)
from .batched import BatchedLiftedSolver, uniform_chain
from .inverse import LiftedInversion
from .layers import ResidualBlock
from .model import (
    AffineLayer,
    LiftedLayer,
    LiftedNetwork,
    LinearMap,
    ResidualView,
    SkipLayer,
    WeightHook,
    lift,
)
from .objective import LiftedObjective, WeightRegularizer
from .penalties import (
    BregmanPenalty,
    FenchelPenalty,
    HomotopySchedule,
    MACPenalty,
    Penalty,
    make_penalty,
)
from .solvers import BACKTRACKING_SOLVERS, SOLVERS, LiftedSolver, StateStore, identity_reduce
from .unrolled import DataStep, DualLayer, ImageLayer, StepSizes, unrolled_network

__all__ = [
    "ACTIVATIONS",
    "BACKTRACKING_SOLVERS",
    "SOLVERS",
    "AffineLayer",
    "BatchedLiftedSolver",
    "BregmanPenalty",
    "Clip",
    "DataStep",
    "DualLayer",
    "FenchelPenalty",
    "HomotopySchedule",
    "Identity",
    "ImageLayer",
    "LeakyReLU",
    "LiftedInversion",
    "LiftedLayer",
    "LiftedNetwork",
    "LiftedObjective",
    "LiftedSolver",
    "LinearMap",
    "MACPenalty",
    "Penalty",
    "ProximalActivation",
    "ReLU",
    "ResidualBlock",
    "ResidualView",
    "Sigmoid",
    "SkipLayer",
    "SoftThreshold",
    "Softmax",
    "StateStore",
    "StepSizes",
    "Tanh",
    "WeightHook",
    "WeightRegularizer",
    "as_proximal",
    "identity_reduce",
    "lift",
    "make_activation",
    "make_penalty",
    "uniform_chain",
    "unrolled_network",
]
