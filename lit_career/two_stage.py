"""The two-stage stay/move output shared by CAREER and the LM heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def two_stage_log_probs(logits: Tensor, stay_logit: Tensor, prev: Tensor) -> Tensor:
    """Log distribution over states: ``log π`` on ``prev`` and ``log(1-π) + log softmax`` over the other
    states where ``prev >= 0``; a plain log softmax where ``prev < 0``. Shapes [..., V], [...], [...]."""
    index = prev.clamp(min=0).unsqueeze(-1)
    move = logits.scatter(-1, index, float("-inf")).log_softmax(-1) + F.logsigmoid(-stay_logit).unsqueeze(-1)
    move = move.scatter(-1, index, F.logsigmoid(stay_logit).unsqueeze(-1))
    return torch.where((prev >= 0).unsqueeze(-1), move, logits.log_softmax(-1))
