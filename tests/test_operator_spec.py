"""The operator spec (:mod:`lifted_inverse.operators.registry`): build -> spec -> JSON -> build."""
import json
import math

import numpy as np
import pytest
import torch

from lifted_inverse.operators import (
    OPERATOR_NAMES,
    Blur,
    Identity,
    Mask,
    Radon,
    SubsampledFourier,
    diagonal_detectors,
    make_operator,
    operator_from_spec,
    random_mask,
    resolve_spec,
    sampling_mask,
    spec_of,
)
from lifted_inverse.operators.geometry import FanBeamGeometry

SHAPE = (1, 12, 12)

#: every operator name with its defaults and with each parameter set otherwise
SPECS = [
    {"name": "denoise"},
    {"name": "blur"},
    {"name": "blur", "kernel": "motion", "boundary": "zero"},
    {"name": "blur", "kernel": [[0.1, 0.3], [0.0, 0.2], [0.25, -0.05]], "boundary": "zero"},
    {"name": "ct"},
    {"name": "ct", "n_angles": 7, "angle_range": [0.2, 2.0], "n_detectors": 15, "model": "bilinear"},
    {"name": "ct", "angles": [0.1, 0.7, 1.9, 2.8], "method": "matrix_free"},
    {"name": "ct", "geometry": "fan"},
    {"name": "ct", "geometry": "fan", "n_angles": 9, "angle_range": [0.3, 4.0], "n_detectors": 21,
     "detector_spacing": 1.5, "detector_offset": 0.4, "pixel_size": 0.9, "source_origin": 30.0,
     "origin_detector": 12.0, "method": "matrix_free"},
    {"name": "ct", "n_angles": 5, "detector_spacing": 0.7, "detector_offset": -0.2, "pixel_size": 1.2},
    {"name": "inpaint"},
    {"name": "inpaint", "keep": 0.3, "seed": 4},
    {"name": "mri"},
    {"name": "mri", "kind": "radial", "acceleration": 3.0, "center_fraction": 0.2, "seed": 2},
]


