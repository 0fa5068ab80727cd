"""Filtered back-projection: a thin wrapper over ``Radon.fbp``."""
from __future__ import annotations

import torch

from ..operators.base import LinearOperator, check_batch, check_finite


def fbp(radon: LinearOperator, y: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
    """``x = R^* (h * y)``, appropriately scaled: the filtered back-projection of sinograms ``y``
    (B, 1, n_angles, n_detectors) -> (B, 1, H, W), with ``filter`` in
    {"ramp", "shepp-logan", "hann"} applied along the detector axis (see ``Radon.fbp``)."""
    if not hasattr(radon, "fbp"):
        raise TypeError(f"radon: FBP needs a Radon operator, got {type(radon).__name__}; "
                        "use tikhonov_cg or tv_pdhg for other operators")
    check_batch(y, radon.out_shape, "y")
    check_finite(y, "y")
    return radon.fbp(y, filter=filter)
