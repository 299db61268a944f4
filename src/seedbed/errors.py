"""The one error type the CLI shows as a message: `SeedbedError`, and the user-facing errors built on it.

An error caused by what the user gave (a recipe field, a data line, a model path, a tool definition) derives from
`SeedbedError`; the CLI prints its message and exits 2. Anything else is a bug of ours and keeps its traceback.
Each subclass also derives from the built-in type it always was (ValueError, RuntimeError), so callers that
caught those still do.
"""

from __future__ import annotations


class SeedbedError(Exception):
    """Something the user gave is wrong or missing; the message names the file, field or line and what to do."""


class RecipeError(SeedbedError, ValueError):
    """A recipe that does not validate; the message names the file and field."""


class DataError(SeedbedError, ValueError):
    """Data that cannot be read; the message lists every bad record as file:line: field: problem."""


class TemplateError(SeedbedError, ValueError):
    """A conversation the chat template cannot render as asked."""


class ModelLoadError(SeedbedError, RuntimeError):
    """A model that cannot be found or loaded; the message says what was tried."""


class EvalError(SeedbedError, ValueError):
    """An evaluation that cannot run as asked; the message says what to change."""


class ToolError(SeedbedError, ValueError):
    """A tool definition or tool call that cannot be used; the message names the tool and the problem."""


class RetrievalError(SeedbedError, ValueError):
    """A retrieval index or document that cannot be opened or updated as asked."""


class MissingExtra(SeedbedError, ImportError):
    """A verb's optional libraries are not installed; the message gives the pip line that installs its extra."""


class TrainingDiverged(SeedbedError, RuntimeError):
    """A training run whose loss or gradient stopped being a finite number; the message names the step."""