def _same_matrix(a, b):
    """Equal matrices up to rounding (a CT spec names the geometry, not sparse vs matrix-free)."""
    assert a.in_shape == b.in_shape and a.out_shape == b.out_shape
    assert torch.allclose(a.dense_matrix(), b.dense_matrix(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=[json.dumps(s)[:60] for s in SPECS])
def test_build_spec_json_build_round_trip(spec):
    shape = (2, 12, 12) if spec["name"] in ("blur", "inpaint", "mri", "denoise") else SHAPE
    op = operator_from_spec(spec, shape)
    out = spec_of(op)
    assert out == resolve_spec(spec, shape)
    assert {k: v for k, v in out.items() if k in spec} == spec  # what was named is kept as named
    again = operator_from_spec(json.loads(json.dumps(out)), shape)
    _same_matrix(op, again)
    assert spec_of(again) == out


def test_every_name_has_a_spec_case():
    assert {s["name"] for s in SPECS} == set(OPERATOR_NAMES)


@pytest.mark.parametrize("op", [
    Identity((2, 5, 6)),
    Blur((1, 9, 10), torch.tensor([[0.1, 0.3], [0.0, 0.2], [0.25, 0.15]], dtype=torch.float64), "zero"),
    Radon((9, 12), n_angles=7, angle_range=(0, 2 * math.pi / 3), n_detectors=15, method="sparse"),
    Radon(12, angles=[0.1, 0.7, 1.9, 2.8], n_detectors=14, method="matrix_free", model="bilinear"),
    Radon(geometry=FanBeamGeometry((9, 12), None, 17, 1.3, 25.0, 10.0, angles=[0.2, 2.0, 4.1],
                                   pixel_size=1.1, detector_offset=-0.3)),
    Mask((2, 9, 10), random_mask((9, 10), 0.6, seed=1)),
    SubsampledFourier((1, 9, 10), sampling_mask((9, 10), "random", 2.0, seed=2)),
], ids=["identity", "blur", "radon-uniform", "radon-angles", "radon-fan", "mask", "fourier"])
def test_directly_built_operators_are_read_back(op):
    spec = json.loads(json.dumps(spec_of(op)))
    _same_matrix(op, operator_from_spec(spec, op.in_shape))


def test_operators_without_a_name_have_no_spec():
    with pytest.raises(TypeError, match="^operator: Composition has no spec"):
        spec_of(Radon(8, n_angles=3) @ Identity((1, 8, 8)))


def test_ct_detectors_span_the_diagonal_unless_named():
    assert diagonal_detectors(128) == 182 == math.ceil(math.sqrt(2) * 128)
    assert diagonal_detectors((20, 30)) == 37
    assert Radon(128, n_angles=3).n_detectors == 182
    assert spec_of(make_operator("ct", (1, 20, 30)))["n_detectors"] == 37
    assert make_operator("ct", (1, 20, 30), n_detectors=25).out_shape == (1, 60, 25)


def test_ct_is_built_the_same_by_the_cli_and_the_imaging_task():
    from lifted_inverse.jobs.reconstruct import build_operator as cli_operator
    from lifted_inverse.training.imaging import build_operator as task_operator

    # the spec the unrolled-ct task and its checkpoints carry, and the one of legacy checkpoints
    task_spec = {"name": "ct", "n_angles": 60}
    legacy = {"name": "ct", "angles": 60, "detectors": "full"}
    shape = (1, 32, 32)
    cli, task = cli_operator("ct", shape, 60), task_operator(task_spec, shape)
    assert spec_of(cli) == spec_of(task) == resolve_spec(task_spec, shape) == resolve_spec(legacy, shape)
    assert cli.out_shape == (1, 60, 46)
    _same_matrix(cli, task)
    # a detector count named by a checkpoint is kept
    assert task_operator({**task_spec, "n_detectors": 40}, shape).out_shape == (1, 60, 40)
    assert task_operator({**legacy, "detectors": 40}, shape).out_shape == (1, 60, 40)
    assert task_operator({"name": "denoise"}, shape) is None


def test_make_operator_takes_tensors_and_records_them():
    k = torch.tensor([[0.0, 1.0], [2.0, 0.5]], dtype=torch.float64)
    op = make_operator("blur", (1, 8, 8), kernel=k, boundary="zero")
    assert spec_of(op)["kernel"] == k.tolist()
    mask = random_mask((8, 8), 0.5, seed=3).bool()
    _same_matrix(make_operator("inpaint", (1, 8, 8), mask=mask),
                 operator_from_spec({"name": "inpaint", "keep": 0.5, "seed": 3}, (1, 8, 8)))
    angles = torch.tensor([0.0, 0.5, 1.5])
    assert spec_of(make_operator("ct", (1, 8, 8), angles=angles))["angles"] == angles.double().tolist()
    # NumPy numbers become Python numbers: the spec stays JSON-able
    spec = spec_of(make_operator("ct", (1, 8, 8), n_angles=np.int64(5), n_detectors=np.int32(9)))
    assert json.loads(json.dumps(spec)) == spec and (spec["n_angles"], spec["n_detectors"]) == (5, 9)


@pytest.mark.parametrize("spec,shape,match", [
    ({"name": "deblur"}, SHAPE, "^name:"),
    ("ct", SHAPE, "^spec:"),
    ({"name": "blur", "sigma": 2}, SHAPE, "^options:"),
    ({"name": "ct"}, (3, 8, 8), "^image_shape:"),
    ({"name": "ct", "angles": 10, "n_angles": 10}, SHAPE, "^options:"),
    ({"name": "ct", "angles": [0.0, 1.0], "n_angles": 10}, SHAPE, "^options:"),
    ({"name": "ct", "detectors": 10, "n_detectors": 10}, SHAPE, "^options:"),
    ({"name": "inpaint", "mask": [[1.0]], "keep": 0.5}, SHAPE, "^options:"),
    ({"name": "denoise"}, (12, 12), "^image_shape:"),
])
def test_bad_specs_name_the_problem(spec, shape, match):
    with pytest.raises(ValueError, match=match):
        operator_from_spec(spec, shape)
