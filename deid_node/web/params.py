"""Integer parameters of the console's routes, bounded where they are declared.

A number past what SQL stores (SQLite's INTEGER is 64-bit) would otherwise reach the
database and fail there as a 500 with a traceback; bounded, FastAPI answers 422 naming the
parameter and the bound.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path, Query

__all__ = ["MAX_NUMBER", "Offset", "RowId"]

# The largest integer JavaScript holds exactly: more rows than any audit database counts.
MAX_NUMBER: Final = 2**53 - 1

Offset = Annotated[int, Query(ge=0, le=MAX_NUMBER, description="rows to skip")]
RowId = Annotated[int, Path(ge=1, le=MAX_NUMBER, description="a row's id")]
