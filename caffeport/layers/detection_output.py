"""DetectionOutput (SSD fork): decode the location predictions against the priors, per-class NMS, keep_top_k.

The top is (1, 1, N, 7) rows of (image id, label, score, xmin, ymin, xmax,
ymax); N depends on how many detections survive, so the shape is unknown
before a forward.

Forward (the fork's ``detection_output_layer.cpp`` ``Forward_cpu`` and
``src/caffe/util/bbox_util.cpp``), in float32:

- Bottoms: loc (N, P * L * 4) with L = 1 when ``share_location`` (default
  true) else num_classes, laid out prior-major (prior, loc class, 4); conf
  (N, P * num_classes) prior-major; priors (1, 2, P * 4): boxes, then
  variances. Caffe checks these sizes against ``channels()`` and takes
  P = ``height() / 4`` of the priors.
- Decode (``DecodeBBox``, never clipped here: the layer passes
  ``clip_bbox = false``), ``code_type`` default CORNER (the proto default):
  CORNER adds ``var * loc`` to each corner; CENTER_SIZE takes the prior's
  centre and size, ``cx = var0 * lx * pw + pcx``, ``w = exp(var2 * lw) * pw``
  (y likewise) and writes centre -/+ size / 2; CORNER_SIZE adds
  ``var * loc * prior size`` to each corner. With
  ``variance_encoded_in_target`` the variances are not applied. CENTER_SIZE
  and CORNER_SIZE require every prior to have positive width and height.
- Per image, per class ``c`` other than ``background_label_id`` (default 0)
  (``ApplyNMSFast``): candidates are priors with score strictly above
  ``confidence_threshold`` (all of them when it is absent: Caffe uses
  -FLT_MAX), stable-sorted by score descending (ties keep prior order), cut to
  ``nms_param.top_k`` when given and > -1. Greedy NMS walks them in that
  order and keeps a box when its Jaccard overlap with every box kept so far is
  <= the threshold (``nms_threshold``, default 0.3); after each kept box, when
  ``eta`` < 1 and the threshold is above 0.5, the threshold is multiplied by
  eta. The overlap is ``JaccardOverlap`` on normalized boxes: no +1, 0 when
  the boxes do not touch or the intersection has no area, and a box with
  xmax < xmin or ymax < ymin has size 0.
- ``keep_top_k`` (default -1, off): when > -1 and an image has more
  detections than that, all of its (score, label, prior) are sorted by score
  descending and cut to keep_top_k. Caffe uses ``std::sort`` there, so the
  order of equal scores (and which of them survive a cut between equal
  scores) is unspecified; this port sorts stably (label ascending, then NMS
  order, among equals).
- Rows are written per image, then by label ascending (a ``std::map``), then
  in NMS order within a label (score order after a keep_top_k cut).
- When no image has any detection, the top is (1, 1, N, 7) of -1 with the
  image id (0..N-1) in column 0 of each row.

Not reproduced: ``save_output_param`` (writes result files) and
``visualize`` (draws on screen); neither changes the top. Caffe's CPU path
aborts when ``share_location`` is true and ``background_label_id`` is -1 (it
skips decoding loc "class" -1, then cannot find it); its GPU path decodes the
shared boxes and runs, and so does this port.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Shape
from caffeport.layers.fields import channels, legacy_hw
from caffeport.layers.registry import LayerType, Tops, register

_CODE_TYPES = {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"}
_FLT_MAX = np.float32(np.finfo(np.float32).max)


def code_type(param: dict[str, Any]) -> str:
    """``code_type`` as its enum name (numbers tolerated); CORNER when absent, as in the fork's proto."""
    value = param.get("code_type", "CORNER")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return _CODE_TYPES.get(int(value), str(value))
    return str(value)


def read_params(param: dict[str, Any]) -> dict[str, Any]:
    """``detection_output_param`` read with Caffe's defaults and the thresholds rounded to float32, as the forward
    below reads it; the ONNX lowering and the generated Keras/Flax code read it here too. ``num_classes`` is None
    when absent (each reader refuses that its own way); ``score_threshold`` is -FLT_MAX without a
    ``confidence_threshold``; ``top_k`` and ``keep_top_k`` -1 when unset."""
    nms = param.get("nms_param") or {}
    threshold = param.get("confidence_threshold")
    return {
        "num_classes": None if param.get("num_classes") is None else int(param["num_classes"]),
        "share": bool(param.get("share_location", True)),
        "background": int(param.get("background_label_id", 0)),
        "code_type": code_type(param),
        "in_target": bool(param.get("variance_encoded_in_target", False)),
        "keep_top_k": int(param.get("keep_top_k", -1)),
        "score_threshold": -float(_FLT_MAX) if threshold is None else float(np.float32(threshold)),
        "nms_threshold": float(np.float32(nms.get("nms_threshold", 0.3))),
        "eta": float(np.float32(nms.get("eta", 1.0))),
        "top_k": int(nms["top_k"]) if nms.get("top_k") is not None else -1,
    }


