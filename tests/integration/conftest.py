"""Fixtures more than one integration module uses (pytest finds them here by name)."""
from support.prefork import masters  # noqa: F401
