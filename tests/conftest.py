"""Shared pytest configuration for iaxgw."""

from __future__ import annotations
