"""GGUF model folders (llama.cpp): conversion by llama.cpp's own HF → GGUF converter and quantization by llama.cpp's
`llama_model_quantize` (through llama-cpp-python). A GGUF folder holds `model.gguf` beside the source model's
config.json, generation_config.json and tokenizer files, and a Modelfile (`models/ollama.py`) that makes it an
Ollama model; `models/gguf_runtime.py` runs it, so that quantize, benchmark, generate, chat and `llmctl serve` use a
GGUF folder as they use any other. llmctl tokenizes with the Hugging Face tokenizer (the same ids the model was
trained on); llama.cpp's own tokenizer is what Ollama and llama-server use (a test checks both agree).

The converter is not in llama-cpp-python's wheel; `make setup` extracts it, with the gguf-py library it imports,
from the llama-cpp-python source release the wheel is built from (`python -m llmctl.models.gguf
install-converter`), so converter and runtime always come from one llama.cpp commit."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from llmctl.models.ollama import modelfile

FILE = "model.gguf"
FORMATS: dict[str, int] = {
    "f32": 32,
    "f16": 16,
    "bf16": 16,
    "q8_0": 8,
    "q6_k": 6,
    "q5_k_m": 5,
    "q5_k_s": 5,
    "q5_0": 5,
    "q5_1": 5,
    "q4_k_m": 4,
    "q4_k_s": 4,
    "q4_0": 4,
    "q4_1": 4,
    "q3_k_l": 3,
    "q3_k_m": 3,
    "q3_k_s": 3,
    "q2_k": 2,
}
"""llama.cpp file types llmctl can write, with their nominal bits per weight."""
UNQUANTIZED = ("f32", "f16", "bf16")
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CONVERTER_ENV = "LLMCTL_GGUF_CONVERTER"
"""A folder holding llama.cpp's convert_hf_to_gguf.py, `conversion/` and `gguf-py/` (default: inside the venv)."""


class ConverterMissing(RuntimeError):
    """llama.cpp's converter is not installed."""


def converter_dir() -> Path:
    return Path(os.environ.get(CONVERTER_ENV) or Path(sys.prefix) / "share" / "llmctl" / "llama.cpp")


def llama_cpp_version() -> str:
    return importlib.metadata.version("llama_cpp_python")


def install_converter(target: Path | None = None) -> Path:
    """Extract convert_hf_to_gguf.py, `conversion/` and `gguf-py/gguf` (the converter's own gguf library: PyPI's
    `gguf` release lags the converter) from the llama-cpp-python source release matching the
    installed wheel (pip's HTTP cache makes a second download free). Returns the folder."""
    target = target or converter_dir()
    version = llama_cpp_version()
    with tempfile.TemporaryDirectory(prefix="llmctl-llama-cpp-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
            + [f"llama-cpp-python=={version}", "-d", tmp],
            check=True,
        )
        archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        staged = Path(tmp) / "converter"
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        parts = (prefix + "conversion/", prefix + "gguf-py/gguf/")
        with tarfile.open(archive) as tar:
            members = [
                m for m in tar.getmembers() if m.name == prefix + "convert_hf_to_gguf.py" or m.name.startswith(parts)
            ]
            for member in members:
                member.name = member.name[len(prefix) :]
            tar.extractall(staged, members=members, filter="data")
        (staged / "VERSION").write_text(version + "\n")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), target)
    return target


def supported_architectures() -> set[str]:
    """The transformers architectures llama.cpp's installed converter takes (its TEXT_MODEL_MAP, read as text:
    importing the converter costs seconds)."""
    import re

    file = converter_dir() / "conversion" / "__init__.py"
    if not file.is_file():
        return set()
    table = file.read_text().split("TEXT_MODEL_MAP", 1)[-1].split("}", 1)[0]
    return set(re.findall(r'"(\w+)"\s*:', table))


def check_convertible(source: str) -> None:
    """A RecipeMismatch naming quantize.backend when the converter is missing or lacks the model's architecture."""
    from transformers import AutoConfig

    from llmctl.errors import RecipeMismatch

    supported = supported_architectures()
    if not supported:
        raise RecipeMismatch("backend", str(missing_converter()))
    architectures = AutoConfig.from_pretrained(source).architectures or []
    if not set(architectures) & supported:
        raise RecipeMismatch(
            "backend",
            f"backend gguf: llama.cpp's converter does not take {', '.join(architectures) or 'this model'} "
            f"(llama-cpp-python {llama_cpp_version()}); use backend openvino or inc for it",
        )


def missing_converter() -> ConverterMissing:
    return ConverterMissing(
        f"llama.cpp's GGUF converter is not installed in {converter_dir()}: run "
        "`python -m llmctl.models.gguf install-converter` (make setup does), or set "
        f"{CONVERTER_ENV} to a llama.cpp checkout"
    )


def convert(source: str, out_file: Path, outtype: str = "f16") -> None:
    """HF folder `source` → one GGUF file, through llama.cpp's converter (in a subprocess: it is a script with
    global state). Raises ConverterMissing, or RuntimeError with the converter's last lines."""
    folder = converter_dir()
    if not (folder / "convert_hf_to_gguf.py").is_file():
        raise missing_converter()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "llmctl.models.gguf_convert", str(folder), source]
    command += ["--outfile", str(out_file), "--outtype", outtype]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out_file.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"llama.cpp's converter failed on {source}:\n{tail}")


def quantize_file(f16_file: Path, out_file: Path, fmt: str) -> None:
    """llama.cpp's own quantizer (`llama_model_quantize`, what llama-quantize calls) from a 16-bit GGUF file."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(fmt)
    params.nthread = len(os.sched_getaffinity(0))
    code = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out_file).encode(), params)
    if code != 0 or not out_file.is_file():
        raise RuntimeError(f"llama.cpp could not quantize {f16_file.name} to {fmt} (code {code})")


def _ftype(fmt: str) -> int:
    import llama_cpp

    name = "LLAMA_FTYPE_ALL_F32" if fmt == "f32" else f"LLAMA_FTYPE_MOSTLY_{fmt.upper()}"
    return int(getattr(llama_cpp, name))


def export(source: str, fmt: str, out: Path, f16_cache: Path | None = None) -> None:
    """A GGUF folder in `out`: model.gguf of type `fmt`, plus the source's config and tokenizer files.
    `f16_cache`: where the 16-bit conversion is kept between calls (an accuracy search converts once)."""
    out.mkdir(parents=True, exist_ok=True)
    if fmt in UNQUANTIZED:
        convert(source, out / FILE, fmt)
    else:
        f16 = f16_cache or out / "f16.gguf"
        if not f16.is_file():
            convert(source, f16, "f16")
        quantize_file(f16, out / FILE, fmt)
        if f16_cache is None:
            f16.unlink()
    for name in COPIED:
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, out / name)
    (out / "Modelfile").write_text(modelfile(str(out), FILE))


def is_gguf_folder(path: str | Path) -> bool:
    return (Path(path) / FILE).is_file()


def main(argv: list[str]) -> int:
    """`python -m llmctl.models.gguf install-converter [FOLDER]`."""
    if not argv or argv[0] != "install-converter":
        print("usage: python -m llmctl.models.gguf install-converter [FOLDER]", file=sys.stderr)
        return 2
    folder = install_converter(Path(argv[1]) if len(argv) > 1 else None)
    print(f"llama.cpp {llama_cpp_version()} converter installed in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
