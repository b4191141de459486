"""stepwise.io.cpu_description / environment: what every results.json and benchmark records about the host CPU."""

import platform

from stepwise.io import VECTOR_EXTENSIONS, cpu_description, environment

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model name\t: AMD EPYC 9B45
flags\t\t: fpu vme sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 sha_ni
processor\t: 1
model name\t: AMD EPYC 9B45
flags\t\t: fpu vme sse4_2 avx avx2
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes sve sve2 bf16
CPU implementer\t: 0x41
"""


def test_x86_model_and_extensions_from_the_first_processor(tmp_path):
    (tmp_path / "cpuinfo").write_text(X86)
    got = cpu_description(tmp_path / "cpuinfo")
    assert got == {"cpu_model": "AMD EPYC 9B45",
                   "vector_extensions": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"]}


def test_arm_features_and_no_model_line(tmp_path, monkeypatch):
    (tmp_path / "cpuinfo").write_text(ARM)
    monkeypatch.setattr(platform, "processor", lambda: "aarch64")
    assert cpu_description(tmp_path / "cpuinfo") == {"cpu_model": "aarch64", "vector_extensions": ["asimd", "sve",
                                                                                                  "sve2"]}


def test_unreadable_or_garbled_file_never_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert cpu_description(tmp_path / "missing") == {"cpu_model": None, "vector_extensions": []}
    (tmp_path / "bad").write_bytes(b"\xff\xfe no colon here\nflags\n: \x00\n")
    assert cpu_description(tmp_path / "bad") == {"cpu_model": None, "vector_extensions": []}


def test_environment_records_them_in_host():
    host = environment()["host"]
    assert set(host) >= {"machine", "system", "cpus", "cpu_model", "vector_extensions", "allocator"}
    assert set(host["vector_extensions"]) <= set(VECTOR_EXTENSIONS)
