"""README's crontab line, run as cron runs it (no TTY, a minimal environment, `sh -c`), firing after firing:
its --notify-cmd mails on every outcome but complete and skipped (`mail` is replaced by a recorder)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_retraining_loop import LOOP

pytestmark = pytest.mark.slow
README = Path(__file__).parents[2] / "README.md"


def cron_command() -> str:
    """The command of README's crontab line (the five time fields dropped)."""
    block = re.search(r"```cron\n(.*?)```", README.read_text(), re.S)
    assert block, "README has a ```cron block"
    line = next(line for line in block[1].splitlines() if line.strip() and not line.startswith("#"))
    return line.split(None, 5)[5]


def test_the_readme_cron_line_mails_on_every_outcome_but_success(tiny_recipe, workdir: Path) -> None:
    recipe = tiny_recipe(steps=40, extra=LOOP.format(baseline="previous"))
    fake = workdir / "bin"
    fake.mkdir()
    (fake / "mail").write_text(f'#!/bin/sh\n{{ echo "$@"; cat; }} >> {workdir}/mailbox\n')
    (fake / "mail").chmod(stat.S_IRWXU)
    venv = Path(sys.executable).parent
    command = (
        cron_command()
        .replace("cd /srv/llm", f"cd {workdir}")
        .replace(".venv/bin/llmctl", str(venv / "llmctl"))
        .replace("recipes/nightly.yaml", recipe.name)
    )
    env = {  # what cron gives a job, plus offline switches (tests never touch the network)
        "PATH": f"{fake}:/usr/bin:/bin",
        "HOME": str(workdir),
        "SHELL": "/bin/sh",
        "LOGNAME": "cron",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "LLMCTL_CACHE": os.environ.get("LLMCTL_CACHE", str(workdir / "cache")),
    }

    def fire(edit: str | None = None) -> tuple[int, str]:
        if edit is not None:
            text = recipe.read_text()
            recipe.write_text(re.sub(r"max_steps: (\d+|\w+)", f"max_steps: {edit}", text, count=1))
        mailbox = workdir / "mailbox"
        before = mailbox.read_text() if mailbox.exists() else ""
        done = subprocess.run(
            ["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
        )
        after = mailbox.read_text() if mailbox.exists() else ""
        subject = after[len(before) :].splitlines()[0] if after != before else ""
        return done.returncode, subject

    assert fire() == (0, "")  # complete: quiet
    assert fire() == (0, "")  # skipped: quiet
    assert fire("1") == (3, "-s llmctl nightly: rejected ops@example.com")
    assert fire() == (0, "")  # skipped: the rejection stands, no second mail
    assert fire("lots") == (2, "-s llmctl nightly: invalid ops@example.com")
    assert fire("80") == (0, "-s llmctl nightly: recovered ops@example.com")
    assert fire() == (0, "")
