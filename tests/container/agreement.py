"""How far one predictor's detections are from another's on the same image: the measure the
cpu-runtime benchmark prints and the CPU runtime tests hold to the documented tolerance.

An instance of the reference is matched by the candidate's instance of the same class with the
highest box IoU, if that IoU is at least MATCH_IOU; each candidate instance matches once, reference
instances are taken in descending score. Matched pairs give the largest box coordinate and score
differences and the smallest mask IoU (full-size masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATCH_IOU = 0.9


@dataclass(frozen=True)
class Agreement:
    matched: int
    reference: int  # instances in the reference
    candidate: int  # instances in the candidate
    max_box_px: float
    max_score: float
    min_mask_iou: float  # 1.0 when no pair has masks

    @property
    def all_matched(self) -> bool:
        return self.matched == self.reference == self.candidate


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)

    def area(boxes: np.ndarray) -> np.ndarray:
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    union = area(first)[:, None] + area(second)[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _mask(detections, index: int) -> np.ndarray | None:
    masks = detections.masks
    if masks is None:
        return None
    return masks.full(index) if hasattr(masks, "full") else np.asarray(masks[index])


def compare(reference, candidate) -> Agreement:
    """reference and candidate: Detections (inference_server.backends.base) of the same image."""
    iou = box_iou(reference.boxes, candidate.boxes) if len(reference) and len(candidate) else None
    used: set[int] = set()
    matched, max_box, max_score, min_mask = 0, 0.0, 0.0, 1.0
    for index in np.argsort(-reference.scores, kind="stable"):
        if iou is None:
            break
        overlaps = np.where(candidate.classes == reference.classes[index], iou[index], 0.0)
        overlaps[list(used)] = 0.0
        best = int(np.argmax(overlaps))
        if overlaps[best] < MATCH_IOU:
            continue
        used.add(best)
        matched += 1
        max_box = max(max_box, float(np.abs(reference.boxes[index] - candidate.boxes[best]).max()))
        max_score = max(max_score, float(abs(reference.scores[index] - candidate.scores[best])))
        first, second = _mask(reference, int(index)), _mask(candidate, best)
        if first is not None and second is not None:
            union = np.logical_or(first, second).sum()
            if union:
                min_mask = min(min_mask, float(np.logical_and(first, second).sum() / union))
    return Agreement(matched, len(reference), len(candidate), max_box, max_score, min_mask)
