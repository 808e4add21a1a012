"""optuna's TPE sampler as a Strategy (the ecosystem baseline; Bergstra et al., NeurIPS 2011)."""

from __future__ import annotations

import json

from leanvision.errors import ConfigError, missing_extra
from leanvision.search.space import Result, Sample, SearchSpace
from leanvision.search.strategies.base import STRATEGIES, Strategy, ok


@STRATEGIES.register("tpe")
class TPE(Strategy):
    """Ask/tell over optuna's ``TPESampler`` on the space's flat categorical ``params()``.

    Samples proposed while others are still running use optuna's constant liar, so parallel asks differ.
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0, n_startup_trials: int = 10, multivariate: bool = True):
        try:
            import optuna
        except ModuleNotFoundError:
            raise missing_extra("the tpe strategy", "search") from None

        super().__init__(space, seed=seed)
        params = space.params()
        if not params:
            raise ConfigError(f"tpe needs a space of categorical choices; '{space.name}' has none (use random, "
                              "evolution or a space-specific strategy)")  # fmt: skip
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=multivariate, constant_liar=True
        )
        self._study = optuna.create_study(direction="maximize", sampler=sampler)
        # Options as strings: optuna stores categorical values in its own storage and compares them by equality.
        self._dists = {k: optuna.distributions.CategoricalDistribution([json.dumps(o) for o in p.options])
                       for k, p in params.items()}  # fmt: skip
        self._pending: dict[str, list[int]] = {}

    def _ask_one(self) -> Sample:
        trial = self._study.ask(self._dists)
        sample = {k: json.loads(v) for k, v in trial.params.items()}
        self._pending.setdefault(self.space.key(sample), []).append(trial.number)
        return sample

    def tell(self, sample: Sample, result: Result) -> None:
        import optuna

        numbers = self._pending.get(self.space.key(sample))
        if not numbers:  # not proposed by this strategy (e.g. a seeded warm start): nothing to attach it to
            return
        number = numbers.pop(0)
        if ok(result):
            self._study.tell(number, float(result["objective"]))
        else:
            self._study.tell(number, state=optuna.trial.TrialState.FAIL)
