"""mgdet.training.cpu: reading /proc/cpuinfo, the one rule of whether bf16 pays (CPU flags, GPU
compute capability), ``train.precision: auto`` resolved by it, the start-of-training line and
the warning of an explicit ``mixed_bfloat16``."""
import logging

import pytest

from mgdet.training import cpu

BLOCK = """processor\t: {n}
vendor_id\t: {vendor}
cpu family\t: 6
model name\t: {model}
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma {extra}

"""
# The first processor's block decides; a second one with other flags must not count.
SECOND = BLOCK.format(n=1, vendor="OtherVendor", model="second", extra="avx512_bf16 amx_bf16")

# Fixture CPUs: (vendor, model name, flags beyond AVX2)
AMX_XEON = ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8480+",
            "avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8")
BF16_XEON = ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8380H",  # avx512_bf16, no AMX
             "avx512f avx512_vnni avx512_bf16")
EPYC_BF16 = ("AuthenticAMD", "AMD EPYC 9654 96-Core Processor", "avx512f avx512_vnni avx512_bf16")
NO_BF16 = ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8275CL", "avx512f avx512_vnni")
EPYC_NO_BF16 = ("AuthenticAMD", "AMD EPYC 7763 64-Core Processor", "")
OTHER_BF16 = ("HygonGenuine", "Some CPU", "avx512f avx512_bf16")

H100 = {"compute_capability": (9, 0), "device_name": "NVIDIA H100 80GB HBM3"}
A100 = {"compute_capability": (8, 0), "device_name": "NVIDIA A100-SXM4-40GB"}
V100 = {"compute_capability": (7, 0), "device_name": "Tesla V100-SXM2-16GB"}
T4 = {"compute_capability": (7, 5), "device_name": "Tesla T4"}


def write_cpuinfo(tmp_path, cpu_fixture):
    vendor, model, extra = cpu_fixture
    path = tmp_path / f"cpuinfo-{abs(hash(cpu_fixture))}"
    path.write_text(BLOCK.format(n=0, vendor=vendor, model=model, extra=extra) + SECOND)
    return str(path)


@pytest.mark.parametrize("fixture, policy, reason", [
    (AMX_XEON, "mixed_bfloat16", "AMX"),  # measured 2.1x
    (BF16_XEON, "float32", "Intel CPU without AMX: bf16 is slower there"),  # 0.69x
    (EPYC_BF16, "mixed_bfloat16", "AMD CPU with avx512_bf16"),  # 1.7-2.0x
    (NO_BF16, "float32", "CPU without bf16 instructions: bf16 is emulated, slower"),  # 0.28x
    (EPYC_NO_BF16, "float32", "CPU without bf16 instructions: bf16 is emulated, slower"),
    (OTHER_BF16, "float32", "HygonGenuine CPU with avx512_bf16: bf16 not measured there"),
])
def test_auto_resolves_from_the_cpu_flags(tmp_path, fixture, policy, reason):
    info = cpu.cpu_info(write_cpuinfo(tmp_path, fixture))
    assert (info["vendor"], info["model"]) == fixture[:2]
    assert ("amx_bf16" in info["flags"]) == ("amx_bf16" in fixture[2])  # first processor only
    assert cpu.resolve_precision("auto", info) == (policy, reason)
    assert cpu.resolve_precision("auto", info, gpus=[]) == (policy, reason)  # no GPU


def test_unreadable_cpuinfo_is_an_unknown_cpu_trained_in_float32(tmp_path):
    info = cpu.cpu_info(str(tmp_path / "missing"))
    assert info == {"model": "", "vendor": "", "flags": set()}
    assert cpu.resolve_precision("auto", info) == (
        "float32", "unknown CPU: its flags could not be read")
    assert cpu.bf16_verdict(info).pays is None
    assert cpu.warn_if_slow_bf16(info) is None  # not known to be slow: no warning


