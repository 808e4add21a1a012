"""Operational calibration (Li et al., arXiv 1910.02352): correct a deployed classifier's confidence on the data it
meets in operation with a Gaussian process on its last-hidden-layer features and a few selected labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import norm

from leanvision.calibrate.features import ModelOutputs
from leanvision.calibrate.gp import ConfidenceGP, median_distance
from leanvision.errors import ConfigError

FORMAT = "leanvision.calibration/1"


def expected_clipped(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """E[clip(Y, 0, 1)] for Y ~ N(m, s^2) (closed form; ``clip(m, 0, 1)`` where s = 0)."""
    s = np.asarray(s, np.float64)
    safe = np.where(s > 0, s, 1.0)
    a, b = (0 - m) / safe, (1 - m) / safe
    inside = m * (norm.cdf(b) - norm.cdf(a)) + safe * (norm.pdf(a) - norm.pdf(b))
    return np.where(s > 0, inside + norm.sf(b), np.clip(m, 0, 1))


class OperationalCalibrator:
    """Calibrated confidence c'(x) = clip(c(x) + mu(z(x)), 0, 1), mu the GP posterior mean of the confidence error
    1[correct] - c at the PCA-reduced, standardised features z (PCA fitted on the operational pool, never on
    training data).

    ``expectation=True`` uses E[clip(c + f)] under the GP posterior instead; ``per_class=True`` fits one GP per
    predicted class with at least ``min_class_labels`` labels (the others use the shared GP). Predictions are
    never changed, so accuracy is too.
    """

    def __init__(self, *, n_components: int = 20, per_class: bool = False, expectation: bool = False,
                 min_class_labels: int = 5, restarts: int = 2, seed: int = 0) -> None:  # fmt: skip
        if not isinstance(n_components, int) or n_components < 1:
            raise ConfigError(f"n_components must be an integer >= 1, got {n_components!r}")
        if not isinstance(min_class_labels, int) or min_class_labels < 2:
            raise ConfigError(f"min_class_labels must be an integer >= 2, got {min_class_labels!r}")
        self.n_components, self.per_class, self.expectation = n_components, per_class, expectation
        self.min_class_labels, self.restarts, self.seed = min_class_labels, restarts, seed
        self.pca_mean: np.ndarray | None = None
        self.gp: ConfidenceGP | None = None
        self.class_gps: dict[int, ConfidenceGP] = {}
        self.meta: dict = {}  # what the saved file says about its model and data

    # -- representation ------------------------------------------------------------------------------------
    def fit_pool(self, pool: ModelOutputs) -> OperationalCalibrator:
        """Fit PCA (then per-component standardisation) on the unlabelled operational pool's features."""
        F = pool.features
        if len(F) < 2:
            raise ConfigError(f"the operational pool has {len(F)} example(s); calibration needs a pool of at least 2")
        k = min(self.n_components, F.shape[1], len(F) - 1)
        self.pca_mean = F.mean(0)
        _, S, Vt = np.linalg.svd(F - self.pca_mean, full_matrices=False)
        self.components = Vt[:k]
        sd = S[:k] / np.sqrt(len(F) - 1)
        self.scale = np.where(sd > 1e-12, sd, 1.0)
        self.length_unit = median_distance(self.embed(F), seed=self.seed)
        return self

    def embed(self, features: np.ndarray) -> np.ndarray:
        """z: features projected on the pool's principal components, each standardised over the pool."""
        if self.pca_mean is None:
            raise ConfigError("call fit_pool(pool) first: the PCA is fitted on the operational pool")
        if features.shape[1] != len(self.pca_mean):
            raise ConfigError(f"features have {features.shape[1]} dimensions, the pool had {len(self.pca_mean)}: "
                              f"use the same model and feature layer")  # fmt: skip
        return (np.asarray(features, np.float64) - self.pca_mean) @ self.components.T / self.scale

    # -- fitting ---------------------------------------------------------------------------------------------
    @staticmethod
    def targets(outputs: ModelOutputs, labels) -> np.ndarray:
        """e = 1[prediction == label] - confidence."""
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(outputs):
            raise ConfigError(f"got {len(labels)} labels for {len(outputs)} examples: give one label per example")
        k = outputs.logits.shape[1]
        if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() >= k)):
            raise ConfigError(f"labels must be class indices in [0, {k - 1}] (the model has {k} classes)")
        return (outputs.predictions == labels).astype(np.float64) - outputs.confidence

    def fit(self, labelled: ModelOutputs, labels) -> OperationalCalibrator:
        """Fit the GP(s) on labelled operational examples (hyper-parameters by marginal likelihood)."""
        e = self.targets(labelled, labels)
        Z = self.embed(labelled.features)
        self.gp = ConfidenceGP.fit(Z, e, scale=self.length_unit, restarts=self.restarts, seed=self.seed)
        self.class_gps = {}
        if self.per_class:
            pred = labelled.predictions
            for c in np.unique(pred):
                m = pred == c
                if m.sum() >= self.min_class_labels:
                    self.class_gps[int(c)] = ConfidenceGP.fit(Z[m], e[m], scale=self.length_unit,
                                                              restarts=self.restarts, seed=self.seed)  # fmt: skip
        return self

    # -- use -------------------------------------------------------------------------------------------------
    def predict_error(self, outputs: ModelOutputs) -> tuple[np.ndarray, np.ndarray]:
        """GP posterior mean and standard deviation of the confidence error of each example."""
        if self.gp is None:
            raise ConfigError("the calibrator has no labels yet: call fit(labelled_outputs, labels) first")
        Z = self.embed(outputs.features)
        mean, std = self.gp.predict(Z)
        pred = outputs.predictions
        for c, gp in self.class_gps.items():
            m = pred == c
            if m.any():
                mean[m], std[m] = gp.predict(Z[m])
        return mean, std

    def calibrate(self, outputs: ModelOutputs) -> np.ndarray:
        """Calibrated confidences in [0, 1] (the predictions stay ``outputs.predictions``)."""
        mean, std = self.predict_error(outputs)
        c = outputs.confidence
        return expected_clipped(c + mean, std) if self.expectation else np.clip(c + mean, 0.0, 1.0)

    # -- file ------------------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, meta: dict | None = None) -> Path:
        """Write an ``.npz`` (arrays only, no pickles) that ``load`` turns back into this calibrator."""
        from leanvision._io import atomic_path

        if self.gp is None:
            raise ConfigError("nothing to save: the calibrator has not been fitted on labels")
        options = {"n_components": self.n_components, "per_class": self.per_class, "expectation": self.expectation,
                   "min_class_labels": self.min_class_labels, "restarts": self.restarts, "seed": self.seed}  # fmt: skip
        header = {"format": FORMAT, "options": options, "length_unit": self.length_unit,
                  "classes": sorted(self.class_gps), "meta": meta or {}}  # fmt: skip
        arrays = {"header": np.array(json.dumps(header)), "pca_mean": self.pca_mean, "components": self.components,
                  "scale": self.scale, **self.gp.state("gp_")}  # fmt: skip
        for c, gp in self.class_gps.items():
            arrays.update(gp.state(f"class{c}_"))
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> OperationalCalibrator:
        """A calibrator saved by ``save``; a file that is not one is a one-line ConfigError."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"calibration file '{path}' not found; write one with `leanvision calibrate`")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(str(arrays["header"]))
            if header.get("format") != FORMAT:
                raise ValueError(f"format {header.get('format')!r}")
            cal = cls(**header["options"])
            cal.pca_mean, cal.components, cal.scale = arrays["pca_mean"], arrays["components"], arrays["scale"]
            cal.length_unit = float(header["length_unit"])
            cal.gp = ConfidenceGP.from_state(arrays, "gp_")
            cal.class_gps = {int(c): ConfidenceGP.from_state(arrays, f"class{c}_") for c in header["classes"]}
        except (OSError, ValueError, KeyError, TypeError, np.linalg.LinAlgError) as e:
            raise ConfigError(f"'{path}' is not a leanvision calibration file ({e})") from None
        cal.meta = header.get("meta", {})
        return cal
