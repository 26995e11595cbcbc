"""Attribute accuracy tables, exclusion of unreliable attributes, and compositional splits."""

import pytest

from ldmkit.errors import UsageError
from ldmkit.evaluation.attributes import attribute_accuracy, compositional_split
from ldmkit.metrics.attribute_match import unreliable_attributes

TRUE = [{"hair": "red", "glasses": "yes", "smile": "no"},
        {"hair": "black", "glasses": "no", "smile": "yes"},
        {"hair": "red", "glasses": "no"},
        {"hair": "blond", "glasses": "yes", "smile": "yes"}]
PREDICTED = [{"hair": "red", "glasses": "yes", "smile": "yes"},
             {"hair": "red", "glasses": "no", "smile": "yes"},
             {"hair": "red"},                      # glasses missing: counts as wrong
             {"hair": "blond", "glasses": "yes", "smile": "yes"}]


def test_per_attribute_table_by_hand():
    result = attribute_accuracy(PREDICTED, TRUE)
    assert result.per_attribute == {"glasses": 3 / 4, "hair": 3 / 4, "smile": 2 / 3}
    assert result.counts == {"glasses": 4, "hair": 4, "smile": 3}
    assert result.mean == pytest.approx((3 / 4 + 3 / 4 + 2 / 3) / 3)
    assert result.excluded == ()


def test_unreliable_attributes_are_excluded_from_table_and_mean():
    exclude = unreliable_attributes({"hair": 0.99, "glasses": 0.95, "smile": 0.80, "hat": 0.5})
    assert exclude == {"smile", "hat"}  # 0.95 itself is reliable
    result = attribute_accuracy(PREDICTED, TRUE, exclude=exclude)
    assert result.excluded == ("smile",)  # "hat" is not in these labels
    assert set(result.per_attribute) == {"glasses", "hair"}
    assert result.mean == pytest.approx(3 / 4)
    with pytest.raises(UsageError, match="no attribute left"):
        attribute_accuracy(PREDICTED, TRUE, exclude={"hair", "glasses", "smile"})


def test_compositional_split_uses_joint_values():
    train = [{"color": "red", "shape": "circle"}, {"color": "blue", "shape": "square"}]
    evaluation = [{"color": "red", "shape": "circle"},   # seen
                  {"color": "red", "shape": "square"},   # both values seen, combination unseen
                  {"color": "blue", "shape": "square", "size": "big"},  # seen (size not in the key)
                  {"color": "green", "shape": "circle"}]
    split = compositional_split(train, evaluation, ["color", "shape"])
    assert split.seen == (0, 2) and split.unseen == (1, 3)
    by_color = compositional_split(train, evaluation, ["color"])
    assert by_color.unseen == (3,)


def test_bad_inputs_raise():
    with pytest.raises(UsageError, match="3 predicted and 4 true"):
        attribute_accuracy(PREDICTED[:3], TRUE)
    with pytest.raises(UsageError, match="evaluation item 0 lacks attribute"):
        compositional_split([{"color": "red"}], [{"shape": "circle"}], ["color"])
    with pytest.raises(UsageError, match="not the string"):
        compositional_split([], [], "color")
    with pytest.raises(UsageError, match="not the string"):
        attribute_accuracy(PREDICTED, TRUE, exclude="smile")
