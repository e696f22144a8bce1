"""The MLflow Model Registry gate: a model replaces the champion only when both were scored alike.

Every registered version carries its lineage as tags (:class:`Lineage`): its contract
(``eyelip.model.spec.ModelSpec``, written as in the ONNX metadata), whose layout (targets and the
parts fused into them, input channels and prior, input and output size) decides what it can be
compared with, and what it was tested on (``data_version`` from dvc.lock, and ``test_split``: a
hash of the test images and masks themselves, so it also tells two datasets apart that dvc.lock
does not). The gate then compares
like with like:

- same test data (equal ``test_split``): the two test IoUs, as recorded;
- other test data, same layout: the champion is re-scored on the candidate's test set with the same
  evaluation code (:func:`eyelip.evaluation.evaluate.evaluate` through its ONNX model) and that number
  is compared with the candidate's;
- another layout: no number is compared. A registered name holds one layout, so the candidate goes
  to the name its layout decides, ``<export.registered_model>-<layout>`` (see :func:`layout_name`),
  and is gated there. The first layout registered keeps the plain name; profiles that train another
  layout set their own ``export.registered_model`` so the names stay short.

Each decision is one line naming what was compared; the candidate always gets the ``candidate``
alias, and ``champion`` moves only on a strictly higher IoU. The numbers compared are the numbers
stored: the ``test_iou`` tag (six decimals, :func:`recorded`) for the candidate as for the champion,
so a re-export of the same model ties with itself, and a tie keeps the champion (and says so).

An unchanged model registers no new version: each version carries ``model_digest`` (a hash of the
ONNX graph, :func:`model_digest`), and a model whose digest and test split match a version's reuses
that version (the log line says so). A version always points at the MLflow run that trained it: it
is logged in that run (``models/run.json``), and its ``mlflow_run_id`` tag names it.

**Publishers racing.** Several exports may finish together, on several machines against one
tracking server. Reading the champion and then moving the alias would let the slower one overwrite
the better one. So no publisher compares two versions: each, after registering its own, sets
``champion`` to the best of *all* versions on its test data (:func:`best`: highest recorded test
IoU, ties to the earliest version, a deterministic function of the versions alone), then reads the
alias and the versions again, and repeats until a read after its own last write agrees
(:func:`settle`). Every write happens before its writer's final read, so the last read of all comes
after the last write and after every publisher's version was registered: it saw the best of all
versions aliased, whatever order the publishers ran in; and every publisher that reads this state
writes nothing. A champion tested on other data joins the comparison re-scored (cached per
publisher), so publishers on different test data each compare by their own data, and the last to
settle decides between them. Two publishers of the same new model at once may both register it
(the digest check and the registration are two calls); the versions tie and the earlier one wins.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from eyelip.errors import EyelipError
from eyelip.inference.predictors import Predictor
from eyelip.model.spec import LAYOUT, ModelSpec
from eyelip.params.export import ExportParams
from eyelip.tracking.store import Tracked

if TYPE_CHECKING:
    from eyelip.evaluation.evaluate import TestSplit


@dataclass(frozen=True)
class Lineage:
    """What a model is (its contract, whose layout decides what it is comparable with) and what its
    test IoU was measured on."""

    spec: ModelSpec
    data_version: str = "unknown"
    test_split: str = "unknown"
    test_images: int = 0

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Lineage | None:
        """The lineage a version was registered with; None for versions registered before lineage."""
        if not all(key in tags for key in LAYOUT):
            return None
        return cls(
            ModelSpec.from_strings(tags, "registry tags"),
            tags.get("data_version", "unknown"),
            tags.get("test_split", "unknown"),
            int(tags.get("test_images", 0)),
        )

    @property
    def targets(self) -> list[str]:
        return self.spec.targets

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def tags(self) -> dict[str, str]:
        return {
            **self.spec.to_strings(),
            "data_version": self.data_version,
            "test_split": self.test_split,
            "test_images": str(self.test_images),
        }

    def describe(self) -> str:
        """e.g. ``[eyes, lips] from 5 x 256 px (prior facemesh_flip) -> 128 px``."""
        spec = self.spec
        prior = "" if spec.prior == "none" else f" (prior {spec.prior})"
        return f"[{', '.join(spec.targets)}] from {spec.input_channels} x {spec.input_size} px{prior} -> {spec.size} px"

    def differences(self, other: Lineage) -> list[str]:
        """Layout keys that differ, as ``key: mine vs theirs``; empty when the models are interchangeable."""
        return self.spec.differences(other.spec)

    def tested_on(self) -> str:
        return f"test split {self.test_split} ({self.test_images} images, data {self.data_version})"


def layout_name(base: str, lineage: Lineage) -> str:
    """``<base>-<targets>-<input>to<size>[-<prior>]-<hash>``: readable, and distinct for every layout
    (the hash covers what the words leave out, such as the parts fused into each target)."""
    spec = lineage.spec
    digest = hashlib.sha1(json.dumps(spec.layout(), sort_keys=True).encode()).hexdigest()[:6]
    prior = "" if spec.prior == "none" else f"-{spec.prior}"
    return f"{base}-{'.'.join(spec.targets)}-{spec.input_size}to{spec.size}{prior}-{digest}"


@dataclass
class Decision:
    registered_model: str
    version: int
    test_iou: float  # as recorded (see :func:`recorded`)
    champion: int
    promoted: bool
    compared: str  # same test set | re-scored on this test set | no champion | not comparable
    previous_champion: int | None = None
    previous_champion_test_iou: float | None = None  # on the compared test set
    message: str = ""
    reused: bool = False  # the version already held this model (same digest, same test data)


def recorded(test_iou: float) -> float:
    """A test IoU as the registry stores it (the ``test_iou`` tag, six decimals) and as the gate compares
    it, for the candidate as for the champion: an identical model ties with itself, never beats it."""
    return float(f"{test_iou:.6f}")


def model_digest(onnx_path: str | Path) -> str:
    """Hash of the ONNX graph (weights and operations), leaving out the file's metadata, which names the
    MLflow run and data version: equal digests mean the same network."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()[:16]


