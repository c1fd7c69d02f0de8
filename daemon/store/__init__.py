"""PostgreSQL, and nothing else: pool, migrations, named queries."""

from daemon.store.errors import LockBusy, SchemaMismatch, StoreError, StoreUnavailable
from daemon.store.migrate import migrate
from daemon.store.store import Progress, RunLease, Store, SyncState, lock_key

__all__ = ["LockBusy", "Progress", "RunLease", "SchemaMismatch", "Store", "StoreError",
           "StoreUnavailable", "SyncState", "lock_key", "migrate"]
