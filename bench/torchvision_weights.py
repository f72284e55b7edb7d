"""Converted torchvision weights give torchvision's features: needs torch and torchvision
(not mgdet dependencies; use a separate environment, e.g. ``pip install torch torchvision``).

    python bench/torchvision_weights.py

torchvision's ``resnet18`` / ``vgg16_bn`` (random init with random batch-norm statistics, nothing
downloaded) are saved as .pth and .safetensors, converted by ``cli.py convert-weights``, loaded
into mgdet's backbones, and run on one random 320x320 image normalized by mgdet's constants (as
the detectors do inside the model). Prints the largest absolute difference of C3/C4/C5 and
conv4_3/conv5_3 per input format and writes bench/results/torchvision_weights.json.
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cli  # noqa: E402
from mgdet.models import backbones as bb  # noqa: E402
from mgdet.models.detector import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

torch.manual_seed(0)
tmp = tempfile.mkdtemp()
out = {}
img = np.random.default_rng(0).uniform(0, 255, (1, 320, 320, 3)).astype(np.float32)
x_np = ((img - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32))
x_t = torch.from_numpy(((img / 255 - np.array([0.485, 0.456, 0.406], np.float32))
                        / np.array([0.229, 0.224, 0.225], np.float32)).transpose(0, 3, 1, 2).copy())
print("normalization diff", float(np.abs(x_np - x_t.numpy().transpose(0, 2, 3, 1)).max()))

def randomize_bn(model):  # fresh BN stats are 0/1: make them non-trivial
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5); m.bias.data.uniform_(-0.2, 0.2)

for arch, model in (("resnet18", torchvision.models.resnet18(weights=None)),
                    ("vgg16", torchvision.models.vgg16_bn(weights=None))):
    randomize_bn(model); model.eval()
    for fmt in ("pth", "safetensors"):
        src = os.path.join(tmp, f"{arch}.{fmt}")
        if fmt == "pth":
            torch.save(model.state_dict(), src)
        else:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, src)
        dst = os.path.join(tmp, f"{arch}_{fmt}.npz")
        assert cli.main(["convert-weights", src, dst]) == 0
        backbone = bb.build_backbone(arch, 1.0)
        backbone(np.zeros((1, 320, 320, 3), np.float32))
        bb.load_backbone_weights(backbone, dst)
        ours = [s.numpy() for s in backbone(x_np, training=False)]
        with torch.no_grad():
            if arch == "resnet18":
                m = model
                y = m.maxpool(m.relu(m.bn1(m.conv1(x_t))))
                c2 = m.layer1(y); c3 = m.layer2(c2); c4 = m.layer3(c3); c5 = m.layer4(c4)
                theirs, names = [c3, c4, c5], ["C3", "C4", "C5"]
            else:
                feats = model.features
                conv4_3 = feats[:33](x_t)      # up to the ReLU after conv4_3 (features.32)
                conv5_3 = feats[33:43](conv4_3)  # pool4, conv5_1..conv5_3 + ReLU
                theirs, names = [conv4_3, conv5_3], ["conv4_3", "conv5_3"]
        for name, a, b in zip(names, ours, theirs):
            b = b.numpy().transpose(0, 2, 3, 1)
            d = float(np.abs(a - b).max())
            out[f"{arch} {fmt} {name}"] = (d, float(np.abs(b).max()), a.shape)
for k, (d, scale, shape) in out.items():
    print(f"{k:28s} shape {shape}  max|diff| {d:.2e}  (max|feature| {scale:.1f})")
print("torch", torch.__version__, "torchvision", torchvision.__version__)
print("ALL WITHIN 1e-4:", all(d < 1e-4 for d, _, _ in out.values()))
path = os.path.join(ROOT, "bench", "results", "torchvision_weights.json")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__,
               "max_abs_diff": {k: d for k, (d, _, _) in out.items()}}, f, indent=2)
print(f"wrote {path}")
