"""The ``reconstruct`` job: reconstruct images from measurements, simulated or the user's own.

Two sources of the measurement ``y``:

* simulate (``image``): image -> operator -> Gaussian noise, in float32 exactly as
  ``lifted-inverse data`` makes its files (so a file written by ``data`` and read back with
  ``measurement`` gives the same ``y``), then reconstructed in float64; for CT with ``photons``
  (or a scanner's ``dose`` level) the noise is transmission Poisson noise instead: counts
  ``n ~ Poisson(I_0 exp(-μ Ax))`` and the post-log line integrals ``y = -log(n / I_0) / μ``
  (:class:`~lifted_inverse.operators.noise.TransmissionPoissonNoise`, ``μ = attenuation``);
* read (``measurement``): a file of one measurement or a stack (:mod:`lifted_inverse.datasets.measurements`):
  this project's ``data`` files (operator and noise from the file), deepinv-style or
  LoDoPaB-CT-style HDF5, ``.npy``, ``.npz``, TIFF (operator from the options: ``operator``,
  ``size``, and for CT ``angles`` / ``angles_file`` + ``angle_unit``, ``detectors``, ``layout``);
  a ``data`` file with transmission noise brings its pre-log ``counts`` too.
  ``ground_truth`` (optional) gives the reference for the metrics; without one no metric is computed.

Samples are reconstructed ``batch_size`` at a time (the solvers are batched, each sample with its
own step sizes, ``alpha`` and stopping test). Output (each file written atomically):
``OUT/metrics.json`` (quality figures where a reference exists: ``psnr`` / ``ssim`` with the
fixed range [0, 1] (references within [0, 1] only) and ``psnr_gt_range`` / ``ssim_gt_range``
with ``max(gt) - min(gt)``, means over the samples with the values under ``per_sample``; solver
information; ``config``: every
option after defaults, with its source), ``OUT/reconstruction.png`` (one row per sample, at most
:data:`PLOT_ROWS`), ``OUT/result.h5`` (reconstructions, measurements, ground truth when known,
provenance). An option that does not apply is a ``ValueError`` naming it.
A new method is one entry in :data:`METHODS`: ``func(operator, y, config, context) -> (x, info)``.

CT geometry: ``geometry`` (``parallel``: :mod:`~lifted_inverse.operators.registry`'s default
``'ct'`` operator; ``fan``: its fan-beam default, a flat detector, ``angles`` over ``[0, 2π)``) or
a named ``scanner`` preset (:mod:`lifted_inverse.operators.scanners`; ``angles`` overrides its
count). The operator spec is recorded in ``result.h5`` (``operator``).

Transmission data (counts known): TV minimises the penalised weighted least squares
``½ ‖√w ⊙ (Ax − y)‖² + α TV(x)`` with ``w = pwls_weights(n, μ, normalize=True)``
(``w_i = n_i / mean(n)``, :func:`~lifted_inverse.operators.noise.pwls_weights`) unless
``weighting`` is ``none``. The noise level of the default-``alpha`` rule is then, per sample,
``σ = 1 / sqrt(mean(μ² n))``: ``Var(y_i) ≈ 1/(μ² n_i)`` (delta method), so every weighted
residual ``√w_i (y_i − (Ax)_i)`` has variance ``w_i / (μ² n_i) = 1 / mean(μ² n)``. Unweighted
(FBP's data, Tikhonov, TV with ``weighting`` ``none``) it is the rms of the per-ray standard
deviations, ``σ = sqrt(mean(1 / (μ² max(n, 1))))``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..datasets._util import NORMALIZATIONS
from ..datasets.hdf5 import describe_noise, operator_record, write_arrays
from ..io import strict_json, write_json
from ..operators.base import LinearOperator
from ..operators.scanners import SCANNER_NAMES
from ..runtime import checked_device, show_progress
from ._common import check_min, config_record, load_named_image, noise_rule, refuse

OPERATORS = ("denoise", "blur", "ct")
GEOMETRIES = ("parallel", "fan")
WEIGHTINGS = ("pwls", "none")
#: options of transmission (low-dose CT) noise, simulated with ``photons`` or ``dose``
TRANSMISSION_OPTIONS = ("photons", "dose", "attenuation")
#: ``μ`` of transmission noise: image values are read as attenuation relative to water, whose
#: coefficient is about 0.02 per mm at CT energies (0.19 /cm at 70 keV); lengths are in the
#: geometry's unit (mm for the ``lidc`` scanner, a pixel for the default geometries), so a body of
#: 100-300 units gives optical depths ``μ ∫x`` of a few units, as in clinical CT
DEFAULT_ATTENUATION = 0.02
ITERATIVE = ("tikhonov", "tv")
LAYOUTS = ("angles-detectors", "detectors-angles")
#: options of the read source only / of the simulated source only
MEASUREMENT_OPTIONS = ("key", "index", "layout", "angles_file", "angle_unit", "detectors", "ground_truth",
                       "batch_size")
SIMULATE_OPTIONS = ("image", "seed", "normalize")
#: geometry options a ``lifted-inverse data`` file records itself
FILE_GEOMETRY = ("size", "angles", "angles_file", "angle_unit", "detectors", "layout", "geometry", "scanner")
PLOT_ROWS = 8
#: values of the options left unset (None); ``noise`` follows :func:`noise_rule` (simulated) or
#: the file (read), ``alpha`` :func:`lifted_inverse.reconstruction.default_alpha`; ``iterations``
#: and ``tol`` per iterative method (TV: relative primal-dual gap, Tikhonov: relative residual);
#: ``size`` of a read CT sinogram: its detector count (skimage's ``circle=True``)
#: ``size`` None: no resizing (phantoms are ``PHANTOM_SIZE`` wide); ``normalize`` "none": an image
#: file's values as stored (:func:`~._common.load_named_image`); ``progress`` None: bars when stderr
#: is a terminal (:func:`lifted_inverse.runtime.show_progress`)
DEFAULTS = {"operator": "ct", "method": "tv", "image": "shepp_logan", "size": None, "normalize": "none",
            "noise_type": "auto",
            "seed": 0, "device": "cpu", "angles": 60, "filter": "ramp", "progress": None,
            "layout": "angles-detectors", "batch_size": 16}
ITERATION_DEFAULTS = {"tv": {"iterations": 5000, "tol": 1e-3}, "tikhonov": {"iterations": 2000, "tol": 1e-6}}


@dataclass
class ReconstructOptions:
    """Options of one reconstruction; None takes :data:`DEFAULTS` where the option applies."""
    operator: str | None = None
    method: str | None = None
    image: str | None = None
    measurement: str | Path | None = None
    key: str | None = None
    index: int | None = None
    layout: str | None = None
    angles_file: str | Path | None = None
    angle_unit: str | None = None
    detectors: int | None = None
    ground_truth: str | Path | None = None
    batch_size: int | None = None
    size: int | None = None
    normalize: str | None = None
    noise: float | None = None
    noise_type: str | None = None
    alpha: float | None = None
    iterations: int | None = None
    tol: float | None = None
    seed: int | None = None
    angles: int | None = None
    filter: str | None = None
    checkpoint: str | Path | None = None
    device: str | None = None
    progress: bool | None = None
    geometry: str | None = None
    scanner: str | None = None
    photons: float | None = None
    dose: str | None = None
    attenuation: float | None = None
    weighting: str | None = None


def build_operator(name: str, shape, angles: int | None = None, ct: dict | None = None) -> LinearOperator:
    """The registry's operator ``name`` for images of ``shape`` (``angles``: the CT angle count;
    ``ct``: further CT spec entries, e.g. explicit ``angles`` in radians, ``n_detectors``)."""
    from ..operators.registry import make_operator

    options = dict(ct or {}) if name == "ct" else {}
    if name == "ct" and angles is not None and "angles" not in options:
        options["n_angles"] = angles
    return make_operator(name, shape, **options)


def noise_std(y: torch.Tensor, level: float, relative: bool) -> torch.Tensor:
    """Per-sample absolute standard deviation ``sigma_b`` (B,) of Gaussian noise of ``level``:
    ``level`` itself, or, relative to ``rms(A x_b)``, ``level rms(y_b) / sqrt(1 + level^2)``
    (``E rms(y)^2 = rms(Ax)^2 (1 + level^2)``; the same rule for simulated and read measurements,
    so both give the same default ``alpha``)."""
    b = y.shape[0]
    if not relative:
        return torch.full((b,), float(level), dtype=torch.float64)
    rms = y.detach().double().flatten(1).pow(2).mean(1).sqrt().cpu()
    return level * rms / math.sqrt(1.0 + level ** 2)


def resolve(options: ReconstructOptions) -> dict:
    """Every option after defaults (``noise`` and ``noise_relative`` by :func:`noise_rule` for a
    simulated measurement); raises ``ValueError`` naming an option that is out of range or does
    not apply. For a read measurement the file-dependent checks are :func:`load_problem`'s."""
    measured = options.measurement is not None
    method = options.method or DEFAULTS["method"]

    def get(k):
        if getattr(options, k) is not None:
            return getattr(options, k)
        if k in ("iterations", "tol"):
            return ITERATION_DEFAULTS[method][k]
        return DEFAULTS.get(k)

    operator = get("operator")
    if operator not in OPERATORS:
        raise ValueError(f"operator: expected one of {', '.join(OPERATORS)}, got {operator!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(sorted(METHODS))}, got {method!r}")
    if method == "fbp" and operator != "ct":
        raise ValueError(f"method: fbp only for --operator ct, got --operator {operator}")
    if measured:
        refuse(options, SIMULATE_OPTIONS, "an option of a simulated measurement (--image), not of --measurement")
    else:
        refuse(options, MEASUREMENT_OPTIONS, "an option of --measurement (a file of measurements)")
    if operator != "ct":
        refuse(options, ("angles", "angles_file", "angle_unit", "detectors", "layout"),
               f"a CT geometry option; --operator {operator} has none")
    if options.angles is not None and options.angles_file is not None:
        raise ValueError("angles: give --angles N or --angles-file F, not both")
    if options.angles_file is not None and options.angle_unit is None:
        raise ValueError("angle_unit: --angles-file needs --angle-unit deg or rad (skimage's theta is in "
                         "degrees, ASTRA's in radians)")
    if options.angle_unit is not None and options.angles_file is None:
        raise ValueError("angle_unit: the unit of --angles-file, which is not given")
    if options.angle_unit not in (None, "deg", "rad"):
        raise ValueError(f"angle_unit: expected deg or rad, got {options.angle_unit!r}")
    if options.layout is not None and options.layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {options.layout!r}")
    if method != "fbp":
        refuse(options, ("filter",), f"the FBP filter; --method {method} does not filter")
    if method != "unrolled":
        refuse(options, ("checkpoint",), f"a trained network for --method unrolled, not {method}")
    elif options.checkpoint is None:
        raise ValueError("checkpoint: --method unrolled needs a trained network (lifted-inverse train "
                         "--task pnn-denoise|unrolled-deblur|unrolled-ct writes OUT/checkpoint.pt)")
    if method not in ITERATIVE:
        # with --measurement, progress also shows the bar over the samples
        refuse(options, ("alpha", "iterations", "tol") + (() if measured else ("progress",)),
               f"an option of the iterative solvers ({', '.join(ITERATIVE)}), not of --method {method}")
    check_min("size", options.size, 16)
    check_min("iterations", options.iterations, 1)
    check_min("angles", options.angles, 1)
    check_min("detectors", options.detectors, 1)
    check_min("index", options.index, 0)
    check_min("batch_size", options.batch_size, 1)
    check_min("alpha", options.alpha, 0)
    if options.tol is not None and not options.tol > 0:
        raise ValueError(f"tol: expected > 0, got {options.tol}")
    keep = {"operator": operator, "method": method, "device": get("device")}
    if measured:
        keep["noise"], keep["noise_relative"] = None, None
        if options.noise is not None:
            keep["noise"], keep["noise_relative"] = noise_rule(operator, options.noise, get("noise_type"))
        keep["noise_type"] = get("noise_type")
        for k in ("measurement", "key", "index", "ground_truth", "angles_file", "angle_unit", "detectors"):
            keep[k] = None if getattr(options, k) is None else _plain(getattr(options, k))
        keep["batch_size"] = get("batch_size")
        keep["size"] = options.size
        if operator == "ct":
            keep["layout"] = get("layout")
            keep["angles"] = options.angles
    else:
        level, relative = noise_rule(operator, options.noise, get("noise_type"))
        keep.update(noise=level, noise_relative=relative)
        for k in ("image", "size", "normalize", "noise_type", "seed"):
            keep[k] = get(k)
        if keep["normalize"] not in NORMALIZATIONS:
            raise ValueError(f"normalize: expected one of {', '.join(NORMALIZATIONS)}, got {keep['normalize']!r}")
        if operator == "ct":
            keep["angles"] = get("angles")
    if method == "fbp":
        keep["filter"] = get("filter")
    if method in ITERATIVE:
        keep.update(iterations=get("iterations"), tol=get("tol"), progress=show_progress(options.progress))
    elif measured:
        keep["progress"] = show_progress(options.progress)
    keep.update(resolve_ct(options, operator, method, measured))
    return keep


