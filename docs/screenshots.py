"""Builds the docs, screenshots three pages headless, checks the highlighting.

Not part of the test run (it needs Chromium, and a build takes a while):

    python docs/screenshots.py [--output build/screenshots]

It builds the site with `mkdocs build --strict` into a temporary folder,
serves it on 127.0.0.1 (a free port) and takes screenshots with Debian's
Chromium (`apt-get install -y chromium`) in headless mode, with background
networking off, of the home page, a capability page and an API reference
page. Then it checks what a reader would see offline:

- every stylesheet and script the pages load is local (no CDN);
- the code blocks were highlighted at build time: Pygments token spans
  (`<span class="k">` for keywords and so on) are in the HTML;
- the capability page's screenshot, cropped to its first code block, has
  more colours than black text on grey would give.

It prints one line per check and exits 1 when one fails. The PNGs stay in
`--output` (not committed).
"""

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: (page, what it shows, window size): the home page, a capability page
#: with several code blocks, and an API reference page.
PAGES = [
    ("index.html", "home", "1280,900"),
    ("getting-started/index.html", "capability", "1280,1600"),
    # A URL fragment makes headless Chromium capture a blank page: the API
    # page is screenshotted from its top, tall enough to reach a function.
    ("api/index.html", "api", "1280,2400"),
]
_EXTERNAL = re.compile(
    r"<(?:link|script)\b[^>]*(?:href|src)=\"(https?:)?//[^\"]+\"", re.I
)
_TOKEN = re.compile(r"<span class=\"(k|kn|nn|nf|s[12d]?|mi|c1|o|p|n)\">")
#: A monochrome block has background, text and antialiasing greys; a
#: highlighted one adds keyword, string, number and comment colours.
#: Measured: 29-37 on this site; 6 on the old mkdocs-theme site offline
#: (monochrome code: its colours came from the blue links of a grey box).
MIN_HUES = 12


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("Chromium not found: apt-get install -y chromium")


def build_site(site: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    subprocess.run(
        [str(mkdocs), "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=REPO,
        check=True,
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def screenshot(chromium: str, url: str, png: Path, size: str) -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                "--virtual-time-budget=3000",
                f"--screenshot={png}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def code_block_hues(png: Path) -> int:
    """Distinct saturated colours inside the code blocks of a screenshot.

    The theme paints code blocks light grey (the colour of the pixel at a
    quarter of the width, on a row inside a block). On each row that has
    that grey there, only the pixels between its first and last grey pixel
    count, so links and the navigation beside a block do not. A colour
    counts when it is clearly not grey (saturation above 25%), quantized to
    32 levels per channel: a monochrome block scores 0.
    """
    from PIL import Image

    image = Image.open(png).convert("RGB")
    width, height = image.size
    data = image.tobytes()

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        at = 3 * (y * width + x)
        return data[at], data[at + 1], data[at + 2]

    hues = set()
    for y in range(height):
        code_grey = pixel(width // 4, y)
        r, g, b = code_grey
        if not (max(r, g, b) - min(r, g, b) < 8 and 225 < r < 250):
            continue
        row = [pixel(x, y) for x in range(width)]
        inside = [x for x, colour in enumerate(row) if colour == code_grey]
        for r, g, b in row[inside[0] : inside[-1] + 1]:
            high, low = max(r, g, b), min(r, g, b)
            if high and (high - low) / high > 0.25:
                hues.add((r // 32, g // 32, b // 32))
    return len(hues)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=REPO / "build" / "screenshots"
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()
    failures = []

    def check(ok: bool, message: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {message}")
        if not ok:
            failures.append(message)

    with tempfile.TemporaryDirectory(prefix="aiservice-docs-site-") as tmp:
        site = Path(tmp)
        build_site(site)
        server, base = serve(site)
        try:
            for page, name, size in PAGES:
                html = (site / page.split("#")[0]).read_text(encoding="utf-8")
                external = [m.group(0) for m in _EXTERNAL.finditer(html)]
                check(not external, f"{name}: no external CSS/JS {external}")
                if name != "home":
                    tokens = len(_TOKEN.findall(html))
                    check(tokens > 20, f"{name}: {tokens} Pygments token spans")
                png = args.output / f"{name}.png"
                screenshot(chromium, f"{base}/{page}", png, size)
                check(png.stat().st_size > 10_000, f"{name}: {png}")
                if name != "home":
                    hues = code_block_hues(png)
                    check(
                        hues >= MIN_HUES,
                        f"{name}: {hues} colours in code (need {MIN_HUES})",
                    )
        finally:
            server.shutdown()
            server.server_close()
    print("all checks passed" if not failures else f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
