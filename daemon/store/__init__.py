"""PostgreSQL, and nothing else: pool, migrations, named queries."""

from daemon.store.errors import LockBusy, SchemaMismatch, StoreError, StoreRejected, StoreUnavailable
from daemon.store.lease import RunLease, lock_key
from daemon.store.migrate import migrate
from daemon.store.runs import Budget, Closed, DeferredClose, OpenedRun, Progress, SyncState
from daemon.store.store import Store

__all__ = [
    "Budget",
    "Closed",
    "DeferredClose",
    "LockBusy",
    "OpenedRun",
    "Progress",
    "RunLease",
    "SchemaMismatch",
    "Store",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "SyncState",
    "lock_key",
    "migrate",
]