def _positive(name: str, value) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {value}")


def resolve_ct(options: ReconstructOptions, operator: str, method: str, measured: bool) -> dict:
    """The CT geometry (``geometry`` / ``scanner``, the scanner's ``angles`` unless given) and
    transmission-noise entries (``photons``, ``dose``, ``attenuation``, ``weighting``) of the
    config; ``ValueError`` naming an option that does not apply."""
    from ..operators.scanners import SCANNERS, scanner_spec

    if operator != "ct":
        refuse(options, ("geometry", "scanner", *TRANSMISSION_OPTIONS, "weighting"),
               f"a CT option; --operator {operator} has none")
        return {}
    if options.geometry is not None and options.scanner is not None:
        raise ValueError("scanner: give --scanner NAME or --geometry KIND, not both (a scanner fixes its geometry)")
    if options.geometry is not None and options.geometry not in GEOMETRIES:
        raise ValueError(f"geometry: expected one of {', '.join(GEOMETRIES)}, got {options.geometry!r}")
    if options.scanner is not None and options.scanner not in SCANNER_NAMES:
        raise ValueError(f"scanner: expected one of {', '.join(SCANNER_NAMES)}, got {options.scanner!r}")
    if method == "unrolled":
        refuse(options, ("geometry", "scanner"), "the checkpoint of --method unrolled records the scanner "
                                                 "the network was trained for")
    if measured:
        refuse(options, TRANSMISSION_OPTIONS, "transmission noise of a simulated measurement; a data file "
                                              "with transmission noise brings its counts")
    if options.photons is not None and options.dose is not None:
        raise ValueError("dose: give --photons I0 or --dose LEVEL, not both")
    transmission = options.photons is not None or options.dose is not None
    if transmission:
        flag = "--photons" if options.photons is not None else "--dose"
        refuse(options, ("noise", "noise_type"), f"Gaussian noise; {flag} simulates transmission Poisson noise")
    else:
        refuse(options, ("attenuation",), "the attenuation of transmission noise, simulated with --photons "
                                          "or --dose")
        if not measured:
            refuse(options, ("weighting",), "the data-term weights of transmission data (--photons or --dose)")
    if method != "tv":
        refuse(options, ("weighting",), f"the data-term weights of --method tv, not {method}")
    if options.weighting is not None and options.weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {', '.join(WEIGHTINGS)}, got {options.weighting!r}")
    _positive("photons", options.photons)
    _positive("attenuation", options.attenuation)
    keep = {"geometry": None if options.scanner else (options.geometry or "parallel"), "scanner": options.scanner}
    if options.scanner is not None and options.angles is None and not measured:
        keep["angles"] = scanner_spec(options.scanner, 16)["n_angles"]
    photons = options.photons
    if options.dose is not None:
        levels = SCANNERS[options.scanner].photon_counts if options.scanner else {}
        if options.dose not in levels:
            known = f"{options.scanner}'s levels are {', '.join(levels)}" if levels else (
                f"scanner {options.scanner} has none" if options.scanner else "give --scanner NAME")
            raise ValueError(f"dose: a dose level of the scanner ({known}), got {options.dose!r}")
        photons = levels[options.dose]
    if transmission:
        keep.update(photons=photons, dose=options.dose,
                    attenuation=options.attenuation or DEFAULT_ATTENUATION, noise=None, noise_relative=None,
                    noise_type=None)
    if method == "tv":
        keep["weighting"] = options.weighting or ("pwls" if transmission else None)
    return keep