@pytest.mark.parametrize("gpus, policy, reason", [
    ([H100], "mixed_bfloat16", "GPU with bf16, compute capability 9.0"),
    ([A100, H100], "mixed_bfloat16", "GPU with bf16, compute capability 8.0"),
    ([V100], "float32", "GPU of compute capability 7.0 < 8.0: no bf16 tensor cores, bf16 is "
                        "slower there"),
    ([H100, T4], "float32", "GPU of compute capability 7.5 < 8.0: no bf16 tensor cores, bf16 "
                            "is slower there"),  # the slowest GPU decides
    ([{}], "float32", "GPU of unknown compute capability"),
    ([{"device_name": "x", "compute_capability": None}], "float32",
     "GPU of unknown compute capability"),
])
def test_auto_on_gpus_follows_their_compute_capability_whatever_the_cpu(tmp_path, gpus, policy,
                                                                         reason):
    for fixture in (AMX_XEON, BF16_XEON, NO_BF16):  # the GPUs train, not the CPU
        info = cpu.cpu_info(write_cpuinfo(tmp_path, fixture))
        assert cpu.resolve_precision("auto", info, gpus) == (policy, reason)


@pytest.mark.parametrize("requested", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_an_explicit_precision_is_used_as_set(tmp_path, requested):
    for fixture in (AMX_XEON, BF16_XEON, NO_BF16):
        info = cpu.cpu_info(write_cpuinfo(tmp_path, fixture))
        for gpus in ([], [H100], [V100]):
            assert cpu.resolve_precision(requested, info, gpus) == (requested,
                                                                    "set in the config")


def test_the_start_line():
    assert cpu.precision_line("mixed_bfloat16", "AMX") == "precision: mixed_bfloat16 (AMX)"
    assert cpu.precision_line("float32", "Intel CPU without AMX: bf16 is slower there") == (
        "precision: float32 (Intel CPU without AMX: bf16 is slower there)")
    assert cpu.precision_line("float32", "set in the config") == (
        "precision: float32 (set in the config)")


def test_choose_precision_reads_this_machine_and_warns_an_explicit_slow_bf16(tmp_path, caplog,
                                                                            monkeypatch):
    slow = write_cpuinfo(tmp_path, BF16_XEON)
    with caplog.at_level(logging.WARNING, logger="mgdet"):
        assert cpu.choose_precision("mixed_bfloat16", slow, gpus=[]) == (
            "mixed_bfloat16", "set in the config")
    [message] = [r.getMessage() for r in caplog.records]
    assert "mixed_bfloat16 on Intel(R) Xeon(R) Platinum 8380H" in message
    assert "0.69x" in message and "--precision float32 (or auto)" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mgdet"):
        # auto chose float32 itself, float32 asked for nothing slow, a fast GPU trains: silent
        assert cpu.choose_precision("auto", slow, gpus=[])[0] == "float32"
        assert cpu.choose_precision("float32", slow, gpus=[])[0] == "float32"
        assert cpu.choose_precision("mixed_bfloat16", slow, gpus=[H100])[0] == "mixed_bfloat16"
    assert caplog.records == []
    monkeypatch.setattr(cpu, "CPUINFO", write_cpuinfo(tmp_path, AMX_XEON))  # the default path
    assert cpu.choose_precision("auto", gpus=[]) == ("mixed_bfloat16", "AMX")


@pytest.mark.parametrize("fixture, gpus, slow", [
    (AMX_XEON, [], None),
    (BF16_XEON, [], "no AMX"),
    (EPYC_BF16, [], None),
    (NO_BF16, [], "no bf16 instructions"),
    (OTHER_BF16, [], None),  # not measured: no warning
    (NO_BF16, [H100], None),
    (AMX_XEON, [V100], "compute capability 7.0 < 8.0"),
    (AMX_XEON, [{}], None),
])
def test_the_warning_follows_the_same_rule(tmp_path, fixture, gpus, slow):
    info = cpu.cpu_info(write_cpuinfo(tmp_path, fixture))
    message = cpu.warn_if_slow_bf16(info, gpus)
    assert (message is None) == (slow is None), message
    assert (cpu.bf16_verdict(info, gpus).pays is False) == (slow is not None)  # warned iff slow
    if slow:
        assert slow in message and "train.precision=mixed_bfloat16 on" in message


def test_gpu_details_are_dicts_one_per_visible_gpu():
    import tensorflow as tf
    details = cpu.gpu_details()
    assert len(details) == len(tf.config.list_physical_devices("GPU"))
    assert all(isinstance(d, dict) for d in details)
