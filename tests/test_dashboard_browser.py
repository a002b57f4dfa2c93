"""The dashboard in a real headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it).

The site is built from the crafted 16k examples file of test_examples.py, served by
``http.server`` on 127.0.0.1, and driven with Playwright (``executable_path`` = the system
Chromium: Playwright downloads no browser). Asserts on the rendered DOM: the crafted " Paris"
contexts with their activations, search by token text and by id, and no request outside
127.0.0.1. A screenshot of the feature page is kept in ``build/dashboard-feature.png``.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_examples import PARIS, WIDE, wide_file, write

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
ARTEFACTS = Path(__file__).resolve().parent.parent / "build"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (CI installs Debian's `chromium` in .ci/run)"
)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> tuple[Path, dict[str, np.ndarray]]:
    from sae_lens_gemmascope.evidence.dashboard import write_dashboard
    from sae_lens_gemmascope.evidence.examples import open_examples

    tensors = wide_file()
    cache = tmp_path_factory.mktemp("hf")
    path = write(cache, WIDE, tensors)
    from sae_lens_gemmascope import registry

    out = tmp_path_factory.mktemp("site")
    with open_examples(path, entry=registry.get(*WIDE), tokenizer=tokenizer) as ex:
        write_dashboard(ex, out, features=[*range(0, 200), PARIS, 16383], progress=False)
    return out, tensors


@pytest.fixture(scope="module")
def server(site: tuple[Path, Any]) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(site[0]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _page(browser: Any) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    return page, requests


def test_feature_page_shows_the_crafted_contexts(browser: Any, server: str, site: Any) -> None:
    page, requests = _page(browser)
    page.goto(f"{server}/index.html#{PARIS}")
    page.wait_for_selector("#examples .ex")
    assert page.inner_text("#feature-title") == f"Feature {PARIS}"
    rows = page.query_selector_all("#examples .ex")
    assert [r.query_selector(".act").inner_text() for r in rows] == ["7.250", "4.000", "2.500"]
    for r in rows:
        assert r.query_selector("[data-active]").inner_text() == " Paris"
        assert "The capital of France is Paris. The" in r.query_selector(".ctx").inner_text()
    assert [(r.get_attribute("data-seq"), r.get_attribute("data-pos")) for r in rows] == [
        ("3", "6"),
        ("6", "6"),
        ("0", "6"),
    ]
    body = page.inner_text("#feature")
    assert "0.0123" in body and " France" in body  # frequency, top logit token
    assert page.get_attribute("#neuronpedia", "href").endswith(f"/9-gemmascope-2-res-16k/{PARIS}")
    assert page.query_selector("#hist canvas") is not None  # the uPlot histogram rendered
    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "dashboard-feature.png"), full_page=True)
    outside = [u for u in requests if not u.startswith(server + "/")]
    assert outside == [] and any("/data/f/" in u for u in requests)
    assert sum("/data/f/" in u for u in requests) == 1  # one shard for one feature
    page.close()


def test_search_by_token_and_by_id(browser: Any, server: str) -> None:
    page, requests = _page(browser)
    page.goto(f"{server}/index.html")
    page.wait_for_selector("#results li")
    page.fill("#q", "Paris")
    page.press("#q", "Enter")
    page.wait_for_selector(f'#results li[data-feature="{PARIS}"]')
    hits = page.query_selector_all("#results li")
    assert all("Paris" in h.inner_text() for h in hits)  # each hit shows the token it matched
    page.click(f'#results li[data-feature="{PARIS}"] a')
    page.wait_for_selector("#examples .ex")
    assert page.inner_text("#feature-title") == f"Feature {PARIS}"
    page.fill("#q", "16383")
    page.press("#q", "Enter")
    page.wait_for_selector('#results li[data-feature="16383"]')
    page.goto(f"{server}/index.html#5000")  # not built: a clear message, not a blank page
    # the status first says "loading feature 5000…", then what happened: wait for the latter
    page.wait_for_function(
        "(t => t.length > 0 && !t.startsWith('loading'))(document.getElementById('status').textContent)"
    )
    assert "not in this dashboard" in page.inner_text("#status")
    assert [u for u in requests if not u.startswith(server + "/")] == []
    page.close()


def test_same_files_work_from_file_url(browser: Any, site: Any) -> None:
    page, requests = _page(browser)
    page.goto((site[0] / "index.html").as_uri() + f"#{PARIS}")
    page.wait_for_selector("#examples .ex")
    assert len(page.query_selector_all("#examples [data-active]")) == 3
    assert all(u.startswith("file://") for u in requests)
    page.close()
