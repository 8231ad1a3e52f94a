"""The base of every config section: strict keys, and no boolean read as a number.

It sits at the bottom of the layers so that each layer can declare its own knobs where they are
used (a mixer's or a curriculum rule's in :mod:`segmix.shuffle`, a stage's in
:mod:`segmix.config`), each the one source of its defaults.
"""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, field_validator


class Section(BaseModel):
    """A pydantic model that refuses unknown keys and booleans given for numbers.

    Examples:
        >>> class Knobs(Section):
        ...     epochs: int = 1
        >>> Knobs(epochs=3).epochs
        3
        >>> Knobs(epochs=True)
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for Knobs
        epochs
          Value error, expected a number, got true [type=value_error, input_value=True, input_type=bool]
            For further information visit https://errors.pydantic.dev/.../v/value_error
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _bool_is_not_a_number(cls, value, info):
        # pydantic reads true as 1 for an int: `--set train.epochs=true` would train one epoch.
        annotation = cls.model_fields[info.field_name].annotation
        kinds = get_args(annotation) or (annotation,)
        if isinstance(value, bool) and bool not in kinds and (int in kinds or float in kinds):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value