def _plain(value):
    return str(value) if isinstance(value, Path) else value


def _load_unrolled(path, operator: str) -> tuple:
    """``(network, header)`` of the checkpoint for ``--method unrolled`` (read once), a network
    trained for ``operator``."""
    from ..networks.checkpoint import load_checkpoint

    ck = load_checkpoint(path, what="--checkpoint")
    kind = (ck.architecture or {}).get("type")
    if kind not in ("pnn", "unrolled"):
        held = f"a {kind} network" if kind else "no network architecture"
        raise ValueError(f"checkpoint: {path} holds {held}; --method unrolled applies a PNN "
                         "or unrolled network (lifted-inverse train --task pnn-denoise|unrolled-deblur|"
                         "unrolled-ct)")
    if ck.operator is None:
        raise ValueError(f"checkpoint: {path} does not record the operator the network was trained for")
    trained_for = ck.operator.get("name")
    if trained_for != operator:
        raise ValueError(f"operator: the checkpoint was trained for {trained_for!r}, got {operator!r}")
    return ck.model, {"task": ck.task, "kind": kind, "operator": ck.operator}


def ct_spec(geometry: str | None, scanner: str | None, angles: int | None, shape) -> dict:
    """The ``'ct'`` operator spec for images of ``shape`` ``(1, H, W)``: scanner preset ``scanner``
    (square images; ``angles`` replaces its angle count when given), else the registry's default
    of ``geometry`` (``parallel`` or ``fan``) with ``angles`` angles (the registry's default
    count when None)."""
    from ..operators.scanners import scanner_spec

    if scanner is not None:
        if shape[-1] != shape[-2]:
            raise ValueError(f"scanner: a scanner preset images square fields, got {shape[-2]} x {shape[-1]} "
                             "pixels (give --size N)")
        spec = scanner_spec(scanner, int(shape[-1]))
        if angles is not None:
            spec["n_angles"] = int(angles)
        return spec
    spec = {"name": "ct"}
    if geometry == "fan":
        spec["geometry"] = "fan"
    if angles is not None:
        spec["n_angles"] = int(angles)
    return spec


