'''SSD's DetectionOutput in numpy, as source text for the generated Keras and Flax files (one copy for both).

DetectionOutput's number of rows depends on the values, so neither a Keras
graph nor ``jax.jit`` can hold it: the generated ``-f keras-code`` and
``-f flax-code`` files compute it with numpy on the eager values, through
this one function (``ssd_detections``). It restates the rules of
`caffeport.layers.detection_output` (which ``caffeport.run`` computes; the
codegen tests run both on the same inputs): the loc predictions decoded
against the priors (CORNER, CENTER_SIZE or CORNER_SIZE, never clipped); per
image and per class but the background, the scores strictly above the
confidence threshold stable-sorted descending and cut to ``top_k``; greedy NMS
(a box is kept when its overlap with every kept box is <= the threshold, which
shrinks by ``eta`` while above 0.5); ``keep_top_k`` over the image; rows
(image, label, score, xmin, ymin, xmax, ymax) per image by label, in NMS order
(score order after a keep_top_k cut); no detection at all gives one row of -1
per image with the image's index first. The PyTorch file has its own torch
version (`caffeport.codegen.helpers`), since it runs on torch tensors.
'''

from __future__ import annotations

from typing import Any

from caffeport.codegen.common import quote
from caffeport.codegen.registry import NotGenerated, number

