"""The base of every config schema, and the error a user's config raises.

A leaf module: the task configs (`seqlab.tasks`) and the run config (`seqlab.train.config`) both
import it, and it imports nothing of seqlab.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "StrictModel"]


class ConfigError(ValueError):
    """A problem with a config file, a recipe name or an override; the message is for the user."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
