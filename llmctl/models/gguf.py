"""GGUF model folders (llama.cpp): conversion by llama.cpp's own HF → GGUF converter, quantization by llama.cpp's
`llama_model_quantize` (through llama-cpp-python), and `GGUFCausalLM`, a transformers-compatible model over
llama-cpp-python (forward() logits, generate() with streamers, stopping criteria and logits processors), so that
quantize, benchmark, generate, chat and `llmctl serve` use a GGUF folder as they use any other.

A GGUF folder holds `model.gguf` beside the source model's config.json, generation_config.json and tokenizer
files: llmctl tokenizes with the Hugging Face tokenizer (the same ids the model was trained on), llama.cpp's own
tokenizer is what Ollama and llama-server use (a test checks both agree).

The converter is not in llama-cpp-python's wheel; `make setup` extracts it, with the gguf-py library it imports,
from the llama-cpp-python source release the wheel is built from (`python -m llmctl.models.gguf
install-converter`), so converter and runtime always come from one llama.cpp commit. A Modelfile written beside
model.gguf makes the folder an Ollama model (`ollama create NAME -f Modelfile`)."""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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
    (out / "Modelfile").write_text(modelfile(str(out)))


SYSTEM, USER, ANSWER = "\x01system\x01", "\x01user\x01", "\x01answer\x01"


