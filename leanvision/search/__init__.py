"""Architecture search: spaces, ask/tell strategies, evaluators, the journal and the asynchronous driver.

``run(config)`` / ``resume(run_dir)`` are the whole workflow (what `leanvision search` does); ``search(...)`` is the
ask/tell driver underneath, for composing the pieces yourself.
"""

from leanvision.search import spaces  # noqa: F401  (registration)
from leanvision.search.evaluators import EVALUATORS, create_evaluator, list_evaluators
from leanvision.search.journal import History, Journal, Trial
from leanvision.search.loop import search
from leanvision.search.report import write_report
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
from leanvision.search.workflow import SearchConfig, SearchResult, load_search_config, resume, run

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
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "Strategy",
    "Trial",
    "create_evaluator",
    "create_space",
    "create_strategy",
    "list_evaluators",
    "list_spaces",
    "list_strategies",
    "load_search_config",
    "resume",
    "run",
    "search",
    "write_report",
]
