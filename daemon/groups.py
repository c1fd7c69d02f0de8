"""Exception groups from task groups, unwrapped where one error is all there is."""

from __future__ import annotations


def unwrap(exc: BaseException) -> BaseException:
    """The single error inside (nested) single-member exception groups, else `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
