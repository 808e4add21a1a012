"""Search strategies (ask/tell); importing this package registers them."""

from leanvision.search.strategies import esr_ea, irlas, local, qlearning, renas, simple, tpe  # noqa: F401  (registration)
from leanvision.search.strategies.base import STRATEGIES, Strategy, create_strategy, list_strategies, ok

__all__ = ["STRATEGIES", "Strategy", "create_strategy", "list_strategies", "ok"]
