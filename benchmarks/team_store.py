"""Claim: logging to the team stack (mlflow server on PostgreSQL, artifacts in S3) costs little per
epoch next to the local SQLite store, and concurrent writers lose nothing.

Starts the stack the tests start (tests/servers.py: PostgreSQL, moto's S3, `mlflow server`) and a
fresh local SQLite store, then logs ``--epochs`` epochs of the training stage's per-epoch metric
batch (:meth:`eyelip.tracking.store.TrackedRun.log_epoch`: one ``log_metrics`` call of ``--metrics``
values) to each, from ``--writers`` threads at once, each in its own run. Prints the time per
logged epoch for both stores, the ratio, and the runs and metric rows the server recorded.

    python benchmarks/team_store.py [--epochs 50] [--metrics 12] [--writers 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from servers import team_stack, team_stack_missing  # noqa: E402  (the tests' stack, reused)


def log_epochs(uri: str, experiment_id: str, epochs: int, metrics: int) -> tuple[str, float]:
    """One run of ``epochs`` metric batches, as the training stage logs them; (run id, seconds per epoch)."""
    client = MlflowClient(uri)
    run = client.create_run(experiment_id)
    from mlflow.entities import Metric

    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id, metrics=[Metric(f"m{i}", 0.5 + epoch * 1e-3, now, epoch) for i in range(metrics)]
        )
    seconds = (time.perf_counter() - start) / epochs
    client.set_terminated(run.info.run_id)
    return run.info.run_id, seconds


def measure(uri: str, epochs: int, metrics: int, writers: int) -> tuple[float, list[str]]:
    """Mean seconds per logged epoch over ``writers`` concurrent runs in a new experiment; the run ids."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"bench-{time.time_ns()}")
    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(lambda _: log_epochs(uri, experiment_id, epochs, metrics), range(writers)))
    return sum(s for _, s in results) / writers, [run_id for run_id, _ in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--metrics", type=int, default=12, help="metrics per epoch (the train stage logs about 12)")
    parser.add_argument("--writers", type=int, default=1, help="runs logging at the same time")
    args = parser.parse_args()
    missing = team_stack_missing()
    if missing:
        sys.exit(f"team_store: {missing}")
    with tempfile.TemporaryDirectory() as tmp, team_stack(Path(tmp)) as stack:
        sqlite = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        MlflowClient(sqlite).search_experiments()  # create and migrate the local store outside the timing
        local, _ = measure(sqlite, args.epochs, args.metrics, args.writers)
        served, run_ids = measure(stack.tracking_uri, args.epochs, args.metrics, args.writers)
        client = MlflowClient(stack.tracking_uri)
        rows = sum(len(client.get_metric_history(run_id, f"m{i}")) for run_id in run_ids for i in range(args.metrics))
    print(f"{args.writers} writer(s) x {args.epochs} epochs x {args.metrics} metrics")
    print(f"local SQLite store: {local * 1e3:.1f} ms per logged epoch")
    print(f"team stack (mlflow server, PostgreSQL): {served * 1e3:.1f} ms per logged epoch")
    print(f"ratio server / SQLite: {served / local:.2f}x")
    print(f"server recorded {len(run_ids)} runs, {rows} of {args.writers * args.epochs * args.metrics} metric values")


if __name__ == "__main__":
    main()
