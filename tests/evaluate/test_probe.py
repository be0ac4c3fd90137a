"""The linear probe against scikit-learn's logistic regression."""

import numpy as np
from sklearn.linear_model import LogisticRegression

from visionax import evaluate


def test_linear_probe_matches_scikit_learn_and_separates_separable_data():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=200)
    features = rng.normal(size=(3, 6))[labels] + 1.5 * rng.normal(size=(200, 6))  # overlapping
    weight_decay = 1e-2
    accuracy, probe = evaluate.linear_probe(features[:150], labels[:150], features[150:], labels[150:],
                                            3, weight_decay=weight_decay, steps=200)
    standardised = (features - probe["mean"]) / probe["std"]
    # scikit-learn's ½‖W‖² + C Σ CE has the same minimiser as ours for C = 1/(n λ).
    reference = LogisticRegression(C=1 / (150 * weight_decay), tol=1e-10, max_iter=10_000)
    reference.fit(standardised[:150], labels[:150])
    logits = standardised @ probe["weights"] + probe["bias"]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(probabilities, reference.predict_proba(standardised), atol=1e-4)
    assert accuracy == np.mean(reference.predict(standardised[150:]) == labels[150:])

    separable_labels = rng.integers(0, 4, size=120)
    separable = 10.0 * np.eye(4)[separable_labels] + rng.normal(size=(120, 4))
    accuracy, _ = evaluate.linear_probe(separable[:80], separable_labels[:80], separable[80:],
                                        separable_labels[80:], 4, steps=50)
    assert accuracy == 1.0
