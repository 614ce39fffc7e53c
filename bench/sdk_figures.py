"""The SDK's headline figures, side by side with Ray in one run (SPEC §6 P7, and ``map`` throughput).

* cold start: a fresh interpreter from ``import`` to the first result: ``start_lab()`` + one call of a
  notebook function, against ``ray.init()`` + one remote task (Ray only when installed);
* ``map``: calls/s of ``f.map(range(n))`` for a trivial function in a lab (process executor), on the memory
  and SQLite stores, against Ray's ``ray.get([f.remote(i) for i in range(n)])``.

Every measurement runs in its own child process, alternating ours and the baseline.

    python -m bench.sdk_figures [--rounds 3] [--calls 5000] [--json bench/results/sdk.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

OURS_COLD = """
import time
start = time.perf_counter()
import spear_sdk
lab = spear_sdk.start_lab()
increment = lab.client.function(lambda x: x + 1, name="increment")
assert increment(1) == 2
print(time.perf_counter() - start)
"""

RAY_COLD = """
import time
start = time.perf_counter()
import ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
increment = ray.remote(lambda x: x + 1)
assert ray.get(increment.remote(1)) == 2
print(time.perf_counter() - start)
ray.shutdown()
"""

OURS_MAP = """
import sys, time
import spear_sdk
lab = spear_sdk.start_lab(store=sys.argv[2])
increment = lab.client.function(lambda x: x + 1, name="increment")
increment.map(range(200), progress=False)  # warm up
n = int(sys.argv[1])
start = time.perf_counter()
assert increment.map(range(n), progress=False) == list(range(1, n + 1))
print(n / (time.perf_counter() - start))
"""

RAY_MAP = """
import sys, time
import ray
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
increment = ray.remote(lambda x: x + 1)
ray.get([increment.remote(i) for i in range(200)])  # warm up
n = int(sys.argv[1])
start = time.perf_counter()
assert ray.get([increment.remote(i) for i in range(n)]) == list(range(1, n + 1))
print(n / (time.perf_counter() - start))
ray.shutdown()
"""


def measure(script: str, *args: str, cwd: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args()
    with_ray = importlib.util.find_spec("ray") is not None
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as cwd:
        sqlite = f"sqlite:///{cwd}/bench.db"
        for _ in range(options.rounds):
            runs = {
                "cold start, ours (s)": (OURS_COLD,),
                "map calls/s, ours, memory store": (OURS_MAP, str(options.calls), "memory://"),
                "map calls/s, ours, sqlite store": (OURS_MAP, str(options.calls), sqlite),
            }
            if with_ray:
                runs["cold start, Ray (s)"] = (RAY_COLD,)
                runs["map calls/s, Ray"] = (RAY_MAP, str(options.calls))
            for name, (script, *args) in runs.items():
                samples.setdefault(name, []).append(measure(script, *args, cwd=cwd))
    figures = {name: statistics.median(values) for name, values in samples.items()}
    if with_ray:
        figures["cold start ratio (ours / Ray; target <= 0.25)"] = (
            figures["cold start, ours (s)"] / figures["cold start, Ray (s)"]
        )
        figures["map ratio, sqlite store (ours / Ray)"] = (
            figures["map calls/s, ours, sqlite store"] / figures["map calls/s, Ray"]
        )
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:10.3f}")
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps({"median": figures, "samples": samples}, indent=2))


if __name__ == "__main__":
    main()
