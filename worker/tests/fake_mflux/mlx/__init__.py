"""Fake ``mlx`` for kiapi's worker tests: only the memory and device API the worker touches."""
