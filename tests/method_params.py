"""Bad parameter values for every declared parameter of every method, derived from the declarations: a wrong
type, a value just out of range, an unknown choice, a malformed string, and an unknown key."""

from __future__ import annotations

from typing import Any

from pipelines.reconstructors import Method, ParameterInfo, available

WRONG_TYPE = {"integer": "abc", "number": "abc", "boolean": "yes", "string": 12345, "array": "not-a-list"}


def _out_of_range(p: ParameterInfo) -> list[Any]:
    step = 1 if p.type == "integer" else 1e-3 * max(1.0, abs(p.maximum or p.minimum or 1.0))
    values = []
    if p.minimum is not None:
        values.append(p.minimum if p.exclusive_minimum else p.minimum - step)
    if p.maximum is not None:
        values.append(p.maximum if p.exclusive_maximum else p.maximum + step)
    return [int(v) if p.type == "integer" else float(v) for v in values]


def bad_values(p: ParameterInfo) -> list[tuple[str, Any]]:
    """``[(what is wrong, value)]`` for one parameter."""
    cases: list[tuple[str, Any]] = [("wrong type", WRONG_TYPE[p.type])]
    cases += [("out of range", v) for v in _out_of_range(p)]
    if p.choices is not None:
        cases.append(("unknown choice", ["no-such-choice"] if p.type == "array" else "no-such-choice"))
    if p.pattern is not None:
        cases.append(("malformed", "no such value!"))
    if not p.nullable:
        cases.append(("null", None))
    return cases


def cases() -> list[tuple[Method, dict[str, Any], str]]:
    """``(method, params, label)`` for every bad value of every parameter of every method, and an unknown key."""
    out = []
    for method in available():
        for p in method.parameters:
            for what, value in bad_values(p):
                out.append((method, {p.name: value}, f"{method.modality}-{method.name}:{p.name}:{what}"))
        out.append((method, {"no_such_parameter": 1}, f"{method.modality}-{method.name}:unknown key"))
    return out
