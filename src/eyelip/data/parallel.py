"""Per-sample work in parallel with joblib, in a fixed order, with the ``on_error`` policy.

Results stream back in id order (``return_as="generator"``), so a stage writes them as they come
and memory stays bounded; the output is identical for any ``n_jobs``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from joblib import Parallel, delayed
from tqdm import tqdm

from eyelip.errors import DataError

T = TypeVar("T")
ON_ERROR = ("fail", "skip")
# joblib's "multiprocessing" backend is left out: it cannot stream results (return_as="generator").
BACKENDS = ("loky", "threading", "sequential")
# Samples per task: large enough to amortise joblib's per-task overhead, small enough to balance.
CHUNK = 32
# What the data stages' reader can do about a bad sample (the per-sample errors say only what is wrong).
SKIP_REMEDY = "replace or restore the file, or set data.on_error: skip to leave the sample out"


def _run_chunk(fn: Callable[[int], T], ids: Sequence[int]) -> list[tuple[int, T | DataError]]:
    out: list[tuple[int, T | DataError]] = []
    for sample_id in ids:
        try:
            out.append((sample_id, fn(sample_id)))
        except DataError as exc:
            out.append((sample_id, exc))
    return out


def map_samples(
    fn: Callable[[int], T],
    ids: Sequence[int],
    *,
    on_error: str,
    skipped: dict[int, str],
    n_jobs: int = -1,
    backend: str = "loky",
    desc: str = "",
    remedy: str = "",
) -> Iterator[tuple[int, T]]:
    """Yield ``(id, fn(id))`` in id order. A sample whose ``fn`` raises DataError stops the run
    (``on_error="fail"``; the error then ends with ``remedy``, what the caller's user can do) or is
    recorded in ``skipped`` and left out (``"skip"``)."""
    chunks = [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]
    if backend == "sequential" or n_jobs == 1 or len(chunks) <= 1:
        results: Any = (_run_chunk(fn, chunk) for chunk in chunks)
    else:
        results = Parallel(n_jobs=n_jobs, backend=backend, return_as="generator")(
            delayed(_run_chunk)(fn, chunk) for chunk in chunks
        )
    with tqdm(total=len(ids), desc=desc, unit="img", mininterval=1.0) as bar:
        for chunk_results in results:
            for sample_id, result in chunk_results:
                if isinstance(result, DataError):
                    if on_error == "fail":
                        raise DataError(f"{result} (sample {sample_id})" + (f"; {remedy}" if remedy else ""))
                    skipped[sample_id] = str(result)
                    bar.write(f"skipped sample {sample_id}: {result}")
                else:
                    yield sample_id, result
            bar.update(len(chunk_results))
