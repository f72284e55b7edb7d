"""Independent numpy references written from docs/design.md's formulas: plain loops per image
and per object, float64, no code shared with mgdet. Used only by the tests."""
import math

import numpy as np


def anchors_ref(image_size, base_size=24.0, clip=False):
    """Anchors by explicit loops over level, row, column, shape: sizes capped at 1 in centre
    form, corners not clipped (``clip=True``: corners clipped to [0, 1])."""
    levels = 5 if image_size >= 512 else 4
    out = []
    for k in range(levels):
        f = math.ceil(image_size / 2 ** (3 + k))
        s = base_size * 2 ** k
        r = math.sqrt(2)
        shapes = [(s, s), (s * r, s / r), (s / r, s * r)]
        s2 = s * r
        shapes += [(s2, s2), (s2 * r, s2 / r), (s2 / r, s2 * r)]
        for y in range(f):
            for x in range(f):
                cx, cy = (x + 0.5) / f, (y + 0.5) / f
                for w, h in shapes:
                    w, h = min(w / image_size, 1.0), min(h / image_size, 1.0)
                    out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    out = np.array(out)
    return np.clip(out, 0, 1) if clip else out


def iou_one(box, boxes):
    """IoU of one box [4] with boxes [N, 4]."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    a = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    b = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = a + b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def decode_ref(deltas, anchors, v=(0.1, 0.2)):
    out = np.zeros_like(anchors)
    for i, (d, a) in enumerate(zip(deltas, anchors)):
        wa, ha = a[2] - a[0], a[3] - a[1]
        cxa, cya = a[0] + wa / 2, a[1] + ha / 2
        cx, cy = cxa + d[0] * v[0] * wa, cya + d[1] * v[0] * ha
        w = wa * math.exp(min(d[2] * v[1], math.log(1000 / 16)))
        h = ha * math.exp(min(d[3] * v[1], math.log(1000 / 16)))
        out[i] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    return out


def encode_ref(box, anchor, v=(0.1, 0.2)):
    wa, ha = anchor[2] - anchor[0], anchor[3] - anchor[1]
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([((box[0] + box[2]) / 2 - (anchor[0] + anchor[2]) / 2) / (v[0] * wa),
                     ((box[1] + box[3]) / 2 - (anchor[1] + anchor[3]) / 2) / (v[0] * ha),
                     math.log(w / wa) / v[1], math.log(h / ha) / v[1]])


def own_ref(q, valid, force=True):
    """own() of docs/design.md: force (first argmax per object), exclusive (lower object wins
    ties); ``force=False``: exclusive only."""
    q = q.copy()
    q[~valid] = 0.0
    for j in np.flatnonzero(valid) if force else ():
        q[j, int(np.argmax(q[j]))] = 1.0
    out = np.zeros_like(q)
    for i in range(q.shape[1]):
        j = int(np.argmax(q[:, i]))  # numpy: first maximum
        out[j, i] = q[j, i]
    return out


def ranked_ref(q_owned, j, first, nxt=0):
    """Anchors of object j with quality > 0, by quality desc then index asc: (first, next) sets."""
    cand = np.flatnonzero(q_owned[j] > 0)
    order = cand[np.lexsort((cand, -q_owned[j, cand]))]
    return set(order[:first].tolist()), set(order[first:first + nxt].tolist())


def assign_ref(strategy, anchors, boxes, labels, valid, deltas=None, logits=None, sigma=2.0,
               pos_iou=0.5, neg_iou=0.4, pred=None, force=True):
    """One image: returns dict of cls_labels, cls_gt_index, reg_positive, reg_gt_index [N], and
    the three owned quality matrices for tie diagnostics. ``pred``: decoded predicted boxes
    [N, 4] used instead of decoding ``deltas``; ``force``: as :func:`own_ref`."""
    m, n = boxes.shape[0], anchors.shape[0]
    iou_a = np.stack([iou_one(boxes[j], anchors) for j in range(m)]) if m else np.zeros((0, n))
    qa = own_ref(iou_a, valid, force)
    num_pos = np.array([max(1, int((qa[j] >= pos_iou).sum())) if valid[j] else 0
                        for j in range(m)], int)
    num_ign = np.array([int(((qa[j] >= neg_iou) & (qa[j] < pos_iou)).sum()) if valid[j] else 0
                        for j in range(m)], int)
    cls = np.full(n, -1)
    cls_gt = np.full(n, -1)
    for i in range(n):
        if m == 0:
            continue
        j = int(np.argmax(qa[:, i]))
        q = qa[j, i]
        if q >= pos_iou:
            cls[i], cls_gt[i] = labels[j], j
        elif q >= neg_iou:
            cls[i], cls_gt[i] = -2, j
    reg_pos = cls >= 0
    reg_gt = np.where(reg_pos, cls_gt, -1)
    out = {"qa": qa, "num_pos": num_pos, "num_ign": num_ign}
    if strategy in ("l2c", "mg"):
        pred = decode_ref(deltas, anchors) if pred is None else pred
        qr = own_ref(np.stack([iou_one(boxes[j], pred) for j in range(m)]) if m
                     else np.zeros((0, n)), valid, force)
        cls = np.full(n, -1)
        cls_gt = np.full(n, -1)
        for j in np.flatnonzero(valid):
            p_set, i_set = ranked_ref(qr, j, num_pos[j], num_ign[j])
            for i in p_set:
                cls[i], cls_gt[i] = labels[j], j
            for i in i_set:
                cls[i], cls_gt[i] = -2, j
        out["qr"] = qr
    if strategy in ("c2l", "mg"):
        qc = own_ref(amplified_ref(iou_a, logits, labels, sigma), valid, force)
        reg_pos = np.zeros(n, bool)
        reg_gt = np.full(n, -1)
        for j in np.flatnonzero(valid):
            p_set, _ = ranked_ref(qc, j, num_pos[j])
            for i in p_set:
                reg_pos[i], reg_gt[i] = True, j
        out["qc"] = qc
    out.update(cls_labels=cls, cls_gt_index=cls_gt, reg_positive=reg_pos, reg_gt_index=reg_gt)
    return out


def amplified_ref(iou_a, logits, labels, sigma=2.0):
    """Paper Eq. 1 per object j and anchor: IoU^((sigma - p_j) / sigma), p_j the anchor's
    predicted probability of object j's class. iou_a [M, N] (anchors), logits [N, C],
    labels [M] -> [M, N] float64."""
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    amp = np.zeros((len(labels), p.shape[0]))
    for j, label in enumerate(labels):
        amp[j] = np.power(iou_a[j], (sigma - p[:, label]) / sigma)
    return amp


def focal_ref(logit, target, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-logit))
    if target:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p ** gamma * math.log(1 - p)


def qfl_ref(logit, y, beta=2.0):
    p = 1 / (1 + math.exp(-logit))
    return -abs(y - p) ** beta * (y * math.log(p) + (1 - y) * math.log(1 - p))


def balanced_l1_ref(x, alpha=0.5, gamma=1.5, beta=0.11):
    x = abs(x)
    b = math.exp(gamma / alpha) - 1
    if x < beta:
        return alpha / b * (b * x + 1) * math.log(b * x / beta + 1) - alpha * x
    return gamma * x + gamma / b - alpha * beta


def _near_ties(q_raw_rows, q_owned, counts, valid, eps):
    """Anchors whose label depends on a float near-tie (0 < |diff| < eps; exact ties are decided
    by the index rule on both sides) of one quality matrix: ownership between objects, an
    object's best anchor, or an object's rank cut at one of its ``counts``."""
    n = q_owned.shape[1]
    amb = np.zeros(n, bool)
    if q_raw_rows.shape[0] == 0:
        return amb
    if q_raw_rows.shape[0] > 1:
        top2 = np.sort(q_raw_rows, axis=0)[-2:]
        amb |= (top2[1] > 0) & (top2[1] - top2[0] < eps) & (top2[1] > top2[0])
    for j in np.flatnonzero(valid):
        row = q_raw_rows[j]
        o = np.argsort(-row, kind="stable")
        if 0 < row[o[0]] - row[o[1]] < eps:  # the forced anchor itself is a near-tie
            amb[row > row[o[0]] - eps] = True
            amb[q_owned[j] > 0] = True
        cand = np.flatnonzero(q_owned[j] > 0)
        order = cand[np.lexsort((cand, -q_owned[j, cand]))]
        for cut in counts[j]:
            if 0 < cut < len(order):
                a_, b_ = order[cut - 1], order[cut]
                if 0 < q_owned[j, a_] - q_owned[j, b_] < eps:
                    amb[order] = True
    return amb


def ambiguous_anchors(want, anchors, boxes, labels, valid, logits=None, sigma=2.0, deltas=None,
                      pred=None, pos_iou=0.5, neg_iou=0.4, eps=1e-5):
    """Anchors of one image whose :func:`assign_ref` labels (``want``) hinge on a float near-tie
    (within ``eps``), so that a float32 implementation may rightly differ: to exclude from an
    exact comparison. An IoU near a threshold makes every anchor ambiguous (it changes the
    counts Np / Ni of the ranked strategies)."""
    anchors, boxes = np.asarray(anchors, np.float64), np.asarray(boxes, np.float64)
    m = boxes.shape[0]
    iou_a = np.stack([iou_one(boxes[j], anchors) for j in range(m)])
    iou_a[~valid] = 0
    amb = _near_ties(iou_a, want["qa"], [[]] * m, valid, eps)
    qa = want["qa"].max(0)
    amb |= (np.abs(qa - pos_iou) < eps) | (np.abs(qa - neg_iou) < eps)
    for j in range(m):
        if valid[j] and np.any(np.abs(want["qa"][j][want["qa"][j] > 0] - pos_iou) < eps):
            amb[:] = True
    if "qr" in want:
        if pred is None:
            pred = decode_ref(np.asarray(deltas, np.float64), anchors)
        raw = np.stack([iou_one(boxes[j], np.asarray(pred, np.float64)) for j in range(m)])
        raw[~valid] = 0
        counts = [[want["num_pos"][j], want["num_pos"][j] + want["num_ign"][j]] for j in range(m)]
        amb |= _near_ties(raw, want["qr"], counts, valid, eps)
    if "qc" in want:
        amp = amplified_ref(iou_a, logits, labels, sigma)
        amb |= _near_ties(np.where(valid[:, None], amp, 0), want["qc"],
                          [[want["num_pos"][j]] for j in range(m)], valid, eps)
    return amb
