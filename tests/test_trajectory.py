"""Weight-trajectory embeddings (PCA, t-SNE) and flattening of models and state dicts."""
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn
from torch.nn.utils import parameters_to_vector

from landscape_lib.analyses.trajectory import flatten_state, pca_embedding, tsne_embedding
from landscape_lib.errors import ConfigError


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))


def test_flatten_state_matches_parameters_to_vector():
    model = bn_model()
    expected = parameters_to_vector(model.parameters()).detach()
    torch.testing.assert_close(flatten_state(model), expected)
    state = model.state_dict()
    torch.testing.assert_close(flatten_state(state, model), expected)
    torch.testing.assert_close(flatten_state(state), expected)  # BN buffers left out by name
    del state["3.bias"]
    with pytest.raises(ConfigError, match="3.bias"):
        flatten_state(state, model)


def _align_signs(a, b):
    """Flip columns of ``a`` to match the signs of ``b`` (PCA axes have no intrinsic sign)."""
    return a * np.sign(np.sum(a * b, axis=0))


def test_pca_embedding_matches_sklearn():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(9, 40)) @ np.diag(np.linspace(3, 0.1, 40))
    coords, ratio = pca_embedding(torch.as_tensor(W))
    pca = PCA(n_components=2).fit(W)
    expected = pca.transform(W)
    np.testing.assert_allclose(_align_signs(coords, expected), expected, atol=1e-9)
    np.testing.assert_allclose(ratio, pca.explained_variance_ratio_, rtol=1e-9)


def test_tsne_keeps_clusters_apart_and_is_seeded():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 50))
    b = rng.normal(size=(8, 50)) + 20.0
    W = np.vstack([a, b]).astype(np.float32)
    coords = tsne_embedding(W, seed=0, max_iter=500)
    assert coords.shape == (16, 2)
    dist = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    labels = np.repeat([0, 1], 8)
    assert (labels[dist.argmin(axis=1)] == labels).all()  # every nearest neighbour is its own
    np.testing.assert_array_equal(coords, tsne_embedding(W, seed=0, max_iter=500))


def test_tsne_clips_perplexity_and_needs_three_points():
    W = np.random.default_rng(2).normal(size=(4, 10))
    assert tsne_embedding(W, seed=0, perplexity=100, max_iter=500).shape == (4, 2)
    with pytest.raises(ConfigError, match="at least 3"):
        tsne_embedding(W[:2], seed=0)
