"""The one place that names the mflux release the adapter is written against.

The contract test downloads exactly this sdist and checks the adapter's calls against its source.
"""

MFLUX_VERSION = "0.18.0"
MFLUX_REQUIREMENT = f"mflux=={MFLUX_VERSION}"
