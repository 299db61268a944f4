"""Quiet the libraries' own chatter (per-file progress bars, notices about their internals) under our output."""

from __future__ import annotations


def quiet_libraries() -> None:
    """Our own progress bars say what is happening; the libraries' per-file bars and deprecation notices
    about their own internals only bury them."""
    import importlib.util
    import warnings

    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    if importlib.util.find_spec("datasets") is not None:  # [train] installs it; a server has none to quiet
        import datasets

        datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
