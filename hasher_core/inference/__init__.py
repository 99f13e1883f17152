"""Using a deployed bundle (DESIGN §6.1): ``model`` answers contexts given as text (greedy
generation, recall), ``readback`` recomputes the seeds stored for one frame's slots and says which
token they give back (``hasher predict --slots``). Both run the seeds through a :data:`RowEvaluator`,
the kernel resource's ``evaluate_rows``."""

from .model import DEFAULT_MAX_DISTANCE, Generation, Model, Recall, Step
from .readback import Candidate, Prediction, RowEvaluator, candidate_rows, frame_slots, predict, predict_row

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "Candidate",
    "Generation",
    "Model",
    "Prediction",
    "Recall",
    "RowEvaluator",
    "Step",
    "candidate_rows",
    "frame_slots",
    "predict",
    "predict_row",
]
