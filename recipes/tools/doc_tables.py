"""Doc-table writing: the benchmark commands and the preset builder fill marked sections of docs/ pages."""

from pathlib import Path

from recipes.engine.checkpoints import atomic_write
from zoo.errors import ZooError

REPOSITORY = Path(__file__).resolve().parents[2]
# The page of the documentation (docs/, the MkDocs site) that holds each generated section.
SECTION_PAGES = {
    "benchmark": "docs/results.md",
    "models": "docs/results.md",
    "reproduce": "docs/presets.md",
    "presets": "docs/presets.md",
    "loop": "docs/training.md",
    "data": "docs/data.md",
    "export-families": "docs/benchmark-export.md",
    "export-presets": "docs/benchmark-export.md",
    "export-micro": "docs/micro.md",
    "micro-presets": "docs/micro.md",
    "verify-presets": "docs/boards.md",
    "gpu-delegate": "docs/phones.md",
}


def _marked_section(page, section):
    """The page's text and where its `<!-- section:start -->` ... `<!-- section:end -->` text starts and ends."""
    path = REPOSITORY / page
    content = path.read_text() if path.exists() else ""
    start_marker, end_marker = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    if start_marker not in content or end_marker not in content:
        raise ZooError(f"{path} has no {start_marker} ... {end_marker} section; run this from a checkout of the repository")
    return content, content.index(start_marker) + len(start_marker), content.index(end_marker)


def read_docs_section(section, page=None):
    """What stands between the `<!-- section:start -->` and `<!-- section:end -->` markers of the section's page."""
    content, start, end = _marked_section(page or SECTION_PAGES[section], section)
    return content[start:end].strip()


def write_docs_section(section, text, page=None):
    """Replaces what stands between the section's markers on its page (docs/, or `page` relative to the repository)."""
    page = page or SECTION_PAGES[section]
    content, start, end = _marked_section(page, section)
    updated = content[:start] + "\n" + text.strip() + "\n" + content[end:]
    atomic_write(REPOSITORY / page, lambda p: Path(p).write_text(updated))  # a page is never left half-written
