"""`dtype: auto` on both kinds of x86 CPU, decided from /proc/cpuinfo's flags (no torch import)."""

from __future__ import annotations

from pathlib import Path

from llmctl.hardware import cpu_has_native_bf16

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"


def test_an_avx2_only_cpu_has_no_native_bf16(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(AVX2)
    assert not cpu_has_native_bf16(tmp_path / "cpuinfo")


def test_avx512_bf16_or_amx_is_native_bf16(tmp_path: Path) -> None:
    for flag in ("avx512_bf16", "amx_bf16"):
        (tmp_path / "cpuinfo").write_text(AVX2.replace("f16c", f"f16c avx512f {flag}"))
        assert cpu_has_native_bf16(tmp_path / "cpuinfo")


def test_an_unreadable_cpuinfo_means_no_bf16(tmp_path: Path) -> None:
    assert not cpu_has_native_bf16(tmp_path / "missing")
