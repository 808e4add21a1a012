"""A Gaussian process on the confidence error, fitted with scikit-learn, kept as plain arrays (arXiv 1910.02352).

scikit-learn maximises the marginal likelihood (``ConstantKernel * RBF + WhiteKernel``, ``normalize_y``); the
posterior is then computed here from arrays, so a fitted GP saves to an ``.npz`` without pickles and can take new
labels under fixed hyper-parameters (the selection loop does, between re-fits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular

from leanvision.errors import ConfigError


def median_distance(Z: np.ndarray, *, max_points: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance (over a seeded sample of at most ``max_points`` rows)."""
    if len(Z) > max_points:
        Z = Z[np.random.default_rng(seed).choice(len(Z), max_points, replace=False)]
    d = np.sqrt(np.maximum(_sqdist(Z, Z), 0))[np.triu_indices(len(Z), 1)]
    return float(np.median(d)) if len(d) else 1.0


def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T


@dataclass
class ConfidenceGP:
    """GP regression of e = 1[correct] - confidence on standardised features; ``predict`` gives the latent mean
    and standard deviation (label noise excluded)."""

    X: np.ndarray  # labelled points [n, d]
    y: np.ndarray  # their targets [n]
    amplitude: float  # ConstantKernel value (variance of the normalised targets)
    length_scale: float
    noise: float  # WhiteKernel noise level
    y_mean: float
    y_std: float

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, *, scale: float, restarts: int = 2, seed: int = 0) -> ConfidenceGP:
        """Maximise the marginal likelihood with the length-scale bounded to [0.1, 10] x ``scale`` (the pool's
        median pairwise distance) and a noise term: with few labels an unbounded length-scale overfits."""
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, WhiteKernel
        from sklearn.gaussian_process.kernels import ConstantKernel as Const

        X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
        if len(X) < 2:
            raise ConfigError(f"a GP needs at least 2 labelled examples, got {len(X)}")
        kernel = Const(1.0, (1e-3, 1e2)) * RBF(scale, (0.1 * scale, 10 * scale)) + WhiteKernel(0.1, (1e-4, 1.0))
        gpr = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=restarts, random_state=seed)
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():  # a hyper-parameter at its bound is expected with few labels
            warnings.simplefilter("ignore", ConvergenceWarning)
            gpr.fit(X, y)
        k = gpr.kernel_
        return cls(X, y, float(k.k1.k1.constant_value), float(k.k1.k2.length_scale), float(k.k2.noise_level),
                   float(gpr._y_train_mean), float(gpr._y_train_std))  # fmt: skip

    def __post_init__(self) -> None:
        self.X, self.y = np.asarray(self.X, np.float64), np.asarray(self.y, np.float64)
        K = self._k(self.X, self.X) + self.noise * np.eye(len(self.X))
        self._L = cholesky(K, lower=True)
        self._alpha = cho_solve((self._L, True), (self.y - self.y_mean) / self.y_std)

    def _k(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return self.amplitude * np.exp(-0.5 * np.maximum(_sqdist(A, B), 0) / self.length_scale**2)

    def with_points(self, X: np.ndarray, y: np.ndarray) -> ConfidenceGP:
        """The posterior after adding labelled points, under the same hyper-parameters and normalisation."""
        return ConfidenceGP(np.vstack([self.X, X]), np.concatenate([self.y, y]), self.amplitude, self.length_scale,
                            self.noise, self.y_mean, self.y_std)  # fmt: skip

    def predict(self, Z: np.ndarray, *, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent confidence error at ``Z``."""
        Z = np.asarray(Z, np.float64)
        mean, std = np.empty(len(Z)), np.empty(len(Z))
        for i in range(0, len(Z), chunk):
            Ks = self._k(Z[i : i + chunk], self.X)
            mean[i : i + chunk] = Ks @ self._alpha * self.y_std + self.y_mean
            v = solve_triangular(self._L, Ks.T, lower=True)
            std[i : i + chunk] = np.sqrt(np.maximum(self.amplitude - (v * v).sum(0), 0)) * self.y_std
        return mean, std

    def state(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Arrays that rebuild this GP with ``from_state``."""
        hyper = [self.amplitude, self.length_scale, self.noise, self.y_mean, self.y_std]
        return {f"{prefix}X": self.X, f"{prefix}y": self.y, f"{prefix}hyper": np.array(hyper)}

    @classmethod
    def from_state(cls, arrays, prefix: str = "") -> ConfidenceGP:
        return cls(arrays[f"{prefix}X"], arrays[f"{prefix}y"], *map(float, arrays[f"{prefix}hyper"]))
