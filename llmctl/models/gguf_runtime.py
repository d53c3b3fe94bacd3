"""Running a GGUF folder in-process: GGUFCausalLM, a transformers-compatible model over llama-cpp-python (HF
sampling semantics, logits for scoring), the file checks before llama.cpp opens a file, and llama.cpp's thread and
AMX settings for this CPU."""

from __future__ import annotations

import atexit
import os
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from llmctl.models.gguf import FILE


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
