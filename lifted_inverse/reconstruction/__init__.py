"""Classical reconstruction over any ``LinearOperator``: FBP, Tikhonov-CG and TV-PDHG.

Iterative solvers take batched data ``y`` (B, *A.out_shape), a ``callback(k, x, info)``, a
stopping ``tol``, ``max_iter`` and ``progress`` (tqdm), and return a :class:`SolverResult`
(unpacks as ``x, history``).
"""
from ._common import SolverResult
from .fbp import fbp
from .parameters import ALPHA_CONSTANTS, default_alpha, rms_column_norm
from .tikhonov import tikhonov_cg
from .tv import tv_denoise, tv_pdhg

__all__ = [
           "ALPHA_CONSTANTS",
           "SolverResult",
           "default_alpha",
           "fbp",
           "rms_column_norm",
           "tikhonov_cg",
           "tv_denoise",
           "tv_pdhg",
]
