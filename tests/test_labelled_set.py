"""The world scorer against a person's labels of images the embedded base model generated (v1, 104 images, 13 per
relation; made and labelled with scripts/label_set.py). The issue's bar is 95% agreement on the relation; the scorer
measured 87.5% when the set was labelled, so this test guards that level and names the gap rather than claiming the bar.
The v2 set (108 images, 9 for each of the twelve relations) was labelled without running the scorer and holds the bar."""
from pathlib import Path

from reversion_core.world.labelled import scorer_agreement

SET = Path(__file__).parent / "data" / "generated-v1"
SET_V2 = Path(__file__).parent / "data" / "generated-v2"


def test_the_labelled_set_has_a_label_for_every_image_and_covers_every_relation_of_its_model():
    res = scorer_agreement(SET)
    assert res["n"] == 104
    assert len(res["per_relation"]) == 8 and all(n == 13 for _, n in res["per_relation"].values())


def test_the_scorer_agrees_with_the_labels_at_least_as_often_as_when_they_were_made():
    res = scorer_agreement(SET)
    # measured 0.875 (relation) and 0.663 (entities) when labelled, 0.740 on the entities once shapes were matched
    # over sub-pixel shifts and wider blurs; the scorer still reads small generated shapes more strictly than a
    # person (README, "The embedded world and base model"); 0.894 and 0.760 once made_of's colours count in either
    # order (two made_of images whose equal bands the scorer had read as swapped roles)
    assert res["relation"] >= 0.89, res["disagreements"]
    assert res["entities"] >= 0.75


def test_on_base_model_v2s_images_of_all_twelve_relations_the_scorer_agrees_with_a_person_on_95_percent():
    # 108 images (9 per relation) of the v2 checkpoint at step 11321, labelled by eye without running the scorer
    # (tests/data/generated-v2/README.md); measured 0.963 (relation) and 0.981 (entities) with made_of at 5 of 9, then
    # 1.000 and 0.991 once made_of's colours count in either order (its equal bands do not tell A's colour from B's)
    res = scorer_agreement(SET_V2)
    assert res["n"] == 108 and len(res["per_relation"]) == 12
    assert res["relation"] >= 0.98, res["disagreements"]
    assert res["entities"] >= 0.98
