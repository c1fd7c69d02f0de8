"""PostgreSQL, and nothing else: pool, migrations, named queries."""

from daemon.store.errors import LockBusy, SchemaMismatch, StoreError, StoreRejected, StoreUnavailable
from daemon.store.migrate import migrate
from daemon.store.store import Closed, DeferredClose, Progress, RunLease, Store, SyncState, lock_key

__all__ = ["Closed", "DeferredClose", "LockBusy", "Progress", "RunLease", "SchemaMismatch", "Store", "StoreError",
           "StoreRejected", "StoreUnavailable", "SyncState", "lock_key", "migrate"]
