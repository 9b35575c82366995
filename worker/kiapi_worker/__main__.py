"""Entry point for ``python -m kiapi_worker``."""

from kiapi_worker.server import main

if __name__ == "__main__":
    raise SystemExit(main())
