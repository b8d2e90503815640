"""The result tables quoted in README.md and docs/ equal the result files they name."""

from __future__ import annotations

import pytest

from benchmarks import docs_results


def test_every_quoted_result_block_equals_its_result_file():
    blocks = 0
    for page in docs_results.pages():
        text, changed = docs_results.sync(page)
        blocks += len(docs_results.BLOCK.findall(page.read_text()))
        assert not changed, (
            f"{page.name} quotes result files that changed since: {changed}; "
            "run `python -m benchmarks.docs_results`"
        )
    assert blocks >= 1


def test_a_stale_block_is_found_and_rewritten(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "demo.md").write_text("# Title\n\n| a |\n| --- |\n| 2 |\n")
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- result: demo -->\n| a |\n| --- |\n| 1 |\n<!-- /result -->\nmore\n")
    text, changed = docs_results.sync(page, results)
    assert changed == ["demo"]
    assert text == "text\n<!-- result: demo -->\n| a |\n| --- |\n| 2 |\n<!-- /result -->\nmore\n"
    page.write_text(text)
    assert docs_results.sync(page, results)[1] == []


def test_a_block_naming_a_missing_result_file_is_an_error(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- result: nothing_here -->\n<!-- /result -->\n")
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        docs_results.sync(page, tmp_path)


def test_a_quoted_value_is_read_from_its_result_file_and_kept_equal(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "run.json").write_text('{"wall_text": "7 min 12 s", "test": {"test/mIoU": 0.67324, "Pr@0.9": 0.2},'
                                      ' "rows": [{"ms": 1234.6}]}')
    page = tmp_path / "page.md"
    page.write_text("took <!-- value: run::wall_text -->7 min<!-- /value -->, mIoU "
                    "<!-- value: run::test::test/mIoU|x100:.2f -->67.32<!-- /value --> "
                    "(<!-- value: run::rows::0::ms|,.0f -->1,235<!-- /value --> ms)\n")
    text, changed = docs_results.sync(page, results)
    assert changed == ["run::wall_text ('7 min' -> '7 min 12 s')"]
    assert text == ("took <!-- value: run::wall_text -->7 min 12 s<!-- /value -->, mIoU "
                    "<!-- value: run::test::test/mIoU|x100:.2f -->67.32<!-- /value --> "
                    "(<!-- value: run::rows::0::ms|,.0f -->1,235<!-- /value --> ms)\n"), text
    page.write_text(text.replace("67.32", "67.30"))
    assert len(docs_results.sync(page, results)[1]) == 1  # a hand-edited number is caught
    page.write_text("<!-- value: run::test::oIoU|.2f -->1<!-- /value -->")
    with pytest.raises(KeyError, match="has no 'oIoU'"):
        docs_results.sync(page, results)


def test_a_value_over_seeds_is_their_mean_and_standard_deviation(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "study.json").write_text('{"results": {"a": [{"mIoU": 0.40}, {"mIoU": 0.42}, {"mIoU": 0.44}]}}')
    assert docs_results.value("study::results::a::*::mIoU|x100:meanstd:.1f", results) == "42.0 ± 2.0"
    assert docs_results.value("study::results::a::*::mIoU|mean:.2f", results) == "0.42"
    assert docs_results.value("study::results::a::*::mIoU|std:.2f", results) == "0.02"


def test_scales_and_a_separator_escaped_for_a_table_cell(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "cost.json").write_text('{"flops": 225284003840, "ms": 12.345}')
    assert docs_results.value("cost::flops|/1e9:.1f", results) == "225.3"
    page = tmp_path / "page.md"
    page.write_text("| GFLOPs | <!-- value: cost::flops\\|/1e9:.2f -->0<!-- /value --> |\n")
    text, changed = docs_results.sync(page, results)
    assert text == "| GFLOPs | <!-- value: cost::flops\\|/1e9:.2f -->225.28<!-- /value --> |\n" and changed


def test_a_derived_value_is_computed_from_the_recorded_ones(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "run.json").write_text('{"base": {"ms": 200.0, "params": 1000, "times": [10, 20, 30]},'
                                      ' "full": {"ms": 250.0, "params": 1034, "times": [10, 40, 18]},'
                                      ' "ops": [], "lines": ["a.py:1", "b.py:2"]}')
    (results / "other.json").write_text('{"decoder": 170}')
    assert docs_results.value("ratio(run::full::ms, run::base::ms)|.3f", results) == "1.250"
    assert docs_results.value("diff(run::full::params, run::base::params)|,.0f", results) == "34"
    share = "ratio(diff(run::full::params, run::base::params), run::base::params)|x100:.1f"
    assert docs_results.value(share, results) == "3.4"  # nested, in %
    assert docs_results.value("ratio(diff(run::full::params, run::base::params), other::decoder)|x100:.0f",
                              results) == "20"  # across result files
    # the per-round ratios are 1, 2, 0.6: their median is 1, not the ratio of the medians (18 / 20)
    paired = "paired(run::full::times, run::base::times)"
    assert docs_results.value(f"{paired}::median|.2f", results) == "1.00"
    assert docs_results.value(f"{paired}::p25|.2f", results) == "0.80"
    assert docs_results.value(f"{paired}::p75|.2f", results) == "1.50"
    assert docs_results.value(f"{paired}::n|.0f", results) == "3"
    low, high = (float(docs_results.value(f"{paired}::{k}|.6f", results)) for k in ("ci95_low", "ci95_high"))
    assert 0.6 <= low <= 1.0 <= high <= 2.0
    assert docs_results.value("run::ops|count:.0f", results) == "0"
    assert docs_results.value("run::lines|count:.0f", results) == "2"
    seeds = "mean(run::base::ms, run::full::ms, other::decoder)"  # one value per result file
    assert docs_results.value(f"{seeds}|.1f", results) == "206.7"
    assert docs_results.value("diff(mean(run::full::ms, other::decoder), run::base::ms)|.0f", results) == "10"
    page = tmp_path / "page.md"
    page.write_text("| Full/Base | <!-- value: ratio(run::full::ms, run::base::ms)\\|.2f -->1.20<!-- /value --> |\n")
    text, changed = docs_results.sync(page, results)
    assert text == "| Full/Base | <!-- value: ratio(run::full::ms, run::base::ms)\\|.2f -->1.25<!-- /value --> |\n"
    assert changed
    with pytest.raises(ValueError, match="no derived form 'product'"):
        docs_results.value("product(run::full::ms, run::base::ms)|.2f", results)
    with pytest.raises(KeyError, match="run.json has no 'oops'"):
        docs_results.value("ratio(run::full::oops, run::base::ms)|.2f", results)
