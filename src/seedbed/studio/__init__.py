"""Seedbed Studio: the lifecycle in a browser, over the functions the CLI calls (`seedbed studio --data-dir DIR`).

Each job is a `seedbed` CLI process built from a validated recipe (`verbs.py`), recorded in SQLite (`store.py`) and
watched by a scheduler (`jobs.py`), so it outlives the tab and the studio; pages are server-rendered HTML with a
little vanilla JS (`pages/`, `studio.js`), no build step and nothing fetched from a network.
"""
