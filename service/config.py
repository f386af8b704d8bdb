"""Settings, read from the environment once and handed down; nothing else reads os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from neuronmap.options import DeviceName

_ENV = {
    "neo4j_uri": "NEO4J_URI",
    "neo4j_user": "NEO4J_USERNAME",
    "neo4j_password": "NEO4J_PASSWORD",
    "neo4j_database": "NEO4J_DATABASE",
    "home": "NEURONMAP_HOME",
    "local_port": "NEURONMAP_NEO4J_PORT",
    "local_heap": "NEURONMAP_NEO4J_HEAP",
    "local_pagecache": "NEURONMAP_NEO4J_PAGECACHE",
    "device": "NEURONMAP_DEVICE",
    "batch_size": "NEURONMAP_BATCH_SIZE",
    "native_kernels": "NEURONMAP_NATIVE_KERNELS",
    "ray_address": "NEURONMAP_RAY_ADDRESS",
}


def default_home(environ: Mapping[str, str]) -> Path:
    """The per-user data home: $XDG_DATA_HOME/neuronmap, else ~/.local/share/neuronmap."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "neuronmap"


class Settings(BaseModel):
    """Everything neuronmap reads from its environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    neo4j_uri: str | None = None  # None: the managed local server (`neuronmap db start`)
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr = SecretStr("")
    neo4j_database: str = "neo4j"  # Community Edition has exactly one user database
    home: Path  # jars, the local server's data, its password and log
    local_port: int = Field(default=7687, ge=1, le=65535)
    local_heap: str = Field(default="1g", pattern=r"^\d+[kmg]$")
    local_pagecache: str = Field(default="512m", pattern=r"^\d+[kmg]$")
    device: DeviceName = "auto"
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)  # edges per write transaction
    # Build and use the runtime-compiled C lesion kernels where the machine allows (a C compiler, AVX-512); 0 turns
    # them off and lesions run on torch only.
    native_kernels: bool = True
    # The Ray cluster `serve` and `sweep` join (ray://head:10001, head:6379 or auto); None starts a local Ray.
    ray_address: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        values: dict[str, object] = {field: environ[var] for field, var in _ENV.items() if environ.get(var)}
        values.setdefault("home", default_home(environ))
        return cls(**values)
