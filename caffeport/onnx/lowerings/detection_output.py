"""DetectionOutput (SSD) in standard ops: box decode, per-class TopK and NonMaxSuppression, keep_top_k, the rows.

The reference is `caffeport.layers.detection_output` (Caffe's
``Forward_cpu``); every step below is written so that any runtime that follows
the ONNX spec (onnxruntime and OpenCV 5 are tested) gives its rows exactly, in
count and order:

- Decode: the priors are constants of the net (PriorBox folded), so their
  sizes and centres are initializers computed in float32 as the reference
  does, and the loc predictions go through the same products in the same
  order (CORNER, CENTER_SIZE, CORNER_SIZE; with or without
  ``variance_encoded_in_target``).
- Candidates per class (background excluded): ``TopK`` over the priors, K =
  ``nms_param.top_k`` (all priors when absent). ONNX's TopK breaks ties by the
  lower index, which is Caffe's stable sort; taking the top K before the
  ``score > confidence_threshold`` filter keeps the same set, since every
  score past the threshold outranks every score below it.
- NMS: ONNX ``NonMaxSuppression`` (``center_point_box=0``), one NMS "batch"
  per class. The ONNX spec does not say in which order NMS takes equal
  scores (onnxruntime's kernel keeps them in a heap ordered by score alone),
  so it is given not the scores but each candidate's rank after the stable
  TopK (K, K-1, ..., 1; 0, cut by ``score_threshold`` 0 with its strict
  ``>``, for those at or below the confidence threshold, Caffe's test): all
  distinct, which makes any conforming NMS walk Caffe's stable order. Its IoU
  is Caffe's ``JaccardOverlap`` for boxes of positive width and height (no
  +1, suppress when above the threshold; ``nms_threshold`` above 1 is passed
  as 1, which no IoU exceeds either). A box without area (xmax <= xmin or
  ymax <= ymin) overlaps nothing in Caffe, so it can neither suppress nor be
  suppressed; runtimes disagree there (onnxruntime reads an inverted box
  corner-swapped, OpenCV 5 gives two empty boxes an overlap of 1), so such
  boxes are kept out of the NMS and added back to what it keeps (ScatterND
  into a per-class mask, OR the passing empty boxes).
- The kept candidates are read from that (class, candidate) mask with
  ``NonZero``, whose row-major order is label ascending, then candidate
  order, which is NMS order: the order of NMS's own output is never relied on.
- ``keep_top_k``: a ``TopK`` over the image's kept scores (ties by the lower
  index: label ascending, then NMS order, the reference's stable order), its
  positions put back in ascending order by a second TopK, so the rows stay in
  label-then-NMS order. Each TopK gets one sentinel more (-inf, +inf) and
  drops it, since OpenCV refuses a TopK of K = 0 (an image with no candidate).
- Rows (image id, label, score, xmin, ymin, xmax, ymax) per image, in the
  prototxt's batch (unrolled: the graph is static in the batch); when no
  image has any, the ``-1`` rows with the image ids.

Refused: ``eta`` < 1 (adaptive NMS: the threshold shrinks after each kept box,
which ONNX's NMS cannot do), a dynamic batch, and what the reference
refuses. Not reproduced: a decoded box with infinite or NaN coordinates
(from an overflowing ``exp`` in CENTER_SIZE: the reference counts a NaN
overlap as a suppression, ONNX's NMS as none).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer
from caffeport.layers.detection_output import read_params
from caffeport.layers.fields import channels, legacy_hw
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


def _params(layer: Layer) -> dict[str, Any]:
    """The reference's reading of ``detection_output_param`` (`caffeport.layers.detection_output.read_params`)."""
    return read_params(layer.param("detection_output_param"))


