"""What CI systems read: JUnit XML (`--junit FILE`: GitHub, GitLab and Jenkins render it as tests) and GitHub
Actions annotations (`::error file=…,line=…::…` on stderr when GITHUB_ACTIONS=true), plus the structured
fields of a `--json` error event (where each problem is: file, line, column, field)."""

from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import GateFailed, LlmctlError, Problem, RecipeError, RecipeMismatch, StageFailed
from llmctl.redaction import redact

WHERE_RE = re.compile(r"^(?P<file>.+?):(?P<line>\d+)(?::(?P<column>\d+))?$")


@dataclass
class Case:
    """One JUnit test case: a recipe (validate, plan) or a stage (run)."""

    name: str
    classname: str
    failure: str | None = None  # the check failed (invalid recipe, rejected by a gate)
    error: str | None = None  # it broke (a stage failed, interrupted)
    skipped: str | None = None  # it did not run
    seconds: float = 0.0


def write_junit(path: Path, suite: str, cases: list[Case]) -> None:
    """A JUnit XML file with one suite of `cases` (secrets hidden)."""
    counts = {kind: sum(getattr(c, kind) is not None for c in cases) for kind in ("failure", "error", "skipped")}
    root = ET.Element("testsuites", name="llmctl")
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(counts["failure"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=f"{sum(c.seconds for c in cases):.3f}",
    )
    for case in cases:
        element = ET.SubElement(
            node, "testcase", name=_xml(case.name), classname=_xml(case.classname), time=f"{case.seconds:.3f}"
        )
        for kind in ("failure", "error", "skipped"):
            text = getattr(case, kind)
            if text is not None:  # the message attribute is what most viewers show: the whole text, bounded
                head = " / ".join(line.strip() for line in text.splitlines() if line.strip())[:2000] or kind
                ET.SubElement(element, kind, message=_xml(head)).text = _xml(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    """Text XML 1.0 can hold (secrets hidden): control characters (ESC, NUL, form feed…) are dropped, or the
    report would not parse."""
    return XML_INVALID.sub("", redact(text))


def check_junit_path(path: Path) -> None:
    """Refuse, before anything runs, a --junit path no report can be written to (exit 2): a folder, a path under a
    file, a special file or /proc and /sys, a folder we may not write."""
    from llmctl.errors import UsageError

    target = path.absolute()
    why = None
    if target.parts[1:2] in (("proc",), ("sys",), ("dev",)):
        why = "is in a system folder"
    elif target.is_dir():
        why = "is a folder"
    elif target.exists() and not target.is_file():
        why = "is not a regular file"
    else:
        ancestor = next(p for p in target.parents if p.exists())
        if not ancestor.is_dir():
            why = f"is under {ancestor}, which is a file"
        elif not os.access(ancestor, os.W_OK):
            why = f"cannot be written ({ancestor} is not writable)"
    if why:
        raise UsageError(f"--junit {path} {why}; name a file for the JUnit XML report (e.g. reports/llmctl.xml)")


def run_cases(recipe: str, record: dict[str, Any] | None, error: LlmctlError | None) -> list[Case]:
    """One case per stage of a firing (its record), or one for the recipe when it never planned."""
    if not record or not record.get("stages"):
        return [Case(recipe, "llmctl.run", failure=str(error) if error else None)]
    message = record.get("message") or ""
    cases = []
    for name, stage in record["stages"].items():
        case = Case(name, f"llmctl.run.{record.get('recipe') or recipe}", seconds=stage.get("duration_s") or 0.0)
        status = stage["status"]
        if status == "rejected":
            case.failure = message
        elif status in ("failed", "interrupted"):
            case.error = message
        elif status in ("not_run", "not_selected"):
            case.skipped = status.replace("_", " ")
        cases.append(case)
    return cases


def problems(error: LlmctlError) -> list[dict[str, Any]]:
    """Where each problem is, as data: [{file, line, column, field, message}]."""
    if isinstance(error, RecipeError):
        return [_located(p) for p in error.problems]
    if isinstance(error, RecipeMismatch):
        return [{"file": None, "line": None, "column": None, "field": error.field, "message": str(error)}]
    return []


def stage_of(error: LlmctlError) -> str | None:
    """The stage an error is about, when it names one."""
    if isinstance(error, (StageFailed, GateFailed)):
        return error.stage
    if isinstance(error, RecipeMismatch) and error.field.startswith("stages."):
        return error.field.split(".")[1]
    return None


def _located(problem: Problem) -> dict[str, Any]:
    match = WHERE_RE.match(problem.where)
    file, line, column = (match["file"], int(match["line"]), match["column"]) if match else (None, None, None)
    return {
        "file": file,
        "line": line,
        "column": int(column) if column else None,
        "field": problem.path or None,
        "message": problem.message,
    }


def annotate(error: LlmctlError, recipe: str | None) -> None:
    """GitHub Actions annotations for an error (on stderr, which the runner reads as well as stdout)."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    found = problems(error)
    if not found:
        stage = stage_of(error)
        where = _stage_where(recipe, stage) if recipe and stage else {}
        found = [{"file": recipe, "line": None, "column": None, "field": None, "message": str(error)} | where]
    for problem in found:
        properties = {"file": problem["file"] or recipe, "line": problem["line"], "col": problem["column"]}
        shown = ",".join(f"{k}={_escape(str(v), True)}" for k, v in properties.items() if v)
        title = f"llmctl: {problem['field']}" if problem["field"] else f"llmctl: {type(error).__name__}"
        head = f"::error {shown},title={_escape(title, True)}" if shown else f"::error title={_escape(title, True)}"
        print(f"{head}::{_escape(redact(problem['message']))}", file=sys.stderr, flush=True)


def _stage_where(recipe: str, stage: str) -> dict[str, Any]:
    """The file, line and column of stage `stage` in the recipe (its entry under `stages:`), {} when not found:
    a gate's or a stage's failure annotates the stage's own line."""
    from llmctl.recipe.load import load

    try:
        loaded = load(Path(recipe))
    except (LlmctlError, OSError):
        return {}
    for index, spec in enumerate(loaded.tree.get("stages") or []):
        if isinstance(spec, dict) and spec.get("name", spec.get("type")) == stage:
            match = WHERE_RE.match(loaded.where(("stages", index)))
            if match:
                column = int(match["column"]) if match["column"] else None
                return {"file": match["file"], "line": int(match["line"]), "column": column, "field": f"stages.{stage}"}
    return {}


def _escape(text: str, property_value: bool = False) -> str:
    """GitHub's workflow-command escaping (data: % CR LF; property values also : and ,)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text