def modelfile(folder: str) -> str:
    """An Ollama Modelfile for the GGUF folder (`ollama create NAME -f Modelfile` inside it): the model file, a
    prompt template derived from the tokenizer's chat template (rendered with placeholders, which become Ollama's
    {{ .System }} / {{ .Prompt }} / {{ .Response }}), its stop strings, the context length and the model's own
    sampling defaults. A model without a chat template gets the raw prompt (a completion model)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from llmctl.models.causal_lm import context_length

    tokenizer = AutoTokenizer.from_pretrained(folder)
    template, stops = _ollama_template(tokenizer)
    lines = [
        "# Ollama: `ollama create NAME -f Modelfile` in this folder, then `ollama run NAME`. Written by llmctl.",
        f"FROM ./{FILE}",
    ]
    if '"""' in template:  # a Modelfile's triple quotes have no escape: the template would end early and inject lines
        lines.append("# no TEMPLATE: the chat template holds three double quotes, which a Modelfile cannot quote")
    else:
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops if stop.isprintable()]  # a newline would inject
    if context := context_length(AutoConfig.from_pretrained(folder)):
        lines.append(f"PARAMETER num_ctx {context}")
    if (Path(folder) / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(folder)
        if generation.do_sample:
            lines += [f"PARAMETER temperature {generation.temperature}", f"PARAMETER top_p {generation.top_p}"]
            if generation.top_k:
                lines.append(f"PARAMETER top_k {generation.top_k}")
        if generation.repetition_penalty not in (None, 1.0):
            lines.append(f"PARAMETER repeat_penalty {generation.repetition_penalty}")
    return "\n".join(lines) + "\n"


def _ollama_template(tokenizer: Any) -> tuple[str, list[str]]:
    """(Ollama template, stop strings) from the tokenizer's chat template; `{{ .Prompt }}` without one."""
    eos = [tokenizer.eos_token] if tokenizer.eos_token else []
    if not getattr(tokenizer, "chat_template", None):
        return "{{ .Prompt }}", eos

    def render(messages: list[dict[str, str]], prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)

    user = [{"role": "user", "content": USER}]
    asked = render(user, True)
    answered = render([*user, {"role": "assistant", "content": ANSWER}], False)
    after = answered.split(ANSWER, 1)[1] if ANSWER in answered else ""
    template = asked.replace(USER, "{{ .Prompt }}") + "{{ .Response }}" + after
    try:
        with_system = render([{"role": "system", "content": SYSTEM}, *user], True)
    except Exception:  # noqa: BLE001 - templates that refuse a system message (Gemma's) raise their own errors
        with_system = asked
    if SYSTEM in with_system and with_system.endswith(asked):  # a system block that goes first when given
        block = with_system[: -len(asked)].replace(SYSTEM, "{{ .System }}")
        template = "{{ if .System }}" + block + "{{ end }}" + template
    stops = [s for s in [after.strip(), *eos] if s]
    return template, list(dict.fromkeys(stops))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def is_gguf_folder(path: str | Path) -> bool:
    return (Path(path) / FILE).is_file()


def amx_build() -> bool:
    """llama.cpp here was compiled with its AMX kernels and the CPU has AMX: quantized matrix products over several
    tokens then go through `ggml_backend_amx_mul_mat`, which segfaults (llama.cpp #20824; seen here on a
    Sapphire-Rapids-class CPU with llama-cpp-python 0.3.36's default -march=native build)."""
    import llama_cpp

    from llmctl.hardware import cpu_flags

    return "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode() and "amx_int8" in cpu_flags()


def threads() -> int:
    return len(os.sched_getaffinity(0))


_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Free llama.cpp contexts before the interpreter tears down the modules their finalizers need (otherwise every
    exit prints "TypeError: 'NoneType' object is not callable" from llama-cpp-python's __del__)."""
    for llm in list(_OPEN):
        llm.close()


class GGUFCausalLM:
    """A GGUF model behind the part of transformers' model interface llmctl uses: `config`, `device`, `eval()`,
    `model(input_ids, attention_mask).logits` and `generate(...)` (greedy or sampled, one row at a time: llama.cpp's
    high-level context holds one sequence). Sampling uses transformers' own logits warpers on llama.cpp's logits and
    torch's generator, so a seeded request samples as on the PyTorch engine's settings (temperature before top-p)."""

    one_row_at_a_time = True

    def __init__(self, folder: str) -> None:
        import torch
        from transformers import AutoConfig, GenerationConfig

        from llmctl.models.causal_lm import context_length

        self.path = str(Path(folder) / FILE)
        self.config = AutoConfig.from_pretrained(folder)
        self.generation_config = GenerationConfig.from_model_config(self.config)
        self.device = torch.device("cpu")
        self.context = context_length(self.config) or 2048
        # several prompt tokens per decode call unless that would run the crashing AMX kernels
        self.batch = 1 if amx_build() else 512
        self.llm = self._context(logits_all=False)
        self.n_vocab = self.llm.n_vocab()
        self._scorer: Any = None

    def _context(self, logits_all: bool) -> Any:
        from llama_cpp import Llama

        llm = Llama(
            model_path=self.path,
            n_ctx=self.context,
            n_batch=self.batch,
            n_ubatch=self.batch,
            n_threads=threads(),
            n_threads_batch=threads(),
            logits_all=logits_all,
            verbose=False,
        )
        _OPEN.add(llm)
        return llm

    def eval(self) -> GGUFCausalLM:
        return self

    def __call__(self, input_ids: Any, attention_mask: Any = None, **_: Any) -> Any:
        """Logits at every position of every row (padding positions are zeros), one llama.cpp pass per row."""
        import torch

        if self._scorer is None:  # a second context, computing logits at every position (scoring only)
            self._scorer = self._context(logits_all=True)
        logits = torch.zeros((*input_ids.shape, self.n_vocab), dtype=torch.float32)
        for row, (ids, where) in enumerate(_rows(input_ids, attention_mask)):
            if not ids:
                continue
            self._scorer.reset()
            self._scorer.eval(ids)
            logits[row, where] = torch.from_numpy(self._scorer.scores[: len(ids)].copy())
        return SimpleNamespace(logits=logits)

    def generate(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        num_beams: int = 1,
        num_return_sequences: int = 1,
        streamer: Any = None,
        stopping_criteria: Any = None,
        logits_processor: Any = None,
        pad_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        **_: Any,
    ) -> Any:
        """transformers' generate() contract: the (left-padded) inputs followed by each row's new tokens, rows
        repeated `num_return_sequences` times, finished rows padded with `pad_token_id`."""
        import torch

        if num_beams > 1:
            raise ValueError("a GGUF model (llama.cpp) generates greedily or by sampling, not by beam search")
        width = input_ids.shape[1]
        new = max_new_tokens if max_new_tokens is not None else max((max_length or width + 20) - width, 0)
        eos = _ids(eos_token_id if eos_token_id is not None else self.config.eos_token_id)
        pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
        processors = _processors(logits_processor, do_sample, temperature, top_k, top_p, repetition_penalty)
        if streamer is not None:
            streamer.put(input_ids)
        rows = [ids for ids, _ in _rows(input_ids, attention_mask) for _ in range(num_return_sequences)]
        steps = _Steps(new, min_new_tokens, eos, do_sample, processors, streamer, stopping_criteria)
        outputs = [self._continue(ids, steps) for ids in rows]
        if streamer is not None:
            streamer.end()
        longest = max((len(o) for o in outputs), default=0)
        tail = torch.full((len(rows), longest), pad, dtype=torch.long)
        for row, tokens in enumerate(outputs):
            tail[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return torch.cat([input_ids.repeat_interleave(num_return_sequences, 0), tail], dim=1)

    def _continue(self, prompt: list[int], steps: _Steps) -> list[int]:
        import numpy

        self._prefill(prompt)
        out: list[int] = []
        ids = _History(prompt, out)
        for step in range(steps.new):
            logits = numpy.ctypeslib.as_array(_last_logits(self.llm), shape=(self.n_vocab,))
            token = steps.choose(logits, ids, step)
            out.append(token)
            if steps.done(token, ids):
                break
            self.llm.eval([token])
        return out

    def _prefill(self, prompt: list[int]) -> None:
        """Evaluate `prompt`, keeping the cached part it shares with the previous sequence (a chat's history)."""
        if not prompt:  # llama.cpp would have no logits to read
            raise ValueError("an empty prompt: a GGUF model needs at least one token to continue from")
        cached = self.llm.input_ids[: self.llm.n_tokens].tolist()
        keep = 0
        while keep < min(len(cached), len(prompt) - 1) and cached[keep] == prompt[keep]:
            keep += 1
        self.llm.n_tokens = keep  # eval() drops the cache past n_tokens first
        self.llm.eval(prompt[keep:])


class _Steps:
    """One generate() call's decoding rules: token choice, end-of-sequence, streamer and stopping criteria."""

    def __init__(
        self,
        new: int,
        min_new: int,
        eos: list[int],
        do_sample: bool,
        processors: Any,
        streamer: Any,
        stopping: Any,
    ) -> None:
        self.new, self.min_new, self.eos, self.do_sample = new, min_new, eos, do_sample
        self.processors, self.streamer, self.stopping = processors, streamer, stopping

    def choose(self, logits: Any, ids: _History, step: int) -> int:
        import torch

        plain = not self.processors and not self.do_sample
        if plain:  # greedy: numpy on llama.cpp's own buffer, no copy, no tensor
            token = int(logits.argmax())
            if not (step < self.min_new and token in self.eos):
                return token
        if step < self.min_new and self.eos:
            logits = logits.copy()
            logits[self.eos] = -float("inf")
        if plain:
            return int(logits.argmax())
        scores = self.processors(ids.tensor(), torch.from_numpy(logits.copy())[None])
        if self.do_sample:
            return int(torch.multinomial(scores.softmax(-1), 1)[0, 0])
        return int(scores.argmax())

    def done(self, token: int, ids: _History) -> bool:
        import torch

        if self.streamer is not None:
            self.streamer.put(torch.tensor([token]))
        if token in self.eos:
            return True
        if self.stopping is None:
            return False
        return bool(self.stopping(ids.tensor(), None).all())


class _History:
    """A row's prompt and the tokens generated so far, made a (1, length) tensor only when a processor or a
    stopping criterion asks (greedy decoding never does)."""

    def __init__(self, prompt: list[int], out: list[int]) -> None:
        self.prompt, self.out = prompt, out

    def tensor(self) -> Any:
        import torch

        return torch.tensor([self.prompt + self.out])


def _processors(
    given: Any, do_sample: bool, temperature: float, top_k: int, top_p: float, repetition_penalty: float
) -> Any:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList(list(given or []))
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if do_sample:
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_k and top_k > 0:
            processors.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
    return processors


def _rows(input_ids: Any, attention_mask: Any) -> list[tuple[list[int], Any]]:
    """(the row's real token ids, the positions they sit at) for each row; padding left or right."""
    import torch

    rows = []
    for row in range(input_ids.shape[0]):
        where = (
            attention_mask[row].bool()
            if attention_mask is not None
            else torch.ones(input_ids.shape[1], dtype=torch.bool)
        )
        rows.append((input_ids[row][where].tolist(), where))
    return rows


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _last_logits(llm: Any) -> Any:
    import llama_cpp

    return llama_cpp.llama_get_logits_ith(llm.ctx, -1)


GGUF_MAGIC = b"GGUF"


def check_file(path: Path) -> None:
    """An InvalidModel (exit 2) unless `path` is a regular file with a GGUF header whose counts fit its size:
    llama.cpp itself blocks on a FIFO, and a garbage or absurd header is an internal error or worse."""
    import stat
    import struct

    from llmctl.errors import InvalidModel

    def invalid(why: str) -> InvalidModel:
        return InvalidModel(
            f"{path} is not a valid GGUF file: {why}; convert the model again (quantize: {{backend: gguf}})"
        )

    try:
        info = path.stat()
    except OSError as err:
        raise invalid(f"it cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise invalid("it is not a regular file")
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise invalid("it does not start with the GGUF magic")
    version, tensors, values = struct.unpack("<IQQ", head[4:])
    if version not in (2, 3):
        raise invalid(f"GGUF version {version} (llama.cpp reads 2 and 3)")
    if tensors == 0 or tensors * 24 > info.st_size or values * 8 > info.st_size:
        raise invalid(f"its header claims {tensors} tensors and {values} metadata entries in {info.st_size} bytes")


def load(folder: str) -> GGUFCausalLM:
    """The GGUF model in `folder` (its file checked first; a file llama.cpp refuses is an InvalidModel too)."""
    from llmctl.errors import InvalidModel

    path = Path(folder) / FILE
    check_file(path)
    try:
        return GGUFCausalLM(folder)
    except ValueError as err:  # llama-cpp-python: "Failed to load model from file"
        raise InvalidModel(f"{path} is not a valid GGUF file: llama.cpp refused it ({err})") from None


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
