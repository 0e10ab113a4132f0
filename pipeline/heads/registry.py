"""The classifier registry: every entry a scikit-learn estimator, with the facts stage 2 needs.

Each entry builds an unfitted, cloneable estimator with ``fit`` /
``predict`` / ``predict_proba``, names the parameters searched on the
validation split, and says how it trains, streams, calibrates and is saved,
so stage 2 asks the entry instead of testing names or types. Registering a
new classifier is one :class:`Classifier` in ``_TABLE``. Parameters are
addressed by their short names (``C``, ``n_neighbors``); they are resolved to
the estimator's own nested names (``clf__estimator__C``) here.

This module imports scikit-learn only when an estimator is built, so the
settings classes check names against it without the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, UnknownNameError, first_line

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

def _sklearn(*steps):
    from sklearn.pipeline import Pipeline

    from .vectorize import Vectorize

    return Pipeline([("vectorize", Vectorize()), *steps])


def _logreg(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    return _sklearn(("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=5000, random_state=seed)))


def _dense(seed: int):
    from .dense import DenseHead

    return DenseHead(random_state=seed)


def _linear_svm(seed: int):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    # On cached CNN features the solver converges in under 50 iterations at every C of the grid;
    # on features no hyperplane separates, a large C runs to the iteration limit at a cost that
    # dwarfs every other classifier (BENCHMARKS.md, "How compare's cost grows"), so it stops at 100.
    return _sklearn(("scale", StandardScaler()),
                    ("clf", CalibratedClassifierCV(LinearSVC(max_iter=100, random_state=seed), cv=3)))


def _knn(seed: int):
    from sklearn.neighbors import KNeighborsClassifier

    from .sampled import AtMostRows

    return _sklearn(("clf", AtMostRows(KNeighborsClassifier(metric="cosine"), random_state=seed)))


def _hist_gbdt(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return _sklearn(("clf", HistGradientBoostingClassifier(max_iter=100, early_stopping=False,
                                                           random_state=seed)))


@dataclass(frozen=True)
class Classifier:
    """One registry entry.

    Attributes:
        name: what users type.
        summary: one line for the ``classifiers`` command.
        build: seed -> unfitted estimator.
        grid: short parameter name -> values searched on validation.
        class_weight: short name of the parameter that takes "balanced", or
            None when the model has none.
        saved_as: "joblib", or "keras" for a head saved as its own ``.keras`` file.
        alongside: trains in a background thread while the scikit-learn
            models fit in this one (the Keras head: TensorFlow releases the GIL).
        stops_early: ``fit`` takes ``validation_data`` and stops on it.
        refits: parameter -> the fitted attribute holding the value chosen in
            fitting (the epochs early stopping kept), used to refit without validation.
        streams: how it trains on features streamed from the file: "sgd"
            (an ``SGDClassifier`` per value of ``stream_param``, in the same
            passes), "batches" (its ``fit`` reads the rows itself), or None.
        stream_param: the parameter searched when streamed with "sgd".
        calibrates: ``--calibrate`` fits a map of its probabilities.
        cost: relative fit time; the slowest is started first.
        finetunes: stage 3 starts from this head.
        at_most_rows: parameters that cannot exceed the training rows (k nearest
            neighbours): larger values of the grid are left out on a small set.
        default: compared when ``--classifiers`` is not given. A model that costs
            most and never wins on cached CNN features is left to be asked for
            (BENCHMARKS.md, "Stage 2's defaults by measured value").
    """

    name: str
    summary: str
    build: Callable[[int], "BaseEstimator"]
    grid: dict[str, list] = field(default_factory=dict)
    class_weight: str | None = "class_weight"
    saved_as: str = "joblib"
    alongside: bool = False
    stops_early: bool = False
    refits: dict[str, str] = field(default_factory=dict)
    streams: str | None = None
    stream_param: str | None = None
    calibrates: bool = True
    cost: int = 1
    finetunes: bool = False
    at_most_rows: tuple[str, ...] = ()
    default: bool = True


_TABLE = (
    Classifier("logreg", "standardise, then logistic regression (lbfgs)", _logreg,
               {"C": [0.001, 0.01, 0.1, 1.0, 10.0]}, streams="sgd", stream_param="C"),
    Classifier("dense", "Keras head: Dense 256 relu, Dropout 0.5, sigmoid/softmax; early stopping "
               "on validation", _dense, saved_as="keras", alongside=True, stops_early=True,
               refits={"epochs": "best_epoch_"}, streams="batches", calibrates=False, cost=3,
               finetunes=True),
    Classifier("linear_svm", "standardise, then a linear SVM with sigmoid-calibrated probabilities "
               "(3-fold)", _linear_svm, {"C": [0.001, 0.01, 0.1, 1.0]}),
    Classifier("knn", "k nearest neighbours, cosine distance; past 20,000 training rows, among a "
               "seeded sample of 20,000 (`rows`)", _knn, {"n_neighbors": [5, 15, 31]},
               class_weight=None, at_most_rows=("n_neighbors",)),
    Classifier("hist_gbdt", "histogram gradient-boosted trees (100 rounds); not a default: on "
               "cached CNN features it costs most and ranks low", _hist_gbdt,
               {"max_leaf_nodes": [15, 31]}, cost=10, default=False),
)
CLASSIFIERS: dict[str, Classifier] = {c.name: c for c in _TABLE}
DEFAULTS = tuple(c.name for c in _TABLE if c.default)


def get_classifier(name: str) -> Classifier:
    try:
        return CLASSIFIERS[name]
    except KeyError:
        raise UnknownNameError(
            f"`--classifiers` must name entries of {', '.join(CLASSIFIERS)}. Got {name!r}."
        ) from None


def finetune_head() -> str:
    """The classifier stage 3 starts from."""
    return next(c.name for c in _TABLE if c.finetunes)


def chosen_in_fit(classifier: Classifier, model) -> dict:
    """The settings a fit chose itself (``refits``), to fit the same model without validation."""
    return {param: getattr(model, attribute) for param, attribute in classifier.refits.items()}


_HIDDEN = {"memory", "steps", "transform_input", "verbose", "verbose_feature_names_out",
           "estimator", "vectorize", "scale", "clf", "n_jobs", "ensemble"}


def public_params(estimator: BaseEstimator) -> dict[str, str]:
    """Short name -> full nested name, for every settable leaf parameter."""
    from sklearn.base import BaseEstimator

    by_short: dict[str, list[str]] = {}
    for full, value in estimator.get_params(deep=True).items():
        short = full.rsplit("__", 1)[-1]
        if short in _HIDDEN or isinstance(value, BaseEstimator):
            continue
        by_short.setdefault(short, []).append(full)
    # When a short name is ambiguous, the deepest (the model's own) wins.
    return {s: max(fulls, key=lambda f: f.count("__")) for s, fulls in by_short.items()}


def resolve_params(classifier: Classifier, known: dict[str, str], params: dict) -> dict[str, str]:
    """Check user parameter names against ``public_params``; short -> full names."""
    for short in params:
        if short not in known:
            raise ConfigError(
                f"Classifier {classifier.name!r} has no parameter {short!r}. "
                f"It takes: {', '.join(sorted(known))}. Fix: `--param {classifier.name}.NAME=V1,V2`."
            )
    return {short: known[short] for short in params}


def _validate(classifier: Classifier, estimator: BaseEstimator, given: dict[str, tuple]) -> None:
    """Each value the user gave, checked by scikit-learn's own parameter validation before any fit."""
    from sklearn.base import clone

    for full, (short, values) in given.items():
        for value in values:
            owner = clone(estimator).set_params(**{full: value})
            for step in full.split("__")[:-1]:  # the estimator the parameter belongs to
                owner = owner.get_params()[step]
            if not hasattr(owner, "_parameter_constraints"):
                continue
            try:
                owner._validate_params()
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"`--param {classifier.name}.{short}={value!r}` is refused: "
                                  f"{first_line(exc)} Fix: pass a value in that range.") from None


def configure(classifier: Classifier, seed: int, overrides: dict[str, list],
              class_weight: str | None, spatial: str) -> tuple[BaseEstimator, dict[str, list]]:
    """The estimator with fixed settings applied, and its search grid (full names).

    Args:
        overrides: short name -> values; one value fixes a parameter, several
            are searched (replacing the default grid for that name).
        class_weight: None or "balanced".
        spatial: how spatial feature maps become vectors ("flatten", "avg", "max").
    """
    estimator = classifier.build(seed)
    known = public_params(estimator)
    grid = {**classifier.grid, **overrides}
    names = resolve_params(classifier, known, grid)
    _validate(classifier, estimator, {names[k]: (k, v) for k, v in overrides.items()})
    fixed = {names[k]: v[0] for k, v in grid.items() if len(v) == 1}
    searched = {names[k]: list(v) for k, v in grid.items() if len(v) > 1}
    if class_weight is not None and classifier.class_weight is not None:
        fixed[known[classifier.class_weight]] = class_weight
    fixed[known["spatial"]] = spatial  # the head's own, or the Vectorize step's
    estimator.set_params(**fixed)
    return estimator, searched
