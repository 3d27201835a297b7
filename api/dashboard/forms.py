"""The run page's two request forms (draw samples, encode at more t) and how their fields
become the JSON API's request models, with the API's own validation and 422 problems.

A form sends strings; the API's models are strict about JSON types, so a form is validated
in lax mode ("50" is the integer 50), against the same fields and bounds.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from api.problems import pydantic_field_errors, validation_problem
from api.schemas import EncodeRequest, SampleRequest
from drl_engine.spec import SampleSpec

# The sample settings a person usually changes; the others keep the experiment's values.
SAMPLE_FIELDS = ("sampler", "steps", "count", "t_init", "prior", "code_source", "seed")


@dataclass(frozen=True)
class FormField:
    name: str
    choices: tuple[str, ...]   # empty: a free value
    default: object            # SampleSpec's, for an experiment whose spec lacks the field
    bounds: str                # "(≥ 1, ≤ 4096)", or ""


def sample_form() -> list[FormField]:
    """SAMPLE_FIELDS as the form shows them, choices read from SampleSpec (one source)."""
    fields = []
    for name in SAMPLE_FIELDS:
        info = SampleSpec.model_fields[name]
        choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
        bounds = ", ".join(_bound(m) for m in info.metadata)
        fields.append(FormField(name, tuple(str(c) for c in choices), info.default,
                                f"({bounds})" if bounds else ""))
    return fields


def _bound(constraint: object) -> str:
    """`Ge(ge=1)` as "≥ 1" (annotated_types' Gt, Ge, Lt, Le)."""
    for attribute, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
        if hasattr(constraint, attribute):
            return f"{sign} {getattr(constraint, attribute)}"
    return str(constraint)


def sample_request(form: dict[str, str]) -> BaseModel:
    """The SampleRequest of the form's non-empty sample fields; a 422 problem naming them."""
    given = {name: form[name].strip() for name in SAMPLE_FIELDS if form.get(name, "").strip()}
    return _validated(SampleRequest, given)


def encode_request(form: dict[str, str]) -> BaseModel:
    """The EncodeRequest of the form's `t` ("0.1, 0.2 0.3"); a 422 problem naming `t`."""
    values = [v for v in re.split(r"[,\s]+", form.get("t", "")) if v]
    return _validated(EncodeRequest, {"t": values})


def _validated(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(values, strict=False)
    except ValidationError as invalid:
        raise validation_problem(pydantic_field_errors(invalid.errors())) from None
