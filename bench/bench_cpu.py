"""Process CPU per offer of a sync: the daemon's own cost, with the API and the database elsewhere.

    .venv/bin/python bench/bench_cpu.py                # 60,000 offers, one account: first sync, re-scan
    .venv/bin/python bench/bench_cpu.py --profile      # and where the CPU goes (sampled stacks)
    .venv/bin/python bench/bench_cpu.py --profile cprofile   # call counts (cProfile inflates small calls)
    .venv/bin/python bench/bench_cpu.py --offers 20000 --runs 1

The sandbox runs in a child process (`python -m sandbox`, rate limits off, no latency),
so its CPU is not counted; PostgreSQL is a server of its own. What is left is this
process: HTTP client, JSON decoding, record checks, content hashes, parameter encoding.
CPU is `time.process_time()` (user + sys of this process) around the sync alone, divided
by the offers synced. The first sync inserts every offer; the re-scan reads the same,
unchanged catalog again. Exits non-zero when either misses the target (<= 100 µs/offer).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon import logs
from daemon.config import parse
from daemon.store import Store
from daemon.sync.clients import Clients
from daemon.sync.pairs import run_many
from daemon.sync.run import RunRequest
from sandbox import DEFAULT_LOGINS, testbed
from sandbox.testbed import drop_db, dsn_for, migrated_db

TARGET_US = 100.0
ACCOUNT = "main"


@contextmanager
def sandbox_process(offers: int) -> Iterator[str]:
    """The sandbox in a child process (its CPU is not ours), limits off; yields its base URL."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp,
        testbed.sandbox_process(
            Path(tmp),
            "--rate-limit",
            "off",
            "--offers",
            str(offers),
            "--orders",
            "0",
            "--seed",
            "3",
            *testbed.account_args({ACCOUNT: DEFAULT_LOGINS[ACCOUNT]}),
        ) as base_url,
    ):
        yield base_url


class Sync:
    """One account's offers synced in this process, timed in CPU and wall clock."""

    def __init__(self, db_url: str, base_url: str) -> None:
        doc = testbed.config_doc(db_url, base_url, accounts=[ACCOUNT], resources=["offers"], quick=False)
        self.settings = parse(doc, env={})

    async def once(
        self, profiler: CpuSampler | cProfile.Profile | None, expect_written: int
    ) -> tuple[float, float, int]:
        """(CPU s, wall s, offers seen) of one full offers scan."""
        store = await Store.open(self.settings.database)
        try:
            requests = [RunRequest(self.settings.account(ACCOUNT), "offers", "full", "bench")]
            async with Clients(self.settings, unlimited=True) as clients:
                cpu, wall = time.process_time(), time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                try:
                    results = await run_many(store, clients, self.settings.sync, requests)
                finally:
                    if profiler is not None:
                        profiler.disable()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            await store.close()
        (result,) = results
        if result.status != "completed":
            raise SystemExit(f"sync {result.status}: {result.error}")
        if result.progress.items_written != expect_written:  # the re-scan must find nothing changed
            raise SystemExit(f"sync wrote {result.progress.items_written} offers, expected {expect_written}")
        return cpu, wall, result.progress.items_seen


def per_offer(cpu_s: float, offers: int) -> float:
    return cpu_s / max(offers, 1) * 1e6


def where(code: Any) -> str:
    path = code.co_filename  # shortened as cProfile's strip_dirs would not: keep the package
    for marker in ("/site-packages/", str(REPO) + "/", f"/python{sys.version_info[0]}.{sys.version_info[1]}/"):
        path = path.split(marker, 1)[-1]
    return f"{path}:{code.co_firstlineno}({code.co_name})"