def _operator(cfg: dict, shape, loaded: tuple | None) -> LinearOperator:
    """The operator of ``cfg`` (CT: :func:`ct_spec`); for ``--method unrolled`` on CT the scanner
    the network was trained for (its geometry, from the checkpoint's CT spec) with ``angles``
    angles."""
    if loaded is not None and cfg["operator"] == "ct":
        from ..operators.registry import operator_from_spec, resolve_spec

        geometry = resolve_spec(loaded[1]["operator"], shape)
        geometry.pop("angles", None)  # the given angle count, uniform in the trained range
        return operator_from_spec({**geometry, "n_angles": cfg["angles"]}, shape)
    if cfg["operator"] == "ct":
        from ..operators.registry import operator_from_spec

        return operator_from_spec(ct_spec(cfg.get("geometry"), cfg.get("scanner"), cfg.get("angles"), shape),
                                  shape)
    return build_operator(cfg["operator"], shape)


def _alpha(context, operator, batch: slice, method: str) -> float | torch.Tensor:
    """``--alpha``, else the noise-level rule per sample (a float when all samples agree)."""
    options = context["options"]
    if options.alpha is not None:
        return float(options.alpha)
    sigma = context["noise_std"]
    if sigma is None:
        raise ValueError("alpha: the noise level of the measurement is unknown; give --alpha, or --noise "
                         "(and --noise-type) for the default rule")
    if "alpha_unit" not in context:  # c_method * s_A: a Hutchinson estimate, once per run
        from ..reconstruction import default_alpha

        context["alpha_unit"] = default_alpha(operator, 1.0, method)
    values = context["alpha_unit"] * sigma[batch]
    return float(values[0]) if bool((values == values[0]).all()) else values


def _run_fbp(operator, y, cfg, context):
    from ..reconstruction import fbp

    return fbp(operator, y, filter=cfg["filter"]), {"filter": cfg["filter"]}


def _run_tikhonov(operator, y, cfg, context):
    from ..reconstruction import tikhonov_cg

    alpha = _alpha(context, operator, context["batch"], "tikhonov")
    res = tikhonov_cg(operator, y, alpha, regulariser="gradient", max_iter=cfg["iterations"],
                      tol=cfg["tol"], progress=context["solver_progress"])
    return res.x, {"alpha": alpha, "regulariser": "gradient", "iterations": res.iterations,
                   "converged": res.converged, "final_residual": res.history["residual"][-1]}


