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
alias, and ``champion`` moves only on a strictly higher IoU.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from eyelip.errors import EyelipError
from eyelip.inference.predictors import Predictor
from eyelip.model.spec import LAYOUT, ModelSpec
from eyelip.params import Params

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
        return cls(ModelSpec.from_strings(tags, "registry tags"), tags.get("data_version", "unknown"),
                   tags.get("test_split", "unknown"), int(tags.get("test_images", 0)))

    @property
    def targets(self) -> list[str]:
        return self.spec.targets

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def tags(self) -> dict[str, str]:
        return {**self.spec.to_strings(), "data_version": self.data_version, "test_split": self.test_split,
                "test_images": str(self.test_images)}

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
    test_iou: float
    champion: int
    promoted: bool
    compared: str  # same test set | re-scored on this test set | no champion | not comparable
    previous_champion: int | None = None
    previous_champion_test_iou: float | None = None  # on the compared test set
    message: str = ""


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
    return name, (f"registry {base!r}: champion v{champion} has another layout ({'; '.join(differences)}): "
                  f"not compared; this model goes to {name!r}")


def gate(client: Any, name: str, version: int, test_iou: float, lineage: Lineage,
         score_champion: Callable[[str, str], float]) -> Decision:
    """Move ``champion`` to ``version`` when it beats the champion on the same test data (see the module
    docstring); ``score_champion(name, champion_version)`` re-scores a champion tested elsewhere."""
    new = f"v{version}"
    decision = Decision(name, version, test_iou, version, True, "no champion")
    champion = client.get_registered_model(name).aliases.get("champion")
    if champion is None:
        decision.message = f"{new} promoted to champion (no champion before): test IoU {test_iou:.4f} on {lineage.tested_on()}"
        return decision
    old = champion_lineage(client, name, str(champion))
    decision.previous_champion = int(champion)
    differences = lineage.differences(old)
    if differences:  # only a champion aliased by hand gets here: choose_name keeps layouts apart
        decision.champion, decision.promoted, decision.compared = int(champion), False, "not comparable"
        decision.message = (f"kept v{champion}: it has another layout ({'; '.join(differences)}), so no test IoU "
                            f"is compared; {new} is candidate only")
        return decision
    tags = client.get_model_version(name, str(champion)).tags
    if old.test_split == lineage.test_split and "test_iou" in tags:
        old_iou, decision.compared = float(tags["test_iou"]), "same test set"
        basis = f"on the same {lineage.tested_on()}"
    else:
        old_iou, decision.compared = score_champion(name, str(champion)), "re-scored on this test set"
        basis = (f"v{champion} re-scored on {new}'s {lineage.tested_on()}; it was tested on "
                 f"{old.tested_on() if old.test_split != 'unknown' else 'unrecorded data'}")
    decision.previous_champion_test_iou = old_iou
    if test_iou > old_iou:
        decision.message = f"{new} promoted to champion: test IoU {test_iou:.4f} > v{champion}'s {old_iou:.4f}, {basis}"
    else:
        decision.champion, decision.promoted = int(champion), False
        decision.message = (f"kept v{champion} as champion: test IoU {old_iou:.4f} >= {new}'s {test_iou:.4f}, "
                            f"{basis}; {new} is candidate only")
    return decision


def register(model_uri: str, base: str, test_iou: float, lineage: Lineage,
             score_champion: Callable[[str, str], float], tags: Mapping[str, str] | None = None) -> Decision:
    """Register ``model_uri`` under ``base`` (or its layout's name), alias it ``candidate``, run the
    :func:`gate` and print each decision line."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    name, why = choose_name(client, base, lineage)
    if why:
        print(why)
    version = mlflow.register_model(model_uri, name, tags={"test_iou": f"{test_iou:.6f}", **lineage.tags(),
                                                           **(tags or {})})
    client.set_registered_model_alias(name, "candidate", version.version)
    decision = gate(client, name, int(version.version), test_iou, lineage, score_champion)
    if decision.promoted:
        client.set_registered_model_alias(name, "champion", version.version)
    decision.message = f"registry {name!r}: {decision.message}"
    print(decision.message)
    return decision


def champion_scorer(test: TestSplit) -> Callable[[str, str], float]:
    """``score_champion`` for :func:`gate`: the registered ONNX model, scored on ``test``."""
    return lambda name, version: rescore(load_version(name, version), test)



def publish(params: Params, onnx_path: str | Path, export_metrics: str | Path,
            summary: Mapping[str, Any], test_iou: float, lineage: Lineage, test: TestSplit) -> Decision:
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
        mlflow.log_metrics({f"export_{fmt}_{key}": float(value) for fmt, result in summary["parity"].items()
                            for key, value in result.items() if key != "threshold"})
        mlflow.log_metrics({f"latency_ms_{fmt}_{key}": value for fmt, ms in summary["latency_ms"].items()
                            for key, value in ms.items()})
        mlflow.log_artifact(str(export_metrics))
        info = log_pyfunc(onnx_path, lineage.targets, example.getvalue())
        decision = register(info.model_uri, base, test_iou, lineage, champion_scorer(test),
                            tags={"mlflow_run_id": run.info.run_id})
        mlflow.set_tags({"registry_model": decision.registered_model, "registry_version": decision.version,
                         "registry_champion": decision.champion, "registry_decision": decision.message})
    return decision
