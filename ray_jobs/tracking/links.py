"""The MLflow UI links the service prints: at a sweep's end (:func:`sweep_link_line`) and
before ``make ui`` starts the UI (``python -m ray_jobs.tracking.links RESULTS [PORT]``: one
line per sweep's experiment in ``RESULTS/mlflow.db``, read with sqlite3, MLflow not imported).

Every link opens the experiment's runs table with ``workflowType=machine_learning``: MLflow
3.17's UI keeps a per-browser GenAI / model-training switch that starts on GenAI, so a
fresh browser that clicks the experiment lands on an empty traces page (:mod:`ray_jobs.tracking`)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from ray_jobs.tracking.backend import LATEST_VIEW, PARENT_TAG, VIEW_TAG, default_tracking_uri, runs_path

#: where ``make ui`` serves the UI unless UI_PORT says otherwise
UI_ADDRESS = "http://127.0.0.1:{port}"
DEFAULT_PORT = 5000


def experiment_link(base: str, experiment_id: str, *, has_view: bool = True) -> str:
    """The runs table of ``experiment_id`` at ``base`` (``http://host:port``): the view of
    the latest run with its cells nested when the experiment has it, else the plain table."""
    return f"{base.rstrip('/')}/{runs_path(str(experiment_id), LATEST_VIEW if has_view else None)}"


def _connect(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)


def store_links(database: Path, base: str) -> list[tuple[str, str]]:
    """(experiment name, link) of every active experiment of ``database`` with a sweep's
    parent run (``landscape.role = sweep``), by experiment id."""
    with _connect(database) as db:
        rows = db.execute(
            "SELECT e.experiment_id, e.name FROM experiments e WHERE e.lifecycle_stage = 'active' AND EXISTS "
            "(SELECT 1 FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE r.experiment_id = e.experiment_id "
            "AND t.key = ? AND t.value = 'sweep') ORDER BY e.experiment_id",
            (PARENT_TAG,),
        ).fetchall()
        views = {
            str(row[0])
            for row in db.execute("SELECT experiment_id FROM experiment_tags WHERE key = ?", (VIEW_TAG + LATEST_VIEW,))
        }
    return [(name, experiment_link(base, str(eid), has_view=str(eid) in views)) for eid, name in rows]


def sweep_link_line(cfg, results_dir: Path, parent_run_id: str | None, *, port: int = DEFAULT_PORT) -> str | None:
    """The line printed at a sweep's end: where its runs table opens in the UI (a server's
    address, or ``make ui``'s for a sqlite store), None without tracking or a parent."""
    tracking = cfg.get("tracking")
    if tracking is None or not tracking.get("enabled", False) or not parent_run_id:
        return None
    tracking_uri = tracking.get("uri") or default_tracking_uri(results_dir)
    try:
        if tracking_uri.startswith("sqlite:///"):
            database = Path(tracking_uri[len("sqlite:///") :])
            with _connect(database) as db:
                (experiment_id,) = db.execute(
                    "SELECT experiment_id FROM runs WHERE run_uuid = ?", (parent_run_id,)
                ).fetchone()
            link = experiment_link(UI_ADDRESS.format(port=port), str(experiment_id))
            return (
                f"MLflow UI: {link} (start it with `make ui`, or `mlflow ui --backend-store-uri {tracking_uri} "
                f"--host 127.0.0.1 --port {port}`)"
            )
        if tracking_uri.startswith(("http://", "https://")):
            from mlflow.tracking import MlflowClient

            experiment_id = MlflowClient(tracking_uri=tracking_uri).get_run(parent_run_id).info.experiment_id
            return f"MLflow UI: {experiment_link(tracking_uri, experiment_id)}"
    except Exception as exc:  # the link is a courtesy: never fail a finished sweep over it
        return f"MLflow UI: no link ({type(exc).__name__}: {exc})"
    return None


def print_sweep_link(cfg, results_dir: Path, parent_run_id: str | None) -> None:
    """Print :func:`sweep_link_line` to stderr, if there is one (at the end of ``landscape-sweep``)."""
    if line := sweep_link_line(cfg, results_dir, parent_run_id):
        print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.tracking.links RESULTS [PORT]``: the UI link of each sweep's experiment."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m ray_jobs.tracking.links RESULTS_DIR [PORT]", file=sys.stderr)
        return 2
    database = Path(argv[0]).resolve() / "mlflow.db"
    port = int(argv[1]) if len(argv) > 1 else DEFAULT_PORT
    if not database.is_file():
        print(f"MLflow UI: no store at {database} yet (run a sweep first: make run)")
        return 0
    links = store_links(database, UI_ADDRESS.format(port=port))
    if not links:
        print(
            f"MLflow UI: no sweep in {database} yet; http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning"
        )
    for name, link in links:
        print(f"MLflow UI, {name}: {link}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
