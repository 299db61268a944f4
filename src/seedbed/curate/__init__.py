"""`seedbed data prepare`: curate instruction or text data before training, one module per stage.

`prepare.py` runs the pipeline; `stages.py` the per-record stages and `engines.py` where they run; `config.py`
holds every stage's settings (pydantic only, so a recipe validates without loading any stage's libraries).
Reading users' files lives in `seedbed.data`.
"""