def _run_tv(operator, y, cfg, context):
    from ..operators.noise import pwls_weights
    from ..reconstruction import tv_pdhg

    alpha = _alpha(context, operator, context["batch"], "tv")
    weights, weighting = None, {}
    if cfg.get("weighting") == "pwls":
        counts = context["counts"][context["batch"]].to(dtype=y.dtype, device=y.device)
        weights = pwls_weights(counts, context["attenuation"], normalize=True)
        weighting = {"weighting": "pwls"}
    elif cfg.get("weighting") == "none":
        weighting = {"weighting": "none"}
    res = tv_pdhg(operator, y, alpha, nonneg=context["nonneg"], max_iter=cfg["iterations"], tol=cfg["tol"],
                  weights=weights, progress=context["solver_progress"])
    return res.x, {"alpha": alpha, **weighting, "nonneg": context["nonneg"], "iterations": res.iterations,
                   "converged": res.converged, "final_energy": res.history["energy"][-1],
                   "final_rel_gap": res.history["rel_gap"][-1]}


def _run_unrolled(operator, y, cfg, context):
    net, ck = context["network"]
    net = net.to(dtype=y.dtype, device=y.device)
    with torch.no_grad():
        x = net(y) if ck["kind"] == "pnn" else net(y, operator)
    return x, {"checkpoint": str(context["options"].checkpoint), "task": ck["task"], "network": ck["kind"]}


#: method name -> ``func(operator, y, config, context) -> (x, info)``; ``config`` is
#: :func:`resolve`'s dict, ``context`` holds ``options``, ``noise_std`` (absolute, per sample, or
#: None where unknown), ``batch`` (the slice of samples in ``y``), ``solver_progress`` and
#: ``network`` (``(net, header)`` of the checkpoint for ``unrolled``, else None).
METHODS: dict[str, Callable] = {"fbp": _run_fbp, "tikhonov": _run_tikhonov, "tv": _run_tv,
                                "unrolled": _run_unrolled}


@dataclass
class Problem:
    """What is reconstructed: ``operator``, measurements ``y`` (N, *out_shape) float64, the
    reference ``truth`` (N, *in_shape) or None, ``noise_std`` (N,) or None (unknown), ``noise``
    (the noise record) and ``source`` (provenance of ``y`` and ``truth``)."""
    operator: LinearOperator
    y: torch.Tensor
    truth: torch.Tensor | None
    noise_std: torch.Tensor | None
    noise: dict | None
    source: dict = field(default_factory=dict)
    #: pre-log transmission counts (N, *out_shape) float64 of ``y`` (post-log) and ``μ``, or None
    counts: torch.Tensor | None = None
    attenuation: float | None = None


def transmission_noise_std(counts: torch.Tensor, attenuation: float, weighted: bool) -> torch.Tensor:
    """Per-sample noise level ``σ`` (B,) of post-log data with counts ``n`` (B, ...): weighted
    (normalised PWLS weights) ``1 / sqrt(mean(μ² n))``, else ``sqrt(mean(1 / (μ² max(n, 1))))``
    (module docstring)."""
    n = counts.detach().double().flatten(1).cpu()
    mu2 = float(attenuation) ** 2
    if weighted:
        return 1.0 / (mu2 * n.mean(1)).sqrt()
    return (1.0 / (mu2 * n.clamp_min(1.0))).mean(1).sqrt()


def simulate_problem(cfg: dict, loaded: tuple | None) -> Problem:
    """The image of ``cfg`` measured as ``lifted-inverse data`` measures it: operator and noise
    applied to the float32 image; ``y`` then float64."""
    from ..operators.noise import GaussianNoise

    x = load_named_image(cfg["image"], cfg["size"], cfg["seed"], cfg["normalize"])[None]
    operator = _operator(cfg, x.shape[1:], loaded)
    if cfg.get("photons") is not None:
        return _simulate_transmission(cfg, operator, x)
    noise = GaussianNoise(cfg["noise"], relative=cfg["noise_relative"], seed=cfg["seed"])
    with torch.no_grad():
        y = noise(operator(x)).to(torch.float64)
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"noise: a level of {cfg['noise']:g} overflows the float32 measurement")
    return Problem(operator, y, x.to(torch.float64), noise_std(y, cfg["noise"], cfg["noise_relative"]),
                   describe_noise(noise), {"image": cfg["image"]})


def _simulate_transmission(cfg: dict, operator: LinearOperator, x: torch.Tensor) -> Problem:
    """Counts ``n ~ Poisson(I_0 exp(-μ A x))`` and post-log ``y`` of the float32 image ``x``."""
    from ..operators.noise import TransmissionPoissonNoise

    noise = TransmissionPoissonNoise(cfg["photons"], seed=cfg["seed"], attenuation=cfg["attenuation"])
    with torch.no_grad():
        data = noise.simulate(operator(x))
    counts = data.counts.to(torch.float64)
    if not bool((counts > 0).any()):
        raise ValueError(f"photons: no photon reaches the detector (I_0 = {cfg['photons']:g}, attenuation "
                         f"{cfg['attenuation']:g}); raise --photons or lower --attenuation")
    weighted = cfg.get("weighting") == "pwls"
    return Problem(operator, data.line_integrals.to(torch.float64), x.to(torch.float64),
                   transmission_noise_std(counts, cfg["attenuation"], weighted), describe_noise(noise),
                   {"image": cfg["image"]}, counts, cfg["attenuation"])


def _file_noise(record, y: torch.Tensor) -> torch.Tensor | None:
    if isinstance(record, dict) and record.get("model") == "gaussian":
        return noise_std(y, float(record["sigma"]), bool(record.get("relative")))
    return None


