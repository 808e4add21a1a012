"""Architecture search: spaces, ask/tell strategies, evaluators, the journal and the asynchronous driver."""

from leanvision.search import spaces  # noqa: F401  (registration)
from leanvision.search.evaluators import EVALUATORS, create_evaluator, list_evaluators
from leanvision.search.journal import Journal
from leanvision.search.loop import History, Trial, search
from leanvision.search.space import (
    SPACES,
    Choice,
    ChoiceSpace,
    Result,
    Sample,
    SearchSpace,
    create_space,
    list_spaces,
)
from leanvision.search.strategies import STRATEGIES, Strategy, create_strategy, list_strategies

__all__ = [
    "EVALUATORS",
    "SPACES",
    "STRATEGIES",
    "Choice",
    "ChoiceSpace",
    "History",
    "Journal",
    "Result",
    "Sample",
    "SearchSpace",
    "Strategy",
    "Trial",
    "create_evaluator",
    "create_space",
    "create_strategy",
    "list_evaluators",
    "list_spaces",
    "list_strategies",
    "search",
]
