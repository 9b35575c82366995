from mflux.models.ideogram4.variants import Ideogram4

__all__ = ["Ideogram4"]
