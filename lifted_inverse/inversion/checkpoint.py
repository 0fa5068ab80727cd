"""Safe checkpoints of ``nn.Sequential`` models for inversion: ``{architecture spec, state_dict}``.

``torch.save(model)`` pickles code and cannot be read with ``torch.load(weights_only=True)``
(the safe default); we store plain data instead::

    {"format": "lifted_inverse.sequential", "version": 1,
     "input_shape": [C, H, W] or [n],
     "architecture": [{"type": "Flatten", "start_dim": 1, "end_dim": -1},
                      {"type": "Linear", "in_features": 4096, "out_features": 512, "bias": True},
                      {"type": "ReLU"}, ...],
     "state_dict": model.state_dict()}

Layer types: Linear, Conv2d, Flatten, Unflatten, Sequential (``layers``), ResidualBlock
(``inner``, ``activation``, ``outer``: ``x ↦ x + outer(activation(inner(x)))``, state-dict keys
``inner.*`` / ``outer.*``), the activations ReLU, LeakyReLU, Tanh, Sigmoid, Hardtanh, Softshrink,
Softmax, Identity, GELU, SiLU, ELU (the last three are loadable but have no proximal form, so
inverting them fails clearly) and the lifted proximal activations as
``{"type": "ProximalActivation", "name": <a key of lifted.activations.ACTIVATIONS>, ...}``
(a ResidualBlock's activation is always stored this way).
Files written before residual blocks were unified hold ``{"type": "Residual", "body": Sequential
(linear, activation, linear)}`` with keys ``body.0.*`` / ``body.2.*``; they load as ResidualBlocks.
Written atomically; read with ``weights_only=True``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from ..io import atomic_path
from ..lifted.activations import ACTIVATIONS, Clip, LeakyReLU, ProximalActivation, SoftThreshold
from ..lifted.layers import ResidualBlock
from .layers import Residual

FORMAT = "lifted_inverse.sequential"
VERSION = 1

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


def _proximal_spec(act: ProximalActivation) -> dict:
    """``{"type": "ProximalActivation", "name": ..., <constructor arguments>}`` of ``act``."""
    name = _PROXIMAL_NAMES.get(type(act))
    if name is None:
        raise TypeError(f"model: cannot store activation {act!r}; supported: {sorted(ACTIVATIONS)}")
    spec = {"type": "ProximalActivation", "name": name}
    if isinstance(act, LeakyReLU):
        spec["negative_slope"] = act.negative_slope
    elif isinstance(act, Clip):
        spec["lam"] = act.lam
    elif isinstance(act, SoftThreshold):  # α itself travels in the state dict (raw_alpha)
        spec["alpha"] = float(act.alpha)
        spec["learnable"] = isinstance(act.raw_alpha, nn.Parameter)
    return spec


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def architecture(model: nn.Module) -> dict:
    """The JSON-like spec of ``model`` (see module docstring); ``TypeError`` for unknown layers."""
    if isinstance(model, nn.Sequential):
        return {"type": "Sequential", "layers": [architecture(m) for m in model]}
    if isinstance(model, ResidualBlock):
        return {"type": "ResidualBlock", "inner": architecture(model.inner),
                "activation": architecture(model.activation), "outer": architecture(model.outer)}
    if isinstance(model, ProximalActivation):
        return _proximal_spec(model)
    cls = type(model)
    if cls not in _ARGS:
        raise TypeError(
            f"model: cannot store layer {model!r}; supported: Sequential, ResidualBlock, "
            f"ProximalActivation, "
            f"{', '.join(sorted(_BY_NAME))}"
        )
    spec = {"type": cls.__name__}
    spec.update({k: _plain(getattr(model, k)) for k in _ARGS[cls]})
    if cls in (nn.Linear, nn.Conv2d):
        spec["bias"] = model.bias is not None
    if cls is nn.Conv2d and model.padding_mode != "zeros":
        raise TypeError(f"model: {model!r}: only zero padding can be stored")
    return spec


def build(spec: dict) -> nn.Module:
    """Inverse of :func:`architecture` (fresh, untrained parameters)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"architecture: expected a dict with a 'type', got {spec!r}")
    kind = spec["type"]
    if kind == "Sequential":
        return nn.Sequential(*[build(s) for s in spec.get("layers", [])])
    if kind == "ResidualBlock":
        return ResidualBlock(build(spec["inner"]), build(spec["activation"]), build(spec["outer"]))
    if kind == "Residual":  # files written before the residual blocks were unified
        return Residual(build(spec["body"]))
    if kind == "ProximalActivation":
        name = spec.get("name")
        if name not in ACTIVATIONS:
            raise ValueError(f"architecture: unknown proximal activation {name!r}; "
                             f"supported: {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[name](**{k: v for k, v in spec.items() if k not in ("type", "name")})
    if kind not in _BY_NAME:
        raise ValueError(f"architecture: unknown layer type {kind!r}; supported: {sorted(_BY_NAME)}")
    cls = _BY_NAME[kind]
    kwargs = {k: (tuple(spec[k]) if isinstance(spec[k], list) else spec[k]) for k in _ARGS[cls] if k in spec}
    if cls in (nn.Linear, nn.Conv2d):
        kwargs["bias"] = bool(spec.get("bias", True))
    return cls(**kwargs)


def upgrade_state_dict(model: nn.Module, state_dict: dict) -> dict:
    """``state_dict`` with the keys of former ``Residual(body)`` blocks renamed for ``model``.

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
    legacy = any(".body." in "." + k for k in state_dict)
    if legacy:
        for key, value in own.items():
            if ".activation." in "." + key and key not in out:
                out[key] = value
    return out


def save_checkpoint(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike) -> None:
    """Write ``model`` (an ``nn.Sequential``) and its input shape to ``path`` atomically."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model: expected an nn.Sequential, got {type(model).__name__}")
    payload = {
        "format": FORMAT, "version": VERSION, "input_shape": [int(s) for s in input_shape],
        "architecture": architecture(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[nn.Sequential, tuple[int, ...]]:
    """``(model, input_shape)`` from a checkpoint written by :func:`save_checkpoint`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model: no such checkpoint file: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors have many types
        raise ValueError(
            f"model: {path} is not a readable weights-only checkpoint ({type(err).__name__}); save "
            "models with lifted_inverse.inversion.save_checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"model: {path} is not a {FORMAT} checkpoint (see save_checkpoint)")
    if payload.get("version") != VERSION:
        raise ValueError(f"model: unsupported checkpoint version {payload.get('version')!r}")
    model = build(payload["architecture"])
    if not isinstance(model, nn.Sequential):
        raise ValueError("model: the stored architecture is not a Sequential")
    model.load_state_dict(upgrade_state_dict(model, payload["state_dict"]))
    model.eval().requires_grad_(False)
    return model, tuple(int(s) for s in payload["input_shape"])
