"""ldmkit.evaluation.personalization against hand-computed cases."""

import numpy as np
import pytest

from ldmkit.errors import UsageError
from ldmkit.evaluation.personalization import (difference_ci, gap_fraction_ci, identity_match, mean_ci, ratio_ci, shows,
                                               subject_similarity)

SUBJECT = {"top": "mohawk", "hair_color": "red", "skin": "pale", "mouth": "smile"}


def test_identity_match_counts_only_identity_columns():
    predicted = [dict(SUBJECT), {**SUBJECT, "top": "bob"}, {"top": "bob", "hair_color": "black"}, {**SUBJECT, "mouth": "sad"}]
    got = identity_match(predicted, SUBJECT, ["top", "hair_color", "skin"])
    np.testing.assert_allclose(got, [1.0, 2 / 3, 0.0, 1.0])


def test_identity_match_refuses_unknown_columns_and_no_images():
    with pytest.raises(UsageError, match="no value"):
        identity_match([SUBJECT], SUBJECT, ["eyes"])
    with pytest.raises(UsageError, match="non-empty list"):
        identity_match([SUBJECT], SUBJECT, "top")
    with pytest.raises(UsageError, match="at least one"):
        identity_match([], SUBJECT, ["top"])


def test_shows_reads_one_column():
    predicted = [{"accessory": "sunglasses"}, {"accessory": "wayfarers"}, {"accessory": "none"}, {}]
    np.testing.assert_array_equal(shows(predicted, "accessory", {"sunglasses", "wayfarers"}), [1, 1, 0, 0])
    with pytest.raises(UsageError):
        shows(predicted, "accessory", "sunglasses")


def test_subject_similarity_is_mean_cosine():
    subject = np.array([[1.0, 0.0], [0.0, 1.0]])
    images = np.array([[1.0, 0.0], [-1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5)]])
    np.testing.assert_allclose(subject_similarity(images, subject), [0.5, -0.5, np.sqrt(0.5)])
    with pytest.raises(UsageError, match="L2-normalised"):
        subject_similarity(images * 2, subject)
    with pytest.raises(UsageError, match="widths"):
        subject_similarity(np.eye(3), subject)


def test_ratio_ci_estimate_is_ratio_of_means_and_interval_contains_it():
    rng = np.random.default_rng(0)
    values, reference = rng.uniform(0.4, 0.6, 40), rng.uniform(0.9, 1.0, 30)
    ci = ratio_ci(values, reference)
    assert ci.estimate == pytest.approx(values.mean() / reference.mean())
    assert ci.low < ci.estimate < ci.high
    with pytest.raises(UsageError, match="undefined"):
        ratio_ci(values, np.zeros(3))


def test_difference_ci_is_difference_of_means_even_with_a_zero_reference():
    ci = difference_ci([1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0])
    assert ci.estimate == pytest.approx(0.5)
    assert ci.low <= 0.5 <= ci.high
    assert difference_ci([0.5, 0.5], [0.0, 0.0]).estimate == pytest.approx(0.5)


def test_gap_fraction_closed_form_ends():
    floor, ceiling = np.array([0.2, 0.2, 0.2]), np.array([1.0, 1.0, 1.0])
    assert gap_fraction_ci(floor, floor, ceiling).estimate == pytest.approx(0.0)
    assert gap_fraction_ci(ceiling, floor, ceiling).estimate == pytest.approx(1.0)
    half = gap_fraction_ci(np.array([0.5, 0.7]), floor, ceiling)  # mean 0.6: half-way from 0.2 to 1.0
    assert half.estimate == pytest.approx(0.5)
    assert half.low <= 0.5 <= half.high
    with pytest.raises(UsageError, match="above the floor"):
        gap_fraction_ci(floor, ceiling, floor)


def test_mean_ci_of_one_value_is_that_value():
    assert tuple(mean_ci([0.25])) == (0.25, 0.25, 0.25)
    ci = mean_ci([0.0, 1.0, 1.0, 0.0])
    assert ci.estimate == 0.5 and 0 <= ci.low < 0.5 < ci.high <= 1
