"""mgdet.export.saved_model: the SavedModel loads without mgdet, both signatures give the Keras model's
detections, saved_model_cli sees and runs it, TF Serving requests (gRPC proto and REST JSON)
run through it, versions follow TF Serving's layout.

One tiny model is exported once per module (SavedModel writing is the slow part)."""
import base64
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mgdet.data import image_header
from mgdet.export import command, files, saved_model, versions
from mgdet.ops.postprocess import postprocess

SIZE = 64
CLASSES = ["circle", "ring", "rectangle"]
# Export settings that differ from the model's own (0.005 / 0.5 / 300): they must be baked in.
SETTINGS = dict(score_threshold=0.05, nms_iou=0.45, max_detections=40)
BIN = os.path.dirname(sys.executable)


def _rng_images(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _smooth_images(n, h, w, seed):
    """Low-frequency colour images (JPEG keeps them close; the detector's scores vary)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    return tf.cast(tf.image.resize(small, [h, w], method="bicubic"), tf.uint8).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from mgdet.models import FSSD
    tmp = tmp_path_factory.mktemp("export")
    # Seeded: the weights must not depend on which tests ran before in this process (with
    # random weights, two boxes of one class can overlap at IoU ~0.45, where NMS in onnxruntime
    # and in TensorFlow may keep different boxes by a rounding difference).
    keras.utils.set_random_seed(0)
    model = FSSD(num_classes=len(CLASSES), backbone="resnet18", image_size=SIZE, width=0.25)
    model(tf.zeros([1, SIZE, SIZE, 3]), training=False)
    # Random but not degenerate: classification logits rescaled to a spread of about 3 around
    # random biases, so that scores cover (0, 1), depend on the image and rarely tie (saturated
    # sigmoids would make NMS orders arbitrary).
    rng = np.random.default_rng(0)
    _, logits = model(_smooth_images(4, SIZE, SIZE, seed=100).astype(np.float32), training=False)
    spread = float(np.std(logits.numpy())) or 1.0
    for v in model.variables:
        if "/head/cls" in v.path:
            if v.path.endswith("bias"):
                v.assign(rng.normal(-1.0, 1.0, v.shape).astype(np.float32))
            else:
                v.assign(v.numpy() * (3.0 / spread))
    path = saved_model.export_saved_model(model, str(tmp / "models" / "tiny" / "1"), CLASSES,
                                     **SETTINGS)
    return {"model": model, "path": path, "tmp": tmp}


def _keras_detect(model, images_uint8):
    """The Keras model's detections with the export's settings (same resize as the export)."""
    x = tf.image.resize(tf.cast(images_uint8, tf.float32), [SIZE, SIZE], method="bilinear",
                        antialias=False)
    deltas, logits = model(x, training=False)
    return {k: v.numpy() for k, v in postprocess(deltas, logits, model.anchors, **SETTINGS).items()}


def _assert_same(out, ref, atol=1e-4):
    np.testing.assert_array_equal(out["num_detections"], ref["num_detections"])
    assert out["num_detections"].min() > 0  # a non-trivial comparison
    np.testing.assert_allclose(out["detection_boxes"][..., [1, 0, 3, 2]], ref["boxes"], atol=atol)
    np.testing.assert_allclose(out["detection_scores"], ref["scores"], atol=1e-5)
    np.testing.assert_array_equal(out["detection_classes"], ref["classes"])


# The start of a script run in a fresh process in which importing mgdet fails.
WITHOUT_MGDET = textwrap.dedent("""
    import sys, json
    import importlib.abc

    class _NoMgdet(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "mgdet" or name.startswith("mgdet."):
                raise ImportError("the export must load without mgdet")
    sys.meta_path.insert(0, _NoMgdet())
""")

_FRESH = WITHOUT_MGDET + textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    export_dir, inputs, outputs = sys.argv[1:4]
    data = np.load(inputs, allow_pickle=True)
    loaded = tf.saved_model.load(export_dir)
    sigs = loaded.signatures
    res = {}
    for key, out in sigs["serving_default"](images=tf.constant(data["images"])).items():
        res["default/" + key] = out.numpy()
    for kind in ("png", "jpeg"):
        blobs = [bytes(b) for b in data[kind]]
        for key, out in sigs["serving_bytes"](image_bytes=tf.constant(blobs)).items():
            res[kind + "/" + key] = out.numpy()
    res["class_names"] = loaded.class_names().numpy()
    meta = {k: v.numpy().item() for k, v in loaded.metadata().items()}
    res["signatures"] = np.array(sorted(sigs.keys()))
    np.savez(outputs, **res)
    imported = any(m == "mgdet" or m.startswith("mgdet.") for m in sys.modules)
    print(json.dumps({"meta": meta, "mgdet_imported": imported}))
""")


@pytest.mark.slow
def test_fresh_process_without_mgdet_gives_the_keras_detections(exported, tmp_path):
    model = exported["model"]
    images = _smooth_images(2, 80, 96, seed=1)  # not the model's size: resized inside
    png = np.array([tf.io.encode_png(im).numpy() for im in images], dtype=object)
    jpeg_images = _smooth_images(2, 48, 72, seed=2)
    jpeg = np.array([tf.io.encode_jpeg(im, quality=95).numpy() for im in jpeg_images], dtype=object)
    np.savez(tmp_path / "in.npz", images=images, png=png, jpeg=jpeg)
    script = tmp_path / "fresh.py"
    script.write_text(_FRESH)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, str(script), exported["path"], str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["mgdet_imported"] is False
    assert info["meta"] == {"image_size": SIZE, "num_classes": 3, "max_detections": 40,
                            "max_pixels": 40_000_000, "score_threshold": pytest.approx(0.05),
                            "nms_iou": pytest.approx(0.45), "trained": True}
    out = np.load(tmp_path / "out.npz", allow_pickle=True)
    assert list(out["signatures"]) == ["serving_bytes", "serving_default"]
    assert [n.decode() for n in out["class_names"]] == CLASSES

    def part(prefix):
        return {k.split("/", 1)[1]: out[k] for k in out.files if k.startswith(prefix + "/")}

    default = part("default")
    assert default["detection_boxes"].shape == (2, 40, 4)
    assert default["detection_classes"].dtype == np.int32
    assert default["num_detections"].dtype == np.int32
    _assert_same(default, _keras_detect(model, images))
    # Class names follow the classes; padding rows are empty.
    n0 = default["num_detections"][0]
    names = [n.decode() for n in default["detection_class_names"][0]]
    assert names[:n0] == [CLASSES[c] for c in default["detection_classes"][0, :n0]]
    assert set(names[n0:]) <= {""}
    # PNG is lossless: the bytes signature equals the tensor signature.
    _assert_same(part("png"), _keras_detect(model, images))
    # JPEG: the same decoder (tf.io.decode_image) on the Keras side.
    decoded = np.stack([tf.io.decode_image(b, channels=3).numpy() for b in jpeg])
    _assert_same(part("jpeg"), _keras_detect(model, decoded))


@pytest.mark.slow
def test_keras_predict_equals_export_when_settings_match(exported, tmp_path):
    """The SavedModel with the model's own settings gives exactly ``model.predict``."""
    from mgdet.models import FSSD
    model = FSSD(num_classes=3, backbone="resnet18", image_size=SIZE, width=0.25, **SETTINGS)
    model(tf.zeros([1, SIZE, SIZE, 3]), training=False)
    model.set_weights(exported["model"].get_weights())
    images = _smooth_images(3, SIZE, SIZE, seed=4)
    ref = model.predict(images.astype(np.float32), verbose=0)
    loaded = tf.saved_model.load(exported["path"])
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        images=tf.constant(images)).items()}
    _assert_same(out, ref)


