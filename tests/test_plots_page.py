"""`dvc plots show` draws every Vega plot with no network: the page template of :mod:`tvs.plots_page`.

The end-to-end tests build a temporary git + DVC repository holding the project's own ``plots:``
definitions (from ``dvc.yaml``) and ``.dvc/config``, on small generated plot data, run plain
``dvc plots show`` and open the page in headless Chromium with every host name unresolvable and a
dead proxy, then read back which plot divs Vega-Embed drew into.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from dvc_render.html import PAGE_HTML
from dvc_render.vega_templates import LinearTemplate

from tvs.plots_page import page_template, vega_lite_version

from .conftest import PROJECT, dvc, run_ok

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's `chromium` is not installed (apt-get install chromium) to open the page"
)

# No request can leave the browser: every host name fails to resolve, and any proxy use is refused.
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")


# --- the template itself ---------------------------------------------------------------------


def test_template_inlines_the_bundle_in_place_of_dvcs_cdn_scripts():
    page = page_template("window.vegaEmbed = function () {};")
    assert "{scripts}" not in page and "cdn.jsdelivr" not in page
    assert "{plot_divs}" in page  # DVC refuses a template without it
    assert "<script>\nwindow.vegaEmbed = function () {};\n</script>" in page
    assert '<meta charset="utf-8">' in page


@pytest.mark.parametrize("clash", ["{plot_divs}", "</script>"])
def test_a_bundle_that_would_break_the_page_is_refused(clash: str):
    with pytest.raises(RuntimeError, match="contains .* cannot be inlined in DVC's page"):
        page_template(f"var s = '{clash}';")


def test_bundled_vega_lite_is_the_major_version_dvcs_templates_are_written_for():
    major = re.search(r"/v(\d+)\.json$", LinearTemplate.DEFAULT_CONTENT["$schema"]).group(1)
    assert vega_lite_version().split(".")[0] == major


# --- the page in a browser -------------------------------------------------------------------


def write_plot_data(root: Path) -> None:
    """The plot sources ``verdict`` writes (tvs.verdict.curves), from a two-epoch history and four test images
    per arm, so that every definition, ROC and PR included, has data."""
    import numpy as np
    import pandas as pd

    from tvs.io import write_csv
    from tvs.verdict.curves import CURVES, write_plot_sources

    history = [{"epoch": e, **{key: 0.5 + 0.1 * e for key in CURVES}} for e in (1, 2)]
    for arm, p_dogs in (("pretrained", [0.2, 0.6, 0.7, 0.9]), ("scratch", [0.4, 0.3, 0.8, 0.6])):
        table = pd.DataFrame({"path": ["c/1.png", "c/2.png", "d/3.png", "d/4.png"],
                              "true": ["cats", "cats", "dogs", "dogs"], "predicted": "x"})  # fmt: skip
        table["p_cats"], table["p_dogs"] = 1 - np.array(p_dogs), p_dogs
        write_csv(table, root / "eval" / arm / "predictions.csv")
    write_plot_sources(root / "reports" / "plots", {"pretrained": history, "scratch": history}, root / "eval")


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository with the project's ``.dvc/config``, ``plots:`` and generated plot data,
    and its page template written as ``make setup`` writes it."""
    root = tmp_path_factory.mktemp("plots")
    (root / ".dvc").mkdir()
    shutil.copy(PROJECT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(PROJECT / ".dvc" / "plots", root / ".dvc" / "plots")  # the templates
    plots = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["plots"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    write_plot_data(root)
    run_ok(["git", "init", "-q"], root)
    run_ok([sys.executable, "-m", "tvs.plots_page", ".dvc/plots_template.html"], root)
    return root


def vega_plot_ids(page: Path) -> set[str]:
    """The ids of the divs DVC asks Vega-Embed to draw into (``vegaEmbed('#id', spec)``)."""
    return set(re.findall(r"vegaEmbed\('#([^']+)'", page.read_text(encoding="utf-8")))


class DrawnPlots(HTMLParser):
    """The ids of the plot divs that hold a drawn Vega view (an ``<svg>`` or ``<canvas>`` of class ``marks``)."""

    def __init__(self, plot_ids: set[str]):
        super().__init__()
        self.plot_ids, self.open_divs, self.drawn = plot_ids, [], set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "div":
            self.open_divs.append(attributes.get("id"))
        elif tag in ("svg", "canvas") and "marks" in (attributes.get("class") or "").split():
            self.drawn.update(self.plot_ids.intersection(self.open_divs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.open_divs:
            self.open_divs.pop()


def drawn_offline(page: Path, profile: Path) -> set[str]:
    """Open ``page`` in headless Chromium with no network; the ids of the plot divs Vega drew into."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *OFFLINE]
    cmd += [f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout, f"chromium failed on {page}:\n{proc.stderr[-2000:]}"
    parser = DrawnPlots(vega_plot_ids(page))
    parser.feed(proc.stdout)
    return parser.drawn


@pytest.mark.e2e
@needs_chromium
def test_plain_dvc_plots_show_draws_every_vega_plot_offline(plots_repo: Path, tmp_path: Path):
    dvc(plots_repo, "plots", "show")
    page = plots_repo / "dvc_plots" / "index.html"
    expected = vega_plot_ids(page)
    assert len(expected) == len(yaml.safe_load((PROJECT / "dvc.yaml").read_text())["plots"])
    assert drawn_offline(page, tmp_path / "profile") == expected


@pytest.mark.e2e
@needs_chromium
def test_dvcs_default_cdn_page_draws_nothing_offline(plots_repo: Path, tmp_path: Path):
    """The control: the browser really is offline, so the test above could fail without the template."""
    default = tmp_path / "default_page.html"
    default.write_text(PAGE_HTML)
    dvc(plots_repo, "plots", "show", "--html-template", str(default), "-o", str(tmp_path / "out"))
    page = tmp_path / "out" / "index.html"
    assert vega_plot_ids(page) and drawn_offline(page, tmp_path / "profile") == set()
