"""Render a run's HTML report in headless Chromium and save a full-page screenshot, to check that it displays.

Run: .venv/bin/python scripts/screenshot_report.py RUN [--out report.png] [--root runs]
Needs node and npm (the npm registry, nothing else): on first use it installs @sparticuz/chromium (a Chromium
build packed inside the npm package, so no browser download from a CDN) and puppeteer-core into
~/.cache/llmctl/chromium. Writes the report first (`llmctl report RUN`), then prints the page title, its
section headings and every image's rendered size; exits 1 if an image did not load or a section is missing.
Not part of `make test`: CI machines need not have node.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path.home() / ".cache" / "llmctl" / "chromium"
PACKAGES = ["@sparticuz/chromium@153", "puppeteer-core@24"]
SHOT_JS = """
import chromium from "@sparticuz/chromium";
import puppeteer from "puppeteer-core";
const [,, url, out] = process.argv;
const browser = await puppeteer.launch({args: chromium.args, executablePath: await chromium.executablePath(), headless: "shell"});
const page = await browser.newPage();
await page.setViewport({width: 1280, height: 900});
await page.goto(url, {waitUntil: "load"});
await page.screenshot({path: out, fullPage: true});
console.log(JSON.stringify(await page.evaluate(() => ({
  title: document.title,
  headings: [...document.querySelectorAll("h2")].map(h => h.textContent),
  images: [...document.images].map(i => [i.naturalWidth, i.naturalHeight]),
}))));
await browser.close();
"""


def ensure_browser() -> Path:
    """Install the npm packages into the cache once; returns the folder holding shot.mjs."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        sys.exit("node and npm are needed (https://nodejs.org); nothing else is downloaded")
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (CACHE / "node_modules" / "puppeteer-core").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), *PACKAGES], check=True)
    (CACHE / "shot.mjs").write_text(SHOT_JS)
    return CACHE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--root", default="runs")
    parser.add_argument("--out", default=None, help="PNG path (default: RUN/report/screenshot.png)")
    args = parser.parse_args()

    from llmctl.report import write_report

    page = write_report(args.run, Path(args.root))
    out = Path(args.out) if args.out else page.parent / "screenshot.png"
    folder = ensure_browser()
    result = subprocess.run(
        ["node", str(folder / "shot.mjs"), page.resolve().as_uri(), str(out.resolve())],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        sys.exit(f"chromium failed:\n{result.stderr[-2000:]}")
    info = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"title: {info['title']}\nsections: {', '.join(info['headings'])}")
    print("images: " + ", ".join(f"{w}x{h}" for w, h in info["images"]))
    print(f"screenshot: {out}")
    broken = [i for i, (w, h) in enumerate(info["images"]) if not (w and h)]
    if broken or "Stages" not in info["headings"]:
        sys.exit(f"report did not render: broken images {broken}, sections {info['headings']}")


if __name__ == "__main__":
    main()
