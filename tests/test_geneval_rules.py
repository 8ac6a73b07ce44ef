"""GenEval's official rules on hand-made detections (expected answers worked out from
djghosh13/geneval evaluation/evaluate_images.py)."""
from protocols.geneval_rules import DetectedObject, attribute_reader, evaluate, filter_detections, relative_position


def obj(x1, y1, x2, y2, score=0.95, color="red"):
    return DetectedObject([x1, y1, x2, y2], score, attributes={"color": color})


COLOR = attribute_reader("color")


def test_thresholds_depend_on_the_task():
    dets = {"clock": [obj(0, 0, 10, 10, 0.5), obj(20, 0, 30, 10, 0.95), obj(40, 0, 50, 10, 0.2)]}
    assert len(filter_detections(dets, "two_object")["clock"]) == 2  # > 0.3
    assert len(filter_detections(dets, "counting")["clock"]) == 1  # > 0.9
    assert "clock" not in filter_detections({"clock": [obj(0, 0, 1, 1, 0.3)]}, "single_object")  # strict >


def test_counting_needs_exactly_n():
    meta = {"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}]}
    two = {"cup": [obj(0, 0, 9, 9), obj(20, 0, 29, 9)]}
    three = {"cup": two["cup"] + [obj(40, 0, 49, 9)]}
    assert evaluate(two, meta, COLOR)[0]
    ok, reason = evaluate(three, meta, COLOR)
    assert not ok and "expected cup<3, found 3" in reason
    ok, reason = evaluate({"cup": two["cup"][:1]}, meta, COLOR)
    assert not ok and reason.startswith("expected cup>=2, found 1")


def test_colour_is_checked_on_the_most_confident_objects_only():
    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    assert evaluate({"car": [obj(0, 0, 5, 5, color="red"), obj(9, 9, 15, 15, color="blue")]}, meta, COLOR)[0]
    assert not evaluate({"car": [obj(0, 0, 5, 5, color="blue"), obj(9, 9, 15, 15, color="red")]}, meta, COLOR)[0]


def test_relative_position_rule():
    a, b = obj(0, 0, 10, 10), obj(20, 0, 30, 10)
    assert relative_position(a, b) == {"left of"}
    assert relative_position(b, a) == {"right of"}
    assert relative_position(obj(0, 0, 10, 10), obj(0, 30, 10, 40)) == {"above"}
    # diagonal at 45 degrees: both components exceed 0.5 after the 0.1*(dims) margin
    assert relative_position(obj(0, 0, 10, 10), obj(30, 30, 40, 40)) == {"left of", "above"}
    # overlapping boxes within the margin: no relation
    assert relative_position(obj(0, 0, 10, 10), obj(1, 0, 11, 10)) == set()


def test_position_requirement_uses_the_target_group():
    meta = {"tag": "position", "include": [{"class": "dog", "count": 1},
                                           {"class": "cat", "count": 1, "position": ["left of", 0]}]}
    assert evaluate({"dog": [obj(20, 0, 30, 10)], "cat": [obj(0, 0, 10, 10)]}, meta, COLOR)[0]
    ok, reason = evaluate({"dog": [obj(0, 0, 10, 10)], "cat": [obj(20, 0, 30, 10)]}, meta, COLOR)
    assert not ok and "expected cat left of target, found right of target" in reason
    ok, reason = evaluate({"cat": [obj(0, 0, 10, 10)]}, meta, COLOR)
    assert not ok and "no target for cat to be left of" in reason
