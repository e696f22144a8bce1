"""Claim: fuse-masks + resize stream through memory (peak memory does not grow with the dataset),
and a no-op `dvc status` / `dvc repro` on a large dataset stays under 10 s.

Generates a synthetic set in the CelebAMask-HQ layout as one zip (the built-in generator; small
images keep 30k samples feasible), points a temporary copy of the project at it (`data.root`, read
in place like the official zip), runs `dvc repro fuse-masks` and `dvc repro resize` through the real
CLI, and reports per stage: samples/s, the peak RSS of its largest process, and the peak anonymous
memory (heap, arrays: not shared libraries or memory-mapped file pages) summed over the stage's
process tree (dvc, the stage, joblib workers); then times a no-op `dvc status` and `dvc repro`.

    python benchmarks/scale.py [--n 3000] [--image-size 128] [--mask-size 128] [--size 128] [--n-jobs -1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from eyelip.data.synthetic import generate_sample

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import BIN, copy_project  # noqa: E402  (the tests' copy of the project, reused)

MiB = 2**20


def memory(proc: psutil.Process) -> tuple[int, int]:
    """(RSS, anonymous RSS) in bytes, from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{proc.pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                fields[key] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("RssAnon", 0)


def measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``cmd``, polling its process tree's memory every 0.1 s."""
    peak_rss = peak_anon = 0
    with open(log, "a") as out:
        tic = time.perf_counter()
        proc = psutil.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            rss_total = anon_total = 0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    rss, anon = memory(p)
                except (OSError, psutil.Error):  # exited between listing and reading
                    continue
                peak_rss, anon_total = max(peak_rss, rss), anon_total + anon
            peak_anon = max(peak_anon, anon_total)
            time.sleep(0.1)
        seconds = time.perf_counter() - tic
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed; see {log}")
    return {"seconds": seconds, "peak_rss_mib": peak_rss / MiB, "peak_anon_tree_mib": peak_anon / MiB}


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    tic = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - tic, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="samples (30000 = the full dataset's count)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--mask-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=128, help="resize.size")
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--workdir", help="keep everything here instead of a temporary folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "CelebAMask-HQ.zip"  # outside the project, like a shared copy of the official zip
        tic = time.perf_counter()
        generate_sample(
            data, n=args.n, seed=0, image_size=args.image_size, mask_size=args.mask_size, n_jobs=args.n_jobs
        )
        generated = time.perf_counter() - tic
        zip_mib = data.stat().st_size / MiB

        root = work / "project"
        shutil.rmtree(root, ignore_errors=True)
        copy_project(root)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["data"]["root"] = str(data)
        params["resize"]["size"] = args.size
        params["preprocess"]["n_jobs"] = args.n_jobs
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        dvc = str(BIN / "dvc")
        for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
            subprocess.run(cmd, cwd=root, env=env, check=True)
        shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")

        log = work / "stages.log"
        stages = {
            stage: measured([dvc, "repro", "--single-item", stage], root, env, log)
            for stage in ("fuse-masks", "resize")
        }
        status_s, status_out = timed([dvc, "status", "resize"], root, env)
        repro_s, repro_out = timed([dvc, "repro", "resize"], root, env)
        assert "up to date" in status_out and "Running stage" not in repro_out, (status_out, repro_out)
        sizes = {p.relative_to(root).as_posix(): p.stat().st_size / MiB for p in sorted((root / "data").rglob("*.npy"))}

    print(
        f"\n{args.n} synthetic samples ({args.image_size} px images, {args.mask_size} px masks; "
        f"zip {zip_mib:.0f} MiB), resize.size {args.size}, "
        f"n_jobs {args.n_jobs}, {psutil.cpu_count()} CPUs"
    )
    print(f"  generate (not a stage): {args.n / generated:7.1f} samples/s")
    for stage, m in stages.items():
        print(
            f"  {stage:<11} {args.n / m['seconds']:7.1f} samples/s  ({m['seconds']:.1f} s)  "
            f"peak RSS (largest process) {m['peak_rss_mib']:.0f} MiB  "
            f"peak anonymous memory (process tree) {m['peak_anon_tree_mib']:.0f} MiB"
        )
    print(f"  no-op `dvc status resize` {status_s:.1f} s, no-op `dvc repro resize` {repro_s:.1f} s (target < 10 s)")
    print("  arrays: " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in sizes.items()))


if __name__ == "__main__":
    main()