@pytest.mark.slow
def test_saved_model_cli_show_and_run(exported, tmp_path):
    cli = os.path.join(BIN, "saved_model_cli")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    show = subprocess.run([cli, "show", "--dir", exported["path"], "--all"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert show.returncode == 0, show.stderr[-2000:]
    text = show.stdout
    for word in ("signature_def['serving_default']", "signature_def['serving_bytes']",
                 "inputs['images']", "inputs['image_bytes']", "detection_boxes",
                 "detection_scores", "detection_classes", "num_detections", "DT_UINT8",
                 "DT_STRING"):
        assert word in text, word
    # `run` loads through a TF1 session and the saver's restore op, as TF Serving's C++ loader
    # does: the detections must still be the Keras model's (variables restored, not left
    # uninitialized).
    x = _smooth_images(1, 70, 50, seed=5)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([cli, "run", "--dir", exported["path"], "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs",
                          f"images={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "cli_out")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = {k: np.load(tmp_path / "cli_out" / f"{k}.npy") for k in
           ("detection_boxes", "detection_scores", "detection_classes", "num_detections")}
    assert out["detection_boxes"].shape == (1, 40, 4)
    _assert_same(out, _keras_detect(exported["model"], x))


@pytest.mark.slow
def test_tf_serving_predict_request_runs_through_the_signature(exported):
    """A gRPC PredictRequest built with tensorflow-serving-api's protos, serialized and parsed
    back as the server would, then run through the signature it names."""
    from tensorflow_serving.apis import predict_pb2  # the test extra installs it
    loaded = tf.saved_model.load(exported["path"])
    images = _smooth_images(2, 64, 64, seed=6)
    jpeg = tf.io.encode_jpeg(images[0], quality=95).numpy()

    def serve(wire):
        request = predict_pb2.PredictRequest.FromString(wire)
        fn = loaded.signatures[request.model_spec.signature_name or "serving_default"]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in fn(**inputs).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return predict_pb2.PredictResponse.FromString(response.SerializeToString())

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    response = serve(request.SerializeToString())
    out = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    _assert_same(out, _keras_detect(exported["model"], images))

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "serving_bytes"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([jpeg]))
    out = {k: tf.make_ndarray(v) for k, v in serve(request.SerializeToString()).outputs.items()}
    decoded = tf.io.decode_image(jpeg, channels=3).numpy()[None]
    _assert_same(out, _keras_detect(exported["model"], decoded))


@pytest.mark.slow
def test_rest_json_request_with_b64(exported):
    """The REST body of the README ({"signature_name", "instances": [{"b64": ...}]}), decoded as
    TF Serving does for a one-input signature (row format)."""
    loaded = tf.saved_model.load(exported["path"])
    images = _smooth_images(2, 40, 40, seed=7)
    blobs = [tf.io.encode_png(im).numpy() for im in images]
    body = json.dumps({"signature_name": "serving_bytes",
                       "instances": [{"b64": base64.b64encode(b).decode("ascii")} for b in blobs]})
    request = json.loads(body)
    fn = loaded.signatures[request["signature_name"]]
    (name,) = fn.structured_input_signature[1].keys()
    assert name == "image_bytes"
    values = [base64.b64decode(inst["b64"]) for inst in request["instances"]]
    out = {k: v.numpy() for k, v in fn(**{name: tf.constant(values)}).items()}
    _assert_same(out, _keras_detect(exported["model"], images))
    # The uint8 tensor signature in row format: "instances" is a list of [H, W, 3] arrays.
    body = json.dumps({"instances": images.tolist()})
    arr = np.asarray(json.loads(body)["instances"], np.uint8)
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        images=tf.constant(arr)).items()}
    _assert_same(out, _keras_detect(exported["model"], images))