def load_problem(cfg: dict, options: ReconstructOptions) -> Problem:
    """The measurements of ``cfg["measurement"]`` with their operator (from a ``data`` file's
    attributes, else from the options), checked against it; the reference of ``ground_truth``."""
    from ..datasets.hdf5 import operator_from_record
    from ..datasets.measurements import as_images, as_sinograms, read_angles, read_array

    raw = read_array(cfg["measurement"], key=cfg["key"], index=cfg["index"])
    noise_record = None
    if raw.is_project_file:
        refuse(options, FILE_GEOMETRY, f"{cfg['measurement']} records its operator; drop this option")
        try:
            operator = operator_from_record(raw.attrs.get("operator"))
        except ValueError as err:
            raise ValueError(f"measurement: {cfg['measurement']}: {err}") from None
        spec_name = raw.attrs["operator"]["spec"]["name"]
        if options.operator is not None and options.operator != spec_name:
            raise ValueError(f"operator: {cfg['measurement']} holds {spec_name} measurements, got {options.operator}")
        cfg.update(operator=spec_name, size=operator.in_shape[-1], layout=None,
                   angles=operator.out_shape[1] if spec_name == "ct" else None)
        y = raw.data
        noise_record = raw.attrs.get("noise")
    elif cfg["operator"] == "ct":
        y = as_sinograms(raw, cfg["layout"])
        n_angles, n_det = y.shape[2:]
        ct = {"n_detectors": n_det}
        if cfg["angles_file"] is not None:
            ct["angles"] = read_angles(cfg["angles_file"], cfg["angle_unit"])
            given = f"--angles-file has {ct['angles'].size}"
        else:
            given = f"--angles {cfg['angles']}"
        expected = ct["angles"].size if "angles" in ct else cfg["angles"]
        if expected is not None and expected != n_angles:
            raise ValueError(f"measurement: {cfg['measurement']} holds sinograms of {n_angles} angles x "
                             f"{n_det} detectors (--layout {cfg['layout']}), {given} angles")
        if cfg["detectors"] is not None and cfg["detectors"] != n_det:
            raise ValueError(f"measurement: {cfg['measurement']} holds sinograms of {n_angles} angles x "
                             f"{n_det} detectors (--layout {cfg['layout']}), --detectors says {cfg['detectors']}")
        cfg["angles"] = n_angles
        operator = _sinogram_operator(cfg, n_angles, ct)
    else:
        y = as_images(raw)
        if cfg["size"] is not None and tuple(y.shape[2:]) != (cfg["size"],) * 2:
            raise ValueError(f"measurement: {cfg['measurement']} holds images of {tuple(y.shape[2:])} pixels, "
                             f"--size says {cfg['size']}")
        cfg["size"] = y.shape[-1]
        operator = build_operator(cfg["operator"], y.shape[1:])
    if tuple(y.shape[1:]) != tuple(operator.out_shape):
        raise ValueError(f"measurement: {cfg['measurement']} holds samples of shape {tuple(y.shape[1:])}, "
                         f"the operator ({cfg['operator']}) measures {tuple(operator.out_shape)}")
    y = torch.from_numpy(np.ascontiguousarray(y))
    counts, attenuation = _file_counts(cfg, raw, noise_record, options) if raw.is_project_file else (None, None)
    if counts is None and options.weighting is not None:
        raise ValueError(f"weighting: {cfg['measurement']} holds no transmission counts to weight by")
    sigma = None
    if counts is not None:
        sigma = transmission_noise_std(counts, attenuation, cfg.get("weighting") == "pwls")
    elif cfg["noise"] is not None:
        sigma = noise_std(y, cfg["noise"], cfg["noise_relative"])
    elif noise_record is not None:
        sigma = _file_noise(noise_record, y)
    truth = _load_truth(cfg, raw, operator, len(y)) if cfg["ground_truth"] is not None else None
    return Problem(operator, y, truth, sigma, noise_record, {"measurement": raw.source}, counts, attenuation)


def _sinogram_operator(cfg: dict, n_angles: int, ct: dict) -> LinearOperator:
    """The operator of a read sinogram of ``n_angles x ct["n_detectors"]`` (``ct["angles"]``: explicit
    angles): parallel beam by default, on images as wide as the detector count unless ``size``;
    ``geometry`` fan or a ``scanner``: their geometry on ``size x size`` images (``size`` required:
    a fan's detector count says nothing about the image), a scanner's detector count checked."""
    from ..operators.registry import operator_from_spec

    n_det = ct["n_detectors"]
    if cfg.get("scanner") is None and cfg.get("geometry") != "fan":
        cfg["size"] = cfg["size"] or n_det
        return build_operator("ct", (1, cfg["size"], cfg["size"]), n_angles, ct)
    if cfg["size"] is None:
        raise ValueError("size: a fan-beam sinogram does not give the image size; give --size N")
    shape = (1, cfg["size"], cfg["size"])
    spec = ct_spec(cfg.get("geometry"), cfg.get("scanner"), n_angles, shape)
    if "angles" in ct:
        spec.pop("n_angles")
        spec.pop("angle_range", None)
        spec["angles"] = ct["angles"]
    if cfg.get("scanner") is None:
        spec["n_detectors"] = n_det
    elif spec["n_detectors"] != n_det:
        raise ValueError(f"measurement: {cfg['measurement']} holds sinograms of {n_det} detectors, scanner "
                         f"{cfg['scanner']} has {spec['n_detectors']}")
    return operator_from_spec(spec, shape)


