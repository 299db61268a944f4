"""Seedbed's version: one place (pyproject.toml reads it), in a module of its own so that modules below the
package root can name it without importing the root, which imports every stage (its Python API)."""

__version__ = "0.1.0"
