"""Markdown tables of the job outputs."""

from __future__ import annotations

from diffxai.jobs.markdown import table_lines, table_row


def test_a_pipe_inside_a_cell_is_escaped_and_rows_follow_the_header():
    assert table_row(["median |err|/std", 0.5]) == "| median \\|err\\|/std | 0.5 |"
    assert table_lines(["a", "b"], [[1, 2], ["x", None]]) == [
        "| a | b |",
        "|---|---|",
        "| 1 | 2 |",
        "| x | None |",
    ]
