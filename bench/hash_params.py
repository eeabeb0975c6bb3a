"""Measure median argon2id verify time at the OWASP minimum and at stronger settings.

Rule (docs: standards-notes F2): stay at the OWASP minimum (m=19456 KiB, t=2, p=1) unless a
stronger setting still verifies within 25 ms on this machine; argon2-cffi's own default
(m=65536, t=3, p=4) makes each login a bigger DoS lever.

Run: ``.venv/bin/python bench/hash_params.py [--runs 20] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bastion.security.passwords import (
    OWASP_PARAMETERS,
    HashParameters,
    configure,
    hash_password,
    verify_password,
)

BUDGET_MS = 25.0
CANDIDATES: tuple[tuple[str, HashParameters], ...] = (
    # OWASP Password Storage CS: argon2id m=19456 t=2 p=1 (minimum, first choice).
    ("OWASP minimum", OWASP_PARAMETERS),
    ("OWASP m, one more pass", HashParameters(time_cost=3, memory_cost=19456, parallelism=1)),
    # OWASP Password Storage CS lists m=47104 (46 MiB) t=1 p=1 as an equivalent setting.
    ("OWASP 46 MiB t=1", HashParameters(time_cost=1, memory_cost=47104, parallelism=1)),
    # argon2-cffi 25.1 PasswordHasher() default = RFC 9106 LOW_MEMORY profile.
    ("argon2-cffi default", HashParameters(time_cost=3, memory_cost=65536, parallelism=4)),
)


@dataclass(frozen=True)
class Result:
    """Hold the timings for one parameter set, in milliseconds."""

    label: str
    time_cost: int
    memory_cost: int
    parallelism: int
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int

    @property
    def work(self) -> int:
        """Return memory x passes (KiB), the ordering used to call one setting stronger."""
        return self.memory_cost * self.time_cost


def measure(label: str, params: HashParameters, runs: int) -> Result:
    """Time *runs* failing verifies (the common login case) at *params*."""
    configure(params)
    stored = hash_password("correct horse battery staple")
    for _ in range(2):  # warm up: page in the memory argon2 will reuse
        verify_password(stored, "wrong horse battery staple")
    samples: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        verify_password(stored, "wrong horse battery staple")
        samples.append((time.perf_counter() - start) * 1000)
    return Result(
        label=label,
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        median_ms=statistics.median(samples),
        min_ms=min(samples),
        max_ms=max(samples),
        runs=runs,
    )


def choose(results: list[Result]) -> Result:
    """Return the strongest setting whose median stays within budget (else the OWASP one)."""
    owasp = results[0]
    within = [r for r in results if r.median_ms <= BUDGET_MS and r.work > owasp.work]
    return max(within, key=lambda r: r.work) if within else owasp


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table and the recommendation."""
    parser = argparse.ArgumentParser(description="argon2id verify timings")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    try:
        results = [measure(label, params, args.runs) for label, params in CANDIDATES]
    finally:
        configure(OWASP_PARAMETERS)

    print(f"argon2id verify, {args.runs} runs each, {os.cpu_count()} CPUs")
    header = f"{'setting':<24} {'m KiB':>7} {'t':>2} {'p':>2} {'median':>9} {'min':>9} {'max':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.label:<24} {r.memory_cost:>7} {r.time_cost:>2} {r.parallelism:>2} "
            f"{r.median_ms:>6.1f} ms {r.min_ms:>6.1f} ms {r.max_ms:>6.1f} ms"
        )
    pick = choose(results)
    print(
        f"\nbudget {BUDGET_MS:.0f} ms -> use {pick.label} "
        f"(m={pick.memory_cost}, t={pick.time_cost}, p={pick.parallelism})"
    )
    if args.json:
        payload = {
            "budget_ms": BUDGET_MS,
            "choice": pick.label,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
