"""Time-based split lengths on short data (processing.aggregate.split_days): no Spark needed."""

from __future__ import annotations

import pytest

from processing.aggregate import JobInputError, split_days


def test_long_data_keeps_the_requested_lengths():
    assert split_days(152, 14, 14, 14) == (14, 14, 14, None)
    assert split_days(56, 14, 14, 14) == (14, 14, 14, None)


def test_short_data_shrinks_every_period_by_one_factor_with_a_notice():
    h, v, t, notice = split_days(40, 14, 14, 14)
    assert (h, v, t) == (10, 10, 10) and 40 - h - v - t == 10
    assert notice.startswith("the data spans 40 days, less than 56") and notice.count("\n") == 0
    h, v, t, _ = split_days(4, 14, 14, 14)
    assert (h, v, t) == (1, 1, 1)  # one day each, one train day
    assert split_days(20, 0, 7, 7)[:3] == (0, 5, 5)  # a period asked as 0 stays 0


def test_too_short_data_is_refused_naming_the_minimum():
    with pytest.raises(JobInputError, match="at least 4"):
        split_days(3, 14, 14, 14)
