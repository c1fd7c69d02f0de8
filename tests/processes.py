"""Real processes for end-to-end tests: the sandbox and emag-sync, each bounded in time
(the shared testbed, as the benchmarks use it too)."""

from sandbox.testbed import query, sandbox_process, start_emag_sync, stop, wait_until

__all__ = ["query", "sandbox_process", "start_emag_sync", "stop", "wait_until"]
