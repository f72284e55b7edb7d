"""This CPU's model and the instruction-set flags that decide oneDNN's fp32 / bf16 / int8 kernels,
and whether ``mixed_bfloat16`` is likely to pay on it (README "Performance": bf16 vs fp32)."""
import logging

log = logging.getLogger("mgdet.training.cpu")

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


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


def slow_bf16_reason(info):
    """Why ``mixed_bfloat16`` training is likely slower than fp32 on this CPU, or None.

    From oneDNN's kernels measured with ``bench/onednn_profile.py`` (RetinaNet-ResNet-18): with
    AMX tiles (``amx_bf16``) bf16 trained 2.1x faster than fp32 on an Intel Xeon, and with
    ``avx512_bf16`` 1.7-2.0x on an AMD EPYC; the same Xeon limited to its ``avx512_bf16`` kernels
    ran at 0.69x, and without bf16 instructions (emulated) at 0.28x. Unknown CPUs (no flags
    read) give None.
    """
    flags = info.get("flags") or set()
    if not flags or "amx_bf16" in flags:
        return None
    if "avx512_bf16" not in flags:
        return ("it has no bf16 instructions (no avx512_bf16 or amx_bf16): oneDNN emulates bf16, "
                "measured at 0.28x the fp32 speed")
    if info.get("vendor") == "GenuineIntel":
        return ("this Intel CPU has avx512_bf16 but no AMX (amx_bf16): a Xeon restricted to those "
                "kernels trained bf16 at 0.69x the fp32 speed")
    return None


def warn_if_slow_bf16(precision, has_gpu, path="/proc/cpuinfo"):
    """Log a warning when ``precision`` is ``mixed_bfloat16`` on a CPU-only host where
    :func:`slow_bf16_reason` expects it to be slower than ``float32``; return the message."""
    if precision != "mixed_bfloat16" or has_gpu:
        return None
    info = cpu_info(path)
    reason = slow_bf16_reason(info)
    if reason is None:
        return None
    message = (f"train.precision=mixed_bfloat16 on {info['model'] or 'this CPU'}: {reason}. "
               "Use --precision float32, or compare both with "
               "`python bench/train_step.py --precision mixed_bfloat16` (README: Performance).")
    log.warning(message)
    return message
