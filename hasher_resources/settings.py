"""Every ``HASHER_*`` environment variable, validated once, in one place.

:class:`HasherSettings` is the registry, a ``pydantic-settings`` model: one field per variable (its
alias is the variable's name), its type, default and allowed values. pydantic-settings reads the
environment into it; :func:`load_settings` returns it, or raises :class:`SettingsError` with a
one-line message naming each bad variable, its value and what is allowed. A ``HASHER_*`` name that is
not in the registry (``HASHER_EMBEDER``) is an error too, with the closest known name: a typo in a
name is as silent as a typo in a value (pydantic-settings only reads the names it knows, so this rule
is ours). ``hasher_assets.definitions`` calls it at load, so ``dagster definitions validate`` and
every run fail on a bad setting before anything starts; the ``hasher`` CLI reports it in one line.

An empty (or blank) value means unset, as in the shell idiom ``HASHER_ASIC_URL= dagster dev``.
Choices are matched case-insensitively. The variables read only by ``scripts/*.sh`` are listed too,
so the registry knows every name the project uses.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from hasher_core.errors import HasherError
from hasher_core.names import AUTO, CPU_PATHS, KERNEL_BACKENDS

PREFIX = "HASHER_"


class SettingsError(HasherError, ValueError):
    """One or more ``HASHER_*`` variables are invalid; the one-line message names each and what is allowed."""


def _choice(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Choice = BeforeValidator(_choice)


class Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (the process's environment by
    default), with blank values taken as unset."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        environ = os.environ if environ is None else environ
        self.env_vars = {name: value for name, value in environ.items() if value.strip()}


class HasherSettings(BaseSettings):
    """The ``HASHER_*`` environment variables (aliases) and their defaults; ``None`` means unset."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, populate_by_name=False, case_sensitive=True
    )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> HasherSettings:
        """The settings ``environ`` (default: the process's environment) holds. Raises pydantic's
        ``ValidationError`` (see :func:`load_settings` for the one-line message)."""
        return cls.model_validate(Environment(cls, environ)())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """``HasherSettings()`` reads what :meth:`from_environment` reads: no ``.env`` file, no secrets."""
        return init_settings, Environment(settings_cls)

    # Where things are (DESIGN §2; hasher_resources.files turns them into paths with defaults).
    miner_dir: str | None = Field(None, alias="HASHER_MINER_DIR", description="Data Miner output directory")
    inbox_dir: str | None = Field(None, alias="HASHER_INBOX_DIR", description="raw-text inbox (*.txt, *.md)")
    data_dir: str | None = Field(None, alias="HASHER_DATA_DIR", description="every output of every stage")
    progress_dir: str | None = Field(
        None, alias="HASHER_PROGRESS_DIR", description="search progress stores (default under the data dir)"
    )
    # What runs where.
    kernel_backend: Annotated[Literal[(AUTO, *sorted(KERNEL_BACKENDS))], Choice] = Field(  # type: ignore[valid-type]
        "auto", alias="HASHER_KERNEL_BACKEND", description="SHA-256 kernel backend"
    )
    cpu_kernel: Annotated[Literal[(AUTO, *CPU_PATHS)], Choice] = Field(  # type: ignore[valid-type]
        "auto", alias="HASHER_CPU_KERNEL", description="CPU kernel variant (SHA-NI instructions or SIMD)"
    )
    executor: Annotated[Literal["multiprocess", "ray", "k8s"], Choice] = Field(
        "multiprocess", alias="HASHER_EXECUTOR", description="Dagster executor of the jobs"
    )
    seeds_cpus: int | None = Field(
        None, ge=1, alias="HASHER_SEEDS_CPUS", description="cores the seeds step asks for and hashes on"
    )
    ray_runtime_env: str | None = Field(
        None, alias="HASHER_RAY_RUNTIME_ENV", description="Ray runtime environment of the jobs (JSON object)"
    )
    embedder: Annotated[Literal["hashing", "ollama"], Choice] = Field(
        "hashing", alias="HASHER_EMBEDDER", description="offline lexical hashing, or Ollama (semantic)"
    )
    ollama_url: str = Field(
        "http://127.0.0.1:11434", alias="HASHER_OLLAMA_URL", description="base URL of the Ollama server"
    )
    asic_url: str | None = Field(
        None,
        alias="HASHER_ASIC_URL",
        description="serial device, socket://host:port or pty; unset = emulator",
    )
    # The sensor.
    sensor_max_files: int = Field(
        8, ge=1, alias="HASHER_SENSOR_MAX_FILES", description="changed files the sensor reads per tick"
    )
    sensor_difficulty_bits: int | None = Field(
        None,
        ge=1,
        le=32,
        alias="HASHER_SENSOR_DIFFICULTY_BITS",
        description="seeds difficulty of sensor runs",
    )
    # Runs.
    partitions_per_run: int | Literal["all"] = Field(
        100,
        alias="HASHER_PARTITIONS_PER_RUN",
        description="partitions one run of stages 1-4 takes (backfill policy and sensor), or 'all'",
    )
    # `hasher serve`.
    serve_token: str | None = Field(
        None,
        alias="HASHER_SERVE_TOKEN",
        repr=False,
        description="bearer token `hasher serve` requires (needed to bind a non-loopback address)",
    )
    # Read only by scripts/*.sh; listed so the registry knows every name.
    python: str | None = Field(None, alias="HASHER_PYTHON", description="Python 3.12 the scripts use")
    difficulty_bits: int | None = Field(
        None, ge=1, le=32, alias="HASHER_DIFFICULTY_BITS", description="quickstart seeds difficulty"
    )
    quickstart_partitions: str | None = Field(
        None, alias="HASHER_QUICKSTART_PARTITIONS", description="quickstart partitions, or 'all'"
    )
    quickstart_prompt: str | None = Field(
        None, alias="HASHER_QUICKSTART_PROMPT", description="quickstart's generation prompt"
    )

    @field_validator("partitions_per_run", mode="before")
    @classmethod
    def _count_or_all(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "all":
            return "all"
        if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError("must be a number of partitions >= 1, or all")

    @field_validator("ray_runtime_env")
    @classmethod
    def _json_object(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object ({exc})") from None
            if not isinstance(parsed, dict):
                raise ValueError('must be a JSON object, e.g. {"pip": ["numpy"]}')
        return value

    @field_validator("ollama_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:11434")
        return value


def known_variables() -> dict[str, str]:
    """Every ``HASHER_*`` variable → its description, in registry order."""
    return {f.alias: f.description or "" for f in HasherSettings.model_fields.values() if f.alias}


def load_settings(environ: Mapping[str, str] | None = None) -> HasherSettings:
    """The validated ``HASHER_*`` settings of ``environ`` (default ``os.environ``).

    Raises :class:`SettingsError` naming every invalid or unknown variable, in one line.
    """
    environ = os.environ if environ is None else environ
    known = known_variables()
    problems = [
        _unknown(name, known)
        for name, value in sorted(environ.items())
        if name.startswith(PREFIX) and value.strip() and name not in known
    ]
    problems += [
        problem
        for name, value in sorted(environ.items())
        if name.startswith(PREFIX) and value.strip() and (problem := _not_utf8(name, value))
    ]
    if not problems:
        try:
            return HasherSettings.from_environment(environ)
        except ValidationError as exc:
            problems = [_describe(error, environ) for error in exc.errors()]
    raise SettingsError("; ".join(problems))


def setting(name: str) -> object:
    """The validated value of the one ``HASHER_*`` variable ``name`` (its default when unset), cheap
    enough for a hot path: each distinct raw value is validated once (``load_settings`` checks all
    of them, ~30 µs). Raises :class:`SettingsError` for a bad value, in ``load_settings``' words,
    and KeyError for a name not in the registry."""
    return _validated(name, os.environ.get(name, ""))


@functools.lru_cache(maxsize=256)
def _validated(name: str, raw: str) -> object:
    field = next(key for key, f in HasherSettings.model_fields.items() if f.alias == name)
    try:
        return getattr(HasherSettings.from_environment({name: raw}), field)
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(error, {name: raw}) for error in exc.errors())) from None


def _not_utf8(name: str, value: str) -> str | None:
    """Why a value whose bytes are not UTF-8 (Python keeps such bytes as lone surrogates, PEP 383) is
    unusable, or None: pyarrow and Dagster encode every path and string as UTF-8 and fail on it."""
    raw = os.fsencode(value)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"{name} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}): pyarrow and "
            "Dagster take UTF-8 paths and text only; rename the folder or re-type the value in UTF-8"
        )
    return None


def _unknown(name: str, known: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
    return f"{name} is not a hasher setting ({hint})"


def _describe(error: Mapping[str, object], values: Mapping[str, str]) -> str:
    name = str(error["loc"][0]) if error.get("loc") else "HASHER_*"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error.get("type") == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", "")).replace(" or ", ", ").replace("'", "")
        message = f"allowed values: {expected}"
    return f"{name}={values.get(name, '')!r} is invalid: {message}"
