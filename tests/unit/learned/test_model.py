from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from gateway.learned import data, features
from gateway.learned.model import ArtifactError, load


def test_predictions_are_what_scikit_learn_computes(router_artifact: Path, router_data: Path) -> None:
    """The gateway's own TF-IDF weighting and logistic model, against scikit-learn's on the same terms."""
    sk = pytest.importorskip("sklearn.feature_extraction.text")
    router = load(router_artifact)
    seed, fraction = router.manifest["seed"], router.manifest["data"]["heldout_fraction"]
    trained = [r for r in data.read(router_data) if not data.held_out(r, seed, fraction)]
    vectorizer = sk.TfidfVectorizer(analyzer=features.terms, sublinear_tf=True, min_df=2)
    vectorizer.fit([features.prompt_text(r.body) for r in trained])
    weights = json.loads((router_artifact / "weights.json").read_text())
    assert weights["terms"] == vectorizer.get_feature_names_out().tolist()
    for text in ["please reset my password today", "the refund was charged twice, the app crashed", "", "zzz"]:
        x = vectorizer.transform([text])
        expected = []
        for model in router.models:
            z = weights["intercept"][model] + sum(x[0, j] * weights["coef"][model][j] for j in x.indices)
            expected.append(1 / (1 + math.exp(-z)))
        assert router.predict_text(text) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_request_is_read_without_its_system_prompt(router_artifact: Path) -> None:
    router = load(router_artifact)
    body = {"messages": [{"role": "system", "content": "reset my password " * 20},
                         {"role": "user", "content": [{"type": "text", "text": "the app crashed"}]}]}
    assert router.predict(body) == router.predict_text("the app crashed")
    assert router.predict({"prompt": "where is my parcel"}) == router.predict_text("where is my parcel")


def test_the_router_learned_the_easy_prompts(router_artifact: Path) -> None:
    router = load(router_artifact)
    cheap = router.models.index("cheap")
    assert router.predict_text("hello where is my parcel thanks")[cheap] > 0.8
    assert router.predict_text("not a billing question: the login loops after the update")[cheap] < 0.2


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "manifest.json").unlink(), "manifest.json: No such file"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "manifest.json").write_text('{"format": "other"}'), "not a router artifact"),
    (lambda d: (d / "weights.json").write_bytes((d / "weights.json").read_bytes() + b" "), "weights_sha256"),
    (lambda d: (d / "calibration.json").write_text('{"models": ["x", "y"], "predicted": [], "scores": []}'),
     "does not match the manifest's models"),
    (lambda d: (d / "calibration.json").write_text('{"models": []}'), "malformed artifact"),
])
def test_a_damaged_artifact_is_refused(router_artifact: Path, tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "router"
    shutil.copytree(router_artifact, copy)
    damage(copy)
    with pytest.raises(ArtifactError, match=message):
        load(copy)
