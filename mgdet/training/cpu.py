"""Whether ``mixed_bfloat16`` pays on this machine, and the Keras policy ``train.precision``
resolves to: this CPU's model and the instruction-set flags that decide oneDNN's fp32 / bf16 /
int8 kernels, and the GPUs' compute capability (README "Performance": bf16 vs fp32).

One rule decides (:func:`bf16_verdict`); ``train.precision: auto`` follows it
(:func:`resolve_precision`) and an explicit ``mixed_bfloat16`` is warned by it
(:func:`warn_if_slow_bf16`).
"""
import logging
from typing import NamedTuple, Optional

log = logging.getLogger("mgdet.training.cpu")

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
CPUINFO = "/proc/cpuinfo"  # where :func:`choose_precision` reads this CPU (Linux)
BF16_COMPUTE_CAPABILITY = (8, 0)  # NVIDIA Ampere and later: bf16 tensor cores


class Bf16Verdict(NamedTuple):
    """Whether ``mixed_bfloat16`` training is expected to beat ``float32`` here.

    pays:     True (faster), False (slower), None (not known: no flags read, or hardware not
              measured).
    reason:   a short phrase for the start-of-training line (``precision: float32 (reason)``).
    measured: the measurement behind a False on a CPU, for the warning ("" otherwise).
    """
    pays: Optional[bool]
    reason: str
    measured: str = ""


def cpu_info(path="/proc/cpuinfo"):
    """``{"model": str, "vendor": str, "flags": set}`` of the first CPU in ``path`` (Linux);
    empty values where it cannot be read."""
    info = {"model": "", "vendor": "", "flags": set()}
    keys = {"model name": "model", "vendor_id": "vendor"}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in keys and not info[keys[key]]:
                    info[keys[key]] = value.strip()
                elif key == "flags" and not info["flags"]:
                    info["flags"] = set(value.split())
                if not line.strip() and info["flags"]:
                    break  # the first processor's block is enough
    except OSError:
        pass
    return info


def gpu_details():
    """``tf.config.experimental.get_device_details`` of each visible GPU: a list of dicts
    (``compute_capability`` ``(major, minor)``, ``device_name``; ``{}`` where TensorFlow gives
    none); ``[]`` without a GPU."""
    import tensorflow as tf
    details = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details.append(dict(tf.config.experimental.get_device_details(gpu)))
        except (ValueError, RuntimeError):
            details.append({})
    return details


def _gpu_verdict(gpus):
    """:func:`bf16_verdict` when training runs on ``gpus`` (the slowest GPU decides)."""
    capabilities = [tuple(g.get("compute_capability") or ()) for g in gpus]
    if any(len(c) != 2 for c in capabilities):
        return Bf16Verdict(None, "GPU of unknown compute capability")
    low = min(capabilities)
    shown = f"compute capability {low[0]}.{low[1]}"
    if low >= BF16_COMPUTE_CAPABILITY:
        return Bf16Verdict(True, f"GPU with bf16, {shown}")
    return Bf16Verdict(False, f"GPU of {shown} < 8.0: no bf16 tensor cores, bf16 is slower there")


def bf16_verdict(info, gpus=()):
    """Whether ``mixed_bfloat16`` training is likely faster than ``float32`` on this machine.

    Args:
      info: :func:`cpu_info`'s dict.
      gpus: :func:`gpu_details`' list; training runs on the GPUs when there are any, and then
        they alone decide: every GPU needs compute capability >= 8.0.
    Returns:
      :class:`Bf16Verdict`.

    On a CPU, from oneDNN's kernels measured with ``bench/onednn_profile.py``
    (RetinaNet-ResNet-18): with AMX tiles (``amx_bf16``) bf16 trained 2.1x faster than fp32 on
    an Intel Xeon, and with ``avx512_bf16`` 1.7-2.0x on an AMD EPYC; the same Xeon limited to
    its ``avx512_bf16`` kernels ran at 0.69x, and without bf16 instructions (emulated) at
    0.28x. Unknown CPUs (no flags read, or another vendor's ``avx512_bf16``) give None.
    """
    if gpus:
        return _gpu_verdict(gpus)
    flags = info.get("flags") or set()
    vendor = info.get("vendor") or ""
    if not flags:
        return Bf16Verdict(None, "unknown CPU: its flags could not be read")
    if "amx_bf16" in flags:
        return Bf16Verdict(True, "AMX")
    if "avx512_bf16" not in flags:
        return Bf16Verdict(False, "CPU without bf16 instructions: bf16 is emulated, slower",
                           "it has no bf16 instructions (no avx512_bf16 or amx_bf16): oneDNN "
                           "emulates bf16, measured at 0.28x the fp32 speed")
    if vendor == "GenuineIntel":
        return Bf16Verdict(False, "Intel CPU without AMX: bf16 is slower there",
                           "this Intel CPU has avx512_bf16 but no AMX (amx_bf16): a Xeon "
                           "restricted to those kernels trained bf16 at 0.69x the fp32 speed")
    if vendor == "AuthenticAMD":
        return Bf16Verdict(True, "AMD CPU with avx512_bf16")
    return Bf16Verdict(None, f"{vendor or 'unknown'} CPU with avx512_bf16: bf16 not measured there")


def resolve_precision(requested, info, gpus=()):
    """The Keras policy of ``train.precision`` ``requested`` and why: ``(policy, reason)``.

    ``auto`` is ``mixed_bfloat16`` where :func:`bf16_verdict` says bf16 pays, ``float32``
    elsewhere (slower or not known); any other value is used as set.
    """
    if requested != "auto":
        return requested, "set in the config"
    verdict = bf16_verdict(info, gpus)
    return ("mixed_bfloat16" if verdict.pays else "float32"), verdict.reason


def precision_line(policy, reason):
    """The line training prints at its start: ``precision: mixed_bfloat16 (AMX)``."""
    return f"precision: {policy} ({reason})"


def warn_if_slow_bf16(info, gpus=()):
    """Log a warning when :func:`bf16_verdict` expects ``mixed_bfloat16`` to be slower than
    ``float32`` here (for a ``train.precision`` set to ``mixed_bfloat16``); return the
    message, or None."""
    verdict = bf16_verdict(info, gpus)
    if verdict.pays is not False:
        return None
    where = "this GPU" if gpus else (info.get("model") or "this CPU")
    message = (f"train.precision=mixed_bfloat16 on {where}: {verdict.measured or verdict.reason}. "
               "Use --precision float32 (or auto), or compare both with "
               "`python bench/train_step.py --precision mixed_bfloat16` (README: Performance).")
    log.warning(message)
    return message


def choose_precision(requested, path=None, gpus=None):
    """Resolve ``train.precision`` on this machine: ``(policy, reason)``
    (:func:`resolve_precision`), warning first when an explicit ``mixed_bfloat16`` is likely
    slow here. ``path``: ``CPUINFO`` when None; ``gpus``: :func:`gpu_details` when None."""
    info = cpu_info(path or CPUINFO)
    gpus = gpu_details() if gpus is None else gpus
    if requested == "mixed_bfloat16":
        warn_if_slow_bf16(info, gpus)
    return resolve_precision(requested, info, gpus)
