"""Fake mflux 0.24.0 for kiapi's worker tests.

Mirrors the module paths, constructor and ``generate_image`` signatures, callback protocol and
exceptions of the real package, with no weights and no MLX. Like the real package it has no
``__version__``: the version comes from the ``mflux-0.24.0.dist-info`` beside this directory.
"""

from mflux._fake import emit_garbage

emit_garbage("import mflux")
