"""The explorer's pages (next step); for now only the stylesheet the docs page uses."""

from __future__ import annotations

from fastapi import APIRouter

from neuronmap.service.http.assets import CSS

__all__ = ["CSS", "build_router"]


def build_router() -> APIRouter:
    return APIRouter()