@lowering("DetectionOutput")
class DetectionOutput(Lowering):
    foldable = False
    constant_bottoms = (2,)

    def top_shapes(self, layer: Layer) -> list[tuple[int | None, ...]] | None:
        return [(1, 1, None, 7)]

    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        p = _params(layer)
        if p["num_classes"] is None:
            return "detection_output_param has no num_classes"
        if len(layer.bottoms) < 3:
            return "DetectionOutput needs loc, conf and prior bottoms"
        if p["nms_threshold"] < 0:
            return f"nms_threshold {p['nms_threshold']} must be non-negative"
        if not 0 < p["eta"] <= 1:
            return f"eta {p['eta']} must be in (0, 1]"
        if p["eta"] != 1:
            return (f"nms_param.eta {p['eta']:g} (adaptive NMS, a threshold that shrinks after each kept box) has no "
                    "ONNX equivalent")
        if dynamic_batch:
            return "its per-image NMS is unrolled over the prototxt's batch (no dynamic batch)"
        loc, conf, prior = layer.bottom_shapes[:3]
        assert loc is not None and conf is not None and prior is not None  # refusals checked the shapes
        num_priors = legacy_hw(prior)[0] // 4
        num_loc = 1 if p["share"] else p["num_classes"]
        if conf[0] != loc[0]:
            return f"loc has {loc[0]} images, conf {conf[0]}"
        for name, shape, per_prior in (("loc", loc, num_loc * 4), ("conf", conf, p["num_classes"])):
            want = num_priors * per_prior
            if channels(shape) != want or int(np.prod(shape[1:])) != want:
                return f"{name} has shape {list(shape)}, expected (N, {want}) for {num_priors} priors"
        return None

    def lower(self, ctx: Context) -> list[str]:
        g = ctx.graph
        p = _params(ctx.layer)
        loc_shape, _, prior_shape = ctx.bottom_shapes[:3]
        num, num_classes = int(loc_shape[0]), int(p["num_classes"])
        num_loc = 1 if p["share"] else num_classes
        num_priors = legacy_hw(prior_shape)[0] // 4
        prior_values = ctx.constants[2]
        assert prior_values is not None  # refusals: a constant of the net
        flat = prior_values.reshape(-1)
        priors = flat[: num_priors * 4].reshape(num_priors, 4)
        variances = flat[num_priors * 4: num_priors * 8].reshape(num_priors, 4)
        if p["code_type"] != "CORNER" and num_priors and (np.any(~(priors[:, 2] - priors[:, 0] > 0))
                                                          or np.any(~(priors[:, 3] - priors[:, 1] > 0))):
            raise ModelStructureError(f"{p['code_type']} decoding needs priors of positive width and height",
                                      layer=ctx.layer.name)
        boxes = self._decode(ctx, p, priors, variances, num, num_loc, num_priors)  # (N, L, P, 4)
        conf = g.op("Transpose", [g.reshape(ctx.bottoms[1], [num, num_priors, num_classes], "conf")],
                    "conf_by_class", perm=[0, 2, 1])  # (N, C, P)
        classes = [c for c in range(num_classes) if c != p["background"]]
        fallback = np.full((num, 7), -1, dtype=np.float32)
        fallback[:, 0] = np.arange(num)
        if not classes or num_priors == 0 or p["top_k"] == 0 or p["keep_top_k"] == 0:  # no rows: the -1 rows
            return [g.const(fallback[None, None], "no_detections")]
        rows = [self._image(ctx, p, boxes, conf, i, classes, num_loc, num_priors) for i in range(num)]
        detections = g.op("Concat", rows, "rows", axis=0) if len(rows) > 1 else rows[0]
        # (Shape's start and end attributes are opset 15's)
        count = g.slice(g.op("Shape", [detections], "rows_shape"), [0], [1], [0], hint="count")
        none = g.op("Cast", [g.op("Equal", [count, g.ints([0], "zero")], "none")], "none_int", to=7)
        end = g.op("Add", [count, g.op("Mul", [none, g.ints([num], "batch")], "fallback_rows")], "end")
        padded = g.op("Concat", [detections, g.const(fallback, "no_detections")], "with_fallback", axis=0)
        chosen = g.op("Slice", [padded, g.ints([0], "starts"), end, g.ints([0], "axes")], "chosen")
        return [g.unsqueeze(chosen, [0, 1], "detections")]

    @staticmethod
    def _decode(ctx: Context, p: dict[str, Any], priors: np.ndarray, variances: np.ndarray, num: int,
                num_loc: int, num_priors: int) -> str:
        """``DecodeBBox`` of every image and loc class: (N, L, P, 4), the reference's float32 products in order."""
        g = ctx.graph
        f32 = np.float32
        loc = g.op("Transpose", [g.reshape(ctx.x, [num, num_priors, num_loc, 4], "loc")], "loc_by_class",
                   perm=[0, 2, 1, 3])
        lx0, ly0, lx1, ly1 = g.split(loc, [1, 1, 1, 1], axis=3, hint="loc_part")  # each (N, L, P, 1)

        def column(values: np.ndarray, hint: str) -> str:
            return g.const(np.asarray(values, dtype=f32).reshape(num_priors, 1), hint)

        def mul(a: str, b: str) -> str:
            return g.op("Mul", [a, b], "mul")

        def add(a: str, b: str) -> str:
            return g.op("Add", [a, b], "add")

        px0, py0, px1, py1 = (priors[:, i].astype(f32) for i in range(4))
        var = [variances[:, i].astype(f32) for i in range(4)]
        kind, in_target = p["code_type"], p["in_target"]
        if kind == "CORNER":
            parts = [add(column(pv, f"prior_{k}"), part if in_target else mul(column(v, f"variance_{k}"), part))
                     for k, (pv, v, part) in enumerate(zip((px0, py0, px1, py1), var, (lx0, ly0, lx1, ly1),
                                                           strict=True))]
        elif kind == "CENTER_SIZE":
            pw, ph = px1 - px0, py1 - py0
            pcx, pcy = (px0 + px1) / f32(2), (py0 + py1) / f32(2)

            def scaled(k: int, part: str) -> str:  # var * loc, or loc alone when the variance is in the target
                return part if in_target else mul(column(var[k], f"variance_{k}"), part)

            cx = add(mul(scaled(0, lx0), column(pw, "prior_width")), column(pcx, "prior_cx"))
            cy = add(mul(scaled(1, ly0), column(ph, "prior_height")), column(pcy, "prior_cy"))
            w = mul(g.op("Exp", [scaled(2, lx1)], "exp"), column(pw, "prior_width"))
            h = mul(g.op("Exp", [scaled(3, ly1)], "exp"), column(ph, "prior_height"))
            half_w, half_h = (g.op("Div", [s, g.scalar(2.0, "two")], "half") for s in (w, h))
            parts = [g.op("Sub", [cx, half_w], "xmin"), g.op("Sub", [cy, half_h], "ymin"),
                     add(cx, half_w), add(cy, half_h)]
        else:  # CORNER_SIZE (the reference refuses any other code_type)
            pw, ph = px1 - px0, py1 - py0
            parts = []
            for k, (pv, size, part) in enumerate(zip((px0, py0, px1, py1), (pw, ph, pw, ph), (lx0, ly0, lx1, ly1),
                                                     strict=True)):
                scaled = part if in_target else mul(column(var[k], f"variance_{k}"), part)
                parts.append(add(column(pv, f"prior_{k}"), mul(scaled, column(size, f"prior_size_{k}"))))
        return g.op("Concat", parts, "decoded", axis=3)

    @staticmethod
    def _image(ctx: Context, p: dict[str, Any], boxes: str, conf: str, image: int, classes: list[int],
               num_loc: int, num_priors: int) -> str:
        """Image ``image``'s detection rows (M, 7): per-class candidates, NMS, keep_top_k."""
        g = ctx.graph
        index = g.const(np.array(image, dtype=np.int64), f"image_{image}", np.int64)
        scores = g.op("Gather", [g.op("Gather", [conf, index], "image_conf", axis=0),
                                 g.const(np.array(classes, dtype=np.int64), "classes", np.int64)],
                      "class_scores", axis=0)  # (C', P)
        k = num_priors if not -1 < p["top_k"] < num_priors else p["top_k"]
        values, positions = g.op("TopK", [scores, g.ints([k], "k")], "candidates", outputs=2, axis=1, largest=1,
                                 sorted=1)  # (C', K): score descending, ties by the lower prior index
        table = g.reshape(g.op("Gather", [boxes, index], "image_boxes", axis=0), [num_loc * num_priors, 4], "table")
        if num_loc == 1:
            rows = positions
        else:  # each class reads its own loc class's boxes
            offsets = np.array(classes, dtype=np.int64).reshape(-1, 1) * num_priors
            rows = g.op("Add", [positions, g.const(offsets, "loc_offset", np.int64)], "box_rows")
        candidates = g.op("Gather", [table, rows], "candidate_boxes", axis=0)  # (C', K, 4)
        x0, y0, x1, y1 = g.split(candidates, [1, 1, 1, 1], axis=2, hint="corner")
        empty = g.squeeze(g.op("Or", [g.op("LessOrEqual", [x1, x0], "no_width"),
                                      g.op("LessOrEqual", [y1, y0], "no_height")], "no_area"), [2], "empty")
        passing = g.op("Greater", [values, g.scalar(p["score_threshold"], "confidence_threshold")], "passing")
        in_nms = g.op("And", [passing, g.op("Not", [empty], "has_area")], "in_nms")
        ranks = g.const(np.arange(k, 0, -1, dtype=np.float32), "rank")
        nms_scores = g.unsqueeze(g.op("Where", [in_nms, ranks, g.scalar(0.0, "left_out")], "ranked"), [1],
                                 "nms_scores")  # (C', 1, K)
        selected = g.op("NonMaxSuppression", [candidates, nms_scores, g.ints([k], "max_boxes"),
                                              g.scalar(min(p["nms_threshold"], 1.0), "iou_threshold"),
                                              g.scalar(0.0, "score_threshold")],
                        "selected", center_point_box=0)  # (M, 3): class, 0, candidate
        cls = g.op("Gather", [selected, g.const(np.array(0, np.int64), "col0", np.int64)], "selected_class", axis=1)
        cand = g.op("Gather", [selected, g.const(np.array(2, np.int64), "col2", np.int64)], "selected_cand", axis=1)
        flat = g.op("Add", [g.op("Mul", [cls, g.const(np.array(k, np.int64), "k", np.int64)], "class_base"), cand],
                    "flat")
        chosen = g.op("ScatterND", [g.const(np.zeros(len(classes) * k, np.bool_), "none_chosen", np.bool_),
                                    g.unsqueeze(flat, [1], "flat_index"),
                                    g.op("Expand", [g.const(np.array([True]), "yes", np.bool_),
                                                    g.op("Shape", [flat], "selected_count")], "yes_each")],
                      "chosen")
        kept = g.op("Or", [g.reshape(chosen, [len(classes), k], "chosen_by_class"),
                           g.op("And", [passing, empty], "empty_passing")], "kept")  # (C', K)
        where = g.op("NonZero", [kept], "kept_at")  # (2, M) row-major: class, then candidate (= NMS) order
        cls = g.squeeze(g.slice(where, [0], [1], [0], hint="kept_class"), [0], "kept_class_index")
        flat = g.op("Add", [g.op("Mul", [cls, g.const(np.array(k, np.int64), "k", np.int64)], "kept_base"),
                            g.squeeze(g.slice(where, [1], [2], [0], hint="kept_candidate"), [0], "kept_cand")],
                    "kept_flat")
        score = g.op("Gather", [g.reshape(values, [-1], "all_scores"), flat], "score", axis=0)  # (M,)
        label = g.op("Gather", [g.const(np.array(classes, dtype=np.float32), "labels"), cls], "label", axis=0)
        box = g.op("Gather", [g.reshape(candidates, [-1, 4], "all_boxes"), flat], "box", axis=0)  # (M, 4)
        if p["keep_top_k"] > -1:  # (> 0 here: 0 keeps nothing, decided before)
            # TopK's K must be positive for some runtimes (OpenCV): one sentinel past the last score and past
            # the last position, taken with the K best and dropped
            count = g.op("Shape", [score], "kept")
            cut = g.op("Min", [count, g.ints([p["keep_top_k"]], "keep_top_k")], "cut")
            cut_1 = g.op("Add", [cut, g.ints([1], "one")], "cut_plus_one")
            padded = g.op("Concat", [score, g.const(np.array([-np.inf], np.float32), "lowest")], "score_padded",
                          axis=0)
            _, best = g.op("TopK", [padded, cut_1], "keep_top_k", outputs=2, axis=0, largest=1, sorted=1)
            best = g.op("Slice", [best, g.ints([0], "starts"), cut, g.ints([0], "axes")], "best")
            positions = g.op("Concat", [g.op("Cast", [best], "best_float", to=1),
                                        g.const(np.array([np.inf], np.float32), "highest")], "positions", axis=0)
            order, _ = g.op("TopK", [positions, cut_1], "row_order", outputs=2, axis=0, largest=0,
                            sorted=1)  # the kept positions, ascending
            order = g.op("Cast", [g.op("Slice", [order, g.ints([0], "starts"), cut, g.ints([0], "axes")],
                                       "order_float")], "order", to=7)
            score, label, box = (g.op("Gather", [t, order], "kept", axis=0) for t in (score, label, box))
        column_shape = g.op("Concat", [g.op("Shape", [score], "rows"), g.ints([1], "one")], "column_shape", axis=0)
        image_id = g.op("Expand", [g.const(np.full((1, 1), image, np.float32), "image_id"), column_shape], "image_id")
        return g.op("Concat", [image_id, g.unsqueeze(label, [1], "label_col"), g.unsqueeze(score, [1], "score_col"),
                               box], f"rows_{image}", axis=1)
