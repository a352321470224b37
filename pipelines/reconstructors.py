"""The registry of reconstruction methods: each method is declared once, as a :class:`Method`.

A method module in ``pipelines/methods/`` declares its name, modality, a one-line summary, its parameters as a
pydantic model (types, defaults, bounds, choices; the service-level keys ``engine``, ``providers`` and
``device`` marked as such), its learned model if any, and the function that runs it, and calls
:func:`register`. The CLI (``recon methods``, ``--param``, ``recon train``), the HTTP catalog and submission
checks, the job worker and the README's method table all read these declarations.

Parameters are checked by :meth:`Method.check`, the one check everyone calls: a wrong type, a value out of
range, an unknown choice or an unknown key raises :class:`ParamError` naming the parameter and what it allows.
"""

from __future__ import annotations

import importlib
import pkgutil
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from pipelines.data import CTAcquisition, ImageVolume, MRIAcquisition
from pipelines.io.detect import formats_for

Progress = Callable[[int, int], None]
Acquisition = MRIAcquisition | CTAcquisition
METHODS_PACKAGE = "pipelines.methods"
# json_schema_extra of a service-level parameter (engine, providers, device); "allowed" words a pattern
SERVICE = {"service": True}


def in_stages(progress: Progress | None, sizes: list[int]) -> list[Progress | None]:
    """``progress`` split over consecutive stages of ``sizes`` units: stage k's ``(done, n_k)`` is reported as
    ``(sum of the earlier sizes + done, sum of all sizes)``, so one bar runs once over the whole."""
    if progress is None:
        return [None] * len(sizes)
    total = sum(sizes)
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]
    return [lambda done, _n, base=base: progress(base + done, total) for base in offsets]


class MethodParams(BaseModel):
    """Base of every method's parameter model: strict types (no "10" for 10), no unknown keys, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class ParamError(ValueError):
    """Parameters a method does not accept; the message names the parameter and what is allowed."""


@dataclass(frozen=True)
class LearnedModel:
    """What a learned method needs from the model zoo and the trainer."""

    kind: str                       # network kind for models.unrolled.build_model
    default_model: str              # zoo id used when no model_id is given
    train_config: dict[str, Any]    # architecture `recon train` uses unless --config says otherwise


@dataclass(frozen=True)
class ParameterInfo:
    """One parameter as users see it (``recon methods``, ``GET /v1/pipelines``, the README)."""

    name: str
    type: str                       # integer, number, boolean, string, array
    default: Any
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None      # regular expression a string must match
    words: str | None = None        # the allowed values in words where a pattern says it poorly
    nullable: bool = False
    service: bool = False           # a service-level key (engine, providers, device), not an algorithm setting

    def allowed(self) -> str:
        """What values the parameter takes, in words."""
        if self.words:
            text = self.words
        elif self.choices is not None:
            text = ("a list of " if self.type == "array" else "one of ") + ", ".join(map(str, self.choices))
        elif self.type in ("integer", "number"):
            text = "an integer" if self.type == "integer" else "a number"
            low = None if self.minimum is None else f"{'>' if self.exclusive_minimum else '>='} {_num(self.minimum)}"
            high = None if self.maximum is None else f"{'<' if self.exclusive_maximum else '<='} {_num(self.maximum)}"
            if low and high and not (self.exclusive_minimum or self.exclusive_maximum):
                text += f" from {_num(self.minimum)} to {_num(self.maximum)}"
            elif low or high:
                text += " " + " and ".join(b for b in (low, high) if b)
        elif self.type == "boolean":
            text = "true or false"
        elif self.pattern:
            text = f"a string matching {self.pattern}"
        else:
            text = "a string"
        return f"null or {text}" if self.nullable else text


@dataclass(frozen=True)
class Method:
    """A reconstruction method, declared once."""

    name: str
    modality: Literal["mri", "ct"]
    summary: str
    params: type[MethodParams]
    run: Callable[[Any, Any, Progress | None], ImageVolume]   # (acquisition, checked params, progress)
    learned: LearnedModel | None = None
    progress_unit: str = ""         # what progress(done, total) counts; default: slices (MRI), iterations (CT)
    parameters: tuple[ParameterInfo, ...] = field(init=False)

    def __post_init__(self) -> None:
        infos = tuple(_describe(name, info) for name, info in self.params.model_fields.items())
        object.__setattr__(self, "parameters", infos)
        if not self.progress_unit:
            object.__setattr__(self, "progress_unit", "slice" if self.modality == "mri" else "iteration")

    @property
    def input_kinds(self) -> tuple[str, ...]:
        """The raw-data formats (``pipelines.io.detect``) this method's modality reads."""
        return formats_for(self.modality)

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.parameters}

    def check(self, params: dict[str, Any] | None) -> MethodParams:
        """The checked parameters (defaults filled in); :class:`ParamError` naming the first bad one."""
        if params is not None and not isinstance(params, dict):
            raise ParamError(f"parameters must be an object of names to values, not {type(params).__name__}")
        try:
            return self.params.model_validate(params or {})
        except ValidationError as err:
            raise ParamError(self._explain(err.errors(), params or {})) from None

    def _explain(self, errors: list[dict[str, Any]], params: dict[str, Any]) -> str:
        """Every unknown key at once, else the first value outside its declaration (type, range, choice, pattern),
        else the first a declared validator refused (an unknown model, a setting that does not fit another one):
        a value that breaks its own declaration is named even when a check across parameters failed first."""
        by_name = {p.name: p for p in self.parameters}
        unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and e["loc"])
        if unknown:
            known = ", ".join(by_name) or "none (it takes no parameters)"
            names = ", ".join(map(repr, unknown))
            return f"unknown parameter{'s' if len(unknown) > 1 else ''} {names}; {self.name} takes: {known}"
        error = ([e for e in errors if e["type"] != "value_error"] or errors)[0]
        name = str(error["loc"][0])
        shown = _shown(params.get(name))
        if error["type"] == "value_error":  # a declared validator's own reason (e.g. no such model in the zoo)
            return f"parameter {name!r} is {shown}: {error['ctx']['error']}"
        return f"parameter {name!r} is {shown}; allowed: {by_name[name].allowed()}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_JSON_TYPE = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _describe(name: str, info: FieldInfo) -> ParameterInfo:
    annotation, nullable = _strip_none(info.annotation)
    choices = None
    kind = "string"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
    elif origin in (list, tuple):
        inner = typing.get_args(annotation)[0]
        kind = "array"
        if typing.get_origin(inner) is Literal:
            choices = typing.get_args(inner)
    else:
        kind = _JSON_TYPE.get(annotation, "string")
    bounds: dict[str, Any] = {}
    for meta in info.metadata:
        if getattr(meta, "pattern", None):
            bounds["pattern"] = meta.pattern
        for attr, key, exclusive in (("ge", "minimum", False), ("gt", "minimum", True),
                                     ("le", "maximum", False), ("lt", "maximum", True)):
            if isinstance(meta, getattr(annotated_types, attr.capitalize())):
                bounds[key] = getattr(meta, attr)
                bounds[f"exclusive_{key}"] = exclusive
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return ParameterInfo(name=name, type=kind, default=info.default, description=info.description or "",
                         choices=choices, nullable=nullable, service=bool(extra.get("service")),
                         words=extra.get("allowed"), **bounds)


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


