"""Tiny random checkpoints in real Hugging Face layouts, for kiapi's real-engine test lane.

See README.md: ``python -m tiny_models build --hub-cache DIR`` writes them; ``patches.apply()``
sizes mflux's modules to match.
"""