@pytest.mark.slow
def test_labels_asset_and_layout(exported):
    path = exported["path"]
    with open(os.path.join(path, "assets", "labels.txt")) as f:
        assert f.read().splitlines() == CLASSES
    meta = json.load(open(os.path.join(path, "assets.extra", "mgdet_export.json")))
    assert meta["class_names"] == CLASSES and meta["max_detections"] == 40
    base = os.path.dirname(path)
    assert sorted(os.listdir(base)) == ["1"]  # no temporary folder left behind
    assert versions.next_version(base) == 2
    with pytest.raises(FileExistsError):
        saved_model.export_saved_model(exported["model"], path, CLASSES)
    with pytest.raises(ValueError, match="class names"):
        saved_model.export_saved_model(exported["model"], str(exported["tmp"] / "x" / "1"), ["a"])


def test_next_version(tmp_path):
    assert versions.next_version(str(tmp_path / "missing")) == 1
    for d in ("1", "3", "tmp", ".tmp-4-abc"):
        (tmp_path / d).mkdir()
    (tmp_path / "7").write_text("a file is not a version")
    assert versions.next_version(str(tmp_path)) == 4


@pytest.mark.slow
def test_run_export_loads_weights_and_overrides_settings(exported, tmp_path):
    """``cli.py export``'s function: config + weights -> saved_models/<name>/<next version>."""
    from mgdet.config import load_config
    from mgdet.inference import resolve_saved_model
    model = exported["model"]
    weights = str(tmp_path / "w.weights.h5")
    model.save_weights(weights)
    cfg = load_config(None, {"name": "tiny", "model": {"image_size": SIZE, "width": 0.25,
                                                       "num_classes": 3},
                             "data": {"class_names": CLASSES, "max_pixels": 1234567}})
    base = str(tmp_path / "saved_models")
    os.makedirs(os.path.join(base, "tiny", "2"))
    stale = _plant_tmp_folders(os.path.join(base, "tiny"))
    path = command.run_export(cfg, weights, score_threshold=0.05, nms_iou=0.45, max_detections=40,
                             base_dir=base)
    assert path == os.path.join(base, "tiny", "3")
    # The temporary folders of killed exports are gone; a running export's is left alone.
    assert [os.path.exists(p) for p in stale] == [False, False, True]
    assert resolve_saved_model(os.path.join(base, "tiny")) == path
    loaded = tf.saved_model.load(path)
    images = _smooth_images(2, SIZE, SIZE, seed=8)
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        images=tf.constant(images)).items()}
    _assert_same(out, _keras_detect(model, images))  # the weights were loaded
    assert int(loaded.metadata()["max_pixels"]) == 1234567


