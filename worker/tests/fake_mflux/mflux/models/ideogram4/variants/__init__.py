from mflux.models.ideogram4.variants.txt2img.ideogram4 import Ideogram4

__all__ = ["Ideogram4"]
