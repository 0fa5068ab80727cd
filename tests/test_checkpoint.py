"""The one checkpoint format (``lifted_inverse.networks.checkpoint``): every network the project
builds round-trips, the spec is JSON, files are written atomically, errors are one line, files in
the legacy formats still load, and a crafted pickle is refused by every loader without running."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from lifted_inverse.cli import main
from lifted_inverse.lifted.activations import Clip, SoftThreshold
from lifted_inverse.lifted.layers import ResidualBlock
from lifted_inverse.lifted.model import lift
from lifted_inverse.networks import (
    architecture,
    build,
    load_checkpoint,
    load_network,
    mlp,
    resnet_conv,
    resnet_mlp,
    save_checkpoint,
)
from lifted_inverse.networks.checkpoint import FORMAT, LEGACY_FORMATS
from lifted_inverse.networks.pnn import PNN
from lifted_inverse.networks.unrolled import UnrolledProximalNet
from lifted_inverse.operators import Blur


def _conv_autoencoder() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 6), nn.Tanh(), nn.Linear(6, 16), nn.Unflatten(1, (1, 4, 4)),
                         nn.Sigmoid())


NETWORKS = {  # name: (network, input batch); forward(x) or forward(y, A)
    "mlp": (lambda: mlp((6, 5, 3)), lambda: torch.randn(3, 6)),
    "resnet_mlp": (lambda: resnet_mlp(6, 5, 2, blocks=2), lambda: torch.randn(3, 6)),
    "resnet_conv": (lambda: resnet_conv(1, 3, 6, 4, blocks=2), lambda: torch.randn(2, 1, 6, 6)),
    "conv_autoencoder": (_conv_autoencoder, lambda: torch.rand(2, 1, 8, 8)),
    "proximal_activations": (lambda: nn.Sequential(
        ResidualBlock(nn.Linear(6, 4), nn.LeakyReLU(0.3), nn.Linear(4, 6)),
        ResidualBlock(nn.Linear(6, 5), SoftThreshold(0.2, learnable=True), nn.Linear(5, 6, bias=False)),
        nn.Linear(6, 3), Clip(0.5)), lambda: torch.randn(4, 6)),
    "pnn": (lambda: PNN(features=3, layers=2, seed=1), lambda: torch.rand(1, 1, 10, 10)),
    "unrolled": (lambda: UnrolledProximalNet(features=3, layers=2, seed=2), lambda: torch.rand(1, 1, 10, 10)),
}


def _apply(net, x):
    with torch.no_grad():
        return net(x, Blur(tuple(x.shape[1:]), "gaussian")) if isinstance(net, UnrolledProximalNet) else net(x)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_round_trips_with_a_json_spec(tmp_path, name):
    torch.manual_seed(0)
    make, batch = NETWORKS[name]
    net, x = make(), batch()
    path = tmp_path / "net.pt"
    save_checkpoint(path, net, task="unit", input_shape=x.shape[1:], operator={"name": "blur"},
                    config={"lr": 1e-3, "widths": (6, 5)}, epoch=3, metrics={"test_psnr": 20.5})
    ck = load_checkpoint(path)
    assert torch.equal(_apply(ck.model, x), _apply(net, x))
    assert not ck.model.training and type(ck.model) is type(net)
    assert ck.task == "unit" and ck.input_shape == tuple(x.shape[1:]) and ck.epoch == 3
    assert ck.operator == {"name": "blur"} and ck.metrics == {"test_psnr": 20.5}
    assert ck.config == {"lr": 1e-3, "widths": [6, 5]} and ck.trainer_state is None
    # the spec is JSON as stored, and the architecture rebuilds the same network
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and json.loads(json.dumps(payload["spec"])) == payload["spec"]
    assert architecture(build(ck.architecture)) == ck.architecture == architecture(net)
    assert torch.equal(_apply(load_network(path), x), _apply(net, x))
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]  # no temporary file left behind


def test_dtype_device_and_selected_weights(tmp_path):
    net = mlp((4, 3, 2)).double()
    other = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    save_checkpoint(tmp_path / "a.pt", net, state_dict=other)
    loaded = load_network(tmp_path / "a.pt")
    assert next(loaded.parameters()).dtype == torch.float64
    assert all(int(torch.count_nonzero(p)) == 0 for p in loaded.parameters())


def test_trainer_state_and_description(tmp_path):
    net = mlp((4, 3, 2))
    state = {"solver": {"lr": 0.1, "moments": [torch.ones(3)]}, "rng": torch.Generator().get_state(),
             "history": [{"epoch": 1, "objective": 0.5}], "states": None}
    save_checkpoint(tmp_path / "a.pt", net, description={"task": "digits-x", "input_shape": (4,), "encoder_modules": 1},
                    trainer_state=state, epoch=1)
    ck = load_checkpoint(tmp_path / "a.pt")
    assert ck.task == "digits-x" and ck.input_shape == (4,) and ck.description["encoder_modules"] == 1
    assert len(ck.encoder) == 1 and torch.equal(ck.encoder[0].weight, net[0].weight)
    assert torch.equal(ck.trainer_state["rng"], state["rng"]) and ck.trainer_state["history"] == state["history"]
    assert torch.equal(ck.trainer_state["solver"]["moments"][0], torch.ones(3))


def test_loading_leaves_the_callers_random_stream_alone(tmp_path):
    """Building the stored architecture draws fresh initial weights; an exact resume needs the
    global generator untouched by it."""
    save_checkpoint(tmp_path / "a.pt", resnet_mlp(6, 8, 2, blocks=3))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(torch.rand(3), expected)


def test_writes_are_atomic_and_spec_must_be_json(tmp_path, monkeypatch):
    path = tmp_path / "net.pt"
    save_checkpoint(path, mlp((4, 3)), epoch=1)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="config: checkpoint spec must be JSON-serialisable"):
        save_checkpoint(path, mlp((4, 3)), config={"device": torch.device("cpu")})
    with pytest.raises(TypeError, match="metrics: checkpoint spec must be JSON"):
        save_checkpoint(path, mlp((4, 3)), metrics={"psnr": torch.tensor(1.0)})
    with pytest.raises(TypeError, match=r"trainer_state\['opt'\]: checkpoints store tensors and plain data only"):
        save_checkpoint(path, mlp((4, 3)), trainer_state={"opt": object()})
    with pytest.raises(TypeError, match="model: cannot store layer"):
        save_checkpoint(path, nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)))

    def crash(obj, f):
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, mlp((4, 3)), epoch=2)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["net.pt"]


def test_errors_are_one_line_naming_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="--model: no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt", what="--model")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint: cannot read .* as a checkpoint$"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a lifted-inverse checkpoint"):
        load_network(tmp_path / "other.pt")
    save_checkpoint(tmp_path / "net.pt", mlp((4, 3)))
    payload = torch.load(tmp_path / "net.pt", weights_only=True)
    for change, message in (
        (lambda p: p["spec"].update(architecture={"type": "Transformer"}), "unknown layer type 'Transformer'"),
        (lambda p: p.update(version=2), "checkpoint version 2; this version reads 1"),
        (lambda p: p["model"].pop("0.bias"), "do not fit its architecture"),
        (lambda p: p.pop("spec"), "is a lifted_inverse.checkpoint checkpoint without its 'spec' entry"),
    ):
        crafted = {**payload, "spec": json.loads(json.dumps(payload["spec"])), "model": dict(payload["model"])}
        change(crafted)
        torch.save(crafted, tmp_path / "crafted.pt")
        with pytest.raises(ValueError, match=message) as info:
            load_checkpoint(tmp_path / "crafted.pt", what="--checkpoint")
        assert str(info.value).startswith("--checkpoint: ") and "\n" not in str(info.value)


# ---- files in the legacy formats ------------------------------------------------------------
def test_reads_former_lifted_training_checkpoints(tmp_path):
    """``lifted/checkpoint.py``: trainer state and config, no architecture (resumable only)."""
    net = mlp((4, 3, 2))
    rng = torch.Generator().manual_seed(5).get_state()
    torch.save({"format": LEGACY_FORMATS["lifted"], "model": net.state_dict(), "solver": {"step": 3},
                "states": {"0": torch.ones(2, 3)}, "rng": rng, "epoch": 2, "history": [{"epoch": 1}, {"epoch": 2}],
                "config": {"method": "bregman", "solver": "bcd", "task": "digits-mlp"}}, tmp_path / "old.pt")
    ck = load_checkpoint(tmp_path / "old.pt")
    assert ck.model is None and ck.task == "digits-mlp" and ck.epoch == 2 and ck.config["solver"] == "bcd"
    assert ck.trainer_state["solver"] == {"step": 3} and torch.equal(ck.trainer_state["rng"], rng)
    assert torch.equal(ck.state_dict["0.weight"], net.state_dict()["0.weight"])
    with pytest.raises(ValueError, match="stores no architecture"):
        load_network(tmp_path / "old.pt")


def test_reads_former_sequential_checkpoints(tmp_path):
    """``inversion/checkpoint.py``: ``{architecture, input_shape, state_dict}``."""
    torch.manual_seed(7)
    net = NETWORKS["proximal_activations"][0]()
    torch.save({"format": LEGACY_FORMATS["sequential"], "version": 1, "input_shape": [6],
                "architecture": architecture(net), "state_dict": net.state_dict()}, tmp_path / "old.pt")
    ck = load_checkpoint(tmp_path / "old.pt")
    x = torch.randn(4, 6)
    assert ck.input_shape == (6,) and torch.equal(_apply(ck.model, x), _apply(net, x))
    assert isinstance(ck.model[1].activation, SoftThreshold)
    assert float(ck.model[1].activation.alpha.detach()) == pytest.approx(0.2)


def test_reads_the_former_residual_format(tmp_path):
    """Sequential files with ``{"type": "Residual", "body": ...}`` and ``body.0.*`` keys still load."""
    torch.manual_seed(8)
    conv = lambda a, b: {"type": "Conv2d", "in_channels": a, "out_channels": b, "kernel_size": [3, 3],
                         "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1,
                         "bias": True}
    body = {"type": "Sequential", "layers": [conv(1, 3), {"type": "Softshrink", "lambd": 0.1}, conv(3, 1)]}
    w = {f"{i}.body.{j}.{p}": torch.randn(s) for i in range(2)
         for j, shapes in ((0, {"weight": (3, 1, 3, 3), "bias": (3,)}), (2, {"weight": (1, 3, 3, 3), "bias": (1,)}))
         for p, s in shapes.items()}
    torch.save({"format": LEGACY_FORMATS["sequential"], "version": 1, "input_shape": [1, 6, 6],
                "architecture": {"type": "Sequential", "layers": [{"type": "Residual", "body": body}] * 2},
                "state_dict": w}, tmp_path / "old.pt")
    ck = load_checkpoint(tmp_path / "old.pt")
    assert ck.input_shape == (1, 6, 6) and all(isinstance(b, ResidualBlock) for b in ck.model)
    x = torch.randn(2, 1, 6, 6)
    expected = x
    for i in range(2):
        h = nn.functional.conv2d(expected, w[f"{i}.body.0.weight"], w[f"{i}.body.0.bias"], padding=1)
        h = nn.functional.softshrink(h, 0.1)
        expected = expected + nn.functional.conv2d(h, w[f"{i}.body.2.weight"], w[f"{i}.body.2.bias"], padding=1)
    assert torch.allclose(_apply(ck.model, x), expected, atol=1e-6)
    assert len(lift(ck.model, ck.input_shape).blocks) == 2      # the loaded blocks lift as residuals


def test_residual_blocks_are_stored_with_their_activation(tmp_path):
    """A ResidualBlock's activation is stored as the proximal activation it is (name, parameters)."""
    net = NETWORKS["proximal_activations"][0]()
    save_checkpoint(tmp_path / "net.pt", net, input_shape=(6,))
    spec = load_checkpoint(tmp_path / "net.pt").architecture["layers"]
    assert spec[0]["type"] == "ResidualBlock"
    assert spec[0]["activation"] == {"type": "ProximalActivation", "name": "leaky_relu",
                                     "negative_slope": pytest.approx(0.3)}
    assert spec[3] == {"type": "ProximalActivation", "name": "clip", "lam": 0.5}