@pytest.mark.slow
def test_two_exports_of_one_name_at_once_get_two_versions(exported, tmp_path, monkeypatch):
    """While one export writes, another of the same name completes (as two processes at once):
    both read the next free version before either finished. Each must keep its own."""
    from mgdet.config import load_config
    weights = str(tmp_path / "w.weights.h5")
    exported["model"].save_weights(weights)
    cfg = load_config(None, {"name": "tiny", "model": {"image_size": SIZE, "width": 0.25},
                             "data": {"class_names": CLASSES}})
    base = str(tmp_path / "saved_models")
    save, other = tf.saved_model.save, []

    def save_while_another_export_completes(*args, **kwargs):
        if not other:
            other.append(None)
            other[0] = command.run_export(cfg, weights, base_dir=base)
        return save(*args, **kwargs)
    monkeypatch.setattr(tf.saved_model, "save", save_while_another_export_completes)
    first = command.run_export(cfg, weights, base_dir=base)
    assert sorted([first, other[0]]) == [os.path.join(base, "tiny", "1"),
                                         os.path.join(base, "tiny", "2")]
    assert sorted(os.listdir(os.path.join(base, "tiny"))) == ["1", "2"]
    for path in (first, other[0]):
        assert tf.saved_model.load(path).signatures["serving_default"] is not None


def _plant_tmp_folders(parent):
    """Temporary folders as exports leave them: killed (owner pid gone), killed by an older
    version (no owner file, an hour old), running (owner: this process)."""
    import socket
    import time
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    paths = [os.path.join(parent, f".tmp-{k}-x") for k in ("killed", "old", "running")]
    for path, owner in zip(paths, (dead, None, str(os.getpid()))):
        os.makedirs(os.path.join(path, "model", "variables"))
        if owner:
            with open(os.path.join(path, versions.OWNER_FILE), "w") as f:
                f.write(f"{socket.gethostname()} {owner}")
    os.utime(paths[1], (time.time() - 3600, time.time() - 3600))
    return paths


def _encoded(fmt, height, width, **kwargs):
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(_rng_images((height, width, 3), seed=height)).save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,kwargs", [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}),
                                        ("WEBP", {}), ("WEBP", {"lossless": True}),
                                        ("WEBP", {"exif": b"Exif\x00\x00mgdet"})])
def test_header_size_equals_the_decoded_size_and_the_limit_is_inclusive(fmt, kwargs):
    for height, width in ((23, 37), (300, 17)):
        data = _encoded(fmt, height, width, **kwargs)
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False).shape
        assert [int(v) for v in image_header.header_size(tf.constant(data))] == [height, width]
        assert tuple(decoded[:2]) == (height, width)
        saved_model._check_pixels(tf.constant(data), height * width)  # at the limit: accepted
        with pytest.raises(tf.errors.InvalidArgumentError, match="larger than max_pixels"):
            saved_model._check_pixels(tf.constant(data), height * width - 1)