def champion_lineage(client: Any, name: str, version: str) -> Lineage:
    """A version's lineage from its tags or, for versions registered without them, its ONNX metadata."""
    tags = client.get_model_version(name, version).tags
    return Lineage.from_tags(tags) or Lineage(load_version(name, version).spec)


def load_version(name: str, version: str) -> Predictor:
    """A registered version's ONNX model (the ``onnx`` or the eyelip pyfunc flavour) as a predictor."""
    import mlflow

    from eyelip.inference.predictors import OnnxPredictor

    where = Path(tempfile.mkdtemp(prefix="eyelip-champion-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(where)))
    found = sorted(local.rglob("*.onnx"))
    if not found:
        raise EyelipError(f"registry {name!r} v{version}: no ONNX model among its files; cannot re-score it")
    return OnnxPredictor(found[0])


def rescore(predictor: Predictor, test: TestSplit, batch_size: int = 32) -> float:
    """Test IoU of ``predictor`` on ``test``, by the evaluate stage's own code."""
    from eyelip.evaluation.evaluate import evaluate

    return float(evaluate(predictor, test.batches(batch_size)).metrics["iou"])


def choose_name(client: Any, base: str, lineage: Lineage) -> tuple[str, str | None]:
    """``base`` unless its champion takes another layout; then the layout's own name, and why."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_registered_model(base).aliases.get("champion")
    except MlflowException:
        return base, None  # not registered yet
    if champion is None:
        return base, None
    differences = lineage.differences(champion_lineage(client, base, str(champion)))
    if not differences:
        return base, None
    name = layout_name(base, lineage)
    return name, (
        f"registry {base!r}: champion v{champion} has another layout ({'; '.join(differences)}): "
        f"not compared; this model goes to {name!r}"
    )


SETTLE_ROUNDS = 20


def champion_alias(client: Any, name: str) -> int | None:
    alias = client.get_registered_model(name).aliases.get("champion")
    return None if alias is None else int(alias)


def rivals(client: Any, name: str, lineage: Lineage) -> dict[int, float]:
    """The versions of ``name`` with ``lineage``'s layout tested on its test data: version -> recorded IoU."""
    found = {}
    for version in client.search_model_versions(f"name = '{name}'"):
        theirs = Lineage.from_tags(version.tags)
        if (
            theirs is not None
            and "test_iou" in version.tags
            and theirs.test_split == lineage.test_split
            and not lineage.differences(theirs)
        ):
            found[int(version.version)] = recorded(float(version.tags["test_iou"]))
    return found


def best(scores: Mapping[int, float]) -> int:
    """The version with the highest recorded test IoU; a tie goes to the earliest, so a version that only
    equals the champion never moves it, and every publisher picks the same one from the same versions."""
    return min(scores, key=lambda version: (-scores[version], version))


def same_model(client: Any, name: str, digest: str, lineage: Lineage) -> int | None:
    """The earliest version of ``name`` holding the model ``digest`` tested on ``lineage``'s test data."""
    found = [
        int(v.version)
        for v in client.search_model_versions(f"name = '{name}'")
        if v.tags.get("model_digest") == digest and v.tags.get("test_split") == lineage.test_split
    ]
    return min(found, default=None)


@dataclass
class Elsewhere:
    """A champion not among the rivals: its IoU re-scored on the candidate's test data, or None (another
    layout, so nothing is compared), and the words that say so."""

    test_iou: float | None
    basis: str


def elsewhere(
    client: Any, name: str, champion: int, candidate: str, lineage: Lineage, score_champion: Callable[[str, str], float]
) -> Elsewhere:
    old = champion_lineage(client, name, str(champion))
    differences = lineage.differences(old)
    if differences:  # only a champion aliased by hand gets here: choose_name keeps layouts apart
        return Elsewhere(None, f"it has another layout ({'; '.join(differences)}), so no test IoU is compared")
    return Elsewhere(
        recorded(score_champion(name, str(champion))),
        f"v{champion} re-scored on {candidate}'s {lineage.tested_on()}; it was tested on "
        f"{old.tested_on() if old.test_split != 'unknown' else 'unrecorded data'}",
    )


def set_alias(client: Any, name: str, alias: str, version: int, tries: int = 5) -> None:
    """``client.set_registered_model_alias``, retried: two publishers writing one alias at once on a
    PostgreSQL store collide (MLflow reads, then inserts: a unique-key violation for the second), and a
    write is idempotent, so trying again is safe; :func:`settle` re-reads whatever was written."""
    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            client.set_registered_model_alias(name, alias, str(version))
            return
        except MlflowException:
            if attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def settle(
    client: Any, name: str, version: int, lineage: Lineage, score_champion: Callable[[str, str], float]
) -> Decision:
    """Point ``champion`` at the best version on ``version``'s test data and re-read until a read after
    this publisher's last write agrees (the module docstring says why that closes a race); a champion
    tested elsewhere is re-scored on this test data (``score_champion(name, version)``) and kept on a tie."""
    new, away = f"v{version}", {}  # away: champions outside the rivals, each judged once
    first = champion = champion_alias(client, name)
    for _ in range(SETTLE_ROUNDS):
        scores = rivals(client, name, lineage)
        choice = best(scores)
        if champion is not None and champion not in scores:
            if champion not in away:
                away[champion] = elsewhere(client, name, champion, new, lineage, score_champion)
            theirs = away[champion].test_iou
            if theirs is None or scores[choice] <= theirs:
                choice = champion
        if choice == champion:
            return explain(name, version, lineage, first, champion, scores, away)
        set_alias(client, name, "champion", choice)
        champion = champion_alias(client, name)  # another publisher may have written since
    raise EyelipError(
        f"registry {name!r}: alias 'champion' still moving after {SETTLE_ROUNDS} rounds of "
        f"publishers; run the export again to settle it"
    )


def explain(
    name: str,
    version: int,
    lineage: Lineage,
    first: int | None,
    final: int,
    scores: Mapping[int, float],
    away: Mapping[int, Elsewhere],
) -> Decision:
    """The decision for ``version`` once ``champion`` settled on ``final``: one line naming what was
    compared (``first``: the champion this publisher found)."""
    new, score = f"v{version}", scores[version]
    other = first if final == version else final
    decision = Decision(name, version, score, final, final == version and first != version, "no champion", first)
    if other is None:
        decision.message = (
            f"{new} promoted to champion (no champion before): test IoU {score:.4f} on {lineage.tested_on()}"
        )
        return decision
    if other == version:
        decision.message = f"{new} stays champion: test IoU {score:.4f} on {lineage.tested_on()}"
        return decision
    if other in scores:
        theirs, basis, decision.compared = scores[other], f"on the same {lineage.tested_on()}", "same test set"
    elif away[other].test_iou is None:
        decision.compared = "not comparable"
        decision.message = f"kept v{other}: {away[other].basis}; {new} is candidate only"
        return decision
    else:
        theirs, basis, decision.compared = away[other].test_iou, away[other].basis, "re-scored on this test set"
    if other == first:
        decision.previous_champion_test_iou = theirs
    digits = 6 if f"{score:.4f}" == f"{theirs:.4f}" and score != theirs else 4  # never "0.2522 > 0.2522"
    if final == version:
        decision.message = (
            f"{new} promoted to champion: test IoU {score:.{digits}f} > v{other}'s {theirs:.{digits}f}, {basis}"
        )
        return decision
    was = f"v{first}" if first else "none"
    kept = f"kept v{final} as champion" if final == first else f"v{final} is champion (was {was})"
    if score == theirs:
        decision.message = (
            f"{kept}: a tie, test IoU {score:.6f} for both, {basis}; a tie keeps the earlier "
            f"version; {new} is candidate only"
        )
    else:
        decision.message = (
            f"{kept}: test IoU {theirs:.{digits}f} > {new}'s {score:.{digits}f}, {basis}; {new} is candidate only"
        )
    return decision


def register(
    log_model: Callable[[], str],
    base: str,
    test_iou: float,
    lineage: Lineage,
    score_champion: Callable[[str, str], float],
    tags: Mapping[str, str] | None = None,
    digest: str | None = None,
) -> Decision:
    """Register the model under ``base`` (or its layout's name), alias it ``candidate``, :func:`settle`
    ``champion`` and print each decision line. A version that already holds the model ``digest`` tested
    on the same data is reused (no new version); otherwise ``log_model()`` logs it and returns its URI."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    name, why = choose_name(client, base, lineage)
    if why:
        print(why)
    reused = same_model(client, name, digest, lineage) if digest else None
    if reused is None:
        version = int(
            mlflow.register_model(
                log_model(),
                name,
                tags={
                    "test_iou": f"{recorded(test_iou):.6f}",
                    **lineage.tags(),
                    **({"model_digest": digest} if digest else {}),
                    **(tags or {}),
                },
            ).version
        )
    else:
        version = reused
        print(
            f"registry {name!r}: v{version} already holds this model (digest {digest}) tested on the same "
            f"{lineage.tested_on()}: no new version"
        )
    set_alias(client, name, "candidate", version)
    decision = settle(client, name, version, lineage, score_champion)
    decision.reused = reused is not None
    decision.message = f"registry {name!r}: {decision.message}"
    print(decision.message)
    return decision


def champion_scorer(test: TestSplit) -> Callable[[str, str], float]:
    """``score_champion`` for :func:`gate`: the registered ONNX model, scored on ``test``."""
    return lambda name, version: rescore(load_version(name, version), test)


class Published(Tracked, Protocol):
    """What :func:`publish` reads: the export stage's params, with ``export`` (the registered model)."""

    @property
    def export(self) -> ExportParams: ...


def publish(
    params: Published,
    onnx_path: str | Path,
    export_metrics: str | Path,
    summary: Mapping[str, Any],
    test_iou: float,
    lineage: Lineage,
    test: TestSplit,
) -> Decision:
    """In the training stage's MLflow run: log the export's parity and latency, log the ONNX model as
    the eyelip pyfunc model (:mod:`eyelip.release.pyfunc`), register it and run the gate."""
    import mlflow

    from eyelip.release.pyfunc import log_pyfunc
    from eyelip.tracking.store import resume_run

    base = params.export.registered_model
    # A plain grey picture as the input example: the model's artifacts must hold no dataset face.
    example = io.BytesIO()
    Image.new("RGB", (lineage.input_size, lineage.input_size), (128, 128, 128)).save(example, format="PNG")
    with resume_run(params) as run:  # ends the run, even on error
        mlflow.log_metrics(
            {
                f"export_{fmt}_{key}": float(value)
                for fmt, result in summary["parity"].items()
                for key, value in result.items()
                if key != "threshold"
            }
        )
        mlflow.log_metrics(
            {f"latency_ms_{fmt}_{key}": value for fmt, ms in summary["latency_ms"].items() for key, value in ms.items()}
        )
        mlflow.log_artifact(str(export_metrics))
        experiment = os.environ.get("DVC_EXP_NAME")
        if experiment and experiment != run.info.run_name:  # train was cached: see docs/pipeline.md
            print(
                f"experiment {experiment!r} trained no model: its model is the one MLflow run "
                f"{run.info.run_name!r} ({run.info.run_id}) trained"
            )
        decision = register(
            lambda: log_pyfunc(onnx_path, lineage.targets, example.getvalue()).model_uri,
            base,
            test_iou,
            lineage,
            champion_scorer(test),
            tags={"mlflow_run_id": run.info.run_id},
            digest=model_digest(onnx_path),
        )
        mlflow.set_tags(
            {
                "registry_model": decision.registered_model,
                "registry_version": decision.version,
                "registry_champion": decision.champion,
                "registry_decision": decision.message,
            }
        )
    return decision
