"""Applies the tiny-model patches in every Python the real-engine tests start with this folder on PYTHONPATH.

The tests put this folder (and ``test/real-engine``, for ``tiny_models``) on the worker's PYTHONPATH
and set ``KIAPI_TINY_MODELS=1``; the worker itself is unchanged. The patches are listed in
``tiny_models/patches.py``.
"""

import os

if os.environ.get("KIAPI_TINY_MODELS") == "1":
    import tiny_models.patches

    tiny_models.patches.apply()
