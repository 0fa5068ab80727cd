"""The one checkpoint format of every trained network: a JSON spec plus tensors.

A checkpoint is one dict written by ``torch.save`` (atomically) and read back with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only and refuses
any other Python object instead of running its code::

    {"format": "lifted_inverse.checkpoint", "version": 1,
     "spec": {"architecture": {...},        # build(spec["architecture"]) re-creates the network
              "description": {              # the task's describe(): what the network is for
                  "task": name, "input_shape": [C, H, W] | [n] | None,
                  "operator": {"name": ..., ...} | None,   # the forward operator's JSON spec
                  ...},                     # task extras, e.g. "encoder_modules": k (the first k
                                            # modules of an autoencoder's Sequential: its encoder)
              "config": {...},              # the resolved training configuration
              "epoch": int | None, "metrics": {...}},
     "model": state_dict,                   # tensors
     "trainer": None | {...}}               # tensors and numbers for an exact resume

``spec`` is pure JSON (checked when written: ``json.dumps`` must accept it).

Architectures (:func:`architecture` / :func:`build`):

* layer lists: ``{"type": "Sequential", "layers": [...]}`` of ``Linear``, ``Conv2d``,
  ``Flatten``, ``Unflatten``, ``ResidualBlock`` (``inner``, ``activation``, ``outer``:
  ``x ↦ x + outer(activation(inner(x)))``), the torch activations ReLU, LeakyReLU, Tanh,
  Sigmoid, Hardtanh, Softshrink, Softmax, Identity, GELU, SiLU, ELU and the lifted proximal
  activations ``{"type": "ProximalActivation", "name": <key of lifted.ACTIVATIONS>, ...}``;
* networks configured by a ``config`` dict: ``{"type": "pnn", **PNN.config}``,
  ``{"type": "unrolled", **UnrolledProximalNet.config}``.

Files in the three legacy formats load too (:data:`LEGACY_FORMATS`): lifted training checkpoints
(weights, trainer state and config as written; no architecture, so no ``model``),
``nn.Sequential`` inversion checkpoints (including ``Residual(body)`` blocks) and PNN / unrolled
checkpoints.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_path
from ..lifted.activations import ACTIVATIONS, Clip, LeakyReLU, ProximalActivation, SoftThreshold
from ..lifted.layers import ResidualBlock
from .pnn import PNN
from .unrolled import UnrolledProximalNet

FORMAT = "lifted_inverse.checkpoint"
VERSION = 1
#: format tags of the legacy files that :func:`load_checkpoint` still reads
LEGACY_FORMATS = {"lifted": "lifted-inverse-checkpoint/1", "sequential": "lifted_inverse.sequential",
                  "unrolled": "lifted_inverse.unrolled/1"}

# ---- architectures ----------------------------------------------------------------------------
#: torch layers stored by their constructor arguments
_ARGS: dict[type, tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features"),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.Unflatten: ("dim", "unflattened_size"),
    nn.ReLU: (), nn.Tanh: (), nn.Sigmoid: (), nn.Identity: (), nn.GELU: (), nn.SiLU: (),
    nn.LeakyReLU: ("negative_slope",), nn.Hardtanh: ("min_val", "max_val"), nn.Softshrink: ("lambd",),
    nn.Softmax: ("dim",), nn.ELU: ("alpha",),
}
_BY_NAME = {cls.__name__: cls for cls in _ARGS}
_PROXIMAL_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}
#: networks rebuilt as ``cls(**config)`` from their ``config`` dict
CONFIGURED: dict[str, type[nn.Module]] = {"pnn": PNN, "unrolled": UnrolledProximalNet}
_CONFIGURED_NAMES = {cls: name for name, cls in CONFIGURED.items()}


def _proximal_spec(act: ProximalActivation) -> dict:
    name = _PROXIMAL_NAMES.get(type(act))
    if name is None:
        raise TypeError(f"model: cannot store activation {act!r}; supported: {sorted(ACTIVATIONS)}")
    spec = {"type": "ProximalActivation", "name": name}
    if isinstance(act, LeakyReLU):
        spec["negative_slope"] = act.negative_slope
    elif isinstance(act, Clip):
        spec["lam"] = act.lam
    elif isinstance(act, SoftThreshold):  # α itself travels in the state dict (raw_alpha)
        spec["alpha"] = float(act.alpha.detach())
        spec["learnable"] = isinstance(act.raw_alpha, nn.Parameter)
    return spec


def architecture(model: nn.Module) -> dict:
    """The JSON spec of ``model`` (see the module docstring); ``TypeError`` naming the first
    module that has none."""
    if isinstance(model, nn.Sequential):
        return {"type": "Sequential", "layers": [architecture(m) for m in model]}
    if isinstance(model, ResidualBlock):
        return {"type": "ResidualBlock", "inner": architecture(model.inner),
                "activation": architecture(model.activation), "outer": architecture(model.outer)}
    if isinstance(model, ProximalActivation):
        return _proximal_spec(model)
    cls = type(model)
    if cls in _CONFIGURED_NAMES:
        return {"type": _CONFIGURED_NAMES[cls], **model.config}
    if cls not in _ARGS:
        raise TypeError(f"model: cannot store layer {model!r}; supported: Sequential, ResidualBlock, "
                        f"ProximalActivation, {', '.join(sorted([*_BY_NAME, *CONFIGURED]))}")
    if cls is nn.Conv2d and model.padding_mode != "zeros":
        raise TypeError(f"model: {model!r}: only zero padding can be stored")
    spec = {"type": cls.__name__}
    spec.update({k: list(v) if isinstance(v, tuple) else v for k, v in
                 ((k, getattr(model, k)) for k in _ARGS[cls])})
    if cls in (nn.Linear, nn.Conv2d):
        spec["bias"] = model.bias is not None
    return spec


def build(spec: dict) -> nn.Module:
    """The network of an :func:`architecture` spec, with fresh parameters; ``ValueError`` for an
    unknown type."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"architecture: expected a dict with a 'type', got {spec!r}")
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k != "type"}
    if kind == "Sequential":
        return nn.Sequential(*[build(s) for s in spec.get("layers", [])])
    if kind == "ResidualBlock":
        return ResidualBlock(build(spec["inner"]), build(spec["activation"]), build(spec["outer"]))
    if kind == "Residual":  # legacy sequential files: Residual(body) blocks
        body = build(spec["body"])
        return ResidualBlock(body[0], body[1], body[2])
    if kind == "ProximalActivation":
        name = args.pop("name", None)
        if name not in ACTIVATIONS:
            raise ValueError(f"architecture: unknown proximal activation {name!r}; "
                             f"supported: {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[name](**args)
    if kind in CONFIGURED:
        return CONFIGURED[kind](**args)
    if kind not in _BY_NAME:
        known = sorted([*_BY_NAME, *CONFIGURED, "Sequential", "ResidualBlock", "ProximalActivation"])
        raise ValueError(f"architecture: unknown layer type {kind!r}; supported: {known}")
    cls = _BY_NAME[kind]
    kwargs = {k: tuple(spec[k]) if isinstance(spec[k], list) else spec[k]
              for k in _ARGS[cls] if k in spec}
    if cls in (nn.Linear, nn.Conv2d):
        kwargs["bias"] = bool(spec.get("bias", True))
    return cls(**kwargs)


def _residual_keys(model: nn.Module, state_dict: dict) -> dict:
    """``state_dict`` of a legacy sequential file with the keys of its ``Residual(body)`` blocks
    renamed for ``model``.

    ``<p>.body.0.*`` → ``<p>.inner.*`` and ``<p>.body.2.*`` → ``<p>.outer.*`` where ``model`` has
    the new key; state of a block activation missing from ``state_dict`` (a buffer such as
    SoftThreshold's α, which ``nn.Softshrink`` did not have) is taken from ``model``, which was
    built from the stored architecture. Other keys pass through unchanged.
    """
    own = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        new = key
        for old, repl in ((".body.0.", ".inner."), (".body.2.", ".outer.")):
            head, sep, tail = ("." + key).rpartition(old)
            if sep and (head + repl + tail)[1:] in own:
                new = (head + repl + tail)[1:]
                break
        out[new] = value
    if any(".body." in "." + k for k in state_dict):
        for key, value in own.items():
            if ".activation." in "." + key and key not in out:
                out[key] = value
    return out


# ---- the file -----------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A checkpoint as read by :func:`load_checkpoint`.

    ``model``: the network built from the spec's architecture with the stored weights (eval mode,
    the weights' dtype and device), None when the file stores no architecture; ``state_dict``:
    the stored weights; ``spec``: the JSON part (see the module docstring; files in legacy
    formats get the same keys); ``trainer_state``: what an exact resume needs (None if absent);
    ``format``: the format tag the file was written in (:data:`FORMAT` or a legacy one).
    """

    path: Path
    model: nn.Module | None
    state_dict: dict
    spec: dict
    trainer_state: dict | None = None
    format: str = FORMAT

    @property
    def architecture(self) -> dict | None:
        return self.spec.get("architecture")

    @property
    def description(self) -> dict:
        """The task description: ``task`` (name), ``input_shape``, ``operator`` and task extras."""
        return self.spec.get("description") or {}

    @property
    def encoder(self) -> nn.Module | None:
        """The network's first ``description["encoder_modules"]`` modules (an autoencoder's
        encoder, up to its code), or the whole network when the task records none."""
        k = self.description.get("encoder_modules")
        return self.model if k is None or self.model is None else self.model[:int(k)]

    @property
    def task(self) -> str | None:
        return self.description.get("task")

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        shape = self.description.get("input_shape")
        return None if shape is None else tuple(int(n) for n in shape)

    @property
    def operator(self) -> dict | None:
        return self.description.get("operator")

    @property
    def config(self) -> dict:
        return self.spec.get("config") or {}

    @property
    def epoch(self) -> int | None:
        return self.spec.get("epoch")

    @property
    def metrics(self) -> dict:
        return self.spec.get("metrics") or {}


def _json_spec(spec: dict) -> dict:
    """``spec`` as pure JSON (tuples become lists); ``TypeError`` naming the offending field."""
    for key, value in spec.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{key}: checkpoint spec must be JSON-serialisable ({err})") from None
    return json.loads(json.dumps(spec))


_PLAIN = (torch.Tensor, int, float, bool, str, type(None))


def _check_plain(value, where: str) -> None:
    """Raise ``TypeError`` unless ``value`` is tensors, numbers, strings and lists / tuples /
    dicts of them (what ``torch.load(weights_only=True)`` reads back)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"{where}: checkpoints store tensors and plain data only, "
                        f"got {type(value).__name__}")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, description: dict | None = None,
                    task: str | None = None, input_shape: Sequence[int] | None = None,
                    operator: dict | None = None, config: dict | None = None, epoch: int | None = None,
                    metrics: dict | None = None, trainer_state: dict | None = None,
                    state_dict: dict | None = None) -> Path:
    """Write ``model`` (its :func:`architecture` and weights) with its spec to ``path``,
    atomically; returns the path.

    ``description``: the task's JSON description (``Task.describe()``: ``task`` name,
    ``input_shape``, ``operator`` spec and task extras such as ``encoder_modules``); ``task``,
    ``input_shape`` and ``operator``, when given, set those entries. ``config``: the resolved
    training configuration. ``trainer_state``: tensors and plain data for an exact resume.
    ``state_dict``: weights to store instead of ``model.state_dict()`` (e.g. the epoch selected
    on validation data). Spec arguments must be JSON-serialisable (``TypeError`` names the first
    that is not).
    """
    description = dict(description or {})
    for key, value in (("task", task), ("input_shape", input_shape), ("operator", operator)):
        if value is not None:
            description[key] = value
    if description.get("input_shape") is not None:
        description["input_shape"] = [int(n) for n in description["input_shape"]]
    spec = _json_spec({"architecture": architecture(model), "description": description,
                       "config": dict(config or {}), "epoch": None if epoch is None else int(epoch),
                       "metrics": dict(metrics or {})})
    if trainer_state is not None:
        _check_plain(trainer_state, "trainer_state")
    weights = model.state_dict() if state_dict is None else state_dict
    payload = {"format": FORMAT, "version": VERSION, "spec": spec,
               "model": {k: v.detach() for k, v in weights.items()}, "trainer": trainer_state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _read(path: Path, map_location, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such checkpoint file {str(path)!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise ValueError(f"{what}: {str(path)!r} refused: it holds the Python object "
                             f"{found.group(1)}, and checkpoints are read as tensors and plain data "
                             f"only (weights_only=True)") from None
        raise ValueError(f"{what}: cannot read {str(path)!r} as a checkpoint") from None
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt files
        raise ValueError(f"{what}: cannot read {str(path)!r} as a checkpoint "
                         f"({type(err).__name__})") from None


def _fields(payload, path: Path, what: str) -> dict:
    """``state_dict``, ``spec``, ``trainer_state`` and ``format`` of a payload in any supported
    format."""
    tag = payload.get("format") if isinstance(payload, dict) else None
    if tag == FORMAT:
        if payload.get("version") != VERSION:
            raise ValueError(f"{what}: {str(path)!r} has checkpoint version {payload.get('version')!r}; "
                             f"this version reads {VERSION}")
        return {"state_dict": payload["model"], "spec": payload["spec"],
                "trainer_state": payload.get("trainer"), "format": tag}
    if tag == LEGACY_FORMATS["lifted"]:
        config = dict(payload["config"])
        return {"state_dict": payload["model"], "format": tag,
                "spec": {"architecture": None, "description": {"task": config.get("task")},
                         "config": config, "epoch": int(payload["epoch"]), "metrics": {}},
                "trainer_state": {k: payload[k] for k in ("solver", "states", "rng", "history")}}
    if tag == LEGACY_FORMATS["sequential"]:
        return {"state_dict": payload["state_dict"], "format": tag,
                "spec": {"architecture": payload["architecture"],
                         "description": {"input_shape": list(payload["input_shape"])},
                         "config": {}, "epoch": None, "metrics": {}}}
    if tag == LEGACY_FORMATS["unrolled"]:
        return {"state_dict": payload["state_dict"], "format": tag,
                "spec": {"architecture": {"type": payload["kind"], **payload["network"]},
                         "description": {"task": payload["task"], "operator": payload["operator"],
                                         "noise": payload["noise"]},
                         "config": {}, "epoch": None, "metrics": payload["metrics"]}}
    raise ValueError(f"{what}: {str(path)!r} is not a lifted-inverse checkpoint (format {tag!r})")


def _network(arch: dict, state_dict: dict, path: Path, what: str, tag: str) -> nn.Module:
    """``build(arch)`` holding ``state_dict`` (its dtype and device), in eval mode. Built with the
    caller's random-number stream left untouched (fresh layers draw initial weights)."""
    try:
        with torch.random.fork_rng(devices=[]):
            model = build(arch)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what}: {str(path)!r}: {err}") from None
    tensors = [t for t in state_dict.values() if isinstance(t, torch.Tensor)]
    floats = [t for t in tensors if t.is_floating_point()]
    if floats:
        model = model.to(dtype=floats[0].dtype)
    try:
        if tag == LEGACY_FORMATS["sequential"]:
            state_dict = _residual_keys(model, state_dict)
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ValueError(f"{what}: the weights in {str(path)!r} do not fit its architecture "
                         f"({detail})") from None
    if tensors:
        model = model.to(device=tensors[0].device)
    return model.eval()


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *,
                    what: str = "checkpoint") -> Checkpoint:
    """Read a checkpoint of any supported format (``torch.load(weights_only=True)``).

    Errors are one line starting with ``what`` (the argument the path came from, e.g.
    ``"--model"``): ``FileNotFoundError`` for a missing file, ``ValueError`` for a file that is
    not a checkpoint, holds Python objects other than tensors and plain data (refused unread), or
    whose architecture is unknown.
    """
    path = Path(path)
    payload = _read(path, map_location, what)
    try:
        fields = _fields(payload, path, what)
    except KeyError as err:
        raise ValueError(f"{what}: {str(path)!r} is a {payload.get('format')} checkpoint without its "
                         f"{err.args[0]!r} entry") from None
    arch = fields["spec"].get("architecture")
    model = None if arch is None else _network(arch, fields["state_dict"], path, what, fields["format"])
    return Checkpoint(path=path, model=model, **fields)


def load_network(path: str | os.PathLike, map_location="cpu", *, what: str = "checkpoint") -> nn.Module:
    """The trained network stored in ``path`` (eval mode); see :func:`load_checkpoint`."""
    ck = load_checkpoint(path, map_location, what=what)
    if ck.model is None:
        raise ValueError(f"{what}: {str(path)!r} stores no architecture (a training checkpoint of an "
                         f"earlier version: weights and trainer state only)")
    return ck.model
