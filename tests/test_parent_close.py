"""Closing the MLflow parent run while an interrupt or an error is on its way out
(ray_jobs.tracking.runs.parent_run): a failure to close it does not replace that exception,
prints no traceback, and leaves one warning line (the next invocation continues the parent).
Seen for real under load in tests/test_search_kills.py: a SIGTERM that lands inside an MLflow
sqlite write can leave the store locked past its busy timeout when the parent is closed."""

from __future__ import annotations

import logging

import pytest

from ray_jobs.tracking.runs import parent_run


class LockedStore:
    """A tracker whose store is locked when the parent is closed, as MLflow reports it."""

    parent_run_id = "abc123"

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []

    def start(self, *, run_name: str, params: dict, tags: dict) -> None:
        self.started.append(run_name)

    def finish(self, status: str) -> None:
        self.finished.append(status)
        logging.getLogger("mlflow.store.db.utils").exception("SQLAlchemy database error (what MLflow logs)")
        raise RuntimeError("(sqlite3.OperationalError) database is locked\n[SQL: UPDATE runs ...]")


@pytest.mark.parametrize(("raised", "status"), [(KeyboardInterrupt, "KILLED"), (ValueError, "FAILED")])
def test_a_parent_that_cannot_be_closed_does_not_replace_the_exception(raised, status, capsys):
    tracker = LockedStore()
    level = logging.getLogger("mlflow.store.db.utils").level  # the service may have quieted it already
    with pytest.raises(raised):
        with parent_run(tracker, "s", params={}, tags={}):  # type: ignore[arg-type]
            raise raised()
    err = capsys.readouterr().err
    assert tracker.finished == [status]
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"warning: MLflow parent run abc123 not marked {status} ((sqlite3.OperationalError) database is locked); "
        "the next run of this sweep continues it"
    ]
    assert logging.getLogger("mlflow.store.db.utils").level == level  # put back


def test_a_finished_block_still_raises_when_the_parent_cannot_be_closed():
    tracker = LockedStore()
    with pytest.raises(RuntimeError, match="database is locked"):
        with parent_run(tracker, "s", params={}, tags={}):  # type: ignore[arg-type]
            pass
    assert tracker.finished == ["FINISHED"]
