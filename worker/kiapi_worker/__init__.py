"""kiapi's engine worker: drives mflux for the TypeScript server over JSON lines.

Run it as ``python -m kiapi_worker``. The protocol is described in ``worker/README.md``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
