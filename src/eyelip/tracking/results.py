"""``eyelip results``: the runs of one MLflow experiment as a markdown table, grouped by recipe.

A recipe is a run's params without the ones that only say *where* or *how fast* it ran (the test
fold, threads, device, data path, tracking and export settings): the runs of a k-fold sweep share
a recipe and are summarised as mean ± std over their folds. Only the params that differ between
recipes are shown, so the table reads as "what changed and what it did". A recipe trained on two
machines (``eyelip.tracking.environment.cpu_label``: the CPU, its kernels, bf16, threads, or the GPU)
takes a row per machine: their minutes never mix, and bf16 and fp32 numbers stay apart.

Next to the table, a ledger (``OUT`` with ``.json``, e.g. ``docs/results/mini.json``) keeps what the
table needs of every run listed: a store that is lost or replaced (a scratch SQLite file, a reset
server) then takes none of the history with it. Each call lists the store's runs plus the ledger's
runs that the store no longer has (matched by MLflow run id), oldest first.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eyelip import atomic
from eyelip.errors import EyelipError
from eyelip.params import core
from eyelip.tracking import environment
from eyelip.tracking.store import tracking_uri

# Beside the runtime section (eyelip.params.core.RUNTIME): params that name the fold a run holds out, where
# the data lies, a diagnostic that leaves the model as it is (val_raw), and stages after training.
NOT_RECIPE = {"split.fold", "train.val_raw", "data.root"}
NOT_RECIPE_SECTIONS = (f"{core.RUNTIME}.", "tracking.", "export.", "sample.")
TARGETS = "data.targets."
AUX_TARGETS = "data.aux_targets."
TABLE_METRICS = ("train_minutes", "train_images_per_second", "best_val_iou")  # and every test_iou*


@dataclass
class Run:
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    id: str = ""  # MLflow run id
    start: int = 0  # start time, ms since the epoch: the table's order
    env: dict[str, str] = field(default_factory=dict)  # its env.* tags (eyelip.tracking.environment)

    @property
    def recipe(self) -> tuple[tuple[str, str], ...]:
        params = {
            k: v
            for k, v in core.renamed(self.params).items()
            if k not in NOT_RECIPE and not k.startswith((*NOT_RECIPE_SECTIONS, TARGETS, AUX_TARGETS))
        }
        # One entry for the whole layout, so switching {eyes_lips} for {eyes, lips} reads as one change.
        params["data.targets"] = "; ".join(f"{t}={self.params[TARGETS + t]}" for t in self.targets)
        aux = self._names(AUX_TARGETS)
        # Runs from before auxiliary targets existed had none; without any, their weight has no effect.
        params["data.aux_targets"] = "; ".join(f"{t}={self.params[AUX_TARGETS + t]}" for t in aux) or "{}"
        if not aux:
            params.pop("train.aux_weight", None)
        return tuple(sorted(params.items()))

    @property
    def targets(self) -> list[str]:
        """Output channels: tracking logs ``data.targets`` flattened, one ``data.targets.<name>`` each."""
        return self._names(TARGETS)

    def _names(self, prefix: str) -> list[str]:
        return [k.removeprefix(prefix) for k in self.params if k.startswith(prefix)]


@dataclass
class Recipe:
    params: dict[str, str]
    runs: list[Run] = field(default_factory=list)
    machine: str = ""  # what its runs trained on (cpu_label); "" for runs that recorded no environment


def group(runs: Iterable[Run]) -> list[Recipe]:
    """Runs with the same recipe on the same machine, in the order each pair first appears."""
    recipes: dict[tuple[tuple[tuple[str, str], ...], str], Recipe] = {}
    for run in runs:
        recipe, machine = run.recipe, environment.cpu_label(run.env)
        recipes.setdefault((recipe, machine), Recipe(dict(recipe), machine=machine)).runs.append(run)
    return list(recipes.values())


def differing(recipes: Sequence[Recipe]) -> list[str]:
    keys = sorted({k for r in recipes for k in r.params})
    return [k for k in keys if len({r.params.get(k) for r in recipes}) > 1]


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _metric(runs: Sequence[Run], key: str) -> list[float]:
    return [r.metrics[key] for r in runs if key in r.metrics]


def _headline(runs: Sequence[Run]) -> list[float]:
    """Test IoU of all targets as one mask: a one-target run's ``test_iou``; with several targets,
    ``test_iou_combined`` (their macro mean, ``test_iou``, would not compare with one mask)."""
    return _metric([r for r in runs if len(r.targets) <= 1], "test_iou") + _metric(
        [r for r in runs if len(r.targets) > 1], "test_iou_combined"
    )


def _names(runs: Sequence[Run]) -> str:
    names = sorted({r.name for r in runs})
    return ", ".join(names) if len(names) <= 2 else f"{names[0]}, … ({len(names)} runs)"


def _fold(run: Run) -> str:
    folds = run.params.get("split.folds", "0")
    return f"{run.params.get('split.fold', '0')}/{folds}" if folds not in ("0", "None") else "–"


def table(recipes: Sequence[Recipe]) -> str:
    """One row per recipe and machine: differing params, runs, folds, minutes, speed, machine (– for runs
    from before environments were recorded), test IoU (per target), val IoU."""
    keys = differing(recipes)
    targets = sorted({t for r in recipes for run in r.runs for t in run.targets if len(run.targets) > 1})
    # Minutes depend on how busy the machine was; images/s says how fast it was training, and on which CPU.
    header = [
        "recipe (params that differ)",
        "runs",
        "folds",
        "train min/run",
        "train img/s",
        "trained on",
        "test IoU (one mask)",
        *(f"test IoU {t}" for t in targets),
        "best val IoU",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for recipe in recipes:
        runs = recipe.runs
        label = ", ".join(f"`{k}={recipe.params.get(k, '–')}`" for k in keys) or "(the recipe all rows share)"
        row = [
            label,
            _names(runs),
            ", ".join(sorted(_fold(r) for r in runs)),
            mean_std(_metric(runs, "train_minutes"), 1),
            mean_std(_metric(runs, "train_images_per_second"), 0),
            recipe.machine or "–",
            mean_std(_headline(runs)),
        ]
        row += [mean_std(_metric(runs, f"test_iou_{t}")) for t in targets]
        row.append(mean_std(_metric(runs, "best_val_iou")))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def load_runs(experiment: str, uri: str | None = None) -> list[Run]:
    """Finished runs of ``experiment`` that reached evaluation (have ``test_iou``), oldest first; runs
    that were interrupted (KILLED), failed or are still running are left out, and named."""
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise EyelipError(f"{uri}: no MLflow store; run `dvc repro` first (or set MLFLOW_TRACKING_URI)")
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise EyelipError(f"no MLflow experiment {experiment!r} in {uri}; experiments: {', '.join(names) or 'none'}")
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"], max_results=10_000)
    unfinished = [
        f"{r.info.run_name or r.info.run_id[:8]} ({r.info.status})" for r in runs if r.info.status != "FINISHED"
    ]
    if unfinished:
        print(f"left out, as they did not finish: {', '.join(unfinished)}")
    return [
        Run(
            r.info.run_name or r.info.run_id[:8],
            dict(r.data.params),
            dict(r.data.metrics),
            r.info.run_id,
            r.info.start_time or 0,
            {k: v for k, v in r.data.tags.items() if k.startswith(environment.PREFIX)},
        )
        for r in runs
        if r.info.status == "FINISHED" and "test_iou" in r.data.metrics
    ]


def read_ledger(path: Path, experiment: str) -> list[Run]:
    """The runs an earlier call listed for ``experiment`` (none if ``path`` does not exist)."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        runs = [Run(**run) for run in data["runs"]]
        listed = data["experiment"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EyelipError(f"{path}: not a results ledger ({exc!r}); delete it to list the store's runs only") from exc
    if listed != experiment:
        raise EyelipError(f"{path}: the ledger of experiment {listed!r}, not {experiment!r}; pass another --ledger")
    return runs


def ledger_text(experiment: str, runs: Sequence[Run]) -> str:
    kept = [
        {
            **asdict(run),
            "metrics": {k: v for k, v in run.metrics.items() if k in TABLE_METRICS or k.startswith("test_iou")},
        }
        for run in runs
    ]
    return json.dumps({"experiment": experiment, "runs": kept}, indent=1, sort_keys=True) + "\n"


def merge(kept: Sequence[Run], current: Sequence[Run]) -> list[Run]:
    """The store's runs and the ledger's runs that the store no longer has, oldest first."""
    ids = {run.id for run in current}
    return sorted([*(run for run in kept if run.id not in ids), *current], key=lambda run: run.start)


def environment_lines(recipes: Sequence[Recipe]) -> list[str]:
    """Which ``env.*`` tags differ between the runs listed, and which rows hold runs that differ in a tag
    the machine does not name (a package version, the lock): their spread is not only the folds'."""
    recorded = [run for recipe in recipes for run in recipe.runs if run.env]
    keys = sorted({k for run in recorded for k in run.env})
    varying = {k: sorted({run.env.get(k, "—") for run in recorded}) for k in keys}
    varying = {k: values for k, values in varying.items() if len(values) > 1}
    if not recorded:
        return []
    if not varying:
        return [f"All {len(recorded)} runs that record their environment ran in the same one."]

    def runs_with(key: str, value: str) -> str:
        return _names([run for run in recorded if run.env.get(key, "—") == value])

    lines = [
        "Environments differ (`env.*` tags) between runs: "
        + "; ".join(
            f"`{k.removeprefix(environment.PREFIX)}`: " + ", ".join(f"{v} ({runs_with(k, v)})" for v in values)
            for k, values in varying.items()
        )
    ]
    for number, recipe in enumerate(recipes, 1):
        split = sorted(k for k in varying if len({run.env.get(k, "—") for run in recipe.runs if run.env}) > 1)
        if split:
            lines.append(
                f"Row {number}: same params and machine, different environments ({', '.join(split)}): "
                "its spread is not only the folds' or the seeds'."
            )
    return lines


def render(experiment: str, runs: Sequence[Run]) -> str:
    if not runs:
        raise EyelipError(f"experiment {experiment!r} has no finished runs with test metrics")
    recipes = group(runs)
    common = {k: v for k, v in recipes[0].params.items() if k not in differing(recipes)}
    shared = ", ".join(f"`{k}={v}`" for k, v in sorted(common.items()))
    return "\n".join(
        [
            f"# Results: MLflow experiment `{experiment}`",
            "",
            f"Generated by `eyelip results --experiment {experiment}` from the MLflow store; do not edit by hand.",
            "One row per recipe and machine (`trained on`); the runs of a k-fold sweep (`split.fold` = 0..k-1) "
            "share a row: mean ± std over folds (sample std). Test IoU is pooled over the test fold at the mask "
            "size (`resize.size`), with all targets as one mask (eyes and lips merged: the reference notebook's "
            "target), so one- and two-target runs compare; "
            "`best val IoU` is the validation IoU of the epoch kept, the number recipes were chosen by.",
            "",
            table(recipes),
            "",
            f"Shared by all rows: {shared}",
            "",
            *(line + "\n" for line in environment_lines(recipes)),
        ]
    )


def run_results(experiment: str, out: str | Path, ledger: str | Path | None = None) -> None:
    """``eyelip results``: the experiment's runs by recipe in ``out``, kept in ``ledger`` (default: OUT.json)."""
    out = Path(out)
    ledger = Path(ledger) if ledger else out.with_suffix(".json")
    kept = read_ledger(ledger, experiment)
    try:
        current = load_runs(experiment)
    except EyelipError as exc:
        if not kept:
            raise
        print(f"{exc}: listing the {len(kept)} runs of {ledger} only")
        current = []
    runs = merge(kept, current)
    text = render(experiment, runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, text)
    atomic.write_text(ledger, ledger_text(experiment, runs))
    print(
        f"{out}: {text.count(chr(10) + '| ') - 1} recipes, {len(runs)} runs ({len(runs) - len(current)} "
        f"from {ledger} only) of experiment {experiment!r}"
    )