SSD_DETECTIONS = '''
def ssd_decode(priors: np.ndarray, variances: np.ndarray, loc: np.ndarray, code_type: str,
               in_target: bool) -> np.ndarray:
    """SSD's DecodeBBox (never clipped): loc (..., P, 4) against priors and variances (P, 4), float32."""
    f32 = np.float32
    px0, py0, px1, py1 = (priors[:, i] for i in range(4))
    var = np.ones_like(variances) if in_target else variances
    lx0, ly0, lx1, ly1 = (loc[..., i] for i in range(4))
    if code_type == "CORNER":
        out = [px0 + var[:, 0] * lx0, py0 + var[:, 1] * ly0, px1 + var[:, 2] * lx1, py1 + var[:, 3] * ly1]
    elif code_type == "CENTER_SIZE":
        pw, ph = px1 - px0, py1 - py0
        pcx, pcy = (px0 + px1) / f32(2), (py0 + py1) / f32(2)
        if in_target:  # Caffe leaves the variance out of these products altogether
            cx, cy, w, h = lx0 * pw + pcx, ly0 * ph + pcy, np.exp(lx1) * pw, np.exp(ly1) * ph
        else:
            cx, cy = var[:, 0] * lx0 * pw + pcx, var[:, 1] * ly0 * ph + pcy
            w, h = np.exp(var[:, 2] * lx1) * pw, np.exp(var[:, 3] * ly1) * ph
        out = [cx - w / f32(2), cy - h / f32(2), cx + w / f32(2), cy + h / f32(2)]
    else:  # CORNER_SIZE
        pw, ph = px1 - px0, py1 - py0
        if in_target:
            out = [px0 + lx0 * pw, py0 + ly0 * ph, px1 + lx1 * pw, py1 + ly1 * ph]
        else:
            out = [px0 + var[:, 0] * lx0 * pw, py0 + var[:, 1] * ly0 * ph,
                   px1 + var[:, 2] * lx1 * pw, py1 + var[:, 3] * ly1 * ph]
    return np.stack(out, axis=-1).astype(f32, copy=False)


def ssd_box_sizes(boxes: np.ndarray) -> np.ndarray:
    """Each box's area, 0 for an inverted box (xmax < xmin or ymax < ymin), as Caffe's BBoxSize."""
    invalid = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return np.where(invalid, np.float32(0), area).astype(np.float32)


def ssd_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float, eta: float,
            top_k: int) -> list[int]:
    """The indices greedy NMS keeps, in the order kept: candidates above ``score_threshold`` by score (stable),
    cut to ``top_k``; a box is kept when its IoU with every kept box is <= the threshold."""
    candidates = np.flatnonzero(scores > np.float32(score_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if -1 < top_k < order.size:
        order = order[:top_k]
    cand = boxes[order]
    sizes = ssd_box_sizes(cand)
    threshold, kept = np.float32(nms_threshold), []
    for j in range(order.size):
        box, others = cand[j], cand[kept]
        apart = ((box[0] > others[:, 2]) | (box[2] < others[:, 0]) | (box[1] > others[:, 3])
                 | (box[3] < others[:, 1]))
        iw = np.minimum(others[:, 2], box[2]) - np.maximum(others[:, 0], box[0])
        ih = np.minimum(others[:, 3], box[3]) - np.maximum(others[:, 1], box[1])
        inter = iw * ih
        with np.errstate(all="ignore"):
            iou = np.where(~apart & (iw > 0) & (ih > 0), inter / (sizes[kept] + sizes[j] - inter), np.float32(0))
        if np.all(iou <= threshold):
            kept.append(j)
            if eta < 1 and threshold > 0.5:
                threshold = np.float32(threshold * np.float32(eta))
    return [int(order[j]) for j in kept]


def ssd_detections(loc: np.ndarray, conf: np.ndarray, prior: np.ndarray, *, num_classes: int, share: bool,
                   background: int, code_type: str, in_target: bool, keep_top_k: int, score_threshold: float,
                   nms_threshold: float, eta: float, top_k: int) -> np.ndarray:
    """SSD's DetectionOutput on float32 arrays in Caffe's order: the (R, 7) rows (image, label, score, xmin, ymin,
    xmax, ymax), per image by label, in NMS order; one row of -1 per image (its index first) when nothing is
    found. ``prior`` holds the P boxes then their P variances (PriorBox's top)."""
    num = loc.shape[0]
    num_loc = 1 if share else num_classes
    flat_prior = prior.reshape(-1)
    count = flat_prior.size // 8
    priors = flat_prior[: count * 4].reshape(count, 4)
    variances = flat_prior[count * 4 : count * 8].reshape(count, 4)
    boxes = ssd_decode(priors, variances, loc.reshape(num, count, num_loc, 4).transpose(0, 2, 1, 3), code_type,
                       in_target)
    scores = conf.reshape(num, count, num_classes)
    rows = []
    for i in range(num):
        picked = {c: ssd_nms(boxes[i, 0 if share else c], scores[i, :, c], score_threshold, nms_threshold, eta,
                             top_k)
                  for c in range(num_classes) if c != background}
        if -1 < keep_top_k < sum(len(v) for v in picked.values()):
            flat = [(c, idx) for c in sorted(picked) for idx in picked[c]]
            label_of = np.array([c for c, _ in flat], dtype=np.int64)
            index_of = np.array([idx for _, idx in flat], dtype=np.int64)
            picked = {}
            for k in np.argsort(-scores[i, index_of, label_of], kind="stable")[:keep_top_k]:
                picked.setdefault(int(label_of[k]), []).append(int(index_of[k]))
        for c in sorted(picked):
            idx = np.array(picked[c], dtype=np.int64)
            if idx.size:
                block = np.empty((idx.size, 7), dtype=np.float32)
                block[:, 0], block[:, 1], block[:, 2] = i, c, scores[i, idx, c]
                block[:, 3:] = boxes[i, 0 if share else c, idx]
                rows.append(block)
    if rows:
        return np.concatenate(rows)
    empty = np.full((num, 7), -1, dtype=np.float32)
    empty[:, 0] = np.arange(num)
    return empty
'''


def ssd_arguments(params: dict[str, Any], bottoms: int) -> str:
    """``ssd_detections``' keyword arguments for a DetectionOutput's params, as source text: read as the reference
    reads them (`caffeport.layers.detection_output.read_params`: defaults, thresholds rounded to float32) and
    checked (NotGenerated for a form Caffe itself refuses or aborts on)."""
    from caffeport.layers.detection_output import read_params

    p = read_params(params)
    if p["num_classes"] is None or bottoms < 3:
        raise NotGenerated("a DetectionOutput without num_classes or without loc, conf and prior bottoms")
    if p["share"] and p["background"] == -1:
        raise NotGenerated("share_location with background_label_id -1 (Caffe's CPU forward aborts)")
    if p["nms_threshold"] < 0 or not 0 < p["eta"] <= 1:
        raise NotGenerated(f"nms_threshold {p['nms_threshold']} / eta {p['eta']} out of Caffe's range")

    def literal(value: object) -> str:
        return quote(value) if isinstance(value, str) else number(value) if isinstance(value, float) else str(value)

    return ", ".join(f"{key}={literal(value)}" for key, value in p.items())
