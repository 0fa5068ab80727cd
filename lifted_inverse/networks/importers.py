"""A user's own network as an ``nn.Sequential`` the lifted engine can lift.

Two ways in, besides the project's checkpoints (:mod:`.checkpoint`):

* :func:`load_exported` — a ``torch.export`` program saved with ``torch.export.save`` (a ``.pt2``
  zip archive). ``torch.export.load`` is *not* used: it unpickles weights and sample inputs with
  ``weights_only=False`` (and constants with plain ``pickle``). This reader takes from the archive
  only the graph (JSON, ``models/<name>.json``), the weight table (JSON) and the weights (raw
  little-endian bytes, or a pickled tensor read with ``torch.load(weights_only=True)``). The graph
  must be a chain ``input -> op -> op -> ... -> output`` of the nodes in :data:`SUPPORTED`; each
  becomes the equivalent ``nn`` module (``aten.linear`` -> ``nn.Linear``, ``aten.conv2d`` ->
  ``nn.Conv2d``, ``aten.relu`` -> ``nn.ReLU``, ``aten.flatten`` / ``view`` -> ``nn.Flatten`` /
  ``nn.Unflatten``, ...). Any other node (a skip connection ``aten.add``, ``aten.gelu``,
  batch norm, ...) is a one-line ``ValueError`` naming it.
* :func:`load_factory` — ``package.module:factory`` (imported; ``factory()`` returns the
  ``nn.Module``, or the attribute is the module itself) with weights from a ``.safetensors`` file
  (needs the optional ``safetensors`` package) or a weights-only torch state dict.

Both raise ``ValueError("model: ...")`` / ``ValueError("weights: ...")`` for bad input.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import re
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

#: graph nodes with a lifted form (aten names without the ``torch.ops.aten.`` prefix and overload)
SUPPORTED = ("linear", "conv2d (integer zero padding)", "flatten / unflatten", "view / reshape", "relu",
             "leaky_relu (0 < slope <= 1)", "tanh", "sigmoid", "hardtanh (-c, c)", "softshrink",
             "softmax (dim 1)", "clone / alias / detach / dropout (eval)")
_SUPPORTED_LINE = "supported are " + ", ".join(SUPPORTED)
#: torch.export's ScalarType codes (torch/_export/serde/schema.py) of the float weights we read
_DTYPES = {6: torch.float16, 7: torch.float32, 8: torch.float64, 13: torch.bfloat16}
_PASS_THROUGH = {"clone", "alias", "detach", "dropout", "contiguous", "lift_fresh_copy"}
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` reads as ``package.module:attribute`` (and is not an existing file)."""
    return bool(_FACTORY.match(spec)) and not os.path.exists(spec)