@pytest.mark.parametrize("kind", ["pnn", "unrolled"])
def test_reads_former_unrolled_checkpoints(tmp_path, kind):
    """imaging's ``save_network``: ``{kind, network (config), state_dict, task, operator, noise,
    metrics}``; float64 weights give a float64 network."""
    net = NETWORKS[kind][0]().double()
    torch.save({"format": LEGACY_FORMATS["unrolled"], "kind": kind, "network": dict(net.config),
                "state_dict": net.state_dict(), "task": "unrolled-deblur", "operator": {"name": "blur"},
                "noise": {"sigma": 0.02, "relative": False}, "metrics": {"test_psnr": 30.0}}, tmp_path / "old.pt")
    ck = load_checkpoint(tmp_path / "old.pt")
    x = torch.rand(1, 1, 10, 10, dtype=torch.float64)
    assert torch.equal(_apply(ck.model, x), _apply(net, x))
    assert ck.task == "unrolled-deblur" and ck.operator == {"name": "blur"} and ck.metrics["test_psnr"] == 30.0
    assert ck.description["noise"]["sigma"] == 0.02


def test_reconstruct_applies_unrolled_checkpoints_and_names_the_others(tmp_path, capsys):
    """``reconstruct --method unrolled --checkpoint``: a PNN / unrolled network in the checkpoint format
    or in imaging's legacy one runs; a Sequential network is one line and exit 2."""
    net = UnrolledProximalNet(features=2, layers=2, seed=3)
    save_checkpoint(tmp_path / "new.pt", net, task="unrolled-deblur", operator={"name": "blur"})
    torch.save({"format": LEGACY_FORMATS["unrolled"], "kind": "unrolled", "network": dict(net.config),
                "state_dict": net.state_dict(), "task": "unrolled-deblur", "operator": {"name": "blur"},
                "noise": {"sigma": 0.02, "relative": False}, "metrics": {}}, tmp_path / "old.pt")
    psnr = []
    for name in ("new.pt", "old.pt"):
        out = tmp_path / name.replace(".pt", "")
        assert main(["reconstruct", "--method", "unrolled", "--operator", "blur", "--size", "16",
                     "--checkpoint", str(tmp_path / name), "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["task"] == "unrolled-deblur"
        psnr.append(metrics["psnr"])
    assert psnr[0] == psnr[1]
    save_checkpoint(tmp_path / "mlp.pt", mlp((4, 3)))
    assert main(["reconstruct", "--method", "unrolled", "--operator", "blur", "--size", "16",
                 "--checkpoint", str(tmp_path / "mlp.pt"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint:" in err and "holds a Sequential network" in err and err.count("\n") == 1
    save_checkpoint(tmp_path / "bare.pt", net)
    assert main(["reconstruct", "--method", "unrolled", "--operator", "blur", "--size", "16",
                 "--checkpoint", str(tmp_path / "bare.pt"), "--out", str(tmp_path / "y")]) == 2
    assert "does not record the operator" in capsys.readouterr().err


def test_pretrained_cache_files_are_checkpoints(tmp_path, monkeypatch):
    """``pretrained.encoder(cache_dir=...)`` keeps the trained encoder as a checkpoint and reads
    it back instead of training again."""
    from lifted_inverse.inversion import pretrained

    first = pretrained.encoder(code=5, seed=3, steps=2, cache_dir=tmp_path)
    path = tmp_path / "encoder-5-3-2.checkpoint.pt"
    ck = load_checkpoint(path)
    assert ck.task == "pretrained-encoder" and ck.input_shape == (1, 16, 16)
    assert ck.config == {"code": 5, "seed": 3, "steps": 2}
    pretrained._MEMORY.pop(("encoder", 5, 3, 2))
    monkeypatch.setattr(pretrained, "digits", lambda *a, **k: pytest.fail("trained again"))
    again = pretrained.encoder(code=5, seed=3, steps=2, cache_dir=tmp_path)
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(_apply(again, x), _apply(first, x))


# ---- a crafted pickle is refused by every loader, unrun ---------------------------------------
class _Payload:
    """Unpickling this object calls ``open(marker, "w")``: a file appears if the code runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def crafted(tmp_path):
    """``(path, marker)``: a checkpoint-shaped file whose trainer state would run code when unpickled."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.checkpoint.pt"
    save_checkpoint(path, mlp((64, 8)), description={"task": "digits-mlp", "input_shape": [64]})
    payload = torch.load(path, weights_only=True)
    payload["trainer"] = {"step": _Payload(marker)}
    torch.save(payload, path)
    assert not marker.exists()
    return path, marker


def test_a_crafted_pickle_is_refused_by_every_loader(tmp_path, crafted, capsys):
    path, marker = crafted
    for load in (load_checkpoint, load_network):
        with pytest.raises(ValueError, match="refused: it holds the Python object .*open"):
            load(path)
    out = tmp_path / "out"
    for argv in (["invert", "--model", str(path), "--out", str(out)],
                 ["reconstruct", "--method", "unrolled", "--operator", "blur", "--size", "16",
                  "--checkpoint", str(path), "--out", str(out)],
                 ["train", "--task", "digits-mlp", "--epochs", "1", "--resume", str(path), "--out", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "refused" in err and err.count("\n") == 1, argv
    from lifted_inverse.inversion import pretrained

    cache = tmp_path / "cache"
    cache.mkdir()
    os.replace(path, cache / "encoder-7-11-1.checkpoint.pt")  # arguments no other test trains with
    with pytest.raises(ValueError, match="cache_dir: .* refused"):
        pretrained.encoder(code=7, seed=11, steps=1, cache_dir=cache)
    assert not marker.exists()
