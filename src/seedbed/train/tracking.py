"""MLflow tracking: one MLflow run per output directory, continued by `--resume`.

The default store is a local file store, `./mlruns` (browse it with `mlflow ui --backend-store-uri ./mlruns`);
set `mlflow_uri` in the recipe, or MLFLOW_TRACKING_URI, to log to a server instead.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

RUN_ID_FILE = ".mlflow_run_id"


def tracking_uri(recipe_uri: str | None) -> str:
    uri = recipe_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"file:{Path('mlruns').resolve()}"
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store in maintenance mode behind this switch; a local file store is what a
        # one-machine user wants by default (no server, no database), so we opt in.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _flatten(recipe) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in recipe.model_dump().items()}


@contextmanager
def mlflow_run(out: Path, recipe):
    """Start (or continue, on resume) the MLflow run of the training run in `out`; yields None if MLflow fails."""
    import mlflow

    try:
        mlflow.set_tracking_uri(tracking_uri(recipe.mlflow_uri))
        mlflow.set_experiment("seedbed")
        id_file = out / RUN_ID_FILE
        run_id = id_file.read_text().strip() if recipe.resume and id_file.is_file() else None
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else out.name)
        id_file.write_text(run.info.run_id)
        if run_id is None:
            mlflow.log_params(_flatten(recipe))
    except Exception as e:  # tracking must never cost a user their training run; say so loudly instead
        Console(stderr=True).print(f"[yellow]MLflow logging is off for this run: {e}[/yellow]")
        yield None
        return
    try:
        yield run
    finally:
        mlflow.end_run()