def _file_counts(cfg: dict, raw, record, options: ReconstructOptions) -> tuple:
    """``(counts, μ)`` of a ``data`` file with transmission noise (its pre-log ``counts`` dataset,
    the samples of ``y``), else ``(None, None)``; TV then weights by them (``weighting`` ``pwls``
    unless given)."""
    from ..datasets.hdf5 import COUNTS_KEYS
    from ..datasets.measurements import read_array

    if not (isinstance(record, dict) and record.get("model") == "transmission"):
        return None, None
    refuse(options, ("noise", "noise_type"), f"{cfg['measurement']} holds transmission counts; the noise "
                                             "level comes from them")
    key = COUNTS_KEYS[raw.source["key"]]
    counts = read_array(cfg["measurement"], key=key, index=cfg["index"]).data
    if cfg["method"] == "tv":
        cfg["weighting"] = cfg.get("weighting") or "pwls"
    return torch.from_numpy(np.ascontiguousarray(counts)), float(record.get("attenuation", 1.0))


def _load_truth(cfg: dict, raw, operator: LinearOperator, n: int) -> torch.Tensor:
    """The reference images of ``--ground-truth``: an image file (one sample), or an array /
    HDF5 dataset (the one paired with the measurement's key: ``x`` for ``y``, ``x_test`` for
    ``y_test``, ...; or the only dataset) with as many samples as the measurement."""
    from ..datasets.folder import load_image
    from ..datasets.measurements import HDF5_SUFFIXES, PAIRED_KEYS, read_array

    path = Path(cfg["ground_truth"])
    shape = tuple(operator.in_shape)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif"):
        if n != 1:
            raise ValueError(f"ground_truth: one image for {n} measurements; give an array or HDF5 stack")
        truth = load_image(path, shape[1:], gray=shape[0] == 1)[None]
    else:
        key = None
        if path.suffix.lower() in HDF5_SUFFIXES:
            import h5py

            try:
                with h5py.File(path, "r") as f:
                    paired = PAIRED_KEYS.get(raw.source.get("key"))
                    key = paired if paired in f else None
            except OSError as err:
                raise ValueError(f"ground_truth: {str(path)!r} is not a readable HDF5 file ({err})") from None
        index = raw.source.get("index")
        truth_raw = read_array(path, key=key, index=index, what="ground_truth", min_ndim=len(shape) - 1
                               if shape[0] == 1 else len(shape))
        data = truth_raw.data
        if data.ndim == len(shape):
            data = data[:, None]
        truth = torch.from_numpy(np.ascontiguousarray(data))
    if tuple(truth.shape) != (n, *shape):
        raise ValueError(f"ground_truth: {str(path)!r} holds images of shape {tuple(truth.shape)}, the "
                         f"reconstructions are {(n, *shape)}")
    return truth.to(torch.float64)


def plan_reconstruction(options: ReconstructOptions) -> dict:
    """The ``config`` record a run would write (every option after defaults, with its source),
    after the checks a run makes before reconstructing (options, device, checkpoint, and the
    measurement file with its operator and ground truth)."""
    cfg = resolve(options)
    checked_device(cfg["device"], "--device")
    if cfg["method"] == "unrolled":
        _load_unrolled(options.checkpoint, cfg["operator"])
    if options.measurement is not None:
        load_problem(cfg, options)
    return config_record(options, cfg)


def _reconstruct(problem: Problem, cfg: dict, context: dict, device) -> tuple[torch.Tensor, list[dict]]:
    """All samples, ``batch_size`` at a time; a progress bar over the samples when there are several."""
    n = len(problem.y)
    size = cfg.get("batch_size") or n
    bar = None
    if cfg.get("progress") and n > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"{cfg['method']}", unit="sample")
    context["solver_progress"] = bool(cfg.get("progress")) and n == 1
    recs, infos = [], []
    try:
        for start in range(0, n, size):
            context["batch"] = slice(start, min(n, start + size))
            y = problem.y[context["batch"]].to(device)
            rec, info = METHODS[cfg["method"]](problem.operator, y, cfg, context)
            recs.append(rec.detach().to(dtype=torch.float64, device="cpu"))
            infos.append(info)
            if bar is not None:
                bar.update(len(y))
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(recs), infos


def _merge_info(infos: list[dict]) -> dict:
    """One record for every batch: ``iterations`` the largest, ``converged`` all, ``alpha`` a
    number or the per-sample list, other values of the first batch (or per batch if they differ)."""
    out = {}
    for k in infos[0]:
        values = [i[k] for i in infos]
        if k == "iterations":
            out[k] = max(values)
        elif k == "converged":
            out[k] = all(values)
        elif k == "alpha":
            flat = [float(a) for v in values for a in (v.reshape(-1).tolist() if isinstance(v, torch.Tensor) else [v])]
            out[k] = flat[0] if len(set(flat)) == 1 else flat
        else:
            out[k] = values[0] if all(v == values[0] for v in values) else values
    return out


def _in_unit_range(truth: torch.Tensor) -> bool:
    return float(truth.min()) >= 0.0 and float(truth.max()) <= 1.0


def _quality(rec: torch.Tensor, truth: torch.Tensor) -> dict:
    from ..metrics import quality

    q = {k: v.tolist() for k, v in quality(rec, truth).items()}
    if not _in_unit_range(truth):  # stored values (e.g. Hounsfield units): R = 1 describes nothing
        q = {k: v for k, v in q.items() if k.endswith("_gt_range")}
    out = {k: float(np.mean(v)) for k, v in q.items()}
    if len(rec) > 1:
        out["per_sample"] = q
    return out


