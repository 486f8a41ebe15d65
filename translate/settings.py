"""Settings of the translation store and the operator's number maps: the ``numbers:``
section of ``ansim.yaml``, and how paths in any configuration file are read.

Every relative path in a configuration file is taken relative to the configuration
folder (the one ``--config`` names), never to the current directory, so an engine or a
command started anywhere finds the same store and maps. Absolute paths stay as written.
The defaults suit the repository's layout: the configuration in ``config/`` and state in
``var/`` beside it (``../var/numbers.lmdb`` from ``config/``).

The process entry point reads the whole configuration and hands the resolved settings
to ``translate.cli``; this package reads no configuration file of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from translate.numbers import NumberPlan
from translate.reload import DropGuard

__all__ = ["DEFAULT_CONFIG_DIR", "NumbersSettings", "config_path"]

#: The configuration folder when ``--config`` is not given (relative to the current one).
DEFAULT_CONFIG_DIR = "config"


def config_path(folder: str | os.PathLike[str], value: str | os.PathLike[str]) -> str:
    """``value`` as an absolute path, a relative one taken from the configuration
    ``folder``; ``..`` and ``.`` steps are folded (as a shell's ``cd`` does)."""
    path = Path(os.path.expanduser(os.fspath(value)))
    if not path.is_absolute():
        path = Path(folder) / path
    return os.path.abspath(path)


class NumbersSettings(BaseModel):
    """The translation store, the number maps and how reloads of the maps are guarded."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(
        "../var/numbers.lmdb", description="LMDB store folder, relative to the config folder"
    )
    maps: str = Field("numbers", description="number-map folder, relative to the config folder")
    country_code: str = Field("82", pattern=r"^[1-9][0-9]{0,2}$")
    trunk_prefix: str = Field("0", pattern=r"^[0-9]{0,3}$")
    international_prefix: str = Field("00", pattern=r"^[0-9]{1,4}$")
    watch: bool = Field(True, description="reload the maps when a file under `maps` changes")
    settle: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="seconds the maps folder must be quiet before a watched change is loaded",
    )
    writer_wait: float = Field(
        300.0,
        ge=0,
        description="longest a watched reload waits for a map file that a process still has"
        " open for writing (seconds); after that the file is tried as it is",
    )
    max_drop: float = Field(
        0.10,
        ge=0,
        le=1,
        description="largest share of the live YAML bindings a reload may remove; more is"
        " refused unless forced (`ansim numbers load --force`, SIGUSR1); 1 turns it off",
    )
    drop_allowance: int = Field(
        10, ge=0, description="bindings a reload may always remove, whatever the share"
    )

    def plan(self) -> NumberPlan:
        """The number plan that national numbers in maps and on the command line follow."""
        return NumberPlan(self.country_code, self.trunk_prefix, self.international_prefix)

    def guard(self) -> DropGuard:
        return DropGuard(self.max_drop, self.drop_allowance)

    def resolved(self, folder: str | os.PathLike[str]) -> NumbersSettings:
        """A copy whose ``store`` and ``maps`` are absolute, taken from ``folder``."""
        return self.model_copy(
            update={
                "store": config_path(folder, self.store),
                "maps": config_path(folder, self.maps),
            }
        )