class CpuSampler:
    """Where this process's CPU goes: the Python stack, sampled every `interval_s` of process
    CPU time (SIGPROF from ITIMER_PROF). Waiting on the sandbox or PostgreSQL costs nothing,
    and unlike cProfile's per-call hooks, small often-called functions are not inflated.

    A signal is handled at the next Python instruction, so time spent in C lands on the
    Python function that called it (json's C scanner on `raw_decode`), or on a Python
    callback the C code makes: asyncpg's Cython encoders show up as `<frozen abc>
    __instancecheck__` (isinstance(x, Iterable) per array element) and `<string> <lambda>`
    (the DecimalTuple of Decimal.as_tuple())."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.own: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.depth: dict[str, int] = {}  # fewest frames between the function and the sampled one
        self.samples = 0

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        self.samples += 1
        if frame is not None:
            self.own[where(frame.f_code)] += 1
        stack: set[str] = set()
        depth = 0
        while frame is not None:
            name = where(frame.f_code)
            stack.add(name)
            self.depth[name] = min(depth, self.depth.get(name, depth))
            frame, depth = frame.f_back, depth + 1
        self.total.update(stack)

    def enable(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval_s, self.interval_s)

    def disable(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_DFL)

    def report(self, label: str, top: int, us_per_offer: float) -> None:
        n = max(self.samples, 1)
        own = self.own.most_common(top)
        # The project's functions by time on the stack; of callers with the same share (the
        # run -> pages -> on_page chain), only the innermost.
        ours: list[tuple[str, int]] = []
        shares: set[int] = set()
        for name in sorted(
            (k for k in self.total if k.startswith("daemon/")), key=lambda k: (-self.total[k], self.depth[k])
        ):
            if self.total[name] not in shares and len(ours) < top:
                ours.append((name, self.total[name]))
                shares.add(self.total[name])
        for title, rows in (
            ("own time (the function and the C it calls)", own),
            ("time on the stack, the project's functions", ours),
        ):
            print(f"--- {label}: {self.samples} CPU samples, top {top} by {title} ---")
            for name, hits in rows:
                print(f"{hits / n * 100:5.1f} % {hits / n * us_per_offer:5.1f} µs/offer  {name}")


def cprofile_report(profiler: cProfile.Profile, label: str, top: int) -> None:
    for sort in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
        body = out.getvalue()
        print(f"--- {label}: cProfile (CPU timer, per-call overhead included), top {top} by {sort} ---")
        print(body[body.index("   ncalls") :].rstrip() if "   ncalls" in body else body.rstrip())


def make_profiler(kind: str | None) -> CpuSampler | cProfile.Profile | None:
    if kind == "cprofile":
        return cProfile.Profile(time.process_time)  # CPU, not wall: waiting costs nothing
    return CpuSampler() if kind == "sample" else None


def report(profiler: CpuSampler | cProfile.Profile, label: str, top: int, result: tuple[float, float, int]) -> None:
    if isinstance(profiler, CpuSampler):
        profiler.report(label, top, per_offer(result[0], result[2]))
    else:
        cprofile_report(profiler, label, top)


async def bench(offers: int, runs: int, profile: str | None, top: int) -> bool:
    firsts: list[tuple[float, float, int]] = []
    rescans: list[tuple[float, float, int]] = []
    with sandbox_process(offers) as base_url:
        for _ in range(runs):
            name = await migrated_db("emag_sync_bench")
            try:
                sync = Sync(dsn_for(name), base_url)
                first_prof, rescan_prof = make_profiler(profile), make_profiler(profile)
                firsts.append(await sync.once(first_prof, expect_written=offers))
                rescans.append(await sync.once(rescan_prof, expect_written=0))
            finally:
                await drop_db(name)
            if first_prof is not None and rescan_prof is not None:
                report(first_prof, "first sync", top, firsts[-1])
                report(rescan_prof, "re-scan", top, rescans[-1])
            note = "cProfile's overhead included, not comparable" if profile == "cprofile" else None
            print(line(firsts[-1], rescans[-1], note), flush=True)
    first, rescan = firsts[-1], rescans[-1]
    if runs > 1:
        first, rescan = _median(firsts), _median(rescans)
        print(line(first, rescan, None, label=f"median of {runs}"))
    return profile == "cprofile" or max(per_offer(c, n) for c, _, n in (first, rescan)) <= TARGET_US


def _median(results: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return (
        statistics.median(r[0] for r in results),
        statistics.median(r[1] for r in results),
        int(statistics.median(r[2] for r in results)),
    )


def line(first: tuple, rescan: tuple, note: str | None, label: str = "cpu") -> str:
    (cpu1, wall1, n1), (cpu2, wall2, n2) = first, rescan
    us1, us2 = per_offer(cpu1, n1), per_offer(cpu2, n2)
    verdict = note or ("OK" if max(us1, us2) <= TARGET_US else "MISSED")
    return (
        f"{label}: {int(n1)} offers, first sync {cpu1:.1f} s CPU = {us1:.0f} µs/offer (wall {wall1:.1f} s); "
        f"re-scan {cpu2:.1f} s CPU = {us2:.0f} µs/offer (wall {wall2:.1f} s) -> {verdict} "
        f"(target <= {TARGET_US:.0f} µs)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offers", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=1, help="repeat on fresh databases; prints the median too")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="sample",
        choices=("sample", "cprofile"),
        help="print where the CPU goes: sampled (default) or cProfile's call counts",
    )
    parser.add_argument("--top", type=int, default=25, help="functions listed per profile table")
    args = parser.parse_args()
    logs.configure("kv", "warning")
    return 0 if asyncio.run(bench(args.offers, args.runs, args.profile, args.top)) else 1


if __name__ == "__main__":
    sys.exit(main())
