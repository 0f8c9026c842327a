"""The page template of ``dvc plots show`` with Vega, Vega-Lite and Vega-Embed inline, so it draws offline.

DVC's own page loads the three libraries from a CDN: with no network only the PNG plots show and
every Vega plot stays blank. This writes DVC's page with those ``<script src=...>`` tags replaced by
one inline script, the self-contained bundle that the ``vl-convert-python`` package ships. ``make
setup`` writes it to ``.dvc/plots_template.html`` (git-ignored: the bundle is ~900 kB), and
``plots.html_template`` in ``.dvc/config`` points ``dvc plots show`` at it.

Usage: ``python -m tvs.plots_page .dvc/plots_template.html``
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import vl_convert
from dvc_render.html import PAGE_HTML
from dvc_render.vega_templates import LinearTemplate

from tvs.io import atomic_path

log = logging.getLogger(__name__)

# DVC's page fills these; `{scripts}` is where its CDN tags go, `{plot_divs}` must stay for DVC to accept the page.
SCRIPTS, PLOT_DIVS = "{scripts}", "{plot_divs}"

# DVC's plot divs call the global `vegaEmbed('#id', spec)`; the bundle's own names become globals here.
GLOBALS_SNIPPET = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"


def vega_lite_version() -> str:
    """The newest Vega-Lite in vl-convert of the major version DVC's plot templates are written for.

    DVC's templates declare a ``$schema`` (``.../vega-lite/v5.json``); a newer major release renames
    or drops parts of the grammar, so the page bundles the release those specs were written against.
    """
    schema = LinearTemplate.DEFAULT_CONTENT["$schema"]
    match = re.search(r"/v(\d+)\.json$", schema)
    if match is None:
        raise RuntimeError(f"dvc-render's linear template has an unexpected $schema {schema!r}")
    available = vl_convert.get_vegalite_versions()
    same_major = [v for v in available if v.split(".")[0] == match.group(1)]
    if not same_major:
        raise RuntimeError(
            f"vl-convert-python ships Vega-Lite {', '.join(available)}, none of them v{match.group(1)} "
            f"as DVC's templates ({schema}); pin a vl-convert-python that does in requirements.lock"
        )
    return max(same_major, key=lambda v: tuple(int(part) for part in v.split(".")))


def page_template(bundle: str) -> str:
    """DVC's default page with its ``{scripts}`` placeholder (the CDN tags) replaced by ``bundle`` inline."""
    if SCRIPTS not in PAGE_HTML or PLOT_DIVS not in PAGE_HTML:
        raise RuntimeError(f"dvc-render's page no longer has {SCRIPTS} and {PLOT_DIVS}; update tvs.plots_page")
    # DVC fills the page by plain text replacement: a placeholder inside the bundle would be filled too,
    # and `</script` would end the inline script early.
    for clash in (SCRIPTS, PLOT_DIVS, "{refresh_tag}", "</script"):
        if clash in bundle:
            raise RuntimeError(f"the Vega bundle contains {clash!r} and cannot be inlined in DVC's page")
    # DVC's page names no charset; the bundle holds a few non-ASCII characters (d3's minus sign for
    # negative ticks), which a browser reading a file:// page would otherwise decode as Windows-1252.
    page = PAGE_HTML.replace("<head>", '<head>\n    <meta charset="utf-8">', 1)
    return page.replace(SCRIPTS, f"<script>\n{bundle}\n</script>")


def write_template(out: str | Path) -> Path:
    """Write the offline page template to ``out``; return ``out``."""
    version = vega_lite_version()
    bundle = vl_convert.javascript_bundle(GLOBALS_SNIPPET, vl_version=version)
    with atomic_path(out) as tmp:  # not tvs.io.write_text: the bundle has a few non-ASCII characters
        tmp.write_text(page_template(bundle), encoding="utf-8")
    log.info(
        "wrote %s: DVC's plots page with Vega %s, Vega-Lite %s and Vega-Embed %s inline",
        out,
        vl_convert.get_vega_version(),
        version,
        vl_convert.get_vega_embed_version(),
    )
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out", type=Path, help="where to write the template (.dvc/config names .dvc/plots_template.html)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_template(args.out)


if __name__ == "__main__":
    main()
