"""The /api/v1 router; route modules are included here."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