def _bombs():
    """Small files whose headers claim 20000 x 20000 pixels (1.2 GB decoded), made by patching
    the size fields of real 16 x 16 images (PNG: IHDR + its CRC; JPEG: the SOF0 segment)."""
    import struct
    import zlib
    png = bytearray(_encoded("PNG", 16, 16))
    png[16:24] = struct.pack(">II", 20000, 20000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    jpeg = bytearray(_encoded("JPEG", 16, 16))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)
    gif = bytearray(_encoded("GIF", 16, 16))
    gif[6:10] = struct.pack("<HH", 20000, 20000)
    bmp = bytearray(_encoded("BMP", 16, 16))
    bmp[18:26] = struct.pack("<ii", 20000, -20000)
    webp = bytearray(_encoded("WEBP", 16, 16, exif=b"Exif\x00\x00mgdet"))  # VP8X header
    webp[24:30] = struct.pack("<I", 19999)[:3] + struct.pack("<I", 19999)[:3]
    return {"png": bytes(png), "jpeg": bytes(jpeg), "gif": bytes(gif), "bmp": bytes(bmp),
            "webp": bytes(webp)}


_BOMBS = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    serve = loaded.signatures["serving_bytes"]
    inputs = np.load(sys.argv[2], allow_pickle=True)
    result = {"ok": int(serve(image_bytes=tf.constant([inputs["ok"].item()]))["num_detections"]
                        .shape[0])}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name in inputs.files:
        if name == "ok":
            continue
        try:
            serve(image_bytes=tf.constant([inputs[name].item()]))
            result[name] = "accepted"
        except tf.errors.InvalidArgumentError as err:
            result[name] = " ".join(err.message.split())
    result["extra_rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    result["mgdet_imported"] = any(m.split(".")[0] == "mgdet" for m in sys.modules)
    print(json.dumps(result))
""")


@pytest.mark.slow
def test_serving_bytes_refuses_decompression_bombs_before_decoding(exported, tmp_path):
    bombs = _bombs()
    assert all(len(b) < 1500 for b in bombs.values()), {k: len(b) for k, b in bombs.items()}
    np.savez(tmp_path / "bombs.npz", ok=np.array(_encoded("PNG", 300, 17), dtype=object),
             **{k: np.array(v, dtype=object) for k, v in bombs.items()})
    script = tmp_path / "bombs.py"
    script.write_text(_BOMBS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, str(script), exported["path"],
                           str(tmp_path / "bombs.npz")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["mgdet_imported"] is False and info["ok"] == 1
    for name in bombs:  # the assertion's message, with the product height x width it read
        assert "image larger than max_pixels = 40000000" in info[name], info[name]
        assert "400000000" in info[name], info[name]
    assert info["extra_rss_mb"] < 300, info  # nothing near the 1.2 GB of a decoded image


# --------------------------------------------------------------------------------------------
# mgdet.inference (shares the exported model)
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_predict_saved_model_and_weights_agree(exported, tmp_path, capsys):
    from mgdet.config import load_config
    from mgdet.inference import run_predict
    model = exported["model"]
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    images = _smooth_images(3, 72, 88, seed=9)
    tf.io.write_file(str(folder / "a.png"), tf.io.encode_png(images[0]))
    tf.io.write_file(str(folder / "sub" / "b.jpg"), tf.io.encode_jpeg(images[1], quality=95))
    tf.io.write_file(str(tmp_path / "c.png"), tf.io.encode_png(images[2]))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" + b"\0" * 64)

    base = os.path.dirname(exported["path"])  # saved_models/<name>: newest version is used
    results = run_predict(base, [str(folder), str(tmp_path / "c.png")], str(tmp_path / "out"),
                          score_threshold=0.3, progress=False)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()
               if line.startswith("{")]
    assert [os.path.basename(r["image"]) for r in results] == ["a.png", "b.jpg", "c.png"]
    assert printed == json.loads(json.dumps(results))
    assert sum(len(r["detections"]) for r in results) > 0
    for r in results:
        assert os.path.getsize(r["output"]) > 0 and r["output"].endswith(".png")
        assert _image_size(r["output"]) == (r["width"], r["height"])
        for d in r["detections"]:
            assert d["score"] >= 0.3 and d["class_name"] == CLASSES[d["class_id"]]
    # The detections are the Keras model's (PNG: lossless), in pixels of the original image.
    ref = _keras_detect(model, images[2:3])
    keep = ref["scores"][0, :ref["num_detections"][0]] >= 0.3
    expected = ref["boxes"][0, :ref["num_detections"][0]][keep] * [88, 72, 88, 72]
    got = np.array([d["box"] for d in results[2]["detections"]]).reshape(-1, 4)
    np.testing.assert_allclose(got, expected, atol=0.02)
    assert os.path.isfile(tmp_path / "out" / "detections.json")

    # A weights file with its run's config.json beside it gives the same detections.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    weights = str(run_dir / "best.weights.h5")
    model.save_weights(weights)
    cfg = load_config(None, {"name": "tiny", "model": {"image_size": SIZE, "width": 0.25},
                             "eval": SETTINGS})
    with open(run_dir / "config.json", "w") as f:
        json.dump({**cfg.to_dict(), "class_names": CLASSES}, f)
    again = run_predict(weights, [str(folder), str(tmp_path / "c.png")], str(tmp_path / "out2"),
                        print_json=False, progress=False)
    for a, b in zip(results, again):
        assert [d["class_id"] for d in a["detections"]] == [d["class_id"] for d in b["detections"]]
        np.testing.assert_allclose([d["box"] for d in a["detections"]],
                                   [d["box"] for d in b["detections"]], atol=0.02)


def _image_size(path):
    from PIL import Image
    with Image.open(path) as img:
        return img.size


# --------------------------------------------------------------------------------------------
# Optional formats
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tflite_float_export_equals_keras(exported, tmp_path):
    from mgdet.ops import boxes as box_ops
    model = exported["model"]
    path = files.export_tflite(model, str(tmp_path / "tiny.tflite"))
    x = _smooth_images(1, SIZE, SIZE, seed=10).astype(np.float32)
    interpreter = tf.lite.Interpreter(model_path=path)
    out = interpreter.get_signature_runner()(images=x)
    deltas, logits = model(x, training=False)
    boxes = tf.clip_by_value(box_ops.decode(deltas, model.anchors), 0.0, 1.0).numpy()
    np.testing.assert_allclose(out["boxes"][..., [1, 0, 3, 2]], boxes, atol=1e-4)
    np.testing.assert_allclose(out["scores"], tf.sigmoid(logits).numpy(), atol=1e-4)


@pytest.mark.slow
def test_onnx_export_equals_keras(exported, tmp_path):
    import onnxruntime as ort  # the test extra installs it (and tf2onnx)
    path = files.export_onnx(exported["model"], str(tmp_path / "tiny.onnx"), **SETTINGS)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = _smooth_images(2, 80, 96, seed=11)
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"images": images})))
    _assert_same(out, _keras_detect(exported["model"], images))


@pytest.mark.slow
def test_serving_bytes_applies_the_exif_orientation(exported):
    """A JPEG stored sideways with EXIF orientation 6 gives, through serving_bytes, the
    detections of its displayed pixels sent to serving_default (and not those of the stored
    pixels)."""
    from tests.data.test_exif import jpeg_with_orientation
    data = jpeg_with_orientation(6)
    loaded = tf.saved_model.load(exported["path"])
    out = {k: v.numpy() for k, v in loaded.signatures["serving_bytes"](
        image_bytes=tf.constant([data])).items()}
    displayed = tf.image.rot90(tf.io.decode_jpeg(data), 3)  # 90 degrees clockwise
    ref = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        images=displayed[None]).items()}
    stored = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        images=tf.io.decode_jpeg(data)[None]).items()}
    assert ref["num_detections"][0] > 0
    np.testing.assert_array_equal(out["num_detections"], ref["num_detections"])
    np.testing.assert_allclose(out["detection_boxes"], ref["detection_boxes"], atol=1e-6)
    np.testing.assert_allclose(out["detection_scores"], ref["detection_scores"], atol=1e-6)
    assert not np.allclose(out["detection_scores"], stored["detection_scores"], atol=1e-4)
