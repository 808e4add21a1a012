"""Registered search spaces; importing this package registers them."""

from leanvision.search.spaces import esrn, nasbench201, nsc, synthetic  # noqa: F401  (registration)
