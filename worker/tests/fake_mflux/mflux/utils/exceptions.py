"""The exception hierarchy the worker relies on (same names and bases as mflux)."""


class MFluxException(Exception):
    pass


class MFluxUserException(MFluxException):
    pass


class StopImageGenerationException(MFluxUserException):
    pass
