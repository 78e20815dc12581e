"""The learned router: per-prompt predictions of each model's score, from a small linear model trained on the
gateway's own comparisons (docs/router.md).

    features.py   a prompt's text -> its words and word pairs (the same for training and serving)
    model.py      an artifact folder -> a `Router` that predicts every model's score for a prompt
    calibrate.py  held-out predictions -> the threshold that meets a policy's floor or cost target
    curve.py      RouteLLM's quality-against-cost metrics (APGR, CPT) for a router's predictions
    train.py      `nanoroute router train` (scikit-learn, offline)
    evaluate.py   `nanoroute router eval` (and its plot, matplotlib)

Serving needs only the standard library: scikit-learn and matplotlib are imported by the two commands alone.
"""
