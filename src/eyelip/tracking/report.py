"""``eyelip report``: what this workspace's pipeline run changed against a baseline git revision.

One markdown file: a one-line verdict on test IoU (``metrics/evaluate.json`` ``iou``, against the
baseline revision's, within a tolerance) with the registry's champion decision, then the metrics
and params diffs from the real ``dvc metrics diff`` / ``dvc params diff``, then the training
curves, threshold sweep and overlay grid. CI posts it on pull requests; locally it previews the
same report before a push.

Images are referenced by relative path (default: the report works next to the workspace, e.g.
in an editor's preview or an uploaded CI artifact), embedded as base64 data URIs (``--embed``:
one self-contained file, but GitHub strips data URIs from comments and job summaries) or left
out (``--no-images``: for the PR comment and job summary, which can show neither).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eyelip import atomic
from eyelip.errors import EyelipError
from eyelip.params import core, whole
from eyelip.tracking import environment
from eyelip.tracking import store as tracking

EVALUATE = "metrics/evaluate.json"
HEADLINE = "iou"
TOLERANCE = 0.002
# Shown in the main table (changed or not, for the headline); other files' changes go in a fold.
MAIN_FILES = ("metrics/evaluate.json", "metrics/train.json")
ALWAYS_SHOWN = {(EVALUATE, "iou"), (EVALUATE, "iou_native")}
IMAGES = (
    ("IoU and Jaccard loss per epoch", "metrics/train_curves.png"),
    ("IoU by threshold (test)", "metrics/evaluate_thresholds.png"),
    ("Best and worst test images (prediction vs ground truth)", "metrics/evaluate_overlays.png"),
)


@dataclass(frozen=True)
class Verdict:
    word: str  # better | worse | same | new (no baseline IoU) | not comparable (different data)
    new: float
    old: float | None
    tolerance: float
    data: tuple[str, str] | None = None  # (baseline, this run) data versions when they differ

    def line(self, baseline: str) -> str:
        if self.old is None:
            return f"**new**: test IoU {self.new:.4f}; {baseline} has no test IoU to compare with"
        if self.data is not None:
            return (
                f"**{self.word}**: test IoU {self.new:.4f} on data {self.data[1]} vs {self.old:.4f} on data "
                f"{self.data[0]} at {baseline}"
            )
        return (
            f"**{self.word}**: test IoU {self.new:.4f} vs {self.old:.4f} at {baseline} "
            f"({self.new - self.old:+.4f}, tolerance ±{self.tolerance:g})"
        )


def verdict(
    old: float | None, new: float, tolerance: float = TOLERANCE, data: tuple[str, str] | None = None
) -> Verdict:
    """better / worse only when the change exceeds ``tolerance``: run-to-run noise is not a result; and
    only on the same data: ``data`` = (baseline, this run) data versions, when they differ."""
    if old is None:
        word = "new"
    elif data is not None:
        word = "not comparable (different data)"
    elif new > old + tolerance:
        word = "better"
    elif new < old - tolerance:
        word = "worse"
    else:
        word = "same"
    return Verdict(word, new, old, tolerance, data)


def dvc_json(root: Path, *args: str) -> dict[str, Any]:
    """Run the real ``dvc`` (this interpreter's) with ``--json`` and parse its output."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EyelipError(f"`dvc {' '.join(args)}` failed: {detail}")
    return json.loads(proc.stdout or "{}")


def resolve_baseline(root: Path, rev: str) -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise EyelipError(
            f"baseline {rev!r}: not a commit of this git repository "
            "(in CI, check out with full history: fetch-depth: 0)"
        )
    return proc.stdout.strip()


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = value if isinstance(value, str) else json.dumps(value)
        return text.replace("|", "\\|")
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def fmt_diff(entry: Mapping[str, Any]) -> str:
    diff = entry.get("diff")
    if not isinstance(diff, (int, float)) or isinstance(diff, bool):
        return "—"
    return "0" if diff == 0 else f"{diff:+.4g}"


def metric_rows(diff: Mapping[str, Mapping[str, Mapping[str, Any]]], targets: list[str]) -> tuple[list[str], list[str]]:
    """Table rows of changed metrics (and the headline, always): (main, folded).

    Main: pooled evaluate and train metrics. Folded: per-target copies (``iou_eyes_lips``), the
    data stages' counts and export parity/latency, which change with the machine, not the model.
    """
    main, other = [], []
    order = {name: i for i, name in enumerate(MAIN_FILES)}
    suffixes = tuple(f"_{target}" for target in targets)
    for path in sorted(diff, key=lambda p: (order.get(p, len(order)), p)):
        for key in sorted(diff[path], key=lambda k: ((path, k) not in ALWAYS_SHOWN, k)):
            entry = diff[path][key]
            if entry.get("old") == entry.get("new") and (path, key) not in ALWAYS_SHOWN:
                continue
            row = f"| `{path}` | `{key}` | {fmt(entry.get('old'))} | {fmt(entry.get('new'))} | {fmt_diff(entry)} |"
            (main if path in MAIN_FILES and not (suffixes and key.endswith(suffixes)) else other).append(row)
    return main, other


def metrics_section(diff: Mapping[str, Any], targets: list[str]) -> list[str]:
    header = ["| file | metric | baseline | this run | change |", "|---|---|---:|---:|---:|"]
    main, other = metric_rows(diff, targets)
    lines = ["## Metrics", ""]
    lines += header + main if main else ["No metric changed."]
    if other:
        lines += [
            "",
            f"<details><summary>{len(other)} more changed metrics (per target, data stages, export "
            "parity and latency)</summary>",
            "",
            *header,
            *other,
            "",
            "</details>",
        ]
    return lines


def params_section(diff: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    rows = [
        f"| `{key}` | {fmt(entry.get('old'))} | {fmt(entry.get('new'))} |"
        for path in sorted(diff)
        for key, entry in sorted(diff[path].items())
    ]
    lines = ["## Params", ""]
    return lines + (["| param | baseline | this run |", "|---|---:|---:|", *rows] if rows else ["No param changed."])


def images_section(root: Path, out_dir: Path, mode: str) -> list[str]:
    present = [(title, root / rel) for title, rel in IMAGES if (root / rel).is_file()]
    if mode == "none" or not present:
        names = ", ".join(f"`{path.relative_to(root)}`" for _, path in present) or "none (run `dvc repro`)"
        return ["## Plots", "", f"Not shown here: {names}."]
    lines = ["## Plots", ""]
    for title, path in present:
        if mode == "embed":
            src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
        else:
            src = Path(os.path.relpath(path, out_dir)).as_posix()
        lines += [f"### {title}", "", f"![{title}]({src})", ""]
    return lines


def champion_line(root: Path, registered_model: str) -> str | None:
    """The export stage's registry decision for this workspace's MLflow run, or None when unknown; for
    a run that did not finish (interrupted, failed, or still running), a warning that says so instead.

    Read back from the run's ``registry_version``/``registry_champion`` tags (set by the export
    stage) and the kept champion's ``test_iou`` tag.
    """
    run_file = root / tracking.RUN_FILE
    uri = tracking.tracking_uri()
    # Opening a SQLite URI creates the file: never leave an empty store behind.
    if not run_file.is_file() or (uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file()):
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        client = MlflowClient(uri)
        run = client.get_run(tracking.read_run_id(run_file))
        if run.info.status != "FINISHED":
            return (
                f"**warning**: MLflow run `{run.info.run_name}` ({tracking.RUN_FILE}) is {run.info.status}, "
                "not FINISHED: this workspace's model and metrics may not be its own; run `dvc repro`"
            )
        tags = run.data.tags
        if "registry_decision" in tags:  # the gate's own line, naming what it compared
            return tags["registry_decision"]
        if "registry_version" not in tags:
            return None
        version, champion = int(tags["registry_version"]), int(tags["registry_champion"])
        if version == champion:
            return f"champion gate: v{version} promoted to `champion`"
        kept_iou = client.get_model_version(registered_model, str(champion)).tags.get("test_iou", "?")
        return f"champion gate: kept v{champion} (test IoU {kept_iou}); v{version} is `candidate` only"
    except MlflowException:
        return None  # a store that lost the run (e.g. a fresh CI store): say nothing rather than guess


def git_show(root: Path, sha: str, path: str) -> str | None:
    """``path``'s text at commit ``sha``; None where the commit has no such file."""
    proc = subprocess.run(["git", "show", f"{sha}:{path}"], cwd=root, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def baseline_data_version(root: Path, sha: str) -> str:
    """``data_version`` (:func:`eyelip.tracking.store.data_version`) of the baseline commit's dvc.lock."""
    text = git_show(root, sha, "dvc.lock")
    if text is None:
        return "unknown"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "dvc.lock").write_text(text)
        return tracking.data_version(Path(tmp) / "dvc.lock")


def _at(params: Any, key: str) -> Any:
    """The value at a dotted key of a parsed params file, None where it is absent."""
    for part in key.split("."):
        params = params.get(part) if isinstance(params, dict) else None
    return params


def unrecorded_params(lock_text: str | None, params_text: str | None) -> list[tuple[str, Any, Any]]:
    """``(key, in dvc.lock, in params.yaml)`` for each param whose value in params.yaml is not the one
    dvc.lock recorded for the run that produced the committed metrics: a commit that changed params
    without re-running the pipeline, whose metrics therefore belong to other params."""
    if not lock_text or not params_text:
        return []
    lock, params = yaml.safe_load(lock_text) or {}, yaml.safe_load(params_text) or {}
    found: dict[str, tuple[Any, Any]] = {}
    for stage in (lock.get("stages") or {}).values():
        for key, value in ((stage.get("params") or {}).get(core.PARAMS_FILE) or {}).items():
            recorded, current = core.flatten({key: value}), core.flatten({key: _at(params, key)})
            for leaf in sorted({*recorded, *current}):
                if recorded.get(leaf) != current.get(leaf):
                    found[leaf] = (recorded.get(leaf), current.get(leaf))
    return [(key, *found[key]) for key in sorted(found)]


def provenance_lines(root: Path, sha: str, label: str) -> tuple[list[str], list[str]]:
    """(notes for the verdict line, the Provenance section): metrics that do not belong to the params
    beside them (baseline commit, this workspace) and what differs between the two environments."""
    notes, lines = [], ["## Provenance", ""]
    sides = (
        (f"baseline {label}", git_show(root, sha, "dvc.lock"), git_show(root, sha, core.PARAMS_FILE)),
        (
            "this workspace",
            *((root / f).read_text() if (root / f).is_file() else None for f in ("dvc.lock", core.PARAMS_FILE)),
        ),
    )
    for side, lock_text, params_text in sides:
        stale = unrecorded_params(lock_text, params_text)
        if stale:
            keys = ", ".join(f"`{k}` {fmt(old)} (dvc.lock) vs {fmt(new)}" for k, old, new in stale)
            notes.append(f"{side}'s metrics were produced with other params than its params.yaml ({keys})")
            lines += [
                f"- **{side}**: its metrics were produced with params that differ from its params.yaml "
                f"(dvc.lock records the run's): {keys}. Compare against a commit that ran `dvc repro` "
                "after its last params change.",
                "",
            ]
    old = environment.read(git_show(root, sha, environment.FILE))
    path = root / environment.FILE
    new = environment.read(path.read_text() if path.is_file() else None)
    changed = environment.differences(old, new)
    if changed:
        names = ", ".join(k.removeprefix(environment.PREFIX) for k, _, _ in changed)
        notes.append(f"ran in another environment ({names})")
        lines += [
            "| environment | baseline | this run |",
            "|---|---|---|",
            *(f"| `{k}` | {fmt(a)} | {fmt(b)} |" for k, a, b in changed),
        ]
    elif old and new:
        lines.append(
            f"Same environment as the baseline (lock {new.get('env.lock')}, torch {new.get('env.torch')}, "
            f"{environment.cpu_label(new)})."
        )
    else:
        lines.append(
            f"No environment to compare: `{environment.FILE}` is missing at "
            f"{'the baseline' if not old else 'this workspace'} (written by the train stage)."
        )
    return notes, lines


def build_report(root: Path, baseline: str, out: Path, images: str = "relative", tolerance: float = TOLERANCE) -> str:
    if not (root / EVALUATE).is_file():
        raise EyelipError(f"{EVALUATE}: not found; run `dvc repro` before `eyelip report`")
    sha = resolve_baseline(root, baseline)
    metrics = dvc_json(root, "metrics", "diff", sha, "--all")
    params = dvc_json(root, "params", "diff", sha)
    headline = metrics.get(EVALUATE, {}).get(HEADLINE, {})
    new = json.loads((root / EVALUATE).read_text()).get(HEADLINE)
    if not isinstance(new, (int, float)):
        raise EyelipError(f"{EVALUATE}: no numeric {HEADLINE!r}; re-run `dvc repro evaluate`")
    old = headline.get("old")
    versions = (baseline_data_version(root, sha), tracking.data_version(root / "dvc.lock"))
    differ = versions[0] != versions[1] and "unknown" not in versions  # unknown: no claim either way
    result = verdict(
        old if isinstance(old, (int, float)) else None, float(new), tolerance, versions if differ else None
    )
    label = f"`{sha[:7]}`" if sha.startswith(baseline) else f"`{baseline}` ({sha[:7]})"
    first = result.line(label)
    notes, provenance = provenance_lines(root, sha, label)
    if notes:
        first += "; **note**: " + "; ".join(notes)
    params_now = whole.load(root / core.PARAMS_FILE)
    gate = champion_line(root, params_now.export.registered_model)
    if gate:
        first += f"; {gate}"
    targets = list(params_now.data.targets)
    lines = [first, "", f"# eyelip: this workspace vs {label}", ""]
    lines += metrics_section(metrics, targets) + [""] + params_section(params) + [""] + provenance + [""]
    lines += images_section(root, out.parent.resolve(), images)
    return "\n".join(lines).rstrip() + "\n"


def run_report(baseline: str, out: str | Path, tolerance: float = TOLERANCE, images: str = "relative") -> None:
    """``eyelip report``: this workspace against ``baseline``; ``images``: relative | embed | none."""
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        raise EyelipError("dvc.yaml: not found; run `eyelip report` from the project root")
    out = Path(out)
    text = build_report(root, baseline, out, images, tolerance)
    atomic.write_text(out, text)
    print(text.splitlines()[0])
    print(f"report: {out}")
