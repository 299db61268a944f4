"""Serving: an OpenAI-compatible API over one queueing engine per model (`seedbed serve`).

Read in this order: server.py (recipe -> running server), app.py (routes, auth, limits), completions.py and
chat_completions.py (the endpoints), protocol.py (what the endpoints share), engine.py (queue + worker over an
inference backend), then tools.py, grounding.py and fewshot_profile.py. The calculator and its annotation loop are
`seedbed.inference.calculator` and `seedbed.inference.annotations`, shared with `seedbed eval --tools calculator`.
"""
