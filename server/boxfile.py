"""`.boxforge.yml`: a repository's own recipe for its boxes, read from the checkout after the clone.

    setup:              # run in order in the project dir (bash -c, or sh where bash is missing);
      - npm ci          # the first one that fails fails the create, and the box is burned
      - make build
    services:           # started after setup, each as a background job whose log vm_job_status reads
      - name: web
        command: npm run dev -- --port 3000
        port: 3000      # optional: forwarded to the orchestrator's loopback when the service starts
      - redis-server    # a bare command: named service-2
    timeout: 20m        # how long the whole setup may take (default 30m)

Setup runs as one job (``setup_job_id`` in ServerInfo) with the box env sourced, like every job.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from server.errors import InvalidInput
from server.onbox import scripts
from server.onbox.protocol import Exit
from server.schemas import parse_ttl

BOXFILE_NAME = ".boxforge.yml"
MAX_BOXFILE_BYTES = 64 * 1024
DEFAULT_SETUP_TIMEOUT_S = 30 * 60
_MISSING_EXIT = Exit.NO_BOXFILE


def _command(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("each command must be a non-empty string")
    if "\x00" in value:
        raise ValueError("commands must not contain NUL bytes")
    return value


Command = Annotated[str, BeforeValidator(_command)]


class Service(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Service name")
    command: Command = Field(description="Long-running command, started as a background job in the project dir")
    port: int | None = Field(None, ge=1, le=65535, description="TCP port the service listens on (on the box's "
                                                               "loopback or any address): forwarded when it starts")


class BoxFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    setup: list[Command] = Field(default_factory=list, max_length=100)
    services: list[Service] = Field(default_factory=list, max_length=20)
    timeout: int = DEFAULT_SETUP_TIMEOUT_S

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_ttl(value)

    @field_validator("setup", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("services", mode="before")
    @classmethod
    def _bare_commands(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": f"service-{i}", "command": item} if isinstance(item, str) else item
                    for i, item in enumerate(value, 1)]
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> BoxFile:
        names = [s.name for s in self.services]
        if len(names) != len(set(names)):
            raise ValueError("service names must be unique")
        ports = [s.port for s in self.services if s.port is not None]
        if len(ports) != len(set(ports)):
            raise ValueError("two services declare the same port")
        return self


def parse_boxfile(text: str) -> BoxFile:
    """Parse and validate the file's text; InvalidInput says what is wrong and where."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{BOXFILE_NAME} is not valid YAML: {exc}") from None
    if data is None:
        return BoxFile()
    if not isinstance(data, dict):
        raise InvalidInput(f"{BOXFILE_NAME} must be a mapping with 'setup', 'services' and/or 'timeout'")
    try:
        return BoxFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise InvalidInput(f"{BOXFILE_NAME} is invalid: {problems}") from None


def read_script(project_dir: str) -> str:
    """A command line printing the boxfile (at most one byte over the limit); exit 3 when there is none."""
    return scripts.command_line("boxfile-read.sh", {"path": f"{project_dir}/{BOXFILE_NAME}",
                                                     "max_bytes": MAX_BOXFILE_BYTES}, protocol=True)


def missing(exit_status: int | None) -> bool:
    return exit_status == _MISSING_EXIT


def _head(command: str) -> str:
    first = command.strip().splitlines()[0]
    return first if len(first) <= 80 else first[:77] + "..."


def setup_script(boxfile: BoxFile) -> str:
    """The setup job (``sh/boxfile-setup.sh``): each command in order; the first failure ends the
    job with its exit code."""
    total = len(boxfile.setup)
    params: dict[str, str | int] = {"count": total}
    for i, command in enumerate(boxfile.setup, 1):
        params[f"cmd_{i}"] = command
        params[f"label_{i}"] = f"setup {i}/{total}: {_head(command)}"
    return scripts.program("boxfile-setup.sh", params)