def decode_boxes(priors: np.ndarray, variances: np.ndarray, loc: np.ndarray, kind: str,
                 variance_in_target: bool) -> np.ndarray:
    """Decoded (..., P, 4) boxes from loc predictions (..., P, 4) against priors and variances (P, 4), float32."""
    f32 = np.float32
    px0, py0, px1, py1 = (priors[:, i].astype(f32) for i in range(4))
    var = np.ones_like(variances, dtype=f32) if variance_in_target else variances.astype(f32)
    lx0, ly0, lx1, ly1 = (loc[..., i].astype(f32) for i in range(4))
    if kind == "CORNER":
        out = [px0 + var[:, 0] * lx0, py0 + var[:, 1] * ly0, px1 + var[:, 2] * lx1, py1 + var[:, 3] * ly1]
    elif kind == "CENTER_SIZE":
        pw, ph = px1 - px0, py1 - py0
        pcx, pcy = (px0 + px1) / f32(2), (py0 + py1) / f32(2)
        if variance_in_target:  # Caffe leaves the variance out of these products altogether
            cx, cy = lx0 * pw + pcx, ly0 * ph + pcy
            w, h = np.exp(lx1) * pw, np.exp(ly1) * ph
        else:
            cx, cy = var[:, 0] * lx0 * pw + pcx, var[:, 1] * ly0 * ph + pcy
            w, h = np.exp(var[:, 2] * lx1) * pw, np.exp(var[:, 3] * ly1) * ph
        out = [cx - w / f32(2), cy - h / f32(2), cx + w / f32(2), cy + h / f32(2)]
    elif kind == "CORNER_SIZE":
        pw, ph = px1 - px0, py1 - py0
        if variance_in_target:
            out = [px0 + lx0 * pw, py0 + ly0 * ph, px1 + lx1 * pw, py1 + ly1 * ph]
        else:
            out = [px0 + var[:, 0] * lx0 * pw, py0 + var[:, 1] * ly0 * ph,
                   px1 + var[:, 2] * lx1 * pw, py1 + var[:, 3] * ly1 * ph]
    else:
        raise ValueError(f"unknown code_type {kind!r}")
    return np.stack(out, axis=-1).astype(f32, copy=False)


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """``BBoxSize`` of normalized boxes (..., 4): width * height, 0 for a box with xmax < xmin or ymax < ymin."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    invalid = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    return np.where(invalid, np.float32(0), w * h).astype(np.float32)


def jaccard(box: np.ndarray, size: np.float32, others: np.ndarray, other_sizes: np.ndarray) -> np.ndarray:
    """``JaccardOverlap(others[i], box)`` for normalized boxes, in float32 as Caffe computes it."""
    apart = ((box[0] > others[:, 2]) | (box[2] < others[:, 0]) | (box[1] > others[:, 3]) | (box[3] < others[:, 1]))
    iw = np.minimum(others[:, 2], box[2]) - np.maximum(others[:, 0], box[0])
    ih = np.minimum(others[:, 3], box[3]) - np.maximum(others[:, 1], box[1])
    overlapping = ~apart & (iw > 0) & (ih > 0)
    inter = iw * ih
    with np.errstate(all="ignore"):
        iou = inter / (other_sizes + size - inter)
    return np.where(overlapping, iou, np.float32(0)).astype(np.float32)


def nms_fast(boxes: np.ndarray, scores: np.ndarray, score_threshold: np.float32, nms_threshold: float,
             eta: float, top_k: int) -> list[int]:
    """``ApplyNMSFast``: the kept prior indices, in the order they were kept (score descending)."""
    candidates = np.flatnonzero(scores > score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if -1 < top_k < order.size:
        order = order[:top_k]
    if order.size == 0:
        return []
    cand = boxes[order]
    sizes = box_sizes(cand)
    # running max overlap of each candidate with the boxes kept so far; the threshold only ever decreases and the
    # max only grows, so a candidate that fails once would fail whenever Caffe reached it: skip to the next pass
    worst = np.full(order.size, -np.inf, dtype=np.float32)
    threshold = np.float32(nms_threshold)
    kept: list[int] = []
    start = 0
    while start < order.size:
        passing = np.flatnonzero(worst[start:] <= threshold)  # keep: every overlap <= threshold
        if passing.size == 0:
            break
        j = start + int(passing[0])
        kept.append(int(order[j]))
        if j + 1 < order.size:
            overlaps = jaccard(cand[j], sizes[j], cand[j + 1:], sizes[j + 1:])
            # a NaN overlap fails Caffe's ``overlap <= threshold``: count it as total overlap
            worst[j + 1:] = np.maximum(worst[j + 1:], np.where(np.isnan(overlaps), np.float32(np.inf), overlaps))
        if eta < 1 and threshold > 0.5:
            threshold = np.float32(threshold * np.float32(eta))
        start = j + 1
    return kept


@register("DetectionOutput")
class DetectionOutput(LayerType):
    param = "detection_output_param"
    bottoms = 0
    shape_from_values = True

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return []  # known only after a forward

    def unsupported(self, layer: Layer) -> str | None:
        kind = code_type(self.params_of(layer))
        if kind not in _CODE_TYPES.values():
            return f"code_type {kind} is not one of CORNER, CENTER_SIZE, CORNER_SIZE"
        return super().unsupported(layer)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        p = read_params(self.params_of(layer))
        if p["num_classes"] is None:
            raise ModelStructureError("detection_output_param has no num_classes", layer=layer.name)
        if len(bottoms) < 3:
            raise ModelStructureError("DetectionOutput needs loc, conf and prior bottoms", layer=layer.name)
        num_classes, share, background, kind = p["num_classes"], p["share"], p["background"], p["code_type"]
        num_loc = 1 if share else num_classes
        variance_in_target, keep_top_k, top_k = p["in_target"], p["keep_top_k"], p["top_k"]
        score_threshold = np.float32(p["score_threshold"])
        nms_threshold, eta = p["nms_threshold"], p["eta"]
        if nms_threshold < 0:
            raise ModelStructureError(f"nms_threshold {nms_threshold} must be non-negative", layer=layer.name)
        if not 0 < eta <= 1:
            raise ModelStructureError(f"eta {eta} must be in (0, 1]", layer=layer.name)

        loc, conf, prior = (np.asarray(b, dtype=np.float32) for b in bottoms[:3])
        num = loc.shape[0]
        num_priors = legacy_hw(prior.shape)[0] // 4
        if conf.shape[0] != num:
            raise ModelStructureError(f"loc has {num} images, conf {conf.shape[0]}", layer=layer.name)
        for name, blob, per_prior in (("loc", loc, num_loc * 4), ("conf", conf, num_classes)):
            want = num_priors * per_prior
            if channels(tuple(blob.shape)) != want or blob[0].size != want:
                raise ModelStructureError(
                    f"{name} has shape {list(blob.shape)}, expected (N, {want}) for {num_priors} priors",
                    layer=layer.name)
        flat_prior = prior.reshape(-1)
        priors = flat_prior[: num_priors * 4].reshape(num_priors, 4)
        variances = flat_prior[num_priors * 4: num_priors * 8].reshape(num_priors, 4)
        if kind != "CORNER" and num_priors and (np.any(~(priors[:, 2] - priors[:, 0] > 0))
                                                or np.any(~(priors[:, 3] - priors[:, 1] > 0))):
            raise ModelStructureError(f"{kind} decoding needs priors of positive width and height",
                                      layer=layer.name)
        boxes = decode_boxes(priors, variances, loc.reshape(num, num_priors, num_loc, 4).transpose(0, 2, 1, 3),
                             kind, variance_in_target)  # (N, L, P, 4)
        scores = conf.reshape(num, num_priors, num_classes)

        rows: list[np.ndarray] = []
        for i in range(num):
            picked: dict[int, list[int]] = {}
            for c in range(num_classes):
                if c == background:
                    continue
                picked[c] = nms_fast(boxes[i, 0 if share else c], scores[i, :, c], score_threshold, nms_threshold,
                                     eta, top_k)
            total = sum(len(v) for v in picked.values())
            if -1 < keep_top_k < total:
                flat = [(c, idx) for c in sorted(picked) for idx in picked[c]]
                label_of = np.array([c for c, _ in flat], dtype=np.int64)
                index_of = np.array([idx for _, idx in flat], dtype=np.int64)
                order = np.argsort(-scores[i, index_of, label_of], kind="stable")[:keep_top_k]
                picked = {}
                for k in order:
                    picked.setdefault(int(label_of[k]), []).append(int(index_of[k]))
            for c in sorted(picked):
                idx = np.array(picked[c], dtype=np.int64)
                if idx.size == 0:
                    continue
                block = np.empty((idx.size, 7), dtype=np.float32)
                block[:, 0] = i
                block[:, 1] = c
                block[:, 2] = scores[i, idx, c]
                block[:, 3:] = boxes[i, 0 if share else c, idx]
                rows.append(block)
        if not rows:
            empty = np.full((num, 7), -1, dtype=np.float32)
            empty[:, 0] = np.arange(num)
            return [empty[None, None]]
        return [np.concatenate(rows)[None, None]]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        nms = p.get("nms_param") or {}
        return (f"classes={p.get('num_classes')}, {code_type(p)}, nms={nms.get('nms_threshold', 0.3)}, "
                f"keep_top_k={p.get('keep_top_k', -1)}")
