"""The ``data`` job: an HDF5 file of (ground truth ``x``, noisy measurement ``y = A x + e``)
pairs with provenance attributes (operator spec, noise, seed, time, version) and ``config``:
every option after defaults, with its source. An option that does not apply to the chosen
dataset or operator is a ``ValueError`` naming it (``angles`` without CT, ``folder`` without
``--dataset folder``, ``images`` outside builtin / patches, ``image_size`` outside patches,
``test_fraction`` outside the deepinv layout; the CT options ``geometry``, ``scanner``,
``photons``, ``dose``, ``attenuation`` without CT).

CT: ``geometry`` (``parallel``, ``fan``) or a ``scanner`` preset
(:func:`lifted_inverse.jobs.reconstruct.ct_spec`; the file records the operator spec).
Transmission noise (``photons`` I_0, or a scanner's ``dose`` level; ``attenuation`` μ, default
:data:`~lifted_inverse.jobs.reconstruct.DEFAULT_ATTENUATION`) replaces the Gaussian noise: ``y``
holds the post-log line integrals (what ``reconstruct --measurement`` and ``train --data`` read)
and ``counts`` the pre-log detector counts (:data:`lifted_inverse.datasets.hdf5.COUNTS_KEYS`);
the ``noise`` attribute records the model.

Layouts (:mod:`lifted_inverse.datasets.hdf5`): ``data`` writes ``x`` / ``y``; ``deepinv`` writes
the first ``n - n_test`` pairs as ``x_train`` / ``y_train`` and the last
``n_test = round(test_fraction · n)`` (at least 1, at most n - 1) as ``x_test`` / ``y_test``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from ..runtime import checked_device
from ._common import check_min, config_record, noise_rule, refuse

DATASETS = ("ellipses", "shepp-logan", "builtin", "folder", "patches")
OPERATORS = ("denoise", "blur", "ct", "inpaint", "mri")
LAYOUTS = ("data", "deepinv")
#: values of the options left unset (None); ``noise`` follows :func:`noise_rule`, ``images``
#: defaults to the built-in natural images, ``n`` for builtin and folder to all their images
DEFAULTS = {"dataset": "ellipses", "operator": "ct", "noise_type": "auto", "n": 16, "size": 128,
            "angles": 60, "seed": 0, "batch_size": 32, "device": "cpu", "layout": "data",
            "test_fraction": 0.2}


@dataclass
class DataOptions:
    """Options of one data file; None takes :data:`DEFAULTS` where the option applies."""
    dataset: str | None = None
    operator: str | None = None
    noise: float | None = None
    noise_type: str | None = None
    n: int | None = None
    size: int | None = None
    image_size: int | None = None
    images: str | None = None
    folder: str | Path | None = None
    angles: int | None = None
    seed: int | None = None
    batch_size: int | None = None
    device: str | None = None
    layout: str | None = None
    test_fraction: float | None = None
    geometry: str | None = None
    scanner: str | None = None
    photons: float | None = None
    dose: str | None = None
    attenuation: float | None = None


def resolve(options: DataOptions) -> dict:
    """Every applicable option after defaults (``noise``, ``noise_relative`` by
    :func:`noise_rule`); raises ``ValueError`` naming an option out of range or not applying."""
    def get(k):
        return DEFAULTS.get(k) if getattr(options, k) is None else getattr(options, k)

    dataset, operator = get("dataset"), get("operator")
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    if operator not in OPERATORS:
        raise ValueError(f"operator: expected one of {', '.join(OPERATORS)}, got {operator!r}")
    if operator != "ct":
        refuse(options, ("angles",), f"the number of CT angles; --operator {operator} has none")
    ct = _resolve_ct(options, operator)
    if dataset != "folder":
        refuse(options, ("folder",), f"the image folder of --dataset folder, not {dataset}")
    elif options.folder is None:
        raise ValueError("folder: required with --dataset folder")
    if dataset not in ("builtin", "patches"):
        refuse(options, ("images",), f"built-in image names for --dataset builtin or patches, not {dataset}")
    if dataset != "patches":
        refuse(options, ("image_size",), f"the image size patches are cut from, not used by --dataset {dataset}")
    check_min("n", options.n, 1)
    check_min("size", options.size, 8)
    check_min("image_size", options.image_size, options.size or DEFAULTS["size"])
    check_min("angles", options.angles, 1)
    check_min("batch_size", options.batch_size, 1)
    layout = get("layout")
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout != "deepinv":
        refuse(options, ("test_fraction",), "the test split of --layout deepinv; --layout data has one split")
    elif not 0 <= get("test_fraction") < 1:
        raise ValueError(f"test_fraction: expected a fraction in [0, 1), got {options.test_fraction}")
    level, relative = noise_rule(operator, options.noise, get("noise_type"))
    cfg = {k: get(k) for k in ("dataset", "operator", "noise_type", "size", "seed", "batch_size", "device",
                               "layout")}
    if layout == "deepinv":
        cfg["test_fraction"] = get("test_fraction")
    cfg.update(noise=level, noise_relative=relative)
    cfg["n"] = options.n if dataset in ("folder", "builtin") else get("n")
    if operator == "ct":
        cfg["angles"] = get("angles")
        cfg.update(ct)
    if dataset in ("builtin", "patches"):
        from ..datasets import NATURAL_IMAGES

        cfg["images"] = options.images or ",".join(NATURAL_IMAGES)
        names = [s for s in cfg["images"].split(",") if s]
        if not names:
            raise ValueError(f"images: expected comma-separated image names, got {options.images!r}")
        if dataset == "builtin":
            if cfg["n"] is not None and cfg["n"] > len(names):
                raise ValueError(f"n: --dataset builtin has {len(names)} images (--images), got --n {cfg['n']}")
            cfg["n"] = cfg["n"] or len(names)
    if dataset == "patches":
        cfg["image_size"] = options.image_size
    if dataset == "folder":
        cfg["folder"] = str(options.folder)
    return cfg


def _resolve_ct(options: DataOptions, operator: str) -> dict:
    """The CT geometry and transmission-noise entries of the config, by the rules of
    ``reconstruct`` (:func:`lifted_inverse.jobs.reconstruct.resolve_ct`: the same options, the
    same refusals); ``{}`` for other operators."""
    from .reconstruct import ReconstructOptions, resolve_ct

    as_reconstruct = ReconstructOptions(noise=options.noise, noise_type=options.noise_type, angles=options.angles,
                                        geometry=options.geometry, scanner=options.scanner,
                                        photons=options.photons, dose=options.dose,
                                        attenuation=options.attenuation)
    return resolve_ct(as_reconstruct, operator, "fbp", measured=False)


def build_dataset(cfg: dict) -> Dataset:
    """The dataset of a resolved config: ``n`` items of ``size`` pixels (patches: ``size`` is the
    patch side, cut from images resized to ``image_size`` when given)."""
    from ..datasets import EllipseDataset, ImageFolder, ImageList, PatchDataset, shepp_logan

    n, size, name = cfg["n"], cfg["size"], cfg["dataset"]
    if name == "ellipses":
        return EllipseDataset(n, size, cfg["seed"])
    if name == "shepp-logan":
        return ImageList([shepp_logan(size)] * n)
    if name == "folder":
        images = ImageFolder(cfg["folder"], size=size)
        if n is not None and n > len(images):
            raise ValueError(f"n: the folder holds {len(images)} images, got --n {n}")
        return images if n is None else Subset(images, range(n))
    names = [s for s in cfg["images"].split(",") if s]
    if name == "builtin":
        return ImageList(names[:n], size=size)  # n <= len(names) (resolve)
    return PatchDataset(names, size, n, seed=cfg["seed"], image_size=cfg["image_size"])


def test_count(cfg: dict, n: int) -> int:
    """Pairs of the test split: ``round(test_fraction · n)``, at least 1 and at most ``n - 1`` for a
    positive fraction (``ValueError`` naming ``n`` when ``n < 2`` cannot be split)."""
    fraction = cfg.get("test_fraction", 0.0)
    if not fraction:
        return 0
    if n < 2:
        raise ValueError(f"n: --layout deepinv with a test split needs at least 2 pairs, got {n}")
    return min(max(round(fraction * n), 1), n - 1)


def plan_data(options: DataOptions) -> dict:
    """The ``config`` record a run would write, after the checks it makes before writing."""
    cfg = resolve(options)
    checked_device(cfg["device"], "--device")
    n = len(build_dataset(cfg))
    extra = {"n_test": test_count(cfg, n)} if cfg["layout"] == "deepinv" else {}
    return config_record(options, {**cfg, "n": n, **extra})


def make_data(options: DataOptions, out: str | Path, progress: bool = False) -> dict:
    """Write the pairs to ``out`` (module docstring; ``progress``: a bar over the batches); returns
    the config record with ``n`` the number of pairs written, ``n_test`` of them in the test split,
    ``noise_relative`` and ``path``."""
    from ..datasets import make_measurements
    from ..operators.noise import GaussianNoise, TransmissionPoissonNoise
    from ..operators.registry import make_operator, operator_from_spec
    from .reconstruct import ct_spec

    cfg = resolve(options)
    device = checked_device(cfg["device"], "--device")
    dataset = build_dataset(cfg)
    shape = tuple(dataset[0].shape)
    if cfg["operator"] == "ct":
        operator = operator_from_spec(ct_spec(cfg["geometry"], cfg["scanner"], cfg["angles"], shape), shape)
    else:
        operator = make_operator(cfg["operator"], shape)
    if cfg.get("photons") is not None:
        noise = TransmissionPoissonNoise(cfg["photons"], seed=cfg["seed"], attenuation=cfg["attenuation"])
    else:
        noise = GaussianNoise(cfg["noise"], relative=cfg["noise_relative"], seed=cfg["seed"])
    n_test = test_count(cfg, len(dataset))
    config = config_record(options, {**cfg, "n": len(dataset),
                                     **({"n_test": n_test} if cfg["layout"] == "deepinv" else {})})
    path = make_measurements(dataset, operator, noise, out, batch_size=cfg["batch_size"], seed=cfg["seed"],
                             device=device, layout=cfg["layout"], n_test=n_test, progress=progress,
                             attrs={"config": config, "dataset_args": {
                                 "dataset": cfg["dataset"], "n": len(dataset), "size": cfg["size"],
                                 "images": cfg.get("images"), "folder": cfg.get("folder")}})
    return {**config, "noise_relative": cfg["noise_relative"], "n_test": n_test, "path": str(path)}
