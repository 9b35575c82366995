from mflux.models.ideogram4.model.ideogram4_text_encoder.caption import (
    Ideogram4Caption,
    Ideogram4CaptionWarning,
)

__all__ = ["Ideogram4Caption", "Ideogram4CaptionWarning"]