def is_exported_program(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip archive holding a ``torch.export`` graph (``models/*.json``)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(_model_entry(n) for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _model_entry(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 2 and parts[-2] == "models" and parts[-1].endswith(".json")


# ---- torch.export archives ---------------------------------------------------------------------

def _read_payload(z: zipfile.ZipFile, folder: str, meta: dict, what: str) -> torch.Tensor:
    path = f"{folder}{meta['path_name']}"
    data = z.read(path)
    if meta.get("use_pickle"):
        try:
            t = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling refusal is the same bad input
            raise ValueError(f"model: {what} is not a plain tensor (weights_only=True refused it: "
                             f"{str(err).splitlines()[0]})") from None
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"model: {what} is a {type(t).__name__}, not a tensor")
        return t.detach()
    tm = meta.get("tensor_meta") or {}
    dtype = _DTYPES.get(tm.get("dtype"))
    if dtype is None:
        raise ValueError(f"model: {what} has dtype code {tm.get('dtype')}; only float weights are read")
    sizes = [_static(s, what) for s in tm["sizes"]]
    strides = [_static(s, what) for s in tm["strides"]]
    offset = _static(tm.get("storage_offset", {"as_int": 0}), what)
    flat = torch.frombuffer(bytearray(data), dtype=dtype) if data else torch.zeros(0, dtype=dtype)
    try:
        return torch.as_strided(flat, sizes, strides, offset).clone()
    except RuntimeError:
        raise ValueError(f"model: {what}: {len(data)} bytes do not hold a tensor of size {sizes}") from None


def _static(value: dict, what: str) -> int:
    if "as_int" not in value:
        raise ValueError(f"model: {what} has a symbolic size {value}; export with static shapes")
    return int(value["as_int"])


def _archive(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(serialized graph module (JSON), {parameter name: tensor})`` of a .pt2 archive."""
    try:
        z = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ValueError(f"model: no such file {path}") from None
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"model: {path} is not a torch.export archive ({err})") from None
    with z:
        names = z.namelist()
        models = [n for n in names if _model_entry(n)]
        if len(models) != 1:
            raise ValueError(f"model: {path} holds {len(models)} exported programs (models/*.json); "
                             "expected one")
        root = models[0][: -len("models/") - len(Path(models[0]).name)]
        name = Path(models[0]).stem
        order = z.read(f"{root}byteorder").decode().strip() if f"{root}byteorder" in names else "little"
        if order != "little":
            raise ValueError(f"model: {path} stores big-endian weights")
        program = json.loads(z.read(models[0]))
        tensors: dict[str, torch.Tensor] = {}
        for kind in ("weights", "constants"):
            folder = f"{root}data/{kind}/"
            config = f"{folder}{name}_{kind}_config.json"
            legacy = f"{folder}{name}.pt"
            if config in names:
                for fqn, meta in json.loads(z.read(config)).get("config", {}).items():
                    if not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                        raise ValueError(f"model: {fqn} is a custom object ({meta.get('path_name')}); "
                                         "only tensor weights can be read without unpickling")
                    tensors[fqn] = _read_payload(z, folder, meta, fqn)
            elif legacy in names:
                try:
                    table = torch.load(io.BytesIO(z.read(legacy)), map_location="cpu", weights_only=True)
                except Exception as err:  # noqa: BLE001
                    raise ValueError(f"model: {legacy} is not a weights-only table ({err})") from None
                tensors.update({k: v.detach() for k, v in dict(table).items()})
    return program["graph_module"], tensors


def _arg(a: dict):
    """The Python value of a serialized argument (``{"as_int": 3}`` -> 3)."""
    (kind, value), = a.items()
    if kind == "as_tensor":
        return _Ref(value["name"])
    if kind == "as_none":
        return None
    if kind in ("as_int", "as_float", "as_bool", "as_string"):
        return value
    if kind in ("as_ints", "as_floats", "as_bools"):
        return list(value)
    return _Opaque(kind)


class _Ref(str):
    """The name of a tensor in the serialized graph."""


class _Opaque:
    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self):
        return f"<{self.kind}>"


def _per_sample_shape(graph: dict, name: str, node: str) -> tuple[int, ...]:
    meta = graph.get("tensor_values", {}).get(name)
    if meta is None:
        raise ValueError(f"model: node {node}: no shape recorded for {name}")
    return tuple(_static(s, f"node {node}") for s in meta["sizes"][1:])


def _module(op: str, node: str, args: list, kwargs: dict, tensors: dict, shape_in, shape_out):
    """The ``nn`` module of one graph node (None: a node that passes its input through)."""
    def get(i, key, default=None):
        return args[i] if len(args) > i else kwargs.get(key, default)

    if op == "linear":
        w, b = tensors[get(1, "weight")], get(2, "bias")
        m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            if b is not None:
                m.bias.copy_(tensors[b])
        return m
    if op == "conv2d":
        w, b = tensors[get(1, "weight")], get(2, "bias")
        padding = get(4, "padding", [0, 0])
        if isinstance(padding, str):
            raise ValueError(f"model: node {node} (conv2d) has padding {padding!r}; {_SUPPORTED_LINE}")
        groups = int(get(6, "groups", 1))
        m = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=get(3, "stride", 1),
                      padding=padding, dilation=get(5, "dilation", 1), groups=groups,
                      bias=b is not None, dtype=w.dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            if b is not None:
                m.bias.copy_(tensors[b])
        return m
    if op in ("relu", "relu_"):
        return nn.ReLU()
    if op in ("leaky_relu", "leaky_relu_"):
        return nn.LeakyReLU(float(get(1, "negative_slope", 0.01)))
    if op in ("tanh", "tanh_"):
        return nn.Tanh()
    if op in ("sigmoid", "sigmoid_"):
        return nn.Sigmoid()
    if op in ("hardtanh", "hardtanh_"):
        return nn.Hardtanh(float(get(1, "min_val", -1.0)), float(get(2, "max_val", 1.0)))
    if op == "softshrink":
        return nn.Softshrink(float(get(1, "lambd", 0.5)))
    if op in ("softmax", "_softmax"):
        return nn.Softmax(int(get(1, "dim")))
    if op == "flatten":
        return nn.Flatten(int(get(1, "start_dim", 0)), int(get(2, "end_dim", -1)))
    if op == "unflatten":
        return nn.Unflatten(int(get(1, "dim")), tuple(get(2, "sizes")))
    if op in ("view", "reshape", "_unsafe_view"):
        if len(shape_out) == 1:
            return nn.Flatten()
        if len(shape_in) == 1:
            return nn.Unflatten(1, shape_out)
        raise ValueError(f"model: node {node} ({op}) reshapes {shape_in} to {shape_out}; only "
                         f"flattening or unflattening a flat state can be lifted")
    if op in _PASS_THROUGH:
        if op == "dropout" and bool(get(2, "train", False)):
            raise ValueError(f"model: node {node} is dropout in training mode; export the model in eval()")
        return None
    raise ValueError(f"model: layer {node} (aten.{op}) cannot be lifted; {_SUPPORTED_LINE}")


def load_exported(path: str | os.PathLike) -> tuple[nn.Sequential, tuple[int, ...]]:
    """``(nn.Sequential, per-sample input shape)`` of a ``torch.export`` archive, read without
    unpickling anything but tensors (module docstring). The Sequential computes the exported
    graph; ``ValueError("model: ...")`` names the first node that has no lifted form."""
    path = Path(path)
    gm, tensors = _archive(path)
    graph, sig = gm["graph"], gm["signature"]
    params, user_inputs = {}, []
    for spec in sig["input_specs"]:
        (kind, value), = spec.items()
        if kind == "user_input":
            user_inputs.append(_arg(value["arg"]))
        elif kind in ("parameter", "buffer", "tensor_constant"):
            fqn = value.get("parameter_name") or value.get("buffer_name") or value.get("tensor_constant_name")
            if fqn not in tensors:
                raise ValueError(f"model: {path} lacks the weights of {fqn}")
            params[value["arg"]["name"]] = tensors[fqn]
        else:
            raise ValueError(f"model: {path} takes a {kind} input; only tensor inputs and weights can be lifted")
    if len(user_inputs) != 1 or not isinstance(user_inputs[0], _Ref):
        raise ValueError(f"model: {path} takes {len(user_inputs)} inputs; the lifted engine inverts one input tensor")
    current = user_inputs[0]
    input_shape = _per_sample_shape(graph, current, "input")
    modules: list[nn.Module] = []
    for n in graph["nodes"]:
        target = str(n["target"])
        op = target.removeprefix("torch.ops.aten.").split(".")[0] if target.startswith("torch.ops.aten.") \
            else target
        name = n.get("name") or target
        args, kwargs = [], {}
        for i in n["inputs"]:   # kind 1: positional, 2: keyword (ArgumentKind of the schema)
            if i.get("kind", 1) == 1 and not kwargs:
                args.append(_arg(i["arg"]))
            else:
                kwargs[i["name"]] = _arg(i["arg"])
        data = [a for a in args + list(kwargs.values()) if isinstance(a, _Ref) and a not in params]
        if data != [current]:
            raise ValueError(f"model: layer {name} ({target}) reads {', '.join(data) or 'no tensor'} "
                             f"instead of the previous layer's output only (branches and skip "
                             f"connections cannot be lifted from a graph); {_SUPPORTED_LINE}")
        outs = [_arg(o) for o in n["outputs"]]
        if len(outs) != 1 or not isinstance(outs[0], _Ref):
            raise ValueError(f"model: layer {name} ({target}) has {len(outs)} outputs; {_SUPPORTED_LINE}")
        reshape = op in ("view", "reshape", "_unsafe_view")
        shape_in = _per_sample_shape(graph, current, name) if reshape else ()
        shape_out = _per_sample_shape(graph, outs[0], name) if reshape else ()
        m = _module(op, name, args, kwargs, params, shape_in, shape_out)
        if m is not None:
            modules.append(m)
        current = outs[0]
    outputs = [_arg(s["user_output"]["arg"]) for s in sig["output_specs"] if "user_output" in s]
    if outputs != [current] or len(sig["output_specs"]) != 1:
        raise ValueError(f"model: {path} returns {len(sig['output_specs'])} values; the lifted engine "
                         "inverts a single-output chain")
    return nn.Sequential(*modules).eval(), input_shape


# ---- package.module:factory + weights ----------------------------------------------------------

def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights from a ``.safetensors`` file (optional ``safetensors`` package) or a weights-only
    torch file holding a state dict (or ``{"state_dict": ...}``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights: no such file {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError("weights: reading .safetensors needs the safetensors package "
                             "(pip install safetensors), or save a torch state dict") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"weights: {path} is not a safetensors file ({str(err).splitlines()[0]})") from None
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling refusals and corrupt files alike
        raise ValueError(f"weights: {path} is not a weights-only torch file "
                         f"({str(err).splitlines()[0][:200]})") from None
    if isinstance(table, dict) and isinstance(table.get("state_dict"), dict):
        table = table["state_dict"]
    if not isinstance(table, dict) or not all(isinstance(v, torch.Tensor) for v in table.values()):
        raise ValueError(f"weights: {path} does not hold a state dict (names -> tensors)")
    return table


def load_factory(spec: str, weights: str | os.PathLike | None) -> nn.Module:
    """The model ``package.module:attr`` (``attr()`` if it is not a module already) with the
    state dict of ``weights`` loaded strictly (``None``: the factory's own weights). The
    current directory is searched for ``package`` as ``python -m`` would."""
    module_name, _, attr = spec.partition(":")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model: cannot import {module_name} ({err})") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    model = obj if isinstance(obj, nn.Module) else obj() if callable(obj) else obj
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: {spec} gives a {type(model).__name__}, not an nn.Module")
    if weights is not None:
        table = read_state_dict(weights)
        try:
            model.load_state_dict(table, strict=True)
        except RuntimeError as err:
            raise ValueError(f"weights: do not fit {spec}: {' '.join(str(err).split())[:300]}") from None
    return model.eval()
