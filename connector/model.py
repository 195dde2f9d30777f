"""The base of every config model: unknown keys are errors, and values never change after loading."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section. A typo in a key must fail loudly rather than silently disable a setting."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
