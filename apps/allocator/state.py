"""The allocator job's states and the one table of the moves between them.

A job is ``QUEUED`` until a worker claims it, ``RUNNING`` while it computes, and ends
``SUCCEEDED``, ``FAILED`` or ``CANCELED``; a terminal state never changes again. Two moves are
there for recovery rather than for the happy path: ``RUNNING → QUEUED`` when the reaper hands
a job whose worker died back to the queue, and ``QUEUED → FAILED`` when no worker ever took it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from apps.common.errors import StateConflict


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
CANCELABLE = frozenset({JobState.QUEUED, JobState.RUNNING})

NEXT: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.QUEUED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


def advance(current: JobState | str, target: JobState | str) -> JobState:
    """Return `target` if it may follow `current`; raise `StateConflict` (409) otherwise."""
    current, target = JobState(current), JobState(target)
    if target not in NEXT[current]:
        if current in TERMINAL:
            message = f"The job is already {current.value} and cannot become {target.value}"
        else:
            message = f"A {current.value} job cannot become {target.value}"
        raise StateConflict(message, details={"state": current.value, "requested": target.value})
    return target
