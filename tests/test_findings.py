"""The intro page's findings are generated from the chapters' recorded results, and complete."""

from __future__ import annotations


from tests.helpers import ROOT, load_script


findings = load_script("findings")


def test_every_finding_reads_keys_its_chapter_records():
    metrics = findings.chapter_metrics()
    assert set(f.chapter for f in findings.FINDINGS) <= set(metrics), "a finding names a chapter that does not exist"
    missing = findings.missing_keys(metrics)
    assert missing == [], f"chapters must record these keys for the intro's findings: {missing}"
    assert findings.contradicted(metrics) == []


def test_generated_page_is_up_to_date():
    text = findings.render(findings.chapter_metrics())
    stored = (ROOT / findings.OUTPUT).read_text()
    assert stored == text, "book/_generated/findings.md is stale: run `.venv/bin/python scripts/findings.py`"
    assert (ROOT / "book" / "intro.md").read_text().count("{include} _generated/findings.md") == 1


def test_a_missing_or_changed_result_shows_loudly():
    metrics = findings.chapter_metrics()
    first = findings.FINDINGS[0]
    key = first.keys()[0]
    gutted = {**metrics, first.chapter: {k: v for k, v in metrics.get(first.chapter, {}).items() if k != key}}
    assert (first.chapter, key) in findings.missing_keys(gutted)
    assert f"records no `{key}`" in findings.render(gutted)
    verdict = next(f for f in findings.FINDINGS if f.require)
    (k, v), = verdict.require[:1]
    flipped = {**metrics, verdict.chapter: {**metrics.get(verdict.chapter, {}), k: not v}}
    assert findings.contradicted(flipped) and "no longer holds" in findings.render(flipped)
    # and a recorded number reaches the page unchanged in its chapter's line
    complete = [f for f in findings.FINDINGS if all(k in metrics.get(f.chapter, {}) for k in f.keys())]
    assert complete, "no finding can be rendered from today's notebooks"
