"""Feature-space baselines on the same z0 as DLSR (numpy): what the diffusion model adds.

  mahalanobis  (z - mu)^T Sigma^-1 (z - mu), one Gaussian fitted to the training z0
  knn          1 - cosine similarity to the k-th nearest training z0 (Sun et al. 2022)
Both: higher = more OOD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlsr_deploy.errors import InputError


@dataclass
class Mahalanobis:
    mean: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, z: np.ndarray, ridge: float = 1e-6) -> "Mahalanobis":
        z = np.asarray(z, np.float64)
        if z.ndim != 2 or len(z) < 2:
            raise InputError(f"Mahalanobis fit: expected [N>=2, D] features, got {list(z.shape)}")
        mu = z.mean(0)
        cov = np.cov(z, rowvar=False)
        cov += ridge * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        return cls(mu, np.linalg.pinv(cov, hermitian=True))

    def score(self, z: np.ndarray) -> np.ndarray:
        d = np.asarray(z, np.float64) - self.mean
        return np.einsum("nd,de,ne->n", d, self.precision, d)


@dataclass
class CosineKNN:
    bank: np.ndarray
    k: int = 10

    @classmethod
    def fit(cls, z: np.ndarray, k: int = 10) -> "CosineKNN":
        z = np.asarray(z, np.float32)
        if k < 1 or k > len(z):
            raise InputError(f"KNN: expected 1 <= k <= {len(z)} (training size), got {k}")
        return cls(z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12), k)

    def score(self, z: np.ndarray, chunk: int = 1024) -> np.ndarray:
        z = np.asarray(z, np.float32)
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        out = []
        for i in range(0, len(z), chunk):
            sim = z[i : i + chunk] @ self.bank.T
            kth = -np.partition(-sim, self.k - 1, axis=1)[:, self.k - 1]
            out.append(1.0 - kth.astype(np.float64))
        return np.concatenate(out)
