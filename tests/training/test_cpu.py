"""mgdet.training.cpu: reading /proc/cpuinfo and the bf16 warning of `train.precision=mixed_bfloat16`."""
import logging

import pytest

from mgdet.training import cpu

BLOCK = """processor\t: {n}
vendor_id\t: {vendor}
model name\t: {model}
flags\t\t: fpu sse2 avx2 fma avx512f {extra}

"""


def write_cpuinfo(tmp_path, vendor, model, extra):
    path = tmp_path / "cpuinfo"
    text = BLOCK.format(n=0, vendor=vendor, model=model, extra=extra)
    text += BLOCK.format(n=1, vendor="OtherVendor", model="second", extra="amx_bf16")  # ignored
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("vendor, extra, slow", [
    ("GenuineIntel", "avx512_bf16 amx_bf16 amx_tile amx_int8", None),  # Xeon with AMX: 2.1x
    ("GenuineIntel", "avx512_bf16 avx512_vnni", "no AMX"),  # the same Xeon without AMX: 0.69x
    ("AuthenticAMD", "avx512_bf16 avx512_vnni", None),  # EPYC: 1.7-2.0x
    ("AuthenticAMD", "avx512_vnni", "no bf16 instructions"),  # emulated: 0.28x
    ("GenuineIntel", "", "no bf16 instructions"),
])
def test_slow_bf16_reason_follows_the_measured_cpus(tmp_path, vendor, extra, slow):
    info = cpu.cpu_info(write_cpuinfo(tmp_path, vendor, "Some CPU", extra))
    assert info["vendor"] == vendor and info["model"] == "Some CPU"
    assert ("amx_bf16" in info["flags"]) == ("amx_bf16" in extra)  # first processor only
    reason = cpu.slow_bf16_reason(info)
    assert (reason is None) == (slow is None), reason
    if slow:
        assert slow in reason


def test_warning_only_for_bf16_on_a_slow_cpu_without_gpu(tmp_path, caplog):
    slow = write_cpuinfo(tmp_path, "GenuineIntel", "Xeon X", "avx512_bf16")
    with caplog.at_level(logging.WARNING, logger="mgdet"):
        message = cpu.warn_if_slow_bf16("mixed_bfloat16", has_gpu=False, path=slow)
    assert "mixed_bfloat16 on Xeon X" in message and "--precision float32" in message
    assert message in caplog.text
    assert cpu.warn_if_slow_bf16("float32", has_gpu=False, path=slow) is None
    assert cpu.warn_if_slow_bf16("mixed_bfloat16", has_gpu=True, path=slow) is None
    fast = write_cpuinfo(tmp_path, "GenuineIntel", "Xeon Y", "avx512_bf16 amx_bf16")
    assert cpu.warn_if_slow_bf16("mixed_bfloat16", has_gpu=False, path=fast) is None


def test_unreadable_cpuinfo_gives_empty_info_and_no_warning(tmp_path):
    info = cpu.cpu_info(str(tmp_path / "missing"))
    assert info == {"model": "", "vendor": "", "flags": set()}
    assert cpu.warn_if_slow_bf16("mixed_bfloat16", False, str(tmp_path / "missing")) is None
