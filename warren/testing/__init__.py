"""Helpers for running Warren inside tests."""
