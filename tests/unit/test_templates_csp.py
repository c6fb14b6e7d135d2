"""Templates stay within the strict CSP: no inline script or style, no inline event handlers."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
FORBIDDEN = {
    "inline <script> body": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
    "<style> element": re.compile(r"<style\b", re.I),
    "style attribute": re.compile(r"\sstyle\s*=", re.I),
    "hx-on attribute": re.compile(r"\shx-on", re.I),
    "on* event attribute": re.compile(r"\son[a-z]+\s*=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}


def _page_templates():
    for path in sorted(TEMPLATES.rglob("*.html")):
        # e-mails and PDFs are not served under the CSP (xhtml2pdf needs its <style>)
        if path.relative_to(TEMPLATES).parts[0] in ("email", "pdf"):
            continue
        yield path


@pytest.mark.parametrize("path", list(_page_templates()), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_page_template_has_no_inline_code_or_style(path):
    text = path.read_text()
    for what, pattern in FORBIDDEN.items():
        match = pattern.search(text)
        assert match is None, f"{path.name}: {what}: {text[max(match.start() - 40, 0):match.end() + 40]!r}"
