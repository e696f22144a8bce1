"""What ran a run: env.* tags on real MLflow runs (SQLite store), and `eyelip report` / `eyelip results`
telling an environment difference from a params difference."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from eyelip.params import whole as P
from eyelip.tracking import environment
from eyelip.tracking.report import provenance_lines, unrecorded_params
from eyelip.tracking.results import Recipe, group, load_runs, render
from eyelip.tracking.store import start_run


def test_collect_names_the_packages_cpu_threads_and_device() -> None:
    env = environment.collect("cpu")
    for name in environment.PACKAGES:
        assert env[f"env.{name}"] == metadata.version(name)
    assert env["env.python"] == platform.python_version()
    assert env["env.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["env.threads"] == str(torch.get_num_threads())
    assert env["env.device"] == "cpu"
    assert env["env.cpu"] and all(isinstance(v, str) for v in env.values())


def test_cpu_flags_and_model_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16\n\n"
        "processor\t: 1\nmodel name\t: Some CPU 9000\n"
    )
    assert environment.cpu_info(cpuinfo) == ("Some CPU 9000", ["avx2", "fma", "avx512f", "avx512_bf16"])


def test_lock_hash_is_the_stamp_dev_wrote(tmp_path: Path) -> None:
    assert environment.lock_hash(tmp_path) == "none"
    (tmp_path / ".installed").write_text(f"{'a' * 64}  requirements.lock\n{'b' * 64}  pyproject.toml\n")
    assert environment.lock_hash(tmp_path) == "a" * 12


def test_differences_only_where_both_sides_recorded() -> None:
    old = {"env.torch": "2.13.0+cpu", "env.cpu_capability": "AVX2", "env.threads": "2"}
    new = {**old, "env.cpu_capability": "AVX512", "env.numpy": "2.4.6"}
    assert environment.differences(old, new) == [("env.cpu_capability", "AVX2", "AVX512"), ("env.numpy", "—", "2.4.6")]
    assert environment.differences({}, new) == []


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("DVC_EXP_NAME", raising=False)
        yield uri


def test_a_new_run_records_its_environment_as_tags(store: str) -> None:
    with start_run(P.parse({"train": {"lr": 0.001}, "runtime": {"device": "cpu"}})) as run:
        run_id = run.info.run_id
    logged = mlflow.MlflowClient(store).get_run(run_id).data
    assert {k: v for k, v in logged.tags.items() if k.startswith("env.")} == environment.collect("cpu")
    assert not any(k.startswith("env.") for k in logged.params)  # facts, not knobs


def test_results_give_each_machine_its_own_row_and_flag_other_environment_differences(store: str) -> None:
    client = mlflow.MlflowClient(store)
    experiment = client.create_experiment("two-machines")
    here = environment.collect("cpu")
    runs = (
        ("avx512", {"env.cpu_capability": "AVX512"}, 0.8578, 10.0),
        ("avx2", {"env.cpu_capability": "AVX2", "env.cpu_bf16": "False"}, 0.8621, 17.0),
        ("avx512-new-numpy", {"env.cpu_capability": "AVX512", "env.numpy": "9.9.9"}, 0.8580, 11.0),
    )
    for name, tags, iou, minutes in runs:
        run = client.create_run(experiment, run_name=name, tags={**here, **tags})
        client.log_param(run.info.run_id, "train.lr", "0.005")
        client.log_metric(run.info.run_id, "test_iou", iou)
        client.log_metric(run.info.run_id, "train_minutes", minutes)
        client.set_terminated(run.info.run_id)
    runs = load_runs("two-machines", store)
    assert {r.name: r.env["env.cpu_capability"] for r in runs}["avx2"] == "AVX2"
    # The same params on two machines: two rows, so neither the minutes nor bf16 and fp32 IoUs mix.
    assert [[r.name for r in recipe.runs] for recipe in group(runs)] == [["avx512", "avx512-new-numpy"], ["avx2"]]
    text = render("two-machines", runs)
    rows = [line for line in text.splitlines() if line.startswith("| (the recipe all rows share)")]
    cpu = here["env.cpu"]
    assert len(rows) == 2
    assert "| 10.5 ± 0.7 |" in rows[0] and f" | {cpu} (AVX512 kernels, " in rows[0] and "| 0.858 ± 0.000 |" in rows[0]
    assert "| 17.0 |" in rows[1] and f" | {cpu} (AVX2 kernels, no bf16, " in rows[1] and "| 0.862 |" in rows[1]
    assert "`cpu_capability`: AVX2 (avx2), AVX512 (avx512, avx512-new-numpy)" in text
    # Within row 1 the machine is one, but a package is not: said below the table.
    assert "Row 1: same params and machine, different environments (env.numpy)" in text
    assert "Row 2:" not in text


def test_cpu_label_names_the_cpu_kernels_bf16_and_threads() -> None:
    tags = {"env.cpu": "AMD EPYC", "env.cpu_capability": "AVX512", "env.cpu_bf16": "True", "env.threads": "2"}
    assert environment.cpu_label(tags) == "AMD EPYC (AVX512 kernels, bf16, 2 threads)"
    capped = {**tags, "env.cpu_capability": "AVX2", "env.onednn_max_isa": "AVX2", "env.cpu_bf16": "False"}
    assert environment.cpu_label(capped) == "AMD EPYC (AVX2 kernels, oneDNN up to AVX2, no bf16, 2 threads)"
    assert environment.cpu_label({**tags, "env.device": "cuda (NVIDIA H100)"}) == "cuda (NVIDIA H100)"
    assert environment.cpu_label({}) == ""  # a run from before environments were recorded


def test_results_of_one_environment_say_so() -> None:
    from eyelip.tracking.results import Run, environment_lines

    env = {"env.torch": "2.13.0+cpu"}
    runs = [Run("a", {}, {}, env=env), Run("b", {}, {}, env=env), Run("old", {}, {})]
    assert environment_lines([Recipe({}, runs)]) == ["All 2 runs that record their environment ran in the same one."]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def commit_files(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "files")
    return git(root, "rev-parse", "HEAD")


def lock(lr: float) -> str:
    return yaml.safe_dump(
        {
            "schema": "2.0",
            "stages": {
                "train": {
                    "cmd": "python pipeline/train.py",
                    "params": {"params.yaml": {"train": {"lr": lr, "epochs": 12}, "data.rule": "or"}},
                }
            },
        }
    )


def test_report_says_when_baseline_metrics_do_not_belong_to_its_params(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    params = {"train": {"lr": 0.005, "epochs": 12}, "data": {"rule": "or"}}
    env = environment.collect("cpu")
    # The baseline commit changed train.lr without re-running: dvc.lock still holds 0.003's run.
    sha = commit_files(
        tmp_path, {"dvc.lock": lock(0.003), "params.yaml": yaml.safe_dump(params), environment.FILE: json.dumps(env)}
    )
    assert unrecorded_params(lock(0.003), yaml.safe_dump(params)) == [("train.lr", 0.003, 0.005)]
    (tmp_path / "dvc.lock").write_text(lock(0.005))  # this workspace re-ran: consistent
    notes, lines = provenance_lines(tmp_path, sha, "`base`")
    assert notes == [
        "baseline `base`'s metrics were produced with other params than its params.yaml "
        "(`train.lr` 0.003 (dvc.lock) vs 0.005)"
    ]
    assert any(line.startswith("- **baseline `base`**") for line in lines)
    assert any(line.startswith("Same environment as the baseline") for line in lines)


def test_report_shows_an_environment_difference(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    env = environment.collect("cpu")
    sha = commit_files(
        tmp_path, {environment.FILE: json.dumps({**env, "env.cpu_capability": "AVX2", "env.numpy": "2.3.0"})}
    )
    (tmp_path / environment.FILE).write_text(json.dumps(env))
    notes, lines = provenance_lines(tmp_path, sha, "`base`")
    assert notes == ["ran in another environment (cpu_capability, numpy)"]
    assert f"| `env.cpu_capability` | AVX2 | {env['env.cpu_capability']} |" in lines
    assert f"| `env.numpy` | 2.3.0 | {env['env.numpy']} |" in lines