def _plot(path: Path, problem: Problem, rec: torch.Tensor, title: str) -> None:
    """One row per sample (at most PLOT_ROWS): measurement | reconstruction | ground truth (when
    known); images on [0, 1] (on the reference's range [min, max] when it leaves [0, 1]: stored
    values such as HU), a measurement of another shape on its own scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from ..io import atomic_path

    rows = min(len(rec), PLOT_ROWS)
    panels = [("measurement", problem.y), ("reconstruction", rec)]
    if problem.truth is not None:
        panels.append(("ground truth", problem.truth))
    ref = problem.truth if problem.truth is not None else rec
    lo, hi = (0.0, 1.0) if _in_unit_range(ref) else (float(ref.min()), float(ref.max()))
    fig = Figure(figsize=(3.2 * len(panels), 3.0 * rows + 0.4), constrained_layout=True)
    axes = fig.subplots(rows, len(panels), squeeze=False)
    for r in range(rows):
        for c, (name, stack) in enumerate(panels):
            img = stack[r].detach().cpu().double()
            img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1)
            image_like = tuple(stack.shape[1:]) == tuple(rec.shape[1:])
            kw = {"vmin": lo, "vmax": hi} if image_like else {}
            axes[r, c].imshow(img.numpy(), cmap="gray", aspect="equal" if image_like else "auto", **kw)
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(name)
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)


def run_reconstruction(options: ReconstructOptions, out: str | Path) -> dict:
    """Reconstruct and write ``out`` (module docstring); returns the metrics."""
    from ..metrics import gt_range, psnr
    from ..plotting import plot_reconstructions

    cfg = resolve(options)
    device = checked_device(cfg["device"], "--device")
    loaded = _load_unrolled(options.checkpoint, cfg["operator"]) if cfg["method"] == "unrolled" else None
    measured = options.measurement is not None
    problem = load_problem(cfg, options) if measured else simulate_problem(cfg, loaded)
    operator = problem.operator
    # TV's constraint x >= 0 (off by default in the library's tv_pdhg): for simulated images without
    # negative values, not for stored values such as Hounsfield units; a read measurement's
    # reconstruction never depends on whether a reference is given, so it keeps x >= 0
    nonneg = measured or float(problem.truth.min()) >= 0
    context = {"options": options, "noise_std": problem.noise_std, "network": loaded, "nonneg": nonneg,
               "counts": problem.counts, "attenuation": problem.attenuation}
    start = time.perf_counter()
    rec, infos = _reconstruct(problem, cfg, context, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    info = _merge_info(infos)
    config = config_record(options, {**cfg, "alpha": info.get("alpha")})
    metrics: dict = {}
    if problem.truth is not None:
        metrics.update(_quality(rec, problem.truth))
        if problem.y.shape == problem.truth.shape:
            if _in_unit_range(problem.truth):
                metrics["psnr_measurement"] = float(psnr(problem.y, problem.truth, 1.0, reduction="mean"))
            metrics["psnr_measurement_gt_range"] = float(
                psnr(problem.y, problem.truth, gt_range(problem.truth), reduction="mean"))
    sigma = problem.noise_std
    metrics.update({
        "seconds": seconds, "n_samples": len(rec),
        "operator": cfg["operator"], "method": cfg["method"], "size": rec.shape[-1],
        "noise": cfg["noise"], "noise_relative": cfg["noise_relative"],
        "noise_std": None if sigma is None else (float(sigma[0]) if len(sigma) == 1 else sigma.tolist()),
        "device": str(device), "alpha": info.get("alpha"),
        **({"photons": cfg["photons"], "attenuation": cfg["attenuation"]} if cfg.get("photons") else {}),
        **{k: v for k, v in info.items() if k != "alpha"},
    })
    if measured:
        metrics["measurement"] = problem.source["measurement"]
        metrics["ground_truth"] = cfg["ground_truth"]
    else:
        metrics.update(image=cfg["image"], seed=cfg["seed"])
    # the operator's full record (geometry included): operator_from_spec(metrics["operator_record"]) rebuilds it
    metrics["operator_record"] = operator_record(operator)
    metrics["config"] = config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{cfg['operator']} / {cfg['method']}"
    if measured:
        _plot(out / "reconstruction.png", problem, rec, f"{title}: {Path(cfg['measurement']).name}")
        arrays = {"reconstruction": rec, "measurement": problem.y}
        if problem.counts is not None:
            arrays["counts"] = problem.counts
        if problem.truth is not None:
            arrays["ground_truth"] = problem.truth
    else:
        plot_reconstructions(problem.truth[0], problem.y[0], {cfg["method"]: rec[0]}, out / "reconstruction.png",
                             data_range=(1.0 if _in_unit_range(problem.truth)
                                         else float(gt_range(problem.truth)[0])),
                             title=f"{cfg['operator']} / {cfg['image']}")
        arrays = {"ground_truth": problem.truth[0], "measurement": problem.y[0], "reconstruction": rec[0]}
        if problem.counts is not None:  # transmission noise: "measurement" is the post-log data
            arrays["counts"] = problem.counts[0]
    write_arrays(out / "result.h5", arrays, {"operator": operator_record(operator), "noise": problem.noise,
                                             "source": problem.source, "metrics": strict_json(metrics)})
    write_json(out / "metrics.json", metrics)  # strict JSON: a non-finite value is null + reason
    return metrics
