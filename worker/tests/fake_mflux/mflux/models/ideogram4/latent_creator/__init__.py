from mflux.models.ideogram4.latent_creator.ideogram4_latent_creator import Ideogram4LatentCreator

__all__ = ["Ideogram4LatentCreator"]
