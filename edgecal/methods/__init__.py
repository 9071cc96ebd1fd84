"""Calibration methods, registered by name; each is a pure function of a histogram."""

from . import auto, basic, codebook, kl, kl_compat, kl_refine_range, mse  # noqa: F401  (registration)
from .kl import kl_divergences, kl_search
from .registry import DEFAULT_METHOD, Method, get_method, method_names, register

__all__ = ["DEFAULT_METHOD", "Method", "get_method", "method_names", "register", "kl_search", "kl_divergences"]
