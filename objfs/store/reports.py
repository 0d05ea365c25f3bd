"""Reports of the maintenance passes (heal, scrub, gc): plain dataclasses the CLI prints as JSON."""

from __future__ import annotations

from typing import Any


class Report:
    """Base of the maintenance reports; subclasses are dataclasses."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
