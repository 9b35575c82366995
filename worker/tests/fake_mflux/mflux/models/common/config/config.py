"""Per-generation config: dimension flooring, scheduler check and the img2img start step."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mflux._fake import FakeTqdm

logger = logging.getLogger(__name__)

SCHEDULER_NAMES = (
    "linear",
    "LinearScheduler",
    "flow_match_euler_discrete",
    "FlowMatchEulerDiscreteScheduler",
    "seedvr2_euler",
    "SeedVR2EulerScheduler",
)


class Config:
    def __init__(
        self,
        model_config: Any,
        num_inference_steps: int = 4,
        height: int | None = 1024,
        width: int | None = 1024,
        guidance: float | None = 4.0,
        image_path: Path | str | None = None,
        image_strength: float | None = None,
        scheduler: str = "linear",
    ) -> None:
        width = 1024 if width is None else width
        height = 1024 if height is None else height
        if width % 16 or height % 16:
            logger.warning("Width and height should be multiples of 16. Rounding down.")
        self.model_config = model_config
        self._num_inference_steps = num_inference_steps
        self._width = 16 * (width // 16)
        self._height = 16 * (height // 16)
        self._guidance = 0.0 if guidance is None else float(guidance)
        self._image_path = Path(image_path) if isinstance(image_path, str) else image_path
        self._image_strength = image_strength
        self._scheduler_name = scheduler
        self._time_steps: FakeTqdm | None = None

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def guidance(self) -> float:
        return self._guidance

    @property
    def num_inference_steps(self) -> int:
        return self._num_inference_steps

    @property
    def image_path(self) -> Path | None:
        return self._image_path

    @property
    def image_strength(self) -> float | None:
        return self._image_strength

    @property
    def init_time_step(self) -> int:
        """img2img skips the first steps: max(1, int(steps * clamp(strength, 0, 1)))."""
        strength = self._image_strength
        if self._image_path is None or strength is None or strength <= 0.0:
            return 0
        return max(1, int(self._num_inference_steps * max(0.0, min(1.0, strength))))

    @property
    def time_steps(self) -> FakeTqdm:
        if self._time_steps is None:
            self._time_steps = FakeTqdm(range(self.init_time_step, self.num_inference_steps))
        return self._time_steps

    @property
    def scheduler(self) -> str:
        """mflux resolves the scheduler lazily, at the first use inside generate_image."""
        name = self._scheduler_name
        if name in SCHEDULER_NAMES:
            return name
        if "." in name:
            raise ValueError(f"Scheduler module not found: {name!r}")
        raise NotImplementedError(f"The scheduler {name!r} is not implemented by mflux.")
