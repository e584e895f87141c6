from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class FeaturesConfig:
    """Frozen embeddings + scikit-learn logistic regression, C chosen by cross-validation."""

    pooling: str = field(default="auto", metadata={"help": "cls | mean | last | auto (mean for encoders, last for decoders)"})
    c_grid: str = field(default="0.01,0.1,1,10,100", metadata={"help": "inverse regularisation strengths tried by CV"})
    cv_folds: int = field(default=5, metadata={"help": "cross-validation folds used to pick C"})
    max_iter: int = field(default=2000, metadata={"help": "logistic regression solver iterations"})

    def __post_init__(self) -> None:
        try:
            values = [float(c) for c in self.c_grid.split(",")]
        except ValueError:
            raise LmadaptError(f"c_grid must be comma-separated numbers, got {self.c_grid!r}") from None
        if not values or min(values) <= 0:
            raise LmadaptError(f"c_grid values must be > 0, got {self.c_grid!r}")
        if self.cv_folds < 2:
            raise LmadaptError(f"cv_folds must be >= 2, got {self.cv_folds}")

    @property
    def cs(self) -> list[float]:
        return [float(c) for c in self.c_grid.split(",")]
