"""The stability probes behind docs/squeezenet-stability.md: how a run's curves are classified, and one tiny probe."""
import math

from research.bench.stability import VARIANTS, classify, probe

LN = math.log(1000)


def test_outcomes_are_named_from_the_curves():
    assert classify([6.9, 5.0, float("nan")], [], 1000) == ("nan", 3)
    assert classify([6.9, 3.0, 40.0, LN, LN], [(5, 0.1)], 1000) == ("dies", 4)    # blew up, then all outputs equal
    assert classify([6.9, 2.0, 0.5], [(2, 0.15), (3, 0.6)], 1000) == ("learns", 3)
    assert classify([6.9, 2.3, 2.3], [(3, 0.1)], 1000) == ("stalls", None)       # the label prior ln(10)
    assert classify([LN, LN], [(2, 0.1)], 1000) == ("stalls", None)              # never below: not dead


def test_a_probe_trains_the_variant_and_returns_its_curve():
    result = probe(VARIANTS["elu/xavier+std"], seed=0, steps=3, size=32, eval_every=3)
    assert len(result["losses"]) == 3 and all(math.isfinite(v) for v in result["losses"])
    assert result["outcome"] in ("learns", "stalls") and result["val"][0][0] == 3