_REGISTRY: dict[tuple[str, str], Method] = {}
_loaded = False


def register(method: Method) -> Method:
    key = (method.modality, method.name)
    if key in _REGISTRY and _REGISTRY[key] is not method:
        raise ValueError(f"{method.modality} method {method.name!r} is declared twice")
    _REGISTRY[key] = method
    return method


def _load() -> None:
    """Import every module of ``pipelines/methods/`` (each declares its methods); ``_``-modules are helpers."""
    global _loaded
    if not _loaded:
        package = importlib.import_module(METHODS_PACKAGE)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{METHODS_PACKAGE}.{module.name}")
        _loaded = True


def available(modality: str | None = None) -> list[Method]:
    _load()
    return [m for (mod, _), m in sorted(_REGISTRY.items()) if modality in (None, mod)]


def get(modality: str, name: str) -> Method:
    _load()
    try:
        return _REGISTRY[(modality, name)]
    except KeyError:
        names = ", ".join(m.name for m in available(modality)) or "none"
        raise ValueError(f"unknown {modality.upper()} method {name!r}; available: {names}") from None


def learned_models(modality: str | None = None) -> dict[str, LearnedModel]:
    """``{method name: its learned model}`` for every method (of ``modality``) that runs a network from the zoo."""
    return {m.name: m.learned for m in available(modality) if m.learned is not None}


def default_models(modality: str | None = None) -> dict[str, str]:
    """``{method name: zoo id it uses by default}`` for every learned method (of ``modality``)."""
    return {name: model.default_model for name, model in learned_models(modality).items()}


def learned_model(kind: str) -> LearnedModel:
    """The learned model declaration for network kind ``kind`` (``recurrentvarnet``, ``rim``)."""
    by_kind = {model.kind: model for model in learned_models().values()}
    if kind not in by_kind:
        raise ValueError(f"unknown model kind {kind!r}; trainable kinds: {', '.join(sorted(by_kind))}")
    return by_kind[kind]
