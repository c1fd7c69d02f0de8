"""A run cancelled in the middle of a page commit (SIGTERM past the shutdown grace) is
closed the way `daemon.sync.run` closes it: `finish_run` on the lease's own session,
shielded. The row must then say `cancelled` in the database, not only in the log.

Found by the live tests (`systemctl stop` mid-run left the row `running` although the
journal said `sync.run_ended ... status=cancelled ... closed_by_us=true`); reproduced
here without systemd by cancelling commits at random points until one lands badly.
"""

from __future__ import annotations

import random

import anyio
import pytest

from daemon.records import OfferRow
from daemon.store import Progress, Store

ROWS = [OfferRow.from_api({"id": i, "name": f"offer {i}", "sale_price": "1.0000"}) for i in range(1, 101)]
ATTEMPTS = 2000  # the bad window is hit about once in 100 attempts on the 2-core machine


@pytest.mark.slow  # a stress reproduction: 2000 cancels
async def test_a_cancel_inside_a_page_commit_still_closes_the_row(store: Store) -> None:
    rng = random.Random(1)
    for attempt in range(ATTEMPTS):
        async with store.lease("main", "offers") as lease:
            started = (await lease.open_run("full", "test")).started_at
            await lease.begin_scan()
            checkpoint = {"kind": "offers", "page": 1, "scan_started_at": started.isoformat(), "per_page": 100}
            with anyio.move_on_after(rng.uniform(0, 0.008)):
                await lease.commit_offers(ROWS, Progress(pages_done=1), checkpoint)
                await anyio.sleep(1)  # every attempt ends cancelled, inside the commit or after it
            with anyio.CancelScope(shield=True):
                closed = await lease.finish_run("cancelled", Progress(pages_done=1), "cancelled")
        [row] = await store.history(1, "main", "offers")
        assert (closed, row["status"]) == (True, "cancelled"), (
            f"attempt {attempt}: finish_run returned {closed}, the row says {row['status']!r}"
        )
